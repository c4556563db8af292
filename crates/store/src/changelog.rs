//! The records of the state changelog, `baton.care-state.v1`: how the
//! projector publishes what it committed, and how a query replica (or any
//! Kafka consumer) reads it back.
//!
//! Two kinds of record share the topic, told apart by their
//! `content-type` header:
//!
//! | key | value | when |
//! |---|---|---|
//! | patient key | `baton.state.v1.PatientCareState` | after every commit that changed the state |
//! | `progress/<events topic>/<partition>` | `baton.state.v1.ProjectionProgress` | after the states of each commit, per events partition it moved |
//!
//! A patient's states and the progress of the events partition they come
//! from share one changelog partition (the same partition number), so a
//! reader that reached a progress record holds every state it covers.
//! Compaction keeps the latest record per key: the current state of every
//! patient and the latest progress of every partition.

use baton_log::{NewRecord, Record};
use baton_proto::NamedMessage;
use baton_proto::state::v1::{PatientCareState, ProjectionProgress};
use prost::Message;

/// Header naming a record's protobuf message.
pub const CONTENT_TYPE_HEADER: &str = "content-type";
/// Header carrying the W3C trace context of the event that produced the state.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// Header naming the store generation a state was published from, as
/// decimal text; absent means generation 0. A replay that changes the fold
/// may give a state a lower `version` in the new generation than it had in
/// the old one: readers compare (generation, version), not the version
/// alone. See [`generation_of`].
pub const GENERATION_HEADER: &str = "baton-generation";
/// Header of a state record holding the id of every event applied to the
/// state (16 bytes each, in id order): the duplicate ledger a projector
/// restoring the partition from the changelog needs, so an event applied
/// before the restore stays a no-op after it. Query replicas ignore it.
pub const APPLIED_IDS_HEADER: &str = "baton-applied-ids";
/// Keys of progress records start with this; patient keys never do.
pub const PROGRESS_KEY_PREFIX: &str = "progress/";

/// The record publishing `state` to changelog partition `partition` (the
/// partition number of the patient's events).
pub fn state_record(
    state: &PatientCareState,
    partition: u32,
    traceparent: Option<&[u8]>,
) -> NewRecord {
    state_record_encoded(
        &state.patient_key,
        state.encode_to_vec(),
        partition,
        traceparent,
    )
}

/// [`state_record`] of the state of `patient_key` already encoded as
/// `encoded` (the bytes the store was given: encoded once per commit).
pub fn state_record_encoded(
    patient_key: &str,
    encoded: Vec<u8>,
    partition: u32,
    traceparent: Option<&[u8]>,
) -> NewRecord {
    let mut record = NewRecord::new(patient_key, encoded)
        .with_header(CONTENT_TYPE_HEADER, PatientCareState::content_type())
        .to_partition(partition);
    if let Some(traceparent) = traceparent {
        record = record.with_header(TRACEPARENT_HEADER, traceparent);
    }
    record
}

/// The store generation `record` (a state record) was published from: 0
/// when it names none, or names it unreadably.
pub fn generation_of(record: &Record) -> u64 {
    record
        .header(GENERATION_HEADER)
        .and_then(|value| std::str::from_utf8(value).ok())
        .and_then(|text| text.parse().ok())
        .unwrap_or(0)
}

/// The record saying every event of `partition` of `events_topic` below
/// `next_offset` is in the states published before it.
pub fn progress_record(events_topic: &str, partition: u32, next_offset: u64) -> NewRecord {
    progress_record_of(events_topic, partition, next_offset, "")
}

/// [`progress_record`] naming `owner`, the instance id of the projector of
/// a group that published it (empty for a projector on its own).
pub fn progress_record_of(
    events_topic: &str,
    partition: u32,
    next_offset: u64,
    owner: &str,
) -> NewRecord {
    let progress = ProjectionProgress {
        events_topic: events_topic.to_owned(),
        partition,
        next_offset,
        owner: owner.to_owned(),
    };
    NewRecord::new(
        progress_key(events_topic, partition),
        progress.encode_to_vec(),
    )
    .with_header(CONTENT_TYPE_HEADER, ProjectionProgress::content_type())
    .to_partition(partition)
}

/// `progress/<events topic>/<partition>`.
pub fn progress_key(events_topic: &str, partition: u32) -> String {
    format!("{PROGRESS_KEY_PREFIX}{events_topic}/{partition}")
}

/// The value of an [`APPLIED_IDS_HEADER`].
pub fn encode_applied_ids(ids: &[baton_care::EventId]) -> Vec<u8> {
    let mut value = Vec::with_capacity(ids.len() * 16);
    for id in ids {
        value.extend_from_slice(&id.to_bytes());
    }
    value
}

/// The event ids in `record`'s [`APPLIED_IDS_HEADER`]; `None` when it has
/// none (a record published before the header existed).
pub fn applied_ids_of(record: &Record) -> Option<Result<Vec<baton_care::EventId>, String>> {
    record.header(APPLIED_IDS_HEADER).map(decode_applied_ids)
}

