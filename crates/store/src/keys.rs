//! The key layout of the store's one sled tree, and the small encodings of
//! the values that are not protobuf messages. Every key starts with a prefix
//! naming its kind, so each kind is one ordered prefix scan.

use std::fmt::Write as _;

/// `meta/format` → [`FORMAT_VERSION`] as u32 big-endian.
pub(crate) const FORMAT_KEY: &[u8] = b"meta/format";
/// Bumped whenever the layout or a value encoding changes incompatibly.
/// Version 2 added the state summary in front of each `e/` value and the
/// per-partition digests under `d/`; version 3 moved the applied event ids
/// out of the states into `a/`, one key per event; version 4 writes them one
/// key per patient per commit (a format 3 key is a chunk of one id, so a
/// format 3 store is read as it is). An older store is migrated on open.
pub(crate) const FORMAT_VERSION: u32 = 4;

/// `s/<patient key>` → the encoded `PatientCareState`.
pub(crate) const STATE_PREFIX: &str = "s/";
/// `e/<patient key>` → the state's [`Summary`] then its current index
/// entries (see [`encode_summary`]), so a commit can diff old and new
/// entries, and take the old state out of its partition's digest, without
/// decoding the old state.
pub(crate) const ENTRIES_PREFIX: &str = "e/";
/// `a/<patient key>\x1f<event id, 16 bytes>` → more event ids, 16 bytes
/// each (none in format 3): a chunk of the events applied to the patient's
/// state by one commit, so they are duplicates there (see
/// [`baton_care::AppliedEvents`]). The key names the chunk's first id, so
/// keys never collide; one patient's ids are one prefix scan.
pub(crate) const APPLIED_PREFIX: &str = "a/";
/// `i/<index entry>` → empty. Entries end with the patient key.
pub(crate) const INDEX_PREFIX: &str = "i/";
/// `p/<topic>\x1f<partition as u32 big-endian>` → next offset to read, as
/// u64 big-endian.
pub(crate) const POSITION_PREFIX: &str = "p/";
/// `meta/unpublished` → the patient keys of the latest commit and of the
/// earlier ones it names as still publishing, encoded like index entries, when the committer publishes states after each
/// commit (see [`Commit::publish`](crate::Commit::publish)).
pub(crate) const UNPUBLISHED_KEY: &[u8] = b"meta/unpublished";
/// `d/<partition as u32 big-endian>` → the [`PartitionDigest`] of every
/// state whose last applied event is in that partition: the wrapping sum
/// of their hashes (16 bytes) and their count (8 bytes), big-endian.
pub(crate) const DIGEST_PREFIX: &str = "d/";
/// `g/<patient key>` → on a query replica, the projector's store generation
/// the stored state was published from, u64 big-endian; absent means 0.
pub(crate) const STATE_GENERATION_PREFIX: &str = "g/";
/// `meta/generation` → the store's generation number, u64 big-endian: 0
/// (or absent) for a store never rebuilt, then one more for each replay.
pub(crate) const GENERATION_KEY: &[u8] = b"meta/generation";
/// The digest bucket of states that name no applied position (states
/// committed by tests and tools, never by the projector).
pub const UNPLACED_PARTITION: u32 = u32::MAX;
/// `meta/index` → [`baton_care::cohort::INDEX_VERSION`] of the stored
/// cohort index entries, u32 big-endian; a store opened with another
/// version rebuilds its index from the states.
pub(crate) const INDEX_VERSION_KEY: &[u8] = b"meta/index";
/// `t/<patient key>\x1f<occurred_at><partition><offset>` → the event, as
/// its log record's value: the patient's timeline in clinical order, then
/// log order. See [`timeline_key`].
pub(crate) const TIMELINE_PREFIX: &str = "t/";
/// `meta/states` → how many `s/` keys there are, u64 big-endian, kept in
/// every commit's batch so the count costs no scan (metrics read it); a
/// store written before it existed is counted once when opened.
pub(crate) const STATE_COUNT_KEY: &[u8] = b"meta/states";
/// `meta/source/<topic>` → the identity of the log the topic's positions
/// are in (see [`Store::bind_source`](crate::Store::bind_source)).
pub(crate) const SOURCE_PREFIX: &str = "meta/source/";
/// Ends the topic name in a position key. Kafka topic names are ASCII
/// letters, digits, `.`, `_` and `-`, so it never occurs inside one, and no
/// topic's positions are listed under another's prefix.
const TOPIC_END: u8 = 0x1f;

