//! The embedded backend: the whole log in one sled database on local disk,
//! so `baton up` needs no broker. It keeps Kafka's partitions, offsets,
//! keys and headers, so switching to Kafka changes no caller.
//!
//! # Layout
//!
//! - tree `meta`: key `topic/<name>` → the topic's [`TopicSpec`]
//!   (see `codec.rs`);
//! - tree `p/<topic>/<partition>` per partition: key = base offset as u64
//!   big-endian, value = a batch of consecutive records (key, headers,
//!   value) with their append timestamp, as Kafka stores record batches
//!   (see `codec.rs`).
//!
//! Offsets are assigned under a per-partition lock from a counter recovered
//! with `tree.last()` at open. A partition's *end offset* (high watermark)
//! only moves past records that are durable, so readers and
//! [`EventLog::end_offsets`] never expose a record a crash could take back:
//! a projector that applied it could otherwise end up ahead of the log.

mod codec;
mod commit;
mod reader;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::blocking::run_blocking;
use crate::topics::validate_topic_name;
use crate::{
    EventLog, LogError, LogReader, NewRecord, Position, Result, TopicSpec, partition_for_key,
};
use commit::GroupCommit;
use reader::EmbeddedReader;

const META_TREE: &str = "meta";
/// Each partition is a sled tree opened at start-up; beyond this a topic
/// would only slow down every open without adding parallelism one machine
/// can use.
pub const MAX_PARTITIONS: u32 = 1024;
const TOPIC_KEY_PREFIX: &str = "topic/";
/// `meta` key of the log's identity, a UUID made when the log is created.
const IDENTITY_KEY: &str = "identity";

/// Where and how the embedded log stores its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedConfig {
    /// Directory of the sled database; created if missing. Only one process
    /// may open it at a time.
    pub path: PathBuf,
    /// Upper bound of sled's page cache, which keeps memory bounded while the
    /// log grows past it.
    pub cache_capacity_bytes: u64,
    /// fsync before append returns
    ///
    /// Turning it off trades the last ~half second of appends on a crash
    /// (sled's background flush interval) for lower append latency.
    pub durable: bool,
}

impl EmbeddedConfig {
    /// A durable log at `path` with a 256 MiB cache.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            cache_capacity_bytes: 256 * 1024 * 1024,
            durable: true,
        }
    }
}

/// The sled-backed [`EventLog`]. Cloning is cheap and shares the database.
#[derive(Clone)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    meta: sled::Tree,
    identity: String,
    durable: bool,
    /// Where the database lives, for log lines and `Debug`; `None` when
    /// temporary.
    path: Option<PathBuf>,
    topics: RwLock<HashMap<String, Arc<TopicState>>>,
    /// Serialises topic creation so two racing `ensure_topic` calls agree on
    /// one spec.
    creating: Mutex<()>,
    commit: GroupCommit,
    closed: AtomicBool,
}

/// One topic's partitions and the signal readers wait on.
pub(crate) struct TopicState {
    name: String,
    spec: TopicSpec,
    partitions: Vec<PartitionState>,
    /// Bumped after every append that moved an end offset, and on close, so
    /// tailing readers wake without polling.
    appended: watch::Sender<u64>,
}

/// The outcome of [`TopicState::write`].
struct Written {
    /// One per record, in input order.
    positions: Vec<Position>,
    /// Per partition written, its end offset after the write: published
    /// once the write is durable.
    ends: Vec<(u32, u64)>,
}

struct PartitionState {
    tree: sled::Tree,
    /// Next offset to assign. Held while the batch is written, so offsets
    /// of concurrent appends never interleave, repeat or leave gaps.
    next_offset: Mutex<u64>,
    /// Records below this offset are durable and visible to readers.
    end_offset: AtomicU64,
}

impl EmbeddedLog {
    /// Opens (or creates) the log at `config.path`, resuming every topic
    /// with its data and offsets.
    ///
    /// Blocks while sled recovers its files: call it at start-up, before
    /// serving, or inside `spawn_blocking`.
    pub fn open(config: EmbeddedConfig) -> Result<Self> {
        let db = sled::Config::new()
            .path(&config.path)
            .cache_capacity(config.cache_capacity_bytes)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        info!(
            path = %config.path.display(),
            durable = config.durable,
            "embedded log opened"
        );
        let log = Self::from_db(db, config.durable, Some(config.path))?;
        debug!(topics = log.topic_count(), "embedded log topics recovered");
        Ok(log)
    }

