//! Tests of the fold: one per payload, one per correction, late and
//! duplicate events, cohorts, purity, and properties over generated journeys.
//!
//! # Layout
//! - `feeds.rs`: what real ADT feeds send: cancellations matched to what
//!   they cancel in any arrival order, ties in time, attendances, class
//!   changes that move the patient, planned moves, visits moved between
//!   patients, identifiers changed;
//! - helpers: building, applying and comparing states;
//! - payloads, corrections, late events, duplicates, merges, cohorts;
//! - purity: the crate reads no clock;
//! - properties (proptest): a generator of journeys for one patient, and
//!   replay twice with duplicates, any arrival order, no wall clock.

use baton_proto::events::v1::{
    AdministrativeSex, AdmissionMethod, CareEvent, CarePlanChanged, CarePlanStatus, CareTeamMember,
    CareTeamMemberAssigned, CareTeamMemberRemoved, Coding, Date, Demographics, DetailsUpdated,
    Died, DischargeDestination, DischargeMethod, Discharged, EpisodeEndReason,
    ExpectedDischargeDateSet, Goal, LeaveEnded, LeaveStarted, LocalIdentifier, MedicallyOptimised,
    MedicallyOptimisedRevoked, NhsNumberStatus, PatientClass, PatientClassChanged, PatientIdentity,
    PreAdmitted, ReferralAccepted, ReferralCancelled, ReferralCompleted, ReferralPriority,
    ReferralRejected, ReferralRequested, Registered, Service, care_event::Payload,
};
use baton_proto::state::v1::{
    CancelMatch, CareSetting, Discharge, Encounter, EncounterStatus, EpisodeStatus, FactStamp,
    LocationStay, MergeKind, MergeLink, MovementKind, PatientCareState, ReferralStatus,
};
use proptest::prelude::*;
use prost::Message;
use prost_types::Timestamp;
use uuid::Uuid;

use super::{Applied, Effect, Rejection, apply, new_state};
use crate::LogPosition;
use crate::cohort::{Cohort, index_entries};
use crate::fixtures::{
    ORGANISATION, admission_cancelled, admitted, discharge_cancelled, discharged, encounter_event,
    episode_ended, event, frailty_assessed, identity, patients_merged, recorded_at, timestamp,
    transfer_cancelled, transferred, virtual_ward_started, ward,
};
use crate::{BATON_NAMESPACE, EventId, PatientKey, ValidEvent};

mod feeds;
mod oracle;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const NHS: &str = "9434765919";
const RETIRED_NHS: &str = "4010232137";
/// 2023-11-14T22:13:20Z: clinical times in the tests are hours after it.
const T0: i64 = 1_700_000_000;
const HOUR: i64 = 3_600;
const DAY: i64 = 24 * HOUR;

/// `hours` after [`T0`], in seconds.
fn at(hours: i64) -> i64 {
    T0 + hours * HOUR
}

fn ts(seconds: i64) -> Option<Timestamp> {
    Some(timestamp(seconds))
}

fn valid(event: &CareEvent) -> ValidEvent {
    ValidEvent::new(event.clone()).unwrap_or_else(|e| panic!("test events are valid: {e}"))
}

/// A state being folded and the ids applied to it, which the fold keeps
/// beside the state ([`crate::AppliedEvents`]); reads as the state.
#[derive(Debug, Clone, PartialEq)]
struct Folding {
    state: PatientCareState,
    applied: crate::AppliedIds,
}

impl std::ops::Deref for Folding {
    type Target = PatientCareState;

    fn deref(&self) -> &PatientCareState {
        &self.state
    }
}

impl std::ops::DerefMut for Folding {
    fn deref_mut(&mut self) -> &mut PatientCareState {
        &mut self.state
    }
}

impl From<Folding> for PatientCareState {
    fn from(folding: Folding) -> Self {
        folding.state
    }
}

fn empty_state(nhs: &str) -> Folding {
    Folding {
        state: new_state(&PatientKey::parse(nhs).expect("a valid NHS number")),
        applied: crate::AppliedIds::new(),
    }
}

/// The position after the last event applied to `state`, as if its
/// events were the records of one partition, one after another.
fn next(state: &PatientCareState) -> LogPosition {
    LogPosition::new(0, state.applied.as_ref().map_or(0, |a| a.offset + 1))
}

/// Applies `event` at the position after the last one applied.
fn apply_next(folding: &mut Folding, event: &CareEvent) -> Result<Applied, Rejection> {
    let position = next(folding);
    let Folding { state, applied } = folding;
    apply(state, applied, &valid(event), position)
}

/// Applies `event`, which must change the state, and returns its effects.
fn apply_changed(state: &mut Folding, event: &CareEvent) -> Vec<Effect> {
    match apply_next(state, event) {
        Ok(Applied::Changed { effects }) => effects,
        other => panic!("{:?} should change the state, got {other:?}", event.payload),
    }
}

/// The state of patient [`NHS`] after `events`, each of which must change it.
fn fold(events: &[CareEvent]) -> Folding {
    let mut state = empty_state(NHS);
    for event in events {
        apply_changed(&mut state, event);
    }
    state
}

/// `state` after `events`, each of which must change it.
fn fold_onto(mut state: Folding, events: &[CareEvent]) -> Folding {
    for event in events {
        apply_changed(&mut state, event);
    }
    state
}

/// Replays `events` as the projector does: a rejection is dead-lettered and
/// the replay goes on. Returns the state and what each event did.
fn replay(events: &[CareEvent]) -> (Folding, Vec<Result<Applied, Rejection>>) {
    let mut state = empty_state(NHS);
    let outcomes = events
        .iter()
        .map(|event| apply_next(&mut state, event))
        .collect();
    (state, outcomes)
}

/// Without the fields that say which events were applied and when they were
/// recorded (`version`, `last_occurred_at`,
/// `last_recorded_at`, `applied`) rather than anything about the patient's
/// care: a correction is itself an applied event, so it moves them on.
fn without_bookkeeping(state: impl Into<PatientCareState>) -> PatientCareState {
    let mut state = state.into();
    state.version = 0;
    state.last_occurred_at = None;
    state.last_recorded_at = None;
    state.applied = None;
    state
}

/// As [`without_bookkeeping`], and without the audit trail a correction
/// leaves behind by design: movements entered in error stay in their
/// encounter, marked `cancelled_by_event_id`, and an encounter whose every
/// admission was entered in error stays in `past_encounters` as
/// `ENCOUNTER_STATUS_CANCELLED`. What remains is what the state says about
/// the patient, which a correction must restore exactly.
fn without_corrections(state: impl Into<PatientCareState>) -> PatientCareState {
    let mut state = without_bookkeeping(state);
    let in_effect = |mut encounter: Encounter| {
        encounter
            .movements
            .retain(|m| m.cancelled_by_event_id.is_empty());
        encounter.cancellations.clear();
        encounter
    };
    state.active_encounter = state.active_encounter.take().map(in_effect);
    // A cancelled stay, or one known only from a cancellation still waiting
    // for what it cancels, says nothing about the patient.
    state.past_encounters = std::mem::take(&mut state.past_encounters)
        .into_iter()
        .filter(|e| e.status() != EncounterStatus::Cancelled)
        .map(in_effect)
        .filter(|e| !e.movements.is_empty())
        .collect();
    state
}

/// The state with the fields that legitimately depend on the order events
/// arrive in made order-free: the log positions kept with each fact and
/// movement say where each event arrived, so they are cleared (with
/// distinct clinical times they decide nothing). `version` (a count) and
/// `last_occurred_at` / `last_recorded_at` (maxima) do not depend on the
/// order, so they are compared as they are.
fn arrival_order_free(state: impl Into<PatientCareState>) -> PatientCareState {
    let mut state = state.into();
    without_positions(&mut state);
    state
}

/// Clears every log position kept in `state` but the last applied one.
fn without_positions(state: &mut PatientCareState) {
    fn clear(stamp: &mut Option<FactStamp>) {
        if let Some(stamp) = stamp {
            stamp.position = None;
        }
    }
    for encounter in state
        .active_encounter
        .iter_mut()
        .chain(state.past_encounters.iter_mut())
    {
        for movement in &mut encounter.movements {
            movement.position = None;
        }
        for cancellation in &mut encounter.cancellations {
            cancellation.position = None;
        }
        if let Some(optimisation) = &mut encounter.medical_optimisation {
            clear(&mut optimisation.stamp);
            for fact in &mut optimisation.history {
                clear(&mut fact.stamp);
            }
        }
        if let Some(expected) = &mut encounter.expected_discharge {
            clear(&mut expected.stamp);
        }
    }
    for referral in &mut state.referrals {
        for transition in &mut referral.history {
            clear(&mut transition.stamp);
        }
    }
    if let Some(frailty) = &mut state.frailty {
        clear(&mut frailty.stamp);
    }
    for entry in &mut state.care_team {
        clear(&mut entry.stamp);
        for change in &mut entry.history {
            clear(&mut change.stamp);
        }
    }
    if let Some(death) = &mut state.death {
        clear(&mut death.stamp);
    }
    clear(&mut state.demographics_stamp);
    if let Some(stamps) = &mut state.demographics_field_stamps {
        for stamp in [
            &mut stamps.family_name,
            &mut stamps.given_name,
            &mut stamps.birth_date,
            &mut stamps.sex,
            &mut stamps.postcode,
            &mut stamps.gp_practice,
        ] {
            clear(stamp);
        }
    }
    clear(&mut state.nhs_number_status_stamp);
}

fn active(state: &PatientCareState) -> &Encounter {
    state
        .active_encounter
        .as_ref()
        .expect("an encounter is active")
}

fn point_of_care(encounter: &Encounter) -> &str {
    encounter
        .location
        .as_ref()
        .map_or("", |l| l.point_of_care.as_str())
}

/// The wards of the location history with their times, in hours after T0.
fn stays(encounter: &Encounter) -> Vec<(String, i64, Option<i64>)> {
    let hours = |t: &Timestamp| (t.seconds - T0) / HOUR;
    encounter
        .location_history
        .iter()
        .map(|stay: &LocationStay| {
            (
                stay.location
                    .as_ref()
                    .map(|l| l.point_of_care.clone())
                    .unwrap_or_default(),
                stay.from.as_ref().map(hours).unwrap_or(i64::MIN),
                stay.until.as_ref().map(hours),
            )
        })
        .collect()
}

fn stay(ward: &str, from: i64, until: Option<i64>) -> (String, i64, Option<i64>) {
    (ward.to_owned(), from, until)
}

/// The stamp `event` gets when applied at `offset`.
fn stamp_of(event: &CareEvent, offset: u64) -> FactStamp {
    FactStamp {
        occurred_at: event.occurred_at,
        recorded_at: event.recorded_at,
        event_id: valid(event).event().event_id.clone(),
        position: Some(LogPosition::new(0, offset).into()),
    }
}

fn cohort(setting: CareSetting, ward: Option<&str>) -> Cohort {
    Cohort {
        setting: Some(setting),
        ward: ward.map(str::to_owned),
        ..Cohort::default()
    }
}

// Builders for payloads the fixtures leave out.

fn demographics(family_name: &str, postcode: &str) -> Demographics {
    Demographics {
        family_name: family_name.to_owned(),
        postcode: postcode.to_owned(),
        ..Default::default()
    }
}

fn registered(seconds: i64, demographics: Demographics) -> CareEvent {
    event(
        NHS,
        seconds,
        Some(Payload::Registered(Registered {
            demographics: Some(demographics),
        })),
    )
}

fn details_updated(seconds: i64, demographics: Demographics) -> CareEvent {
    event(
        NHS,
        seconds,
        Some(Payload::DetailsUpdated(DetailsUpdated {
            demographics: Some(demographics),
        })),
    )
}

fn leave_started(encounter_id: &str, seconds: i64, expected_return: i64) -> CareEvent {
    encounter_event(
        NHS,
        encounter_id,
        seconds,
        Payload::LeaveStarted(LeaveStarted {
            expected_return_at: ts(expected_return),
        }),
    )
}

fn leave_ended(encounter_id: &str, seconds: i64) -> CareEvent {
    encounter_event(
        NHS,
        encounter_id,
        seconds,
        Payload::LeaveEnded(LeaveEnded {}),
    )
}

fn class_changed(encounter_id: &str, seconds: i64, class: PatientClass) -> CareEvent {
    encounter_event(
        NHS,
        encounter_id,
        seconds,
        Payload::PatientClassChanged(PatientClassChanged {
            patient_class: class as i32,
            ..Default::default()
        }),
    )
}

fn discharged_to(
    encounter_id: &str,
    seconds: i64,
    method: DischargeMethod,
    destination: DischargeDestination,
    organisation: &str,
) -> CareEvent {
    encounter_event(
        NHS,
        encounter_id,
        seconds,
        Payload::Discharged(Discharged {
            method: method as i32,
            destination: destination as i32,
            disposition_code: "01".to_owned(),
            destination_code: "19".to_owned(),
            destination_organisation: organisation.to_owned(),
        }),
    )
}

fn died(seconds: i64, died_at: Option<i64>) -> CareEvent {
    event(
        NHS,
        seconds,
        Some(Payload::Died(Died {
            died_at: died_at.map(timestamp),
        })),
    )
}

