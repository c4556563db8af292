//! Facts about the patient outside a hospital stay. Single-valued facts are
//! last-writer-wins by clinical time ([`supersedes`]), so an assessment that
//! arrives late never hides a newer one. Referrals keep every status change
//! and show the latest by clinical time.

use baton_proto::events::v1::{
    CarePlanChanged, CareTeamMember, CareTeamMemberAssigned, Demographics, Died, EpisodeEnded,
    EpisodeStarted, FrailtyAssessed, ReferralRequested,
};
use baton_proto::state::v1::{
    CarePlan, CareTeamChange, CareTeamEntry, Death, DemographicsStamps, Episode, EpisodeStatus,
    FactStamp, FrailtyScore, PatientCareState, Referral, ReferralStatus, ReferralTransition,
};

use super::{Incoming, lists};
use crate::time::{Instant, compare_stamps, insert_by_stamp, start_of_latest_run, supersedes};

pub(super) const ACCEPTED: ReferralStatus = ReferralStatus::Accepted;
pub(super) const REJECTED: ReferralStatus = ReferralStatus::Rejected;
pub(super) const CANCELLED: ReferralStatus = ReferralStatus::Cancelled;
pub(super) const COMPLETED: ReferralStatus = ReferralStatus::Completed;

/// Each field takes the value of the latest update, by clinical time, that
/// carries it: a late, older update fills a field only where nothing newer
/// set it, whatever order the updates arrive in.
pub(super) fn record_demographics(
    state: &mut PatientCareState,
    event: &Incoming<'_>,
    incoming: Option<&Demographics>,
) {
    let Some(incoming) = incoming else { return };
    let stamp = event.stamp();
    let every_field = DemographicsStamps {
        family_name: Some(stamp.clone()),
        given_name: Some(stamp.clone()),
        birth_date: Some(stamp.clone()),
        sex: Some(stamp.clone()),
        postcode: Some(stamp.clone()),
        gp_practice: Some(stamp.clone()),
    };
    merge_demographics(
        state.demographics.get_or_insert_with(Default::default),
        state
            .demographics_field_stamps
            .get_or_insert_with(Default::default),
        incoming,
        &every_field,
    );
    if supersedes(&stamp, state.demographics_stamp.as_ref()) {
        state.demographics_stamp = Some(stamp);
    }
}

/// Takes each field `incoming` carries (is not empty) from an update later
/// than the one the current value was taken from.
pub(super) fn merge_demographics(
    current: &mut Demographics,
    stamps: &mut DemographicsStamps,
    incoming: &Demographics,
    incoming_stamps: &DemographicsStamps,
) {
    macro_rules! take {
        ($field:ident, $carried:expr) => {
            if $carried
                && compare_stamps(incoming_stamps.$field.as_ref(), stamps.$field.as_ref()).is_gt()
            {
                current.$field.clone_from(&incoming.$field);
                stamps.$field.clone_from(&incoming_stamps.$field);
            }
        };
    }
    take!(family_name, !incoming.family_name.is_empty());
    take!(given_name, !incoming.given_name.is_empty());
    take!(birth_date, incoming.birth_date.is_some());
    take!(sex, incoming.sex != 0);
    take!(postcode, !incoming.postcode.is_empty());
    take!(gp_practice, !incoming.gp_practice.is_empty());
}

pub(super) fn record_death(state: &mut PatientCareState, event: &Incoming<'_>, died: &Died) {
    let stamp = event.stamp();
    if state
        .death
        .as_ref()
        .is_none_or(|current| supersedes(&stamp, current.stamp.as_ref()))
    {
        state.death = Some(Box::new(Death {
            died_at: died.died_at.or(event.event().occurred_at),
            stamp: Some(stamp),
        }));
    }
}

fn referral_mut<'a>(state: &'a mut PatientCareState, referral_id: &str) -> &'a mut Referral {
    let index = match state
        .referrals
        .iter()
        .position(|r| r.referral_id == referral_id)
    {
        Some(index) => index,
        None => {
            lists::push(
                &mut state.referrals,
                Referral {
                    referral_id: referral_id.to_owned(),
                    ..Default::default()
                },
            );
            state.referrals.len() - 1
        }
    };
    &mut state.referrals[index]
}

pub(super) fn request_referral(
    state: &mut PatientCareState,
    event: &Incoming<'_>,
    request: &ReferralRequested,
) {
    let referral = referral_mut(state, &request.referral_id);
    referral.service.clone_from(&request.service);
    referral.priority = request.priority;
    referral.reason.clone_from(&request.reason);
    referral
        .referring_organisation
        .clone_from(&request.referring_organisation);
    referral.respond_by = request.respond_by;
    referral
        .original_referral_id
        .clone_from(&request.original_referral_id);
    referral.requested_at = event.event().occurred_at;
    add_transition(referral, event, ReferralStatus::Requested, "");
    sort_referrals(state);
}

