//! Taking over a partition in a projector group: bringing the store's
//! states of that partition to where the changelog says the group is, so
//! the events can be folded on from there.
//!
//! The changelog partition of the same number holds the latest published
//! state of every patient of the events partition, each with the ids of the
//! events applied to it ([`APPLIED_IDS_HEADER`]), and progress records
//! saying how far the events were folded. Read whole (up to its end when
//! the take-over starts), it gives:
//! - `changelog`: the next offset of the latest progress record;
//! - each patient's latest state and applied ids.
//!
//! Against `stored`, the store's own position for the partition:
//! - **changelog ahead** (another projector owned the partition since this
//!   store last did, or never did): the changelog's states and applied ids
//!   replace the store's, and the position becomes `changelog`. States
//!   published after the latest progress record are taken too: their
//!   events are folded again, and are duplicates there.
//! - **store ahead** (this projector committed more than it had published
//!   when it stopped, and nobody moved the partition since): the states the
//!   changelog lacks (those whose last event is at `changelog` or later)
//!   are published, then the store's progress.
//! - **level**: nothing to do.
//!
//! Either way the events are read on from the larger position.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_log::{EventLog, NewRecord, Record};
use baton_proto::state::v1::{PatientCareState, ProjectionProgress};
use baton_store::changelog::{
    APPLIED_IDS_HEADER, GENERATION_HEADER, PROGRESS_KEY_PREFIX, decode_applied_ids,
    encode_applied_ids, progress_record_of, state_record_encoded,
};
use baton_store::{Commit, Store};
use prost::Message;

use crate::{ProjectorError, Result};

/// States restored per store commit: bounds the batch sled holds at once.
const RESTORE_CHUNK: usize = 2_000;
/// How often a long restore logs its progress.
const REPORT_EVERY: Duration = Duration::from_secs(2);

/// What taking over a partition did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TakeOver {
    /// Where the events are read on from.
    pub(crate) resume_at: u64,
    /// Changelog records read.
    pub(crate) records: u64,
    /// States written to the store (changelog ahead) or published (store
    /// ahead).
    pub(crate) states: u64,
    pub(crate) outcome: &'static str,
}

/// The latest of each patient's states in a changelog partition, and its
/// latest progress.
#[derive(Debug, Default)]
struct ChangelogPartition {
    progress: u64,
    /// Per patient key, the latest state record's value and applied ids.
    states: HashMap<String, (Vec<u8>, Option<Vec<u8>>)>,
    records: u64,
}

/// Brings `store`'s states of events partition `partition` level with the
/// changelog; see the module documentation.
pub(crate) async fn take_over(
    log: &Arc<dyn EventLog>,
    store: &Store,
    topics: &baton_log::topics::Topics,
    partition: u32,
    owner: &str,
) -> Result<TakeOver> {
    let started = Instant::now();
    crate::metrics::record_restoring(true);
    let taken = take_over_inner(log, store, topics, partition, owner).await;
    crate::metrics::record_restoring(false);
    let taken = taken?;
    crate::metrics::record_restore(taken.outcome);
    tracing::info!(
        partition,
        outcome = taken.outcome,
        resume_at = taken.resume_at,
        changelog_records = taken.records,
        states = taken.states,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "partition taken over"
    );
    Ok(taken)
}

async fn take_over_inner(
    log: &Arc<dyn EventLog>,
    store: &Store,
    topics: &baton_log::topics::Topics,
    partition: u32,
    owner: &str,
) -> Result<TakeOver> {
    let stored = {
        let store = store.clone();
        let topic = topics.events.clone();
        tokio::task::spawn_blocking(move || store.applied(&topic))
            .await??
            .get(&partition)
            .copied()
            .unwrap_or(0)
    };
    let changelog = read_partition(log, &topics.state, &topics.events, partition).await?;
    let records = changelog.records;
    if changelog.progress > stored {
        let states = restore(store, &topics.events, partition, changelog).await?;
        return Ok(TakeOver {
            resume_at: states.1,
            records,
            states: states.0,
            outcome: "restored",
        });
    }
    if changelog.progress < stored {
        let states = republish(
            log,
            store,
            topics,
            partition,
            (changelog.progress, stored),
            owner,
        )
        .await?;
        return Ok(TakeOver {
            resume_at: stored,
            records,
            states,
            outcome: "republished",
        });
    }
    Ok(TakeOver {
        resume_at: stored,
        records,
        states: 0,
        outcome: "current",
    })
}

