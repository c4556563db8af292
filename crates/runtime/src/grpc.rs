//! Serving a Baton gRPC API: the one place every listener is set up, so
//! each API gets the same health checking, server reflection and socket
//! options.
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

use tokio::net::TcpListener;
use tonic::transport::server::{Router, TcpIncoming};

/// Serves the services `add` puts on the router, beside gRPC health
/// checking (each name in `serving` reported `SERVING`, and the server as a
/// whole) and server reflection over Baton's descriptor set, as both
/// `grpc.reflection.v1` and `grpc.reflection.v1alpha` (grpcurl before 1.9,
/// older Postman, Evans and grpcui speak only the latter), until `shutdown`
/// completes; calls in flight are then finished.
///
/// `api` names the API in logs (`query`, `ingest`, `admin`).
pub async fn serve(
    api: &'static str,
    serving: &[&'static str],
    listener: TcpListener,
    add: impl FnOnce(Router) -> Router,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in serving {
        health
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(baton_proto::DESCRIPTOR_SET)
        .build_v1()
        .expect("the compiled descriptor set is valid");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(baton_proto::DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the compiled descriptor set is valid");
    let address = listener.local_addr().ok();
    tracing::info!(api, ?address, "gRPC API listening");
    let router = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    add(router)
        // TCP_NODELAY: a gRPC answer is written in several small pieces,
        // and Nagle's algorithm holds each back until the previous one is
        // acknowledged (~40 ms of delayed ACK per call on loopback).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await?;
    tracing::info!(api, "gRPC API stopped");
    Ok(())
}
