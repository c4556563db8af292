//! `baton up`: the ingest API (gRPC, and HL7 v2 over MLLP), the projector
//! and the query API in one process, over the embedded log in a local data
//! folder, or over Kafka with `--kafka`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use baton_audit::Auditor;
use baton_ingest::mllp::SystemClock;
use baton_ingest::{Ingest, IngestConfig, Mllp, MllpListen};
use baton_projector::dead_letters::DeadLetters;
use baton_projector::{AdminService, Projector, ProjectorConfig, Replays};
use baton_query::{QueryConfig, QueryService, TimelineIndexer, TimelineRebuild};
use baton_runtime::{Backbone, DataDir, Listen};
use baton_store::Store;
use baton_telemetry::metrics::{self, Readiness};
use baton_tls::TlsListener;
use clap::Args;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Run the whole backbone in one process.
///
/// Starts the ingest API (gRPC, and HL7 v2 over MLLP on --mllp-listen),
/// the projector and the query API over an event log and a projection store kept in --data-dir (created if missing;
/// restarting shows the same states). The log is embedded in --data-dir
/// too, unless --kafka names a Kafka cluster: then the events, the state
/// changelog and the dead letters are Kafka topics, created if missing, and
/// query replicas (`baton-query`) can run beside it. Ctrl-C stops it
/// cleanly.
///
/// One listener (--metrics-listen) serves the Prometheus metrics of all
/// three, /live, and /ready once the projector has caught up with the log.
///
/// Settings come from, in rising precedence: defaults, the [up], [kafka]
/// and [topics] tables of --config, BATON_UP__<KEY>, BATON_KAFKA__<KEY> and
/// BATON_TOPICS__<KEY> environment variables, and flags.
#[derive(Debug, Args, Serialize)]
pub(crate) struct UpArgs {
    /// TOML configuration file
    #[arg(long, env = "BATON_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Folder for the projection store, and the embedded log when not on
    /// Kafka [default: baton-data]
    #[arg(long, env = "BATON_DATA_DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    /// Address of the ingest API [default: 127.0.0.1:50051]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    ingest_listen: Option<SocketAddr>,
    /// Address of the query API [default: 127.0.0.1:50052]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    query_listen: Option<SocketAddr>,
    /// Address of the HL7 v2 MLLP listener, or "off" [default: 127.0.0.1:2575]
    #[arg(long, value_name = "HOST:PORT|off")]
    #[serde(skip_serializing_if = "Option::is_none")]
    mllp_listen: Option<MllpListen>,
    /// Address of the admin API (baton replay, verify, lag, dlq), or "off"
    /// [default: 127.0.0.1:50053]
    #[arg(long, value_name = "HOST:PORT|off")]
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_listen: Option<Listen>,
    /// Address of /metrics, /live and /ready, or "off" [default: 127.0.0.1:9460]
    #[arg(long, value_name = "HOST:PORT|off")]
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_listen: Option<Listen>,
    #[command(flatten)]
    #[serde(skip)]
    log: baton_runtime::LogFlags,
    /// Serve a listener beyond loopback without TLS and client
    /// authentication (refused otherwise); warned about at every start
    #[arg(long)]
    #[serde(skip)]
    insecure: bool,
    /// Publish a synthetic population through the ingest API once started:
    /// journeys of the weeks before, dated up to now
    #[arg(long)]
    #[serde(skip)]
    demo: bool,
    /// Patients in the demo population
    #[arg(long, default_value_t = 300, requires = "demo")]
    #[serde(skip)]
    demo_patients: usize,
    /// Seed of the demo population (the same seed gives the same patients)
    #[arg(long, default_value_t = 1, requires = "demo")]
    #[serde(skip)]
    demo_seed: u64,
}

/// The port `baton up` serves `/metrics`, `/live` and `/ready` on unless
/// configured otherwise (the services on their own use 9461 to 9463).
pub(crate) const DEFAULT_METRICS_PORT: u16 = 9460;