/// The event ids of an [`APPLIED_IDS_HEADER`]'s value.
pub fn decode_applied_ids(value: &[u8]) -> Result<Vec<baton_care::EventId>, String> {
    if !value.len().is_multiple_of(16) {
        return Err(format!(
            "header {APPLIED_IDS_HEADER} is {} bytes: expected event ids of 16 bytes each",
            value.len()
        ));
    }
    Ok(value
        .chunks_exact(16)
        .map(|chunk| baton_care::EventId::from_bytes(chunk.try_into().expect("chunks of 16")))
        .collect())
}

/// A changelog record, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangelogEntry {
    State(Box<PatientCareState>),
    Progress(ProjectionProgress),
}

impl ChangelogEntry {
    /// Decodes a changelog record by its content type. A record without
    /// one is taken by its key: progress keys are never patient keys.
    pub fn decode(record: &Record) -> Result<Self, String> {
        let progress_type = ProjectionProgress::content_type();
        let state_type = PatientCareState::content_type();
        let is_progress = match record.header(CONTENT_TYPE_HEADER) {
            Some(content_type) if content_type == progress_type.as_bytes() => true,
            Some(content_type) if content_type == state_type.as_bytes() => false,
            Some(other) => {
                return Err(format!(
                    "content-type {:?} is neither {} nor {}",
                    String::from_utf8_lossy(other),
                    PatientCareState::FULL_NAME,
                    ProjectionProgress::FULL_NAME
                ));
            }
            None => record.key.starts_with(PROGRESS_KEY_PREFIX.as_bytes()),
        };
        if is_progress {
            ProjectionProgress::decode(record.value.as_slice())
                .map(Self::Progress)
                .map_err(|error| {
                    format!("cannot decode a {}: {error}", ProjectionProgress::FULL_NAME)
                })
        } else {
            let state = PatientCareState::decode(record.value.as_slice()).map_err(|error| {
                format!("cannot decode a {}: {error}", PatientCareState::FULL_NAME)
            })?;
            if state.patient_key.as_bytes() != record.key.as_slice() {
                return Err(format!(
                    "the record key {:?} is not the state's patient key {:?}",
                    String::from_utf8_lossy(&record.key),
                    state.patient_key
                ));
            }
            Ok(Self::State(Box::new(state)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(record: NewRecord) -> Record {
        Record {
            topic: "baton.care-state.v1".into(),
            partition: record.partition.unwrap_or_default(),
            offset: 0,
            key: record.key,
            value: record.value,
            headers: record.headers,
            timestamp_ms: 0,
        }
    }

    #[test]
    fn states_and_progress_round_trip() {
        let state = PatientCareState {
            patient_key: "9434765919".into(),
            version: 7,
            ..PatientCareState::default()
        };
        let record = state_record(
            &state,
            3,
            Some(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
        assert_eq!(record.partition, Some(3));
        let record = read(record);
        assert!(record.header(TRACEPARENT_HEADER).is_some());
        assert_eq!(
            ChangelogEntry::decode(&record).unwrap(),
            ChangelogEntry::State(Box::new(state))
        );

        let record = read(progress_record("baton.care-events.v1", 3, 120));
        assert_eq!(record.key, b"progress/baton.care-events.v1/3");
        assert_eq!(
            ChangelogEntry::decode(&record).unwrap(),
            ChangelogEntry::Progress(ProjectionProgress {
                events_topic: "baton.care-events.v1".into(),
                partition: 3,
                next_offset: 120,
                owner: String::new(),
            })
        );
        let record = read(progress_record_of(
            "baton.care-events.v1",
            3,
            121,
            "projector-2",
        ));
        let ChangelogEntry::Progress(progress) = ChangelogEntry::decode(&record).unwrap() else {
            panic!("a progress record");
        };
        assert_eq!(
            (progress.next_offset, progress.owner.as_str()),
            (121, "projector-2")
        );
    }

    #[test]
    fn applied_ids_travel_in_a_header_of_the_state_record() {
        let ids: Vec<baton_care::EventId> = (1..=3u128)
            .map(|n| baton_care::EventId::from_bytes(n.to_be_bytes()))
            .collect();
        let state = PatientCareState {
            patient_key: "9434765919".into(),
            ..Default::default()
        };
        let record = read(
            state_record(&state, 0, None).with_header(APPLIED_IDS_HEADER, encode_applied_ids(&ids)),
        );
        assert_eq!(applied_ids_of(&record), Some(Ok(ids)));
        assert_eq!(applied_ids_of(&read(state_record(&state, 0, None))), None);
        let error = decode_applied_ids(&[0; 17]).unwrap_err();
        assert!(
            error.contains("17 bytes") && error.contains(APPLIED_IDS_HEADER),
            "{error}"
        );
    }

    #[test]
    fn foreign_and_damaged_records_are_refused_with_the_reason() {
        let mut record = read(progress_record("t", 0, 1));
        record.headers[0].value = b"text/plain".to_vec();
        assert!(
            ChangelogEntry::decode(&record)
                .unwrap_err()
                .contains("text/plain")
        );

        let state = PatientCareState {
            patient_key: "9434765919".into(),
            ..PatientCareState::default()
        };
        let mut record = read(state_record(&state, 0, None));
        record.key = b"4010232137".to_vec();
        assert!(
            ChangelogEntry::decode(&record)
                .unwrap_err()
                .contains("not the state's patient key")
        );
        record.value = vec![0xff, 0xff];
        assert!(
            ChangelogEntry::decode(&record)
                .unwrap_err()
                .contains("cannot decode")
        );
    }
}
