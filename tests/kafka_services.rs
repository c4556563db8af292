//! Baton as three separate service processes over a real Kafka-protocol
//! broker (Tansu, started by the test), driven as an integration engineer
//! drives it: with the `baton` command and an independent Kafka client that
//! is not Baton's code (Python `confluent-kafka` with protobuf classes
//! generated from `proto/`).

mod support;

#[path = "../crates/telemetry/tests/common/mod.rs"]
mod collector;

use std::path::Path;
use std::time::Duration;

use baton_log::partition_for_key;
use baton_log::testkit::TestBroker;
use serde_json::Value;
use support::{
    EVERY_RPC, Service, baton, eventually, free_address, grpc_client, kafka_client, rpcs_called,
    token_in, workspace,
};

const PARTITIONS: u32 = 4;
const EVENTS_TOPIC: &str = "baton.care-events.v1";
const STATE_TOPIC: &str = "baton.care-state.v1";
const DEAD_LETTERS_TOPIC: &str = "baton.dead-letters.v1";
/// The patient of docs/examples/events.jsonl.
const PATIENT: &str = "9434765919";

/// A broker and the three services, each its own process.
struct Backbone {
    // Dropped in this order: the services, then their data, then the broker.
    ingest: Service,
    /// Held so the projector runs as long as the scenario.
    _projector: Service,
    query: Service,
    dir: tempfile::TempDir,
    broker: TestBroker,
}

impl Backbone {
    fn start() -> Option<Self> {
        Self::start_with_env(&[])
    }

    /// With extra environment variables for every service.
    fn start_with_env(env: &[(&str, &str)]) -> Option<Self> {
        let broker = TestBroker::start()?;
        let dir = tempfile::tempdir().expect("temp dir");
        let ingest = Self::service(&broker, &dir, "baton-ingest", true, env);
        let projector = Self::service(&broker, &dir, "baton-projector", false, env);
        let query = Self::service(&broker, &dir, "baton-query", true, env);
        Some(Self {
            broker,
            dir,
            ingest,
            _projector: projector,
            query,
        })
    }

    fn service(
        broker: &TestBroker,
        dir: &tempfile::TempDir,
        name: &'static str,
        listens: bool,
        env: &[(&str, &str)],
    ) -> Service {
        let mut args = vec![
            "--kafka".to_owned(),
            broker.bootstrap_servers(),
            "--partitions".to_owned(),
            PARTITIONS.to_string(),
            "--data-dir".to_owned(),
            dir.path().join(name).display().to_string(),
        ];
        let address = listens.then(free_address);
        if let Some(address) = address {
            args.extend(["--listen".to_owned(), address.to_string()]);
        }
        let env = env
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        Service::start_with_env(name, args, address, env)
    }

    fn ingest_url(&self) -> String {
        format!("http://{}", self.ingest.address.expect("ingest listens"))
    }

    fn query_url(&self) -> String {
        format!("http://{}", self.query.address.expect("query listens"))
    }

    fn bootstrap(&self) -> String {
        self.broker.bootstrap_servers()
    }

    /// `baton publish FILE` through the ingest process; returns the token.
    fn publish(&self, file: &Path) -> String {
        let file = file.display().to_string();
        token_in(&baton(&["publish", &file, "--ingest", &self.ingest_url()]))
    }

    /// `baton state get PATIENT --json` from the query replica.
    fn state(&self, patient: &str, token: Option<&str>) -> Value {
        let query = self.query_url();
        let mut args = vec!["state", "get", patient, "--json", "--query", &query];
        if let Some(token) = token {
            args.extend(["--consistency-token", token]);
        }
        serde_json::from_str(&baton(&args)).expect("state get prints JSON")
    }

    /// The state, once the replica has it at `version` or later.
    fn state_at_least(&self, patient: &str, version: u64) -> Value {
        let query = self.query_url();
        eventually(
            &format!("patient {patient} at version {version} in the query replica"),
            Duration::from_secs(60),
            || {
                let output = std::process::Command::new(support::binaries().join("baton"))
                    .args(["state", "get", patient, "--json", "--query", &query])
                    .env("BATON_LOG", "error")
                    .output()
                    .ok()?;
                let state: Value = serde_json::from_slice(&output.stdout).ok()?;
                (version_of(&state) >= version).then_some(state)
            },
        )
    }
}

