//! Committing a batch to the store, then publishing it to the changelog.
//!
//! At most one batch is in flight, so commits land, and states are
//! published, in the order the batches were folded; the projector folds the
//! next batch meanwhile. A batch's states are published only once its
//! commit is durable (flushed), which is what keeps the changelog from ever
//! going backwards after a crash (see the crate documentation).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use baton_log::topics::Topics;
use baton_log::{EventLog, NewRecord, partition_for_key};
use baton_proto::state::v1::PatientCareState;
use baton_store::changelog::{GENERATION_HEADER, progress_record, state_record_encoded};
use baton_store::{Commit, Store};
use baton_telemetry::TraceParent;
use tokio::task::JoinHandle;

use crate::{ProjectorError, Result};

/// Commits batches and publishes them, one at a time.
#[derive(Debug)]
pub(crate) struct Publisher {
    shared: Arc<Shared>,
    in_flight: Option<JoinHandle<Result<()>>>,
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
            }),
            in_flight: None,
        }
    }

    /// States published since start.
    pub(crate) fn published(&self) -> u64 {
        self.shared.published.load(Ordering::Relaxed)
    }

    /// Commits `commit` and, if publishing, publishes it, in the
    /// background. Call [`Publisher::finish`] first: one at a time.
    pub(crate) fn start(&mut self, commit: Commit, traces: HashMap<String, TraceParent>) {
        debug_assert!(self.in_flight.is_none(), "finish the batch in flight first");
        let shared = Arc::clone(&self.shared);
        self.in_flight = Some(tokio::spawn(async move {
            shared.commit_and_publish(commit, traces).await
        }));
    }

    /// Waits for the batch in flight, if any.
    pub(crate) async fn finish(&mut self) -> Result<()> {
        match self.in_flight.take() {
            Some(task) => task.await?,
            None => Ok(()),
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
            let positions = shared.store.applied(&shared.events_topic)?;
            Ok(shared.changelog_records(&states, None, &positions, &HashMap::new()))
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
        commit: Commit,
        traces: HashMap<String, TraceParent>,
    ) -> Result<()> {
        let shared = Arc::clone(&self);
        let records = tokio::task::spawn_blocking(move || -> Result<Vec<NewRecord>> {
            let started = std::time::Instant::now();
            shared.store.commit(&commit)?;
            crate::metrics::record_commit(started.elapsed());
            if !shared.enabled {
                return Ok(Vec::new());
            }
            // The bytes the store was just given, not a second encoding.
            Ok(shared.changelog_records(
                &commit.states,
                Some(commit.encoded_states()),
                &commit.positions,
                &traces,
            ))
        })
        .await??;
        if records.is_empty() {
            return Ok(());
        }
        // Only what a crash cannot take back is published.
        self.store.flush_async().await?;
        let states = records.len() as u64;
        self.log
            .append(&self.state_topic, records)
            .await
            .map_err(ProjectorError::Log)?;
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
    ) -> Vec<NewRecord> {
        changelog_records(
            &self.events_topic,
            self.events_partitions,
            self.store.generation(),
            (states, encoded),
            positions,
            traces,
        )
    }
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
    traces: &HashMap<String, TraceParent>,
) -> Vec<NewRecord> {
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
        records.push(record);
    }
    for (&partition, &next_offset) in positions {
        records.push(progress_record(events_topic, partition, next_offset));
    }
    records
}