pub(crate) fn state_key(patient_key: &str) -> Vec<u8> {
    prefixed(STATE_PREFIX, patient_key)
}

/// The prefix of every applied-event key of `patient_key`.
pub(crate) fn applied_prefix(patient_key: &str) -> Vec<u8> {
    let mut key = prefixed(APPLIED_PREFIX, patient_key);
    key.push(TOPIC_END);
    key
}

pub(crate) fn applied_key(patient_key: &str, event_id: baton_care::EventId) -> Vec<u8> {
    let mut key = applied_prefix(patient_key);
    key.extend_from_slice(&event_id.to_bytes());
    key
}

/// The event ids of an applied-ids chunk: the one at the end of its `key`,
/// then those of its `value`.
pub(crate) fn event_ids_of(key: &[u8], value: &[u8]) -> Result<Vec<baton_care::EventId>, String> {
    if !value.len().is_multiple_of(16) {
        return Err(format!(
            "the value is {} bytes: expected event ids of 16 bytes each",
            value.len()
        ));
    }
    let mut ids = Vec::with_capacity(1 + value.len() / 16);
    ids.push(event_id_of(key)?);
    for chunk in value.chunks_exact(16) {
        let bytes: [u8; 16] = chunk.try_into().expect("chunks of 16");
        ids.push(baton_care::EventId::from_bytes(bytes));
    }
    Ok(ids)
}

/// The key and value of the chunk holding `event_ids` (not empty) of
/// `patient_key`.
pub(crate) fn applied_chunk(
    patient_key: &str,
    event_ids: &[baton_care::EventId],
) -> (Vec<u8>, Vec<u8>) {
    let (first, rest) = event_ids.split_first().expect("a chunk holds an id");
    let mut value = Vec::with_capacity(rest.len() * 16);
    for id in rest {
        value.extend_from_slice(&id.to_bytes());
    }
    (applied_key(patient_key, *first), value)
}

/// The event id at the end of an applied-event key.
pub(crate) fn event_id_of(key: &[u8]) -> Result<baton_care::EventId, String> {
    let bytes: [u8; 16] = key
        .len()
        .checked_sub(16)
        .and_then(|start| key[start..].try_into().ok())
        .ok_or_else(|| format!("{} bytes: too short for an event id", key.len()))?;
    Ok(baton_care::EventId::from_bytes(bytes))
}

pub(crate) fn state_generation_key(patient_key: &str) -> Vec<u8> {
    prefixed(STATE_GENERATION_PREFIX, patient_key)
}

pub(crate) fn entries_key(patient_key: &str) -> Vec<u8> {
    prefixed(ENTRIES_PREFIX, patient_key)
}

pub(crate) fn index_key(entry: &str) -> Vec<u8> {
    prefixed(INDEX_PREFIX, entry)
}

/// The prefix of every position key of `topic`.
pub(crate) fn positions_prefix(topic: &str) -> Vec<u8> {
    let mut key = prefixed(POSITION_PREFIX, topic);
    key.push(TOPIC_END);
    key
}

