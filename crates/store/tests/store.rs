//! The sled projection store against real sled databases: what a commit
//! makes readable, how the cohort index follows states, and what survives a
//! reopen.

mod support;

use std::collections::BTreeMap;

use baton_care::cohort::{self, Cohort};
use baton_care::fixtures::{self, admitted, discharged, transferred, virtual_ward_started};
use baton_care::{LogPosition, ValidEvent, apply_new, new_state};
use baton_proto::events::v1::care_event::Payload;
use baton_proto::events::v1::{CareEvent, DischargeDestination, PatientsMerged};
use baton_proto::state::v1::{CareSetting, PatientCareState};
use baton_store::{Commit, Store, StoreConfig, StoreError};
use tempfile::TempDir;

const TOPIC: &str = "baton.care-events.v1";

/// Applies `events` in order to `state`, which starts empty when `None`.
fn fold(state: Option<PatientCareState>, events: Vec<CareEvent>) -> PatientCareState {
    let mut events = events
        .into_iter()
        .map(|event| ValidEvent::new(event).expect("fixture events are valid"))
        .peekable();
    let mut state = state.unwrap_or_else(|| new_state(events.peek().expect("an event").key()));
    // As if each event followed the last one applied in the log.
    for event in events {
        let offset = state.applied.as_ref().map_or(0, |a| a.offset + 1);
        apply_new(&mut state, &event, LogPosition::new(0, offset)).expect("fixture events apply");
    }
    state
}

/// The state of local patient `RXX:<id>` admitted to `ward`.
fn inpatient(id: &str, ward: &str) -> PatientCareState {
    fold(None, vec![admitted(id, "V1", 1_000, ward)])
}

fn ward(name: &str) -> Cohort {
    Cohort {
        ward: Some(name.to_owned()),
        ..Cohort::default()
    }
}

fn setting(setting: CareSetting) -> Cohort {
    Cohort {
        setting: Some(setting),
        ..Cohort::default()
    }
}

fn everyone() -> Cohort {
    Cohort::default()
}

/// The patient keys of every member of `cohort`, paging `limit` at a time.
fn members(store: &Store, cohort: &Cohort, limit: usize) -> Vec<String> {
    let mut keys = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_cohort(cohort, after.as_deref(), limit, baton_care::Instant::UNSET)
            .expect("cohort lists");
        assert!(page.states.len() <= limit.max(1));
        keys.extend(page.states.into_iter().map(|s| s.patient_key));
        match page.next_after {
            Some(next) => after = Some(next),
            None => return keys,
        }
    }
}

fn stored_entries(store: &Store) -> Vec<String> {
    store
        .index_entries()
        .collect::<Result<_, _>>()
        .expect("index reads")
}

/// The entries the index should hold for `states`, in store order.
fn expected_entries(states: &[&PatientCareState]) -> Vec<String> {
    let mut entries: Vec<String> = states
        .iter()
        .flat_map(|s| cohort::index_entries(s))
        .collect();
    entries.sort();
    entries
}

fn all_states(store: &Store) -> Vec<PatientCareState> {
    store
        .states()
        .collect::<Result<_, _>>()
        .expect("states read")
}

#[test]
fn a_committed_state_is_read_back_by_patient_key() {
    let store = Store::temporary().unwrap();
    let state = inpatient("H1", "WARD-7");
    assert_eq!(state.patient_key, "RXX:H1");

    store
        .commit(
            &Commit::new(TOPIC)
                .with_state(state.clone())
                .with_position(0, 1),
        )
        .unwrap();

    assert_eq!(store.get("RXX:H1").unwrap(), Some(state));
    assert_eq!(store.get("RXX:H2").unwrap(), None);
    assert_eq!(store.state_count().unwrap(), 1);
    assert_eq!(store.applied(TOPIC).unwrap(), BTreeMap::from([(0, 1)]));
}

