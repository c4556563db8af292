//! Who may call what: the layer [`crate::grpc::serve`] puts in front of
//! every service, keyed by the gRPC path.
//!
//! With a `clients` table ([`baton_tls::Clients`]) that has any client,
//! every call but health checking needs a client certificate the table
//! names (else `UNAUTHENTICATED`), and the scope its RPC needs (else
//! `PERMISSION_DENIED`, naming the scope and the RPC, never anything about
//! the patient asked for). The caller's [`ClientIdentity`] then travels in
//! the request's extensions. An empty table lets through every client the
//! TLS layer admitted.

use std::sync::Arc;
use std::task::{Context, Poll};

use baton_tls::{ClientIdentity, Clients, Scope};
use futures::future::{Either, Ready, ready};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// What a gRPC path needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: health checking.
    Open,
    /// Any known client: reflection, and paths no service serves.
    Known,
    /// A client holding this scope.
    Scoped(Scope),
}

/// What the call to `path` (`/package.Service/Method`) needs.
pub fn access(path: &str) -> Access {
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""));
    match (service, method) {
        ("grpc.health.v1.Health", _) => Access::Open,
        ("baton.ingest.v1.CareEventIngest", _) => Access::Scoped(Scope::Publish),
        ("baton.admin.v1.Operations", _) => Access::Scoped(Scope::Admin),
        ("baton.query.v1.CareStateQuery", "GetCareState") => Access::Scoped(Scope::Read),
        ("baton.query.v1.CareStateQuery", "ListCohort") => Access::Scoped(Scope::Cohort),
        ("baton.query.v1.CareStateQuery", "WatchCohort") => Access::Scoped(Scope::Watch),
        ("baton.query.v1.CareStateQuery", "GetTimeline" | "GetCareStateAsOf") => {
            Access::Scoped(Scope::Timeline)
        }
        // Any other query RPC is one added since: it needs the read scope
        // at least until it is given its own.
        ("baton.query.v1.CareStateQuery", _) => Access::Scoped(Scope::Read),
        _ => Access::Known,
    }
}

/// Decides one call: `Ok(None)` when no table is enforced or the path is
/// open, `Ok(Some(identity))` for a client allowed, else the status to
/// answer with.
pub fn authorise(
    clients: &Clients,
    path: &str,
    peer_certificate: Option<&[u8]>,
    authorization: Option<&[u8]>,
) -> Result<Option<ClientIdentity>, tonic::Status> {
    if !clients.is_enforced() {
        return Ok(None);
    }
    let needed = access(path);
    if needed == Access::Open {
        return Ok(None);
    }
    let identity = match authorization {
        // A token, when sent, is the identity: a bad one is refused even
        // over a good certificate.
        Some(value) => {
            let token = baton_tls::bearer(value).ok_or_else(|| {
                tonic::Status::unauthenticated(baton_tls::TokenError::NotBearer.to_string())
            })?;
            clients
                .by_token(token)
                .map_err(|error| tonic::Status::unauthenticated(error.to_string()))?
        }
        None => peer_certificate
            .and_then(|der| clients.by_certificate(der))
            .ok_or_else(|| {
                tonic::Status::unauthenticated(
                    "no client identity: present a client certificate or a bearer token that the clients table names",
                )
            })?,
    };
    if let Access::Scoped(scope) = needed
        && !identity.has(scope)
    {
        let rpc = path.rsplit('/').next().unwrap_or(path);
        return Err(tonic::Status::permission_denied(format!(
            "client {:?} lacks the scope {scope:?}, which {rpc} needs",
            identity.id,
            scope = scope.name(),
        )));
    }
    Ok(Some(identity))
}

/// The client a refused call came from, when it was identified (refused
/// for want of a scope, not of an identity).
fn identified(
    clients: &Clients,
    peer_certificate: Option<&[u8]>,
    authorization: Option<&[u8]>,
) -> Option<ClientIdentity> {
    match authorization {
        Some(value) => clients.by_token(baton_tls::bearer(value)?).ok(),
        None => clients.by_certificate(peer_certificate?),
    }
}

/// The remote address of the connection a request came on, with or
/// without TLS.
pub fn peer_address(extensions: &http::Extensions) -> Option<std::net::SocketAddr> {
    extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.get_ref().remote_addr())
        .or_else(|| {
            extensions
                .get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::remote_addr)
        })
}

