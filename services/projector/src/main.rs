//! `baton-projector`: the projector on its own.

use baton_projector::{Projector, ProjectorConfig};
use baton_runtime::ServiceArgs;
use baton_store::Store;
use clap::Parser;
use serde::Serialize;

/// Baton's projector: folds the care event log into each patient's care
/// state in the projection store (in --data-dir), exactly once,
/// dead-lettering what cannot be applied, and publishes every committed
/// state to the state changelog topic for query replicas.
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = baton_telemetry::init("baton-projector")?;
    let config: ProjectorConfig =
        baton_runtime::load_config(args.service.config.as_deref(), "projector", &args)?;
    let backbone = args.service.backbone()?;
    let data = args.service.data();
    let log = backbone.open_log(&data).await?;
    let store = Store::open(data.store_path(), &config.store())?;
    let projector = Projector::start(log.clone(), store, config, backbone.topics.clone()).await?;
    tracing::info!(log = %backbone.describe(&data), store = %data.store_path().display(), "projector starting");
    baton_projector::run(projector, baton_runtime::shutdown_signal()).await?;
    log.flush().await?;
    Ok(())
}