/// Reads changelog partition `partition` from its start to its end as it
/// is now.
async fn read_partition(
    log: &Arc<dyn EventLog>,
    state_topic: &str,
    events_topic: &str,
    partition: u32,
) -> Result<ChangelogPartition> {
    let end = log
        .end_offsets(state_topic)
        .await?
        .get(partition as usize)
        .copied()
        .unwrap_or(0);
    let mut read = ChangelogPartition::default();
    if end == 0 {
        return Ok(read);
    }
    tracing::info!(
        partition,
        changelog_end = end,
        "restoring the partition's states from the changelog"
    );
    let mut reader = log
        .reader(state_topic, BTreeMap::from([(partition, 0)]))
        .await?;
    let mut reported = Instant::now();
    let mut undecodable = 0u64;
    while reader.positions().get(&partition).copied().unwrap_or(0) < end {
        let batch = reader
            .next_batch(10_000, Duration::from_millis(200))
            .await?;
        let mut counted = 0;
        for record in batch {
            if record.offset >= end {
                continue;
            }
            counted += 1;
            if record.key.starts_with(PROGRESS_KEY_PREFIX.as_bytes()) {
                match ProjectionProgress::decode(record.value.as_slice()) {
                    Ok(progress)
                        if progress.events_topic == events_topic
                            && progress.partition == partition =>
                    {
                        read.progress = read.progress.max(progress.next_offset);
                    }
                    Ok(_) => {}
                    Err(_) => undecodable += 1,
                }
                continue;
            }
            match state_of(record) {
                Some((key, value, ledger)) => {
                    read.states.insert(key, (value, ledger));
                }
                None => undecodable += 1,
            }
        }
        read.records += counted;
        crate::metrics::record_restore_records(counted);
        if reported.elapsed() >= REPORT_EVERY {
            tracing::info!(
                partition,
                read = read.records,
                of = end,
                "restoring the partition's states from the changelog"
            );
            reported = Instant::now();
        }
    }
    if undecodable > 0 {
        tracing::warn!(
            partition,
            records = undecodable,
            "changelog records that do not decode were skipped while restoring"
        );
    }
    Ok(read)
}

/// A state record's patient key, value and applied ids; `None` when its key
/// is not UTF-8.
fn state_of(record: Record) -> Option<(String, Vec<u8>, Option<Vec<u8>>)> {
    let ledger = record.header(APPLIED_IDS_HEADER).map(<[u8]>::to_vec);
    let key = String::from_utf8(record.key).ok()?;
    Some((key, record.value, ledger))
}

/// Writes the changelog's states and applied ids over the store's, then
/// its position; returns the states written and the position.
async fn restore(
    store: &Store,
    events_topic: &str,
    partition: u32,
    changelog: ChangelogPartition,
) -> Result<(u64, u64)> {
    let store = store.clone();
    let topic = events_topic.to_owned();
    tokio::task::spawn_blocking(move || -> Result<(u64, u64)> {
        let progress = changelog.progress;
        let mut without_ledger = 0u64;
        let mut written = 0u64;
        let mut entries: Vec<_> = changelog.states.into_iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let chunks: Vec<_> = entries.chunks(RESTORE_CHUNK).collect();
        let last = chunks.len().saturating_sub(1);
        for (index, chunk) in chunks.iter().enumerate() {
            let mut commit = Commit::new(topic.clone());
            for (key, (value, ledger)) in chunk.iter() {
                let state = PatientCareState::decode(value.as_slice()).map_err(|error| {
                    ProjectorError::Invalid(format!(
                        "the changelog's state of a patient of partition {partition} does not decode: {error}"
                    ))
                })?;
                match ledger.as_deref().map(decode_applied_ids) {
                    Some(Ok(ids)) => {
                        commit.applied.extend(ids.into_iter().map(|id| (key.clone(), id)));
                    }
                    Some(Err(reason)) => {
                        return Err(ProjectorError::Invalid(format!(
                            "the changelog's state of a patient of partition {partition}: {reason}"
                        )));
                    }
                    None => without_ledger += 1,
                }
                commit.states.push(Arc::new(state));
            }
            if index == last {
                commit.positions.insert(partition, progress);
            }
            store.commit(&commit)?;
            written += chunk.len() as u64;
        }
        if chunks.is_empty() {
            store.commit(&Commit::new(topic.clone()).with_position(partition, progress))?;
        }
        if without_ledger > 0 {
            tracing::warn!(
                partition,
                states = without_ledger,
                "restored states published without their applied ids (before {APPLIED_IDS_HEADER} existed): an event applied to them before would apply again if sent again"
            );
        }
        store.flush()?;
        Ok((written, progress))
    })
    .await?
}