/// The name gRPC gives `code`, as in `grpc-status` documentation.
pub fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The tower layer of [`authorise`].
#[derive(Debug, Clone)]
pub struct AuthLayer {
    clients: Arc<Clients>,
}

impl AuthLayer {
    pub fn new(clients: Arc<Clients>) -> Self {
        Self { clients }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            clients: Arc::clone(&self.clients),
        }
    }
}

/// A service behind [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    clients: Arc<Clients>,
}

impl<S, B> tower_service::Service<http::Request<B>> for Auth<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let certificates = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs);
        let leaf = certificates
            .as_ref()
            .and_then(|chain| chain.first())
            .map(|der| der.as_ref());
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(http::HeaderValue::as_bytes);
        let decision = authorise(&self.clients, request.uri().path(), leaf, authorization);
        match decision {
            Ok(identity) => {
                if let Some(identity) = identity {
                    request.extensions_mut().insert(identity);
                }
                Either::Right(self.inner.call(request))
            }
            Err(status) => {
                tracing::info!(
                    path = request.uri().path(),
                    code = ?status.code(),
                    "refused a call"
                );
                self.clients.refused(baton_tls::Refusal {
                    path: request.uri().path().to_owned(),
                    client: identified(&self.clients, leaf, authorization),
                    code: code_name(status.code()),
                    message: status.message().to_owned(),
                    peer: peer_address(request.extensions()),
                });
                Either::Left(ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rpc_needs_its_scope_and_health_none() {
        let scoped = access;
        assert_eq!(scoped("/grpc.health.v1.Health/Check"), Access::Open);
        assert_eq!(
            scoped("/baton.ingest.v1.CareEventIngest/Publish"),
            Access::Scoped(Scope::Publish)
        );
        assert_eq!(
            scoped("/baton.query.v1.CareStateQuery/GetCareState"),
            Access::Scoped(Scope::Read)
        );
        assert_eq!(
            scoped("/baton.query.v1.CareStateQuery/ListCohort"),
            Access::Scoped(Scope::Cohort)
        );
        assert_eq!(
            scoped("/baton.query.v1.CareStateQuery/WatchCohort"),
            Access::Scoped(Scope::Watch)
        );
        for rpc in ["GetTimeline", "GetCareStateAsOf"] {
            assert_eq!(
                scoped(&format!("/baton.query.v1.CareStateQuery/{rpc}")),
                Access::Scoped(Scope::Timeline)
            );
        }
        assert_eq!(
            scoped("/baton.admin.v1.Operations/StartReplay"),
            Access::Scoped(Scope::Admin)
        );
        assert_eq!(
            scoped("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Access::Known
        );
        assert_eq!(scoped("garbage"), Access::Known);
    }

    #[test]
    fn without_a_table_everyone_and_with_one_only_named_certificates() {
        assert_eq!(
            authorise(
                &Clients::default(),
                "/baton.query.v1.CareStateQuery/GetCareState",
                None,
                None
            )
            .unwrap(),
            None
        );
        let clients = Clients::new(&[baton_tls::ClientEntry {
            id: "board".into(),
            certificate_names: vec!["board".into()],
            token_subjects: Vec::new(),
            scopes: [Scope::Read].into(),
            organisations: Vec::new(),
            services: Vec::new(),
        }])
        .unwrap();
        assert_eq!(
            authorise(&clients, "/grpc.health.v1.Health/Check", None, None).unwrap(),
            None
        );
        let refused = authorise(
            &clients,
            "/baton.query.v1.CareStateQuery/GetCareState",
            None,
            None,
        )
        .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        // A header that is not a bearer token, or a token where none are
        // accepted: refused, whatever certificate came with it.
        for header in [&b"Basic dXNlcjpwYXNz"[..], b"Bearer a.b.c"] {
            let refused = authorise(
                &clients,
                "/baton.query.v1.CareStateQuery/GetCareState",
                None,
                Some(header),
            )
            .unwrap_err();
            assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        }
        let garbage = authorise(
            &clients,
            "/baton.query.v1.CareStateQuery/GetCareState",
            Some(b"not a certificate"),
            None,
        )
        .unwrap_err();
        assert_eq!(garbage.code(), tonic::Code::Unauthenticated);
    }
}