fn example_events() -> std::path::PathBuf {
    workspace().join("docs/examples/events.jsonl")
}

fn event_count(file: &Path) -> u64 {
    std::fs::read_to_string(file)
        .expect("example events")
        .lines()
        .filter(|line| !line.trim().is_empty())
        .count() as u64
}

/// `version` of a state in the protobuf JSON mapping (a uint64 is a string).
fn version_of(state: &Value) -> u64 {
    match &state["version"] {
        Value::String(text) => text.parse().unwrap_or(0),
        Value::Number(number) => number.as_u64().unwrap_or(0),
        _ => 0,
    }
}

/// The example story ends on a virtual ward, and the late correction moved
/// the patient's ward stay from WARD-7 to ELDERLY-CARE.
fn assert_example_story(state: &Value) {
    assert_eq!(state["patientKey"], PATIENT, "{state:#}");
    assert_eq!(state["setting"], "CARE_SETTING_VIRTUAL_WARD", "{state:#}");
    let text = state.to_string();
    assert!(
        text.contains("ELDERLY-CARE"),
        "the correction is in the history: {state:#}"
    );
}

#[test]
fn publish_project_and_query_across_three_processes() {
    let Some(backbone) = Backbone::start() else {
        return;
    };
    let token = backbone.publish(&example_events());
    // The token makes the replica wait until the projector's progress
    // reached it through the changelog: read-your-writes across processes.
    let state = backbone.state(PATIENT, Some(&token));
    assert_example_story(&state);
    assert_eq!(version_of(&state), event_count(&example_events()));

    // The hospital number finds the same patient.
    let by_local_id = backbone.state("RXX:H400123", None);
    assert_eq!(by_local_id, state);
}

#[test]
fn a_query_replica_restores_its_store_from_the_compacted_topic() {
    let Some(mut backbone) = Backbone::start() else {
        return;
    };
    let token = backbone.publish(&example_events());
    let before = backbone.state(PATIENT, Some(&token));
    let query = backbone.query_url();
    let cohort_before = baton(&[
        "cohort",
        "--setting",
        "virtual-ward",
        "--json",
        "--query",
        &query,
    ]);

    // A new replica on an empty disk: all it has is the changelog.
    backbone.query.stop();
    std::fs::remove_dir_all(backbone.dir.path().join("baton-query")).expect("remove the replica");
    backbone.query.restart();
    let after = backbone.state(PATIENT, None);
    assert_eq!(after, before, "the replica rebuilt from the changelog");
    let cohort_after = baton(&[
        "cohort",
        "--setting",
        "virtual-ward",
        "--json",
        "--query",
        &query,
    ]);
    assert_eq!(cohort_after, cohort_before);
    // And it still honours tokens: the projector's progress came with it.
    assert_eq!(backbone.state(PATIENT, Some(&token)), before);
}

