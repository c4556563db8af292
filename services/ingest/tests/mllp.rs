//! HL7 v2 over MLLP through the real listener on loopback, into the
//! embedded log, folded by the real projector into a sled store: ordered
//! ADT sequences end in the right state and location history; every
//! message gets the acknowledgement it should, and only once durable.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use baton_hl7::AckCode;
use baton_hl7::mllp::frame;
use baton_ingest::IngestConfig;
use baton_ingest::mllp::{CloseReason, TypeCounts};
use baton_projector::{Projector, ProjectorConfig};
use baton_proto::state::v1::{EncounterStatus, PatientCareState};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

mod support;

use support::{Feed, topics};

const NHS_A: &str = "9434765919";
const NHS_B: &str = "4010232137";

/// An ADT message: `time` is local London time (YYYYMMDDHHMM), both EVN-2
/// and EVN-6; `pv1` the fields after PV1-2 up to PV1-19 (visit `V1`).
fn adt(trigger: &str, control: &str, time: &str, nhs: &str, pv1: &str) -> String {
    format!(
        "MSH|^~\\&|PAS|RXX|BATON|RXX|{time}||ADT^{trigger}^ADT_A01|{control}|P|2.5\r\
         EVN|{trigger}|{time}||||{time}\r\
         PID|1||H{nhs}^^^RXX^MR~{nhs}^^^NHS^NH||PATIENT^{nhs}||19400101|F\r\
         PV1|1|I|{pv1}\r"
    )
}

/// PV1 from field 3 on: the ward, then V1 as the visit number (PV1-19).
fn at(ward: &str) -> String {
    format!("{ward}^^^RXX01||||||||||||||||V1")
}

fn wards(state: &PatientCareState) -> Vec<(String, bool)> {
    let encounter = state
        .active_encounter
        .iter()
        .chain(&state.past_encounters)
        .find(|e| e.encounter_id == "V1")
        .expect("encounter V1");
    encounter
        .location_history
        .iter()
        .map(|stay| {
            (
                stay.location.as_ref().unwrap().point_of_care.clone(),
                stay.until.is_some(),
            )
        })
        .collect()
}

#[tokio::test]
async fn transfers_and_discharges_with_their_cancellations_end_where_they_should() {
    let feed = Feed::start(IngestConfig::default()).await;
    let mut pas = feed.connect().await;
    let v1 = |ward: &str| at(ward);
    pas.accept_all(&[
        adt("A01", "1", "202607150900", NHS_A, &v1("AMU")),
        adt("A02", "2", "202607151000", NHS_A, &v1("WARD-7")),
        adt("A02", "3", "202607151100", NHS_A, &v1("WARD-9")),
        // The move to WARD-9 was entered in error.
        adt("A12", "4", "202607151130", NHS_A, &v1("WARD-7")),
        adt("A03", "5", "202607151400", NHS_A, &v1("WARD-7")),
        // So was the discharge; it happens later, reusing control id 5 as real feeds do.
        adt("A13", "5", "202607151430", NHS_A, &v1("WARD-7")),
        adt("A03", "7", "202607151600", NHS_A, &v1("WARD-7")),
    ])
    .await;

    let store = feed.project().await;
    let state = store.get(NHS_A).unwrap().expect("the patient's state");
    assert!(state.active_encounter.is_none(), "{state:?}");
    let encounter = &state.past_encounters[0];
    assert_eq!(encounter.status(), EncounterStatus::Finished);
    assert_eq!(
        wards(&state),
        [("AMU".to_owned(), true), ("WARD-7".to_owned(), true)],
        "the cancelled move is not a stay"
    );
    // 16:00 in London in July is 15:00 UTC.
    let discharged = state
        .last_discharge
        .as_ref()
        .unwrap()
        .discharged_at
        .unwrap();
    assert_eq!(discharged.seconds % 86_400, 15 * 3600);
    assert_eq!(state.version, 7, "every message applied once");
    assert_eq!(feed.stats.snapshot().accepted, 7);
    feed.stop().await;
}

