//! Committing a batch to the store, then publishing it to the changelog.
//!
//! Batches are committed one at a time, in the order they were folded,
//! and published in that same order. A batch's states are published only
//! once its commit is durable (flushed), which is what keeps the changelog
//! from ever going backwards after a crash (see the crate documentation).
//!
//! The two halves overlap: while one batch is flushed and appended to the
//! changelog, the next is committed and the one after it folded, and a
//! batch's records are handed to the log as soon as the batch before has
//! been handed over ([`EventLog::enqueue_append`]: the log keeps them in
//! that order), not once it is written, so several batches can be on their
//! way to the broker at once. At most
//! [`MAX_PUBLISHING`] batches wait for their publication, and each commit
//! names the keys of those still publishing
//! ([`Commit::earlier_unpublished`]), so a crash republishes all of them on
//! start.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use baton_log::group::Ownership;
use baton_log::topics::Topics;
use baton_log::{EventLog, NewRecord, partition_for_key};
use baton_proto::state::v1::PatientCareState;
use baton_store::changelog::{
    APPLIED_IDS_HEADER, GENERATION_HEADER, encode_applied_ids, progress_record_of,
    state_record_encoded,
};
use baton_store::{Commit, Store};
use baton_telemetry::TraceParent;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{ProjectorError, Result};

/// At most this many committed batches wait for their publication before
/// the next commit starts: enough to keep the flush and the broker's round
/// trip off the fold's path, few enough that the unpublished marker each
/// commit writes stays small.
pub(crate) const MAX_PUBLISHING: usize = 2;

/// Commits batches and publishes them, in order.
#[derive(Debug)]
pub(crate) struct Publisher {
    shared: Arc<Shared>,
    /// Resolves once the newest batch's commit has landed in the store;
    /// dropped unresolved when it failed.
    committing: Option<oneshot::Receiver<()>>,
    /// Batches started and not yet awaited, oldest first.
    in_flight: VecDeque<InFlight>,
}

#[derive(Debug)]
struct InFlight {
    /// The batch's patient keys, when it publishes.
    keys: Vec<String>,
    /// Resolves once the batch's records are enqueued in the log, after
    /// those of the batch before (or, when not publishing, once it is
    /// committed); dropped unresolved when it failed.
    enqueued: Option<oneshot::Receiver<()>>,
    task: JoinHandle<Result<()>>,
}

/// What a batch's task signals, and waits for.
struct Signals {
    committed: oneshot::Sender<()>,
    /// The previous batch's records being enqueued: this batch's are
    /// enqueued after them, so they land after them.
    previous: Option<oneshot::Receiver<()>>,
    enqueued: oneshot::Sender<()>,
}

#[derive(Debug)]
struct Shared {
    log: Arc<dyn EventLog>,
    store: Store,
    events_topic: String,
    state_topic: String,
    /// Of the events topic: a state is published to the partition number
    /// its patient's events are in.
    events_partitions: u32,
    enabled: bool,
    published: AtomicU64,
    /// In a group: the partitions this projector may commit and publish
    /// for, asked at each commit and again before each publication.
    /// `None` on its own: every partition is its.
    ownership: Option<Arc<Ownership>>,
}

