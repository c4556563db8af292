//! Patients merged (HL7 A40). The merge event is written under both keys.
//! On the retired patient's partition, the fold marks the state merged and
//! returns an effect that appends a `MergedRecordTransferred` event, with
//! that state, under the survivor's key; on the survivor's partition it
//! records the link, and absorbs the retired record when the hand-over
//! arrives. Nothing needs both states in one place, so partitions can live
//! on different machines.

use baton_proto::events::v1::{CareEvent, MergedRecordTransferred, care_event::Payload};
use baton_proto::state::v1::{MergeLink, PatientCareState};

use super::Effect;
use super::encounter::derive_encounter;
use super::facts::{
    add_care_team_change, derive_referral, later, merge_demographics, sort_care_team,
    sort_episodes, sort_referrals,
};
use crate::{EventId, ValidEvent};

fn link(key: &str, event: &ValidEvent) -> MergeLink {
    MergeLink {
        patient_key: key.to_owned(),
        merge_event_id: event.event().event_id.clone(),
        merged_at: event.event().occurred_at,
    }
}

fn add_merged_from(state: &mut PatientCareState, link: MergeLink) {
    if !state
        .merged_from
        .iter()
        .any(|l| l.patient_key == link.patient_key && l.merge_event_id == link.merge_event_id)
    {
        state.merged_from.push(link);
    }
}

/// The retired patient's side: mark the state merged, hand it over.
pub(super) fn retire(state: &mut PatientCareState, event: &ValidEvent) -> Vec<Effect> {
    let Payload::PatientsMerged(merged) = event.payload() else {
        return Vec::new();
    };
    state.merged_into = Some(link(event.key().as_str(), event));
    let merge = event.event();
    let hand_over = CareEvent {
        event_id: EventId::derived(event.id(), "merged-record-transferred").to_string(),
        patient: merge.patient.clone(),
        occurred_at: merge.occurred_at,
        recorded_at: merge.recorded_at,
        source: merge.source.clone(),
        correlation_id: merge.correlation_id.clone(),
        causation_id: merge.event_id.clone(),
        encounter_id: String::new(),
        payload: Some(Payload::MergedRecordTransferred(MergedRecordTransferred {
            retired: merged.retired.clone(),
            retired_state: Some(Box::new(state.clone())),
            merge_event_id: merge.event_id.clone(),
        })),
    };
    vec![Effect::Append {
        key: event.key().clone(),
        event: hand_over,
    }]
}

/// The survivor's side of the merge event: record where records came from.
pub(super) fn record_survivor(state: &mut PatientCareState, event: &ValidEvent) {
    if let Some(retired) = event.retired_key() {
        add_merged_from(state, link(retired.as_str(), event));
    }
}

/// The survivor absorbs the retired record: identifiers, encounters,
/// episodes, referrals and care team changes it does not have, and the
/// newer of each single-valued fact (each demographics field on its own).
pub(super) fn absorb(state: &mut PatientCareState, transferred: &MergedRecordTransferred) {
    let Some(retired) = &transferred.retired_state else {
        return;
    };
    add_merged_from(
        state,
        MergeLink {
            patient_key: retired.patient_key.clone(),
            merge_event_id: transferred.merge_event_id.clone(),
            merged_at: retired.merged_into.as_ref().and_then(|l| l.merged_at),
        },
    );
    if let Some(identity) = &retired.identity {
        let mine = state.identity.get_or_insert_with(Default::default);
        super::add_local_ids(&mut mine.local_ids, &identity.local_ids);
    }
    if let Some(demographics) = &retired.demographics {
        merge_demographics(
            state.demographics.get_or_insert_with(Default::default),
            state
                .demographics_field_stamps
                .get_or_insert_with(Default::default),
            demographics,
            &retired
                .demographics_field_stamps
                .clone()
                .unwrap_or_default(),
        );
        if crate::compare_stamps(
            retired.demographics_stamp.as_ref(),
            state.demographics_stamp.as_ref(),
        )
        .is_gt()
        {
            state
                .demographics_stamp
                .clone_from(&retired.demographics_stamp);
        }
    }

    let retired_encounters = retired
        .active_encounter
        .iter()
        .chain(&retired.past_encounters);
    for theirs in retired_encounters {
        let mine = state
            .active_encounter
            .iter_mut()
            .chain(state.past_encounters.iter_mut())
            .find(|e| e.encounter_id == theirs.encounter_id);
        match mine {
            Some(mine) => {
                for movement in &theirs.movements {
                    if !mine
                        .movements
                        .iter()
                        .any(|m| m.event_id == movement.event_id)
                    {
                        mine.movements.push(movement.clone());
                    }
                }
                mine.movements.sort_by(|a, b| {
                    let key = |m: &baton_proto::state::v1::Movement| {
                        (
                            crate::Instant::of(m.occurred_at.as_ref()),
                            crate::Instant::of(m.recorded_at.as_ref()),
                            m.event_id.clone(),
                        )
                    };
                    key(a).cmp(&key(b))
                });
                derive_encounter(mine);
            }
            None => state.past_encounters.push(theirs.clone()),
        }
    }

    for theirs in &retired.episodes {
        if !state
            .episodes
            .iter()
            .any(|e| e.episode_id == theirs.episode_id)
        {
            state.episodes.push(theirs.clone());
        }
    }
    sort_episodes(state);

    for theirs in &retired.referrals {
        match state
            .referrals
            .iter_mut()
            .find(|r| r.referral_id == theirs.referral_id)
        {
            Some(mine) => {
                for transition in &theirs.history {
                    let id = transition.stamp.as_ref().map(|s| s.event_id.as_str());
                    if !mine
                        .history
                        .iter()
                        .any(|t| t.stamp.as_ref().map(|s| s.event_id.as_str()) == id)
                    {
                        mine.history.push(transition.clone());
                    }
                }
                mine.history
                    .sort_by(|a, b| crate::compare_stamps(a.stamp.as_ref(), b.stamp.as_ref()));
                derive_referral(mine);
            }
            None => state.referrals.push(theirs.clone()),
        }
    }
    sort_referrals(state);

    for theirs in &retired.care_team {
        let member_id = theirs.member.as_ref().map(|m| m.member_id.as_str());
        match state
            .care_team
            .iter_mut()
            .find(|e| e.member.as_ref().map(|m| m.member_id.as_str()) == member_id)
        {
            Some(mine) => {
                for change in &theirs.history {
                    add_care_team_change(mine, change.clone());
                }
            }
            None => state.care_team.push(theirs.clone()),
        }
    }
    sort_care_team(state);

    state.frailty = later(state.frailty.as_ref(), retired.frailty.as_ref(), |f| {
        f.stamp.as_ref()
    })
    .cloned();
    state.death = later(state.death.as_ref(), retired.death.as_ref(), |d| {
        d.stamp.as_ref()
    })
    .cloned();
    state.care_plan = match (&state.care_plan, &retired.care_plan) {
        (Some(mine), Some(theirs)) => Some(
            if crate::Instant::of(theirs.changed_at.as_ref())
                > crate::Instant::of(mine.changed_at.as_ref())
            {
                theirs.clone()
            } else {
                mine.clone()
            },
        ),
        (mine, theirs) => mine.clone().or_else(|| theirs.clone()),
    };
    for id in &retired.applied_event_ids {
        if !state.applied_event_ids.contains(id) {
            state.applied_event_ids.push(id.clone());
        }
    }
}
