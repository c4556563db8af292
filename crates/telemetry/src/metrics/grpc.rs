//! gRPC requests by RPC and status code, with their latency, for any tonic
//! server: a tower layer in front of its routes.
//!
//! - `baton_grpc_server_handled_total{grpc_service, grpc_method, grpc_code}`:
//!   calls finished, by status code (`OK`, `INVALID_ARGUMENT`, …; `CANCELLED`
//!   when the client went away first);
//! - `baton_grpc_server_handling_seconds{grpc_service, grpc_method}`: from
//!   the request to the last byte of the answer, for unary RPCs (a stream's
//!   length says how long its client watched, not how fast it was served).
//!
//! The labels name the RPC from a list given when the layer is made (the
//! methods the server serves), never from the request path as sent: any
//! other path is counted as `unknown`, so a client cannot grow the label
//! set. The status comes from the response headers (an error answered
//! with trailers only) or the trailers at the end of the body.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;
use tonic::body::Body;

use super::LATENCY_BUCKETS;

/// The canonical names of gRPC status codes, indexed by code.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];
const CANCELLED: usize = 1;
const UNKNOWN: usize = 2;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HandledLabels {
    grpc_service: String,
    grpc_method: String,
    grpc_code: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MethodLabels {
    grpc_service: String,
    grpc_method: String,
}

type HistogramFamily = Family<MethodLabels, Histogram, fn() -> Histogram>;

struct Families {
    handled: Family<HandledLabels, Counter>,
    handling: HistogramFamily,
}

static FAMILIES: LazyLock<Families> = LazyLock::new(|| {
    let families = Families {
        handled: Family::default(),
        handling: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
    };
    super::register(|registry| {
        registry.register(
            "grpc_server_handled",
            "gRPC calls finished, by service, method and status code",
            families.handled.clone(),
        );
        registry.register_with_unit(
            "grpc_server_handling",
            "Time from a unary gRPC request to the end of its answer",
            Unit::Seconds,
            families.handling.clone(),
        );
    });
    families
});

/// A method a server serves, as the layer is told of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcMethod {
    /// The full service name, e.g. `baton.query.v1.CareStateQuery`.
    pub service: String,
    /// The method name, e.g. `GetCareState`.
    pub method: String,
    /// Whether the client or the server streams: no latency is observed.
    pub streaming: bool,
}

impl GrpcMethod {
    pub fn unary(service: &str, method: &str) -> Self {
        Self {
            service: service.to_owned(),
            method: method.to_owned(),
            streaming: false,
        }
    }

    pub fn streaming(service: &str, method: &str) -> Self {
        Self {
            streaming: true,
            ..Self::unary(service, method)
        }
    }

    fn path(&self) -> String {
        format!("/{}/{}", self.service, self.method)
    }
}

/// The metrics of one method, with its counters made once each.
struct MethodMetrics {
    labels: MethodLabels,
    handled: [OnceLock<Counter>; 17],
    /// Unary methods only.
    handling: Option<Histogram>,
}

impl MethodMetrics {
    fn new(service: &str, method: &str, streaming: bool) -> Self {
        let labels = MethodLabels {
            grpc_service: service.to_owned(),
            grpc_method: method.to_owned(),
        };
        let metrics = Self {
            handling: (!streaming).then(|| FAMILIES.handling.get_or_create_owned(&labels)),
            handled: Default::default(),
            labels,
        };
        // OK exists from the start, so rates are defined before the first call.
        metrics.counter(0);
        metrics
    }

    fn counter(&self, code: usize) -> &Counter {
        self.handled[code].get_or_init(|| {
            FAMILIES.handled.get_or_create_owned(&HandledLabels {
                grpc_service: self.labels.grpc_service.clone(),
                grpc_method: self.labels.grpc_method.clone(),
                grpc_code: CODE_NAMES[code],
            })
        })
    }
}

/// A tower layer counting and timing the calls of the methods it is told
/// of (others as `unknown`). Cheap to clone.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    methods: Arc<HashMap<String, Arc<MethodMetrics>>>,
    unknown: Arc<MethodMetrics>,
}

