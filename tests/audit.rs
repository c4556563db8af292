//! Limits and the audit log against a running `baton up` with client
//! certificates required (made by the test, never committed): a client
//! limited to one service reads, lists, pages through and watches only the
//! patients referred to it — never one outside, whether asked directly,
//! through page tokens or on a watch — and a patient outside its limit and
//! an unknown one are refused alike. Every read and every refusal is in
//! the audit log with the client, how it authenticated, the end user, role
//! and purpose it asserted, the RPC and the outcome, as `baton audit`
//! shows it.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use baton_care::fixtures::{admitted, referral_requested, transferred};
use baton_proto::ingest::v1::PublishRequest;
use baton_proto::ingest::v1::care_event_ingest_client::CareEventIngestClient;
use baton_proto::query::v1::care_state_query_client::CareStateQueryClient;
use baton_proto::query::v1::patient_ref::Ref;
use baton_proto::query::v1::{
    CohortChange, CohortFilter, GetCareStateRequest, GetTimelineRequest, ListCohortRequest,
    PatientRef, WatchCohortRequest,
};
use baton_tls::testing::{Issued, TestCa};
use support::{Service, free_address};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// Referred to the frailty service: within the board's limit.
const REFERRED: &str = "9434765919";
/// In hospital, referred nowhere: outside it.
const ELSEWHERE: &str = "4010232137";
/// Known to nobody.
const UNKNOWN: &str = "9990000018";

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

fn get(nhs: &str) -> tonic::Request<GetCareStateRequest> {
    let mut request = tonic::Request::new(GetCareStateRequest {
        patient: patient(nhs),
        consistency_token: String::new(),
    });
    let metadata = request.metadata_mut();
    metadata.insert("x-baton-user", "555123456789".parse().unwrap());
    metadata.insert(
        "x-baton-role",
        "R8000 clinical practitioner".parse().unwrap(),
    );
    metadata.insert("x-baton-purpose", "direct care".parse().unwrap());
    request
}

fn in_hospital() -> Option<CohortFilter> {
    Some(CohortFilter {
        setting: baton_proto::state::v1::CareSetting::Hospital as i32,
        ..CohortFilter::default()
    })
}

