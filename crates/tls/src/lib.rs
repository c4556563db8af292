//! TLS for every Baton listener (the gRPC APIs, MLLP and the metrics
//! listener), with rustls on the ring provider.
//!
//! - [`TlsConfig`]: a service's `tls` table: PEM certificate chain and key,
//!   optionally the CA whose client certificates are required (mutual TLS),
//!   and the handshake timeout.
//! - [`Tls`]: the server side built from it. Before each handshake it looks
//!   at the files' modification time, size and inode; when any changed it
//!   loads them again and new connections get the new certificate, while
//!   connections already open keep theirs. Files that cannot be loaded
//!   (half written, a key that does not match) leave the previous
//!   certificate serving, with a warning. A client that has not finished its
//!   handshake within the timeout is closed.
//! - [`TlsListener`]: a bound listener and, when configured, its TLS: what
//!   every `serve` function takes (a plain `TcpListener` converts into one).
//! - [`incoming`]: accepted connections with their handshakes done, for
//!   tonic's `serve_with_incoming`.
//! - [`Clients`]: the `clients` table, mapping a client certificate's names
//!   to a client id and its [`Scope`]s.
//! - [`client_config`]: the client side, for Baton's own tools and tests.
//!
//! No error or log line carries the contents of a key file.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::Stream;

mod clients;
mod tokens;

pub use clients::{
    ASSERTED_MAX_CHARS, Asserted, Authentication, ClientEntry, ClientIdentity, Clients, Refusal,
    RefusalHook, Scope, asserted_value, certificate_names,
};
pub use rustls::ClientConfig;
pub use tokens::{JwtConfig, TokenError, TokenVerifier, Verified, bearer};
pub use tokio_rustls::client::TlsStream as ClientTlsStream;
pub use tokio_rustls::server::TlsStream;

/// A client that has not completed its TLS handshake by then is closed,
/// unless configured otherwise.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

/// Handshakes in progress on one listener at once; a connection past that
/// is closed as it arrives, so slow handshakes cannot exhaust memory.
pub const MAX_PENDING_HANDSHAKES: usize = 256;

/// ALPN of a gRPC listener (HTTP/2 only).
pub const ALPN_GRPC: &[&[u8]] = &[b"h2"];
/// ALPN of the metrics listener (HTTP/1.1 only).
pub const ALPN_HTTP1: &[&[u8]] = &[b"http/1.1"];
/// MLLP has no ALPN identifier.
pub const ALPN_NONE: &[&[u8]] = &[];

/// A service's `tls` table, e.g. `[query.tls]` or `BATON_QUERY__TLS__CERT`.
/// Without `cert` the service listens in plaintext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the server's certificate chain, leaf first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM file of the server's private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// PEM file of the CA certificates whose client certificates are
    /// accepted; when set, every client must present one (mutual TLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// A client that has not completed its handshake within this is closed.
    pub handshake_timeout_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            client_ca: None,
            handshake_timeout_ms: DEFAULT_HANDSHAKE_TIMEOUT_MS,
        }
    }
}

fn given(path: &Option<PathBuf>) -> Option<&Path> {
    path.as_deref().filter(|path| !path.as_os_str().is_empty())
}

impl TlsConfig {
    /// Whether TLS is configured (a certificate is named).
    pub fn is_on(&self) -> bool {
        given(&self.cert).is_some()
    }

    /// Whether every client must present a certificate from `client_ca`.
    pub fn is_mutual(&self) -> bool {
        self.is_on() && given(&self.client_ca).is_some()
    }