/// Publishes the states of `partition` whose last event is at
/// `changelog` or later, then the store's progress `stored`; returns the
/// states published.
async fn republish(
    log: &Arc<dyn EventLog>,
    store: &Store,
    topics: &baton_log::topics::Topics,
    partition: u32,
    (changelog, stored): (u64, u64),
    owner: &str,
) -> Result<u64> {
    let records = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || -> Result<Vec<NewRecord>> {
            let generation = store.generation();
            let mut records = Vec::new();
            for hash in store.hashes() {
                let hash = hash?;
                if hash.partition != partition || hash.offset < changelog {
                    continue;
                }
                let Some(encoded) = store.get_encoded(&hash.patient_key)? else {
                    continue;
                };
                let mut ids = store.applied_ids(&hash.patient_key)?;
                ids.sort_unstable();
                ids.dedup();
                let mut record = state_record_encoded(&hash.patient_key, encoded, partition, None)
                    .with_header(APPLIED_IDS_HEADER, encode_applied_ids(&ids));
                if generation > 0 {
                    record = record.with_header(GENERATION_HEADER, generation.to_string());
                }
                records.push(record);
            }
            Ok(records)
        })
        .await??
    };
    let states = records.len() as u64;
    let mut records = records;
    records.push(progress_record_of(&topics.events, partition, stored, owner));
    for chunk in records.chunks(RESTORE_CHUNK) {
        log.append(&topics.state, chunk.to_vec()).await?;
    }
    Ok(states)
}