impl std::fmt::Debug for GrpcMetricsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcMetricsLayer")
            .field("methods", &self.methods.len())
            .finish()
    }
}

impl GrpcMetricsLayer {
    pub fn new(methods: impl IntoIterator<Item = GrpcMethod>) -> Self {
        let methods = methods
            .into_iter()
            .map(|method| {
                let metrics = MethodMetrics::new(&method.service, &method.method, method.streaming);
                (method.path(), Arc::new(metrics))
            })
            .collect();
        Self {
            methods: Arc::new(methods),
            unknown: Arc::new(MethodMetrics::new("unknown", "unknown", true)),
        }
    }

    fn method(&self, path: &str) -> Arc<MethodMetrics> {
        Arc::clone(self.methods.get(path).unwrap_or(&self.unknown))
    }
}

impl<S> tower_layer::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`GrpcMetricsLayer`] wraps around a server's routes.
#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    layer: GrpcMetricsLayer,
}

impl<S, RequestBody> tower_service::Service<http::Request<RequestBody>> for GrpcMetrics<S>
where
    S: tower_service::Service<http::Request<RequestBody>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = http::Response<MeteredBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let call = Call {
            method: self.layer.method(request.uri().path()),
            started: Instant::now(),
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            match response.await {
                Ok(response) => {
                    let call = match status_code(response.headers()) {
                        // Trailers only: the call is over.
                        Some(code) => {
                            call.finish(code);
                            None
                        }
                        None => Some(call),
                    };
                    Ok(response.map(|inner| MeteredBody { inner, call }))
                }
                Err(error) => {
                    call.finish(UNKNOWN);
                    Err(error)
                }
            }
        })
    }
}

/// A call under way, finished once with its status.
struct Call {
    method: Arc<MethodMetrics>,
    started: Instant,
}

impl Call {
    fn finish(self, code: usize) {
        self.method.counter(code).inc();
        if let Some(histogram) = &self.method.handling {
            histogram.observe(self.started.elapsed().as_secs_f64());
        }
    }
}

/// The status code a `grpc-status` header carries; `UNKNOWN` when it is
/// not a code.
fn status_code(headers: &HeaderMap) -> Option<usize> {
    let value = headers.get("grpc-status")?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|text| text.parse::<usize>().ok())
            .filter(|&code| code < CODE_NAMES.len())
            .unwrap_or(UNKNOWN),
    )
}

/// A response body that finishes its call's metrics at the trailers, at
/// its end, or when dropped unfinished (the client went away: `CANCELLED`).
pub struct MeteredBody {
    inner: Body,
    call: Option<Call>,
}

impl std::fmt::Debug for MeteredBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredBody")
            .field("finished", &self.call.is_none())
            .finish_non_exhaustive()
    }
}

impl http_body::Body for MeteredBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let finished = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame
                .trailers_ref()
                .map(|trailers| status_code(trailers).unwrap_or(UNKNOWN)),
            Poll::Ready(Some(Err(status))) => Some(status.code() as usize),
            Poll::Ready(None) => Some(UNKNOWN),
            Poll::Pending => None,
        };
        if let Some(code) = finished
            && let Some(call) = self.call.take()
        {
            call.finish(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.finish(CANCELLED);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_read_and_bounded() {
        let mut headers = HeaderMap::new();
        assert_eq!(status_code(&headers), None);
        headers.insert("grpc-status", "5".parse().unwrap());
        assert_eq!(status_code(&headers), Some(5));
        headers.insert("grpc-status", "99".parse().unwrap());
        assert_eq!(status_code(&headers), Some(UNKNOWN));
        headers.insert("grpc-status", "x".parse().unwrap());
        assert_eq!(status_code(&headers), Some(UNKNOWN));
        assert_eq!(CODE_NAMES[tonic::Code::Unavailable as usize], "UNAVAILABLE");
        assert_eq!(
            CODE_NAMES[tonic::Code::Unauthenticated as usize],
            "UNAUTHENTICATED"
        );
    }
}
