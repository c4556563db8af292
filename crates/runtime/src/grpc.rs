//! Serving a Baton gRPC API: the one place every listener is set up, so
//! each API gets the same health checking, server reflection, request
//! metrics and socket options.
//!
//! ```no_run
//! # async fn example(listener: tokio::net::TcpListener) -> Result<(), tonic::transport::Error> {
//! # let service = tonic_health::server::health_reporter().1;
//! baton_runtime::grpc::serve(
//!     "example",
//!     &["grpc.health.v1.Health"],
//!     listener,
//!     |router| router.add_service(service),
//!     std::future::pending(),
//! )
//! .await
//! # }
//! ```

use std::future::Future;
use std::sync::LazyLock;

use baton_telemetry::metrics::grpc::{GrpcMethod, GrpcMetricsLayer};
use baton_tls::TlsListener;
use tonic::transport::server::{Router, TcpIncoming};
use tower_layer::{Identity, Stack};

/// The router `serve` hands to its `add` function: every call through it
/// is counted and timed ([`GrpcMetricsLayer`]).
/// Inside that, [`crate::auth::AuthLayer`] lets through only the calls the
/// listener's clients table allows.
pub type GrpcRouter = Router<Stack<crate::auth::AuthLayer, Stack<GrpcMetricsLayer, Identity>>>;

/// Every method a Baton gRPC server can serve: those of Baton's own
/// services (from the descriptor set, so a new API is covered as soon as
/// its proto is), health checking and reflection. Calls to any other path
/// are counted as `unknown`.
static METHODS: LazyLock<GrpcMetricsLayer> = LazyLock::new(|| {
    let mut methods: Vec<GrpcMethod> = baton_proto::json::descriptor_pool()
        .services()
        .flat_map(|service| {
            let name = service.full_name().to_owned();
            service
                .methods()
                .map(|method| GrpcMethod {
                    service: name.clone(),
                    method: method.name().to_owned(),
                    streaming: method.is_client_streaming() || method.is_server_streaming(),
                })
                .collect::<Vec<_>>()
        })
        .collect();
    methods.push(GrpcMethod::unary("grpc.health.v1.Health", "Check"));
    methods.push(GrpcMethod::streaming("grpc.health.v1.Health", "Watch"));
    for reflection in ["grpc.reflection.v1", "grpc.reflection.v1alpha"] {
        methods.push(GrpcMethod::streaming(
            &format!("{reflection}.ServerReflection"),
            "ServerReflectionInfo",
        ));
    }
    GrpcMetricsLayer::new(methods)
});

/// Serves the services `add` puts on the router, beside gRPC health
/// checking (each name in `serving` reported `SERVING`, and the server as a
/// whole) and server reflection over Baton's descriptor set, as both
/// `grpc.reflection.v1` and `grpc.reflection.v1alpha` (grpcurl before 1.9,
/// older Postman, Evans and grpcui speak only the latter), until `shutdown`
/// completes; calls in flight are then finished.
///
/// Every call is counted by service, method and status code, and unary
/// calls timed (`baton_grpc_server_handled_total`,
/// `baton_grpc_server_handling_seconds`).
///
/// With TLS on the listener ([`baton_tls::Tls`], ALPN `h2`), each
/// connection completes its handshake within the handshake timeout before
/// it is served, and the certificate files are re-read when they change;
/// a plain `TcpListener` serves plaintext. A client certificate, when
/// required, reaches each request as `Request::peer_certs`.
///
/// `api` names the API in logs (`query`, `ingest`, `admin`).
pub async fn serve(
    api: &'static str,
    serving: &[&'static str],
    listener: impl Into<TlsListener>,
    add: impl FnOnce(GrpcRouter) -> GrpcRouter,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in serving {
        health
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection_v1 = reflection(serving)
        .build_v1()
        .expect("the compiled descriptor set is valid");
    let reflection_v1alpha = reflection(serving)
        .build_v1alpha()
        .expect("the compiled descriptor set is valid");
    let (listener, tls, clients) = listener.into().into_parts();
    let address = listener.local_addr().ok();
    tracing::info!(
        api,
        ?address,
        tls = tls.is_some(),
        mutual_tls = tls.as_ref().is_some_and(baton_tls::Tls::is_mutual),
        client_table = clients.is_enforced(),
        "gRPC API listening"
    );
    let router = tonic::transport::Server::builder()
        .layer(METHODS.clone())
        .layer(crate::auth::AuthLayer::new(clients))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let router = add(router);
    // TCP_NODELAY: a gRPC answer is written in several small pieces, and
    // Nagle's algorithm holds each back until the previous one is
    // acknowledged (~40 ms of delayed ACK per call on loopback); the TLS
    // incoming sets it on every connection it accepts.
    match tls {
        None => {
            router
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    shutdown,
                )
                .await?
        }
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(baton_tls::incoming(listener, tls, api), shutdown)
                .await?
        }
    }
    tracing::info!(api, "gRPC API stopped");
    Ok(())
}

/// Reflection over Baton's descriptor set (and those of health checking
/// and reflection) that lists only what this listener serves: `serving`,
/// health checking and both reflection versions, so a tool pointed at the
/// admin port is not offered the query API, whose calls would fail there
/// with UNIMPLEMENTED.
fn reflection(serving: &[&'static str]) -> tonic_reflection::server::Builder<'static> {
    const ALWAYS: [&str; 3] = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    serving.iter().copied().chain(ALWAYS).fold(
        tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(baton_proto::DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            ),
        |builder, name| builder.with_service_name(name),
    )
}