    /// Checks the settings belong together, naming the one missing.
    pub fn validate(&self) -> Result<(), TlsError> {
        let invalid = |field, reason: &str| TlsError::Invalid {
            field,
            reason: reason.to_owned(),
        };
        match (given(&self.cert), given(&self.key)) {
            (Some(_), None) => {
                return Err(invalid(
                    "key",
                    "expected the PEM file of the private key of tls.cert",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "cert",
                    "expected the PEM file of the certificate chain of tls.key",
                ));
            }
            _ => {}
        }
        if given(&self.client_ca).is_some() && !self.is_on() {
            return Err(invalid(
                "cert",
                "expected a server certificate: tls.client_ca needs TLS on",
            ));
        }
        if self.handshake_timeout_ms == 0 {
            return Err(invalid("handshake_timeout_ms", "expected at least 1"));
        }
        Ok(())
    }
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("tls.{field}: cannot read {path}: {source}")]
    Read {
        field: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("tls.{field}: {path} holds no PEM {expected}")]
    Empty {
        field: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("tls.{field}: {path} is not PEM {expected}: {reason}")]
    Pem {
        field: &'static str,
        path: PathBuf,
        expected: &'static str,
        reason: String,
    },
    #[error("tls.key: {path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    Key { path: PathBuf },
    #[error("tls.{field}: {path}: {reason}")]
    Certificates {
        field: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("tls: the certificate in {cert} and the key in {key} cannot serve: {reason}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// Why a connection was closed before its TLS handshake completed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("no TLS handshake within {0:?}")]
    TimedOut(Duration),
    #[error("TLS handshake failed: {0}")]
    Failed(io::Error),
}

/// The one crypto provider of every Baton TLS configuration.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        field,
        path: path.to_owned(),
        source,
    })
}

/// The certificates of the PEM file `path`, at least one.
pub fn read_certificates(
    field: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(field, path)?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Pem {
            field,
            path: path.to_owned(),
            expected: "certificates",
            reason: error.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::Empty {
            field,
            path: path.to_owned(),
            expected: "certificate",
        });
    }
    Ok(certificates)
}

/// The private key of the PEM file `path`; the error never quotes it.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read("key", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| TlsError::Key {
        path: path.to_owned(),
    })
}

/// The trust roots of the PEM file `path`.
pub fn read_roots(field: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(field, path)? {
        roots
            .add(certificate)
            .map_err(|error| TlsError::Certificates {
                field,
                path: path.to_owned(),
                reason: format!("not a CA certificate: {error}"),
            })?;
    }
    Ok(roots)
}

