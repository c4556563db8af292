//! The projector's metrics and monitor over the embedded log and a real
//! store: what is counted, the lag per partition, readiness once caught up,
//! and that no patient is ever named in the exposition.
//!
//! One test per file: the registry is the process's own.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use baton_care::fixtures::{admitted, discharged, medically_optimised, transferred};
use baton_log::embedded::EmbeddedLog;
use baton_log::{EventLog, NewRecord, TopicSpec, topics};
use baton_projector::{Projector, ProjectorConfig};
use baton_proto::events::v1::{CareEvent, DischargeDestination};
use baton_runtime::FixedClock;
use baton_store::Store;
use baton_telemetry::metrics::{Format, Readiness, naming_problems, render};
use prost::Message;
use tokio_util::sync::CancellationToken;

const PARTITIONS: u32 = 4;
const PATIENTS: [&str; 3] = ["9434765919", "4010232137", "RXX:H31337"];
const ENCOUNTER: &str = "VISIT-27182";

fn topics() -> topics::Topics {
    topics::Topics {
        partitions: PARTITIONS,
        ..topics::Topics::default()
    }
}

fn config() -> ProjectorConfig {
    ProjectorConfig {
        batch_max_records: 4,
        monitor_interval_ms: 100,
        ..ProjectorConfig::default()
    }
}

async fn publish(log: &EmbeddedLog, events: &[CareEvent]) {
    let records = events
        .iter()
        .map(|event| {
            let key = baton_care::ValidEvent::new(event.clone())
                .unwrap()
                .key()
                .to_string();
            NewRecord::new(key, event.encode_to_vec())
        })
        .collect();
    log.append(topics::CARE_EVENTS, records).await.unwrap();
}

/// The value of the sample `series` (name and labels, as exposed).
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
    })
}

/// The sum of every sample of `family` (any labels).
fn total(exposition: &str, family: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| {
            line.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within 20 s\n{}",
            render(Format::Text)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projection_is_counted_its_lag_measured_and_no_patient_named() {
    let log = Arc::new(EmbeddedLog::temporary().unwrap());
    log.ensure_topic(topics::CARE_EVENTS, TopicSpec::events(PARTITIONS))
        .await
        .unwrap();
    let local = |patient: &str| patient.trim_start_matches("RXX:").to_owned();
    let mut events = Vec::new();
    for patient in PATIENTS {
        let id = local(patient);
        events.push(admitted(&id, ENCOUNTER, 1_000, "AMU"));
        events.push(transferred(&id, ENCOUNTER, 2_000, "WARD-7"));
    }
    // A duplicate, a medically-optimised flag on a stay the patient never
    // had (a cancellation of nothing would wait for what it cancels), and
    // bytes that are no event at all.
    events.push(events[0].clone());
    events.push(medically_optimised(
        &local(PATIENTS[0]),
        "VISIT-NONE",
        2_500,
    ));
    publish(&log, &events).await;
    log.append(
        topics::CARE_EVENTS,
        vec![NewRecord::new(PATIENTS[1], vec![0xde, 0xad])],
    )
    .await
    .unwrap();
    let written = events.len() as f64 + 1.0;

    let store = Store::temporary().unwrap();
    let readiness = Readiness::new();
    let gate = readiness.gate("projector catching up with the log");
    let clock = Arc::new(FixedClock::at(SystemTime::now()));
    let stop = CancellationToken::new();
    let projector = Projector::start(log.clone(), store.clone(), config(), topics())
        .await
        .unwrap();
    let monitor = baton_projector::metrics::spawn_monitor(
        log.clone(),
        store.clone(),
        &topics(),
        &config(),
        Some(gate.clone()),
        clock.clone(),
        stop.clone().cancelled_owned(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !readiness.is_ready(),
        "not ready before the projector has applied anything"
    );
    let text = render(Format::Text);
    assert_eq!(
        total(&text, "baton_projection_lag_events"),
        written,
        "{text}"
    );

    let projecting = {
        let stop = stop.clone();
        tokio::spawn(async move { baton_projector::run(projector, stop.cancelled_owned()).await })
    };
    eventually("readiness once caught up", || readiness.is_ready()).await;
    eventually("the lag measured at zero", || {
        let text = render(Format::Text);
        total(&text, "baton_log_end_offset") == written
            && total(&text, "baton_projection_lag_events") == 0.0
            && total(&text, "baton_projection_applied_offset") == written
    })
    .await;

    let text = render(Format::Text);
    let value =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert_eq!(value("baton_projector_records_total"), written);
    assert_eq!(value("baton_projector_events_applied_total"), 6.0);
    assert_eq!(value("baton_projector_events_duplicate_total"), 1.0);
    assert_eq!(
        value("baton_projector_dead_letters_total{reason=\"unknown_encounter\"}"),
        1.0
    );
    assert_eq!(
        value("baton_projector_dead_letters_total{reason=\"undecodable\"}"),
        1.0
    );
    assert!(value("baton_projector_batch_fold_seconds_count") >= 3.0);
    assert!(value("baton_projector_batch_commit_seconds_count") >= 3.0);
    assert_eq!(
        value("baton_projector_batch_records_sum"),
        written,
        "every record in a batch"
    );
    assert_eq!(value("baton_store_states"), PATIENTS.len() as f64);
    assert!(value("baton_store_size_bytes") >= 0.0);
    for partition in 0..PARTITIONS {
        assert_eq!(
            value(&format!(
                "baton_projection_lag_seconds{{topic=\"baton.care-events.v1\",partition=\"{partition}\"}}"
            )),
            0.0
        );
    }

    // No patient in any name, label or value: not an NHS number, a local
    // identifier, a patient key or an encounter.
    for secret in PATIENTS
        .iter()
        .copied()
        .chain(["H31337", ENCOUNTER, "VISIT-NONE", "WARD-7"])
    {
        assert!(!text.contains(secret), "{secret} in the metrics:\n{text}");
    }
    assert_eq!(naming_problems(&text), Vec::<String>::new(), "{text}");

    // Stopped, with more written: the lag counts the records and the age
    // of the oldest one, by the injected clock.
    stop.cancel();
    projecting.await.unwrap().unwrap();
    monitor.await.unwrap();
    let stop = CancellationToken::new();
    let monitor = baton_projector::metrics::spawn_monitor(
        log.clone(),
        store.clone(),
        &topics(),
        &config(),
        None,
        clock.clone(),
        stop.clone().cancelled_owned(),
    );
    let before = SystemTime::now();
    publish(
        &log,
        &[discharged(
            &local(PATIENTS[2]),
            ENCOUNTER,
            3_000,
            DischargeDestination::Home,
        )],
    )
    .await;
    clock.set(before + Duration::from_secs(90));
    let partition = baton_log::partition_for_key(PATIENTS[2].as_bytes(), PARTITIONS);
    let series = |family: &str| {
        format!("{family}{{topic=\"baton.care-events.v1\",partition=\"{partition}\"}}")
    };
    eventually("the new record counted as lag", || {
        sample(
            &render(Format::Text),
            &series("baton_projection_lag_events"),
        ) == Some(1.0)
    })
    .await;
    let seconds = sample(
        &render(Format::Text),
        &series("baton_projection_lag_seconds"),
    )
    .unwrap();
    assert!(
        (89.0..=90.5).contains(&seconds),
        "the oldest unapplied record waited about 90 s by the clock: {seconds}"
    );
    stop.cancel();
    monitor.await.unwrap();
}
