//! Observability for every Baton process: one call at start-up sets up
//! structured logs with `tracing` and, when a collector is configured,
//! OpenTelemetry traces exported over OTLP/gRPC; [`metrics`] holds the
//! process's Prometheus registry and serves it with `/live` and `/ready`.
//!
//! One trace follows an event from ingest through the projector to the query
//! service: the W3C `traceparent` ([`TraceParent`]) travels in log record
//! headers and gRPC metadata under [`TRACEPARENT_HEADER`]. The sender takes
//! [`current_traceparent`]; the receiver calls [`set_parent`] on its span.
//!
//! # Main types
//!
//! - [`init`] installs the global subscriber and returns a [`TelemetryGuard`]
//!   that flushes spans when dropped: hold it until `main` returns.
//! - [`TraceParent`]: a parsed, valid W3C `traceparent`.
//! - [`Listen`]: a listener's address setting (gRPC, MLLP, metrics), or
//!   `off`.
//! - [`TraceExport`]: the OTLP pipeline itself, for tests and tools that
//!   assemble their own subscriber.
//!
//! # Environment
//!
//! - `BATON_LOG` (or `RUST_LOG`) filters log lines, e.g. `info`,
//!   `baton_projector=debug`; the default is `info`.
//! - `BATON_TRACE` filters which spans are exported, in the same syntax;
//!   the default is `info`, whatever `BATON_LOG` says, so quiet logs do not
//!   cost the traces.
//! - `BATON_LOG_FORMAT=json` writes one JSON object per line for a log
//!   shipper; the default is human-readable text on standard error.
//! - `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT`
//!   (e.g. `http://127.0.0.1:4317`): where to export spans over OTLP/gRPC.
//!   Unset or empty, nothing is exported and no exporter runs.
//! - `OTEL_SERVICE_NAME` overrides the service name given to [`init`] as the
//!   `service.name` resource attribute; `OTEL_RESOURCE_ATTRIBUTES` adds more.
//! - `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn export off.
//! - `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL` may only be `grpc`;
//!   `OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT`, `_HEADERS` and the `OTEL_BSP_*`
//!   batch settings are honoured by the OpenTelemetry SDK.
//!
//! # Example
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! let _telemetry = baton_telemetry::init("baton-query")?;
//! tracing::info!(port = 50052, "listening");
//!
//! // Receiving a record whose headers carried a traceparent:
//! let header = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
//! let span = tracing::info_span!("apply_event");
//! if let Ok(parent) = baton_telemetry::TraceParent::parse(header) {
//!     baton_telemetry::set_parent(&span, &parent);
//! }
//! let _entered = span.enter();
//! // ... and passing the trace on with the next record or request:
//! let next = baton_telemetry::current_traceparent().map(|parent| parent.to_string());
//! # drop(next);
//! # Ok(())
//! # }
//! ```

mod listen;

pub use listen::Listen;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::Subscriber;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

mod export;
pub mod metrics;
pub mod trace_context;

pub use export::TraceExport;
pub use trace_context::{
    InvalidTraceParent, TRACEPARENT_HEADER, TraceParent, current_traceparent, set_parent,
};

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "invalid log filter {filter:?} in {variable}: {reason}; expected e.g. \"info\" or \"baton_projector=debug,info\""
    )]
    InvalidFilter {
        variable: &'static str,
        filter: String,
        reason: String,
    },
    #[error("invalid BATON_LOG_FORMAT {0:?}: expected \"text\" or \"json\"")]
    InvalidFormat(String),
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
    #[error(
        "invalid OTLP endpoint {endpoint:?}: {reason}; expected a plaintext gRPC address such as \"http://127.0.0.1:4317\""
    )]
    InvalidOtlpEndpoint { endpoint: String, reason: String },
    #[error(
        "unsupported OTLP protocol {protocol:?} in {variable}: expected \"grpc\" (baton exports traces over OTLP/gRPC)"
    )]
    UnsupportedOtlpProtocol {
        variable: &'static str,
        protocol: String,
    },
    #[error("cannot start the trace export thread")]
    ExportThread(#[source] std::io::Error),
    #[error("cannot flush spans to the OTLP collector at {endpoint:?}: {reason}")]
    Flush { endpoint: String, reason: String },
    #[error(
        "cannot listen on {address} for metrics: {source} (choose another address with --metrics-listen, or turn them off with --metrics-listen off)"
    )]
    Listen {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
}