fn server_config(
    settings: &TlsConfig,
    alpn: &[Vec<u8>],
    clients: ClientCertificates,
) -> Result<ServerConfig, TlsError> {
    let (Some(cert), Some(key)) = (given(&settings.cert), given(&settings.key)) else {
        return Err(TlsError::Invalid {
            field: "cert",
            reason: "expected the PEM files of a certificate chain and its key".into(),
        });
    };
    let chain = read_certificates("cert", cert)?;
    let private = read_key(key)?;
    let pair = |error: rustls::Error| TlsError::Pair {
        cert: cert.to_owned(),
        key: key.to_owned(),
        reason: error.to_string(),
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(pair)?;
    let builder = match given(&settings.client_ca) {
        Some(ca) => {
            let roots = read_roots("client_ca", ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier = match clients {
                ClientCertificates::Required => verifier,
                ClientCertificates::Optional => verifier.allow_unauthenticated(),
            };
            let verifier = verifier.build().map_err(|error| TlsError::Certificates {
                field: "client_ca",
                path: ca.to_owned(),
                reason: error.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, private).map_err(pair)?;
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}

/// What identifies one version of a file: a rewrite in place changes the
/// time or size, a rename over it the inode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let metadata = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        modified: metadata.modified().ok(),
        len: metadata.len(),
        inode,
    })
}

/// The server side of TLS on one listener: the configuration now in force,
/// loaded again from its files when they change.
#[derive(Clone)]
pub struct Tls {
    inner: Arc<Inner>,
}

struct Inner {
    settings: TlsConfig,
    alpn: Vec<Vec<u8>>,
    clients: ClientCertificates,
    current: ArcSwap<ServerConfig>,
    /// The stamps of the files when they were last loaded (or tried).
    seen: Mutex<Vec<Option<Stamp>>>,
    handshake_timeout: Duration,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.inner.settings.cert)
            .field("client_ca", &self.inner.settings.client_ca)
            .field("handshake_timeout", &self.inner.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the files `settings` names, for a listener speaking `alpn`
    /// ([`ALPN_GRPC`], [`ALPN_HTTP1`], [`ALPN_NONE`]); `None` when TLS is
    /// not configured.
    pub fn load(settings: &TlsConfig, alpn: &[&[u8]]) -> Result<Option<Self>, TlsError> {
        Self::load_with(settings, alpn, ClientCertificates::Required)
    }

    /// [`Tls::load`], saying whether a client must present a certificate
    /// from `client_ca` ([`ClientCertificates::Required`]) or may present
    /// none ([`ClientCertificates::Optional`]; one it presents is still
    /// verified).
    pub fn load_with(
        settings: &TlsConfig,
        alpn: &[&[u8]],
        clients: ClientCertificates,
    ) -> Result<Option<Self>, TlsError> {
        settings.validate()?;
        if !settings.is_on() {
            return Ok(None);
        }
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        let settings = settings.clone();
        let seen = Self::stamps_of(&settings);
        let config = server_config(&settings, &alpn, clients)?;
        Ok(Some(Self {
            inner: Arc::new(Inner {
                clients,
                handshake_timeout: Duration::from_millis(settings.handshake_timeout_ms),
                settings,
                alpn,
                current: ArcSwap::from_pointee(config),
                seen: Mutex::new(seen),
            }),
        }))
    }

    fn stamps_of(settings: &TlsConfig) -> Vec<Option<Stamp>> {
        [&settings.cert, &settings.key, &settings.client_ca]
            .into_iter()
            .map(|path| given(path).and_then(stamp))
            .collect()
    }

    /// Whether clients must present a certificate.
    pub fn is_mutual(&self) -> bool {
        self.inner.settings.is_mutual() && self.inner.clients == ClientCertificates::Required
    }

    pub fn handshake_timeout(&self) -> Duration {
        self.inner.handshake_timeout
    }

    /// Loads the files again if any changed since last looked at; true when
    /// a new configuration is now in force. Files that cannot be loaded
    /// leave the previous one in force (and are tried again when they
    /// change once more).
    pub fn reload_if_changed(&self) -> bool {
        let now = Self::stamps_of(&self.inner.settings);
        let mut seen = self
            .inner
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *seen == now {
            return false;
        }
        *seen = now;
        match server_config(&self.inner.settings, &self.inner.alpn, self.inner.clients) {
            Ok(config) => {
                self.inner.current.store(Arc::new(config));
                tracing::info!(cert = ?self.inner.settings.cert, "TLS files changed: new connections get the new certificate");
                true
            }
            Err(error) => {
                tracing::warn!(%error, "TLS files changed but cannot be loaded: still serving the previous certificate");
                false
            }
        }
    }

    /// The configuration in force (after looking for changed files).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.reload_if_changed();
        self.inner.current.load_full()
    }

    /// Completes the TLS handshake on `tcp` within the handshake timeout.
    pub async fn accept(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>, HandshakeError> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.server_config());
        match tokio::time::timeout(self.inner.handshake_timeout, acceptor.accept(tcp)).await {
            Err(_) => Err(HandshakeError::TimedOut(self.inner.handshake_timeout)),
            Ok(Err(error)) => Err(HandshakeError::Failed(error)),
            Ok(Ok(stream)) => Ok(stream),
        }
    }
}

/// Whether a listener's clients must present a certificate from
/// `client_ca`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertificates {
    Required,
    /// Verified when presented, not required: the metrics listener's, so
    /// that a kubelet's probes and a Prometheus without a client
    /// certificate can reach `/live`, `/ready` and `/metrics` (which carry
    /// no patient data) over TLS.
    Optional,
}

/// The TLS of each kind of listener a service has, all from its one `tls`
/// table: gRPC (ALPN `h2`), the metrics listener (`http/1.1`) and MLLP.
#[derive(Debug, Clone, Default)]
pub struct ServiceTls {
    pub grpc: Option<Tls>,
    pub http: Option<Tls>,
    pub mllp: Option<Tls>,
}

impl ServiceTls {
    /// Loads `settings` for every kind of listener; all `None` when TLS is
    /// not configured.
    pub fn load(settings: &TlsConfig) -> Result<Self, TlsError> {
        Ok(Self {
            grpc: Tls::load(settings, ALPN_GRPC)?,
            http: Tls::load_with(settings, ALPN_HTTP1, ClientCertificates::Optional)?,
            mllp: Tls::load(settings, ALPN_NONE)?,
        })
    }
}

