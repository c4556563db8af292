//! The Kafka backend against the shared contract suite, on a real
//! Kafka-protocol broker (Tansu, started per test). librdkafka's mock
//! cluster cannot create topics, so it serves the fault tests only.

use baton_log::kafka::{KafkaConfig, KafkaLog};
use baton_log::testkit::{self, TestBroker};

async fn connect(bootstrap_servers: String) -> KafkaLog {
    KafkaLog::connect(KafkaConfig::new(bootstrap_servers))
        .await
        .expect("connect to the test broker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_log_passes_the_contract_suite_on_a_real_broker() {
    let Some(broker) = TestBroker::start() else {
        return;
    };
    let servers = broker.bootstrap_servers();
    testkit::run_contract_suite(|| connect(servers.clone())).await;
}

/// The monitoring consumer group: what Baton commits is what a standard
/// Kafka client reads as the group's committed offsets, and committing
/// again moves them (Baton never joins the group nor reads them back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_offsets_are_committed_for_standard_lag_tools() {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use baton_log::{EventLog, GroupOffsets, NewRecord, TopicSpec};
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};

    let Some(broker) = TestBroker::start() else {
        return;
    };
    let log = KafkaLog::connect(KafkaConfig {
        operation_timeout_ms: 3_000,
        ..KafkaConfig::new(broker.bootstrap_servers())
    })
    .await
    .unwrap();
    let topic = testkit::unique_topic("group-offsets");
    log.ensure_topic(&topic, TopicSpec::events(3))
        .await
        .unwrap();
    let records = (0..7)
        .map(|i| NewRecord::new(format!("k{i}"), "v").to_partition(i % 3))
        .collect();
    log.append(&topic, records).await.unwrap();
    let group = format!("{topic}.monitor");

    let servers = broker.bootstrap_servers();
    let committed = |group: String, topic: String| {
        let servers = servers.clone();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &servers)
                .set("group.id", &group)
                .create()
                .unwrap();
            let mut wanted = TopicPartitionList::new();
            for partition in 0..3 {
                wanted.add_partition(&topic, partition);
            }
            let offsets = consumer
                .committed_offsets(wanted, Duration::from_secs(30))
                .unwrap();
            offsets
                .elements()
                .iter()
                .map(|element| {
                    let offset = match element.offset() {
                        Offset::Offset(offset) => Some(offset),
                        _ => None,
                    };
                    (element.partition() as u32, offset)
                })
                .collect::<BTreeMap<u32, Option<i64>>>()
        })
    };
    let first = BTreeMap::from([(0, 2), (1, 1)]);
    assert_eq!(
        log.commit_group_offsets(&group, &topic, &first)
            .await
            .unwrap(),
        GroupOffsets::Committed
    );
    assert_eq!(
        committed(group.clone(), topic.clone()).await.unwrap(),
        BTreeMap::from([(0, Some(2)), (1, Some(1)), (2, None)])
    );
    let second = BTreeMap::from([(0, 3), (1, 2), (2, 2)]);
    log.commit_group_offsets(&group, &topic, &second)
        .await
        .unwrap();
    assert_eq!(
        committed(group.clone(), topic.clone()).await.unwrap(),
        BTreeMap::from([(0, Some(3)), (1, Some(2)), (2, Some(2))])
    );
    let error = log
        .commit_group_offsets(&group, &topic, &BTreeMap::from([(5, 1)]))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("partition 5 out of range"), "{error}");

    // With the cluster gone the commit fails, within the operation
    // timeout, instead of waiting for a coordinator without end.
    let mut broker = broker;
    broker.kill();
    let started = std::time::Instant::now();
    let outcome = log.commit_group_offsets(&group, &topic, &second).await;
    assert!(outcome.is_err(), "{outcome:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a commit to a cluster that is gone took {:?}",
        started.elapsed()
    );
}
