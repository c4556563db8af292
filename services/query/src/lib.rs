//! baton-query: patients' care states, cohorts, timelines and the past over
//! gRPC (`baton.query.v1.CareStateQuery`), read from the projection store.
//!
//! - `GetCareState` finds a patient by NHS number, local identifier or
//!   patient key. With a consistency token from `Publish` it first waits,
//!   within the call's deadline and at most `max_consistency_wait_ms`, until
//!   the projection has applied the positions the token names:
//!   read-your-writes across services.
//! - `ListCohort` pages through the patients matching a filter (where they
//!   are, virtual ward, pathway, referrals, frailty, age, medically
//!   optimised, discharge dates) from the store's cohort index.
//! - `WatchCohort` streams a cohort's members, then every change.
//! - `GetTimeline` and `GetCareStateAsOf` read the events filed by the
//!   [`TimelineIndexer`], which follows the event log beside the projection.
//!
//! Bad requests get `INVALID_ARGUMENT` with a `google.rpc.BadRequest` naming
//! the field; an unknown patient `NOT_FOUND`; a token not reached in time
//! `DEADLINE_EXCEEDED` (the call's deadline) or `FAILED_PRECONDITION` (the
//! service's longest wait); a watch whose client reads too slowly
//! `RESOURCE_EXHAUSTED`. Health checking and server reflection are on.
//!
//! The store is the projector's own (`baton up`, one process) or a replica
//! of it that a [`Materialiser`] keeps in step with the state changelog
//! (`baton-query` on Kafka, as many replicas as needed).
//!
//! # Layout
//! - `lib.rs`: [`QueryConfig`], [`QueryService`] and [`run`].
//! - `consistency.rs`: waiting for consistency tokens within deadlines.
//! - `raw.rs`: [`QueryServer`], answering `GetCareState` with the stored
//!   bytes, without decoding the state.
//! - `watch.rs`: `WatchCohort` and its bounded outbox.
//! - `history.rs`: timelines and states as of a time.
//! - `follow.rs`: following a log topic into the store, shared by
//!   `materialise.rs` ([`Materialiser`], the replica's changelog follower)
//!   and `timeline.rs` ([`TimelineIndexer`]).
//! - `metrics.rs`: watch clients and dropped watches; a replica's lag and
//!   store size ([`metrics::spawn_replica_monitor`]).

mod access;
mod consistency;
mod follow;
mod history;
mod materialise;
pub mod metrics;
mod raw;
mod timeline;
mod watch;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use baton_care::cohort::Cohort;
use baton_care::{Instant, NhsNumber, PatientKey};
use baton_log::ConsistencyToken;
use baton_log::topics::Topics;
use baton_proto::query::v1::care_state_query_server::{CareStateQuery, CareStateQueryServer};
use baton_proto::query::v1::patient_ref::Ref;
use baton_proto::query::v1::{
    GetCareStateAsOfRequest, GetCareStateAsOfResponse, GetCareStateRequest, GetCareStateResponse,
    GetTimelineRequest, GetTimelineResponse, ListCohortRequest, ListCohortResponse, PatientRef,
    TimeAxis, WatchCohortRequest,
};
use baton_proto::state::v1::PatientCareState;
use baton_runtime::{Clock, SystemClock};
use baton_store::{Store, StoreError};
use baton_telemetry::Listen;
use prost::Message;
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use access::Access;
use baton_audit::Auditor;
use consistency::WaitBudget;
pub use materialise::{Materialiser, MaterialiserStats};
use raw::EncodedResponse;
pub use raw::QueryServer;
pub use timeline::{TimelineIndexer, TimelineRebuild, TimelineStats, timeline_positions_topic};

/// The port the query API listens on unless configured otherwise.
pub const DEFAULT_PORT: u16 = 50052;
/// Page size when a request gives none.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page a request may ask for.
pub const MAX_PAGE_SIZE: u32 = 1000;
const PAGE_TOKEN_PREFIX: &str = "c2.";
/// A page for a client limited to organisations or services reads at most
/// this many times its size in index entries.
const LIMITED_SCAN_FACTOR: usize = 20;

