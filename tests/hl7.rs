//! The HL7 v2 tools of the README, with the real `baton` binary: `baton hl7
//! map` shows what the example feed means without anything running; `baton
//! up` listens for MLLP; `baton hl7 send` delivers the feed and prints each
//! ACK; the patient's care state shows the story, the cancelled ward move
//! reverted; a message with a bad NHS number is refused naming PID-3.

mod support;

use std::time::Duration;

use support::{Service, baton, eventually, free_address, try_baton as run, workspace};

const PATIENT: &str = "4010232137";

#[test]
fn an_hl7_feed_pointed_at_baton_up_becomes_care_states() {
    let story = workspace().join("docs/examples/hl7/story.hl7");
    let story = story.to_str().unwrap();

    let mapped = baton(&["hl7", "map", story]);
    assert!(
        mapped.contains("story.hl7#2: ADT^A01 PAS-1002: 1 event"),
        "{mapped}"
    );
    assert!(mapped.contains("\"admitted\":"), "{mapped}");
    assert!(
        mapped.contains("\"occurredAt\":\"2026-11-02T08:40:00Z\""),
        "{mapped}"
    );

    let data = tempfile::tempdir().unwrap();
    let (ingest, query, mllp) = (free_address(), free_address(), free_address());
    let _up = Service::start(
        "baton",
        [
            "up",
            "--ingest-listen",
            &ingest.to_string(),
            "--query-listen",
            &query.to_string(),
            "--mllp-listen",
            &mllp.to_string(),
            "--data-dir",
            data.path().to_str().unwrap(),
        ]
        .map(str::to_owned)
        .to_vec(),
        Some(mllp),
    );
    let mllp = mllp.to_string();
    let sent = baton(&["hl7", "send", "--to", &mllp, story]);
    let accepted = sent
        .lines()
        .filter(|line| line.contains(": AA PAS-"))
        .count();
    assert_eq!(accepted, 7, "{sent}");

    let query = format!("http://{query}");
    let state: serde_json::Value = eventually(
        "the discharge in the state",
        Duration::from_secs(30),
        || {
            let (ok, out, _) = run(&["state", "get", PATIENT, "--json", "--query", &query]);
            let state: serde_json::Value = serde_json::from_str(&out).ok()?;
            (ok && state["pastEncounters"].is_array()).then_some(state)
        },
    );
    assert_eq!(state["demographics"]["familyName"], "ADEBAYO");
    let stays: Vec<&str> = state["pastEncounters"][0]["locationHistory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|stay| stay["location"]["pointOfCare"].as_str().unwrap())
        .collect();
    assert_eq!(
        stays,
        ["AMU", "WARD-7"],
        "the cancelled move to WARD-9 is reverted"
    );
    assert_eq!(
        state["lastDischarge"]["destination"],
        "DISCHARGE_DESTINATION_HOME"
    );
    assert_eq!(state["referrals"][0]["referralId"], "REF-88231");

    // Sending again is harmless: the same event ids.
    let again = baton(&["hl7", "send", "--to", &mllp, story]);
    assert_eq!(again.lines().filter(|l| l.contains(": AA PAS-")).count(), 7);

    let bad = data.path().join("bad.hl7");
    let text = std::fs::read_to_string(workspace().join("docs/examples/hl7/story.hl7")).unwrap();
    let first = baton_hl7::split_messages(text.as_bytes()).remove(1);
    std::fs::write(
        &bad,
        String::from_utf8(first)
            .unwrap()
            .replace(PATIENT, "4010232138"),
    )
    .unwrap();
    let (ok, out, err) = run(&["hl7", "send", "--to", &mllp, bad.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(out.contains("bad.hl7: AE PAS-1002"), "{out}");
    assert!(
        out.contains("PID-3(2): ") && out.contains("modulus-11"),
        "{out}"
    );
    assert!(err.contains("1 of 1 messages not accepted"), "{err}");
    let (ok, out, _) = run(&["hl7", "map", bad.to_str().unwrap()]);
    assert!(!ok && out.contains("refused (AE): PID-3(2)"), "{out}");
}