pub type Result<T, E = TelemetryError> = std::result::Result<T, E>;

/// Whether this process exports traces; set while an exporting
/// [`TelemetryGuard`] is alive.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    pub fn parse(text: &str) -> Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "" | "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(TelemetryError::InvalidFormat(text.to_owned())),
        }
    }
}

/// Everything [`init`] reads from the environment, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// The `service.name` of exported spans.
    pub service_name: String,
    /// Where the filter came from, so a bad one is reported against it.
    pub filter_variable: &'static str,
    pub filter: String,
    /// Which spans are exported (`BATON_TRACE`), apart from which lines are
    /// logged.
    pub trace_filter: String,
    pub format: LogFormat,
    /// Collector to export spans to over OTLP/gRPC; `None` exports nothing
    /// and keeps the OpenTelemetry layer out of the subscriber altogether.
    pub otlp_endpoint: Option<String>,
}

impl TelemetryConfig {
    /// Reads the variables listed in the [crate documentation](crate).
    pub fn from_env(service: &str) -> Result<Self> {
        Self::from_lookup(service, |variable| std::env::var(variable).ok())
    }

    fn from_lookup(service: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let set = |variable: &'static str| {
            lookup(variable)
                .filter(|value| !value.trim().is_empty())
                .map(|value| (variable, value.trim().to_owned()))
        };
        let (filter_variable, filter) = set("BATON_LOG")
            .or_else(|| set("RUST_LOG"))
            .unwrap_or(("BATON_LOG", "info".to_owned()));
        let trace_filter =
            set("BATON_TRACE").map_or_else(|| "info".to_owned(), |(_, filter)| filter);
        let format = LogFormat::parse(&lookup("BATON_LOG_FORMAT").unwrap_or_default())?;
        let disabled = set("OTEL_SDK_DISABLED").is_some_and(|(_, value)| value == "true")
            || set("OTEL_TRACES_EXPORTER").is_some_and(|(_, value)| value == "none");
        let otlp_endpoint = if disabled {
            None
        } else {
            set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                .or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
                .map(|(_, endpoint)| endpoint)
        };
        if otlp_endpoint.is_some()
            && let Some((variable, protocol)) = set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
            && protocol != "grpc"
        {
            return Err(TelemetryError::UnsupportedOtlpProtocol { variable, protocol });
        }
        let service_name = set("OTEL_SERVICE_NAME")
            .map(|(_, name)| name)
            .unwrap_or_else(|| service.to_owned());
        Ok(Self {
            service_name,
            filter_variable,
            filter,
            trace_filter,
            format,
            otlp_endpoint,
        })
    }
}

/// Keeps trace export running; dropping it flushes buffered spans and shuts
/// the exporter down (waiting a few seconds at most, inside or outside a
/// Tokio runtime). Without export it holds nothing.
#[must_use = "dropping the guard stops trace export at once: hold it for the life of main, `let _telemetry = baton_telemetry::init(..)?;`"]
#[derive(Debug)]
pub struct TelemetryGuard {
    export: Option<TraceExport>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(export) = self.export.take() {
            EXPORTING.store(false, Ordering::Release);
            drop(export);
        }
    }
}

/// Whether this process exports spans over OTLP (an exporting
/// [`TelemetryGuard`] from [`init`] is alive).
pub fn is_exporting() -> bool {
    EXPORTING.load(Ordering::Acquire)
}