#[tokio::test]
async fn a_cancelled_admission_then_a_new_one_leaves_the_patient_admitted() {
    let feed = Feed::start(IngestConfig::default()).await;
    let mut pas = feed.connect().await;
    pas.accept_all(&[
        adt("A01", "1", "202601150900", NHS_A, &at("AMU")),
        adt("A11", "2", "202601150930", NHS_A, &at("AMU")),
        adt("A01", "3", "202601151000", NHS_A, &at("WARD-3")),
    ])
    .await;

    let state = feed.project().await.get(NHS_A).unwrap().unwrap();
    let encounter = state.active_encounter.as_ref().expect("admitted");
    assert_eq!(encounter.status(), EncounterStatus::InProgress);
    assert_eq!(encounter.location.as_ref().unwrap().point_of_care, "WARD-3");
    assert_eq!(wards(&state), [("WARD-3".to_owned(), false)]);
    // GMT in January: 10:00 in London is 10:00 UTC.
    assert_eq!(encounter.admitted_at.unwrap().seconds % 86_400, 10 * 3600);
    feed.stop().await;
}

#[tokio::test]
async fn two_patients_merged_leave_one_record() {
    let feed = Feed::start(IngestConfig::default()).await;
    let mut pas = feed.connect().await;
    pas.accept_all(&[
        adt("A01", "1", "202607150900", NHS_A, &at("AMU")),
        adt("A01", "2", "202607150905", NHS_B, &at("WARD-5")),
    ])
    .await;
    let merge = format!(
        "MSH|^~\\&|PAS|RXX|BATON|RXX|202607151000||ADT^A40^ADT_A39|3|P|2.5\r\
         EVN|A40|202607151000\r\
         PID|1||{NHS_A}^^^NHS^NH\r\
         MRG|{NHS_B}^^^NHS^NH\r"
    );
    pas.accept(&merge).await;

    let store = feed.project().await;
    // The hand-over of the retired record is appended by the projector and
    // folded by the next batch.
    let mut projector = Projector::start(
        feed.log.clone(),
        store.clone(),
        ProjectorConfig::default(),
        topics(),
    )
    .await
    .unwrap();
    projector.catch_up().await.unwrap();
    let survivor = store.get(NHS_A).unwrap().unwrap();
    let retired = store.get(NHS_B).unwrap().unwrap();
    assert_eq!(retired.merged_into.as_ref().unwrap().patient_key, NHS_A);
    assert_eq!(survivor.merged_from[0].patient_key, NHS_B);
    assert!(
        survivor
            .identity
            .as_ref()
            .unwrap()
            .local_ids
            .iter()
            .any(|l| l.value == format!("H{NHS_B}")),
        "the survivor knows the retired patient's hospital number: {survivor:?}"
    );
    feed.stop().await;
}

#[tokio::test]
async fn a_resent_message_is_acknowledged_and_changes_nothing() {
    let feed = Feed::start(IngestConfig::default()).await;
    let mut pas = feed.connect().await;
    let admit = adt("A01", "1", "202607150900", NHS_A, &at("AMU"));
    pas.accept(&admit).await;
    let written = feed.records().await;
    // A sender that lost the ACK sends again, on a new connection, with LF separators.
    let mut again = feed.connect().await;
    again.accept(&admit.replace('\r', "\n")).await;
    assert_eq!(feed.records().await, written * 2, "appended again…");
    let state = feed.project().await.get(NHS_A).unwrap().unwrap();
    assert_eq!(state.version, 1, "…but the same event id, so applied once");
    feed.stop().await;
}

