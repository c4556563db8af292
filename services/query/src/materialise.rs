//! A query replica's own store, kept in step with the state changelog
//! (`baton.care-state.v1`) instead of folding the event log again.
//!
//! [`Materialiser`] reads every partition of the changelog from the
//! positions in its store and commits, in one sled batch per read batch,
//! the states it read, its changelog positions and the projector's progress
//! in the event log (the `ProjectionProgress` records), so consistency
//! tokens from `Publish` work against the replica as against the projector.
//!
//! A state never replaces a newer one: after a projector crash the
//! changelog may repeat states, and compaction may leave an older record
//! behind a newer one for a while, so each state is kept only if its
//! (generation, `version`) is above the stored one's: a replay swaps in a
//! new store generation whose versions may start again, and its states
//! carry their generation in a `baton-generation` header. A record that does not decode is
//! logged and skipped; the replica never stops on it.
//!
//! When spans are exported, each state read opens a `materialise_state`
//! span under the record's `traceparent`: the trace that began with the
//! `Publish` at ingest ends in the replica.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use baton_log::topics::Topics;
use baton_log::{EventLog, Record};
use baton_proto::state::v1::PatientCareState;
use baton_store::changelog::{self, ChangelogEntry};
use baton_store::{Commit, Store, StoreError};
use baton_telemetry::{TRACEPARENT_HEADER, TraceParent};

use crate::QueryError;
use crate::follow::{self, Follow};

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaterialiserStats {
    pub records: u64,
    /// States stored (newer than what the store had).
    pub states: u64,
    /// States skipped because the store already had them or newer.
    pub stale: u64,
    pub progress: u64,
    /// Records that did not decode, skipped.
    pub skipped: u64,
}

/// Follows the state changelog into a store.
#[derive(Debug)]
pub struct Materialiser {
    log: Arc<dyn EventLog>,
    store: Store,
    topics: Topics,
    /// The (generation, version) of every state stored, so a repeat is
    /// recognised without decoding the stored state.
    versions: HashMap<String, (u64, u64)>,
    /// Records read after the last progress record of their partition,
    /// held until the next one arrives: the store then always holds
    /// exactly the states its projection positions name, so its digest
    /// can be compared with a fold of the log at those positions.
    held: Vec<Record>,
    stats: MaterialiserStats,
}

impl Materialiser {
    /// Creates the topics if missing.
    pub async fn start(
        log: Arc<dyn EventLog>,
        store: Store,
        topics: Topics,
    ) -> Result<Self, QueryError> {
        topics.ensure(&*log).await?;
        store.bind_source(&topics.state, &log.identity().await?)?;
        Ok(Self {
            log,
            store,
            topics,
            versions: HashMap::new(),
            held: Vec::new(),
            stats: MaterialiserStats::default(),
        })
    }

    pub fn stats(&self) -> MaterialiserStats {
        self.stats
    }

    /// Reads the changelog up to its end as it is when called: a replica
    /// does this before it serves, so it never answers from a store far
    /// behind.
    pub async fn catch_up(&mut self) -> Result<MaterialiserStats, QueryError> {
        follow::catch_up(self).await?;
        tracing::info!(stats = ?self.stats, "changelog caught up");
        Ok(self.stats)
    }

    /// Follows the changelog until `shutdown` completes.
    pub async fn run(
        &mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<MaterialiserStats, QueryError> {
        follow::follow(self, shutdown).await?;
        Ok(self.stats)
    }

    async fn materialise(&mut self, read: Vec<Record>) -> Result<(), QueryError> {
        let mut records = std::mem::take(&mut self.held);
        records.extend(read);
        let (records, held) = up_to_progress(records);
        self.held = held;
        if records.is_empty() {
            return Ok(());
        }
        let store = self.store.clone();
        let topics = self.topics.clone();
        let mut versions = std::mem::take(&mut self.versions);
        let mut stats = self.stats;
        let (outcome, versions) = tokio::task::spawn_blocking(move || {
            let outcome =
                commit_batch(&store, &topics, &records, &mut versions, &mut stats).map(|()| stats);
            (outcome, versions)
        })
        .await
        .map_err(|error| QueryError::Materialise(format!("a store task failed: {error}")))?;
        self.versions = versions;
        match outcome {
            Ok(stats) => {
                self.stats = stats;
                Ok(())
            }
            Err(error) => {
                // The cached versions may name states that were not committed.
                self.versions.clear();
                Err(error.into())
            }
        }
    }
}

impl Follow for Materialiser {
    fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    fn store(&self) -> &Store {
        &self.store
    }

    fn topic(&self) -> &str {
        &self.topics.state
    }

    fn positions_topic(&self) -> &str {
        &self.topics.state
    }

    async fn apply(&mut self, records: Vec<Record>) -> Result<(), QueryError> {
        self.materialise(records).await
    }

