//! Baton's metrics as operators use them, with the real binaries: a real
//! Prometheus server (Debian's `prometheus`, which `scripts/setup.sh`
//! installs) scrapes a running `baton up` and answers PromQL; `promtool check
//! metrics` passes on the exposition of every service; on a real broker the
//! lag figures agree with the log's end offsets, and the Python Kafka client
//! reads the projector's monitoring consumer group as any lag tool would.
//!
//! Prometheus and promtool missing is a failure saying how to install them,
//! never a skip. The Kafka scenario skips loudly with
//! `BATON_SKIP_KAFKA_TESTS=1` outside CI, as every Kafka test does.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use baton_log::testkit::TestBroker;
use serde_json::Value;
use support::{Service, baton, eventually, free_address, kafka_client, workspace};

const EVENTS_TOPIC: &str = "baton.care-events.v1";
const PARTITIONS: u32 = 4;

/// `GET path` over HTTP/1.0 (the server closes when done): the status and
/// the body.
fn http_get(address: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

fn exposition(address: SocketAddr) -> String {
    match http_get(address, "/metrics") {
        Some((200, body)) => body,
        other => panic!("GET http://{address}/metrics gave {other:?}"),
    }
}

/// The value of the sample `series` (name and labels, as exposed).
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
    })
}

/// A tool from Debian's `prometheus` package, or a failure saying how to
/// get it.
fn prometheus_tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "{name} is missing: run scripts/setup.sh, which installs Debian's prometheus package \
             (apt-get install prometheus, as root), or put {name} on the PATH"
        )
    })
}

