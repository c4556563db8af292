//! Care states as a person reads them: the current picture first, history
//! after, times in UTC.

use std::fmt::Write;

use baton_care::Instant;
use baton_care::cohort::setting_name;
use baton_proto::events::v1::care_event::Payload;
use baton_proto::events::v1::{CareEvent, Date, Demographics, Location};
use baton_proto::query::v1::{CohortChange, TimelineEntry};
use baton_proto::state::v1::{
    CancelMatch, CareSetting, Discharge, Encounter, EpisodeStatus, MergeKind, MergeLink,
    PatientCareState, ReferralStatus,
};
use prost_types::Timestamp;

/// `2026-01-05 09:30` (UTC), or `-` when unknown.
pub(crate) fn when(timestamp: Option<&Timestamp>) -> String {
    timestamp.map_or_else(
        || "-".to_owned(),
        |t| {
            let text = t.to_string();
            // RFC 3339 `2026-01-05T09:30:00Z` → `2026-01-05 09:30`
            text.get(..16)
                .map_or(text.clone(), |minutes| minutes.replace('T', " "))
        },
    )
}

fn date(date: Option<&Date>) -> String {
    date.map_or_else(
        || "-".to_owned(),
        |d| format!("{:04}-{:02}-{:02}", d.year, d.month, d.day),
    )
}

/// Lowercase words from an enum's proto name: `DISCHARGE_DESTINATION_VIRTUAL_WARD` → `virtual ward`.
fn words(proto_name: &str, prefix: &str) -> String {
    proto_name
        .trim_start_matches(prefix)
        .to_ascii_lowercase()
        .replace('_', " ")
}

fn place(location: Option<&Location>) -> String {
    let Some(l) = location else {
        return "-".to_owned();
    };
    let mut parts = vec![l.point_of_care.clone()];
    if !l.room.is_empty() {
        parts.push(format!("room {}", l.room));
    }
    if !l.bed.is_empty() {
        parts.push(format!("bed {}", l.bed));
    }
    parts.retain(|p| !p.is_empty());
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(", ")
    }
}

fn name(demographics: Option<&Demographics>) -> String {
    let Some(d) = demographics else {
        return String::new();
    };
    let name = format!("{} {}", d.given_name, d.family_name.to_uppercase());
    name.trim().to_owned()
}

