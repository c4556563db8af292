//! The ingest API over gRPC on a real port, with the embedded log.

use std::sync::Arc;

use baton_care::fixtures::{admitted, event, identity, transferred};
use baton_ingest::{Ingest, IngestConfig};
use baton_log::embedded::EmbeddedLog;
use baton_log::{ConsistencyToken, EventLog, topics};
use baton_proto::events::v1::PatientsMerged;
use baton_proto::events::v1::care_event::Payload;
use baton_proto::ingest::v1::PublishRequest;
use baton_proto::ingest::v1::care_event_ingest_client::CareEventIngestClient;
use tokio::sync::oneshot;
use tonic::Code;
use tonic_types::StatusExt;

struct Running {
    client: CareEventIngestClient<tonic::transport::Channel>,
    log: Arc<EmbeddedLog>,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

async fn start() -> Running {
    start_with(IngestConfig {
        max_batch_events: 3,
        ..IngestConfig::default()
    })
    .await
}

async fn start_with(config: IngestConfig) -> Running {
    let log = Arc::new(EmbeddedLog::temporary().unwrap());
    let topics = topics::Topics {
        partitions: 4,
        ..topics::Topics::default()
    };
    let ingest = Ingest::start(log.clone(), config, &topics).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        baton_ingest::run(ingest, listener, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let client = CareEventIngestClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    Running {
        client,
        log,
        stop: Some(stop),
        server,
    }
}

async fn records_written(log: &EmbeddedLog) -> u64 {
    log.end_offsets(topics::CARE_EVENTS)
        .await
        .unwrap()
        .iter()
        .sum()
}

#[tokio::test]
async fn a_valid_batch_is_written_in_order_with_a_token() {
    let mut running = start().await;
    let events = vec![
        admitted("9434765919", "V1", 100, "AMU"),
        transferred("9434765919", "V1", 200, "WARD-7"),
    ];
    let response = running
        .client
        .publish(PublishRequest {
            events: events.clone(),
            validate_only: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.events.len(), 2);
    let (first, second) = (&response.events[0], &response.events[1]);
    assert_eq!(first.event_id, events[0].event_id);
    assert_eq!(first.patient_key, "9434765919");
    assert_eq!(
        first.partition, second.partition,
        "one patient, one partition"
    );
    assert_eq!(second.offset, first.offset + 1);
    let token: ConsistencyToken = response.consistency_token.parse().unwrap();
    assert_eq!(
        token.last_written().get(&second.partition),
        Some(&second.offset)
    );
    assert_eq!(records_written(&running.log).await, 2);

    running.stop.take().unwrap().send(()).unwrap();
    running.server.await.unwrap();
}

#[tokio::test]
async fn an_invalid_event_refuses_the_whole_batch_naming_each_field() {
    let mut running = start().await;
    let mut bad = admitted("9434765919", "V1", 100, "AMU");
    bad.patient.as_mut().unwrap().nhs_number = "9434765918".into();
    let mut worse = transferred("9434765919", "", 200, "WARD-7");
    worse.event_id = "not-a-uuid".into();
    let events = vec![admitted("4010232137", "V2", 100, "AMU"), bad, worse];
    let status = running
        .client
        .publish(PublishRequest {
            events,
            validate_only: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> = status
        .get_details_bad_request()
        .expect("a BadRequest detail")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(
        fields,
        vec![
            "events[1].patient.nhs_number",
            "events[2].event_id",
            "events[2].encounter_id"
        ]
    );
    assert!(
        status.message().contains("2 of 3 events are invalid"),
        "{}",
        status.message()
    );
    assert_eq!(
        records_written(&running.log).await,
        0,
        "nothing half-written"
    );
}

#[tokio::test]
async fn validate_only_writes_nothing_and_limits_are_explained() {
    let mut running = start().await;
    let response = running
        .client
        .publish(PublishRequest {
            events: vec![admitted("9434765919", "V1", 100, "AMU")],
            validate_only: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.events[0].patient_key, "9434765919");
    assert_eq!(records_written(&running.log).await, 0);

    for events in [
        Vec::new(),
        vec![admitted("9434765919", "V1", 100, "AMU"); 4],
    ] {
        let status = running
            .client
            .publish(PublishRequest {
                events,
                validate_only: false,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(
            status.get_details_bad_request().unwrap().field_violations[0].field,
            "events"
        );
    }
}

#[tokio::test]
async fn a_request_past_the_message_limit_is_refused_naming_it() {
    let mut running = start_with(IngestConfig {
        grpc: baton_tls::GrpcLimits::with_max_message_bytes(1024),
        ..IngestConfig::default()
    })
    .await;
    let status = running
        .client
        .publish(PublishRequest {
            events: vec![admitted("9434765919", "V1", 100, "AMU"); 20],
            validate_only: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("the limit is: 1024 bytes"),
        "{status:?}"
    );
    assert_eq!(records_written(&running.log).await, 0);
    running
        .client
        .publish(PublishRequest {
            events: vec![admitted("9434765919", "V1", 100, "AMU")],
            validate_only: false,
        })
        .await
        .expect("a request within the limit is served");
}

#[tokio::test]
async fn a_merge_is_written_under_both_patients() {
    let mut running = start().await;
    let merge = event(
        "9434765919",
        100,
        Some(Payload::PatientsMerged(PatientsMerged {
            retired: Some(identity("4010232137")),
        })),
    );
    running
        .client
        .publish(PublishRequest {
            events: vec![merge],
            validate_only: false,
        })
        .await
        .unwrap();
    assert_eq!(records_written(&running.log).await, 2);
}
