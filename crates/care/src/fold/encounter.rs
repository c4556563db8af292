//! Hospital encounters. Each movement (admission, transfer, leave, class
//! change, discharge) is kept in clinical order; a cancellation marks the
//! movement it cancels; the encounter's status, location and history are
//! then derived again from the movements still in effect. So a late move
//! lands in the right place and a cancel reverts exactly what it cancels.

use baton_proto::events::v1::{Discharged, ExpectedDischargeDateSet, Location};
use baton_proto::state::v1::{
    Discharge, Encounter, EncounterStatus, ExpectedDischarge, LocationStay, MedicalOptimisation,
    Movement, MovementKind, OptimisationFact, PatientCareState,
};
use prost_types::Timestamp;

use super::Rejection;
use crate::ValidEvent;
use crate::time::{Instant, insert_by_stamp, start_of_latest_run, supersedes};

/// The payload-specific parts of a movement.
#[derive(Debug, Default)]
pub(super) struct MovementFacts {
    pub(super) kind: MovementKind,
    pub(super) location: Option<Location>,
    pub(super) patient_class: i32,
    pub(super) admission_method: i32,
    pub(super) discharge: Option<Discharge>,
    pub(super) expected_at: Option<Timestamp>,
    pub(super) attending_clinician: String,
}

pub(super) fn discharge_of(discharged: &Discharged) -> Discharge {
    Discharge {
        method: discharged.method,
        destination: discharged.destination,
        disposition_code: discharged.disposition_code.clone(),
        destination_code: discharged.destination_code.clone(),
        destination_organisation: discharged.destination_organisation.clone(),
        ..Default::default()
    }
}

/// Every encounter of the patient, active first.
pub(super) fn encounters_mut(state: &mut PatientCareState) -> impl Iterator<Item = &mut Encounter> {
    state
        .active_encounter
        .iter_mut()
        .chain(state.past_encounters.iter_mut())
}

fn encounter_mut<'a>(
    state: &'a mut PatientCareState,
    encounter_id: &str,
) -> Option<&'a mut Encounter> {
    encounters_mut(state).find(|e| e.encounter_id == encounter_id)
}

/// Records a movement. An encounter Baton has not seen is created from it,
/// so a feed connected mid-stay (first message a transfer or a discharge)
/// still produces a useful state.
pub(super) fn record(state: &mut PatientCareState, event: &ValidEvent, facts: MovementFacts) {
    let envelope = event.event();
    let organisation = envelope
        .source
        .as_ref()
        .map(|s| s.organisation.clone())
        .unwrap_or_default();
    let movement = Movement {
        event_id: envelope.event_id.clone(),
        kind: facts.kind as i32,
        occurred_at: envelope.occurred_at,
        recorded_at: envelope.recorded_at,
        location: facts.location,
        patient_class: facts.patient_class,
        admission_method: facts.admission_method,
        discharge: facts.discharge,
        expected_at: facts.expected_at,
        attending_clinician: facts.attending_clinician,
        organisation,
        ..Default::default()
    };
    if encounter_mut(state, &envelope.encounter_id).is_none() {
        state.past_encounters.push(Encounter {
            encounter_id: envelope.encounter_id.clone(),
            ..Default::default()
        });
    }
    let encounter = encounter_mut(state, &envelope.encounter_id).expect("created above");
    let at = encounter
        .movements
        .partition_point(|m| movement_order(m) <= movement_order(&movement));
    encounter.movements.insert(at, movement);
    derive_encounter(encounter);
}

fn movement_order(m: &Movement) -> (Instant, Instant, &str) {
    (
        Instant::of(m.occurred_at.as_ref()),
        Instant::of(m.recorded_at.as_ref()),
        m.event_id.as_str(),
    )
}

fn kind_name(kind: MovementKind) -> &'static str {
    match kind {
        MovementKind::Admission => "admission",
        MovementKind::Transfer => "transfer",
        MovementKind::Discharge => "discharge",
        MovementKind::PreAdmission => "pre-admission",
        MovementKind::LeaveStart => "leave",
        MovementKind::LeaveEnd => "return from leave",
        MovementKind::ClassChange => "class change",
        MovementKind::Unspecified => "movement",
    }
}

