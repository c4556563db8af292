//! Digests kept by commits, the migration that adds them to an older
//! store, and swapping a rebuilt generation in under readers and writers.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use baton_care::fixtures::{admitted, transferred};
use baton_care::{EventId, LogPosition, ValidEvent, apply_new, new_state};
use baton_proto::events::v1::CareEvent;
use baton_proto::state::v1::{AppliedPosition, PatientCareState};
use baton_store::{Commit, Store, StoreConfig};
use tempfile::TempDir;

const TOPIC: &str = "baton.care-events.v1";

/// `events` folded, as the projector leaves it: with its last applied
/// position.
fn state(events: Vec<CareEvent>, partition: u32, offset: u64) -> PatientCareState {
    let events: Vec<ValidEvent> = events
        .into_iter()
        .map(|event| ValidEvent::new(event).unwrap())
        .collect();
    let mut state = new_state(events[0].key());
    for (index, event) in events.iter().enumerate() {
        apply_new(&mut state, event, LogPosition::new(partition, index as u64)).unwrap();
    }
    state.applied = Some(AppliedPosition { partition, offset });
    state
}

/// Commits [`patients`] at position 2 of partition 0.
fn commit_patients(store: &Store) {
    store
        .commit(
            &Commit::new(TOPIC)
                .with_states(patients())
                .with_position(0, 2),
        )
        .unwrap();
}

fn patients() -> Vec<PatientCareState> {
    vec![
        state(vec![admitted("H1", "V1", 1_000, "WARD-1")], 0, 0),
        state(vec![admitted("H2", "V1", 1_000, "WARD-2")], 1, 0),
        state(vec![admitted("H3", "V1", 1_000, "WARD-3")], 1, 1),
        state(
            vec![
                admitted("H4", "V1", 1_000, "WARD-1"),
                transferred("H4", "V1", 2_000, "WARD-9"),
            ],
            0,
            1,
        ),
    ]
}

#[test]
fn commits_keep_each_partition_s_digest_equal_to_one_computed_from_the_states() {
    let store = Store::temporary().unwrap();
    let states = patients();
    store
        .commit(
            &Commit::new(TOPIC)
                .with_states(states.clone())
                .with_position(0, 2)
                .with_position(1, 2),
        )
        .unwrap();
    let digest = store.digest_at(TOPIC).unwrap();
    assert_eq!(digest.positions, BTreeMap::from([(0, 2), (1, 2)]));
    assert_eq!(digest.partitions.len(), 2);
    assert_eq!(digest.partitions[&0].states, 2);
    assert_eq!(digest.partitions[&1].states, 2);
    assert_eq!(digest.partitions, store.recomputed_digests().unwrap());

    // The same states written in another order and other batches.
    let other = Store::temporary().unwrap();
    for state in states.iter().rev() {
        other
            .commit(&Commit::new(TOPIC).with_state(state.clone()))
            .unwrap();
    }
    assert_eq!(
        other.digest_at(TOPIC).unwrap().partitions,
        digest.partitions
    );

    // A state that changes moves its partition's digest, and only that one.
    let moved = state(
        vec![
            admitted("H1", "V1", 1_000, "WARD-1"),
            transferred("H1", "V1", 3_000, "WARD-5"),
        ],
        0,
        2,
    );
    store
        .commit(&Commit::new(TOPIC).with_state(moved).with_position(0, 3))
        .unwrap();
    let after = store.digest_at(TOPIC).unwrap();
    assert_ne!(after.partitions[&0], digest.partitions[&0]);
    assert_eq!(after.partitions[&1], digest.partitions[&1]);
    assert_eq!(after.partitions[&0].states, 2);
    assert_eq!(after.partitions, store.recomputed_digests().unwrap());

    let hashes = store.state_hashes(0).unwrap();
    let keys: Vec<(&str, u64)> = hashes
        .iter()
        .map(|hash| (hash.patient_key.as_str(), hash.offset))
        .collect();
    assert_eq!(keys, vec![("RXX:H1", 2), ("RXX:H4", 1)]);
}

