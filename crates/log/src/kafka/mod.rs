//! The Kafka backend: Baton's log on a Kafka cluster (or any broker that
//! speaks the Kafka protocol), through librdkafka.
//!
//! - `append` is an idempotent producer (`enable.idempotence`, `acks=all`)
//!   awaited for every record: when it returns, every in-sync replica has
//!   the records. Keyed records are pinned to the partition
//!   [`partition_for_key`] names (Kafka's murmur2, as Java producers use),
//!   not librdkafka's default `consistent_random`.
//! - A [`LogReader`] is a consumer that `assign`s explicit partitions at
//!   explicit offsets: no consumer group, no committed offsets. Positions
//!   live in the projector's store, committed with the states they produced.
//! - `commit_group_offsets` writes a projector's positions to a consumer
//!   group for Kafka's lag tools, through a consumer of that group that is
//!   never subscribed or assigned: it commits, never joins, never reads.
//! - Topics are created by `ensure_topic` when missing, and topic
//!   auto-creation is off in every client, so a typo in a topic name is an
//!   error rather than a new empty topic.
//!
//! # Layout
//! - `config.rs`: [`KafkaConfig`] and the librdkafka settings per client.
//! - `reader.rs`: [`KafkaReader`](reader::KafkaReader).
//! - `group.rs`: a member of the consumer group projectors share the
//!   events topic's partitions through ([`crate::group`]).
//! - this file: [`KafkaLog`], topics, appends and end offsets.

mod config;
mod group;
mod reader;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use crate::blocking::{run_blocking, run_detached};
use crate::topics::validate_topic_name;
use crate::{
    Delivery, EventLog, GroupOffsets, LogError, LogReader, NewRecord, Position, Result, TopicSpec,
    partition_for_key,
};
pub use config::KafkaConfig;
use reader::KafkaReader;

/// How often `ensure_topic` looks again for a new topic's partition leaders.
const READY_POLL: Duration = Duration::from_millis(50);
/// How long past the delivery timeout an append waits for librdkafka's
/// verdict before answering that the records timed out.
const DELIVERY_GRACE: Duration = Duration::from_millis(500);
/// How long an append waits before retrying when librdkafka's local queue
/// is full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(5);

/// The Kafka [`EventLog`]. Cloning is cheap and shares the clients.
#[derive(Clone)]
pub struct KafkaLog {
    inner: Arc<Inner>,
}

struct Inner {
    config: KafkaConfig,
    /// `kafka:<cluster id>`, learnt on connecting.
    identity: RwLock<String>,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    /// Reads the last record of partitions to confirm end offsets; see
    /// [`KafkaLog::end_offsets`].
    probe: Mutex<BaseConsumer>,
    /// Partition counts seen in metadata. A topic's count never shrinks and
    /// Baton never grows it, so a cached count stays right.
    partitions: RwLock<HashMap<String, u32>>,
    /// Held while one append hands its records to librdkafka, so the
    /// records of one call to one partition take consecutive offsets even
    /// when appends run concurrently.
    enqueue: tokio::sync::Mutex<()>,
    /// One committing consumer per monitoring group, made on first use.
    group_committers: Mutex<HashMap<String, Arc<GroupCommitter>>>,
}