/// Installs the global subscriber for `service`, configured from the
/// environment. Call once, first thing in `main`, and hold the guard:
/// `let _telemetry = baton_telemetry::init("baton-query")?;`.
pub fn init(service: &'static str) -> Result<TelemetryGuard> {
    init_with_config(TelemetryConfig::from_env(service)?)
}

/// As [`init`] with the filter and format given, logs only: never exports
/// spans, whatever the environment says.
pub fn init_with(
    service: &'static str,
    variable: &'static str,
    filter: &str,
    format: LogFormat,
) -> Result<()> {
    let guard = init_with_config(TelemetryConfig {
        service_name: service.to_owned(),
        filter_variable: variable,
        filter: filter.to_owned(),
        trace_filter: "info".to_owned(),
        format,
        otlp_endpoint: None,
    })?;
    // Holds no exporter, so nothing is stopped by dropping it.
    drop(guard);
    Ok(())
}

/// Installs the global subscriber as `config` says, exporting spans when it
/// names an OTLP endpoint.
pub fn init_with_config(config: TelemetryConfig) -> Result<TelemetryGuard> {
    let env_filter = EnvFilter::builder()
        .parse(&config.filter)
        .map_err(|error| TelemetryError::InvalidFilter {
            variable: config.filter_variable,
            filter: config.filter.clone(),
            reason: error.to_string(),
        })?;
    let trace_filter = EnvFilter::builder()
        .parse(&config.trace_filter)
        .map_err(|error| TelemetryError::InvalidFilter {
            variable: "BATON_TRACE",
            filter: config.trace_filter.clone(),
            reason: error.to_string(),
        })?;
    let export = config
        .otlp_endpoint
        .as_deref()
        .map(|endpoint| TraceExport::start(endpoint, &config.service_name))
        .transpose()?;
    subscriber(env_filter, trace_filter, config.format, export.as_ref())
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    match &export {
        Some(export) => {
            EXPORTING.store(true, Ordering::Release);
            tracing::info!(
                service = %config.service_name,
                endpoint = export.endpoint(),
                "telemetry started, exporting traces over otlp"
            );
        }
        None => tracing::debug!(service = %config.service_name, "telemetry started"),
    }
    Ok(TelemetryGuard { export })
}

