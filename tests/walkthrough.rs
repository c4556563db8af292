//! The README walk-through, end to end, with the real `baton` binary on the
//! embedded log: start it, publish the example events, read the state and a
//! cohort, ask who read the patient's record, stop it with Ctrl-C (SIGINT),
//! start it again and read the same state, and the audit of both reads.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Builds the `baton` binary once (as a user would) and returns its path.
fn baton() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "baton-cli", "--bin", "baton"])
            .current_dir(workspace())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building baton failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| workspace().join("target"), PathBuf::from);
        target.join("debug").join("baton")
    })
}

struct Up {
    child: Child,
    ingest: String,
    query: String,
    admin: String,
}

impl Up {
    fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[], None).0
    }

    /// `baton up` with `extra` arguments; with `until`, also waits for a
    /// line of its output containing it, and returns the lines before.
    fn start_with(data_dir: &Path, extra: &[&str], until: Option<&str>) -> (Self, String) {
        let mut child = Command::new(baton())
            .args([
                "up",
                "--ingest-listen",
                "127.0.0.1:0",
                "--query-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra)
            .env("BATON_LOG", "warn")
            .env("BATON_UP__MLLP_LISTEN", "127.0.0.1:0")
            .env("BATON_UP__ADMIN_LISTEN", "127.0.0.1:0")
            .env("BATON_UP__METRICS_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("baton up starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut ingest, mut query, mut admin) = (None, None, None);
        let deadline = Instant::now() + Duration::from_secs(60);
        while ingest.is_none() || query.is_none() || admin.is_none() {
            assert!(
                Instant::now() < deadline,
                "baton up did not print its addresses"
            );
            let line = lines.next().expect("baton up kept running").unwrap();
            let address = line.split_whitespace().nth(1).map(str::to_owned);
            match line.split_whitespace().next() {
                Some("ingest") => ingest = address,
                Some("query") => query = address,
                Some("admin") => admin = address,
                _ => {}
            }
        }
        let mut printed = String::new();
        if let Some(until) = until {
            let deadline = Instant::now() + Duration::from_secs(180);
            loop {
                assert!(
                    Instant::now() < deadline,
                    "baton up never printed {until:?}: {printed}"
                );
                let line = lines.next().expect("baton up kept running").unwrap();
                if line.contains(until) {
                    printed.push_str(&line);
                    break;
                }
                printed.push_str(&line);
                printed.push('\n');
            }
        }
        // Keep draining stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let up = Self {
            child,
            ingest: ingest.unwrap(),
            query: query.unwrap(),
            admin: admin.unwrap(),
        };
        (up, printed)
    }

    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let output = Command::new(baton())
            .args(args)
            .env("BATON_INGEST", &self.ingest)
            .env("BATON_QUERY", &self.query)
            .env("BATON_ADMIN", &self.admin)
            .output()
            .expect("baton runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Ctrl-C, then the exit code.
    fn interrupt(mut self) -> Option<i32> {
        // Nothing reads stdout after this, so the last lines go nowhere.
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-INT", &pid]).status().unwrap();
        assert!(sent.success());
        self.child.wait().unwrap().code()
    }
}

impl Drop for Up {
    /// A failed assertion must not leave a server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_readme_walk_through_works_and_survives_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let up = Up::start(data.path());
    let example = workspace().join("docs/examples/events.jsonl");

    let (ok, out, err) = up.run(&["publish", example.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("published 12 events about 1 patient"), "{out}");
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("consistency token: "))
        .expect("a token")
        .to_owned();

    let (ok, state, err) = up.run(&[
        "state",
        "get",
        "943 476 5919",
        "--consistency-token",
        &token,
    ]);
    assert!(ok, "{err}");
    assert!(state.contains("Grace OKAFOR"), "{state}");
    assert!(
        state.contains("virtual-ward since 2026-11-05 12:30"),
        "{state}"
    );

    let (ok, json, err) = up.run(&["state", "get", "RXX:H400123", "--json"]);
    assert!(ok, "{err}");
    assert!(
        json.contains("\"setting\": \"CARE_SETTING_VIRTUAL_WARD\""),
        "{json}"
    );

    let (ok, cohort, err) = up.run(&["cohort", "--setting", "virtual-ward"]);
    assert!(ok, "{err}");
    assert!(
        cohort.contains("9434765919") && cohort.contains("VW-FRAIL-RXX"),
        "{cohort}"
    );
    assert!(cohort.trim_end().ends_with("1 patient"), "{cohort}");

    // The questions of the teams downstream, as the README asks them.
    let (ok, on_ward, err) = up.run(&["cohort", "--virtual-ward", "VW-FRAIL-RXX"]);
    assert!(ok, "{err}");
    assert!(on_ward.contains("9434765919"), "{on_ward}");
    assert!(
        on_ward.contains("frailty since 2026-11-05 12:30"),
        "{on_ward}"
    );
    let (ok, referred, err) = up.run(&[
        "cohort",
        "--referred-to",
        "FRAILTY-CT",
        "--referral-status",
        "accepted",
    ]);
    assert!(ok, "{err}");
    assert!(referred.contains("REF-400001 accepted"), "{referred}");
    let (ok, frail, err) = up.run(&["cohort", "--setting", "hospital", "--min-frailty", "6"]);
    assert!(ok, "{err}");
    assert!(
        frail.trim_end().ends_with("0 patients"),
        "discharged: {frail}"
    );
    let (ok, _, err) = up.run(&["cohort", "--min-frailty", "12"]);
    assert!(!ok);
    assert!(err.contains("filter.min_frailty_score"), "{err}");

    // The past: the correction shows as one, and the state as it was.
    let (ok, timeline, err) = up.run(&["timeline", "9434765919"]);
    assert!(ok, "{err}");
    assert!(timeline.contains("12 events"), "{timeline}");
    let ward_7 = timeline
        .lines()
        .find(|line| line.contains("transferred to WARD-7"))
        .expect("the move to WARD-7");
    assert!(ward_7.contains("CANCELLED by"), "{timeline}");
    let elderly = timeline
        .lines()
        .find(|line| line.contains("transferred to ELDERLY-CARE"))
        .expect("the real move");
    assert!(elderly.contains("LATE"), "{timeline}");
    let (ok, then, err) = up.run(&[
        "state",
        "get",
        "9434765919",
        "--as-of",
        "2026-11-03T12:00:00Z",
    ]);
    assert!(ok, "{err}");
    assert!(then.contains("Location            ELDERLY-CARE"), "{then}");
    let (ok, known, err) = up.run(&[
        "state",
        "get",
        "9434765919",
        "--as-of",
        "2026-11-03T12:00:00Z",
        "--axis",
        "recorded",
    ]);
    assert!(ok, "{err}");
    assert!(known.contains("Location            WARD-7"), "{known}");

    // Bad input: refused with the line and field, nothing written.
    let bad = data.path().join("bad.jsonl");
    let text = std::fs::read_to_string(&example).unwrap();
    let first = text
        .lines()
        .next()
        .unwrap()
        .replace("9434765919", "9434765918");
    std::fs::write(&bad, format!("{first}\n")).unwrap();
    let (ok, _, err) = up.run(&["publish", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("line 1: patient.nhs_number"), "{err}");
    let (ok, _, err) = up.run(&["state", "get", "9434765918"]);
    assert!(!ok);
    assert!(err.contains("modulus-11"), "{err}");

    // Every read above is in the audit log, and survives the restart.
    let (ok, audit, err) = up.run(&["audit", "--patient", "9434765919"]);
    assert!(ok, "{err}");
    assert!(
        audit.contains("GetCareState") && audit.contains("read"),
        "{audit}"
    );

    assert_eq!(up.interrupt(), Some(0), "Ctrl-C exits 0");

    let again = Up::start(data.path());
    let (ok, restarted, err) = again.run(&["state", "get", "9434765919"]);
    assert!(ok, "{err}");
    assert_eq!(restarted, state, "the same state after a restart");
    let (ok, audited, err) = again.run(&["audit", "--patient", "9434765919", "--json"]);
    assert!(ok, "{err}");
    let reads = audited
        .lines()
        .filter(|line| line.contains("\"GetCareState\""))
        .count();
    assert!(
        reads >= 2,
        "the reads before and after the restart: {audited}"
    );
    assert_eq!(again.interrupt(), Some(0));
}

/// The demo is dated up to the moment it runs, so the walk-through's
/// questions about today (expected home today or tomorrow, discharged
/// yesterday) name patients, and the example patient of each setting it
/// prints can be read.
#[test]
fn the_demo_answers_the_questions_about_today() {
    let data = tempfile::tempdir().unwrap();
    let (up, printed) = Up::start_with(data.path(), &["--demo"], Some("Ctrl-C to stop"));
    assert!(printed.contains("up to now; all projected"), "{printed}");
    let example = printed
        .lines()
        .find(|line| line.trim_start().starts_with("hospital "))
        .and_then(|line| line.split("baton state get ").nth(1))
        .unwrap_or_else(|| panic!("an example patient in hospital: {printed}"))
        .trim()
        .to_owned();
    let (ok, state, err) = up.run(&["state", "get", &example]);
    assert!(ok, "{err}");
    assert!(state.contains("hospital"), "{state}");

    for question in [
        ["--expected-discharge", "today..tomorrow"],
        ["--discharged", "yesterday"],
    ] {
        let (ok, cohort, err) = up.run(&["cohort", question[0], question[1]]);
        assert!(ok, "{err}");
        let last = cohort.trim_end().lines().last().unwrap_or_default();
        let count: usize = last
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a count at the end: {cohort}"));
        assert!(count > 0, "{question:?}: {cohort}");
    }
    let (ok, optimised, err) = up.run(&[
        "cohort",
        "--setting",
        "hospital",
        "--min-days-optimised",
        "2",
    ]);
    assert!(ok, "{err}");
    let days: Vec<u32> = optimised
        .split("optimised ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(!days.is_empty(), "{optimised}");
    assert!(
        days.iter().all(|days| *days < 30),
        "optimised for weeks, not months: {optimised}"
    );
}
