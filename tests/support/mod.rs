//! What the end-to-end scenarios share: the real service binaries, started
//! as separate processes against a real Kafka-protocol broker, and the
//! independent Python clients (Kafka, gRPC, server reflection, HL7).

#![allow(dead_code, unreachable_pub)]

pub mod stream;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_owned()
}

/// Builds the `baton` command and the three service binaries once (as a
/// user would) and returns the folder holding them.
pub fn binaries() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "baton-cli",
                "-p",
                "baton-ingest",
                "-p",
                "baton-projector",
                "-p",
                "baton-query",
            ])
            .current_dir(workspace())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the Baton binaries failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| workspace().join("target"), PathBuf::from);
        target.join("debug")
    })
}

/// A loopback address no one listens on, for a service a test starts.
pub fn free_address() -> SocketAddr {
    baton_log::testkit::free_loopback_address()
}

/// One Baton service process.
#[derive(Debug)]
pub struct Service {
    name: &'static str,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// Where it listens, if it serves gRPC.
    pub address: Option<SocketAddr>,
}

impl Service {
    /// Starts `binary` (e.g. `baton-projector`) with `args`; when `address`
    /// is given, waits until it accepts connections there.
    pub fn start(name: &'static str, args: Vec<String>, address: Option<SocketAddr>) -> Self {
        Self::start_with_env(name, args, address, Vec::new())
    }

    /// As [`Service::start`], with extra environment variables.
    pub fn start_with_env(
        name: &'static str,
        args: Vec<String>,
        address: Option<SocketAddr>,
        env: Vec<(String, String)>,
    ) -> Self {
        let mut service = Self {
            name,
            args,
            env,
            child: None,
            address,
        };
        service.spawn();
        service
    }