/// The largest request message a gRPC service decodes unless configured
/// otherwise: tonic's own default, 4 MiB.
pub const DEFAULT_GRPC_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// What one gRPC listener allows a connection: `[<section>.grpc]`, e.g.
/// `[ingest.grpc]` or `BATON_INGEST__GRPC__MAX_MESSAGE_BYTES`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcLimits {
    /// Calls open at once on one connection (HTTP/2
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`); a client opens more only as
    /// earlier ones finish.
    pub max_concurrent_streams: u32,
    /// Largest request message decoded; a larger one is refused with
    /// `OUT_OF_RANGE` naming the limit.
    pub max_message_bytes: usize,
    /// A connection that has not sent the HTTP/2 connection preface this
    /// long after connecting (after its TLS handshake, which
    /// `tls.handshake_timeout_ms` bounds) is closed.
    pub preface_timeout_ms: u64,
    /// How often an HTTP/2 ping checks that a connection's peer is still
    /// there; one that does not answer within `keepalive_timeout_ms` is
    /// closed.
    pub keepalive_interval_ms: u64,
    pub keepalive_timeout_ms: u64,
}

impl Default for GrpcLimits {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 100,
            max_message_bytes: DEFAULT_GRPC_MAX_MESSAGE_BYTES,
            preface_timeout_ms: 10_000,
            keepalive_interval_ms: 60_000,
            keepalive_timeout_ms: 20_000,
        }
    }
}

/// A `grpc` setting out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("grpc.{field}: expected {expected}, got {got}")]
pub struct GrpcLimitsError {
    pub field: &'static str,
    pub expected: &'static str,
    pub got: u64,
}

impl GrpcLimits {
    /// The defaults with another largest message.
    pub fn with_max_message_bytes(max_message_bytes: usize) -> Self {
        Self {
            max_message_bytes,
            ..Self::default()
        }
    }

    /// Checks every setting, naming the first out of range.
    pub fn validate(&self) -> Result<(), GrpcLimitsError> {
        let at_least = |field, expected, got: u64, least: u64| {
            if got < least {
                Err(GrpcLimitsError {
                    field,
                    expected,
                    got,
                })
            } else {
                Ok(())
            }
        };
        at_least(
            "max_concurrent_streams",
            "at least 1 call",
            self.max_concurrent_streams.into(),
            1,
        )?;
        at_least(
            "max_message_bytes",
            "at least 1024 bytes",
            self.max_message_bytes as u64,
            1024,
        )?;
        at_least(
            "preface_timeout_ms",
            "milliseconds, at least 1",
            self.preface_timeout_ms,
            1,
        )?;
        at_least(
            "keepalive_interval_ms",
            "milliseconds, at least 1",
            self.keepalive_interval_ms,
            1,
        )?;
        at_least(
            "keepalive_timeout_ms",
            "milliseconds, at least 1",
            self.keepalive_timeout_ms,
            1,
        )
    }
}

/// A bound listener, the TLS its connections speak when configured, the
/// clients table that names who may call what on it and, for a gRPC
/// listener, what a connection is allowed ([`GrpcLimits`]).
#[derive(Debug)]
pub struct TlsListener {
    listener: TcpListener,
    tls: Option<Tls>,
    clients: Arc<Clients>,
    grpc: GrpcLimits,
}

impl TlsListener {
    pub fn new(listener: TcpListener, tls: Option<Tls>) -> Self {
        Self {
            listener,
            tls,
            clients: Arc::default(),
            grpc: GrpcLimits::default(),
        }
    }

    /// With `limits` on each gRPC connection (the defaults otherwise).
    pub fn with_grpc_limits(mut self, limits: GrpcLimits) -> Self {
        self.grpc = limits;
        self
    }

    pub fn grpc_limits(&self) -> &GrpcLimits {
        &self.grpc
    }

    /// With the `clients` table: when it has any client, every call needs
    /// a client certificate it names.
    pub fn with_clients(mut self, clients: Arc<Clients>) -> Self {
        self.clients = clients;
        self
    }

    pub fn clients(&self) -> &Arc<Clients> {
        &self.clients
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    pub fn into_parts(self) -> (TcpListener, Option<Tls>, Arc<Clients>) {
        (self.listener, self.tls, self.clients)
    }
}

impl From<TcpListener> for TlsListener {
    /// A plaintext listener.
    fn from(listener: TcpListener) -> Self {
        Self::new(listener, None)
    }
}

/// The connections `listener` accepts, each yielded once its handshake is
/// done (with `TCP_NODELAY` set); a connection whose handshake fails or
/// times out is closed and logged. Accepting stops when the stream is
/// dropped. `api` names the listener in logs.
pub fn incoming(
    listener: TcpListener,
    tls: Tls,
    api: &'static str,
) -> impl Stream<Item = io::Result<TlsStream<TcpStream>>> + Send + 'static {
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(accept_loop(listener, tls, sender, api));
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

async fn accept_loop(
    listener: TcpListener,
    tls: Tls,
    sender: tokio::sync::mpsc::Sender<io::Result<TlsStream<TcpStream>>>,
    api: &'static str,
) {
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    let mut handshakes = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            () = sender.closed() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let Ok(permit) = Arc::clone(&pending).try_acquire_owned() else {
                        tracing::warn!(api, %peer, max = MAX_PENDING_HANDSHAKES, "closed a connection: too many TLS handshakes in progress");
                        continue;
                    };
                    let _ = tcp.set_nodelay(true);
                    let tls = tls.clone();
                    let sender = sender.clone();
                    handshakes.spawn(async move {
                        match tls.accept(tcp).await {
                            Ok(stream) => {
                                drop(permit);
                                let _ = sender.send(Ok(stream)).await;
                            }
                            Err(error) => {
                                tracing::info!(api, %peer, %error, "closed a connection before TLS was set up");
                            }
                        }
                    });
                }
                Err(error) => {
                    // e.g. out of file descriptors: wait, do not spin.
                    tracing::warn!(api, %error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
        }
    }
}

/// A client configuration trusting the CA certificates in `ca` and, with
/// `identity` (certificate chain and key PEM files), presenting a client
/// certificate; speaking `alpn`.
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    alpn: &[&[u8]],
) -> Result<ClientConfig, TlsError> {
    let roots = read_roots("ca", ca)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Invalid {
            field: "ca",
            reason: error.to_string(),
        })?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => {
            let chain = read_certificates("cert", cert)?;
            let private = read_key(key)?;
            builder
                .with_client_auth_cert(chain, private)
                .map_err(|error| TlsError::Pair {
                    cert: cert.to_owned(),
                    key: key.to_owned(),
                    reason: error.to_string(),
                })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(config)
}

/// Why a service refuses to start: a listener beyond loopback without TLS
/// and client authentication.
#[derive(Debug, thiserror::Error)]
#[error(
    "{setting} is {address}, beyond loopback, without {missing}: anyone who can reach it could read and write patient data. Configure {section}.tls.cert and {section}.tls.key (BATON_{upper}__TLS__CERT, BATON_{upper}__TLS__KEY) and client authentication: client certificates with {section}.tls.client_ca or bearer tokens with {section}.jwt; or listen on 127.0.0.1; --insecure serves it unprotected anyway"
)]
pub struct ExposureError {
    pub setting: String,
    pub address: SocketAddr,
    pub section: String,
    upper: String,
    missing: &'static str,
}

/// Secure by default: when any of `listeners` (the setting's name, e.g.
/// `query.listen`, and its address) is beyond loopback, the service needs
/// TLS and client authentication (`client_auth`), or `insecure`, in which
/// case each exposed listener is logged as a warning (at every start).
/// `section` is the service's configuration table (`query`, `up`).
pub fn check_exposure(
    section: &str,
    listeners: &[(&str, SocketAddr)],
    tls_on: bool,
    client_auth: bool,
    insecure: bool,
) -> Result<(), ExposureError> {
    let missing = match (tls_on, client_auth) {
        (true, true) => return Ok(()),
        (false, false) => "TLS and client authentication",
        (false, true) => "TLS",
        (true, false) => "client authentication",
    };
    for (setting, address) in listeners {
        if address.ip().is_loopback() {
            continue;
        }
        if insecure {
            tracing::warn!(
                setting,
                %address,
                missing,
                "--insecure: serving beyond loopback unprotected; anyone who can reach it can read and write patient data"
            );
            continue;
        }
        return Err(ExposureError {
            setting: (*setting).to_owned(),
            address: *address,
            section: section.to_owned(),
            upper: section.to_ascii_uppercase(),
            missing,
        });
    }
    Ok(())
}

/// Completes a client handshake on `tcp` with the server named
/// `server_name` (a DNS name or an IP address its certificate names).
pub async fn connect(
    tcp: TcpStream,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> io::Result<ClientTlsStream<TcpStream>> {
    let name = rustls_pki_types::ServerName::try_from(server_name.to_owned()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{server_name:?} is not a DNS name or IP address to check a server certificate against"),
        )
    })?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

#[cfg(feature = "test-certs")]
pub mod testing;
