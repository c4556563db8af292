//! Listening ports for services and brokers a test starts.

use std::net::{SocketAddr, TcpListener};

/// A loopback address no one listens on, for a service a test starts.
///
/// It is taken below the kernel's ephemeral range, and never handed out
/// twice in one test process: a port the kernel picks for `:0` is free only
/// until the next outgoing connection (a Kafka client's, say) takes it as
/// its local port, which made a service fail with "address already in use"
/// on a busy machine.
pub fn free_loopback_address() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static HANDED_OUT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = listening_range();
    let span = u32::from(high - low);
    // Test binaries run one after another; starting each at its own place
    // keeps one from reusing a port the last one's services still linger on.
    let start = std::process::id() % span;
    for _ in 0..span {
        let offset = (start + HANDED_OUT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = low + u16::try_from(offset).expect("offset below the span");
        if let Ok(address) =
            TcpListener::bind(("127.0.0.1", port)).and_then(|listener| listener.local_addr())
        {
            return address;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
}

/// Ports below the ephemeral range (`net.ipv4.ip_local_port_range`), from
/// 10000 up; above it when the range starts too low to leave room; with
/// neither, 10000 to 12000 (ephemeral too, so no better than `:0`).
fn listening_range() -> (u16, u16) {
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut bounds = text.split_whitespace().map(str::parse::<u16>);
            Some((bounds.next()?.ok()?, bounds.next()?.ok()?))
        })
        .unwrap_or((32768, 60999));
    if ephemeral.0 >= 12000 {
        (10000, ephemeral.0)
    } else if ephemeral.1 < 63000 {
        (ephemeral.1 + 1, 65000)
    } else {
        (10000, 12000)
    }
}
