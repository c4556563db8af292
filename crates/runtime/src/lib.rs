//! Plumbing every Baton process shares, so each `main` stays a few lines:
//!
//! - [`load_config`]: typed configuration layered as defaults < TOML file <
//!   `BATON_*` environment < command-line flags, with errors that name the
//!   key and where its value came from.
//! - [`LogFlags`] and [`Backbone`]: which log a process runs on (Kafka, or
//!   the embedded log in its data folder) and Baton's topics, from the
//!   `[kafka]` and `[topics]` tables, `BATON_KAFKA__*` / `BATON_TOPICS__*`
//!   and `--kafka`, `--kafka-option`, `--partitions`.
//! - [`DataDir`]: the local folder holding the embedded log and the
//!   projection store's generations.
//! - [`Listen`]: a listener's address setting, or `off`.
//! - [`grpc::serve`]: a gRPC API on its listener, with health checking,
//!   server reflection (v1 and v1alpha) and `TCP_NODELAY`.
//! - [`shutdown_signal`]: completes on Ctrl-C or SIGTERM.
//! - [`Clock`]: wall-clock time, injected ([`SystemClock`] in a service,
//!   [`FixedClock`] in a test), so nothing time-dependent reads the system
//!   clock behind its caller's back.
//!
//! ```
//! #[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
//! struct IngestConfig { listen: String }
//! #[derive(serde::Serialize)]
//! struct Flags { #[serde(skip_serializing_if = "Option::is_none")] listen: Option<String> }
//!
//! let flags = Flags { listen: Some("127.0.0.1:50051".into()) };
//! let config: IngestConfig = baton_runtime::load_config(None, "ingest", &flags).unwrap();
//! assert_eq!(config.listen, "127.0.0.1:50051");
//! ```

pub mod auth;
pub mod grpc;
pub use baton_telemetry::Listen;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use baton_log::EventLog;
use baton_log::embedded::{EmbeddedConfig, EmbeddedLog};
use baton_log::kafka::{KafkaConfig, KafkaLog};
use baton_log::topics::Topics;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Why a process could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("configuration file {path}: not found")]
    MissingConfigFile { path: PathBuf },
    #[error("invalid configuration: {0}")]
    Config(Box<figment::Error>),
    #[error("cannot open the embedded log in {path}: {source}")]
    Log {
        path: PathBuf,
        source: baton_log::LogError,
    },
    #[error("cannot use Kafka at {servers}: {source}")]
    Kafka {
        servers: String,
        source: baton_log::LogError,
    },
    #[error("invalid configuration: {0}")]
    Invalid(baton_log::LogError),
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// Loads `T` from, in rising precedence: its `Default`, the `[section]`
/// table of the TOML `file`, environment variables
/// `BATON_<SECTION>__<KEY>` (e.g. `BATON_QUERY__LISTEN`), and `flags`
/// (serialise only the flags given, with
/// `skip_serializing_if = "Option::is_none"`).
pub fn load_config<T>(file: Option<&Path>, section: &str, flags: &impl Serialize) -> Result<T>
where
    T: Default + Serialize + for<'de> Deserialize<'de>,
{
    let mut figment = Figment::from(Serialized::default(section, T::default()));
    if let Some(path) = file {
        if !path.exists() {
            return Err(RuntimeError::MissingConfigFile {
                path: path.to_owned(),
            });
        }
        figment = figment.merge(Toml::file(path));
    }
    let env_prefix = format!("BATON_{}__", section.to_ascii_uppercase());
    let env_section = section.to_owned();
    figment
        .merge(
            Env::prefixed(&env_prefix)
                .split("__")
                .map(move |key| format!("{env_section}.{key}").into()),
        )
        .merge(Serialized::default(section, flags))
        .extract_inner(section)
        .map_err(|e| RuntimeError::Config(Box::new(e)))
}

/// The flags every service binary shares: where its configuration file and
/// its data folder are, and which log it runs on. Flatten into a service's
/// own flags with `#[command(flatten)] #[serde(skip)]`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// TOML configuration file
    #[arg(long, env = "BATON_CONFIG")]
    pub config: Option<PathBuf>,
    /// Folder of the projection store (and of the embedded event log when
    /// not on Kafka)
    #[arg(long, env = "BATON_DATA_DIR", default_value = "baton-data")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub log: LogFlags,
    /// Serve a listener beyond loopback without TLS and client
    /// authentication (refused otherwise); warned about at every start
    #[arg(long)]
    pub insecure: bool,
}

