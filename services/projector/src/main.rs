//! `baton-projector`: the projector on its own.

use std::sync::Arc;

use baton_projector::{Projector, ProjectorConfig};
use baton_runtime::{ServiceArgs, SystemClock};
use baton_store::Store;
use baton_telemetry::metrics::{self, MetricsListen, Readiness};
use clap::Parser;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// Baton's projector: folds the care event log into each patient's care
/// state in the projection store (in --data-dir), exactly once,
/// dead-lettering what cannot be applied, and publishes every committed
/// state to the state changelog topic for query replicas.
///
/// It serves Prometheus metrics on --metrics-listen (/metrics, with /live,
/// and /ready once it has applied the log's end as it was at start), and
/// commits its applied positions to the Kafka consumer group
/// `consumer_group` (default baton-projector) for Kafka's lag tools; it
/// never reads them back.
///
/// Settings come from, in rising precedence: defaults, the [projector],
/// [kafka] and [topics] tables of --config, BATON_PROJECTOR__<KEY>,
/// BATON_KAFKA__<KEY> and BATON_TOPICS__<KEY> environment variables, and
/// flags. Run one projector per events topic: it reads every partition.
#[derive(Debug, Parser, Serialize)]
#[command(version)]
struct Args {
    #[command(flatten)]
    #[serde(skip)]
    service: ServiceArgs,
    /// Most records folded and committed together [default: 10000]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    batch_max_records: Option<usize>,
    /// Address of /metrics, /live and /ready, or "off" [default: 127.0.0.1:9462]
    #[arg(long, value_name = "HOST:PORT|off")]
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_listen: Option<MetricsListen>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = baton_telemetry::init("baton-projector")?;
    let config: ProjectorConfig =
        baton_runtime::load_config(args.service.config.as_deref(), "projector", &args)?;
    let backbone = args.service.backbone()?;
    let data = args.service.data();
    baton_projector::metrics::register();
    let readiness = Readiness::new();
    let caught_up = readiness.gate("projector catching up with the log");
    let stop = CancellationToken::new();
    let metrics_server = metrics::bind(config.metrics_listen).await?.map(|listener| {
        tokio::spawn(metrics::serve(
            listener,
            readiness.clone(),
            stop.clone().cancelled_owned(),
        ))
    });
    let log = backbone.open_log(&data).await?;
    let store = Store::open(data.store_path(), &config.store())?;
    let projector = Projector::start(
        log.clone(),
        store.clone(),
        config.clone(),
        backbone.topics.clone(),
    )
    .await?;
    let monitor = baton_projector::metrics::spawn_monitor(
        log.clone(),
        store,
        &backbone.topics,
        &config,
        Some(caught_up),
        Arc::new(SystemClock),
        stop.clone().cancelled_owned(),
    );
    tracing::info!(log = %backbone.describe(&data), store = %data.store_path().display(), metrics = %config.metrics_listen, "projector starting");
    let outcome = baton_projector::run(projector, baton_runtime::shutdown_signal()).await;
    stop.cancel();
    monitor.await?;
    if let Some(server) = metrics_server {
        server.await?;
    }
    outcome?;
    log.flush().await?;
    Ok(())
}
