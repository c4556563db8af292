//! `baton-ingest`: the ingest service on its own.

use std::net::SocketAddr;

use anyhow::Context;
use baton_ingest::{Ingest, IngestConfig};
use baton_runtime::ServiceArgs;
use clap::Parser;
use serde::Serialize;

/// Baton's ingest service: validates care events and appends them to the
/// event log (gRPC baton.ingest.v1.CareEventIngest).
///
/// Settings come from, in rising precedence: defaults, the [ingest],
/// [kafka] and [topics] tables of --config, BATON_INGEST__<KEY>,
/// BATON_KAFKA__<KEY> and BATON_TOPICS__<KEY> environment variables, and
/// flags. With --kafka it runs beside any number of other Baton processes;
/// without, on the embedded log in --data-dir, which one process at a time
/// can open (to run the whole backbone on one machine use `baton up`).
#[derive(Debug, Parser, Serialize)]
#[command(version)]
struct Args {
    #[command(flatten)]
    #[serde(skip)]
    service: ServiceArgs,
    /// Address the gRPC API listens on [default: 127.0.0.1:50051]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = baton_telemetry::init("baton-ingest")?;
    let config: IngestConfig =
        baton_runtime::load_config(args.service.config.as_deref(), "ingest", &args)?;
    let backbone = args.service.backbone()?;
    let log = backbone.open_log(&args.service.data()).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let ingest = Ingest::start(log.clone(), config, &backbone.topics).await?;
    tracing::info!(log = %backbone.describe(&args.service.data()), "ingest starting");
    baton_ingest::run(ingest, listener, baton_runtime::shutdown_signal()).await?;
    log.flush().await?;
    Ok(())
}
