//! What the gRPC listener tests share.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use baton_runtime::grpc::GrpcLimits;
use baton_tls::TlsListener;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Small limits, to reach them in a test: 7 calls at once, 1 KiB messages,
/// 200 ms to send the HTTP/2 preface.
pub fn limits() -> GrpcLimits {
    GrpcLimits {
        max_concurrent_streams: 7,
        max_message_bytes: 1024,
        preface_timeout_ms: 200,
        ..GrpcLimits::default()
    }
}

/// Reads until the server closes the connection: true when it does within
/// 10 s (whatever it sent first, e.g. its HTTP/2 SETTINGS).
pub async fn closed_by_server(mut stream: impl AsyncRead + Unpin) -> bool {
    let mut buffer = [0_u8; 1024];
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Serves health checking and reflection on `listener` until the test ends.
pub async fn serve(listener: TlsListener) -> SocketAddr {
    let address = listener.local_addr().unwrap();
    tokio::spawn(baton_runtime::grpc::serve(
        "test",
        &["baton.test"],
        listener,
        |router| router,
        std::future::pending(),
    ));
    address
}
