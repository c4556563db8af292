//! `GetCareState` without decoding the state: the store keeps each state
//! protobuf-encoded, and a `GetCareStateResponse` is one field holding that
//! state, so the answer is the stored bytes behind a two-to-four-byte field
//! header. [`QueryServer`] serves that one method this way and hands every
//! other to the generated server.
//!
//! Decoding a state (a few kilobytes of nested messages) and encoding it
//! again was most of the CPU a `GetCareState` cost; the hot read does
//! neither now.

use std::convert::Infallible;
use std::task::{Context, Poll};

use baton_proto::query::v1::GetCareStateRequest;
use baton_proto::query::v1::care_state_query_server::CareStateQueryServer;
use bytes::{BufMut, Bytes};
use prost::Message;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};

use crate::QueryService;

const GET_CARE_STATE: &str = "/baton.query.v1.CareStateQuery/GetCareState";

/// An encoded `baton.query.v1.GetCareStateResponse`.
#[derive(Debug, Clone)]
pub(crate) struct EncodedResponse(pub(crate) Bytes);

impl EncodedResponse {
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
        if request.uri().path() != GET_CARE_STATE {
            return self.generated.call(request);
        }
        let method = GetCareStateMethod(self.service.clone());
        let max_decoding = self.service.config.grpc.max_message_bytes;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .apply_max_message_size_config(Some(max_decoding), None);
            Ok(grpc.unary(method, request).await)
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

/// Decodes requests with prost; writes responses as they are.
#[derive(Debug, Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = EncodedResponse;
    type Decode = GetCareStateRequest;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = EncodedResponse;
    type Error = Status;

    fn encode(&mut self, item: EncodedResponse, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item.0);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = GetCareStateRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<GetCareStateRequest>, Status> {
        GetCareStateRequest::decode(src).map(Some).map_err(|error| {
            Status::invalid_argument(format!("not a GetCareStateRequest: {error}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_proto::query::v1::GetCareStateResponse;
    use baton_proto::state::v1::PatientCareState;

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
