//! A real Kafka-protocol broker for tests: [`TestBroker`] starts a private
//! Tansu process on a free loopback port and stops it when dropped.
//!
//! `scripts/setup.sh` installs Tansu into `.tools/bin/tansu`; `BATON_TANSU`
//! names another binary. When no broker can be started the test fails with
//! what to do: Kafka tests never skip silently. A developer without the
//! broker may set `BATON_SKIP_KAFKA_TESTS=1` to skip them loudly; CI
//! (`CI=true`) ignores that.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a broker may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A broker process of this test's own, on `127.0.0.1`, with in-memory
/// storage: nothing outlives the test.
#[derive(Debug)]
pub struct TestBroker {
    child: Child,
    address: SocketAddr,
}

impl TestBroker {
    /// Starts a broker, or panics saying how to install one.
    ///
    /// Returns `None` only when the developer asked to skip Kafka tests
    /// (`BATON_SKIP_KAFKA_TESTS=1`, outside CI); callers return early then.
    pub fn start() -> Option<Self> {
        if skip_requested() {
            tracing::warn!("BATON_SKIP_KAFKA_TESTS is set: skipping a Kafka test");
            #[allow(clippy::print_stderr)]
            {
                eprintln!("SKIPPED: a Kafka test (BATON_SKIP_KAFKA_TESTS=1)");
            }
            return None;
        }
        match Self::try_start() {
            Ok(broker) => Some(broker),
            Err(reason) => panic!(
                "cannot start a Kafka-protocol broker for the Kafka tests: {reason}\n\
                 run scripts/setup.sh to install Tansu into .tools/bin/tansu, or set BATON_TANSU \
                 to a tansu binary (BATON_SKIP_KAFKA_TESTS=1 skips these tests outside CI)"
            ),
        }
    }

    /// Starts a broker, or says why it could not.
    pub fn try_start() -> Result<Self, String> {
        let binary = tansu_binary()?;
        let port = super::free_loopback_address().port();
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let url = format!("tcp://{address}");
        let mut child = Command::new(&binary)
            .arg("broker")
            .env("LISTENER_URL", &url)
            .env("ADVERTISED_LISTENER_URL", &url)
            .env("STORAGE_ENGINE", "memory://tansu/")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| format!("cannot run {}: {error}", binary.display()))?;
        let started = Instant::now();
        loop {
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                tracing::debug!(%address, binary = %binary.display(), "test broker up");
                return Ok(Self { child, address });
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                return Err(format!(
                    "{} exited with {status} before listening on {address}: {}",
                    binary.display(),
                    stderr.trim()
                ));
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} did not listen on {address} within {START_TIMEOUT:?}",
                    binary.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `host:port`, for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        self.address.to_string()
    }

    /// Stops the broker at once, as a crash would: for tests of what
    /// clients do when the cluster goes away.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn skip_requested() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|value| !value.is_empty() && value != "0");
    set("BATON_SKIP_KAFKA_TESTS") && !std::env::var("CI").is_ok_and(|value| value == "true")
}

/// `BATON_TANSU`, else the copy `scripts/setup.sh` installs, else `tansu`
/// on the `PATH`.
fn tansu_binary() -> Result<PathBuf, String> {
    if let Some(binary) = std::env::var_os("BATON_TANSU") {
        return Ok(PathBuf::from(binary));
    }
    let installed = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../.tools/bin/tansu"
    ));
    if installed.exists() {
        return Ok(installed);
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("tansu"))
            .find(|candidate| candidate.is_file())
    });
    on_path.ok_or_else(|| {
        format!(
            "no tansu binary: not in BATON_TANSU, not at {}, not on the PATH",
            installed.display()
        )
    })
}
