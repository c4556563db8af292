//! The gRPC face of [`Ingest`]: statuses with machine-readable details.

use baton_proto::ingest::v1::care_event_ingest_server::{CareEventIngest, CareEventIngestServer};
use baton_proto::ingest::v1::{PublishRequest, PublishResponse};
use baton_telemetry::TraceParent;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tracing::Instrument;

use crate::{Ingest, PublishError};

/// `baton.ingest.v1.CareEventIngest` over an [`Ingest`].
#[derive(Debug, Clone)]
pub struct IngestService {
    ingest: Ingest,
}

impl IngestService {
    pub fn new(ingest: Ingest) -> Self {
        Self { ingest }
    }

    /// The server, decoding requests up to `grpc.max_message_bytes`.
    pub fn into_server(self) -> CareEventIngestServer<Self> {
        let limit = self.ingest.config.grpc.max_message_bytes;
        CareEventIngestServer::new(self).max_decoding_message_size(limit)
    }
}

#[tonic::async_trait]
impl CareEventIngest for IngestService {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        // Continue the caller's trace when it sent one; start one otherwise.
        let parent = TraceParent::from_metadata(request.metadata())
            .map_err(|error| bad_request("traceparent (request metadata)", error.to_string()))?;
        let span = tracing::info_span!("publish", events = request.get_ref().events.len());
        if let Some(parent) = &parent {
            baton_telemetry::set_parent(&span, parent);
        }
        let trace = if baton_telemetry::is_exporting() {
            span.in_scope(baton_telemetry::current_traceparent)
        } else {
            Some(parent.map_or_else(TraceParent::new_root, |parent| parent.child()))
        };
        let request = request.into_inner();
        match self
            .ingest
            .publish(request.events, request.validate_only, trace)
            .instrument(span)
            .await
        {
            Ok(published) => Ok(Response::new(PublishResponse {
                events: published.events,
                consistency_token: published.token.to_string(),
            })),
            Err(error) => Err(status_of(&error)),
        }
    }
}

fn bad_request(field: &str, problem: String) -> Status {
    let details = ErrorDetails::with_bad_request_violation(field, problem.clone());
    Status::with_error_details(
        Code::InvalidArgument,
        format!("{field}: {problem}"),
        details,
    )
}

/// Maps a refusal to the status a client can act on: fix the input
/// (`INVALID_ARGUMENT`, with a `google.rpc.BadRequest` naming each field)
/// or retry later (`UNAVAILABLE`).
pub(crate) fn status_of(error: &PublishError) -> Status {
    match error {
        PublishError::Empty => {
            let details =
                ErrorDetails::with_bad_request_violation("events", "required: at least one event");
            Status::with_error_details(Code::InvalidArgument, error.to_string(), details)
        }
        PublishError::TooLarge { max, .. } => {
            let details = ErrorDetails::with_bad_request_violation(
                "events",
                format!("at most {max} events per call"),
            );
            Status::with_error_details(Code::InvalidArgument, error.to_string(), details)
        }
        PublishError::Invalid { invalid, .. } => {
            let mut details = ErrorDetails::new();
            let mut first = None;
            for (index, event) in invalid {
                for violation in &event.violations {
                    let field = format!("events[{index}].{}", violation.field);
                    first.get_or_insert_with(|| format!("{field}: {}", violation.problem));
                    details.add_bad_request_violation(field, violation.problem.clone());
                }
            }
            let message = match first {
                Some(first) => format!("{error}; first: {first}"),
                None => error.to_string(),
            };
            Status::with_error_details(Code::InvalidArgument, message, details)
        }
        PublishError::Log(log_error) => {
            tracing::warn!(error = %log_error, "publish failed: event log unavailable");
            Status::unavailable(error.to_string())
        }
    }
}
