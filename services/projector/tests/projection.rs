//! The projector over the embedded log and a sled store on disk: exactly
//! once across restarts, dead letters that never block a partition, and
//! merges handed over between partitions.

use std::sync::Arc;

use baton_care::fixtures::{
    admitted, discharged, event, identity, transferred, virtual_ward_started,
};
use baton_log::embedded::EmbeddedLog;
use baton_log::{EventLog, NewRecord, TopicSpec, topics};
use baton_projector::{Projector, ProjectorConfig, dead_letter_headers};
use baton_proto::events::v1::care_event::Payload;
use baton_proto::events::v1::{CareEvent, DischargeDestination, PatientsMerged};
use baton_proto::state::v1::CareSetting;
use baton_store::{Store, StoreConfig};
use prost::Message;

const PARTITIONS: u32 = 4;

fn config() -> ProjectorConfig {
    ProjectorConfig {
        batch_max_records: 3,
        ..ProjectorConfig::default()
    }
}

fn topics() -> topics::Topics {
    topics::Topics {
        partitions: PARTITIONS,
        ..topics::Topics::default()
    }
}

async fn log() -> Arc<EmbeddedLog> {
    let log = Arc::new(EmbeddedLog::temporary().unwrap());
    log.ensure_topic(topics::CARE_EVENTS, TopicSpec::events(PARTITIONS))
        .await
        .unwrap();
    log
}

/// Appends as the ingest service does: under every key of the event.
async fn publish(log: &EmbeddedLog, events: &[CareEvent]) {
    let mut records = Vec::new();
    for event in events {
        let valid = baton_care::ValidEvent::new(event.clone()).unwrap();
        for key in valid.log_keys() {
            records.push(NewRecord::new(key.as_str(), event.encode_to_vec()));
        }
    }
    log.append(topics::CARE_EVENTS, records).await.unwrap();
}

async fn project(log: &Arc<EmbeddedLog>, store: &Store) -> baton_projector::ProjectorStats {
    let mut projector = Projector::start(log.clone(), store.clone(), config(), topics())
        .await
        .unwrap();
    projector.catch_up().await.unwrap()
}

/// As [`project`], with no state cache: every batch reads the store.
async fn project_uncached(
    log: &Arc<EmbeddedLog>,
    store: &Store,
) -> baton_projector::ProjectorStats {
    let config = ProjectorConfig {
        state_cache_entries: 0,
        ..config()
    };
    let mut projector = Projector::start(log.clone(), store.clone(), config, topics())
        .await
        .unwrap();
    projector.catch_up().await.unwrap()
}

fn journey(nhs: &str) -> Vec<CareEvent> {
    vec![
        admitted(nhs, "V1", 1_000, "AMU"),
        transferred(nhs, "V1", 2_000, "WARD-7"),
        discharged(nhs, "V1", 3_000, DischargeDestination::VirtualWard),
        virtual_ward_started(nhs, "VW-1", 3_100, "VW-FRAIL"),
    ]
}

#[tokio::test]
async fn restarts_resume_exactly_where_the_last_batch_committed() {
    let dir = tempfile::tempdir().unwrap();
    let log = log().await;
    let patients = ["9434765919", "4010232137", "RXX:H1", "RXX:H2", "RXX:H3"];
    let mut all = Vec::new();
    for nhs in patients {
        all.extend(journey(nhs.trim_start_matches("RXX:")));
    }
    let (first, second) = all.split_at(all.len() / 2);

    publish(&log, first).await;
    {
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        let stats = project(&log, &store).await;
        assert_eq!(stats.applied, first.len() as u64);
        store.flush().unwrap();
    }
    // Reopened, the projector must skip what it applied and take the rest.
    publish(&log, second).await;
    publish(&log, &first[..3]).await; // a producer's retry: duplicates
    let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
    let stats = project(&log, &store).await;
    assert_eq!(stats.applied, second.len() as u64);
    assert_eq!(stats.duplicates, 3);

    for nhs in patients {
        let state = store.get(nhs).unwrap().unwrap();
        assert_eq!(state.setting(), CareSetting::VirtualWard, "{nhs}");
        assert_eq!(state.version, 4, "{nhs}: each event applied once");
    }

    // A clean rebuild from the same log gives the same states.
    let rebuilt = Store::temporary().unwrap();
    project(&log, &rebuilt).await;
    assert_eq!(rebuilt.digest().unwrap(), store.digest().unwrap());
}

