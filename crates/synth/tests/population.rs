//! The population as the demo and the benchmark use it: every event valid,
//! every patient's feed folding without a rejection into the states the
//! journeys describe.

use std::collections::{BTreeMap, HashMap};

use baton_care::{AppliedIds, LogPosition, ValidEvent, apply, new_state, payload_name};
use baton_proto::events::v1::care_event::Payload;
use baton_proto::events::v1::{CareEvent, DischargeDestination, EpisodeEndReason};
use baton_proto::state::v1::{CareSetting, EncounterStatus, EpisodeStatus, PatientCareState};
use baton_synth::{Population, PopulationConfig, events, population_for_events};
use proptest::prelude::*;

/// Validates and folds a feed in its order, patient by patient.
fn fold(feed: &[CareEvent]) -> Result<HashMap<String, PatientCareState>, String> {
    let mut states: HashMap<String, PatientCareState> = HashMap::new();
    let mut applied = AppliedIds::new();
    // The feed's order is the log's: one partition, offset by index.
    for (offset, event) in (0..).zip(feed) {
        let valid = ValidEvent::from_producer(event.clone()).map_err(|error| error.to_string())?;
        let key = valid.key().to_string();
        let state = states
            .entry(key.clone())
            .or_insert_with(|| new_state(valid.key()));
        apply(state, &mut applied, &valid, LogPosition::new(0, offset)).map_err(|rejection| {
            format!(
                "patient {key}: {} {} rejected: {rejection}",
                valid.payload_name(),
                event.event_id
            )
        })?;
    }
    Ok(states)
}

fn payload_counts(feed: &[CareEvent]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for event in feed {
        *counts
            .entry(payload_name(event.payload.as_ref().expect("a payload")))
            .or_default() += 1;
    }
    counts
}

fn settings(states: &HashMap<String, PatientCareState>) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for state in states.values() {
        *counts.entry(state.setting().as_str_name()).or_default() += 1;
    }
    counts
}

fn recorded(event: &CareEvent) -> i64 {
    event.recorded_at.expect("recorded_at").seconds
}

fn occurred(event: &CareEvent) -> i64 {
    event.occurred_at.expect("occurred_at").seconds
}

fn demo() -> PopulationConfig {
    PopulationConfig {
        patients: 500,
        seed: 1,
        ..PopulationConfig::default()
    }
}

#[test]
fn the_demo_population_is_valid_and_folds_without_a_rejection() {
    let feed = events(demo());
    let states = fold(&feed).unwrap_or_else(|problem| panic!("{problem}"));
    assert_eq!(states.len(), 500, "every patient has a state");

    let kinds = payload_counts(&feed);
    for kind in [
        "registered",
        "details_updated",
        "pre_admitted",
        "admitted",
        "transferred",
        "leave_started",
        "leave_ended",
        "patient_class_changed",
        "discharged",
        "died",
        "admission_cancelled",
        "transfer_cancelled",
        "discharge_cancelled",
        "referral_requested",
        "referral_accepted",
        "referral_rejected",
        "referral_cancelled",
        "referral_completed",
        "episode_started",
        "episode_ended",
        "care_plan_changed",
        "frailty_assessed",
        "medically_optimised",
        "medically_optimised_revoked",
        "expected_discharge_date_set",
        "care_team_member_assigned",
        "care_team_member_removed",
    ] {
        assert!(kinds.contains_key(kind), "no {kind} in {kinds:?}");
    }
    assert_eq!(kinds["registered"], 500, "one registration each");

    let mut destinations = BTreeMap::new();
    let mut episode_ends = BTreeMap::new();
    for event in &feed {
        match &event.payload {
            Some(Payload::Discharged(discharged)) => {
                *destinations
                    .entry(discharged.destination().as_str_name())
                    .or_insert(0) += 1;
            }
            Some(Payload::EpisodeEnded(ended)) => {
                *episode_ends
                    .entry(ended.reason().as_str_name())
                    .or_insert(0) += 1;
            }
            _ => {}
        }
    }
    for destination in [
        DischargeDestination::VirtualWard,
        DischargeDestination::Home,
        DischargeDestination::CareHome,
        DischargeDestination::CommunityHospital,
        DischargeDestination::Mortuary,
    ] {
        assert!(
            destinations.contains_key(destination.as_str_name()),
            "no discharge to {}: {destinations:?}",
            destination.as_str_name()
        );
    }
    assert!(
        destinations["DISCHARGE_DESTINATION_VIRTUAL_WARD"]
            >= destinations["DISCHARGE_DESTINATION_CARE_HOME"],
        "many go to the virtual ward: {destinations:?}"
    );
    for reason in [
        EpisodeEndReason::Completed,
        EpisodeEndReason::Readmitted,
        EpisodeEndReason::Died,
    ] {
        assert!(
            episode_ends.contains_key(reason.as_str_name()),
            "no episode ended {}: {episode_ends:?}",
            reason.as_str_name()
        );
    }

    let settings = settings(&states);
    for setting in [
        CareSetting::Hospital,
        CareSetting::VirtualWard,
        CareSetting::Community,
        CareSetting::Deceased,
        CareSetting::CareHome,
        CareSetting::CommunityHospital,
    ] {
        assert!(
            settings.get(setting.as_str_name()).is_some_and(|n| *n >= 5),
            "fewer than 5 patients in {} at the end: {settings:?}",
            setting.as_str_name()
        );
    }
    assert!(
        settings["CARE_SETTING_VIRTUAL_WARD"] >= 20,
        "a virtual-ward demo needs patients on the virtual ward: {settings:?}"
    );
}

