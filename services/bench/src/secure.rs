//! `secure-query`: GetCareState with TLS, a bearer token and the audit log
//! on, beside plaintext without audit, in the same run.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use baton_audit::{AuditConfig, Auditor, Durability};
use baton_log::EventLog;
use baton_log::embedded::{EmbeddedConfig, EmbeddedLog};
use baton_log::topics::Topics;
use baton_proto::query::v1::patient_ref::Ref;
use baton_proto::query::v1::{GetCareStateRequest, PatientRef};
use baton_query::{QueryConfig, QueryService};
use baton_store::{Store, StoreConfig};
use baton_tls::testing::{TestCa, TestSigner};
use baton_tls::{ClientEntry, Clients, JwtConfig, Scope, TlsConfig, TlsListener, TokenVerifier};
use clap::Args;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::kafka::{bind_loopback, channel};
use crate::query::{AnswerAsBytes, Measured, Shape, fill, load_over, report};

/// GetCareState as an NHS deployment runs it — TLS, a signed JWT on every
/// call, every read recorded in the audit log — beside plaintext without
/// audit, in the same run, on the same store.
///
/// Fills a store with --patients synthetic states and serves it twice:
/// plaintext with no audit, and over TLS (a certificate made for the run)
/// with a clients table naming the bench's token subject, ES256 tokens
/// checked on every call, and the audit log on an embedded log in the
/// run's folder (durable before each response, or --within-delay). Both
/// take the same closed-loop load; prints requests/s, latency, the ratio
/// (target ≥ 70% of plaintext) and the audit records written per second.
#[derive(Debug, Args)]
pub(crate) struct SecureArgs {
    /// Patients whose states fill the store
    #[arg(long, default_value_t = 50_000)]
    patients: usize,
    /// How long each load runs, warm-up included
    #[arg(long, default_value_t = 12)]
    seconds: u64,
    /// First seconds of each load left out of the figures
    #[arg(long, default_value_t = 2)]
    warm_up: u64,
    /// Calls in flight
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// HTTP/2 connections the calls share (TLS sessions, for the secure run)
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Audit durability "within_delay" instead of "before_response"
    #[arg(long)]
    within_delay: bool,
    /// Seed of the synthetic population
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[allow(clippy::print_stdout)]
pub(crate) async fn secure_query(args: SecureArgs) -> anyhow::Result<()> {
    crate::figures::check_warm_up(args.warm_up, args.seconds)?;
    anyhow::ensure!(args.concurrency > 0, "--concurrency 0: expected at least 1");
    anyhow::ensure!(args.connections > 0, "--connections 0: expected at least 1");
    println!(
        "baton-bench secure-query: {} patients, {} calls in flight over {} connections for {} s (first {} s left out); client and server in this process on loopback",
        args.patients, args.concurrency, args.connections, args.seconds, args.warm_up
    );
    let work = tempfile::tempdir()?;
    let store = Store::open(work.path().join("store"), &StoreConfig::default())
        .context("opening the store")?;
    let started = Instant::now();
    let states = fill(&store, args.patients, args.seed).await?;
    println!(
        "store       {} states in {:.2?}",
        states.len(),
        started.elapsed()
    );
    let keys: Arc<Vec<String>> = Arc::new(
        states
            .iter()
            .filter(|s| s.merged_into.is_none())
            .map(|s| s.patient_key.clone())
            .collect(),
    );
    let shape = Shape {
        seconds: args.seconds,
        warm_up: args.warm_up,
        concurrency: args.concurrency,
    };
    let stop = CancellationToken::new();

    // Plaintext, no audit.
    let (listener, plain_address) = bind_loopback("plaintext query").await?;
    tokio::spawn(baton_query::run(
        QueryService::new(store.clone(), QueryConfig::default(), &Topics::default()),
        listener,
        stop.clone().cancelled_owned(),
    ));

    // TLS, tokens, audit.
    let pki = work.path().join("pki");
    std::fs::create_dir(&pki)?;
    let ca = TestCa::new("baton-bench CA");
    let ca_path = ca.write(&pki.join("ca.pem"));
    let server = ca.server(&pki, "server");
    let signer = TestSigner::new();
    let public = signer.write_public(&pki.join("signing.pem"));
    let tls = baton_tls::ServiceTls::load(&TlsConfig {
        cert: Some(server.cert.clone()),
        key: Some(server.key.clone()),
        ..TlsConfig::default()
    })
    .map_err(|error| anyhow::anyhow!("{error}"))?;
    let jwt = JwtConfig {
        issuer: "https://auth.bench.example".into(),
        audience: "baton".into(),
        keys: vec![public],
        ..JwtConfig::default()
    };
    let audit_log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(EmbeddedConfig::new(
        work.path().join("audit"),
    ))?);
    let audit_config = AuditConfig {
        durability: if args.within_delay {
            Durability::WithinDelay
        } else {
            Durability::BeforeResponse
        },
        ..AuditConfig::default()
    };
    let auditor = Auditor::start(Arc::clone(&audit_log), &audit_config, "query").await?;
    let clients = Arc::new(
        Clients::new(&[ClientEntry {
            id: "bench-app".into(),
            certificate_names: Vec::new(),
            token_subjects: vec!["bench-app".into()],
            scopes: [Scope::Read].into(),
            organisations: Vec::new(),
            services: Vec::new(),
        }])
        .map_err(|problem| anyhow::anyhow!(problem))?
        .with_tokens(TokenVerifier::load(&jwt).map_err(|problem| anyhow::anyhow!(problem))?)
        .with_refusal_hook(auditor.refusal_hook()),
    );
    let (listener, secure_address) = bind_loopback("secure query").await?;
    tokio::spawn(baton_query::run(
        QueryService::new(store.clone(), QueryConfig::default(), &Topics::default())
            .with_auditor(auditor.clone()),
        TlsListener::new(listener, tls.grpc.clone()).with_clients(Arc::clone(&clients)),
        stop.clone().cancelled_owned(),
    ));
    // The same without the audit log: what TLS and tokens cost alone.
    let (listener, unaudited_address) = bind_loopback("unaudited query").await?;
    tokio::spawn(baton_query::run(
        QueryService::new(store.clone(), QueryConfig::default(), &Topics::default()),
        TlsListener::new(listener, tls.grpc.clone()).with_clients(clients),
        stop.clone().cancelled_owned(),
    ));
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let token = signer.sign(&serde_json::json!({
        "iss": jwt.issuer, "aud": jwt.audience, "sub": "bench-app",
        "exp": now + 3_600, "nbf": now - 60,
        "user": "555123456789", "role": "R8000", "purpose": "direct care",
    }));
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;

