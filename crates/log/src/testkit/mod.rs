//! The contract every [`EventLog`] backend must pass (STYLE rule 3), the
//! test broker, and [`InterceptedLog`], a log tests can make slow or fail.
//!
//! Each check gets a fresh log from the caller's factory and creates topics
//! with unique names, so a real Kafka cluster can be reused across runs
//! without cleanup. Checks assert only what a caller can observe (positions,
//! records, end offsets, errors), never how a backend does it.
//!
//! Notes for backend authors (the Kafka one in particular):
//! - `ensure_topic` must return only once the topic accepts appends and
//!   reads: the checks use it right away;
//! - keyed records without an explicit partition must land where
//!   [`partition_for_key`] says, so compute the partition before producing
//!   instead of trusting the client's partitioner (librdkafka's default is
//!   `consistent_random`, not murmur2);
//! - invalid records must be rejected before anything is written;
//! - `reader` checks its starting offsets against the end offsets
//!   (`OffsetOutOfRange`) instead of letting `auto.offset.reset` move it;
//! - record timestamps must be within minutes of the append (CreateTime or
//!   LogAppendTime both pass).
//!
//! ```no_run
//! # async fn demo() {
//! use baton_log::{embedded::EmbeddedLog, testkit};
//! testkit::run_contract_suite(|| async { EmbeddedLog::temporary().expect("temporary log") }).await;
//! # }
//! ```

mod broker;
mod intercept;
mod lag;
mod ports;

pub use broker::TestBroker;
pub use intercept::{BeforeAppend, InterceptedLog};
pub use ports::free_loopback_address;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::{
    EventLog, Header, LogError, LogReader, NewRecord, Position, Record, TopicSpec,
    partition_for_key,
};

/// Longest a check may take before it counts as hung.
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a check waits for records it knows were appended; generous so a
/// slow broker passes, and never reached by a correct backend.
const ARRIVAL_WAIT: Duration = Duration::from_secs(15);

type CheckFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One named behaviour of the contract.
#[derive(Clone, Copy)]
pub struct ContractCheck {
    pub name: &'static str,
    run: fn(Arc<dyn EventLog>) -> CheckFuture,
}

impl std::fmt::Debug for ContractCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContractCheck")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ContractCheck {
    /// Runs the check against `log`, panicking with the check's name and
    /// the broken expectation if the backend misbehaves or hangs.
    pub async fn run(&self, log: Arc<dyn EventLog>) {
        let name = self.name;
        let task = tokio::spawn(tokio::time::timeout(CHECK_TIMEOUT, (self.run)(log)));
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(_elapsed)) => {
                panic!("contract check `{name}` did not finish within {CHECK_TIMEOUT:?}")
            }
            Err(error) => match error.try_into_panic() {
                Ok(panic) => {
                    let message = panic
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| panic.downcast_ref::<&str>().copied())
                        .unwrap_or("(non-text panic)");
                    panic!("contract check `{name}` failed: {message}")
                }
                Err(error) => panic!("contract check `{name}` was cancelled: {error}"),
            },
        }
    }
}

use lag::lag_counts_unapplied_records_and_the_age_of_the_oldest;

macro_rules! checks {
    ($($check:ident),* $(,)?) => {
        &[$(ContractCheck { name: stringify!($check), run: |log| Box::pin($check(log)) }),*]
    };
}

const CHECKS: &[ContractCheck] = checks![
    ensure_topic_is_idempotent_and_keeps_the_partition_count,
    invalid_topics_are_rejected,
    offsets_start_at_zero_and_are_contiguous,
    keyed_records_land_in_the_murmur2_partition,
    explicit_partition_is_respected,
    keys_values_and_headers_round_trip_byte_exact,
    order_per_partition_is_kept_across_appends,
    enqueued_appends_land_in_the_order_they_were_enqueued,
    end_offsets_count_the_records_per_partition,
    empty_append_writes_nothing,
    reader_starts_mid_partition,
    reader_follows_the_tail,
    reader_returns_empty_after_the_wait,
    reader_over_several_partitions_returns_every_record_once,
    concurrent_appends_leave_no_gap_and_no_duplicate,
    unknown_topic_is_an_error,
    out_of_range_partition_is_an_error,
    reader_past_the_end_offset_is_an_error,
    identity_is_named_and_stable,
    lag_counts_unapplied_records_and_the_age_of_the_oldest,
];

