//! Observability for every Baton process: one call at start-up sets up
//! structured logs with `tracing`.
//!
//! - `BATON_LOG` (or `RUST_LOG`) filters, e.g. `info`, `baton_projector=debug`;
//!   the default is `info`.
//! - `BATON_LOG_FORMAT=json` writes one JSON object per line for a log
//!   shipper; the default is human-readable text on standard error.
//!
//! ```no_run
//! baton_telemetry::init("baton-query").expect("telemetry");
//! tracing::info!(port = 50052, "listening");
//! ```

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

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
}

pub type Result<T, E = TelemetryError> = std::result::Result<T, E>;

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

/// Installs the global subscriber for `service`, configured from the
/// environment. Call once, first thing in `main`.
pub fn init(service: &'static str) -> Result<()> {
    let (variable, filter) = ["BATON_LOG", "RUST_LOG"]
        .into_iter()
        .find_map(|variable| std::env::var(variable).ok().map(|value| (variable, value)))
        .unwrap_or(("BATON_LOG", "info".to_owned()));
    let format = LogFormat::parse(&std::env::var("BATON_LOG_FORMAT").unwrap_or_default())?;
    init_with(service, variable, &filter, format)
}

/// As [`init`], with the filter and format given.
pub fn init_with(
    service: &'static str,
    variable: &'static str,
    filter: &str,
    format: LogFormat,
) -> Result<()> {
    let env_filter =
        EnvFilter::builder()
            .parse(filter)
            .map_err(|error| TelemetryError::InvalidFilter {
                variable,
                filter: filter.to_owned(),
                reason: error.to_string(),
            })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_span_events(FmtSpan::NONE);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|_| TelemetryError::AlreadyInstalled)?;
    tracing::debug!(service, "telemetry started");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
