//! `baton-ingest`: the ingest service on its own.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use baton_ingest::mllp::SystemClock;
use baton_ingest::{Ingest, IngestConfig, Mllp, MllpListen};
use baton_runtime::ServiceArgs;
use baton_telemetry::Listen;
use baton_telemetry::metrics::{self, Readiness};
use baton_tls::TlsListener;
use clap::Parser;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// mimalloc, configured by `baton_alloc::configure` first thing in `main`
/// (see baton-alloc for why and what it measured).
#[global_allocator]
static ALLOCATOR: baton_alloc::Allocator = baton_alloc::Allocator;

/// Baton's ingest service: validates care events and appends them to the
/// event log (gRPC baton.ingest.v1.CareEventIngest, and HL7 v2 ADT/REF
/// messages over MLLP).
///
/// Settings come from, in rising precedence: defaults, the [ingest],
/// [kafka] and [topics] tables of --config, BATON_INGEST__<KEY>,
/// BATON_KAFKA__<KEY> and BATON_TOPICS__<KEY> environment variables, and
/// flags. Prometheus metrics are served on --metrics-listen (/metrics,
/// /live, and /ready while the event log answers).
///
/// With --kafka it runs beside any number of other Baton processes;
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
    /// Address of the HL7 v2 MLLP listener, or "off" [default: 127.0.0.1:2575]
    #[arg(long, value_name = "HOST:PORT|off")]
    #[serde(skip_serializing_if = "Option::is_none")]
    mllp_listen: Option<MllpListen>,
    /// Address of /metrics, /live and /ready, or "off" [default: 127.0.0.1:9461]
    #[arg(long, value_name = "HOST:PORT|off")]
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_listen: Option<Listen>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let allocator = baton_alloc::configure();
    let args = Args::parse();
    // Installed first: a stop asked for while starting is answered once
    // started, instead of killing the process.
    let shutdown = baton_runtime::shutdown_signal();
    let _telemetry = baton_telemetry::init("baton-ingest")?;
    match allocator.refused() {
        Some(_) => tracing::info!(%allocator, "allocator configured, not as Baton would"),
        None => tracing::debug!(%allocator, "allocator configured"),
    }
    let config: IngestConfig =
        baton_runtime::load_config(args.service.config.as_deref(), "ingest", &args)?;
    config
        .validate()
        .map_err(|problem| anyhow::anyhow!("invalid configuration: ingest.{problem}"))?;
    let backbone = args.service.backbone()?;
    let mut exposed = vec![("ingest.listen", config.listen)];
    exposed.extend(
        config
            .mllp_listen
            .address()
            .map(|a| ("ingest.mllp_listen", a)),
    );
    exposed.extend(
        config
            .metrics_listen
            .address()
            .map(|a| ("ingest.metrics_listen", a)),
    );
    baton_tls::check_exposure(
        "ingest",
        &exposed,
        config.tls.is_on(),
        config.tls.is_mutual() || config.jwt.is_on(),
        args.service.insecure,
    )?;
    let tls = baton_tls::ServiceTls::load(&config.tls).context("invalid configuration: ingest")?;
    let clients = baton_tls::Clients::new(&config.clients)
        .map_err(|problem| anyhow::anyhow!("invalid configuration: ingest.{problem}"))?
        .with_tokens(
            baton_tls::TokenVerifier::load(&config.jwt)
                .map_err(|problem| anyhow::anyhow!("invalid configuration: ingest.{problem}"))?,
        );
    baton_ingest::metrics::register();
    let readiness = Readiness::new();
    let log_reachable = readiness.gate("event log reachable");
    let stop = CancellationToken::new();
    let metrics_server = metrics::bind(config.metrics_listen).await?.map(|listener| {
        tokio::spawn(metrics::serve(
            TlsListener::new(listener, tls.http.clone()),
            readiness.clone(),
            stop.clone().cancelled_owned(),
        ))
    });
    let data = args.service.data();
    let log = backbone.open_log(&data).await?;
    let auditor = baton_audit::Auditor::start(
        backbone.open_audit_log(&data, &log)?,
        &config.audit,
        "ingest",
    )
    .await
    .context("cannot start the audit log")?;
    let clients = Arc::new(clients.with_refusal_hook(auditor.refusal_hook()));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let mllp_listener = match config.mllp_listen.address() {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} for HL7 v2 over MLLP (choose another address with --mllp-listen, or turn it off with --mllp-listen off)"))?,
        ),
        None => None,
    };
    let ingest = Ingest::start(log.clone(), config.clone(), &backbone.topics).await?;
    let mllp = Mllp::new(ingest.clone(), &config, Arc::new(SystemClock))?;
    let mllp = mllp_listener.map(|listener| {
        (
            mllp,
            TlsListener::new(listener, tls.mllp.clone()).with_clients(clients.clone()),
        )
    });
    let probe = tokio::spawn(baton_ingest::metrics::probe_log(
        log.clone(),
        backbone.topics.events.clone(),
        log_reachable,
        baton_ingest::metrics::LOG_PROBE_INTERVAL,
        stop.clone().cancelled_owned(),
    ));
    tracing::info!(log = %backbone.describe(&args.service.data()), mllp = %config.mllp_listen, metrics = %config.metrics_listen, tls = config.tls.is_on(), "ingest starting");
    let served = baton_ingest::run_with_mllp(
        ingest,
        TlsListener::new(listener, tls.grpc.clone()).with_clients(clients),
        mllp,
        shutdown,
    )
    .await;
    stop.cancel();
    probe.await?;
    if let Some(server) = metrics_server {
        server.await?;
    }
    served?;
    auditor.drain(std::time::Duration::from_secs(5)).await;
    log.flush().await?;
    Ok(())
}
