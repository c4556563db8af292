//! `ListCohort` checks its candidates on states decoded with only the
//! fields the checks read (`baton_care::cohort::decode_for_membership`).
//! For synthetic populations of any seed, after every event, that lean
//! state must answer every check as the whole state does: the same index
//! entries, the same answer to every cohort built from the patient's own
//! details at several times, the same answer to every client limit. A check
//! that starts reading a field the lean decoding leaves out fails here.

use std::collections::{BTreeSet, HashMap};

use baton_care::access::Limit;
use baton_care::cohort::{Cohort, decode_for_membership, index_entries};
use baton_care::{AppliedIds, Instant, LogPosition, ValidEvent, apply, new_state};
use baton_proto::events::v1::Date;
use baton_proto::query::v1::{
    CohortFilter, DateRange, MedicallyOptimisedCriterion, ReferralCriterion,
};
use baton_proto::state::v1::{CareSetting, PatientCareState, ReferralStatus};
use baton_synth::{Population, PopulationConfig};
use proptest::prelude::*;
use prost::Message;

const DAY: i64 = 86_400;

/// Filters that each state could match: every setting, and each criterion
/// with the patient's own organisation, ward, virtual wards, pathways,
/// referral services and dates.
fn filters_for(state: &PatientCareState) -> Vec<CohortFilter> {
    let mut filters: Vec<CohortFilter> = (0..=9)
        .map(|setting| CohortFilter {
            setting,
            ..CohortFilter::default()
        })
        .collect();
    filters.push(CohortFilter {
        organisation: state.setting_organisation.clone(),
        ..CohortFilter::default()
    });
    if let Some(location) = state
        .active_encounter
        .as_ref()
        .and_then(|e| e.location.as_ref())
    {
        filters.push(CohortFilter {
            setting: CareSetting::Hospital as i32,
            organisation: state.setting_organisation.clone(),
            ward: location.point_of_care.clone(),
            ..CohortFilter::default()
        });
    }
    for episode in &state.episodes {
        if let Some(service) = &episode.service {
            filters.push(CohortFilter {
                virtual_ward: service.code.clone(),
                ..CohortFilter::default()
            });
        }
        filters.push(CohortFilter {
            pathway: episode.pathway,
            ..CohortFilter::default()
        });
    }
    let statuses = [
        ReferralStatus::Requested,
        ReferralStatus::Accepted,
        ReferralStatus::Rejected,
        ReferralStatus::Cancelled,
        ReferralStatus::Completed,
    ];
    for referral in &state.referrals {
        let Some(service) = &referral.service else {
            continue;
        };
        for overdue in [false, true] {
            filters.push(CohortFilter {
                referral: Some(ReferralCriterion {
                    service: service.code.clone(),
                    statuses: statuses.iter().map(|s| *s as i32).collect(),
                    overdue,
                }),
                ..CohortFilter::default()
            });
        }
    }
    for min_frailty_score in [1, 5, 7] {
        filters.push(CohortFilter {
            min_frailty_score,
            ..CohortFilter::default()
        });
    }
    for min_age_years in [18, 65, 80] {
        filters.push(CohortFilter {
            min_age_years,
            ..CohortFilter::default()
        });
    }
    for min_days in [0, 1, 3] {
        filters.push(CohortFilter {
            medically_optimised: Some(MedicallyOptimisedCriterion { min_days }),
            ..CohortFilter::default()
        });
    }
    let always = DateRange {
        from: Some(Date {
            year: 2000,
            month: 1,
            day: 1,
        }),
        to: Some(Date {
            year: 2100,
            month: 12,
            day: 31,
        }),
    };
    filters.push(CohortFilter {
        expected_discharge: Some(always),
        ..CohortFilter::default()
    });
    filters.push(CohortFilter {
        discharged: Some(always),
        ..CohortFilter::default()
    });
    filters
}

/// Client limits the state could pass: its organisation, each service of
/// its referrals and episodes, and one it cannot.
fn limits_for(state: &PatientCareState) -> Vec<Limit> {
    let services = state
        .referrals
        .iter()
        .filter_map(|r| r.service.as_ref())
        .chain(state.episodes.iter().filter_map(|e| e.service.as_ref()))
        .map(|s| s.code.clone());
    let mut limits = vec![
        Limit::new(BTreeSet::new(), BTreeSet::new()),
        Limit::new(
            BTreeSet::from([state.setting_organisation.clone()]),
            BTreeSet::new(),
        ),
        Limit::new(BTreeSet::from(["NOWHERE".to_owned()]), BTreeSet::new()),
    ];
    limits.extend(services.map(|code| Limit::new(BTreeSet::new(), BTreeSet::from([code]))));
    limits
}

fn at(seconds: i64) -> Instant {
    Instant::of(Some(&prost_types::Timestamp { seconds, nanos: 0 }))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn membership_decoding_answers_as_the_whole_state(
        seed in any::<u64>(),
        patients in 1usize..30,
        late_per_mille in 0u16..300,
    ) {
        let config = PopulationConfig {
            patients,
            seed,
            late_events_per_mille: late_per_mille,
            ..PopulationConfig::default()
        };
        let mut states: HashMap<String, PatientCareState> = HashMap::new();
        let mut applied = AppliedIds::new();
        let mut checked = 0usize;
        for (offset, event) in (0..).zip(Population::new(config)) {
            let event = ValidEvent::from_producer(event).expect("synthetic events are valid");
            let occurred = event.event().occurred_at.map_or(0, |t| t.seconds);
            for key in event.log_keys() {
                let state = states.entry(key.to_string()).or_insert_with(|| new_state(key));
                if apply(state, &mut applied, &event, LogPosition::new(0, offset)).is_err() {
                    continue;
                }
                let lean = decode_for_membership(&state.encode_to_vec()).expect("a state decodes");
                prop_assert_eq!(index_entries(&lean), index_entries(state), "index entries of {}", key);
                for filter in filters_for(state) {
                    let Ok(cohort) = Cohort::from_filter(&filter, "filter") else {
                        continue;
                    };
                    for now in [occurred, occurred + 2 * DAY, occurred + 800 * DAY] {
                        prop_assert_eq!(
                            cohort.matches(&lean, at(now)),
                            cohort.matches(state, at(now)),
                            "{:?} at {} for {}", filter, now, key
                        );
                        checked += 1;
                    }
                }
                for limit in limits_for(state) {
                    prop_assert_eq!(limit.admits(&lean), limit.admits(state), "{:?} for {}", limit, key);
                }
            }
        }
        prop_assert!(checked > 0);
    }
}
