//! Signed JWT bearer tokens, the second way a client is identified
//! (NHS-style application-restricted access): the signature is checked
//! against the configured public keys (PEM files) or a JWKS file, RS256 or
//! ES256; `iss`, `aud`, `exp` and `nbf` are checked with a small leeway;
//! the claim `client_claim` (default `sub`) names the client, looked up in
//! the clients table's `token_subjects`. `jsonwebtoken` does the
//! cryptography.

use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

/// The algorithms a token may be signed with (RS256, ES256).
const ALGORITHMS: [Algorithm; 2] = [Algorithm::RS256, Algorithm::ES256];

/// A service's `jwt` table. Without `issuer`, tokens are not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must carry (one of its audiences).
    pub audience: String,
    /// PEM files of public keys (RSA for RS256, EC P-256 for ES256).
    pub keys: Vec<PathBuf>,
    /// A JWKS file (`{"keys": [...]}`) of public keys, chosen by `kid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks: Option<PathBuf>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
    /// The claim naming the client (`sub`, or e.g. `client_id`).
    pub client_claim: String,
    /// Claims naming the end user, their role and the purpose of the
    /// access, when the token carries them (for the audit log; a token's
    /// claims take the place of the `x-baton-user`, `x-baton-role` and
    /// `x-baton-purpose` metadata a caller may send).
    pub user_claim: String,
    pub role_claim: String,
    pub purpose_claim: String,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            audience: String::new(),
            keys: Vec::new(),
            jwks: None,
            leeway_s: 30,
            client_claim: "sub".to_owned(),
            user_claim: "user".to_owned(),
            role_claim: "role".to_owned(),
            purpose_claim: "purpose".to_owned(),
        }
    }
}

impl JwtConfig {
    pub fn is_on(&self) -> bool {
        !self.issuer.trim().is_empty()
    }
}

/// Why a token was refused: said to the caller, never quoting the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the bearer token is not a JWT")]
    Malformed,
    #[error("the bearer token is signed with {0}: expected RS256 or ES256")]
    Algorithm(String),
    #[error("the bearer token's signature does not verify with any configured key")]
    Signature,
    #[error("the bearer token has expired")]
    Expired,
    #[error("the bearer token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the bearer token is for another audience")]
    Audience,
    #[error("the bearer token comes from another issuer")]
    Issuer,
    #[error("the bearer token lacks the claim {0}")]
    MissingClaim(String),
    #[error("the bearer token names a client the clients table does not know")]
    UnknownClient,
    #[error("bearer tokens are not accepted here: no jwt issuer is configured")]
    NotAccepted,
    #[error("the authorization header is not \"Bearer <token>\"")]
    NotBearer,
    #[error("the bearer token was refused: {0}")]
    Other(String),
}

impl From<jsonwebtoken::errors::Error> for TokenError {
    fn from(error: jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind;
        match error.kind() {
            ErrorKind::InvalidToken
            | ErrorKind::Base64(_)
            | ErrorKind::Json(_)
            | ErrorKind::Utf8(_) => TokenError::Malformed,
            ErrorKind::InvalidSignature => TokenError::Signature,
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::InvalidAudience => TokenError::Audience,
            ErrorKind::InvalidIssuer => TokenError::Issuer,
            ErrorKind::MissingRequiredClaim(claim) => TokenError::MissingClaim(claim.clone()),
            other => TokenError::Other(format!("{other:?}")),
        }
    }
}

struct Key {
    kid: Option<String>,
    key: DecodingKey,
    algorithm: Algorithm,
}

/// Checks tokens against the keys of a [`JwtConfig`].
pub struct TokenVerifier {
    keys: Vec<Key>,
    validation: Validation,
    client_claim: String,
    asserted_claims: [String; 3],
    /// Tokens verified, until they expire: a client sends the same token
    /// on every call, and checking its signature each time (an ES256 or
    /// RS256 verification, tens of microseconds) would cost more than the
    /// read it guards.
    verified: std::sync::Mutex<std::collections::HashMap<String, Cached>>,
    leeway_s: u64,
}

/// Tokens remembered as verified, at most.
const VERIFIED_CACHE_ENTRIES: usize = 4_096;

#[derive(Debug, Clone)]
struct Cached {
    verified: Verified,
    /// Seconds since 1970 after which the token is refused (`exp` plus the
    /// leeway).
    until: u64,
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The value of its `client_claim`.
    pub client: String,
    /// The end user, role and purpose its claims assert.
    pub asserted: crate::Asserted,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("keys", &self.keys.len())
            .field("client_claim", &self.client_claim)
            .finish_non_exhaustive()
    }
}

fn read(field: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path)
        .map_err(|error| format!("jwt.{field}: cannot read {}: {error}", path.display()))
}