#[tokio::test]
async fn bad_and_unsupported_messages_are_refused_naming_the_field() {
    let feed = Feed::start(IngestConfig::default()).await;
    let mut pas = feed.connect().await;

    let bad_nhs = adt("A01", "B1", "202607150900", "9434765918", &at("AMU"));
    let (ack, text) = pas.send(&bad_nhs).await;
    assert_eq!(ack.code, AckCode::Error, "{text}");
    assert_eq!(ack.control_id, "B1");
    assert!(
        text.contains("ERR||PID^1^3^2|102^Data type error^HL70357|E"),
        "{text}"
    );
    assert!(ack.problems[0].contains("modulus-11"), "{text}");

    let no_visit = adt("A02", "B2", "202607150900", NHS_A, "AMU");
    let (ack, text) = pas.send(&no_visit).await;
    assert_eq!(ack.code, AckCode::Error);
    assert!(
        text.contains("ERR||PV1^1^19|101^Required field missing"),
        "{text}"
    );

    let lab = "MSH|^~\\&|LAB|RXX|BATON|RXX|202607150900||ORU^R01|B3|P|2.5\rPID|1||1^^^RXX\r";
    let (ack, text) = pas.send(lab).await;
    assert_eq!(ack.code, AckCode::Reject);
    assert!(text.contains("200^Unsupported message type"), "{text}");
    assert!(ack.problems[0].contains("ORU^R01"), "{text}");

    let (ack, _) = pas.send("not hl7 at all").await;
    assert_eq!(ack.code, AckCode::Reject);

    assert_eq!(feed.records().await, 0, "nothing refused is written");
    let stats = feed.stats.snapshot();
    assert_eq!((stats.accepted, stats.errored, stats.rejected), (0, 2, 2));
    assert_eq!(stats.unsupported, 1);
    assert_eq!(
        stats.by_type["ORU^R01"],
        TypeCounts {
            rejected: 1,
            ..TypeCounts::default()
        }
    );
    assert_eq!(stats.by_type["ADT^A01"].errored, 1);
    feed.stop().await;
}

#[tokio::test]
async fn the_log_down_is_an_error_to_retry_and_the_retry_lands() {
    let feed = Feed::start(IngestConfig::default()).await;
    let mut pas = feed.connect().await;
    let admit = adt("A01", "1", "202607150900", NHS_A, &at("AMU"));
    feed.log.before.down.store(true, Ordering::SeqCst);
    let (ack, text) = pas.send(&admit).await;
    assert_eq!(ack.code, AckCode::Error, "{text}");
    assert!(text.contains("207^Application internal error"), "{text}");
    assert!(ack.problems[0].contains("send the message again"), "{text}");
    feed.log.before.down.store(false, Ordering::SeqCst);
    pas.accept(&admit).await;
    assert!(feed.project().await.get(NHS_A).unwrap().is_some());
    feed.stop().await;
}

#[tokio::test]
async fn framing_limits_and_idle_connections() {
    let feed = Feed::start(IngestConfig {
        mllp_max_message_bytes: 2048,
        mllp_idle_timeout_ms: 300,
        ..IngestConfig::default()
    })
    .await;
    let mut pas = feed.connect().await;
    // Too large: refused from its MSH without being buffered, and the
    // connection goes on.
    let huge = format!(
        "{}ZZZ|{}\r",
        adt("A01", "BIG", "202607150900", NHS_A, &at("AMU")),
        "x".repeat(10_000)
    );
    let (ack, text) = pas.send(&huge).await;
    assert_eq!(ack.code, AckCode::Reject);
    assert_eq!(ack.control_id, "BIG");
    assert!(text.contains("larger than the 2048 bytes"), "{text}");
    // Two messages in one write, split anywhere: each acknowledged in order.
    let mut both = frame(adt("A01", "1", "202607150900", NHS_A, &at("AMU")).as_bytes());
    both.extend(frame(
        adt("A02", "2", "202607151000", NHS_A, &at("WARD-7")).as_bytes(),
    ));
    let (first, second) = both.split_at(37);
    pas.write(first).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    pas.write(second).await;
    assert_eq!(pas.read_ack().await.0.control_id, "1");
    assert_eq!(pas.read_ack().await.0.control_id, "2");
    assert_eq!(feed.stats.snapshot().too_large, 1);
    // Idle past the timeout: closed by the listener.
    let mut idle = feed.connect().await;
    let mut buffer = [0_u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.stream.read(&mut buffer))
        .await
        .expect("closed within the timeout");
    assert_eq!(closed.unwrap(), 0);
    feed.stop().await;
}