fn referral_requested(seconds: i64, referral_id: &str) -> CareEvent {
    event(
        NHS,
        seconds,
        Some(Payload::ReferralRequested(ReferralRequested {
            referral_id: referral_id.to_owned(),
            service: Some(Service {
                code: "FRAILTY-RXX".to_owned(),
                name: "Frailty service".to_owned(),
                organisation: ORGANISATION.to_owned(),
            }),
            priority: ReferralPriority::Urgent as i32,
            reason: Some(Coding {
                system: "http://snomed.info/sct".to_owned(),
                code: "248279007".to_owned(),
                display: "Frailty".to_owned(),
            }),
            referring_organisation: "B82005".to_owned(),
            respond_by: ts(seconds + 2 * DAY),
            original_referral_id: String::new(),
        })),
    )
}

/// A status change of a referral: accepted, rejected, cancelled or completed.
fn referral_status(seconds: i64, referral_id: &str, status: ReferralStatus) -> CareEvent {
    let referral_id = referral_id.to_owned();
    let reason = format!("{} by the service", status.as_str_name());
    let payload = match status {
        ReferralStatus::Accepted => Payload::ReferralAccepted(ReferralAccepted { referral_id }),
        ReferralStatus::Rejected => Payload::ReferralRejected(ReferralRejected {
            referral_id,
            reason,
        }),
        ReferralStatus::Cancelled => Payload::ReferralCancelled(ReferralCancelled {
            referral_id,
            reason,
        }),
        ReferralStatus::Completed => Payload::ReferralCompleted(ReferralCompleted { referral_id }),
        ReferralStatus::Requested | ReferralStatus::Unspecified => {
            panic!("use referral_requested")
        }
    };
    event(NHS, seconds, Some(payload))
}

fn care_plan(seconds: i64, care_plan_id: &str, version: u32) -> CareEvent {
    event(
        NHS,
        seconds,
        Some(Payload::CarePlanChanged(CarePlanChanged {
            care_plan_id: care_plan_id.to_owned(),
            version,
            status: CarePlanStatus::Active as i32,
            goals: vec![Goal {
                goal_id: format!("{care_plan_id}-G{version}"),
                description: format!("goal of version {version}"),
                target_date: None,
            }],
            interventions: Vec::new(),
            episode_id: String::new(),
        })),
    )
}

/// Medically optimised (or revoked) for `encounter_id`, or for the
/// encounter in progress when it is empty.
fn medically_optimised(encounter_id: &str, seconds: i64, optimised: bool) -> CareEvent {
    let payload = if optimised {
        Payload::MedicallyOptimised(MedicallyOptimised {})
    } else {
        Payload::MedicallyOptimisedRevoked(MedicallyOptimisedRevoked {
            reason: "deteriorated".to_owned(),
        })
    };
    encounter_event(NHS, encounter_id, seconds, payload)
}

fn date(year: i32, month: i32, day: i32) -> Date {
    Date { year, month, day }
}

fn expected_discharge(encounter_id: &str, seconds: i64, day: i32) -> CareEvent {
    encounter_event(
        NHS,
        encounter_id,
        seconds,
        Payload::ExpectedDischargeDateSet(ExpectedDischargeDateSet {
            expected_discharge_date: Some(date(2023, 12, day)),
        }),
    )
}

fn care_team_assigned(seconds: i64, member_id: &str, role: &str) -> CareEvent {
    event(
        NHS,
        seconds,
        Some(Payload::CareTeamMemberAssigned(CareTeamMemberAssigned {
            member: Some(CareTeamMember {
                member_id: member_id.to_owned(),
                name: format!("Member {member_id}"),
                role: Some(Coding {
                    system: "local".to_owned(),
                    code: role.to_owned(),
                    display: role.to_owned(),
                }),
                organisation: ORGANISATION.to_owned(),
            }),
        })),
    )
}

fn care_team_removed(seconds: i64, member_id: &str) -> CareEvent {
    event(
        NHS,
        seconds,
        Some(Payload::CareTeamMemberRemoved(CareTeamMemberRemoved {
            member_id: member_id.to_owned(),
        })),
    )
}

// ---------------------------------------------------------------------------
// One test per payload
// ---------------------------------------------------------------------------

#[test]
fn registration_records_demographics_identity_and_bookkeeping() {
    let registration = registered(
        at(0),
        Demographics {
            family_name: "Smith".into(),
            given_name: "Ann".into(),
            birth_date: Some(date(1940, 2, 29)),
            sex: AdministrativeSex::Female as i32,
            postcode: "LS1 4AP".into(),
            gp_practice: "B82005".into(),
        },
    );
    let state = fold(std::slice::from_ref(&registration));

    let demographics = state.demographics.as_ref().unwrap();
    assert_eq!(demographics.family_name, "Smith");
    assert_eq!(demographics.birth_date, Some(date(1940, 2, 29)));
    assert_eq!(demographics.sex(), AdministrativeSex::Female);
    assert_eq!(state.demographics_stamp, Some(stamp_of(&registration, 0)));
    assert_eq!(state.identity.as_ref().unwrap().nhs_number, NHS);
    assert_eq!(state.patient_key, NHS);
    assert_eq!(state.version, 1);
    assert_eq!(
        crate::AppliedEvents::of_patient(&state.applied, NHS),
        vec![EventId::parse(&registration.event_id).unwrap()]
    );
    // Beside the state, not in it.
    #[allow(deprecated)]
    let in_state = &state.applied_event_ids;
    assert!(in_state.is_empty());
    assert_eq!(state.last_occurred_at, ts(at(0)));
    assert_eq!(state.last_recorded_at, ts(at(0)));
    // Nothing else is known: living in the community.
    assert_eq!(state.setting(), CareSetting::Community);
    assert_eq!(state.setting_since, None);
    assert_eq!(state.active_encounter, None);
}

#[test]
fn details_are_last_writer_wins_by_clinical_time() {
    let newer = details_updated(at(2), demographics("Jones", ""));
    // Occurred before `newer`, recorded after it.
    let older = recorded_at(
        details_updated(
            at(1),
            Demographics {
                family_name: "Brown".into(),
                postcode: "YO1 7HH".into(),
                gp_practice: "B82005".into(),
                ..Default::default()
            },
        ),
        at(3),
    );
    let state = fold(&[
        registered(at(0), demographics("Smith", "LS1 4AP")),
        newer.clone(),
        older.clone(),
    ]);

    let demographics = state.demographics.clone().unwrap();
    // The newer update replaced the field it carries and kept the others.
    assert_eq!(demographics.family_name, "Jones");
    // The older update, recorded later, is still newer than the
    // registration: it replaced the postcode and filled a blank, but not
    // the name the newer update set.
    assert_eq!(demographics.postcode, "YO1 7HH");
    assert_eq!(demographics.gp_practice, "B82005");
    assert_eq!(state.demographics_stamp, Some(stamp_of(&newer, 1)));
    let stamps = state.state.demographics_field_stamps.unwrap();
    assert_eq!(stamps.family_name, Some(stamp_of(&newer, 1)));
    assert_eq!(stamps.postcode, Some(stamp_of(&older, 2)));
    assert_eq!(stamps.given_name, None);
}

#[test]
fn pre_admission_plans_an_encounter_and_admission_starts_it() {
    let pre_admission = encounter_event(
        NHS,
        "V1",
        at(0),
        Payload::PreAdmitted(PreAdmitted {
            expected_location: Some(ward("WARD-5")),
            expected_admission_at: ts(at(24)),
            patient_class: PatientClass::Inpatient as i32,
            admission_method: AdmissionMethod::Elective as i32,
        }),
    );
    let planned = fold(std::slice::from_ref(&pre_admission));
    let encounter = active(&planned);
    assert_eq!(encounter.encounter_id, "V1");
    assert_eq!(encounter.status(), EncounterStatus::Planned);
    assert_eq!(point_of_care(encounter), "WARD-5");
    assert_eq!(encounter.expected_admission_at, ts(at(24)));
    assert_eq!(encounter.admission_method(), AdmissionMethod::Elective);
    assert_eq!(encounter.admitted_at, None);
    assert!(encounter.location_history.is_empty());
    assert_eq!(encounter.movements[0].kind(), MovementKind::PreAdmission);
    // Not in a bed yet.
    assert_eq!(planned.setting(), CareSetting::Community);

    let admitted = fold_onto(planned, &[admitted(NHS, "V1", at(25), "WARD-6")]);
    let encounter = active(&admitted);
    assert_eq!(encounter.status(), EncounterStatus::InProgress);
    assert_eq!(point_of_care(encounter), "WARD-6");
    assert_eq!(encounter.admitted_at, ts(at(25)));
    // The admission did not say how: the booking did.
    assert_eq!(encounter.admission_method(), AdmissionMethod::Elective);
    assert_eq!(stays(encounter), vec![stay("WARD-6", 25, None)]);
    assert!(admitted.past_encounters.is_empty());
    assert_eq!(admitted.setting(), CareSetting::Hospital);
    assert_eq!(admitted.setting_since, ts(at(25)));
}

#[test]
fn admission_puts_the_patient_in_a_hospital_bed() {
    let admission = admitted(NHS, "V1", at(0), "WARD-7");
    let state = fold(std::slice::from_ref(&admission));

    let encounter = active(&state);
    assert_eq!(encounter.encounter_id, "V1");
    assert_eq!(encounter.status(), EncounterStatus::InProgress);
    assert_eq!(encounter.patient_class(), PatientClass::Inpatient);
    assert_eq!(encounter.organisation, ORGANISATION);
    assert_eq!(encounter.admitted_at, ts(at(0)));
    assert_eq!(encounter.discharged_at, None);
    assert_eq!(encounter.location, Some(ward("WARD-7")));
    assert_eq!(
        encounter.location_history,
        vec![LocationStay {
            location: Some(ward("WARD-7")),
            from: ts(at(0)),
            until: None,
            event_id: admission.event_id.clone(),
        }]
    );
    assert_eq!(encounter.movements.len(), 1);
    assert_eq!(encounter.movements[0].event_id, admission.event_id);
    assert_eq!(encounter.movements[0].kind(), MovementKind::Admission);
    assert!(state.past_encounters.is_empty());
    assert_eq!(state.last_discharge, None);
    assert_eq!(state.setting(), CareSetting::Hospital);
    assert_eq!(state.setting_since, ts(at(0)));
    assert_eq!(state.setting_organisation, ORGANISATION);
}

#[test]
fn transfer_moves_the_patient_and_extends_the_location_history() {
    let admission = admitted(NHS, "V1", at(0), "WARD-1");
    let transfer = transferred(NHS, "V1", at(2), "WARD-2");
    let state = fold(&[admission.clone(), transfer.clone()]);

    let encounter = active(&state);
    assert_eq!(point_of_care(encounter), "WARD-2");
    assert_eq!(
        stays(encounter),
        vec![stay("WARD-1", 0, Some(2)), stay("WARD-2", 2, None)]
    );
    let started_by: Vec<_> = encounter
        .location_history
        .iter()
        .map(|s| s.event_id.as_str())
        .collect();
    assert_eq!(
        started_by,
        vec![admission.event_id.as_str(), transfer.event_id.as_str()]
    );
    // Still the same stay in hospital.
    assert_eq!(encounter.admitted_at, ts(at(0)));
    assert_eq!(state.setting(), CareSetting::Hospital);
    assert_eq!(state.setting_since, ts(at(0)));
}

#[test]
fn leave_puts_the_patient_on_hospital_leave_until_they_return() {
    let on_leave = fold(&[
        admitted(NHS, "V1", at(0), "WARD-1"),
        leave_started("V1", at(3), at(27)),
    ]);
    let encounter = active(&on_leave);
    assert_eq!(encounter.status(), EncounterStatus::OnLeave);
    assert_eq!(encounter.expected_return_at, ts(at(27)));
    assert_eq!(point_of_care(encounter), "WARD-1");
    assert_eq!(on_leave.setting(), CareSetting::HospitalLeave);
    assert_eq!(on_leave.setting_since, ts(at(3)));
    assert_eq!(on_leave.setting_organisation, ORGANISATION);

    let back = fold_onto(on_leave, &[leave_ended("V1", at(26))]);
    let encounter = active(&back);
    assert_eq!(encounter.status(), EncounterStatus::InProgress);
    assert_eq!(encounter.expected_return_at, None);
    assert_eq!(back.setting(), CareSetting::Hospital);
    assert_eq!(back.setting_since, ts(at(0)));
}

#[test]
fn class_change_changes_the_encounter_class() {
    let state = fold(&[
        admitted(NHS, "V1", at(0), "WARD-1"),
        class_changed("V1", at(1), PatientClass::DayCase),
    ]);
    let encounter = active(&state);
    assert_eq!(encounter.patient_class(), PatientClass::DayCase);
    assert_eq!(encounter.status(), EncounterStatus::InProgress);
    assert_eq!(encounter.movements[1].kind(), MovementKind::ClassChange);
}

