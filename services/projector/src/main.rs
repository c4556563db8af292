//! `baton-projector`: the projector on its own.

use std::sync::Arc;

use anyhow::Context;
use baton_projector::dead_letters::DeadLetters;
use baton_projector::{AdminService, Projector, ProjectorConfig, Replays};
use baton_runtime::{Listen, ServiceArgs, SystemClock};
use baton_store::Store;
use baton_telemetry::metrics::{self, Readiness};
use clap::Parser;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// mimalloc, configured by `baton_alloc::configure` first thing in `main`
/// (see baton-alloc for why and what it measured).
#[global_allocator]
static ALLOCATOR: baton_alloc::Allocator = baton_alloc::Allocator;

/// Baton's projector: folds the care event log into each patient's care
/// state in the projection store (in --data-dir), exactly once,
/// dead-lettering what cannot be applied, and publishes every committed
/// state to the state changelog topic for query replicas.
///
/// It serves the admin API (baton.admin.v1.Operations) on --admin-listen,
/// for `baton replay`, `baton verify`, `baton lag` and `baton dlq`, and
/// Prometheus metrics on --metrics-listen (/metrics, with /live, and
/// /ready once it has applied the log's end as it was at start). It commits
/// its applied positions to the Kafka consumer group `consumer_group`
/// (default baton-projector) for Kafka's lag tools; it never reads them
/// back.
///
/// Settings come from, in rising precedence: defaults, the [projector],
/// [kafka] and [topics] tables of --config, BATON_PROJECTOR__<KEY>,
/// BATON_KAFKA__<KEY> and BATON_TOPICS__<KEY> environment variables, and
/// flags.
///
/// On its own (no --instance-id) it reads every partition: run one per
/// events topic. With --instance-id (e.g. the pod name), projectors of the
/// same consumer_group share the partitions (Kafka consumer group,
/// cooperative-sticky, static membership): each restores a partition it is
/// given from the changelog, finishes and commits a partition before giving
/// it back, and never commits or publishes for one it no longer owns.
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
    /// Address of the admin API, or "off" [default: 127.0.0.1:50053]
    #[arg(long, value_name = "HOST:PORT|off")]
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_listen: Option<Listen>,
    /// Address of /metrics, /live and /ready, or "off" [default: 127.0.0.1:9462]
    #[arg(long, value_name = "HOST:PORT|off")]
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_listen: Option<Listen>,
    /// Join the projector group under this static identity, e.g. the pod
    /// name (Kafka only) [default: none: read every partition alone]
    #[arg(long, value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    instance_id: Option<String>,
    /// In a group: how long a silent projector keeps its partitions
    /// [default: 6000, the least Kafka brokers accept by default]
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    session_timeout_ms: Option<u64>,
    /// In a group: join as a static member (group.instance.id), so a
    /// restart within the session timeout moves no partition [default: true]
    #[arg(long, value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    static_membership: Option<bool>,
    /// Consumer group of the projector group, and of the positions committed
    /// for Kafka's lag tools [default: baton-projector]
    #[arg(long, value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    consumer_group: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let allocator = baton_alloc::configure();
    let args = Args::parse();
    // Installed first: a stop asked for while starting is answered once
    // started, instead of killing the process.
    let shutdown = baton_runtime::shutdown_signal();
    let _telemetry = baton_telemetry::init("baton-projector")?;
    match allocator.refused() {
        Some(_) => tracing::info!(%allocator, "allocator configured, not as Baton would"),
        None => tracing::debug!(%allocator, "allocator configured"),
    }
    let config: ProjectorConfig =
        baton_runtime::load_config(args.service.config.as_deref(), "projector", &args)?;
    config
        .validate()
        .map_err(|problem| anyhow::anyhow!("invalid configuration: projector.{problem}"))?;
    let backbone = args.service.backbone()?;
    let exposed: Vec<_> = [
        ("projector.admin_listen", config.admin_listen.address()),
        ("projector.metrics_listen", config.metrics_listen.address()),
    ]
    .into_iter()
    .filter_map(|(setting, address)| address.map(|address| (setting, address)))
    .collect();
    baton_tls::check_exposure(
        "projector",
        &exposed,
        config.tls.is_on(),
        config.tls.is_mutual() || config.jwt.is_on(),
        args.service.insecure,
    )?;
    let tls =
        baton_tls::ServiceTls::load(&config.tls).context("invalid configuration: projector")?;
    let clients = baton_tls::Clients::new(&config.clients)
        .map_err(|problem| anyhow::anyhow!("invalid configuration: projector.{problem}"))?
        .with_tokens(
            baton_tls::TokenVerifier::load(&config.jwt)
                .map_err(|problem| anyhow::anyhow!("invalid configuration: projector.{problem}"))?,
        );
    let data = args.service.data();
    baton_projector::metrics::register();
    let readiness = Readiness::new();
    let caught_up = readiness.gate("projector catching up with the log");
    let stop = CancellationToken::new();
    let metrics_server = metrics::bind(config.metrics_listen).await?.map(|listener| {
        tokio::spawn(metrics::serve(
            baton_tls::TlsListener::new(listener, tls.http.clone()),
            readiness.clone(),
            stop.clone().cancelled_owned(),
        ))
    });
    let log = backbone.open_log(&data).await?;
    let audit_log = backbone.open_audit_log(&data, &log)?;
    let auditor = baton_audit::Auditor::start(audit_log.clone(), &config.audit, "admin")
        .await
        .context("cannot start the audit log")?;
    let clients = Arc::new(clients.with_refusal_hook(auditor.refusal_hook()));
    let generations = data.store_generations();
    let store_path = generations.live_path()?;
    let store = Store::open(&store_path, &config.store())?;
    let admin_listener = match config.admin_listen.address() {
        Some(address) => Some(tokio::net::TcpListener::bind(address).await.with_context(|| {
            format!("cannot listen on {address} for the admin API (choose another with --admin-listen, or --admin-listen off)")
        })?),
        None => None,
    };
    let projector = Projector::start(
        log.clone(),
        store.clone(),
        config.clone(),
        backbone.topics.clone(),
    )
    .await?;
    let membership = match projector.group_settings() {
        Some(settings) => Some(
            log.join_group(&backbone.topics.events, &settings)
                .await
                .context("cannot join the projector group")?,
        ),
        None => None,
    };
    let replays = Replays::new(
        log.clone(),
        store.clone(),
        generations,
        config.clone(),
        backbone.topics.clone(),
        Vec::new(),
    )
    .with_ownership(membership.as_ref().map(|membership| membership.ownership()));
    replays.resume_interrupted()?;
    let dead_letters = DeadLetters::new(
        log.clone(),
        backbone.topics.clone(),
        baton_projector::dead_letters::purge_start(
            &log,
            &backbone.topics,
            backbone.is_kafka(),
            data.dead_letters_start_path(),
        ),
    );
    let monitor = baton_projector::metrics::spawn_group_monitor(
        log.clone(),
        store.clone(),
        &backbone.topics,
        &config,
        Some(caught_up),
        Arc::new(SystemClock),
        membership
            .as_ref()
            .map(baton_projector::metrics::GroupShare::of),
        stop.clone().cancelled_owned(),
    );
    let admin = AdminService::projector(
        store,
        log.clone(),
        backbone.topics.clone(),
        replays,
        dead_letters,
    )
    .with_audit_log(audit_log, config.audit.topic.clone());
    let admin = match &membership {
        Some(membership) => admin.with_ownership(membership.ownership()),
        None => admin,
    };
    tracing::info!(
        log = %backbone.describe(&data),
        store = %store_path.display(),
        admin = %config.admin_listen,
        metrics = %config.metrics_listen,
        instance_id = %config.instance_id,
        "projector starting"
    );
    let outcome = baton_projector::run_with_admin(
        projector,
        membership,
        admin_listener.map(|listener| {
            (
                admin,
                baton_tls::TlsListener::new(listener, tls.grpc.clone()).with_clients(clients),
            )
        }),
        shutdown,
    )
    .await;
    stop.cancel();
    monitor.await?;
    if let Some(server) = metrics_server {
        server.await?;
    }
    auditor.drain(std::time::Duration::from_secs(5)).await;
    outcome?;
    log.flush().await?;
    Ok(())
}
