//! Where the client commands find the gRPC APIs. `--query` and `--ingest`
//! take `HOST:PORT`, as `baton hl7 send --to` does, or a URL; with `--ca`
//! (and `--cert`/`--key` for a client certificate, `--token-file` for a
//! bearer token) every command speaks TLS, `baton hl7 send` over MLLP too
//! ([`client_tls`]; MLLP carries no bearer token).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// How the client commands protect their connections, for every command.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct TlsFlags {
    /// PEM file of the CA that signed Baton's certificate: speak TLS to
    /// the APIs (default: plaintext)
    #[arg(long, env = "BATON_CA", global = true, value_name = "PEM")]
    pub(crate) ca: Option<PathBuf>,
    /// PEM file of this client's certificate, presented to Baton (with --key)
    #[arg(long, env = "BATON_CERT", global = true, value_name = "PEM")]
    pub(crate) cert: Option<PathBuf>,
    /// PEM file of the client certificate's private key
    #[arg(long, env = "BATON_KEY", global = true, value_name = "PEM")]
    pub(crate) key: Option<PathBuf>,
    /// File holding a bearer token (a JWT) sent with every call (needs --ca)
    #[arg(long, env = "BATON_TOKEN_FILE", global = true, value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,
}

static TLS: OnceLock<TlsFlags> = OnceLock::new();

/// Sets the flags every connection uses (once, from `main`).
pub(crate) fn set_tls(flags: TlsFlags) {
    let _ = TLS.set(flags);
}

fn tls() -> &'static TlsFlags {
    TLS.get_or_init(TlsFlags::default)
}

/// A channel to a Baton API, sending the bearer token when there is one.
pub(crate) type Transport = InterceptedService<Channel, Bearer>;

/// Adds `authorization: Bearer <token>` to every call when configured.
#[derive(Debug, Clone)]
pub(crate) struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// What `--ca`, `--cert` and `--key` name: the CA to trust and the client
/// certificate with its key, if any.
struct TlsFiles<'a> {
    ca: &'a PathBuf,
    identity: Option<(&'a PathBuf, &'a PathBuf)>,
}

/// The files of `flags`; `None` for plaintext.
fn tls_files(flags: &TlsFlags) -> anyhow::Result<Option<TlsFiles<'_>>> {
    let identity = match (&flags.cert, &flags.key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => anyhow::bail!(
            "--cert and --key go together: the client certificate and its private key"
        ),
    };
    match &flags.ca {
        Some(ca) => Ok(Some(TlsFiles { ca, identity })),
        None if flags.token_file.is_some() || identity.is_some() => {
            anyhow::bail!("--cert and --token-file need --ca: they are only sent over TLS")
        }
        None => Ok(None),
    }
}

/// Whether `--ca` asks for TLS.
pub(crate) fn tls_on() -> bool {
    tls().ca.is_some()
}

/// The client side of TLS for a connection that is not gRPC (HL7 v2 over
/// MLLP: no ALPN), from `--ca` and `--cert`/`--key`; `None` without `--ca`.
pub(crate) fn client_tls() -> anyhow::Result<Option<Arc<baton_tls::ClientConfig>>> {
    let Some(files) = tls_files(tls())? else {
        return Ok(None);
    };
    let identity = files
        .identity
        .map(|(cert, key)| (cert.as_path(), key.as_path()));
    let config = baton_tls::client_config(files.ca, identity, baton_tls::ALPN_NONE)
        .context("--ca, --cert, --key: cannot set up TLS")?;
    Ok(Some(Arc::new(config)))
}

/// Connects to the API at `address` (HOST:PORT or a URL), over TLS with
/// `--ca`; `what` names it in the error ("the query API").
pub(crate) async fn connect(address: &str, what: &str) -> anyhow::Result<Transport> {
    let flags = tls();
    let read = |path: &PathBuf, flag: &str| {
        std::fs::read(path).with_context(|| format!("--{flag}: cannot read {}", path.display()))
    };
    let mut url = grpc_url(address);
    let mut endpoint;
    match tls_files(flags)? {
        Some(files) => {
            if let Some(rest) = url.strip_prefix("http://") {
                url = format!("https://{rest}");
            }
            let mut config =
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(files.ca, "ca")?));
            if let Some((cert, key)) = files.identity {
                config =
                    config.identity(Identity::from_pem(read(cert, "cert")?, read(key, "key")?));
            }
            endpoint = Channel::from_shared(url.clone())
                .with_context(|| format!("{address:?} is not HOST:PORT or a URL"))?;
            endpoint = endpoint
                .tls_config(config)
                .context("--ca, --cert, --key: cannot set up TLS")?;
        }
        None => {
            endpoint = Channel::from_shared(url.clone())
                .with_context(|| format!("{address:?} is not HOST:PORT or a URL"))?;
        }
    }
    let bearer = match &flags.token_file {
        Some(path) => {
            let token = String::from_utf8(read(path, "token-file")?)
                .with_context(|| format!("--token-file: {} is not text", path.display()))?;
            let value: MetadataValue<Ascii> =
                format!("Bearer {}", token.trim()).parse().map_err(|_| {
                    anyhow::anyhow!(
                        "--token-file: {} does not hold a token (one line of ASCII)",
                        path.display()
                    )
                })?;
            Some(value)
        }
        None => None,
    };
    let channel = endpoint.connect().await.with_context(|| {
        format!(
            "cannot reach {what} at {address}: is `baton up` running{}?",
            if flags.ca.is_some() {
                " with TLS, and does --ca trust its certificate"
            } else {
                ""
            }
        )
    })?;
    Ok(InterceptedService::new(channel, Bearer(bearer)))
}

/// `address` as the URL tonic connects to: `127.0.0.1:50052` is
/// `http://127.0.0.1:50052`; a URL (`http://…`, `https://…`) is kept.
pub(crate) fn grpc_url(address: &str) -> String {
    let address = address.trim();
    if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_or_a_url() {
        assert_eq!(grpc_url("127.0.0.1:50052"), "http://127.0.0.1:50052");
        assert_eq!(grpc_url(" query.local:9 "), "http://query.local:9");
        assert_eq!(grpc_url("http://127.0.0.1:50052"), "http://127.0.0.1:50052");
        assert_eq!(
            grpc_url("https://query.example:443"),
            "https://query.example:443"
        );
    }
}