pub(crate) fn position_key(topic: &str, partition: u32) -> Vec<u8> {
    let mut key = positions_prefix(topic);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

/// The prefix of every timeline key of `patient_key`. Patient keys never
/// hold the separator, so one patient's prefix never lists another's.
pub(crate) fn timeline_prefix(patient_key: &str) -> Vec<u8> {
    let mut key = prefixed(TIMELINE_PREFIX, patient_key);
    key.push(TOPIC_END);
    key
}

/// A timeline key: the patient's prefix, then the clinical time (seconds
/// with the sign bit flipped, so they sort as unsigned bytes, then nanos),
/// then the log position, all big-endian.
pub(crate) fn timeline_key(
    patient_key: &str,
    seconds: i64,
    nanos: i32,
    partition: u32,
    offset: u64,
) -> Vec<u8> {
    let mut key = timeline_time_bound(patient_key, seconds, nanos);
    key.extend_from_slice(&partition.to_be_bytes());
    key.extend_from_slice(&offset.to_be_bytes());
    key
}

/// The first possible timeline key of `patient_key` at a clinical time.
pub(crate) fn timeline_time_bound(patient_key: &str, seconds: i64, nanos: i32) -> Vec<u8> {
    let mut key = timeline_prefix(patient_key);
    key.extend_from_slice(&((seconds as u64) ^ (1 << 63)).to_be_bytes());
    key.extend_from_slice(&(nanos.max(0) as u32).to_be_bytes());
    key
}

/// The clinical time and log position at the end of a timeline key.
pub(crate) fn decode_timeline_suffix(suffix: &[u8]) -> Result<(i64, i32, u32, u64), String> {
    let bytes: [u8; 24] = suffix.try_into().map_err(|_| {
        format!(
            "timeline key ends with {} bytes; expected 24 (time, nanos, partition, offset)",
            suffix.len()
        )
    })?;
    let (seconds, rest) = bytes.split_at(8);
    let (nanos, rest) = rest.split_at(4);
    let (partition, offset) = rest.split_at(4);
    let seconds = u64::from_be_bytes(seconds.try_into().expect("8 bytes")) ^ (1 << 63);
    Ok((
        seconds as i64,
        u32::from_be_bytes(nanos.try_into().expect("4 bytes")) as i32,
        u32::from_be_bytes(partition.try_into().expect("4 bytes")),
        u64::from_be_bytes(offset.try_into().expect("8 bytes")),
    ))
}

fn prefixed(prefix: &str, text: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + text.len());
    key.extend_from_slice(prefix.as_bytes());
    key.extend_from_slice(text.as_bytes());
    key
}

/// The partition of a position key found under `positions_prefix(topic)`.
pub(crate) fn partition_of(key: &[u8], prefix_len: usize) -> Result<u32, String> {
    let bytes = &key[prefix_len..];
    let bytes: [u8; 4] = bytes.try_into().map_err(|_| {
        format!(
            "position key ends with {} bytes; expected a 4-byte partition",
            bytes.len()
        )
    })?;
    Ok(u32::from_be_bytes(bytes))
}

pub(crate) fn decode_u64(value: &[u8]) -> Result<u64, String> {
    let bytes: [u8; 8] = value.try_into().map_err(|_| {
        format!(
            "value has {} bytes; expected a u64 in 8 big-endian bytes",
            value.len()
        )
    })?;
    Ok(u64::from_be_bytes(bytes))
}

pub(crate) fn decode_u32(value: &[u8]) -> Result<u32, String> {
    let bytes: [u8; 4] = value.try_into().map_err(|_| {
        format!(
            "value has {} bytes; expected a u32 in 4 big-endian bytes",
            value.len()
        )
    })?;
    Ok(u32::from_be_bytes(bytes))
}

pub(crate) fn digest_key(partition: u32) -> Vec<u8> {
    let mut key = DIGEST_PREFIX.as_bytes().to_vec();
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

/// What the store remembers of a state beside it, to keep the digests
/// without reading the state back: its hash, the partition whose digest
/// holds it, and the offset of its last applied event (so a comparison
/// made at a log position can tell a state changed since).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Summary {
    pub(crate) hash: u128,
    pub(crate) partition: u32,
    pub(crate) offset: u64,
}

const SUMMARY_LEN: usize = 16 + 4 + 8;

/// The hash of one state in the digest: xxh3-128 of the patient key (length
/// first) and the encoded state. Stable across builds and platforms.
pub fn state_hash(patient_key: &str, encoded: &[u8]) -> u128 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&(patient_key.len() as u64).to_be_bytes());
    hasher.update(patient_key.as_bytes());
    hasher.update(encoded);
    hasher.digest128()
}

/// An `e/` value: the summary, then the entries as [`encode_entries`].
pub(crate) fn encode_summary(summary: &Summary, entries: &[String]) -> Vec<u8> {
    let mut value =
        Vec::with_capacity(SUMMARY_LEN + entries.iter().map(|e| 4 + e.len()).sum::<usize>());
    value.extend_from_slice(&summary.hash.to_be_bytes());
    value.extend_from_slice(&summary.partition.to_be_bytes());
    value.extend_from_slice(&summary.offset.to_be_bytes());
    value.extend_from_slice(&encode_entries(entries));
    value
}