impl Publisher {
    pub(crate) fn new(
        log: Arc<dyn EventLog>,
        store: Store,
        topics: &Topics,
        events_partitions: u32,
        enabled: bool,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                log,
                store,
                events_topic: topics.events.clone(),
                state_topic: topics.state.clone(),
                events_partitions,
                enabled,
                published: AtomicU64::new(0),
                ownership: None,
            }),
            committing: None,
            in_flight: VecDeque::new(),
        }
    }

    /// Commits and publishes from now on only for the partitions
    /// `ownership` holds. Call it with no batch in flight.
    pub(crate) fn share(&mut self, ownership: Arc<Ownership>) {
        let shared = Arc::get_mut(&mut self.shared).expect("no batch in flight");
        shared.ownership = Some(ownership);
    }

    /// States published since start.
    pub(crate) fn published(&self) -> u64 {
        self.shared.published.load(Ordering::Relaxed)
    }

    /// Commits `commit` and, if publishing, publishes it after the batches
    /// before it, in the background. Waits first for the previous commit
    /// to land, and for the oldest publication when [`MAX_PUBLISHING`] are
    /// under way; a failure of either is returned here.
    pub(crate) async fn start(
        &mut self,
        mut commit: Commit,
        traces: HashMap<String, TraceParent>,
        ledgers: HashMap<String, Vec<u8>>,
    ) -> Result<()> {
        self.committed().await?;
        while let Some(oldest) = self.in_flight.front() {
            if oldest.task.is_finished() || self.in_flight.len() >= MAX_PUBLISHING {
                self.await_oldest().await?;
            } else {
                break;
            }
        }
        let publishes = self.shared.enabled && commit.publish;
        let keys = if publishes {
            commit.earlier_unpublished = self
                .in_flight
                .iter()
                .flat_map(|batch| batch.keys.iter().cloned())
                .collect();
            commit
                .states
                .iter()
                .map(|state| state.patient_key.clone())
                .collect()
        } else {
            Vec::new()
        };
        let (committed, committing) = oneshot::channel();
        let (enqueued, enqueued_rx) = oneshot::channel();
        let previous = self
            .in_flight
            .back_mut()
            .and_then(|batch| batch.enqueued.take());
        let signals = Signals {
            committed,
            previous,
            enqueued,
        };
        let shared = Arc::clone(&self.shared);
        let task = tokio::spawn(async move {
            shared
                .commit_and_publish(commit, traces, ledgers, signals)
                .await
        });
        self.committing = Some(committing);
        self.in_flight.push_back(InFlight {
            keys,
            enqueued: Some(enqueued_rx),
            task,
        });
        Ok(())
    }

    /// Waits until the newest batch's commit has landed in the store (its
    /// publication may still be under way).
    pub(crate) async fn committed(&mut self) -> Result<()> {
        let Some(committing) = self.committing.take() else {
            return Ok(());
        };
        if committing.await.is_err() {
            // The commit failed: its task, or one before it, says why.
            self.finish().await?;
            return Err(ProjectorError::Invalid(
                "a commit stopped without landing or failing".into(),
            ));
        }
        Ok(())
    }

    /// Waits for every batch started to be committed and published.
    pub(crate) async fn finish(&mut self) -> Result<()> {
        self.committing = None;
        while !self.in_flight.is_empty() {
            self.await_oldest().await?;
        }
        Ok(())
    }

    /// Waits for the oldest batch in flight. On failure every later batch
    /// is awaited too (each fails, or stops, behind it) and the first
    /// failure is returned.
    async fn await_oldest(&mut self) -> Result<()> {
        let Some(oldest) = self.in_flight.pop_front() else {
            return Ok(());
        };
        match oldest.task.await {
            Ok(Ok(())) => Ok(()),
            failed => {
                self.committing = None;
                for later in std::mem::take(&mut self.in_flight) {
                    let _ = later.task.await;
                }
                failed?
            }
        }
    }

    /// Publishes again the states of the last commit marked to publish,
    /// with the progress of every partition: a crash may have come between
    /// that commit and its publication. Publishing a state twice is
    /// harmless; the stored states are the newest there are, so nothing
    /// goes backwards.
    pub(crate) async fn republish_unpublished(&self) -> Result<()> {
        if !self.shared.enabled {
            return Ok(());
        }
        let shared = Arc::clone(&self.shared);
        let records = tokio::task::spawn_blocking(move || -> Result<Vec<NewRecord>> {
            let mut states = Vec::new();
            for key in shared.store.unpublished()? {
                if let Some(state) = shared.store.get(&key)? {
                    states.push(Arc::new(state));
                }
            }
            let ledgers = stored_ledgers(&shared.store, &states)?;
            let positions = shared.store.applied(&shared.events_topic)?;
            Ok(shared.changelog_records(&states, None, &positions, &HashMap::new(), &ledgers))
        })
        .await??;
        let states = records.len();
        if !records.is_empty() {
            self.shared
                .log
                .append(&self.shared.state_topic, records)
                .await?;
        }
        tracing::info!(
            records = states,
            "changelog brought up to date with the store"
        );
        Ok(())
    }
}