#[test]
fn the_last_state_of_a_key_in_a_commit_wins() {
    let store = Store::temporary().unwrap();
    let first = inpatient("H1", "WARD-7");
    let second = fold(
        Some(first.clone()),
        vec![transferred("H1", "V1", 2_000, "WARD-8")],
    );

    store
        .commit(&Commit::new(TOPIC).with_states([first, second.clone()]))
        .unwrap();

    assert_eq!(store.get("RXX:H1").unwrap(), Some(second.clone()));
    assert_eq!(members(&store, &ward("WARD-7"), 10), Vec::<String>::new());
    assert_eq!(members(&store, &ward("WARD-8"), 10), ["RXX:H1"]);
    assert_eq!(stored_entries(&store), expected_entries(&[&second]));
}

#[test]
fn index_entries_follow_a_patient_from_ward_to_ward_to_virtual_ward() {
    let store = Store::temporary().unwrap();
    let commit = |state: &PatientCareState| {
        store
            .commit(&Commit::new(TOPIC).with_state(state.clone()))
            .unwrap();
    };

    let on_ward_7 = inpatient("H1", "WARD-7");
    commit(&on_ward_7);
    assert_eq!(members(&store, &ward("WARD-7"), 10), ["RXX:H1"]);
    assert_eq!(
        members(&store, &setting(CareSetting::Hospital), 10),
        ["RXX:H1"]
    );

    let on_ward_8 = fold(
        Some(on_ward_7),
        vec![transferred("H1", "V1", 2_000, "WARD-8")],
    );
    commit(&on_ward_8);
    assert_eq!(members(&store, &ward("WARD-7"), 10), Vec::<String>::new());
    assert_eq!(members(&store, &ward("WARD-8"), 10), ["RXX:H1"]);

    let at_home_on_virtual_ward = fold(
        Some(on_ward_8),
        vec![
            discharged("H1", "V1", 3_000, DischargeDestination::VirtualWard),
            virtual_ward_started("H1", "VW-1", 4_000, "VW-FRAIL"),
        ],
    );
    commit(&at_home_on_virtual_ward);
    assert_eq!(members(&store, &ward("WARD-8"), 10), Vec::<String>::new());
    assert_eq!(
        members(&store, &setting(CareSetting::Hospital), 10),
        Vec::<String>::new()
    );
    assert_eq!(
        members(&store, &setting(CareSetting::VirtualWard), 10),
        ["RXX:H1"]
    );
    assert_eq!(members(&store, &ward("VW-FRAIL"), 10), ["RXX:H1"]);
    assert_eq!(members(&store, &everyone(), 10), ["RXX:H1"]);
    assert_eq!(
        stored_entries(&store),
        expected_entries(&[&at_home_on_virtual_ward])
    );
}

#[test]
fn a_patient_merged_away_leaves_every_cohort() {
    let store = Store::temporary().unwrap();
    let survivor = inpatient("H1", "WARD-7");
    let retired = inpatient("H2", "WARD-7");
    store
        .commit(&Commit::new(TOPIC).with_states([survivor.clone(), retired.clone()]))
        .unwrap();
    assert_eq!(members(&store, &ward("WARD-7"), 10), ["RXX:H1", "RXX:H2"]);

    let merge = fixtures::event(
        "H1",
        5_000,
        Some(Payload::PatientsMerged(PatientsMerged {
            retired: Some(fixtures::identity("H2")),
        })),
    );
    let retired = fold(Some(retired), vec![merge]);
    assert_eq!(
        retired.merged_into.as_ref().map(|l| l.patient_key.as_str()),
        Some("RXX:H1")
    );
    store
        .commit(&Commit::new(TOPIC).with_state(retired.clone()))
        .unwrap();

    assert_eq!(store.get("RXX:H2").unwrap(), Some(retired));
    assert_eq!(members(&store, &ward("WARD-7"), 10), ["RXX:H1"]);
    assert_eq!(members(&store, &everyone(), 10), ["RXX:H1"]);
    assert!(
        stored_entries(&store)
            .iter()
            .all(|entry| Cohort::key_of_entry(entry) == "RXX:H1")
    );
    assert_eq!(stored_entries(&store), expected_entries(&[&survivor]));
}

