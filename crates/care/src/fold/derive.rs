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
    // Compared before it is copied: most events leave it as it was.
    let last_discharge = state
        .past_encounters
        .iter()
        .chain(&state.active_encounter)
        .filter(|e| e.status() == EncounterStatus::Finished)
        .max_by_key(|e| Instant::of(e.discharged_at.as_ref()))
        .and_then(|e| e.discharge.as_deref());
    if last_discharge != state.last_discharge.as_ref() {
        state.last_discharge = last_discharge.cloned();
    }

    let live = state.active_encounter.as_ref().filter(|e| is_live(e));
    let optimisation = live.and_then(|e| e.medical_optimisation.as_ref());
    state.medically_optimised = optimisation.is_some_and(|m| m.optimised);
    state.medically_optimised_since = optimisation.and_then(|m| m.since);
    state.expected_discharge_date = live
        .and_then(|e| e.expected_discharge.as_ref())
        .and_then(|x| x.date);

    let (setting, since, organisation) = current_setting(state);
    let organisation =
        (state.setting_organisation != organisation).then(|| organisation.to_owned());
    state.setting = setting as i32;
    state.setting_since = since;
    if let Some(organisation) = organisation {
        state.setting_organisation = organisation;
    }
}

/// When an encounter began, and its id to break ties: the order of
/// encounters.
fn start(encounter: &Encounter) -> (Instant, &str) {
    let first = first_movement(encounter).map(|m| Instant::of(m.occurred_at.as_ref()));
    (
        Instant::of(encounter.admitted_at.as_ref()).max(first.unwrap_or(Instant::UNSET)),
        encounter.encounter_id.as_str(),
    )
}

/// The active encounter is the live one admitted last (or, with none live,
/// the planned one expected soonest); the others are past, oldest first.
fn place_encounters(state: &mut PatientCareState) {
    // Positions in the active encounter (if any) followed by the past ones.
    let all = || state.active_encounter.iter().chain(&state.past_encounters);
    let latest = |keep: fn(&Encounter) -> bool| {
        all()
            .enumerate()
            .filter(|(_, e)| keep(e))
            .max_by(|(_, a), (_, b)| start(a).cmp(&start(b)))
            .map(|(index, _)| index)
    };
    let active = latest(is_live).or_else(|| latest(|e| e.status() == EncounterStatus::Planned));
    let kept = match active {
        Some(index) => index == 0 && state.active_encounter.is_some(),
        None => state.active_encounter.is_none(),
    };
    // Most events leave the encounters where they are: nothing to move.
    if kept
        && state
            .past_encounters
            .is_sorted_by(|a, b| start(a) <= start(b))
    {
        return;
    }
    let mut all: Vec<Encounter> = state.active_encounter.take().into_iter().collect();
    all.append(&mut state.past_encounters);
    state.active_encounter = active.map(|index| all.remove(index));
    all.sort_by(|a, b| start(a).cmp(&start(b)));
    // No room kept for the encounter that became active.
    all.shrink_to_fit();
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
/// somewhere. Death overrides everything. Of candidates at the same time
/// and priority, the last considered wins.
fn current_setting<'s>(state: &'s PatientCareState) -> (CareSetting, Option<Timestamp>, &'s str) {
    /// When, its priority at the same time, and where from then.
    type Candidate<'s> = (Instant, u8, CareSetting, Option<Timestamp>, &'s str);
    if let Some(death) = &state.death {
        return (CareSetting::Deceased, death.died_at, "");
    }
    let mut best: Option<Candidate<'s>> = None;
    let mut consider = |candidate: Candidate<'s>| {
        if best.is_none_or(|(at, priority, ..)| (candidate.0, candidate.1) >= (at, priority)) {
            best = Some(candidate);
        }
    };

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
        consider((
            Instant::of(admitted.as_ref()),
            3,
            setting,
            since,
            encounter.organisation.as_str(),
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
            .map_or("", |s| s.organisation.as_str());
        match episode.ended_at {
            None => consider((
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
            Some(ended) => consider((
                Instant::of(Some(&ended)),
                1,
                CareSetting::Community,
                Some(ended),
                "",
            )),
        }
    }
    if let Some(discharge) = &state.last_discharge {
        consider((
            Instant::of(discharge.discharged_at.as_ref()),
            0,
            setting_after_discharge(discharge.method(), discharge.destination()),
            discharge.discharged_at,
            discharge.destination_organisation.as_str(),
        ));
    }
    best.map_or(
        (CareSetting::Community, None, ""),
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