/// The full, readable care state of one patient.
pub(crate) fn care_state(state: &PatientCareState) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        let _ = writeln!(out, "{label:<20}{value}");
    };
    let demographics = state.demographics.as_ref();
    let mut who = format!("{} {}", state.patient_key, name(demographics));
    if let Some(d) = demographics
        && d.birth_date.is_some()
    {
        who.push_str(&format!(", born {}", date(d.birth_date.as_ref())));
    }
    line("Patient", who.trim().to_owned());
    if let Some(identity) = &state.identity {
        let ids: Vec<String> = identity
            .local_ids
            .iter()
            .map(|l| format!("{}:{}", l.authority, l.value))
            .collect();
        if !ids.is_empty() {
            line("Local identifiers", ids.join(", "));
        }
    }
    // A retired record: what it last said is not where the patient is.
    if let Some(merged) = &state.merged_into {
        line("Setting", merged_into(merged));
        for merged in &state.merged_from {
            line("Merged from", merged_from(merged));
        }
        line("Version", version(state));
        return out;
    }
    let mut setting = format!(
        "{} since {}",
        setting_name(state.setting()),
        when(state.setting_since.as_ref())
    );
    if !state.setting_organisation.is_empty() {
        setting.push_str(&format!(" ({})", state.setting_organisation));
    }
    line("Setting", setting);

    if let Some(encounter) = &state.active_encounter {
        encounter_lines(encounter, &mut line);
    }
    if state.medically_optimised {
        line(
            "Medically optimised",
            format!(
                "yes, since {}",
                when(state.medically_optimised_since.as_ref())
            ),
        );
    }
    if state.expected_discharge_date.is_some() {
        line(
            "Expected discharge",
            date(state.expected_discharge_date.as_ref()),
        );
    }
    if let Some(discharge) = &state.last_discharge {
        line("Last discharge", last_discharge(state, discharge));
    }
    if let Some(frailty) = &state.frailty {
        line(
            "Frailty",
            format!(
                "CFS {} assessed {}",
                frailty.clinical_frailty_scale,
                when(frailty.assessed_at.as_ref())
            ),
        );
    }
    for episode in &state.episodes {
        let service = episode.service.as_ref().map_or(String::new(), |s| {
            format!(" {} ({})", s.code, s.organisation)
        });
        let status = if episode.status() == EpisodeStatus::Active {
            "open".to_owned()
        } else {
            format!(
                "ended {} ({})",
                when(episode.ended_at.as_ref()),
                words(episode.end_reason().as_str_name(), "EPISODE_END_REASON_")
            )
        };
        line(
            "Episode",
            format!(
                "{} {}{service} from {}, {status}",
                episode.episode_id,
                words(episode.r#type().as_str_name(), "EPISODE_TYPE_"),
                when(episode.started_at.as_ref()),
            ),
        );
    }
    for referral in &state.referrals {
        let service = referral.service.as_ref().map_or(String::new(), |s| {
            if s.name.is_empty() {
                s.code.clone()
            } else {
                s.name.clone()
            }
        });
        let mut text = format!(
            "{} to {service}: {} {}",
            referral.referral_id,
            words(referral.status().as_str_name(), "REFERRAL_STATUS_"),
            when(referral.status_at.as_ref())
        );
        if !referral.status_reason.is_empty() && referral.status() != ReferralStatus::Accepted {
            text.push_str(&format!(" ({})", referral.status_reason));
        }
        line("Referral", text);
    }
    if let Some(plan) = &state.care_plan {
        line(
            "Care plan",
            format!(
                "{} version {}, {}, {} goals, {} interventions",
                plan.care_plan_id,
                plan.version,
                words(plan.status().as_str_name(), "CARE_PLAN_STATUS_"),
                plan.goals.len(),
                plan.interventions.len()
            ),
        );
    }
    for entry in state.care_team.iter().filter(|e| e.active) {
        if let Some(member) = &entry.member {
            let role = member
                .role
                .as_ref()
                .map_or(String::new(), |r| format!(" ({})", r.display));
            line(
                "Care team",
                format!("{} {}{role}", member.member_id, member.name),
            );
        }
    }
    if let Some(death) = &state.death {
        line("Died", when(death.died_at.as_ref()));
    }
    for merged in &state.merged_from {
        line("Merged from", merged_from(merged));
    }
    for moved in &state.moved_visits {
        line(
            "Visit moved",
            format!(
                "{} to {} (as {}) at {}",
                moved.encounter_id,
                moved.to_patient_key,
                moved.to_encounter_id,
                when(moved.moved_at.as_ref())
            ),
        );
    }
    if !state.past_encounters.is_empty() {
        let past: Vec<String> = state
            .past_encounters
            .iter()
            .map(|e| {
                format!(
                    "{} {} {}→{}",
                    e.encounter_id,
                    words(e.status().as_str_name(), "ENCOUNTER_STATUS_"),
                    when(e.admitted_at.as_ref()),
                    when(e.discharged_at.as_ref())
                )
            })
            .collect();
        line("Past encounters", past.join("; "));
    }
    line("Version", version(state));
    out
}

fn version(state: &PatientCareState) -> String {
    let applied = state.applied.as_ref().map_or(String::new(), |a| {
        format!(", last applied p{}@{}", a.partition, a.offset)
    });
    format!(
        "{}{applied}, last recorded {}",
        state.version,
        when(state.last_recorded_at.as_ref())
    )
}

/// `merged into 9434765919 at … — read that record instead`.
fn merged_into(link: &MergeLink) -> String {
    let why = match link.kind() {
        MergeKind::IdentifierChanged => "identifier changed: now",
        MergeKind::PatientsMerged | MergeKind::Unspecified => "merged into",
    };
    format!(
        "{why} {} at {} — read that record instead",
        link.patient_key,
        when(link.merged_at.as_ref())
    )
}

