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
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Duration;

use baton_telemetry::metrics::grpc::{GrpcMethod, GrpcMetricsLayer};
pub use baton_tls::GrpcLimits;
use baton_tls::TlsListener;
use futures::TryStreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::{Connected, Router, TcpIncoming};
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
/// What a connection may do is bounded by the listener's [`GrpcLimits`]
/// ([`TlsListener::with_grpc_limits`]; the defaults otherwise):
/// `max_concurrent_streams` calls at once on one connection (HTTP/2
/// `SETTINGS_MAX_CONCURRENT_STREAMS`; unbounded in tonic unless set), a
/// connection that has not sent the HTTP/2 preface `preface_timeout_ms`
/// after connecting (after TLS) is closed (tonic and hyper bound neither
/// the preface nor an HTTP/2 connection's silence: a plaintext or TLS
/// connection that sends nothing would otherwise be held open forever),
/// and a peer that does not answer HTTP/2 pings (every
/// `keepalive_interval_ms`, within `keepalive_timeout_ms`) is closed.
/// Health checking and reflection decode at most `max_message_bytes`; the
/// services `add` puts on the router set their own
/// `max_decoding_message_size` (tonic's default: 4 MiB,
/// [`baton_tls::DEFAULT_GRPC_MAX_MESSAGE_BYTES`]), from
/// [`TlsListener::grpc_limits`] where they are configurable. A message
/// past it is refused with `OUT_OF_RANGE` naming the limit.
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
    let listener = listener.into();
    let limits = listener.grpc_limits().clone();
    let health_service = health_service.max_decoding_message_size(limits.max_message_bytes);
    let reflection_v1 = reflection(serving)
        .build_v1()
        .expect("the compiled descriptor set is valid")
        .max_decoding_message_size(limits.max_message_bytes);
    let reflection_v1alpha = reflection(serving)
        .build_v1alpha()
        .expect("the compiled descriptor set is valid")
        .max_decoding_message_size(limits.max_message_bytes);
    let (listener, tls, clients) = listener.into_parts();
    let address = listener.local_addr().ok();
    tracing::info!(
        api,
        ?address,
        tls = tls.is_some(),
        mutual_tls = tls.as_ref().is_some_and(baton_tls::Tls::is_mutual),
        client_table = clients.is_enforced(),
        max_concurrent_streams = limits.max_concurrent_streams,
        max_message_bytes = limits.max_message_bytes,
        "gRPC API listening"
    );
    let preface = Duration::from_millis(limits.preface_timeout_ms);
    let router = tonic::transport::Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_keepalive_interval(Some(Duration::from_millis(limits.keepalive_interval_ms)))
        .http2_keepalive_timeout(Some(Duration::from_millis(limits.keepalive_timeout_ms)))
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
            let incoming =
                TcpIncoming::from(listener)
                    .with_nodelay(Some(true))
                    .map_ok(move |tcp| {
                        let peer = tcp.peer_addr().ok();
                        PrefaceDeadline::new(tcp, preface, api, peer)
                    });
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await?
        }
        Some(tls) => {
            let incoming = baton_tls::incoming(listener, tls, api).map_ok(move |stream| {
                let peer = stream.get_ref().0.peer_addr().ok();
                PrefaceDeadline::new(stream, preface, api, peer)
            });
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await?
        }
    }
    tracing::info!(api, "gRPC API stopped");
    Ok(())
}

/// The length of the HTTP/2 connection preface a client sends first
/// (`PRI * HTTP/2.0…`, RFC 9113 §3.4).
const HTTP2_PREFACE_BYTES: usize = 24;

/// A connection that must send the HTTP/2 preface within a deadline: a
/// read still waiting for it then fails (`TimedOut`), and hyper closes the
/// connection. Once the preface's bytes have arrived it is the connection
/// itself.
struct PrefaceDeadline<IO> {
    io: IO,
    /// Until the preface has arrived.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    received: usize,
    timeout: Duration,
    api: &'static str,
    peer: Option<SocketAddr>,
}

impl<IO> PrefaceDeadline<IO> {
    fn new(io: IO, timeout: Duration, api: &'static str, peer: Option<SocketAddr>) -> Self {
        Self {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            received: 0,
            timeout,
            api,
            peer,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for PrefaceDeadline<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                this.received += read;
                if read == 0 || this.received >= HTTP2_PREFACE_BYTES {
                    this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => match this.deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => {
                    this.deadline = None;
                    let peer = this.peer.map(|peer| peer.to_string()).unwrap_or_default();
                    tracing::warn!(
                        api = this.api,
                        peer,
                        timeout_ms = this.timeout.as_millis() as u64,
                        reason = "preface_timeout",
                        "closed a connection: no HTTP/2 preface in time"
                    );
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no HTTP/2 preface within {:?}", this.timeout),
                    )))
                }
                _ => Poll::Pending,
            },
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for PrefaceDeadline<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The connection's own information (its address, its TLS session's
/// client certificates): `Request::peer_certs` and the auth layer read it.
impl<IO: Connected> Connected for PrefaceDeadline<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
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
