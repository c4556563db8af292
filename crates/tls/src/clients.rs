//! Client identities: the `clients` table of a service maps the names in a
//! client certificate (its subject's common name or a DNS SAN, from the CA
//! of `tls.client_ca`) to a client id and the scopes it holds.
//!
//! ```toml
//! [[query.clients]]
//! id = "frailty-board"
//! certificate_names = ["frailty-board.leeds.nhs.uk"]
//! scopes = ["read", "cohort", "watch"]
//! # optional: only patients with a referral or episode to these services,
//! # or whose current organisation is one of these ODS codes
//! services = ["FRAILTY-LTH"]
//! organisations = ["RR8"]
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Scope {
    /// Publish care events (`CareEventIngest.Publish`).
    Publish,
    /// Send HL7 v2 over MLLP.
    Hl7,
    /// Read a patient's current care state (`GetCareState`).
    Read,
    /// List cohorts (`ListCohort`).
    Cohort,
    /// Watch cohorts (`WatchCohort`).
    Watch,
    /// Read timelines and as-of states (`GetTimeline`, `GetCareStateAsOf`).
    Timeline,
    /// The admin API (`baton.admin.v1.Operations`).
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Scope::Publish,
        Scope::Hl7,
        Scope::Read,
        Scope::Cohort,
        Scope::Watch,
        Scope::Timeline,
        Scope::Admin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scope::Publish => "publish",
            Scope::Hl7 => "hl7",
            Scope::Read => "read",
            Scope::Cohort => "cohort",
            Scope::Watch => "watch",
            Scope::Timeline => "timeline",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.name() == text.trim())
            .ok_or_else(|| {
                format!(
                    "{text:?} is not a scope: expected one of publish, hl7, read, cohort, watch, timeline, admin"
                )
            })
    }
}

impl TryFrom<String> for Scope {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<Scope> for String {
    fn from(scope: Scope) -> Self {
        scope.name().to_owned()
    }
}

/// One row of the `clients` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    /// The client's id, in logs and (later) audit records.
    pub id: String,
    /// Names a certificate of this client carries: its subject's common
    /// name or one of its DNS subject alternative names.
    #[serde(default)]
    pub certificate_names: Vec<String>,
    /// Values of the token claim `jwt.client_claim` (default `sub`) that
    /// name this client in a bearer token.
    #[serde(default)]
    pub token_subjects: Vec<String>,
    pub scopes: BTreeSet<Scope>,
    /// A limit to organisations: the client reads only patients whose
    /// current organisation (`setting_organisation`) is one of these ODS
    /// codes, or who are within `services`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub organisations: Vec<String>,
    /// A limit to services: the client reads only patients with a referral
    /// or an episode to one of these service codes, or who are within
    /// `organisations`. Neither set: no limit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
}

/// How a client proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authentication {
    /// A TLS client certificate the clients table names.
    Certificate,
    /// A signed bearer token (JWT).
    Token,
}

/// Who the caller says is behind a call: the end user, their role and the
/// purpose of the access. Asserted, not proved: a token's claims, or the
/// `x-baton-user`, `x-baton-role` and `x-baton-purpose` metadata, recorded
/// in the audit log as the caller gave them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Asserted {
    pub user: String,
    pub role: String,
    pub purpose: String,
}

impl Asserted {
    pub fn is_empty(&self) -> bool {
        self.user.is_empty() && self.role.is_empty() && self.purpose.is_empty()
    }
}

/// Longest asserted value kept, in characters.
pub const ASSERTED_MAX_CHARS: usize = 256;

/// An asserted value as it is recorded: control characters dropped,
/// surrounding space trimmed, at most [`ASSERTED_MAX_CHARS`] characters.
/// Never fails: whatever a caller sends is recorded, not refused.
pub fn asserted_value(raw: &str) -> String {
    raw.chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .chars()
        .take(ASSERTED_MAX_CHARS)
        .collect::<String>()
        .trim_end()
        .to_owned()
}

/// The client a call comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub id: String,
    pub scopes: BTreeSet<Scope>,
    pub authenticated_by: Authentication,
    /// What a token's claims assert; empty for a certificate.
    pub asserted: Asserted,
    /// The client's limit (see [`ClientEntry::organisations`]); both empty:
    /// none.
    pub organisations: BTreeSet<String>,
    pub services: BTreeSet<String>,
}

impl ClientIdentity {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// Whether the client reads only some patients.
    pub fn is_limited(&self) -> bool {
        !self.organisations.is_empty() || !self.services.is_empty()
    }

    fn of(entry: &ClientEntry, authenticated_by: Authentication, asserted: Asserted) -> Self {
        Self {
            id: entry.id.clone(),
            scopes: entry.scopes.clone(),
            authenticated_by,
            asserted,
            organisations: entry
                .organisations
                .iter()
                .map(|o| o.trim().to_owned())
                .collect(),
            services: entry.services.iter().map(|s| s.trim().to_owned()).collect(),
        }
    }
}

/// A call the clients table refused, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The gRPC path, `/package.Service/Method`.
    pub path: String,
    /// The client, when it was identified (refused for a scope).
    pub client: Option<ClientIdentity>,
    /// The gRPC status code answered, by name (`UNAUTHENTICATED`,
    /// `PERMISSION_DENIED`).
    pub code: &'static str,
    /// What the caller was told.
    pub message: String,
    /// The caller's address.
    pub peer: Option<std::net::SocketAddr>,
}

/// Told of every refused call ([`Clients::with_refusal_hook`]).
#[derive(Clone)]
pub struct RefusalHook(std::sync::Arc<dyn Fn(Refusal) + Send + Sync>);

impl RefusalHook {
    pub fn new(hook: impl Fn(Refusal) + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(hook))
    }
}