/// Marks the movement a cancellation refers to as entered in error: the
/// one with `cancelled_event_id` when given, else the latest in effect of
/// that kind by clinical time.
pub(super) fn cancel(
    state: &mut PatientCareState,
    event: &ValidEvent,
    kind: MovementKind,
    cancelled_event_id: &str,
) -> Result<(), Rejection> {
    let envelope = event.event();
    let payload = event.payload_name();
    let Some(encounter) = encounter_mut(state, &envelope.encounter_id) else {
        return Err(Rejection::UnknownEncounter {
            payload,
            encounter_id: envelope.encounter_id.clone(),
        });
    };
    let in_effect = |m: &Movement| m.kind == kind as i32 && m.cancelled_by_event_id.is_empty();
    let target = if cancelled_event_id.is_empty() {
        encounter
            .movements
            .iter()
            .rposition(in_effect)
            .ok_or_else(|| Rejection::NothingToCancel {
                payload,
                encounter_id: envelope.encounter_id.clone(),
                what: kind_name(kind),
            })?
    } else {
        encounter
            .movements
            .iter()
            .position(|m| in_effect(m) && m.event_id == cancelled_event_id)
            .ok_or_else(|| Rejection::CancelTargetNotFound {
                payload,
                encounter_id: envelope.encounter_id.clone(),
                cancelled_event_id: cancelled_event_id.to_owned(),
                what: kind_name(kind),
            })?
    };
    let movement = &mut encounter.movements[target];
    movement.cancelled_by_event_id = envelope.event_id.clone();
    movement.cancelled_recorded_at = envelope.recorded_at;
    derive_encounter(encounter);
    Ok(())
}

/// The encounter a medical-optimisation or discharge-date event is about:
/// the named one, else the one in progress.
fn target_encounter<'a>(
    state: &'a mut PatientCareState,
    event: &ValidEvent,
) -> Result<&'a mut Encounter, Rejection> {
    let payload = event.payload_name();
    let encounter_id = &event.event().encounter_id;
    if encounter_id.is_empty() {
        state
            .active_encounter
            .as_mut()
            .filter(|e| is_live(e))
            .ok_or(Rejection::NoActiveEncounter { payload })
    } else {
        encounter_mut(state, encounter_id).ok_or_else(|| Rejection::UnknownEncounter {
            payload,
            encounter_id: encounter_id.clone(),
        })
    }
}

pub(super) fn set_medically_optimised(
    state: &mut PatientCareState,
    event: &ValidEvent,
    optimised: bool,
    reason: &str,
) -> Result<(), Rejection> {
    let encounter = target_encounter(state, event)?;
    let optimisation = encounter
        .medical_optimisation
        .get_or_insert_with(Default::default);
    let fact = OptimisationFact {
        optimised,
        revoked_reason: if optimised {
            String::new()
        } else {
            reason.to_owned()
        },
        stamp: Some(event.stamp()),
    };
    insert_by_stamp(&mut optimisation.history, fact, |f| f.stamp.as_ref());
    derive_optimisation(optimisation);
    Ok(())
}

/// Optimised or not as the latest fact by clinical time says; still
/// optimised, it has been since the first time it was said after the latest
/// revocation.
fn derive_optimisation(optimisation: &mut MedicalOptimisation) {
    let Some(latest) = optimisation.history.last() else {
        return;
    };
    let since = start_of_latest_run(&optimisation.history, |f| f.optimised)
        .filter(|first| first.optimised)
        .and_then(|first| first.stamp.as_ref())
        .and_then(|s| s.occurred_at);
    let (optimised, revoked_reason, stamp) = (
        latest.optimised,
        latest.revoked_reason.clone(),
        latest.stamp.clone(),
    );
    optimisation.optimised = optimised;
    optimisation.since = since;
    optimisation.revoked_reason = revoked_reason;
    optimisation.stamp = stamp;
}

pub(super) fn set_expected_discharge(
    state: &mut PatientCareState,
    event: &ValidEvent,
    set: &ExpectedDischargeDateSet,
) -> Result<(), Rejection> {
    let encounter = target_encounter(state, event)?;
    let stamp = event.stamp();
    if encounter
        .expected_discharge
        .as_ref()
        .is_none_or(|current| supersedes(&stamp, current.stamp.as_ref()))
    {
        encounter.expected_discharge = Some(ExpectedDischarge {
            date: set.expected_discharge_date,
            stamp: Some(stamp),
        });
    }
    Ok(())
}

/// In hospital now: admitted and not discharged (on leave counts).
pub(super) fn is_live(encounter: &Encounter) -> bool {
    matches!(
        encounter.status(),
        EncounterStatus::InProgress | EncounterStatus::OnLeave
    )
}