impl ServiceArgs {
    pub fn data(&self) -> DataDir {
        DataDir::new(&self.data_dir)
    }

    /// The log and topics, from the configuration file, the environment
    /// and these flags.
    pub fn backbone(&self) -> Result<Backbone> {
        Backbone::load(self.config.as_deref(), &self.log)
    }
}

/// Which log a process runs on, and its topics: flags shared by every
/// service and `baton up`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LogFlags {
    /// Run on the Kafka cluster at these bootstrap servers
    /// (HOST:PORT[,HOST:PORT…]) instead of the embedded log
    #[arg(long, value_name = "HOST:PORT")]
    pub kafka: Option<String>,
    /// A librdkafka setting for every Kafka client, e.g.
    /// security.protocol=SASL_SSL (repeat for more)
    #[arg(long = "kafka-option", value_name = "KEY=VALUE", value_parser = parse_setting)]
    pub kafka_options: Vec<(String, String)>,
    /// Partitions of each topic when Baton creates it (fixed afterwards)
    #[arg(long)]
    pub partitions: Option<u32>,
}

fn parse_setting(text: &str) -> std::result::Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!(
            "{text:?} is not KEY=VALUE, e.g. security.protocol=SASL_SSL"
        )),
    }
}

/// The `[kafka]` flags, as a figment layer.
#[derive(Serialize)]
struct KafkaFlags {
    #[serde(skip_serializing_if = "Option::is_none")]
    bootstrap_servers: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    client: BTreeMap<String, String>,
}

/// The `[topics]` flags, as a figment layer.
#[derive(Serialize)]
struct TopicsFlags {
    #[serde(skip_serializing_if = "Option::is_none")]
    partitions: Option<u32>,
}

/// The log a process runs on and the topics it uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Backbone {
    /// `bootstrap_servers` empty means the embedded log.
    pub kafka: KafkaConfig,
    pub topics: Topics,
}

impl Backbone {
    /// Loads `[kafka]` and `[topics]` from `file`, `BATON_KAFKA__*` and
    /// `BATON_TOPICS__*`, and `flags`, and checks them.
    pub fn load(file: Option<&Path>, flags: &LogFlags) -> Result<Self> {
        let kafka: KafkaConfig = load_config(
            file,
            "kafka",
            &KafkaFlags {
                bootstrap_servers: flags.kafka.clone(),
                client: flags.kafka_options.iter().cloned().collect(),
            },
        )?;
        let topics: Topics = load_config(
            file,
            "topics",
            &TopicsFlags {
                partitions: flags.partitions,
            },
        )?;
        let backbone = Self { kafka, topics };
        backbone.validate()?;
        Ok(backbone)
    }

    pub fn validate(&self) -> Result<()> {
        self.topics.validate().map_err(RuntimeError::Invalid)?;
        if self.is_kafka() {
            self.kafka.validate().map_err(|error| {
                RuntimeError::Invalid(match error {
                    baton_log::LogError::InvalidConfig { key, reason } => {
                        baton_log::LogError::InvalidConfig {
                            key: format!("kafka.{key}"),
                            reason,
                        }
                    }
                    other => other,
                })
            })?;
        }
        Ok(())
    }

    pub fn is_kafka(&self) -> bool {
        !self.kafka.bootstrap_servers.trim().is_empty()
    }

    /// `Kafka at host:port` or `the embedded log in <dir>`, for start-up
    /// messages.
    pub fn describe(&self, data: &DataDir) -> String {
        if self.is_kafka() {
            format!("Kafka at {}", self.kafka.bootstrap_servers)
        } else {
            format!("the embedded log in {}", data.log_path().display())
        }
    }

    /// Connects to Kafka, or opens the embedded log in `data`.
    pub async fn open_log(&self, data: &DataDir) -> Result<Arc<dyn EventLog>> {
        if self.is_kafka() {
            let log = KafkaLog::connect(self.kafka.clone())
                .await
                .map_err(|source| RuntimeError::Kafka {
                    servers: self.kafka.bootstrap_servers.clone(),
                    source,
                })?;
            Ok(Arc::new(log))
        } else {
            std::fs::create_dir_all(data.root()).map_err(|error| RuntimeError::Log {
                path: data.root().to_owned(),
                source: baton_log::LogError::Storage(error.into()),
            })?;
            Ok(data.open_log()?)
        }
    }
}

