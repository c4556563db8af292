//! Operations on Kafka: the projector and a query replica as separate
//! processes on a real Kafka-protocol broker, their admin APIs driven with
//! the `baton` command: lag that agrees with the broker's end offsets, a
//! replica verified against a fresh fold, a replay whose swap the replica
//! follows, and the dead letters.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use baton_log::EventLog;
use baton_log::kafka::{KafkaConfig, KafkaLog};
use baton_log::testkit::TestBroker;
use baton_proto::events::v1::CareEvent;
use serde_json::Value;
use support::{Service, baton, eventually, free_address, try_baton};

const PARTITIONS: u32 = 4;
const EVENTS_TOPIC: &str = "baton.care-events.v1";

struct Backbone {
    ingest: Service,
    projector: Service,
    query: Service,
    projector_admin: SocketAddr,
    replica_admin: SocketAddr,
    _dir: tempfile::TempDir,
    broker: TestBroker,
}

impl Backbone {
    fn start() -> Option<Self> {
        let broker = TestBroker::start()?;
        let dir = tempfile::tempdir().unwrap();
        let common = |name: &str| {
            vec![
                "--kafka".to_owned(),
                broker.bootstrap_servers(),
                "--partitions".to_owned(),
                PARTITIONS.to_string(),
                "--data-dir".to_owned(),
                dir.path().join(name).display().to_string(),
            ]
        };
        let ingest_address = free_address();
        let mut args = common("ingest");
        args.extend(["--listen".into(), ingest_address.to_string()]);
        let ingest = Service::start("baton-ingest", args, Some(ingest_address));
        let projector_admin = free_address();
        let mut args = common("projector");
        args.extend(["--admin-listen".into(), projector_admin.to_string()]);
        let projector = Service::start("baton-projector", args, Some(projector_admin));
        let (query_address, replica_admin) = (free_address(), free_address());
        let mut args = common("query");
        args.extend([
            "--listen".into(),
            query_address.to_string(),
            "--admin-listen".into(),
            replica_admin.to_string(),
        ]);
        let query = Service::start("baton-query", args, Some(query_address));
        Some(Self {
            ingest,
            projector,
            query,
            projector_admin,
            replica_admin,
            _dir: dir,
            broker,
        })
    }

    fn admin(&self) -> String {
        self.projector_admin.to_string()
    }

    fn replica(&self) -> String {
        self.replica_admin.to_string()
    }

    fn publish(&self, events: &[CareEvent]) {
        let file = tempfile::NamedTempFile::new().unwrap();
        let lines: Vec<String> = events
            .iter()
            .map(|event| baton_proto::json::to_json(event).unwrap())
            .collect();
        std::fs::write(file.path(), lines.join("\n")).unwrap();
        let ingest = format!("http://{}", self.ingest.address.unwrap());
        baton(&[
            "publish",
            file.path().to_str().unwrap(),
            "--ingest",
            &ingest,
        ]);
    }

    /// `baton lag --json` of the projector and the replica, once both have
    /// applied every event.
    fn caught_up(&self) -> Vec<Value> {
        let (admin, replica) = (self.admin(), self.replica());
        eventually(
            "the projector and the replica caught up",
            Duration::from_secs(120),
            || {
                let (ok, stdout, _) =
                    try_baton(&["lag", "--json", "--admin", &admin, "--replica", &replica]);
                if !ok {
                    return None;
                }
                let measured: Vec<Value> = stdout
                    .lines()
                    .map(|line| serde_json::from_str(line).unwrap())
                    .collect();
                let behind: u64 = measured
                    .iter()
                    .flat_map(|positions| positions["partitions"].as_array().unwrap().clone())
                    .map(|partition| number(&partition["lagEvents"]))
                    .sum();
                (behind == 0).then_some(measured)
            },
        )
    }
}