    /// For tests: a durable log in a sled temporary database (under the
    /// memory-backed `/dev/shm` on Linux, so keep test data small), deleted
    /// when the last handle drops.
    pub fn temporary() -> Result<Self> {
        let db = sled::Config::new().temporary(true).open()?;
        Self::from_db(db, true, None)
    }

    fn from_db(db: sled::Db, durable: bool, path: Option<PathBuf>) -> Result<Self> {
        let meta = db.open_tree(META_TREE)?;
        let identity = match meta.get(IDENTITY_KEY)? {
            Some(stored) => String::from_utf8_lossy(&stored).into_owned(),
            None => {
                let identity = format!("embedded:{}", uuid::Uuid::new_v4());
                meta.insert(IDENTITY_KEY, identity.as_bytes())?;
                identity
            }
        };
        let mut topics = HashMap::new();
        for entry in meta.scan_prefix(TOPIC_KEY_PREFIX) {
            let (key, value) = entry?;
            let name = String::from_utf8_lossy(&key[TOPIC_KEY_PREFIX.len()..]).into_owned();
            let spec = codec::decode_spec(&value).map_err(|reason| LogError::CorruptMetadata {
                topic: name.clone(),
                reason,
            })?;
            let topic = TopicState::open(&db, name.clone(), spec)?;
            topics.insert(name, Arc::new(topic));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                meta,
                identity,
                durable,
                path,
                topics: RwLock::new(topics),
                creating: Mutex::new(()),
                commit: GroupCommit::default(),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// Makes every append so far durable; only useful when `durable` is off,
    /// e.g. before a planned shutdown.
    pub async fn flush(&self) -> Result<()> {
        self.inner.db.flush_async().await?;
        Ok(())
    }

    /// Refuses further calls, wakes every waiting reader with
    /// [`LogError::Closed`] and flushes, so a shutting-down service stops
    /// cleanly. Closing affects every clone of this handle and every reader.
    pub async fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::SeqCst);
        for topic in self.inner.topics_snapshot() {
            topic.wake_readers();
        }
        self.flush().await
    }

    /// How many flushes group commit performed; with the number of appends
    /// it shows how well concurrent appends are being grouped.
    pub fn flush_count(&self) -> u64 {
        self.inner.commit.flushes()
    }

    fn topic_count(&self) -> usize {
        read_lock(&self.inner.topics).len()
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(LogError::Closed);
        }
        Ok(())
    }

    fn topic(&self, topic: &str) -> Result<Arc<TopicState>> {
        read_lock(&self.inner.topics)
            .get(topic)
            .cloned()
            .ok_or_else(|| LogError::UnknownTopic {
                topic: topic.to_owned(),
            })
    }
}

impl Inner {
    fn topics_snapshot(&self) -> Vec<Arc<TopicState>> {
        read_lock(&self.topics).values().cloned().collect()
    }

    /// Creates the topic unless it exists; returns its partition count.
    fn create_topic(&self, topic: &str, spec: TopicSpec) -> Result<u32> {
        let _creating = self.creating.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = read_lock(&self.topics).get(topic) {
            return Ok(existing.spec.partitions);
        }
        let state = TopicState::open(&self.db, topic.to_owned(), spec.clone())?;
        self.meta.insert(
            format!("{TOPIC_KEY_PREFIX}{topic}"),
            &codec::encode_spec(&spec),
        )?;
        write_lock(&self.topics).insert(topic.to_owned(), Arc::new(state));
        debug!(
            topic,
            partitions = spec.partitions,
            compacted = spec.compacted,
            "topic created"
        );
        Ok(spec.partitions)
    }
}

