//! `init_with_config` installs the process-wide subscriber, which a process
//! can do once: this binary holds a single test.

mod common;

use baton_telemetry::{
    LogFormat, TelemetryConfig, TelemetryError, TraceParent, current_traceparent, init_with_config,
    is_exporting, set_parent,
};
use common::FakeCollector;
use tokio::sync::oneshot;

const SERVICE_NAME: &str = "baton-global-test";

fn config(otlp_endpoint: Option<String>) -> TelemetryConfig {
    TelemetryConfig {
        service_name: SERVICE_NAME.to_owned(),
        filter_variable: "BATON_LOG",
        // This test's spans only, so the run stays quiet.
        filter: "warn,global_init=info".to_owned(),
        trace_filter: "warn,global_init=info".to_owned(),
        format: LogFormat::Text,
        otlp_endpoint,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exporting_init_delivers_spans_when_its_guard_drops() -> anyhow::Result<()> {
    let collector = FakeCollector::default();
    let (stop_collector, stopped) = oneshot::channel();
    let endpoint = collector.start(stopped).await?;
    assert!(!is_exporting());

    let guard = init_with_config(config(Some(endpoint)))?;
    assert!(is_exporting());
    assert!(matches!(
        init_with_config(config(None)),
        Err(TelemetryError::AlreadyInstalled)
    ));

    let parent = TraceParent::new_root();
    let inside = {
        let span = tracing::info_span!("project_batch", partition = 0);
        set_parent(&span, &parent);
        let _entered = span.enter();
        current_traceparent()
    };
    tracing::debug_span!("below_the_filter").in_scope(|| {
        assert_eq!(
            current_traceparent(),
            None,
            "a filtered-out span has no context"
        );
    });
    let inside = inside.expect("a traceparent inside an exported span");
    assert_eq!(inside.trace_id(), parent.trace_id());

    // Dropped on a runtime worker: flushes without a separate flush call.
    drop(guard);
    assert!(!is_exporting());

    let spans = collector.spans();
    let names: Vec<&str> = spans.iter().map(|(_, span)| span.name.as_str()).collect();
    assert_eq!(names, ["project_batch"], "only spans that pass the filter");
    let (service_name, span) = &spans[0];
    assert_eq!(service_name.as_deref(), Some(SERVICE_NAME));
    assert_eq!(span.trace_id, parent.trace_id());
    assert_eq!(span.parent_span_id, parent.span_id());
    assert_eq!(span.span_id, inside.span_id());
    let _ = stop_collector.send(());
    Ok(())
}