/// A status change of a referral. One Baton has not seen requested (the
/// request went to another system, or comes late) is kept all the same.
pub(super) fn referral_transition(
    state: &mut PatientCareState,
    event: &Incoming<'_>,
    referral_id: &str,
    status: ReferralStatus,
    reason: &str,
) {
    add_transition(referral_mut(state, referral_id), event, status, reason);
    sort_referrals(state);
}

/// Referrals in the order they were requested, then by id, so the list does
/// not depend on the order their events arrived in.
pub(super) fn sort_referrals(state: &mut PatientCareState) {
    state
        .referrals
        .sort_by(|a, b| referral_order(a).cmp(&referral_order(b)));
}

fn add_transition(
    referral: &mut Referral,
    event: &Incoming<'_>,
    status: ReferralStatus,
    reason: &str,
) {
    let transition = ReferralTransition {
        status: status as i32,
        occurred_at: event.event().occurred_at,
        reason: reason.to_owned(),
        stamp: Some(event.stamp()),
    };
    let at = referral
        .history
        .partition_point(|t| compare_stamps(t.stamp.as_ref(), transition.stamp.as_ref()).is_le());
    lists::insert(&mut referral.history, at, transition);
    derive_referral(referral);
}

pub(super) fn derive_referral(referral: &mut Referral) {
    if let Some(latest) = referral.history.last() {
        referral.status = latest.status;
        referral.status_at = latest.occurred_at;
        referral.status_reason.clone_from(&latest.reason);
    }
}

fn episode_mut<'a>(state: &'a mut PatientCareState, episode_id: &str) -> &'a mut Episode {
    let index = match state
        .episodes
        .iter()
        .position(|e| e.episode_id == episode_id)
    {
        Some(index) => index,
        None => {
            lists::push(
                &mut state.episodes,
                Episode {
                    episode_id: episode_id.to_owned(),
                    ..Default::default()
                },
            );
            state.episodes.len() - 1
        }
    };
    &mut state.episodes[index]
}

pub(super) fn start_episode(
    state: &mut PatientCareState,
    event: &Incoming<'_>,
    started: &EpisodeStarted,
) {
    let episode = episode_mut(state, &started.episode_id);
    episode.r#type = started.r#type;
    episode.service.clone_from(&started.service);
    episode.pathway = started.pathway;
    episode.started_at = event.event().occurred_at;
    derive_episode(episode);
    sort_episodes(state);
}

/// Ends an episode; an end that arrives before its start is kept, and the
/// start fills in the rest when it comes.
pub(super) fn end_episode(
    state: &mut PatientCareState,
    event: &Incoming<'_>,
    ended: &EpisodeEnded,
) {
    let episode = episode_mut(state, &ended.episode_id);
    episode.ended_at = event.event().occurred_at;
    episode.end_reason = ended.reason;
    derive_episode(episode);
    sort_episodes(state);
}

fn derive_episode(episode: &mut Episode) {
    episode.status = if episode.ended_at.is_some() {
        EpisodeStatus::Finished
    } else {
        EpisodeStatus::Active
    } as i32;
}

pub(super) fn sort_episodes(state: &mut PatientCareState) {
    state
        .episodes
        .sort_by(|a, b| episode_order(a).cmp(&episode_order(b)));
}

/// The same plan moves on by version; a different plan replaces the current
/// one when it is newer in clinical time or, changed at the same moment, has
/// the greater id, so every arrival order picks the same plan.
pub(super) fn change_care_plan(
    state: &mut PatientCareState,
    event: &Incoming<'_>,
    changed: &CarePlanChanged,
) {
    let occurred = event.occurred();
    let replaces = match &state.care_plan {
        None => true,
        Some(current) if current.care_plan_id == changed.care_plan_id => {
            (changed.version, occurred)
                > (current.version, Instant::of(current.changed_at.as_ref()))
        }
        Some(current) => {
            (occurred, changed.care_plan_id.as_str())
                > (
                    Instant::of(current.changed_at.as_ref()),
                    current.care_plan_id.as_str(),
                )
        }
    };
    if replaces {
        state.care_plan = Some(CarePlan {
            care_plan_id: changed.care_plan_id.clone(),
            version: changed.version,
            status: changed.status,
            goals: changed.goals.clone(),
            interventions: changed.interventions.clone(),
            episode_id: changed.episode_id.clone(),
            changed_at: event.event().occurred_at,
        });
    }
}

pub(super) fn assess_frailty(
    state: &mut PatientCareState,
    event: &Incoming<'_>,
    assessed: &FrailtyAssessed,
) {
    let stamp = event.stamp();
    if state
        .frailty
        .as_ref()
        .is_none_or(|current| supersedes(&stamp, current.stamp.as_ref()))
    {
        state.frailty = Some(FrailtyScore {
            clinical_frailty_scale: assessed.clinical_frailty_scale,
            assessed_at: event.event().occurred_at,
            assessor: assessed.assessor.clone(),
            stamp: Some(stamp),
        });
    }
}