impl KafkaLog {
    /// Creates the clients and checks the cluster answers, so a wrong
    /// address or a refused credential fails at start-up with the reason.
    pub async fn connect(config: KafkaConfig) -> Result<Self> {
        config.validate()?;
        let create_error = |client: &'static str| {
            move |source: KafkaError| LogError::InvalidConfig {
                key: "kafka.client".to_owned(),
                reason: format!("librdkafka refused the {client} settings: {source}"),
            }
        };
        let producer: FutureProducer = config
            .producer()
            .create()
            .map_err(create_error("producer"))?;
        let admin: AdminClient<DefaultClientContext> =
            config.admin().create().map_err(create_error("admin"))?;
        let probe: BaseConsumer = config.reader().create().map_err(create_error("reader"))?;
        let log = Self {
            inner: Arc::new(Inner {
                identity: RwLock::new(String::new()),
                config,
                producer,
                admin,
                probe: Mutex::new(probe),
                partitions: RwLock::new(HashMap::new()),
                enqueue: tokio::sync::Mutex::new(()),
                group_committers: Mutex::new(HashMap::new()),
            }),
        };
        let inner = Arc::clone(&log.inner);
        let brokers = run_blocking(move || {
            let client = inner.producer.client();
            let metadata = client
                .fetch_metadata(None, inner.config.operation_timeout())
                .map_err(|source| kafka_error("connect", None, None, source))?;
            // A broker that reports no cluster id is known by its address.
            let cluster = client
                .fetch_cluster_id(inner.config.operation_timeout())
                .unwrap_or_else(|| inner.config.bootstrap_servers.clone());
            *write_lock(&inner.identity) = format!("kafka:{cluster}");
            Ok(metadata.brokers().len())
        })
        .await?;
        info!(
            bootstrap_servers = %log.inner.config.bootstrap_servers,
            brokers,
            "connected to kafka"
        );
        Ok(log)
    }

    pub fn config(&self) -> &KafkaConfig {
        &self.inner.config
    }

    /// The topic's partition count, from the cache or the cluster's
    /// metadata; `None` when the topic does not exist.
    async fn lookup_partitions(&self, topic: &str) -> Result<Option<u32>> {
        if let Some(&count) = read_lock(&self.inner.partitions).get(topic) {
            return Ok(Some(count));
        }
        let inner = Arc::clone(&self.inner);
        let name = topic.to_owned();
        let found = run_blocking(move || inner.topic_metadata(&name)).await?;
        if let Some(TopicMetadata { partitions, .. }) = found
            && partitions > 0
        {
            write_lock(&self.inner.partitions).insert(topic.to_owned(), partitions);
            return Ok(Some(partitions));
        }
        Ok(None)
    }

    async fn partitions_of(&self, topic: &str) -> Result<u32> {
        self.lookup_partitions(topic)
            .await?
            .ok_or_else(|| LogError::UnknownTopic {
                topic: topic.to_owned(),
            })
    }

    /// Waits until every partition of a new topic has a leader, so the
    /// first append and read after `ensure_topic` succeed.
    async fn wait_until_ready(&self, topic: &str, partitions: u32) -> Result<u32> {
        let started = Instant::now();
        let timeout = self.inner.config.operation_timeout();
        loop {
            let inner = Arc::clone(&self.inner);
            let name = topic.to_owned();
            let reason = match run_blocking(move || inner.topic_metadata(&name)).await? {
                Some(metadata) if metadata.partitions > 0 && metadata.leaderless == 0 => {
                    write_lock(&self.inner.partitions)
                        .insert(topic.to_owned(), metadata.partitions);
                    return Ok(metadata.partitions);
                }
                Some(metadata) => format!(
                    "{} of {} partitions have no leader yet",
                    metadata.leaderless, metadata.partitions
                ),
                None => {
                    format!("the cluster does not list it yet ({partitions} partitions asked for)")
                }
            };
            if started.elapsed() >= timeout {
                return Err(LogError::TopicNotReady {
                    topic: topic.to_owned(),
                    waited_ms: started.elapsed().as_millis() as u64,
                    reason,
                });
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// Hands every record to librdkafka (in order, under the enqueue lock)
    /// and returns the delivery futures, one per record.
    async fn enqueue(
        &self,
        topic: &str,
        records: &[NewRecord],
        targets: &[u32],
    ) -> Result<Vec<rdkafka::producer::DeliveryFuture>> {
        let _enqueue = self.inner.enqueue.lock().await;
        let mut deliveries = Vec::with_capacity(records.len());
        for (record, &partition) in records.iter().zip(targets) {
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
            for header in &record.headers {
                headers = headers.insert(KafkaHeader {
                    key: &header.name,
                    value: Some(&header.value),
                });
            }
            let mut pending = FutureRecord::to(topic)
                .key(&record.key)
                .payload(&record.value)
                .partition(partition as i32)
                .headers(headers);
            loop {
                match self.inner.producer.send_result(pending) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                        // librdkafka's own threads drain the queue; wait for room.
                        pending = returned;
                        tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                    }
                    Err((source, _)) => {
                        return Err(kafka_error("append", Some(topic), Some(partition), source));
                    }
                }
            }
        }
        Ok(deliveries)
    }

    /// The consumer that commits `group`'s offsets.
    fn group_committer(&self, group: &str) -> Result<Arc<GroupCommitter>> {
        let mut committers = self
            .inner
            .group_committers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(committer) = committers.get(group) {
            return Ok(Arc::clone(committer));
        }
        let consumer: BaseConsumer =
            self.inner
                .config
                .group_committer(group)
                .create()
                .map_err(|source| LogError::InvalidConfig {
                    key: "kafka.client".to_owned(),
                    reason: format!(
                        "librdkafka refused the settings of a consumer of group {group:?}: {source}"
                    ),
                })?;
        let committer = Arc::new(GroupCommitter {
            consumer: std::mem::ManuallyDrop::new(consumer),
            committing: Mutex::new(()),
        });
        committers.insert(group.to_owned(), Arc::clone(&committer));
        Ok(committer)
    }

    /// The high watermark of each partition as the cluster reports it to
    /// ListOffsets.
    async fn listed_end_offsets(&self, topic: &str, partitions: u32) -> Result<Vec<u64>> {
        let inner = Arc::clone(&self.inner);
        let name = topic.to_owned();
        run_blocking(move || {
            let timeout = inner.config.operation_timeout();
            (0..partitions)
                .map(|partition| {
                    let (_low, high) = inner
                        .producer
                        .client()
                        .fetch_watermarks(&name, partition as i32, timeout)
                        .map_err(|source| {
                            kafka_error("list end offsets", Some(&name), Some(partition), source)
                        })?;
                    Ok(u64::try_from(high).unwrap_or(0))
                })
                .collect()
        })
        .await
    }
}

