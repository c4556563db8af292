//! `GetCareState` and `ListCohort` without encoding states again: the store
//! keeps each state protobuf-encoded, and a `GetCareStateResponse` is one
//! field holding that state, a `ListCohortResponse` that field repeated and
//! the page token, so the answer is the stored bytes behind field headers.
//! [`QueryServer`] serves those two methods this way and hands every other
//! to the generated server.
//!
//! Decoding a state (a few kilobytes of nested messages) and encoding it
//! again was most of the CPU a `GetCareState` cost; the hot read does
//! neither now. A `ListCohort` page still decodes each candidate, in the
//! fields the checks read only, to check it against the cohort and the
//! caller's limit, but no longer encodes it: for a page of 1000 that was as
//! long as the store's scan.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::task::{Context, Poll};

use baton_proto::query::v1::care_state_query_server::CareStateQueryServer;
use baton_proto::query::v1::{GetCareStateRequest, ListCohortRequest};
use bytes::{BufMut, Bytes};
use prost::Message;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};

use crate::QueryService;

const GET_CARE_STATE: &str = "/baton.query.v1.CareStateQuery/GetCareState";
const LIST_COHORT: &str = "/baton.query.v1.CareStateQuery/ListCohort";

/// An encoded `baton.query.v1.GetCareStateResponse`.
#[derive(Debug, Clone)]
pub(crate) struct EncodedResponse(pub(crate) Bytes);

impl EncodedResponse {
    /// The `ListCohortResponse` holding the states whose encodings are
    /// `states` (field 1, repeated) and `next_page_token` (field 2).
    pub(crate) fn of_cohort_page<'a>(
        states: impl Iterator<Item = &'a [u8]> + Clone,
        next_page_token: &str,
    ) -> Self {
        let length = |len: usize| 1 + prost::encoding::encoded_len_varint(len as u64) + len;
        let total = states
            .clone()
            .map(|state| length(state.len()))
            .sum::<usize>()
            + if next_page_token.is_empty() {
                0
            } else {
                length(next_page_token.len())
            };
        let mut encoded = Vec::with_capacity(total);
        for state in states {
            encoded.push(0x0a);
            prost::encoding::encode_varint(state.len() as u64, &mut encoded);
            encoded.extend_from_slice(state);
        }
        if !next_page_token.is_empty() {
            // Field 2, wire type 2: tag byte 0x12.
            encoded.push(0x12);
            prost::encoding::encode_varint(next_page_token.len() as u64, &mut encoded);
            encoded.extend_from_slice(next_page_token.as_bytes());
        }
        Self(Bytes::from(encoded))
    }

    /// The response holding the state whose encoding is `state`.
    pub(crate) fn of_state(state: &[u8]) -> Self {
        // Field 1, wire type 2 (length-delimited): tag byte 0x0a.
        let mut encoded = Vec::with_capacity(state.len() + 6);
        encoded.push(0x0a);
        prost::encoding::encode_varint(state.len() as u64, &mut encoded);
        encoded.extend_from_slice(state);
        Self(Bytes::from(encoded))
    }
}

/// The query API: the generated server, with `GetCareState` answered from
/// the stored bytes.
#[derive(Debug, Clone)]
pub struct QueryServer {
    service: QueryService,
    generated: CareStateQueryServer<QueryService>,
}

impl QueryServer {
    pub(crate) fn new(service: QueryService) -> Self {
        Self {
            generated: CareStateQueryServer::new(service.clone())
                .max_decoding_message_size(service.config.grpc.max_message_bytes),
            service,
        }
    }
}

impl NamedService for QueryServer {
    const NAME: &'static str = <CareStateQueryServer<QueryService> as NamedService>::NAME;
}

