//! Who may see which patient, and the audit of what they saw.
//!
//! The auth layer ([`baton_runtime::auth`]) has already checked the
//! caller's identity and scope; here each state is checked against the
//! caller's limit to organisations or services ([`Limit`]) and every state
//! sent is recorded in the audit log before it goes.
//!
//! A limited client asking for a patient outside its limit and one asking
//! for a patient Baton does not know get the same `PERMISSION_DENIED`, so
//! the answer never says whether the patient exists.

use baton_audit::{Auditor, Caller, Outcome};
use baton_care::access::Limit;
use baton_proto::state::v1::PatientCareState;
use baton_tls::ClientIdentity;
use tonic::{Request, Status};

pub(crate) const GET_CARE_STATE: &str = "GetCareState";
pub(crate) const GET_CARE_STATE_AS_OF: &str = "GetCareStateAsOf";
pub(crate) const GET_TIMELINE: &str = "GetTimeline";
pub(crate) const LIST_COHORT: &str = "ListCohort";
pub(crate) const WATCH_COHORT: &str = "WatchCohort";

/// One call's caller, limit and audit.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    caller: Caller,
    limit: Limit,
    auditor: Auditor,
}

impl Access {
    /// The access of `request`.
    pub(crate) fn of<T>(auditor: &Auditor, request: &Request<T>) -> Self {
        let client = request.extensions().get::<ClientIdentity>();
        let limit = client.map_or_else(Limit::default, |client| {
            Limit::new(client.organisations.clone(), client.services.clone())
        });
        let metadata = request.metadata();
        let peer = request.remote_addr();
        Self {
            caller: Caller::of(client, metadata, peer),
            limit,
            auditor: auditor.clone(),
        }
    }

    pub(crate) fn is_limited(&self) -> bool {
        !self.limit.is_unlimited()
    }

    /// Whether the caller may see `state`.
    pub(crate) fn admits(&self, state: &PatientCareState) -> bool {
        self.limit.admits(state)
    }

    /// The limit, for filtering listings off the calling task.
    pub(crate) fn limit(&self) -> Limit {
        self.limit.clone()
    }

    /// The refusal of a patient outside the limit (or unknown), recorded.
    pub(crate) fn deny(&self, rpc: &str, patient_key: &str, requested: &str) -> Status {
        let client = self
            .caller
            .client
            .as_ref()
            .map_or("", |client| client.id.as_str());
        let message = format!(
            "client {client:?} may read only patients within its limit (clients table: organisations {:?}, services {:?}): this patient is outside it, or unknown",
            self.limit.organisations, self.limit.services
        );
        let mut record =
            self.auditor
                .entry(&self.caller, rpc, patient_key, requested, Outcome::Denied);
        record.detail.clone_from(&message);
        self.auditor.record_detached(vec![record]);
        Status::permission_denied(message)
    }

    /// Records a lookup of a patient Baton does not know (by a client
    /// without a limit), without waiting: no patient data is sent.
    pub(crate) fn not_found(&self, rpc: &str, patient_key: &str, requested: &str) {
        self.auditor.record_detached(vec![self.auditor.entry(
            &self.caller,
            rpc,
            patient_key,
            requested,
            Outcome::NotFound,
        )]);
    }

    /// Records that the states of `patient_keys` are being sent, durably
    /// before returning (or within the configured delay); `UNAVAILABLE`
    /// when the audit log cannot take the records.
    pub(crate) async fn read<'a>(
        &self,
        rpc: &str,
        patients: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), Status> {
        if !self.auditor.is_on() {
            return Ok(());
        }
        let records = patients
            .into_iter()
            .map(|(patient_key, requested)| {
                self.auditor
                    .entry(&self.caller, rpc, patient_key, requested, Outcome::Read)
            })
            .collect();
        self.auditor
            .record(records)
            .await
            .map_err(|error| error.status())
    }
}