fn merged_from(link: &MergeLink) -> String {
    let why = match link.kind() {
        MergeKind::IdentifierChanged => " (identifier changed)",
        MergeKind::PatientsMerged | MergeKind::Unspecified => "",
    };
    format!(
        "{} at {}{why}",
        link.patient_key,
        when(link.merged_at.as_ref())
    )
}

/// Where to, as the feed said it: the destination, else the code sent
/// (one Baton does not map), else that none was given.
fn destination(discharge: &Discharge) -> String {
    match (discharge.destination(), discharge.destination_code.as_str()) {
        (baton_proto::events::v1::DischargeDestination::Unspecified, "") => {
            "destination not given".to_owned()
        }
        (baton_proto::events::v1::DischargeDestination::Unspecified, code) => {
            format!("to {code:?}")
        }
        (known, _) => format!(
            "to {}",
            words(known.as_str_name(), "DISCHARGE_DESTINATION_")
        ),
    }
}

/// `2026-11-05 11:00 from V2001 at WARD-7 to home (RYY), clinical advice`.
fn last_discharge(state: &PatientCareState, discharge: &Discharge) -> String {
    let from = discharge.location.as_ref().or_else(|| {
        state
            .past_encounters
            .iter()
            .find(|e| e.encounter_id == discharge.encounter_id)
            .and_then(|e| e.location.as_ref())
    });
    let mut text = format!(
        "{} from {}",
        when(discharge.discharged_at.as_ref()),
        discharge.encounter_id
    );
    if from.is_some() {
        text.push_str(&format!(" at {}", place(from)));
    }
    text.push_str(&format!(" {}", destination(discharge)));
    if !discharge.destination_organisation.is_empty() {
        text.push_str(&format!(" ({})", discharge.destination_organisation));
    }
    if discharge.method() != baton_proto::events::v1::DischargeMethod::Unspecified {
        text.push_str(&format!(
            ", {}",
            words(discharge.method().as_str_name(), "DISCHARGE_METHOD_")
        ));
    }
    text
}

fn encounter_lines(encounter: &Encounter, line: &mut impl FnMut(&str, String)) {
    let class = if encounter.patient_class == 0 {
        String::new()
    } else {
        format!(
            " ({})",
            words(encounter.patient_class().as_str_name(), "PATIENT_CLASS_")
        )
    };
    // An attendance not (yet) an admission says when the patient arrived.
    let since = match (&encounter.admitted_at, &encounter.started_at) {
        (None, Some(started)) => format!("arrived {}", when(Some(started))),
        (admitted, _) => format!("admitted {}", when(admitted.as_ref())),
    };
    line(
        "Encounter",
        format!(
            "{} {}{class} at {}, {since}",
            encounter.encounter_id,
            words(encounter.status().as_str_name(), "ENCOUNTER_STATUS_"),
            if encounter.organisation.is_empty() {
                "-"
            } else {
                &encounter.organisation
            },
        ),
    );
    line("Location", place(encounter.location.as_ref()));
    if let Some(planned) = &encounter.planned_transfer {
        let mut text = format!("to {}", place(planned.to.as_ref()));
        if planned.planned_at.is_some() {
            text.push_str(&format!(" at {}", when(planned.planned_at.as_ref())));
        }
        text.push_str(&format!(
            " (planned {})",
            when(planned.requested_at.as_ref())
        ));
        line("Planned move", text);
    }
    if encounter.location_history.len() > 1 {
        let moves: Vec<String> = encounter
            .location_history
            .iter()
            .map(|stay| {
                format!(
                    "{} {}",
                    when(stay.from.as_ref()),
                    place(stay.location.as_ref())
                )
            })
            .collect();
        line("Moves", moves.join(" → "));
    }
}

/// What a cohort listing is about, beyond where each patient is: the
/// column the team asking reads first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Focus {
    Place,
    /// Virtual-ward episodes: pathway, since when, care plan version.
    VirtualWard,
    /// Delayed discharges: days optimised, expected discharge date.
    Discharge,
    /// Recent discharges: when, and where to.
    Discharged,
    /// Referrals to this service.
    Referral(String),
}

