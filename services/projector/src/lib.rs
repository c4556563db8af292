//! baton-projector: folds `baton.care-events.v1` into each patient's care
//! state, exactly once, and publishes every committed state to the
//! compacted changelog `baton.care-state.v1`.
//!
//! The loop reads a batch of records from the positions held in the store,
//! folds them with [`baton_care::apply`], appends what the fold asked for
//! (merge hand-overs) and the dead letters, then commits the new states,
//! their cohort index entries **and the next positions** in one sled batch.
//! A crash at any point resumes from the last committed positions: records
//! after them are read again, and anything they had appended is appended
//! again with the same event id, which the fold ignores as a duplicate.
//!
//! Once a commit is durable, its states are published to the changelog,
//! followed by one progress record per events partition it moved (see
//! [`baton_store::changelog`]). Publishing only what is durable means the
//! changelog never goes backwards: after a crash the store holds at least
//! what was published, the commit whose publication may have been cut
//! short is published again on start ([`Store::unpublished`]), and replayed
//! events only republish the states they produce. A consumer may see a
//! state twice, never an older one after a newer.
//!
//! A record that cannot be decoded, validated or applied goes to
//! `baton.dead-letters.v1` with its reason and source position in headers;
//! the partition keeps flowing.
//!
//! # Layout
//! - `lib.rs`: [`ProjectorConfig`], [`Projector`] and its run loop.
//! - `batch.rs`: folding one batch, without IO.
//! - `publish.rs`: commit, then publish to the changelog.
//! - `metrics.rs`: the projector's Prometheus metrics, and the
//!   [monitor](metrics::spawn_monitor) beside the loop: lag, store size,
//!   the monitoring consumer group, readiness.

mod batch;
pub mod metrics;
mod publish;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_log::topics::Topics;
use baton_log::{EventLog, LogError, LogReader, NewRecord};
use baton_proto::state::v1::PatientCareState;
use baton_store::{Commit, Store, StoreError};
use baton_telemetry::metrics::MetricsListen;
use serde::{Deserialize, Serialize};

pub use batch::dead_letter_headers;
use batch::{BatchOutcome, StateSource, fold_batch};
use publish::Publisher;

/// Settings of the projector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProjectorConfig {
    /// Most records folded and committed together: larger batches amortise
    /// the sled commit, smaller ones make each event visible sooner.
    pub batch_max_records: usize,
    /// How long a read waits at the tail of the log for new records.
    pub poll_wait_ms: u64,
    /// States kept decoded in memory between batches; beyond this the cache
    /// is emptied (every state in it is already committed).
    pub state_cache_entries: usize,
    /// Publish every committed state to the changelog topic, for query
    /// replicas and other consumers. Off for a rebuild that only fills a
    /// store, and for the embedded backbone, whose one query service reads
    /// the projector's store directly.
    pub publish_states: bool,
    /// sled's page cache of the projection store, in MiB: memory stays
    /// bounded by it however large the store grows.
    pub store_cache_mib: u64,
    /// Where `/metrics`, `/live` and `/ready` are served, or `"off"`
    /// (`baton-projector` only: `baton up` serves `[up] metrics_listen`).
    pub metrics_listen: MetricsListen,
    /// Kafka consumer group the applied positions are committed to, for
    /// monitoring only (`kafka-consumer-groups --describe`, Burrow): never
    /// read back. Empty commits to none.
    pub consumer_group: String,
    /// How often the lag and store metrics are measured and the consumer
    /// group committed.
    pub monitor_interval_ms: u64,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            batch_max_records: 10_000,
            poll_wait_ms: 50,
            state_cache_entries: 200_000,
            publish_states: true,
            store_cache_mib: 256,
            metrics_listen: MetricsListen::loopback(metrics::DEFAULT_METRICS_PORT),
            consumer_group: "baton-projector".to_owned(),
            monitor_interval_ms: 5_000,
        }
    }
}