    fn forget(&mut self) {
        self.versions.clear();
        self.held.clear();
    }
}

/// Most records held back in one partition waiting for its progress
/// record; beyond, they are committed anyway (a producer other than
/// Baton's projector may never write one).
const MOST_HELD: usize = 50_000;

/// Splits `records` (in read order) into those up to and including the
/// last progress record of their partition, and the rest, held.
fn up_to_progress(records: Vec<Record>) -> (Vec<Record>, Vec<Record>) {
    let mut last_progress: HashMap<u32, usize> = HashMap::new();
    let mut per_partition: HashMap<u32, usize> = HashMap::new();
    for (index, record) in records.iter().enumerate() {
        *per_partition.entry(record.partition).or_default() += 1;
        if record
            .key
            .starts_with(changelog::PROGRESS_KEY_PREFIX.as_bytes())
        {
            last_progress.insert(record.partition, index);
        }
    }
    let mut take = Vec::with_capacity(records.len());
    let mut held = Vec::new();
    for (index, record) in records.into_iter().enumerate() {
        let covered = last_progress
            .get(&record.partition)
            .is_some_and(|&last| index <= last);
        let too_many = per_partition[&record.partition] > MOST_HELD;
        if covered || too_many {
            take.push(record);
        } else {
            held.push(record);
        }
    }
    (take, held)
}

/// Folds one read batch into one commit: the newest state per patient,
/// the changelog positions and the projector's progress.
fn commit_batch(
    store: &Store,
    topics: &Topics,
    records: &[Record],
    versions: &mut HashMap<String, (u64, u64)>,
    stats: &mut MaterialiserStats,
) -> Result<(), StoreError> {
    let mut commit = Commit::new(topics.state.clone());
    let mut states: HashMap<String, PatientCareState> = HashMap::new();
    let exporting = baton_telemetry::is_exporting();
    for record in records {
        stats.records += 1;
        commit.positions.insert(record.partition, record.offset + 1);
        // The trace of the event behind the state ends here, when someone
        // collects spans.
        let _span = exporting.then(|| {
            let span = tracing::info_span!(
                "materialise_state",
                partition = record.partition,
                offset = record.offset
            );
            if let Some(parent) = record
                .header(TRACEPARENT_HEADER)
                .and_then(|header| TraceParent::parse(header).ok())
            {
                baton_telemetry::set_parent(&span, &parent);
            }
            span.entered()
        });
        match ChangelogEntry::decode(record) {
            Ok(ChangelogEntry::State(state)) => {
                let generation = changelog::generation_of(record);
                let stored = match versions.get(&state.patient_key) {
                    Some(&stored) => Some(stored),
                    None => match store.get(&state.patient_key)? {
                        Some(stored) => {
                            Some((store.state_generation(&state.patient_key)?, stored.version))
                        }
                        None => None,
                    },
                };
                // A replay's generation may restart versions: a state of a
                // newer generation replaces any of an older one.
                if stored.is_some_and(|stored| stored >= (generation, state.version)) {
                    stats.stale += 1;
                    continue;
                }
                stats.states += 1;
                versions.insert(state.patient_key.clone(), (generation, state.version));
                if generation > 0 {
                    commit
                        .state_generations
                        .insert(state.patient_key.clone(), generation);
                }
                states.insert(state.patient_key.clone(), *state);
            }
            Ok(ChangelogEntry::Progress(progress)) => {
                stats.progress += 1;
                if progress.events_topic == topics.events {
                    let next = commit
                        .upstream
                        .entry(progress.events_topic)
                        .or_default()
                        .entry(progress.partition)
                        .or_default();
                    *next = (*next).max(progress.next_offset);
                }
            }
            Err(reason) => {
                stats.skipped += 1;
                tracing::warn!(
                    topic = %record.topic,
                    partition = record.partition,
                    offset = record.offset,
                    %reason,
                    "changelog record skipped"
                );
            }
        }
    }
    commit.states = states.into_values().map(Arc::new).collect();
    store.commit(&commit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: u32, offset: u64, key: &str) -> Record {
        Record {
            topic: "baton.care-state.v1".into(),
            partition,
            offset,
            key: key.as_bytes().to_vec(),
            value: Vec::new(),
            headers: Vec::new(),
            timestamp_ms: 0,
        }
    }

    #[test]
    fn states_wait_for_the_progress_record_of_their_partition() {
        let progress = |partition| format!("progress/baton.care-events.v1/{partition}");
        let records = vec![
            record(0, 0, "A"),
            record(1, 0, "B"),
            record(0, 1, &progress(0)),
            record(0, 2, "C"),
            record(1, 1, "D"),
        ];
        let (taken, held) = up_to_progress(records);
        let at = |records: &[Record]| {
            records
                .iter()
                .map(|r| (r.partition, r.offset))
                .collect::<Vec<_>>()
        };
        assert_eq!(at(&taken), vec![(0, 0), (0, 1)]);
        assert_eq!(at(&held), vec![(1, 0), (0, 2), (1, 1)]);
    }
}