/// Settings of the query service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// Address the gRPC API listens on.
    pub listen: SocketAddr,
    /// Longest a call waits for its consistency token, whatever its
    /// deadline.
    pub max_consistency_wait_ms: u64,
    /// Messages that wait for a `WatchCohort` client; one that stays this
    /// far behind for `watch_slow_client_ms` is dropped with
    /// `RESOURCE_EXHAUSTED`.
    pub watch_buffer_messages: usize,
    /// How often a watched cohort that time alone can change (ages,
    /// overdue referrals, days optimised) is listed again.
    pub watch_recheck_ms: u64,
    /// How long a `WatchCohort` client may stay `watch_buffer_messages`
    /// behind before it is dropped: long enough to absorb a burst.
    pub watch_slow_client_ms: u64,
    /// sled's page cache of a replica's store, in MiB: `GetCareState` is
    /// fastest when the states read often fit in it.
    pub store_cache_mib: u64,
    /// Address of a replica's read-only admin API (its positions and
    /// digest, for `baton lag` and `baton verify --replica`), or `off`.
    pub admin_listen: baton_runtime::Listen,
    /// Where `/metrics`, `/live` and `/ready` are served, or `"off"`
    /// (`baton-query` only: `baton up` serves `[up] metrics_listen`).
    pub metrics_listen: Listen,
    /// How often a replica measures its lag and store size for the metrics.
    pub monitor_interval_ms: u64,
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
    /// The audit log of every read and refusal (`[<section>.audit]`:
    /// enabled, topic, durability, max_delay_ms, append_timeout_ms,
    /// fail_closed, …).
    pub audit: baton_audit::AuditConfig,
    /// What a gRPC connection may do (`[<section>.grpc]`): calls at once
    /// (`max_concurrent_streams`, 100), the largest request
    /// (`max_message_bytes`, 4 MiB), the time to send the HTTP/2 preface
    /// (`preface_timeout_ms`, 10 s) and keepalive pings.
    pub grpc: baton_tls::GrpcLimits,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            max_consistency_wait_ms: 5_000,
            watch_buffer_messages: 4_096,
            watch_recheck_ms: 60_000,
            watch_slow_client_ms: 2_000,
            store_cache_mib: 256,
            admin_listen: baton_runtime::Listen::loopback(
                baton_projector::admin::REPLICA_DEFAULT_PORT,
            ),
            metrics_listen: Listen::loopback(metrics::DEFAULT_METRICS_PORT),
            monitor_interval_ms: 5_000,
            tls: baton_tls::TlsConfig::default(),
            clients: Vec::new(),
            jwt: baton_tls::JwtConfig::default(),
            audit: baton_audit::AuditConfig::default(),
            grpc: baton_tls::GrpcLimits::default(),
        }
    }
}

impl QueryConfig {
    /// How to open a replica's store.
    pub fn store(&self) -> baton_store::StoreConfig {
        baton_store::StoreConfig {
            cache_capacity_bytes: self.store_cache_mib * 1024 * 1024,
            ..baton_store::StoreConfig::default()
        }
    }

    /// Checks the settings, naming the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if self.watch_buffer_messages == 0 {
            return Err("watch_buffer_messages: expected at least 1".into());
        }
        if self.watch_recheck_ms == 0 {
            return Err("watch_recheck_ms: expected a positive number of milliseconds".into());
        }
        if self.store_cache_mib == 0 {
            return Err("store_cache_mib: expected at least 1 (MiB of page cache)".into());
        }
        if self.monitor_interval_ms < 100 {
            return Err(format!(
                "monitor_interval_ms: {} is too often: expected at least 100 (milliseconds)",
                self.monitor_interval_ms
            ));
        }
        self.tls.validate().map_err(|error| error.to_string())?;
        if !self.clients.is_empty() && !self.tls.is_mutual() && !self.jwt.is_on() {
            return Err("clients: a clients table needs a way to identify clients: client certificates (tls.client_ca) or bearer tokens (jwt.issuer)".into());
        }
        baton_tls::Clients::new(&self.clients)?;
        self.audit.validate()?;
        self.grpc.validate().map_err(|error| error.to_string())?;
        Ok(())
    }
}

