//! An independent gRPC client — Python `grpcio` with stubs generated from
//! `proto/` at test time, none of Baton's code — calls every RPC of the
//! query API of `baton up` on the embedded log, and checks each answer
//! against the contract (tests/python/baton_grpc_client.py). The same
//! client runs against the services on Kafka in `kafka_services.rs`.

mod support;

use support::{EVERY_RPC, Service, free_address, grpc_client, rpcs_called};

#[test]
fn an_independent_grpc_client_calls_every_query_rpc_of_baton_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ingest = free_address();
    let query = free_address();
    let _up = Service::start(
        "baton",
        vec![
            "up".to_owned(),
            "--ingest-listen".to_owned(),
            ingest.to_string(),
            "--query-listen".to_owned(),
            query.to_string(),
            "--data-dir".to_owned(),
            dir.path().display().to_string(),
        ],
        Some(query),
    );
    let lines = grpc_client(&[
        "exercise",
        "--ingest",
        &ingest.to_string(),
        "--query",
        &query.to_string(),
    ]);
    assert_eq!(rpcs_called(&lines), EVERY_RPC, "{lines:#?}");
    let refused: Vec<&str> = lines
        .iter()
        .filter_map(|line| line["refused"].as_str())
        .collect();
    assert_eq!(
        refused,
        [
            "INVALID_ARGUMENT",
            "NOT_FOUND",
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT"
        ]
    );
}
