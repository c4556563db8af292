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
//! what was published, the commits whose publication may have been cut
//! short (the latest, and those it named as still publishing) are
//! published again on start ([`Store::unpublished`]), and replayed
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
//! - `replay.rs`: [`Replays`], rebuilding into a new store generation and
//!   swapping it in.
//! - `verify.rs`: folding the log again in memory to check stores' digests.
//! - `dead_letters.rs`: listing, showing, redriving and purging dead letters.
//! - `admin.rs`: [`AdminService`], the `baton.admin.v1.Operations` API.
//! - `metrics.rs`: the projector's Prometheus metrics, and the
//!   [monitor](metrics::spawn_monitor) beside the loop: lag, store size,
//!   the monitoring consumer group, readiness.

pub mod admin;
mod batch;
pub mod dead_letters;
pub mod metrics;
mod publish;
pub mod replay;
mod restore;
pub mod verify;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baton_care::{AppliedEvents, AppliedIds};
use baton_log::group::{GroupChange, GroupSettings, Membership, Ownership};
use baton_log::topics::Topics;
use baton_log::{EventLog, LogError, LogReader, NewRecord};
use baton_proto::state::v1::PatientCareState;
use baton_store::{Commit, Store, StoreError};
use baton_telemetry::Listen;
use serde::{Deserialize, Serialize};

