//! The HL7 v2 tools of the README, with the real `baton` binary: `baton hl7
//! map` shows what the example feed means without anything running; `baton
//! up` listens for MLLP; `baton hl7 send` delivers the feed and prints each
//! ACK with its consistency token, and with `--then-get` the patient's care
//! state read with it: the story, the cancelled ward move reverted, the
//! discharge whole; a strict HL7 parser (python-hl7) still reads an ACK
//! carrying Baton's ZBT segment; a merged record says where it went; a
//! message with a bad NHS number is refused naming PID-3.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::{
    Service, baton, eventually, free_address, python_hl7_reads, try_baton as run, workspace,
};

/// Sends one message over MLLP by hand, as any sender would, and returns
/// the ACK exactly as received (without its framing).
fn send_raw(mllp: SocketAddr, message: &str) -> String {
    let mut stream = TcpStream::connect(mllp).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(&baton_hl7::mllp::frame(message.as_bytes()))
        .unwrap();
    let mut received = Vec::new();
    let mut buffer = [0_u8; 4096];
    while !received.contains(&baton_hl7::mllp::END_BLOCK) {
        let count = stream.read(&mut buffer).unwrap();
        assert!(count > 0, "closed before the ACK");
        received.extend_from_slice(&buffer[..count]);
    }
    let end = received
        .iter()
        .position(|&b| b == baton_hl7::mllp::END_BLOCK)
        .unwrap();
    String::from_utf8(received[1..end].to_vec()).unwrap()
}

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
    let mllp_address = mllp;
    let mllp = mllp.to_string();
    // --query takes HOST:PORT, as --to does.
    let query = query.to_string();
    let sent = baton(&[
        "hl7",
        "send",
        "--to",
        &mllp,
        story,
        "--then-get",
        "--query",
        &query,
    ]);
    let accepted = sent
        .lines()
        .filter(|line| line.contains(": AA PAS-") && line.contains("(consistency token v1:"))
        .count();
    assert_eq!(accepted, 7, "{sent}");
    assert!(sent.contains("\nconsistency token: v1:"), "{sent}");
    // Read with the token: the whole story, without waiting or retrying.
    assert!(
        sent.contains("Patient             4010232137 AMARA ADEBAYO, born 1938-04-12"),
        "{sent}"
    );
    assert!(
        sent.contains(
            "Last discharge      2026-11-05 11:00 from V2001 at WARD-7 to home, clinical advice"
        ),
        "{sent}"
    );
    assert!(!sent.contains("unspecified"), "{sent}");

    // A sender that knows nothing of Baton reads the ACK with a strict
    // parser: the ZBT segment is just one more segment.
    let update = "MSH|^~\\&|PAS|RXX|BATON|RXX|202611060900||ADT^A08^ADT_A01|PAS-2001|P|2.5\r\
                  EVN|A08|202611060900\r\
                  PID|1||H200456^^^RXX^MR~4010232137^^^NHS^NH||ADEBAYO^AMARA^J||19380412|F|||9 Mill Lane^^Leeds^^LS7 3AB\r";
    let ack = send_raw(mllp_address, update);
    let read = python_hl7_reads(&ack);
    assert_eq!(
        read["segments"],
        serde_json::json!(["MSH", "MSA", "ZBT"]),
        "{ack:?}"
    );
    assert_eq!(read["ack_code"], "AA");
    assert_eq!(read["control_id"], "PAS-2001");
    let token = read["consistency_token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("v1:"), "{token}");
    let (ok, out, err) = run(&[
        "state",
        "get",
        PATIENT,
        "--json",
        "--consistency-token",
        &token,
        "--query",
        &query,
    ]);
    assert!(ok, "{err}");
    let updated: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        updated["demographics"]["postcode"], "LS7 3AB",
        "read with the token"
    );

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

    // Two records of one person merged: the retired one says where to look.
    let merged = data.path().join("merge.hl7");
    std::fs::write(
        &merged,
        "MSH|^~\\&|PAS|RXX|BATON|RXX|202611060800||ADT^A01^ADT_A01|PAS-3001|P|2.5\r\
         EVN|A01|202611060800\r\
         PID|1||9434765927^^^NHS^NH||DUPLICATE^AMY\r\
         PV1|1|I|WARD-3^^^RXX01||||||||||||||||V3001\r\
         MSH|^~\\&|PAS|RXX|BATON|RXX|202611061000||ADT^A40^ADT_A39|PAS-3002|P|2.5\r\
         EVN|A40|202611061000\r\
         PID|1||9434765935^^^NHS^NH||KEPT^AMY\r\
         MRG|9434765927^^^NHS^NH\r",
    )
    .unwrap();
    baton(&["hl7", "send", "--to", &mllp, merged.to_str().unwrap()]);
    let retired = eventually("the merge applied", Duration::from_secs(30), || {
        let (ok, out, _) = run(&["state", "get", "9434765927", "--query", &query]);
        (ok && out.contains("merged into")).then_some(out)
    });
    assert!(
        retired.contains("Setting             merged into 9434765935 at 2026-11-06 10:00 — read that record instead"),
        "{retired}"
    );
    assert!(
        !retired.contains("WARD-3"),
        "not its last setting: {retired}"
    );

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
