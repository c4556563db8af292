//! What ingest tells Prometheus, and its readiness probe of the log.
//!
//! | family | what |
//! |---|---|
//! | `baton_ingest_events_accepted_total` | events durably appended to the log (gRPC and MLLP) |
//! | `baton_ingest_events_rejected_total{reason}` | events refused: `invalid` (the event itself), `batch_refused` (valid, in a batch with an invalid one: batches are atomic), `batch_too_large`, `log_unavailable` |
//! | `baton_ingest_publish_seconds` | histogram: validating and appending one batch until durable |
//! | `baton_ingest_log_append_seconds` | histogram: the log's part of it |
//! | `baton_mllp_messages_total{message_type, ack_code}` | HL7 messages answered, by type (`ADT^A01`…) and ACK code (`AA`, `AE`, `AR`) |
//! | `baton_mllp_messages_too_large_total` | frames past `mllp_max_message_bytes` |
//! | `baton_mllp_connections_total`, `…_refused_total`, `baton_mllp_connections_open` | MLLP connections accepted, refused (over `mllp_max_connections`), open |
//! | `baton_mllp_connections_closed_total{reason}` | MLLP connections closed, by reason: `peer_closed`, `shutdown`, `failed`, `idle_timeout`, `frame_timeout`, `ack_timeout`, `handshake_timeout`, `handshake_failed`, `unauthorised`, `max_connections`, `max_connections_per_peer` ([`crate::mllp::CloseReason`]) |
//!
//! A message's type is what the sender wrote in MSH-9, so it is a label only
//! when Baton maps that type (the message was answered `AA` or `AE`); a
//! refused one (`AR`) is counted as `other`, whatever it claimed to be, so a
//! sender cannot grow the label set.

use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use crate::PublishError;
use crate::mllp::CloseReason;
use baton_hl7::AckCode;
use baton_log::EventLog;
use baton_telemetry::metrics::{LATENCY_BUCKETS, ReadinessGate};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;

/// The port ingest serves `/metrics`, `/live` and `/ready` on unless
/// configured otherwise.
pub const DEFAULT_METRICS_PORT: u16 = 9461;

/// How often the readiness probe asks the log for its end offsets.
pub const LOG_PROBE_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MessageLabels {
    message_type: String,
    ack_code: &'static str,
}

struct IngestMetrics {
    accepted: Counter,
    rejected: Family<ReasonLabels, Counter>,
    publish_seconds: Histogram,
    append_seconds: Histogram,
    mllp_messages: Family<MessageLabels, Counter>,
    mllp_too_large: Counter,
    mllp_connections: Counter,
    mllp_refused: Counter,
    mllp_closed: Family<ReasonLabels, Counter>,
    mllp_open: Gauge,
}

static METRICS: LazyLock<IngestMetrics> = LazyLock::new(|| {
    let metrics = IngestMetrics {
        accepted: Counter::default(),
        rejected: Family::default(),
        publish_seconds: Histogram::new(LATENCY_BUCKETS),
        append_seconds: Histogram::new(LATENCY_BUCKETS),
        mllp_messages: Family::default(),
        mllp_too_large: Counter::default(),
        mllp_connections: Counter::default(),
        mllp_refused: Counter::default(),
        mllp_closed: Family::default(),
        mllp_open: Gauge::default(),
    };
    baton_telemetry::metrics::register(|registry| {
        {
            let ingest = registry.sub_registry_with_prefix("ingest");
            ingest.register(
                "events_accepted",
                "Events durably appended to the event log",
                metrics.accepted.clone(),
            );
            ingest.register(
                "events_rejected",
                "Events refused, by reason",
                metrics.rejected.clone(),
            );
            ingest.register_with_unit(
                "publish",
                "Time to validate and append one batch until durable",
                Unit::Seconds,
                metrics.publish_seconds.clone(),
            );
            ingest.register_with_unit(
                "log_append",
                "Time the event log took to make one batch durable",
                Unit::Seconds,
                metrics.append_seconds.clone(),
            );
        }
        let mllp = registry.sub_registry_with_prefix("mllp");
        mllp.register(
            "messages",
            "HL7 v2 messages answered over MLLP, by message type and ACK code",
            metrics.mllp_messages.clone(),
        );
        mllp.register(
            "messages_too_large",
            "MLLP frames past mllp_max_message_bytes, answered AR unread",
            metrics.mllp_too_large.clone(),
        );
        mllp.register(
            "connections",
            "MLLP connections accepted",
            metrics.mllp_connections.clone(),
        );
        mllp.register(
            "connections_refused",
            "MLLP connections closed on arrival: mllp_max_connections were open",
            metrics.mllp_refused.clone(),
        );
        mllp.register(
            "connections_closed",
            "MLLP connections closed, by reason",
            metrics.mllp_closed.clone(),
        );
        mllp.register(
            "connections_open",
            "MLLP connections open now",
            metrics.mllp_open.clone(),
        );
    });
    for reason in REASONS {
        drop(metrics.rejected.get_or_create(&ReasonLabels { reason }));
    }
    for reason in CloseReason::ALL {
        drop(metrics.mllp_closed.get_or_create(&ReasonLabels {
            reason: reason.as_str(),
        }));
    }
    metrics
});