pub use admin::AdminService;
pub use batch::dead_letter_headers;
use batch::{BatchOutcome, StateSource, fold_batch};
use publish::Publisher;
pub use replay::{Rebuild, RebuildFactory, Replays};

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
    /// Address of the admin API (`baton.admin.v1.Operations`: replay,
    /// verify, lag, dead letters), or `off`.
    pub admin_listen: baton_runtime::Listen,
    /// Where `/metrics`, `/live` and `/ready` are served, or `"off"`
    /// (`baton-projector` only: `baton up` serves `[up] metrics_listen`).
    pub metrics_listen: Listen,
    /// Kafka consumer group the applied positions are committed to, for
    /// monitoring only (`kafka-consumer-groups --describe`, Burrow): never
    /// read back. Empty commits to none.
    pub consumer_group: String,
    /// How often the lag and store metrics are measured and the consumer
    /// group committed.
    pub monitor_interval_ms: u64,
    /// Joins the projector group under this static identity (e.g. the pod
    /// name): projectors with the same `consumer_group` share the events
    /// topic's partitions, each restoring a partition it is given from the
    /// changelog. Empty: this projector reads every partition on its own.
    /// Kafka only.
    pub instance_id: String,
    /// In a group: how long the group waits for a silent projector before
    /// giving its partitions to the others (Kafka brokers accept 6,000 to
    /// 300,000 by default). The default is the shortest they accept, for
    /// the fastest failover: heartbeats come from librdkafka's own thread,
    /// so only a stalled process, host or network goes silent.
    pub session_timeout_ms: u64,
    /// In a group: join as a static member (`group.instance.id` =
    /// `instance_id`), so a projector restarted within the session timeout
    /// gets its partitions back without a rebalance. Off for a broker whose
    /// static membership is unreliable (see docs/decisions.md).
    pub static_membership: bool,
    /// TLS of every listener of this service (gRPC, admin, MLLP, metrics):
    /// `cert` and `key` PEM files, `client_ca` to require client
    /// certificates, `handshake_timeout_ms`. Files are re-read when they
    /// change.
    pub tls: baton_tls::TlsConfig,
    /// Client identities and their scopes (`[[<section>.clients]]`: id,
    /// certificate_names, scopes). With any, every call needs a client
    /// certificate named here holding the scope its RPC needs.
    pub clients: Vec<baton_tls::ClientEntry>,
    /// Bearer tokens (`[<section>.jwt]`: issuer, audience, keys, jwks,
    /// leeway_s, client_claim): a second way for a client to identify
    /// itself, named by `token_subjects` in the clients table.
    pub jwt: baton_tls::JwtConfig,
    /// The audit log (`[<section>.audit]`): refused calls to the admin API
    /// are recorded in it, and `ListAuditRecords` reads it.
    pub audit: baton_audit::AuditConfig,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            batch_max_records: 10_000,
            poll_wait_ms: 50,
            state_cache_entries: 200_000,
            publish_states: true,
            store_cache_mib: 256,
            admin_listen: baton_runtime::Listen::loopback(admin::DEFAULT_PORT),
            metrics_listen: Listen::loopback(metrics::DEFAULT_METRICS_PORT),
            consumer_group: "baton-projector".to_owned(),
            monitor_interval_ms: 5_000,
            instance_id: String::new(),
            session_timeout_ms: 6_000,
            static_membership: true,
            tls: baton_tls::TlsConfig::default(),
            clients: Vec::new(),
            jwt: baton_tls::JwtConfig::default(),
            audit: baton_audit::AuditConfig::default(),
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
        self.audit.validate()?;
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
        if !self.instance_id.is_empty() {
            if self.consumer_group.trim().is_empty() {
                return Err(
                    "consumer_group: a projector of a group (instance_id set) needs the group's name, e.g. \"baton-projector\"".into(),
                );
            }
            if self.instance_id.trim() != self.instance_id
                || self.instance_id.chars().any(char::is_control)
            {
                return Err(format!(
                    "instance_id: {:?} has spaces or control characters at its ends or within: expected a name such as a pod name, e.g. \"baton-projector-0\"",
                    self.instance_id
                ));
            }
            if !(1_000..=3_600_000).contains(&self.session_timeout_ms) {
                return Err(format!(
                    "session_timeout_ms: {} is out of range: expected 1000 to 3600000 (milliseconds; brokers allow 6000 to 300000 by default)",
                    self.session_timeout_ms
                ));
            }
        }
        self.tls.validate().map_err(|error| error.to_string())?;
        if !self.clients.is_empty() && !self.tls.is_mutual() && !self.jwt.is_on() {
            return Err("clients: a clients table needs a way to identify clients: client certificates (tls.client_ca) or bearer tokens (jwt.issuer)".into());
        }
        baton_tls::Clients::new(&self.clients)?;
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
    #[error("replay: {0}")]
    Replay(String),
    #[error("{0}")]
    Invalid(String),
    #[error("admin API: {0}")]
    Admin(#[from] tonic::transport::Error),
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
    /// Time the fold waited for the previous batch's commit to land (and,
    /// when more than two batches wait for the changelog, for the oldest
    /// publication).
    pub commit_wait: Duration,
}

/// At most this many applied event ids are kept in memory beside the
/// cached states (16 bytes and a little more each: about 400 MiB) before the
/// cache is emptied, as it is when it holds more than
/// [`ProjectorConfig::state_cache_entries`] states.
const MAX_CACHED_APPLIED_IDS: usize = 16_000_000;