impl TokenVerifier {
    /// Loads the keys `config` names; `None` when tokens are off.
    pub fn load(config: &JwtConfig) -> Result<Option<Self>, String> {
        if !config.is_on() {
            return Ok(None);
        }
        if config.audience.trim().is_empty() {
            return Err("jwt.audience: expected the audience tokens for this service carry".into());
        }
        if config.client_claim.trim().is_empty() {
            return Err("jwt.client_claim: expected a claim name such as \"sub\"".into());
        }
        let mut keys = Vec::new();
        for path in &config.keys {
            let pem = read("keys", path)?;
            let (key, algorithm) = match DecodingKey::from_ec_pem(&pem) {
                Ok(key) => (key, Algorithm::ES256),
                Err(_) => match DecodingKey::from_rsa_pem(&pem) {
                    Ok(key) => (key, Algorithm::RS256),
                    Err(_) => {
                        return Err(format!(
                            "jwt.keys: {} holds no PEM public key (RSA for RS256, EC P-256 for ES256)",
                            path.display()
                        ));
                    }
                },
            };
            keys.push(Key {
                kid: None,
                key,
                algorithm,
            });
        }
        if let Some(path) = &config.jwks {
            let set: JwkSet = serde_json::from_slice(&read("jwks", path)?)
                .map_err(|error| format!("jwt.jwks: {} is not a JWKS: {error}", path.display()))?;
            for jwk in &set.keys {
                let key = DecodingKey::from_jwk(jwk).map_err(|error| {
                    format!(
                        "jwt.jwks: a key in {} cannot verify: {error}",
                        path.display()
                    )
                })?;
                let algorithm = match &jwk.algorithm {
                    jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                    jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                    _ => {
                        return Err(format!(
                            "jwt.jwks: {} holds a key that is neither RSA nor EC",
                            path.display()
                        ));
                    }
                };
                keys.push(Key {
                    kid: jwk.common.key_id.clone(),
                    key,
                    algorithm,
                });
            }
        }
        if keys.is_empty() {
            return Err(
                "jwt.keys: expected PEM public keys or a jwks file to check tokens with".into(),
            );
        }
        let mut validation = Validation::new(Algorithm::ES256);
        validation.leeway = config.leeway_s;
        validation.validate_nbf = true;
        validation.set_issuer(&[config.issuer.trim()]);
        validation.set_audience(&[config.audience.trim()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        Ok(Some(Self {
            keys,
            validation,
            client_claim: config.client_claim.trim().to_owned(),
            asserted_claims: [
                config.user_claim.trim().to_owned(),
                config.role_claim.trim().to_owned(),
                config.purpose_claim.trim().to_owned(),
            ],
            verified: std::sync::Mutex::default(),
            leeway_s: config.leeway_s,
        }))
    }

    /// The client a valid `token` names (its `client_claim`), and what it
    /// asserts. A token verified before is answered from memory until its
    /// `exp` (with the leeway) has passed; then it is checked again, and
    /// refused as expired.
    pub fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        let now = unix_seconds();
        let mut verified = self
            .verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(cached) = verified.get(token) {
            if now <= cached.until {
                return Ok(cached.verified.clone());
            }
            verified.remove(token);
        }
        drop(verified);
        let (checked, exp) = self.verify_signed(token)?;
        let mut verified = self
            .verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if verified.len() >= VERIFIED_CACHE_ENTRIES {
            verified.retain(|_, cached| now <= cached.until);
            if verified.len() >= VERIFIED_CACHE_ENTRIES {
                verified.clear();
            }
        }
        verified.insert(
            token.to_owned(),
            Cached {
                verified: checked.clone(),
                until: exp.saturating_add(self.leeway_s),
            },
        );
        Ok(checked)
    }

    /// Checks `token`'s signature and claims; returns what it says and its
    /// `exp`.
    fn verify_signed(&self, token: &str) -> Result<(Verified, u64), TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(TokenError::from)?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
        }
        let mut validation = self.validation.clone();
        validation.algorithms = vec![header.alg];
        let candidates = self.keys.iter().filter(|key| {
            key.algorithm == header.alg
                && match (&header.kid, &key.kid) {
                    (Some(wanted), Some(kid)) => wanted == kid,
                    _ => true,
                }
        });
        let mut refused = TokenError::Signature;
        for key in candidates {
            match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                token,
                &key.key,
                &validation,
            ) {
                Ok(data) => {
                    let client = data
                        .claims
                        .get(&self.client_claim)
                        .and_then(serde_json::Value::as_str)
                        .filter(|client| !client.is_empty())
                        .map(str::to_owned)
                        .ok_or_else(|| TokenError::MissingClaim(self.client_claim.clone()))?;
                    let claim = |name: &str| {
                        data.claims
                            .get(name)
                            .and_then(serde_json::Value::as_str)
                            .map(crate::clients::asserted_value)
                            .unwrap_or_default()
                    };
                    let [user, role, purpose] = &self.asserted_claims;
                    let exp = data
                        .claims
                        .get("exp")
                        .and_then(|exp| exp.as_u64().or_else(|| exp.as_f64().map(|f| f as u64)))
                        .ok_or_else(|| TokenError::MissingClaim("exp".into()))?;
                    return Ok((
                        Verified {
                            client,
                            asserted: crate::Asserted {
                                user: claim(user),
                                role: claim(role),
                                purpose: claim(purpose),
                            },
                        },
                        exp,
                    ));
                }
                Err(error) => {
                    let error = TokenError::from(error);
                    if error != TokenError::Signature {
                        // The signature verified: what is wrong is the token.
                        return Err(error);
                    }
                    refused = error;
                }
            }
        }
        Err(refused)
    }
}

/// The token of an `authorization` header value `Bearer <token>` (the
/// scheme in any case); `None` when it is no such value.
pub fn bearer(value: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(value).ok()?;
    let (scheme, token) = text.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