/// Settings of `baton up`, as the `[up]` table of a configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct UpConfig {
    data_dir: PathBuf,
    ingest_listen: SocketAddr,
    query_listen: SocketAddr,
    mllp_listen: MllpListen,
    admin_listen: Listen,
    /// The one metrics listener of the three services.
    metrics_listen: Listen,
    /// TLS of every listener (`[up.tls]`: cert, key, client_ca,
    /// handshake_timeout_ms).
    tls: baton_tls::TlsConfig,
    /// Client identities and scopes (`[[up.clients]]`), for every API.
    clients: Vec<baton_tls::ClientEntry>,
    /// Bearer tokens (`[up.jwt]`), for every API.
    jwt: baton_tls::JwtConfig,
    /// The audit log of every read and refusal (`[up.audit]`), in the
    /// data folder's `audit/` (or the audit topic on Kafka).
    audit: baton_audit::AuditConfig,
    projector: ProjectorConfig,
    query: QueryConfig,
    ingest: IngestConfig,
}

impl Default for UpConfig {
    fn default() -> Self {
        let ingest = IngestConfig::default();
        let query = QueryConfig::default();
        let projector = ProjectorConfig::default();
        Self {
            data_dir: PathBuf::from("baton-data"),
            ingest_listen: ingest.listen,
            query_listen: query.listen,
            mllp_listen: ingest.mllp_listen,
            admin_listen: projector.admin_listen,
            metrics_listen: Listen::loopback(DEFAULT_METRICS_PORT),
            tls: baton_tls::TlsConfig::default(),
            clients: Vec::new(),
            jwt: baton_tls::JwtConfig::default(),
            audit: baton_audit::AuditConfig::default(),
            projector,
            query,
            ingest,
        }
    }
}

impl UpConfig {
    /// Makes the per-service settings agree with the top-level ones. On
    /// the embedded log the projector publishes no changelog: the query API
    /// reads its store, and nothing else could read the log.
    fn resolve(mut self, backbone: &Backbone) -> Self {
        self.ingest.listen = self.ingest_listen;
        self.ingest.mllp_listen = self.mllp_listen;
        self.query.listen = self.query_listen;
        self.projector.admin_listen = self.admin_listen;
        self.ingest.metrics_listen = self.metrics_listen;
        self.projector.metrics_listen = self.metrics_listen;
        self.query.metrics_listen = self.metrics_listen;
        self.ingest.tls = self.tls.clone();
        self.query.tls = self.tls.clone();
        self.projector.tls = self.tls.clone();
        self.ingest.clients = self.clients.clone();
        self.query.clients = self.clients.clone();
        self.projector.clients = self.clients.clone();
        self.ingest.jwt = self.jwt.clone();
        self.query.jwt = self.jwt.clone();
        self.projector.jwt = self.jwt.clone();
        self.query.audit = self.audit.clone();
        self.projector.audit = self.audit.clone();
        self.ingest.audit = self.audit.clone();
        if !backbone.is_kafka() {
            self.projector.publish_states = false;
        }
        self
    }
}