pub(crate) fn decode_summary(value: &[u8]) -> Result<(Summary, Vec<String>), String> {
    if value.len() < SUMMARY_LEN {
        return Err(format!(
            "value has {} bytes; expected a {SUMMARY_LEN}-byte state summary before the index entries",
            value.len()
        ));
    }
    let (summary, entries) = value.split_at(SUMMARY_LEN);
    let summary = Summary {
        hash: u128::from_be_bytes(summary[..16].try_into().expect("16 bytes")),
        partition: u32::from_be_bytes(summary[16..20].try_into().expect("4 bytes")),
        offset: u64::from_be_bytes(summary[20..].try_into().expect("8 bytes")),
    };
    Ok((summary, decode_entries(entries)?))
}

/// The digest of one partition's states: see [`DIGEST_PREFIX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionDigest {
    /// Wrapping sum of the hashes of the states: the same set of states
    /// gives the same sum in whatever order they were written.
    pub sum: u128,
    /// How many states the sum holds.
    pub states: u64,
}

impl PartitionDigest {
    /// Adds a state's hash.
    pub fn add(&mut self, hash: u128) {
        self.sum = self.sum.wrapping_add(hash);
        self.states += 1;
    }

    /// Takes a state's hash out.
    pub fn remove(&mut self, hash: u128) {
        self.sum = self.sum.wrapping_sub(hash);
        self.states = self.states.saturating_sub(1);
    }

    /// The sum, then the count, big-endian: 24 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut value = Vec::with_capacity(24);
        value.extend_from_slice(&self.sum.to_be_bytes());
        value.extend_from_slice(&self.states.to_be_bytes());
        value
    }

    /// Reads what [`PartitionDigest::encode`] wrote.
    pub fn decode(value: &[u8]) -> Result<Self, String> {
        let bytes: [u8; 24] = value.try_into().map_err(|_| {
            format!(
                "value has {} bytes; expected a 16-byte sum and an 8-byte count",
                value.len()
            )
        })?;
        Ok(Self {
            sum: u128::from_be_bytes(bytes[..16].try_into().expect("16 bytes")),
            states: u64::from_be_bytes(bytes[16..].try_into().expect("8 bytes")),
        })
    }

    /// The sum as 32 hex digits.
    pub fn hex(&self) -> String {
        format!("{:032x}", self.sum)
    }
}

/// Each entry as its length (u32 big-endian) then its UTF-8 bytes; no
/// entries is an empty value.
pub(crate) fn encode_entries(entries: &[String]) -> Vec<u8> {
    let size = entries.iter().map(|e| 4 + e.len()).sum();
    let mut value = Vec::with_capacity(size);
    for entry in entries {
        let len = u32::try_from(entry.len()).expect("an index entry is shorter than 4 GiB");
        value.extend_from_slice(&len.to_be_bytes());
        value.extend_from_slice(entry.as_bytes());
    }
    value
}

pub(crate) fn decode_entries(mut value: &[u8]) -> Result<Vec<String>, String> {
    let mut entries = Vec::new();
    while !value.is_empty() {
        let Some((len, rest)) = value.split_first_chunk::<4>() else {
            return Err(format!(
                "entry {} has a {}-byte length; expected 4 bytes",
                entries.len(),
                value.len()
            ));
        };
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return Err(format!(
                "entry {} claims {len} bytes but only {} remain",
                entries.len(),
                rest.len()
            ));
        }
        let (entry, rest) = rest.split_at(len);
        let entry = String::from_utf8(entry.to_vec())
            .map_err(|e| format!("entry {} is not UTF-8: {e}", entries.len()))?;
        entries.push(entry);
        value = rest;
    }
    Ok(entries)
}

