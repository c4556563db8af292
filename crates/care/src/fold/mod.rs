//! The fold: `apply(state, event)` for every payload.
//!
//! # Layout
//! - `encounter`: admissions, moves, leave, discharges and their
//!   cancellations, kept as movements in clinical order and re-derived; and
//!   medical optimisation, kept as a history of optimised and revoked facts.
//! - `facts`: facts that are last-writer-wins by clinical time (frailty,
//!   care plan, death, and each demographics field), care team membership
//!   kept as a history of assignments and removals, and the episode and
//!   referral lifecycles.
//! - `merge`: patients merged (A40) or an identifier changed (A47), and the
//!   hand-over of the retired record.
//! - `visit`: a visit moved to another patient (A45) and its hand-over.
//! - `derive`: what is computed from the rest after every event: which
//!   encounter is active, the last discharge, the current care setting.
//!
//! Every handler checks before it mutates, so a [`Rejection`] leaves the
//! state exactly as it was.

mod derive;
mod encounter;
mod facts;
pub(crate) mod lists;
mod merge;
mod visit;

use std::ops::Deref;

use baton_proto::events::v1::{CareEvent, PatientIdentity, care_event::Payload};
use baton_proto::state::v1::{FactStamp, MergeKind, MovementKind, PatientCareState};

use crate::time::{Instant, LogPosition, supersedes};
use crate::{AppliedEvents, PatientKey, ValidEvent};

/// What applying an event did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// The state changed (its version grew); carry out the effects.
    Changed { effects: Vec<Effect> },
    /// The event id was applied before: nothing changed.
    Duplicate,
}

/// Work the fold asks its caller to do, returned as data so the fold stays pure.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Append `event` to the event log under `key`. Used to hand a retired
    /// patient's state to the survivor of a merge, whose partition may be
    /// elsewhere. The event's id is derived, so doing this twice is harmless.
    Append { key: PatientKey, event: CareEvent },
}

/// A valid event that cannot be applied to this patient's state. The
/// projector dead-letters it with this reason and goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error(
        "event {event_id} is about patient {event_patient}, but was applied to patient {state_patient}"
    )]
    WrongPatient {
        event_id: String,
        event_patient: String,
        state_patient: String,
    },
    #[error("{payload} for encounter {encounter_id:?}: the patient has no such encounter")]
    UnknownEncounter {
        payload: &'static str,
        encounter_id: String,
    },
    #[error("{payload}: event {cancelled_event_id} of encounter {encounter_id:?} is not a {what}")]
    CancelTargetNotFound {
        payload: &'static str,
        encounter_id: String,
        cancelled_event_id: String,
        what: &'static str,
    },
    #[error(
        "{payload}: the patient has no hospital encounter in progress; name one with encounter_id"
    )]
    NoActiveEncounter { payload: &'static str },
    #[error(
        "{payload} for encounter {encounter_id:?}: the visit was moved to patient {moved_to} (HL7 A45); send its events under that patient"
    )]
    VisitMovedAway {
        payload: &'static str,
        encounter_id: String,
        moved_to: String,
    },
}

impl Rejection {
    /// The kind of rejection, as a bounded label for metrics and tools:
    /// `snake_case`, naming no patient, encounter or event.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::WrongPatient { .. } => "wrong_patient",
            Self::UnknownEncounter { .. } => "unknown_encounter",
            Self::VisitMovedAway { .. } => "visit_moved_away",
            Self::CancelTargetNotFound { .. } => "cancel_target_not_found",
            Self::NoActiveEncounter { .. } => "no_active_encounter",
        }
    }
}

/// A state for a patient Baton has not seen yet.
pub fn new_state(key: &PatientKey) -> PatientCareState {
    PatientCareState {
        patient_key: key.to_string(),
        ..Default::default()
    }
}