#[test]
fn a_poison_record_is_dead_lettered_and_its_partition_flows_on() {
    let Some(backbone) = Backbone::start() else {
        return;
    };
    let bootstrap = backbone.bootstrap();
    // Not a CareEvent, under the patient's key: it lands in their partition,
    // ahead of their real events.
    let poison = kafka_client(&[
        "produce-raw",
        "--bootstrap",
        &bootstrap,
        "--topic",
        EVENTS_TOPIC,
        "--key",
        PATIENT,
        "--value-hex",
        "deadbeef",
        "--header",
        "content-type=application/x-protobuf; messageType=baton.events.v1.CareEvent",
    ]);
    let partition = partition_for_key(PATIENT.as_bytes(), PARTITIONS);
    assert_eq!(poison[0]["partition"], partition, "murmur2 in both clients");

    let token = backbone.publish(&example_events());
    let state = backbone.state(PATIENT, Some(&token));
    assert_example_story(&state);

    let dead = eventually("the dead letter", Duration::from_secs(30), || {
        let records = kafka_client(&[
            "read-records",
            "--bootstrap",
            &bootstrap,
            "--topic",
            DEAD_LETTERS_TOPIC,
            "--timeout-s",
            "10",
        ]);
        records.into_iter().next()
    });
    assert_eq!(
        dead["value_hex"], "deadbeef",
        "the original bytes: {dead:#}"
    );
    assert_eq!(dead["key"], PATIENT);
    let headers = &dead["headers"];
    assert!(
        headers["baton-reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("cannot decode a baton.events.v1.CareEvent")),
        "{dead:#}"
    );
    assert_eq!(headers["baton-source-topic"], EVENTS_TOPIC);
    assert_eq!(headers["baton-source-partition"], partition.to_string());
    assert_eq!(
        headers["baton-source-offset"],
        poison[0]["offset"].to_string()
    );
}

#[test]
fn events_from_an_independent_client_are_projected_and_it_reads_the_changelog() {
    let Some(backbone) = Backbone::start() else {
        return;
    };
    let bootstrap = backbone.bootstrap();
    let file = example_events();
    let produced = kafka_client(&[
        "produce",
        "--bootstrap",
        &bootstrap,
        "--topic",
        EVENTS_TOPIC,
        "--jsonl",
        &file.display().to_string(),
    ]);
    let events = event_count(&file);
    assert_eq!(produced.len() as u64, events);
    let partition = partition_for_key(PATIENT.as_bytes(), PARTITIONS);
    for record in &produced {
        assert_eq!(
            record["partition"], partition,
            "murmur2 in both clients: {record}"
        );
    }

    let state = backbone.state_at_least(PATIENT, events);
    assert_example_story(&state);

    // The independent client reads the compacted changelog and finds the
    // same state there, skipping the progress records.
    let states = kafka_client(&[
        "read-states",
        "--bootstrap",
        &bootstrap,
        "--topic",
        STATE_TOPIC,
        "--expect-keys",
        PATIENT,
        "--timeout-s",
        "30",
    ]);
    let read = states
        .iter()
        .find(|entry| entry["key"] == PATIENT)
        .expect("the patient's state in the changelog");
    assert_eq!(read["version"], events);
    assert_eq!(read["state"]["setting"], "CARE_SETTING_VIRTUAL_WARD");
    assert_eq!(
        read["state"], state,
        "the changelog holds what the query API serves"
    );
}

#[test]
fn an_independent_grpc_client_calls_every_query_rpc_of_a_replica() {
    let Some(backbone) = Backbone::start() else {
        return;
    };
    let ingest = backbone.ingest.address.expect("ingest listens").to_string();
    let query = backbone.query.address.expect("query listens").to_string();
    let lines = grpc_client(&["exercise", "--ingest", &ingest, "--query", &query]);
    assert_eq!(rpcs_called(&lines), EVERY_RPC, "{lines:#?}");
}

#[test]
fn the_trace_of_a_publish_continues_into_the_changelog() {
    let Some(backbone) = Backbone::start() else {
        return;
    };
    let bootstrap = backbone.bootstrap();
    let token = backbone.publish(&example_events());
    backbone.state(PATIENT, Some(&token));

    let traceparent = |record: &Value| -> String {
        record["headers"]["traceparent"]
            .as_str()
            .unwrap_or_else(|| panic!("no traceparent on {record:#}"))
            .to_owned()
    };
    let events = kafka_client(&[
        "read-records",
        "--bootstrap",
        &bootstrap,
        "--topic",
        EVENTS_TOPIC,
    ]);
    let ingest_trace = traceparent(&events[0]);
    let states = kafka_client(&[
        "read-records",
        "--bootstrap",
        &bootstrap,
        "--topic",
        STATE_TOPIC,
    ]);
    let state_record = states
        .iter()
        .rev()
        .find(|record| record["key"] == PATIENT)
        .expect("the patient's state record");
    let state_trace = traceparent(state_record);
    // 00-<trace id>-<span id>-<flags>: one trace, a new span.
    assert_eq!(
        state_trace[3..35],
        ingest_trace[3..35],
        "{ingest_trace} / {state_trace}"
    );
    assert_ne!(state_trace[36..52], ingest_trace[36..52]);
}

/// With OpenTelemetry export on, the spans of one `Publish` reach the
/// collector from all three processes in one trace: `publish` at ingest,
/// `apply_event` in the projector under it, `materialise_state` in the
/// query replica under that.
#[test]
fn one_trace_runs_from_ingest_through_the_projector_into_the_query_replica() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let collector = collector::FakeCollector::default();
    let (_stop_collector, stopped) = tokio::sync::oneshot::channel();
    let endpoint = runtime
        .block_on(collector.start(stopped))
        .expect("fake collector");
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let Some(mut backbone) = Backbone::start_with_env(&env) else {
        return;
    };
    let token = backbone.publish(&example_events());
    backbone.state(PATIENT, Some(&token));
    // Stopping flushes every span still batched.
    backbone.ingest.stop();
    backbone._projector.stop();
    backbone.query.stop();

    let spans = collector.spans();
    let named = |service: &str, name: &str| -> Vec<_> {
        spans
            .iter()
            .filter(|(from, span)| from.as_deref() == Some(service) && span.name == name)
            .map(|(_, span)| span.clone())
            .collect()
    };
    let published = named("baton-ingest", "publish");
    let applied = named("baton-projector", "apply_event");
    let materialised = named("baton-query", "materialise_state");
    assert_eq!(published.len(), 1, "one Publish call: {spans:#?}");
    let publish = &published[0];
    assert_eq!(
        applied.len() as u64,
        event_count(&example_events()),
        "one apply_event per event"
    );
    for span in &applied {
        assert_eq!(
            span.trace_id, publish.trace_id,
            "the projector continues the trace"
        );
        assert_eq!(span.parent_span_id, publish.span_id);
    }
    let continued: Vec<_> = materialised
        .iter()
        .filter(|span| span.trace_id == publish.trace_id)
        .collect();
    assert!(
        !continued.is_empty(),
        "the replica continues the trace: {materialised:#?}"
    );
    for span in continued {
        assert!(
            applied
                .iter()
                .any(|apply| apply.span_id == span.parent_span_id),
            "a materialise_state span hangs under an apply_event span"
        );
    }
}

