//! The seam between Baton and its log backends.
//!
//! The traits follow Kafka's model so the rdkafka backend is a thin mapping:
//! `append` is an idempotent `FutureProducer` send awaited for every record,
//! and a [`LogReader`] is a `BaseConsumer` that `assign()`s explicit
//! partitions at explicit offsets. No reader joins a consumer group or
//! reads committed offsets: a projector keeps its positions in its own
//! store, committed atomically with the state they produced. It may *write*
//! them to a consumer group as well ([`EventLog::commit_group_offsets`]),
//! for Kafka's monitoring tools only; nothing reads them back.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::group::{GroupSettings, Membership};
use crate::{LogError, NewRecord, Position, Record, Result, TopicSpec};

/// The records of an [`EventLog::enqueue_append`] being written: resolves
/// as [`EventLog::append`] would, with one position per record.
pub type Delivery = Pin<Box<dyn Future<Output = Result<Vec<Position>>> + Send>>;

/// A partitioned, keyed, append-only log with Kafka semantics.
#[async_trait]
pub trait EventLog: Send + Sync + std::fmt::Debug + 'static {
    /// Creates the topic if missing; returns the partition count it has (an existing topic keeps its count).
    ///
    /// Partition counts never change silently: a key's partition depends on
    /// the count, so changing it would break per-key ordering.
    async fn ensure_topic(&self, topic: &str, spec: TopicSpec) -> Result<u32>;

    async fn partition_count(&self, topic: &str) -> Result<u32>;

    /// Appends durably: when this returns Ok, every record is on stable storage and will be read back after a crash. Returns one Position per record, in input order. Within one partition, records of one call keep their order and take consecutive offsets.
    ///
    /// Every record is validated (topic, explicit partitions) before any is
    /// written, so a bad batch writes nothing. A storage failure part-way may
    /// leave some partitions written: callers retry, and consumers dedupe on
    /// the event id, as with Kafka.
    async fn append(&self, topic: &str, records: Vec<NewRecord>) -> Result<Vec<Position>>;

    /// [`EventLog::append`] in two steps: returns once the records' place
    /// is fixed — in each partition, records enqueued later by any caller
    /// land after them — with a [`Delivery`] that resolves when they are
    /// durable. A caller can then keep several appends in flight and still
    /// have them land in order. Should these records fail, records enqueued
    /// after them may still be written.
    ///
    /// By default it appends, then hands back a resolved delivery.
    async fn enqueue_append(&self, topic: &str, records: Vec<NewRecord>) -> Result<Delivery> {
        let positions = self.append(topic, records).await?;
        Ok(Box::pin(std::future::ready(Ok(positions))))
    }

    /// Next offset to be written for each partition (Kafka's high watermark), index = partition.
    async fn end_offsets(&self, topic: &str) -> Result<Vec<u64>>;

    /// A reader over the given partitions, each starting at the given offset (offset = next record to read).
    ///
    /// Fails with `PartitionOutOfRange` for a partition the topic lacks and
    /// `OffsetOutOfRange` for an offset past the partition's end offset.
    async fn reader(&self, topic: &str, from: BTreeMap<u32, u64>) -> Result<Box<dyn LogReader>>;

    /// Names this log — `embedded:<uuid>` or `kafka:<cluster id>` — so a
    /// projection built from one log is never resumed against another,
    /// whose offsets mean other records.
    async fn identity(&self) -> Result<String>;

    /// Makes every append so far durable and delivered, e.g. before a
    /// planned shutdown. Appends are durable when they return, so this only
    /// matters for work still in flight.
    async fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// Records `positions` (partition → next offset to read) as the
    /// committed offsets of consumer group `group` in `topic`, so standard
    /// lag tools (`kafka-consumer-groups --describe`, Burrow,
    /// kafka-lag-exporter) show how far Baton is behind. For monitoring
    /// only: Baton never reads them back, and never joins the group.
    ///
    /// A backend without consumer groups (the embedded log) does nothing
    /// and answers [`GroupOffsets::NotSupported`].
    async fn commit_group_offsets(
        &self,
        group: &str,
        topic: &str,
        positions: &BTreeMap<u32, u64>,
    ) -> Result<GroupOffsets> {
        let _ = (group, topic, positions);
        Ok(GroupOffsets::NotSupported)
    }

    /// The offsets committed for `group` in each partition of `topic`
    /// (partitions without one are absent); `None` on a backend without
    /// consumer groups. For tools that keep a marker in a group, as
    /// `baton dlq purge` does on Kafka.
    async fn group_offsets(&self, group: &str, topic: &str) -> Result<Option<BTreeMap<u32, u64>>> {
        let _ = (group, topic);
        Ok(None)
    }

    /// Joins the consumer group `settings.group` sharing `topic`'s
    /// partitions with the other processes that join it (see
    /// [`crate::group`]). A backend without consumer groups (the embedded
    /// log, which one process owns whole) refuses.
    async fn join_group(&self, topic: &str, settings: &GroupSettings) -> Result<Membership> {
        let _ = topic;
        Err(LogError::InvalidConfig {
            key: "instance_id".into(),
            reason: format!(
                "{:?} asks to join consumer group {:?}, but this log has no consumer groups: one process owns every partition; leave instance_id empty",
                settings.instance_id, settings.group
            ),
        })
    }
}