#[tokio::test]
async fn several_connections_at_once_and_shutdown_acknowledges_what_was_received() {
    let feed = Feed::start(IngestConfig::default()).await;
    let mut senders = Vec::new();
    for n in 0..4 {
        let mut sender = feed.connect().await;
        senders.push(tokio::spawn(async move {
            for i in 0..5 {
                let nhs = ["9434765919", "4010232137", "9434765870", "9990000018"][n];
                let control = format!("{n}-{i}");
                let time = format!("2026071509{:02}", i * 10);
                sender
                    .accept(&adt("A01", &control, &time, nhs, &at(&format!("W{i}"))))
                    .await;
            }
            sender
        }));
    }
    let mut open = Vec::new();
    for sender in senders {
        open.push(sender.await.unwrap());
    }
    assert_eq!(feed.stats.snapshot().accepted, 20);
    assert_eq!(feed.stats.snapshot().connections, 4);
    // A message sent just before shutdown is still acknowledged.
    let last = &mut open[0];
    last.write(&frame(
        adt("A02", "L", "202607151200", NHS_A, &at("WARD-1")).as_bytes(),
    ))
    .await;
    let (ack, _) = last.read_ack().await;
    assert_eq!(ack.code, AckCode::Accept);
    let address = feed.address;
    feed.stop().await;
    let mut closed = [0_u8; 1];
    assert_eq!(
        open[1].stream.read(&mut closed).await.unwrap(),
        0,
        "connections are closed"
    );
    assert!(
        TcpStream::connect(address).await.is_err(),
        "no longer accepting"
    );
}

#[test]
fn settings_are_checked_naming_the_bad_one() {
    let zone = IngestConfig {
        hl7_time_zone: "Europe/Lundon".into(),
        ..IngestConfig::default()
    };
    let error = zone.validate().unwrap_err();
    assert!(
        error.starts_with("hl7_time_zone: unknown time zone \"Europe/Lundon\""),
        "{error}"
    );
    let small = IngestConfig {
        mllp_max_message_bytes: 10,
        ..IngestConfig::default()
    };
    assert!(
        small
            .validate()
            .unwrap_err()
            .contains("mllp_max_message_bytes")
    );
    for (field, config) in [
        (
            "mllp_frame_timeout_ms: expected milliseconds, at least 1, got 0",
            IngestConfig {
                mllp_frame_timeout_ms: 0,
                ..IngestConfig::default()
            },
        ),
        (
            "mllp_max_connections_per_peer: expected at least 1, got 0",
            IngestConfig {
                mllp_max_connections_per_peer: 0,
                ..IngestConfig::default()
            },
        ),
    ] {
        assert_eq!(config.validate().unwrap_err(), field);
    }
    use baton_ingest::MllpListen;
    assert_eq!("off".parse::<MllpListen>().unwrap(), MllpListen::Off);
    assert_eq!(
        "127.0.0.1:2575".parse::<MllpListen>().unwrap(),
        baton_ingest::IngestConfig::default().mllp_listen
    );
    assert!(
        "2575"
            .parse::<MllpListen>()
            .unwrap_err()
            .contains("\"off\"")
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("baton.toml");
    std::fs::write(
        &file,
        "[ingest]\nmllp_listen = \"off\"\nmllp_frame_timeout_ms = 2500\nmllp_max_connections_per_peer = 3\n",
    )
    .unwrap();
    let no_flags = BTreeMap::<String, String>::new();
    let config: IngestConfig =
        baton_runtime::load_config(Some(&file), "ingest", &no_flags).unwrap();
    assert_eq!(config.mllp_listen, MllpListen::Off);
    assert_eq!(config.mllp_frame_timeout_ms, 2500);
    assert_eq!(config.mllp_max_connections_per_peer, 3);
    std::fs::write(&file, "[ingest]\nmllp_listen = \"2575\"\n").unwrap();
    let error = baton_runtime::load_config::<IngestConfig>(Some(&file), "ingest", &no_flags)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("mllp_listen") && error.contains("host:port"),
        "{error}"
    );
}

