//! Who is calling, from a request, and the records made of it.

use std::net::SocketAddr;
use std::time::SystemTime;

use baton_tls::{Asserted, Authentication as Authenticated, ClientIdentity, Refusal};
use tonic::metadata::MetadataMap;

use crate::{AssertedBy, AuditRecord, Auditor, Authentication, Outcome};

/// Metadata naming the end user behind a call (when no token claims do).
pub const METADATA_USER: &str = "x-baton-user";
/// Metadata naming the end user's role.
pub const METADATA_ROLE: &str = "x-baton-role";
/// Metadata naming the purpose of the access (e.g. "direct care").
pub const METADATA_PURPOSE: &str = "x-baton-purpose";

/// Who a call comes from: its client (when identified), the end user, role
/// and purpose asserted, and its address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    pub client: Option<ClientIdentity>,
    pub asserted: Asserted,
    pub asserted_by: Option<AssertedBy>,
    pub peer: Option<SocketAddr>,
}

impl Caller {
    /// The caller of a request: `client` as the auth layer identified it,
    /// the token's asserted claims or else the `x-baton-*` metadata.
    pub fn of(
        client: Option<&ClientIdentity>,
        metadata: &MetadataMap,
        peer: Option<SocketAddr>,
    ) -> Self {
        let from_token = client
            .map(|client| client.asserted.clone())
            .filter(|asserted| !asserted.is_empty());
        let (asserted, asserted_by) = match from_token {
            Some(asserted) => (asserted, AssertedBy::Token),
            None => {
                let value = |name: &str| {
                    metadata
                        .get(name)
                        .and_then(|value| value.to_str().ok())
                        .map(baton_tls::asserted_value)
                        .unwrap_or_default()
                };
                let asserted = Asserted {
                    user: value(METADATA_USER),
                    role: value(METADATA_ROLE),
                    purpose: value(METADATA_PURPOSE),
                };
                if asserted.is_empty() {
                    (asserted, AssertedBy::Nothing)
                } else {
                    (asserted, AssertedBy::Metadata)
                }
            }
        };
        Self {
            client: client.cloned(),
            asserted,
            asserted_by: Some(asserted_by),
            peer,
        }
    }

    /// The caller of a call the auth layer refused.
    pub fn of_refusal(refusal: &Refusal) -> Self {
        Self {
            client: refusal.client.clone(),
            asserted: refusal
                .client
                .as_ref()
                .map(|client| client.asserted.clone())
                .unwrap_or_default(),
            asserted_by: None,
            peer: refusal.peer,
        }
    }
}

impl Auditor {
    /// A record of `caller`'s `rpc` about `patient_key` (asked for as
    /// `requested`), with `outcome` and the status it answers with (`OK`,
    /// `NOT_FOUND`, `PERMISSION_DENIED`; set `status` and `detail` after
    /// for another).
    pub fn entry(
        &self,
        caller: &Caller,
        rpc: &str,
        patient_key: &str,
        requested: &str,
        outcome: Outcome,
    ) -> AuditRecord {
        let status = match outcome {
            Outcome::Read | Outcome::Unspecified => "OK",
            Outcome::NotFound => "NOT_FOUND",
            Outcome::Denied => "PERMISSION_DENIED",
        };
        let (service, host) = self.origin();
        let (seconds, nanos) = unix_now();
        let asserted_by = caller.asserted_by.unwrap_or(if caller.asserted.is_empty() {
            AssertedBy::Nothing
        } else {
            AssertedBy::Token
        });
        AuditRecord {
            record_id: uuid::Uuid::new_v4().to_string(),
            at: Some(prost_types::Timestamp { seconds, nanos }),
            service: service.to_owned(),
            host: host.to_owned(),
            client_id: caller
                .client
                .as_ref()
                .map(|client| client.id.clone())
                .unwrap_or_default(),
            authenticated_by: match caller.client.as_ref().map(|c| c.authenticated_by) {
                None => Authentication::None,
                Some(Authenticated::Certificate) => Authentication::ClientCertificate,
                Some(Authenticated::Token) => Authentication::BearerToken,
            } as i32,
            user: caller.asserted.user.clone(),
            role: caller.asserted.role.clone(),
            purpose: caller.asserted.purpose.clone(),
            asserted_by: asserted_by as i32,
            peer: caller.peer.map(|peer| peer.to_string()).unwrap_or_default(),
            rpc: rpc.to_owned(),
            patient_key: patient_key.to_owned(),
            requested: if requested == patient_key {
                String::new()
            } else {
                requested.to_owned()
            },
            outcome: outcome as i32,
            status: status.to_owned(),
            detail: String::new(),
        }
    }