/// The event being applied and where it is in the log: what orders it
/// among events with the same clinical and system times.
#[derive(Debug, Clone, Copy)]
pub(super) struct Incoming<'a> {
    event: &'a ValidEvent,
    position: LogPosition,
}

impl Deref for Incoming<'_> {
    type Target = ValidEvent;

    fn deref(&self) -> &ValidEvent {
        self.event
    }
}

impl Incoming<'_> {
    pub(super) fn position(&self) -> LogPosition {
        self.position
    }

    /// The event's place in the order of facts.
    pub(super) fn stamp(&self) -> FactStamp {
        let envelope = self.event.event();
        FactStamp {
            occurred_at: envelope.occurred_at,
            recorded_at: envelope.recorded_at,
            event_id: envelope.event_id.clone(),
            position: Some(self.position.into()),
        }
    }
}

/// Applies one valid event, found at `position` in the log, to a patient's
/// state, once.
///
/// `state` must be the state of the event's patient, or, for an event about
/// two patients, of the other one: the retired record of a merge (A40) or
/// the previous identity of an identifier change (A47), whose state is then
/// marked merged and handed over with an [`Effect::Append`]; the patient a
/// visit moves from (A45), whose encounter is handed over likewise. An
/// event `applied` already holds for this state is a duplicate and a no-op;
/// one that changes the state is recorded there. A rejection leaves `state`
/// and `applied` untouched. Events with equal clinical and system times are
/// ordered by `position`: the later record wins.
pub fn apply(
    state: &mut PatientCareState,
    applied: &mut (impl AppliedEvents + ?Sized),
    event: &ValidEvent,
    position: LogPosition,
) -> Result<Applied, Rejection> {
    check_patient(state, event)?;
    let event_id = event.id();
    if applied.contains(&state.patient_key, event_id) {
        return Ok(Applied::Duplicate);
    }
    let mut outcome = apply_new(state, event, position)?;
    if let Applied::Changed { effects } = &mut outcome {
        merge::hand_over_applied(state, applied, event, effects);
        applied.insert(&state.patient_key, event_id);
    }
    Ok(outcome)
}

/// Whether `event` may be applied to `state` at all: it is about that
/// patient, or, for an event about two patients, names them as the other.
/// Returns whether it is the other.
fn check_patient(state: &PatientCareState, event: &ValidEvent) -> Result<bool, Rejection> {
    let is_subject = event.key().as_str() == state.patient_key;
    let is_other = !is_subject
        && matches!(
            event.payload(),
            Payload::PatientsMerged(_)
                | Payload::PatientIdentifierChanged(_)
                | Payload::VisitMoved(_)
        )
        && event
            .other_key()
            .is_some_and(|k| k.as_str() == state.patient_key);
    if !is_subject && !is_other {
        return Err(Rejection::WrongPatient {
            event_id: event.event().event_id.clone(),
            event_patient: event.key().to_string(),
            state_patient: state.patient_key.clone(),
        });
    }
    Ok(is_other)
}

/// [`apply`] for an event known not to have been applied to `state`
/// before: the fold without the duplicate check. A merged record's
/// hand-over then carries no applied ids, and those it brings are not
/// recorded anywhere.
pub fn apply_new(
    state: &mut PatientCareState,
    event: &ValidEvent,
    position: LogPosition,
) -> Result<Applied, Rejection> {
    let is_other = check_patient(state, event)?;
    let incoming = Incoming { event, position };

    let effects = if is_other {
        match event.payload() {
            Payload::PatientsMerged(_) => {
                merge::retire(state, &incoming, MergeKind::PatientsMerged)
            }
            Payload::PatientIdentifierChanged(_) => {
                merge::retire(state, &incoming, MergeKind::IdentifierChanged)
            }
            _ => visit::move_away(state, &incoming),
        }
    } else {
        visit::refuse_moved_away(state, &incoming)?;
        apply_payload(state, &incoming)?;
        if let Some(identity) = &event.event().patient {
            absorb_identity(state, identity, &incoming.stamp());
        }
        Vec::new()
    };

    state.version += 1;
    state.applied = Some(position.into());
    if event.occurred() > Instant::of(state.last_occurred_at.as_ref()) {
        state.last_occurred_at = event.event().occurred_at;
    }
    if event.recorded() > Instant::of(state.last_recorded_at.as_ref()) {
        state.last_recorded_at = event.event().recorded_at;
    }
    derive::derive(state);
    Ok(Applied::Changed { effects })
}

