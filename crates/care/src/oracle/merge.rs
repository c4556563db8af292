//! Patients merged (HL7 A40), and a patient's identifier changed so that
//! their record moves to a new key (A47). The event is written under both
//! keys. On the retired patient's partition, the fold marks the state merged
//! and returns an effect that appends a `MergedRecordTransferred` event,
//! with that state, under the survivor's key; on the survivor's partition it
//! records the link, and absorbs the retired record when the hand-over
//! arrives. Nothing needs both states in one place, so partitions can live
//! on different machines.

use baton_proto::events::v1::{
    CareEvent, MergedRecordTransferred, PatientIdentity, care_event::Payload,
};
use baton_proto::state::v1::{MergeKind, MergeLink, PatientCareState};

use super::encounter::{cancellation_order, derive_encounter, insert_movement};
use super::facts::{
    add_care_team_change, derive_referral, later, merge_demographics, sort_care_team,
    sort_episodes, sort_referrals,
};
use super::{Effect, Incoming};
use crate::EventId;

fn link(key: &str, event: &Incoming<'_>, kind: MergeKind) -> MergeLink {
    MergeLink {
        patient_key: key.to_owned(),
        merge_event_id: event.event().event_id.clone(),
        merged_at: event.event().occurred_at,
        kind: kind as i32,
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

/// The retired patient's side (of a merge, or the previous key of an
/// identifier change): mark the state merged, hand it over.
pub(super) fn retire(
    state: &mut PatientCareState,
    event: &Incoming<'_>,
    kind: MergeKind,
) -> Vec<Effect> {
    let retired = match event.payload() {
        Payload::PatientsMerged(merged) => merged.retired.clone(),
        Payload::PatientIdentifierChanged(changed) => changed.previous.clone(),
        _ => return Vec::new(),
    };
    state.merged_into = Some(Box::new(link(event.key().as_str(), event, kind)));
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
            retired,
            retired_state: Some(Box::new(state.clone())),
            merge_event_id: merge.event_id.clone(),
            kind: kind as i32,
            applied_event_ids: Vec::new(),
        })),
    };
    vec![Effect::Append {
        key: event.key().clone(),
        event: hand_over,
    }]
}

/// The survivor's side of the merge event: record where records came from.
pub(super) fn record_survivor(state: &mut PatientCareState, event: &Incoming<'_>, kind: MergeKind) {
    if let Some(retired) = event.other_key() {
        add_merged_from(state, link(retired.as_str(), event, kind));
    }
}

/// A47 on the record under the new identity: the previous identifiers are
/// no longer the patient's (but for any the new identity repeats), and when
/// they made another key, that record is linked here and absorbed when its
/// hand-over arrives.
pub(super) fn change_identifier(
    state: &mut PatientCareState,
    event: &Incoming<'_>,
    previous: Option<&PatientIdentity>,
) {
    let Some(previous) = previous else { return };
    let incoming = event.event().patient.clone().unwrap_or_default();
    if let Some(identity) = state.identity.as_mut() {
        identity
            .local_ids
            .retain(|id| !previous.local_ids.contains(id) || incoming.local_ids.contains(id));
        if !previous.nhs_number.is_empty()
            && identity.nhs_number == previous.nhs_number
            && incoming.nhs_number != previous.nhs_number
        {
            identity.nhs_number.clone_from(&incoming.nhs_number);
        }
    }
    record_survivor(state, event, MergeKind::IdentifierChanged);
}

/// The survivor absorbs the retired record: identifiers, encounters,
/// episodes, referrals and care team changes it does not have, and the
/// newer of each single-valued fact (each demographics field on its own).
pub(super) fn absorb(state: &mut PatientCareState, transferred: &MergedRecordTransferred) {
    let Some(retired) = &transferred.retired_state else {
        return;
    };
    let kind = transferred.kind();
    add_merged_from(
        state,
        MergeLink {
            patient_key: retired.patient_key.clone(),
            merge_event_id: transferred.merge_event_id.clone(),
            merged_at: retired.merged_into.as_ref().and_then(|l| l.merged_at),
            kind: kind as i32,
        },
    );
    if let Some(identity) = &retired.identity {
        let mine = state.identity.get_or_insert_with(Default::default);
        // After an identifier change the previous identifiers are gone;
        // after a merge the survivor is known by both.
        let dropped = match (kind, &transferred.retired) {
            (MergeKind::IdentifierChanged, Some(previous)) => previous.local_ids.as_slice(),
            _ => &[],
        };
        let kept: Vec<_> = identity
            .local_ids
            .iter()
            .filter(|id| !dropped.contains(id))
            .cloned()
            .collect();
        super::add_local_ids(&mut mine.local_ids, &kept);
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
        if super::stamps::compare_stamps(
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
            Some(mine) => absorb_encounter(mine, theirs),
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
                mine.history.sort_by(|a, b| {
                    super::stamps::compare_stamps(a.stamp.as_ref(), b.stamp.as_ref())
                });
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

/// Adds the movements and cancellations of `theirs` (the same encounter, as
/// another record held it) that `mine` does not have, and derives it again.
pub(super) fn absorb_encounter(
    mine: &mut baton_proto::state::v1::Encounter,
    theirs: &baton_proto::state::v1::Encounter,
) {
    for movement in &theirs.movements {
        if !mine
            .movements
            .iter()
            .any(|m| m.event_id == movement.event_id)
        {
            insert_movement(mine, movement.clone());
        }
    }
    for cancellation in &theirs.cancellations {
        if !mine
            .cancellations
            .iter()
            .any(|c| c.event_id == cancellation.event_id)
        {
            mine.cancellations.push(cancellation.clone());
        }
    }
    mine.cancellations
        .sort_by(|a, b| cancellation_order(a).cmp(&cancellation_order(b)));
    derive_encounter(mine);
}
