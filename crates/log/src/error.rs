//! The one error type of the crate, shared by every backend so callers can
//! match on a variant without knowing which backend they talk to.

/// Result alias used throughout `baton-log`.
pub type Result<T, E = LogError> = std::result::Result<T, E>;

/// Everything that can go wrong when talking to an event log.
///
/// Variants name the topic, partition and offset involved so an operator can
/// find the record without re-running anything.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The topic was never created with `ensure_topic`.
    #[error("unknown topic {topic:?}: create it with ensure_topic first")]
    UnknownTopic { topic: String },

    /// A partition number outside `0..partitions` was named, either in a
    /// record (`NewRecord::partition`) or in a reader's starting positions.
    #[error(
        "partition {partition} out of range for topic {topic:?}: expected 0..{partitions} (the topic has {partitions} partitions)"
    )]
    PartitionOutOfRange {
        topic: String,
        partition: u32,
        partitions: u32,
    },

    /// A reader was asked to start past the end of a partition, which would
    /// silently skip records that do not exist yet (Kafka reports this as
    /// OFFSET_OUT_OF_RANGE).
    #[error(
        "offset {offset} out of range for topic {topic:?} partition {partition}: expected at most the end offset {end_offset}"
    )]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        offset: u64,
        end_offset: u64,
    },

    /// The topic name is not one Kafka would accept, so it is refused by
    /// every backend to keep the embedded log portable.
    #[error("invalid topic name {topic:?}: {reason}")]
    InvalidTopicName { topic: String, reason: String },

    /// The topic specification cannot be honoured (e.g. zero partitions).
    #[error("invalid spec for topic {topic:?}: {reason}")]
    InvalidTopicSpec { topic: String, reason: String },

    /// A consistency token's text form could not be parsed.
    #[error(
        "invalid consistency token {token:?}: {reason}; expected \"v1:\" then comma-separated <partition>=<offset> pairs, e.g. \"v1:0=12,3=40\""
    )]
    InvalidToken { token: String, reason: String },

    /// A position's text form could not be parsed.
    #[error(
        "invalid position {position:?}: {reason}; expected p<partition>@<offset>, e.g. \"p3@120\""
    )]
    InvalidPosition { position: String, reason: String },

    /// The embedded backend's storage engine failed (disk full, IO error,
    /// lock held by another process...).
    #[error("embedded log storage failed: {0}")]
    Storage(#[from] sled::Error),

    /// Stored bytes do not decode as a record: the log was damaged on disk or
    /// written by an incompatible version.
    #[error("corrupt record in topic {topic:?} partition {partition} at offset {offset}: {reason}")]
    Corrupt {
        topic: String,
        partition: u32,
        offset: u64,
        reason: String,
    },

    /// Stored topic metadata does not decode.
    #[error("corrupt metadata for topic {topic:?}: {reason}")]
    CorruptMetadata { topic: String, reason: String },

    /// A setting of the log's configuration cannot work.
    #[error("invalid event log setting {key}: {reason}")]
    InvalidConfig { key: String, reason: String },

    /// The Kafka cluster failed or refused a request. Usually transient
    /// (a broker down, a leader moving): the caller may retry.
    #[error(transparent)]
    Kafka(Box<KafkaFailure>),

    /// A topic was created but its partitions did not all get a leader in
    /// time, so it cannot take appends yet.
    #[error(
        "topic {topic:?} is not ready after {waited_ms} ms: {reason}; check the brokers are up and retry"
    )]
    TopicNotReady {
        topic: String,
        waited_ms: u64,
        reason: String,
    },

    /// The log was closed (or its runtime is shutting down); nothing more can
    /// be appended or read through it.
    #[error("the event log is closed")]
    Closed,
}

/// A failed Kafka request, with where it was going.
#[derive(Debug, thiserror::Error)]
#[error("kafka {operation} failed{}: {source}", location(topic.as_deref(), *partition, *offset))]
pub struct KafkaFailure {
    /// What Baton was doing: `append`, `read`, `create topic`…
    pub operation: &'static str,
    pub topic: Option<String>,
    pub partition: Option<u32>,
    pub offset: Option<u64>,
    #[source]
    pub source: rdkafka::error::KafkaError,
}

impl LogError {
    pub(crate) fn kafka(
        operation: &'static str,
        topic: Option<&str>,
        partition: Option<u32>,
        offset: Option<u64>,
        source: rdkafka::error::KafkaError,
    ) -> Self {
        Self::Kafka(Box::new(KafkaFailure {
            operation,
            topic: topic.map(str::to_owned),
            partition,
            offset,
            source,
        }))
    }
}

/// ` for topic "t" partition 3 at offset 12`, naming whatever is known.
fn location(topic: Option<&str>, partition: Option<u32>, offset: Option<u64>) -> String {
    let mut text = String::new();
    if let Some(topic) = topic {
        text.push_str(&format!(" for topic {topic:?}"));
    }
    if let Some(partition) = partition {
        text.push_str(&format!(" partition {partition}"));
    }
    if let Some(offset) = offset {
        text.push_str(&format!(" at offset {offset}"));
    }
    text
}
