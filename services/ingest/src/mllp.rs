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
//! `mllp_max_message_bytes` is answered `AR` without being buffered. On
//! shutdown the listener stops accepting, each connection finishes and
//! acknowledges the messages it has received, then closes.
//!
//! # Connections that hold a slot without sending
//!
//! A slot (`mllp_max_connections`) is held only by a connection that sends
//! messages, so idle or slow connections cannot lock real feeds out:
//!
//! - `mllp_frame_timeout_ms` (default 10 s): a connection that has not sent
//!   a complete frame that long after connecting (after its TLS handshake,
//!   which is bounded by `tls.handshake_timeout_ms`), or that has not
//!   finished a frame that long after the frame's first byte (a slowloris
//!   sender), is closed.
//! - `mllp_idle_timeout_ms` (default 5 min): between complete frames, a
//!   connection that sends nothing of a frame for that long is closed;
//!   bytes outside frames do not keep it open.
//! - `mllp_max_connections_per_peer` (default 8): a connection past that
//!   many open from one IP address is closed as it arrives, as is one past
//!   `mllp_max_connections` open in all.
//! - An acknowledgement the sender does not read within
//!   `mllp_idle_timeout_ms` closes the connection.
//!
//! Every close is counted by its [`CloseReason`] ([`MllpSnapshot::closed`],
//! `baton_mllp_connections_closed_total{reason}`) and logged with the
//! peer's address and the reason: at warn for the refusals and timeouts
//! above, at info otherwise.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use baton_hl7::mllp::{Frame, FrameDecoder};
use baton_hl7::{AckCode, ErrorCode, Header, MapConfig, Message, Problem, Zone, acknowledgement};
use baton_telemetry::TraceParent;
use baton_tls::{ClientConfig, ClientTlsStream, TlsListener};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
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

/// Why the listener closed a connection: a fixed set, the `reason` label
/// of `baton_mllp_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CloseReason {
    /// The sender closed it.
    PeerClosed,
    /// The listener stopped.
    Shutdown,
    /// Reading or writing failed (e.g. reset by the peer).
    Failed,
    /// Nothing of a frame for `mllp_idle_timeout_ms`.
    IdleTimeout,
    /// No complete frame within `mllp_frame_timeout_ms` of connecting, or
    /// of a frame's first byte.
    FrameTimeout,
    /// An acknowledgement not taken by the sender within
    /// `mllp_idle_timeout_ms`.
    AckTimeout,
    /// Its TLS handshake did not complete within
    /// `tls.handshake_timeout_ms`.
    HandshakeTimeout,
    /// Its TLS handshake failed.
    HandshakeFailed,
    /// The clients table does not let it send HL7.
    Unauthorised,
    /// Closed on arrival: `mllp_max_connections` were open.
    MaxConnections,
    /// Closed on arrival: `mllp_max_connections_per_peer` were open from
    /// its IP address.
    MaxConnectionsPerPeer,
}

impl CloseReason {
    /// Every reason, in order.
    pub const ALL: [Self; 11] = [
        Self::PeerClosed,
        Self::Shutdown,
        Self::Failed,
        Self::IdleTimeout,
        Self::FrameTimeout,
        Self::AckTimeout,
        Self::HandshakeTimeout,
        Self::HandshakeFailed,
        Self::Unauthorised,
        Self::MaxConnections,
        Self::MaxConnectionsPerPeer,
    ];