/// Errors starting, serving or materialising.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("invalid query configuration: {0}")]
    Config(String),
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("event log: {0}")]
    Log(#[from] baton_log::LogError),
    #[error("projection store: {0}")]
    Store(#[from] StoreError),
    #[error("materialising the state changelog: {0}")]
    Materialise(String),
}

/// `baton.query.v1.CareStateQuery` over a [`Store`].
#[derive(Debug, Clone)]
pub struct QueryService {
    store: Store,
    config: QueryConfig,
    /// The topic consistency tokens name positions in.
    events_topic: String,
    /// Where the timeline indexer keeps its positions in that topic.
    timeline_topic: String,
    clock: Arc<dyn Clock>,
    /// Where every read and refusal is recorded.
    auditor: Auditor,
}

impl QueryService {
    pub fn new(store: Store, config: QueryConfig, topics: &Topics) -> Self {
        Self {
            store,
            config,
            events_topic: topics.events.clone(),
            timeline_topic: timeline_positions_topic(&topics.events),
            clock: Arc::new(SystemClock),
            auditor: Auditor::off(),
        }
    }

    /// Recording every read and refusal with `auditor`.
    pub fn with_auditor(mut self, auditor: Auditor) -> Self {
        self.auditor = auditor;
        self
    }

    /// Reads the time of day (ages, overdue referrals, days optimised)
    /// from `clock` instead of the system's.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The gRPC service, `GetCareState` served from the stored bytes.
    pub fn into_server(self) -> QueryServer {
        QueryServer::new(self)
    }

    /// `GetCareState`, answered with the stored encoding of the state.
    ///
    /// The state is read on the calling task, not in `spawn_blocking`: a
    /// point read is a lookup in sled's page cache (a page-cache miss costs
    /// one read of a local file), far cheaper than the hand-over to a
    /// blocking thread, which cost more than the read itself.
    pub(crate) async fn care_state_response(
        &self,
        access: &Access,
        metadata: &MetadataMap,
        request: GetCareStateRequest,
    ) -> Result<EncodedResponse, Status> {
        let key = patient_key(request.patient.as_ref())
            .map_err(|(field, problem)| bad_request(field, problem))?;
        self.wait_for(metadata, &request.consistency_token, &[&self.events_topic])
            .await?;
        let lookup = key.to_string();
        // The stored bytes, and whose they are.
        let read = match self.store.get_encoded(&lookup) {
            Ok(Some(encoded)) => Ok(Some((lookup.clone(), encoded))),
            // A local identifier may belong to a patient keyed by NHS number.
            Ok(None) if lookup.contains(':') => self
                .store
                .find_by_local_id(&lookup)
                .map(|found| found.map(|state| (state.patient_key.clone(), state.encode_to_vec()))),
            Ok(None) => Ok(None),
            Err(error) => Err(error),
        };
        let rpc = access::GET_CARE_STATE;
        match read {
            Ok(Some((patient, encoded))) => {
                if access.is_limited() {
                    // Only what the limit reads (the property test of
                    // decode_for_membership covers `Limit::admits`).
                    let admitted = baton_care::cohort::decode_for_membership(&encoded)
                        .is_ok_and(|state| access.admits(&state));
                    if !admitted {
                        return Err(access.deny(rpc, &patient, &lookup));
                    }
                }
                access
                    .read(rpc, [(patient.as_str(), lookup.as_str())])
                    .await?;
                Ok(EncodedResponse::of_state(&encoded))
            }
            Ok(None) if access.is_limited() => Err(access.deny(rpc, &lookup, &lookup)),
            Ok(None) => {
                access.not_found(rpc, &lookup, &lookup);
                Err(Status::not_found(format!(
                    "no care state for patient {key}"
                )))
            }
            Err(error) => {
                tracing::error!(%error, "projection store read failed");
                Err(Status::unavailable(format!(
                    "projection store read failed: {error}"
                )))
            }
        }
    }

    /// `ListCohort`, answered with the stored encodings of the members'
    /// states: they are decoded, in the fields the checks read, to be
    /// checked against the cohort and the caller's limit, never encoded
    /// again.
    pub(crate) async fn list_cohort_response(
        &self,
        access: &Access,
        request: ListCohortRequest,
    ) -> Result<EncodedResponse, Status> {
        let cohort = self.cohort(request.filter)?;
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            size if size <= MAX_PAGE_SIZE => size,
            size => {
                return Err(bad_request(
                    "page_size",
                    format!(
                        "{size} is too large: expected 1 to {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE})"
                    ),
                ));
            }
        };
        let fingerprint = cohort.fingerprint();
        let after = parse_page_token(&request.page_token, &fingerprint)
            .map_err(|problem| bad_request("page_token", problem))?;
        let now = self.now();
        let limit = access.limit();
        let page = self
            .blocking(move |store| {
                let page_size = page_size as usize;
                // A limited client's page reads at most this many entries,
                // so it ends in bounded time however few it may see.
                let scan = if limit.is_unlimited() {
                    page_size
                } else {
                    page_size.saturating_mul(LIMITED_SCAN_FACTOR)
                };
                store.list_cohort_encoded(
                    &cohort,
                    after.as_deref(),
                    page_size,
                    scan,
                    now,
                    &|state| limit.admits(state),
                )
            })
            .await?;
        access
            .read(
                access::LIST_COHORT,
                page.members
                    .iter()
                    .map(|(patient_key, _)| (patient_key.as_str(), patient_key.as_str())),
            )
            .await?;
        let next_page_token = page
            .next_after
            .map(|entry| page_token(&fingerprint, &entry))
            .unwrap_or_default();
        Ok(EncodedResponse::of_cohort_page(
            page.members.iter().map(|(_, encoded)| encoded.as_slice()),
            &next_page_token,
        ))
    }

    fn now(&self) -> Instant {
        let (seconds, nanos) = self.clock.unix_now();
        Instant::of(Some(&prost_types::Timestamp { seconds, nanos }))
    }

    /// Waits until `token` is applied in every one of `topics`, within the
    /// call's deadline.
    async fn wait_for(
        &self,
        metadata: &MetadataMap,
        token: &str,
        topics: &[&str],
    ) -> Result<(), Status> {
        let token = if token.is_empty() {
            ConsistencyToken::empty()
        } else {
            token
                .parse::<ConsistencyToken>()
                .map_err(|error| bad_request("consistency_token", error.to_string()))?
        };
        let budget = WaitBudget::of(
            metadata,
            Duration::from_millis(self.config.max_consistency_wait_ms),
        );
        consistency::wait_for(&self.store, topics, &token, budget).await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        read: impl FnOnce(Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || read(store)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                tracing::error!(%error, "projection store read failed");
                Err(Status::unavailable(format!(
                    "projection store read failed: {error}"
                )))
            }
            Err(error) => Err(Status::internal(format!("store read task failed: {error}"))),
        }
    }

    /// The patient a request names, and their state; `NOT_FOUND` when no
    /// event of theirs has been applied, `PERMISSION_DENIED` when the
    /// caller's limit leaves them out (or, to a limited caller, when none
    /// has). Returns the key asked for beside the state.
    async fn find(
        &self,
        access: &Access,
        rpc: &str,
        patient: Option<&PatientRef>,
    ) -> Result<(PatientCareState, String), Status> {
        let key = patient_key(patient).map_err(|(field, problem)| bad_request(field, problem))?;
        let lookup = key.to_string();
        let asked = lookup.clone();
        let found = self
            .blocking(move |store| match store.get(&lookup)? {
                Some(state) => Ok(Some(state)),
                // A local identifier may belong to a patient keyed by NHS number.
                None if lookup.contains(':') => store.find_by_local_id(&lookup),
                None => Ok(None),
            })
            .await?;
        match found {
            Some(state) if access.admits(&state) => Ok((state, asked)),
            Some(state) => Err(access.deny(rpc, &state.patient_key, &asked)),
            None if access.is_limited() => Err(access.deny(rpc, &asked, &asked)),
            None => {
                access.not_found(rpc, &asked, &asked);
                Err(Status::not_found(format!(
                    "no care state for patient {key}"
                )))
            }
        }
    }

    /// The patient's state once the projection and the timeline have
    /// applied `token`: what `GetTimeline` and `GetCareStateAsOf` read.
    async fn find_with_timeline(
        &self,
        access: &Access,
        rpc: &str,
        metadata: &MetadataMap,
        patient: Option<&PatientRef>,
        token: &str,
    ) -> Result<(PatientCareState, String), Status> {
        patient_key(patient).map_err(|(field, problem)| bad_request(field, problem))?;
        self.wait_for(metadata, token, &[&self.events_topic, &self.timeline_topic])
            .await?;
        self.find(access, rpc, patient).await
    }

    fn cohort(
        &self,
        filter: Option<baton_proto::query::v1::CohortFilter>,
    ) -> Result<Cohort, Status> {
        Cohort::from_filter(&filter.unwrap_or_default(), "filter")
            .map_err(|violation| bad_request(&violation.field, violation.problem))
    }
}

