//! The deployment files under `deploy/` (Dockerfile, compose, Kubernetes),
//! checked offline since no container engine or cluster runs here: schemas
//! (hadolint, the compose specification, Kubernetes' own through
//! kubernetes-validate after `kubectl kustomize`), the Strimzi topics equal
//! to `deploy/topics.sh`, and every flag, port and `BATON_` variable they
//! give a Baton binary checked against that binary's `--help`; and each
//! Kubernetes container started with its ConfigMap's configuration
//! (certificates made here, listeners on 0.0.0.0) must get past TLS and the
//! secure-by-default check (tests/python/baton_deploy_check.py).

mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use baton_tls::testing::TestCa;
use support::{binaries, python, workspace};

/// ca.crt, tls.crt and tls.key in `dir`, as the Secret baton-tls holds them.
fn secret_files(dir: &Path) {
    let ca = TestCa::new("Baton deploy-check CA");
    ca.write(&dir.join("ca.crt"));
    let server = ca.server(dir, "baton");
    std::fs::rename(&server.cert, dir.join("tls.crt")).unwrap();
    std::fs::rename(&server.key, dir.join("tls.key")).unwrap();
}

/// Runs the checker on `deploy` and returns whether it passed, with the
/// JSON lines it printed.
fn check(deploy: &Path) -> (bool, Vec<serde_json::Value>) {
    let kubectl = workspace().join(".tools/bin/kubectl");
    assert!(
        kubectl.exists(),
        "{} is missing: run scripts/setup.sh",
        kubectl.display()
    );
    let secret = tempfile::tempdir().expect("temp dir");
    secret_files(secret.path());
    let output = Command::new(python())
        .arg(workspace().join("tests/python/baton_deploy_check.py"))
        .arg("--deploy")
        .arg(deploy)
        .arg("--binaries")
        .arg(binaries())
        .arg("--kubectl")
        .arg(&kubectl)
        .arg("--tls-dir")
        .arg(secret.path())
        .stdin(Stdio::null())
        .output()
        .expect("python runs");
    let lines = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|error| {
                panic!(
                    "not a JSON line ({error}): {line}\n{}",
                    String::from_utf8_lossy(&output.stderr)
                )
            })
        })
        .collect();
    (output.status.success(), lines)
}

fn problems(lines: &[serde_json::Value]) -> Vec<String> {
    lines
        .iter()
        .flat_map(|line| line["problems"].as_array().cloned().unwrap_or_default())
        .map(|problem| problem.as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn the_deployment_files_validate_and_name_only_what_the_binaries_have() {
    let (passed, lines) = check(&workspace().join("deploy"));
    assert!(passed, "{:#?}", problems(&lines));
    let checks: Vec<&str> = lines.iter().filter_map(|l| l["check"].as_str()).collect();
    assert_eq!(
        checks,
        ["dockerfile", "prometheus", "compose", "kubernetes"],
        "{lines:#?}"
    );
    let kubernetes = lines.iter().find(|l| l["check"] == "kubernetes").unwrap();
    assert_eq!(
        kubernetes["rendered"],
        serde_json::json!(["deploy/k8s/base", "deploy/k8s/overlays/example"])
    );
    assert_eq!(
        kubernetes["started"], 3,
        "ingest, projector and query started with their configuration: {kubernetes}"
    );
}

/// The checker is not a rubber stamp: a copy of `deploy/` with a flag no
/// binary has, a port nothing listens on, a topic setting that differs
/// from `deploy/topics.sh` and a query configuration without client
/// certificates fails, naming each.
#[test]
fn a_flag_the_binary_lacks_a_stray_port_and_a_drifted_topic_are_each_named() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let copy = scratch.path().join("deploy");
    let status = Command::new("cp")
        .arg("-r")
        .arg(workspace().join("deploy"))
        .arg(&copy)
        .status()
        .expect("cp runs");
    assert!(status.success());
    let edit = |file: &str, from: &str, to: &str| {
        let path = copy.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} has no {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    };
    edit(
        "compose.yaml",
        "--mllp-listen=0.0.0.0:2575",
        "--hl7-listen=0.0.0.0:2575",
    );
    edit(
        "k8s/base/query.yaml",
        "containerPort: 9463",
        "containerPort: 9999",
    );
    edit(
        "k8s/base/topics.yaml",
        "min.compaction.lag.ms: \"60000\"",
        "min.compaction.lag.ms: \"1\"",
    );

    let (passed, lines) = check(&copy);
    assert!(!passed, "{lines:#?}");
    let found = problems(&lines);
    let named = |needle: &str| found.iter().any(|problem| problem.contains(needle));
    assert!(named("baton-ingest has no flag --hl7-listen"), "{found:#?}");
    assert!(named("port 9999 is declared"), "{found:#?}");
    assert!(
        named("KafkaTopic baton.care-state.v1 has config"),
        "{found:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line["check"] == "dockerfile" && line["ok"] == true),
        "untouched files still pass: {lines:#?}"
    );
}
