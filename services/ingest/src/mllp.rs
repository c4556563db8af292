//! HL7 v2 over MLLP: the listener an ADT feed points at.
//!
//! Each connection reads MLLP frames ([`baton_hl7::mllp`]), maps each
//! message to care events ([`baton_hl7::map`]), publishes all of one
//! message's events in one atomic [`Ingest::publish`] and only then answers
//! `AA`: no message is acknowledged before its events are durable in the
//! log. A message whose content is wrong, or that the log could not take,
//! is answered `AE` (the sender fixes it, or retries); one Baton does not
//! take (an unsupported type, bytes that are not HL7) `AR`. Every refusal
//! carries ERR segments naming the segment, field and problem. An `AA`
//! ends with a `ZBT` segment carrying the consistency token of the
//! message's events, for a sender that wants to read its writes.
//!
//! Messages of one connection are handled in order, one at a time, as MLLP
//! senders expect; connections run concurrently. A frame past
//! `mllp_max_message_bytes` is answered `AR` without being buffered; a
//! connection silent for `mllp_idle_timeout_ms` is closed, and one past
//! `mllp_max_connections` is closed as it arrives. On shutdown the
//! listener stops accepting, each connection finishes and acknowledges
//! the messages it has received, then closes.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use baton_hl7::mllp::{Frame, FrameDecoder};
use baton_hl7::{AckCode, ErrorCode, Header, MapConfig, Message, Problem, Zone, acknowledgement};
use baton_telemetry::TraceParent;
use baton_tls::{ClientConfig, ClientTlsStream, TlsListener};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{Ingest, IngestConfig, PublishError};

/// The port HL7 v2 over MLLP is served on unless configured otherwise
/// (the IANA port for HL7).
pub const DEFAULT_MLLP_PORT: u16 = 2575;

/// Where the MLLP listener listens: an address, or `off`
/// (`127.0.0.1:2575` unless configured).
pub type MllpListen = baton_telemetry::Listen;

/// The time an acknowledgement is stamped with (MSH-7); injected so tests
/// can fix it.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> SystemTime;
}

/// The machine's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Messages handled by one message type (`ADT^A01`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TypeCounts {
    /// Answered `AA`: the events are in the log.
    pub accepted: u64,
    /// Answered `AE`.
    pub errored: u64,
    /// Answered `AR`.
    pub rejected: u64,
}

/// What the listener has done since it started: the metrics an operator
/// watches (logged on shutdown, readable any time with [`MllpStats::snapshot`]).
#[derive(Debug, Default)]
pub struct MllpStats {
    connections: AtomicU64,
    connections_refused: AtomicU64,
    handshakes_failed: AtomicU64,
    unauthorised: AtomicU64,
    accepted: AtomicU64,
    errored: AtomicU64,
    rejected: AtomicU64,
    unsupported: AtomicU64,
    too_large: AtomicU64,
    by_type: Mutex<BTreeMap<String, TypeCounts>>,
}

/// A copy of [`MllpStats`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MllpSnapshot {
    pub connections: u64,
    /// Closed on arrival: `mllp_max_connections` were open.
    pub connections_refused: u64,
    /// Closed before their TLS handshake completed (failed or too slow).
    pub handshakes_failed: u64,
    /// Closed because the clients table does not give their client
    /// certificate the scope `hl7`.
    pub unauthorised: u64,
    pub accepted: u64,
    pub errored: u64,
    pub rejected: u64,
    /// Rejected because Baton does not take their type or event.
    pub unsupported: u64,
    /// Rejected because the frame was past the size limit.
    pub too_large: u64,
    /// By message type (`ADT^A01`; `unknown` for unreadable ones).
    pub by_type: BTreeMap<String, TypeCounts>,
}

impl MllpStats {
    pub fn snapshot(&self) -> MllpSnapshot {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        MllpSnapshot {
            connections: load(&self.connections),
            connections_refused: load(&self.connections_refused),
            handshakes_failed: load(&self.handshakes_failed),
            unauthorised: load(&self.unauthorised),
            accepted: load(&self.accepted),
            errored: load(&self.errored),
            rejected: load(&self.rejected),
            unsupported: load(&self.unsupported),
            too_large: load(&self.too_large),
            by_type: self
                .by_type
                .lock()
                .map(|by_type| by_type.clone())
                .unwrap_or_default(),
        }
    }

