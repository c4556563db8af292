//! What `baton_runtime::grpc::serve` allows one connection: a message past
//! `max_message_bytes` is refused with OUT_OF_RANGE naming the limit; the
//! server announces `max_concurrent_streams` in its HTTP/2 SETTINGS; a
//! connection that never sends the HTTP/2 preface is closed after
//! `preface_timeout_ms` (after TLS: `grpc_tls.rs`).

use baton_runtime::grpc::GrpcLimits;
use baton_tls::TlsListener;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

mod support;

use support::{closed_by_server, limits, serve};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn a_message_past_the_limit_is_refused_naming_it() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = serve(TlsListener::from(listener).with_grpc_limits(limits())).await;
    let channel = Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    client
        .check(HealthCheckRequest::default())
        .await
        .expect("a small request is served");
    let status = client
        .check(HealthCheckRequest {
            service: "x".repeat(2_000),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("the limit is: 1024 bytes"),
        "{status:?}"
    );
}

#[tokio::test]
async fn the_stream_limit_is_announced_and_a_silent_connection_is_closed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = serve(TlsListener::from(listener).with_grpc_limits(limits())).await;

    // A client that sends the preface and its SETTINGS gets the server's
    // SETTINGS, with SETTINGS_MAX_CONCURRENT_STREAMS (0x3).
    let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
    client
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut header = [0_u8; 9];
    client.read_exact(&mut header).await.unwrap();
    assert_eq!(header[3], 0x4, "the server's first frame is SETTINGS");
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0_u8; length];
    client.read_exact(&mut payload).await.unwrap();
    let settings: Vec<(u16, u32)> = payload
        .chunks_exact(6)
        .map(|entry| {
            (
                u16::from_be_bytes([entry[0], entry[1]]),
                u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]),
            )
        })
        .collect();
    assert!(settings.contains(&(0x3, 7)), "{settings:?}");

    // One that sends nothing is closed; one that sends half the preface too.
    let silent = tokio::net::TcpStream::connect(address).await.unwrap();
    assert!(
        closed_by_server(silent).await,
        "a silent connection is closed"
    );
    let mut half = tokio::net::TcpStream::connect(address).await.unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    assert!(closed_by_server(half).await, "half a preface is closed");
}

#[test]
fn limits_are_checked_naming_the_setting() {
    assert_eq!(GrpcLimits::default().validate(), Ok(()));
    let error = GrpcLimits {
        max_message_bytes: 10,
        ..GrpcLimits::default()
    }
    .validate()
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "grpc.max_message_bytes: expected at least 1024 bytes, got 10"
    );
    let error = GrpcLimits {
        preface_timeout_ms: 0,
        ..GrpcLimits::default()
    }
    .validate()
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "grpc.preface_timeout_ms: expected milliseconds, at least 1, got 0"
    );
}
