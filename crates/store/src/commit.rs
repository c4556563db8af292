//! What one projector batch writes: see [`Commit`].

use std::collections::BTreeMap;
use std::sync::Arc;

use baton_proto::state::v1::PatientCareState;

/// One event on a patient's timeline: the log record's value, filed under
/// the patient and the event's clinical time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineRecord {
    pub patient_key: String,
    /// The event's `occurred_at`, as seconds and nanos.
    pub occurred_seconds: i64,
    pub occurred_nanos: i32,
    pub partition: u32,
    pub offset: u64,
    /// The encoded `baton.events.v1.CareEvent`.
    pub event: Vec<u8>,
}

/// Everything one projector batch changed, written by
/// [`Store::commit`](crate::Store::commit) in one atomic sled batch: the new
/// states and the log positions up to which they include every event.
///
/// ```
/// use baton_proto::state::v1::PatientCareState;
/// use baton_store::Commit;
///
/// let state = PatientCareState { patient_key: "9434765919".into(), ..Default::default() };
/// let commit = Commit::new("baton.care-events.v1").with_state(state).with_position(3, 121);
/// assert_eq!(commit.positions[&3], 121);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Commit {
    /// The log topic the positions are in.
    pub topic: String,
    /// New states, each replacing the stored state of its `patient_key`.
    /// When a key appears more than once, the last one wins.
    /// Shared, so a caller that keeps its states in memory (the projector's
    /// cache) hands them over without copying them.
    pub states: Vec<Arc<PatientCareState>>,
    /// Per partition, the next offset to read: the batch includes every
    /// record below it. An offset below the stored one is ignored, so
    /// positions never move backwards.
    pub positions: BTreeMap<u32, u64>,
    /// Positions in other topics that the states include, per topic: a
    /// query replica materialising `baton.care-state.v1` records here how
    /// far the projector had folded `baton.care-events.v1`, so consistency
    /// tokens work against it too. Like `positions`, never moves backwards.
    pub upstream: BTreeMap<String, BTreeMap<u32, u64>>,
    /// Whether the committer will publish this commit's states after it
    /// (the projector's changelog). The store then remembers the commit's
    /// patient keys (and `earlier_unpublished`) until the next commit
    /// replaces them, so a committer
    /// that crashed between commit and publication can publish them again
    /// on restart ([`Store::unpublished`](crate::Store::unpublished)).
    pub publish: bool,
    /// With `publish`: the patient keys of earlier commits whose
    /// publication is still under way (a committer that publishes one batch
    /// while it commits the next). They are remembered with this commit's
    /// own, since a crash now may cut their publication short too.
    pub earlier_unpublished: Vec<String>,
    /// Events to file on their patients' timelines (the query service's
    /// timeline indexer); a record already filed is written again,
    /// unchanged.
    pub timeline: Vec<TimelineRecord>,
    /// On a query replica: the projector's store generation each state of
    /// the commit was published from, when above 0 (see
    /// [`Store::state_generation`](crate::Store::state_generation)). A
    /// replay may restart versions, so a replica orders a patient's states
    /// by (generation, version).
    pub state_generations: BTreeMap<String, u64>,
    /// Events applied to states by this commit, as (patient key, event
    /// id): kept beside the states so a duplicate stays a no-op however
    /// late it comes ([`Store::is_applied`](crate::Store::is_applied)).
    pub applied: Vec<(String, baton_care::EventId)>,
    /// Each of `states` protobuf-encoded, made once on first use and
    /// shared by the store's write and the changelog's records.
    encoded: EncodedOnce,
}

/// The encodings of a commit's states, made at most once. Derived from
/// `states`, so two commits with equal states are equal whether or not
/// either has been encoded yet.
#[derive(Debug, Clone, Default)]
struct EncodedOnce(std::sync::OnceLock<Vec<Vec<u8>>>);