/// The projector over a log and a store.
#[derive(Debug)]
pub struct Projector {
    log: Arc<dyn EventLog>,
    store: Store,
    config: ProjectorConfig,
    topics: Topics,
    cache: HashMap<String, Arc<PatientCareState>>,
    /// Every event id applied to each state in `cache`, so duplicates are
    /// found in memory: including those of a commit still in flight.
    cached_applied: AppliedIds,
    /// Commits and publishes batches, one at a time and in order.
    publisher: Publisher,
    stats: ProjectorStats,
    /// A rebuild (replay, verification) folds a log whose effects are in it
    /// already: it appends no merge hand-overs (the live projector did,
    /// and the fold meets them further on) and writes no dead letters (the
    /// live projector wrote them); it counts them.
    rebuild: bool,
    /// Records read so far, for whoever shows progress.
    records_read: Arc<AtomicU64>,
    /// In a group, the partitions this projector owns; `None` on its own.
    ownership: Option<Arc<Ownership>>,
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
        // In a group, what this store committed and may not have published
        // is published when (and if) its partition comes back: see
        // `restore`. Another projector may own it now.
        if config.instance_id.is_empty() {
            publisher.republish_unpublished().await?;
        }
        Ok(Self {
            log,
            store,
            config,
            topics,
            cache: HashMap::new(),
            cached_applied: AppliedIds::new(),
            publisher,
            stats: ProjectorStats::default(),
            rebuild: false,
            records_read: Arc::new(AtomicU64::new(0)),
            ownership: None,
        })
    }

    /// A projector that rebuilds `store` (a new generation, or a scratch
    /// store) from the log: it publishes nothing, appends no hand-overs and
    /// writes no dead letters, since the live projector did all three when
    /// it first met these records.
    pub async fn rebuild(
        log: Arc<dyn EventLog>,
        store: Store,
        config: ProjectorConfig,
        topics: Topics,
    ) -> Result<Self> {
        let config = ProjectorConfig {
            publish_states: false,
            ..config
        };
        let mut projector = Self::start(log, store, config, topics).await?;
        projector.rebuild = true;
        Ok(projector)
    }

    /// Counts the records read, for a progress bar: shared, so another task
    /// can read it while this one projects.
    pub fn records_read(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.records_read)
    }

    /// The store this projector writes.
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn stats(&self) -> ProjectorStats {
        ProjectorStats {
            published: self.publisher.published(),
            ..self.stats
        }
    }

    /// Where reading resumes: the committed next offset of every partition
    /// this projector owns (every partition, on its own).
    async fn resume_positions(&self) -> Result<BTreeMap<u32, u64>> {
        let partitions = self.log.partition_count(&self.topics.events).await?;
        let applied = self.store.applied(&self.topics.events)?;
        let owned = self.ownership.as_ref().map(|ownership| ownership.owned());
        Ok((0..partitions)
            .filter(|p| owned.as_ref().is_none_or(|owned| owned.contains(p)))
            .map(|p| (p, applied.get(&p).copied().unwrap_or(0)))
            .collect())
    }

    /// A reader of the partitions this projector owns, from the store's
    /// positions; `None` when it owns none.
    async fn owned_reader(&self) -> Result<Option<Box<dyn LogReader>>> {
        let from = self.resume_positions().await?;
        if from.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.log.reader(&self.topics.events, from).await?))
    }

    /// The settings this projector joins its group with, when in one.
    pub fn group_settings(&self) -> Option<GroupSettings> {
        (!self.config.instance_id.is_empty()).then(|| GroupSettings {
            group: self.config.consumer_group.trim().to_owned(),
            instance_id: self.config.instance_id.clone(),
            session_timeout_ms: self.config.session_timeout_ms,
            static_membership: self.config.static_membership,
        })
    }

    /// Projects the partitions the group gives this projector until
    /// `shutdown`: each partition it is given is first restored from the
    /// changelog ([`restore`]), each it must give back is finished and
    /// committed first, and nothing is committed or published for a
    /// partition it no longer owns.
    pub async fn run_in_group(
        &mut self,
        membership: Membership,
        shutdown: impl Future<Output = ()>,
    ) -> Result<ProjectorStats> {
        self.finish_publishing().await?;
        let ownership = membership.ownership();
        self.publisher.share(Arc::clone(&ownership));
        self.ownership = Some(ownership);
        self.run_owning(Some(membership), shutdown).await
    }

    /// Handles a change of the partitions this projector owns; returns the
    /// reader of those it owns after it.
    async fn change_partitions(
        &mut self,
        change: GroupChange,
        membership: &Membership,
    ) -> Result<Option<Box<dyn LogReader>>> {
        // Whatever the change, the batches in flight land first (a lost
        // partition's are dropped at their commit), and the cache goes: it
        // may hold states of partitions that change hands.
        self.finish_publishing().await?;
        self.forget_cached();
        let ownership = membership.ownership();
        match change {
            GroupChange::Assigned(partitions) => {
                let owner = ownership.member().to_owned();
                for &partition in &partitions {
                    restore::take_over(&self.log, &self.store, &self.topics, partition, &owner)
                        .await?;
                }
                metrics::record_group_change("assigned", ownership.owned().len());
                ownership.assignment_handled();
                self.owned_reader().await
            }
            GroupChange::Revoked {
                partitions,
                release,
            } => {
                let applied = self.store.applied(&self.topics.events)?;
                let positions: BTreeMap<u32, u64> = partitions
                    .iter()
                    .filter_map(|p| applied.get(p).map(|&offset| (*p, offset)))
                    .collect();
                // For monitoring only: a failure changes nothing.
                if let Err(error) = membership.committer().commit_offsets(&positions).await {
                    tracing::debug!(%error, "cannot commit the revoked partitions' positions");
                }
                let reader = {
                    let from: BTreeMap<u32, u64> = self
                        .resume_positions()
                        .await?
                        .into_iter()
                        .filter(|(p, _)| !partitions.contains(p))
                        .collect();
                    if from.is_empty() {
                        None
                    } else {
                        Some(self.log.reader(&self.topics.events, from).await?)
                    }
                };
                tracing::info!(?partitions, "revoked partitions finished and committed");
                release.done();
                metrics::record_group_change(
                    "revoked",
                    ownership.owned().len().saturating_sub(partitions.len()),
                );
                Ok(reader)
            }
            GroupChange::Lost(partitions) => {
                tracing::warn!(
                    ?partitions,
                    "partitions lost to the group: reading on without them"
                );
                metrics::record_group_change("lost", ownership.owned().len());
                self.owned_reader().await
            }
        }
    }

    /// Projects until `shutdown` completes; the batch in hand is finished
    /// and committed first, and the store flushed.
    ///
    /// Between batches it lets a generation swap (a replay) happen: it
    /// finishes its commit, waits while the swap is made, then resumes
    /// from the positions of the generation swapped in.
    pub async fn run(&mut self, shutdown: impl Future<Output = ()>) -> Result<ProjectorStats> {
        self.run_owning(None, shutdown).await
    }

    /// [`Projector::run`] over the partitions this projector owns: every
    /// one on its own (`membership` is `None`), else those its group gives.
    async fn run_owning(
        &mut self,
        mut membership: Option<Membership>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<ProjectorStats> {
        let mut permit = Some(self.store.writer_permit().await);
        let mut generation = self.store.generation();
        let mut reader = match &membership {
            None => {
                let from = self.resume_positions().await?;
                tracing::info!(topic = %self.topics.events, ?from, generation, "projector resuming");
                Some(self.log.reader(&self.topics.events, from).await?)
            }
            Some(_) => {
                tracing::info!(topic = %self.topics.events, generation, "projector waiting for the group to give it partitions");
                None
            }
        };
        tokio::pin!(shutdown);
        let wait = Duration::from_millis(self.config.poll_wait_ms);
        loop {
            if self.store.swap_requested() {
                self.finish_publishing().await?;
                drop(permit.take());
                tracing::info!("projector paused for a store generation swap");
                permit = Some(tokio::select! {
                    () = &mut shutdown => break,
                    permit = self.store.writer_permit() => permit,
                });
                if self.store.generation() != generation {
                    generation = self.store.generation();
                    // Every cached state is of the generation swapped out.
                    self.forget_cached();
                    let from = self.resume_positions().await?;
                    tracing::info!(
                        generation,
                        ?from,
                        "projector resuming on the new store generation"
                    );
                    reader = self.owned_reader().await?;
                }
            }
            let step = {
                let max = self.config.batch_max_records;
                let next = async {
                    match reader.as_mut() {
                        Some(reader) => reader.next_batch(max, wait).await,
                        None => std::future::pending().await,
                    }
                };
                let change = async {
                    match membership.as_mut() {
                        Some(membership) => membership.next_change().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = &mut shutdown => Step::Stop,
                    change = change => Step::Change(change?),
                    records = next => Step::Records(records?),
                }
            };
            let records = match step {
                Step::Stop => break,
                Step::Change(change) => {
                    let membership = membership.as_ref().expect("a change comes from a group");
                    reader = self.change_partitions(change, membership).await?;
                    continue;
                }
                Step::Records(records) => records,
            };
            if !records.is_empty() {
                self.project(records).await?;
            }
        }
        self.finish_publishing().await?;
        self.store.flush_async().await?;
        drop(permit);
        tracing::info!(stats = ?self.stats(), "projector stopped");
        Ok(self.stats())
    }

    /// Projects until the reader has caught up with the end of the log as
    /// it was when called; used by the benchmark, by tests and by replays.
    pub async fn catch_up(&mut self) -> Result<ProjectorStats> {
        self.catch_up_while(|| true).await
    }

    /// [`Projector::catch_up`], stopping early (with everything read so far
    /// committed) as soon as `keep_going` says no between two batches: a
    /// replay being cancelled.
    pub async fn catch_up_while(
        &mut self,
        keep_going: impl Fn() -> bool,
    ) -> Result<ProjectorStats> {
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
        while !done(reader.as_ref()) && keep_going() {
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
        self.finish_publishing().await?;
        self.store.flush_async().await?;
        Ok(self.stats())
    }

    /// Folds one batch, appends its effects and dead letters, and hands
    /// the commit (and its publication) to the publisher.
    async fn project(&mut self, records: Vec<baton_log::Record>) -> Result<()> {
        let started = Instant::now();
        let store = self.store.clone();
        let mut cache = std::mem::take(&mut self.cache);
        let mut applied = std::mem::take(&mut self.cached_applied);
        let publish = self.config.publish_states;
        let (outcome, cache, applied) = tokio::task::spawn_blocking(move || {
            let outcome = fold_batch(&records, &mut cache, &mut applied, &mut StoreSource(&store));
            // Each published state carries every id applied to it, for a
            // projector that restores it from the changelog.
            let outcome = outcome.map(|outcome| {
                let ledgers: HashMap<String, Vec<u8>> = if publish {
                    outcome
                        .states
                        .keys()
                        .map(|key| {
                            let ids = applied.of_patient(key);
                            (
                                key.clone(),
                                baton_store::changelog::encode_applied_ids(&ids),
                            )
                        })
                        .collect()
                } else {
                    HashMap::new()
                };
                (outcome, ledgers, records.len())
            });
            (outcome, cache, applied)
        })
        .await?;
        self.cache = cache;
        self.cached_applied = applied;
        let folded = started.elapsed();
        let (outcome, ledgers, records) = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                // The cache may hold changes that were never committed.
                self.forget_cached();
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
            applied_ids,
            applied,
            duplicates,
        } = outcome;
        if !self.rebuild {
            // A replay's records are counted by its progress, not as the
            // live projection's, and the letters it meets were written when
            // the live projector first met them.
            metrics::record_batch(records, applied, duplicates, &dead_letter_kinds, folded);
            for (letter, kind) in dead_letters.iter().zip(&dead_letter_kinds) {
                let header = |name: &str| {
                    letter
                        .headers
                        .iter()
                        .find(|header| header.name == name)
                        .map(|header| String::from_utf8_lossy(&header.value).into_owned())
                        .unwrap_or_default()
                };
                tracing::warn!(
                    topic = %self.topics.events,
                    partition = %header(dead_letter_headers::SOURCE_PARTITION),
                    offset = %header(dead_letter_headers::SOURCE_OFFSET),
                    kind,
                    reason = %header(dead_letter_headers::REASON),
                    "dead-lettered"
                );
            }
        }
        let dead = dead_letters.len() as u64;
        self.records_read
            .fetch_add(records as u64, Ordering::Relaxed);
        // Effects and dead letters first: if the commit is lost, they are
        // written again on replay, and the duplicates are harmless.
        let appended = if self.rebuild {
            Ok(())
        } else {
            match self.append(&self.topics.events, appends).await {
                Ok(()) => self.append(&self.topics.dead_letters, dead_letters).await,
                Err(error) => Err(error),
            }
        };
        if let Err(error) = appended {
            self.forget_cached();
            return Err(error);
        }
        let mut commit = Commit::new(self.topics.events.clone());
        commit.states = states.into_values().collect();
        commit.applied = applied_ids
            .iter()
            .map(|(key, id)| (key.to_owned(), id))
            .collect();
        commit.positions = positions;
        commit.publish = self.config.publish_states;
        // The previous commit must land before this one starts.
        let waiting = Instant::now();
        let handed_over = self.publisher.start(commit, traces, ledgers).await;
        self.waited(waiting, handed_over)?;
        if self.cache.len() > self.config.state_cache_entries
            || self.cached_applied.len() > MAX_CACHED_APPLIED_IDS
        {
            // Only once the commit has landed: a state evicted while its
            // commit is in flight would be read back stale from the store.
            let waiting = Instant::now();
            let committed = self.publisher.committed().await;
            self.waited(waiting, committed)?;
            self.forget_cached();
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

    /// Forgets the cached states and their applied ids: after a failure
    /// (they may never have been committed) or a generation swap (they are
    /// the old generation's), the store is read again.
    fn forget_cached(&mut self) {
        self.cache.clear();
        self.cached_applied.clear();
    }

    /// Waits for every batch in flight to be committed and published.
    async fn finish_publishing(&mut self) -> Result<()> {
        let waiting = Instant::now();
        let finished = self.publisher.finish().await;
        self.waited(waiting, finished)
    }

    /// Counts the time since `waiting` as the fold's wait for the store
    /// and the changelog; on a failure, forgets the cache (what it holds
    /// may never have been committed).
    fn waited<T>(&mut self, waiting: Instant, result: Result<T>) -> Result<T> {
        self.stats.commit_wait += waiting.elapsed();
        if result.is_err() {
            self.forget_cached();
        }
        result
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

/// What the run loop does next.
enum Step {
    Stop,
    Change(GroupChange),
    Records(Vec<baton_log::Record>),
}

struct StoreSource<'a>(&'a Store);

impl StateSource for StoreSource<'_> {
    fn load(&mut self, key: &str) -> Result<Option<PatientCareState>, StoreError> {
        self.0.get(key)
    }

    fn applied_ids(&mut self, key: &str) -> Result<Vec<baton_care::EventId>, StoreError> {
        self.0.applied_ids(key)
    }
}

/// Runs `projector` until `shutdown`; the service entry point.
pub async fn run(
    mut projector: Projector,
    shutdown: impl Future<Output = ()>,
) -> Result<ProjectorStats> {
    projector.run(shutdown).await
}

/// Runs `projector` (in its group when `membership` is given) and, when
/// given, serves its admin API, until `shutdown`; both stop together.
pub async fn run_with_admin(
    mut projector: Projector,
    membership: Option<Membership>,
    admin: Option<(AdminService, baton_tls::TlsListener)>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<ProjectorStats> {
    let stop = tokio_util::sync::CancellationToken::new();
    let admin = admin.map(|(admin, listener)| {
        tokio::spawn(admin::serve(
            admin,
            listener,
            stop.clone().cancelled_owned(),
        ))
    });
    let stopping = async {
        shutdown.await;
        stop.cancel();
    };
    let projected = match membership {
        Some(membership) => projector.run_in_group(membership, stopping).await,
        None => projector.run(stopping).await,
    };
    stop.cancel();
    if let Some(admin) = admin {
        admin.await?.map_err(ProjectorError::Admin)?;
    }
    projected
}
