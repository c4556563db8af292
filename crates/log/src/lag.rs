//! How far a consumer of a topic is behind the topic's end, per partition:
//! in records, and in seconds by the record timestamps.
//!
//! [`lag`] is what the projector exports as metrics, what a query replica
//! exports about itself, and what operator tools print (`baton lag`). It
//! takes the consumer's *applied positions* as Baton keeps them (per
//! partition, the next offset to apply: everything below it is applied)
//! and reads the rest from the log.
//!
//! # Definition
//!
//! For each partition `p` of the topic:
//!
//! - `end_offset`: the log's end offset (high watermark) of `p`, from
//!   [`EventLog::end_offsets`];
//! - `applied`: the applied position of `p`, `0` when the consumer has none
//!   (it applied nothing there);
//! - `events`: `end_offset - applied`, `0` when caught up (or ahead, which
//!   a consumer of another log could be);
//! - `seconds`: the age of the oldest record not yet applied — `now` minus
//!   the timestamp of the record at `applied` (the first one after it when
//!   offsets have gaps), never negative; `0.0` when `events` is `0`.
//!   `None` when that record could not be read within
//!   [`TIMESTAMP_READ_TIMEOUT`] or carries no timestamp.
//!
//! A record's timestamp is when it was appended: the embedded log stamps
//! each batch; Kafka gives the producer's CreateTime (Baton's producer
//! stamps each record as it sends it) or the broker's LogAppendTime. Time
//! is the caller's `now`, read from its injected clock.
//!
//! # Cost
//!
//! One `end_offsets` call, and for partitions that lag, one reader opened at
//! the applied positions to read one record each (on Kafka a short-lived
//! consumer): meant for every few seconds, not for every event.
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::time::{Duration, UNIX_EPOCH};
//! use baton_log::{EventLog, NewRecord, TopicSpec, lag};
//! use baton_log::embedded::EmbeddedLog;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> baton_log::Result<()> {
//! let log = EmbeddedLog::temporary()?;
//! log.ensure_topic("events", TopicSpec::events(2)).await?;
//! let written = log
//!     .append("events", vec![NewRecord::new("a", "1").to_partition(0), NewRecord::new("b", "2").to_partition(0)])
//!     .await?;
//! let applied = BTreeMap::from([(0, 1)]);
//! let now = std::time::SystemTime::now() + Duration::from_secs(60);
//! let lags = lag::lag(&log, "events", &applied, now).await?;
//! assert_eq!((lags[0].end_offset, lags[0].applied, lags[0].events), (2, 1, 1));
//! assert!(lags[0].seconds.unwrap() >= 60.0);
//! assert_eq!((lags[1].events, lags[1].seconds), (0, Some(0.0)));
//! # drop(written);
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{EventLog, Result};

/// Longest [`lag`] waits for the oldest unapplied record of each lagging
/// partition before it reports its `seconds` as unknown.
pub const TIMESTAMP_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Records asked for per read while looking for each partition's oldest
/// unapplied record.
const READ_BATCH: usize = 256;

/// One partition's lag; see the [module documentation](self) for the
/// definition of each figure.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionLag {
    pub partition: u32,
    /// The log's end offset: the next offset to be written.
    pub end_offset: u64,
    /// The consumer's next offset to apply.
    pub applied: u64,
    /// Records written but not yet applied.
    pub events: u64,
    /// Age in seconds of the oldest record not yet applied; `0.0` when
    /// caught up, `None` when it could not be read.
    pub seconds: Option<f64>,
}

impl PartitionLag {
    /// Whether the consumer has applied everything written to the
    /// partition.
    pub fn is_caught_up(&self) -> bool {
        self.events == 0
    }
}

/// The lag of every partition of `topic` behind its end, for a consumer
/// that has applied `applied` (partition → next offset to apply), as of
/// `now`. In partition order, one entry per partition of the topic.
///
/// Fails only when the end offsets cannot be read; a record timestamp that
/// cannot be read leaves that partition's `seconds` at `None`.
pub async fn lag(
    log: &dyn EventLog,
    topic: &str,
    applied: &BTreeMap<u32, u64>,
    now: SystemTime,
) -> Result<Vec<PartitionLag>> {
    let ends = log.end_offsets(topic).await?;
    let mut lags: Vec<PartitionLag> = ends
        .iter()
        .enumerate()
        .map(|(partition, &end_offset)| {
            let partition = partition as u32;
            let applied = applied.get(&partition).copied().unwrap_or(0);
            let events = end_offset.saturating_sub(applied);
            PartitionLag {
                partition,
                end_offset,
                applied,
                events,
                seconds: (events == 0).then_some(0.0),
            }
        })
        .collect();
    let lagging: BTreeMap<u32, u64> = lags
        .iter()
        .filter(|lag| !lag.is_caught_up())
        .map(|lag| (lag.partition, lag.applied))
        .collect();
    if lagging.is_empty() {
        return Ok(lags);
    }
    let oldest = oldest_unapplied_timestamps(log, topic, lagging).await;
    for lag in &mut lags {
        if let Some(&timestamp_ms) = oldest.get(&lag.partition) {
            lag.seconds = Some(age_seconds(timestamp_ms, now));
        }
    }
    Ok(lags)
}

/// Seconds from `timestamp_ms` (since the Unix epoch) to `now`, never
/// negative: a record stamped by a clock ahead of ours has waited no time.
fn age_seconds(timestamp_ms: i64, now: SystemTime) -> f64 {
    let now_ms = match now.duration_since(UNIX_EPOCH) {
        Ok(since) => since.as_millis() as i64,
        Err(_) => 0,
    };
    (now_ms.saturating_sub(timestamp_ms).max(0)) as f64 / 1000.0
}

/// The timestamp of the first record at or after each given offset, for
/// the partitions whose record came within [`TIMESTAMP_READ_TIMEOUT`] and
/// carries one.
async fn oldest_unapplied_timestamps(
    log: &dyn EventLog,
    topic: &str,
    from: BTreeMap<u32, u64>,
) -> BTreeMap<u32, i64> {
    let mut found = BTreeMap::new();
    let mut wanted: BTreeSet<u32> = from.keys().copied().collect();
    let mut reader = match log.reader(topic, from).await {
        Ok(reader) => reader,
        Err(error) => {
            tracing::debug!(topic, %error, "cannot read record timestamps for the lag");
            return found;
        }
    };
    let deadline = tokio::time::Instant::now() + TIMESTAMP_READ_TIMEOUT;
    while !wanted.is_empty() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            tracing::debug!(topic, partitions = ?wanted, "oldest unapplied records not read in time");
            break;
        }
        let records = match reader.next_batch(READ_BATCH, left).await {
            Ok(records) => records,
            Err(error) => {
                tracing::debug!(topic, %error, "cannot read record timestamps for the lag");
                break;
            }
        };
        for record in records {
            // The first record read of a partition is its oldest unapplied.
            if wanted.remove(&record.partition) && record.timestamp_ms > 0 {
                found.insert(record.partition, record.timestamp_ms);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_is_counted_from_the_timestamp_and_never_negative() {
        let now = UNIX_EPOCH + Duration::from_millis(10_500);
        assert_eq!(age_seconds(1_000, now), 9.5);
        assert_eq!(age_seconds(20_000, now), 0.0);
        assert_eq!(age_seconds(10_500, now), 0.0);
    }
}