/// A store key as text for error messages: the prefix and name as they are,
/// other bytes (a position key's partition) escaped.
pub(crate) fn describe_key(key: &[u8]) -> String {
    let mut text = String::with_capacity(key.len());
    for chunk in key.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                write!(text, "{}", c.escape_default()).expect("writing to a String");
            } else {
                text.push(c);
            }
        }
        for byte in chunk.invalid() {
            write!(text, "\\x{byte:02x}").expect("writing to a String");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        for entries in [
            vec![],
            vec![String::new()],
            vec!["s\u{1f}HOSPITAL\u{1f}9434765919".to_owned(), "é".to_owned()],
        ] {
            assert_eq!(decode_entries(&encode_entries(&entries)).unwrap(), entries);
        }
    }

    #[test]
    fn summaries_round_trip_and_refuse_short_values() {
        let summary = Summary {
            hash: 0x0123_4567_89ab_cdef_0011_2233_4455_6677,
            partition: 7,
            offset: 12_345,
        };
        let entries = vec!["w\u{1f}9434765919".to_owned()];
        assert_eq!(
            decode_summary(&encode_summary(&summary, &entries)).unwrap(),
            (summary, entries)
        );
        assert_eq!(
            decode_summary(&encode_summary(&summary, &[])).unwrap(),
            (summary, vec![])
        );
        assert!(decode_summary(&[0; 10]).unwrap_err().contains("28-byte"));
    }

    #[test]
    fn digests_do_not_depend_on_order_and_undo_exactly() {
        let hashes = [
            state_hash("a", b"1"),
            state_hash("b", b"2"),
            state_hash("c", b"3"),
        ];
        let mut forward = PartitionDigest::default();
        hashes.iter().for_each(|&h| forward.add(h));
        let mut backward = PartitionDigest::default();
        hashes.iter().rev().for_each(|&h| backward.add(h));
        assert_eq!(forward, backward);
        assert_eq!(PartitionDigest::decode(&forward.encode()).unwrap(), forward);
        backward.remove(hashes[1]);
        let mut two = PartitionDigest::default();
        two.add(hashes[0]);
        two.add(hashes[2]);
        assert_eq!(backward, two);
        assert_ne!(state_hash("ab", b"c"), state_hash("a", b"bc"));
    }

    #[test]
    fn truncated_entries_are_refused() {
        let value = encode_entries(&["abc".to_owned()]);
        let error = decode_entries(&value[..5]).unwrap_err();
        assert!(error.contains("claims 3 bytes"), "{error}");
        let error = decode_entries(&value[..2]).unwrap_err();
        assert!(error.contains("expected 4 bytes"), "{error}");
    }

    #[test]
    fn position_keys_sort_by_partition_and_name_it() {
        let prefix = positions_prefix("baton.care-events.v1");
        let low = position_key("baton.care-events.v1", 2);
        let high = position_key("baton.care-events.v1", 256);
        assert!(low.starts_with(&prefix) && high.starts_with(&prefix));
        assert!(low < high);
        assert_eq!(partition_of(&high, prefix.len()).unwrap(), 256);
        assert!(partition_of(&prefix, prefix.len()).is_err());
        assert_eq!(
            describe_key(&low),
            "p/baton.care-events.v1\\u{1f}\\u{0}\\u{0}\\u{0}\\u{2}"
        );
    }

    #[test]
    fn timeline_keys_sort_by_clinical_time_then_position_and_round_trip() {
        let keys = [
            timeline_key("9434765919", -5, 0, 9, 9),
            timeline_key("9434765919", 0, 0, 0, 3),
            timeline_key("9434765919", 0, 1, 0, 1),
            timeline_key("9434765919", 1_700_000_000, 0, 0, 0),
            timeline_key("9434765919", 1_700_000_000, 0, 1, 0),
        ];
        assert!(keys.windows(2).all(|pair| pair[0] < pair[1]));
        let prefix = timeline_prefix("9434765919");
        assert_eq!(
            decode_timeline_suffix(&keys[0][prefix.len()..]).unwrap(),
            (-5, 0, 9, 9)
        );
        assert!(!timeline_key("94347659190", 0, 0, 0, 0).starts_with(&prefix));
        assert!(decode_timeline_suffix(&keys[0][prefix.len() + 1..]).is_err());
    }

    #[test]
    fn one_topic_does_not_list_another_topics_positions() {
        let short = positions_prefix("events");
        assert!(!position_key("events-2", 0).starts_with(&short));
    }
}