/// Every check of the contract, for backends that want one test per check.
pub fn contract_checks() -> &'static [ContractCheck] {
    CHECKS
}

/// Runs every check, each against a fresh log from `new_log`. The log is
/// used through `Arc<dyn EventLog>`, as services hold it.
pub async fn run_contract_suite<F, Fut, L>(new_log: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = L>,
    L: EventLog,
{
    for check in CHECKS {
        let log: Arc<dyn EventLog> = Arc::new(new_log().await);
        tracing::info!(check = check.name, "running contract check");
        check.run(log).await;
    }
}

/// A topic name no earlier run (or concurrent test) used.
pub fn unique_topic(purpose: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let purpose: String = purpose
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(120)
        .collect();
    format!("contract.{purpose}.{}-{nanos}-{count}", std::process::id())
}

async fn topic_with(log: &dyn EventLog, purpose: &str, partitions: u32) -> String {
    let topic = unique_topic(purpose);
    let created = log
        .ensure_topic(&topic, TopicSpec::events(partitions))
        .await
        .unwrap_or_else(|error| panic!("ensure_topic({topic:?}) failed: {error}"));
    assert_eq!(
        created, partitions,
        "ensure_topic({topic:?}) on a new topic"
    );
    topic
}

async fn append(log: &dyn EventLog, topic: &str, records: Vec<NewRecord>) -> Vec<Position> {
    let count = records.len();
    let positions = log
        .append(topic, records)
        .await
        .unwrap_or_else(|error| panic!("append to {topic:?} failed: {error}"));
    assert_eq!(
        positions.len(),
        count,
        "append returns one position per record"
    );
    positions
}

async fn end_offsets(log: &dyn EventLog, topic: &str) -> Vec<u64> {
    log.end_offsets(topic)
        .await
        .unwrap_or_else(|error| panic!("end_offsets({topic:?}) failed: {error}"))
}

async fn reader(log: &dyn EventLog, topic: &str, from: &[(u32, u64)]) -> Box<dyn LogReader> {
    log.reader(topic, from.iter().copied().collect())
        .await
        .unwrap_or_else(|error| panic!("reader({topic:?}, {from:?}) failed: {error}"))
}

fn from_start(partitions: u32) -> Vec<(u32, u64)> {
    (0..partitions).map(|partition| (partition, 0)).collect()
}

/// Reads until `expected` records came, failing if a batch exceeds `max` or
/// they do not all arrive within [`ARRIVAL_WAIT`].
async fn read_exactly(reader: &mut dyn LogReader, expected: usize, max: usize) -> Vec<Record> {
    let deadline = Instant::now() + ARRIVAL_WAIT;
    let mut records = Vec::with_capacity(expected);
    while records.len() < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "only {} of {expected} records arrived within {ARRIVAL_WAIT:?}",
            records.len()
        );
        let batch = reader
            .next_batch(max, left)
            .await
            .unwrap_or_else(|error| panic!("next_batch failed: {error}"));
        assert!(
            batch.len() <= max,
            "next_batch({max}) returned {} records",
            batch.len()
        );
        records.extend(batch);
    }
    assert_eq!(
        records.len(),
        expected,
        "read more records than were appended"
    );
    records
}

async fn expect_nothing_more(reader: &mut dyn LogReader) {
    let extra = reader
        .next_batch(100, Duration::from_millis(100))
        .await
        .unwrap_or_else(|error| panic!("next_batch failed: {error}"));
    assert!(extra.is_empty(), "unexpected extra records: {extra:?}");
}

async fn ensure_topic_is_idempotent_and_keeps_the_partition_count(log: Arc<dyn EventLog>) {
    let topic = unique_topic("ensure-topic");
    for _ in 0..2 {
        let partitions = log.ensure_topic(&topic, TopicSpec::events(3)).await;
        assert_eq!(partitions.ok(), Some(3), "ensure_topic with the same spec");
    }
    let partitions = log.ensure_topic(&topic, TopicSpec::events(5)).await;
    assert_eq!(
        partitions.ok(),
        Some(3),
        "an existing topic keeps its partition count"
    );
    assert_eq!(log.partition_count(&topic).await.ok(), Some(3));
    assert_eq!(end_offsets(&*log, &topic).await, vec![0, 0, 0]);
}

