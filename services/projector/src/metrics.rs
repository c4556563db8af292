//! What the projector tells Prometheus, and the monitor that watches it
//! from beside the projection loop.
//!
//! Counted as the loop goes (`baton_projector_…`):
//!
//! | family | what |
//! |---|---|
//! | `records_total` | log records read and folded |
//! | `events_applied_total` | events that changed a state |
//! | `events_duplicate_total` | events already applied (same event id): no-ops |
//! | `dead_letters_total{reason}` | records dead-lettered, by kind of reason: `content_type`, `key_not_utf8`, `invalid_key`, `undecodable`, `invalid_event`, `wrong_patient`, `unknown_encounter`, `cancel_target_not_found`, `no_active_encounter`, `visit_moved_away` |
//! | `batch_records` | histogram of records per batch |
//! | `batch_fold_seconds` | histogram of the time to fold a batch (decode, validate, apply) |
//! | `batch_commit_seconds` | histogram of the time to commit a batch to the store (one sled batch) |
//! | `states_published_total` | states published to the changelog |
//! | `group_commits_total{outcome}` | commits of the monitoring consumer group: `committed` or `failed` |
//!
//! In a projector group (`instance_id` set):
//!
//! | family | what |
//! |---|---|
//! | `owned_partitions` | events partitions this projector owns now |
//! | `group_changes_total{change}` | changes of its partitions: `assigned`, `revoked` or `lost` |
//! | `restoring_partitions` | partitions being restored from the changelog now |
//! | `restore_records_total` | changelog records read while restoring |
//! | `restores_total{outcome}` | partitions taken over: `restored` (from the changelog), `republished` (the store was ahead: the changelog was given what it lacked) or `current` (the store was up to date) |
//! | `not_owned_total` | states and records not committed or published because their partition was no longer this projector's |
//!
//! The [monitor](spawn_monitor), every `monitor_interval_ms`, measures the
//! lag with [`baton_log::lag()`] and exports it per partition with the
//! store's size ([`baton_telemetry::metrics::projection`]), and commits the
//! applied positions to the monitoring consumer group (`consumer_group`) so
//! Kafka's own lag tools show them — never read back, and never in the way
//! of the projection: a failure is logged and counted, nothing more. Once
//! the applied positions reach the log's end as it was when the monitor
//! started, it opens the readiness gate it was given.
//!
//! A replay's progress (`baton replay`, see [`record_replay`]):
//!
//! | family | what |
//! |---|---|
//! | `replay_running` | 1 while a replay rebuilds, swaps or republishes, else 0 |
//! | `replay_records_folded`, `replay_records_goal` | records the replay has folded, and the log's end it measures against |
//! | `replay_records_per_second` | the replay's fold rate |
//! | `replay_writers_paused_seconds` | how long the live writers waited at the last swap |
//! | `replays_total{outcome}` | replays ended: `done`, `failed` or `cancelled` |
//!
//! The batch histograms count the live projector's batches; a replay's
//! commits are timed in `batch_commit_seconds` too.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use baton_log::group::{CommitOffsets, Membership, Ownership};
use baton_log::topics::Topics;
use baton_log::{EventLog, GroupOffsets};
use baton_runtime::Clock;
use baton_store::Store;
use baton_telemetry::metrics::projection::{self, PartitionFigures};
use baton_telemetry::metrics::{BATCH_BUCKETS, ReadinessGate};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::ProjectorConfig;

/// The port the projector serves `/metrics`, `/live` and `/ready` on
/// unless configured otherwise.
pub const DEFAULT_METRICS_PORT: u16 = 9462;

/// Bounds of the records-per-batch histogram, up to the largest
/// `batch_max_records` one would set.
const BATCH_SIZE_BUCKETS: [f64; 9] = [
    1.0, 10.0, 100.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0, 50_000.0,
];

/// How long the monitor backs off when it cannot read the log's end.
const RETRY: Duration = Duration::from_secs(1);
/// Longest the group's offsets go without a commit when nothing moves, so
/// Kafka does not expire them (`offsets.retention.minutes`).
const GROUP_REFRESH: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ChangeLabels {
    change: &'static str,
}

