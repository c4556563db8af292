//! Every gRPC API served by `baton_runtime::grpc::serve` counts its calls by
//! service, method and status code, and times its unary calls; a path no
//! service serves is counted as `unknown`, whatever it says.

use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// The value of the sample `series` (name and labels, as exposed).
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
    })
}

#[tokio::test]
async fn calls_are_counted_by_method_and_code_and_unary_ones_timed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(baton_runtime::grpc::serve(
        "test",
        &["baton.test"],
        listener,
        |router| router,
        async move {
            let _ = stopped.await;
        },
    ));
    let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel.clone());
    for _ in 0..3 {
        client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();
    }
    let status = client
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    // A method no service has, named after a patient: answered
    // UNIMPLEMENTED and counted as unknown.
    let mut raw = tonic::client::Grpc::new(channel);
    raw.ready().await.unwrap();
    let unknown = raw
        .unary::<HealthCheckRequest, HealthCheckResponse, _>(
            tonic::Request::new(HealthCheckRequest::default()),
            "/patient.9434765919/Lookup".parse().unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::Unimplemented);

    let text = baton_telemetry::metrics::render(baton_telemetry::metrics::Format::Text);
    let handled = |method: &str, code: &str| {
        sample(
            &text,
            &format!(
                "baton_grpc_server_handled_total{{grpc_service=\"grpc.health.v1.Health\",grpc_method=\"{method}\",grpc_code=\"{code}\"}}"
            ),
        )
    };
    assert_eq!(handled("Check", "OK"), Some(3.0), "{text}");
    assert_eq!(handled("Check", "NOT_FOUND"), Some(1.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "baton_grpc_server_handled_total{grpc_service=\"unknown\",grpc_method=\"unknown\",grpc_code=\"UNIMPLEMENTED\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "baton_grpc_server_handling_seconds_count{grpc_service=\"grpc.health.v1.Health\",grpc_method=\"Check\"}"
        ),
        Some(4.0),
        "{text}"
    );
    // Baton's own methods are known before they are called; streams are
    // counted but not timed.
    assert_eq!(
        sample(
            &text,
            "baton_grpc_server_handled_total{grpc_service=\"baton.query.v1.CareStateQuery\",grpc_method=\"GetCareState\",grpc_code=\"OK\"}"
        ),
        Some(0.0),
        "{text}"
    );
    assert!(
        !text.contains("grpc_method=\"WatchCohort\"}"),
        "no latency histogram for a stream:\n{text}"
    );
    assert!(
        !text.contains("9434765919"),
        "a request path never becomes a label"
    );
    assert_eq!(
        baton_telemetry::metrics::naming_problems(&text),
        Vec::<String>::new()
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