    fn record(&self, kind: &str, code: AckCode) {
        crate::metrics::record_message(kind, code);
        let counter = match code {
            AckCode::Accept => &self.accepted,
            AckCode::Error => &self.errored,
            AckCode::Reject => &self.rejected,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut by_type) = self.by_type.lock() {
            let counts = by_type.entry(kind.to_owned()).or_default();
            match code {
                AckCode::Accept => counts.accepted += 1,
                AckCode::Error => counts.errored += 1,
                AckCode::Reject => counts.rejected += 1,
            }
        }
    }
}

/// The MLLP face of an [`Ingest`]: reads HL7, publishes, acknowledges.
#[derive(Debug, Clone)]
pub struct Mllp {
    ingest: Ingest,
    map: Arc<MapConfig>,
    max_message_bytes: usize,
    idle_timeout: Duration,
    max_connections: usize,
    clock: Arc<dyn Clock>,
    stats: Arc<MllpStats>,
    /// For the acknowledgements' own control ids.
    acks: Arc<AtomicU64>,
    ack_prefix: Arc<str>,
}

impl Mllp {
    /// Reads the MLLP settings of `config` (checked by
    /// [`IngestConfig::validate`]).
    pub fn new(
        ingest: Ingest,
        config: &IngestConfig,
        clock: Arc<dyn Clock>,
    ) -> crate::Result<Self> {
        config.validate().map_err(crate::IngestError::Config)?;
        let zone = Zone::named(&config.hl7_time_zone)
            .map_err(|error| crate::IngestError::Config(format!("hl7_time_zone: {error}")))?;
        let started = clock
            .now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(Self {
            ingest,
            map: Arc::new(MapConfig { zone }),
            max_message_bytes: config.mllp_max_message_bytes,
            idle_timeout: Duration::from_millis(config.mllp_idle_timeout_ms),
            max_connections: config.mllp_max_connections,
            clock,
            stats: Arc::default(),
            acks: Arc::default(),
            ack_prefix: format!("B{:x}", started.as_secs()).into(),
        })
    }

    /// The listener's counters, shared with it.
    pub fn stats(&self) -> Arc<MllpStats> {
        self.stats.clone()
    }