async fn invalid_topics_are_rejected(log: Arc<dyn EventLog>) {
    for name in ["", "has/slash", "has space"] {
        let result = log.ensure_topic(name, TopicSpec::events(1)).await;
        assert!(
            matches!(result, Err(LogError::InvalidTopicName { ref topic, .. }) if topic == name),
            "ensure_topic({name:?}) gave {result:?}"
        );
    }
    let topic = unique_topic("zero-partitions");
    let result = log.ensure_topic(&topic, TopicSpec::events(0)).await;
    assert!(
        matches!(result, Err(LogError::InvalidTopicSpec { .. })),
        "ensure_topic with zero partitions gave {result:?}"
    );
    let result = log.partition_count(&topic).await;
    assert!(
        matches!(result, Err(LogError::UnknownTopic { .. })),
        "a rejected topic must not exist, partition_count gave {result:?}"
    );
}

async fn offsets_start_at_zero_and_are_contiguous(log: Arc<dyn EventLog>) {
    let topic = topic_with(&*log, "contiguous", 2).await;
    let batch = |count: usize, partition: u32| -> Vec<NewRecord> {
        (0..count)
            .map(|i| NewRecord::new(format!("k{i}"), format!("v{i}")).to_partition(partition))
            .collect()
    };
    let first = append(&*log, &topic, batch(10, 1)).await;
    let second = append(&*log, &topic, batch(5, 1)).await;
    let other = append(&*log, &topic, batch(3, 0)).await;
    let expected = |partition: u32, offsets: std::ops::Range<u64>| -> Vec<Position> {
        offsets
            .map(|offset| Position::new(partition, offset))
            .collect()
    };
    assert_eq!(first, expected(1, 0..10));
    assert_eq!(second, expected(1, 10..15));
    assert_eq!(other, expected(0, 0..3));
    assert_eq!(end_offsets(&*log, &topic).await, vec![3, 15]);
}

async fn keyed_records_land_in_the_murmur2_partition(log: Arc<dyn EventLog>) {
    let partitions = 6;
    let topic = topic_with(&*log, "murmur2", partitions).await;
    let keys: Vec<String> = (0..60).map(|i| format!("patient-{i}")).collect();
    for round in 0..2 {
        let records = keys
            .iter()
            .map(|key| NewRecord::new(key.as_str(), format!("round {round}")))
            .collect();
        let positions = append(&*log, &topic, records).await;
        for (key, position) in keys.iter().zip(&positions) {
            assert_eq!(
                position.partition,
                partition_for_key(key.as_bytes(), partitions),
                "key {key:?} landed in the wrong partition"
            );
        }
    }
    let mut reader = reader(&*log, &topic, &from_start(partitions)).await;
    for record in read_exactly(&mut *reader, keys.len() * 2, 1000).await {
        assert_eq!(
            record.partition,
            partition_for_key(&record.key, partitions),
            "record {} read from the wrong partition",
            record.position()
        );
    }
}

async fn explicit_partition_is_respected(log: Arc<dyn EventLog>) {
    let partitions = 4;
    let topic = topic_with(&*log, "explicit-partition", partitions).await;
    let hashed = partition_for_key(b"9434765919", partitions);
    let target = (hashed + 1) % partitions;
    let positions = append(
        &*log,
        &topic,
        vec![NewRecord::new("9434765919", "pinned").to_partition(target)],
    )
    .await;
    assert_eq!(positions, vec![Position::new(target, 0)]);
    let mut reader = reader(&*log, &topic, &[(target, 0)]).await;
    let records = read_exactly(&mut *reader, 1, 10).await;
    assert_eq!(records[0].value, b"pinned");
    let mut expected_ends = vec![0; partitions as usize];
    expected_ends[target as usize] = 1;
    assert_eq!(end_offsets(&*log, &topic).await, expected_ends);
}