#[test]
fn cohort_pages_list_every_member_once_and_nothing_else() {
    let store = Store::temporary().unwrap();
    let mut on_ward_7 = Vec::new();
    let mut states = Vec::new();
    for n in 0..23 {
        let id = format!("H{n:03}");
        let ward_name = if n % 3 == 0 { "WARD-8" } else { "WARD-7" };
        if ward_name == "WARD-7" {
            on_ward_7.push(format!("RXX:{id}"));
        }
        states.push(inpatient(&id, ward_name));
    }
    // A patient on a ward whose name extends WARD-7 is not on WARD-7.
    states.push(inpatient("H999", "WARD-70"));
    store
        .commit(&Commit::new(TOPIC).with_states(states))
        .unwrap();
    on_ward_7.sort();

    for limit in [1, 2, 5, on_ward_7.len() - 1, on_ward_7.len(), 100] {
        assert_eq!(
            members(&store, &ward("WARD-7"), limit),
            on_ward_7,
            "limit {limit}"
        );
    }
    assert_eq!(members(&store, &everyone(), 7).len(), 24);

    let exact = store
        .list_cohort(
            &ward("WARD-7"),
            None,
            on_ward_7.len(),
            baton_care::Instant::UNSET,
        )
        .unwrap();
    assert_eq!(exact.states.len(), on_ward_7.len());
    assert_eq!(exact.next_after, None, "no page after the last member");

    let first = store
        .list_cohort(&ward("WARD-7"), None, 5, baton_care::Instant::UNSET)
        .unwrap();
    let after = first.next_after.expect("more members after the first page");
    assert_eq!(
        Cohort::key_of_entry(&after),
        on_ward_7[4],
        "the page ends at the entry of its last member"
    );
    let rest = store
        .list_cohort(
            &ward("WARD-7"),
            Some(&after),
            100,
            baton_care::Instant::UNSET,
        )
        .unwrap();
    assert_eq!(rest.states[0].patient_key, on_ward_7[5]);
    assert_eq!(rest.next_after, None);

    let zero = store
        .list_cohort(&ward("WARD-7"), None, 0, baton_care::Instant::UNSET)
        .unwrap();
    assert_eq!(zero.states.len(), 1, "a limit of 0 still makes progress");

    let none = store
        .list_cohort(&ward("WARD-9"), None, 10, baton_care::Instant::UNSET)
        .unwrap();
    assert_eq!(none, Default::default());
}

#[test]
fn applied_positions_never_move_backwards() {
    let store = Store::temporary().unwrap();
    store
        .commit(&Commit::new(TOPIC).with_position(0, 10).with_position(1, 5))
        .unwrap();
    store
        .commit(
            &Commit::new(TOPIC)
                .with_position(0, 4)
                .with_position(1, 6)
                .with_position(2, 1),
        )
        .unwrap();
    store
        .commit(&Commit::new("other-topic").with_position(0, 99))
        .unwrap();

    assert_eq!(
        store.applied(TOPIC).unwrap(),
        BTreeMap::from([(0, 10), (1, 6), (2, 1)])
    );
    assert_eq!(
        store.applied("other-topic").unwrap(),
        BTreeMap::from([(0, 99)])
    );
    assert_eq!(store.applied("never-committed").unwrap(), BTreeMap::new());
}

#[test]
fn reopening_shows_the_same_states_entries_and_positions() {
    let dir = TempDir::new().unwrap();
    let config = StoreConfig::default();
    let (digest, entries, positions) = {
        let store = Store::open(dir.path(), &config).unwrap();
        let first = inpatient("H1", "WARD-7");
        store
            .commit(
                &Commit::new(TOPIC)
                    .with_states([first.clone(), inpatient("H2", "WARD-8")])
                    .with_position(0, 2)
                    .with_position(3, 1),
            )
            .unwrap();
        let moved = fold(Some(first), vec![transferred("H1", "V1", 2_000, "WARD-8")]);
        store
            .commit(&Commit::new(TOPIC).with_state(moved).with_position(0, 3))
            .unwrap();
        store.flush().unwrap();
        (
            store.digest().unwrap(),
            stored_entries(&store),
            store.applied(TOPIC).unwrap(),
        )
    };

    let store = support::reopen_store(dir.path(), &config);
    assert_eq!(store.digest().unwrap(), digest);
    assert_eq!(stored_entries(&store), entries);
    assert_eq!(store.applied(TOPIC).unwrap(), positions);
    assert_eq!(positions, BTreeMap::from([(0, 3), (3, 1)]));
    assert_eq!(members(&store, &ward("WARD-8"), 10), ["RXX:H1", "RXX:H2"]);
    assert_eq!(store.path().as_deref(), Some(dir.path()));
}

