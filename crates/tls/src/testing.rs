//! Certificates made at test time (feature `test-certs`): a CA, server
//! certificates for `localhost` and `127.0.0.1`, and client certificates
//! naming a client. Nothing here is for a service binary; it panics on
//! failure, as a test helper should.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate authority of a test.
#[derive(Debug)]
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// The PEM files of one issued certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// A new self-signed CA whose subject's common name is `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("a CA key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("a CA certificate"),
        }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate to `path` and returns it.
    pub fn write(&self, path: &Path) -> PathBuf {
        write_atomically(path, &self.pem());
        path.to_owned()
    }

    /// Issues a server certificate for `localhost`, `127.0.0.1` and `::1`
    /// with the common name `name`, written to `<dir>/<name>.pem` and
    /// `<dir>/<name>.key`.
    pub fn server(&self, dir: &Path, name: &str) -> Issued {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned()]).expect("server parameters");
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, dir, name)
    }

    /// Issues a client certificate whose common name and DNS SAN are
    /// `client`, written to `<dir>/<client>.pem` and `<dir>/<client>.key`.
    pub fn client(&self, dir: &Path, client: &str) -> Issued {
        let mut params =
            CertificateParams::new(vec![client.to_owned()]).expect("client parameters");
        params.distinguished_name.push(DnType::CommonName, client);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, dir, client)
    }

    fn issue(&self, params: CertificateParams, dir: &Path, name: &str) -> Issued {
        let key = KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.issuer).expect("a certificate");
        let issued = Issued {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        write_atomically(&issued.cert, &cert.pem());
        write_atomically(&issued.key, &key.serialize_pem());
        issued
    }
}

/// Writes `contents` to `path` by renaming a finished file over it, as a
/// certificate manager rotating files does.
pub fn write_atomically(path: &Path, contents: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, contents).expect("write a test certificate");
    std::fs::rename(&temporary, path).expect("move a test certificate into place");
}

/// An issuer of test tokens: an ES256 (P-256) key pair.
#[derive(Debug)]
pub struct TestSigner {
    key: KeyPair,
}

impl Default for TestSigner {
    fn default() -> Self {
        Self::new()
    }
}

impl TestSigner {
    pub fn new() -> Self {
        Self {
            key: KeyPair::generate().expect("a signing key"),
        }
    }

    /// Writes the public key (PEM) to `path` and returns it.
    pub fn write_public(&self, path: &Path) -> PathBuf {
        write_atomically(path, &self.key.public_key_pem());
        path.to_owned()
    }

    /// A token carrying `claims`, signed ES256.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let key = jsonwebtoken::EncodingKey::from_ec_pem(self.key.serialize_pem().as_bytes())
            .expect("an ES256 signing key");
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
            claims,
            &key,
        )
        .expect("a signed token")
    }
}