async fn keys_values_and_headers_round_trip_byte_exact(log: Arc<dyn EventLog>) {
    let topic = topic_with(&*log, "round-trip", 1).await;
    let every_byte: Vec<u8> = (0..=255).collect();
    let large_value: Vec<u8> = (0..64 * 1024).map(|i| (i * 31 % 251) as u8).collect();
    let sent = vec![
        NewRecord::new(Vec::new(), Vec::new()),
        NewRecord::new(every_byte.clone(), large_value)
            .with_header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .with_header("binary", vec![0, 255, 0, 128])
            .with_header("empty", Vec::new())
            .with_header("traceparent", "second value wins in header()"),
        NewRecord::new("clé-ключ", every_byte).with_header("naïve-ключ", "ünïcödé"),
    ];
    let before = now_ms();
    let positions = append(&*log, &topic, sent.clone()).await;
    let after = now_ms();
    let mut reader = reader(&*log, &topic, &[(0, 0)]).await;
    let received = read_exactly(&mut *reader, sent.len(), 10).await;
    for ((sent, position), record) in sent.iter().zip(&positions).zip(&received) {
        assert_eq!(record.position(), *position);
        assert_eq!(record.topic, topic);
        assert_eq!(record.key, sent.key, "key of {position}");
        assert_eq!(record.value, sent.value, "value of {position}");
        assert_eq!(record.headers, sent.headers, "headers of {position}");
        // Allow for clock skew between a broker and this process.
        let slack = 5 * 60 * 1000;
        assert!(
            (before - slack..=after + slack).contains(&record.timestamp_ms),
            "timestamp {} of {position} is not near the append time {before}..={after}",
            record.timestamp_ms
        );
    }
    assert_eq!(
        received[1].header("traceparent"),
        Some(&b"second value wins in header()"[..])
    );
    assert_eq!(received[1].header("empty"), Some(&b""[..]));
    assert_eq!(received[1].header("absent"), None);
    assert_eq!(
        received[2].headers,
        vec![Header::new("naïve-ключ", "ünïcödé")]
    );
}

async fn order_per_partition_is_kept_across_appends(log: Arc<dyn EventLog>) {
    let partitions = 3;
    let topic = topic_with(&*log, "order", partitions).await;
    let keys = ["patient-a", "patient-b", "patient-c", "patient-d"];
    let rounds = 10;
    let per_round = 5;
    for round in 0..rounds {
        let records = keys
            .iter()
            .flat_map(|key| {
                (0..per_round)
                    .map(move |i| NewRecord::new(*key, format!("{}", round * per_round + i)))
            })
            .collect();
        append(&*log, &topic, records).await;
    }
    let mut reader = reader(&*log, &topic, &from_start(partitions)).await;
    let records = read_exactly(&mut *reader, keys.len() * rounds * per_round, 7).await;
    let mut seen_per_key: BTreeMap<Vec<u8>, Vec<usize>> = BTreeMap::new();
    let mut last_offset: BTreeMap<u32, u64> = BTreeMap::new();
    for record in &records {
        if let Some(previous) = last_offset.insert(record.partition, record.offset) {
            assert!(
                record.offset > previous,
                "partition {} went from offset {previous} to {}",
                record.partition,
                record.offset
            );
        }
        let sequence: usize = String::from_utf8_lossy(&record.value)
            .parse()
            .unwrap_or_else(|_| panic!("unexpected value at {}", record.position()));
        seen_per_key
            .entry(record.key.clone())
            .or_default()
            .push(sequence);
    }
    for key in keys {
        let expected: Vec<usize> = (0..rounds * per_round).collect();
        assert_eq!(
            seen_per_key.get(key.as_bytes()),
            Some(&expected),
            "records of {key:?} out of order"
        );
    }
}

