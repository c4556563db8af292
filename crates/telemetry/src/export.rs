//! Span export over OTLP/gRPC, independent of the caller's async runtime.
//!
//! The tonic channel needs a Tokio runtime for its connection tasks. Rather
//! than borrow the service's (which may be single-threaded, blocked in the
//! very `drop` that flushes, or not started yet), the export owns a small
//! current-thread runtime on a thread of its own. Spans are batched by the
//! OpenTelemetry SDK's batch processor on its own thread, so recording a span
//! never waits on the network.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::sync::oneshot;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;

use crate::{Result, TelemetryError};

/// Longest a drop waits for the last spans to reach the collector, so a
/// stopping service with an unreachable collector still stops promptly.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest the export runtime lingers on its in-flight connection work once
/// the provider has shut down.
const RUNTIME_SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(500);

/// Crates whose spans come from the exporter itself (the gRPC client and the
/// SDK): exporting them would feed each batch a new batch.
const EXPORTER_INTERNALS: [&str; 8] = [
    "h2",
    "hyper",
    "hyper_util",
    "tower",
    "tonic",
    "opentelemetry",
    "opentelemetry_sdk",
    "opentelemetry-otlp",
];

/// An OTLP/gRPC span pipeline to one collector: tracer provider with a batch
/// exporter, plus the thread that drives its connections.
///
/// [`init`](crate::init) builds one from the environment; build one directly
/// to export to a known endpoint without touching process-global state, and
/// add [`layer`](Self::layer) to a subscriber of your own. Dropping it
/// flushes what is buffered and shuts the pipeline down, waiting at most a
/// few seconds, inside or outside a Tokio runtime.
#[derive(Debug)]
pub struct TraceExport {
    endpoint: String,
    provider: SdkTracerProvider,
    runtime: Option<ExportRuntime>,
}

/// The thread running the Tokio runtime the tonic channel lives on.
#[derive(Debug)]
struct ExportRuntime {
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl TraceExport {
    /// Starts exporting to `endpoint` (e.g. `http://127.0.0.1:4317`), naming
    /// this process `service_name` in the `service.name` resource attribute.
    ///
    /// Connects lazily: a collector that is not up yet is not an error here;
    /// failed exports are reported through `tracing` and the spans dropped.
    pub fn start(endpoint: &str, service_name: &str) -> Result<Self> {
        let (built_sender, built) = mpsc::sync_channel(1);
        let (stop, stopped) = oneshot::channel::<()>();
        let target = endpoint.to_owned();
        // The runtime is created, used and dropped on this thread alone:
        // dropping a runtime on an async task panics, and the caller may be one.
        let thread = std::thread::Builder::new()
            .name("baton-otlp-export".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = built_sender.send(Err(TelemetryError::ExportThread(error)));
                        return;
                    }
                };
                let exporter = {
                    // The channel spawns its connection tasks on this runtime.
                    let _entered = runtime.enter();
                    opentelemetry_otlp::SpanExporter::builder()
                        .with_tonic()
                        .with_endpoint(target.clone())
                        .build()
                        .map_err(|error| TelemetryError::InvalidOtlpEndpoint {
                            endpoint: target,
                            reason: error.to_string(),
                        })
                };
                let built = exporter.is_ok();
                let _ = built_sender.send(exporter);
                if built {
                    // Resolves when the sender is used or dropped.
                    let _ = runtime.block_on(stopped);
                    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
                }
            })
            .map_err(TelemetryError::ExportThread)?;
        let exporter = match built.recv() {
            Ok(Ok(exporter)) => exporter,
            Ok(Err(error)) => {
                let _ = thread.join();
                return Err(error);
            }
            Err(mpsc::RecvError) => {
                let _ = thread.join();
                return Err(TelemetryError::ExportThread(std::io::Error::other(
                    "the export thread ended before building the exporter",
                )));
            }
        };
        let resource = Resource::builder()
            .with_service_name(service_name.to_owned())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        Ok(Self {
            endpoint: endpoint.to_owned(),
            provider,
            runtime: Some(ExportRuntime { stop, thread }),
        })
    }

    /// The collector address spans go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A `tracing` layer that turns spans into OpenTelemetry spans for this
    /// export. It leaves out the exporter's own spans (gRPC client, SDK).
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: Subscriber + Send + Sync + for<'span> LookupSpan<'span>,
    {
        let exporter_internals = EXPORTER_INTERNALS.into_iter().fold(
            Targets::new().with_default(LevelFilter::TRACE),
            |targets, target| targets.with_target(target, LevelFilter::OFF),
        );
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("baton"))
            .with_filter(exporter_internals)
    }

    /// Sends every finished span to the collector now, blocking until it
    /// answers or the export times out (`OTEL_EXPORTER_OTLP_TIMEOUT`, 10 s by
    /// default). Call it from a blocking context, not on an async task.
    pub fn flush(&self) -> Result<()> {
        self.provider
            .force_flush()
            .map_err(|error| TelemetryError::Flush {
                endpoint: self.endpoint.clone(),
                reason: error.to_string(),
            })
    }
}

impl Drop for TraceExport {
    fn drop(&mut self) {
        // Exports what is buffered; bounded, and errors were already reported
        // by the SDK through `tracing`.
        let _ = self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT);
        if let Some(ExportRuntime { stop, thread }) = self.runtime.take() {
            // The thread ends within RUNTIME_SHUTDOWN_TIMEOUT of the signal.
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}