    /// The metric label and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PeerClosed => "peer_closed",
            Self::Shutdown => "shutdown",
            Self::Failed => "failed",
            Self::IdleTimeout => "idle_timeout",
            Self::FrameTimeout => "frame_timeout",
            Self::AckTimeout => "ack_timeout",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::HandshakeFailed => "handshake_failed",
            Self::Unauthorised => "unauthorised",
            Self::MaxConnections => "max_connections",
            Self::MaxConnectionsPerPeer => "max_connections_per_peer",
        }
    }

    /// Whether it is one an operator should look at (a limit or timeout
    /// hit, a refusal), logged at warn; the others at info.
    pub fn is_abuse(self) -> bool {
        !matches!(self, Self::PeerClosed | Self::Shutdown | Self::Failed)
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the listener has done since it started: the metrics an operator
/// watches (logged on shutdown, readable any time with [`MllpStats::snapshot`]).
#[derive(Debug, Default)]
pub struct MllpStats {
    connections: AtomicU64,
    connections_refused: AtomicU64,
    handshakes_failed: AtomicU64,
    unauthorised: AtomicU64,
    closed: [AtomicU64; CloseReason::ALL.len()],
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
    /// Connections closed, by why (every reason present, most at 0); the
    /// refusals on arrival included, so the sum is every connection
    /// accepted from the socket and closed.
    pub closed: BTreeMap<CloseReason, u64>,
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
            closed: CloseReason::ALL
                .into_iter()
                .map(|reason| (reason, load(&self.closed[reason as usize])))
                .collect(),
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

    /// Counts and logs the close of the connection from `peer`.
    fn record_close(&self, peer: SocketAddr, reason: CloseReason) {
        self.closed[reason as usize].fetch_add(1, Ordering::Relaxed);
        match reason {
            CloseReason::MaxConnections => {
                self.connections_refused.fetch_add(1, Ordering::Relaxed);
            }
            CloseReason::HandshakeTimeout | CloseReason::HandshakeFailed => {
                self.handshakes_failed.fetch_add(1, Ordering::Relaxed);
            }
            CloseReason::Unauthorised => {
                self.unauthorised.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        crate::metrics::record_connection_closed(reason);
        if reason.is_abuse() {
            tracing::warn!(%peer, %reason, "closed an MLLP connection");
        } else {
            tracing::info!(%peer, %reason, "closed an MLLP connection");
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
    frame_timeout: Duration,
    max_connections: usize,
    max_connections_per_peer: usize,
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
            frame_timeout: Duration::from_millis(config.mllp_frame_timeout_ms),
            max_connections: config.mllp_max_connections,
            max_connections_per_peer: config.mllp_max_connections_per_peer,
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

    /// Serves one connection until it closes, saying why.
    async fn connection(
        self,
        mut stream: impl AsyncRead + AsyncWrite + Unpin,
        stop: CancellationToken,
    ) -> CloseReason {
        let mut decoder = FrameDecoder::new(self.max_message_bytes);
        let mut buffer = vec![0_u8; 64 * 1024];
        let connected = Instant::now();
        // The first frame is due within the frame timeout of connecting,
        // each later one within it of its first byte; between frames only
        // the idle timeout runs, and only bytes of frames restart it.
        let mut frame_due = Some(connected + self.frame_timeout);
        let mut idle_due = connected + self.idle_timeout;
        let reason = 'connection: loop {
            let (deadline, expired) = match frame_due {
                Some(due) if due <= idle_due => (due, CloseReason::FrameTimeout),
                _ => (idle_due, CloseReason::IdleTimeout),
            };
            // Stopping only ever interrupts a wait for bytes: every message
            // already received is handled and acknowledged first.
            let read = tokio::select! {
                biased;
                () = stop.cancelled() => {
                    if decoder.in_frame() {
                        tracing::info!("closing at shutdown with a message half received: the sender will send it again");
                    }
                    break CloseReason::Shutdown;
                }
                read = tokio::time::timeout_at(deadline, stream.read(&mut buffer)) => read,
            };
            let count = match read {
                Err(_) => break expired,
                Ok(Ok(0)) => break CloseReason::PeerClosed,
                Ok(Ok(count)) => count,
                Ok(Err(error)) => {
                    tracing::info!(%error, "connection failed");
                    break CloseReason::Failed;
                }
            };
            let frames = decoder.push(&buffer[..count]);
            let completed = !frames.is_empty();
            for frame in frames {
                let ack = match frame {
                    Frame::Message(bytes) => self.handle(&bytes).await,
                    Frame::TooLarge { head, limit } => self.too_large(&head, limit),
                };
                let framed = baton_hl7::mllp::frame(ack.as_bytes());
                match tokio::time::timeout(self.idle_timeout, stream.write_all(&framed)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        tracing::info!(%error, "cannot send the acknowledgement: closing");
                        break 'connection CloseReason::Failed;
                    }
                    Err(_) => break 'connection CloseReason::AckTimeout,
                }
            }
            let now = Instant::now();
            if completed || decoder.in_frame() {
                idle_due = now + self.idle_timeout;
            }
            if completed {
                frame_due = None;
            }
            if decoder.in_frame() && frame_due.is_none() {
                frame_due = Some(now + self.frame_timeout);
            }
        };
        if decoder.skipped() > 0 {
            tracing::info!(
                bytes = decoder.skipped(),
                "skipped bytes outside MLLP frames"
            );
        }
        if !matches!(reason, CloseReason::Failed | CloseReason::AckTimeout) {
            let _ = tokio::time::timeout(self.frame_timeout, stream.shutdown()).await;
        }
        reason
    }
}

/// The connections open from each IP address.
#[derive(Debug, Default)]
struct Peers {
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl Peers {
    /// One more from `ip`, unless `max` are open from it.
    fn admit(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<PeerSlot> {
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(ip).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            peers: self.clone(),
            ip,
        })
    }
}

/// One open connection from `ip`, counted until dropped.
#[derive(Debug)]
struct PeerSlot {
    peers: Arc<Peers>,
    ip: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self
            .peers
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
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
    let peers = Arc::new(Peers::default());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Some(from_peer) = peers.admit(peer.ip(), mllp.max_connections_per_peer) else {
                        mllp.stats.record_close(peer, CloseReason::MaxConnectionsPerPeer);
                        drop(stream);
                        continue;
                    };
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        mllp.stats.record_close(peer, CloseReason::MaxConnections);
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
                        let reason = match tls {
                            None if clients.is_enforced() => {
                                tracing::info!("the clients table is enforced and a plaintext sender has no identity");
                                refused(&clients, None, "UNAUTHENTICATED", "no client identity: MLLP senders present a client certificate the clients table names", peer);
                                CloseReason::Unauthorised
                            }
                            None => mllp.clone().connection(stream, stop).await,
                            // The handshake is bounded by tls.handshake_timeout_ms.
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
                                            mllp.clone().connection(stream, stop).instrument(span).await
                                        }
                                        Some(identity) => {
                                            tracing::info!(client = %identity.id, "the client lacks the scope \"hl7\"");
                                            let message = format!("client {:?} lacks the scope \"hl7\", which sending HL7 v2 over MLLP needs", identity.id);
                                            refused(&clients, Some(identity), "PERMISSION_DENIED", &message, peer);
                                            CloseReason::Unauthorised
                                        }
                                        None => {
                                            tracing::info!("its client certificate is not in the clients table");
                                            refused(&clients, None, "UNAUTHENTICATED", "the client certificate is not in the clients table", peer);
                                            CloseReason::Unauthorised
                                        }
                                    }
                                }
                                Ok(stream) => mllp.clone().connection(stream, stop).await,
                                Err(error) => {
                                    tracing::info!(%error, "no TLS session set up");
                                    match error {
                                        baton_tls::HandshakeError::TimedOut(_) => CloseReason::HandshakeTimeout,
                                        baton_tls::HandshakeError::Failed(_) => CloseReason::HandshakeFailed,
                                    }
                                }
                            },
                        };
                        mllp.stats.record_close(peer, reason);
                        drop(open);
                        drop(slot);
                        drop(from_peer);
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
        closed = ?stats
            .closed
            .iter()
            .filter(|(_, count)| **count > 0)
            .map(|(reason, count)| (reason.as_str(), *count))
            .collect::<Vec<_>>(),
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