#[test]
fn reopening_after_a_flush_resumes_exactly_at_the_last_batch() {
    let dir = TempDir::new().unwrap();
    let config = StoreConfig {
        flush_every_ms: None,
        ..StoreConfig::default()
    };
    let patients = ["H1", "H2", "H3"];
    let mut last_batch = Vec::new();
    {
        let store = Store::open(dir.path(), &config).unwrap();
        let mut states: BTreeMap<&str, PatientCareState> = BTreeMap::new();
        // Batch n moves every patient to WARD-n and includes offsets below n.
        for n in 1..=20u64 {
            let ward_name = format!("WARD-{n}");
            last_batch.clear();
            for id in patients {
                let event = if n == 1 {
                    admitted(id, "V1", 1_000, &ward_name)
                } else {
                    transferred(id, "V1", 1_000 + n as i64, &ward_name)
                };
                let state = fold(states.remove(id), vec![event]);
                states.insert(id, state.clone());
                last_batch.push(state);
            }
            store
                .commit(
                    &Commit::new(TOPIC)
                        .with_states(last_batch.clone())
                        .with_position(0, n)
                        .with_position(1, n * 2),
                )
                .unwrap();
        }
        store.flush().unwrap();
    }

    let store = Store::open(dir.path(), &config).unwrap();
    assert_eq!(
        store.applied(TOPIC).unwrap(),
        BTreeMap::from([(0, 20), (1, 40)])
    );
    assert_eq!(all_states(&store), last_batch);
    assert_eq!(
        members(&store, &ward("WARD-20"), 10),
        ["RXX:H1", "RXX:H2", "RXX:H3"]
    );
    assert_eq!(
        stored_entries(&store),
        expected_entries(&last_batch.iter().collect::<Vec<_>>())
    );
}

#[tokio::test]
async fn a_watch_sees_the_positions_of_every_commit() {
    let store = Store::temporary().unwrap();
    store
        .commit(&Commit::new(TOPIC).with_position(0, 3))
        .unwrap();

    let mut watch = store.watch(TOPIC);
    assert_eq!(*watch.borrow_and_update(), BTreeMap::from([(0, 3)]));

    let writer = store.clone();
    tokio::task::spawn_blocking(move || {
        writer
            .commit(
                &Commit::new(TOPIC)
                    .with_state(inpatient("H1", "WARD-7"))
                    .with_position(0, 4)
                    .with_position(1, 1),
            )
            .unwrap();
    })
    .await
    .unwrap();
    watch.changed().await.unwrap();
    assert_eq!(*watch.borrow_and_update(), BTreeMap::from([(0, 4), (1, 1)]));

    // A commit that moves nothing, or moves another topic, is not news.
    store
        .commit(&Commit::new(TOPIC).with_position(0, 2))
        .unwrap();
    store
        .commit(&Commit::new("other-topic").with_position(0, 50))
        .unwrap();
    assert!(!watch.has_changed().unwrap());

    let late = store.watch(TOPIC);
    assert_eq!(*late.borrow(), store.applied(TOPIC).unwrap());
}

