//! baton-ingest: the front door for care events.
//!
//! [`Ingest::publish`] validates a batch with [`baton_care::ValidEvent`] and
//! appends every event to `baton.care-events.v1`, keyed by patient so each
//! patient's events stay in order in one partition. A merge is written
//! under both patients' keys, so each side's projection sees it.
//!
//! A batch is **atomic**: if any event is invalid, nothing is written and
//! the answer names every bad event and field (`events[3].patient.nhs_number`).
//! A sender fixes and re-sends the whole batch; re-sending is always safe
//! because events are deduplicated by id. See `docs/ingest.md`.
//!
//! [`run`] serves it as the gRPC `baton.ingest.v1.CareEventIngest` with
//! health checking and server reflection; [`mllp::serve`] serves it as HL7
//! v2 over MLLP (port 2575), so an ADT feed can point at Baton as it is.
//!
//! # Layout
//! - `lib.rs`: [`Ingest`], the transport-free publish path, [`run`] and
//!   [`run_with_mllp`].
//! - `grpc.rs`: the tonic service mapping [`PublishError`] to gRPC statuses.
//! - `mllp.rs`: the MLLP listener: HL7 in, events published, ACKs out.
//! - `metrics.rs`: events accepted and refused, publish latency, MLLP
//!   messages by type and ACK code; the readiness probe of the log.

mod grpc;
pub mod metrics;
pub mod mllp;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use baton_care::{InvalidEvent, ValidEvent};
use baton_log::topics::Topics;
use baton_log::{ConsistencyToken, EventLog, LogError, NewRecord};
use baton_proto::NamedMessage;
use baton_proto::events::v1::CareEvent;
use baton_proto::ingest::v1::PublishedEvent;
use baton_telemetry::Listen;
use baton_telemetry::{TRACEPARENT_HEADER, TraceParent};
use prost::Message;
use serde::{Deserialize, Serialize};

pub use grpc::IngestService;
pub use mllp::{Mllp, MllpListen};

/// The port the ingest API listens on unless configured otherwise.
pub const DEFAULT_PORT: u16 = 50051;

/// The largest Publish request decoded unless configured otherwise
/// (`grpc.max_message_bytes`): well above `max_batch_events` of typical
/// events.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Header naming the record's content, so any consumer can decode it.
pub const CONTENT_TYPE_HEADER: &str = "content-type";
/// Header carrying the event id, for consumers that dedupe without decoding.
pub const EVENT_ID_HEADER: &str = "event-id";

/// Settings of the ingest path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Address the gRPC API listens on.
    pub listen: SocketAddr,
    /// Largest batch one Publish call may carry.
    pub max_batch_events: usize,
    /// What a gRPC connection may do (`[<section>.grpc]`): calls at once
    /// (`max_concurrent_streams`, 100), the largest request
    /// (`max_message_bytes`, 64 MiB here: a batch of `max_batch_events`),
    /// the time to send the HTTP/2 preface (`preface_timeout_ms`, 10 s)
    /// and keepalive pings.
    pub grpc: baton_tls::GrpcLimits,
    /// Address of the HL7 v2 MLLP listener, or `"off"`.
    pub mllp_listen: MllpListen,
    /// Largest HL7 message accepted; a larger frame is answered `AR`
    /// without being buffered.
    pub mllp_max_message_bytes: usize,
    /// A connection that sends nothing for this long is closed (bytes
    /// outside MLLP frames do not count).
    pub mllp_idle_timeout_ms: u64,
    /// A connection that has not sent a complete frame this long after
    /// connecting (after its TLS handshake), or that has not finished a
    /// frame this long after its first byte, is closed.
    pub mllp_frame_timeout_ms: u64,
    /// Connections served at once; one more is closed as it arrives.
    pub mllp_max_connections: usize,
    /// Connections served at once from one IP address; one more from it is
    /// closed as it arrives.
    pub mllp_max_connections_per_peer: usize,
    /// IANA zone of HL7 timestamps sent without an offset.
    pub hl7_time_zone: String,
    /// Where `/metrics`, `/live` and `/ready` are served, or `"off"`
    /// (`baton-ingest` only: `baton up` serves `[up] metrics_listen`).
    pub metrics_listen: Listen,
    /// TLS of every listener of this service (gRPC, admin, MLLP, metrics):
    /// `cert` and `key` PEM files, `client_ca` to require client
    /// certificates, `handshake_timeout_ms`. Files are re-read when they
    /// change.
    pub tls: baton_tls::TlsConfig,
    /// Client identities and their scopes (`[[<section>.clients]]`: id,
    /// certificate_names, scopes). With any, every call needs a client
    /// certificate named here holding the scope its RPC needs.
    pub clients: Vec<baton_tls::ClientEntry>,
    /// Bearer tokens (`[<section>.jwt]`: issuer, audience, keys, jwks,
    /// leeway_s, client_claim): a second way for a client to identify
    /// itself, named by `token_subjects` in the clients table.
    pub jwt: baton_tls::JwtConfig,
    /// The audit log (`[<section>.audit]`): every call the clients table
    /// refuses is recorded in it.
    pub audit: baton_audit::AuditConfig,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            max_batch_events: 10_000,
            grpc: baton_tls::GrpcLimits::with_max_message_bytes(DEFAULT_MAX_MESSAGE_BYTES),
            mllp_listen: MllpListen::loopback(mllp::DEFAULT_MLLP_PORT),
            mllp_max_message_bytes: 1024 * 1024,
            mllp_idle_timeout_ms: 300_000,
            mllp_frame_timeout_ms: 10_000,
            mllp_max_connections: 64,
            mllp_max_connections_per_peer: 8,
            hl7_time_zone: baton_hl7::Zone::DEFAULT.to_owned(),
            metrics_listen: Listen::loopback(metrics::DEFAULT_METRICS_PORT),
            tls: baton_tls::TlsConfig::default(),
            clients: Vec::new(),
            jwt: baton_tls::JwtConfig::default(),
            audit: baton_audit::AuditConfig::default(),
        }
    }
}