/// One row per patient: who, where, since when, the flags a ward or
/// discharge team looks for, and what `focus` asks about.
pub(crate) fn cohort_table(states: &[PatientCareState], focus: &Focus, now: Instant) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<14} {:<24} {:<15} {:<17} {:<6} {:<18} {:>3} {:<3} DETAIL",
        "PATIENT", "NAME", "SETTING", "SINCE", "ORG", "WARD", "CFS", "MO"
    );
    for state in states {
        let _ = writeln!(out, "{}", cohort_row(state, focus, now));
    }
    out
}

/// One line of `baton watch`: what happened, then the patient's row.
pub(crate) fn cohort_change(
    change: CohortChange,
    state: &PatientCareState,
    focus: &Focus,
    now: Instant,
) -> String {
    let what = match change {
        CohortChange::Member => "member",
        CohortChange::Joined => "JOINED",
        CohortChange::Changed => "changed",
        CohortChange::Left => "LEFT",
        CohortChange::Synced | CohortChange::Unspecified => "",
    };
    format!("{what:<8} {}", cohort_row(state, focus, now))
}

fn cohort_row(state: &PatientCareState, focus: &Focus, now: Instant) -> String {
    let ward = match &state.active_encounter {
        Some(e)
            if matches!(
                state.setting(),
                CareSetting::Hospital | CareSetting::HospitalLeave
            ) =>
        {
            e.location
                .as_ref()
                .map_or(String::new(), |l| l.point_of_care.clone())
        }
        _ => active_episode(state)
            .and_then(|e| e.service.as_ref())
            .map_or(String::new(), |s| s.code.clone()),
    };
    format!(
        "{:<14} {:<24} {:<15} {:<17} {:<6} {:<18} {:>3} {:<3} {}",
        state.patient_key,
        truncate(&name(state.demographics.as_ref()), 24),
        setting_name(state.setting()),
        when(state.setting_since.as_ref()),
        state.setting_organisation,
        truncate(&ward, 18),
        state
            .frailty
            .as_ref()
            .map_or(String::new(), |f| f.clinical_frailty_scale.to_string()),
        if state.medically_optimised { "yes" } else { "" },
        detail(state, focus, now),
    )
    .trim_end()
    .to_owned()
}

fn active_episode(state: &PatientCareState) -> Option<&baton_proto::state::v1::Episode> {
    state
        .episodes
        .iter()
        .rev()
        .find(|e| e.status() == EpisodeStatus::Active)
}