/// A query replica commits the states it read from the changelog with the
/// changelog positions, and with how far the projector had got in the event
/// log: both are applied positions, and a token wait on the event log sees
/// the upstream ones.
#[tokio::test]
async fn upstream_positions_are_applied_positions_of_their_topic() {
    const CHANGELOG: &str = "baton.care-state.v1";
    let store = Store::temporary().unwrap();
    let mut watch = store.watch(TOPIC);
    store
        .commit(
            &Commit::new(CHANGELOG)
                .with_state(inpatient("H1", "WARD-7"))
                .with_position(3, 8)
                .with_upstream(TOPIC, 3, 120),
        )
        .unwrap();
    assert_eq!(store.applied(CHANGELOG).unwrap(), BTreeMap::from([(3, 8)]));
    assert_eq!(store.applied(TOPIC).unwrap(), BTreeMap::from([(3, 120)]));
    watch.changed().await.unwrap();
    assert_eq!(*watch.borrow_and_update(), BTreeMap::from([(3, 120)]));

    // Upstream positions never move backwards either.
    store
        .commit(&Commit::new(CHANGELOG).with_upstream(TOPIC, 3, 100))
        .unwrap();
    assert_eq!(store.applied(TOPIC).unwrap(), BTreeMap::from([(3, 120)]));
    assert!(!Commit::new(CHANGELOG).with_upstream(TOPIC, 0, 1).is_empty());
}

/// The keys of the latest commit to publish are kept until the next one,
/// so a crash between a commit and its publication can be made good.
#[test]
fn the_latest_commit_to_publish_is_remembered_until_the_next() {
    let dir = TempDir::new().unwrap();
    {
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        assert!(store.unpublished().unwrap().is_empty());
        store
            .commit(
                &Commit::new(TOPIC)
                    .with_state(inpatient("H1", "WARD-7"))
                    .with_state(inpatient("H2", "WARD-7"))
                    .with_position(0, 2)
                    .to_publish(),
            )
            .unwrap();
        assert_eq!(store.unpublished().unwrap(), vec!["RXX:H1", "RXX:H2"]);
        store.flush().unwrap();
    }
    let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
    assert_eq!(store.unpublished().unwrap(), vec!["RXX:H1", "RXX:H2"]);
    store
        .commit(
            &Commit::new(TOPIC)
                .with_state(inpatient("H3", "WARD-7"))
                .with_position(0, 3)
                .to_publish(),
        )
        .unwrap();
    assert_eq!(store.unpublished().unwrap(), vec!["RXX:H3"]);
}

/// A committer publishing one batch while it commits the next names the
/// first's keys in the second commit: a crash then republishes both.
#[test]
fn earlier_commits_still_publishing_are_remembered_with_the_latest() {
    let store = Store::temporary().unwrap();
    store
        .commit(
            &Commit::new(TOPIC)
                .with_state(inpatient("H1", "WARD-7"))
                .with_position(0, 1)
                .to_publish(),
        )
        .unwrap();
    let mut next = Commit::new(TOPIC)
        .with_state(inpatient("H3", "WARD-7"))
        .with_state(inpatient("H1", "WARD-8"))
        .with_position(0, 3)
        .to_publish();
    next.earlier_unpublished = vec!["RXX:H2".into(), "RXX:H1".into()];
    store.commit(&next).unwrap();
    assert_eq!(
        store.unpublished().unwrap(),
        vec!["RXX:H1", "RXX:H2", "RXX:H3"],
        "each key once, in order"
    );
}

#[tokio::test]
async fn flush_async_makes_commits_durable() {
    let dir = TempDir::new().unwrap();
    let config = StoreConfig {
        flush_every_ms: None,
        ..StoreConfig::default()
    };
    {
        let store = Store::open(dir.path(), &config).unwrap();
        store
            .commit(
                &Commit::new(TOPIC)
                    .with_state(inpatient("H1", "WARD-7"))
                    .with_position(0, 1),
            )
            .unwrap();
        store.flush_async().await.unwrap();
    }
    let store = Store::open(dir.path(), &config).unwrap();
    assert_eq!(store.applied(TOPIC).unwrap(), BTreeMap::from([(0, 1)]));
    assert!(store.get("RXX:H1").unwrap().is_some());
}