/// A consumer of one monitoring group, used only to commit its offsets.
///
/// Never closed: closing a consumer that has talked to a group coordinator
/// waits until the coordinator answers, without end when the cluster is
/// gone, and would hold a process stopping while Kafka is down. It is left
/// to the operating system when the process ends.
struct GroupCommitter {
    consumer: std::mem::ManuallyDrop<BaseConsumer>,
    /// One commit at a time per group; a commit while one is unanswered
    /// fails at once.
    committing: Mutex<()>,
}

impl GroupCommitter {
    /// Commits `offsets`, waiting for the broker's answer.
    /// Fails at once while an earlier commit is still unanswered, so
    /// commits to a cluster that is gone never pile up.
    fn commit(&self, offsets: &TopicPartitionList) -> Result<(), KafkaError> {
        let _one = match self.committing.try_lock() {
            Ok(one) => one,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                return Err(KafkaError::ConsumerCommit(
                    RDKafkaErrorCode::RequestTimedOut,
                ));
            }
        };
        self.consumer.commit(offsets, CommitMode::Sync)
    }
}

/// What Baton needs from a topic's metadata.
struct TopicMetadata {
    partitions: u32,
    /// Partitions without a leader (or with an error): not ready for appends.
    leaderless: u32,
}

impl Inner {
    /// `None` when the cluster does not know the topic.
    fn topic_metadata(&self, topic: &str) -> Result<Option<TopicMetadata>> {
        let metadata = self
            .producer
            .client()
            .fetch_metadata(Some(topic), self.config.operation_timeout())
            .map_err(|source| kafka_error("read metadata", Some(topic), None, source))?;
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Ok(None);
        };
        match found.error() {
            None => {}
            Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => return Ok(None),
            Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE) => {
                return Ok(Some(TopicMetadata {
                    partitions: found.partitions().len() as u32,
                    leaderless: found.partitions().len().max(1) as u32,
                }));
            }
            Some(error) => {
                return Err(kafka_error(
                    "read metadata",
                    Some(topic),
                    None,
                    KafkaError::MetadataFetch(error.into()),
                ));
            }
        }
        let partitions = found.partitions();
        let leaderless = partitions
            .iter()
            .filter(|partition| partition.leader() < 0 || partition.error().is_some())
            .count();
        Ok(Some(TopicMetadata {
            partitions: partitions.len() as u32,
            leaderless: leaderless as u32,
        }))
    }

    /// Reads from the record before each listed end offset and returns the
    /// true end offsets.
    ///
    /// Some Kafka-protocol brokers (Tansu 0.6) answer ListOffsets(latest)
    /// with the base offset of the partition's last record batch plus one,
    /// which is short of the high watermark when that batch holds several
    /// records. A fetch always returns whole batches and the real high
    /// watermark, so reading from `listed - 1` shows every record up to the
    /// true end. On a broker that answers correctly this reads one record
    /// per partition and changes nothing.
    fn confirm_end_offsets(&self, topic: &str, listed: &[u64]) -> Result<Vec<u64>> {
        let mut ends = listed.to_vec();
        let mut waiting: BTreeMap<u32, u64> = listed
            .iter()
            .enumerate()
            .filter(|(_, end)| **end > 0)
            .map(|(partition, end)| (partition as u32, end - 1))
            .collect();
        if waiting.is_empty() {
            return Ok(ends);
        }
        let probe = self.probe.lock().unwrap_or_else(PoisonError::into_inner);
        let mut assignment = TopicPartitionList::new();
        for (&partition, &offset) in &waiting {
            assignment
                .add_partition_offset(topic, partition as i32, Offset::Offset(offset as i64))
                .map_err(|source| {
                    kafka_error("confirm end offsets", Some(topic), Some(partition), source)
                })?;
        }
        probe
            .assign(&assignment)
            .map_err(|source| kafka_error("confirm end offsets", Some(topic), None, source))?;
        let deadline = Instant::now() + self.config.operation_timeout();
        while !waiting.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                warn!(topic, partitions = ?waiting.keys().collect::<Vec<_>>(), "end offsets not confirmed in time; using the listed ones");
                break;
            }
            let Some(first) = probe.poll(left) else {
                continue;
            };
            let mut seen = vec![first];
            // The rest of the fetch response is queued already.
            while let Some(more) = probe.poll(Duration::ZERO) {
                seen.push(more);
            }
            for message in seen {
                match message {
                    Ok(message) if message.topic() == topic => {
                        let partition = message.partition() as u32;
                        let next = message.offset() as u64 + 1;
                        if let Some(end) = ends.get_mut(partition as usize) {
                            *end = (*end).max(next);
                        }
                        waiting.remove(&partition);
                    }
                    Ok(_) => {}
                    Err(error) => {
                        // E.g. the last record was deleted by retention:
                        // the listed offset is all there is to know.
                        debug!(topic, %error, "confirming end offsets");
                        if let KafkaError::MessageConsumption(_) = error {
                            waiting.clear();
                        }
                    }
                }
            }
        }
        if let Err(error) = probe.unassign() {
            warn!(topic, %error, "cannot release the end-offset probe's partitions");
        }
        Ok(ends)
    }
}

