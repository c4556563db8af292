//! The ingest API on Kafka when the cluster fails, on librdkafka's
//! in-process mock cluster: while the broker is down, `Publish` answers
//! `UNAVAILABLE` (or succeeds once librdkafka's retries get through), and
//! every event it acknowledged is in the log afterwards.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use baton_care::fixtures::admitted;
use baton_ingest::{Ingest, IngestConfig};
use baton_log::kafka::{KafkaConfig, KafkaLog};
use baton_log::topics::Topics;
use baton_log::{EventLog, LogReader};
use baton_proto::events::v1::CareEvent;
use baton_proto::ingest::v1::PublishRequest;
use baton_proto::ingest::v1::care_event_ingest_client::CareEventIngestClient;
use prost::Message;
use rdkafka::mocking::MockCluster;
use tonic::Code;

const PARTITIONS: u32 = 3;

/// The mock cluster cannot create topics through the admin API; Baton finds
/// them existing, as when operators pre-create them.
fn cluster(topics: &Topics) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(1).expect("mock cluster");
    for topic in [&topics.events, &topics.state, &topics.dead_letters] {
        cluster
            .create_topic(topic, PARTITIONS as i32, 1)
            .expect("mock topic");
    }
    cluster
}

fn batch(round: usize) -> Vec<CareEvent> {
    (0..3)
        .map(|i| admitted(&format!("H{round}-{i}"), "V1", 1_000 + round as i64, "AMU"))
        .collect()
}

#[derive(Default)]
struct Outcome {
    acknowledged: BTreeSet<String>,
    refused: Vec<tonic::Status>,
    acknowledged_after_recovery: usize,
    longest_call: Duration,
}

/// Every event id in the topic.
async fn stored_event_ids(log: &KafkaLog, topic: &str) -> BTreeSet<String> {
    let ends = log.end_offsets(topic).await.unwrap();
    let from: BTreeMap<u32, u64> = (0..PARTITIONS).map(|p| (p, 0)).collect();
    let mut reader = log.reader(topic, from).await.unwrap();
    let mut ids = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = |reader: &dyn LogReader| {
        let positions = reader.positions();
        ends.iter()
            .enumerate()
            .all(|(p, end)| positions[&(p as u32)] >= *end)
    };
    while !done(reader.as_ref()) {
        assert!(Instant::now() < deadline, "could not read the topic back");
        for record in reader
            .next_batch(1000, Duration::from_millis(200))
            .await
            .unwrap()
        {
            ids.insert(CareEvent::decode(record.value.as_slice()).unwrap().event_id);
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_the_broker_going_down() {
    let topics = Topics {
        partitions: PARTITIONS,
        ..Topics::default()
    };
    let cluster = cluster(&topics);
    let config = KafkaConfig {
        delivery_timeout_ms: 1_500,
        ..KafkaConfig::new(cluster.bootstrap_servers())
    };
    let log = KafkaLog::connect(config).await.unwrap();
    let ingest = Ingest::start(Arc::new(log.clone()), IngestConfig::default(), &topics)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(baton_ingest::run(ingest, listener, std::future::pending()));
    let mut client = CareEventIngestClient::connect(format!("http://{address}"))
        .await
        .unwrap();

    // Publish batch after batch while the broker goes down and comes back.
    let recovered = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged_since_recovery = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let publisher = {
        let (recovered, stop) = (Arc::clone(&recovered), Arc::clone(&stop));
        let acknowledged_since_recovery = Arc::clone(&acknowledged_since_recovery);
        tokio::spawn(async move {
            let mut outcome = Outcome::default();
            let mut round = 0;
            while !stop.load(Ordering::SeqCst) {
                let after_recovery = recovered.load(Ordering::SeqCst);
                let events = batch(round);
                round += 1;
                let ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
                let call = Instant::now();
                let answer = client
                    .publish(PublishRequest {
                        events,
                        validate_only: false,
                    })
                    .await;
                outcome.longest_call = outcome.longest_call.max(call.elapsed());
                match answer {
                    Ok(_) => {
                        outcome.acknowledged.extend(ids);
                        if after_recovery {
                            outcome.acknowledged_after_recovery += 1;
                            acknowledged_since_recovery.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Err(status) => outcome.refused.push(status),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            outcome
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.broker_down(1).unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.broker_up(1).unwrap();
    recovered.store(true, Ordering::SeqCst);
    // librdkafka reconnects with backoff, slower on a loaded machine: give
    // it up to 30 s to take a few batches again.
    let recovery_deadline = Instant::now() + Duration::from_secs(30);
    while acknowledged_since_recovery.load(Ordering::SeqCst) < 3
        && Instant::now() < recovery_deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let Outcome {
        acknowledged,
        refused,
        acknowledged_after_recovery,
        longest_call,
    } = publisher.await.unwrap();

    for status in &refused {
        assert_eq!(
            status.code(),
            Code::Unavailable,
            "a broker outage must read as UNAVAILABLE: {status:?}"
        );
        assert!(
            status.message().contains("kafka append failed"),
            "{}",
            status.message()
        );
    }
    let unavailable = refused.len();
    assert!(unavailable > 0, "the outage was never noticed");
    assert!(
        longest_call < Duration::from_secs(4),
        "a Publish took {longest_call:?}: the delivery timeout (1.5 s) must bound it"
    );
    assert!(
        acknowledged_after_recovery > 0,
        "publishing never recovered after the broker came back"
    );

    let stored = stored_event_ids(&log, &topics.events).await;
    let missing: Vec<&String> = acknowledged.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events are missing from the log: {missing:?}",
        missing.len()
    );
}
