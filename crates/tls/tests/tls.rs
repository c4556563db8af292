//! The server side of TLS against a real rustls client over loopback:
//! handshakes, mutual TLS, rotation while connections stay open, the
//! handshake timeout, and files that cannot be loaded.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use baton_tls::testing::{Issued, TestCa, write_atomically};
use baton_tls::{ALPN_NONE, ClientCertificates, HandshakeError, Tls, TlsConfig, TlsError};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn settings(server: &Issued, client_ca: Option<&Path>) -> TlsConfig {
    TlsConfig {
        cert: Some(server.cert.clone()),
        key: Some(server.key.clone()),
        client_ca: client_ca.map(Path::to_owned),
        handshake_timeout_ms: 500,
    }
}

/// An echo server: each connection's handshake result is sent on the
/// channel, then every line is echoed.
async fn echo_server(
    tls: Tls,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Result<(), String>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (results, received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let tls = tls.clone();
            let results = results.clone();
            tokio::spawn(async move {
                match tls.accept(tcp).await {
                    Ok(mut stream) => {
                        let _ = results.send(Ok(()));
                        let mut buffer = [0_u8; 1024];
                        loop {
                            match stream.read(&mut buffer).await {
                                Ok(0) | Err(_) => break,
                                Ok(count) => {
                                    if stream.write_all(&buffer[..count]).await.is_err() {
                                        break;
                                    }
                                    let _ = stream.flush().await;
                                }
                            }
                        }
                    }
                    Err(error) => {
                        let _ = results.send(Err(match error {
                            HandshakeError::TimedOut(_) => "timed out".to_owned(),
                            HandshakeError::Failed(error) => error.to_string(),
                        }));
                    }
                }
            });
        }
    });
    (address, received)
}

async fn connect(
    address: std::net::SocketAddr,
    ca: &Path,
    identity: Option<&Issued>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let config = baton_tls::client_config(
        ca,
        identity.map(|issued| (issued.cert.as_path(), issued.key.as_path())),
        ALPN_NONE,
    )
    .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(address).await?;
    let mut stream = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    // TLS 1.3 reports a refused client certificate only on the first read.
    stream.write_all(b"ping\n").await?;
    stream.flush().await?;
    let mut answer = [0_u8; 5];
    stream.read_exact(&mut answer).await?;
    assert_eq!(&answer, b"ping\n");
    Ok(stream)
}

async fn echo(stream: &mut tokio_rustls::client::TlsStream<TcpStream>, line: &[u8]) -> Vec<u8> {
    stream.write_all(line).await.unwrap();
    stream.flush().await.unwrap();
    let mut answer = vec![0_u8; line.len()];
    stream.read_exact(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn a_client_trusting_the_ca_talks_and_a_plaintext_one_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Baton test CA");
    let ca_path = ca.write(&dir.path().join("ca.pem"));
    let server = ca.server(dir.path(), "server");
    let tls = Tls::load(&settings(&server, None), ALPN_NONE)
        .unwrap()
        .unwrap();
    assert!(!tls.is_mutual());
    let (address, mut results) = echo_server(tls).await;

    let mut stream = connect(address, &ca_path, None).await.unwrap();
    assert_eq!(results.recv().await.unwrap(), Ok(()));
    assert_eq!(echo(&mut stream, b"hello\n").await, b"hello\n");

    // A plaintext client's bytes are not a TLS handshake: closed, never echoed.
    let mut plain = TcpStream::connect(address).await.unwrap();
    plain.write_all(b"MSH|^~\\&|plaintext\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer).await;
    assert!(
        !answer.windows(3).any(|w| w == b"MSH"),
        "a plaintext client got its bytes echoed: {answer:?}"
    );
    let refused = results.recv().await.unwrap().unwrap_err();
    assert!(!refused.contains("timed out"), "{refused}");
}

#[tokio::test]
async fn mutual_tls_refuses_no_certificate_and_another_cas() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Baton test CA");
    let ca_path = ca.write(&dir.path().join("ca.pem"));
    let server = ca.server(dir.path(), "server");
    let client = ca.client(dir.path(), "frailty-service");
    let other = TestCa::new("Another CA");
    let outsider = {
        let dir = dir.path().join("other");
        std::fs::create_dir(&dir).unwrap();
        other.client(&dir, "frailty-service")
    };
    let tls = Tls::load(&settings(&server, Some(&ca_path)), ALPN_NONE)
        .unwrap()
        .unwrap();
    assert!(tls.is_mutual());
    let (address, mut results) = echo_server(tls).await;

    connect(address, &ca_path, Some(&client)).await.unwrap();
    assert_eq!(results.recv().await.unwrap(), Ok(()));

    assert!(connect(address, &ca_path, None).await.is_err());
    assert!(results.recv().await.unwrap().is_err());

    assert!(connect(address, &ca_path, Some(&outsider)).await.is_err());
    let refused = results.recv().await.unwrap().unwrap_err();
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");
}

/// The metrics listener's TLS: a client without a certificate (a kubelet
/// probe, a Prometheus) is served; one presenting another CA's certificate
/// is still refused.
#[tokio::test]
async fn optional_client_certificates_admit_none_and_refuse_another_cas() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Baton test CA");
    let ca_path = ca.write(&dir.path().join("ca.pem"));
    let server = ca.server(dir.path(), "server");
    let client = ca.client(dir.path(), "prometheus");
    let other = TestCa::new("Another CA");
    let outsider = {
        let dir = dir.path().join("other");
        std::fs::create_dir(&dir).unwrap();
        other.client(&dir, "prometheus")
    };
    let tls = Tls::load_with(
        &settings(&server, Some(&ca_path)),
        ALPN_NONE,
        ClientCertificates::Optional,
    )
    .unwrap()
    .unwrap();
    assert!(!tls.is_mutual());
    let (address, mut results) = echo_server(tls).await;

    connect(address, &ca_path, None).await.unwrap();
    assert_eq!(results.recv().await.unwrap(), Ok(()));
    connect(address, &ca_path, Some(&client)).await.unwrap();
    assert_eq!(results.recv().await.unwrap(), Ok(()));

    assert!(connect(address, &ca_path, Some(&outsider)).await.is_err());
    assert!(results.recv().await.unwrap().is_err());
}