fn apply_payload(state: &mut PatientCareState, event: &Incoming<'_>) -> Result<(), Rejection> {
    use encounter::{CancelFacts, MovementFacts};
    match event.payload() {
        Payload::Registered(p) => facts::record_demographics(state, event, p.demographics.as_ref()),
        Payload::DetailsUpdated(p) => {
            facts::record_demographics(state, event, p.demographics.as_ref())
        }
        Payload::PreAdmitted(p) => encounter::record(
            state,
            event,
            MovementFacts {
                kind: MovementKind::PreAdmission,
                location: p.expected_location.clone(),
                patient_class: p.patient_class,
                admission_method: p.admission_method,
                expected_at: p.expected_admission_at,
                ..Default::default()
            },
        ),
        Payload::AttendanceStarted(p) => encounter::record(
            state,
            event,
            MovementFacts {
                kind: MovementKind::Attendance,
                location: p.location.clone(),
                patient_class: p.patient_class,
                attending_clinician: p.attending_clinician.clone(),
                ..Default::default()
            },
        ),
        Payload::Admitted(p) => encounter::record(
            state,
            event,
            MovementFacts {
                kind: MovementKind::Admission,
                location: p.location.clone(),
                patient_class: p.patient_class,
                admission_method: p.admission_method,
                attending_clinician: p.attending_clinician.clone(),
                ..Default::default()
            },
        ),
        Payload::Transferred(p) => encounter::record(
            state,
            event,
            MovementFacts {
                kind: MovementKind::Transfer,
                location: p.to.clone(),
                from: p.from.clone(),
                ..Default::default()
            },
        ),
        Payload::TransferPlanned(p) => encounter::record(
            state,
            event,
            MovementFacts {
                kind: MovementKind::TransferPlanned,
                location: p.to.clone(),
                expected_at: p.planned_at,
                ..Default::default()
            },
        ),
        Payload::LeaveStarted(p) => encounter::record(
            state,
            event,
            MovementFacts {
                kind: MovementKind::LeaveStart,
                expected_at: p.expected_return_at,
                ..Default::default()
            },
        ),
        Payload::LeaveEnded(_) => encounter::record(
            state,
            event,
            MovementFacts {
                kind: MovementKind::LeaveEnd,
                ..Default::default()
            },
        ),
        Payload::PatientClassChanged(p) => encounter::record(
            state,
            event,
            MovementFacts {
                kind: MovementKind::ClassChange,
                patient_class: p.patient_class,
                location: p.location.clone(),
                from: p.from.clone(),
                ..Default::default()
            },
        ),
        Payload::Discharged(p) => encounter::record(
            state,
            event,
            MovementFacts {
                kind: MovementKind::Discharge,
                discharge: Some(encounter::discharge_of(p)),
                ..Default::default()
            },
        ),
        Payload::AdmissionCancelled(p) => encounter::cancel(
            state,
            event,
            MovementKind::Admission,
            CancelFacts {
                named_event_id: &p.cancelled_event_id,
                ..Default::default()
            },
        )?,
        Payload::TransferCancelled(p) => encounter::cancel(
            state,
            event,
            MovementKind::Transfer,
            CancelFacts {
                named_event_id: &p.cancelled_event_id,
                from: p.from.clone(),
                to: p.to.clone(),
            },
        )?,
        Payload::DischargeCancelled(p) => encounter::cancel(
            state,
            event,
            MovementKind::Discharge,
            CancelFacts {
                named_event_id: &p.cancelled_event_id,
                ..Default::default()
            },
        )?,
        Payload::TransferPlanCancelled(p) => encounter::cancel(
            state,
            event,
            MovementKind::TransferPlanned,
            CancelFacts {
                named_event_id: &p.cancelled_event_id,
                to: p.to.clone(),
                ..Default::default()
            },
        )?,
        Payload::Died(p) => facts::record_death(state, event, p),
        Payload::PatientsMerged(_) => {
            merge::record_survivor(state, event, MergeKind::PatientsMerged)
        }
        Payload::PatientIdentifierChanged(p) => {
            merge::change_identifier(state, event, p.previous.as_ref())
        }
        Payload::MergedRecordTransferred(p) => merge::absorb(state, p),
        Payload::VisitMoved(_) => {}
        Payload::MovedVisitTransferred(p) => visit::absorb(state, event, p),
        Payload::ReferralRequested(p) => facts::request_referral(state, event, p),
        Payload::ReferralAccepted(p) => {
            facts::referral_transition(state, event, &p.referral_id, facts::ACCEPTED, "")
        }
        Payload::ReferralRejected(p) => {
            facts::referral_transition(state, event, &p.referral_id, facts::REJECTED, &p.reason)
        }
        Payload::ReferralCancelled(p) => {
            facts::referral_transition(state, event, &p.referral_id, facts::CANCELLED, &p.reason)
        }
        Payload::ReferralCompleted(p) => {
            facts::referral_transition(state, event, &p.referral_id, facts::COMPLETED, "")
        }
        Payload::EpisodeStarted(p) => facts::start_episode(state, event, p),
        Payload::EpisodeEnded(p) => facts::end_episode(state, event, p),
        Payload::CarePlanChanged(p) => facts::change_care_plan(state, event, p),
        Payload::FrailtyAssessed(p) => facts::assess_frailty(state, event, p),
        Payload::MedicallyOptimised(_) => {
            encounter::set_medically_optimised(state, event, true, "")?
        }
        Payload::MedicallyOptimisedRevoked(p) => {
            encounter::set_medically_optimised(state, event, false, &p.reason)?
        }
        Payload::ExpectedDischargeDateSet(p) => encounter::set_expected_discharge(state, event, p)?,
        Payload::CareTeamMemberAssigned(p) => facts::assign_care_team_member(state, event, p),
        Payload::CareTeamMemberRemoved(p) => {
            facts::remove_care_team_member(state, event, &p.member_id)
        }
    }
    Ok(())
}

