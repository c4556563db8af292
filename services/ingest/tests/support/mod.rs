//! What the MLLP scenario tests share: the real listener on loopback over
//! an embedded log (whose appends can be made to fail), a sender that
//! speaks MLLP as an interface engine does, and the real projector folding
//! the log into a sled store.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use baton_hl7::AckCode;
use baton_hl7::ReadAck;
use baton_hl7::mllp::{END_BLOCK, frame};
use baton_ingest::mllp::{Clock, MllpStats};
use baton_ingest::{Ingest, IngestConfig, Mllp};
use baton_log::embedded::EmbeddedLog;
use baton_log::testkit::{BeforeAppend, InterceptedLog};
use baton_log::{EventLog, LogError, topics};
use baton_projector::{Projector, ProjectorConfig};
use baton_store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

pub const PARTITIONS: u32 = 4;

pub fn topics() -> topics::Topics {
    topics::Topics {
        partitions: PARTITIONS,
        ..topics::Topics::default()
    }
}

#[derive(Debug)]
pub struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_784_000_000)
    }
}

/// Appends fail while `down` is set, as they would with the broker down.
#[derive(Debug, Default)]
pub struct Outage {
    pub down: AtomicBool,
}

#[async_trait]
impl BeforeAppend for Outage {
    async fn before_append(&self, _topic: &str) -> baton_log::Result<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(LogError::Closed);
        }
        Ok(())
    }
}

/// The embedded log, with appends that fail during an [`Outage`].
pub type FlakyLog = InterceptedLog<EmbeddedLog, Outage>;

pub struct Feed {
    pub log: Arc<FlakyLog>,
    pub address: std::net::SocketAddr,
    pub stats: Arc<MllpStats>,
    pub stop: CancellationToken,
    pub server: tokio::task::JoinHandle<()>,
}

impl Feed {
    pub async fn start(config: IngestConfig) -> Self {
        Self::start_with_tls(config, None).await
    }

    /// A listener speaking TLS with `tls`.
    pub async fn start_with_tls(config: IngestConfig, tls: Option<baton_tls::Tls>) -> Self {
        let log = Arc::new(FlakyLog {
            inner: EmbeddedLog::temporary().unwrap(),
            before: Outage::default(),
        });
        let ingest = Ingest::start(log.clone(), config.clone(), &topics())
            .await
            .unwrap();
        let mllp = Mllp::new(ingest, &config, Arc::new(FixedClock)).unwrap();
        let stats = mllp.stats();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(baton_ingest::mllp::serve(
            mllp,
            baton_tls::TlsListener::new(listener, tls),
            stop.clone().cancelled_owned(),
        ));
        Self {
            log,
            address,
            stats,
            stop,
            server,
        }
    }

    pub async fn connect(&self) -> Sender {
        Sender {
            stream: TcpStream::connect(self.address).await.unwrap(),
            pending: Vec::new(),
        }
    }

    /// Connects from the loopback address `ip` (e.g. `127.0.0.2`: on
    /// Linux every 127/8 address is the machine's own), another peer.
    pub async fn connect_from(&self, ip: [u8; 4]) -> Sender {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(std::net::SocketAddr::from((ip, 0)))
            .expect("a loopback address to connect from");
        Sender {
            stream: socket.connect(self.address).await.unwrap(),
            pending: Vec::new(),
        }
    }

    /// Folds everything in the log into a fresh store.
    pub async fn project(&self) -> Store {
        let store = Store::temporary().unwrap();
        let mut projector = Projector::start(
            self.log.clone(),
            store.clone(),
            ProjectorConfig::default(),
            topics(),
        )
        .await
        .unwrap();
        projector.catch_up().await.unwrap();
        store
    }

    pub async fn records(&self) -> u64 {
        self.log
            .end_offsets(topics::CARE_EVENTS)
            .await
            .unwrap()
            .iter()
            .sum()
    }

    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("the listener stops")
            .unwrap();
    }
}

/// An MLLP sender, as a PAS interface engine is one.
pub struct Sender {
    pub stream: TcpStream,
    pub pending: Vec<u8>,
}

impl Sender {
    pub async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    pub async fn read_ack(&mut self) -> (ReadAck, String) {
        self.try_read_ack()
            .await
            .expect("the listener closed the connection")
    }

    /// The next acknowledgement; `None` when the listener closed the
    /// connection instead.
    pub async fn try_read_ack(&mut self) -> Option<(ReadAck, String)> {
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == END_BLOCK) {
                let framed: Vec<u8> = self.pending.drain(..end + 2).collect();
                let text = String::from_utf8(framed[1..end].to_vec()).unwrap();
                return Some((ReadAck::parse(text.as_bytes()).unwrap(), text));
            }
            let mut buffer = [0_u8; 4096];
            let count =
                tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut buffer))
                    .await
                    .expect("an acknowledgement or a close within 10 s")
                    .ok()?;
            if count == 0 {
                return None;
            }
            self.pending.extend_from_slice(&buffer[..count]);
        }
    }

    /// Waits (up to 10 s) for the listener to close the connection; false
    /// when it is still open then or sent bytes instead.
    pub async fn closed_by_listener(&mut self) -> bool {
        let mut buffer = [0_u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut buffer)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    /// Sends `message` and reads its acknowledgement; `None` when the
    /// listener closed the connection instead.
    pub async fn try_send(&mut self, message: &str) -> Option<(ReadAck, String)> {
        self.stream
            .write_all(&frame(message.as_bytes()))
            .await
            .ok()?;
        self.try_read_ack().await
    }

    pub async fn send(&mut self, message: &str) -> (ReadAck, String) {
        self.write(&frame(message.as_bytes())).await;
        self.read_ack().await
    }

    /// Sends and expects `AA`.
    pub async fn accept(&mut self, message: &str) {
        let (ack, text) = self.send(message).await;
        assert_eq!(ack.code, AckCode::Accept, "{message}\n=> {text}");
    }

    /// Sends each in turn, expecting `AA` for every one.
    pub async fn accept_all(&mut self, messages: &[String]) {
        for message in messages {
            self.accept(message).await;
        }
    }
}

/// The value of the sample `series` (name and labels, as exposed).
pub fn sample(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|value| value.parse().ok())
        })
        .unwrap_or_else(|| panic!("no {series} in\n{exposition}"))
}