#[allow(clippy::print_stdout)]
pub(crate) async fn up(args: UpArgs) -> anyhow::Result<()> {
    // Installed first: a stop asked for while starting is answered once
    // started, instead of killing the process.
    let mut stopping = std::pin::pin!(baton_runtime::shutdown_signal());
    let _telemetry = baton_telemetry::init("baton")?;
    let backbone = Backbone::load(args.config.as_deref(), &args.log)?;
    let config: UpConfig =
        baton_runtime::load_config::<UpConfig>(args.config.as_deref(), "up", &args)?
            .resolve(&backbone);
    config
        .query
        .validate()
        .map_err(|problem| anyhow::anyhow!("invalid configuration: up.query.{problem}"))?;
    let exposed: Vec<_> = [
        ("up.ingest_listen", Some(config.ingest_listen)),
        ("up.query_listen", Some(config.query_listen)),
        ("up.mllp_listen", config.mllp_listen.address()),
        ("up.admin_listen", config.admin_listen.address()),
        ("up.metrics_listen", config.metrics_listen.address()),
    ]
    .into_iter()
    .filter_map(|(setting, address)| address.map(|address| (setting, address)))
    .collect();
    baton_tls::check_exposure(
        "up",
        &exposed,
        config.tls.is_on(),
        config.tls.is_mutual() || config.jwt.is_on(),
        args.insecure,
    )?;
    let tls = baton_tls::ServiceTls::load(&config.tls).context("invalid configuration: up")?;
    if !config.clients.is_empty() && !config.tls.is_mutual() && !config.jwt.is_on() {
        anyhow::bail!(
            "invalid configuration: up.clients: a clients table needs a way to identify clients: client certificates (up.tls.client_ca) or bearer tokens (up.jwt.issuer)"
        );
    }
    let data = DataDir::new(&config.data_dir);
    std::fs::create_dir_all(data.root())
        .with_context(|| format!("cannot create {}", data.root().display()))?;
    let log = backbone.open_log(&data).await?;
    let audit_log = backbone.open_audit_log(&data, &log)?;
    let auditor = Auditor::start(audit_log.clone(), &config.audit, "query")
        .await
        .context("cannot start the audit log")?;
    let clients = Arc::new(
        baton_tls::Clients::new(&config.clients)
            .map_err(|problem| anyhow::anyhow!("invalid configuration: up.{problem}"))?
            .with_tokens(
                baton_tls::TokenVerifier::load(&config.jwt)
                    .map_err(|problem| anyhow::anyhow!("invalid configuration: up.{problem}"))?,
            )
            .with_refusal_hook(auditor.refusal_hook()),
    );
    baton_ingest::metrics::register();
    baton_projector::metrics::register();
    baton_query::metrics::register();
    let readiness = Readiness::new();
    let caught_up = readiness.gate("projector catching up with the log");
    let metrics_listener = metrics::bind(config.metrics_listen).await?;
    let metrics_address = metrics_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let generations = data.store_generations();
    let store_path = generations.live_path()?;
    // One store serves the projector and the query API: the larger cache.
    let mut store_config = config.projector.store();
    store_config.cache_capacity_bytes = store_config
        .cache_capacity_bytes
        .max(config.query.store().cache_capacity_bytes);
    let store = Store::open(&store_path, &store_config).with_context(|| {
        format!(
            "cannot open the projection store in {}",
            store_path.display()
        )
    })?;

    let ingest_listener = bind(config.ingest_listen, "ingest").await?;
    let query_listener = bind(config.query_listen, "query").await?;
    let mllp_listener = match config.mllp_listen.address() {
        Some(address) => Some(TcpListener::bind(address).await.with_context(|| {
            format!("cannot listen on {address} for HL7 v2 over MLLP: is another Baton running? (choose another address with --mllp-listen, or --mllp-listen off)")
        })?),
        None => None,
    };
    let admin_listener = match config.admin_listen.address() {
        Some(address) => Some(TcpListener::bind(address).await.with_context(|| {
            format!("cannot listen on {address} for the admin API: is another Baton running? (choose another address with --admin-listen, or --admin-listen off)")
        })?),
        None => None,
    };
    let admin_address = admin_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let mllp_address = mllp_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let ingest_address = ingest_listener.local_addr()?;
    let query_address = query_listener.local_addr()?;

    let stop = CancellationToken::new();
    let ingest = Ingest::start(log.clone(), config.ingest.clone(), &backbone.topics).await?;
    let mllp = Mllp::new(
        ingest.clone(),
        &config.ingest,
        std::sync::Arc::new(SystemClock),
    )?;
    let mllp = mllp_listener.map(|listener| {
        (
            mllp,
            TlsListener::new(listener, tls.mllp.clone()).with_clients(clients.clone()),
        )
    });
    let projector = Projector::start(
        log.clone(),
        store.clone(),
        config.projector.clone(),
        backbone.topics.clone(),
    )
    .await?;
    let replays = Replays::new(
        log.clone(),
        store.clone(),
        generations,
        config.projector.clone(),
        backbone.topics.clone(),
        vec![Arc::new(TimelineRebuild::new(
            log.clone(),
            backbone.topics.clone(),
        ))],
    );
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
    let admin = admin_listener.map(|listener| {
        let admin = AdminService::projector(
            store.clone(),
            log.clone(),
            backbone.topics.clone(),
            replays.clone(),
            dead_letters,
        )
        .with_audit_log(audit_log, config.audit.topic.clone());
        (
            admin,
            TlsListener::new(listener, tls.grpc.clone()).with_clients(clients.clone()),
        )
    });
    let monitor = baton_projector::metrics::spawn_monitor(
        log.clone(),
        store.clone(),
        &backbone.topics,
        &config.projector,
        Some(caught_up),
        std::sync::Arc::new(baton_runtime::SystemClock),
        stop.clone().cancelled_owned(),
    );
    let query = QueryService::new(store.clone(), config.query.clone(), &backbone.topics)
        .with_auditor(auditor.clone());
    let mut timeline = TimelineIndexer::start(log.clone(), store.clone(), &backbone.topics).await?;

    let ingest_tls = tls.grpc.clone();
    let query_tls = tls.grpc.clone();
    let ingest_clients = clients.clone();
    let mut services = tokio::task::JoinSet::new();
    services.spawn(async move { monitor.await.context("projector monitor") });
    if let Some(listener) = metrics_listener {
        let readiness = readiness.clone();
        let stop = stop.clone();
        services.spawn(async move {
            metrics::serve(
                TlsListener::new(listener, tls.http.clone()),
                readiness,
                stop.cancelled_owned(),
            )
            .await;
            Ok(())
        });
    }
    {
        let stop = stop.clone();
        services.spawn(async move {
            let listener =
                TlsListener::new(ingest_listener, ingest_tls).with_clients(ingest_clients);
            baton_ingest::run_with_mllp(ingest, listener, mllp, stop.cancelled_owned())
                .await
                .context("ingest")
        });
    }
    {
        let stop = stop.clone();
        services.spawn(async move {
            baton_projector::run_with_admin(projector, None, admin, stop.cancelled_owned())
                .await
                .map(drop)
                .context("projector")
        });
    }
    {
        let stop = stop.clone();
        services.spawn(async move {
            let listener = TlsListener::new(query_listener, query_tls).with_clients(clients);
            baton_query::run(query, listener, stop.cancelled_owned())
                .await
                .context("query")
        });
    }
    {
        let stop = stop.clone();
        services.spawn(async move {
            timeline
                .run(stop.cancelled_owned())
                .await
                .map(drop)
                .context("timeline indexer")
        });
    }

    // After every service is running: a resumed replay pauses them at its swap.
    if replays.resume_interrupted()? {
        println!("Resuming the replay a restart interrupted (baton replay --status to follow it).");
    }
    println!("Baton is up, on {}", backbone.describe(&data));
    println!("  ingest  http://{ingest_address}  (gRPC baton.ingest.v1.CareEventIngest)");
    println!("  query   http://{query_address}  (gRPC baton.query.v1.CareStateQuery)");
    match mllp_address {
        Some(address) => println!(
            "  mllp    {address}  (HL7 v2 ADT/REF over MLLP, times in {})",
            config.ingest.hl7_time_zone
        ),
        None => println!("  mllp    off"),
    }
    match admin_address {
        Some(address) => println!(
            "  admin   http://{address}  (gRPC baton.admin.v1.Operations: baton replay | verify | lag | dlq | audit)"
        ),
        None => println!("  admin   off"),
    }
    match metrics_address {
        Some(address) => {
            println!("  metrics http://{address}/metrics  (Prometheus; /live, /ready)")
        }
        None => println!("  metrics off"),
    }
    if config.audit.enabled {
        let kept = if backbone.is_kafka() {
            format!("topic {}", config.audit.topic)
        } else {
            data.audit_log_path().display().to_string()
        };
        println!("  audit   {kept}  (every read and refusal: baton audit --patient <NHS number>)");
    } else {
        println!("  audit   off (up.audit.enabled = false): nothing records who reads what");
    }
    println!(
        "Health checking and server reflection are on (grpcurl -plaintext {query_address} list)."
    );

    if args.demo {
        let published = tokio::select! {
            published = crate::demo::publish_demo(ingest_address, query_address, args.demo_patients, args.demo_seed) => Some(published),
            () = &mut stopping => None,
            Some(failed) = services.join_next() => {
                stop.cancel();
                return service_failed(failed);
            }
        };
        match published {
            Some(Ok(summary)) => println!("{summary}"),
            Some(Err(error)) => println!("The demo population could not be published: {error:#}"),
            None => return shutdown(stop, services, log, store, auditor).await,
        }
    }
    println!("Try, in another terminal:");
    for command in try_commands(ingest_address, query_address, mllp_address) {
        println!("  {command}");
    }
    println!("Ctrl-C to stop.");

    tokio::select! {
        () = &mut stopping => {}
        Some(failed) = services.join_next() => {
            stop.cancel();
            return service_failed(failed);
        }
    }
    shutdown(stop, services, log, store, auditor).await
}

