//! What the projector and query replicas both export about the projection
//! they hold: how far it is behind the events log, per partition, and how
//! large its store is. One definition, so a process running both (never
//! the case today) could not expose a family twice.
//!
//! - `baton_log_end_offset{topic, partition}`: the events log's end;
//! - `baton_projection_applied_offset{topic, partition}`: the next offset
//!   the projection applies (the projector's own; a replica's, from the
//!   progress records it read);
//! - `baton_projection_lag_events{topic, partition}`: records behind;
//! - `baton_projection_lag_seconds{topic, partition}`: age of the oldest
//!   record not yet applied, 0 when caught up (see `baton_log::lag`);
//! - `baton_projection_lag_errors_total`: lag measurements that failed
//!   (the log did not answer): the gauges keep their last values meanwhile;
//! - `baton_store_states`, `baton_store_size_bytes`: states stored
//!   (merged-away ones included) and the store's size on disk.

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Unit;

/// A partition of the events topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: u32,
}

struct Families {
    end_offset: Family<PartitionLabels, Gauge>,
    applied: Family<PartitionLabels, Gauge>,
    lag_events: Family<PartitionLabels, Gauge>,
    lag_seconds: Family<PartitionLabels, Gauge<f64, AtomicU64>>,
    lag_errors: Counter,
    states: Gauge,
    size: Gauge,
}

static FAMILIES: LazyLock<Families> = LazyLock::new(|| {
    let families = Families {
        end_offset: Family::default(),
        applied: Family::default(),
        lag_events: Family::default(),
        lag_seconds: Family::default(),
        lag_errors: Counter::default(),
        states: Gauge::default(),
        size: Gauge::default(),
    };
    super::register(|registry| {
        registry.register(
            "log_end_offset",
            "The events log's end offset (next offset to be written), per partition",
            families.end_offset.clone(),
        );
        registry.register(
            "projection_applied_offset",
            "Next offset of the events log the projection applies, per partition",
            families.applied.clone(),
        );
        registry.register(
            "projection_lag_events",
            "Records of the events log not yet applied to the projection, per partition",
            families.lag_events.clone(),
        );
        registry.register_with_unit(
            "projection_lag",
            "Age of the oldest record not yet applied to the projection, per partition; 0 when caught up",
            Unit::Seconds,
            families.lag_seconds.clone(),
        );
        registry.register(
            "projection_lag_errors",
            "Lag measurements that failed because the log did not answer",
            families.lag_errors.clone(),
        );
        registry.register(
            "store_states",
            "Patient states in the projection store, merged-away ones included",
            families.states.clone(),
        );
        registry.register_with_unit(
            "store_size",
            "Size of the projection store on disk",
            Unit::Bytes,
            families.size.clone(),
        );
    });
    families
});

/// Makes the families exist (with no series yet), so a scrape shows them
/// from start-up.
pub fn register() {
    LazyLock::force(&FAMILIES);
}

/// One partition's figures, as `baton_log::lag` measures them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartitionFigures {
    pub partition: u32,
    pub end_offset: u64,
    pub applied: u64,
    pub events: u64,
    /// `None` when unknown: the gauge keeps its last value.
    pub seconds: Option<f64>,
}

/// Records the lag of the projection behind `topic`.
pub fn record_lag(topic: &str, partitions: impl IntoIterator<Item = PartitionFigures>) {
    let families = &*FAMILIES;
    for figures in partitions {
        let labels = PartitionLabels {
            topic: topic.to_owned(),
            partition: figures.partition,
        };
        families
            .end_offset
            .get_or_create(&labels)
            .set(gauge_value(figures.end_offset));
        families
            .applied
            .get_or_create(&labels)
            .set(gauge_value(figures.applied));
        families
            .lag_events
            .get_or_create(&labels)
            .set(gauge_value(figures.events));
        if let Some(seconds) = figures.seconds {
            families.lag_seconds.get_or_create(&labels).set(seconds);
        }
    }
}

/// Stops exporting the figures of `partition` of `topic`: a projector of
/// a group that no longer owns it leaves its lag to the owner's figures.
pub fn forget_lag(topic: &str, partition: u32) {
    let families = &*FAMILIES;
    let labels = PartitionLabels {
        topic: topic.to_owned(),
        partition,
    };
    families.end_offset.remove(&labels);
    families.applied.remove(&labels);
    families.lag_events.remove(&labels);
    families.lag_seconds.remove(&labels);
}

/// Counts a lag measurement that failed.
pub fn record_lag_error() {
    FAMILIES.lag_errors.inc();
}

/// Records the size of the projection store.
pub fn record_store(states: u64, size_bytes: u64) {
    FAMILIES.states.set(gauge_value(states));
    FAMILIES.size.set(gauge_value(size_bytes));
}

fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Format, naming_problems, render};

    #[test]
    fn lag_and_store_figures_are_exposed_per_partition() {
        record_lag(
            "baton.care-events.v1",
            [
                PartitionFigures {
                    partition: 0,
                    end_offset: 12,
                    applied: 10,
                    events: 2,
                    seconds: Some(1.5),
                },
                PartitionFigures {
                    partition: 1,
                    end_offset: 4,
                    applied: 4,
                    events: 0,
                    seconds: Some(0.0),
                },
            ],
        );
        record_store(7, 4096);
        let text = render(Format::Text);
        for line in [
            "baton_log_end_offset{topic=\"baton.care-events.v1\",partition=\"0\"} 12",
            "baton_projection_applied_offset{topic=\"baton.care-events.v1\",partition=\"0\"} 10",
            "baton_projection_lag_events{topic=\"baton.care-events.v1\",partition=\"0\"} 2",
            "baton_projection_lag_seconds{topic=\"baton.care-events.v1\",partition=\"0\"} 1.5",
            "baton_projection_lag_seconds{topic=\"baton.care-events.v1\",partition=\"1\"} 0.0",
            "baton_store_states 7",
            "baton_store_size_bytes 4096",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        assert_eq!(naming_problems(&text), Vec::<String>::new(), "{text}");
    }
}
