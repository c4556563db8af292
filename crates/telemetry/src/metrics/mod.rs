//! Prometheus metrics for every Baton process: one registry per process,
//! its exposition on `/metrics`, and `/live` and `/ready` for orchestrators,
//! all on one small HTTP listener (`metrics_listen`).
//!
//! The registry and both exposition formats (Prometheus text 0.0.4, and
//! OpenMetrics 1.0 for a scraper that asks for it) come from the official
//! client, [`prometheus_client`]; nothing here formats an exposition by
//! hand. Every family is named `baton_…` by Prometheus conventions:
//! counters end in `_total`, durations are `_seconds` histograms, sizes
//! `_bytes`, all in base units.
//!
//! **No patient data in a metric.** Labels are bounded categories (an RPC,
//! a status code, a partition, a message type Baton maps, an ACK code, a
//! reason from a fixed list), never an identifier, a key or free text.
//! Each service's tests render the exposition after handling real patients
//! and look for their identifiers in it.
//!
//! # Main types
//!
//! - [`register`]: adds a service's families to the process's registry, once;
//!   `baton up` registers all three services' into the one registry it serves.
//! - [`render`]: the exposition, in the format a scraper asked for.
//! - [`serve`] on a listener from [`bind`] ([`Listen`]): `/metrics`,
//!   `/live` (200 while the process runs) and `/ready` (200 once every gate
//!   of the [`Readiness`] is ready, else 503 naming what it waits for).
//! - [`grpc::GrpcMetricsLayer`]: requests by RPC and status code, and their
//!   latency, for any tonic server.
//! - [`projection`]: lag, applied positions and store size, shared by the
//!   projector and query replicas.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use baton_telemetry::Listen;
//! use baton_telemetry::metrics::{self, Readiness};
//!
//! let readiness = Readiness::new();
//! let caught_up = readiness.gate("projector catching up with the log");
//! if let Some(listener) = metrics::bind(Listen::loopback(9462)).await? {
//!     tokio::spawn(metrics::serve(listener, readiness.clone(), std::future::pending()));
//! }
//! // ... once the projector has applied the log's end as it was at start:
//! caught_up.ready();
//! # Ok(())
//! # }
//! ```

pub mod grpc;
pub mod projection;
mod readiness;
mod server;

use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use prometheus_client::registry::Registry;

pub use readiness::{Readiness, ReadinessGate};
pub use server::{bind, serve};

/// Bucket bounds, in seconds, of request and call latencies: 0.5 ms to
/// 10 s, about three per decade.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Bucket bounds, in seconds, of work done a batch at a time (folding,
/// committing): 0.1 ms to 30 s.
pub const BATCH_BUCKETS: [f64; 14] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// The process's registry; every family is prefixed `baton_`.
static REGISTRY: LazyLock<Mutex<Registry>> =
    LazyLock::new(|| Mutex::new(Registry::with_prefix("baton")));

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Adds families to the process's registry. Call once per family, e.g.
/// from the `LazyLock` holding a service's metrics: a family registered
/// twice would be exposed twice.
pub fn register(add: impl FnOnce(&mut Registry)) {
    add(&mut registry());
}

/// Which exposition format a scraper gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4: what `promtool check
    /// metrics`, `curl` and most tools read.
    Text,
    /// OpenMetrics 1.0 text, for a scraper whose `Accept` header asks for it
    /// (Prometheus does).
    OpenMetrics,
}

impl Format {
    /// The format an HTTP `Accept` header asks for.
    pub fn from_accept(accept: &str) -> Self {
        if accept.contains("application/openmetrics-text") {
            Self::OpenMetrics
        } else {
            Self::Text
        }
    }

    /// The `Content-Type` of an exposition in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The exposition of every registered family, in `format`.
pub fn render(format: Format) -> String {
    let registry = registry();
    let mut exposition = String::new();
    let encoded = match format {
        Format::Text => {
            prometheus_client::encoding::prometheus_text::encode(&mut exposition, &registry)
        }
        Format::OpenMetrics => {
            prometheus_client::encoding::text::encode(&mut exposition, &registry)
        }
    };
    // Writing to a String cannot fail; an encoder error is a bug in a
    // metric's own encoding, and a partial page is still worth serving.
    if let Err(error) = encoded {
        tracing::error!(%error, "cannot encode the metrics exposition");
    }
    exposition
}

/// What breaks Baton's naming rules in an exposition (Prometheus text
/// 0.0.4): for tests, and for anyone adding a family. Each problem names
/// the family.
///
/// - every family is `baton_…`, lower snake case;
/// - counters end in `_total`, and nothing else does;
/// - histograms are of durations in `_seconds` (or sizes in `_bytes`, or
///   counts in `_records`);
/// - no label value is longer than 64 characters (an identifier or free
///   text would be a sign of an unbounded label).
pub fn naming_problems(exposition: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                problems.push(format!("unreadable TYPE line {line:?}"));
                continue;
            };
            if !name.starts_with("baton_")
                || !name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                problems.push(format!("{name}: expected baton_<lower_snake_case>"));
            }
            match kind {
                "counter" if !name.ends_with("_total") => {
                    problems.push(format!("{name}: a counter must end in _total"));
                }
                "counter" => {}
                _ if name.ends_with("_total") => {
                    problems.push(format!("{name}: only counters end in _total ({kind})"));
                }
                "histogram"
                    if !["_seconds", "_bytes", "_records"]
                        .iter()
                        .any(|unit| name.ends_with(unit)) =>
                {
                    problems.push(format!(
                        "{name}: a histogram must name its unit (_seconds, _bytes or _records)"
                    ));
                }
                _ => {}
            }
        } else if !line.starts_with('#')
            && let Some(labels) = line
                .split_once('{')
                .and_then(|(_, rest)| rest.split_once('}'))
        {
            for value in labels
                .0
                .split("\",")
                .filter_map(|pair| pair.split_once("=\""))
            {
                let value = value.1.trim_end_matches('"');
                if value.chars().count() > 64 {
                    problems.push(format!(
                        "{line}: label value {value:?} is over 64 characters"
                    ));
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scraper_gets_the_format_it_accepts() {
        assert_eq!(
            Format::from_accept("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
            Format::OpenMetrics
        );
        assert_eq!(Format::from_accept("*/*"), Format::Text);
        assert!(Format::Text.content_type().contains("version=0.0.4"));
    }

    #[test]
    fn naming_problems_are_found_and_named() {
        let good = "# HELP baton_x_total X.\n# TYPE baton_x_total counter\nbaton_x_total{code=\"OK\"} 1\n\
                    # TYPE baton_y_seconds histogram\nbaton_y_seconds_bucket{le=\"0.1\"} 1\n";
        assert_eq!(naming_problems(good), Vec::<String>::new());
        let bad = format!(
            "# TYPE baton_x counter\n# TYPE other_thing gauge\n# TYPE baton_y_total gauge\n\
             # TYPE baton_z histogram\nbaton_q{{patient=\"{}\"}} 1\n",
            "9".repeat(70)
        );
        let problems = naming_problems(&bad);
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(problems[0].contains("baton_x: a counter must end in _total"));
        assert!(problems[1].contains("other_thing"));
        assert!(problems[2].contains("only counters end in _total"));
        assert!(problems[3].contains("must name its unit"));
        assert!(problems[4].contains("over 64 characters"));
    }
}