impl ProjectorConfig {
    /// How to open the projection store.
    pub fn store(&self) -> baton_store::StoreConfig {
        baton_store::StoreConfig {
            cache_capacity_bytes: self.store_cache_mib * 1024 * 1024,
            ..baton_store::StoreConfig::default()
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.batch_max_records == 0 {
            return Err("batch_max_records: expected at least 1".into());
        }
        if self.store_cache_mib == 0 {
            return Err("store_cache_mib: expected at least 1 (MiB of page cache)".into());
        }
        if self.monitor_interval_ms < 100 {
            return Err(format!(
                "monitor_interval_ms: {} is too often: expected at least 100 (milliseconds)",
                self.monitor_interval_ms
            ));
        }
        Ok(())
    }
}

/// Why the projector stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error("invalid projector configuration: {0}")]
    Config(String),
    #[error("event log: {0}")]
    Log(#[from] LogError),
    #[error("projection store: {0}")]
    Store(#[from] StoreError),
    #[error("a blocking store task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

pub type Result<T, E = ProjectorError> = std::result::Result<T, E>;

/// Counters since start, for logs and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProjectorStats {
    pub records: u64,
    pub applied: u64,
    pub duplicates: u64,
    pub dead_letters: u64,
    pub batches: u64,
    /// States published to the changelog.
    pub published: u64,
    /// Time spent folding (decode, validate, apply), and waiting for the
    /// store, so a slow projection says which half is slow.
    pub fold_time: Duration,
    /// Time the fold waited for the previous batch's commit (and
    /// publication) to land.
    pub commit_wait: Duration,
}

/// The projector over a log and a store.
#[derive(Debug)]
pub struct Projector {
    log: Arc<dyn EventLog>,
    store: Store,
    config: ProjectorConfig,
    topics: Topics,
    cache: HashMap<String, Arc<PatientCareState>>,
    /// Commits and publishes batches, one at a time and in order.
    publisher: Publisher,
    stats: ProjectorStats,
}

impl Projector {
    /// Checks the configuration, creates the topics if missing and, when
    /// publishing, publishes again the states of the last commit, whose
    /// publication a crash may have cut short.
    pub async fn start(
        log: Arc<dyn EventLog>,
        store: Store,
        config: ProjectorConfig,
        topics: Topics,
    ) -> Result<Self> {
        config.validate().map_err(ProjectorError::Config)?;
        let events_partitions = topics.ensure(&*log).await?;
        store.bind_source(&topics.events, &log.identity().await?)?;
        let publisher = Publisher::new(
            Arc::clone(&log),
            store.clone(),
            &topics,
            events_partitions,
            config.publish_states,
        );
        publisher.republish_unpublished().await?;
        Ok(Self {
            log,
            store,
            config,
            topics,
            cache: HashMap::new(),
            publisher,
            stats: ProjectorStats::default(),
        })
    }

    pub fn stats(&self) -> ProjectorStats {
        ProjectorStats {
            published: self.publisher.published(),
            ..self.stats
        }
    }

    /// Where reading resumes: the committed next offset of every partition.
    async fn resume_positions(&self) -> Result<BTreeMap<u32, u64>> {
        let partitions = self.log.partition_count(&self.topics.events).await?;
        let applied = self.store.applied(&self.topics.events)?;
        Ok((0..partitions)
            .map(|p| (p, applied.get(&p).copied().unwrap_or(0)))
            .collect())
    }

    /// Projects until `shutdown` completes; the batch in hand is finished
    /// and committed first, and the store flushed.
    pub async fn run(&mut self, shutdown: impl Future<Output = ()>) -> Result<ProjectorStats> {
        let from = self.resume_positions().await?;
        tracing::info!(topic = %self.topics.events, ?from, "projector resuming");
        let mut reader = self.log.reader(&self.topics.events, from).await?;
        tokio::pin!(shutdown);
        let wait = Duration::from_millis(self.config.poll_wait_ms);
        loop {
            let records = tokio::select! {
                () = &mut shutdown => break,
                records = reader.next_batch(self.config.batch_max_records, wait) => records?,
            };
            if !records.is_empty() {
                self.project(records).await?;
            }
        }
        self.finish_commit().await?;
        self.store.flush_async().await?;
        tracing::info!(stats = ?self.stats(), "projector stopped");
        Ok(self.stats())
    }

    /// Projects until the reader has caught up with the end of the log as
    /// it was when called; used by the benchmark and by tests.
    pub async fn catch_up(&mut self) -> Result<ProjectorStats> {
        let end = self.log.end_offsets(&self.topics.events).await?;
        let mut reader = self
            .log
            .reader(&self.topics.events, self.resume_positions().await?)
            .await?;
        let done = |reader: &dyn LogReader| {
            let positions = reader.positions();
            end.iter()
                .enumerate()
                .all(|(p, &end)| positions.get(&(p as u32)).copied().unwrap_or(0) >= end)
        };
        while !done(reader.as_ref()) {
            let records = reader
                .next_batch(
                    self.config.batch_max_records,
                    Duration::from_millis(self.config.poll_wait_ms),
                )
                .await?;
            if !records.is_empty() {
                self.project(records).await?;
            }
        }
        self.finish_commit().await?;
        self.store.flush_async().await?;
        Ok(self.stats())
    }

    /// Folds one batch, appends its effects and dead letters, and hands
    /// the commit (and its publication) to the publisher.
    async fn project(&mut self, records: Vec<baton_log::Record>) -> Result<()> {
        let started = Instant::now();
        let store = self.store.clone();
        let mut cache = std::mem::take(&mut self.cache);
        let (outcome, cache) = tokio::task::spawn_blocking(move || {
            let outcome = fold_batch(&records, &mut cache, &mut StoreSource(&store));
            (outcome.map(|o| (o, records.len())), cache)
        })
        .await?;
        self.cache = cache;
        let folded = started.elapsed();
        let (outcome, records) = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                // The cache may hold changes that were never committed.
                self.cache.clear();
                return Err(error.into());
            }
        };
        let BatchOutcome {
            states,
            traces,
            positions,
            appends,
            dead_letters,
            dead_letter_kinds,
            applied,
            duplicates,
        } = outcome;
        metrics::record_batch(records, applied, duplicates, &dead_letter_kinds, folded);
        let dead = dead_letters.len() as u64;
        // Effects and dead letters first: if the commit is lost, they are
        // written again on replay, and the duplicates are harmless.
        let appended = match self.append(&self.topics.events, appends).await {
            Ok(()) => self.append(&self.topics.dead_letters, dead_letters).await,
            Err(error) => Err(error),
        };
        if let Err(error) = appended {
            self.cache.clear();
            return Err(error);
        }
        let mut commit = Commit::new(self.topics.events.clone());
        commit.states = states.into_values().collect();
        commit.positions = positions;
        commit.publish = self.config.publish_states;
        // The previous commit must land before this one starts.
        self.finish_commit().await?;
        self.publisher.start(commit, traces);
        if self.cache.len() > self.config.state_cache_entries {
            // Only once the commit has landed: a state evicted while its
            // commit is in flight would be read back stale from the store.
            self.finish_commit().await?;
            self.cache.clear();
        }
        self.stats.records += records as u64;
        self.stats.applied += applied;
        self.stats.duplicates += duplicates;
        self.stats.dead_letters += dead;
        self.stats.batches += 1;
        self.stats.fold_time += folded;
        tracing::debug!(
            records,
            applied,
            duplicates,
            dead_letters = dead,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "batch folded; its commit is under way"
        );
        Ok(())
    }

    /// Waits for the commit in flight, if any.
    async fn finish_commit(&mut self) -> Result<()> {
        let waiting = Instant::now();
        let finished = self.publisher.finish().await;
        self.stats.commit_wait += waiting.elapsed();
        if finished.is_err() {
            self.cache.clear();
        }
        finished
    }

    /// Appends unless there is nothing to append. A failure stops the
    /// projector: the Kafka producer has retried for its whole delivery
    /// timeout by then, and a restart resumes exactly where it was.
    async fn append(&self, topic: &str, records: Vec<NewRecord>) -> Result<()> {
        if !records.is_empty() {
            self.log.append(topic, records).await?;
        }
        Ok(())
    }
}

struct StoreSource<'a>(&'a Store);

impl StateSource for StoreSource<'_> {
    fn load(&mut self, key: &str) -> Result<Option<PatientCareState>, StoreError> {
        self.0.get(key)
    }
}

/// Runs `projector` until `shutdown`; the service entry point.
pub async fn run(
    mut projector: Projector,
    shutdown: impl Future<Output = ()>,
) -> Result<ProjectorStats> {
    projector.run(shutdown).await
}