/// What [`EventLog::commit_group_offsets`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupOffsets {
    /// The group's offsets are the given positions now.
    Committed,
    /// The backend has no consumer groups: nothing was written.
    NotSupported,
}

/// Reads assigned partitions from explicit offsets, following the tail.
#[async_trait]
pub trait LogReader: Send + std::fmt::Debug {
    /// Up to `max` records from any of the reader's partitions (per partition in offset order; fair across partitions, e.g. round-robin so one busy partition does not starve the others); when none is available, waits up to `wait` for new appends (follow the tail) and returns an empty Vec on timeout.
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>>;

    /// The next offset this reader will return for each partition.
    fn positions(&self) -> BTreeMap<u32, u64>;
}

/// Lets services share one log as `Arc<dyn EventLog>` (or `Arc<EmbeddedLog>`)
/// and still pass it wherever an `EventLog` is expected.
#[async_trait]
impl<T: EventLog + ?Sized> EventLog for Arc<T> {
    async fn ensure_topic(&self, topic: &str, spec: TopicSpec) -> Result<u32> {
        (**self).ensure_topic(topic, spec).await
    }

    async fn partition_count(&self, topic: &str) -> Result<u32> {
        (**self).partition_count(topic).await
    }

    async fn append(&self, topic: &str, records: Vec<NewRecord>) -> Result<Vec<Position>> {
        (**self).append(topic, records).await
    }

    async fn enqueue_append(&self, topic: &str, records: Vec<NewRecord>) -> Result<Delivery> {
        (**self).enqueue_append(topic, records).await
    }

    async fn end_offsets(&self, topic: &str) -> Result<Vec<u64>> {
        (**self).end_offsets(topic).await
    }

    async fn reader(&self, topic: &str, from: BTreeMap<u32, u64>) -> Result<Box<dyn LogReader>> {
        (**self).reader(topic, from).await
    }

    async fn identity(&self) -> Result<String> {
        (**self).identity().await
    }

    async fn flush(&self) -> Result<()> {
        (**self).flush().await
    }

    async fn commit_group_offsets(
        &self,
        group: &str,
        topic: &str,
        positions: &BTreeMap<u32, u64>,
    ) -> Result<GroupOffsets> {
        (**self).commit_group_offsets(group, topic, positions).await
    }

    async fn group_offsets(&self, group: &str, topic: &str) -> Result<Option<BTreeMap<u32, u64>>> {
        (**self).group_offsets(group, topic).await
    }

    async fn join_group(&self, topic: &str, settings: &GroupSettings) -> Result<Membership> {
        (**self).join_group(topic, settings).await
    }
}

#[async_trait]
impl<T: EventLog + ?Sized> EventLog for Box<T> {
    async fn ensure_topic(&self, topic: &str, spec: TopicSpec) -> Result<u32> {
        (**self).ensure_topic(topic, spec).await
    }

    async fn partition_count(&self, topic: &str) -> Result<u32> {
        (**self).partition_count(topic).await
    }

    async fn append(&self, topic: &str, records: Vec<NewRecord>) -> Result<Vec<Position>> {
        (**self).append(topic, records).await
    }

    async fn enqueue_append(&self, topic: &str, records: Vec<NewRecord>) -> Result<Delivery> {
        (**self).enqueue_append(topic, records).await
    }

    async fn end_offsets(&self, topic: &str) -> Result<Vec<u64>> {
        (**self).end_offsets(topic).await
    }

    async fn reader(&self, topic: &str, from: BTreeMap<u32, u64>) -> Result<Box<dyn LogReader>> {
        (**self).reader(topic, from).await
    }

    async fn identity(&self) -> Result<String> {
        (**self).identity().await
    }

    async fn flush(&self) -> Result<()> {
        (**self).flush().await
    }

    async fn commit_group_offsets(
        &self,
        group: &str,
        topic: &str,
        positions: &BTreeMap<u32, u64>,
    ) -> Result<GroupOffsets> {
        (**self).commit_group_offsets(group, topic, positions).await
    }

    async fn group_offsets(&self, group: &str, topic: &str) -> Result<Option<BTreeMap<u32, u64>>> {
        (**self).group_offsets(group, topic).await
    }

    async fn join_group(&self, topic: &str, settings: &GroupSettings) -> Result<Membership> {
        (**self).join_group(topic, settings).await
    }
}

/// Lets code generic over `R: LogReader` take the boxed reader that
/// [`EventLog::reader`] returns.
#[async_trait]
impl<R: LogReader + ?Sized> LogReader for Box<R> {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>> {
        (**self).next_batch(max, wait).await
    }

    fn positions(&self) -> BTreeMap<u32, u64> {
        (**self).positions()
    }
}
