//! Reads fail closed when the audit log cannot take their records: the
//! query API with its audit log on librdkafka's in-process mock cluster
//! answers `GetCareState` while the broker is up, `UNAVAILABLE` while it is
//! down (within `append_timeout_ms`), and again once it is back; every read
//! it answered is in the audit topic afterwards. With `fail_closed = false`
//! the read goes on while the log is down.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_audit::{AuditConfig, AuditRecord, Auditor, Outcome};
use baton_care::fixtures::{admitted, state_of};
use baton_log::EventLog;
use baton_log::kafka::{KafkaConfig, KafkaLog};
use baton_proto::query::v1::care_state_query_client::CareStateQueryClient;
use baton_proto::query::v1::patient_ref::Ref;
use baton_proto::query::v1::{GetCareStateRequest, PatientRef};
use baton_query::{QueryConfig, QueryService};
use baton_store::{Commit, Store};
use prost::Message;
use rdkafka::mocking::MockCluster;
use tonic::Code;
use tonic::transport::Channel;

const TOPIC: &str = "baton.audit.v1";
const PARTITIONS: u32 = 2;

fn read(nhs: &str) -> GetCareStateRequest {
    GetCareStateRequest {
        patient: Some(PatientRef {
            r#ref: Some(Ref::NhsNumber(nhs.into())),
        }),
        consistency_token: String::new(),
    }
}

/// A query API over one patient's state, auditing to `log`.
async fn serve(log: Arc<dyn EventLog>, audit: AuditConfig) -> CareStateQueryClient<Channel> {
    let store = Store::temporary().unwrap();
    store
        .commit(
            &Commit::new(baton_log::topics::CARE_EVENTS).with_state(state_of(vec![admitted(
                "9434765919",
                "V1",
                100,
                "AMU",
            )])),
        )
        .unwrap();
    let auditor = Auditor::start(log, &audit, "query").await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(baton_query::run(
        QueryService::new(
            store,
            QueryConfig::default(),
            &baton_log::topics::Topics::default(),
        )
        .with_auditor(auditor),
        listener,
        std::future::pending(),
    ));
    CareStateQueryClient::connect(format!("http://{address}"))
        .await
        .unwrap()
}

fn audit_config(fail_closed: bool) -> AuditConfig {
    AuditConfig {
        partitions: PARTITIONS,
        append_timeout_ms: 1_000,
        fail_closed,
        ..AuditConfig::default()
    }
}

/// The mock cluster cannot create topics through the admin API; Baton
/// finds the audit topic existing, as when operators pre-create it.
fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster
        .create_topic(TOPIC, PARTITIONS as i32, 1)
        .expect("mock topic");
    cluster
}

async fn kafka(
    cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
) -> KafkaLog {
    KafkaLog::connect(KafkaConfig {
        delivery_timeout_ms: 1_500,
        ..KafkaConfig::new(cluster.bootstrap_servers())
    })
    .await
    .unwrap()
}

/// Every record in the audit topic.
async fn audited(log: &KafkaLog) -> Vec<AuditRecord> {
    let ends = log.end_offsets(TOPIC).await.unwrap();
    let from: BTreeMap<u32, u64> = (0..PARTITIONS).map(|p| (p, 0)).collect();
    let mut reader = log.reader(TOPIC, from).await.unwrap();
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ends
        .iter()
        .enumerate()
        .any(|(p, end)| reader.positions()[&(p as u32)] < *end)
    {
        assert!(
            Instant::now() < deadline,
            "could not read the audit topic back"
        );
        for record in reader
            .next_batch(1000, Duration::from_millis(200))
            .await
            .unwrap()
        {
            records.push(AuditRecord::decode(record.value.as_slice()).unwrap());
        }
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_refused_while_the_audit_log_is_down_and_served_once_it_is_back() {
    let cluster = cluster();
    let log = kafka(&cluster).await;
    let mut client = serve(Arc::new(log.clone()), audit_config(true)).await;

    client.get_care_state(read("9434765919")).await.unwrap();
    cluster.broker_down(1).unwrap();
    let refused = client.get_care_state(read("9434765919")).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("audit log") && refused.message().contains("fail_closed"),
        "{refused:?}"
    );
    cluster.broker_up(1).unwrap();
    // Back: served again, once librdkafka has reconnected.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut served_after = 0;
    while served_after < 3 {
        match client.get_care_state(read("9434765919")).await {
            Ok(_) => served_after += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(
                    Instant::now() < deadline,
                    "reads never recovered: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    // Every read answered is recorded (a refused one may be too: its
    // record can land once the broker is back).
    let reads = audited(&log)
        .await
        .into_iter()
        .filter(|record| {
            record.outcome == Outcome::Read as i32 && record.patient_key == "9434765919"
        })
        .count();
    // The read before the broker went down, and every one after.
    assert!(reads > served_after, "{reads} reads recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fail_open_reads_go_on_while_the_audit_log_is_down() {
    let cluster = cluster();
    let log = kafka(&cluster).await;
    let mut client = serve(Arc::new(log), audit_config(false)).await;
    cluster.broker_down(1).unwrap();
    client.get_care_state(read("9434765919")).await.unwrap();
    cluster.broker_up(1).unwrap();
}