impl PartialEq for EncodedOnce {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Commit {
    /// Each of `states` encoded (`PatientCareState`), in the same order:
    /// encoded on the first call, the same bytes after. Change `states`
    /// before the first call, never after.
    pub fn encoded_states(&self) -> &[Vec<u8>] {
        use prost::Message;
        let encoded = self.encoded.0.get_or_init(|| {
            self.states
                .iter()
                .map(|state| state.encode_to_vec())
                .collect()
        });
        debug_assert_eq!(
            encoded.len(),
            self.states.len(),
            "states changed after encoding"
        );
        encoded
    }

    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            ..Self::default()
        }
    }

    pub fn with_state(mut self, state: impl Into<Arc<PatientCareState>>) -> Self {
        self.states.push(state.into());
        self
    }

    pub fn with_states<S: Into<Arc<PatientCareState>>>(
        mut self,
        states: impl IntoIterator<Item = S>,
    ) -> Self {
        self.states.extend(states.into_iter().map(Into::into));
        self
    }

    /// Records that the batch includes every record of `partition` below
    /// `next_offset`.
    pub fn with_position(mut self, partition: u32, next_offset: u64) -> Self {
        self.positions.insert(partition, next_offset);
        self
    }

    /// Records that the states include every record of `partition` of
    /// the other topic `topic` below `next_offset`.
    pub fn with_upstream(mut self, topic: &str, partition: u32, next_offset: u64) -> Self {
        self.upstream
            .entry(topic.to_owned())
            .or_default()
            .insert(partition, next_offset);
        self
    }

    /// Marks the commit's states as about to be published; see
    /// [`Commit::publish`].
    pub fn to_publish(mut self) -> Self {
        self.publish = true;
        self
    }

    /// Files `record` on its patient's timeline.
    pub fn with_timeline(mut self, record: TimelineRecord) -> Self {
        self.timeline.push(record);
        self
    }

    /// Records that `event_id` was applied to the state of `patient_key`.
    pub fn with_applied(mut self, patient_key: &str, event_id: baton_care::EventId) -> Self {
        self.applied.push((patient_key.to_owned(), event_id));
        self
    }

    /// Neither states, applied ids, timeline records nor positions: committing it
    /// changes nothing.
    /// Keeps only what belongs to the partitions `keep` says yes to (a
    /// state's partition is `partition_of` its patient key), and says how
    /// many states it dropped: a projector of a group does not commit for
    /// a partition it no longer owns.
    pub fn retain_partitions(
        &mut self,
        keep: impl Fn(u32) -> bool,
        partition_of: impl Fn(&str) -> u32,
    ) -> usize {
        let before = self.states.len();
        self.states
            .retain(|state| keep(partition_of(&state.patient_key)));
        self.applied.retain(|(key, _)| keep(partition_of(key)));
        self.state_generations
            .retain(|key, _| keep(partition_of(key)));
        self.timeline.retain(|record| keep(record.partition));
        self.positions.retain(|&partition, _| keep(partition));
        let dropped = before - self.states.len();
        if dropped > 0 {
            self.encoded = EncodedOnce::default();
        }
        dropped
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
            && self.applied.is_empty()
            && self.timeline.is_empty()
            && self.state_generations.is_empty()
            && self.positions.is_empty()
            && self.upstream.values().all(BTreeMap::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn states_are_encoded_once_as_prost_encodes_them() {
        let state = || PatientCareState {
            patient_key: "9434765919".into(),
            version: 2,
            ..Default::default()
        };
        let commit = Commit::new("t")
            .with_state(state())
            .with_state(PatientCareState {
                patient_key: "4010232137".into(),
                ..Default::default()
            });
        let first = commit.encoded_states();
        assert_eq!(first.len(), 2);
        assert_eq!(first[0], commit.states[0].encode_to_vec());
        assert_eq!(first[1], commit.states[1].encode_to_vec());
        // The same bytes, not a second encoding.
        assert!(std::ptr::eq(first, commit.encoded_states()));
        // Whether encoded yet or not, equal states make equal commits.
        let fresh = Commit::new("t")
            .with_state(state())
            .with_state(PatientCareState {
                patient_key: "4010232137".into(),
                ..Default::default()
            });
        assert_eq!(commit, fresh);
    }
}