impl Shared {
    async fn commit_and_publish(
        self: Arc<Self>,
        mut commit: Commit,
        traces: HashMap<String, TraceParent>,
        ledgers: HashMap<String, Vec<u8>>,
        signals: Signals,
    ) -> Result<()> {
        let shared = Arc::clone(&self);
        let records = tokio::task::spawn_blocking(move || -> Result<Vec<NewRecord>> {
            let started = std::time::Instant::now();
            if let Some(ownership) = &shared.ownership {
                let partitions = shared.events_partitions;
                let dropped = commit.retain_partitions(
                    |partition| ownership.owns(partition),
                    |key| partition_for_key(key.as_bytes(), partitions),
                );
                if dropped > 0 {
                    crate::metrics::record_not_owned(dropped as u64);
                    tracing::warn!(
                        states = dropped,
                        "not committing states of partitions this projector no longer owns"
                    );
                }
            }
            shared.store.commit(&commit)?;
            crate::metrics::record_commit(started.elapsed());
            if !shared.enabled || !commit.publish {
                return Ok(Vec::new());
            }
            // The bytes the store was just given, not a second encoding.
            Ok(shared.changelog_records(
                &commit.states,
                Some(commit.encoded_states()),
                &commit.positions,
                &traces,
                &ledgers,
            ))
        })
        .await??;
        // Fails only when nobody waits for it any more.
        let _ = signals.committed.send(());
        if let Some(previous) = signals.previous
            && previous.await.is_err()
        {
            // The batch before failed and says why; this one goes no further.
            return Err(ProjectorError::Invalid(
                "not published: an earlier batch failed".into(),
            ));
        }
        if records.is_empty() {
            let _ = signals.enqueued.send(());
            return Ok(());
        }
        // Only what a crash cannot take back is published.
        self.store.flush_async().await?;
        let mut records = records;
        if let Some(ownership) = &self.ownership {
            // Asked again: the partition may have been lost since the commit.
            let before = records.len();
            records.retain(|record| record.partition.is_none_or(|p| ownership.owns(p)));
            let dropped = before - records.len();
            if dropped > 0 {
                crate::metrics::record_not_owned(dropped as u64);
                tracing::warn!(
                    records = dropped,
                    "not publishing for partitions this projector no longer owns"
                );
            }
        }
        let states = records.len() as u64;
        let delivery = self
            .log
            .enqueue_append(&self.state_topic, records)
            .await
            .map_err(ProjectorError::Log)?;
        let _ = signals.enqueued.send(());
        delivery.await.map_err(ProjectorError::Log)?;
        self.published.fetch_add(states, Ordering::Relaxed);
        crate::metrics::record_published(states);
        Ok(())
    }

    /// The states, each in the partition of its patient's events, then the
    /// progress of every events partition the batch moved.
    fn changelog_records(
        &self,
        states: &[Arc<PatientCareState>],
        encoded: Option<&[Vec<u8>]>,
        positions: &BTreeMap<u32, u64>,
        traces: &HashMap<String, TraceParent>,
        ledgers: &HashMap<String, Vec<u8>>,
    ) -> Vec<NewRecord> {
        changelog_records(
            &self.events_topic,
            self.events_partitions,
            self.store.generation(),
            (states, encoded),
            positions,
            Headers {
                traces,
                ledgers,
                owner: self.ownership.as_deref().map_or("", Ownership::member),
            },
        )
    }
}

/// What the changelog records of a batch carry beside the states.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Headers<'a> {
    /// The trace context of the event behind each state.
    pub(crate) traces: &'a HashMap<String, TraceParent>,
    /// Each state's applied ids ([`encode_applied_ids`]).
    pub(crate) ledgers: &'a HashMap<String, Vec<u8>>,
    /// The publishing projector's instance id, in a group.
    pub(crate) owner: &'a str,
}

/// Each state's applied ids as the store holds them, for an
/// [`APPLIED_IDS_HEADER`].
pub(crate) fn stored_ledgers(
    store: &Store,
    states: &[Arc<PatientCareState>],
) -> Result<HashMap<String, Vec<u8>>> {
    let mut ledgers = HashMap::with_capacity(states.len());
    for state in states {
        let mut ids = store.applied_ids(&state.patient_key)?;
        ids.sort_unstable();
        ids.dedup();
        ledgers.insert(state.patient_key.clone(), encode_applied_ids(&ids));
    }
    Ok(ledgers)
}

