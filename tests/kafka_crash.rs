//! Exactly-once effect under crashes: the projector process is killed with
//! SIGKILL again and again while a stream of 100k events flows through the
//! ingest process into a real Kafka-protocol broker. Afterwards the
//! projector's states, and the query replica's states materialised from the
//! changelog, equal a clean rebuild from the log (compared by a digest of
//! every state), and the changelog never went backwards for any patient.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use baton_log::EventLog;
use baton_log::kafka::{KafkaConfig, KafkaLog};
use baton_log::testkit::TestBroker;
use baton_log::topics::Topics;
use baton_store::Store;
use support::stream::{
    applied_everything, assert_changelog_never_went_backwards, clean_rebuild, publish_all,
    stopped_and_caught_up, wait_for_token,
};
use support::{Service, free_address};

const PARTITIONS: u32 = 4;
const EVENTS: usize = 100_000;
/// Pause between batches of 500, so the stream lasts long enough to kill
/// the projector many times in the middle of it.
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
        PACE,
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
        let (rebuilt, stats) = clean_rebuild(&log, &topics).await;
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