fn care_team_entry<'a>(state: &'a mut PatientCareState, member_id: &str) -> &'a mut CareTeamEntry {
    let index = match state
        .care_team
        .iter()
        .position(|e| e.member.as_ref().is_some_and(|m| m.member_id == member_id))
    {
        Some(index) => index,
        None => {
            lists::push(
                &mut state.care_team,
                CareTeamEntry {
                    member: Some(CareTeamMember {
                        member_id: member_id.to_owned(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            );
            state.care_team.len() - 1
        }
    };
    &mut state.care_team[index]
}

pub(super) fn assign_care_team_member(
    state: &mut PatientCareState,
    event: &Incoming<'_>,
    assigned: &CareTeamMemberAssigned,
) {
    let Some(member) = &assigned.member else {
        return;
    };
    let change = CareTeamChange {
        assigned: true,
        member: Some(member.clone()),
        stamp: Some(event.stamp()),
    };
    add_care_team_change(care_team_entry(state, &member.member_id), change);
    sort_care_team(state);
}

/// A removal Baton saw no assignment for is kept as a former member, so a
/// late, older assignment cannot make them current again.
pub(super) fn remove_care_team_member(
    state: &mut PatientCareState,
    event: &Incoming<'_>,
    member_id: &str,
) {
    let change = CareTeamChange {
        assigned: false,
        member: None,
        stamp: Some(event.stamp()),
    };
    add_care_team_change(care_team_entry(state, member_id), change);
    sort_care_team(state);
}

/// Adds an assignment or removal to the member's history, unless it is
/// there already (a merge brings the same events twice), and derives the
/// entry again.
pub(super) fn add_care_team_change(entry: &mut CareTeamEntry, change: CareTeamChange) {
    let event_id = change.stamp.as_ref().map(|s| s.event_id.as_str());
    if !entry
        .history
        .iter()
        .any(|c| c.stamp.as_ref().map(|s| s.event_id.as_str()) == event_id)
    {
        insert_by_stamp(&mut entry.history, change, |c| c.stamp.as_ref());
    }
    derive_care_team_entry(entry);
}

/// Active as the latest change says, since the first change of the latest
/// run of assignments (or of removals), and known as the latest assignment
/// said, which may be older than a removal: so an assignment arriving after
/// a removal that named the member by id alone still says who they were.
fn derive_care_team_entry(entry: &mut CareTeamEntry) {
    let Some(latest) = entry.history.last() else {
        return;
    };
    let active = latest.assigned;
    // Compared before they are copied: most changes leave them as they were.
    if entry.stamp != latest.stamp {
        entry.stamp = latest.stamp.clone();
    }
    let since = start_of_latest_run(&entry.history, |c| c.assigned)
        .and_then(|first| first.stamp.as_ref())
        .and_then(|s| s.occurred_at);
    let assigned_as = entry
        .history
        .iter()
        .rev()
        .filter(|c| c.assigned)
        .find_map(|c| c.member.as_ref());
    if let Some(member) = assigned_as
        && entry.member.as_ref() != Some(member)
    {
        entry.member = Some(member.clone());
    }
    entry.active = active;
    entry.since = since;
}

/// Members by id, so the list does not depend on the order their events
/// arrived in.
pub(super) fn sort_care_team(state: &mut PatientCareState) {
    state
        .care_team
        .sort_by(|a, b| member_order(a).cmp(&member_order(b)));
}

/// The orders of the lists above, by reference (a sort compares each
/// element many times; a key that owned its id would copy it every time).
fn referral_order(referral: &Referral) -> (Instant, &str) {
    (
        Instant::of(referral.requested_at.as_ref()),
        referral.referral_id.as_str(),
    )
}

fn episode_order(episode: &Episode) -> (Instant, &str) {
    (
        Instant::of(episode.started_at.as_ref()),
        episode.episode_id.as_str(),
    )
}

fn member_order(entry: &CareTeamEntry) -> Option<&str> {
    entry.member.as_ref().map(|m| m.member_id.as_str())
}

/// The later of two optional stamped facts.
pub(super) fn later<'a, T>(
    a: Option<&'a T>,
    b: Option<&'a T>,
    stamp: impl Fn(&T) -> Option<&FactStamp>,
) -> Option<&'a T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if supersedes_opt(stamp(b), stamp(a)) {
            b
        } else {
            a
        }),
        (a, b) => a.or(b),
    }
}

fn supersedes_opt(candidate: Option<&FactStamp>, current: Option<&FactStamp>) -> bool {
    compare_stamps(candidate, current).is_gt()
}