/// Registers ingest's families, so a scrape shows them from start-up.
pub fn register() {
    LazyLock::force(&METRICS);
}

pub(crate) fn record_accepted(events: usize, publish: Duration, append: Duration) {
    let metrics = &*METRICS;
    metrics.accepted.inc_by(events as u64);
    metrics.publish_seconds.observe(publish.as_secs_f64());
    metrics.append_seconds.observe(append.as_secs_f64());
}

/// Every reason events are refused for.
const REASONS: [&str; 4] = [
    "invalid",
    "batch_refused",
    "batch_too_large",
    "log_unavailable",
];

/// Counts the events of a refused publish, by why.
pub(crate) fn record_refused(refused: &PublishError) {
    let count = |reason: &'static str, events: usize| {
        if events > 0 {
            METRICS
                .rejected
                .get_or_create(&ReasonLabels { reason })
                .inc_by(events as u64);
        }
    };
    match refused {
        PublishError::Empty => {}
        PublishError::TooLarge { events, .. } => count("batch_too_large", *events),
        PublishError::Invalid { total, invalid } => {
            count("invalid", invalid.len());
            count("batch_refused", total - invalid.len());
        }
        PublishError::Log(_) => {}
    }
}

/// Counts the events of a batch the log could not take.
pub(crate) fn record_log_unavailable(events: usize) {
    if events > 0 {
        METRICS
            .rejected
            .get_or_create(&ReasonLabels {
                reason: "log_unavailable",
            })
            .inc_by(events as u64);
    }
}

/// The `message_type` label of a message answered `code`: its type when
/// Baton maps it, `other` otherwise.
pub(crate) fn message_type_label(kind: &str, code: AckCode) -> &str {
    // Answered AA or AE, the type is one the mapping took; the shape check
    // keeps anything else out should that ever change.
    let shaped = kind.len() <= 16
        && kind
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '^' || c == '_');
    match code {
        AckCode::Accept | AckCode::Error if shaped => kind,
        _ => "other",
    }
}

pub(crate) fn record_message(kind: &str, code: AckCode) {
    METRICS
        .mllp_messages
        .get_or_create(&MessageLabels {
            message_type: message_type_label(kind, code).to_owned(),
            ack_code: code.as_str(),
        })
        .inc();
}

pub(crate) fn record_too_large() {
    METRICS.mllp_too_large.inc();
}

/// Counts a closed MLLP connection; one closed on arrival because
/// `mllp_max_connections` were open is also a refused one.
pub(crate) fn record_connection_closed(reason: CloseReason) {
    if reason == CloseReason::MaxConnections {
        METRICS.mllp_refused.inc();
    }
    METRICS
        .mllp_closed
        .get_or_create(&ReasonLabels {
            reason: reason.as_str(),
        })
        .inc();
}

/// Counts an accepted connection as open until the guard drops.
pub(crate) fn connection_opened() -> OpenConnection {
    METRICS.mllp_connections.inc();
    METRICS.mllp_open.inc();
    OpenConnection
}

/// One open MLLP connection, in `baton_mllp_connections_open`.
pub(crate) struct OpenConnection;

impl Drop for OpenConnection {
    fn drop(&mut self) {
        METRICS.mllp_open.dec();
    }
}

/// Keeps `gate` ready while the log answers: asks it for the end of
/// `topic` every `interval` until `shutdown`.
pub async fn probe_log(
    log: Arc<dyn EventLog>,
    topic: String,
    gate: ReadinessGate,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = ticks.tick() => {}
        }
        let answered = tokio::select! {
            () = &mut shutdown => return,
            answered = log.end_offsets(&topic) => answered,
        };
        match answered {
            Ok(_) => gate.ready(),
            Err(error) => gate.waiting(format!("the event log does not answer: {error}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_types_baton_maps_become_labels() {
        assert_eq!(message_type_label("ADT^A01", AckCode::Accept), "ADT^A01");
        assert_eq!(message_type_label("ADT^A03", AckCode::Error), "ADT^A03");
        assert_eq!(
            message_type_label("9434765919^X", AckCode::Reject),
            "other",
            "a refused message's type is whatever the sender wrote"
        );
        assert_eq!(
            message_type_label("ADT^A01^with-a-long-tail", AckCode::Accept),
            "other"
        );
    }
}
