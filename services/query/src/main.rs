//! `baton-query`: a query replica on its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use baton_audit::Auditor;
use baton_projector::AdminService;
use baton_query::{Materialiser, QueryConfig, QueryService, TimelineIndexer};
use baton_runtime::{ServiceArgs, SystemClock};
use baton_store::Store;
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

/// Baton's query service: patients' current care state and cohorts over
/// gRPC (baton.query.v1.CareStateQuery).
///
/// It keeps its own copy of the projection in --data-dir, materialised from
/// the state changelog topic (baton.care-state.v1), so several replicas can
/// run beside one projector, and files every event of the event log
/// (baton.care-events.v1) on its patient's timeline for GetTimeline and
/// GetCareStateAsOf. On start it catches up with both before it listens; a
/// fresh data folder is filled from the compacted changelog and the log.
///
/// Prometheus metrics are served on --metrics-listen from the start: /live,
/// and /ready once the catch-up is done; its own lag behind the events log
/// is among them.
///
/// Settings come from, in rising precedence: defaults, the [query], [kafka]
/// and [topics] tables of --config, BATON_QUERY__<KEY>, BATON_KAFKA__<KEY>
/// and BATON_TOPICS__<KEY> environment variables, and flags.
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
    /// Address of the read-only admin API (positions and digest, for
    /// `baton lag` and `baton verify --replica`), or "off"
    /// [default: 127.0.0.1:50054]
    #[arg(long, value_name = "HOST:PORT|off")]
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_listen: Option<baton_runtime::Listen>,
    /// Address of /metrics, /live and /ready, or "off" [default: 127.0.0.1:9463]
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
    let _telemetry = baton_telemetry::init("baton-query")?;
    match allocator.refused() {
        Some(_) => tracing::info!(%allocator, "allocator configured, not as Baton would"),
        None => tracing::debug!(%allocator, "allocator configured"),
    }
    let config: QueryConfig =
        baton_runtime::load_config(args.service.config.as_deref(), "query", &args)?;
    config
        .validate()
        .map_err(|problem| anyhow::anyhow!("invalid configuration: query.{problem}"))?;
    let backbone = args.service.backbone()?;
    let mut exposed = vec![("query.listen", config.listen)];
    exposed.extend(
        config
            .admin_listen
            .address()
            .map(|a| ("query.admin_listen", a)),
    );
    exposed.extend(
        config
            .metrics_listen
            .address()
            .map(|a| ("query.metrics_listen", a)),
    );
    baton_tls::check_exposure(
        "query",
        &exposed,
        config.tls.is_on(),
        config.tls.is_mutual() || config.jwt.is_on(),
        args.service.insecure,
    )?;
    let tls = baton_tls::ServiceTls::load(&config.tls).context("invalid configuration: query")?;
    let clients = baton_tls::Clients::new(&config.clients)
        .map_err(|problem| anyhow::anyhow!("invalid configuration: query.{problem}"))?
        .with_tokens(
            baton_tls::TokenVerifier::load(&config.jwt)
                .map_err(|problem| anyhow::anyhow!("invalid configuration: query.{problem}"))?,
        );
    let data = args.service.data();
    baton_query::metrics::register();
    let readiness = Readiness::new();
    let caught_up =
        readiness.gate("replica catching up with the state changelog and the event log");
    let stop = CancellationToken::new();
    let metrics_server = metrics::bind(config.metrics_listen).await?.map(|listener| {
        tokio::spawn(metrics::serve(
            TlsListener::new(listener, tls.http.clone()),
            readiness.clone(),
            stop.clone().cancelled_owned(),
        ))
    });
    let log = backbone.open_log(&data).await?;
    let audit_log = backbone.open_audit_log(&data, &log)?;
    let auditor = Auditor::start(audit_log.clone(), &config.audit, "query")
        .await
        .context("cannot start the audit log")?;
    let clients = Arc::new(clients.with_refusal_hook(auditor.refusal_hook()));
    let admin_clients = clients.clone();
    let store = Store::open(data.replica_store_path(), &config.store())?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let admin_listener = match config.admin_listen.address() {
        Some(address) => Some(tokio::net::TcpListener::bind(address).await.with_context(|| {
            format!("cannot listen on {address} for the admin API (choose another with --admin-listen, or --admin-listen off)")
        })?),
        None => None,
    };

    let monitor = baton_query::metrics::spawn_replica_monitor(
        log.clone(),
        store.clone(),
        &backbone.topics,
        Duration::from_millis(config.monitor_interval_ms),
        Arc::new(SystemClock),
        stop.clone().cancelled_owned(),
    );
    let mut materialiser =
        Materialiser::start(log.clone(), store.clone(), backbone.topics.clone()).await?;
    let mut timeline = TimelineIndexer::start(log.clone(), store.clone(), &backbone.topics).await?;
    tracing::info!(log = %backbone.describe(&data), store = %data.replica_store_path().display(), metrics = %config.metrics_listen, "catching up with the state changelog and the event log");
    materialiser.catch_up().await?;
    timeline.catch_up().await?;
    caught_up.ready();

    let mut following = {
        let stop = stop.clone();
        tokio::spawn(async move { materialiser.run(stop.cancelled_owned()).await.map(drop) })
    };
    let mut filing = {
        let stop = stop.clone();
        tokio::spawn(async move { timeline.run(stop.cancelled_owned()).await.map(drop) })
    };
    let grpc_tls = tls.grpc.clone();
    let admin = AdminService::replica(store.clone(), log, backbone.topics.clone())
        .with_audit_log(audit_log, config.audit.topic.clone());
    let mut administered = tokio::spawn({
        let stop = stop.clone();
        async move {
            match admin_listener {
                Some(listener) => {
                    baton_projector::admin::serve(
                        admin,
                        TlsListener::new(listener, tls.grpc.clone()).with_clients(admin_clients),
                        stop.cancelled_owned(),
                    )
                    .await
                }
                None => {
                    stop.cancelled().await;
                    Ok(())
                }
            }
        }
    });
    let service = QueryService::new(store, config, &backbone.topics).with_auditor(auditor.clone());
    let mut served = tokio::spawn(baton_query::run(
        service,
        TlsListener::new(listener, grpc_tls).with_clients(clients),
        stop.clone().cancelled_owned(),
    ));
    // Whichever ends first (a signal, or a task failing) stops both.
    let first = tokio::select! {
        () = shutdown => None,
        outcome = &mut served => Some(outcome.context("query server")?.context("query server")),
        outcome = &mut following => Some(outcome.context("changelog follower")?.context("changelog follower")),
        outcome = &mut filing => Some(outcome.context("timeline indexer")?.context("timeline indexer")),
        outcome = &mut administered => Some(outcome.context("admin API")?.context("admin API")),
    };
    stop.cancel();
    if let Some(outcome) = first {
        outcome?;
        anyhow::bail!("a query task stopped unexpectedly");
    }
    served.await.context("query server")??;
    following.await.context("changelog follower")??;
    filing.await.context("timeline indexer")??;
    administered.await.context("admin API")??;
    auditor.drain(Duration::from_secs(5)).await;
    monitor.await.context("replica monitor")?;
    if let Some(server) = metrics_server {
        server.await.context("metrics listener")?;
    }
    Ok(())
}
