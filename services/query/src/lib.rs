//! baton-query: patients' current care state and cohorts over gRPC
//! (`baton.query.v1.CareStateQuery`), read from the projection store.
//!
//! - `GetCareState` finds a patient by NHS number, local identifier or
//!   patient key. With a consistency token from `Publish` it first waits
//!   (up to `max_consistency_wait_ms`) until the projection has applied the
//!   positions the token names: read-your-writes across services.
//! - `ListCohort` pages through a cohort (care setting, organisation, ward)
//!   in patient-key order from the store's cohort index.
//!
//! Bad requests get `INVALID_ARGUMENT` with a `google.rpc.BadRequest` naming
//! the field; an unknown patient `NOT_FOUND`; a token not reached in time
//! `UNAVAILABLE` (retry). Health checking and server reflection are on.
//!
//! The store is the projector's own (`baton up`, one process) or a replica
//! of it that a [`Materialiser`] keeps in step with the state changelog
//! (`baton-query` on Kafka, as many replicas as needed).
//!
//! # Layout
//! - `lib.rs`: [`QueryConfig`], [`QueryService`] and [`run`].
//! - `materialise.rs`: [`Materialiser`], the replica's changelog follower.

mod materialise;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use baton_care::cohort::Cohort;
use baton_care::{NhsNumber, PatientKey};
use baton_log::ConsistencyToken;
use baton_log::topics::Topics;
use baton_proto::query::v1::care_state_query_server::{CareStateQuery, CareStateQueryServer};
use baton_proto::query::v1::patient_ref::Ref;
use baton_proto::query::v1::{
    GetCareStateRequest, GetCareStateResponse, ListCohortRequest, ListCohortResponse, PatientRef,
};
use baton_store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The port the query API listens on unless configured otherwise.
pub const DEFAULT_PORT: u16 = 50052;
/// Page size when a request gives none.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page a request may ask for.
pub const MAX_PAGE_SIZE: u32 = 1000;
const PAGE_TOKEN_PREFIX: &str = "k1.";

/// Settings of the query service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// Address the gRPC API listens on.
    pub listen: SocketAddr,
    /// Longest a `GetCareState` waits for its consistency token.
    pub max_consistency_wait_ms: u64,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            max_consistency_wait_ms: 5_000,
        }
    }
}

pub use materialise::{Materialiser, MaterialiserStats};

/// Errors starting, serving or materialising.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
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
}

impl QueryService {
    pub fn new(store: Store, config: QueryConfig, topics: &Topics) -> Self {
        Self {
            store,
            config,
            events_topic: topics.events.clone(),
        }
    }

    pub fn into_server(self) -> CareStateQueryServer<Self> {
        CareStateQueryServer::new(self)
    }

    /// Waits until the projection has applied everything `token` names.
    async fn wait_for(&self, token: &ConsistencyToken) -> Result<(), Status> {
        if token.is_empty() {
            return Ok(());
        }
        let mut applied = self.store.watch(&self.events_topic);
        let wait = Duration::from_millis(self.config.max_consistency_wait_ms);
        match tokio::time::timeout(
            wait,
            applied.wait_for(|applied| token.is_satisfied_by(applied)),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Status::unavailable("the projection store is closing")),
            Err(_) => Err(Status::unavailable(format!(
                "the projection has not yet applied consistency token {token} after {} ms; retry",
                wait.as_millis()
            ))),
        }
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
}

#[tonic::async_trait]
impl CareStateQuery for QueryService {
    async fn get_care_state(
        &self,
        request: Request<GetCareStateRequest>,
    ) -> Result<Response<GetCareStateResponse>, Status> {
        let request = request.into_inner();
        let key = patient_key(request.patient.as_ref())
            .map_err(|(field, problem)| bad_request(field, problem))?;
        let token = if request.consistency_token.is_empty() {
            ConsistencyToken::empty()
        } else {
            request
                .consistency_token
                .parse::<ConsistencyToken>()
                .map_err(|error| bad_request("consistency_token", error.to_string()))?
        };
        self.wait_for(&token).await?;
        let lookup = key.to_string();
        let found = self
            .blocking(move |store| match store.get(&lookup)? {
                Some(state) => Ok(Some(state)),
                // A local identifier may belong to a patient keyed by NHS number.
                None if lookup.contains(':') => store.find_by_local_id(&lookup),
                None => Ok(None),
            })
            .await?;
        match found {
            Some(state) => Ok(Response::new(GetCareStateResponse { state: Some(state) })),
            None => Err(Status::not_found(format!(
                "no care state for patient {key}"
            ))),
        }
    }

    async fn list_cohort(
        &self,
        request: Request<ListCohortRequest>,
    ) -> Result<Response<ListCohortResponse>, Status> {
        let request = request.into_inner();
        let cohort = Cohort::from_filter(&request.filter.unwrap_or_default(), "filter")
            .map_err(|violation| bad_request(&violation.field, violation.problem))?;
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
        let after = parse_page_token(&request.page_token)
            .map_err(|problem| bad_request("page_token", problem))?;
        let page = self
            .blocking(move |store| store.list_cohort(&cohort, after.as_deref(), page_size as usize))
            .await?;
        Ok(Response::new(ListCohortResponse {
            states: page.states,
            next_page_token: page
                .next_after
                .map(|key| page_token(&key))
                .unwrap_or_default(),
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

/// Page tokens are opaque to clients: the last key of the page, hex-encoded
/// behind a version tag. A token is valid with the filter that produced it.
fn page_token(last_key: &str) -> String {
    let mut token = String::from(PAGE_TOKEN_PREFIX);
    for byte in last_key.bytes() {
        token.push_str(&format!("{byte:02x}"));
    }
    token
}

fn parse_page_token(token: &str) -> Result<Option<String>, String> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || format!("{token:?} is not a page token from a previous ListCohort response");
    let hex = token.strip_prefix(PAGE_TOKEN_PREFIX).ok_or_else(invalid)?;
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
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), QueryError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<CareStateQueryServer<QueryService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(baton_proto::DESCRIPTOR_SET)
        .build_v1()
        .expect("the compiled descriptor set is valid");
    tracing::info!(address = ?listener.local_addr().ok(), "query listening");
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(service.into_server())
        // TCP_NODELAY: a gRPC answer is written in several small pieces,
        // and Nagle's algorithm holds each back until the previous one is
        // acknowledged (~40 ms of delayed ACK per call on loopback).
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await?;
    tracing::info!("query stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_proto::events::v1::LocalIdentifier;

    #[test]
    fn page_tokens_round_trip_and_refuse_forgeries() {
        for key in ["9434765919", "RXX:H/1é"] {
            assert_eq!(
                parse_page_token(&page_token(key)).unwrap().as_deref(),
                Some(key)
            );
        }
        assert_eq!(parse_page_token("").unwrap(), None);
        for forged in ["abc", "k1.zz", "k1.123"] {
            assert!(
                parse_page_token(forged)
                    .unwrap_err()
                    .contains("not a page token")
            );
        }
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