#[test]
fn discharge_finishes_the_encounter_and_the_destination_sets_the_setting() {
    use DischargeDestination as To;
    use DischargeMethod as How;
    let cases = [
        (How::ClinicalAdvice, To::Home, CareSetting::Community),
        (
            How::SelfDischarge,
            To::TemporaryResidence,
            CareSetting::Community,
        ),
        (How::ClinicalAdvice, To::CareHome, CareSetting::CareHome),
        (
            How::ClinicalAdvice,
            To::VirtualWard,
            CareSetting::VirtualWard,
        ),
        (
            How::ClinicalAdvice,
            To::CommunityHospital,
            CareSetting::CommunityHospital,
        ),
        (How::Legal, To::OtherHospital, CareSetting::OtherHospital),
        (How::ClinicalAdvice, To::Hospice, CareSetting::Hospice),
        (How::ClinicalAdvice, To::Mortuary, CareSetting::Deceased),
        (How::Died, To::Unspecified, CareSetting::Deceased),
        (How::Other, To::Other, CareSetting::Community),
    ];
    for (method, destination, setting) in cases {
        let state = fold(&[
            admitted(NHS, "V1", at(0), "WARD-1"),
            transferred(NHS, "V1", at(2), "WARD-2"),
            discharged_to("V1", at(48), method, destination, "RYY"),
        ]);
        let case = format!("{method:?} to {destination:?}");
        assert_eq!(state.active_encounter, None, "{case}");
        let [encounter] = state.past_encounters.as_slice() else {
            panic!(
                "{case}: one past encounter, got {:?}",
                state.past_encounters
            );
        };
        assert_eq!(encounter.status(), EncounterStatus::Finished, "{case}");
        assert_eq!(encounter.discharged_at, ts(at(48)), "{case}");
        assert_eq!(point_of_care(encounter), "WARD-2", "{case}");
        assert_eq!(
            stays(encounter),
            vec![stay("WARD-1", 0, Some(2)), stay("WARD-2", 2, Some(48))],
            "{case}"
        );
        let expected = Discharge {
            encounter_id: "V1".into(),
            discharged_at: ts(at(48)),
            method: method as i32,
            destination: destination as i32,
            disposition_code: "01".into(),
            destination_code: "19".into(),
            destination_organisation: "RYY".into(),
            location: Some(ward("WARD-2")),
        };
        assert_eq!(encounter.discharge.as_deref(), Some(&expected), "{case}");
        assert_eq!(state.last_discharge.as_ref(), Some(&expected), "{case}");
        assert_eq!(state.setting(), setting, "{case}");
        assert_eq!(state.setting_since, ts(at(48)), "{case}");
        assert_eq!(state.setting_organisation, "RYY", "{case}");
    }
}

#[test]
fn death_makes_the_patient_deceased_whatever_else_is_known() {
    let state = fold(&[
        admitted(NHS, "V1", at(0), "WARD-1"),
        died(at(10), Some(at(9))),
    ]);
    assert_eq!(state.death.as_ref().unwrap().died_at, ts(at(9)));
    assert_eq!(state.setting(), CareSetting::Deceased);
    assert_eq!(state.setting_since, ts(at(9)));
    assert_eq!(state.setting_organisation, "");

    // Without a time of death, the event's clinical time is it.
    let state = fold(&[died(at(5), None)]);
    assert_eq!(state.death.as_ref().unwrap().died_at, ts(at(5)));
    assert_eq!(state.setting(), CareSetting::Deceased);

    // A later admission (an error in the source) does not bring them back.
    let state = fold(&[died(at(5), None), admitted(NHS, "V1", at(6), "WARD-1")]);
    assert_eq!(state.setting(), CareSetting::Deceased);
}

#[test]
fn a_merge_retires_one_record_and_the_survivor_absorbs_it() {
    let retired_identity = PatientIdentity {
        local_ids: vec![LocalIdentifier {
            authority: ORGANISATION.into(),
            value: "H123".into(),
        }],
        ..identity(RETIRED_NHS)
    };
    let mut retired_admission = admitted(RETIRED_NHS, "V9", at(0), "WARD-9");
    retired_admission.patient = Some(retired_identity.clone());
    let retired_frailty = frailty_assessed(RETIRED_NHS, at(1), 7);
    let mut retired = empty_state(RETIRED_NHS);
    retired = fold_onto(retired, &[retired_admission.clone(), retired_frailty]);

    let mut survivor = fold(&[
        registered(at(0), demographics("Smith", "LS1 4AP")),
        frailty_assessed(NHS, at(-10), 4),
    ]);
    let merge = patients_merged(NHS, RETIRED_NHS, at(5));
    let merge_id = valid(&merge).id();

    // The retired side: marked merged, handed over as data.
    let effects = apply_changed(&mut retired, &merge);
    let [
        Effect::Append {
            key,
            event: hand_over,
        },
    ] = effects.as_slice()
    else {
        panic!("one hand-over, got {effects:?}");
    };
    assert_eq!(key.as_str(), NHS);
    assert_eq!(
        hand_over.event_id,
        EventId::derived(merge_id, "merged-record-transferred").to_string()
    );
    assert_eq!(hand_over.causation_id, merge.event_id);
    let Some(Payload::MergedRecordTransferred(handed)) = &hand_over.payload else {
        panic!("a merged_record_transferred event, got {hand_over:?}");
    };
    assert_eq!(handed.merge_event_id, merge.event_id);
    assert_eq!(handed.retired, Some(identity(RETIRED_NHS)));
    let link_to_survivor = MergeLink {
        patient_key: NHS.into(),
        merge_event_id: merge.event_id.clone(),
        merged_at: ts(at(5)),
        kind: MergeKind::PatientsMerged as i32,
    };
    assert_eq!(retired.merged_into.as_deref(), Some(&link_to_survivor));
    let retired_state = handed.retired_state.as_ref().unwrap();
    assert_eq!(retired_state.patient_key, RETIRED_NHS);
    assert_eq!(
        retired_state.merged_into.as_deref(),
        Some(&link_to_survivor)
    );
    // The retired record keeps what it knew, but is listed in no cohort.
    assert_eq!(active(&retired).encounter_id, "V9");
    assert!(!Cohort::default().matches(&retired, crate::Instant::UNSET));
    assert!(index_entries(&retired).is_empty());

    // The survivor's side: the merge links the records...
    assert!(apply_changed(&mut survivor, &merge).is_empty());
    let link_to_retired = MergeLink {
        patient_key: RETIRED_NHS.into(),
        merge_event_id: merge.event_id.clone(),
        merged_at: ts(at(5)),
        kind: MergeKind::PatientsMerged as i32,
    };
    assert_eq!(survivor.merged_from, vec![link_to_retired.clone()]);
    assert_eq!(survivor.setting(), CareSetting::Community);

    // ...and the hand-over brings the retired record in.
    assert!(apply_changed(&mut survivor, hand_over).is_empty());
    assert_eq!(survivor.merged_from, vec![link_to_retired]);
    assert_eq!(survivor.merged_into, None);
    assert_eq!(active(&survivor).encounter_id, "V9");
    assert_eq!(survivor.setting(), CareSetting::Hospital);
    assert_eq!(survivor.frailty.as_ref().unwrap().clinical_frailty_scale, 7);
    assert_eq!(survivor.demographics.as_ref().unwrap().family_name, "Smith");
    let identity = survivor.identity.as_ref().unwrap();
    assert_eq!(identity.nhs_number, NHS);
    assert_eq!(identity.local_ids, retired_identity.local_ids);
    assert!(crate::AppliedEvents::contains(
        &survivor.applied,
        NHS,
        EventId::parse(&retired_admission.event_id).unwrap()
    ));
    assert!(Cohort::default().matches(&survivor, crate::Instant::UNSET));

    // The hand-over is written again after a crash: a duplicate.
    let before = survivor.clone();
    assert_eq!(apply_next(&mut survivor, hand_over), Ok(Applied::Duplicate));
    assert_eq!(survivor, before);
}

#[test]
fn a_merge_takes_each_detail_and_membership_change_by_clinical_time() {
    // The same payload about the retired patient (so with another id).
    let of_retired = |mut event: CareEvent| {
        event.patient = Some(identity(RETIRED_NHS));
        let recorded = event.recorded_at.unwrap().seconds;
        recorded_at(event, recorded)
    };
    let mut retired = fold_onto(
        empty_state(RETIRED_NHS),
        &[
            of_retired(details_updated(at(0), demographics("Jones", ""))),
            of_retired(details_updated(at(2), demographics("", "YO1 7HH"))),
            of_retired(care_team_assigned(at(1), "GMC-1", "registrar")),
        ],
    );
    let survivor = fold(&[
        registered(at(1), demographics("Smith", "LS1 4AP")),
        care_team_assigned(at(5), "GMC-1", "consultant"),
    ]);
    let merge = patients_merged(NHS, RETIRED_NHS, at(6));
    let effects = apply_changed(&mut retired, &merge);
    let [
        Effect::Append {
            event: hand_over, ..
        },
    ] = effects.as_slice()
    else {
        panic!("one hand-over, got {effects:?}");
    };
    let survivor = fold_onto(survivor, &[merge, hand_over.clone()]);

    // The survivor's name is newer, the retired record's postcode is.
    let demographics = survivor.demographics.as_ref().unwrap();
    assert_eq!(demographics.family_name, "Smith");
    assert_eq!(demographics.postcode, "YO1 7HH");
    // Assigned on both records: active since the first assignment, as the
    // latest one said.
    let [entry] = survivor.care_team.as_slice() else {
        panic!("one member, got {:?}", survivor.care_team);
    };
    assert!(entry.active);
    assert_eq!(entry.since, ts(at(1)));
    let member = entry.member.as_ref().unwrap();
    assert_eq!(member.role.as_ref().unwrap().code, "consultant");
    assert_eq!(entry.history.len(), 2);
}

#[test]
fn a_referral_shows_its_latest_status_by_clinical_time() {
    let request = referral_requested(at(0), "REF-1");
    let requested = fold(std::slice::from_ref(&request));
    let [referral] = requested.referrals.as_slice() else {
        panic!("one referral");
    };
    assert_eq!(referral.status(), ReferralStatus::Requested);
    assert_eq!(referral.requested_at, ts(at(0)));
    assert_eq!(referral.respond_by, ts(at(48)));
    assert_eq!(referral.priority(), ReferralPriority::Urgent);
    assert_eq!(referral.service.as_ref().unwrap().code, "FRAILTY-RXX");
    assert_eq!(referral.referring_organisation, "B82005");

    let state = fold_onto(
        requested,
        &[
            referral_status(at(1), "REF-1", ReferralStatus::Accepted),
            referral_status(at(3), "REF-1", ReferralStatus::Completed),
            // Happened before the completion, recorded after it.
            recorded_at(
                referral_status(at(2), "REF-1", ReferralStatus::Cancelled),
                at(4),
            ),
        ],
    );
    let referral = &state.referrals[0];
    assert_eq!(referral.status(), ReferralStatus::Completed);
    assert_eq!(referral.status_at, ts(at(3)));
    assert_eq!(referral.status_reason, "");
    let history: Vec<_> = referral.history.iter().map(|t| t.status()).collect();
    assert_eq!(
        history,
        vec![
            ReferralStatus::Requested,
            ReferralStatus::Accepted,
            ReferralStatus::Cancelled,
            ReferralStatus::Completed
        ]
    );

    // A rejection keeps its reason; one for a referral Baton never saw
    // requested is kept all the same.
    let state = fold(&[referral_status(at(1), "REF-2", ReferralStatus::Rejected)]);
    let referral = &state.referrals[0];
    assert_eq!(referral.referral_id, "REF-2");
    assert_eq!(referral.status(), ReferralStatus::Rejected);
    assert_eq!(
        referral.status_reason,
        "REFERRAL_STATUS_REJECTED by the service"
    );
}

#[test]
fn a_virtual_ward_episode_sets_the_setting_and_its_end_returns_home() {
    let on_virtual_ward = fold(&[
        admitted(NHS, "V1", at(0), "WARD-1"),
        discharged(NHS, "V1", at(48), DischargeDestination::VirtualWard),
        virtual_ward_started(NHS, "VW-1", at(48), "VW-FRAIL"),
    ]);
    let [episode] = on_virtual_ward.episodes.as_slice() else {
        panic!("one episode");
    };
    assert_eq!(episode.status(), EpisodeStatus::Active);
    assert_eq!(episode.started_at, ts(at(48)));
    assert_eq!(on_virtual_ward.setting(), CareSetting::VirtualWard);
    assert_eq!(on_virtual_ward.setting_since, ts(at(48)));
    assert_eq!(on_virtual_ward.setting_organisation, ORGANISATION);
    assert!(
        cohort(CareSetting::VirtualWard, Some("VW-FRAIL"))
            .matches(&on_virtual_ward, crate::Instant::UNSET)
    );

    let ended = fold_onto(
        on_virtual_ward,
        &[episode_ended(
            NHS,
            "VW-1",
            at(120),
            EpisodeEndReason::Completed,
        )],
    );
    let episode = &ended.episodes[0];
    assert_eq!(episode.status(), EpisodeStatus::Finished);
    assert_eq!(episode.ended_at, ts(at(120)));
    assert_eq!(episode.end_reason(), EpisodeEndReason::Completed);
    assert_eq!(ended.setting(), CareSetting::Community);
    assert_eq!(ended.setting_since, ts(at(120)));

    // An end that arrives before its start is kept; the start fills it in.
    let end_first = fold(&[
        episode_ended(NHS, "VW-1", at(120), EpisodeEndReason::Completed),
        virtual_ward_started(NHS, "VW-1", at(48), "VW-FRAIL"),
    ]);
    assert_eq!(end_first.episodes, ended.episodes);
    assert_eq!(end_first.setting(), CareSetting::Community);
}

#[test]
fn care_plan_versions_move_forward_and_a_late_older_version_is_ignored() {
    let state = fold(&[
        care_plan(at(0), "CP-1", 1),
        care_plan(at(2), "CP-1", 2),
        // Version 1 again, recorded late.
        recorded_at(care_plan(at(1), "CP-1", 1), at(3)),
    ]);
    let plan = state.care_plan.as_ref().unwrap();
    assert_eq!((plan.care_plan_id.as_str(), plan.version), ("CP-1", 2));
    assert_eq!(plan.changed_at, ts(at(2)));
    assert_eq!(plan.goals[0].description, "goal of version 2");

    // A different plan replaces the current one when newer in clinical time.
    let state = fold_onto(state, &[care_plan(at(4), "CP-2", 1)]);
    assert_eq!(state.care_plan.as_ref().unwrap().care_plan_id, "CP-2");
    let state = fold_onto(state, &[recorded_at(care_plan(at(3), "CP-3", 1), at(5))]);
    assert_eq!(state.care_plan.as_ref().unwrap().care_plan_id, "CP-2");
}

