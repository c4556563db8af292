//! Server reflection as tools that speak only `grpc.reflection.v1alpha`
//! use it (grpcurl before 1.9, older Postman, Evans, grpcui): an
//! independent client (Python grpcio-reflection, no .proto files) lists the
//! services of the gRPC APIs of `baton up` (ingest, query, admin, and
//! health checking on each), resolves every method, and
//! resolves `google.rpc.BadRequest`, so such a tool can show the field
//! violations of an INVALID_ARGUMENT instead of raw bytes.

mod support;

use support::{Service, free_address, reflection_client};

#[test]
fn a_v1alpha_reflection_client_lists_both_apis_and_resolves_bad_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ingest, query, admin) = (free_address(), free_address(), free_address());
    let _up = Service::start(
        "baton",
        [
            "up",
            "--ingest-listen",
            &ingest.to_string(),
            "--query-listen",
            &query.to_string(),
            "--mllp-listen",
            "off",
            "--admin-listen",
            &admin.to_string(),
            "--data-dir",
            dir.path().to_str().unwrap(),
        ]
        .map(str::to_owned)
        .to_vec(),
        Some(query),
    );
    for (address, service, method) in [
        (ingest, "baton.ingest.v1.CareEventIngest", "Publish"),
        (query, "baton.query.v1.CareStateQuery", "GetCareState"),
        (admin, "baton.admin.v1.Operations", "StartReplay"),
        (admin, "grpc.health.v1.Health", "Check"),
    ] {
        let lines = reflection_client(&[
            "--address",
            &address.to_string(),
            "--expect-service",
            service,
        ]);
        let services: Vec<&str> = lines[0]["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        // Exactly what this listener serves: a tool pointed at the admin
        // port is not offered the query API.
        let served = if service == "grpc.health.v1.Health" {
            "baton.admin.v1.Operations"
        } else {
            service
        };
        let mut expected = vec![
            served,
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ];
        expected.sort_unstable();
        assert_eq!(services, expected, "services listed on {address}");
        let methods = lines
            .iter()
            .find(|line| line["service"] == service)
            .unwrap_or_else(|| panic!("{service} resolved: {lines:#?}"));
        assert!(
            methods["methods"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["method"] == method),
            "{methods}"
        );
        let bad_request = lines
            .iter()
            .find(|line| line["resolved"] == "google.rpc.BadRequest")
            .unwrap_or_else(|| panic!("google.rpc.BadRequest resolved: {lines:#?}"));
        assert_eq!(
            bad_request["fields"],
            serde_json::json!(["field_violations"])
        );
        assert_eq!(
            bad_request["violation"],
            "google.rpc.BadRequest.FieldViolation"
        );
        let fields = bad_request["violation_fields"].as_array().unwrap();
        assert!(
            fields.contains(&"field".into()) && fields.contains(&"description".into()),
            "{fields:?}"
        );
    }
}