struct ProjectorMetrics {
    records: Counter,
    applied: Counter,
    duplicates: Counter,
    dead_letters: Family<ReasonLabels, Counter>,
    batch_records: Histogram,
    fold_seconds: Histogram,
    commit_seconds: Histogram,
    published: Counter,
    group_commits: Family<OutcomeLabels, Counter>,
    owned_partitions: Gauge,
    group_changes: Family<ChangeLabels, Counter>,
    restoring: Gauge,
    restore_records: Counter,
    restores: Family<OutcomeLabels, Counter>,
    not_owned: Counter,
    replay_running: Gauge,
    replay_done: Gauge,
    replay_total: Gauge,
    replay_rate: Gauge<f64, AtomicU64>,
    replay_paused: Gauge<f64, AtomicU64>,
    replays: Family<OutcomeLabels, Counter>,
}

static METRICS: LazyLock<ProjectorMetrics> = LazyLock::new(|| {
    let metrics = ProjectorMetrics {
        records: Counter::default(),
        applied: Counter::default(),
        duplicates: Counter::default(),
        dead_letters: Family::default(),
        batch_records: Histogram::new(BATCH_SIZE_BUCKETS),
        fold_seconds: Histogram::new(BATCH_BUCKETS),
        commit_seconds: Histogram::new(BATCH_BUCKETS),
        published: Counter::default(),
        group_commits: Family::default(),
        owned_partitions: Gauge::default(),
        group_changes: Family::default(),
        restoring: Gauge::default(),
        restore_records: Counter::default(),
        restores: Family::default(),
        not_owned: Counter::default(),
        replay_running: Gauge::default(),
        replay_done: Gauge::default(),
        replay_total: Gauge::default(),
        replay_rate: Gauge::default(),
        replay_paused: Gauge::default(),
        replays: Family::default(),
    };
    baton_telemetry::metrics::register(|registry| {
        let registry = registry.sub_registry_with_prefix("projector");
        registry.register(
            "records",
            "Log records the projector read and folded",
            metrics.records.clone(),
        );
        registry.register(
            "events_applied",
            "Events that changed a patient's state",
            metrics.applied.clone(),
        );
        registry.register(
            "events_duplicate",
            "Events already applied (the same event id), ignored",
            metrics.duplicates.clone(),
        );
        registry.register(
            "dead_letters",
            "Records dead-lettered, by kind of reason",
            metrics.dead_letters.clone(),
        );
        registry.register(
            "batch_records",
            "Records folded and committed together",
            metrics.batch_records.clone(),
        );
        registry.register_with_unit(
            "batch_fold",
            "Time to fold a batch: decode, validate, apply",
            Unit::Seconds,
            metrics.fold_seconds.clone(),
        );
        registry.register_with_unit(
            "batch_commit",
            "Time to commit a batch's states, index entries and positions to the store",
            Unit::Seconds,
            metrics.commit_seconds.clone(),
        );
        registry.register(
            "states_published",
            "States published to the state changelog",
            metrics.published.clone(),
        );
        registry.register(
            "group_commits",
            "Commits of the applied positions to the monitoring consumer group, by outcome",
            metrics.group_commits.clone(),
        );
        registry.register(
            "owned_partitions",
            "Events partitions this projector owns (in a projector group)",
            metrics.owned_partitions.clone(),
        );
        registry.register(
            "group_changes",
            "Changes of this projector's partitions in its group, by change",
            metrics.group_changes.clone(),
        );
        registry.register(
            "restoring_partitions",
            "Partitions being restored from the state changelog now",
            metrics.restoring.clone(),
        );
        registry.register(
            "restore_records",
            "State changelog records read while restoring partitions",
            metrics.restore_records.clone(),
        );
        registry.register(
            "restores",
            "Partitions taken over, by outcome: restored, republished or current",
            metrics.restores.clone(),
        );
        registry.register(
            "not_owned",
            "States and records not committed or published because their partition was no longer this projector's",
            metrics.not_owned.clone(),
        );
        registry.register(
            "replay_running",
            "1 while a replay rebuilds, swaps or republishes",
            metrics.replay_running.clone(),
        );
        registry.register(
            "replay_records_folded",
            "Records the replay under way (or the last) has folded",
            metrics.replay_done.clone(),
        );
        registry.register(
            "replay_records_goal",
            "The log's end the replay measures its progress against",
            metrics.replay_total.clone(),
        );
        registry.register(
            "replay_records_per_second",
            "The replay's fold rate",
            metrics.replay_rate.clone(),
        );
        registry.register_with_unit(
            "replay_writers_paused",
            "How long the live writers waited at the last generation swap",
            Unit::Seconds,
            metrics.replay_paused.clone(),
        );
        registry.register(
            "replays",
            "Replays ended, by outcome",
            metrics.replays.clone(),
        );
    });
    for outcome in ["done", "failed", "cancelled"] {
        drop(metrics.replays.get_or_create(&OutcomeLabels { outcome }));
    }
    for outcome in ["committed", "failed"] {
        drop(
            metrics
                .group_commits
                .get_or_create(&OutcomeLabels { outcome }),
        );
    }
    metrics
});