    fn spawn(&mut self) {
        let child = Command::new(binaries().join(self.name))
            .args(&self.args)
            .env(
                "BATON_LOG",
                std::env::var("BATON_E2E_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env_remove("BATON_CONFIG")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            // Any free port for HL7 over MLLP, so services started side by
            // side do not fight over 2575; a flag or `env` overrides it.
            .env("BATON_INGEST__MLLP_LISTEN", "127.0.0.1:0")
            .env("BATON_UP__MLLP_LISTEN", "127.0.0.1:0")
            // Likewise for the admin APIs.
            .env("BATON_UP__ADMIN_LISTEN", "127.0.0.1:0")
            .env("BATON_PROJECTOR__ADMIN_LISTEN", "127.0.0.1:0")
            .env("BATON_QUERY__ADMIN_LISTEN", "127.0.0.1:0")
            // Likewise for the metrics listeners (9460 to 9463 by default).
            .env("BATON_INGEST__METRICS_LISTEN", "127.0.0.1:0")
            .env("BATON_PROJECTOR__METRICS_LISTEN", "127.0.0.1:0")
            .env("BATON_QUERY__METRICS_LISTEN", "127.0.0.1:0")
            .env("BATON_UP__METRICS_LISTEN", "127.0.0.1:0")
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", self.name));
        self.child = Some(child);
        if let Some(address) = self.address {
            wait_for_port(
                self.name,
                address,
                self.child.as_mut().expect("just spawned"),
            );
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Kills it at once, as a crash or `kill -9` would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Asks it to stop (SIGTERM) and waits until it has, checking it
    /// exited cleanly.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "cannot signal {}", self.name);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                assert!(status.success(), "{} stopped with {status}", self.name);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop on SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts it again with the same arguments.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill {} first", self.name);
        self.spawn();
    }

    /// Fails if it has exited.
    pub fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait().expect("wait")
        {
            panic!("{} exited unexpectedly with {status}", self.name);
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait_for_port(name: &str, address: SocketAddr, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("{name} exited with {status} before listening on {address}");
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not listen on {address}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the `baton` command, returning its standard output; fails the
/// test with its standard error if it fails.
pub fn baton(args: &[&str]) -> String {
    let (ok, stdout, stderr) = try_baton(args);
    assert!(ok, "baton {args:?} failed: {stderr}\n{stdout}");
    stdout
}

/// Runs the `baton` command: whether it succeeded, its standard output
/// and its standard error.
pub fn try_baton(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(binaries().join("baton"))
        .args(args)
        .env("BATON_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("baton runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs the `baton` command over TLS as the client holding `identity`
/// (trusting `ca`): `--ca`, `--cert` and `--key` after `args`.
pub fn try_baton_as(
    identity: &baton_tls::testing::Issued,
    ca: &Path,
    args: &[&str],
) -> (bool, String, String) {
    let (cert, key) = (
        identity.cert.to_string_lossy(),
        identity.key.to_string_lossy(),
    );
    let ca = ca.to_string_lossy();
    let mut all = args.to_vec();
    all.extend(["--ca", &ca, "--cert", &cert, "--key", &key]);
    try_baton(&all)
}

/// The token `baton publish` printed.
pub fn token_in(publish_output: &str) -> String {
    publish_output
        .lines()
        .find_map(|line| line.strip_prefix("consistency token: "))
        .unwrap_or_else(|| panic!("no consistency token in {publish_output:?}"))
        .trim()
        .to_owned()
}

/// The virtualenv `scripts/setup.sh` makes, with the independent client.
pub fn python() -> PathBuf {
    let python = workspace().join(".tools/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup.sh (it installs the Python Kafka client the end-to-end tests use)",
        python.display()
    );
    python
}

/// Runs `tests/python/baton_kafka_client.py` with `args` and returns the
/// JSON lines it printed.
pub fn kafka_client(args: &[&str]) -> Vec<serde_json::Value> {
    python_client("baton_kafka_client.py", args)
}

/// Runs `tests/python/baton_grpc_client.py` with `args` and returns the
/// JSON lines it printed.
pub fn grpc_client(args: &[&str]) -> Vec<serde_json::Value> {
    python_client("baton_grpc_client.py", args)
}

/// Runs `tests/python/baton_reflection_client.py` (grpc.reflection.v1alpha)
/// with `args` and returns the JSON lines it printed.
pub fn reflection_client(args: &[&str]) -> Vec<serde_json::Value> {
    python_client("baton_reflection_client.py", args)
}

/// What python-hl7 reads in `ack` (tests/python/baton_hl7_ack.py): its
/// segments, MSA-1, MSA-2 and ZBT-1.
pub fn python_hl7_reads(ack: &str) -> serde_json::Value {
    use std::io::Write;
    let mut child = Command::new(python())
        .arg(workspace().join("tests/python/baton_hl7_ack.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(ack.as_bytes())
        .expect("the ACK is written");
    let output = child.wait_with_output().expect("python finishes");
    assert!(
        output.status.success(),
        "python-hl7 cannot read {ack:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON object")
}

/// Runs `tests/python/baton_grpc_client.py` with `args`, expecting nothing:
/// whether it succeeded, and its standard output and error.
pub fn try_grpc_client(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(python())
        .arg(workspace().join("tests/python/baton_grpc_client.py"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("python runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn python_client(script: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let output = Command::new(python())
        .arg(workspace().join("tests/python").join(script))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "{script} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    BufReader::new(output.stdout.as_slice())
        .lines()
        .map(|line| serde_json::from_str(&line.expect("a line")).expect("a JSON line"))
        .collect()
}

/// Retries `attempt` until it returns `Some` or `within` passes.
pub fn eventually<T>(what: &str, within: Duration, mut attempt: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = attempt() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The RPCs an independent gRPC client's `exercise` reported calling, each
/// once however often it called it.
pub fn rpcs_called(lines: &[serde_json::Value]) -> Vec<String> {
    let mut rpcs: Vec<String> = lines
        .iter()
        .filter_map(|line| line["rpc"].as_str().map(str::to_owned))
        .collect();
    rpcs.sort();
    rpcs.dedup();
    rpcs
}

/// Every RPC of `baton.query.v1.CareStateQuery`, and ingest's Publish.
pub const EVERY_RPC: [&str; 6] = [
    "GetCareState",
    "GetCareStateAsOf",
    "GetTimeline",
    "ListCohort",
    "Publish",
    "WatchCohort",
];