/// Computes status, class, location, history and discharge from the
/// movements in effect. Medical optimisation and the expected discharge date
/// are kept as they are: they are facts of their own.
pub(super) fn derive_encounter(encounter: &mut Encounter) {
    let has_admission = encounter
        .movements
        .iter()
        .any(|m| m.kind() == MovementKind::Admission);
    let admission_in_effect = encounter
        .movements
        .iter()
        .any(|m| m.kind() == MovementKind::Admission && m.cancelled_by_event_id.is_empty());
    // Every admission entered in error: the stay never happened.
    let admission_cancelled = has_admission && !admission_in_effect;

    let mut status = EncounterStatus::Unspecified;
    let mut location = None;
    let mut history: Vec<LocationStay> = Vec::new();
    let mut admitted_at = None;
    let mut discharged_at = None;
    let mut discharge = None;
    let mut expected_admission_at = None;
    let mut expected_return_at = None;
    let mut organisation = String::new();
    let mut patient_class = 0;
    let mut admission_method = 0;
    let mut attending_clinician = String::new();

    for movement in encounter
        .movements
        .iter()
        .filter(|m| m.cancelled_by_event_id.is_empty())
    {
        if !movement.organisation.is_empty() {
            organisation.clone_from(&movement.organisation);
        }
        if movement.patient_class != 0 {
            patient_class = movement.patient_class;
        }
        if movement.admission_method != 0 {
            admission_method = movement.admission_method;
        }
        if !movement.attending_clinician.is_empty() {
            attending_clinician.clone_from(&movement.attending_clinician);
        }
        match movement.kind() {
            MovementKind::PreAdmission => {
                if status == EncounterStatus::Unspecified {
                    status = EncounterStatus::Planned;
                    location.clone_from(&movement.location);
                }
                expected_admission_at = movement.expected_at;
            }
            MovementKind::Admission => {
                status = EncounterStatus::InProgress;
                admitted_at = movement.occurred_at;
                discharged_at = None;
                discharge = None;
                location.clone_from(&movement.location);
                begin_stay(&mut history, movement);
            }
            // Moves in a cancelled stay, or after the discharge in clinical
            // time, stay in the audit trail but change nothing.
            _ if admission_cancelled || status == EncounterStatus::Finished => {}
            MovementKind::Transfer => {
                if matches!(
                    status,
                    EncounterStatus::Unspecified | EncounterStatus::Planned
                ) {
                    status = EncounterStatus::InProgress;
                }
                location.clone_from(&movement.location);
                begin_stay(&mut history, movement);
            }
            MovementKind::LeaveStart => {
                if status == EncounterStatus::InProgress {
                    status = EncounterStatus::OnLeave;
                    expected_return_at = movement.expected_at;
                }
            }
            MovementKind::LeaveEnd => {
                if status == EncounterStatus::OnLeave {
                    status = EncounterStatus::InProgress;
                }
                expected_return_at = None;
            }
            MovementKind::Discharge => {
                status = EncounterStatus::Finished;
                discharged_at = movement.occurred_at;
                expected_return_at = None;
                if let Some(last) = history.last_mut() {
                    last.until = movement.occurred_at;
                }
                discharge = movement.discharge.clone().map(|d| Discharge {
                    encounter_id: encounter.encounter_id.clone(),
                    discharged_at: movement.occurred_at,
                    ..d
                });
            }
            MovementKind::ClassChange | MovementKind::Unspecified => {}
        }
    }
    if admission_cancelled {
        history.clear();
        status = if status == EncounterStatus::Planned {
            EncounterStatus::Planned
        } else {
            EncounterStatus::Cancelled
        };
        if status == EncounterStatus::Cancelled {
            location = None;
        }
        admitted_at = None;
        discharged_at = None;
        discharge = None;
    } else if status == EncounterStatus::Unspecified && !encounter.movements.is_empty() {
        // Nothing in effect: everything was entered in error.
        status = EncounterStatus::Cancelled;
    }

    encounter.status = status as i32;
    encounter.location = location;
    encounter.location_history = history;
    encounter.admitted_at = admitted_at;
    encounter.discharged_at = discharged_at;
    encounter.discharge = discharge;
    encounter.expected_admission_at = expected_admission_at;
    encounter.expected_return_at = expected_return_at;
    encounter.organisation = organisation;
    encounter.patient_class = patient_class;
    encounter.admission_method = admission_method;
    encounter.attending_clinician = attending_clinician;
}

/// Starts a stay, ending the one before unless a discharge already ended it
/// (a readmission within the same encounter).
fn begin_stay(history: &mut Vec<LocationStay>, movement: &Movement) {
    if let Some(last) = history.last_mut().filter(|s| s.until.is_none()) {
        last.until = movement.occurred_at;
    }
    history.push(LocationStay {
        location: movement.location.clone(),
        from: movement.occurred_at,
        until: None,
        event_id: movement.event_id.clone(),
    });
}