#[test]
fn corrections_revert_what_they_cancel() {
    let feed = events(demo());
    let states = fold(&feed).unwrap();
    let mut checked = 0;
    for event in &feed {
        let cancelled = match &event.payload {
            Some(Payload::TransferCancelled(cancel)) => {
                assert!(
                    !cancel.cancelled_event_id.is_empty(),
                    "transfer cancellations name the transfer"
                );
                Some(cancel.cancelled_event_id.as_str())
            }
            Some(Payload::AdmissionCancelled(_) | Payload::DischargeCancelled(_)) => None,
            _ => continue,
        };
        let state = &states[&event.patient.as_ref().unwrap().nhs_number];
        let encounter = state
            .active_encounter
            .iter()
            .chain(&state.past_encounters)
            .find(|e| e.encounter_id == event.encounter_id)
            .expect("the cancelled encounter is in the state");
        let movement = encounter
            .movements
            .iter()
            .find(|m| m.cancelled_by_event_id == event.event_id)
            .expect("the cancellation marked a movement");
        if let Some(id) = cancelled {
            assert_eq!(movement.event_id, id);
            assert!(
                encounter
                    .location_history
                    .iter()
                    .all(|stay| stay.event_id != id),
                "a cancelled move is not a stay"
            );
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} corrections");
}

#[test]
fn final_states_agree_with_the_journeys() {
    let feed = events(demo());
    let states = fold(&feed).unwrap();
    for state in states.values() {
        let encounters = state.active_encounter.iter().chain(&state.past_encounters);
        for encounter in encounters {
            assert_ne!(
                encounter.status(),
                EncounterStatus::Unspecified,
                "{}",
                state.patient_key
            );
        }
        let on_virtual_ward = state.episodes.iter().any(|e| {
            e.status() == EpisodeStatus::Active
                && e.service
                    .as_ref()
                    .is_some_and(|s| s.code.starts_with("VW-"))
        });
        let in_hospital = state.active_encounter.as_ref().is_some_and(|e| {
            matches!(
                e.status(),
                EncounterStatus::InProgress | EncounterStatus::OnLeave
            )
        });
        let expected = if state.death.is_some() {
            Some(CareSetting::Deceased)
        } else if in_hospital {
            None // hospital or on leave
        } else if on_virtual_ward {
            Some(CareSetting::VirtualWard)
        } else {
            continue;
        };
        match expected {
            Some(setting) => assert_eq!(state.setting(), setting, "{}", state.patient_key),
            None => assert!(
                matches!(
                    state.setting(),
                    CareSetting::Hospital | CareSetting::HospitalLeave
                ),
                "{} is admitted but {:?}",
                state.patient_key,
                state.setting()
            ),
        }
    }
}

#[test]
fn the_feed_is_in_recorded_order_with_late_events_out_of_clinical_order() {
    let feed = events(demo());
    assert!(
        feed.windows(2)
            .all(|pair| recorded(&pair[0]) <= recorded(&pair[1])),
        "recorded_at never goes back"
    );
    assert!(feed.iter().all(|e| occurred(e) <= recorded(e)));

    let late = feed
        .iter()
        .filter(|e| recorded(e) - occurred(e) >= 10 * 60)
        .count();
    let share = late as f64 / feed.len() as f64;
    assert!(
        (0.03..0.08).contains(&share),
        "{late} of {} events late, expected about 5%",
        feed.len()
    );

    let mut latest_clinical: HashMap<&str, i64> = HashMap::new();
    let mut out_of_order = 0;
    for event in &feed {
        let latest = latest_clinical
            .entry(&event.patient.as_ref().unwrap().nhs_number)
            .or_insert(i64::MIN);
        if occurred(event) < *latest {
            out_of_order += 1;
        }
        *latest = (*latest).max(occurred(event));
    }
    assert!(
        out_of_order > 100,
        "only {out_of_order} events arrive out of clinical order"
    );
}

#[test]
fn without_late_events_every_event_is_recorded_within_seconds() {
    let feed = events(PopulationConfig {
        patients: 200,
        late_events_per_mille: 0,
        ..demo()
    });
    assert!(feed.iter().all(|e| recorded(e) - occurred(e) <= 90));
    fold(&feed).unwrap_or_else(|problem| panic!("{problem}"));
}

#[test]
fn every_event_late_still_folds_without_a_rejection() {
    let feed = events(PopulationConfig {
        patients: 300,
        late_events_per_mille: 1000,
        ..demo()
    });
    fold(&feed).unwrap_or_else(|problem| panic!("{problem}"));
}

#[test]
fn the_feed_is_the_same_for_a_seed_and_differs_across_seeds() {
    let config = PopulationConfig {
        patients: 60,
        ..demo()
    };
    let first = events(config.clone());
    assert_eq!(first, events(config.clone()));
    let other = events(PopulationConfig { seed: 2, ..config });
    assert_ne!(first, other);
    assert_ne!(first[0].event_id, other[0].event_id);
}

#[test]
fn the_feed_is_pinned_for_a_seed() {
    // Pins the generator: the random number generator and how it is
    // seeded, the journeys, the ids, the encoding. A deliberate change to
    // any of them updates these figures; an accidental one fails here.
    let feed = events(PopulationConfig {
        patients: 40,
        seed: 42,
        ..PopulationConfig::default()
    });
    // FNV-1a over the encoded events, in feed order.
    let digest = feed
        .iter()
        .flat_map(prost::Message::encode_to_vec)
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    assert_eq!(
        (feed.len(), feed[0].event_id.as_str(), digest),
        (
            790,
            "cd6cdfc0-0de4-5c0a-a82b-848579c9c18e",
            7_236_387_690_116_902_723
        )
    );
}

#[test]
fn population_for_events_sizes_the_feed() {
    let config = population_for_events(50_000, 1);
    let count = Population::new(config.clone()).count();
    assert!(
        (45_000..=55_000).contains(&count),
        "{count} events from {} patients",
        config.patients
    );
    assert_eq!(config.seed, 1);
}

#[test]
fn a_config_that_cannot_work_is_refused_naming_the_field() {
    let bad = [
        PopulationConfig {
            organisation: "rxx".into(),
            ..demo()
        },
        PopulationConfig {
            late_events_per_mille: 1001,
            ..demo()
        },
        PopulationConfig {
            arrivals_per_day: 0,
            ..demo()
        },
        PopulationConfig {
            patients: 900_001,
            ..demo()
        },
        PopulationConfig {
            start_unix_seconds: 0,
            ..demo()
        },
    ];
    let fields = [
        "organisation",
        "late_events_per_mille",
        "arrivals_per_day",
        "patients",
        "start_unix_seconds",
    ];
    for (config, field) in bad.into_iter().zip(fields) {
        let error = Population::try_new(config).unwrap_err().to_string();
        assert!(error.contains(field), "{error}");
    }
}

#[test]
fn another_organisation_runs_the_hospital_and_its_virtual_wards() {
    let feed = events(PopulationConfig {
        patients: 80,
        organisation: "R1H".into(),
        ..demo()
    });
    fold(&feed).unwrap_or_else(|problem| panic!("{problem}"));
    assert!(feed.iter().any(|e| matches!(
        &e.payload,
        Some(Payload::EpisodeStarted(started))
            if started.service.as_ref().is_some_and(|s| s.code == "VW-FRAIL-R1H")
    )));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn any_seed_folds_without_a_rejection(seed in any::<u64>(), late in 0u16..=1000) {
        let feed = events(PopulationConfig {
            patients: 25,
            seed,
            late_events_per_mille: late,
            ..PopulationConfig::default()
        });
        prop_assert!(feed.windows(2).all(|pair| recorded(&pair[0]) <= recorded(&pair[1])));
        if let Err(problem) = fold(&feed) {
            prop_assert!(false, "seed {seed}: {problem}");
        }
    }
}

const DAY: i64 = 86_400;

fn day_of(date: &baton_proto::events::v1::Date) -> i64 {
    baton_care::days_from_civil(date.year, date.month, date.day)
}

#[test]
fn a_population_standing_at_a_moment_has_answers_about_that_day() {
    // Friday 2026-12-04, at times across the day: the questions of the
    // README's walk-through about today have answers whenever it is run.
    let today = baton_care::days_from_civil(2026, 12, 4);
    for (hour, arrivals_per_day) in [(0, 48), (7, 16), (13, 48), (23, 16)] {
        let now = today * DAY + hour * 3_600 + 1_234;
        let config = PopulationConfig {
            patients: 300,
            arrivals_per_day,
            ..PopulationConfig::default()
        }
        .standing_at(now);
        let feed = events(config.clone());
        assert!(feed.iter().all(|event| recorded(event) <= now));
        assert!(
            config.start_unix_seconds > now - 21 * DAY,
            "300 journeys start within the days before"
        );

        // The same journeys, cut at `now`: the whole feed's prefix.
        let whole = events(PopulationConfig {
            until_unix_seconds: None,
            ..config.clone()
        });
        assert!(whole.len() > feed.len(), "journeys under way are cut");
        assert_eq!(&whole[..feed.len()], &feed[..]);
        assert!(recorded(&whole[feed.len()]) > now);

        let states = fold(&feed).unwrap_or_else(|problem| panic!("{problem}"));
        let expected_home_soon = states
            .values()
            .filter(|state| state.active_encounter.is_some())
            .filter_map(|state| state.expected_discharge_date.as_ref())
            .filter(|date| (today..=today + 1).contains(&day_of(date)))
            .count();
        let discharged_yesterday = states
            .values()
            .filter_map(|state| state.last_discharge.as_ref()?.discharged_at)
            .filter(|at| at.seconds.div_euclid(DAY) == today - 1)
            .count();
        let settings = settings(&states);
        assert!(
            expected_home_soon > 0 && discharged_yesterday > 0,
            "at {hour}:20: {expected_home_soon} expected home today or tomorrow, \
             {discharged_yesterday} discharged yesterday"
        );
        for setting in ["CARE_SETTING_HOSPITAL", "CARE_SETTING_VIRTUAL_WARD"] {
            assert!(
                settings.get(setting).is_some_and(|n| *n > 0),
                "{settings:?}"
            );
        }
    }
}

#[test]
fn a_later_moment_of_the_same_day_only_adds_events() {
    let morning = baton_care::days_from_civil(2026, 12, 4) * DAY + 9 * 3_600;
    let config = PopulationConfig {
        patients: 200,
        ..PopulationConfig::default()
    };
    let earlier = events(config.clone().standing_at(morning));
    let later = events(config.standing_at(morning + 6 * 3_600));
    assert!(later.len() > earlier.len());
    assert_eq!(&later[..earlier.len()], &earlier[..]);
}
