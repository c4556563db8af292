//! The query service's metrics over gRPC on a real port: calls by RPC and
//! status code with their latency, open and dropped watches, a replica's
//! lag by the progress it holds — and no patient in the exposition.
//!
//! One test per file: the registry is the process's own.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use baton_care::fixtures::{admitted, state_of};
use baton_log::embedded::EmbeddedLog;
use baton_log::{EventLog, NewRecord, TopicSpec, topics};
use baton_proto::query::v1::care_state_query_client::CareStateQueryClient;
use baton_proto::query::v1::patient_ref::Ref;
use baton_proto::query::v1::{
    CohortFilter, GetCareStateRequest, ListCohortRequest, PatientRef, WatchCohortRequest,
};
use baton_query::{QueryConfig, QueryService};
use baton_runtime::FixedClock;
use baton_store::{Commit, Store};
use baton_telemetry::metrics::{Format, naming_problems, render};

const TOPIC: &str = topics::CARE_EVENTS;

fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
    })
}

fn handled(text: &str, method: &str, code: &str) -> Option<f64> {
    sample(
        text,
        &format!(
            "baton_grpc_server_handled_total{{grpc_service=\"baton.query.v1.CareStateQuery\",grpc_method=\"{method}\",grpc_code=\"{code}\"}}"
        ),
    )
}

async fn eventually(what: &str, mut check: impl FnMut(&str) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = render(Format::Text);
        if check(&text) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within 20 s\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn by_nhs(nhs: &str) -> GetCareStateRequest {
    GetCareStateRequest {
        patient: Some(PatientRef {
            r#ref: Some(Ref::NhsNumber(nhs.into())),
        }),
        consistency_token: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_watches_and_the_replica_lag_are_counted_and_no_patient_named() {
    baton_query::metrics::register();
    let log = Arc::new(EmbeddedLog::temporary().unwrap());
    log.ensure_topic(TOPIC, TopicSpec::events(2)).await.unwrap();
    log.append(
        TOPIC,
        (0..3)
            .map(|i| NewRecord::new(format!("k{i}"), "event").to_partition(0))
            .collect(),
    )
    .await
    .unwrap();
    let store = Store::temporary().unwrap();
    // The replica has materialised the projector's progress up to offset 1
    // of partition 0, and a state.
    store
        .commit(
            &Commit::new(topics::CARE_STATE)
                .with_state(state_of(vec![admitted(
                    "9434765919",
                    "VISIT-27182",
                    100,
                    "AMU",
                )]))
                .with_upstream(TOPIC, 0, 1),
        )
        .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(baton_query::run(
        QueryService::new(
            store.clone(),
            QueryConfig::default(),
            &topics::Topics::default(),
        ),
        listener,
        std::future::pending(),
    ));
    let clock = Arc::new(FixedClock::at(SystemTime::now() + Duration::from_secs(60)));
    let monitor = baton_query::metrics::spawn_replica_monitor(
        log.clone(),
        store.clone(),
        &topics::Topics::default(),
        Duration::from_millis(100),
        clock,
        std::future::pending(),
    );
    let mut client = CareStateQueryClient::connect(format!("http://{address}"))
        .await
        .unwrap();

    client.get_care_state(by_nhs("9434765919")).await.unwrap();
    client.get_care_state(by_nhs("9434765919")).await.unwrap();
    let missing = client
        .get_care_state(by_nhs("4010232137"))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let invalid = client
        .get_care_state(by_nhs("9434765918"))
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    client
        .list_cohort(ListCohortRequest {
            filter: Some(CohortFilter {
                ward: "AMU".into(),
                ..CohortFilter::default()
            }),
            ..ListCohortRequest::default()
        })
        .await
        .unwrap();

    let mut watch = client
        .watch_cohort(WatchCohortRequest {
            filter: Some(CohortFilter::default()),
        })
        .await
        .unwrap()
        .into_inner();
    watch.message().await.unwrap().expect("the member");
    eventually("one watch open", |text| {
        sample(text, "baton_query_watch_clients") == Some(1.0)
    })
    .await;
    drop(watch);
    eventually("the watch closed and counted as cancelled", |text| {
        sample(text, "baton_query_watch_clients") == Some(0.0)
            && handled(text, "WatchCohort", "CANCELLED") == Some(1.0)
    })
    .await;
    eventually("the replica's lag by its progress", |text| {
        sample(
            text,
            "baton_projection_lag_events{topic=\"baton.care-events.v1\",partition=\"0\"}",
        ) == Some(2.0)
    })
    .await;

    let text = render(Format::Text);
    assert_eq!(handled(&text, "GetCareState", "OK"), Some(2.0), "{text}");
    assert_eq!(handled(&text, "GetCareState", "NOT_FOUND"), Some(1.0));
    assert_eq!(
        handled(&text, "GetCareState", "INVALID_ARGUMENT"),
        Some(1.0)
    );
    assert_eq!(handled(&text, "ListCohort", "OK"), Some(1.0));
    assert_eq!(
        sample(
            &text,
            "baton_grpc_server_handling_seconds_count{grpc_service=\"baton.query.v1.CareStateQuery\",grpc_method=\"GetCareState\"}"
        ),
        Some(4.0)
    );
    assert_eq!(
        sample(
            &text,
            "baton_query_watch_dropped_total{reason=\"slow_client\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "baton_projection_applied_offset{topic=\"baton.care-events.v1\",partition=\"0\"}"
        ),
        Some(1.0)
    );
    let seconds = sample(
        &text,
        "baton_projection_lag_seconds{topic=\"baton.care-events.v1\",partition=\"0\"}",
    )
    .unwrap();
    assert!((59.0..=61.0).contains(&seconds), "{seconds}");
    assert_eq!(sample(&text, "baton_store_states"), Some(1.0));
    for secret in ["9434765919", "4010232137", "9434765918", "VISIT-27182"] {
        assert!(!text.contains(secret), "{secret} in the metrics:\n{text}");
    }
    assert_eq!(naming_problems(&text), Vec::<String>::new(), "{text}");
    monitor.abort();
}