#[test]
fn a_format_1_store_gains_its_digests_when_opened() {
    let dir = TempDir::new().unwrap();
    let expected = {
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        commit_patients(&store);
        store.flush().unwrap();
        store.digest_at(TOPIC).unwrap()
    };
    // Rewrite it as Baton of format 1 left it: bare index entries under
    // `e/` (each value after its 28-byte summary), no digests.
    {
        let db = support::reopen(dir.path());
        for item in db.scan_prefix("e/") {
            let (key, value) = item.unwrap();
            db.insert(key, &value[28..]).unwrap();
        }
        for key in db.scan_prefix("d/").keys() {
            db.remove(key.unwrap()).unwrap();
        }
        db.insert("meta/format", &1u32.to_be_bytes()[..]).unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
    assert_eq!(store.digest_at(TOPIC).unwrap(), expected);
    let ward = baton_care::cohort::Cohort {
        ward: Some("WARD-9".into()),
        ..Default::default()
    };
    let page = store
        .list_cohort(&ward, None, 10, baton_care::Instant::UNSET)
        .unwrap();
    assert_eq!(page.states.len(), 1, "the index entries are kept");
}

#[test]
#[allow(deprecated)]
fn a_format_2_store_moves_the_applied_ids_out_of_its_states_when_opened() {
    let dir = TempDir::new().unwrap();
    let first = EventId::parse("0b7a4d52-5d7e-4c1a-9a7e-2f1c3b4d5e6f").unwrap();
    let second = EventId::parse("1c8b5e63-6e8f-4d2b-8b8f-3a2d4c5e6f70").unwrap();
    // What a store of format 3 holds after committing the same states.
    let expected = {
        let store = Store::temporary().unwrap();
        commit_patients(&store);
        store.digest_at(TOPIC).unwrap()
    };
    // Format 2: the ids inside the states (as Baton of format 2 committed them).
    {
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        let mut states = patients();
        states[0].applied_event_ids = vec![first.to_string(), second.to_string()];
        store
            .commit(&Commit::new(TOPIC).with_states(states).with_position(0, 2))
            .unwrap();
        store.flush().unwrap();
    }
    {
        let db = support::reopen(dir.path());
        db.insert("meta/format", &2u32.to_be_bytes()[..]).unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
    let key = patients()[0].patient_key.clone();
    assert!(
        store
            .get(&key)
            .unwrap()
            .unwrap()
            .applied_event_ids
            .is_empty()
    );
    assert_eq!(store.get(&key).unwrap().unwrap(), patients()[0]);
    assert!(store.is_applied(&key, first).unwrap());
    assert!(store.is_applied(&key, second).unwrap());
    assert!(!store.is_applied(&patients()[1].patient_key, first).unwrap());
    let mut both = vec![first, second];
    both.sort();
    assert_eq!(store.applied_ids(&key).unwrap(), both);
    // Digests are of the states as they are now stored.
    assert_eq!(store.digest_at(TOPIC).unwrap(), expected);
    assert_eq!(
        store.recomputed_digests().unwrap().len(),
        expected.partitions.len()
    );
    drop(store);
    // Opened again, nothing moves.
    let store = support::reopen_store(dir.path(), &StoreConfig::default());
    assert_eq!(store.digest_at(TOPIC).unwrap(), expected);
    assert!(store.is_applied(&key, first).unwrap());
}

#[test]
fn applied_ids_are_committed_beside_the_states() {
    let store = Store::temporary().unwrap();
    let id = EventId::parse("0b7a4d52-5d7e-4c1a-9a7e-2f1c3b4d5e6f").unwrap();
    assert!(!store.is_applied("RXX:H1", id).unwrap());
    store
        .commit(&Commit::new(TOPIC).with_applied("RXX:H1", id))
        .unwrap();
    assert!(store.is_applied("RXX:H1", id).unwrap());
    // Per patient: one patient's ids are never another's, even by prefix.
    assert!(!store.is_applied("RXX:H", id).unwrap());
    assert!(store.applied_ids("RXX:H").unwrap().is_empty());
    assert_eq!(store.applied_ids("RXX:H1").unwrap(), vec![id]);
}

/// A commit writes its applied ids one key per patient (sled's cost is
/// per key), and every id is read back whichever commit wrote it.
#[test]
fn a_commit_writes_one_applied_ids_key_per_patient() {
    let dir = TempDir::new().unwrap();
    let ids: Vec<EventId> = (0..5u8).map(|n| EventId::from_bytes([n + 1; 16])).collect();
    {
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        store
            .commit(
                &Commit::new(TOPIC)
                    .with_applied("RXX:H1", ids[0])
                    .with_applied("RXX:H2", ids[1])
                    .with_applied("RXX:H1", ids[2]),
            )
            .unwrap();
        store
            .commit(&Commit::new(TOPIC).with_applied("RXX:H1", ids[3]))
            .unwrap();
        store.flush().unwrap();
    }
    let db = support::reopen(dir.path());
    assert_eq!(
        db.scan_prefix("a/").count(),
        3,
        "one key per patient per commit"
    );
    drop(db);
    let store = support::reopen_store(dir.path(), &StoreConfig::default());
    let mut of_h1 = store.applied_ids("RXX:H1").unwrap();
    of_h1.sort();
    assert_eq!(of_h1, vec![ids[0], ids[2], ids[3]]);
    assert_eq!(store.applied_ids("RXX:H2").unwrap(), vec![ids[1]]);
    assert!(store.is_applied("RXX:H1", ids[3]).unwrap());
    assert!(!store.is_applied("RXX:H1", ids[4]).unwrap());
}

/// Format 3 wrote one empty key per applied event: read as it is, once
/// stamped format 4; a chunk whose value is not whole ids is corrupt.
#[test]
fn a_format_3_store_is_read_as_it_is_and_stamped_format_4() {
    let dir = TempDir::new().unwrap();
    let (old, new) = (EventId::from_bytes([7; 16]), EventId::from_bytes([9; 16]));
    drop(Store::open(dir.path(), &StoreConfig::default()).unwrap());
    {
        let db = support::reopen(dir.path());
        let mut key = b"a/RXX:H1\x1f".to_vec();
        key.extend_from_slice(&old.to_bytes());
        db.insert(key, &[][..]).unwrap();
        db.insert("meta/format", &3u32.to_be_bytes()[..]).unwrap();
        db.flush().unwrap();
    }
    {
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        assert!(store.is_applied("RXX:H1", old).unwrap());
        store
            .commit(&Commit::new(TOPIC).with_applied("RXX:H1", new))
            .unwrap();
        let mut both = store.applied_ids("RXX:H1").unwrap();
        both.sort();
        assert_eq!(both, vec![old, new]);
        store.flush().unwrap();
    }
    let db = support::reopen(dir.path());
    assert_eq!(
        db.get("meta/format").unwrap().unwrap().as_ref(),
        &4u32.to_be_bytes()[..]
    );
    let mut key = b"a/RXX:H2\x1f".to_vec();
    key.extend_from_slice(&old.to_bytes());
    db.insert(key, &[1u8; 5][..]).unwrap();
    db.flush().unwrap();
    drop(db);
    let store = support::reopen_store(dir.path(), &StoreConfig::default());
    let error = store.applied_ids("RXX:H2").unwrap_err().to_string();
    assert!(
        error.contains("expected event ids of 16 bytes each"),
        "{error}"
    );
}

#[tokio::test]
async fn a_swap_moves_every_handle_to_the_new_generation_and_tells_position_watchers() {
    let dir = TempDir::new().unwrap();
    let live = Store::open(dir.path().join("store"), &StoreConfig::default()).unwrap();
    let reader = live.clone();
    live.commit(
        &Commit::new(TOPIC)
            .with_state(patients()[0].clone())
            .with_position(0, 1),
    )
    .unwrap();
    let mut positions = live.watch(TOPIC);

    let rebuilt =
        Store::open_generation(dir.path().join("store.g1"), &StoreConfig::default(), 1).unwrap();
    rebuilt
        .commit(
            &Commit::new(TOPIC)
                .with_states(patients())
                .with_position(0, 2)
                .with_position(1, 2),
        )
        .unwrap();
    // Reopening for a resumed replay gives the same generation; another
    // number is refused.
    {
        let other = Store::open(dir.path().join("other"), &StoreConfig::default()).unwrap();
        other
            .commit(&Commit::new(TOPIC).with_state(patients()[0].clone()))
            .unwrap();
    }
    let refused = Store::open_generation(dir.path().join("other"), &StoreConfig::default(), 7)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("holds generation 0, not 7"), "{refused}");

    let paused = live.pause_writers().await;
    let previous = live.swap_in(&rebuilt).unwrap();
    drop(paused);

    assert_eq!(reader.generation(), 1);
    assert_eq!(reader.state_count().unwrap(), 4);
    assert_eq!(reader.applied(TOPIC).unwrap()[&1], 2);
    assert_eq!(previous.generation(), 0);
    assert_eq!(previous.state_count().unwrap(), 1);
    positions.changed().await.unwrap();
    assert_eq!(
        *positions.borrow_and_update(),
        BTreeMap::from([(0, 2), (1, 2)])
    );
    // Commits through the live handle land in the new generation.
    live.commit(&Commit::new(TOPIC).with_position(1, 5))
        .unwrap();
    assert_eq!(rebuilt.applied(TOPIC).unwrap()[&1], 5);
}

#[tokio::test]
async fn a_pause_waits_for_every_writer_to_reach_a_batch_boundary() {
    let store = Store::temporary().unwrap();
    let permit = store.writer_permit().await;
    assert!(!store.swap_requested());
    let pausing = {
        let store = store.clone();
        tokio::spawn(async move { store.pause_writers().await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(store.swap_requested(), "the writer is asked to stop");
    assert!(!pausing.is_finished(), "and the pause waits for it");

    drop(permit);
    let paused = tokio::time::timeout(Duration::from_secs(5), pausing)
        .await
        .expect("the pause begins once the permit is let go")
        .unwrap();
    let again = {
        let store = store.clone();
        tokio::spawn(async move { store.writer_permit().await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!again.is_finished(), "no writer starts during the pause");
    drop(paused);
    let _permit = tokio::time::timeout(Duration::from_secs(5), again)
        .await
        .expect("writers go on after the pause")
        .unwrap();
    assert!(!store.swap_requested());
}