#[test]
fn frailty_is_the_latest_assessment_by_clinical_time() {
    let latest = frailty_assessed(NHS, at(5), 6);
    let state = fold(&[
        frailty_assessed(NHS, at(0), 4),
        latest.clone(),
        recorded_at(frailty_assessed(NHS, at(3), 8), at(6)),
    ]);
    let frailty = state.state.frailty.unwrap();
    assert_eq!(frailty.clinical_frailty_scale, 6);
    assert_eq!(frailty.assessed_at, ts(at(5)));
    assert_eq!(frailty.stamp, Some(stamp_of(&latest, 1)));
}

#[test]
fn medical_optimisation_is_set_and_revoked_on_the_encounter_in_progress() {
    let admitted_state = fold(&[admitted(NHS, "V1", at(0), "WARD-1")]);
    let optimised = fold_onto(
        admitted_state.clone(),
        &[
            medically_optimised("", at(10), true),
            // Said again: optimised since the first time.
            medically_optimised("", at(20), true),
        ],
    );
    assert!(optimised.medically_optimised);
    assert_eq!(optimised.medically_optimised_since, ts(at(10)));
    let on_encounter = active(&optimised).medical_optimisation.as_ref().unwrap();
    assert!(on_encounter.optimised);
    assert_eq!(on_encounter.since, ts(at(10)));
    // Delayed discharge: optimised and still in a bed.
    assert_eq!(optimised.setting(), CareSetting::Hospital);

    let revoked = fold_onto(optimised, &[medically_optimised("V1", at(30), false)]);
    assert!(!revoked.medically_optimised);
    assert_eq!(revoked.medically_optimised_since, None);
    let on_encounter = active(&revoked).medical_optimisation.as_ref().unwrap();
    assert_eq!(on_encounter.revoked_reason, "deteriorated");

    // A revocation that happened before the latest optimisation changes nothing.
    let state = fold_onto(
        admitted_state,
        &[
            medically_optimised("", at(20), true),
            recorded_at(medically_optimised("", at(10), false), at(21)),
        ],
    );
    assert!(state.medically_optimised);
    assert_eq!(state.medically_optimised_since, ts(at(20)));

    // Once discharged, the copy for cohorts is cleared.
    let state = fold_onto(
        state,
        &[discharged(NHS, "V1", at(48), DischargeDestination::Home)],
    );
    assert!(!state.medically_optimised);
    assert_eq!(state.medically_optimised_since, None);
}

#[test]
fn expected_discharge_date_is_the_latest_set_by_clinical_time() {
    let state = fold(&[
        admitted(NHS, "V1", at(0), "WARD-1"),
        expected_discharge("", at(1), 20),
        expected_discharge("V1", at(3), 22),
        recorded_at(expected_discharge("V1", at(2), 21), at(4)),
    ]);
    assert_eq!(state.expected_discharge_date, Some(date(2023, 12, 22)));
    assert_eq!(
        active(&state).expected_discharge.as_ref().unwrap().date,
        Some(date(2023, 12, 22))
    );
}

#[test]
fn care_team_members_are_assigned_and_removed() {
    let state = fold(&[
        care_team_assigned(at(0), "GMC-1", "consultant"),
        care_team_assigned(at(1), "NMC-2", "community nurse"),
        care_team_removed(at(5), "GMC-1"),
        // An assignment older than the removal, recorded after it.
        recorded_at(care_team_assigned(at(2), "GMC-1", "consultant"), at(6)),
    ]);
    let members: Vec<_> = state
        .care_team
        .iter()
        .map(|e| {
            (
                e.member.as_ref().unwrap().member_id.as_str(),
                e.active,
                e.since,
            )
        })
        .collect();
    assert_eq!(
        members,
        vec![("GMC-1", false, ts(at(5))), ("NMC-2", true, ts(at(1)))]
    );
    let nurse = &state.care_team[1];
    assert_eq!(
        nurse.member.as_ref().unwrap().role.as_ref().unwrap().code,
        "community nurse"
    );

    // A removal Baton saw no assignment for is kept as a former member,
    // and the older assignment arriving after it still says who they were.
    let assignment = recorded_at(care_team_assigned(at(2), "GMC-3", "consultant"), at(6));
    let removal = care_team_removed(at(5), "GMC-3");
    let removal_first = fold(&[removal.clone(), assignment.clone()]);
    let entry = &removal_first.care_team[0];
    assert!(!entry.active);
    assert_eq!(entry.since, ts(at(5)));
    assert_eq!(entry.member.as_ref().unwrap().name, "Member GMC-3");
    assert_eq!(
        arrival_order_free(removal_first).care_team,
        arrival_order_free(fold(&[assignment, removal])).care_team
    );
}

// ---------------------------------------------------------------------------
// Corrections: a cancellation reverts exactly what it cancels
// ---------------------------------------------------------------------------

/// A patient with some history: registered, a finished stay that ended in a
/// care home, a frailty score.
fn patient_with_history() -> Vec<CareEvent> {
    vec![
        registered(at(-100), demographics("Smith", "LS1 4AP")),
        admitted(NHS, "V1", at(-90), "WARD-1"),
        frailty_assessed(NHS, at(-80), 6),
        discharged(NHS, "V1", at(-50), DischargeDestination::CareHome),
    ]
}

#[test]
fn admission_cancelled_by_id_reverts_to_the_state_before_the_admission() {
    let before = fold(&patient_with_history());
    assert_eq!(before.setting(), CareSetting::CareHome);

    let admission = admitted(NHS, "V2", at(0), "WARD-2");
    let in_hospital = fold_onto(
        before.clone(),
        &[admission.clone(), transferred(NHS, "V2", at(1), "WARD-3")],
    );
    assert_eq!(in_hospital.setting(), CareSetting::Hospital);

    let cancel = admission_cancelled(NHS, "V2", at(2), &admission.event_id);
    let after = fold_onto(in_hospital, std::slice::from_ref(&cancel));
    assert_eq!(
        without_corrections(after.clone()),
        without_corrections(before)
    );

    // The stay stays in the audit trail, entered in error.
    let cancelled = after
        .past_encounters
        .iter()
        .find(|e| e.encounter_id == "V2")
        .expect("the cancelled encounter is kept");
    assert_eq!(cancelled.status(), EncounterStatus::Cancelled);
    assert_eq!(cancelled.location, None);
    assert!(cancelled.location_history.is_empty());
    assert_eq!(
        cancelled.movements[0].cancelled_by_event_id,
        cancel.event_id
    );
    assert_eq!(cancelled.movements[0].cancelled_recorded_at, ts(at(2)));
    assert_eq!(after.active_encounter, None);
    assert_eq!(after.setting(), CareSetting::CareHome);
}

#[test]
fn admission_cancelled_without_id_cancels_the_latest_admission_in_effect() {
    let before = fold(&patient_with_history());
    let after = fold_onto(
        before.clone(),
        &[
            admitted(NHS, "V2", at(0), "WARD-2"),
            admission_cancelled(NHS, "V2", at(2), ""),
        ],
    );
    assert_eq!(without_corrections(after), without_corrections(before));

    // A booked admission that is cancelled is booked again.
    let pre_admission = encounter_event(
        NHS,
        "V3",
        at(0),
        Payload::PreAdmitted(PreAdmitted {
            expected_location: Some(ward("WARD-5")),
            expected_admission_at: ts(at(24)),
            ..Default::default()
        }),
    );
    let planned = fold(std::slice::from_ref(&pre_admission));
    let after = fold_onto(
        planned.clone(),
        &[
            admitted(NHS, "V3", at(24), "WARD-6"),
            admission_cancelled(NHS, "V3", at(25), ""),
        ],
    );
    assert_eq!(
        without_corrections(after.clone()),
        without_corrections(planned)
    );
    assert_eq!(active(&after).status(), EncounterStatus::Planned);
    assert_eq!(point_of_care(active(&after)), "WARD-5");
}

#[test]
fn transfer_cancelled_restores_the_previous_location_and_history() {
    let before = fold(&[
        admitted(NHS, "V1", at(0), "WARD-1"),
        transferred(NHS, "V1", at(2), "WARD-2"),
    ]);
    let transfer = transferred(NHS, "V1", at(4), "WARD-3");
    for cancelled_event_id in [transfer.event_id.as_str(), ""] {
        let after = fold_onto(
            before.clone(),
            &[
                transfer.clone(),
                transfer_cancelled(NHS, "V1", at(5), cancelled_event_id),
            ],
        );
        assert_eq!(
            without_corrections(after.clone()),
            without_corrections(before.clone()),
            "cancelled_event_id {cancelled_event_id:?}"
        );
        assert_eq!(point_of_care(active(&after)), "WARD-2");
        assert_eq!(
            stays(active(&after)),
            vec![stay("WARD-1", 0, Some(2)), stay("WARD-2", 2, None)]
        );
    }
}

#[test]
fn transfer_cancelled_by_id_can_cancel_a_move_before_the_latest() {
    let middle = transferred(NHS, "V1", at(2), "WARD-2");
    let state = fold(&[
        admitted(NHS, "V1", at(0), "WARD-1"),
        middle.clone(),
        transferred(NHS, "V1", at(4), "WARD-3"),
        transfer_cancelled(NHS, "V1", at(5), &middle.event_id),
    ]);
    assert_eq!(point_of_care(active(&state)), "WARD-3");
    assert_eq!(
        stays(active(&state)),
        vec![stay("WARD-1", 0, Some(4)), stay("WARD-3", 4, None)]
    );
}

#[test]
fn transfer_cancelled_without_id_cancels_the_latest_move_by_clinical_time() {
    let state = fold(&[
        admitted(NHS, "V1", at(0), "WARD-1"),
        transferred(NHS, "V1", at(4), "WARD-3"),
        // Recorded last, but not the latest move.
        recorded_at(transferred(NHS, "V1", at(2), "WARD-2"), at(6)),
        transfer_cancelled(NHS, "V1", at(7), ""),
    ]);
    assert_eq!(point_of_care(active(&state)), "WARD-2");
    assert_eq!(
        stays(active(&state)),
        vec![stay("WARD-1", 0, Some(2)), stay("WARD-2", 2, None)]
    );
}

#[test]
fn discharge_cancelled_puts_the_patient_back_in_hospital() {
    let before = fold(&[
        admitted(NHS, "V1", at(0), "WARD-1"),
        transferred(NHS, "V1", at(2), "WARD-2"),
        medically_optimised("", at(30), true),
        expected_discharge("", at(30), 20),
    ]);
    assert!(before.medically_optimised);
    let discharge = discharged(NHS, "V1", at(48), DischargeDestination::Home);
    for cancelled_event_id in [discharge.event_id.as_str(), ""] {
        let discharged_state = fold_onto(before.clone(), std::slice::from_ref(&discharge));
        assert_eq!(discharged_state.setting(), CareSetting::Community);
        assert!(!discharged_state.medically_optimised);

        let after = fold_onto(
            discharged_state,
            &[discharge_cancelled(NHS, "V1", at(49), cancelled_event_id)],
        );
        assert_eq!(
            without_corrections(after.clone()),
            without_corrections(before.clone()),
            "cancelled_event_id {cancelled_event_id:?}"
        );
        let encounter = active(&after);
        assert_eq!(encounter.status(), EncounterStatus::InProgress);
        assert_eq!(encounter.discharged_at, None);
        assert_eq!(encounter.discharge, None);
        assert_eq!(point_of_care(encounter), "WARD-2");
        assert_eq!(stays(encounter).last(), Some(&stay("WARD-2", 2, None)));
        assert_eq!(after.last_discharge, None);
        assert_eq!(after.setting(), CareSetting::Hospital);
        assert!(after.medically_optimised);
        assert_eq!(after.expected_discharge_date, Some(date(2023, 12, 20)));
    }
}

#[test]
fn a_cancelled_discharge_gives_back_the_previous_last_discharge() {
    let before = fold(&patient_with_history());
    let discharge = discharged(NHS, "V2", at(48), DischargeDestination::Hospice);
    let after = fold_onto(
        before.clone(),
        &[
            admitted(NHS, "V2", at(0), "WARD-2"),
            discharge.clone(),
            discharge_cancelled(NHS, "V2", at(49), &discharge.event_id),
        ],
    );
    assert_eq!(after.last_discharge, before.last_discharge);
    assert_eq!(after.last_discharge.as_ref().unwrap().encounter_id, "V1");
    assert_eq!(after.setting(), CareSetting::Hospital);
}

