//! What the query service tells Prometheus beyond its gRPC calls (which
//! [`baton_runtime::grpc::serve`] counts by RPC and status code, with their
//! latency), and a replica's monitor.
//!
//! | family | what |
//! |---|---|
//! | `baton_query_watch_clients` | `WatchCohort` streams open now |
//! | `baton_query_watch_dropped_total{reason}` | watches ended by the service: `slow_client` (stayed `watch_buffer_messages` behind for `watch_slow_client_ms`) or `fell_behind` (the store's change feed overtook it) |
//!
//! A replica's [monitor](spawn_replica_monitor) exports, every
//! `monitor_interval_ms`, its own lag behind the events topic — from the
//! projector's progress records it has materialised, which is what its
//! answers include — and its store's size, with the same families as the
//! projector ([`baton_telemetry::metrics::projection`]).

use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use baton_log::EventLog;
use baton_log::topics::Topics;
use baton_runtime::Clock;
use baton_store::Store;
use baton_telemetry::metrics::projection::{self, PartitionFigures};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::task::JoinHandle;

/// The port the query service serves `/metrics`, `/live` and `/ready` on
/// unless configured otherwise.
pub const DEFAULT_METRICS_PORT: u16 = 9463;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Why the service ended a watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dropped {
    SlowClient,
    FellBehind,
}

impl Dropped {
    fn label(self) -> &'static str {
        match self {
            Self::SlowClient => "slow_client",
            Self::FellBehind => "fell_behind",
        }
    }
}

struct QueryMetrics {
    watch_clients: Gauge,
    watch_dropped: Family<ReasonLabels, Counter>,
}

static METRICS: LazyLock<QueryMetrics> = LazyLock::new(|| {
    let metrics = QueryMetrics {
        watch_clients: Gauge::default(),
        watch_dropped: Family::default(),
    };
    baton_telemetry::metrics::register(|registry| {
        let registry = registry.sub_registry_with_prefix("query");
        registry.register(
            "watch_clients",
            "WatchCohort streams open now",
            metrics.watch_clients.clone(),
        );
        registry.register(
            "watch_dropped",
            "Watches the service ended, by reason",
            metrics.watch_dropped.clone(),
        );
    });
    for reason in [Dropped::SlowClient, Dropped::FellBehind] {
        drop(metrics.watch_dropped.get_or_create(&ReasonLabels {
            reason: reason.label(),
        }));
    }
    metrics
});

/// Registers the query service's families, so a scrape shows them from
/// start-up.
pub fn register() {
    LazyLock::force(&METRICS);
}

/// Counts a watch as open until the guard drops.
pub(crate) fn watch_opened() -> OpenWatch {
    METRICS.watch_clients.inc();
    OpenWatch
}

/// One open watch, in `baton_query_watch_clients`.
pub(crate) struct OpenWatch;

impl Drop for OpenWatch {
    fn drop(&mut self) {
        METRICS.watch_clients.dec();
    }
}

pub(crate) fn record_watch_dropped(reason: Dropped) {
    METRICS
        .watch_dropped
        .get_or_create(&ReasonLabels {
            reason: reason.label(),
        })
        .inc();
}

/// Starts a replica's monitor: its lag behind `topics.events` (by the
/// progress positions in `store`) and its store's size, every `interval`,
/// until `shutdown` completes.
pub fn spawn_replica_monitor(
    log: Arc<dyn EventLog>,
    store: Store,
    topics: &Topics,
    interval: Duration,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    register();
    projection::register();
    let topic = topics.events.clone();
    tokio::spawn(async move {
        tokio::pin!(shutdown);
        let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticks.tick() => {}
            }
            let reading = store.clone();
            let events = topic.clone();
            let read = tokio::task::spawn_blocking(move || {
                Ok::<_, baton_store::StoreError>((
                    reading.applied(&events)?,
                    reading.size_on_disk()?,
                ))
            })
            .await;
            let Ok(Ok((applied, size))) = read else {
                continue;
            };
            projection::record_store(store.stored_states(), size);
            let measured = tokio::select! {
                () = &mut shutdown => return,
                measured = baton_log::lag(&*log, &topic, &applied, clock.now()) => measured,
            };
            match measured {
                Ok(lags) => {
                    failing = false;
                    projection::record_lag(
                        &topic,
                        lags.iter().map(|lag| PartitionFigures {
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
                        tracing::warn!(%topic, %error, "cannot measure the replica's lag; metrics keep their last values");
                        failing = true;
                    }
                }
            }
        }
    })
}
