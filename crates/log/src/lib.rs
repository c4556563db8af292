//! Baton's event log: a partitioned, keyed, append-only log with Kafka
//! semantics, behind one trait so every service runs unchanged on Kafka in
//! production and on an embedded sled database on a laptop.
//!
//! Care events are appended to [`topics::CARE_EVENTS`] keyed by patient key;
//! [`partition_for_key`] is Kafka's murmur2 partitioner, so all events of a
//! patient land in one partition, in order, whichever client produced them.
//! The projector reads partitions from offsets it keeps in its own store,
//! which is why readers take explicit positions and there are no consumer
//! groups or committed offsets here.
//!
//! # Main types
//!
//! - [`EventLog`]: create topics, append records, read end offsets, open readers;
//! - [`LogReader`]: follows assigned partitions from explicit offsets, in batches;
//! - [`NewRecord`] in, [`Record`] out, located by a [`Position`] (`p3@120`);
//! - [`ConsistencyToken`]: read-your-writes across services (`v1:0=12,3=40`);
//! - [`lag()`]: how far a consumer's applied positions are behind a topic's
//!   end, in records and seconds, per partition;
//! - [`embedded::EmbeddedLog`]: the sled backend, the default of `baton up`;
//! - [`testkit`]: the contract suite every backend must pass.
//!
//! # Example
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::time::Duration;
//! use baton_log::{ConsistencyToken, EventLog, NewRecord, TopicSpec};
//! use baton_log::embedded::EmbeddedLog;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> baton_log::Result<()> {
//! let log = EmbeddedLog::temporary()?;
//! let partitions = log.ensure_topic("baton.care-events.v1", TopicSpec::events(4)).await?;
//!
//! let positions = log
//!     .append(
//!         "baton.care-events.v1",
//!         vec![NewRecord::new("9434765919", "admitted").with_header("traceparent", "00-…-01")],
//!     )
//!     .await?;
//! let token = ConsistencyToken::from_positions(&positions);
//!
//! let from: BTreeMap<u32, u64> = (0..partitions).map(|partition| (partition, 0)).collect();
//! let mut reader = log.reader("baton.care-events.v1", from).await?;
//! let records = reader.next_batch(100, Duration::from_secs(1)).await?;
//! assert_eq!(records[0].value, b"admitted");
//! assert!(token.is_satisfied_by(&reader.positions()));
//! # Ok(())
//! # }
//! ```

mod blocking;
pub mod embedded;
mod error;
mod event_log;
pub mod group;
pub mod kafka;
pub mod lag;
mod partitioner;
mod record;
pub mod testkit;
mod token;
pub mod topics;

pub use error::{KafkaFailure, LogError, Result};
pub use event_log::{Delivery, EventLog, GroupOffsets, LogReader};
pub use lag::{PartitionLag, lag};
pub use partitioner::{murmur2, partition_for_key};
pub use record::{Header, NewRecord, Position, Record, TopicSpec};
pub use token::ConsistencyToken;
