//! The embedded (sled) backend against the shared contract suite, plus what
//! only the embedded backend promises: reopening resumes, damage on disk is
//! reported, reads are fair, appends are group-committed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use baton_log::embedded::{EmbeddedConfig, EmbeddedLog};
use baton_log::{EventLog, LogError, NewRecord, Position, TopicSpec, testkit};

fn config(dir: &tempfile::TempDir, name: &str, durable: bool) -> EmbeddedConfig {
    EmbeddedConfig {
        path: dir.path().join(name),
        cache_capacity_bytes: 64 * 1024 * 1024,
        durable,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_log_passes_the_contract_suite() {
    testkit::run_contract_suite(|| async { EmbeddedLog::temporary().expect("temporary log") })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_disk_durable_log_passes_the_contract_suite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let count = AtomicUsize::new(0);
    testkit::run_contract_suite(|| {
        let name = format!("log-{}", count.fetch_add(1, Ordering::Relaxed));
        let log = EmbeddedLog::open(config(&dir, &name, true)).expect("open log");
        async move { log }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_disk_non_durable_log_passes_the_contract_suite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let count = AtomicUsize::new(0);
    testkit::run_contract_suite(|| {
        let name = format!("log-{}", count.fetch_add(1, Ordering::Relaxed));
        let log = EmbeddedLog::open(config(&dir, &name, false)).expect("open log");
        async move { log }
    })
    .await;
}

/// The suite also runs on a current-thread runtime, as `#[tokio::test]`
/// users get by default: nothing may depend on a second worker.
#[tokio::test]
async fn contract_holds_on_a_current_thread_runtime() {
    testkit::run_contract_suite(|| async { EmbeddedLog::temporary().expect("temporary log") })
        .await;
}

#[tokio::test]
async fn reopening_keeps_topics_records_and_continues_offsets() {
    let dir = tempfile::tempdir().expect("temp dir");
    let topic = "baton.care-events.v1";
    {
        let log = EmbeddedLog::open(config(&dir, "log", true)).unwrap();
        log.ensure_topic(topic, TopicSpec::events(3)).await.unwrap();
        log.ensure_topic("baton.care-state.v1", TopicSpec::compacted(2))
            .await
            .unwrap();
        let positions = log
            .append(
                topic,
                vec![
                    NewRecord::new("a", "1").to_partition(0),
                    NewRecord::new("b", "2").to_partition(0),
                    NewRecord::new("c", "3")
                        .to_partition(2)
                        .with_header("h", "x"),
                ],
            )
            .await
            .unwrap();
        assert_eq!(
            positions,
            vec![
                Position::new(0, 0),
                Position::new(0, 1),
                Position::new(2, 0)
            ]
        );
    }

    let log = EmbeddedLog::open(config(&dir, "log", true)).unwrap();
    assert_eq!(log.partition_count(topic).await.unwrap(), 3);
    assert_eq!(log.partition_count("baton.care-state.v1").await.unwrap(), 2);
    assert_eq!(
        log.ensure_topic(topic, TopicSpec::events(8)).await.unwrap(),
        3,
        "a reopened topic keeps its partition count"
    );
    assert_eq!(log.end_offsets(topic).await.unwrap(), vec![2, 0, 1]);
    let positions = log
        .append(topic, vec![NewRecord::new("d", "4").to_partition(0)])
        .await
        .unwrap();
    assert_eq!(
        positions,
        vec![Position::new(0, 2)],
        "offsets continue after reopen"
    );

    let mut reader = log
        .reader(topic, BTreeMap::from([(0, 0), (2, 0)]))
        .await
        .unwrap();
    let mut records = reader.next_batch(10, Duration::ZERO).await.unwrap();
    records.sort_by_key(|record| record.position());
    let read: Vec<(Position, &[u8])> = records
        .iter()
        .map(|record| (record.position(), record.value.as_slice()))
        .collect();
    assert_eq!(
        read,
        vec![
            (Position::new(0, 0), &b"1"[..]),
            (Position::new(0, 1), &b"2"[..]),
            (Position::new(0, 2), &b"4"[..]),
            (Position::new(2, 0), &b"3"[..]),
        ]
    );
    assert_eq!(records[3].header("h"), Some(&b"x"[..]));
}

/// Set in the child process of `acknowledged_appends_survive_a_crash`.
const CRASH_DIR_ENV: &str = "BATON_LOG_CRASH_TEST_DIR";
const CRASH_CHILD_EXIT: i32 = 42;
const CRASH_APPENDS: u64 = 50;

/// Child half of `acknowledged_appends_survive_a_crash`; does nothing in a
/// normal test run.
#[tokio::test]
async fn crash_child_appends_then_dies() {
    let Some(path) = std::env::var_os(CRASH_DIR_ENV) else {
        return;
    };
    let log = EmbeddedLog::open(EmbeddedConfig::new(path)).unwrap();
    log.ensure_topic("crash", TopicSpec::events(2))
        .await
        .unwrap();
    for i in 0..CRASH_APPENDS {
        let record = NewRecord::new(format!("k{i}"), format!("v{i}"));
        log.append("crash", vec![record]).await.unwrap();
    }
    // Exit without dropping the log: no destructor (and so no flush on drop)
    // runs, as in a crash right after the appends were acknowledged.
    std::process::exit(CRASH_CHILD_EXIT);
}

#[tokio::test]
async fn acknowledged_appends_survive_a_crash() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("log");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_appends_then_dies",
            "--test-threads=1",
        ])
        .env(CRASH_DIR_ENV, &path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(
        status.code(),
        Some(CRASH_CHILD_EXIT),
        "the child did not run its appends"
    );

    let log = EmbeddedLog::open(EmbeddedConfig::new(&path)).unwrap();
    let ends = log.end_offsets("crash").await.unwrap();
    assert_eq!(
        ends.iter().sum::<u64>(),
        CRASH_APPENDS,
        "acknowledged appends were lost"
    );
    let from = (0..2).map(|partition| (partition, 0)).collect();
    let mut reader = log.reader("crash", from).await.unwrap();
    let mut values: Vec<Vec<u8>> = reader
        .next_batch(1000, Duration::ZERO)
        .await
        .unwrap()
        .into_iter()
        .map(|record| record.value)
        .collect();
    values.sort();
    let mut expected: Vec<Vec<u8>> = (0..CRASH_APPENDS)
        .map(|i| format!("v{i}").into_bytes())
        .collect();
    expected.sort();
    assert_eq!(values, expected);
}

#[tokio::test]
async fn corrupt_record_bytes_are_reported_with_their_position() {
    let dir = tempfile::tempdir().expect("temp dir");
    let topic = "baton.care-events.v1";
    {
        let log = EmbeddedLog::open(config(&dir, "log", true)).unwrap();
        log.ensure_topic(topic, TopicSpec::events(2)).await.unwrap();
        // One append per record, so each record is a batch of its own.
        for i in 0..3 {
            let record = NewRecord::new("k", format!("v{i}")).to_partition(1);
            log.append(topic, vec![record]).await.unwrap();
        }
    }
    {
        // Damage offset 1 of partition 1 behind the log's back, through the
        // documented layout: tree `p/<topic>/<partition>`, key = base offset
        // of the batch, big-endian.
        let db = sled::open(dir.path().join("log")).unwrap();
        let tree = db.open_tree(format!("p/{topic}/1")).unwrap();
        tree.insert(1_u64.to_be_bytes(), &b"\x01garbage"[..])
            .unwrap();
        db.flush().unwrap();
    }

    let log = EmbeddedLog::open(config(&dir, "log", true)).unwrap();
    let mut reader = log.reader(topic, BTreeMap::from([(1, 0)])).await.unwrap();
    let error = reader.next_batch(10, Duration::ZERO).await.unwrap_err();
    match &error {
        LogError::Corrupt {
            topic: named,
            partition,
            offset,
            reason,
        } => {
            assert_eq!((named.as_str(), *partition, *offset), (topic, 1, 1));
            assert!(reason.contains("needs 8 bytes"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("partition 1") && message.contains("offset 1") && message.contains(topic),
        "{message}"
    );

    // The records before the damage are still readable on their own.
    let mut reader = log.reader(topic, BTreeMap::from([(1, 0)])).await.unwrap();
    let records = reader.next_batch(1, Duration::ZERO).await.unwrap();
    assert_eq!(records[0].value, b"v0");
}

#[tokio::test]
async fn corrupt_topic_metadata_fails_the_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let db = sled::open(dir.path().join("log")).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("topic/broken", &b"\x07"[..])
            .unwrap();
        db.flush().unwrap();
    }
    let error = EmbeddedLog::open(config(&dir, "log", true)).unwrap_err();
    assert!(
        matches!(&error, LogError::CorruptMetadata { topic, .. } if topic == "broken"),
        "{error:?}"
    );
}

/// Large appends are stored as several batches; reads starting anywhere,
/// and reopening, must see one seamless partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_appends_read_back_seamlessly_from_any_offset() {
    let dir = tempfile::tempdir().expect("temp dir");
    let topic = "large";
    let total = 5_000_u64;
    let value_of = |i: u64| format!("{i:0>60}").into_bytes();
    {
        let log = EmbeddedLog::open(config(&dir, "log", true)).unwrap();
        log.ensure_topic(topic, TopicSpec::events(1)).await.unwrap();
        let records: Vec<NewRecord> = (0..3_000)
            .map(|i| NewRecord::new("k", value_of(i)).with_header("n", i.to_string()))
            .collect();
        log.append(topic, records).await.unwrap();
        let records: Vec<NewRecord> = (3_000..total)
            .map(|i| NewRecord::new("k", value_of(i)))
            .collect();
        log.append(topic, records).await.unwrap();
    }
    let log = EmbeddedLog::open(config(&dir, "log", true)).unwrap();
    assert_eq!(log.end_offsets(topic).await.unwrap(), vec![total]);
    for from in [0, 1, 1023, 1024, 1025, 2999, 3000, 4321, total - 1, total] {
        let mut reader = log
            .reader(topic, BTreeMap::from([(0, from)]))
            .await
            .unwrap();
        let mut next = from;
        while next < total {
            let batch = reader.next_batch(777, Duration::ZERO).await.unwrap();
            assert!(!batch.is_empty(), "reading from {from} stalled at {next}");
            for record in batch {
                assert_eq!(record.offset, next);
                assert_eq!(record.value, value_of(next));
                if next < 3_000 {
                    assert_eq!(record.header("n"), Some(next.to_string().as_bytes()));
                }
                next += 1;
            }
        }
        assert!(
            reader
                .next_batch(10, Duration::ZERO)
                .await
                .unwrap()
                .is_empty()
        );
    }
    let positions = log
        .append(topic, vec![NewRecord::new("k", "after")])
        .await
        .unwrap();
    assert_eq!(positions, vec![Position::new(0, total)]);
}

#[tokio::test]
async fn a_busy_partition_does_not_starve_the_others() {
    let log = EmbeddedLog::temporary().unwrap();
    let topic = "fairness";
    log.ensure_topic(topic, TopicSpec::events(3)).await.unwrap();
    let busy = (0..1000)
        .map(|i| NewRecord::new("busy", format!("{i}")).to_partition(0))
        .collect();
    log.append(topic, busy).await.unwrap();
    let quiet = (0..10)
        .map(|i| NewRecord::new("quiet", format!("{i}")).to_partition(2))
        .collect();
    log.append(topic, quiet).await.unwrap();

    let from = BTreeMap::from([(0, 0), (1, 0), (2, 0)]);
    let mut reader = log.reader(topic, from.clone()).await.unwrap();
    let batch = reader.next_batch(20, Duration::ZERO).await.unwrap();
    let per_partition = |records: &[baton_log::Record], partition| {
        records
            .iter()
            .filter(|record| record.partition == partition)
            .count()
    };
    assert_eq!(batch.len(), 20);
    assert_eq!(per_partition(&batch, 0), 10);
    assert_eq!(per_partition(&batch, 2), 10);

    // A partition with fewer records than its share leaves the rest to others.
    let batch = reader.next_batch(100, Duration::ZERO).await.unwrap();
    assert_eq!(batch.len(), 100);
    assert_eq!(per_partition(&batch, 0), 100);

    // Batches of one alternate between the partitions that have records.
    let mut reader = log.reader(topic, from).await.unwrap();
    let mut partitions = Vec::new();
    for _ in 0..4 {
        let batch = reader.next_batch(1, Duration::ZERO).await.unwrap();
        partitions.push(batch[0].partition);
    }
    assert_eq!(
        partitions.iter().filter(|&&p| p == 2).count(),
        2,
        "{partitions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_durable_appends_share_flushes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = Arc::new(EmbeddedLog::open(config(&dir, "log", true)).unwrap());
    log.ensure_topic("group-commit", TopicSpec::events(4))
        .await
        .unwrap();
    let flushes_before = log.flush_count();
    let appends = 64;
    let handles: Vec<_> = (0..appends)
        .map(|i| {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                log.append("group-commit", vec![NewRecord::new(format!("k{i}"), "v")])
                    .await
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap().unwrap();
    }
    let flushes = log.flush_count() - flushes_before;
    assert!(
        (1..appends).contains(&flushes),
        "{appends} concurrent appends took {flushes} flushes"
    );
    let total: u64 = log.end_offsets("group-commit").await.unwrap().iter().sum();
    assert_eq!(total, appends);
}

#[tokio::test]
async fn close_rejects_appends_and_wakes_waiting_readers() {
    let log = EmbeddedLog::temporary().unwrap();
    log.ensure_topic("closing", TopicSpec::events(1))
        .await
        .unwrap();
    let mut reader = log
        .reader("closing", BTreeMap::from([(0, 0)]))
        .await
        .unwrap();
    let waiting = tokio::spawn(async move { reader.next_batch(10, Duration::from_secs(30)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    log.close().await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("a waiting reader wakes on close")
        .unwrap();
    assert!(matches!(result, Err(LogError::Closed)), "{result:?}");
    let result = log.append("closing", vec![NewRecord::new("k", "v")]).await;
    assert!(matches!(result, Err(LogError::Closed)), "{result:?}");
}

#[tokio::test]
async fn partition_counts_beyond_the_embedded_limit_are_refused() {
    let log = EmbeddedLog::temporary().unwrap();
    let too_many = baton_log::embedded::MAX_PARTITIONS + 1;
    let result = log.ensure_topic("wide", TopicSpec::events(too_many)).await;
    assert!(
        matches!(&result, Err(LogError::InvalidTopicSpec { topic, reason }) if topic == "wide" && reason.contains("at most 1024")),
        "{result:?}"
    );
}

/// Services hold the log as `Arc<dyn EventLog>` and pass it to code generic
/// over `EventLog`.
#[tokio::test]
async fn arc_dyn_event_log_is_an_event_log() {
    async fn count_partitions<L: EventLog>(log: &L, topic: &str) -> u32 {
        log.partition_count(topic).await.unwrap()
    }
    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::temporary().unwrap());
    log.ensure_topic("shared", TopicSpec::events(2))
        .await
        .unwrap();
    assert_eq!(count_partitions(&log, "shared").await, 2);
    let shared: Arc<Arc<dyn EventLog>> = Arc::new(Arc::clone(&log));
    assert_eq!(count_partitions(&shared, "shared").await, 2);
}

/// The embedded log has no consumer groups: committing a monitoring group's
/// offsets does nothing, says so, and is no error (through `Arc<dyn>` too,
/// as services hold the log).
#[tokio::test]
async fn the_embedded_log_has_no_consumer_groups() {
    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::temporary().expect("temporary log"));
    log.ensure_topic("events", TopicSpec::events(2))
        .await
        .unwrap();
    let outcome = log
        .commit_group_offsets("baton-projector", "events", &BTreeMap::from([(0, 0)]))
        .await
        .unwrap();
    assert_eq!(outcome, baton_log::GroupOffsets::NotSupported);
}