#[tokio::test]
async fn rotated_files_serve_new_connections_while_open_ones_keep_going() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestCa::new("First CA");
    let first_path = first.write(&dir.path().join("first-ca.pem"));
    let server = first.server(dir.path(), "server");
    let tls = Tls::load(&settings(&server, None), ALPN_NONE)
        .unwrap()
        .unwrap();
    let (address, _results) = echo_server(tls.clone()).await;
    let mut open = connect(address, &first_path, None).await.unwrap();

    // The certificate manager renames a certificate from another CA over
    // the files.
    let second = TestCa::new("Second CA");
    let second_path = second.write(&dir.path().join("second-ca.pem"));
    let staged = dir.path().join("staged");
    std::fs::create_dir(&staged).unwrap();
    let rotated = second.server(&staged, "server");
    std::fs::rename(&rotated.key, &server.key).unwrap();
    std::fs::rename(&rotated.cert, &server.cert).unwrap();

    connect(address, &second_path, None).await.unwrap();
    assert!(
        connect(address, &first_path, None).await.is_err(),
        "the old certificate is still served to new connections"
    );
    assert_eq!(echo(&mut open, b"still here\n").await, b"still here\n");
    assert!(!tls.reload_if_changed(), "nothing changed since");

    // Files that do not load (a key not matching the certificate) leave the
    // rotated certificate serving.
    write_atomically(
        &server.key,
        &std::fs::read_to_string(rotated_key_of(&first, &staged)).unwrap(),
    );
    assert!(!tls.reload_if_changed());
    connect(address, &second_path, None).await.unwrap();
}

fn rotated_key_of(ca: &TestCa, dir: &Path) -> std::path::PathBuf {
    ca.server(dir, "unrelated").key
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Baton test CA");
    let server = ca.server(dir.path(), "server");
    let tls = Tls::load(&settings(&server, None), ALPN_NONE)
        .unwrap()
        .unwrap();
    assert_eq!(tls.handshake_timeout(), Duration::from_millis(500));
    let (address, mut results) = echo_server(tls).await;
    let mut silent = TcpStream::connect(address).await.unwrap();
    assert_eq!(results.recv().await.unwrap(), Err("timed out".to_owned()));
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the server kept the silent connection open");
}