/// The changelog records of `states` of store generation `generation`
/// (with their encodings when the commit made them, else encoded here),
/// each in the partition of its patient's events, then the progress of
/// each events partition in `positions`.
pub(crate) fn changelog_records(
    events_topic: &str,
    events_partitions: u32,
    generation: u64,
    (states, encoded): (&[Arc<PatientCareState>], Option<&[Vec<u8>]>),
    positions: &BTreeMap<u32, u64>,
    headers: Headers<'_>,
) -> Vec<NewRecord> {
    let Headers {
        traces,
        ledgers,
        owner,
    } = headers;
    let mut records = Vec::with_capacity(states.len() + positions.len());
    let generation = (generation > 0).then(|| generation.to_string());
    for (index, state) in states.iter().enumerate() {
        let partition = partition_for_key(state.patient_key.as_bytes(), events_partitions);
        let trace = traces
            .get(&state.patient_key)
            .map(TraceParent::to_header_bytes);
        let bytes = match encoded.and_then(|encoded| encoded.get(index)) {
            Some(bytes) => bytes.clone(),
            None => prost::Message::encode_to_vec(state.as_ref()),
        };
        let mut record = state_record_encoded(
            &state.patient_key,
            bytes,
            partition,
            trace.as_ref().map(|t| &t[..]),
        );
        if let Some(generation) = &generation {
            record = record.with_header(GENERATION_HEADER, generation.as_bytes());
        }
        if let Some(ledger) = ledgers.get(&state.patient_key) {
            record = record.with_header(APPLIED_IDS_HEADER, ledger.as_slice());
        }
        records.push(record);
    }
    for (&partition, &next_offset) in positions {
        records.push(progress_record_of(
            events_topic,
            partition,
            next_offset,
            owner,
        ));
    }
    records
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use async_trait::async_trait;
    use baton_log::embedded::EmbeddedLog;
    use baton_log::testkit::{BeforeAppend, InterceptedLog};
    use baton_log::{LogError, Record};
    use baton_store::changelog::ChangelogEntry;
    use tokio::sync::Semaphore;

    use super::*;

    /// Appends to the changelog wait for a permit of `gate`, and fail once
    /// let through while `failing` is set.
    #[derive(Debug)]
    struct Gate {
        state_topic: String,
        gate: Semaphore,
        failing: AtomicBool,
    }

    #[async_trait]
    impl BeforeAppend for Gate {
        async fn before_append(&self, topic: &str) -> baton_log::Result<()> {
            if topic == self.state_topic {
                self.gate.acquire().await.expect("gate open").forget();
                if self.failing.load(Ordering::SeqCst) {
                    return Err(LogError::Closed);
                }
            }
            Ok(())
        }
    }

    /// The embedded log, its changelog appends held at a [`Gate`].
    type GatedLog = InterceptedLog<EmbeddedLog, Gate>;

    async fn gated() -> (Arc<GatedLog>, Store, Publisher, Topics) {
        let topics = Topics {
            partitions: 2,
            ..Topics::default()
        };
        let log = Arc::new(GatedLog {
            inner: EmbeddedLog::temporary().unwrap(),
            before: Gate {
                state_topic: topics.state.clone(),
                gate: Semaphore::new(0),
                failing: AtomicBool::new(false),
            },
        });
        let partitions = topics.ensure(&*log).await.unwrap();
        let store = Store::temporary().unwrap();
        let publisher = Publisher::new(log.clone(), store.clone(), &topics, partitions, true);
        (log, store, publisher, topics)
    }

    fn state(key: &str, version: u64) -> PatientCareState {
        PatientCareState {
            patient_key: key.into(),
            version,
            ..Default::default()
        }
    }

    fn commit(topics: &Topics, states: &[(&str, u64)], next_offset: u64) -> Commit {
        Commit::new(topics.events.clone())
            .with_states(states.iter().map(|&(key, version)| state(key, version)))
            .with_position(0, next_offset)
            .to_publish()
    }

    async fn changelog_states(log: &GatedLog, topics: &Topics) -> Vec<(String, u64)> {
        let partitions = log.partition_count(&topics.state).await.unwrap();
        let from = (0..partitions).map(|partition| (partition, 0)).collect();
        let mut reader = log.reader(&topics.state, from).await.unwrap();
        let mut records: Vec<Record> = Vec::new();
        loop {
            let batch = reader
                .next_batch(1000, Duration::from_millis(50))
                .await
                .unwrap();
            if batch.is_empty() {
                break;
            }
            records.extend(batch);
        }
        records.sort_by_key(|record| (record.partition, record.offset));
        records
            .iter()
            .filter_map(|record| match ChangelogEntry::decode(record).unwrap() {
                ChangelogEntry::State(state) => Some((state.patient_key, state.version)),
                ChangelogEntry::Progress(_) => None,
            })
            .collect()
    }

    /// The next batch is committed while the one before waits for the
    /// broker; the store remembers both as unpublished meanwhile, and the
    /// changelog gets them in commit order.
    #[tokio::test]
    async fn a_batch_commits_while_the_one_before_is_published_and_both_publish_in_order() {
        let (log, store, mut publisher, topics) = gated().await;
        publisher
            .start(
                commit(&topics, &[("A", 1)], 1),
                HashMap::new(),
                HashMap::new(),
            )
            .await
            .unwrap();
        let second = commit(&topics, &[("B", 1), ("A", 2)], 3);
        tokio::time::timeout(Duration::from_secs(10), async {
            publisher
                .start(second, HashMap::new(), HashMap::new())
                .await
                .unwrap();
            publisher.committed().await.unwrap();
        })
        .await
        .expect("the second commit does not wait for the first publication");
        assert_eq!(store.get("A").unwrap().unwrap().version, 2);
        assert_eq!(
            store.unpublished().unwrap(),
            vec!["A", "B"],
            "a crash now republishes both batches"
        );
        assert!(changelog_states(&log, &topics).await.is_empty());

        log.before.gate.add_permits(2);
        publisher.finish().await.unwrap();
        let published = changelog_states(&log, &topics).await;
        let of_a: Vec<u64> = published
            .iter()
            .filter(|(key, _)| key == "A")
            .map(|&(_, version)| version)
            .collect();
        assert_eq!(of_a, vec![1, 2], "never backwards");
        assert!(published.contains(&("B".to_owned(), 1)));
    }

    /// In a group, a partition this projector does not own is neither
    /// committed nor published; the one it owns is, with the owner named
    /// in its progress record.
    #[tokio::test]
    async fn nothing_is_committed_or_published_for_a_partition_not_owned() {
        let (log, store, mut publisher, topics) = gated().await;
        let key_in = |partition: u32| {
            (0..)
                .map(|n| format!("patient-{n}"))
                .find(|key| partition_for_key(key.as_bytes(), 2) == partition)
                .unwrap()
        };
        let (mine, theirs) = (key_in(0), key_in(1));
        let ownership = Arc::new(Ownership::new("projector-0"));
        ownership.grant(&[0].into());
        publisher.share(Arc::clone(&ownership));
        let commit = Commit::new(topics.events.clone())
            .with_states([state(&mine, 1), state(&theirs, 1)])
            .with_position(0, 4)
            .with_position(1, 9)
            .to_publish();
        log.before.gate.add_permits(1);
        publisher
            .start(commit, HashMap::new(), HashMap::new())
            .await
            .unwrap();
        publisher.finish().await.unwrap();
        assert!(store.get(&mine).unwrap().is_some());
        assert!(store.get(&theirs).unwrap().is_none(), "not committed");
        assert_eq!(
            store.applied(&topics.events).unwrap(),
            BTreeMap::from([(0, 4)]),
            "no position for the partition not owned"
        );
        assert_eq!(changelog_states(&log, &topics).await, vec![(mine, 1)]);
        let latest =
            crate::restore::latest_progress(&(log.clone() as Arc<dyn EventLog>), &topics, 0)
                .await
                .unwrap()
                .unwrap();
        assert_eq!(latest.owner, "projector-0");
    }

    /// A failed publication is returned, and nothing after it is published
    /// out of order.
    #[tokio::test]
    async fn a_failed_publication_stops_the_batches_behind_it() {
        let (log, _store, mut publisher, topics) = gated().await;
        log.before.failing.store(true, Ordering::SeqCst);
        publisher
            .start(
                commit(&topics, &[("A", 1)], 1),
                HashMap::new(),
                HashMap::new(),
            )
            .await
            .unwrap();
        publisher
            .start(
                commit(&topics, &[("A", 2)], 2),
                HashMap::new(),
                HashMap::new(),
            )
            .await
            .unwrap();
        log.before.gate.add_permits(1);
        let error = publisher.finish().await.unwrap_err();
        assert!(matches!(error, ProjectorError::Log(_)), "{error:?}");
        log.before.failing.store(false, Ordering::SeqCst);
        assert!(
            changelog_states(&log, &topics).await.is_empty(),
            "the second batch waited for the first, which failed"
        );
        publisher.finish().await.unwrap();
    }
}
