//! Security against a running `baton up` (certificates and signing keys
//! made by the test, never committed): TLS on every listener with client
//! certificates required, where the independent Python gRPC client runs
//! every RPC over mutual TLS, and is refused without a client certificate,
//! with one from another CA and in plaintext; an HL7 feed over MLLP with
//! TLS is acknowledged and a plaintext MLLP sender gets nothing; the
//! metrics listener answers over TLS; a rotated certificate is served to
//! new connections without a restart while an open one keeps working. A
//! service beyond loopback without TLS and client authentication refuses to
//! start unless --insecure. Each scope is enforced for clients named by
//! certificate, and an unnamed one is unauthenticated. The Python client
//! with TLS and a JWT is served; expired, wrong-audience and tampered
//! tokens are refused.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use baton_ingest::mllp::MllpClient;
use baton_proto::query::v1::care_state_query_client::CareStateQueryClient;
use baton_proto::query::v1::patient_ref::Ref;
use baton_proto::query::v1::{GetCareStateRequest, PatientRef};
use baton_tls::testing::{Issued, TestCa};
use baton_tls::{ALPN_GRPC, ALPN_HTTP1, ALPN_NONE};
use support::{
    EVERY_RPC, Service, baton, free_address, grpc_client, rpcs_called, try_baton, try_grpc_client,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const ADMIT: &str = "MSH|^~\\&|PAS|RXX|BATON|RXX|202611020845||ADT^A01^ADT_A01|PAS-TLS-1|P|2.5\r\
EVN|A01|202611020845||||202611020840\r\
PID|1||H200456^^^RXX^MR~4010232137^^^NHS^NH||ADEBAYO^AMARA^J||19380412|F\r\
PV1|1|I|AMU^^^RXX01|21|||C4321^OSEI^KWAME||||||||||||V2001|||||||||||||||||||||||||202611020840\r";

const UPDATE: &str = "MSH|^~\\&|PAS|RXX|BATON|RXX|202611060900||ADT^A08^ADT_A01|PAS-TLS-2|P|2.5\r\
EVN|A08|202611060900\r\
PID|1||H200456^^^RXX^MR~4010232137^^^NHS^NH||ADEBAYO^AMARA^J||19380412|F|||9 Mill Lane^^Leeds^^LS7 3AB\r";

fn client_tls(ca: &Path, client: &Issued, alpn: &[&[u8]]) -> Arc<baton_tls::ClientConfig> {
    Arc::new(baton_tls::client_config(ca, Some((&client.cert, &client.key)), alpn).unwrap())
}

/// The certificate the server at `address` presents to a new connection.
async fn served_certificate(address: SocketAddr, config: Arc<baton_tls::ClientConfig>) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let stream = baton_tls::connect(tcp, "localhost", config).await.unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// A CA, its certificate written out, and a server certificate for
/// `localhost`, in `<dir>/pki`.
struct Pki {
    folder: PathBuf,
    ca: TestCa,
    ca_path: PathBuf,
    server: Issued,
}

impl Pki {
    fn new(dir: &Path) -> Self {
        let folder = dir.join("pki");
        std::fs::create_dir(&folder).unwrap();
        let ca = TestCa::new("Baton e2e CA");
        let ca_path = ca.write(&folder.join("ca.pem"));
        let server = ca.server(&folder, "server");
        Self {
            folder,
            ca,
            ca_path,
            server,
        }
    }
}

fn pem_der(path: &Path) -> Vec<u8> {
    baton_tls::read_certificates("cert", path).unwrap()[0].to_vec()
}

#[test]
fn every_listener_speaks_tls_and_a_rotated_certificate_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let Pki {
        folder: pki,
        ca,
        ca_path,
        server,
    } = Pki::new(dir.path());
    let client = ca.client(&pki, "e2e-client");
    let outsider = {
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        TestCa::new("Another CA").client(&other, "e2e-client")
    };

    let (ingest, query, mllp, metrics) = (
        free_address(),
        free_address(),
        free_address(),
        free_address(),
    );
    let data = dir.path().join("data");
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let mut up = Service::start_with_env(
        "baton",
        [
            "up",
            "--ingest-listen",
            &ingest.to_string(),
            "--query-listen",
            &query.to_string(),
            "--mllp-listen",
            &mllp.to_string(),
            "--metrics-listen",
            &metrics.to_string(),
            "--data-dir",
            &path(&data),
        ]
        .map(str::to_owned)
        .to_vec(),
        Some(query),
        vec![
            ("BATON_UP__TLS__CERT".into(), path(&server.cert)),
            ("BATON_UP__TLS__KEY".into(), path(&server.key)),
            ("BATON_UP__TLS__CLIENT_CA".into(), path(&ca_path)),
            ("BATON_UP__TLS__HANDSHAKE_TIMEOUT_MS".into(), "2000".into()),
        ],
    );
    let (ingest_s, query_s) = (ingest.to_string(), query.to_string());
    let exercise = |extra: &[&str], patients: [&str; 2]| {
        let mut args = vec![
            "exercise",
            "--ingest",
            &ingest_s,
            "--query",
            &query_s,
            "--timeout-s",
            "20",
            "--patients",
            patients[0],
            patients[1],
        ];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let (ca_s, cert_s, key_s) = (path(&ca_path), path(&client.cert), path(&client.key));
    let run_ok =
        |args: Vec<String>| grpc_client(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let run_refused = |args: Vec<String>, what: &str| {
        let (ok, out, err) = try_grpc_client(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(!ok, "{what}: the client was served\n{out}\n{err}");
        assert!(
            !out.contains("GetCareState"),
            "{what}: a care state was read\n{out}"
        );
    };

    // The independent client with the CA and its certificate: every RPC.
    let lines = run_ok(exercise(
        &["--ca", &ca_s, "--cert", &cert_s, "--key", &key_s],
        ["9434765919", "9990000026"],
    ));
    assert_eq!(rpcs_called(&lines), EVERY_RPC);

    // Refused: no client certificate, one from another CA, plaintext.
    let outsider_cert = path(&outsider.cert);
    let outsider_key = path(&outsider.key);
    let patients = ["9990000018", "9990000034"];
    run_refused(
        exercise(&["--ca", &ca_s], patients),
        "no client certificate",
    );
    run_refused(
        exercise(
            &[
                "--ca",
                &ca_s,
                "--cert",
                &outsider_cert,
                "--key",
                &outsider_key,
            ],
            patients,
        ),
        "a client certificate from another CA",
    );
    run_refused(exercise(&[], patients), "plaintext");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut open_feed = runtime.block_on(async {
        // HL7 over MLLP with TLS is acknowledged.
        let mut feed =
            MllpClient::connect_tls(mllp, "localhost", client_tls(&ca_path, &client, ALPN_NONE))
                .await
                .unwrap();
        let ack = String::from_utf8(feed.send(ADMIT.as_bytes()).await.unwrap()).unwrap();
        assert!(ack.contains("MSA|AA|PAS-TLS-1"), "{ack:?}");

        // The metrics listener answers over TLS.
        let tcp = tokio::net::TcpStream::connect(metrics).await.unwrap();
        let mut http =
            baton_tls::connect(tcp, "localhost", client_tls(&ca_path, &client, ALPN_HTTP1))
                .await
                .unwrap();
        http.write_all(b"GET /live HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        http.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

        // ... to a client without a certificate too (a kubelet's probe, a
        // Prometheus): metrics carry no patient data, and gRPC and MLLP
        // still require one.
        let tcp = tokio::net::TcpStream::connect(metrics).await.unwrap();
        let probe = Arc::new(baton_tls::client_config(&ca_path, None, ALPN_HTTP1).unwrap());
        let mut http = baton_tls::connect(tcp, "localhost", probe).await.unwrap();
        http.write_all(b"GET /live HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        http.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        feed
    });

    // `baton hl7 send` over TLS with a client certificate is acknowledged,
    // and --then-get reads with the same options; without a client
    // certificate the listener does not take the message.
    let message = dir.path().join("admit.hl7");
    std::fs::write(&message, ADMIT.replace("PAS-TLS-1", "PAS-TLS-CLI")).unwrap();
    let (mllp_to, query_to) = (
        format!("localhost:{}", mllp.port()),
        format!("localhost:{}", query.port()),
    );
    let message = path(&message);
    let sent = baton(&[
        "hl7",
        "send",
        "--ca",
        &ca_s,
        "--cert",
        &cert_s,
        "--key",
        &key_s,
        "--to",
        &mllp_to,
        &message,
        "--then-get",
        "--query",
        &query_to,
    ]);
    assert!(sent.contains(": AA PAS-TLS-CLI"), "{sent}");
    assert!(sent.contains("Patient             4010232137"), "{sent}");
    let (ok, out, err) = try_baton(&["hl7", "send", "--ca", &ca_s, "--to", &mllp_to, &message]);
    assert!(!ok && !out.contains(": AA"), "{out}\n{err}");

    // A plaintext MLLP sender is never acknowledged: its bytes are not a
    // TLS handshake, and the connection is closed.
    let mut plain = TcpStream::connect(mllp).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    plain
        .write_all(&baton_hl7::mllp::frame(UPDATE.as_bytes()))
        .unwrap();
    let mut received = Vec::new();
    let _ = plain.read_to_end(&mut received);
    assert!(
        !String::from_utf8_lossy(&received).contains("MSA|"),
        "a plaintext sender was acknowledged: {received:?}"
    );

    // Rotation: the certificate manager renames a new certificate and key
    // over the files; new connections get it, without a restart.
    let staged = dir.path().join("staged");
    std::fs::create_dir(&staged).unwrap();
    let rotated = ca.server(&staged, "server-rotated");
    let rotated_der = pem_der(&rotated.cert);
    assert_ne!(rotated_der, pem_der(&server.cert));
    std::fs::rename(&rotated.key, &server.key).unwrap();
    std::fs::rename(&rotated.cert, &server.cert).unwrap();
    runtime.block_on(async {
        for address in [query, ingest] {
            assert_eq!(
                served_certificate(address, client_tls(&ca_path, &client, ALPN_GRPC)).await,
                rotated_der,
                "{address} still serves the old certificate"
            );
        }
        assert_eq!(
            served_certificate(mllp, client_tls(&ca_path, &client, ALPN_NONE)).await,
            rotated_der
        );
        assert_eq!(
            served_certificate(metrics, client_tls(&ca_path, &client, ALPN_HTTP1)).await,
            rotated_der
        );
        // The feed connected before the rotation keeps working.
        let ack = String::from_utf8(open_feed.send(UPDATE.as_bytes()).await.unwrap()).unwrap();
        assert!(ack.contains("MSA|AA|PAS-TLS-2"), "{ack:?}");
    });
    // Clients that went away mid-connection did not take the server down
    // (a write to a closed TLS connection raises SIGPIPE).
    up.assert_running();
    // And the query API answers over the new certificate: the first
    // patient the independent client published, read back with a tonic
    // client presenting its certificate.
    let state = runtime.block_on(async {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(&ca_path).unwrap()))
            .identity(Identity::from_pem(
                std::fs::read(&client.cert).unwrap(),
                std::fs::read(&client.key).unwrap(),
            ));
        let channel = Channel::from_shared(format!("https://localhost:{}", query.port()))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        CareStateQueryClient::new(channel)
            .get_care_state(GetCareStateRequest {
                patient: Some(PatientRef {
                    r#ref: Some(Ref::NhsNumber("9434765919".into())),
                }),
                consistency_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
    });
    assert_eq!(state.state.unwrap().patient_key, "9434765919");
}

/// Runs `binary` with `args` until it exits or, once `wanted` appears in
/// its standard error, is stopped; returns whether it exited by itself,
/// successfully, and its standard error so far.
fn run_until(
    binary: &str,
    args: &[&str],
    env: &[(&str, &str)],
    wanted: &str,
) -> (Option<bool>, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(support::binaries().join(binary))
        .args(args)
        .env("BATON_LOG", "warn")
        .env_remove("BATON_CONFIG")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match received.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains(wanted) {
                    let _ = child.kill();
                    let _ = child.wait();
                    return (None, seen);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().unwrap();
                return (Some(status.success()), seen);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{binary} {args:?} neither exited nor said {wanted:?}:\n{seen}");
        }
    }
}

#[test]
fn a_service_beyond_loopback_without_tls_and_client_authentication_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let everywhere = format!("0.0.0.0:{}", free_address().port());
    let (ingest, mllp, metrics) = (
        free_address().to_string(),
        free_address().to_string(),
        free_address().to_string(),
    );

    // baton up on every interface, in plaintext: refused, saying what to set.
    let up = |extra: &[&str]| {
        let mut args = vec![
            "up",
            "--data-dir",
            data,
            "--ingest-listen",
            &ingest,
            "--query-listen",
            &everywhere,
            "--mllp-listen",
            &mllp,
            "--metrics-listen",
            &metrics,
            "--admin-listen",
            "off",
        ];
        args.extend_from_slice(extra);
        run_until(
            "baton",
            &args,
            &[],
            "--insecure: serving beyond loopback unprotected",
        )
    };
    let (exited, stderr) = up(&[]);
    assert_eq!(exited, Some(false), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "up.query_listen is {everywhere}, beyond loopback, without TLS and client authentication"
        )),
        "{stderr}"
    );
    for expected in [
        "up.tls.cert",
        "BATON_UP__TLS__CERT",
        "up.tls.client_ca",
        "--insecure",
    ] {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
    // With --insecure it starts, warning that it serves unprotected.
    let (exited, stderr) = up(&["--insecure"]);
    assert_eq!(exited, None, "{stderr}");
    assert!(stderr.contains(&everywhere), "{stderr}");

    // A query replica with TLS but no client authentication: refused too.
    let pki = dir.path().join("pki");
    std::fs::create_dir(&pki).unwrap();
    let server = TestCa::new("Baton e2e CA").server(&pki, "server");
    let (exited, stderr) = run_until(
        "baton-query",
        &[
            "--data-dir",
            data,
            "--listen",
            &everywhere,
            "--admin-listen",
            "off",
            "--metrics-listen",
            "off",
        ],
        &[
            ("BATON_QUERY__TLS__CERT", server.cert.to_str().unwrap()),
            ("BATON_QUERY__TLS__KEY", server.key.to_str().unwrap()),
        ],
        "never printed",
    );
    assert_eq!(exited, Some(false), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "query.listen is {everywhere}, beyond loopback, without client authentication"
        )),
        "{stderr}"
    );
}