#[test]
fn the_digest_depends_on_the_states_not_on_how_they_were_committed() {
    let states = [
        inpatient("H1", "WARD-7"),
        inpatient("H2", "WARD-8"),
        inpatient("H3", "WARD-7"),
    ];
    let at_once = Store::temporary().unwrap();
    at_once
        .commit(&Commit::new(TOPIC).with_states(states.clone()))
        .unwrap();
    let one_by_one = Store::temporary().unwrap();
    for state in states.iter().rev() {
        one_by_one
            .commit(
                &Commit::new(TOPIC)
                    .with_state(state.clone())
                    .with_position(0, 9),
            )
            .unwrap();
    }
    let digest = at_once.digest().unwrap();
    assert_eq!(digest.len(), 32);
    assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(one_by_one.digest().unwrap(), digest);

    let moved = fold(
        Some(states[0].clone()),
        vec![transferred("H1", "V1", 2_000, "WARD-8")],
    );
    one_by_one
        .commit(&Commit::new(TOPIC).with_state(moved))
        .unwrap();
    assert_ne!(one_by_one.digest().unwrap(), digest);
    assert_ne!(Store::temporary().unwrap().digest().unwrap(), digest);
}

/// A new store at `dir` whose format key says `format`.
fn stamped_with_format(dir: &std::path::Path, format: u32) {
    drop(Store::open(dir, &StoreConfig::default()).unwrap());
    let db = support::reopen(dir);
    db.insert("meta/format", &format.to_be_bytes()[..]).unwrap();
    db.flush().unwrap();
}

#[test]
fn a_format_baton_never_wrote_is_refused_not_migrated() {
    let dir = TempDir::new().unwrap();
    stamped_with_format(dir.path(), 0);
    let error = Store::open(dir.path(), &StoreConfig::default()).unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("format version 0 was never written by Baton"),
        "{message}"
    );
    assert!(message.contains("expected 4"), "{message}");
}

#[test]
fn a_store_written_by_a_newer_format_is_refused() {
    let dir = TempDir::new().unwrap();
    stamped_with_format(dir.path(), 5);

    let error = Store::open(dir.path(), &StoreConfig::default()).unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::NewerFormat {
                found: 5,
                supported: 4,
                ..
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("format version 5"), "{message}");
}

#[test]
fn a_directory_that_is_not_a_store_is_refused() {
    let dir = TempDir::new().unwrap();
    {
        let db = support::reopen(dir.path());
        db.insert("topic/baton.care-events.v1", &b"spec"[..])
            .unwrap();
        db.flush().unwrap();
    }

    let error = Store::open(dir.path(), &StoreConfig::default()).unwrap_err();
    assert!(
        matches!(&error, StoreError::Corrupt { key, .. } if key == "meta/format"),
        "{error:?}"
    );
}

#[test]
fn a_corrupt_state_names_its_key() {
    let dir = TempDir::new().unwrap();
    drop(Store::open(dir.path(), &StoreConfig::default()).unwrap());
    {
        let db = support::reopen(dir.path());
        db.insert("s/RXX:H1", &[0xff, 0xff, 0xff][..]).unwrap();
        db.flush().unwrap();
    }

    let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
    let error = store.get("RXX:H1").unwrap_err();
    assert!(
        matches!(&error, StoreError::Corrupt { key, .. } if key == "s/RXX:H1"),
        "{error:?}"
    );
    assert!(error.to_string().contains("\"s/RXX:H1\""), "{error}");
    assert!(store.states().any(|state| state.is_err()));
}

#[test]
fn a_directory_held_by_another_handle_names_its_path() {
    let dir = TempDir::new().unwrap();
    let _held = Store::open(dir.path(), &StoreConfig::default()).unwrap();
    match Store::open(dir.path(), &StoreConfig::default()) {
        Err(StoreError::Open { path, .. }) => assert_eq!(path, dir.path()),
        other => panic!("expected an open error, got {other:?}"),
    }
}

