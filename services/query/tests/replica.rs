//! A query replica materialised from the state changelog, on the embedded
//! log: it ends up with the projector's states and positions, recovers what
//! a crash kept from the changelog, and never lets an older state replace a
//! newer one.

use std::sync::Arc;

use baton_care::fixtures::{admitted, discharged, transferred, virtual_ward_started};
use baton_log::embedded::EmbeddedLog;
use baton_log::topics::Topics;
use baton_log::{ConsistencyToken, EventLog, NewRecord};
use baton_projector::{Projector, ProjectorConfig};
use baton_proto::events::v1::{CareEvent, DischargeDestination};
use baton_proto::state::v1::CareSetting;
use baton_query::Materialiser;
use baton_store::changelog::state_record;
use baton_store::{Commit, Store};
use prost::Message;

fn topics() -> Topics {
    Topics {
        partitions: 4,
        ..Topics::default()
    }
}

async fn log() -> Arc<EmbeddedLog> {
    let log = Arc::new(EmbeddedLog::temporary().unwrap());
    topics().ensure(&*log).await.unwrap();
    log
}

/// Appends as the ingest service does, and returns the token.
async fn publish(log: &EmbeddedLog, events: &[CareEvent]) -> ConsistencyToken {
    let mut records = Vec::new();
    for event in events {
        let valid = baton_care::ValidEvent::new(event.clone()).unwrap();
        for key in valid.log_keys() {
            records.push(NewRecord::new(key.as_str(), event.encode_to_vec()));
        }
    }
    let positions = log.append(&topics().events, records).await.unwrap();
    ConsistencyToken::from_positions(&positions)
}

fn journey(nhs: &str) -> Vec<CareEvent> {
    vec![
        admitted(nhs, "V1", 1_000, "AMU"),
        transferred(nhs, "V1", 2_000, "WARD-7"),
        discharged(nhs, "V1", 3_000, DischargeDestination::VirtualWard),
        virtual_ward_started(nhs, "VW-1", 3_100, "VW-FRAIL"),
    ]
}

async fn project(log: &Arc<EmbeddedLog>, store: &Store) {
    let config = ProjectorConfig {
        batch_max_records: 3,
        publish_states: true,
        ..ProjectorConfig::default()
    };
    let mut projector = Projector::start(log.clone(), store.clone(), config, topics())
        .await
        .unwrap();
    projector.catch_up().await.unwrap();
}

async fn materialise(log: &Arc<EmbeddedLog>, replica: &Store) -> baton_query::MaterialiserStats {
    let mut materialiser = Materialiser::start(log.clone(), replica.clone(), topics())
        .await
        .unwrap();
    materialiser.catch_up().await.unwrap()
}

#[tokio::test]
async fn a_replica_holds_the_projectors_states_and_honours_its_tokens() {
    let log = log().await;
    let patients = ["9434765919", "4010232137", "H1", "H2", "H3", "H4"];
    let mut token = ConsistencyToken::empty();
    for patient in patients {
        token.merge(&publish(&log, &journey(patient)).await);
    }
    let store = Store::temporary().unwrap();
    project(&log, &store).await;

    let replica = Store::temporary().unwrap();
    let stats = materialise(&log, &replica).await;
    assert_eq!(replica.digest().unwrap(), store.digest().unwrap());
    assert_eq!(replica.state_count().unwrap(), patients.len());
    assert!(stats.progress > 0, "{stats:?}");
    // The projector's progress reached the replica: the token is satisfied there too.
    let events = topics().events;
    assert_eq!(
        replica.applied(&events).unwrap(),
        store.applied(&events).unwrap()
    );
    assert!(token.is_satisfied_by(&replica.applied(&events).unwrap()));
    let state = replica.get("RXX:H3").unwrap().unwrap();
    assert_eq!(state.setting(), CareSetting::VirtualWard);

    // Events published later flow on; the replica resumes from its own positions.
    let later = publish(&log, &[transferred("H1", "V9", 9_000, "AMU")]).await;
    assert!(!later.is_satisfied_by(&replica.applied(&events).unwrap()));
    project(&log, &store).await;
    let stats = materialise(&log, &replica).await;
    assert_eq!(
        stats.states, 1,
        "only the changed state is read again: {stats:?}"
    );
    assert!(later.is_satisfied_by(&replica.applied(&events).unwrap()));
    assert_eq!(replica.digest().unwrap(), store.digest().unwrap());
}

#[tokio::test]
async fn a_commit_whose_publication_a_crash_cut_short_is_published_on_restart() {
    let log = log().await;
    publish(&log, &journey("H1")).await;
    let store = Store::temporary().unwrap();
    project(&log, &store).await;

    // As if the projector crashed after this commit, before publishing it.
    let mut newer = store.get("RXX:H1").unwrap().unwrap();
    newer.version += 1;
    newer.setting_organisation = "CHANGED".into();
    store
        .commit(
            &Commit::new(topics().events)
                .with_state(newer.clone())
                .to_publish(),
        )
        .unwrap();

    let replica = Store::temporary().unwrap();
    materialise(&log, &replica).await;
    assert_eq!(
        replica.get("RXX:H1").unwrap().unwrap().version,
        newer.version - 1
    );

    // Starting the projector publishes the last commit again.
    project(&log, &store).await;
    materialise(&log, &replica).await;
    assert_eq!(replica.get("RXX:H1").unwrap().unwrap(), newer);
}

#[tokio::test]
async fn older_repeated_and_damaged_changelog_records_never_replace_a_state() {
    let log = log().await;
    publish(&log, &journey("H1")).await;
    let store = Store::temporary().unwrap();
    project(&log, &store).await;
    let current = store.get("RXX:H1").unwrap().unwrap();
    let partition = baton_log::partition_for_key(b"RXX:H1", 4);

    let mut older = current.clone();
    older.version -= 2;
    older.setting_organisation = "OLD".into();
    log.append(
        &topics().state,
        vec![
            state_record(&older, partition, None),
            NewRecord::new("RXX:H1", vec![0xff, 0xff, 0xff])
                .with_header(
                    "content-type",
                    "application/x-protobuf; messageType=baton.state.v1.PatientCareState",
                )
                .to_partition(partition),
            state_record(&current, partition, None),
            // As the projector ends every commit: a replica keeps the
            // states once the progress after them arrives.
            baton_store::changelog::progress_record(
                &topics().events,
                partition,
                store.applied(&topics().events).unwrap()[&partition],
            ),
        ],
    )
    .await
    .unwrap();

    let replica = Store::temporary().unwrap();
    let stats = materialise(&log, &replica).await;
    assert_eq!(replica.get("RXX:H1").unwrap().unwrap(), current);
    assert_eq!(stats.skipped, 1, "{stats:?}");
    assert_eq!(stats.stale, 2, "the older state and the repeat: {stats:?}");
}