impl Service<http::Request<Body>> for QueryServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let max_decoding = self.service.config.grpc.max_message_bytes;
        match request.uri().path() {
            GET_CARE_STATE => {
                let method = GetCareStateMethod(self.service.clone());
                Box::pin(async move {
                    let mut grpc = tonic::server::Grpc::new(RawCodec::<GetCareStateRequest>::new())
                        .apply_max_message_size_config(Some(max_decoding), None);
                    Ok(grpc.unary(method, request).await)
                })
            }
            LIST_COHORT => {
                let method = ListCohortMethod(self.service.clone());
                Box::pin(async move {
                    let mut grpc = tonic::server::Grpc::new(RawCodec::<ListCohortRequest>::new())
                        .apply_max_message_size_config(Some(max_decoding), None);
                    Ok(grpc.unary(method, request).await)
                })
            }
            _ => self.generated.call(request),
        }
    }
}

struct ListCohortMethod(QueryService);

impl UnaryService<ListCohortRequest> for ListCohortMethod {
    type Response = EncodedResponse;
    type Future = BoxFuture<Response<EncodedResponse>, Status>;

    fn call(&mut self, request: Request<ListCohortRequest>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move {
            let access = crate::access::Access::of(&service.auditor, &request);
            service
                .list_cohort_response(&access, request.into_inner())
                .await
                .map(Response::new)
        })
    }
}

struct GetCareStateMethod(QueryService);

impl UnaryService<GetCareStateRequest> for GetCareStateMethod {
    type Response = EncodedResponse;
    type Future = BoxFuture<Response<EncodedResponse>, Status>;

    fn call(&mut self, request: Request<GetCareStateRequest>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move {
            let access = crate::access::Access::of(&service.auditor, &request);
            let (metadata, _, request) = request.into_parts();
            service
                .care_state_response(&access, &metadata, request)
                .await
                .map(Response::new)
        })
    }
}

/// Decodes requests (`R`) with prost; writes responses as they are.
struct RawCodec<R>(PhantomData<fn() -> R>);

impl<R> RawCodec<R> {
    fn new() -> Self {
        Self(PhantomData)
    }
}

impl<R: Message + Default + Send + 'static> Codec for RawCodec<R> {
    type Encode = EncodedResponse;
    type Decode = R;
    type Encoder = RawCodec<R>;
    type Decoder = RawCodec<R>;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec::new()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec::new()
    }
}

impl<R: Send + 'static> Encoder for RawCodec<R> {
    type Item = EncodedResponse;
    type Error = Status;

    fn encode(&mut self, item: EncodedResponse, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item.0);
        Ok(())
    }
}

impl<R: Message + Default + Send + 'static> Decoder for RawCodec<R> {
    type Item = R;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<R>, Status> {
        R::decode(src).map(Some).map_err(|error| {
            Status::invalid_argument(format!(
                "not a {}: {error}",
                std::any::type_name::<R>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("request")
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_proto::query::v1::GetCareStateResponse;
    use baton_proto::state::v1::PatientCareState;

    #[test]
    fn stored_states_behind_field_headers_are_a_cohort_page() {
        use baton_proto::query::v1::ListCohortResponse;
        let states: Vec<PatientCareState> = [0, 200, 20_000]
            .into_iter()
            .map(|padding| PatientCareState {
                patient_key: format!("9434765919{}", "x".repeat(padding)),
                version: 3,
                ..Default::default()
            })
            .collect();
        let encoded: Vec<Vec<u8>> = states.iter().map(Message::encode_to_vec).collect();
        for token in ["", "c2.0badf00d.61"] {
            let page = EncodedResponse::of_cohort_page(encoded.iter().map(Vec::as_slice), token);
            let expected = ListCohortResponse {
                states: states.clone(),
                next_page_token: token.to_owned(),
            };
            assert_eq!(page.0.len(), expected.encoded_len());
            assert_eq!(ListCohortResponse::decode(page.0).unwrap(), expected);
        }
        let empty = EncodedResponse::of_cohort_page(std::iter::empty(), "");
        assert!(empty.0.is_empty());
    }

    #[test]
    fn the_stored_bytes_behind_a_field_header_are_the_response() {
        for padding in [0, 100, 20_000] {
            let state = PatientCareState {
                patient_key: format!("9434765919{}", "x".repeat(padding)),
                version: 7,
                ..Default::default()
            };
            let response = EncodedResponse::of_state(&state.encode_to_vec());
            let decoded = GetCareStateResponse::decode(response.0).unwrap();
            assert_eq!(decoded.state, Some(state));
        }
    }
}