#[test]
fn a_patient_keyed_by_nhs_number_is_found_by_their_hospital_number() {
    let store = Store::temporary().unwrap();
    let mut event = admitted("9434765919", "V1", 100, "WARD-7");
    event
        .patient
        .as_mut()
        .unwrap()
        .local_ids
        .push(baton_proto::events::v1::LocalIdentifier {
            authority: "RXX".into(),
            value: "H400123".into(),
        });
    store
        .commit(&Commit::new("events").with_state(fold(None, vec![event])))
        .unwrap();
    let found = store.find_by_local_id("RXX:H400123").unwrap().unwrap();
    assert_eq!(found.patient_key, "9434765919");
    assert!(
        store.find_by_local_id("RXX:H400").unwrap().is_none(),
        "no prefix matches"
    );
    assert!(store.find_by_local_id("RYY:H400123").unwrap().is_none());
}

#[test]
fn a_store_is_bound_to_the_log_it_was_built_from() {
    let dir = TempDir::new().unwrap();
    {
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        store.bind_source(TOPIC, "embedded:1111").unwrap();
        store.bind_source(TOPIC, "embedded:1111").unwrap();
        store.bind_source("other-topic", "kafka:cluster-a").unwrap();
        store.flush().unwrap();
    }
    let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
    store.bind_source(TOPIC, "embedded:1111").unwrap();
    let error = store
        .bind_source(TOPIC, "kafka:cluster-b")
        .unwrap_err()
        .to_string();
    assert!(error.contains("embedded:1111"), "{error}");
    assert!(error.contains("kafka:cluster-b"), "{error}");
    assert!(error.contains("empty --data-dir"), "{error}");
}

