//! `baton-projector`: the projector on its own.

use baton_projector::{Projector, ProjectorConfig};
use baton_runtime::ServiceArgs;
use baton_store::{Store, StoreConfig};
use clap::Parser;
use serde::Serialize;

/// Baton's projector: folds the care event log into each patient's care
/// state in the projection store, exactly once, dead-lettering what cannot
/// be applied.
///
/// Settings come from, in rising precedence: defaults, the [projector]
/// table of --config, BATON_PROJECTOR__<KEY> environment variables, and
/// flags. The embedded log can be opened by one process at a time: to run
/// the whole backbone on one machine use `baton up`.
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
    baton_telemetry::init("baton-projector")?;
    let config: ProjectorConfig =
        baton_runtime::load_config(args.service.config.as_deref(), "projector", &args)?;
    let data = args.service.data();
    let log = data.open_log()?;
    let store = Store::open(data.store_path(), &StoreConfig::default())?;
    let projector = Projector::start(log.clone(), store, config).await?;
    baton_projector::run(projector, baton_runtime::shutdown_signal()).await?;
    log.flush().await?;
    Ok(())
}