/// Several appends in flight at once ([`EventLog::enqueue_append`], each
/// delivery awaited only after the last is enqueued) land in the order
/// they were enqueued, and their deliveries name where.
async fn enqueued_appends_land_in_the_order_they_were_enqueued(log: Arc<dyn EventLog>) {
    let partitions = 2;
    let topic = topic_with(&*log, "enqueued", partitions).await;
    let keys = ["patient-a", "patient-b", "patient-c"];
    let rounds = 8;
    let mut deliveries = Vec::new();
    for round in 0..rounds {
        let records = keys
            .iter()
            .map(|key| NewRecord::new(*key, format!("{round}")))
            .collect();
        deliveries.push(
            log.enqueue_append(&topic, records)
                .await
                .unwrap_or_else(|error| panic!("enqueue round {round}: {error}")),
        );
    }
    let mut delivered = Vec::new();
    for (round, delivery) in deliveries.into_iter().enumerate() {
        let positions = delivery
            .await
            .unwrap_or_else(|error| panic!("delivery of round {round}: {error}"));
        assert_eq!(positions.len(), keys.len(), "one position per record");
        delivered.extend(positions);
    }
    let mut reader = reader(&*log, &topic, &from_start(partitions)).await;
    let records = read_exactly(&mut *reader, keys.len() * rounds, 100).await;
    let mut seen_per_key: BTreeMap<Vec<u8>, Vec<usize>> = BTreeMap::new();
    for record in &records {
        assert!(
            delivered.contains(&record.position()),
            "{} was read but no delivery named it",
            record.position()
        );
        let round: usize = String::from_utf8_lossy(&record.value)
            .parse()
            .unwrap_or_else(|_| panic!("unexpected value at {}", record.position()));
        seen_per_key
            .entry(record.key.clone())
            .or_default()
            .push(round);
    }
    for key in keys {
        let expected: Vec<usize> = (0..rounds).collect();
        assert_eq!(
            seen_per_key.get(key.as_bytes()),
            Some(&expected),
            "records of {key:?} out of the order they were enqueued in"
        );
    }
}

async fn end_offsets_count_the_records_per_partition(log: Arc<dyn EventLog>) {
    let topic = topic_with(&*log, "end-offsets", 3).await;
    assert_eq!(end_offsets(&*log, &topic).await, vec![0, 0, 0]);
    let mut records = Vec::new();
    for (partition, count) in [(0, 4), (2, 7)] {
        records.extend(
            (0..count).map(|i| NewRecord::new("k", format!("{i}")).to_partition(partition)),
        );
    }
    append(&*log, &topic, records).await;
    assert_eq!(end_offsets(&*log, &topic).await, vec![4, 0, 7]);
    append(
        &*log,
        &topic,
        vec![NewRecord::new("k", "x").to_partition(1)],
    )
    .await;
    assert_eq!(end_offsets(&*log, &topic).await, vec![4, 1, 7]);
}

async fn empty_append_writes_nothing(log: Arc<dyn EventLog>) {
    let topic = topic_with(&*log, "empty-append", 2).await;
    assert_eq!(append(&*log, &topic, Vec::new()).await, Vec::new());
    assert_eq!(end_offsets(&*log, &topic).await, vec![0, 0]);
}

async fn reader_starts_mid_partition(log: Arc<dyn EventLog>) {
    let topic = topic_with(&*log, "mid-partition", 1).await;
    let records = (0..10)
        .map(|i| NewRecord::new("k", format!("v{i}")))
        .collect();
    append(&*log, &topic, records).await;
    let mut reader = reader(&*log, &topic, &[(0, 4)]).await;
    assert_eq!(reader.positions(), BTreeMap::from([(0, 4)]));
    let records = read_exactly(&mut *reader, 6, 100).await;
    let offsets: Vec<u64> = records.iter().map(|record| record.offset).collect();
    assert_eq!(offsets, (4..10).collect::<Vec<_>>());
    assert_eq!(records[0].value, b"v4");
    assert_eq!(reader.positions(), BTreeMap::from([(0, 10)]));
    expect_nothing_more(&mut *reader).await;

    let mut at_end = self::reader(&*log, &topic, &[(0, 10)]).await;
    expect_nothing_more(&mut *at_end).await;
}

async fn reader_follows_the_tail(log: Arc<dyn EventLog>) {
    let topic = topic_with(&*log, "tail", 2).await;
    append(
        &*log,
        &topic,
        vec![NewRecord::new("old", "old").to_partition(0)],
    )
    .await;
    let mut reader = reader(&*log, &topic, &[(0, 1), (1, 0)]).await;
    let writer = Arc::clone(&log);
    let writer_topic = topic.clone();
    let appender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        append(
            &*writer,
            &writer_topic,
            vec![NewRecord::new("new", "new").to_partition(1)],
        )
        .await
    });
    // One call: the reader must wake on the append, not only on its timeout.
    let batch = reader
        .next_batch(10, ARRIVAL_WAIT)
        .await
        .unwrap_or_else(|error| panic!("next_batch failed: {error}"));
    let positions = appender
        .await
        .unwrap_or_else(|error| panic!("appender failed: {error}"));
    assert_eq!(
        batch.len(),
        1,
        "the tail append should arrive within the wait: {batch:?}"
    );
    assert_eq!(batch[0].position(), positions[0]);
    assert_eq!(batch[0].value, b"new");
    assert_eq!(reader.positions(), BTreeMap::from([(0, 1), (1, 1)]));
}