impl Backbone {
    /// Where audit records go: the topic on the Kafka cluster of `events`
    /// (the event log this backbone opened), or the data folder's own
    /// embedded audit log.
    pub fn open_audit_log(
        &self,
        data: &DataDir,
        events: &Arc<dyn EventLog>,
    ) -> Result<Arc<dyn EventLog>> {
        if self.is_kafka() {
            Ok(Arc::clone(events))
        } else {
            std::fs::create_dir_all(data.root()).map_err(|error| RuntimeError::Log {
                path: data.root().to_owned(),
                source: baton_log::LogError::Storage(error.into()),
            })?;
            Ok(data.open_audit_log()?)
        }
    }
}

/// The local folder of a Baton process: `log/` (the embedded event log),
/// `audit/` (the embedded audit log), `store/` (the projector's store) and
/// `replica/` (a query replica's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.join("log")
    }

    /// The generations of the projector's store (`baton up` and
    /// `baton-projector`): `store/`, then `store.g1/`… after replays, and
    /// `store.live` naming the live one.
    pub fn store_generations(&self) -> baton_store::Generations {
        baton_store::Generations::new(&self.root, "store")
    }

    /// Where the projector's dead-letter listing starts (`baton dlq
    /// purge`) on the embedded log.
    pub fn dead_letters_start_path(&self) -> PathBuf {
        self.root.join("dead-letters.start")
    }

    /// A query replica's own store (`baton-query`), apart from the
    /// projector's so both can run on one machine with one data folder.
    pub fn replica_store_path(&self) -> PathBuf {
        self.root.join("replica")
    }

    /// The embedded audit log: apart from the event log, so that it can be
    /// kept (and backed up) on its own, and a replay never touches it.
    pub fn audit_log_path(&self) -> PathBuf {
        self.root.join("audit")
    }

    /// Opens (creating if needed) the embedded audit log.
    pub fn open_audit_log(&self) -> Result<Arc<EmbeddedLog>> {
        let path = self.audit_log_path();
        EmbeddedLog::open(EmbeddedConfig::new(&path))
            .map(Arc::new)
            .map_err(|source| RuntimeError::Log { path, source })
    }

    /// Opens (creating if needed) the embedded log. Only one process may
    /// hold it open at a time.
    pub fn open_log(&self) -> Result<Arc<EmbeddedLog>> {
        let path = self.log_path();
        EmbeddedLog::open(EmbeddedConfig::new(&path))
            .map(Arc::new)
            .map_err(|source| RuntimeError::Log { path, source })
    }
}

/// Where a service reads the time of day: injected, so tests and replays
/// choose it.
pub trait Clock: std::fmt::Debug + Send + Sync {
    fn now(&self) -> std::time::SystemTime;

    /// Seconds and nanoseconds since 1970-01-01T00:00:00Z.
    fn unix_now(&self) -> (i64, i32) {
        match self.now().duration_since(std::time::UNIX_EPOCH) {
            Ok(since) => (since.as_secs() as i64, since.subsec_nanos() as i32),
            Err(before) => {
                let before = before.duration();
                match before.subsec_nanos() {
                    0 => (-(before.as_secs() as i64), 0),
                    nanos => (
                        -(before.as_secs() as i64) - 1,
                        (1_000_000_000 - nanos) as i32,
                    ),
                }
            }
        }
    }
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> std::time::SystemTime {
        std::time::SystemTime::now()
    }
}

/// A clock standing at a time its owner sets: for tests.
#[derive(Debug, Default)]
pub struct FixedClock(std::sync::Mutex<Option<std::time::SystemTime>>);

impl FixedClock {
    pub fn at(time: std::time::SystemTime) -> Self {
        Self(std::sync::Mutex::new(Some(time)))
    }

    /// `seconds` after 1970-01-01T00:00:00Z.
    pub fn at_unix(seconds: u64) -> Self {
        Self::at(std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds))
    }

    pub fn set(&self, time: std::time::SystemTime) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(time);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> std::time::SystemTime {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .unwrap_or(std::time::UNIX_EPOCH)
    }
}