#[tonic::async_trait]
impl CareStateQuery for QueryService {
    /// Served by [`QueryServer`] from the stored bytes; this decoding path
    /// is for callers of the generated server alone.
    async fn get_care_state(
        &self,
        request: Request<GetCareStateRequest>,
    ) -> Result<Response<GetCareStateResponse>, Status> {
        let access = Access::of(&self.auditor, &request);
        let (metadata, _, request) = request.into_parts();
        let encoded = self
            .care_state_response(&access, &metadata, request)
            .await?;
        GetCareStateResponse::decode(encoded.0)
            .map(Response::new)
            .map_err(|error| Status::internal(format!("a stored state does not decode: {error}")))
    }

    /// Served by [`QueryServer`] from the stored bytes; this decoding path
    /// is for callers of the generated server alone.
    async fn list_cohort(
        &self,
        request: Request<ListCohortRequest>,
    ) -> Result<Response<ListCohortResponse>, Status> {
        let access = Access::of(&self.auditor, &request);
        let encoded = self
            .list_cohort_response(&access, request.into_inner())
            .await?;
        ListCohortResponse::decode(encoded.0)
            .map(Response::new)
            .map_err(|error| Status::internal(format!("a stored state does not decode: {error}")))
    }

    type WatchCohortStream = watch::WatchStream;

