//! `baton_runtime::grpc::serve` with TLS: a tonic client trusting the CA
//! and presenting a client certificate is served; one without a
//! certificate is not; new connections get a rotated certificate while a
//! channel opened before keeps working.

use std::sync::Arc;

use baton_tls::testing::TestCa;
use baton_tls::{ALPN_GRPC, Tls, TlsConfig, TlsListener};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

async fn check(channel: Channel) -> Result<(), tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(drop)
}

async fn served_certificate(
    address: std::net::SocketAddr,
    ca: &std::path::Path,
    client: &baton_tls::testing::Issued,
) -> Vec<u8> {
    let config =
        baton_tls::client_config(ca, Some((&client.cert, &client.key)), ALPN_GRPC).unwrap();
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let stream = baton_tls::connect(tcp, "localhost", Arc::new(config))
        .await
        .unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn grpc_over_mutual_tls_with_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Baton test CA");
    let ca_path = ca.write(&dir.path().join("ca.pem"));
    let server = ca.server(dir.path(), "server");
    let client = ca.client(dir.path(), "client");
    let settings = TlsConfig {
        cert: Some(server.cert.clone()),
        key: Some(server.key.clone()),
        client_ca: Some(ca_path.clone()),
        handshake_timeout_ms: 2_000,
    };
    let tls = Tls::load(&settings, ALPN_GRPC).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(baton_runtime::grpc::serve(
        "test",
        &["baton.test"],
        TlsListener::new(listener, tls),
        |router| router,
        std::future::pending(),
    ));
    let ca_pem = std::fs::read(&ca_path).unwrap();
    let identity = Identity::from_pem(
        std::fs::read(&client.cert).unwrap(),
        std::fs::read(&client.key).unwrap(),
    );
    let endpoint = Channel::from_shared(format!("https://localhost:{}", address.port()))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&ca_pem))
                .identity(identity),
        )
        .unwrap();
    let open = endpoint.connect().await.unwrap();
    check(open.clone()).await.unwrap();

    let anonymous = Channel::from_shared(format!("https://localhost:{}", address.port()))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca_pem)))
        .unwrap();
    let refused = match anonymous.connect().await {
        Ok(channel) => check(channel).await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "a client without a certificate was served");

    let before = served_certificate(address, &ca_path, &client).await;
    let staged = dir.path().join("staged");
    std::fs::create_dir(&staged).unwrap();
    let rotated = ca.server(&staged, "rotated");
    std::fs::rename(&rotated.key, &server.key).unwrap();
    std::fs::rename(&rotated.cert, &server.cert).unwrap();
    let after = served_certificate(address, &ca_path, &client).await;
    assert_ne!(before, after);
    assert_eq!(
        after,
        baton_tls::read_certificates("cert", &server.cert).unwrap()[0].to_vec()
    );
    check(open).await.unwrap();
    check(endpoint.connect().await.unwrap()).await.unwrap();
}
