//! Which patients a limited client may see: those with a referral or an
//! episode to one of its services, or whose current organisation is one of
//! its organisations (ODS codes). The query service checks every state it
//! answers with against the caller's [`Limit`], and filters cohorts and
//! watches by it.

use std::collections::BTreeSet;

use baton_proto::state::v1::PatientCareState;

/// A client's limit. Empty (both sets): every patient.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limit {
    /// ODS codes: the patient's `setting_organisation` is one of them.
    pub organisations: BTreeSet<String>,
    /// Service codes: a referral or an episode of the patient's, at any
    /// status, is to one of them.
    pub services: BTreeSet<String>,
}

impl Limit {
    pub fn new(organisations: BTreeSet<String>, services: BTreeSet<String>) -> Self {
        Self {
            organisations,
            services,
        }
    }

    /// Whether this limit lets every patient through.
    pub fn is_unlimited(&self) -> bool {
        self.organisations.is_empty() && self.services.is_empty()
    }

    /// Whether a client with this limit may see `state`.
    ///
    /// A referral or episode counts whatever its status: a service that
    /// had the patient on its books keeps sight of their record, as its
    /// own clinical record would. The current organisation counts only
    /// while it is current.
    pub fn admits(&self, state: &PatientCareState) -> bool {
        if self.is_unlimited() {
            return true;
        }
        let to_a_service = |service: Option<&baton_proto::events::v1::Service>| {
            service.is_some_and(|service| self.services.contains(service.code.as_str()))
        };
        (!state.setting_organisation.is_empty()
            && self
                .organisations
                .contains(state.setting_organisation.as_str()))
            || state
                .referrals
                .iter()
                .any(|referral| to_a_service(referral.service.as_ref()))
            || state
                .episodes
                .iter()
                .any(|episode| to_a_service(episode.service.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_proto::events::v1::Service;
    use baton_proto::state::v1::{Episode, Referral};

    fn limit(organisations: &[&str], services: &[&str]) -> Limit {
        Limit::new(
            organisations.iter().map(|o| (*o).to_owned()).collect(),
            services.iter().map(|s| (*s).to_owned()).collect(),
        )
    }

    fn service(code: &str) -> Option<Service> {
        Some(Service {
            code: code.into(),
            ..Default::default()
        })
    }

    #[test]
    fn a_patient_is_within_by_organisation_referral_or_episode_only() {
        let nobody = PatientCareState::default();
        assert!(Limit::default().admits(&nobody));
        assert!(!limit(&["RR8"], &["FRAIL"]).admits(&nobody));

        let in_rr8 = PatientCareState {
            setting_organisation: "RR8".into(),
            ..Default::default()
        };
        assert!(limit(&["RR8"], &[]).admits(&in_rr8));
        assert!(!limit(&["RXX"], &["FRAIL"]).admits(&in_rr8));

        let referred = PatientCareState {
            referrals: vec![Referral {
                service: service("FRAIL"),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(limit(&[], &["FRAIL"]).admits(&referred));
        assert!(!limit(&["FRAIL"], &["OTHER"]).admits(&referred));

        let on_a_ward = PatientCareState {
            episodes: vec![Episode {
                service: service("VW-RESP"),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(limit(&[], &["VW-RESP"]).admits(&on_a_ward));
        assert!(!limit(&[], &["FRAIL"]).admits(&on_a_ward));
        // An empty organisation is nobody's.
        assert!(!limit(&[""], &[]).admits(&nobody));
    }
}