impl IngestConfig {
    /// Checks the settings, naming the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_batch_events == 0 {
            return Err("max_batch_events: expected at least 1".into());
        }
        self.grpc.validate().map_err(|error| error.to_string())?;
        self.audit.validate()?;
        if self.mllp_max_message_bytes < 1024 {
            return Err(format!(
                "mllp_max_message_bytes: expected at least 1024, got {}",
                self.mllp_max_message_bytes
            ));
        }
        if self.mllp_idle_timeout_ms == 0 {
            return Err("mllp_idle_timeout_ms: expected milliseconds, at least 1, got 0".into());
        }
        if self.mllp_frame_timeout_ms == 0 {
            return Err("mllp_frame_timeout_ms: expected milliseconds, at least 1, got 0".into());
        }
        if self.mllp_max_connections == 0 {
            return Err("mllp_max_connections: expected at least 1, got 0".into());
        }
        if self.mllp_max_connections_per_peer == 0 {
            return Err("mllp_max_connections_per_peer: expected at least 1, got 0".into());
        }
        baton_hl7::Zone::named(&self.hl7_time_zone)
            .map_err(|error| format!("hl7_time_zone: {error}"))?;
        self.tls.validate().map_err(|error| error.to_string())?;
        if !self.clients.is_empty() && !self.tls.is_mutual() && !self.jwt.is_on() {
            return Err("clients: a clients table needs a way to identify clients: client certificates (tls.client_ca) or bearer tokens (jwt.issuer)".into());
        }
        baton_tls::Clients::new(&self.clients)?;
        Ok(())
    }
}

/// Why a publish was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the batch is empty: send at least one event")]
    Empty,
    #[error("the batch has {events} events, more than the {max} one call may carry: split it")]
    TooLarge { events: usize, max: usize },
    /// Every invalid event with its index in the batch; nothing was written.
    #[error("{} of {total} events are invalid; nothing was written", invalid.len())]
    Invalid {
        total: usize,
        invalid: Vec<(usize, InvalidEvent)>,
    },
    /// The log could not take the events; the caller may retry the batch.
    #[error("the event log is unavailable: {0}")]
    Log(#[from] LogError),
}

/// Errors starting the service.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("invalid ingest configuration: {0}")]
    Config(String),
    #[error("cannot prepare the topics: {0}")]
    Topics(LogError),
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("the MLLP listener stopped abnormally: {0}")]
    Mllp(#[from] tokio::task::JoinError),
}

pub type Result<T, E = IngestError> = std::result::Result<T, E>;

/// What a successful publish wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub events: Vec<PublishedEvent>,
    pub token: ConsistencyToken,
}

/// The publish path, independent of transport (gRPC today, HL7 MLLP later).
#[derive(Debug, Clone)]
pub struct Ingest {
    log: Arc<dyn EventLog>,
    config: Arc<IngestConfig>,
    /// The topic events are appended to.
    events_topic: Arc<str>,
}

impl Ingest {
    /// Checks the configuration and creates the topics if missing.
    pub async fn start(
        log: Arc<dyn EventLog>,
        config: IngestConfig,
        topics: &Topics,
    ) -> Result<Self, IngestError> {
        config.validate().map_err(IngestError::Config)?;
        topics.ensure(&*log).await.map_err(IngestError::Topics)?;
        Ok(Self {
            log,
            config: Arc::new(config),
            events_topic: topics.events.as_str().into(),
        })
    }