impl TopicState {
    fn open(db: &sled::Db, name: String, spec: TopicSpec) -> Result<Self> {
        let mut partitions = Vec::with_capacity(spec.partitions as usize);
        for partition in 0..spec.partitions {
            let tree = db.open_tree(partition_tree_name(&name, partition))?;
            let next = match tree.last()? {
                None => 0,
                Some((key, value)) => next_offset_after(&name, partition, &key, &value)?,
            };
            partitions.push(PartitionState {
                tree,
                next_offset: Mutex::new(next),
                end_offset: AtomicU64::new(next),
            });
        }
        let (appended, _) = watch::channel(0);
        Ok(Self {
            name,
            spec,
            partitions,
            appended,
        })
    }

    fn partition_count(&self) -> u32 {
        self.spec.partitions
    }

    fn partition(&self, partition: u32) -> Result<&PartitionState> {
        self.partitions
            .get(partition as usize)
            .ok_or_else(|| LogError::PartitionOutOfRange {
                topic: self.name.clone(),
                partition,
                partitions: self.partition_count(),
            })
    }

    fn end_offset(&self, partition: u32) -> Result<u64> {
        Ok(self.partition(partition)?.end_offset.load(Ordering::SeqCst))
    }

    fn wake_readers(&self) {
        self.appended
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    /// Writes the records, one sled batch per partition. `targets[i]` is
    /// the (validated) partition of `records[i]`.
    fn write(
        &self,
        records: &[NewRecord],
        targets: &[u32],
        timestamp_ms: i64,
        publish_now: bool,
    ) -> Result<Written> {
        let mut by_partition: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (index, &partition) in targets.iter().enumerate() {
            by_partition.entry(partition).or_default().push(index);
        }
        let mut positions = vec![Position::new(0, 0); records.len()];
        let mut ends = Vec::with_capacity(by_partition.len());
        for (partition, indexes) in by_partition {
            let state = self.partition(partition)?;
            let lens: Vec<usize> = indexes
                .iter()
                .map(|&index| codec::record_len(&records[index]))
                .collect();
            let encoded: Vec<(u64, Vec<u8>)> = codec::batch_runs(&lens)
                .into_iter()
                .map(|run| {
                    let body_len = lens[run.clone()].iter().sum();
                    let run_records = indexes[run.clone()].iter().map(|&index| &records[index]);
                    let count = run.len() as u64;
                    (
                        count,
                        codec::encode_batch(run_records, body_len, timestamp_ms),
                    )
                })
                .collect();
            let mut next_offset = state
                .next_offset
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let first = *next_offset;
            let mut batch = sled::Batch::default();
            let mut base = first;
            for (count, value) in encoded {
                batch.insert(&codec::offset_key(base), value);
                base += count;
            }
            state.tree.apply_batch(batch)?;
            for (offset, &index) in (first..).zip(&indexes) {
                positions[index] = Position::new(partition, offset);
            }
            let end = first + indexes.len() as u64;
            *next_offset = end;
            if publish_now {
                state.end_offset.fetch_max(end, Ordering::SeqCst);
            }
            drop(next_offset);
            ends.push((partition, end));
        }
        Ok(Written { positions, ends })
    }

    /// Makes records below the given end offsets visible and wakes readers.
    fn publish(&self, ends: &[(u32, u64)]) {
        for &(partition, end) in ends {
            if let Some(state) = self.partitions.get(partition as usize) {
                state.end_offset.fetch_max(end, Ordering::SeqCst);
            }
        }
        self.wake_readers();
    }
}

impl fmt::Debug for EmbeddedLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedLog")
            .field("path", &self.inner.path)
            .field("durable", &self.inner.durable)
            .field("topics", &self.topic_count())
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl fmt::Debug for TopicState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicState")
            .field("name", &self.name)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl EventLog for EmbeddedLog {
    async fn ensure_topic(&self, topic: &str, spec: TopicSpec) -> Result<u32> {
        self.check_open()?;
        validate_topic_name(topic)?;
        spec.validate(topic)?;
        if spec.partitions > MAX_PARTITIONS {
            return Err(LogError::InvalidTopicSpec {
                topic: topic.to_owned(),
                reason: format!(
                    "{} partitions requested, the embedded log supports at most {MAX_PARTITIONS}",
                    spec.partitions
                ),
            });
        }
        if let Ok(existing) = self.topic(topic) {
            if existing.spec != spec {
                warn!(
                    topic,
                    existing_partitions = existing.spec.partitions,
                    requested_partitions = spec.partitions,
                    existing_compacted = existing.spec.compacted,
                    requested_compacted = spec.compacted,
                    "topic exists with a different spec; keeping the existing one"
                );
            }
            return Ok(existing.partition_count());
        }
        let inner = Arc::clone(&self.inner);
        let name = topic.to_owned();
        let (partitions, ticket) = run_blocking(move || {
            let partitions = inner.create_topic(&name, spec)?;
            Ok((partitions, inner.commit.ticket()))
        })
        .await?;
        if self.inner.durable {
            self.inner
                .commit
                .wait_durable(ticket, &self.inner.db)
                .await?;
        }
        Ok(partitions)
    }

    async fn partition_count(&self, topic: &str) -> Result<u32> {
        self.check_open()?;
        Ok(self.topic(topic)?.partition_count())
    }

    async fn append(&self, topic: &str, records: Vec<NewRecord>) -> Result<Vec<Position>> {
        self.check_open()?;
        let state = self.topic(topic)?;
        let partitions = state.partition_count();
        let targets = records
            .iter()
            .map(|record| match record.partition {
                None => Ok(partition_for_key(&record.key, partitions)),
                Some(partition) if partition < partitions => Ok(partition),
                Some(partition) => Err(LogError::PartitionOutOfRange {
                    topic: topic.to_owned(),
                    partition,
                    partitions,
                }),
            })
            .collect::<Result<Vec<u32>>>()?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let durable = self.inner.durable;
        let timestamp_ms = now_ms();
        let writer = Arc::clone(&state);
        let inner = Arc::clone(&self.inner);
        let (Written { positions, ends }, ticket) = run_blocking(move || {
            let written = writer.write(&records, &targets, timestamp_ms, !durable)?;
            Ok((written, inner.commit.ticket()))
        })
        .await?;
        if durable {
            self.inner
                .commit
                .wait_durable(ticket, &self.inner.db)
                .await?;
        }
        state.publish(&ends);
        Ok(positions)
    }

    async fn end_offsets(&self, topic: &str) -> Result<Vec<u64>> {
        self.check_open()?;
        let state = self.topic(topic)?;
        Ok(state
            .partitions
            .iter()
            .map(|partition| partition.end_offset.load(Ordering::SeqCst))
            .collect())
    }

    async fn reader(&self, topic: &str, from: BTreeMap<u32, u64>) -> Result<Box<dyn LogReader>> {
        self.check_open()?;
        let state = self.topic(topic)?;
        for (&partition, &offset) in &from {
            let end_offset = state.end_offset(partition)?;
            if offset > end_offset {
                return Err(LogError::OffsetOutOfRange {
                    topic: topic.to_owned(),
                    partition,
                    offset,
                    end_offset,
                });
            }
        }
        Ok(Box::new(EmbeddedReader::new(
            Arc::clone(&self.inner),
            state,
            from,
        )))
    }

    async fn identity(&self) -> Result<String> {
        Ok(self.inner.identity.clone())
    }

    async fn flush(&self) -> Result<()> {
        EmbeddedLog::flush(self).await
    }
}

/// The offset after the partition's last batch, from its sled entry.
fn next_offset_after(topic: &str, partition: u32, key: &[u8], value: &[u8]) -> Result<u64> {
    let corrupt = |offset: u64, reason: String| LogError::Corrupt {
        topic: topic.to_owned(),
        partition,
        offset,
        reason,
    };
    let base = codec::decode_offset_key(key)
        .ok_or_else(|| corrupt(0, format!("last key {key:?} is not an 8-byte offset")))?;
    let count = codec::BatchDecoder::new(value)
        .map_err(|reason| corrupt(base, format!("last batch: {reason}")))?
        .count();
    base.checked_add(count).ok_or_else(|| {
        corrupt(
            base,
            format!("batch of {count} records overflows the offset"),
        )
    })
}

/// The sled tree holding one partition; `/` cannot occur in a valid topic
/// name, so names never collide.
fn partition_tree_name(topic: &str, partition: u32) -> String {
    format!("p/{topic}/{partition}")
}

fn now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