impl std::fmt::Debug for RefusalHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefusalHook")
    }
}

/// The `clients` table, checked, and the verifier of bearer tokens.
#[derive(Debug, Clone, Default)]
pub struct Clients {
    entries: Vec<ClientEntry>,
    tokens: Option<std::sync::Arc<crate::tokens::TokenVerifier>>,
    refusals: Option<RefusalHook>,
}

impl Clients {
    /// Checks `entries`: ids present and distinct, each with a certificate
    /// name, no certificate name given to two clients.
    pub fn new(entries: &[ClientEntry]) -> Result<Self, String> {
        let mut ids = BTreeSet::new();
        let mut names = BTreeSet::new();
        for (index, entry) in entries.iter().enumerate() {
            if entry.id.trim().is_empty() {
                return Err(format!("clients[{index}].id: expected a client id"));
            }
            if !ids.insert(entry.id.as_str()) {
                return Err(format!(
                    "clients[{index}].id: {:?} is already the id of another client",
                    entry.id
                ));
            }
            if entry.certificate_names.is_empty() && entry.token_subjects.is_empty() {
                return Err(format!(
                    "clients[{index}].certificate_names: expected the names of client {:?}'s certificate (subject common name or DNS SAN), or token_subjects",
                    entry.id
                ));
            }
            for (field, codes) in [
                ("organisations", &entry.organisations),
                ("services", &entry.services),
            ] {
                if codes.iter().any(|code| code.trim().is_empty()) {
                    return Err(format!(
                        "clients[{index}].{field}: an empty code: expected {} codes, e.g. {}",
                        if field == "services" {
                            "service"
                        } else {
                            "ODS"
                        },
                        if field == "services" {
                            "\"FRAILTY-LTH\""
                        } else {
                            "\"RR8\""
                        },
                    ));
                }
            }
            for name in &entry.certificate_names {
                if !names.insert(name.as_str()) {
                    return Err(format!(
                        "clients[{index}].certificate_names: {name:?} already names another client"
                    ));
                }
            }
        }
        Ok(Self {
            entries: entries.to_vec(),
            tokens: None,
            refusals: None,
        })
    }

    /// Telling `hook` of every call refused (for the audit log).
    pub fn with_refusal_hook(mut self, hook: RefusalHook) -> Self {
        self.refusals = Some(hook);
        self
    }

    /// Tells the refusal hook, if any, of `refusal`.
    pub fn refused(&self, refusal: Refusal) {
        if let Some(hook) = &self.refusals {
            (hook.0)(refusal);
        }
    }

    /// Accepting bearer tokens checked by `verifier`.
    pub fn with_tokens(mut self, verifier: Option<crate::tokens::TokenVerifier>) -> Self {
        self.tokens = verifier.map(std::sync::Arc::new);
        self
    }

    /// The client a bearer `token` names.
    pub fn by_token(&self, token: &str) -> Result<ClientIdentity, crate::tokens::TokenError> {
        let Some(verifier) = &self.tokens else {
            return Err(crate::tokens::TokenError::NotAccepted);
        };
        let verified = verifier.verify(token)?;
        self.entries
            .iter()
            .find(|entry| entry.token_subjects.contains(&verified.client))
            .map(|entry| ClientIdentity::of(entry, Authentication::Token, verified.asserted))
            .ok_or(crate::tokens::TokenError::UnknownClient)
    }

    /// Whether any client is configured: then every call needs an identity.
    pub fn is_enforced(&self) -> bool {
        !self.entries.is_empty()
    }

    /// The client whose certificate `der` (the leaf, DER) is.
    pub fn by_certificate(&self, der: &[u8]) -> Option<ClientIdentity> {
        let names = certificate_names(der);
        self.entries
            .iter()
            .find(|entry| {
                entry
                    .certificate_names
                    .iter()
                    .any(|name| names.iter().any(|have| have == name))
            })
            .map(|entry| {
                ClientIdentity::of(entry, Authentication::Certificate, Asserted::default())
            })
    }
}

/// The subject common names and DNS SANs of the certificate `der`; none
/// when it does not parse.
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    let Ok((_, certificate)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = certificate
        .subject()
        .iter_common_name()
        .filter_map(|name| name.as_str().ok().map(str::to_owned))
        .collect();
    if let Ok(Some(san)) = certificate.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push((*dns).to_owned());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_read_by_name_and_unknown_ones_named() {
        for scope in Scope::ALL {
            assert_eq!(scope.name().parse::<Scope>().unwrap(), scope);
        }
        let error = "write".parse::<Scope>().unwrap_err();
        assert!(error.contains("\"write\" is not a scope") && error.contains("timeline"));
    }

    #[test]
    fn the_table_refuses_duplicates_and_clients_without_names() {
        let entry = |id: &str, names: &[&str]| ClientEntry {
            id: id.into(),
            certificate_names: names.iter().map(|n| (*n).to_owned()).collect(),
            token_subjects: Vec::new(),
            scopes: BTreeSet::from([Scope::Read]),
            organisations: Vec::new(),
            services: Vec::new(),
        };
        assert!(Clients::new(&[]).unwrap().is_enforced().eq(&false));
        let twice = Clients::new(&[entry("a", &["x"]), entry("a", &["y"])]).unwrap_err();
        assert!(twice.starts_with("clients[1].id:"), "{twice}");
        let shared = Clients::new(&[entry("a", &["x"]), entry("b", &["x"])]).unwrap_err();
        assert!(
            shared.starts_with("clients[1].certificate_names:"),
            "{shared}"
        );
        let nameless = Clients::new(&[entry("a", &[])]).unwrap_err();
        assert!(
            nameless.starts_with("clients[0].certificate_names:"),
            "{nameless}"
        );
        assert!(certificate_names(b"not a certificate").is_empty());
    }
}
