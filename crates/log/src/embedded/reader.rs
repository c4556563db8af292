//! Tail-following reader over a topic's partitions.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Inner, TopicState, codec};
use crate::blocking::run_blocking;
use crate::{LogError, LogReader, Record, Result};

/// Reads assigned partitions in offset order, sharing each batch fairly
/// between the partitions that have records.
pub(crate) struct EmbeddedReader {
    inner: Arc<Inner>,
    topic: Arc<TopicState>,
    /// One per assigned partition, ascending by partition.
    cursors: Vec<Cursor>,
    /// Which cursor gets the first share of the next batch; rotating it keeps
    /// small batches from always favouring low partitions.
    round_robin: usize,
    appended: watch::Receiver<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Cursor {
    partition: u32,
    next_offset: u64,
}

/// Records to read from one partition: `count` records from `from`.
#[derive(Debug, Clone, Copy)]
struct Slice {
    cursor: usize,
    partition: u32,
    from: u64,
    count: u64,
}

impl EmbeddedReader {
    pub(crate) fn new(inner: Arc<Inner>, topic: Arc<TopicState>, from: BTreeMap<u32, u64>) -> Self {
        let appended = topic.appended.subscribe();
        let cursors = from
            .into_iter()
            .map(|(partition, next_offset)| Cursor {
                partition,
                next_offset,
            })
            .collect();
        Self {
            inner,
            topic,
            cursors,
            round_robin: 0,
            appended,
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(LogError::Closed);
        }
        Ok(())
    }

    /// Splits up to `max` records between partitions with something to read:
    /// each gets an equal share, and shares a partition cannot fill are
    /// handed to the others.
    fn plan(&mut self, max: usize) -> Vec<Slice> {
        let cursor_count = self.cursors.len();
        let mut available: Vec<(usize, u64)> = (0..cursor_count)
            .map(|step| (self.round_robin + step) % cursor_count)
            .filter_map(|index| {
                let cursor = self.cursors[index];
                let end = self.topic.partitions[cursor.partition as usize]
                    .end_offset
                    .load(Ordering::SeqCst);
                let available = end.saturating_sub(cursor.next_offset);
                (available > 0).then_some((index, available))
            })
            .collect();
        if available.is_empty() {
            return Vec::new();
        }
        self.round_robin = (self.round_robin + 1) % cursor_count;

        let mut counts = vec![0_u64; available.len()];
        let mut remaining = max as u64;
        let mut open = available.len() as u64;
        while remaining > 0 && open > 0 {
            let share = (remaining / open).max(1);
            for (slot, (_, left)) in available.iter_mut().enumerate() {
                if remaining == 0 {
                    break;
                }
                let take = share.min(*left).min(remaining);
                counts[slot] += take;
                *left -= take;
                remaining -= take;
            }
            open = available.iter().filter(|(_, left)| *left > 0).count() as u64;
        }
        available
            .iter()
            .zip(counts)
            .filter(|(_, count)| *count > 0)
            .map(|(&(cursor, _), count)| Slice {
                cursor,
                partition: self.cursors[cursor].partition,
                from: self.cursors[cursor].next_offset,
                count,
            })
            .collect()
    }