/// `promtool check metrics` on `exposition`: what it says, if anything.
fn promtool_problems(exposition: &str) -> Option<String> {
    let mut child = Command::new(prometheus_tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (!output.status.success() || !said.trim().is_empty()).then_some(said)
}

fn assert_promtool_passes(service: &str, exposition: &str) {
    if let Some(problems) = promtool_problems(exposition) {
        panic!("promtool check metrics on {service}'s exposition:\n{problems}\n{exposition}");
    }
}

/// A Prometheus server of this test's own, scraping `target` every second.
struct Prometheus {
    child: Child,
    address: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: baton\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let address = free_address();
        let child = Command::new(prometheus_tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        Self {
            child,
            address,
            _dir: dir,
        }
    }

    /// Prometheus's answer to an instant PromQL query: its HTTP status
    /// and JSON.
    fn answer(&self, promql: &str) -> Option<(u16, Value)> {
        let encoded: String = promql
            .bytes()
            .map(|byte| match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' => {
                    (byte as char).to_string()
                }
                _ => format!("%{byte:02X}"),
            })
            .collect();
        let (status, body) = http_get(self.address, &format!("/api/v1/query?query={encoded}"))?;
        Some((status, serde_json::from_str(&body).ok()?))
    }

    /// The value of an instant PromQL query with one result.
    fn query(&self, promql: &str) -> Option<f64> {
        let (status, answer) = self.answer(promql)?;
        if status != 200 {
            return None;
        }
        let result = answer["data"]["result"].as_array()?;
        (result.len() == 1)
            .then(|| result[0]["value"][1].as_str()?.parse().ok())
            .flatten()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn example_events() -> PathBuf {
    workspace().join("docs/examples/events.jsonl")
}

fn event_count(file: &Path) -> f64 {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter(|line| !line.trim().is_empty())
        .count() as f64
}

fn wait_ready(service: &str, address: SocketAddr) {
    eventually(
        &format!("{service} answering 200 on /ready"),
        Duration::from_secs(60),
        || (http_get(address, "/ready")?.0 == 200).then_some(()),
    );
    assert_eq!(
        http_get(address, "/live").map(|(status, _)| status),
        Some(200),
        "{service} /live"
    );
}

#[test]
fn prometheus_scrapes_baton_up_and_answers_promql_for_lag_and_events_applied() {
    let data = tempfile::tempdir().unwrap();
    let (ingest, query, metrics) = (free_address(), free_address(), free_address());
    let mllp = free_address();
    let _up = Service::start(
        "baton",
        [
            "up",
            "--ingest-listen",
            &ingest.to_string(),
            "--query-listen",
            &query.to_string(),
            "--metrics-listen",
            &metrics.to_string(),
            "--mllp-listen",
            &mllp.to_string(),
            "--data-dir",
            data.path().to_str().unwrap(),
        ]
        .map(str::to_owned)
        .to_vec(),
        Some(metrics),
    );
    wait_ready("baton up", metrics);
    baton(&[
        "publish",
        example_events().to_str().unwrap(),
        "--ingest",
        &format!("http://{ingest}"),
    ]);
    let events = event_count(&example_events());
    let prometheus = Prometheus::start(metrics);

    let applied = eventually(
        "Prometheus reporting every event applied",
        Duration::from_secs(90),
        || {
            prometheus
                .query("sum(baton_projector_events_applied_total{job=\"baton\"})")
                .filter(|&applied| applied == events)
        },
    );
    assert_eq!(applied, events);
    assert_eq!(
        prometheus.query("sum(baton_ingest_events_accepted_total)"),
        Some(events)
    );
    // The lag, per partition of the events topic: gone once applied.
    eventually(
        "Prometheus reporting no lag",
        Duration::from_secs(60),
        || {
            let behind = prometheus.query("sum(baton_projection_lag_events{job=\"baton\"})")?;
            let oldest = prometheus.query("max(baton_projection_lag_seconds{job=\"baton\"})")?;
            let written = prometheus.query("sum(baton_log_end_offset{job=\"baton\"})")?;
            (behind == 0.0 && oldest == 0.0 && written >= events).then_some(())
        },
    );
    let partitions = prometheus
        .query("count(baton_projection_lag_events{topic=\"baton.care-events.v1\"})")
        .unwrap();
    assert_eq!(
        partitions,
        f64::from(baton_log::topics::Topics::default().partitions)
    );
    assert_eq!(prometheus.query("up{job=\"baton\"}"), Some(1.0));

    let text = exposition(metrics);
    assert_promtool_passes("baton up", &text);
    // The publish went through the ingest API, so gRPC calls are counted.
    assert_eq!(
        sample(
            &text,
            "baton_grpc_server_handled_total{grpc_service=\"baton.ingest.v1.CareEventIngest\",grpc_method=\"Publish\",grpc_code=\"OK\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(!text.contains("9434765919"), "no patient in the metrics");

    // An HL7 feed, and an event the fold cannot apply (medically optimised
    // on a stay the patient never had): counted by type and ACK code, and
    // by dead-letter reason.
    let story = workspace().join("docs/examples/hl7/story.hl7");
    let sent = baton(&[
        "hl7",
        "send",
        "--to",
        &mllp.to_string(),
        story.to_str().unwrap(),
    ]);
    let acknowledged = sent.lines().filter(|line| line.contains(": AA ")).count() as f64;
    assert!(acknowledged >= 5.0, "{sent}");
    let unknown_encounter = data.path().join("dead-letter.jsonl");
    std::fs::write(
        &unknown_encounter,
        r#"{"eventId": "0b7f6f1e-3c1d-4a7e-9a55-2f1f4f0c9d11", "patient": {"nhsNumber": "9434765919"}, "occurredAt": "2026-11-09T10:00:00Z", "recordedAt": "2026-11-09T10:00:00Z", "source": {"system": "PAS", "organisation": "RXX", "messageId": "MSG-DL-1"}, "encounterId": "V-NEVER", "medicallyOptimised": {}}"#,
    )
    .unwrap();
    baton(&[
        "publish",
        unknown_encounter.to_str().unwrap(),
        "--ingest",
        &format!("http://{ingest}"),
    ]);
    eventually(
        "Prometheus reporting the dead letter and the HL7 messages",
        Duration::from_secs(60),
        || {
            let dead = prometheus
                .query("sum(baton_projector_dead_letters_total{reason=\"unknown_encounter\"})")?;
            let messages = prometheus.query("sum(baton_mllp_messages_total{ack_code=\"AA\"})")?;
            (dead == 1.0 && messages == acknowledged).then_some(())
        },
    );
    let text = exposition(metrics);
    assert_promtool_passes("baton up", &text);
    for secret in [
        "9434765919",
        "4010232137",
        "V-NEVER",
        "H200456",
        "V2001",
        "PAS-100",
    ] {
        assert!(!text.contains(secret), "{secret} in the metrics:\n{text}");
    }
    check_dashboard(&prometheus, &text);
}

/// Every query of the Grafana dashboard is valid PromQL that Prometheus
/// evaluates, over families `baton up` exposes.
fn check_dashboard(prometheus: &Prometheus, exposition: &str) {
    let path = workspace().join("deploy/grafana/baton.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .expect("the dashboard is JSON");
    let families: Vec<&str> = exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let promql = expr
                .replace("$__rate_interval", "1m")
                .replace("$__range", "5m");
            let (status, answer) = prometheus.answer(&promql).unwrap();
            assert_eq!(
                (status, answer["status"].as_str()),
                (200, Some("success")),
                "panel {:?}: {expr}: {answer}",
                panel["title"]
            );
            for name in promql
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| word.starts_with("baton_"))
            {
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .filter(|family| families.contains(family))
                    .unwrap_or(name);
                assert!(
                    families.contains(&family),
                    "panel {:?} uses {name}, which baton up does not expose",
                    panel["title"]
                );
            }
            queries += 1;
        }
    }
    assert!(queries >= 20, "{queries} queries in the dashboard");
}

/// The three services as separate processes on a real broker.
#[test]
fn every_service_passes_promtool_and_lag_agrees_with_the_broker_and_the_consumer_group() {
    let Some(broker) = TestBroker::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let service = |name: &'static str, grpc: Option<SocketAddr>, metrics: SocketAddr| {
        let mut args = vec![
            "--kafka".to_owned(),
            broker.bootstrap_servers(),
            "--partitions".to_owned(),
            PARTITIONS.to_string(),
            "--data-dir".to_owned(),
            dir.path().join(name).display().to_string(),
            "--metrics-listen".to_owned(),
            metrics.to_string(),
        ];
        if let Some(grpc) = grpc {
            args.extend(["--listen".to_owned(), grpc.to_string()]);
        }
        Service::start_with_env(
            name,
            args,
            Some(grpc.unwrap_or(metrics)),
            vec![
                ("BATON_PROJECTOR__MONITOR_INTERVAL_MS".into(), "300".into()),
                ("BATON_QUERY__MONITOR_INTERVAL_MS".into(), "300".into()),
            ],
        )
    };
    let (ingest, ingest_metrics) = (free_address(), free_address());
    let (query, query_metrics) = (free_address(), free_address());
    let projector_metrics = free_address();
    let _ingest = service("baton-ingest", Some(ingest), ingest_metrics);
    let _projector = service("baton-projector", None, projector_metrics);
    let _query = service("baton-query", Some(query), query_metrics);
    for (name, address) in [
        ("baton-ingest", ingest_metrics),
        ("baton-projector", projector_metrics),
        ("baton-query", query_metrics),
    ] {
        wait_ready(name, address);
    }

    baton(&[
        "publish",
        example_events().to_str().unwrap(),
        "--ingest",
        &format!("http://{ingest}"),
    ]);
    let events = event_count(&example_events());
    let bootstrap = broker.bootstrap_servers();
    // What an independent client sees: the group's committed offsets, and
    // each partition's end counted from its records (Tansu's ListOffsets
    // answer, the high watermark, can fall short of it; see
    // docs/decisions.md, "End offsets are confirmed by reading").
    let ends: BTreeMap<u32, u64> = {
        let mut ends: BTreeMap<u32, u64> = (0..PARTITIONS).map(|p| (p, 0)).collect();
        for record in kafka_client(&[
            "read-records",
            "--bootstrap",
            &bootstrap,
            "--topic",
            EVENTS_TOPIC,
        ]) {
            let partition = record["partition"].as_u64().unwrap() as u32;
            let next = record["offset"].as_u64().unwrap() + 1;
            let end = ends.entry(partition).or_default();
            *end = (*end).max(next);
        }
        ends
    };
    assert_eq!(ends.values().sum::<u64>() as f64, events);
    let committed = || -> BTreeMap<u32, Option<u64>> {
        kafka_client(&[
            "group-offsets",
            "--bootstrap",
            &bootstrap,
            "--topic",
            EVENTS_TOPIC,
            "--group",
            "baton-projector",
        ])
        .iter()
        .map(|line| {
            (
                line["partition"].as_u64().unwrap() as u32,
                line["committed"].as_u64(),
            )
        })
        .collect()
    };
    let series = |family: &str, partition: u32| {
        format!("{family}{{topic=\"{EVENTS_TOPIC}\",partition=\"{partition}\"}}")
    };
    let expected: BTreeMap<u32, Option<u64>> = ends
        .iter()
        .map(|(&partition, &end)| (partition, Some(end)))
        .collect();
    eventually(
        "the consumer group committed at the end of every partition",
        Duration::from_secs(90),
        || (committed() == expected).then_some(()),
    );
    let offsets = ends;
    assert_eq!(offsets.len() as u32, PARTITIONS);
    // The projector's and the replica's figures agree with the broker's.
    for (service, address) in [
        ("baton-projector", projector_metrics),
        ("baton-query", query_metrics),
    ] {
        eventually(
            &format!("{service}'s lag figures agreeing with the broker"),
            Duration::from_secs(60),
            || {
                let text = exposition(address);
                offsets
                    .iter()
                    .all(|(&partition, &end)| {
                        let end = end as f64;
                        sample(&text, &series("baton_log_end_offset", partition)) == Some(end)
                            && sample(&text, &series("baton_projection_applied_offset", partition))
                                == Some(end)
                            && sample(&text, &series("baton_projection_lag_events", partition))
                                == Some(0.0)
                            && sample(&text, &series("baton_projection_lag_seconds", partition))
                                == Some(0.0)
                    })
                    .then_some(())
            },
        );
    }

    let ingest_text = exposition(ingest_metrics);
    assert_eq!(
        sample(&ingest_text, "baton_ingest_events_accepted_total"),
        Some(events)
    );
    let projector_text = exposition(projector_metrics);
    assert_eq!(
        sample(&projector_text, "baton_projector_events_applied_total"),
        Some(events)
    );
    assert!(
        sample(
            &projector_text,
            "baton_projector_group_commits_total{outcome=\"committed\"}"
        )
        .is_some_and(|commits| commits >= 1.0)
    );
    assert!(
        sample(&projector_text, "baton_projector_states_published_total")
            .is_some_and(|states| states >= 1.0)
    );
    let query_text = exposition(query_metrics);
    assert_eq!(sample(&query_text, "baton_store_states"), Some(1.0));
    for (service, text) in [
        ("baton-ingest", &ingest_text),
        ("baton-projector", &projector_text),
        ("baton-query", &query_text),
    ] {
        assert_promtool_passes(service, text);
        assert!(
            !text.contains("9434765919"),
            "no patient in {service}'s metrics"
        );
    }
}