#[test]
fn a_limited_client_sees_only_its_patients_and_every_read_and_refusal_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir(&pki).unwrap();
    let ca = TestCa::new("Baton audit CA");
    let ca_path = ca.write(&pki.join("ca.pem"));
    let server = ca.server(&pki, "server");
    let board = ca.client(&pki, "board.example");
    let ward = ca.client(&pki, "ward.example");
    let feed = ca.client(&pki, "feed.example");
    let operator = ca.client(&pki, "operator.example");
    let (ingest, query, admin) = (free_address(), free_address(), free_address());
    let config = dir.path().join("baton.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[up]
data_dir = {data:?}
ingest_listen = "{ingest}"
query_listen = "{query}"
mllp_listen = "off"
admin_listen = "{admin}"
metrics_listen = "off"

[up.tls]
cert = {cert:?}
key = {key:?}
client_ca = {ca:?}

[[up.clients]]
id = "frailty-board"
certificate_names = ["board.example"]
scopes = ["read", "cohort", "watch", "timeline"]
services = ["FRAIL-LTH"]

[[up.clients]]
id = "ward-board"
certificate_names = ["ward.example"]
scopes = ["read", "cohort"]

[[up.clients]]
id = "pas-feed"
certificate_names = ["feed.example"]
scopes = ["publish"]

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
            ("BATON_UP__ADMIN_LISTEN".into(), admin.to_string()),
            ("BATON_UP__METRICS_LISTEN".into(), "off".into()),
            ("BATON_UP__MLLP_LISTEN".into(), "off".into()),
        ],
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut publish = CareEventIngestClient::new(channel_as(ingest, &ca_path, &feed).await);
        let mut send = async |events| {
            publish
                .publish(PublishRequest {
                    events,
                    validate_only: false,
                })
                .await
                .unwrap()
        };
        send(vec![
            admitted(REFERRED, "V1", 1_700_000_000, "WARD-7"),
            referral_requested(REFERRED, "R1", "FRAIL-LTH", 1_700_000_100, 1_700_090_000),
            admitted(ELSEWHERE, "V2", 1_700_000_000, "WARD-9"),
        ])
        .await;

        let mut board = CareStateQueryClient::new(channel_as(query, &ca_path, &board).await);
        let mut ward = CareStateQueryClient::new(channel_as(query, &ca_path, &ward).await);
        // The ward board (no limit) sees both, once projected.
        let deadline = Instant::now() + Duration::from_secs(60);
        for nhs in [REFERRED, ELSEWHERE] {
            loop {
                match ward.get_care_state(get(nhs)).await {
                    Ok(_) => break,
                    Err(status) if status.code() == Code::NotFound => {
                        assert!(Instant::now() < deadline, "never projected");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(status) => panic!("{status:?}"),
                }
            }
        }
        // An unknown patient, to a client without a limit: NOT_FOUND.
        assert_eq!(
            ward.get_care_state(get(UNKNOWN)).await.unwrap_err().code(),
            Code::NotFound
        );

        // The frailty board reads its patient, not the other, and cannot
        // tell the other from one Baton does not know.
        let state = board.get_care_state(get(REFERRED)).await.unwrap();
        assert_eq!(state.into_inner().state.unwrap().patient_key, REFERRED);
        let outside = board.get_care_state(get(ELSEWHERE)).await.unwrap_err();
        let unknown = board.get_care_state(get(UNKNOWN)).await.unwrap_err();
        assert_eq!(outside.code(), Code::PermissionDenied, "{outside:?}");
        assert_eq!(
            (outside.code(), outside.message()),
            (unknown.code(), unknown.message())
        );
        assert!(
            outside.message().contains("FRAIL-LTH") && !outside.message().contains(ELSEWHERE),
            "{outside:?}"
        );
        let timeline = board
            .get_timeline(GetTimelineRequest {
                patient: patient(ELSEWHERE),
                ..GetTimelineRequest::default()
            })
            .await
            .unwrap_err();
        assert_eq!(timeline.code(), Code::PermissionDenied);
        board
            .get_timeline(GetTimelineRequest {
                patient: patient(REFERRED),
                ..GetTimelineRequest::default()
            })
            .await
            .unwrap();

        // Listing, a page of one at a time: its patient only, however the
        // pages are walked.
        let mut listed = Vec::new();
        let mut page_token = String::new();
        for _ in 0..10 {
            let page = board
                .list_cohort(ListCohortRequest {
                    filter: in_hospital(),
                    page_size: 1,
                    page_token: page_token.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            listed.extend(page.states.into_iter().map(|state| state.patient_key));
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        assert_eq!(listed, [REFERRED]);
        let everyone = ward
            .list_cohort(ListCohortRequest {
                filter: in_hospital(),
                ..ListCohortRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(everyone.states.len(), 2);

        // Watching: its patient only, and a change to the other is never
        // sent, not even as a key.
        let mut watch = board
            .watch_cohort(WatchCohortRequest {
                filter: in_hospital(),
            })
            .await
            .unwrap()
            .into_inner();
        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(30), watch.message())
                .await
                .expect("a watch message in time")
                .unwrap()
                .expect("the watch goes on")
        };
        let member = next().await;
        assert_eq!(
            (member.change(), member.patient_key.as_str()),
            (CohortChange::Member, REFERRED)
        );
        assert_eq!(next().await.change(), CohortChange::Synced);
        // The other patient moves first, and is seen moved by the ward
        // board; then the board's patient.
        send(vec![transferred(ELSEWHERE, "V2", 1_700_003_600, "WARD-10")]).await;
        let moved = Instant::now() + Duration::from_secs(60);
        while ward
            .get_care_state(get(ELSEWHERE))
            .await
            .unwrap()
            .into_inner()
            .state
            .unwrap()
            .version
            < 2
        {
            assert!(Instant::now() < moved, "the transfer was never projected");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        send(vec![transferred(REFERRED, "V1", 1_700_003_600, "WARD-10")]).await;
        let changed = next().await;
        assert_eq!(
            (changed.change(), changed.patient_key.as_str()),
            (CohortChange::Changed, REFERRED)
        );
    });

    // The audit log, through the admin API, as the operator asks it.
    let ca_s = ca_path.to_str().unwrap().to_owned();
    let as_operator = |command: &[&str]| -> Vec<serde_json::Value> {
        let mut args: Vec<String> = command.iter().map(|arg| (*arg).to_owned()).collect();
        for (flag, value) in [
            ("--admin", admin.to_string()),
            ("--ca", ca_s.clone()),
            ("--cert", operator.cert.to_str().unwrap().to_owned()),
            ("--key", operator.key.to_str().unwrap().to_owned()),
            ("--json", String::new()),
        ] {
            args.push(flag.to_owned());
            if !value.is_empty() {
                args.push(value);
            }
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        support::baton(&refs)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    };
    let field = |record: &serde_json::Value, name: &str| {
        record[name].as_str().unwrap_or_default().to_owned()
    };
    let of = |records: &[serde_json::Value], client: &str, rpc: &str, outcome: &str| {
        records
            .iter()
            .filter(|r| {
                field(r, "clientId") == client
                    && field(r, "rpc") == rpc
                    && field(r, "outcome") == outcome
            })
            .cloned()
            .collect::<Vec<_>>()
    };

    // Who read the referred patient: the board, by certificate, with the
    // user, role and purpose it asserted; every way it read.
    let referred = as_operator(&["audit", "--patient", "943 476 5919"]);
    let read = of(&referred, "frailty-board", "GetCareState", "OUTCOME_READ");
    assert_eq!(read.len(), 1, "{referred:#?}");
    let read = &read[0];
    assert_eq!(
        field(read, "authenticatedBy"),
        "AUTHENTICATION_CLIENT_CERTIFICATE"
    );
    assert_eq!(field(read, "user"), "555123456789");
    assert_eq!(field(read, "role"), "R8000 clinical practitioner");
    assert_eq!(field(read, "purpose"), "direct care");
    assert_eq!(field(read, "assertedBy"), "ASSERTED_BY_METADATA");
    assert_eq!(field(read, "patientKey"), REFERRED);
    assert_eq!(field(read, "status"), "OK");
    assert!(!field(read, "peer").is_empty() && !field(read, "at").is_empty());
    for rpc in ["GetTimeline", "ListCohort", "WatchCohort"] {
        assert!(
            !of(&referred, "frailty-board", rpc, "OUTCOME_READ").is_empty(),
            "no {rpc} read: {referred:#?}"
        );
    }
    // The other patient: read by the ward board only; the frailty board's
    // attempts are there as refusals.
    let elsewhere = as_operator(&["audit", "--patient", ELSEWHERE]);
    assert!(!of(&elsewhere, "ward-board", "GetCareState", "OUTCOME_READ").is_empty());
    assert!(!of(&elsewhere, "ward-board", "ListCohort", "OUTCOME_READ").is_empty());
    assert!(
        elsewhere
            .iter()
            .all(|r| field(r, "clientId") != "frailty-board"
                || field(r, "outcome") == "OUTCOME_DENIED"),
        "{elsewhere:#?}"
    );
    let denied = of(
        &elsewhere,
        "frailty-board",
        "GetCareState",
        "OUTCOME_DENIED",
    );
    assert_eq!(denied.len(), 1, "{elsewhere:#?}");
    assert_eq!(field(&denied[0], "status"), "PERMISSION_DENIED");
    assert!(field(&denied[0], "detail").contains("FRAIL-LTH"));
    assert_eq!(
        of(&elsewhere, "frailty-board", "GetTimeline", "OUTCOME_DENIED").len(),
        1
    );
    // Unknown patients are recorded too: refused to the board, not found
    // for the ward board.
    let unknown = as_operator(&["audit", "--patient", UNKNOWN]);
    assert_eq!(
        of(&unknown, "frailty-board", "GetCareState", "OUTCOME_DENIED").len(),
        1
    );
    assert_eq!(
        of(&unknown, "ward-board", "GetCareState", "OUTCOME_NOT_FOUND").len(),
        1
    );

    // A call refused at the door (the feed has no read scope): recorded
    // under the feed, about no patient.
    let query_s = query.to_string();
    let (ok, _, err) = support::try_baton_as(
        &feed,
        &ca_path,
        &["state", "get", REFERRED, "--query", &query_s],
    );
    assert!(!ok && err.contains("lacks the scope"), "{err}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let feed = as_operator(&["audit", "--client", "pas-feed"]);
        let refused = of(&feed, "pas-feed", "GetCareState", "OUTCOME_DENIED");
        if let Some(refused) = refused.first() {
            assert_eq!(field(refused, "status"), "PERMISSION_DENIED");
            assert_eq!(field(refused, "patientKey"), "");
            assert!(field(refused, "detail").contains("\"read\""));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the refusal was never recorded: {feed:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // What the board read: never the other patient.
    let board = as_operator(&["audit", "--client", "frailty-board"]);
    assert!(
        board.iter().all(|r| field(r, "patientKey") != ELSEWHERE
            || field(r, "outcome") == "OUTCOME_DENIED"),
        "{board:#?}"
    );
    // The table for people, and its filter by time.
    let admin_s = admin.to_string();
    let (ok, table, err) = support::try_baton_as(
        &operator,
        &ca_path,
        &[
            "audit",
            "--patient",
            REFERRED,
            "--since",
            "1h",
            "--admin",
            &admin_s,
        ],
    );
    assert!(ok, "{err}");
    assert!(
        table.contains("frailty-board")
            && table.contains("555123456789, R8000 clinical practitioner, direct care"),
        "{table}"
    );
    up.assert_running();
}
