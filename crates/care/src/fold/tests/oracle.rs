//! The fold against the oracle: today's fold, kept verbatim in
//! `crate::oracle` while the fold is made faster (issue 13). For generated
//! journeys, with duplicates interleaved, in any arrival order and through
//! a merge, both folds must answer every event alike and leave states that
//! encode to the same bytes, after every event.

use std::collections::{BTreeMap, VecDeque};

use super::*;
use crate::oracle;

/// A patient's state as each fold has it.
#[derive(Debug)]
struct Pair {
    new: PatientCareState,
    old: PatientCareState,
}

/// What the two folds are compared on: the encoded state, as the store
/// keeps and the API serves it, less the applied ids the oracle keeps in
/// it and the fold beside it.
fn comparable(state: &PatientCareState) -> Vec<u8> {
    oracle::without_applied_ids(state).encode_to_vec()
}

/// Feeds `events` to both folds as the projector does: each event applied
/// under each of its log keys, at the next position of one partition, a
/// rejection dead-lettered, and the events an effect appends applied after
/// the rest. Checks the outcome of every application and both states after
/// it; returns the states.
fn both_folds(events: &[CareEvent]) -> Result<BTreeMap<String, Pair>, TestCaseError> {
    let mut states: BTreeMap<String, Pair> = BTreeMap::new();
    let mut applied = crate::AppliedIds::new();
    let mut queue: VecDeque<CareEvent> = events.iter().cloned().collect();
    let mut offset = 0;
    while let Some(event) = queue.pop_front() {
        let event = valid(&event);
        for key in event.log_keys() {
            let position = LogPosition::new(0, offset);
            offset += 1;
            let pair = states.entry(key.to_string()).or_insert_with(|| Pair {
                new: new_state(key),
                old: oracle::new_state(key),
            });
            let new = apply(&mut pair.new, &mut applied, &event, position);
            let old = oracle::as_the_fold_answers(oracle::apply(&mut pair.old, &event, position));
            prop_assert_eq!(&new, &old, "event {} under {}", event.event().event_id, key);
            prop_assert!(
                comparable(&pair.new) == comparable(&pair.old),
                "the states of {} differ after event {}:\nnew {:?}\nold {:?}",
                key,
                event.event().event_id,
                pair.new,
                pair.old
            );
            if let Ok(Applied::Changed { effects }) = new {
                for Effect::Append { event, .. } in effects {
                    queue.push_back(event);
                }
            }
        }
    }
    Ok(states)
}

/// `events` with copies of some sent again later: a copy of event `i` is
/// sent `lags[i]` events after it, none for a lag of 10 or more.
fn with_duplicates(events: &[CareEvent], lags: &[usize]) -> Vec<CareEvent> {
    let n = events.len();
    let mut copies_after = vec![Vec::new(); n];
    for i in 0..n {
        let lag = lags[i % lags.len()];
        if lag < 10 {
            copies_after[(i + lag).min(n - 1)].push(i);
        }
    }
    let mut stream = Vec::new();
    for (p, copies) in copies_after.iter().enumerate() {
        stream.push(events[p].clone());
        stream.extend(copies.iter().map(|&i| events[i].clone()));
    }
    stream
}

proptest! {
    /// Journeys of every kind of step, in log order with duplicates.
    #[test]
    fn the_fold_equals_the_oracle_with_duplicates(
        journey in journey(Mode::Any),
        lags in prop::collection::vec(0usize..20, 40),
    ) {
        both_folds(&with_duplicates(&journey.events, &lags))?;
    }

    /// Journeys in any arrival order (each event after what it needs).
    #[test]
    fn the_fold_equals_the_oracle_in_any_arrival_order(
        (journey, order) in journey(Mode::ArrivalOrderFree).prop_flat_map(|journey| {
            let order = Just((0..journey.events.len()).collect::<Vec<_>>()).prop_shuffle();
            (Just(journey), order)
        }),
    ) {
        let shuffled: Vec<CareEvent> = respecting_needs(&journey, order)
            .into_iter()
            .map(|i| journey.events[i].clone())
            .collect();
        both_folds(&shuffled)?;
    }

    /// A journey whose patient is merged into another partway, the
    /// hand-over applied to the survivor, the merge sent twice.
    #[test]
    fn the_fold_equals_the_oracle_through_a_merge(
        journey in journey(Mode::Any),
        at_event in 0usize..40,
        hours in 0i64..200,
    ) {
        let mut events = journey.events.clone();
        let merge = patients_merged(RETIRED_NHS, NHS, at(hours));
        let at_event = at_event.min(events.len());
        events.insert(at_event, merge.clone());
        events.push(merge);
        let states = both_folds(&events)?;
        prop_assert!(states.contains_key(RETIRED_NHS), "the survivor has a state");
    }
}

#[test]
fn the_oracle_is_exercised_on_the_fixtures_too() {
    // A stay with a transfer cancelled and a discharge: the same in both.
    let events = vec![
        admitted(NHS, "V1", at(0), "WARD-1"),
        transferred(NHS, "V1", at(2), "WARD-2"),
        discharged(NHS, "V1", at(5), DischargeDestination::Home),
    ];
    let states = both_folds(&events).expect("the folds agree");
    let pair = &states[NHS];
    assert_eq!(pair.new.version, 3);
    assert_eq!(comparable(&pair.new), comparable(&pair.old));
}