    async fn watch_cohort(
        &self,
        request: Request<WatchCohortRequest>,
    ) -> Result<Response<Self::WatchCohortStream>, Status> {
        let access = Access::of(&self.auditor, &request);
        let cohort = self.cohort(request.into_inner().filter)?;
        let limits = watch::WatchLimits {
            buffer_messages: self.config.watch_buffer_messages,
            recheck: Duration::from_millis(self.config.watch_recheck_ms.max(1)),
            slow_client: Duration::from_millis(self.config.watch_slow_client_ms),
        };
        Ok(Response::new(watch::watch(
            self.store.clone(),
            cohort,
            Arc::clone(&self.clock),
            limits,
            access,
        )))
    }

    async fn get_timeline(
        &self,
        request: Request<GetTimelineRequest>,
    ) -> Result<Response<GetTimelineResponse>, Status> {
        let access = Access::of(&self.auditor, &request);
        let (metadata, _, request) = request.into_parts();
        let from = Instant::of(request.from.as_ref());
        let to = Instant::of(request.to.as_ref());
        if from.is_set() && to.is_set() && from > to {
            return Err(bad_request(
                "from",
                "is after to: expected from on or before to (both inclusive)",
            ));
        }
        let rpc = access::GET_TIMELINE;
        let (state, asked) = self
            .find_with_timeline(
                &access,
                rpc,
                &metadata,
                request.patient.as_ref(),
                &request.consistency_token,
            )
            .await?;
        let patient_key = state.patient_key.clone();
        let entries = self
            .blocking(move |store| history::timeline(&store, &state, from, to))
            .await?;
        access
            .read(rpc, [(patient_key.as_str(), asked.as_str())])
            .await?;
        Ok(Response::new(GetTimelineResponse {
            patient_key,
            entries,
        }))
    }

    async fn get_care_state_as_of(
        &self,
        request: Request<GetCareStateAsOfRequest>,
    ) -> Result<Response<GetCareStateAsOfResponse>, Status> {
        let access = Access::of(&self.auditor, &request);
        let (metadata, _, request) = request.into_parts();
        let time = Instant::of(request.time.as_ref());
        if !time.is_set() {
            return Err(bad_request(
                "time",
                "required: the clinical or recorded time to show the state at",
            ));
        }
        let axis = match TimeAxis::try_from(request.axis) {
            Ok(TimeAxis::Unspecified) | Err(_) => {
                return Err(bad_request(
                    "axis",
                    format!(
                        "{} is not a time axis: expected TIME_AXIS_CLINICAL (what was true then) or TIME_AXIS_RECORDED (what was recorded by then)",
                        request.axis
                    ),
                ));
            }
            Ok(axis) => axis,
        };
        let rpc = access::GET_CARE_STATE_AS_OF;
        let (state, asked) = self
            .find_with_timeline(
                &access,
                rpc,
                &metadata,
                request.patient.as_ref(),
                &request.consistency_token,
            )
            .await?;
        let patient_key = state.patient_key.clone();
        let (state, events_applied) = self
            .blocking(move |store| history::as_of(&store, &state, time, axis))
            .await?;
        access
            .read(rpc, [(patient_key.as_str(), asked.as_str())])
            .await?;
        Ok(Response::new(GetCareStateAsOfResponse {
            state,
            events_applied,
        }))
    }
}