    /// Reads the planned slices on the blocking pool (STYLE rule 8), then
    /// moves the cursors past them. A cancelled or failed read leaves the
    /// reader where it was.
    async fn fetch(&mut self, slices: Vec<Slice>) -> Result<Vec<Record>> {
        let topic = Arc::clone(&self.topic);
        let (records, slices) = run_blocking(move || {
            let total: u64 = slices.iter().map(|slice| slice.count).sum();
            let mut records = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
            for slice in &slices {
                read_slice(&topic, *slice, &mut records)?;
            }
            Ok((records, slices))
        })
        .await?;
        for slice in slices {
            self.cursors[slice.cursor].next_offset = slice.from + slice.count;
        }
        Ok(records)
    }
}

/// Reads exactly `slice.count` records; any missing, extra or undecodable
/// entry is corruption, since offsets below the end offset are contiguous.
fn read_slice(topic: &TopicState, slice: Slice, out: &mut Vec<Record>) -> Result<()> {
    let tree = &topic.partitions[slice.partition as usize].tree;
    let end = slice.from + slice.count;
    let corrupt = |offset: u64, reason: String| LogError::Corrupt {
        topic: topic.name.clone(),
        partition: slice.partition,
        offset,
        reason,
    };
    let base_of = |key: &[u8], offset: u64| {
        codec::decode_offset_key(key)
            .ok_or_else(|| corrupt(offset, format!("key {key:?} is not an 8-byte offset")))
    };
    // The batch holding `from` is the last one starting at or before it.
    let first_base = match tree.range(..=codec::offset_key(slice.from)).next_back() {
        Some(entry) => base_of(&entry?.0, slice.from)?,
        None => {
            return Err(corrupt(
                slice.from,
                "no stored batch holds this offset".to_owned(),
            ));
        }
    };
    let mut expected = slice.from;
    let mut next_base = first_base;
    for entry in tree.range(codec::offset_key(first_base)..codec::offset_key(end)) {
        let (key, value) = entry?;
        let base = base_of(&key, expected)?;
        if base != next_base {
            return Err(corrupt(
                expected,
                format!("record missing: the next stored batch starts at offset {base}"),
            ));
        }
        let mut batch = codec::BatchDecoder::new(&value).map_err(|reason| corrupt(base, reason))?;
        let batch_end = base + batch.count();
        let mut offset = base;
        while offset < expected.min(batch_end) {
            batch.skip().map_err(|reason| corrupt(offset, reason))?;
            offset += 1;
        }
        while offset < batch_end.min(end) {
            let stored = batch
                .next_record()
                .map_err(|reason| corrupt(offset, reason))?;
            out.push(Record {
                topic: topic.name.clone(),
                partition: slice.partition,
                offset,
                key: stored.key,
                value: stored.value,
                headers: stored.headers,
                timestamp_ms: batch.timestamp_ms(),
            });
            offset += 1;
        }
        if offset == batch_end {
            batch
                .finish()
                .map_err(|reason| corrupt(batch_end - 1, reason))?;
        }
        expected = expected.max(offset);
        next_base = batch_end;
        if expected >= end {
            break;
        }
    }
    if expected != end {
        return Err(corrupt(
            expected,
            format!("record missing below the end offset {end}"),
        ));
    }
    Ok(())
}

impl fmt::Debug for EmbeddedReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedReader")
            .field("topic", &self.topic.name)
            .field("positions", &self.positions())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl LogReader for EmbeddedReader {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>> {
        self.check_open()?;
        if max == 0 {
            return Ok(Vec::new());
        }
        // `None` (a wait too long to represent) means wait until something comes.
        let deadline = Instant::now().checked_add(wait);
        loop {
            // Marking the generation seen *before* looking at end offsets
            // means an append landing after the look still wakes us.
            self.appended.borrow_and_update();
            let slices = self.plan(max);
            if !slices.is_empty() {
                return self.fetch(slices).await;
            }
            let changed = match deadline {
                Some(deadline) => {
                    match tokio::time::timeout_at(deadline, self.appended.changed()).await {
                        Ok(changed) => changed,
                        Err(_elapsed) => return Ok(Vec::new()),
                    }
                }
                None => self.appended.changed().await,
            };
            // The sender lives in the topic state this reader holds, so it
            // cannot be gone; treat it as closed rather than panic.
            changed.map_err(|_| LogError::Closed)?;
            self.check_open()?;
        }
    }

    fn positions(&self) -> BTreeMap<u32, u64> {
        self.cursors
            .iter()
            .map(|cursor| (cursor.partition, cursor.next_offset))
            .collect()
    }
}