/// Log lines to standard error, filtered by `env_filter`, and spans to
/// `export` when there is one, filtered by `trace_filter`.
fn subscriber(
    env_filter: EnvFilter,
    trace_filter: EnvFilter,
    format: LogFormat,
    export: Option<&TraceExport>,
) -> impl Subscriber + Send + Sync + 'static {
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    // `None` when not exporting: no OpenTelemetry layer, no per-span cost.
    let otel = export.map(|export| export.layer().with_filter(trace_filter));
    tracing_subscriber::registry()
        .with(fmt.with_filter(env_filter))
        .with(otel)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config_from(variables: &[(&str, &str)]) -> Result<TelemetryConfig> {
        let variables: HashMap<String, String> = variables
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        TelemetryConfig::from_lookup("baton-test", |name| variables.get(name).cloned())
    }

    #[test]
    fn formats_parse_and_name_the_choices() {
        assert_eq!(LogFormat::parse("JSON").unwrap(), LogFormat::Json);
        assert_eq!(LogFormat::parse("").unwrap(), LogFormat::Text);
        let error = LogFormat::parse("xml").unwrap_err().to_string();
        assert!(error.contains("\"text\" or \"json\""), "{error}");
    }

    #[test]
    fn a_bad_filter_names_the_variable() {
        let error = init_with("test", "BATON_LOG", "info,=[", LogFormat::Text)
            .unwrap_err()
            .to_string();
        assert!(error.contains("BATON_LOG"), "{error}");
    }

    #[test]
    fn without_export_the_filter_alone_decides_what_is_recorded() {
        let env_filter = EnvFilter::builder().parse("info").unwrap();
        let trace_filter = EnvFilter::builder().parse("info").unwrap();
        let subscriber = subscriber(env_filter, trace_filter, LogFormat::Json, None);
        tracing::subscriber::with_default(subscriber, || {
            assert!(tracing::enabled!(tracing::Level::INFO));
            assert!(!tracing::enabled!(tracing::Level::DEBUG));
            let _entered = tracing::info_span!("not exported").entered();
            assert_eq!(current_traceparent(), None);
        });
    }

    #[test]
    fn an_empty_environment_logs_at_info_and_exports_nothing() {
        let config = config_from(&[]).unwrap();
        assert_eq!(
            config,
            TelemetryConfig {
                service_name: "baton-test".to_owned(),
                filter_variable: "BATON_LOG",
                filter: "info".to_owned(),
                trace_filter: "info".to_owned(),
                format: LogFormat::Text,
                otlp_endpoint: None,
            }
        );
        let config = config_from(&[("BATON_LOG", "warn"), ("BATON_TRACE", "debug")]).unwrap();
        assert_eq!(
            (config.filter.as_str(), config.trace_filter.as_str()),
            ("warn", "debug"),
            "quiet logs and detailed traces are set apart"
        );
        let config = config_from(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).unwrap();
        assert_eq!(config.otlp_endpoint, None, "empty means unset");
    }

    #[test]
    fn baton_log_wins_over_rust_log() {
        let config = config_from(&[("RUST_LOG", "debug"), ("BATON_LOG", "warn")]).unwrap();
        assert_eq!(
            (config.filter_variable, config.filter.as_str()),
            ("BATON_LOG", "warn")
        );
        let config = config_from(&[("RUST_LOG", "debug")]).unwrap();
        assert_eq!(
            (config.filter_variable, config.filter.as_str()),
            ("RUST_LOG", "debug")
        );
    }

    #[test]
    fn the_traces_endpoint_wins_over_the_general_one() {
        let config = config_from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
        ])
        .unwrap();
        assert_eq!(config.otlp_endpoint.as_deref(), Some("http://traces:4317"));
        let config =
            config_from(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")]).unwrap();
        assert_eq!(
            config.otlp_endpoint.as_deref(),
            Some("http://collector:4317")
        );
    }

    #[test]
    fn otel_service_name_overrides_the_given_name() {
        let config = config_from(&[("OTEL_SERVICE_NAME", "query-eu-west")]).unwrap();
        assert_eq!(config.service_name, "query-eu-west");
    }

    #[test]
    fn export_can_be_switched_off_by_the_standard_variables() {
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            let config = config_from(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
                off,
            ])
            .unwrap();
            assert_eq!(config.otlp_endpoint, None, "{off:?}");
        }
    }

    #[test]
    fn a_protocol_other_than_grpc_is_refused_by_name() {
        let error = config_from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("\"http/protobuf\" in OTEL_EXPORTER_OTLP_PROTOCOL"),
            "{error}"
        );
        assert!(error.contains("expected \"grpc\""), "{error}");
        let config = config_from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
        ])
        .unwrap();
        assert!(config.otlp_endpoint.is_some());
        let config = config_from(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]).unwrap();
        assert_eq!(config.otlp_endpoint, None, "irrelevant while not exporting");
    }

    /// Inside a runtime, as in a service's `main`: a failed start must not
    /// drop the export's own runtime on this async task.
    #[tokio::test(flavor = "current_thread")]
    async fn a_bad_endpoint_names_it() {
        let error = TraceExport::start("not a uri", "baton-test")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("invalid OTLP endpoint \"not a uri\""),
            "{error}"
        );
        let error = TraceExport::start("https://collector:4317", "baton-test")
            .unwrap_err()
            .to_string();
        assert!(error.contains("\"https://collector:4317\""), "{error}");
    }
}
