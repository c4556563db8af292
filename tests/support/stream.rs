//! Streams of events through the services, and what a crash test checks
//! of their outcome: shared by the Kafka crash and group scenarios.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use std::sync::Arc;

use baton_log::kafka::KafkaLog;
use baton_log::topics::Topics;
use baton_log::{ConsistencyToken, EventLog};
use baton_projector::{Projector, ProjectorConfig, ProjectorStats};
use baton_proto::events::v1::CareEvent;
use baton_proto::ingest::v1::PublishRequest;
use baton_proto::ingest::v1::care_event_ingest_client::CareEventIngestClient;
use baton_proto::query::v1::care_state_query_client::CareStateQueryClient;
use baton_proto::query::v1::patient_ref::Ref;
use baton_proto::query::v1::{GetCareStateRequest, PatientRef};
use baton_store::changelog::ChangelogEntry;
use baton_store::{Store, StoreConfig};

use super::Service;

/// Events per Publish call.
const BATCH: usize = 500;

/// Publishes every event through the ingest API, a batch at a time with
/// `pace` between batches,
/// retrying a batch the log could not take (re-sending is safe: events are
/// deduplicated by id). Returns the merged consistency token.
pub async fn publish_all(
    ingest: String,
    events: Vec<CareEvent>,
    pace: Duration,
) -> ConsistencyToken {
    let mut client = CareEventIngestClient::connect(ingest)
        .await
        .expect("connect to ingest");
    let mut token = ConsistencyToken::empty();
    for batch in events.chunks(BATCH) {
        loop {
            let request = PublishRequest {
                events: batch.to_vec(),
                validate_only: false,
            };
            match client.publish(request).await {
                Ok(response) => {
                    let published = response.into_inner().consistency_token;
                    token.merge(&published.parse().expect("a token"));
                    break;
                }
                Err(status) if status.code() == tonic::Code::Unavailable => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(status) => panic!("publish refused: {status:?}"),
            }
        }
        tokio::time::sleep(pace).await;
    }
    token
}

/// Waits until the query replica has applied `token` (the projector folded
/// every event published, and its progress reached the replica).
pub async fn wait_for_token(query: String, patient: &str, token: &ConsistencyToken) {
    let mut client = CareStateQueryClient::connect(query)
        .await
        .expect("connect to query");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let request = GetCareStateRequest {
            patient: Some(PatientRef {
                r#ref: Some(Ref::PatientKey(patient.to_owned())),
            }),
            consistency_token: token.to_string(),
        };
        match client.get_care_state(request).await {
            Ok(_) => return,
            Err(status) => {
                assert!(
                    Instant::now() < deadline,
                    "the replica never reached the token: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Stops `service`, then opens its store; if `caught_up` says the store is
/// behind the log, starts the service again for a while and retries.
pub async fn stopped_and_caught_up(
    service: &mut Service,
    store_path: &Path,
    caught_up: impl AsyncFn(&Store) -> bool,
) -> Store {
    for _ in 0..30 {
        service.stop();
        let store = Store::open(store_path, &StoreConfig::default()).expect("open the store");
        if caught_up(&store).await {
            return store;
        }
        drop(store);
        service.restart();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    panic!("{} never caught up with the log", store_path.display());
}

pub fn applied_everything(store: &Store, topic: &str, ends: &[u64]) -> bool {
    let applied = store.applied(topic).expect("applied positions");
    ends.iter()
        .enumerate()
        .all(|(partition, &end)| applied.get(&(partition as u32)).copied().unwrap_or(0) >= end)
}

/// Every state record of the changelog, per patient, in log order: the
/// versions must never decrease.
pub async fn assert_changelog_never_went_backwards(log: &KafkaLog, topic: &str) -> usize {
    let ends = log.end_offsets(topic).await.expect("end offsets");
    let from = (0..ends.len() as u32)
        .map(|partition| (partition, 0))
        .collect();
    let mut reader = log.reader(topic, from).await.expect("reader");
    let mut latest: HashMap<String, u64> = HashMap::new();
    let mut repeats = 0;
    loop {
        let positions = reader.positions();
        if ends
            .iter()
            .enumerate()
            .all(|(partition, &end)| positions[&(partition as u32)] >= end)
        {
            break;
        }
        for record in reader
            .next_batch(10_000, Duration::from_secs(1))
            .await
            .expect("read the changelog")
        {
            let Ok(ChangelogEntry::State(state)) = ChangelogEntry::decode(&record) else {
                continue;
            };
            let previous = latest.insert(state.patient_key.clone(), state.version);
            if let Some(previous) = previous {
                assert!(
                    state.version >= previous,
                    "the changelog went backwards for {} at {}: version {} after {previous}",
                    state.patient_key,
                    record.position(),
                    state.version
                );
                repeats += usize::from(state.version == previous);
            }
        }
    }
    repeats
}

/// A clean rebuild of `topics` from `log` by one projector in this process,
/// into a temporary store: what the services' states must equal.
pub async fn clean_rebuild(log: &KafkaLog, topics: &Topics) -> (Store, ProjectorStats) {
    let rebuilt = Store::temporary().expect("store");
    let mut rebuild = Projector::start(
        Arc::new(log.clone()) as Arc<dyn EventLog>,
        rebuilt.clone(),
        ProjectorConfig {
            publish_states: false,
            ..ProjectorConfig::default()
        },
        topics.clone(),
    )
    .await
    .expect("rebuild projector");
    let stats = rebuild.catch_up().await.expect("rebuild");
    (rebuilt, stats)
}