/// The latest progress record of events partition `partition` in the
/// changelog, read back from the partition's end a widening window at a
/// time; `None` when it has none.
pub(crate) async fn latest_progress(
    log: &Arc<dyn EventLog>,
    topics: &baton_log::topics::Topics,
    partition: u32,
) -> Result<Option<ProjectionProgress>> {
    let end = log
        .end_offsets(&topics.state)
        .await?
        .get(partition as usize)
        .copied()
        .unwrap_or(0);
    let (mut upto, mut window) = (end, 256u64);
    while upto > 0 {
        let from = upto.saturating_sub(window);
        let mut reader = log
            .reader(&topics.state, BTreeMap::from([(partition, from)]))
            .await?;
        let mut latest = None;
        while reader.positions().get(&partition).copied().unwrap_or(upto) < upto {
            let batch = reader.next_batch(4_096, Duration::from_millis(500)).await?;
            if batch.is_empty() {
                break;
            }
            for record in batch.iter().filter(|record| record.offset < upto) {
                if !record.key.starts_with(PROGRESS_KEY_PREFIX.as_bytes()) {
                    continue;
                }
                if let Ok(progress) = ProjectionProgress::decode(record.value.as_slice())
                    && progress.events_topic == topics.events
                    && progress.partition == partition
                {
                    latest = Some(progress);
                }
            }
        }
        if latest.is_some() {
            return Ok(latest);
        }
        upto = from;
        window = window.saturating_mul(4);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use baton_care::EventId;
    use baton_log::embedded::EmbeddedLog;
    use baton_log::topics::Topics;
    use baton_proto::state::v1::AppliedPosition;
    use baton_store::changelog::{ChangelogEntry, state_record};

    use super::*;

    fn id(n: u128) -> EventId {
        EventId::from_bytes(n.to_be_bytes())
    }

    fn state(key: &str, version: u64, offset: u64) -> PatientCareState {
        PatientCareState {
            patient_key: key.into(),
            version,
            applied: Some(AppliedPosition {
                partition: 0,
                offset,
            }),
            ..Default::default()
        }
    }

    async fn setup() -> (Arc<dyn EventLog>, Store, Topics) {
        let topics = Topics {
            partitions: 1,
            ..Topics::default()
        };
        let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::temporary().unwrap());
        topics.ensure(&*log).await.unwrap();
        (log, Store::temporary().unwrap(), topics)
    }

    /// Another projector moved the partition on: its published states and
    /// their applied ids replace the store's, and reading resumes at its
    /// latest progress.
    #[tokio::test]
    async fn a_changelog_ahead_of_the_store_is_restored_with_its_applied_ids() {
        let (log, store, topics) = setup().await;
        store
            .commit(
                &Commit::new(topics.events.clone())
                    .with_state(state("A", 1, 0))
                    .with_applied("A", id(1))
                    .with_position(0, 1),
            )
            .unwrap();
        let newer = state("A", 3, 6);
        log.append(
            &topics.state,
            vec![
                state_record(&state("A", 2, 3), 0, None),
                state_record(&newer, 0, None).with_header(
                    APPLIED_IDS_HEADER,
                    encode_applied_ids(&[id(1), id(2), id(3)]),
                ),
                state_record(&state("B", 1, 5), 0, None)
                    .with_header(APPLIED_IDS_HEADER, encode_applied_ids(&[id(4)])),
                progress_record_of(&topics.events, 0, 7, "projector-1"),
            ],
        )
        .await
        .unwrap();

        let taken = take_over(&log, &store, &topics, 0, "projector-0")
            .await
            .unwrap();
        assert_eq!(
            (taken.outcome, taken.resume_at, taken.states),
            ("restored", 7, 2)
        );
        assert_eq!(store.get("A").unwrap().unwrap(), newer, "the latest state");
        assert_eq!(store.applied(&topics.events).unwrap()[&0], 7);
        for (key, event) in [("A", 1), ("A", 2), ("A", 3), ("B", 4)] {
            assert!(
                store.is_applied(key, id(event)).unwrap(),
                "{key} keeps refusing event {event} as a duplicate"
            );
        }
        assert!(!store.is_applied("B", id(1)).unwrap());
    }

    /// This store committed more than it published: the states the
    /// changelog lacks are published with their applied ids, then the
    /// store's progress; nothing else.
    #[tokio::test]
    async fn a_store_ahead_of_the_changelog_publishes_what_it_lacks() {
        let (log, store, topics) = setup().await;
        store
            .commit(
                &Commit::new(topics.events.clone())
                    .with_state(state("A", 1, 2))
                    .with_state(state("B", 2, 9))
                    .with_applied("B", id(7))
                    .with_position(0, 10),
            )
            .unwrap();
        log.append(
            &topics.state,
            vec![progress_record_of(&topics.events, 0, 5, "projector-1")],
        )
        .await
        .unwrap();

        let taken = take_over(&log, &store, &topics, 0, "projector-0")
            .await
            .unwrap();
        assert_eq!(
            (taken.outcome, taken.resume_at, taken.states),
            ("republished", 10, 1)
        );
        let mut reader = log
            .reader(&topics.state, BTreeMap::from([(0, 1)]))
            .await
            .unwrap();
        let records = reader
            .next_batch(100, Duration::from_millis(100))
            .await
            .unwrap();
        assert_eq!(records.len(), 2, "{records:?}");
        let ChangelogEntry::State(published) = ChangelogEntry::decode(&records[0]).unwrap() else {
            panic!("a state first");
        };
        assert_eq!(
            published.patient_key, "B",
            "only the state past the changelog's progress"
        );
        assert_eq!(
            baton_store::changelog::applied_ids_of(&records[0]),
            Some(Ok(vec![id(7)]))
        );
        let ChangelogEntry::Progress(progress) = ChangelogEntry::decode(&records[1]).unwrap()
        else {
            panic!("then the progress");
        };
        assert_eq!(
            (progress.next_offset, progress.owner.as_str()),
            (10, "projector-0")
        );
        assert_eq!(
            latest_progress(&log, &topics, 0)
                .await
                .unwrap()
                .map(|p| p.owner),
            Some("projector-0".to_owned())
        );
    }

    /// Level: nothing is written anywhere.
    #[tokio::test]
    async fn a_store_level_with_the_changelog_is_left_as_it_is() {
        let (log, store, topics) = setup().await;
        store
            .commit(
                &Commit::new(topics.events.clone())
                    .with_state(state("A", 1, 2))
                    .with_position(0, 3),
            )
            .unwrap();
        log.append(
            &topics.state,
            vec![
                state_record(&state("A", 1, 2), 0, None),
                progress_record_of(&topics.events, 0, 3, "projector-0"),
            ],
        )
        .await
        .unwrap();
        let taken = take_over(&log, &store, &topics, 0, "projector-0")
            .await
            .unwrap();
        assert_eq!(
            (taken.outcome, taken.resume_at, taken.states),
            ("current", 3, 0)
        );
        assert_eq!(log.end_offsets(&topics.state).await.unwrap(), vec![2]);
    }
}