/// Completes when the process is asked to stop: Ctrl-C (SIGINT), or
/// SIGTERM on Unix (what `docker stop` and Kubernetes send).
///
/// The handlers are installed when this is called, not when the future is
/// first polled: call it first thing in `main` and keep the future, so a
/// stop asked for while the service is still starting is remembered and
/// answered once it runs, instead of killing it (the default action of
/// SIGTERM).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            let interrupt = async {
                match interrupt {
                    Ok(mut signal) => {
                        signal.recv().await;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot listen for Ctrl-C");
                        std::future::pending::<()>().await;
                    }
                }
            };
            let terminate = async {
                match terminate {
                    Ok(mut signal) => {
                        signal.recv().await;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot listen for SIGTERM");
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                () = interrupt => tracing::info!("Ctrl-C received: shutting down"),
                () = terminate => tracing::info!("SIGTERM received: shutting down"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        tracing::info!("Ctrl-C received: shutting down");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Sample {
        listen: String,
        batch: u32,
        topic: String,
    }

    #[derive(Serialize)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        batch: Option<u32>,
    }

    #[test]
    fn layers_rise_from_defaults_to_file_to_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("baton.toml");
        std::fs::write(
            &file,
            "[query]\nlisten = \"127.0.0.1:1\"\nbatch = 5\n[ingest]\nlisten = \"other\"\n",
        )
        .unwrap();
        let loaded: Sample = load_config(Some(&file), "query", &Flags { batch: Some(9) }).unwrap();
        assert_eq!(
            loaded,
            Sample {
                listen: "127.0.0.1:1".into(),
                batch: 9,
                topic: String::new()
            }
        );
        let loaded: Sample = load_config(Some(&file), "query", &Flags { batch: None }).unwrap();
        assert_eq!(loaded.batch, 5);
    }

    #[test]
    fn the_backbone_comes_from_file_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("baton.toml");
        std::fs::write(
            &file,
            "[kafka]\nbootstrap_servers = \"k1:9092\"\n[kafka.client]\n\"security.protocol\" = \"SSL\"\n[topics]\npartitions = 12\n",
        )
        .unwrap();
        let backbone = Backbone::load(Some(&file), &LogFlags::default()).unwrap();
        assert!(backbone.is_kafka());
        assert_eq!(backbone.topics.partitions, 12);
        assert_eq!(backbone.kafka.client["security.protocol"], "SSL");

        let flags = LogFlags {
            kafka: Some("k2:9093".into()),
            kafka_options: vec![("client.id".into(), "baton-1".into())],
            partitions: Some(3),
        };
        let backbone = Backbone::load(Some(&file), &flags).unwrap();
        assert_eq!(backbone.kafka.bootstrap_servers, "k2:9093");
        assert_eq!(
            backbone.kafka.client.len(),
            2,
            "flags add to the file's settings"
        );
        assert_eq!(backbone.topics.partitions, 3);

        let embedded = Backbone::load(None, &LogFlags::default()).unwrap();
        assert!(!embedded.is_kafka());
    }

    #[test]
    fn bad_backbone_settings_name_the_key() {
        let flags = LogFlags {
            kafka: Some("no-port".into()),
            ..LogFlags::default()
        };
        let error = Backbone::load(None, &flags).unwrap_err().to_string();
        assert!(error.contains("kafka.bootstrap_servers"), "{error}");
        let flags = LogFlags {
            partitions: Some(0),
            ..LogFlags::default()
        };
        let error = Backbone::load(None, &flags).unwrap_err().to_string();
        assert!(error.contains("topics.partitions"), "{error}");
        assert!(parse_setting("novalue").unwrap_err().contains("KEY=VALUE"));
        assert_eq!(
            parse_setting("sasl.password=a=b").unwrap(),
            ("sasl.password".to_owned(), "a=b".to_owned())
        );
    }

    #[test]
    fn unknown_keys_and_missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("baton.toml");
        std::fs::write(&file, "[query]\nlisen = \"x\"\n").unwrap();
        let error = load_config::<Sample>(Some(&file), "query", &Flags { batch: None })
            .unwrap_err()
            .to_string();
        assert!(error.contains("lisen"), "{error}");
        let error = load_config::<Sample>(
            Some(&dir.path().join("nope.toml")),
            "query",
            &Flags { batch: None },
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("nope.toml"), "{error}");
    }
}
