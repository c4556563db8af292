//! `baton_runtime::grpc::serve` with TLS: a tonic client trusting the CA
//! and presenting a client certificate is served; one without a
//! certificate is not; new connections get a rotated certificate while a
//! channel opened before keeps working; a connection that completes TLS
//! but never sends HTTP/2 is closed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use baton_tls::testing::{Issued, TestCa};
use baton_tls::{ALPN_GRPC, Tls, TlsConfig, TlsListener};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

mod support;
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

/// A CA, a server certificate and a client certificate in `dir`, and the
/// server's `tls` table requiring client certificates from the CA.
fn mutual_tls(dir: &Path) -> (TestCa, PathBuf, Issued, Issued, TlsConfig) {
    let ca = TestCa::new("Baton test CA");
    let ca_path = ca.write(&dir.join("ca.pem"));
    let server = ca.server(dir, "server");
    let client = ca.client(dir, "client");
    let settings = TlsConfig {
        cert: Some(server.cert.clone()),
        key: Some(server.key.clone()),
        client_ca: Some(ca_path.clone()),
        handshake_timeout_ms: 2_000,
    };
    (ca, ca_path, server, client, settings)
}

/// A channel to `address` trusting `ca_path`, presenting `client`.
fn endpoint_for(address: SocketAddr, ca_path: &Path, client: &Issued) -> Endpoint {
    let identity = Identity::from_pem(
        std::fs::read(&client.cert).unwrap(),
        std::fs::read(&client.key).unwrap(),
    );
    Channel::from_shared(format!("https://localhost:{}", address.port()))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(std::fs::read(ca_path).unwrap()))
                .identity(identity),
        )
        .unwrap()
}

#[tokio::test]
async fn grpc_over_mutual_tls_with_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, ca_path, server, client, settings) = mutual_tls(dir.path());
    let tls = Tls::load(&settings, ALPN_GRPC).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = support::serve(TlsListener::new(listener, tls)).await;
    let ca_pem = std::fs::read(&ca_path).unwrap();
    let endpoint = endpoint_for(address, &ca_path, &client);
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

#[tokio::test]
async fn a_connection_that_completes_tls_but_sends_nothing_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (_ca, ca_path, _server, client, settings) = mutual_tls(dir.path());
    let tls = Tls::load(&settings, ALPN_GRPC).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address =
        support::serve(TlsListener::new(listener, tls).with_grpc_limits(support::limits())).await;
    let config =
        baton_tls::client_config(&ca_path, Some((&client.cert, &client.key)), ALPN_GRPC).unwrap();
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let silent = baton_tls::connect(tcp, "localhost", Arc::new(config))
        .await
        .expect("the TLS handshake completes");
    assert!(
        support::closed_by_server(silent).await,
        "no HTTP/2 after TLS: closed"
    );
    // A real client is served, as the listener's limits allow.
    check(
        endpoint_for(address, &ca_path, &client)
            .connect()
            .await
            .unwrap(),
    )
    .await
    .expect("served over TLS");
}