#[tokio::test]
async fn a_poison_record_is_dead_lettered_and_its_partition_keeps_flowing() {
    let log = log().await;
    let nhs = "9434765919";
    publish(&log, &journey(nhs)[..1]).await;
    // Garbage under the same key lands in the same partition, between two good events.
    log.append(
        topics::CARE_EVENTS,
        vec![NewRecord::new(nhs, vec![0xde, 0xad, 0xbe, 0xef])],
    )
    .await
    .unwrap();
    publish(&log, &journey(nhs)[1..]).await;

    let store = Store::temporary().unwrap();
    let stats = project(&log, &store).await;
    assert_eq!((stats.applied, stats.dead_letters), (4, 1));
    assert_eq!(
        store.get(nhs).unwrap().unwrap().setting(),
        CareSetting::VirtualWard
    );

    let partitions = log.partition_count(topics::DEAD_LETTERS).await.unwrap();
    let mut reader = log
        .reader(
            topics::DEAD_LETTERS,
            (0..partitions).map(|p| (p, 0)).collect(),
        )
        .await
        .unwrap();
    let dead = reader
        .next_batch(10, std::time::Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    let header = |name| String::from_utf8(dead[0].header(name).unwrap().to_vec()).unwrap();
    assert!(header(dead_letter_headers::REASON).contains("cannot decode"));
    assert_eq!(
        header(dead_letter_headers::SOURCE_TOPIC),
        topics::CARE_EVENTS
    );
    assert_eq!(header(dead_letter_headers::SOURCE_OFFSET), "1");
    assert_eq!(
        dead[0].value,
        vec![0xde, 0xad, 0xbe, 0xef],
        "the original bytes"
    );
}

#[tokio::test]
async fn a_merge_hands_the_retired_record_to_the_survivor() {
    let log = log().await;
    let (survivor, retired) = ("9434765919", "4010232137");
    publish(&log, &journey(retired)[..2]).await;
    let merge = event(
        survivor,
        5_000,
        Some(Payload::PatientsMerged(PatientsMerged {
            retired: Some(identity(retired)),
        })),
    );
    publish(&log, &[merge]).await;
    let store = Store::temporary().unwrap();
    project(&log, &store).await;
    // The hand-over was appended during the first pass; fold it too.
    project(&log, &store).await;

    let old = store.get(retired).unwrap().unwrap();
    assert_eq!(old.merged_into.as_ref().unwrap().patient_key, survivor);
    let new = store.get(survivor).unwrap().unwrap();
    assert_eq!(new.merged_from[0].patient_key, retired);
    assert_eq!(
        new.setting(),
        CareSetting::Hospital,
        "the retired record's admission moved over"
    );
    assert_eq!(
        new.active_encounter
            .unwrap()
            .location
            .unwrap()
            .point_of_care,
        "WARD-7"
    );

    // The retired record's admission sent again, now under the survivor's
    // identity with its original id: it was applied to the record merged
    // in, so it is a duplicate here too, though the survivor never had it.
    let mut resent = journey(retired)[0].clone();
    resent.patient = Some(identity(survivor));
    publish(&log, &[resent]).await;
    let version = store.get(survivor).unwrap().unwrap().version;
    let stats = project(&log, &store).await;
    assert_eq!((stats.applied, stats.duplicates), (0, 1));
    assert_eq!(store.get(survivor).unwrap().unwrap().version, version);
}

#[tokio::test]
async fn duplicates_in_the_batch_after_their_originals_change_nothing() {
    let log = log().await;
    let nhs = "9434765919";
    let events = journey(nhs);
    // Batches of 3: the copies come in the batch folded while the
    // originals' commit may still be in flight, then again much later.
    publish(&log, &events[..3]).await;
    publish(&log, &events[..3]).await;
    publish(&log, &events[3..]).await;
    publish(&log, &events).await;
    let store = Store::temporary().unwrap();
    let stats = project_uncached(&log, &store).await;
    assert_eq!((stats.applied, stats.duplicates), (4, 7));
    let state = store.get(nhs).unwrap().unwrap();
    assert_eq!(state.version, 4);
    assert_eq!(state.setting(), CareSetting::VirtualWard);
    // The ids are beside the state, not in it.
    #[allow(deprecated)]
    let in_state = state.applied_event_ids.len();
    assert_eq!(in_state, 0);
    for event in &events {
        let id = baton_care::EventId::parse(&event.event_id).unwrap();
        assert!(store.is_applied(nhs, id).unwrap());
    }
}

#[tokio::test]
async fn evicting_the_state_cache_between_overlapping_commits_loses_nothing() {
    let log = log().await;
    let mut all = Vec::new();
    for n in 0..6 {
        all.extend(journey(&format!("H{n}")));
    }
    // Interleave the patients so every batch touches states of the last one.
    all.sort_by_key(|e| e.occurred_at.unwrap().seconds);
    publish(&log, &all).await;

    let roomy = Store::temporary().unwrap();
    project(&log, &roomy).await;
    let tight = Store::temporary().unwrap();
    project_uncached(&log, &tight).await;
    assert_eq!(tight.digest().unwrap(), roomy.digest().unwrap());
    assert_eq!(tight.get("RXX:H5").unwrap().unwrap().version, 4);
}

#[tokio::test]
async fn a_store_built_from_one_log_is_never_resumed_against_another() {
    let dir = tempfile::tempdir().unwrap();
    let first = log().await;
    publish(&first, &journey("H1")).await;
    {
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        project(&first, &store).await;
        store.flush().unwrap();
    }
    // Another log, whose offsets name other records.
    let second = log().await;
    let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
    let error = Projector::start(second.clone(), store, config(), topics())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("was built from topic"), "{error}");
    assert!(error.contains("empty --data-dir"), "{error}");
}