#[test]
fn what_cannot_be_applied_is_rejected_and_changes_nothing() {
    let admission = admitted(NHS, "V1", at(0), "WARD-1");
    let discharge = discharged(NHS, "V1", at(48), DischargeDestination::Home);
    let discharged_state = fold(&[admission.clone(), discharge.clone()]);
    let discharge_already_cancelled = fold_onto(
        discharged_state.clone(),
        &[discharge_cancelled(NHS, "V1", at(49), &discharge.event_id)],
    );
    let cases = [
        (
            // The admission is not a transfer.
            &discharged_state,
            transfer_cancelled(NHS, "V1", at(50), &admission.event_id),
            Rejection::CancelTargetNotFound {
                payload: "transfer_cancelled",
                encounter_id: "V1".into(),
                cancelled_event_id: admission.event_id.clone(),
                what: "transfer",
            },
        ),
        (
            &discharge_already_cancelled,
            admission_cancelled(NHS, "V1", at(50), &discharge.event_id),
            Rejection::CancelTargetNotFound {
                payload: "admission_cancelled",
                encounter_id: "V1".into(),
                cancelled_event_id: discharge.event_id.clone(),
                what: "admission",
            },
        ),
        (
            &discharged_state,
            medically_optimised("", at(50), true),
            Rejection::NoActiveEncounter {
                payload: "medically_optimised",
            },
        ),
        (
            &discharged_state,
            expected_discharge("V7", at(50), 20),
            Rejection::UnknownEncounter {
                payload: "expected_discharge_date_set",
                encounter_id: "V7".into(),
            },
        ),
        (
            &discharged_state,
            admitted(RETIRED_NHS, "V1", at(50), "WARD-1"),
            Rejection::WrongPatient {
                event_id: admitted(RETIRED_NHS, "V1", at(50), "WARD-1").event_id,
                event_patient: RETIRED_NHS.into(),
                state_patient: NHS.into(),
            },
        ),
    ];
    for (state, event, rejection) in cases {
        let mut after = state.clone();
        assert_eq!(
            apply_next(&mut after, &event),
            Err(rejection.clone()),
            "{:?}",
            event.payload
        );
        assert_eq!(&after, state, "{rejection}");
    }

    let text = Rejection::CancelTargetNotFound {
        payload: "transfer_cancelled",
        encounter_id: "V1".into(),
        cancelled_event_id: admission.event_id.clone(),
        what: "transfer",
    }
    .to_string();
    assert_eq!(
        text,
        format!(
            "transfer_cancelled: event {} of encounter \"V1\" is not a transfer",
            admission.event_id
        )
    );
}

// ---------------------------------------------------------------------------
// Late events: placed by clinical time
// ---------------------------------------------------------------------------

#[test]
fn a_late_transfer_lands_in_the_history_without_becoming_current() {
    let admission = admitted(NHS, "V1", at(0), "WARD-1");
    let later_move = transferred(NHS, "V1", at(4), "WARD-3");
    let late_move = recorded_at(transferred(NHS, "V1", at(2), "WARD-2"), at(6));
    let state = fold(&[admission.clone(), later_move.clone(), late_move.clone()]);

    let encounter = active(&state);
    assert_eq!(point_of_care(encounter), "WARD-3");
    assert_eq!(
        stays(encounter),
        vec![
            stay("WARD-1", 0, Some(2)),
            stay("WARD-2", 2, Some(4)),
            stay("WARD-3", 4, None)
        ]
    );
    let movements: Vec<_> = encounter
        .movements
        .iter()
        .map(|m| m.event_id.as_str())
        .collect();
    assert_eq!(
        movements,
        vec![
            admission.event_id.as_str(),
            late_move.event_id.as_str(),
            later_move.event_id.as_str()
        ]
    );
    // The same as had it arrived on time.
    assert_eq!(
        arrival_order_free(state),
        arrival_order_free(fold(&[admission, late_move, later_move]))
    );
}

#[test]
fn a_discharge_arriving_before_its_admission_ends_in_the_same_state() {
    let admission = recorded_at(admitted(NHS, "V1", at(0), "WARD-1"), at(49));
    let discharge = discharged(NHS, "V1", at(48), DischargeDestination::CareHome);

    let out_of_order = fold(&[discharge.clone(), admission.clone()]);
    let in_order = fold(&[admission, discharge]);
    assert_eq!(
        arrival_order_free(out_of_order.clone()),
        arrival_order_free(in_order)
    );

    assert_eq!(out_of_order.active_encounter, None);
    let encounter = &out_of_order.past_encounters[0];
    assert_eq!(encounter.status(), EncounterStatus::Finished);
    assert_eq!(encounter.admitted_at, ts(at(0)));
    assert_eq!(stays(encounter), vec![stay("WARD-1", 0, Some(48))]);
    assert_eq!(out_of_order.setting(), CareSetting::CareHome);
    assert_eq!(out_of_order.setting_since, ts(at(48)));
}

#[test]
fn a_move_after_the_discharge_in_clinical_time_changes_nothing() {
    let before = fold(&[
        admitted(NHS, "V1", at(0), "WARD-1"),
        discharged(NHS, "V1", at(48), DischargeDestination::Home),
    ]);
    let after = fold_onto(
        before.clone(),
        &[
            transferred(NHS, "V1", at(50), "WARD-2"),
            leave_started("V1", at(51), at(60)),
        ],
    );
    let strip_movements = |state: Folding| {
        let mut state = state.state;
        for encounter in &mut state.past_encounters {
            encounter.movements.clear();
        }
        without_bookkeeping(state)
    };
    assert_eq!(strip_movements(after), strip_movements(before));
}

/// Every permutation of `n` items, by Heap's algorithm.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    fn heap(k: usize, items: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if k <= 1 {
            out.push(items.clone());
            return;
        }
        for i in 0..k - 1 {
            heap(k - 1, items, out);
            let j = if k.is_multiple_of(2) { i } else { 0 };
            items.swap(j, k - 1);
        }
        heap(k - 1, items, out);
    }
    let mut out = Vec::new();
    heap(n, &mut (0..n).collect(), &mut out);
    out
}

#[test]
fn events_in_any_order_give_the_same_state() {
    let events = [
        admitted(NHS, "V1", at(0), "WARD-1"),
        transferred(NHS, "V1", at(2), "WARD-2"),
        leave_started("V1", at(3), at(5)),
        leave_ended("V1", at(5)),
        frailty_assessed(NHS, at(1), 5),
        frailty_assessed(NHS, at(4), 7),
        discharged(NHS, "V1", at(10), DischargeDestination::VirtualWard),
    ];
    let orders = permutations(events.len());
    assert_eq!(orders.len(), 5_040);
    let expected = arrival_order_free(fold(&events));
    for order in orders {
        let shuffled: Vec<_> = order.iter().map(|&i| events[i].clone()).collect();
        assert_eq!(
            arrival_order_free(fold(&shuffled)),
            expected,
            "order {order:?}"
        );
    }
    assert_eq!(expected.setting(), CareSetting::VirtualWard);
    assert_eq!(expected.frailty.unwrap().clinical_frailty_scale, 7);
}

#[test]
fn lists_do_not_depend_on_the_order_their_events_arrived_in() {
    let events = [
        referral_requested(at(2), "REF-B"),
        referral_requested(at(1), "REF-A"),
        // Never seen requested: no request time, listed first.
        referral_status(at(3), "REF-C", ReferralStatus::Accepted),
        care_team_assigned(at(1), "NMC-2", "nurse"),
        care_team_assigned(at(2), "GMC-1", "consultant"),
    ];
    let expected = arrival_order_free(fold(&events));
    for order in permutations(events.len()) {
        let shuffled: Vec<_> = order.iter().map(|&i| events[i].clone()).collect();
        assert_eq!(
            arrival_order_free(fold(&shuffled)),
            expected,
            "order {order:?}"
        );
    }
    let referrals: Vec<_> = expected
        .referrals
        .iter()
        .map(|r| r.referral_id.as_str())
        .collect();
    assert_eq!(referrals, vec!["REF-C", "REF-A", "REF-B"]);
    let members: Vec<_> = expected
        .care_team
        .iter()
        .map(|e| e.member.as_ref().unwrap().member_id.as_str())
        .collect();
    assert_eq!(members, vec!["GMC-1", "NMC-2"]);
}

#[test]
fn local_identifiers_are_listed_alike_in_any_order() {
    let with_ids = |seconds, ids: &[(&str, &str)]| {
        let mut event = admitted("9434765919", "V1", seconds, "AMU");
        event.patient.as_mut().unwrap().local_ids = ids
            .iter()
            .map(
                |(authority, value)| baton_proto::events::v1::LocalIdentifier {
                    authority: (*authority).into(),
                    value: (*value).into(),
                },
            )
            .collect();
        crate::fixtures::recorded_at(event, seconds)
    };
    let first = with_ids(100, &[("RYY", "B2")]);
    let second = with_ids(200, &[("RXX", "A1"), ("RYY", "B2")]);
    let one_way = crate::fixtures::state_of([first.clone(), second.clone()]);
    let other_way = crate::fixtures::state_of([second, first]);
    let ids = |state: &PatientCareState| state.identity.clone().unwrap().local_ids;
    assert_eq!(ids(&one_way), ids(&other_way));
    assert_eq!(ids(&one_way)[0].authority, "RXX");
}

#[test]
fn plans_changed_at_the_same_moment_resolve_alike_in_any_order() {
    let first = care_plan(at(1), "CP-A", 1);
    let second = care_plan(at(1), "CP-B", 1);
    let one_way = fold(&[first.clone(), second.clone()]).state.care_plan;
    let other_way = fold(&[second, first]).state.care_plan;
    assert_eq!(one_way, other_way);
    assert_eq!(one_way.unwrap().care_plan_id, "CP-B");
}

#[test]
fn a_feed_connected_mid_stay_starts_from_the_first_move_it_sees() {
    let state = fold(&[transferred(NHS, "V1", at(2), "WARD-2")]);
    let encounter = active(&state);
    assert_eq!(encounter.status(), EncounterStatus::InProgress);
    assert_eq!(encounter.admitted_at, None);
    assert_eq!(stays(encounter), vec![stay("WARD-2", 2, None)]);
    assert_eq!(state.setting(), CareSetting::Hospital);
    assert_eq!(state.setting_since, ts(at(2)));

    // The admission arriving later slots in before it.
    let state = fold_onto(
        state,
        &[recorded_at(admitted(NHS, "V1", at(0), "WARD-1"), at(3))],
    );
    assert_eq!(
        stays(active(&state)),
        vec![stay("WARD-1", 0, Some(2)), stay("WARD-2", 2, None)]
    );
    assert_eq!(state.setting_since, ts(at(0)));
}

#[test]
fn a_move_entered_in_error_does_not_say_when_the_stay_began() {
    // Joined mid-stay: no admission, the first move in effect starts it.
    let before = fold(&[transferred(NHS, "V1", at(2), "WARD-2")]);
    let mistake = recorded_at(transferred(NHS, "V1", at(0), "WARD-1"), at(3));
    let after = fold_onto(
        before.clone(),
        &[
            mistake.clone(),
            transfer_cancelled(NHS, "V1", at(4), &mistake.event_id),
        ],
    );
    assert_eq!(after.setting_since, ts(at(2)));
    assert_eq!(without_corrections(after), without_corrections(before));
}

#[test]
fn a_readmission_in_the_same_encounter_keeps_the_discharge_in_the_history() {
    let state = fold(&[
        admitted(NHS, "V1", at(0), "WARD-1"),
        discharged(NHS, "V1", at(48), DischargeDestination::Home),
        admitted(NHS, "V1", at(60), "WARD-2"),
    ]);
    let encounter = active(&state);
    assert_eq!(encounter.status(), EncounterStatus::InProgress);
    assert_eq!(encounter.discharged_at, None);
    assert_eq!(
        stays(encounter),
        vec![stay("WARD-1", 0, Some(48)), stay("WARD-2", 60, None)]
    );
    assert_eq!(state.setting(), CareSetting::Hospital);
}

// Order dependences a single stamp could not resolve: a late event cannot
// tell what it should change when the state remembers only the latest fact.
// The state keeps a stamp per demographics field, the history of medical
// optimisation and of care team membership, and the stamp of the NHS number
// status.

#[test]
fn a_late_update_of_a_field_beats_an_older_one_in_any_order() {
    let oldest = details_updated(at(1), demographics("", "LS1 4AP"));
    let middle = details_updated(at(2), demographics("", "YO1 7HH"));
    let newest = details_updated(at(3), demographics("Jones", ""));
    let in_order = fold(&[oldest.clone(), middle.clone(), newest.clone()]);
    assert_eq!(in_order.demographics.as_ref().unwrap().postcode, "YO1 7HH");
    // The oldest fills the empty postcode first; the middle one is older
    // than the newest update, but newer than where the postcode came from.
    let late = fold(&[newest, oldest, middle]);
    assert_eq!(late.demographics.as_ref().unwrap().postcode, "YO1 7HH");
    assert_eq!(arrival_order_free(late), arrival_order_free(in_order));
}

#[test]
fn optimised_since_is_the_first_time_said_in_any_order() {
    let admission = admitted(NHS, "V1", at(0), "WARD-1");
    let first = medically_optimised("V1", at(10), true);
    let again = medically_optimised("V1", at(20), true);
    let in_order = fold(&[admission.clone(), first.clone(), again.clone()]);
    assert_eq!(in_order.medically_optimised_since, ts(at(10)));
    let late = fold(&[admission, again, recorded_at(first, at(21))]);
    assert_eq!(late.medically_optimised_since, ts(at(10)));

    // A late revocation between the two: optimised again since the second.
    let revoked = recorded_at(medically_optimised("V1", at(15), false), at(22));
    let state = fold_onto(late, &[revoked]);
    assert!(state.medically_optimised);
    assert_eq!(state.medically_optimised_since, ts(at(20)));
}

