//! What the audit log tells Prometheus. No label names a patient or a
//! client.
//!
//! | family | what |
//! |---|---|
//! | `baton_audit_records_written_total` | records durable in the audit log |
//! | `baton_audit_append_failures_total` | appends that failed or timed out |
//! | `baton_audit_reads_refused_total` | records whose read was refused because the audit log could not take them (`fail_closed`) |
//! | `baton_audit_records_lost_total` | records not written, their read let through (`fail_closed = false`) |

use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;

struct AuditMetrics {
    written: Counter,
    append_failures: Counter,
    refused: Counter,
    lost: Counter,
}

static METRICS: LazyLock<AuditMetrics> = LazyLock::new(|| {
    let metrics = AuditMetrics {
        written: Counter::default(),
        append_failures: Counter::default(),
        refused: Counter::default(),
        lost: Counter::default(),
    };
    baton_telemetry::metrics::register(|registry| {
        let registry = registry.sub_registry_with_prefix("audit");
        registry.register(
            "records_written",
            "Records durable in the audit log",
            metrics.written.clone(),
        );
        registry.register(
            "append_failures",
            "Appends to the audit log that failed or timed out",
            metrics.append_failures.clone(),
        );
        registry.register(
            "reads_refused",
            "Records whose read was refused: the audit log could not take them",
            metrics.refused.clone(),
        );
        registry.register(
            "records_lost",
            "Records not written whose read went on (audit.fail_closed = false)",
            metrics.lost.clone(),
        );
    });
    metrics
});

/// Registers the families, so a scrape shows them from start-up.
pub fn register() {
    LazyLock::force(&METRICS);
}

pub(crate) fn written(records: usize) {
    METRICS.written.inc_by(records as u64);
}

pub(crate) fn append_failed() {
    METRICS.append_failures.inc();
}

pub(crate) fn refused(records: usize) {
    METRICS.refused.inc_by(records as u64);
}

pub(crate) fn lost(records: usize) {
    METRICS.lost.inc_by(records as u64);
}