#[tokio::test]
async fn connections_past_the_limit_are_closed_as_they_arrive() {
    let feed = Feed::start(IngestConfig {
        mllp_max_connections: 1,
        ..IngestConfig::default()
    })
    .await;
    let mut first = feed.connect().await;
    first
        .accept(&adt("A01", "1", "202607150900", NHS_A, &at("AMU")))
        .await;
    let mut second = feed.connect().await;
    let mut buffer = [0_u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(5), second.stream.read(&mut buffer))
        .await
        .expect("closed at once");
    assert_eq!(closed.unwrap_or(0), 0);
    first
        .accept(&adt("A02", "2", "202607151000", NHS_A, &at("WARD-7")))
        .await;
    let stats = feed.stats.snapshot();
    assert_eq!((stats.connections, stats.connections_refused), (1, 1));
    drop(first);
    // Its slot is free again once it has gone: a new connection stays open.
    let mut again = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let mut sender = feed.connect().await;
            let mut probe = [0_u8; 1];
            let read =
                tokio::time::timeout(Duration::from_millis(200), sender.stream.read(&mut probe));
            if read.await.is_err() {
                return sender;
            }
        }
    })
    .await
    .expect("a slot frees up");
    again
        .accept(&adt("A02", "3", "202607151100", NHS_A, &at("WARD-9")))
        .await;
    feed.stop().await;
}

#[tokio::test]
async fn connections_past_the_limit_from_one_address_are_closed_while_another_gets_in() {
    let feed = Feed::start(IngestConfig {
        mllp_max_connections_per_peer: 2,
        // Long enough that only the per-peer limit closes anything here.
        mllp_frame_timeout_ms: 600_000,
        ..IngestConfig::default()
    })
    .await;
    let mut first = feed.connect_from([127, 0, 0, 1]).await;
    first
        .accept(&adt("A01", "1", "202607150900", NHS_A, &at("AMU")))
        .await;
    let second = feed.connect_from([127, 0, 0, 1]).await;
    let mut third = feed.connect_from([127, 0, 0, 1]).await;
    assert!(
        third.closed_by_listener().await,
        "a third connection from one address is closed"
    );
    // Another address is another peer.
    let mut other = feed.connect_from([127, 0, 0, 2]).await;
    other
        .accept(&adt("A01", "2", "202607150900", NHS_B, &at("AMU")))
        .await;
    first
        .accept(&adt("A02", "3", "202607151000", NHS_A, &at("WARD-7")))
        .await;
    let stats = feed.stats.snapshot();
    assert_eq!(stats.closed[&CloseReason::MaxConnectionsPerPeer], 1);
    assert_eq!(stats.connections, 3, "{stats:?}");
    // Once one of its connections has gone, the address may open another.
    drop(second);
    let mut again = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let mut sender = feed.connect_from([127, 0, 0, 1]).await;
            if let Some((ack, _)) = sender
                .try_send(&adt("A02", "4", "202607151100", NHS_A, &at("WARD-9")))
                .await
            {
                return (sender, ack);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a slot for the address once one of its connections closed");
    assert_eq!(again.1.code, AckCode::Accept);
    again
        .0
        .accept(&adt("A03", "5", "202607151200", NHS_A, &at("WARD-9")))
        .await;
    feed.stop().await;
}

#[tokio::test]
async fn a_tls_handshake_not_finished_in_time_is_closed_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let ca = baton_tls::testing::TestCa::new("Baton test CA");
    let server = ca.server(dir.path(), "server");
    let settings = baton_tls::TlsConfig {
        cert: Some(server.cert),
        key: Some(server.key),
        client_ca: None,
        handshake_timeout_ms: 200,
    };
    let tls = baton_tls::Tls::load(&settings, baton_tls::ALPN_NONE).unwrap();
    let feed = Feed::start_with_tls(
        IngestConfig {
            mllp_frame_timeout_ms: 600_000,
            ..IngestConfig::default()
        },
        tls,
    )
    .await;
    // The handshake is bounded by tls.handshake_timeout_ms, not the frame
    // timeout: a connection that never starts it is closed.
    let mut silent = feed.connect().await;
    assert!(silent.closed_by_listener().await);
    let stats = feed.stats.snapshot();
    assert_eq!(stats.closed[&CloseReason::HandshakeTimeout], 1, "{stats:?}");
    assert_eq!(stats.handshakes_failed, 1);
    feed.stop().await;
}
