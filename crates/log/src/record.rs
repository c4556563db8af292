//! The values that travel through an [`EventLog`](crate::EventLog): what a
//! producer hands in, what a reader gets back, and where it lives.

use std::fmt;
use std::str::FromStr;

use crate::{LogError, Result};

/// Where a record lives in a topic: the pair Kafka uses to identify it.
///
/// Ordered by partition then offset, so a sorted list of positions groups
/// each partition's records in log order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    pub partition: u32,
    pub offset: u64,
}

impl Position {
    pub const fn new(partition: u32, offset: u64) -> Self {
        Self { partition, offset }
    }

    /// The offset a reader resumes from once this record has been applied.
    pub const fn next_offset(self) -> u64 {
        self.offset.saturating_add(1)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}@{}", self.partition, self.offset)
    }
}

/// Parses the `Display` form `p3@120`, so positions pasted from logs or CLI
/// output can be fed back to tools.
impl FromStr for Position {
    type Err = LogError;

    fn from_str(text: &str) -> Result<Self> {
        let invalid = |reason: String| LogError::InvalidPosition {
            position: text.to_owned(),
            reason,
        };
        let rest = text
            .strip_prefix('p')
            .ok_or_else(|| invalid("it does not start with 'p'".to_owned()))?;
        let (partition, offset) = rest
            .split_once('@')
            .ok_or_else(|| invalid("it has no '@' between partition and offset".to_owned()))?;
        let partition = partition
            .parse()
            .map_err(|_| invalid(format!("partition {partition:?} is not a u32")))?;
        let offset = offset
            .parse()
            .map_err(|_| invalid(format!("offset {offset:?} is not a u64")))?;
        Ok(Self { partition, offset })
    }
}

/// A Kafka record header. Headers carry cross-cutting metadata (W3C
/// `traceparent`, content type, schema version) so the value stays the pure
/// event payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Vec<u8>,
}

impl Header {
    pub fn new(name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A record to append; the log assigns its offset and timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// Decides the partition (and so the ordering domain) unless `partition`
    /// overrides it; in Baton it is the patient key.
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: Vec<Header>,
    /// None = partition by murmur2(key) like Kafka's default partitioner
    pub partition: Option<u32>,
}

impl NewRecord {
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            headers: Vec::new(),
            partition: None,
        }
    }

    /// Adds a header; several headers may share a name, as in Kafka.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(Header::new(name, value));
        self
    }

    /// Pins the record to a partition instead of hashing its key, e.g. to
    /// dead-letter a record next to where it was read.
    #[must_use]
    pub fn to_partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: Vec<Header>,
    /// append time, ms since Unix epoch
    pub timestamp_ms: i64,
}

impl Record {
    pub fn position(&self) -> Position {
        Position::new(self.partition, self.offset)
    }

    /// The value of the *last* header with this name, matching Kafka's
    /// `Headers::lastHeader`, so a re-driven record can override a header by
    /// appending a new one.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .rev()
            .find(|header| header.name == name)
            .map(|header| header.value.as_slice())
    }
}

/// How a topic is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Upper bound on parallelism: one partition is read in order by one
    /// reader, so this caps how many projectors can share the load.
    pub partitions: u32,
    /// Kafka cleanup.policy=compact (latest record per key kept); the embedded backend may keep everything
    pub compacted: bool,
}

impl TopicSpec {
    /// An append-only topic that keeps every record (event history).
    pub const fn events(partitions: u32) -> Self {
        Self {
            partitions,
            compacted: false,
        }
    }

    /// A compacted topic where only the latest record per key matters
    /// (current state snapshots).
    pub const fn compacted(partitions: u32) -> Self {
        Self {
            partitions,
            compacted: true,
        }
    }

    /// Rejects what no backend can create, so every backend reports it the
    /// same way.
    pub fn validate(&self, topic: &str) -> Result<()> {
        if self.partitions == 0 {
            return Err(LogError::InvalidTopicSpec {
                topic: topic.to_owned(),
                reason: "partitions must be at least 1, got 0".to_owned(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_displays_and_parses_back() {
        let position = Position::new(3, 120);
        assert_eq!(position.to_string(), "p3@120");
        assert_eq!("p3@120".parse::<Position>().unwrap(), position);
        assert!("3@120".parse::<Position>().is_err());
        assert!("p3".parse::<Position>().is_err());
        assert!("p-1@2".parse::<Position>().is_err());
        assert!("p1@x".parse::<Position>().is_err());
    }

    #[test]
    fn positions_sort_by_partition_then_offset() {
        let mut positions = vec![
            Position::new(1, 0),
            Position::new(0, 9),
            Position::new(0, 2),
        ];
        positions.sort();
        assert_eq!(
            positions,
            vec![
                Position::new(0, 2),
                Position::new(0, 9),
                Position::new(1, 0)
            ]
        );
    }

    #[test]
    fn header_returns_the_last_value_for_a_name() {
        let record = Record {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            key: vec![],
            value: vec![],
            headers: vec![
                Header::new("traceparent", "old"),
                Header::new("other", "x"),
                Header::new("traceparent", "new"),
            ],
            timestamp_ms: 0,
        };
        assert_eq!(record.header("traceparent"), Some(&b"new"[..]));
        assert_eq!(record.header("missing"), None);
    }

    #[test]
    fn new_record_builders_set_fields() {
        let record = NewRecord::new("k", "v")
            .with_header("a", "1")
            .with_header("a", "2")
            .to_partition(4);
        assert_eq!(record.key, b"k");
        assert_eq!(record.value, b"v");
        assert_eq!(
            record.headers,
            vec![Header::new("a", "1"), Header::new("a", "2")]
        );
        assert_eq!(record.partition, Some(4));
    }

    #[test]
    fn zero_partitions_is_an_invalid_spec() {
        let error = TopicSpec::events(0).validate("t").unwrap_err();
        assert!(matches!(error, LogError::InvalidTopicSpec { .. }));
        assert!(TopicSpec::compacted(1).validate("t").is_ok());
    }
}