/// `baton up --kafka` runs the three services in one process against the
/// cluster, and a query replica started beside it serves the same states.
#[test]
fn baton_up_on_kafka_serves_and_feeds_a_replica_beside_it() {
    let Some(broker) = TestBroker::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (ingest, query) = (free_address(), free_address());
    let _up = Service::start(
        "baton",
        vec![
            "up".to_owned(),
            "--kafka".to_owned(),
            broker.bootstrap_servers(),
            "--partitions".to_owned(),
            PARTITIONS.to_string(),
            "--data-dir".to_owned(),
            dir.path().join("up").display().to_string(),
            "--ingest-listen".to_owned(),
            ingest.to_string(),
            "--query-listen".to_owned(),
            query.to_string(),
        ],
        Some(ingest),
    );
    let file = example_events().display().to_string();
    let token = token_in(&baton(&[
        "publish",
        &file,
        "--ingest",
        &format!("http://{ingest}"),
    ]));
    let state = |query: &str| -> Value {
        serde_json::from_str(&baton(&[
            "state",
            "get",
            PATIENT,
            "--json",
            "--consistency-token",
            &token,
            "--query",
            query,
        ]))
        .expect("JSON")
    };
    let from_up = state(&format!("http://{query}"));
    assert_example_story(&from_up);

    let replica_address = free_address();
    let _replica = Service::start(
        "baton-query",
        vec![
            "--kafka".to_owned(),
            broker.bootstrap_servers(),
            "--data-dir".to_owned(),
            dir.path().join("replica").display().to_string(),
            "--listen".to_owned(),
            replica_address.to_string(),
        ],
        Some(replica_address),
    );
    assert_eq!(state(&format!("http://{replica_address}")), from_up);
}