/// The commands the banner suggests, each naming the address Baton listens
/// on where it is not the one the command assumes (a listener on every
/// interface is reached on loopback).
fn try_commands(ingest: SocketAddr, query: SocketAddr, mllp: Option<SocketAddr>) -> Vec<String> {
    let reachable = |mut address: SocketAddr| {
        if address.ip().is_unspecified() {
            address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        address
    };
    let flag = |name: &str, address: SocketAddr, default: SocketAddr| {
        let address = reachable(address);
        if address == default {
            String::new()
        } else {
            format!(" --{name} {address}")
        }
    };
    let query = flag("query", query, QueryConfig::default().listen);
    let ingest = flag("ingest", ingest, IngestConfig::default().listen);
    let mut commands: Vec<String> = [
        "cohort --setting virtual-ward",
        "cohort --setting hospital --ward WARD-7",
        "cohort --setting hospital --min-frailty 6 --min-age 65",
        "watch --setting virtual-ward",
        "state get <NHS number>",
        "timeline <NHS number>",
    ]
    .iter()
    .map(|command| format!("baton {command}{query}"))
    .collect();
    commands.push(format!("baton publish docs/examples/events.jsonl{ingest}"));
    if let Some(mllp) = mllp {
        let to = match IngestConfig::default().mllp_listen.address() {
            Some(default) if reachable(mllp) == default => String::new(),
            _ => format!(" --to {}", reachable(mllp)),
        };
        commands.push(format!(
            "baton hl7 send docs/examples/hl7/story.hl7{to} --then-get{query}"
        ));
    }
    commands
}

async fn bind(address: SocketAddr, service: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).await.with_context(|| {
        format!("cannot listen on {address} for the {service} API: is another Baton running? (choose another address with --{service}-listen)")
    })
}