fn detail(state: &PatientCareState, focus: &Focus, now: Instant) -> String {
    match focus {
        Focus::Place => String::new(),
        Focus::VirtualWard => {
            let Some(episode) = active_episode(state) else {
                return String::new();
            };
            let mut text = format!(
                "{} since {}",
                words(episode.pathway().as_str_name(), "PATHWAY_"),
                when(episode.started_at.as_ref())
            );
            if let Some(plan) = &state.care_plan {
                text.push_str(&format!(", care plan v{}", plan.version));
            }
            text
        }
        Focus::Discharge => {
            let mut parts = Vec::new();
            if state.medically_optimised
                && let Some(since) = &state.medically_optimised_since
            {
                let days = (now.seconds() - since.seconds).div_euclid(86_400);
                parts.push(format!(
                    "optimised {days} {}",
                    if days == 1 { "day" } else { "days" }
                ));
            }
            if state.expected_discharge_date.is_some() {
                parts.push(format!(
                    "EDD {}",
                    date(state.expected_discharge_date.as_ref())
                ));
            }
            parts.join(", ")
        }
        Focus::Discharged => state.last_discharge.as_ref().map_or(String::new(), |d| {
            let mut text = format!(
                "discharged {} to {}",
                when(d.discharged_at.as_ref()),
                words(d.destination().as_str_name(), "DISCHARGE_DESTINATION_")
            );
            if !d.destination_organisation.is_empty() {
                text.push_str(&format!(" ({})", d.destination_organisation));
            }
            text
        }),
        Focus::Referral(service) => state
            .referrals
            .iter()
            .filter(|r| r.service.as_ref().is_some_and(|s| &s.code == service))
            .map(|r| {
                let mut text = format!(
                    "{} {}",
                    r.referral_id,
                    words(r.status().as_str_name(), "REFERRAL_STATUS_")
                );
                if r.status() == ReferralStatus::Requested
                    && let Some(by) = &r.respond_by
                {
                    let overdue = by.seconds < now.seconds();
                    text.push_str(&format!(
                        " (due {}{})",
                        when(Some(by)),
                        if overdue { ", OVERDUE" } else { "" }
                    ));
                }
                text
            })
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// A patient's timeline, one event a line, corrections marked.
pub(crate) fn timeline(patient_key: &str, entries: &[TimelineEntry]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Timeline of {patient_key}: {} {}, in clinical order (times UTC)",
        entries.len(),
        if entries.len() == 1 {
            "event"
        } else {
            "events"
        }
    );
    for entry in entries {
        let Some(event) = &entry.event else { continue };
        let mut line = format!(
            "{}  {:<44} recorded {}",
            when(event.occurred_at.as_ref()),
            truncate(&event_summary(event), 44),
            when(event.recorded_at.as_ref()),
        );
        if entry.late {
            line.push_str("  LATE");
        }
        if !entry.cancelled_by_event_id.is_empty() {
            line.push_str(&format!(
                "  CANCELLED by {}",
                short_id(&entry.cancelled_by_event_id)
            ));
        }
        if !entry.cancels_event_id.is_empty() {
            line.push_str(&format!(
                "  corrects {}{}",
                short_id(&entry.cancels_event_id),
                match entry.cancel_match() {
                    CancelMatch::EventId => " (named)",
                    CancelMatch::ClinicalTimeAndLocation => " (same time and places)",
                    CancelMatch::ClinicalTime => " (same time)",
                    CancelMatch::Location => " (same places)",
                    CancelMatch::LatestInEffect => " (latest by then: nothing matched)",
                    CancelMatch::Repeat => " (again)",
                    CancelMatch::Pending | CancelMatch::Unspecified => "",
                }
            ));
        } else if entry.cancel_match() == CancelMatch::Pending {
            line.push_str("  WAITING for what it cancels");
        }
        if !entry.merged_record_key.is_empty() {
            line.push_str(&format!("  (merged record {})", entry.merged_record_key));
        }
        let _ = writeln!(out, "{line}  [{}]", short_id(&event.event_id));
    }
    out
}

/// The first group of an event id: enough to tell events of one patient
/// apart on a screen.
fn short_id(event_id: &str) -> &str {
    event_id.split('-').next().unwrap_or(event_id)
}

/// `admitted to AMU (V1)`, `transferred to WARD-7`, `frailty assessed: CFS 6`.
fn event_summary(event: &CareEvent) -> String {
    let Some(payload) = &event.payload else {
        return "(no payload)".to_owned();
    };
    let name = baton_care::payload_name(payload).replace('_', " ");
    let visit = if event.encounter_id.is_empty() {
        String::new()
    } else {
        format!(" ({})", event.encounter_id)
    };
    let detail = match payload {
        Payload::Admitted(a) => format!(" to {}", place(a.location.as_ref())),
        Payload::Transferred(t) => format!(" to {}", place(t.to.as_ref())),
        Payload::PreAdmitted(p) => format!(" to {}", place(p.expected_location.as_ref())),
        Payload::AttendanceStarted(a) => format!(" at {}", place(a.location.as_ref())),
        Payload::PatientClassChanged(c) => {
            let class = words(c.patient_class().as_str_name(), "PATIENT_CLASS_");
            match &c.location {
                Some(at) => format!(" to {class} at {}", place(Some(at))),
                None => format!(" to {class}"),
            }
        }
        Payload::TransferPlanned(t) => format!(" to {}", place(t.to.as_ref())),
        Payload::Discharged(d) => format!(
            " {}",
            destination(&Discharge {
                destination: d.destination,
                destination_code: d.destination_code.clone(),
                ..Default::default()
            })
        ),
        Payload::VisitMoved(v) => format!(
            ": {} of {} moved here",
            v.from_encounter_id,
            v.from.as_ref().map_or("", |p| p.nhs_number.as_str())
        ),
        Payload::FrailtyAssessed(f) => format!(": CFS {}", f.clinical_frailty_scale),
        Payload::EpisodeStarted(e) => format!(
            ": {} {}",
            e.service.as_ref().map_or("", |s| s.code.as_str()),
            words(e.pathway().as_str_name(), "PATHWAY_")
        ),
        Payload::ReferralRequested(r) => format!(
            " {} to {}",
            r.referral_id,
            r.service.as_ref().map_or("", |s| s.code.as_str())
        ),
        Payload::CarePlanChanged(c) => format!(" to v{}", c.version),
        Payload::ExpectedDischargeDateSet(e) => {
            format!(": {}", date(e.expected_discharge_date.as_ref()))
        }
        Payload::PatientsMerged(m) => format!(
            ": {} merged in",
            m.retired.as_ref().map_or("", |r| r.nhs_number.as_str())
        ),
        _ => String::new(),
    };
    format!("{name}{detail}{visit}")
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(width - 1).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_care::fixtures::{admitted, state_of, transferred};

    #[test]
    fn an_inpatient_reads_naturally() {
        let events = [
            admitted("9434765919", "V1", 1_767_600_000, "AMU"),
            transferred("9434765919", "V1", 1_767_603_600, "WARD-7"),
        ];
        let state = state_of(events);
        let text = care_state(&state);
        assert!(
            text.contains("Setting             hospital since 2026-01-05 08:00 (RXX)"),
            "{text}"
        );
        assert!(text.contains("Location            WARD-7"), "{text}");
        assert!(text.contains("AMU → 2026-01-05 09:00 WARD-7"), "{text}");
        let table = cohort_table(&[state], &Focus::Place, Instant::UNSET);
        assert!(
            table.lines().nth(1).unwrap().starts_with("9434765919"),
            "{table}"
        );
        assert!(table.contains("WARD-7"), "{table}");
    }

    #[test]
    fn a_discharge_says_where_from_and_where_to() {
        use baton_care::fixtures::{discharged, encounter_event};
        use baton_proto::events::v1::{DischargeDestination, DischargeMethod, Discharged};
        let home = state_of([
            admitted("9434765919", "V1", 1_767_600_000, "AMU"),
            transferred("9434765919", "V1", 1_767_603_600, "WARD-7"),
            discharged(
                "9434765919",
                "V1",
                1_767_700_000,
                DischargeDestination::Home,
            ),
        ]);
        let text = care_state(&home);
        assert!(
            text.contains(
                "Last discharge      2026-01-06 11:46 from V1 at WARD-7 to home, clinical advice"
            ),
            "{text}"
        );
        // A destination code Baton does not map is shown as sent.
        let unmapped = encounter_event(
            "9434765919",
            "V1",
            1_767_700_000,
            Payload::Discharged(Discharged {
                method: DischargeMethod::Unspecified as i32,
                destination_code: "Nursing home".into(),
                ..Default::default()
            }),
        );
        let state = state_of([admitted("9434765919", "V1", 1_767_600_000, "AMU"), unmapped]);
        let text = care_state(&state);
        assert!(
            text.contains("from V1 at AMU to \"Nursing home\"\n"),
            "{text}"
        );
        assert!(!text.contains("unspecified"), "{text}");
    }

    #[test]
    fn a_merged_record_points_at_the_survivor_not_its_last_setting() {
        use baton_care::fixtures::patients_merged;
        use baton_care::{AppliedIds, LogPosition, ValidEvent, apply};
        let mut retired = state_of([admitted("4010232137", "V9", 1_767_600_000, "WARD-9")]);
        let merge =
            ValidEvent::new(patients_merged("9434765919", "4010232137", 1_767_700_000)).unwrap();
        let mut applied = AppliedIds::new();
        apply(&mut retired, &mut applied, &merge, LogPosition::new(0, 9)).unwrap();
        let text = care_state(&retired);
        assert!(
            text.contains("Setting             merged into 9434765919 at 2026-01-06 11:46 — read that record instead"),
            "{text}"
        );
        assert!(!text.contains("hospital"), "{text}");
        assert!(!text.contains("WARD-9"), "{text}");
    }
}
