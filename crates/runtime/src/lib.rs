//! Plumbing every Baton process shares, so each `main` stays a few lines:
//!
//! - [`load_config`]: typed configuration layered as defaults < TOML file <
//!   `BATON_*` environment < command-line flags, with errors that name the
//!   key and where its value came from.
//! - [`DataDir`]: the local folder holding the embedded log and the
//!   projection store.
//! - [`shutdown_signal`]: completes on Ctrl-C or SIGTERM.
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

use std::path::{Path, PathBuf};
use std::sync::Arc;

use baton_log::embedded::{EmbeddedConfig, EmbeddedLog};
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
/// its data folder are. Flatten into a service's own flags with
/// `#[command(flatten)] #[serde(skip)]`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// TOML configuration file
    #[arg(long, env = "BATON_CONFIG")]
    pub config: Option<PathBuf>,
    /// Folder of the embedded event log and the projection store
    #[arg(long, env = "BATON_DATA_DIR", default_value = "baton-data")]
    pub data_dir: PathBuf,
}

impl ServiceArgs {
    pub fn data(&self) -> DataDir {
        DataDir::new(&self.data_dir)
    }
}

/// The local folder of an all-in-one Baton: `log/` (the embedded event log)
/// and `store/` (the projection store).
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

    pub fn store_path(&self) -> PathBuf {
        self.root.join("store")
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

/// Completes when the process is asked to stop: Ctrl-C, or SIGTERM on Unix
/// (what `docker stop` and Kubernetes send).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received: shutting down"),
        () = terminate => tracing::info!("SIGTERM received: shutting down"),
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