/// A channel to `address` over mutual TLS, presenting `identity`.
async fn channel_as(address: SocketAddr, ca: &Path, identity: &Issued) -> Channel {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
        .identity(Identity::from_pem(
            std::fs::read(&identity.cert).unwrap(),
            std::fs::read(&identity.key).unwrap(),
        ));
    Channel::from_shared(format!("https://localhost:{}", address.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn patient(nhs: &str) -> Option<PatientRef> {
    Some(PatientRef {
        r#ref: Some(Ref::NhsNumber(nhs.into())),
    })
}

#[test]
fn each_rpc_needs_its_scope_and_a_client_the_table_names() {
    use baton_proto::admin::v1::GetPositionsRequest;
    use baton_proto::admin::v1::operations_client::OperationsClient;
    use baton_proto::ingest::v1::PublishRequest;
    use baton_proto::ingest::v1::care_event_ingest_client::CareEventIngestClient;
    use baton_proto::query::v1::{GetTimelineRequest, ListCohortRequest, WatchCohortRequest};
    use tonic::Code;

    let dir = tempfile::tempdir().unwrap();
    let Pki {
        folder: pki,
        ca,
        ca_path,
        server,
    } = Pki::new(dir.path());
    let board = ca.client(&pki, "board.example");
    let feed = ca.client(&pki, "feed.example");
    let operator = ca.client(&pki, "operator.example");
    let stranger = ca.client(&pki, "stranger.example");
    let (ingest, query, mllp, admin) = (
        free_address(),
        free_address(),
        free_address(),
        free_address(),
    );
    let config = dir.path().join("baton.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[up]
data_dir = {data:?}
ingest_listen = "{ingest}"
query_listen = "{query}"
mllp_listen = "{mllp}"
admin_listen = "{admin}"
metrics_listen = "off"

[up.tls]
cert = {cert:?}
key = {key:?}
client_ca = {ca:?}

[[up.clients]]
id = "frailty-board"
certificate_names = ["board.example"]
scopes = ["read", "timeline"]

[[up.clients]]
id = "pas-feed"
certificate_names = ["feed.example"]
scopes = ["publish", "hl7"]

[[up.clients]]
id = "operator"
certificate_names = ["operator.example"]
scopes = ["admin"]
"#,
            data = dir.path().join("data"),
            cert = server.cert,
            key = server.key,
            ca = ca_path,
        ),
    )
    .unwrap();
    let mut up = Service::start_with_env(
        "baton",
        vec![
            "up".into(),
            "--config".into(),
            config.to_str().unwrap().into(),
        ],
        Some(query),
        vec![
            ("BATON_UP__MLLP_LISTEN".into(), mllp.to_string()),
            ("BATON_UP__ADMIN_LISTEN".into(), admin.to_string()),
            ("BATON_UP__METRICS_LISTEN".into(), "off".into()),
        ],
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // The feed sends HL7 (scope hl7): acknowledged.
        let mut sender =
            MllpClient::connect_tls(mllp, "localhost", client_tls(&ca_path, &feed, ALPN_NONE))
                .await
                .unwrap();
        let ack = String::from_utf8(sender.send(ADMIT.as_bytes()).await.unwrap()).unwrap();
        assert!(ack.contains("MSA|AA|PAS-TLS-1"), "{ack:?}");
        // The board may not (no hl7 scope): closed unacknowledged.
        let mut board_sender =
            MllpClient::connect_tls(mllp, "localhost", client_tls(&ca_path, &board, ALPN_NONE))
                .await
                .unwrap();
        assert!(board_sender.send(UPDATE.as_bytes()).await.is_err());

        let as_board = channel_as(query, &ca_path, &board).await;
        let mut board_query = CareStateQueryClient::new(as_board.clone());
        let get = |nhs: &str| GetCareStateRequest {
            patient: patient(nhs),
            consistency_token: String::new(),
        };
        // read: the admitted patient, once projected.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match board_query.get_care_state(get("4010232137")).await {
                Ok(state) => {
                    assert_eq!(state.into_inner().state.unwrap().patient_key, "4010232137");
                    break;
                }
                Err(status) if status.code() == Code::NotFound => {
                    assert!(std::time::Instant::now() < deadline, "never projected");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(status) => panic!("the board could not read: {status:?}"),
            }
        }
        // timeline: allowed.
        board_query
            .get_timeline(GetTimelineRequest {
                patient: patient("4010232137"),
                ..GetTimelineRequest::default()
            })
            .await
            .unwrap();
        // cohort, watch, publish, admin: refused, naming the scope.
        let denied = |status: tonic::Status, scope: &str, rpc: &str| {
            assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
            assert!(
                status.message().contains(&format!("\"{scope}\""))
                    && status.message().contains(rpc)
                    && status.message().contains("frailty-board"),
                "{status:?}"
            );
        };
        denied(
            board_query
                .list_cohort(ListCohortRequest::default())
                .await
                .unwrap_err(),
            "cohort",
            "ListCohort",
        );
        denied(
            board_query
                .watch_cohort(WatchCohortRequest::default())
                .await
                .unwrap_err(),
            "watch",
            "WatchCohort",
        );
        let as_board_ingest = channel_as(ingest, &ca_path, &board).await;
        denied(
            CareEventIngestClient::new(as_board_ingest)
                .publish(PublishRequest::default())
                .await
                .unwrap_err(),
            "publish",
            "Publish",
        );
        let as_board_admin = channel_as(admin, &ca_path, &board).await;
        denied(
            OperationsClient::new(as_board_admin)
                .get_positions(GetPositionsRequest {})
                .await
                .unwrap_err(),
            "admin",
            "GetPositions",
        );

        // The feed (publish) passes the door: its empty batch is refused
        // for what it is, not for who sent it.
        let as_feed_ingest = channel_as(ingest, &ca_path, &feed).await;
        let empty = CareEventIngestClient::new(as_feed_ingest)
            .publish(PublishRequest::default())
            .await
            .unwrap_err();
        assert_eq!(empty.code(), Code::InvalidArgument, "{empty:?}");
        // Without read, a known and an unknown patient are refused alike.
        let mut feed_query = CareStateQueryClient::new(channel_as(query, &ca_path, &feed).await);
        let known = feed_query
            .get_care_state(get("4010232137"))
            .await
            .unwrap_err();
        let unknown = feed_query
            .get_care_state(get("9434765919"))
            .await
            .unwrap_err();
        assert_eq!(known.code(), Code::PermissionDenied);
        assert_eq!(
            (known.code(), known.message()),
            (unknown.code(), unknown.message())
        );
        assert!(!known.message().contains("4010232137"), "{known:?}");

        // admin: the operator's.
        OperationsClient::new(channel_as(admin, &ca_path, &operator).await)
            .get_positions(GetPositionsRequest {})
            .await
            .unwrap();

        // A certificate from the CA that the table does not name: no
        // identity, whatever it asks; health checking stays open.
        let as_stranger = channel_as(query, &ca_path, &stranger).await;
        let status = CareStateQueryClient::new(as_stranger.clone())
            .get_care_state(get("4010232137"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        tonic_health_check(as_stranger).await;
    });
    // The baton command over mutual TLS: the board reads, the feed may not.
    let (query_s, ca_s) = (query.to_string(), ca_path.to_str().unwrap().to_owned());
    let as_client = |who: &Issued, command: &[&str]| {
        let mut args: Vec<String> = command.iter().map(|arg| (*arg).to_owned()).collect();
        for (flag, value) in [
            ("--query", query_s.clone()),
            ("--ca", ca_s.clone()),
            ("--cert", who.cert.to_str().unwrap().to_owned()),
            ("--key", who.key.to_str().unwrap().to_owned()),
        ] {
            args.push(flag.to_owned());
            args.push(value);
        }
        support::try_baton(&as_refs(&args))
    };
    let (ok, out, err) = as_client(&board, &["state", "get", "4010232137", "--json"]);
    assert!(ok && out.contains("4010232137"), "{out}\n{err}");
    let (ok, _, err) = as_client(&feed, &["state", "get", "4010232137"]);
    assert!(!ok && err.contains("lacks the scope \"read\""), "{err}");
    // The board's refused HL7 sender is in the audit log, as the operator
    // reads it.
    let admin_s = admin.to_string();
    let (ok, audit, err) = support::try_baton_as(
        &operator,
        &ca_path,
        &[
            "audit",
            "--client",
            "frailty-board",
            "--json",
            "--admin",
            &admin_s,
        ],
    );
    assert!(ok, "{err}");
    let refused: Vec<serde_json::Value> = audit
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|record| record["rpc"] == "MLLP")
        .collect();
    assert_eq!(refused.len(), 1, "{audit}");
    assert_eq!(refused[0]["outcome"], "OUTCOME_DENIED");
    assert_eq!(refused[0]["service"], "ingest");
    assert!(
        refused[0]["detail"].as_str().unwrap().contains("\"hl7\""),
        "{audit}"
    );
    up.assert_running();
}

async fn tonic_health_check(channel: Channel) {
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
}

#[test]
fn the_python_client_with_tls_and_a_token_is_served_and_bad_tokens_are_not() {
    use baton_tls::testing::TestSigner;
    use serde_json::json;

    let dir = tempfile::tempdir().unwrap();
    let Pki {
        folder: pki,
        ca_path,
        server,
        ..
    } = Pki::new(dir.path());
    let signer = TestSigner::new();
    let public = signer.write_public(&pki.join("jwt-signing.pem"));
    let (ingest, query) = (free_address(), free_address());
    let config = dir.path().join("baton.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[up]
data_dir = {data:?}
ingest_listen = "{ingest}"
query_listen = "{query}"

[up.tls]
cert = {cert:?}
key = {key:?}

[up.jwt]
issuer = "https://auth.example.nhs.uk"
audience = "baton"
keys = [{public:?}]

[[up.clients]]
id = "python-e2e"
token_subjects = ["python-app"]
scopes = ["publish", "read", "cohort", "watch", "timeline"]
"#,
            data = dir.path().join("data"),
            cert = server.cert,
            key = server.key,
        ),
    )
    .unwrap();
    let mut up = Service::start(
        "baton",
        vec![
            "up".into(),
            "--config".into(),
            config.to_str().unwrap().into(),
        ],
        Some(query),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token_file = |name: &str, overrides: serde_json::Value| {
        let mut claims = json!({
            "iss": "https://auth.example.nhs.uk",
            "aud": "baton",
            "sub": "python-app",
            "exp": now + 600,
            "nbf": now - 10,
        });
        for (key, value) in overrides.as_object().unwrap() {
            claims[key] = value.clone();
        }
        let path = dir.path().join(name);
        std::fs::write(&path, signer.sign(&claims)).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (ingest_s, query_s, ca_s) = (
        ingest.to_string(),
        query.to_string(),
        ca_path.to_str().unwrap().to_owned(),
    );
    let exercise = |token: &str, patients: [&str; 2]| {
        vec![
            "exercise",
            "--ingest",
            &ingest_s,
            "--query",
            &query_s,
            "--timeout-s",
            "20",
            "--patients",
            patients[0],
            patients[1],
            "--ca",
            &ca_s,
            "--token-file",
            token,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>()
    };

    let good = token_file("good.jwt", json!({}));
    let lines = grpc_client(&as_refs(&exercise(&good, ["9434765919", "9990000026"])));
    assert_eq!(rpcs_called(&lines), EVERY_RPC);

    let tampered = {
        let token = std::fs::read_to_string(&good).unwrap();
        let other =
            std::fs::read_to_string(token_file("other.jwt", json!({"sub": "root"}))).unwrap();
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[1] = other.split('.').nth(1).unwrap();
        let path = dir.path().join("tampered.jwt");
        std::fs::write(&path, parts.join(".")).unwrap();
        path.to_str().unwrap().to_owned()
    };
    // The baton command with the CA and the token.
    let (ok, out, err) = support::try_baton(&[
        "state",
        "get",
        "9434765919",
        "--json",
        "--query",
        &query_s,
        "--ca",
        &ca_s,
        "--token-file",
        &good,
    ]);
    assert!(ok && out.contains("9434765919"), "{out}\n{err}");
    for (what, token, reason) in [
        (
            "expired",
            token_file("expired.jwt", json!({"exp": now - 600})),
            "expired",
        ),
        (
            "another audience",
            token_file("audience.jwt", json!({"aud": "another-api"})),
            "another audience",
        ),
        ("tampered", tampered, "signature"),
    ] {
        let (ok, out, err) =
            try_grpc_client(&as_refs(&exercise(&token, ["9990000018", "9990000034"])));
        assert!(!ok, "{what}: served\n{out}");
        assert!(
            err.contains("UNAUTHENTICATED") && err.contains(reason),
            "{what}: {err}"
        );
    }
    up.assert_running();
}

fn as_refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}
