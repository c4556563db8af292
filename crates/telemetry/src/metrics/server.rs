//! The metrics listener: `/metrics`, `/live` and `/ready` over HTTP/1.1.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use baton_tls::TlsListener;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use super::{Format, Readiness, render};
use crate::Listen;
use crate::TelemetryError;

/// Scrapers and probes served at once; one more is closed as it arrives.
const MAX_CONNECTIONS: usize = 32;
/// A client that has not sent its request headers by then is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the listener `listen` names; `None` when it is `off`.
pub async fn bind(listen: Listen) -> Result<Option<TcpListener>, TelemetryError> {
    let Some(address) = listen.address() else {
        return Ok(None);
    };
    TcpListener::bind(address)
        .await
        .map(Some)
        .map_err(|source| TelemetryError::Listen { address, source })
}

/// Serves `/metrics`, `/live` and `/ready` on `listener` until `shutdown`
/// completes; connections still open then are closed. With TLS on the
/// listener (ALPN `http/1.1`), each connection completes its handshake
/// within the handshake timeout first.
pub async fn serve(
    listener: impl Into<TlsListener>,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send,
) {
    let (listener, tls, _) = listener.into().into_parts();
    let address = listener.local_addr().ok();
    tracing::info!(
        ?address,
        tls = tls.is_some(),
        "metrics listening (/metrics, /live, /ready)"
    );
    let readiness = Arc::new(readiness);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        tracing::debug!(%peer, "metrics: too many connections, closing one");
                        continue;
                    };
                    let readiness = Arc::clone(&readiness);
                    let tls = tls.clone();
                    connections.spawn(async move {
                        match tls {
                            None => connection(stream, readiness, peer).await,
                            Some(tls) => match tls.accept(stream).await {
                                Ok(stream) => connection(stream, readiness, peer).await,
                                Err(error) => {
                                    tracing::info!(%peer, %error, "metrics: closed a connection before TLS was set up");
                                }
                            },
                        }
                        drop(slot);
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a metrics connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
    tracing::info!("metrics listener stopped");
}

/// Serves the requests of one connection.
async fn connection(
    stream: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    readiness: Arc<Readiness>,
    peer: std::net::SocketAddr,
) {
    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
        let response = answer(&request, &readiness);
        async move { Ok::<_, Infallible>(response) }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(error) = served {
        tracing::debug!(%peer, %error, "metrics connection ended");
    }
}

/// The answer to one request.
fn answer<B>(request: &Request<B>, readiness: &Readiness) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header(header::ALLOW, "GET, HEAD")
            .body(text("only GET and HEAD are served here\n"))
            .expect("a valid response");
    }
    match request.uri().path() {
        "/metrics" => {
            let accept = request
                .headers()
                .get(header::ACCEPT)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default();
            let format = Format::from_accept(accept);
            Response::builder()
                .header(header::CONTENT_TYPE, format.content_type())
                .body(Full::new(Bytes::from(render(format))))
                .expect("a valid response")
        }
        "/live" => plain(StatusCode::OK, "live\n".to_owned()),
        "/ready" => {
            let waiting = readiness.waiting_for();
            if waiting.is_empty() {
                plain(StatusCode::OK, "ready\n".to_owned())
            } else {
                plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {}\n", waiting.join("; ")),
                )
            }
        }
        _ => plain(
            StatusCode::NOT_FOUND,
            "not found: this listener serves /metrics, /live and /ready\n".to_owned(),
        ),
    }
}

fn text(body: &'static str) -> Full<Bytes> {
    Full::new(Bytes::from_static(body.as_bytes()))
}

fn plain(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn get(path: &str, readiness: &Readiness) -> (StatusCode, String) {
        let request = Request::get(path).body(()).unwrap();
        let response = answer(&request, readiness);
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn live_always_ready_when_every_gate_is() {
        let readiness = Readiness::new();
        let gate = readiness.gate("projector catching up with the log");
        assert_eq!(
            get("/live", &readiness).await,
            (StatusCode::OK, "live\n".into())
        );
        let (status, body) = get("/ready", &readiness).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body.contains("projector catching up with the log"),
            "{body}"
        );
        gate.ready();
        assert_eq!(
            get("/ready", &readiness).await,
            (StatusCode::OK, "ready\n".into())
        );
    }

    #[tokio::test]
    async fn other_paths_and_methods_are_refused_with_what_is_served() {
        let readiness = Readiness::new();
        let (status, body) = get("/", &readiness).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("/metrics, /live and /ready"), "{body}");
        let post = Request::post("/metrics").body(()).unwrap();
        let response = answer(&post, &readiness);
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "GET, HEAD");
    }

    #[tokio::test]
    async fn metrics_come_in_the_format_asked_for() {
        let readiness = Readiness::new();
        let request = Request::get("/metrics")
            .header(header::ACCEPT, "application/openmetrics-text;version=1.0.0")
            .body(())
            .unwrap();
        let response = answer(&request, &readiness);
        assert!(
            response.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(body.ends_with(b"# EOF\n"), "OpenMetrics ends with # EOF");
        let request = Request::get("/metrics").body(()).unwrap();
        let response = answer(&request, &readiness);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
    }
}