#[test]
fn a_member_is_active_since_their_first_assignment_in_any_order() {
    let first = care_team_assigned(at(1), "GMC-1", "registrar");
    let again = care_team_assigned(at(3), "GMC-1", "consultant");
    let in_order = fold(&[first.clone(), again.clone()]);
    assert_eq!(in_order.care_team[0].since, ts(at(1)));
    let late = fold(&[again, recorded_at(first, at(4))]);
    assert_eq!(late.care_team[0].since, ts(at(1)));
    // Known as the latest assignment said.
    let member = late.care_team[0].member.as_ref().unwrap();
    assert_eq!(member.role.as_ref().unwrap().code, "consultant");

    // A late removal between the two: active again since the second.
    let removed = recorded_at(care_team_removed(at(2), "GMC-1"), at(5));
    let state = fold_onto(late, &[removed]);
    assert!(state.care_team[0].active);
    assert_eq!(state.care_team[0].since, ts(at(3)));
}

#[test]
fn the_nhs_number_status_is_the_latest_by_clinical_time_in_any_order() {
    let with_status = |mut event: CareEvent, status: NhsNumberStatus| {
        event.patient.as_mut().unwrap().nhs_number_status = status as i32;
        event
    };
    let traced = with_status(
        admitted(NHS, "V1", at(0), "WARD-1"),
        NhsNumberStatus::Verified,
    );
    let untraced = with_status(
        transferred(NHS, "V1", at(2), "WARD-2"),
        NhsNumberStatus::TraceRequired,
    );
    let in_order = fold(&[traced.clone(), untraced.clone()]);
    assert_eq!(
        in_order.identity.as_ref().unwrap().nhs_number_status(),
        NhsNumberStatus::TraceRequired
    );
    let late = fold(&[untraced, recorded_at(traced, at(3))]);
    assert_eq!(late.identity, in_order.identity);
    assert_eq!(
        arrival_order_free(late).nhs_number_status_stamp,
        arrival_order_free(in_order).nhs_number_status_stamp
    );
}

// ---------------------------------------------------------------------------
// Duplicates: an event id applied before changes nothing
// ---------------------------------------------------------------------------

#[test]
fn a_duplicate_event_is_a_no_op() {
    let admission = admitted(NHS, "V1", at(0), "WARD-1");
    let transfer = transferred(NHS, "V1", at(2), "WARD-2");
    let cancel = transfer_cancelled(NHS, "V1", at(3), "");
    let events = [
        registered(at(-1), demographics("Smith", "LS1 4AP")),
        admission.clone(),
        transfer,
        cancel.clone(),
        frailty_assessed(NHS, at(4), 6),
        medically_optimised("", at(5), true),
        virtual_ward_started(NHS, "VW-1", at(6), "VW-FRAIL"),
        referral_requested(at(7), "REF-1"),
        care_plan(at(8), "CP-1", 1),
        care_team_assigned(at(9), "GMC-1", "consultant"),
        discharged(NHS, "V1", at(10), DischargeDestination::VirtualWard),
        patients_merged(NHS, RETIRED_NHS, at(11)),
        died(at(12), None),
    ];
    let mut state = empty_state(NHS);
    for event in &events {
        apply_changed(&mut state, event);
        let once = state.clone();
        assert_eq!(
            apply_next(&mut state, event),
            Ok(Applied::Duplicate),
            "{:?}",
            event.payload
        );
        assert_eq!(state, once, "{:?}", event.payload);
    }
    // Long after, and re-sent with the id in capitals.
    let end = state.clone();
    for event in [admission, cancel] {
        let mut shouted = event.clone();
        shouted.event_id = shouted.event_id.to_uppercase();
        for again in [event, shouted] {
            assert_eq!(apply_next(&mut state, &again), Ok(Applied::Duplicate));
            assert_eq!(state, end);
        }
    }
}

#[test]
fn a_merge_is_a_duplicate_on_the_retired_side_too() {
    let merge = patients_merged(NHS, RETIRED_NHS, at(5));
    let mut retired = empty_state(RETIRED_NHS);
    assert_eq!(apply_changed(&mut retired, &merge).len(), 1);
    let once = retired.clone();
    assert_eq!(apply_next(&mut retired, &merge), Ok(Applied::Duplicate));
    assert_eq!(retired, once);
}

#[test]
fn a_reused_message_control_id_is_not_a_duplicate() {
    // Distinct events (distinct ids) that share the source's control id.
    let with_control_id = |mut event: CareEvent| {
        event.source.as_mut().unwrap().message_id = "MSG-0001".into();
        event
    };
    let state = fold(&[
        with_control_id(admitted(NHS, "V1", at(0), "WARD-1")),
        with_control_id(transferred(NHS, "V1", at(2), "WARD-2")),
    ]);
    assert_eq!(point_of_care(active(&state)), "WARD-2");
    assert_eq!(state.version, 2);
}

// ---------------------------------------------------------------------------
// Cohorts
// ---------------------------------------------------------------------------

#[test]
fn cohorts_follow_the_patient_through_a_journey() {
    let in_bed = fold(&[admitted(NHS, "V1", at(0), "WARD-1")]);
    assert!(cohort(CareSetting::Hospital, Some("WARD-1")).matches(&in_bed, crate::Instant::UNSET));
    assert!(!cohort(CareSetting::Hospital, Some("WARD-2")).matches(&in_bed, crate::Instant::UNSET));
    let by_organisation = Cohort {
        organisation: Some(ORGANISATION.into()),
        ..Cohort::default()
    };
    assert!(by_organisation.matches(&in_bed, crate::Instant::UNSET));

    let moved = fold_onto(in_bed, &[transferred(NHS, "V1", at(2), "WARD-2")]);
    assert!(cohort(CareSetting::Hospital, Some("WARD-2")).matches(&moved, crate::Instant::UNSET));
    assert!(!cohort(CareSetting::Hospital, Some("WARD-1")).matches(&moved, crate::Instant::UNSET));

    let on_leave = fold_onto(moved, &[leave_started("V1", at(3), at(9))]);
    assert!(
        cohort(CareSetting::HospitalLeave, Some("WARD-2"))
            .matches(&on_leave, crate::Instant::UNSET)
    );
    assert!(!cohort(CareSetting::Hospital, None).matches(&on_leave, crate::Instant::UNSET));

    let home = fold_onto(
        on_leave,
        &[
            leave_ended("V1", at(9)),
            discharged(NHS, "V1", at(10), DischargeDestination::Home),
        ],
    );
    assert!(cohort(CareSetting::Community, None).matches(&home, crate::Instant::UNSET));
    assert!(!cohort(CareSetting::Hospital, None).matches(&home, crate::Instant::UNSET));

    let virtual_ward = fold_onto(
        home,
        &[virtual_ward_started(NHS, "VW-1", at(20), "VW-RESP")],
    );
    assert!(
        cohort(CareSetting::VirtualWard, Some("VW-RESP"))
            .matches(&virtual_ward, crate::Instant::UNSET)
    );
    let plan = cohort(CareSetting::VirtualWard, Some("VW-RESP")).plan(crate::Instant::UNSET);
    assert!(Cohort::listing_entry(&virtual_ward, &plan).is_some());

    let deceased = fold_onto(virtual_ward, &[died(at(30), None)]);
    assert!(cohort(CareSetting::Deceased, None).matches(&deceased, crate::Instant::UNSET));
    assert!(!cohort(CareSetting::VirtualWard, None).matches(&deceased, crate::Instant::UNSET));
}

// ---------------------------------------------------------------------------
// Purity: the fold reads no clock
// ---------------------------------------------------------------------------

/// Every source file of the crate except this one, which names what it
/// looks for.
const SOURCES: &[(&str, &str)] = &[
    ("lib.rs", include_str!("../../lib.rs")),
    ("access.rs", include_str!("../../access.rs")),
    ("applied.rs", include_str!("../../applied.rs")),
    ("cohort.rs", include_str!("../../cohort.rs")),
    ("fixtures.rs", include_str!("../../fixtures.rs")),
    ("identity.rs", include_str!("../../identity.rs")),
    ("time.rs", include_str!("../../time.rs")),
    ("validate.rs", include_str!("../../validate.rs")),
    ("fold/mod.rs", include_str!("../mod.rs")),
    ("fold/derive.rs", include_str!("../derive.rs")),
    ("fold/encounter.rs", include_str!("../encounter.rs")),
    ("fold/facts.rs", include_str!("../facts.rs")),
    ("fold/merge.rs", include_str!("../merge.rs")),
    ("fold/visit.rs", include_str!("../visit.rs")),
    ("oracle/mod.rs", include_str!("../../oracle/mod.rs")),
    ("oracle/derive.rs", include_str!("../../oracle/derive.rs")),
    (
        "oracle/encounter.rs",
        include_str!("../../oracle/encounter.rs"),
    ),
    ("oracle/facts.rs", include_str!("../../oracle/facts.rs")),
    ("oracle/merge.rs", include_str!("../../oracle/merge.rs")),
    ("oracle/stamps.rs", include_str!("../../oracle/stamps.rs")),
    ("oracle/visit.rs", include_str!("../../oracle/visit.rs")),
];

#[test]
fn the_crate_reads_no_clock_draws_no_randomness_and_does_no_io() {
    let forbidden = [
        "SystemTime",
        "Instant::now",
        "Utc::now",
        "Local::now",
        "std::time",
        "chrono",
        "new_v4",
        "rand::",
        "thread_rng",
        "std::env",
        "std::fs",
        "std::io",
        "std::net",
        "std::thread",
        "tokio",
    ];
    for (file, source) in SOURCES {
        for pattern in forbidden {
            assert!(!source.contains(pattern), "{file} uses {pattern}");
        }
    }
}

#[test]
fn the_purity_check_reads_every_module() {
    let declared = |folder: &str, source: &str| -> Vec<String> {
        source
            .lines()
            .filter_map(|line| {
                let line = line.trim();
                let name = line
                    .strip_prefix("pub mod ")
                    .or(line.strip_prefix("mod "))?;
                Some(name.strip_suffix(';')?.to_owned())
            })
            // This file is the one not read.
            .filter(|name| !(folder == "fold/" && name == "tests"))
            .map(|name| format!("{folder}{name}"))
            .collect()
    };
    let mut modules = declared("", include_str!("../../lib.rs"));
    modules.extend(declared("fold/", include_str!("../mod.rs")));
    assert!(modules.len() >= 10, "{modules:?}");
    for module in modules {
        let read = SOURCES.iter().any(|(file, _)| {
            *file == format!("{module}.rs") || *file == format!("{module}/mod.rs")
        });
        assert!(read, "SOURCES does not list module {module}");
    }
}

// ---------------------------------------------------------------------------
// Properties over generated journeys
// ---------------------------------------------------------------------------

/// One step of a generated journey of one patient. Rendering assigns clinical
/// and system times and ids, and decides which encounter, episode, plan or
/// referral a step is about.
#[derive(Debug, Clone)]
enum Step {
    /// Admits to a new encounter.
    Admit {
        ward: u8,
    },
    Transfer {
        ward: u8,
    },
    LeaveStart,
    LeaveEnd,
    ClassChange {
        class: PatientClass,
    },
    Discharge {
        destination: DischargeDestination,
    },
    /// Cancels a movement of `kind` in the current encounter: with
    /// `Some(n)`, the n-th (modulo) still in effect, by its id; with `None`,
    /// without an id (the latest in effect when it arrives).
    Cancel {
        kind: MovementKind,
        pick: Option<usize>,
    },
    Frailty {
        score: u32,
    },
    /// Starts a new virtual-ward episode.
    EpisodeStart,
    /// Ends the open episode.
    EpisodeEnd {
        reason: EpisodeEndReason,
    },
    /// A new version of the current plan, or the first version of a new one.
    CarePlan {
        new_plan: bool,
    },
    /// A new referral, or a status change of the latest.
    Referral {
        status: ReferralStatus,
    },
    /// The details of the `family`-th made-up person, but only the fields
    /// whose bit is set in `fields`, so an older update may fill what a
    /// newer one left out.
    Details {
        family: u8,
        fields: u8,
    },
    ExpectedDischarge {
        day: u8,
    },
    MedicallyOptimised {
        optimised: bool,
    },
    CareTeam {
        member: u8,
        assigned: bool,
    },
    Died,
}

/// Which steps a journey may take.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Anything, including cancellations without an id and medical
    /// optimisation of "the encounter in progress", which mean something
    /// else when they arrive at another moment: the order of the log is
    /// part of their meaning.
    Any,
    /// Only events whose effect is meant not to depend on when they arrive:
    /// cancellations name what they cancel, each movement is cancelled at
    /// most once, each episode ends at most once, and an event about an
    /// encounter names it.
    ArrivalOrderFree,
}

/// A generated journey: events in log order (by system time), each with the
/// id of an event it needs to have been applied first (what it cancels, or
/// an event creating the encounter it names).
#[derive(Debug, Clone)]
struct Journey {
    events: Vec<CareEvent>,
    needs: Vec<Option<String>>,
}

/// A step with the clinical time since the previous step (0 makes ties), how
/// late it is recorded, and the NHS number status its sender gave (mostly
/// none).
type TimedStep = (Step, i64, i64, NhsNumberStatus);