/// Keeps every identifier the patient was known by, and the NHS number
/// status of the latest event by clinical time (`stamp` is the event's).
fn absorb_identity(state: &mut PatientCareState, incoming: &PatientIdentity, stamp: &FactStamp) {
    let identity = state.identity.get_or_insert_with(Default::default);
    if identity.nhs_number.is_empty() && !incoming.nhs_number.is_empty() {
        identity.nhs_number = incoming.nhs_number.clone();
    }
    if incoming.nhs_number_status != 0 && supersedes(stamp, state.nhs_number_status_stamp.as_ref())
    {
        identity.nhs_number_status = incoming.nhs_number_status;
        state.nhs_number_status_stamp = Some(stamp.clone());
    }
    add_local_ids(&mut identity.local_ids, &incoming.local_ids);
}

/// Keeps every local identifier once, sorted, so the list does not depend
/// on the order events arrived in.
pub(super) fn add_local_ids(
    mine: &mut Vec<baton_proto::events::v1::LocalIdentifier>,
    incoming: &[baton_proto::events::v1::LocalIdentifier],
) {
    for local in incoming {
        if !mine.contains(local) {
            lists::push(mine, local.clone());
        }
    }
    mine.sort_by(|a, b| (&a.authority, &a.value).cmp(&(&b.authority, &b.value)));
}

#[cfg(test)]
mod tests;
