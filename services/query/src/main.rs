//! `baton-query`: the query service on its own.

use std::net::SocketAddr;

use anyhow::Context;
use baton_query::{QueryConfig, QueryService};
use baton_runtime::ServiceArgs;
use baton_store::{Store, StoreConfig};
use clap::Parser;
use serde::Serialize;

/// Baton's query service: patients' current care state and cohorts over
/// gRPC (baton.query.v1.CareStateQuery), read from the projection store.
///
/// Settings come from, in rising precedence: defaults, the [query] table
/// of --config, BATON_QUERY__<KEY> environment variables, and flags. The
/// projection store can be opened by one process at a time: to run the
/// whole backbone on one machine use `baton up`.
#[derive(Debug, Parser, Serialize)]
#[command(version)]
struct Args {
    #[command(flatten)]
    #[serde(skip)]
    service: ServiceArgs,
    /// Address the gRPC API listens on [default: 127.0.0.1:50052]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    baton_telemetry::init("baton-query")?;
    let config: QueryConfig =
        baton_runtime::load_config(args.service.config.as_deref(), "query", &args)?;
    let store = Store::open(args.service.data().store_path(), &StoreConfig::default())?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    baton_query::run(
        QueryService::new(store, config),
        listener,
        baton_runtime::shutdown_signal(),
    )
    .await?;
    Ok(())
}