fn step() -> impl Strategy<Value = Step> {
    use DischargeDestination as To;
    let cancellable = prop::sample::select(vec![
        MovementKind::Admission,
        MovementKind::Transfer,
        MovementKind::Discharge,
    ]);
    prop_oneof![
        3 => (0u8..4).prop_map(|ward| Step::Admit { ward }),
        4 => (0u8..4).prop_map(|ward| Step::Transfer { ward }),
        1 => Just(Step::LeaveStart),
        1 => Just(Step::LeaveEnd),
        1 => prop::sample::select(vec![PatientClass::Inpatient, PatientClass::DayCase])
            .prop_map(|class| Step::ClassChange { class }),
        3 => prop::sample::select(vec![To::Home, To::CareHome, To::VirtualWard, To::Hospice])
            .prop_map(|destination| Step::Discharge { destination }),
        4 => (cancellable, prop::option::weighted(0.7, 0usize..4))
            .prop_map(|(kind, pick)| Step::Cancel { kind, pick }),
        2 => (1u32..=9).prop_map(|score| Step::Frailty { score }),
        2 => Just(Step::EpisodeStart),
        1 => prop::sample::select(vec![
            EpisodeEndReason::Completed,
            EpisodeEndReason::Readmitted,
            EpisodeEndReason::Transferred,
        ])
        .prop_map(|reason| Step::EpisodeEnd { reason }),
        1 => any::<bool>().prop_map(|new_plan| Step::CarePlan { new_plan }),
        2 => prop::sample::select(vec![
            ReferralStatus::Requested,
            ReferralStatus::Accepted,
            ReferralStatus::Rejected,
            ReferralStatus::Cancelled,
            ReferralStatus::Completed,
        ])
        .prop_map(|status| Step::Referral { status }),
        1 => (0u8..3, 0u8..64).prop_map(|(family, fields)| Step::Details { family, fields }),
        1 => (1u8..=28).prop_map(|day| Step::ExpectedDischarge { day }),
        1 => any::<bool>().prop_map(|optimised| Step::MedicallyOptimised { optimised }),
        2 => (0u8..3, any::<bool>())
            .prop_map(|(member, assigned)| Step::CareTeam { member, assigned }),
        1 => Just(Step::Died),
    ]
}

/// Steps whose clinical times may tie (a gap of 0): the order of the log
/// then decides between them.
fn timed_steps() -> impl Strategy<Value = Vec<TimedStep>> {
    steps_with_gaps(prop_oneof![1 => Just(0i64), 4 => 1..6 * HOUR].boxed())
}

/// Steps at distinct clinical times, for the properties that hold whatever
/// the arrival order: with a tie, the later record wins, so the order
/// decides by design.
fn distinct_timed_steps() -> impl Strategy<Value = Vec<TimedStep>> {
    steps_with_gaps((1..6 * HOUR).boxed())
}

fn steps_with_gaps(gap: BoxedStrategy<i64>) -> impl Strategy<Value = Vec<TimedStep>> {
    let delay = prop_oneof![3 => Just(0i64), 1 => 1..HOUR, 1 => 1..2 * DAY];
    let status = prop_oneof![
        4 => Just(NhsNumberStatus::Unspecified),
        1 => prop::sample::select(vec![
            NhsNumberStatus::Verified,
            NhsNumberStatus::NotTraced,
            NhsNumberStatus::TraceRequired,
        ]),
    ];
    prop::collection::vec((step(), gap, delay, status), 1..40)
}

/// A movement rendered so far, for cancellations to find.
#[derive(Debug)]
struct Rendered {
    encounter_id: String,
    kind: MovementKind,
    event_id: String,
    recorded: i64,
    cancelled: bool,
}

/// Turns steps into the events of patient [`NHS`], clinical times starting
/// at `start`. Ids are derived from the step's index, not its content, so
/// the same steps at other times make events with the same ids.
fn render(steps: &[TimedStep], mode: Mode, start: i64) -> Journey {
    let mut clock = start;
    let mut rendered: Vec<(CareEvent, Option<String>, i64)> = Vec::new();
    let mut movements: Vec<Rendered> = Vec::new();
    let (mut encounters, mut episodes, mut episode_open) = (0usize, 0usize, false);
    let (mut plans, mut plan_version, mut referrals) = (0usize, 0u32, 0usize);

    for (index, (step, gap, delay, status)) in steps.iter().enumerate() {
        clock += gap;
        let mut recorded = clock + delay;
        let encounter_id = format!("V{}", encounters.max(1));
        let mut needs = None;
        let mut movement = None;
        let event = match step {
            Step::Admit { ward } => {
                encounters += 1;
                let encounter_id = format!("V{encounters}");
                movement = Some((encounter_id.clone(), MovementKind::Admission));
                admitted(NHS, &encounter_id, clock, &format!("WARD-{ward}"))
            }
            Step::Transfer { ward } => {
                movement = Some((encounter_id.clone(), MovementKind::Transfer));
                transferred(NHS, &encounter_id, clock, &format!("WARD-{ward}"))
            }
            Step::LeaveStart => {
                movement = Some((encounter_id.clone(), MovementKind::LeaveStart));
                leave_started(&encounter_id, clock, clock + DAY)
            }
            Step::LeaveEnd => {
                movement = Some((encounter_id.clone(), MovementKind::LeaveEnd));
                leave_ended(&encounter_id, clock)
            }
            Step::ClassChange { class } => {
                movement = Some((encounter_id.clone(), MovementKind::ClassChange));
                class_changed(&encounter_id, clock, *class)
            }
            Step::Discharge { destination } => {
                movement = Some((encounter_id.clone(), MovementKind::Discharge));
                discharged(NHS, &encounter_id, clock, *destination)
            }
            Step::Cancel { kind, pick } => {
                let mut candidates: Vec<&mut Rendered> = movements
                    .iter_mut()
                    .filter(|m| m.encounter_id == encounter_id && m.kind == *kind && !m.cancelled)
                    .collect();
                let target = match pick {
                    Some(n) if !candidates.is_empty() => {
                        let count = candidates.len();
                        Some(candidates.swap_remove(n % count))
                    }
                    _ => None,
                };
                let cancelled_event_id = match target {
                    Some(target) => {
                        target.cancelled = true;
                        // A correction is recorded after what it corrects.
                        recorded = recorded.max(target.recorded + 1);
                        needs = Some(target.event_id.clone());
                        target.event_id.clone()
                    }
                    None if mode == Mode::ArrivalOrderFree => continue,
                    None => String::new(),
                };
                let cancel = match kind {
                    MovementKind::Admission => admission_cancelled,
                    MovementKind::Transfer => transfer_cancelled,
                    _ => discharge_cancelled,
                };
                cancel(NHS, &encounter_id, clock, &cancelled_event_id)
            }
            Step::Frailty { score } => frailty_assessed(NHS, clock, *score),
            Step::EpisodeStart => {
                episodes += 1;
                episode_open = true;
                virtual_ward_started(NHS, &format!("VW-{episodes}"), clock, "VW-FRAIL")
            }
            Step::EpisodeEnd { reason } => {
                if mode == Mode::ArrivalOrderFree && !episode_open {
                    continue;
                }
                episode_open = false;
                episode_ended(NHS, &format!("VW-{}", episodes.max(1)), clock, *reason)
            }
            Step::CarePlan { new_plan } => {
                if *new_plan || plans == 0 {
                    plans += 1;
                    plan_version = 0;
                }
                plan_version += 1;
                care_plan(clock, &format!("CP-{plans}"), plan_version)
            }
            Step::Referral { status } => {
                if *status == ReferralStatus::Requested || referrals == 0 {
                    referrals += 1;
                    referral_requested(clock, &format!("REF-{referrals}"))
                } else {
                    referral_status(clock, &format!("REF-{referrals}"), *status)
                }
            }
            Step::Details { family, fields } => {
                let carries = |bit: u8| fields & (1 << bit) != 0;
                let sexes = [AdministrativeSex::Female, AdministrativeSex::Male];
                let mut details = Demographics {
                    family_name: ["Smith", "Jones", "Brown"][usize::from(*family)].into(),
                    given_name: ["Ann", "Bea", "Cat"][usize::from(*family)].into(),
                    birth_date: Some(date(1920 + i32::from(*family), 1, 1)),
                    sex: sexes[usize::from(*family) % 2] as i32,
                    postcode: format!("LS{family} 4AP"),
                    gp_practice: format!("B8200{family}"),
                };
                let strings = [
                    &mut details.family_name,
                    &mut details.given_name,
                    &mut details.postcode,
                    &mut details.gp_practice,
                ];
                for (bit, field) in (0..).zip(strings) {
                    if !carries(bit) {
                        field.clear();
                    }
                }
                if !carries(4) {
                    details.birth_date = None;
                }
                if !carries(5) {
                    details.sex = 0;
                }
                details_updated(clock, details)
            }
            Step::ExpectedDischarge { day } => {
                if mode == Mode::ArrivalOrderFree {
                    let creator = movements.iter().find(|m| m.encounter_id == encounter_id);
                    let Some(creator) = creator else { continue };
                    recorded = recorded.max(creator.recorded + 1);
                    needs = Some(creator.event_id.clone());
                }
                expected_discharge(&encounter_id, clock, i32::from(*day))
            }
            Step::MedicallyOptimised { optimised } => {
                if mode == Mode::Any {
                    medically_optimised("", clock, *optimised)
                } else {
                    let creator = movements.iter().find(|m| m.encounter_id == encounter_id);
                    let Some(creator) = creator else { continue };
                    recorded = recorded.max(creator.recorded + 1);
                    needs = Some(creator.event_id.clone());
                    medically_optimised(&encounter_id, clock, *optimised)
                }
            }
            Step::CareTeam { member, assigned } => {
                let member_id = format!("GMC-{member}");
                if *assigned {
                    // The role changes from one step to the next, so which
                    // assignment the member is known by shows.
                    let role = ["registrar", "consultant"][index % 2];
                    care_team_assigned(clock, &member_id, role)
                } else {
                    care_team_removed(clock, &member_id)
                }
            }
            Step::Died => died(clock, Some(clock - HOUR)),
        };
        let mut event = recorded_at(event, recorded);
        if let Some(patient) = &mut event.patient {
            patient.nhs_number_status = *status as i32;
        }
        event.event_id =
            Uuid::new_v5(&BATON_NAMESPACE, format!("step {index}").as_bytes()).to_string();
        if let Some((encounter_id, kind)) = movement {
            movements.push(Rendered {
                encounter_id,
                kind,
                event_id: event.event_id.clone(),
                recorded,
                cancelled: false,
            });
        }
        rendered.push((event, needs, recorded));
    }
    // The log holds events in the order they were recorded.
    rendered.sort_by_key(|(_, _, recorded)| *recorded);
    let (events, needs) = rendered.into_iter().map(|(e, n, _)| (e, n)).unzip();
    Journey { events, needs }
}

fn journey(mode: Mode) -> impl Strategy<Value = Journey> {
    match mode {
        Mode::Any => timed_steps().boxed(),
        Mode::ArrivalOrderFree => distinct_timed_steps().boxed(),
    }
    .prop_map(move |steps| render(&steps, mode, T0))
}

/// `order` moved just enough that every event comes after the one it needs.
fn respecting_needs(journey: &Journey, mut order: Vec<usize>) -> Vec<usize> {
    let position = |order: &[usize], id: &str| {
        order
            .iter()
            .position(|&i| journey.events[i].event_id == id)
            .expect("needs name events of the journey")
    };
    let mut k = 0;
    while k < order.len() {
        let needed = journey.needs[order[k]]
            .as_deref()
            .map(|id| position(&order, id));
        match needed {
            // What moves later is a cancellation, an expected discharge
            // date or a medical optimisation, which nothing needs: one pass
            // puts everything in place.
            Some(p) if p > k => {
                let event = order.remove(k);
                order.insert(p, event);
            }
            _ => k += 1,
        }
    }
    order
}

/// Moves every timestamp of `state` by `seconds`; dates stay as they are.
fn shift_state(state: &mut PatientCareState, seconds: i64) {
    fn shift(t: &mut Option<Timestamp>, seconds: i64) {
        if let Some(t) = t {
            t.seconds += seconds;
        }
    }
    fn shift_stamp(stamp: &mut Option<FactStamp>, seconds: i64) {
        if let Some(stamp) = stamp {
            shift(&mut stamp.occurred_at, seconds);
            shift(&mut stamp.recorded_at, seconds);
        }
    }
    fn shift_discharge(discharge: Option<&mut Discharge>, seconds: i64) {
        if let Some(discharge) = discharge {
            shift(&mut discharge.discharged_at, seconds);
        }
    }
    for encounter in state
        .active_encounter
        .iter_mut()
        .chain(state.past_encounters.iter_mut())
    {
        shift(&mut encounter.admitted_at, seconds);
        shift(&mut encounter.started_at, seconds);
        shift(&mut encounter.discharged_at, seconds);
        shift(&mut encounter.expected_admission_at, seconds);
        shift(&mut encounter.expected_return_at, seconds);
        shift_discharge(encounter.discharge.as_deref_mut(), seconds);
        for stay in &mut encounter.location_history {
            shift(&mut stay.from, seconds);
            shift(&mut stay.until, seconds);
        }
        if let Some(optimisation) = &mut encounter.medical_optimisation {
            shift(&mut optimisation.since, seconds);
            shift_stamp(&mut optimisation.stamp, seconds);
            for fact in &mut optimisation.history {
                shift_stamp(&mut fact.stamp, seconds);
            }
        }
        if let Some(expected) = &mut encounter.expected_discharge {
            shift_stamp(&mut expected.stamp, seconds);
        }
        for movement in &mut encounter.movements {
            shift(&mut movement.occurred_at, seconds);
            shift(&mut movement.recorded_at, seconds);
            shift(&mut movement.expected_at, seconds);
            shift(&mut movement.cancelled_recorded_at, seconds);
            shift_discharge(movement.discharge.as_deref_mut(), seconds);
        }
        for cancellation in &mut encounter.cancellations {
            shift(&mut cancellation.occurred_at, seconds);
            shift(&mut cancellation.recorded_at, seconds);
        }
        if let Some(planned) = &mut encounter.planned_transfer {
            shift(&mut planned.planned_at, seconds);
            shift(&mut planned.requested_at, seconds);
        }
    }
    for moved in &mut state.moved_visits {
        shift(&mut moved.moved_at, seconds);
    }
    shift(&mut state.setting_since, seconds);
    shift_discharge(state.last_discharge.as_mut(), seconds);
    for episode in &mut state.episodes {
        shift(&mut episode.started_at, seconds);
        shift(&mut episode.ended_at, seconds);
    }
    for referral in &mut state.referrals {
        shift(&mut referral.requested_at, seconds);
        shift(&mut referral.respond_by, seconds);
        shift(&mut referral.status_at, seconds);
        for transition in &mut referral.history {
            shift(&mut transition.occurred_at, seconds);
            shift_stamp(&mut transition.stamp, seconds);
        }
    }
    if let Some(plan) = &mut state.care_plan {
        shift(&mut plan.changed_at, seconds);
    }
    if let Some(frailty) = &mut state.frailty {
        shift(&mut frailty.assessed_at, seconds);
        shift_stamp(&mut frailty.stamp, seconds);
    }
    shift(&mut state.medically_optimised_since, seconds);
    for entry in &mut state.care_team {
        shift(&mut entry.since, seconds);
        shift_stamp(&mut entry.stamp, seconds);
        for change in &mut entry.history {
            shift_stamp(&mut change.stamp, seconds);
        }
    }
    if let Some(death) = &mut state.death {
        shift(&mut death.died_at, seconds);
        shift_stamp(&mut death.stamp, seconds);
    }
    for link in state
        .merged_into
        .as_deref_mut()
        .into_iter()
        .chain(&mut state.merged_from)
    {
        shift(&mut link.merged_at, seconds);
    }
    shift(&mut state.last_occurred_at, seconds);
    shift(&mut state.last_recorded_at, seconds);
    shift_stamp(&mut state.demographics_stamp, seconds);
    if let Some(stamps) = &mut state.demographics_field_stamps {
        for stamp in [
            &mut stamps.family_name,
            &mut stamps.given_name,
            &mut stamps.birth_date,
            &mut stamps.sex,
            &mut stamps.postcode,
            &mut stamps.gp_practice,
        ] {
            shift_stamp(stamp, seconds);
        }
    }
    shift_stamp(&mut state.nhs_number_status_stamp, seconds);
}

