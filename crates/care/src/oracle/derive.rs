//! Fields computed from the rest of the state after every event, so they
//! can never disagree with it: the active encounter, the last discharge, the
//! copies cohort queries use, and the current care setting.

use baton_proto::events::v1::{
    DischargeDestination, DischargeMethod, EpisodeEndReason, EpisodeType,
};
use baton_proto::state::v1::{
    CareSetting, Encounter, EncounterStatus, Movement, MovementKind, PatientCareState,
};
use prost_types::Timestamp;

use super::encounter::is_live;
use crate::time::Instant;

pub(super) fn derive(state: &mut PatientCareState) {
    place_encounters(state);
    state.last_discharge = state
        .past_encounters
        .iter()
        .chain(&state.active_encounter)
        .filter(|e| e.status() == EncounterStatus::Finished)
        .max_by_key(|e| Instant::of(e.discharged_at.as_ref()))
        .and_then(|e| e.discharge.as_deref().cloned());

    let live = state.active_encounter.as_ref().filter(|e| is_live(e));
    let optimisation = live.and_then(|e| e.medical_optimisation.as_ref());
    state.medically_optimised = optimisation.is_some_and(|m| m.optimised);
    state.medically_optimised_since = optimisation.and_then(|m| m.since);
    state.expected_discharge_date = live
        .and_then(|e| e.expected_discharge.as_ref())
        .and_then(|x| x.date);

    let (setting, since, organisation) = current_setting(state);
    state.setting = setting as i32;
    state.setting_since = since;
    state.setting_organisation = organisation;
}

/// The active encounter is the live one admitted last (or, with none live,
/// the planned one expected soonest); the others are past, oldest first.
fn place_encounters(state: &mut PatientCareState) {
    let mut all: Vec<Encounter> = state.active_encounter.take().into_iter().collect();
    all.append(&mut state.past_encounters);
    let start = |e: &Encounter| {
        let first = first_movement(e).map(|m| Instant::of(m.occurred_at.as_ref()));
        (
            Instant::of(e.admitted_at.as_ref()).max(first.unwrap_or(Instant::UNSET)),
            e.encounter_id.clone(),
        )
    };
    let active = all
        .iter()
        .enumerate()
        .filter(|(_, e)| is_live(e))
        .max_by_key(|(_, e)| start(e))
        .or_else(|| {
            all.iter()
                .enumerate()
                .filter(|(_, e)| e.status() == EncounterStatus::Planned)
                .max_by_key(|(_, e)| start(e))
        })
        .map(|(index, _)| index);
    state.active_encounter = active.map(|index| all.remove(index));
    all.sort_by_key(|e| start(e));
    state.past_encounters = all;
}

/// The first movement in effect, so a move entered in error does not say
/// when a stay began; with none in effect, the first movement at all.
fn first_movement(encounter: &Encounter) -> Option<&Movement> {
    encounter
        .movements
        .iter()
        .find(|m| m.cancelled_by_event_id.is_empty())
        .or(encounter.movements.first())
}

/// Where the patient is now: the latest, by clinical time, of being
/// admitted, joining a virtual ward, leaving one, or being discharged
/// somewhere. Death overrides everything.
fn current_setting(state: &PatientCareState) -> (CareSetting, Option<Timestamp>, String) {
    if let Some(death) = &state.death {
        return (CareSetting::Deceased, death.died_at, String::new());
    }
    let mut candidates: Vec<(Instant, u8, CareSetting, Option<Timestamp>, String)> = Vec::new();

    if let Some(encounter) = state.active_encounter.as_ref().filter(|e| is_live(e)) {
        let admitted = encounter
            .started_at
            .or(encounter.admitted_at)
            .or_else(|| first_movement(encounter).and_then(|m| m.occurred_at));
        let (setting, since) = if encounter.status() == EncounterStatus::OnLeave {
            let leave = encounter
                .movements
                .iter()
                .rev()
                .find(|m| {
                    m.kind() == MovementKind::LeaveStart && m.cancelled_by_event_id.is_empty()
                })
                .and_then(|m| m.occurred_at);
            (CareSetting::HospitalLeave, leave)
        } else {
            (CareSetting::Hospital, admitted)
        };
        candidates.push((
            Instant::of(admitted.as_ref()),
            3,
            setting,
            since,
            encounter.organisation.clone(),
        ));
    }
    for episode in state
        .episodes
        .iter()
        .filter(|e| e.r#type() == EpisodeType::VirtualWard)
    {
        let organisation = episode
            .service
            .as_ref()
            .map(|s| s.organisation.clone())
            .unwrap_or_default();
        match episode.ended_at {
            None => candidates.push((
                Instant::of(episode.started_at.as_ref()),
                2,
                CareSetting::VirtualWard,
                episode.started_at,
                organisation,
            )),
            // Readmitted or died: the admission or the death says where.
            Some(_)
                if matches!(
                    episode.end_reason(),
                    EpisodeEndReason::Readmitted | EpisodeEndReason::Died
                ) => {}
            Some(ended) => candidates.push((
                Instant::of(Some(&ended)),
                1,
                CareSetting::Community,
                Some(ended),
                String::new(),
            )),
        }
    }
    if let Some(discharge) = &state.last_discharge {
        candidates.push((
            Instant::of(discharge.discharged_at.as_ref()),
            0,
            setting_after_discharge(discharge.method(), discharge.destination()),
            discharge.discharged_at,
            discharge.destination_organisation.clone(),
        ));
    }
    candidates
        .into_iter()
        .max_by_key(|(at, priority, ..)| (*at, *priority))
        .map_or(
            (CareSetting::Community, None, String::new()),
            |(_, _, setting, since, organisation)| (setting, since, organisation),
        )
}

fn setting_after_discharge(
    method: DischargeMethod,
    destination: DischargeDestination,
) -> CareSetting {
    if method == DischargeMethod::Died {
        return CareSetting::Deceased;
    }
    match destination {
        DischargeDestination::CareHome => CareSetting::CareHome,
        DischargeDestination::VirtualWard => CareSetting::VirtualWard,
        DischargeDestination::CommunityHospital => CareSetting::CommunityHospital,
        DischargeDestination::OtherHospital => CareSetting::OtherHospital,
        DischargeDestination::Hospice => CareSetting::Hospice,
        DischargeDestination::Mortuary => CareSetting::Deceased,
        DischargeDestination::Home
        | DischargeDestination::TemporaryResidence
        | DischargeDestination::Other
        | DischargeDestination::Unspecified => CareSetting::Community,
    }
}
