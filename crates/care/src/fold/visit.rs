//! A visit filed under the wrong patient moves to the right one (HL7 A45).
//! The `VisitMoved` event is written under both keys. On the partition of
//! the patient it leaves, the fold takes the encounter out of that record,
//! remembers where it went (later events for it there are refused, naming
//! the patient), and returns an effect that appends a
//! `MovedVisitTransferred` event, carrying the encounter, under the key of
//! the patient it moves to, whose record absorbs it. As with a merge,
//! nothing needs both states in one place.

use baton_proto::events::v1::{CareEvent, MovedVisitTransferred, care_event::Payload};
use baton_proto::state::v1::{MovedVisit, PatientCareState};

use super::encounter::{derive_encounter, encounter_mut};
use super::merge::absorb_encounter;
use super::{Effect, Incoming, Rejection, lists};
use crate::EventId;

/// The side of the patient the visit leaves: take the encounter out, hand
/// it over under its new number.
pub(super) fn move_away(state: &mut PatientCareState, event: &Incoming<'_>) -> Vec<Effect> {
    let Payload::VisitMoved(moved) = event.payload() else {
        return Vec::new();
    };
    let envelope = event.event();
    let from_encounter_id = moved.from_encounter_id.as_str();
    let taken = state
        .active_encounter
        .take_if(|e| e.encounter_id == from_encounter_id)
        .or_else(|| {
            let at = state
                .past_encounters
                .iter()
                .position(|e| e.encounter_id == from_encounter_id)?;
            Some(state.past_encounters.remove(at))
        });
    lists::push(
        &mut state.moved_visits,
        MovedVisit {
            encounter_id: from_encounter_id.to_owned(),
            to_patient_key: event.key().to_string(),
            to_encounter_id: envelope.encounter_id.clone(),
            event_id: envelope.event_id.clone(),
            moved_at: envelope.occurred_at,
        },
    );
    // A visit Baton never saw here: nothing to hand over.
    let Some(mut encounter) = taken else {
        return Vec::new();
    };
    encounter.encounter_id.clone_from(&envelope.encounter_id);
    derive_encounter(&mut encounter);
    let hand_over = CareEvent {
        event_id: EventId::derived(event.id(), "moved-visit-transferred").to_string(),
        patient: envelope.patient.clone(),
        occurred_at: envelope.occurred_at,
        recorded_at: envelope.recorded_at,
        source: envelope.source.clone(),
        correlation_id: envelope.correlation_id.clone(),
        causation_id: envelope.event_id.clone(),
        encounter_id: envelope.encounter_id.clone(),
        payload: Some(Payload::MovedVisitTransferred(MovedVisitTransferred {
            from: moved.from.clone(),
            encounter: Some(Box::new(encounter)),
            visit_moved_event_id: envelope.event_id.clone(),
        })),
    };
    vec![Effect::Append {
        key: event.key().clone(),
        event: hand_over,
    }]
}

/// The side of the patient the visit moves to: the encounter joins the
/// record (merged with what the record already had under that number).
pub(super) fn absorb(
    state: &mut PatientCareState,
    event: &Incoming<'_>,
    transferred: &MovedVisitTransferred,
) {
    let Some(theirs) = &transferred.encounter else {
        return;
    };
    let encounter_id = &event.event().encounter_id;
    // Moved here again after being moved away: it is this record's once more.
    state
        .moved_visits
        .retain(|moved| &moved.encounter_id != encounter_id);
    match encounter_mut(state, encounter_id) {
        Some(mine) => absorb_encounter(mine, theirs),
        None => {
            let mut theirs = (**theirs).clone();
            theirs.encounter_id.clone_from(encounter_id);
            derive_encounter(&mut theirs);
            lists::push(&mut state.past_encounters, theirs);
        }
    }
}

/// Refuses an event for an encounter that was moved to another patient:
/// the feed should send it under that patient.
pub(super) fn refuse_moved_away(
    state: &PatientCareState,
    event: &Incoming<'_>,
) -> Result<(), Rejection> {
    let encounter_id = &event.event().encounter_id;
    if encounter_id.is_empty()
        || matches!(
            event.payload(),
            Payload::VisitMoved(_) | Payload::MovedVisitTransferred(_)
        )
    {
        return Ok(());
    }
    match state
        .moved_visits
        .iter()
        .find(|moved| &moved.encounter_id == encounter_id)
    {
        Some(moved) => Err(Rejection::VisitMovedAway {
            payload: event.payload_name(),
            encounter_id: encounter_id.clone(),
            moved_to: moved.to_patient_key.clone(),
        }),
        None => Ok(()),
    }
}