#[test]
fn the_generator_renders_late_moves_corrections_and_rejections() {
    // A fixed walk through the generator, so the properties below are known
    // to see late events, corrections and rejections.
    use Step::*;
    let none = NhsNumberStatus::Unspecified;
    let steps: Vec<TimedStep> = vec![
        (Admit { ward: 1 }, 0, 0, NhsNumberStatus::Verified),
        (
            Transfer { ward: 2 },
            HOUR,
            3 * HOUR,
            NhsNumberStatus::TraceRequired,
        ),
        (Transfer { ward: 3 }, HOUR, 0, NhsNumberStatus::NotTraced),
        (
            Cancel {
                kind: MovementKind::Transfer,
                pick: Some(0),
            },
            HOUR,
            0,
            none,
        ),
        (
            Cancel {
                kind: MovementKind::Discharge,
                pick: None,
            },
            HOUR,
            0,
            none,
        ),
        (
            Discharge {
                destination: DischargeDestination::Home,
            },
            HOUR,
            0,
            none,
        ),
        (MedicallyOptimised { optimised: true }, HOUR, 0, none),
    ];
    let journey = render(&steps, Mode::Any, T0);
    let (state, outcomes) = replay(&journey.events);
    // In log order: the move to WARD-2 arrives after the later one to
    // WARD-3; the discharge cancel before any discharge (pending, and the
    // later discharge is not what it cancels); the cancel of the move to
    // WARD-2 after it; "the encounter in progress" is optimised after the
    // discharge (rejected).
    let payloads: Vec<_> = journey
        .events
        .iter()
        .map(|e| valid(e).payload_name())
        .collect();
    assert_eq!(
        payloads,
        vec![
            "admitted",
            "transferred",
            "transferred",
            "discharge_cancelled",
            "transfer_cancelled",
            "discharged",
            "medically_optimised"
        ]
    );
    assert!(matches!(
        outcomes[6],
        Err(Rejection::NoActiveEncounter { .. })
    ));
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 6);
    let encounter = &state.past_encounters[0];
    assert_eq!(encounter.status(), EncounterStatus::Finished);
    let rules: Vec<_> = encounter
        .cancellations
        .iter()
        .map(|c| (c.kind(), c.matched_by()))
        .collect();
    assert_eq!(
        rules,
        [
            (MovementKind::Transfer, CancelMatch::EventId),
            (MovementKind::Discharge, CancelMatch::Pending)
        ]
    );
    assert_eq!(
        stays(encounter),
        vec![stay("WARD-1", 0, Some(2)), stay("WARD-3", 2, Some(5))]
    );
    assert_eq!(
        journey.needs[4].as_deref(),
        Some(journey.events[2].event_id.as_str())
    );
    // The late move's status arrives last but is not the latest.
    assert_eq!(
        state.identity.as_ref().unwrap().nhs_number_status(),
        NhsNumberStatus::NotTraced
    );
}

proptest! {
    /// Replaying a journey, then replaying it again with copies of its events
    /// interleaved, leaves exactly the state of replaying it once: nothing is
    /// ignored in the comparison.
    ///
    /// A rejected event never took effect, so its id is not recorded: sent
    /// again later it is a retry (as when the dead letters are re-driven)
    /// and may well apply then. Its copy is therefore sent right after it,
    /// against the same state, where it must be rejected the same way.
    #[test]
    fn replaying_twice_with_duplicates_interleaved_equals_replaying_once(
        journey in journey(Mode::Any),
        lags in prop::collection::vec(0usize..10, 40),
    ) {
        let (once, outcomes) = replay(&journey.events);
        let n = journey.events.len();
        // copies_after[p]: the events whose copies are sent after event p.
        let mut copies_after = vec![Vec::new(); n];
        for (i, outcome) in outcomes.iter().enumerate() {
            let lag = if outcome.is_ok() { lags[i % lags.len()] } else { 0 };
            copies_after[(i + lag).min(n - 1)].push(i);
        }
        let mut stream: Vec<(usize, bool)> = Vec::new();
        for (p, copies) in copies_after.iter().enumerate() {
            stream.push((p, false));
            stream.extend(copies.iter().map(|&i| (i, true)));
        }
        // The second replay, of what took effect.
        stream.extend((0..n).filter(|&i| outcomes[i].is_ok()).map(|i| (i, true)));

        let mut twice = empty_state(NHS);
        for (i, is_copy) in stream {
            let outcome = apply_next(&mut twice, &journey.events[i]);
            let expected = match (&outcomes[i], is_copy) {
                (Ok(_), true) => Ok(Applied::Duplicate),
                (first, _) => first.clone(),
            };
            prop_assert_eq!(outcome, expected, "event {} (copy: {})", i, is_copy);
        }
        prop_assert_eq!(twice, once);
    }

    /// The same events, at distinct clinical times, in any order, each after
    /// what it needs, give the same state, but for the order of
    /// `applied_event_ids` and the positions kept (see
    /// [`arrival_order_free`]). (Ties are the next property's.)
    #[test]
    fn any_arrival_order_gives_the_same_state(
        (journey, order) in journey(Mode::ArrivalOrderFree).prop_flat_map(|journey| {
            let order = Just((0..journey.events.len()).collect::<Vec<_>>()).prop_shuffle();
            (Just(journey), order)
        }),
    ) {
        let (in_log_order, outcomes) = replay(&journey.events);
        for (i, outcome) in outcomes.iter().enumerate() {
            prop_assert!(outcome.is_ok(), "event {} was rejected: {:?}", i, outcome);
        }
        let shuffled: Vec<CareEvent> = respecting_needs(&journey, order)
            .into_iter()
            .map(|i| journey.events[i].clone())
            .collect();
        let (in_other_order, outcomes) = replay(&shuffled);
        for (i, outcome) in outcomes.iter().enumerate() {
            prop_assert!(outcome.is_ok(), "event {} was rejected: {:?}", i, outcome);
        }
        prop_assert_eq!(arrival_order_free(in_other_order), arrival_order_free(in_log_order));
    }

    /// The fold has no clock input, so two replays of one journey agree to
    /// the byte, and the same journey lived decades earlier or later gives
    /// the same state, moved by as much: nothing compares an event with
    /// "now".
    #[test]
    fn the_state_never_depends_on_wall_clock_time(
        steps in timed_steps(),
        years in prop_oneof![Just(-70i64), Just(120i64), -70i64..=120],
    ) {
        let shift = years * 365 * DAY;
        let base = render(&steps, Mode::Any, T0);
        let (first, first_outcomes) = replay(&base.events);
        let (second, second_outcomes) = replay(&base.events);
        prop_assert_eq!(&first_outcomes, &second_outcomes);
        prop_assert_eq!(first.encode_to_vec(), second.encode_to_vec());

        let moved = render(&steps, Mode::Any, T0 + shift);
        let (mut lived_then, then_outcomes) = replay(&moved.events);
        prop_assert_eq!(&then_outcomes, &first_outcomes);
        shift_state(&mut lived_then, -shift);
        prop_assert_eq!(lived_then, first);
    }

    /// Whatever came before, a transfer, a discharge or an admission to a
    /// new encounter, at any clinical time, then its cancellation by id,
    /// leave the state as it was but for the audit trail.
    #[test]
    fn a_cancellation_reverts_exactly_what_it_cancels(
        journey in journey(Mode::Any),
        kind in prop::sample::select(vec![
            MovementKind::Admission,
            MovementKind::Transfer,
            MovementKind::Discharge,
        ]),
        hours in -2i64..200,
    ) {
        // Registered first, so `before` is a state something was applied to.
        let history: Vec<CareEvent> =
            std::iter::once(registered(at(-1_000), demographics("Smith", "LS1 4AP")))
                .chain(journey.events)
                .collect();
        let (before, _) = replay(&history);
        let encounter_id = before
            .active_encounter
            .iter()
            .chain(&before.past_encounters)
            .map(|e| e.encounter_id.clone())
            .max()
            .unwrap_or_else(|| "V1".to_owned());
        let recorded = at(2_000);
        let movement = match kind {
            MovementKind::Admission => admitted(NHS, "V99", at(hours), "WARD-9"),
            MovementKind::Transfer => transferred(NHS, &encounter_id, at(hours), "WARD-9"),
            _ => discharged(NHS, &encounter_id, at(hours), DischargeDestination::Hospice),
        };
        let cancel = match kind {
            MovementKind::Admission => admission_cancelled,
            MovementKind::Transfer => transfer_cancelled,
            _ => discharge_cancelled,
        };
        let movement = recorded_at(movement, recorded);
        let encounter_of_movement = movement.encounter_id.clone();
        let cancellation = recorded_at(
            cancel(NHS, &encounter_of_movement, at(hours), &movement.event_id),
            recorded + 1,
        );
        let after = fold_onto(before.clone(), &[movement, cancellation]);
        prop_assert_eq!(without_corrections(after), without_corrections(before));
    }

    /// Two events of one kind with the same clinical and system times but
    /// different content (an A01 sent again with a corrected ward, an
    /// assessment entered twice): whichever is later in the log wins, in
    /// either order, whatever their ids.
    #[test]
    fn a_tie_in_time_goes_to_the_later_record(
        kind in 0usize..4,
        values in (1u32..=9, 1u32..=9).prop_filter("different", |(a, b)| a != b),
        hours in 0i64..1_000,
        journey in journey(Mode::ArrivalOrderFree),
    ) {
        let seconds = at(1_000 + hours);
        let make = |value: u32| match kind {
            0 => frailty_assessed(NHS, seconds, value),
            1 => details_updated(seconds, demographics(&format!("Family{value}"), "")),
            2 => admitted(NHS, "V-TIE", seconds, &format!("WARD-{value}")),
            _ => transferred(NHS, "V-TIE", seconds, &format!("WARD-{value}")),
        };
        let said = |state: &PatientCareState| -> String {
            match kind {
                0 => state.frailty.as_ref().unwrap().clinical_frailty_scale.to_string(),
                1 => state.demographics.as_ref().unwrap().family_name.trim_start_matches("Family").to_owned(),
                _ => {
                    let encounter = state
                        .active_encounter
                        .iter()
                        .chain(&state.past_encounters)
                        .find(|e| e.encounter_id == "V-TIE")
                        .unwrap();
                    let stays: Vec<_> = encounter
                        .location_history
                        .iter()
                        .map(|s| s.location.as_ref().unwrap().point_of_care.clone())
                        .collect();
                    // One stay: the earlier record's, which lasted no time, gave way.
                    assert_eq!(stays.len(), 1, "{stays:?}");
                    stays[0].trim_start_matches("WARD-").to_owned()
                }
            }
        };
        let (a, b) = (make(values.0), make(values.1));
        // Whatever came before (an unrelated history, all earlier).
        let (before, _) = replay(&journey.events);
        let a_then_b = fold_onto(before.clone(), &[a.clone(), b.clone()]);
        let b_then_a = fold_onto(before, &[b, a]);
        prop_assert_eq!(said(&a_then_b), values.1.to_string());
        prop_assert_eq!(said(&b_then_a), values.0.to_string());
    }

    /// A rejection leaves the state exactly as it was.
    #[test]
    fn a_rejection_changes_nothing(journey in journey(Mode::Any)) {
        let mut state = empty_state(NHS);
        for event in &journey.events {
            let before = state.clone();
            if apply_next(&mut state, event).is_err() {
                prop_assert_eq!(&state, &before);
            }
        }
    }
}