/// Tells the clients table's refusal hook (the audit log) of a sender
/// refused on the MLLP listener.
fn refused(
    clients: &baton_tls::Clients,
    client: Option<baton_tls::ClientIdentity>,
    code: &'static str,
    message: &str,
    peer: SocketAddr,
) {
    clients.refused(baton_tls::Refusal {
        path: MLLP_PATH.to_owned(),
        client,
        code,
        message: message.to_owned(),
        peer: Some(peer),
    });
}

/// How a refusal on the MLLP listener is named in the audit log (the API
/// `ingest`, the "RPC" `MLLP`).
const MLLP_PATH: &str = "/baton.ingest.v1.HL7/MLLP";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_counted_per_address_until_they_close() {
        let peers = Arc::new(Peers::default());
        let ip: IpAddr = [10, 0, 0, 7].into();
        let first = peers.admit(ip, 2).expect("the first");
        // The same address written as IPv4-mapped IPv6 is the same peer.
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        let second = peers.admit(mapped, 2).expect("the second");
        assert!(peers.admit(ip, 2).is_none(), "a third from one address");
        assert!(peers.admit([10, 0, 0, 8].into(), 2).is_some());
        drop(first);
        let third = peers.admit(ip, 2).expect("a slot again once one closed");
        drop((second, third));
        assert!(peers.open.lock().unwrap().is_empty(), "nothing left behind");
    }

    #[test]
    fn close_reasons_are_a_fixed_set_of_labels() {
        let labels: std::collections::BTreeSet<_> = CloseReason::ALL
            .iter()
            .map(|reason| reason.as_str())
            .collect();
        assert_eq!(labels.len(), CloseReason::ALL.len());
        for (index, reason) in CloseReason::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, index, "ALL is in declaration order");
        }
        assert!(CloseReason::FrameTimeout.is_abuse());
        assert!(!CloseReason::PeerClosed.is_abuse());
    }
}
