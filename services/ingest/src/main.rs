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
/// Settings come from, in rising precedence: defaults, the [ingest] table
/// of --config, BATON_INGEST__<KEY> environment variables, and flags.
/// The embedded log can be opened by one process at a time: to run the
/// whole backbone on one machine use `baton up`.
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
    /// Partitions of the events topic when it is created [default: 8]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    partitions: Option<u32>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    baton_telemetry::init("baton-ingest")?;
    let config: IngestConfig =
        baton_runtime::load_config(args.service.config.as_deref(), "ingest", &args)?;
    let log = args.service.data().open_log()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let ingest = Ingest::start(log.clone(), config).await?;
    baton_ingest::run(ingest, listener, baton_runtime::shutdown_signal()).await?;
    log.flush().await?;
    Ok(())
}
