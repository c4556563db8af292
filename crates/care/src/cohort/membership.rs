//! A stored state decoded for the membership checks alone.
//!
//! A page of `ListCohort` checks each candidate against the whole filter
//! (and a client's [limit](crate::access::Limit)) before it answers with the
//! stored bytes as they are. Those checks read a small part of a state:
//! where the patient is, their episodes, referrals, frailty, discharge
//! dates, identifiers. Decoding the bytes as [`MembershipFields`], which
//! declares only those fields under their `PatientCareState` numbers, skips
//! the rest (the encounters' movements, histories and cancellations, the
//! care team, the care plan, the stamps): prost passes over a field it does
//! not know without allocating.
//!
//! **Every field that [`Cohort::matches`](super::Cohort::matches),
//! [`index_entries`](super::index_entries) or
//! [`Limit::admits`](crate::access::Limit::admits) reads must be declared
//! here.** The test `membership_decoding_answers_as_the_whole_state` (in
//! baton-synth, over generated populations) fails when one is not.

use baton_proto::events::v1::{Date, Demographics, Location, PatientIdentity, Service};
use baton_proto::state::v1::{
    Discharge, Encounter, Episode, FrailtyScore, MergeLink, PatientCareState, Referral,
};
use prost::Message;
use prost_types::Timestamp;

/// Decodes a stored `PatientCareState` with only the fields the membership
/// checks read; every other field is left at its default. The result is for
/// those checks, never to be served or stored.
pub fn decode_for_membership(stored: &[u8]) -> Result<PatientCareState, prost::DecodeError> {
    MembershipFields::decode(stored).map(MembershipFields::into_state)
}

/// The fields of `PatientCareState` the checks read, with the same numbers.
#[derive(Clone, PartialEq, Message)]
struct MembershipFields {
    #[prost(string, tag = "1")]
    patient_key: String,
    #[prost(message, optional, tag = "2")]
    identity: Option<PatientIdentity>,
    #[prost(message, optional, tag = "3")]
    demographics: Option<Demographics>,
    #[prost(int32, tag = "4")]
    setting: i32,
    #[prost(string, tag = "6")]
    setting_organisation: String,
    #[prost(message, optional, tag = "7")]
    active_encounter: Option<EncounterFields>,
    #[prost(message, optional, tag = "9")]
    last_discharge: Option<DischargeFields>,
    #[prost(message, repeated, tag = "10")]
    episodes: Vec<Episode>,
    #[prost(message, repeated, tag = "11")]
    referrals: Vec<ReferralFields>,
    #[prost(message, optional, tag = "13")]
    frailty: Option<FrailtyScore>,
    #[prost(bool, tag = "14")]
    medically_optimised: bool,
    #[prost(message, optional, tag = "15")]
    medically_optimised_since: Option<Timestamp>,
    #[prost(message, optional, tag = "16")]
    expected_discharge_date: Option<Date>,
    #[prost(message, optional, tag = "19")]
    merged_into: Option<MergeLink>,
}

/// Of the active encounter, where the patient is (their ward).
#[derive(Clone, PartialEq, Message)]
struct EncounterFields {
    #[prost(message, optional, tag = "8")]
    location: Option<Location>,
}

/// Of the last discharge, when it was.
#[derive(Clone, PartialEq, Message)]
struct DischargeFields {
    #[prost(message, optional, tag = "2")]
    discharged_at: Option<Timestamp>,
}

/// Of a referral, to whom, its status and when a response is due; not its
/// history.
#[derive(Clone, PartialEq, Message)]
struct ReferralFields {
    #[prost(message, optional, tag = "2")]
    service: Option<Service>,
    #[prost(message, optional, tag = "7")]
    respond_by: Option<Timestamp>,
    #[prost(int32, tag = "9")]
    status: i32,
}

impl MembershipFields {
    fn into_state(self) -> PatientCareState {
        PatientCareState {
            patient_key: self.patient_key,
            identity: self.identity,
            demographics: self.demographics,
            setting: self.setting,
            setting_organisation: self.setting_organisation,
            active_encounter: self.active_encounter.map(|encounter| Encounter {
                location: encounter.location,
                ..Encounter::default()
            }),
            last_discharge: self.last_discharge.map(|discharge| Discharge {
                discharged_at: discharge.discharged_at,
                ..Discharge::default()
            }),
            episodes: self.episodes,
            referrals: self
                .referrals
                .into_iter()
                .map(|referral| Referral {
                    service: referral.service,
                    respond_by: referral.respond_by,
                    status: referral.status,
                    ..Referral::default()
                })
                .collect(),
            frailty: self.frailty,
            medically_optimised: self.medically_optimised,
            medically_optimised_since: self.medically_optimised_since,
            expected_discharge_date: self.expected_discharge_date,
            merged_into: self.merged_into.map(Box::new),
            ..PatientCareState::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    const NHS: &str = "9434765919";
    const T0: i64 = 1_700_000_000;

    #[test]
    fn the_checked_fields_come_through_and_the_histories_stay_behind() {
        let state = state_of(vec![
            registered(
                NHS,
                T0,
                "SMITH",
                Some(Date {
                    year: 1940,
                    month: 5,
                    day: 17,
                }),
            ),
            admitted(NHS, "V1", T0 + 10, "WARD-7"),
            transferred(NHS, "V1", T0 + 20, "WARD-9"),
            frailty_assessed(NHS, T0 + 30, 6),
            referral_requested(NHS, "R1", "DN01", T0 + 40, T0 + 3_600),
            medically_optimised(NHS, "V1", T0 + 50),
        ]);
        let lean = decode_for_membership(&state.encode_to_vec()).unwrap();
        assert_eq!(lean.patient_key, state.patient_key);
        assert_eq!(lean.setting, state.setting);
        assert_eq!(lean.setting_organisation, state.setting_organisation);
        assert_eq!(lean.identity, state.identity);
        assert_eq!(lean.episodes, state.episodes);
        assert_eq!(
            lean.active_encounter.as_ref().map(|e| &e.location),
            state.active_encounter.as_ref().map(|e| &e.location)
        );
        assert_eq!(
            super::super::index_entries(&lean),
            super::super::index_entries(&state)
        );
        assert!(lean.past_encounters.is_empty() && lean.care_team.is_empty());
        assert!(lean.encoded_len() < state.encoded_len());
    }

    #[test]
    fn bytes_that_are_not_a_state_are_an_error() {
        assert!(decode_for_membership(&[0x0a, 0xff]).is_err());
    }
}