impl fmt::Debug for KafkaLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaLog")
            .field("bootstrap_servers", &self.inner.config.bootstrap_servers)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl EventLog for KafkaLog {
    async fn ensure_topic(&self, topic: &str, spec: TopicSpec) -> Result<u32> {
        validate_topic_name(topic)?;
        spec.validate(topic)?;
        if let Some(existing) = self.lookup_partitions(topic).await? {
            if existing != spec.partitions {
                warn!(
                    topic,
                    existing_partitions = existing,
                    requested_partitions = spec.partitions,
                    "topic exists with a different partition count; keeping the existing one"
                );
            }
            return Ok(existing);
        }
        let partitions =
            i32::try_from(spec.partitions).map_err(|_| LogError::InvalidTopicSpec {
                topic: topic.to_owned(),
                reason: format!("{} partitions is more than Kafka allows", spec.partitions),
            })?;
        let replication = TopicReplication::Fixed(self.inner.config.replication_factor);
        let new_topic = if spec.compacted {
            NewTopic::new(topic, partitions, replication).set("cleanup.policy", "compact")
        } else {
            // The log is the record: nothing is deleted by age or size.
            NewTopic::new(topic, partitions, replication)
                .set("cleanup.policy", "delete")
                .set("retention.ms", "-1")
                .set("retention.bytes", "-1")
        };
        let timeout = self.inner.config.operation_timeout();
        let options = AdminOptions::new()
            .operation_timeout(Some(timeout))
            .request_timeout(Some(timeout));
        let results = self
            .inner
            .admin
            .create_topics([&new_topic], &options)
            .await
            .map_err(|source| kafka_error("create topic", Some(topic), None, source))?;
        for result in results {
            match result {
                Ok(_) => info!(
                    topic,
                    partitions = spec.partitions,
                    compacted = spec.compacted,
                    "topic created"
                ),
                // Another process created it first: use theirs.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    debug!(topic, "topic created concurrently by another client");
                }
                Err((_, code)) => {
                    return Err(kafka_error(
                        "create topic",
                        Some(topic),
                        None,
                        KafkaError::AdminOp(code),
                    ));
                }
            }
        }
        self.wait_until_ready(topic, spec.partitions).await
    }

    async fn partition_count(&self, topic: &str) -> Result<u32> {
        self.partitions_of(topic).await
    }

    async fn append(&self, topic: &str, records: Vec<NewRecord>) -> Result<Vec<Position>> {
        self.enqueue_append(topic, records).await?.await
    }

    async fn enqueue_append(&self, topic: &str, records: Vec<NewRecord>) -> Result<Delivery> {
        let partitions = self.partitions_of(topic).await?;
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
            return Ok(Box::pin(std::future::ready(Ok(Vec::new()))));
        }
        // Once enqueued, the idempotent producer keeps each partition's
        // records in the order they were enqueued, retries included.
        let deliveries = self.enqueue(topic, &records, &targets).await?;
        // librdkafka times deliveries out by itself, but not always on time
        // while it re-establishes an idempotent producer's id after an
        // outage; the caller is told by the deadline either way. Records
        // still queued may be written later: callers retry, and consumers
        // dedupe on the event id.
        let deadline =
            Duration::from_millis(self.inner.config.delivery_timeout_ms) + DELIVERY_GRACE;
        let topic = topic.to_owned();
        Ok(Box::pin(async move {
            let Ok(delivered) =
                tokio::time::timeout(deadline, futures::future::join_all(deliveries)).await
            else {
                return Err(kafka_error(
                    "append",
                    Some(&topic),
                    targets.first().copied(),
                    KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
                ));
            };
            let mut positions = Vec::with_capacity(delivered.len());
            for (delivery, &partition) in delivered.into_iter().zip(&targets) {
                match delivery {
                    Ok(Ok(delivered)) => positions.push(Position::new(
                        delivered.partition as u32,
                        delivered.offset as u64,
                    )),
                    Ok(Err((source, _))) => {
                        return Err(kafka_error("append", Some(&topic), Some(partition), source));
                    }
                    Err(_canceled) => return Err(LogError::Closed),
                }
            }
            Ok(positions)
        }))
    }

    /// Each partition's high watermark: ListOffsets, confirmed by reading
    /// the last record (see `confirm_end_offsets`).
    async fn end_offsets(&self, topic: &str) -> Result<Vec<u64>> {
        let partitions = self.partitions_of(topic).await?;
        let listed = self.listed_end_offsets(topic, partitions).await?;
        let inner = Arc::clone(&self.inner);
        let name = topic.to_owned();
        run_blocking(move || inner.confirm_end_offsets(&name, &listed)).await
    }

    async fn reader(&self, topic: &str, from: BTreeMap<u32, u64>) -> Result<Box<dyn LogReader>> {
        let partitions = self.partitions_of(topic).await?;
        if let Some(&partition) = from.keys().find(|&&partition| partition >= partitions) {
            return Err(LogError::PartitionOutOfRange {
                topic: topic.to_owned(),
                partition,
                partitions,
            });
        }
        if from.values().any(|&offset| offset > 0) {
            let ends = self.end_offsets(topic).await?;
            for (&partition, &offset) in &from {
                let end_offset = ends[partition as usize];
                if offset > end_offset {
                    return Err(LogError::OffsetOutOfRange {
                        topic: topic.to_owned(),
                        partition,
                        offset,
                        end_offset,
                    });
                }
            }
        }
        Ok(Box::new(KafkaReader::open(
            &self.inner.config,
            topic,
            from,
        )?))
    }

    async fn identity(&self) -> Result<String> {
        Ok(read_lock(&self.inner.identity).clone())
    }

    /// Commits through a consumer of `group` that never joins it: the
    /// OffsetCommit carries no generation, as for a consumer of assigned
    /// partitions, which Kafka accepts for a group without active members.
    /// Fails after `operation_timeout_ms` when the cluster does not answer.
    async fn commit_group_offsets(
        &self,
        group: &str,
        topic: &str,
        positions: &BTreeMap<u32, u64>,
    ) -> Result<GroupOffsets> {
        if group.trim().is_empty() {
            return Err(LogError::InvalidConfig {
                key: "consumer group".to_owned(),
                reason: "empty: expected a consumer group name, e.g. \"baton-projector\""
                    .to_owned(),
            });
        }
        if positions.is_empty() {
            return Ok(GroupOffsets::Committed);
        }
        let partitions = self.partitions_of(topic).await?;
        let mut offsets = TopicPartitionList::new();
        for (&partition, &offset) in positions {
            if partition >= partitions {
                return Err(LogError::PartitionOutOfRange {
                    topic: topic.to_owned(),
                    partition,
                    partitions,
                });
            }
            offsets
                .add_partition_offset(topic, partition as i32, Offset::Offset(offset as i64))
                .map_err(|source| {
                    kafka_error("commit group offsets", Some(topic), Some(partition), source)
                })?;
        }
        let committer = self.group_committer(group)?;
        let name = topic.to_owned();
        let timeout = self.inner.config.operation_timeout();
        // On a thread of its own: a synchronous commit to a cluster that is
        // gone may never return, and the runtime's shutdown would wait for
        // a blocking task without end.
        let commit = run_detached(move || {
            committer
                .commit(&offsets)
                .map_err(|source| kafka_error("commit group offsets", Some(&name), None, source))
        });
        // The caller is answered by the operation timeout; a commit the
        // cluster has not answered by then finishes, or fails, by itself.
        match tokio::time::timeout(timeout, commit).await {
            Ok(committed) => committed?,
            Err(_) => {
                return Err(kafka_error(
                    "commit group offsets",
                    Some(topic),
                    None,
                    KafkaError::ConsumerCommit(RDKafkaErrorCode::RequestTimedOut),
                ));
            }
        }
        Ok(GroupOffsets::Committed)
    }

    async fn join_group(
        &self,
        topic: &str,
        settings: &crate::group::GroupSettings,
    ) -> Result<crate::group::Membership> {
        // Refuses a topic that does not exist rather than waiting on it.
        self.partitions_of(topic).await?;
        group::join(&self.inner.config, topic, settings)
    }

    async fn group_offsets(&self, group: &str, topic: &str) -> Result<Option<BTreeMap<u32, u64>>> {
        let partitions = self.partitions_of(topic).await?;
        let mut asked = TopicPartitionList::new();
        for partition in 0..partitions {
            asked.add_partition(topic, partition as i32);
        }
        let committer = self.group_committer(group)?;
        let name = topic.to_owned();
        let timeout = self.inner.config.operation_timeout();
        let committed = run_blocking(move || {
            committer
                .consumer
                .committed_offsets(asked, timeout)
                .map_err(|source| kafka_error("read group offsets", Some(&name), None, source))
        })
        .await?;
        let mut offsets = BTreeMap::new();
        for element in committed.elements() {
            if let Offset::Offset(offset) = element.offset()
                && offset >= 0
            {
                offsets.insert(element.partition() as u32, offset as u64);
            }
        }
        Ok(Some(offsets))
    }

    /// Waits until every record handed to the producer is acknowledged.
    async fn flush(&self) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        run_blocking(move || {
            inner
                .producer
                .flush(Timeout::After(Duration::from_millis(
                    inner.config.delivery_timeout_ms,
                )))
                .map_err(|source| kafka_error("flush", None, None, source))
        })
        .await
    }
}

fn kafka_error(
    operation: &'static str,
    topic: Option<&str>,
    partition: Option<u32>,
    source: KafkaError,
) -> LogError {
    LogError::kafka(operation, topic, partition, None, source)
}

fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