async fn reader_returns_empty_after_the_wait(log: Arc<dyn EventLog>) {
    let topic = topic_with(&*log, "wait", 1).await;
    append(&*log, &topic, vec![NewRecord::new("k", "v")]).await;
    let mut reader = reader(&*log, &topic, &[(0, 1)]).await;
    let wait = Duration::from_millis(300);
    let started = Instant::now();
    let batch = reader
        .next_batch(10, wait)
        .await
        .unwrap_or_else(|error| panic!("next_batch failed: {error}"));
    let waited = started.elapsed();
    assert!(batch.is_empty(), "nothing was appended, got {batch:?}");
    assert!(
        waited >= wait.mul_f32(0.8),
        "next_batch returned after {waited:?}, before the {wait:?} wait"
    );
    assert_eq!(reader.positions(), BTreeMap::from([(0, 1)]));
}

async fn reader_over_several_partitions_returns_every_record_once(log: Arc<dyn EventLog>) {
    let partitions = 4;
    let topic = topic_with(&*log, "several-partitions", partitions).await;
    let mut appended: BTreeMap<Position, Vec<u8>> = BTreeMap::new();
    for chunk in 0..5 {
        let records: Vec<NewRecord> = (0..50)
            .map(|i| {
                let n = chunk * 50 + i;
                NewRecord::new(format!("patient-{}", n % 37), format!("v{n}"))
            })
            .collect();
        let values: Vec<Vec<u8>> = records.iter().map(|record| record.value.clone()).collect();
        let positions = append(&*log, &topic, records).await;
        appended.extend(positions.into_iter().zip(values));
    }
    let mut reader = reader(&*log, &topic, &from_start(partitions)).await;
    let records = read_exactly(&mut *reader, appended.len(), 16).await;
    let mut read: BTreeMap<Position, Vec<u8>> = BTreeMap::new();
    for record in records {
        let position = record.position();
        assert!(
            read.insert(position, record.value).is_none(),
            "{position} returned twice"
        );
    }
    assert_eq!(
        read, appended,
        "the reader must return exactly the appended records"
    );
    expect_nothing_more(&mut *reader).await;
    let ends = end_offsets(&*log, &topic).await;
    let expected: BTreeMap<u32, u64> = (0..partitions).zip(ends).collect();
    assert_eq!(reader.positions(), expected);
}

async fn concurrent_appends_leave_no_gap_and_no_duplicate(log: Arc<dyn EventLog>) {
    let partitions = 3;
    let topic = topic_with(&*log, "concurrent", partitions).await;
    let tasks = 8;
    let appends_per_task = 20;
    let records_per_append = 4;
    let mut handles = Vec::new();
    for task in 0..tasks {
        let log = Arc::clone(&log);
        let topic = topic.clone();
        handles.push(tokio::spawn(async move {
            let mut written = Vec::new();
            for call in 0..appends_per_task {
                let key = format!("task-{task}-call-{call}");
                let values: Vec<String> = (0..records_per_append)
                    .map(|i| format!("{key}-record-{i}"))
                    .collect();
                let records = values
                    .iter()
                    .map(|value| NewRecord::new(key.as_str(), value.as_str()))
                    .collect();
                let positions = append(&*log, &topic, records).await;
                for pair in positions.windows(2) {
                    assert_eq!(
                        (pair[1].partition, pair[1].offset),
                        (pair[0].partition, pair[0].offset + 1),
                        "records of one call in one partition must take consecutive offsets"
                    );
                }
                written.extend(positions.into_iter().zip(values));
            }
            written
        }));
    }
    let mut written: BTreeMap<Position, Vec<u8>> = BTreeMap::new();
    for handle in handles {
        let task_written = handle
            .await
            .unwrap_or_else(|error| panic!("append task failed: {error}"));
        for (position, value) in task_written {
            assert!(
                written.insert(position, value.into_bytes()).is_none(),
                "{position} was handed out twice"
            );
        }
    }
    let total = tasks * appends_per_task * records_per_append;
    assert_eq!(written.len(), total);
    let ends = end_offsets(&*log, &topic).await;
    for partition in 0..partitions {
        let offsets: BTreeSet<u64> = written
            .keys()
            .filter(|position| position.partition == partition)
            .map(|position| position.offset)
            .collect();
        let expected: BTreeSet<u64> = (0..ends[partition as usize]).collect();
        assert_eq!(
            offsets, expected,
            "partition {partition} has gaps or extra offsets"
        );
    }
    let mut reader = reader(&*log, &topic, &from_start(partitions)).await;
    let read: BTreeMap<Position, Vec<u8>> = read_exactly(&mut *reader, total, 500)
        .await
        .into_iter()
        .map(|record| (record.position(), record.value))
        .collect();
    assert_eq!(
        read, written,
        "every record must be stored where append said"
    );
}

