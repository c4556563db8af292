//! Following one log topic into a store from the positions held there:
//! what the [`Materialiser`](crate::Materialiser) (the state changelog) and
//! the [`TimelineIndexer`](crate::TimelineIndexer) (the event log) share.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use baton_log::{EventLog, LogReader, Record};
use baton_store::Store;

use crate::QueryError;

/// Records read and committed together.
pub(crate) const BATCH_MAX_RECORDS: usize = 5_000;
/// How long a read waits at the tail of the topic.
const POLL_WAIT: Duration = Duration::from_millis(50);

/// A reader of one topic that commits what it reads, with its positions,
/// into a store.
pub(crate) trait Follow: Send {
    fn log(&self) -> &Arc<dyn EventLog>;
    fn store(&self) -> &Store;
    /// The topic read.
    fn topic(&self) -> &str;
    /// The name the positions read up to are stored under.
    fn positions_topic(&self) -> &str;
    /// Commits one batch of records, with the positions after them.
    fn apply(
        &mut self,
        records: Vec<Record>,
    ) -> impl Future<Output = Result<(), QueryError>> + Send;
    /// Forgets what it keeps in memory of the store: another generation of
    /// it was swapped in.
    fn forget(&mut self) {}
}

/// A reader of every partition of the topic, from the stored positions.
async fn reader(follower: &impl Follow) -> Result<Box<dyn LogReader>, QueryError> {
    let log = follower.log();
    let partitions = log.partition_count(follower.topic()).await?;
    let applied = follower.store().applied(follower.positions_topic())?;
    let from = (0..partitions)
        .map(|partition| (partition, applied.get(&partition).copied().unwrap_or(0)))
        .collect();
    Ok(log.reader(follower.topic(), from).await?)
}

/// Reads the topic up to its end as it is when called.
pub(crate) async fn catch_up(follower: &mut impl Follow) -> Result<(), QueryError> {
    let end = follower.log().end_offsets(follower.topic()).await?;
    let mut reader = reader(follower).await?;
    let caught_up = |positions: &BTreeMap<u32, u64>| {
        end.iter().enumerate().all(|(partition, &end)| {
            positions.get(&(partition as u32)).copied().unwrap_or(0) >= end
        })
    };
    while !caught_up(&reader.positions()) {
        let records = reader.next_batch(BATCH_MAX_RECORDS, POLL_WAIT).await?;
        apply(follower, records).await?;
    }
    Ok(())
}

/// Follows the topic until `shutdown` completes, then flushes the store.
///
/// Between batches it lets a generation swap of the store happen (a replay
/// in `baton up`), then resumes from the new generation's positions.
pub(crate) async fn follow(
    follower: &mut impl Follow,
    shutdown: impl Future<Output = ()>,
) -> Result<(), QueryError> {
    let store = follower.store().clone();
    let mut permit = Some(store.writer_permit().await);
    let mut generation = store.generation();
    let mut reader = reader(follower).await?;
    tokio::pin!(shutdown);
    loop {
        if store.swap_requested() {
            drop(permit.take());
            permit = Some(tokio::select! {
                () = &mut shutdown => break,
                permit = store.writer_permit() => permit,
            });
            if store.generation() != generation {
                generation = store.generation();
                follower.forget();
                reader = self::reader(follower).await?;
                tracing::info!(
                    topic = follower.topic(),
                    generation,
                    "following on the new store generation"
                );
            }
        }
        let records = tokio::select! {
            () = &mut shutdown => break,
            records = reader.next_batch(BATCH_MAX_RECORDS, POLL_WAIT) => records?,
        };
        apply(follower, records).await?;
    }
    follower.store().flush_async().await?;
    drop(permit);
    Ok(())
}

async fn apply(follower: &mut impl Follow, records: Vec<Record>) -> Result<(), QueryError> {
    if records.is_empty() {
        return Ok(());
    }
    follower.apply(records).await
}