    /// Handles one message (the bytes inside an MLLP frame) and returns
    /// its acknowledgement. `AA` only once its events are durable.
    pub async fn handle(&self, bytes: &[u8]) -> String {
        let message = match Message::parse(bytes) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "refused an unreadable message");
                let problem = Problem::error(None, ErrorCode::DataTypeError, error.to_string());
                return self.answer(None, "unknown", AckCode::Reject, &[problem], None);
            }
        };
        let header = Header::read(&message);
        let kind = header.kind();
        let span =
            tracing::info_span!("hl7_message", kind = %kind, control_id = %header.control_id);
        let (code, problems, token) = self.process(&message).instrument(span).await;
        self.answer(Some(&header), &kind, code, &problems, token.as_deref())
    }

    /// What to answer: the code, the problems, and for an accepted message
    /// the consistency token of its events.
    async fn process(&self, message: &Message) -> (AckCode, Vec<Problem>, Option<String>) {
        let mapped = match baton_hl7::map(message, &self.map) {
            Ok(mapped) => mapped,
            Err(refused) => {
                let unsupported = refused.problems.iter().any(|p| {
                    matches!(
                        p.code,
                        ErrorCode::UnsupportedMessageType | ErrorCode::UnsupportedEventCode
                    )
                });
                if unsupported {
                    self.stats.unsupported.fetch_add(1, Ordering::Relaxed);
                }
                tracing::info!(code = refused.code.as_str(), %refused, "refused");
                return (refused.code, refused.problems, None);
            }
        };
        if let Err(problems) = mapped.check() {
            let refused = problems.iter().map(ToString::to_string).collect::<Vec<_>>();
            tracing::info!(problems = ?refused, "refused: invalid events");
            return (AckCode::Error, problems, None);
        }
        let trace = if baton_telemetry::is_exporting() {
            baton_telemetry::current_traceparent()
        } else {
            Some(TraceParent::new_root())
        };
        let events: Vec<_> = mapped.events().cloned().collect();
        match self.ingest.publish(events, false, trace).await {
            Ok(published) => {
                tracing::debug!(events = mapped.len(), token = %published.token, "accepted");
                let token = published.token.to_string();
                (AckCode::Accept, mapped.warnings, Some(token))
            }
            Err(PublishError::Invalid { invalid, .. }) => {
                (AckCode::Error, mapped.problems_of(&invalid), None)
            }
            Err(error) => {
                tracing::warn!(%error, "not accepted: the sender should send it again");
                let problem = Problem::error(
                    None,
                    ErrorCode::ApplicationInternalError,
                    format!("{error}; nothing was written: send the message again"),
                );
                (AckCode::Error, vec![problem], None)
            }
        }
    }

    /// A frame past the size limit: answered from its MSH, if readable.
    fn too_large(&self, head: &[u8], limit: usize) -> String {
        self.stats.too_large.fetch_add(1, Ordering::Relaxed);
        crate::metrics::record_too_large();
        let header = Header::sniff(head);
        let kind = header
            .as_ref()
            .map_or_else(|| "unknown".to_owned(), Header::kind);
        tracing::warn!(%kind, limit, "refused a message past the size limit");
        let problem = Problem::error(
            None,
            ErrorCode::ApplicationInternalError,
            format!(
                "the message is larger than the {limit} bytes Baton accepts (mllp_max_message_bytes)"
            ),
        );
        self.answer(header.as_ref(), &kind, AckCode::Reject, &[problem], None)
    }

    fn answer(
        &self,
        header: Option<&Header>,
        kind: &str,
        code: AckCode,
        problems: &[Problem],
        consistency_token: Option<&str>,
    ) -> String {
        self.stats.record(kind, code);
        let number = self.acks.fetch_add(1, Ordering::Relaxed);
        let control_id = format!("{}-{number}", self.ack_prefix);
        let at = self.map.zone.format(self.clock.now());
        acknowledgement(header, code, problems, &control_id, &at, consistency_token)
    }

    async fn connection(
        self,
        mut stream: impl AsyncRead + AsyncWrite + Unpin,
        stop: CancellationToken,
    ) {
        let mut decoder = FrameDecoder::new(self.max_message_bytes);
        let mut buffer = vec![0_u8; 64 * 1024];
        loop {
            // Stopping only ever interrupts a wait for bytes: every message
            // already received is handled and acknowledged first.
            let read = tokio::select! {
                biased;
                () = stop.cancelled() => {
                    if decoder.in_frame() {
                        tracing::info!("closing at shutdown with a message half received: the sender will send it again");
                    }
                    break;
                }
                read = tokio::time::timeout(self.idle_timeout, stream.read(&mut buffer)) => read,
            };
            let count = match read {
                Err(_) => {
                    tracing::info!(
                        idle_ms = self.idle_timeout.as_millis() as u64,
                        "closing an idle connection"
                    );
                    break;
                }
                Ok(Ok(0)) => break,
                Ok(Ok(count)) => count,
                Ok(Err(error)) => {
                    tracing::info!(%error, "connection failed");
                    break;
                }
            };
            for frame in decoder.push(&buffer[..count]) {
                let ack = match frame {
                    Frame::Message(bytes) => self.handle(&bytes).await,
                    Frame::TooLarge { head, limit } => self.too_large(&head, limit),
                };
                if let Err(error) = stream
                    .write_all(&baton_hl7::mllp::frame(ack.as_bytes()))
                    .await
                {
                    tracing::info!(%error, "cannot send the acknowledgement: closing");
                    return;
                }
            }
        }
        if decoder.skipped() > 0 {
            tracing::info!(
                bytes = decoder.skipped(),
                "skipped bytes outside MLLP frames"
            );
        }
        let _ = stream.shutdown().await;
    }
}