/// Registers the projector's families, and the lag and store families it
/// exports, so a scrape shows them from start-up.
pub fn register() {
    LazyLock::force(&METRICS);
    projection::register();
}

/// Counts one folded batch.
pub(crate) fn record_batch(
    records: usize,
    applied: u64,
    duplicates: u64,
    dead_letter_kinds: &[&'static str],
    fold: Duration,
) {
    let metrics = &*METRICS;
    metrics.records.inc_by(records as u64);
    metrics.applied.inc_by(applied);
    metrics.duplicates.inc_by(duplicates);
    for &reason in dead_letter_kinds {
        metrics
            .dead_letters
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
    metrics.batch_records.observe(records as f64);
    metrics.fold_seconds.observe(fold.as_secs_f64());
}

/// Shows a replay's status; `ended` names its outcome once, when it ends.
pub(crate) fn record_replay(
    status: &baton_proto::admin::v1::ReplayStatus,
    ended: Option<&'static str>,
) {
    use baton_proto::admin::v1::replay_status::Phase;
    let metrics = &*METRICS;
    let running = matches!(
        status.phase(),
        Phase::Rebuilding | Phase::Swapping | Phase::Republishing
    );
    metrics.replay_running.set(i64::from(running));
    metrics
        .replay_done
        .set(i64::try_from(status.records_done).unwrap_or(i64::MAX));
    metrics
        .replay_total
        .set(i64::try_from(status.records_total).unwrap_or(i64::MAX));
    metrics.replay_rate.set(status.records_per_second);
    metrics
        .replay_paused
        .set(status.writers_paused_micros as f64 / 1e6);
    if let Some(outcome) = ended {
        metrics
            .replays
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }
}

/// Times one commit to the store.
pub(crate) fn record_commit(took: Duration) {
    METRICS.commit_seconds.observe(took.as_secs_f64());
}

/// Counts what was not committed or published for want of ownership.
pub(crate) fn record_not_owned(count: u64) {
    METRICS.not_owned.inc_by(count);
}

/// A change of the partitions this projector owns, and how many it owns
/// after it.
pub(crate) fn record_group_change(change: &'static str, owned: usize) {
    METRICS
        .group_changes
        .get_or_create(&ChangeLabels { change })
        .inc();
    METRICS.owned_partitions.set(owned as i64);
}

/// A partition's restore starts (`true`) or ends.
pub(crate) fn record_restoring(started: bool) {
    if started {
        METRICS.restoring.inc();
    } else {
        METRICS.restoring.dec();
    }
}

/// Changelog records read by a restore.
pub(crate) fn record_restore_records(records: u64) {
    METRICS.restore_records.inc_by(records);
}

/// A partition taken over, by outcome.
pub(crate) fn record_restore(outcome: &'static str) {
    METRICS
        .restores
        .get_or_create(&OutcomeLabels { outcome })
        .inc();
}

/// Counts states published to the changelog.
pub(crate) fn record_published(states: u64) {
    METRICS.published.inc_by(states);
}

/// Starts the monitor of a projector folding `topics.events` into `store`:
/// lag and store metrics, the monitoring consumer group, and `caught_up`
/// (when given) opened once the projection reaches the log's end as it is
/// now. Runs until `shutdown` completes.
pub fn spawn_monitor(
    log: Arc<dyn EventLog>,
    store: Store,
    topics: &Topics,
    config: &ProjectorConfig,
    caught_up: Option<ReadinessGate>,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    spawn_group_monitor(log, store, topics, config, caught_up, clock, None, shutdown)
}

/// A projector's share of its group, as the monitor sees it.
#[derive(Debug, Clone)]
pub struct GroupShare {
    pub ownership: Arc<Ownership>,
    /// Commits as a member: a group with members takes commits from its
    /// members only.
    pub committer: Arc<dyn CommitOffsets>,
}

impl GroupShare {
    pub fn of(membership: &Membership) -> Self {
        Self {
            ownership: membership.ownership(),
            committer: membership.committer(),
        }
    }
}

/// [`spawn_monitor`] of a projector of a group (`group` given): the lag
/// exported, and the positions committed, are those of the partitions it
/// owns, and it is ready once it has been given its share and caught up
/// with it.
#[allow(clippy::too_many_arguments)] // each is a separate part of the projector
pub fn spawn_group_monitor(
    log: Arc<dyn EventLog>,
    store: Store,
    topics: &Topics,
    config: &ProjectorConfig,
    caught_up: Option<ReadinessGate>,
    clock: Arc<dyn Clock>,
    group: Option<GroupShare>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    register();
    let monitor = Monitor {
        log,
        store,
        topic: topics.events.clone(),
        interval: Duration::from_millis(config.monitor_interval_ms.max(1)),
        clock,
        group,
    };
    let group = config.consumer_group.trim().to_owned();
    tokio::spawn(async move {
        let stop = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(gate) = caught_up {
            tasks.spawn(monitor.clone().open_when_caught_up(gate, stop.clone()));
        }
        tasks.spawn(monitor.clone().measure_lag(stop.clone()));
        if !group.is_empty() {
            tasks.spawn(monitor.commit_group(group, stop.clone()));
        }
        shutdown.await;
        stop.cancel();
        while tasks.join_next().await.is_some() {}
    })
}

#[derive(Debug, Clone)]
struct Monitor {
    log: Arc<dyn EventLog>,
    store: Store,
    /// The events topic.
    topic: String,
    interval: Duration,
    clock: Arc<dyn Clock>,
    /// In a group: what this projector owns, and how it commits.
    group: Option<GroupShare>,
}

impl Monitor {
    /// The store's applied positions, read off the async runtime.
    async fn applied(&self) -> Option<BTreeMap<u32, u64>> {
        let store = self.store.clone();
        let topic = self.topic.clone();
        match tokio::task::spawn_blocking(move || store.applied(&topic)).await {
            Ok(Ok(applied)) => Some(applied),
            Ok(Err(error)) => {
                tracing::warn!(%error, "monitor: cannot read the applied positions");
                None
            }
            Err(_) => None,
        }
    }

    /// Opens `gate` once the applied positions reach the log's end as it
    /// was when this started.
    async fn open_when_caught_up(self, gate: ReadinessGate, stop: CancellationToken) {
        if let Some(group) = &self.group {
            gate.waiting("waiting for the projector group to give this projector its partitions");
            tokio::select! {
                () = stop.cancelled() => return,
                () = group.ownership.first_assignment() => {}
            }
        }
        let end = loop {
            match self.log.end_offsets(&self.topic).await {
                Ok(end) => break end,
                Err(error) => {
                    gate.waiting(format!("cannot read the end of {}: {error}", self.topic));
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(RETRY) => {}
                    }
                }
            }
        };
        let mut positions = self.store.watch(&self.topic);
        let reached = positions.wait_for(|applied| {
            let behind: u64 = end
                .iter()
                .enumerate()
                .filter(|&(partition, _)| self.owns(partition as u32))
                .map(|(partition, &end)| {
                    end.saturating_sub(applied.get(&(partition as u32)).copied().unwrap_or(0))
                })
                .sum();
            if behind > 0 {
                gate.waiting(format!(
                    "{behind} records of {} behind the log's end at start",
                    self.topic
                ));
            }
            behind == 0
        });
        tokio::select! {
            () = stop.cancelled() => {}
            reached = reached => match reached {
                Ok(_) => gate.ready(),
                Err(_) => gate.waiting("the store's positions can no longer be read"),
            },
        }
    }

    /// Whether this projector owns `partition` (always, on its own).
    fn owns(&self, partition: u32) -> bool {
        self.group
            .as_ref()
            .is_none_or(|group| group.ownership.owns(partition))
    }

    /// Exports the lag and the store's size every interval.
    async fn measure_lag(self, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            self.record_store().await;
            let Some(applied) = self.applied().await else {
                continue;
            };
            match baton_log::lag(&*self.log, &self.topic, &applied, self.clock.now()).await {
                Ok(lags) => {
                    if failing {
                        tracing::info!(topic = %self.topic, "lag measured again");
                        failing = false;
                    }
                    for lag in lags.iter().filter(|lag| !self.owns(lag.partition)) {
                        projection::forget_lag(&self.topic, lag.partition);
                    }
                    projection::record_lag(
                        &self.topic,
                        lags.iter()
                            .filter(|lag| self.owns(lag.partition))
                            .map(|lag| PartitionFigures {
                                partition: lag.partition,
                                end_offset: lag.end_offset,
                                applied: lag.applied,
                                events: lag.events,
                                seconds: lag.seconds,
                            }),
                    );
                }
                Err(error) => {
                    projection::record_lag_error();
                    if !failing {
                        tracing::warn!(topic = %self.topic, %error, "cannot measure the lag; metrics keep their last values");
                        failing = true;
                    }
                }
            }
        }
    }

    async fn record_store(&self) {
        let store = self.store.clone();
        if let Ok(Ok(size)) = tokio::task::spawn_blocking(move || store.size_on_disk()).await {
            projection::record_store(self.store.stored_states(), size);
        }
    }

    /// Commits the applied positions to `group` every interval they moved
    /// (and every minute regardless), for Kafka's lag tools. Never read
    /// back; a failure is logged and counted.
    async fn commit_group(self, group: String, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last: Option<(BTreeMap<u32, u64>, Instant)> = None;
        let mut failing = false;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let Some(mut applied) = self.applied().await else {
                continue;
            };
            // Every partition, those never applied at 0, so lag tools
            // count all of their records as behind.
            if let Ok(partitions) = self.log.partition_count(&self.topic).await {
                for partition in 0..partitions {
                    applied.entry(partition).or_insert(0);
                }
            }
            if last.as_ref().is_some_and(|(committed, at)| {
                *committed == applied && at.elapsed() < GROUP_REFRESH
            }) {
                continue;
            }
            let commit = async {
                match &self.group {
                    Some(share) => {
                        // As a member, for the partitions it owns only.
                        applied.retain(|&partition, _| share.ownership.owns(partition));
                        share
                            .committer
                            .commit_offsets(&applied)
                            .await
                            .map(|()| GroupOffsets::Committed)
                    }
                    None => {
                        self.log
                            .commit_group_offsets(&group, &self.topic, &applied)
                            .await
                    }
                }
            };
            let committed = tokio::select! {
                () = stop.cancelled() => return,
                committed = commit => committed,
            };
            match committed {
                Ok(GroupOffsets::Committed) => {
                    METRICS
                        .group_commits
                        .get_or_create(&OutcomeLabels {
                            outcome: "committed",
                        })
                        .inc();
                    if failing {
                        tracing::info!(%group, "monitoring consumer group committed again");
                        failing = false;
                    }
                    tracing::debug!(%group, positions = ?applied, "monitoring consumer group committed");
                    last = Some((applied, Instant::now()));
                }
                Ok(GroupOffsets::NotSupported) => {
                    tracing::info!(%group, "this log has no consumer groups: the applied positions are in the metrics only");
                    return;
                }
                Err(error) => {
                    METRICS
                        .group_commits
                        .get_or_create(&OutcomeLabels { outcome: "failed" })
                        .inc();
                    if !failing {
                        tracing::warn!(%group, %error, "cannot commit the monitoring consumer group; the projection goes on");
                        failing = true;
                    }
                }
            }
        }
    }
}
