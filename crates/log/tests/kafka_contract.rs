//! The Kafka backend against the shared contract suite, on a real
//! Kafka-protocol broker (Tansu, started per test). librdkafka's mock
//! cluster cannot create topics, so it serves the fault tests only.

use baton_log::kafka::{KafkaConfig, KafkaLog};
use baton_log::testkit::{self, TestBroker};

async fn connect(bootstrap_servers: String) -> KafkaLog {
    KafkaLog::connect(KafkaConfig::new(bootstrap_servers))
        .await
        .expect("connect to the test broker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_log_passes_the_contract_suite_on_a_real_broker() {
    let Some(broker) = TestBroker::start() else {
        return;
    };
    let servers = broker.bootstrap_servers();
    testkit::run_contract_suite(|| connect(servers.clone())).await;
}