/// Serves HL7 v2 over MLLP on `listener` until `shutdown` completes; then
/// stops accepting, lets every connection acknowledge what it received,
/// closes them and returns. With TLS on the listener, a connection
/// completes its handshake within the handshake timeout (holding its
/// connection slot meanwhile) before any frame is read.
pub async fn serve(
    mllp: Mllp,
    listener: impl Into<TlsListener>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let (listener, tls, clients) = listener.into().into_parts();
    let address = listener.local_addr().ok();
    tracing::info!(
        ?address,
        zone = mllp.map.zone.name(),
        tls = tls.is_some(),
        mutual_tls = tls.as_ref().is_some_and(baton_tls::Tls::is_mutual),
        "mllp listening (HL7 v2)"
    );
    let stop = CancellationToken::new();
    let mut connections = tokio::task::JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(mllp.max_connections));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        mllp.stats.connections_refused.fetch_add(1, Ordering::Relaxed);
                        crate::metrics::record_connection_refused();
                        tracing::warn!(%peer, max = mllp.max_connections, "closed a connection: mllp_max_connections are open");
                        drop(stream);
                        continue;
                    };
                    mllp.stats.connections.fetch_add(1, Ordering::Relaxed);
                    let open = crate::metrics::connection_opened();
                    let _ = stream.set_nodelay(true);
                    let span = tracing::info_span!("mllp_connection", %peer);
                    let mllp = mllp.clone();
                    let stop = stop.clone();
                    let tls = tls.clone();
                    let clients = clients.clone();
                    connections.spawn(async move {
                        match tls {
                            None if clients.is_enforced() => {
                                mllp.stats.unauthorised.fetch_add(1, Ordering::Relaxed);
                                tracing::info!("closed a connection: the clients table is enforced and a plaintext sender has no identity");
                            }
                            None => mllp.connection(stream, stop).await,
                            Some(tls) => match tls.accept(stream).await {
                                Ok(stream) if clients.is_enforced() => {
                                    let identity = stream
                                        .get_ref()
                                        .1
                                        .peer_certificates()
                                        .and_then(|chain| chain.first())
                                        .and_then(|leaf| clients.by_certificate(leaf));
                                    match identity {
                                        Some(identity) if identity.has(baton_tls::Scope::Hl7) => {
                                            let span = tracing::info_span!("mllp_client", client = %identity.id);
                                            mllp.connection(stream, stop).instrument(span).await;
                                        }
                                        Some(identity) => {
                                            mllp.stats.unauthorised.fetch_add(1, Ordering::Relaxed);
                                            tracing::info!(client = %identity.id, "closed a connection: the client lacks the scope \"hl7\"");
                                        }
                                        None => {
                                            mllp.stats.unauthorised.fetch_add(1, Ordering::Relaxed);
                                            tracing::info!("closed a connection: its client certificate is not in the clients table");
                                        }
                                    }
                                }
                                Ok(stream) => mllp.connection(stream, stop).await,
                                Err(error) => {
                                    mllp.stats.handshakes_failed.fetch_add(1, Ordering::Relaxed);
                                    tracing::info!(%error, "closed a connection before TLS was set up");
                                }
                            },
                        }
                        drop(open);
                        drop(slot);
                    }.instrument(span));
                }
                Err(error) => {
                    // e.g. out of file descriptors: wait, do not spin.
                    tracing::warn!(%error, "cannot accept an MLLP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    stop.cancel();
    while connections.join_next().await.is_some() {}
    let stats = mllp.stats.snapshot();
    tracing::info!(
        connections = stats.connections,
        connections_refused = stats.connections_refused,
        handshakes_failed = stats.handshakes_failed,
        unauthorised = stats.unauthorised,
        accepted = stats.accepted,
        errored = stats.errored,
        rejected = stats.rejected,
        unsupported = stats.unsupported,
        too_large = stats.too_large,
        by_type = ?stats.by_type,
        "mllp stopped"
    );
}

/// The sending side of MLLP, for tools (`baton hl7 send`), the benchmark
/// and tests: one message out, its acknowledgement back.
#[derive(Debug)]
pub struct MllpClient {
    stream: Either<TcpStream, ClientTlsStream<TcpStream>>,
    decoder: FrameDecoder,
    received: std::collections::VecDeque<Vec<u8>>,
}

impl MllpClient {
    pub async fn connect(address: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(Self::over(Either::Left(stream)))
    }

    /// Connects over TLS, checking the server's certificate names
    /// `server_name` (e.g. `localhost`) with `config`
    /// ([`baton_tls::client_config`]).
    pub async fn connect_tls(
        address: SocketAddr,
        server_name: &str,
        config: Arc<ClientConfig>,
    ) -> std::io::Result<Self> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let stream = baton_tls::connect(stream, server_name, config).await?;
        Ok(Self::over(Either::Right(stream)))
    }

    fn over(stream: Either<TcpStream, ClientTlsStream<TcpStream>>) -> Self {
        Self {
            stream,
            // An acknowledgement is small; a larger answer is not one.
            decoder: FrameDecoder::new(1024 * 1024),
            received: std::collections::VecDeque::new(),
        }
    }

    /// Sends one message and waits for the next frame back, its
    /// acknowledgement.
    pub async fn send(&mut self, message: &[u8]) -> std::io::Result<Vec<u8>> {
        self.stream
            .write_all(&baton_hl7::mllp::frame(message))
            .await?;
        self.stream.flush().await?;
        self.receive().await
    }

    async fn receive(&mut self) -> std::io::Result<Vec<u8>> {
        let mut buffer = [0_u8; 8192];
        loop {
            if let Some(frame) = self.received.pop_front() {
                return Ok(frame);
            }
            let count = self.stream.read(&mut buffer).await?;
            if count == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the receiver closed the connection without acknowledging",
                ));
            }
            for frame in self.decoder.push(&buffer[..count]) {
                match frame {
                    Frame::Message(bytes) => self.received.push_back(bytes),
                    Frame::TooLarge { limit, .. } => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!(
                                "an answer larger than {limit} bytes is not an acknowledgement"
                            ),
                        ));
                    }
                }
            }
        }
    }
}