    /// The hook that records every call the clients table refuses
    /// ([`baton_tls::Clients::with_refusal_hook`]).
    pub fn refusal_hook(&self) -> baton_tls::RefusalHook {
        let auditor = self.clone();
        baton_tls::RefusalHook::new(move |refusal| auditor.refused(&refusal))
    }

    /// Records a call the auth layer refused, without waiting.
    pub fn refused(&self, refusal: &Refusal) {
        let rpc = refusal.path.rsplit('/').next().unwrap_or(&refusal.path);
        let api = refusal
            .path
            .trim_start_matches('/')
            .split('.')
            .nth(1)
            .filter(|api| ["query", "ingest", "admin"].contains(api));
        let mut record = self.entry(&Caller::of_refusal(refusal), rpc, "", "", Outcome::Denied);
        refusal.code.clone_into(&mut record.status);
        refusal.message.clone_into(&mut record.detail);
        if let Some(api) = api {
            api.clone_into(&mut record.service);
        }
        self.record_detached(vec![record]);
    }
}

/// The log key of a record: the patient it is about, else its client.
pub(crate) fn key_of(record: &AuditRecord) -> Vec<u8> {
    if record.patient_key.is_empty() {
        format!("client:{}", record.client_id).into_bytes()
    } else {
        record.patient_key.clone().into_bytes()
    }
}

fn unix_now() -> (i64, i32) {
    match SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) => (since.as_secs() as i64, since.subsec_nanos() as i32),
        Err(_) => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn token_claims_win_over_metadata_and_metadata_is_recorded_otherwise() {
        let mut metadata = MetadataMap::new();
        metadata.insert(METADATA_USER, "555123456789".parse().unwrap());
        metadata.insert(METADATA_PURPOSE, " direct care\t".parse().unwrap());
        let by_metadata = Caller::of(None, &metadata, None);
        assert_eq!(by_metadata.asserted.user, "555123456789");
        assert_eq!(by_metadata.asserted.purpose, "direct care");
        assert_eq!(by_metadata.asserted_by, Some(AssertedBy::Metadata));

        let client = ClientIdentity {
            id: "board".into(),
            scopes: Default::default(),
            authenticated_by: Authenticated::Token,
            asserted: Asserted {
                user: "nurse-1".into(),
                role: "R8000".into(),
                purpose: String::new(),
            },
            organisations: Default::default(),
            services: Default::default(),
        };
        let by_token = Caller::of(Some(&client), &metadata, None);
        assert_eq!(by_token.asserted.user, "nurse-1");
        assert_eq!(by_token.asserted_by, Some(AssertedBy::Token));
        assert_eq!(
            Caller::of(None, &MetadataMap::new(), None).asserted_by,
            Some(AssertedBy::Nothing)
        );
    }

    proptest! {
        /// Whatever a caller sends as metadata, making its caller never
        /// panics, and what is recorded is bounded and free of control
        /// characters.
        #[test]
        fn any_metadata_makes_a_bounded_caller(
            user in proptest::collection::vec(any::<u8>(), 0..600),
            role in "\\PC{0,400}",
        ) {
            let mut metadata = MetadataMap::new();
            if let Ok(value) = tonic::metadata::MetadataValue::try_from(user.as_slice()) {
                metadata.insert(METADATA_USER, value);
            }
            if let Ok(value) = role.parse() {
                metadata.insert(METADATA_ROLE, value);
            }
            let caller = Caller::of(None, &metadata, None);
            for value in [&caller.asserted.user, &caller.asserted.role, &caller.asserted.purpose] {
                prop_assert!(value.chars().count() <= baton_tls::ASSERTED_MAX_CHARS);
                prop_assert!(!value.chars().any(char::is_control));
            }
        }
    }
}