fn number(value: &Value) -> u64 {
    match value {
        Value::String(text) => text.parse().unwrap(),
        Value::Number(number) => number.as_u64().unwrap(),
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_verify_replay_and_dead_letters_on_kafka_with_a_replica() {
    let Some(mut backbone) = Backbone::start() else {
        return;
    };
    let mut events = baton_synth::events(baton_synth::population_for_events(3_000, 31));
    // One that cannot apply: medically optimised on a stay never admitted.
    events.push(baton_care::fixtures::medically_optimised(
        "9434765919",
        "V404",
        5_000,
    ));
    backbone.publish(&events);

    // Lag agrees with the broker's end offsets, for the projector and the replica.
    let measured = backbone.caught_up();
    let log = KafkaLog::connect(KafkaConfig {
        bootstrap_servers: backbone.broker.bootstrap_servers(),
        ..KafkaConfig::default()
    })
    .await
    .unwrap();
    let ends = log.end_offsets(EVENTS_TOPIC).await.unwrap();
    assert_eq!(ends.iter().sum::<u64>(), events.len() as u64);
    for positions in &measured {
        let partitions: BTreeMap<u64, (u64, u64)> = positions["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    number(&p["partition"]),
                    (number(&p["endOffset"]), number(&p["applied"])),
                )
            })
            .collect();
        assert_eq!(partitions.len(), PARTITIONS as usize, "{positions}");
        for (partition, (end, applied)) in partitions {
            assert_eq!(end, ends[partition as usize], "{positions}");
            assert_eq!(applied, end, "{positions}");
        }
    }
    assert_eq!(measured[0]["role"], "ROLE_PROJECTOR");
    assert_eq!(measured[1]["role"], "ROLE_REPLICA");
    let table = baton(&[
        "lag",
        "--admin",
        &backbone.admin(),
        "--replica",
        &backbone.replica(),
    ]);
    assert!(table.contains("0 events behind"), "{table}");

    // The projector's store and the replica's agree with a fresh fold.
    let verified = baton(&[
        "verify",
        "--admin",
        &backbone.admin(),
        "--replica",
        &backbone.replica(),
    ]);
    assert!(
        verified.contains("projector (generation 0): EQUAL"),
        "{verified}"
    );
    assert!(
        verified.contains(&format!(
            "replica {} (generation 0): EQUAL",
            backbone.replica()
        )),
        "{verified}"
    );

    // The replica serves only the read-only part.
    let (ok, _, refused) = try_baton(&["replay", "--admin", &backbone.replica()]);
    assert!(!ok && refused.contains("query replica"), "{refused}");

    // A replay on the projector; the replica follows the swap.
    let replayed = baton(&["replay", "--admin", &backbone.admin()]);
    assert!(
        replayed.contains("generation 1 (replacing 0): done"),
        "{replayed}"
    );
    assert!(
        replayed.contains("0 differ from the previous generation"),
        "{replayed}"
    );
    assert!(
        replayed.contains("1 records could not be applied"),
        "{replayed}"
    );
    backbone.publish(&[baton_care::fixtures::admitted(
        "9434765919",
        "V405",
        6_000,
        "WARD-2",
    )]);
    backbone.caught_up();
    let verified = baton(&[
        "verify",
        "--admin",
        &backbone.admin(),
        "--replica",
        &backbone.replica(),
    ]);
    assert!(
        verified.contains("projector (generation 1): EQUAL"),
        "{verified}"
    );
    assert!(
        verified.contains("(generation 0): EQUAL"),
        "the replica: {verified}"
    );

    // The dead letter, once only though the replay met it again.
    let listed = baton(&["dlq", "list", "--admin", &backbone.admin()]);
    assert!(
        listed.contains("1 dead letters") && listed.contains("V404"),
        "{listed}"
    );

    // Purging asks first; then the group's committed offsets mark the
    // start, as any Kafka client reads them, and the letter stays in the topic.
    let (ok, asked, _) = try_baton(&["dlq", "purge", "--admin", &backbone.admin()]);
    assert!(
        !ok && asked.contains("1 dead letters would be purged"),
        "{asked}"
    );
    let purged = baton(&["dlq", "purge", "--yes", "--admin", &backbone.admin()]);
    assert!(
        purged.contains("consumer group baton-dead-letters"),
        "{purged}"
    );
    let listed = baton(&["dlq", "list", "--admin", &backbone.admin()]);
    assert!(listed.contains("No dead letters."), "{listed}");
    let committed: u64 = support::kafka_client(&[
        "group-offsets",
        "--bootstrap",
        &backbone.broker.bootstrap_servers(),
        "--topic",
        "baton.dead-letters.v1",
        "--group",
        "baton-dead-letters",
    ])
    .iter()
    .filter_map(|line| line["committed"].as_u64())
    .sum();
    assert_eq!(committed, 1, "the start moved past the one letter");

    // The projector restarts on the generation swapped in.
    backbone.projector.stop();
    backbone.projector.restart();
    let status = baton(&["lag", "--admin", &backbone.admin()]);
    assert!(status.contains("(generation 1)"), "{status}");
    backbone.query.assert_running();
    backbone.ingest.assert_running();
}
