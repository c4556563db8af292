//! Whatever sequence of commits the projector makes, the cohort index holds
//! exactly the index entries of the current states, and every cohort lists
//! exactly the current states it matches.

use std::collections::BTreeMap;

use baton_care::cohort::{self, Cohort};
use baton_proto::events::v1::Location;
use baton_proto::state::v1::{CareSetting, Encounter, MergeLink, PatientCareState};
use baton_store::{Commit, Store};
use proptest::prelude::*;

const TOPIC: &str = "baton.care-events.v1";
const KEYS: [&str; 5] = ["4010232137", "9434765919", "RXX:H1", "RXX:H10", "RYY:H1"];

/// Where a generated state puts its patient.
#[derive(Debug, Clone)]
enum Place {
    Ward {
        organisation: &'static str,
        ward: &'static str,
    },
    Community,
    MergedAway,
}

fn place() -> impl Strategy<Value = Place> {
    prop_oneof![
        4 => (prop::sample::select(vec!["RXX", "RYY"]), prop::sample::select(vec!["WARD-7", "WARD-8", "WARD-70"]))
            .prop_map(|(organisation, ward)| Place::Ward { organisation, ward }),
        1 => Just(Place::Community),
        1 => Just(Place::MergedAway),
    ]
}

fn state(key: &str, place: &Place, version: u64) -> PatientCareState {
    let mut state = PatientCareState {
        patient_key: key.to_owned(),
        version,
        ..PatientCareState::default()
    };
    match place {
        Place::Ward { organisation, ward } => {
            state.set_setting(CareSetting::Hospital);
            state.setting_organisation = (*organisation).to_owned();
            state.active_encounter = Some(Encounter {
                location: Some(Location {
                    point_of_care: (*ward).to_owned(),
                    ..Location::default()
                }),
                ..Encounter::default()
            });
        }
        Place::Community => state.set_setting(CareSetting::Community),
        Place::MergedAway => {
            state.merged_into = Some(Box::new(MergeLink {
                patient_key: KEYS[0].to_owned(),
                ..MergeLink::default()
            }));
        }
    }
    state
}

/// A commit of up to four (possibly repeated) patients' new places.
fn commit() -> impl Strategy<Value = Vec<(usize, Place)>> {
    prop::collection::vec((0..KEYS.len(), place()), 0..4)
}

/// Every cohort the generated places can form, the empty one included.
fn cohorts() -> Vec<Cohort> {
    let settings = [
        None,
        Some(CareSetting::Hospital),
        Some(CareSetting::Community),
    ];
    let organisations = [None, Some("RXX"), Some("RYY"), Some("")];
    let wards = [
        None,
        Some("WARD-7"),
        Some("WARD-8"),
        Some("WARD-70"),
        Some(""),
    ];
    let mut cohorts = Vec::new();
    for setting in settings {
        for organisation in organisations {
            for ward in wards {
                cohorts.push(Cohort {
                    setting,
                    organisation: organisation.map(str::to_owned),
                    ward: ward.map(str::to_owned),
                    ..Cohort::default()
                });
            }
        }
    }
    cohorts
}

fn members(store: &Store, cohort: &Cohort, limit: usize) -> Vec<String> {
    let mut keys = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_cohort(cohort, after.as_deref(), limit, baton_care::Instant::UNSET)
            .expect("cohort lists");
        keys.extend(page.states.into_iter().map(|s| s.patient_key));
        match page.next_after {
            Some(next) => after = Some(next),
            None => return keys,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_index_is_exactly_the_entries_of_the_current_states(
        commits in prop::collection::vec(commit(), 1..12),
        limit in 1usize..4,
    ) {
        let store = Store::temporary().unwrap();
        let mut current: BTreeMap<&str, PatientCareState> = BTreeMap::new();
        for (n, changes) in commits.iter().enumerate() {
            let states: Vec<_> = changes
                .iter()
                .map(|(key, place)| state(KEYS[*key], place, n as u64))
                .collect();
            for state in &states {
                current.insert(KEYS.iter().find(|k| **k == state.patient_key).unwrap(), state.clone());
            }
            store
                .commit(&Commit::new(TOPIC).with_states(states).with_position(0, n as u64 + 1))
                .unwrap();

            let mut expected: Vec<String> = current.values().flat_map(cohort::index_entries).collect();
            expected.sort();
            let stored: Vec<String> = store.index_entries().collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(stored, expected);
        }

        let stored: Vec<PatientCareState> = store.states().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(&stored, &current.values().cloned().collect::<Vec<_>>());
        prop_assert_eq!(store.applied(TOPIC).unwrap(), BTreeMap::from([(0, commits.len() as u64)]));
        for cohort in cohorts() {
            let expected: Vec<String> = current
                .values()
                .filter(|state| cohort.matches(state, baton_care::Instant::UNSET))
                .map(|state| state.patient_key.clone())
                .collect();
            prop_assert_eq!(members(&store, &cohort, limit), expected, "{:?}", cohort);
        }
    }
}