#[test]
fn an_index_built_by_an_older_baton_is_rebuilt_from_the_states_on_open() {
    let dir = TempDir::new().unwrap();
    let states = [inpatient("H1", "WARD-7"), inpatient("H2", "WARD-8")];
    {
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        store
            .commit(&Commit::new(TOPIC).with_states(states.clone()))
            .unwrap();
        store.flush().unwrap();
    }
    // As an older version left it: other entries, an older index version.
    {
        let db = support::reopen(dir.path());
        for key in db.scan_prefix("i/").keys() {
            db.remove(key.unwrap()).unwrap();
        }
        db.insert("i/stale\u{1f}RXX:H1", &[][..]).unwrap();
        db.insert("meta/index", &1u32.to_be_bytes()[..]).unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
    assert_eq!(
        stored_entries(&store),
        expected_entries(&states.iter().collect::<Vec<_>>())
    );
    assert_eq!(members(&store, &ward("WARD-7"), 10), vec!["RXX:H1"]);
}

#[test]
fn a_timeline_lists_a_patient_s_events_by_clinical_time_within_bounds() {
    use baton_care::Instant;
    use baton_store::TimelineRecord;

    let store = Store::temporary().unwrap();
    let record = |key: &str, seconds: i64, offset: u64| TimelineRecord {
        patient_key: key.to_owned(),
        occurred_seconds: seconds,
        occurred_nanos: 0,
        partition: 1,
        offset,
        event: format!("{key}@{seconds}").into_bytes(),
    };
    let mut commit = Commit::new("events#timeline").with_position(1, 9);
    for filed in [
        record("9434765919", 300, 5),
        record("9434765919", -100, 8),
        record("9434765919", 300, 2),
        record("94347659190", 200, 3),
        record("943476591", 200, 4),
    ] {
        commit = commit.with_timeline(filed);
    }
    store.commit(&commit).unwrap();
    let at = |seconds: i64| Instant::of(Some(&fixtures::timestamp(seconds)));
    let listed = |from: Instant, to: Instant| -> Vec<(i64, u64)> {
        store
            .timeline("9434765919", from, to)
            .unwrap()
            .into_iter()
            .map(|r| (r.occurred_seconds, r.offset))
            .collect()
    };
    assert_eq!(
        listed(Instant::UNSET, Instant::UNSET),
        vec![(-100, 8), (300, 2), (300, 5)],
        "clinical order, then log order; no other patient's"
    );
    assert_eq!(listed(at(0), Instant::UNSET), vec![(300, 2), (300, 5)]);
    assert_eq!(listed(Instant::UNSET, at(299)), vec![(-100, 8)]);
    assert_eq!(listed(at(300), at(300)), vec![(300, 2), (300, 5)]);
    assert_eq!(
        store.timeline("9434765919", at(0), at(300)).unwrap()[0].event,
        b"9434765919@300".to_vec()
    );
    assert_eq!(store.applied("events#timeline").unwrap()[&1], 9);
}

#[test]
fn the_change_feed_carries_every_committed_state_and_tells_a_lagging_reader() {
    let store = Store::open(
        TempDir::new().unwrap().path(),
        &StoreConfig {
            change_feed_capacity: 2,
            ..StoreConfig::default()
        },
    )
    .unwrap();
    let mut changes = store.changes();
    store
        .commit(&Commit::new(TOPIC).with_state(inpatient("H1", "WARD-7")))
        .unwrap();
    assert_eq!(changes.try_recv().unwrap().patient_key, "RXX:H1");
    for n in 0..5 {
        store
            .commit(&Commit::new(TOPIC).with_state(inpatient(&format!("H{n}"), "A")))
            .unwrap();
    }
    assert!(matches!(
        changes.try_recv(),
        Err(tokio::sync::broadcast::error::TryRecvError::Lagged(3))
    ));
}

#[test]
fn a_cohort_listed_from_several_ranges_shows_each_patient_once() {
    use baton_proto::state::v1::ReferralStatus;

    let store = Store::temporary().unwrap();
    let referred = |id: &str, accept: bool| {
        let nhs = id;
        let mut events = vec![
            fixtures::referral_requested(nhs, "R1", "FRAILTY", 1_000, 9_000),
            fixtures::referral_requested(nhs, "R2", "FRAILTY", 1_000, 9_000),
        ];
        if accept {
            events.push(fixtures::referral_accepted(nhs, "R2", 2_000));
        }
        fold(None, events)
    };
    let states = [referred("9434765919", true), referred("4010232137", false)];
    store
        .commit(&Commit::new(TOPIC).with_states(states))
        .unwrap();
    let open = Cohort {
        referral: Some(cohort::ReferralCriterion {
            service: "FRAILTY".into(),
            statuses: vec![ReferralStatus::Requested, ReferralStatus::Accepted],
            overdue: false,
        }),
        ..Cohort::default()
    };
    for limit in [1, 2, 10] {
        let mut listed = members(&store, &open, limit);
        listed.sort();
        assert_eq!(listed, vec!["4010232137", "9434765919"], "limit {limit}");
    }
}

/// The state count the metrics read is kept with every commit, counts each
/// patient once however often their state changes, and survives a reopen.
#[test]
fn the_state_count_follows_commits_without_a_scan() {
    let dir = TempDir::new().unwrap();
    let config = StoreConfig::default();
    {
        let store = Store::open(dir.path(), &config).unwrap();
        assert_eq!(store.stored_states(), 0);
        let first = inpatient("H1", "WARD-7");
        store
            .commit(
                &Commit::new(TOPIC)
                    .with_states([first.clone(), inpatient("H2", "WARD-8"), first.clone()])
                    .with_position(0, 3),
            )
            .unwrap();
        assert_eq!(store.stored_states(), 2);
        let moved = fold(Some(first), vec![transferred("H1", "V1", 2_000, "WARD-8")]);
        store
            .commit(
                &Commit::new(TOPIC)
                    .with_states([moved, inpatient("H3", "WARD-9")])
                    .with_position(0, 5),
            )
            .unwrap();
        assert_eq!(store.stored_states(), 3);
        assert_eq!(store.stored_states(), store.state_count().unwrap() as u64);
        assert!(store.size_on_disk().unwrap() > 0);
        store.flush().unwrap();
    }
    let store = Store::open(dir.path(), &config).unwrap();
    assert_eq!(store.stored_states(), 3);

    let temporary = Store::temporary().unwrap();
    temporary
        .commit(&Commit::new(TOPIC).with_state(inpatient("H9", "WARD-1")))
        .unwrap();
    assert_eq!(temporary.stored_states(), 1);
}
