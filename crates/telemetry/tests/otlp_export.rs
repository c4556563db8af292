//! Spans reach a real OTLP/gRPC endpoint in the trace their `traceparent`
//! names: a fake collector on loopback records what the exporter sends.
//!
//! Each test builds its own [`TraceExport`] and subscriber and installs it
//! with `with_default` for its thread only, so nothing process-global is set.

mod common;

use std::time::{Duration, Instant};

use baton_telemetry::{TraceExport, TraceParent, current_traceparent, set_parent};
use common::FakeCollector;
use tokio::sync::oneshot;
use tracing_subscriber::layer::SubscriberExt as _;

const PARENT: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const SERVICE_NAME: &str = "baton-telemetry-test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_continuing_a_remote_trace_reaches_the_collector() -> anyhow::Result<()> {
    let collector = FakeCollector::default();
    let (stop_collector, stopped) = oneshot::channel();
    let endpoint = collector.start(stopped).await?;
    let export = TraceExport::start(&endpoint, SERVICE_NAME)?;
    let parent = TraceParent::parse(PARENT)?;

    let subscriber = tracing_subscriber::registry().with(export.layer());
    let inside = tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("apply_event", partition = 3);
        set_parent(&span, &parent);
        let _entered = span.enter();
        tracing::info!(offset = 42, "applied");
        current_traceparent()
    });

    let export = tokio::task::spawn_blocking(move || export.flush().map(|()| export)).await??;
    let spans = collector.spans();
    let (service_name, span) = spans
        .iter()
        .find(|(_, span)| span.name == "apply_event")
        .unwrap_or_else(|| panic!("no apply_event span among {spans:?}"));
    assert_eq!(service_name.as_deref(), Some(SERVICE_NAME));
    assert_eq!(
        span.trace_id,
        parent.trace_id(),
        "joined the caller's trace"
    );
    assert_eq!(
        span.parent_span_id,
        parent.span_id(),
        "child of the caller's span"
    );
    assert_eq!(span.events.len(), 1, "the log line inside is a span event");

    let inside = inside.expect("a traceparent inside an exported span");
    assert_eq!(inside.trace_id(), parent.trace_id());
    assert_eq!(inside.span_id().as_slice(), span.span_id.as_slice());
    assert!(inside.is_sampled());

    // Dropping inside the runtime neither panics nor hangs.
    drop(export);
    let _ = stop_collector.send(());
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn dropping_the_export_with_no_collector_listening_returns_promptly() -> anyhow::Result<()> {
    // A loopback port that was free a moment ago: connections are refused.
    let endpoint = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        format!("http://{}", listener.local_addr()?)
    };
    let export = TraceExport::start(&endpoint, SERVICE_NAME)?;
    let subscriber = tracing_subscriber::registry().with(export.layer());
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("apply_event");
        set_parent(&span, &TraceParent::new_root());
        let _entered = span.enter();
    });

    let started = Instant::now();
    drop(export);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "dropping took {took:?}, expected the bounded shutdown wait"
    );
    Ok(())
}