type ServiceOutcome = Result<anyhow::Result<()>, tokio::task::JoinError>;

fn service_failed(outcome: ServiceOutcome) -> anyhow::Result<()> {
    match outcome {
        Ok(Ok(())) => anyhow::bail!("a service stopped unexpectedly"),
        Ok(Err(error)) => Err(error.context("a service failed")),
        Err(error) => Err(anyhow::anyhow!("a service panicked: {error}")),
    }
}

/// Stops the services, waits for the calls in flight and the last batch,
/// then flushes the log and the store to disk.
#[allow(clippy::print_stdout)]
async fn shutdown(
    stop: CancellationToken,
    mut services: tokio::task::JoinSet<anyhow::Result<()>>,
    log: std::sync::Arc<dyn baton_log::EventLog>,
    store: Store,
    auditor: Auditor,
) -> anyhow::Result<()> {
    stop.cancel();
    let mut failure = None;
    while let Some(outcome) = services.join_next().await {
        if let Err(error) = service_failed_or_ok(outcome) {
            failure.get_or_insert(error);
        }
    }
    auditor.drain(std::time::Duration::from_secs(5)).await;
    log.flush().await.context("flushing the event log")?;
    store
        .flush_async()
        .await
        .context("flushing the projection store")?;
    if let Some(error) = failure {
        return Err(error);
    }
    println!("Baton stopped; everything accepted is on disk.");
    Ok(())
}

fn service_failed_or_ok(outcome: ServiceOutcome) -> anyhow::Result<()> {
    match outcome {
        Ok(result) => result,
        Err(error) => Err(anyhow::anyhow!("a service panicked: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_suggests_commands_that_reach_baton_where_it_listens() {
        let at = |text: &str| text.parse::<SocketAddr>().unwrap();
        let defaults = try_commands(
            at("127.0.0.1:50051"),
            at("127.0.0.1:50052"),
            Some(at("127.0.0.1:2575")),
        );
        assert!(
            defaults.contains(&"baton cohort --setting virtual-ward".to_owned()),
            "{defaults:?}"
        );
        assert!(
            defaults.contains(&"baton hl7 send docs/examples/hl7/story.hl7 --then-get".to_owned()),
            "{defaults:?}"
        );
        let elsewhere = try_commands(
            at("0.0.0.0:7001"),
            at("127.0.0.1:7002"),
            Some(at("127.0.0.1:7003")),
        );
        assert!(
            elsewhere.contains(&"baton state get <NHS number> --query 127.0.0.1:7002".to_owned()),
            "{elsewhere:?}"
        );
        assert!(
            elsewhere.contains(
                &"baton publish docs/examples/events.jsonl --ingest 127.0.0.1:7001".to_owned()
            ),
            "{elsewhere:?}"
        );
        assert!(
            elsewhere.contains(&"baton hl7 send docs/examples/hl7/story.hl7 --to 127.0.0.1:7003 --then-get --query 127.0.0.1:7002".to_owned()),
            "{elsewhere:?}"
        );
        let no_mllp = try_commands(at("127.0.0.1:50051"), at("127.0.0.1:50052"), None);
        assert!(no_mllp.iter().all(|c| !c.contains("hl7")), "{no_mllp:?}");
    }
}