async fn unknown_topic_is_an_error(log: Arc<dyn EventLog>) {
    let topic = unique_topic("never-created");
    let is_unknown = |result: &Result<(), LogError>| matches!(result, Err(LogError::UnknownTopic { topic: named }) if *named == topic);
    let result = log.partition_count(&topic).await.map(drop);
    assert!(is_unknown(&result), "partition_count gave {result:?}");
    let result = log
        .append(&topic, vec![NewRecord::new("k", "v")])
        .await
        .map(drop);
    assert!(is_unknown(&result), "append gave {result:?}");
    let result = log.end_offsets(&topic).await.map(drop);
    assert!(is_unknown(&result), "end_offsets gave {result:?}");
    let result = log.reader(&topic, BTreeMap::from([(0, 0)])).await.map(drop);
    assert!(is_unknown(&result), "reader gave {result:?}");
}

async fn out_of_range_partition_is_an_error(log: Arc<dyn EventLog>) {
    let topic = topic_with(&*log, "partition-range", 2).await;
    let expected = |result: &Result<(), LogError>| {
        matches!(
            result,
            Err(LogError::PartitionOutOfRange { topic: named, partition: 2, partitions: 2 })
                if *named == topic
        )
    };
    let result = log
        .append(
            &topic,
            vec![
                NewRecord::new("ok", "ok").to_partition(1),
                NewRecord::new("bad", "bad").to_partition(2),
            ],
        )
        .await
        .map(drop);
    assert!(
        expected(&result),
        "append to partition 2 of 2 gave {result:?}"
    );
    assert_eq!(
        end_offsets(&*log, &topic).await,
        vec![0, 0],
        "a rejected append must write none of its records"
    );
    let result = log
        .reader(&topic, BTreeMap::from([(0, 0), (2, 0)]))
        .await
        .map(drop);
    assert!(
        expected(&result),
        "reader over partition 2 of 2 gave {result:?}"
    );
}

async fn reader_past_the_end_offset_is_an_error(log: Arc<dyn EventLog>) {
    let topic = topic_with(&*log, "offset-range", 1).await;
    append(
        &*log,
        &topic,
        vec![NewRecord::new("k", "v"), NewRecord::new("k", "w")],
    )
    .await;
    let result = log.reader(&topic, BTreeMap::from([(0, 3)])).await.map(drop);
    assert!(
        matches!(
            result,
            Err(LogError::OffsetOutOfRange {
                partition: 0,
                offset: 3,
                end_offset: 2,
                ..
            })
        ),
        "reader from offset 3 of 2 gave {result:?}"
    );
}

async fn identity_is_named_and_stable(log: Arc<dyn EventLog>) {
    let identity = log
        .identity()
        .await
        .unwrap_or_else(|error| panic!("identity failed: {error}"));
    let (kind, name) = identity
        .split_once(':')
        .unwrap_or_else(|| panic!("identity {identity:?} is not <kind>:<name>"));
    assert!(
        !kind.is_empty() && !name.is_empty(),
        "identity {identity:?}"
    );
    assert_eq!(log.identity().await.ok(), Some(identity));
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}
