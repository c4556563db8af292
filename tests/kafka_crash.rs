//! Exactly-once effect under crashes: the projector process is killed with
//! SIGKILL again and again while a stream of 100k events flows through the
//! ingest process into a real Kafka-protocol broker. Afterwards the
//! projector's states, and the query replica's states materialised from the
//! changelog, equal a clean rebuild from the log (compared by a digest of
//! every state), and the changelog never went backwards for any patient.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_log::kafka::{KafkaConfig, KafkaLog};
use baton_log::testkit::TestBroker;
use baton_log::topics::Topics;
use baton_log::{ConsistencyToken, EventLog};
use baton_projector::{Projector, ProjectorConfig};
use baton_proto::events::v1::CareEvent;
use baton_proto::ingest::v1::PublishRequest;
use baton_proto::ingest::v1::care_event_ingest_client::CareEventIngestClient;
use baton_proto::query::v1::care_state_query_client::CareStateQueryClient;
use baton_proto::query::v1::patient_ref::Ref;
use baton_proto::query::v1::{GetCareStateRequest, PatientRef};
use baton_store::changelog::ChangelogEntry;
use baton_store::{Store, StoreConfig};
use support::{Service, free_address};

const PARTITIONS: u32 = 4;
const EVENTS: usize = 100_000;
const BATCH: usize = 500;
/// Pause between batches, so the stream lasts long enough to kill the
/// projector many times in the middle of it.
const PACE: Duration = Duration::from_millis(40);
const MIN_KILLS: usize = 5;

fn service(
    broker: &TestBroker,
    data: &Path,
    name: &'static str,
    address: Option<std::net::SocketAddr>,
) -> Service {
    let mut args = vec![
        "--kafka".to_owned(),
        broker.bootstrap_servers(),
        "--partitions".to_owned(),
        PARTITIONS.to_string(),
        "--data-dir".to_owned(),
        data.join(name).display().to_string(),
    ];
    if let Some(address) = address {
        args.extend(["--listen".to_owned(), address.to_string()]);
    }
    Service::start(name, args, address)
}

/// Publishes every event through the ingest API, a batch at a time,
/// retrying a batch the log could not take (re-sending is safe: events are
/// deduplicated by id). Returns the merged consistency token.
async fn publish_all(ingest: String, events: Vec<CareEvent>) -> ConsistencyToken {
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
        tokio::time::sleep(PACE).await;
    }
    token
}

/// Waits until the query replica has applied `token` (the projector folded
/// every event published, and its progress reached the replica).
async fn wait_for_token(query: String, patient: &str, token: &ConsistencyToken) {
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
async fn stopped_and_caught_up(
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

fn applied_everything(store: &Store, topic: &str, ends: &[u64]) -> bool {
    let applied = store.applied(topic).expect("applied positions");
    ends.iter()
        .enumerate()
        .all(|(partition, &end)| applied.get(&(partition as u32)).copied().unwrap_or(0) >= end)
}

/// Every state record of the changelog, per patient, in log order: the
/// versions must never decrease.
async fn assert_changelog_never_went_backwards(log: &KafkaLog, topic: &str) -> usize {
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

#[test]
#[allow(clippy::print_stderr)] // the figures of the run, for whoever reads the test output
fn killing_the_projector_again_and_again_neither_loses_nor_repeats_an_event() {
    let Some(broker) = TestBroker::start() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let (ingest_address, query_address) = (free_address(), free_address());
    let mut ingest = service(&broker, dir.path(), "baton-ingest", Some(ingest_address));
    let mut projector = service(&broker, dir.path(), "baton-projector", None);
    let mut query = service(&broker, dir.path(), "baton-query", Some(query_address));

    let events = baton_synth::events(baton_synth::population_for_events(EVENTS, 11));
    assert!(events.len() >= EVENTS, "{} events", events.len());
    let first_patient = baton_care::ValidEvent::new(events[0].clone())
        .expect("a valid event")
        .key()
        .to_string();
    let publishing = runtime.spawn(publish_all(
        format!("http://{ingest_address}"),
        events.clone(),
    ));

    // SIGKILL the projector at irregular moments while the stream flows.
    let pauses = [900, 1_300, 700, 1_700, 1_100, 800, 1_500];
    let mut kills = 0;
    while !publishing.is_finished() || kills < MIN_KILLS {
        std::thread::sleep(Duration::from_millis(pauses[kills % pauses.len()]));
        projector.kill();
        kills += 1;
        projector.restart();
        ingest.assert_running();
        query.assert_running();
    }
    let token = runtime.block_on(publishing).expect("publishing");
    assert!(kills >= MIN_KILLS);

    runtime.block_on(async {
        wait_for_token(format!("http://{query_address}"), &first_patient, &token).await;

        let topics = Topics {
            partitions: PARTITIONS,
            ..Topics::default()
        };
        let log = KafkaLog::connect(KafkaConfig::new(broker.bootstrap_servers()))
            .await
            .expect("connect");
        let events_end = log.end_offsets(&topics.events).await.expect("end offsets");
        let projected = stopped_and_caught_up(
            &mut projector,
            &dir.path().join("baton-projector/store"),
            async |store: &Store| applied_everything(store, &topics.events, &events_end),
        )
        .await;
        let state_end = log.end_offsets(&topics.state).await.expect("end offsets");
        let replica = stopped_and_caught_up(
            &mut query,
            &dir.path().join("baton-query/replica"),
            async |store: &Store| applied_everything(store, &topics.state, &state_end),
        )
        .await;
        ingest.stop();

        // A clean rebuild from the same log, in this process.
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
        assert_eq!(stats.dead_letters, 0, "the synthetic feed is all valid");
        assert_eq!(
            stats.applied as usize,
            events.len(),
            "every event once: {stats:?}"
        );

        let expected = rebuilt.digest().expect("digest");
        assert_eq!(
            projected.digest().expect("digest"),
            expected,
            "the projector killed {kills} times holds the states of a clean rebuild"
        );
        assert_eq!(
            replica.digest().expect("digest"),
            expected,
            "the replica materialised from the changelog holds them too"
        );
        assert_eq!(
            projected.applied(&topics.events).expect("applied"),
            rebuilt.applied(&topics.events).expect("applied"),
        );
        let repeats = assert_changelog_never_went_backwards(&log, &topics.state).await;
        let applied: BTreeMap<u32, u64> = replica.applied(&topics.events).expect("applied");
        assert!(token.is_satisfied_by(&applied));
        eprintln!(
            "{} events, {kills} SIGKILLs of the projector, {} patients, {repeats} states repeated in the changelog, digest {expected}",
            events.len(),
            rebuilt.state_count().expect("count"),
        );
    });
}
