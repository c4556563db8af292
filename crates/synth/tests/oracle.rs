//! The fold against the oracle (today's fold, kept in `baton_care::oracle`
//! while issue 13 makes the fold faster) on realistic feeds: for synthetic
//! populations of any seed, written to the log as the ingest service writes
//! them and read back as the projector does, both folds answer every event
//! alike and leave every patient's state encoded to the same bytes.

use std::collections::HashMap;

use baton_care::{AppliedIds, LogPosition, ValidEvent, apply, new_state, oracle};
use baton_proto::state::v1::PatientCareState;
use baton_synth::{Population, PopulationConfig};
use proptest::prelude::*;
use prost::Message;

/// What the two folds are compared on: the encoded state, as the store
/// keeps and the API serves it, less the applied ids the oracle keeps in
/// it and the fold beside it.
fn comparable(state: &PatientCareState) -> Vec<u8> {
    oracle::without_applied_ids(state).encode_to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn the_fold_equals_the_oracle_on_synthetic_feeds(
        seed in any::<u64>(),
        patients in 1usize..40,
        late_per_mille in 0u16..300,
    ) {
        let config = PopulationConfig {
            patients,
            seed,
            late_events_per_mille: late_per_mille,
            ..PopulationConfig::default()
        };
        let mut states: HashMap<String, (PatientCareState, PatientCareState)> = HashMap::new();
        let mut applied = AppliedIds::new();
        for (offset, event) in (0..).zip(Population::new(config)) {
            let produced = ValidEvent::from_producer(event).expect("synthetic events are valid");
            // As the projector reads it back from the log.
            let event = ValidEvent::new(produced.event().clone()).expect("still valid");
            for key in event.log_keys() {
                let (new, old) = states
                    .entry(key.to_string())
                    .or_insert_with(|| (new_state(key), oracle::new_state(key)));
                let position = LogPosition::new(0, offset);
                prop_assert_eq!(
                    apply(new, &mut applied, &event, position),
                    oracle::as_the_fold_answers(oracle::apply(old, &event, position))
                );
            }
        }
        for (key, (new, old)) in &states {
            prop_assert!(comparable(new) == comparable(old), "the states of {} differ", key);
        }
    }
}