/// The key of the patient a request names, or the field and what is wrong.
fn patient_key(patient: Option<&PatientRef>) -> Result<PatientKey, (&'static str, String)> {
    match patient.and_then(|p| p.r#ref.as_ref()) {
        None => Err((
            "patient",
            "required: one of nhs_number, local_id or patient_key".to_owned(),
        )),
        // People write NHS numbers as 943 476 5919; a lookup may too.
        Some(Ref::NhsNumber(nhs)) => NhsNumber::parse(&nhs.replace(' ', ""))
            .map(|nhs| PatientKey::from_nhs_number(&nhs))
            .map_err(|problem| ("patient.nhs_number", problem)),
        Some(Ref::LocalId(local)) => {
            PatientKey::from_local_id(local).map_err(|problem| ("patient.local_id", problem))
        }
        Some(Ref::PatientKey(key)) => {
            PatientKey::parse(key).map_err(|problem| ("patient.patient_key", problem))
        }
    }
}

fn bad_request(field: &str, problem: impl Into<String>) -> Status {
    let problem = problem.into();
    let details = ErrorDetails::with_bad_request_violation(field, problem.clone());
    Status::with_error_details(
        Code::InvalidArgument,
        format!("{field}: {problem}"),
        details,
    )
}

/// Page tokens are opaque to clients: a version tag, the fingerprint of the
/// filter, and the index entry the page ended at, hex-encoded. A token is
/// valid with the filter that produced it only.
fn page_token(fingerprint: &str, last_entry: &str) -> String {
    let mut token = format!("{PAGE_TOKEN_PREFIX}{fingerprint}.");
    for byte in last_entry.bytes() {
        token.push_str(&format!("{byte:02x}"));
    }
    token
}

fn parse_page_token(token: &str, fingerprint: &str) -> Result<Option<String>, String> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || format!("{token:?} is not a page token from a previous ListCohort response");
    let rest = token.strip_prefix(PAGE_TOKEN_PREFIX).ok_or_else(invalid)?;
    let (made_for, hex) = rest.split_once('.').ok_or_else(invalid)?;
    if made_for != fingerprint {
        return Err(format!(
            "{token:?} comes from a ListCohort call with another filter: send the same filter with every page, or no page_token to start again"
        ));
    }
    if hex.len() % 2 != 0 {
        return Err(invalid());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| invalid())?;
    String::from_utf8(bytes).map(Some).map_err(|_| invalid())
}

/// Serves the query API on `listener` until `shutdown` completes.
pub async fn run(
    service: QueryService,
    listener: impl Into<baton_tls::TlsListener>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), QueryError> {
    use tonic::server::NamedService;

    let listener = listener
        .into()
        .with_grpc_limits(service.config.grpc.clone());
    baton_runtime::grpc::serve(
        "query",
        &[<CareStateQueryServer<QueryService> as NamedService>::NAME],
        listener,
        |router| router.add_service(service.into_server()),
        shutdown,
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_proto::events::v1::LocalIdentifier;

    #[test]
    fn page_tokens_round_trip_and_refuse_forgeries_and_other_filters() {
        for entry in ["\u{1f}9434765919", "l\u{1f}RXX:H/1é\u{1f}9434765919"] {
            assert_eq!(
                parse_page_token(&page_token("0badf00d", entry), "0badf00d")
                    .unwrap()
                    .as_deref(),
                Some(entry)
            );
        }
        assert_eq!(parse_page_token("", "0badf00d").unwrap(), None);
        for forged in ["abc", "c2.0badf00d.zz", "c2.0badf00d.123", "c2.nodot"] {
            assert!(
                parse_page_token(forged, "0badf00d")
                    .unwrap_err()
                    .contains("not a page token"),
                "{forged}"
            );
        }
        let other = parse_page_token(&page_token("0badf00d", "x"), "12345678").unwrap_err();
        assert!(other.contains("another filter"), "{other}");
    }

    #[test]
    fn patients_are_found_by_any_identifier_and_bad_ones_named() {
        let by_nhs = PatientRef {
            r#ref: Some(Ref::NhsNumber("943 476 5919".into())),
        };
        assert_eq!(patient_key(Some(&by_nhs)).unwrap().as_str(), "9434765919");
        let by_local = PatientRef {
            r#ref: Some(Ref::LocalId(LocalIdentifier {
                authority: "RXX".into(),
                value: "H123".into(),
            })),
        };
        assert_eq!(patient_key(Some(&by_local)).unwrap().as_str(), "RXX:H123");
        let bad = PatientRef {
            r#ref: Some(Ref::NhsNumber("9434765918".into())),
        };
        assert_eq!(patient_key(Some(&bad)).unwrap_err().0, "patient.nhs_number");
        assert_eq!(patient_key(None).unwrap_err().0, "patient");
    }
}