    /// Validates every event, then (unless `validate_only`) appends them
    /// all, each record carrying `trace` as its `traceparent` so the trace
    /// continues in the projector.
    pub async fn publish(
        &self,
        events: Vec<CareEvent>,
        validate_only: bool,
        trace: Option<TraceParent>,
    ) -> Result<Published, PublishError> {
        let started = std::time::Instant::now();
        let valid = match self.validate(events) {
            Ok(valid) => valid,
            Err(refused) => {
                if !validate_only {
                    metrics::record_refused(&refused);
                }
                return Err(refused);
            }
        };
        if validate_only {
            return Ok(Published {
                events: valid.iter().map(|v| published(v, None)).collect(),
                token: ConsistencyToken::empty(),
            });
        }
        let content_type = CareEvent::content_type();
        let trace = trace.map(|trace| trace.to_header_bytes());
        let mut records = Vec::with_capacity(valid.len());
        for event in &valid {
            let value = event.event().encode_to_vec();
            let id = event.event().event_id.as_bytes();
            for key in event.log_keys() {
                let mut record = NewRecord::new(key.as_str(), value.clone())
                    .with_header(CONTENT_TYPE_HEADER, content_type.as_bytes())
                    .with_header(EVENT_ID_HEADER, id);
                if let Some(trace) = &trace {
                    record = record.with_header(TRACEPARENT_HEADER, &trace[..]);
                }
                records.push(record);
            }
        }
        let appending = std::time::Instant::now();
        let positions = match self.log.append(&self.events_topic, records).await {
            Ok(positions) => positions,
            Err(error) => {
                metrics::record_log_unavailable(valid.len());
                return Err(error.into());
            }
        };
        metrics::record_accepted(valid.len(), started.elapsed(), appending.elapsed());
        let token = ConsistencyToken::from_positions(&positions);
        let mut positions = positions.into_iter();
        let events = valid
            .iter()
            .map(|event| {
                let mut written = event.log_keys().into_iter().map(|_| positions.next());
                let subject = written.next().flatten();
                written.for_each(drop);
                published(event, subject)
            })
            .collect();
        tracing::debug!(events = valid.len(), %token, "published");
        Ok(Published { events, token })
    }

    fn validate(&self, events: Vec<CareEvent>) -> Result<Vec<ValidEvent>, PublishError> {
        if events.is_empty() {
            return Err(PublishError::Empty);
        }
        if events.len() > self.config.max_batch_events {
            return Err(PublishError::TooLarge {
                events: events.len(),
                max: self.config.max_batch_events,
            });
        }
        let total = events.len();
        let mut valid = Vec::with_capacity(total);
        let mut invalid = Vec::new();
        for (index, event) in events.into_iter().enumerate() {
            match ValidEvent::from_producer(event) {
                Ok(event) => valid.push(event),
                Err(error) => invalid.push((index, error)),
            }
        }
        if invalid.is_empty() {
            Ok(valid)
        } else {
            Err(PublishError::Invalid { total, invalid })
        }
    }
}

fn published(event: &ValidEvent, position: Option<baton_log::Position>) -> PublishedEvent {
    PublishedEvent {
        event_id: event.event().event_id.clone(),
        patient_key: event.key().to_string(),
        partition: position.map_or(0, |p| p.partition),
        offset: position.map_or(0, |p| p.offset),
    }
}

/// Serves the ingest API on `listener` until `shutdown` completes, then
/// finishes the calls in flight (their events are on stable storage when
/// they are answered) and returns. Each connection is held to the
/// configuration's `grpc` limits.
pub async fn run(
    ingest: Ingest,
    listener: impl Into<baton_tls::TlsListener>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), IngestError> {
    use baton_proto::ingest::v1::care_event_ingest_server::CareEventIngestServer;

    use tonic::server::NamedService;

    tracing::info!(topic = %ingest.events_topic, "ingest publishing");
    let listener = listener.into().with_grpc_limits(ingest.config.grpc.clone());
    baton_runtime::grpc::serve(
        "ingest",
        &[<CareEventIngestServer<IngestService> as NamedService>::NAME],
        listener,
        |router| router.add_service(IngestService::new(ingest).into_server()),
        shutdown,
    )
    .await?;
    Ok(())
}

/// Serves the gRPC API on `listener` and, when given, HL7 v2 over MLLP,
/// until `shutdown` completes; then both finish what they received and
/// stop together.
pub async fn run_with_mllp(
    ingest: Ingest,
    listener: impl Into<baton_tls::TlsListener>,
    mllp: Option<(Mllp, baton_tls::TlsListener)>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), IngestError> {
    let stop = tokio_util::sync::CancellationToken::new();
    let mllp = mllp.map(|(mllp, listener)| {
        tokio::spawn(mllp::serve(mllp, listener, stop.clone().cancelled_owned()))
    });
    let served = run(ingest, listener, async {
        shutdown.await;
        stop.cancel();
    })
    .await;
    stop.cancel();
    if let Some(mllp) = mllp {
        mllp.await?;
    }
    served
}