#[test]
fn settings_that_do_not_belong_together_are_named() {
    let error = |config: TlsConfig| config.validate().unwrap_err().to_string();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Baton test CA");
    let server = ca.server(dir.path(), "server");
    assert!(
        error(TlsConfig {
            cert: Some(server.cert.clone()),
            ..TlsConfig::default()
        })
        .starts_with("tls.key:")
    );
    assert!(
        error(TlsConfig {
            client_ca: Some(server.cert.clone()),
            ..TlsConfig::default()
        })
        .starts_with("tls.cert:")
    );
    assert!(
        error(TlsConfig {
            handshake_timeout_ms: 0,
            ..TlsConfig::default()
        })
        .starts_with("tls.handshake_timeout_ms:")
    );
    assert!(
        Tls::load(&TlsConfig::default(), ALPN_NONE)
            .unwrap()
            .is_none()
    );

    // A missing file and a key file that is not a key are named, and the
    // key's contents never quoted.
    let missing = TlsConfig {
        cert: Some(dir.path().join("absent.pem")),
        key: Some(server.key.clone()),
        ..TlsConfig::default()
    };
    let message = Tls::load(&missing, ALPN_NONE).unwrap_err().to_string();
    assert!(
        message.starts_with("tls.cert: cannot read") && message.contains("absent.pem"),
        "{message}"
    );
    let secret =
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n";
    let bad_key = dir.path().join("bad.key");
    std::fs::write(&bad_key, secret).unwrap();
    let bad = TlsConfig {
        cert: Some(server.cert.clone()),
        key: Some(bad_key),
        ..TlsConfig::default()
    };
    let error = Tls::load(&bad, ALPN_NONE).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, TlsError::Pair { .. } | TlsError::Key { .. }),
        "{message}"
    );
    assert!(!message.contains("c2VjcmV0"), "{message}");
}

#[test]
fn a_listener_beyond_loopback_needs_tls_and_client_authentication_or_insecure() {
    let loopback: std::net::SocketAddr = "127.0.0.1:50052".parse().unwrap();
    let v6_loopback: std::net::SocketAddr = "[::1]:50052".parse().unwrap();
    let everywhere: std::net::SocketAddr = "0.0.0.0:50052".parse().unwrap();
    let check = |listeners: &[(&str, std::net::SocketAddr)], tls, auth, insecure| {
        baton_tls::check_exposure("query", listeners, tls, auth, insecure)
    };
    // Loopback needs nothing: `baton up` as a newcomer runs it.
    check(
        &[
            ("query.listen", loopback),
            ("query.admin_listen", v6_loopback),
        ],
        false,
        false,
        false,
    )
    .unwrap();
    let listeners = [
        ("query.listen", loopback),
        ("query.metrics_listen", everywhere),
    ];
    let message = check(&listeners, false, false, false)
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with("query.metrics_listen is 0.0.0.0:50052, beyond loopback, without TLS and client authentication"),
        "{message}"
    );
    for expected in [
        "query.tls.cert",
        "BATON_QUERY__TLS__CERT",
        "query.tls.client_ca",
        "--insecure",
    ] {
        assert!(message.contains(expected), "{expected}: {message}");
    }
    let message = check(&listeners, true, false, false)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("without client authentication:"),
        "{message}"
    );
    check(&listeners, true, true, false).unwrap();
    check(&listeners, false, false, true).unwrap();
}

#[test]
fn a_client_certificate_maps_to_the_client_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Baton test CA");
    let der =
        |issued: &Issued| baton_tls::read_certificates("cert", &issued.cert).unwrap()[0].to_vec();
    let board = der(&ca.client(dir.path(), "board.example"));
    let stranger = der(&ca.client(dir.path(), "stranger.example"));
    assert_eq!(
        baton_tls::certificate_names(&board),
        vec!["board.example".to_owned(), "board.example".to_owned()],
        "the common name, then the DNS SAN"
    );
    let clients = baton_tls::Clients::new(&[baton_tls::ClientEntry {
        id: "frailty-board".into(),
        certificate_names: vec!["board.example".into()],
        token_subjects: Vec::new(),
        organisations: Vec::new(),
        services: Vec::new(),
        scopes: [baton_tls::Scope::Read].into(),
    }])
    .unwrap();
    let identity = clients.by_certificate(&board).unwrap();
    assert_eq!(identity.id, "frailty-board");
    assert!(identity.has(baton_tls::Scope::Read) && !identity.has(baton_tls::Scope::Cohort));
    assert_eq!(clients.by_certificate(&stranger), None);
}