    let request = |key: String| GetCareStateRequest {
        patient: Some(PatientRef {
            r#ref: Some(Ref::PatientKey(key)),
        }),
        consistency_token: String::new(),
    };
    let call =
        move |channel: Channel,
              key: String,
              bearer: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>| {
            let mut grpc = tonic::client::Grpc::new(channel);
            async move {
                grpc.ready()
                    .await
                    .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
                let mut request = tonic::Request::new(request(key));
                if let Some(bearer) = bearer {
                    request.metadata_mut().insert("authorization", bearer);
                }
                grpc.unary(
                    request,
                    tonic::codegen::http::uri::PathAndQuery::from_static(
                        "/baton.query.v1.CareStateQuery/GetCareState",
                    ),
                    AnswerAsBytes::default(),
                )
                .await
                .map(drop)
            }
        };

    let mut plain_channels = Vec::new();
    for _ in 0..args.connections {
        plain_channels.push(channel(plain_address).await?);
    }
    let plain = load_over(
        shape,
        plain_channels,
        Arc::clone(&keys),
        move |channel, key| call(channel, key, None),
    )
    .await?;
    report(
        "plaintext",
        &plain,
        "no token, no audit; answers kept as bytes",
    );

    let tls_client = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&ca_path)?))
        .domain_name("localhost");
    let tls_channels = async |address: std::net::SocketAddr| -> anyhow::Result<Vec<Channel>> {
        let mut channels = Vec::new();
        for _ in 0..args.connections {
            channels.push(
                Channel::from_shared(format!("https://localhost:{}", address.port()))?
                    .tls_config(tls_client.clone())?
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .context("connecting over TLS")?,
            );
        }
        Ok(channels)
    };
    let unaudited = {
        let bearer = bearer.clone();
        load_over(
            shape,
            tls_channels(unaudited_address).await?,
            Arc::clone(&keys),
            move |channel, key| call(channel, key, Some(bearer.clone())),
        )
        .await?
    };
    report("TLS+JWT", &unaudited, "ES256 token per call, no audit");
    let secure_channels = tls_channels(secure_address).await?;
    let before = audited(&*audit_log, &audit_config.topic).await?;
    let secure_started = Instant::now();
    let secure = load_over(shape, secure_channels, keys, move |channel, key| {
        call(channel, key, Some(bearer.clone()))
    })
    .await?;
    let secure_elapsed = secure_started.elapsed();
    auditor.drain(std::time::Duration::from_secs(10)).await;
    let written = audited(&*audit_log, &audit_config.topic).await? - before;
    report(
        "TLS+JWT+audit",
        &secure,
        &format!(
            "ES256 token checked per call, audit {}",
            if args.within_delay {
                "within max_delay_ms"
            } else {
                "durable before each response"
            }
        ),
    );
    print_ratio(&plain, &secure);
    println!(
        "audit         {written} records written in {:.1} s: {:.0} records/s sustained (group commit on the embedded log)",
        secure_elapsed.as_secs_f64(),
        written as f64 / secure_elapsed.as_secs_f64()
    );
    stop.cancel();
    println!("target: TLS+JWT+audit ≥ 70% of plaintext requests/s");
    Ok(())
}

#[allow(clippy::print_stdout)]
fn print_ratio(plain: &Measured, secure: &Measured) {
    println!(
        "ratio         TLS+JWT+audit does {:.0}% of plaintext's requests/s; p99 {:.2}× plaintext's",
        100.0 * secure.rate / plain.rate.max(1.0),
        secure.latency.value_at_quantile(0.99) as f64
            / plain.latency.value_at_quantile(0.99).max(1) as f64
    );
}

/// Records in the audit topic.
async fn audited(log: &dyn EventLog, topic: &str) -> anyhow::Result<u64> {
    Ok(log.end_offsets(topic).await?.iter().sum())
}
