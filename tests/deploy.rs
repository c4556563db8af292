//! The deployment files under `deploy/` (Dockerfile, compose, Kubernetes),
//! checked offline since no container engine or cluster runs here: schemas
//! (hadolint, the compose specification, Kubernetes' own through
//! kubernetes-validate after `kubectl kustomize`), the Strimzi topics equal
//! to `deploy/topics.sh`, and every flag, port and `BATON_` variable they
//! give a Baton binary checked against that binary's `--help`
//! (tests/python/baton_deploy_check.py).

mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use support::{binaries, python, workspace};

/// Runs the checker on `deploy` and returns whether it passed, with the
/// JSON lines it printed.
fn check(deploy: &Path) -> (bool, Vec<serde_json::Value>) {
    let kubectl = workspace().join(".tools/bin/kubectl");
    assert!(
        kubectl.exists(),
        "{} is missing: run scripts/setup.sh",
        kubectl.display()
    );
    let output = Command::new(python())
        .arg(workspace().join("tests/python/baton_deploy_check.py"))
        .arg("--deploy")
        .arg(deploy)
        .arg("--binaries")
        .arg(binaries())
        .arg("--kubectl")
        .arg(&kubectl)
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
}

/// The checker is not a rubber stamp: a copy of `deploy/` with a flag no
/// binary has, a port nothing listens on and a topic setting that differs
/// from `deploy/topics.sh` fails, naming each.
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
