//! What the Kafka benchmarks share: the broker (a private Tansu, or the
//! cluster `--kafka` names), fresh topics for every run, and Baton's
//! services run in this process on loopback ports.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use baton_log::EventLog;
use baton_log::kafka::{KafkaConfig, KafkaLog};
use baton_log::testkit::TestBroker;
use baton_log::topics::Topics;
use clap::Args;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::Channel;

/// Which broker a Kafka benchmark runs against.
#[derive(Debug, Args)]
pub(crate) struct KafkaArgs {
    /// Use this Kafka cluster (bootstrap servers, HOST:PORT[,HOST:PORT…])
    /// instead of starting a private Tansu broker with in-memory storage
    #[arg(long, value_name = "HOST:PORT")]
    kafka: Option<String>,
}

/// The broker a benchmark runs against; a private one stops when dropped.
#[derive(Debug)]
pub(crate) enum Broker {
    /// Started by the benchmark with `baton_log::testkit::TestBroker`.
    Private {
        broker: TestBroker,
        version: String,
    },
    External {
        bootstrap_servers: String,
    },
}

impl Broker {
    pub(crate) async fn start(args: &KafkaArgs) -> anyhow::Result<Self> {
        if let Some(servers) = &args.kafka {
            return Ok(Self::External {
                bootstrap_servers: servers.clone(),
            });
        }
        tokio::task::spawn_blocking(|| {
            let version = tansu_version();
            let broker = TestBroker::try_start()
                .map_err(|reason| anyhow::anyhow!("{reason}"))
                .context(
                    "cannot start a private Tansu broker: run scripts/setup.sh to install it \
                     into .tools/bin/tansu, set BATON_TANSU to a tansu binary, or name a \
                     cluster with --kafka HOST:PORT",
                )?;
            Ok(Self::Private { broker, version })
        })
        .await?
    }

    pub(crate) fn bootstrap_servers(&self) -> String {
        match self {
            Self::Private { broker, .. } => broker.bootstrap_servers(),
            Self::External { bootstrap_servers } => bootstrap_servers.clone(),
        }
    }

    /// One line saying which broker the figures are from.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Private { broker, version } => format!(
                "{version} (started by the benchmark, in-memory storage, at {})",
                broker.bootstrap_servers()
            ),
            Self::External { bootstrap_servers } => format!("Kafka at {bootstrap_servers}"),
        }
    }

    /// A new connection with its own producer, as each service process has.
    pub(crate) async fn connect(&self) -> anyhow::Result<Arc<dyn EventLog>> {
        let servers = self.bootstrap_servers();
        let log = KafkaLog::connect(KafkaConfig::new(servers.as_str()))
            .await
            .with_context(|| format!("cannot connect to the broker at {servers}"))?;
        Ok(Arc::new(log))
    }
}

/// The tansu binary `TestBroker` runs (the same search order), as
/// "Tansu 0.6.0".
fn tansu_version() -> String {
    let binary = std::env::var_os("BATON_TANSU")
        .map(PathBuf::from)
        .or_else(|| {
            let installed = PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../.tools/bin/tansu"
            ));
            installed.exists().then_some(installed)
        })
        .unwrap_or_else(|| PathBuf::from("tansu"));
    match std::process::Command::new(&binary)
        .arg("--version")
        .output()
    {
        Ok(output) if output.status.success() => {
            let text = String::from_utf8_lossy(&output.stdout);
            let text = text.trim();
            match text.strip_prefix("tansu ") {
                Some(version) => format!("Tansu {version}"),
                None => format!("Tansu ({text})"),
            }
        }
        _ => format!(
            "Tansu (version unknown: `{} --version` failed)",
            binary.display()
        ),
    }
}

/// Topics no earlier run used, so runs against one cluster never mix:
/// `baton-bench.<benchmark>.<milliseconds since the epoch>.care-events` and
/// likewise `.care-state` and `.dead-letters`.
pub(crate) fn fresh_topics(benchmark: &str, partitions: u32) -> Topics {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis());
    let name = |topic: &str| format!("baton-bench.{benchmark}.{stamp}.{topic}");
    Topics {
        events: name("care-events"),
        state: name("care-state"),
        dead_letters: name("dead-letters"),
        partitions,
    }
}

/// A listener on a free loopback port.
pub(crate) async fn bind_loopback(service: &str) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .with_context(|| format!("cannot listen on a loopback port for the {service} API"))?;
    let address = listener.local_addr()?;
    Ok((listener, address))
}

/// A gRPC connection to `address`.
pub(crate) async fn channel(address: SocketAddr) -> anyhow::Result<Channel> {
    Channel::from_shared(format!("http://{address}"))?
        .connect()
        .await
        .with_context(|| format!("cannot connect to the gRPC API at {address}"))
}

/// Starts the ingest API over `broker` in `services`, taking calls of up to
/// `batch` events, and returns where it listens; it reports `stopped` when
/// stopped.
pub(crate) async fn spawn_ingest<T: Send + 'static>(
    services: &mut InProcess<T>,
    broker: &Broker,
    topics: &Topics,
    batch: usize,
    stopped: T,
) -> anyhow::Result<SocketAddr> {
    let ingest = baton_ingest::Ingest::start(
        broker.connect().await?,
        baton_ingest::IngestConfig {
            max_batch_events: batch.max(baton_ingest::IngestConfig::default().max_batch_events),
            ..baton_ingest::IngestConfig::default()
        },
        topics,
    )
    .await
    .context("starting the ingest service")?;
    let (listener, address) = bind_loopback("ingest").await?;
    let stop = services.shutdown();
    services.spawn("ingest", async move {
        baton_ingest::run(ingest, listener, stop).await?;
        Ok(stopped)
    });
    Ok(address)
}

/// Baton's services running in this process until [`InProcess::stop`];
/// each returns a report `T` when stopped.
#[derive(Debug)]
pub(crate) struct InProcess<T> {
    stop: CancellationToken,
    services: JoinSet<(&'static str, anyhow::Result<T>)>,
}

impl<T: Send + 'static> InProcess<T> {
    pub(crate) fn new() -> Self {
        Self {
            stop: CancellationToken::new(),
            services: JoinSet::new(),
        }
    }

    /// What a service waits on to stop.
    pub(crate) fn shutdown(&self) -> WaitForCancellationFutureOwned {
        self.stop.clone().cancelled_owned()
    }

    pub(crate) fn spawn(
        &mut self,
        service: &'static str,
        running: impl Future<Output = anyhow::Result<T>> + Send + 'static,
    ) {
        self.services
            .spawn(async move { (service, running.await.context(service)) });
    }

    /// Completes when a service stops before it was asked to: the figures
    /// would mean nothing.
    pub(crate) async fn failure(&mut self) -> anyhow::Error {
        match self.services.join_next().await {
            Some(Ok((service, Ok(_)))) => {
                anyhow::anyhow!("the {service} service stopped before the benchmark ended")
            }
            Some(Ok((service, Err(error)))) => {
                error.context(format!("the {service} service failed during the benchmark"))
            }
            Some(Err(error)) => anyhow::anyhow!("a service panicked: {error}"),
            None => std::future::pending().await,
        }
    }

    /// Stops every service and returns their reports.
    pub(crate) async fn stop(mut self) -> anyhow::Result<Vec<T>> {
        self.stop.cancel();
        let mut reports = Vec::new();
        while let Some(stopped) = self.services.join_next().await {
            let (_, report) =
                stopped.map_err(|error| anyhow::anyhow!("a service panicked: {error}"))?;
            reports.push(report?);
        }
        Ok(reports)
    }
}
