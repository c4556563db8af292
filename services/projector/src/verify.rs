//! Verification: folding the log again, in memory and never touching a
//! live store, and comparing digests with the projector's store and with
//! query replicas.
//!
//! A store states its digests together with the positions they are at
//! ([`Store::digest_at`]). Each partition is independent: a patient's
//! state depends only on the events of their own partition (a merge
//! reaches the survivor's partition as a hand-over record carrying the
//! retired state), so the fold takes one partition at a time, from offset
//! 0, and sums the hashes of its states when it reaches each position a
//! store stated. Equal sums mean equal states.
//!
//! When a partition disagrees, the fold's per-patient hashes are compared
//! with the store's, leaving out the store's states changed since the
//! stated position (their last applied offset is at or beyond it: the
//! store has moved on while the fold ran), and the first disagreeing
//! patient's two states are compared field by field.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_care::{AppliedIds, EventId};
use baton_log::EventLog;
use baton_log::topics::Topics;
use baton_proto::admin::v1::operations_client::OperationsClient;
use baton_proto::admin::v1::{
    GetDigestRequest, GetStoredStateRequest, ListStateHashesRequest, PartitionCheck, StoreCheck,
    VerifyProgress, VerifyReport,
};
use baton_proto::state::v1::PatientCareState;
use baton_store::{PartitionDigest, StateHash, Store, StoreError, state_hash};
use prost::Message;
use tonic::transport::Channel;

use crate::batch::{StateSource, fold_batch};
use crate::{ProjectorError, Result};

/// Patients named per disagreeing store when the request names no number.
pub const DEFAULT_MAX_DIFFERENCES: usize = 10;
/// Lines of field-by-field difference shown for one patient.
const MAX_DIFF_LINES: usize = 40;
const FOLD_BATCH: usize = 10_000;

/// A store to check: its stated digests and how to ask it for more.
#[derive(Debug)]
pub struct Target {
    pub name: String,
    pub generation: u64,
    /// Per partition, the position and the digest stated.
    pub stated: BTreeMap<u32, (u64, PartitionDigest)>,
    source: Source,
}

#[derive(Debug)]
enum Source {
    Local(Store),
    Replica(OperationsClient<Channel>),
}

impl Target {
    /// The projector's own store, as it is now.
    pub fn local(name: impl Into<String>, store: &Store, events_topic: &str) -> Result<Self> {
        let digest = store.digest_at(events_topic)?;
        let mut stated = BTreeMap::new();
        for (&partition, &position) in &digest.positions {
            let digest = digest
                .partitions
                .get(&partition)
                .copied()
                .unwrap_or_default();
            stated.insert(partition, (position, digest));
        }
        for (&partition, &digest) in &digest.partitions {
            stated.entry(partition).or_insert((0, digest));
        }
        Ok(Self {
            name: name.into(),
            generation: digest.generation,
            stated,
            source: Source::Local(store.clone()),
        })
    }

    /// A query replica's store, through its admin API at `address`
    /// (`HOST:PORT`).
    pub async fn replica(address: &str) -> std::result::Result<Self, String> {
        let uri = if address.contains("://") {
            address.to_owned()
        } else {
            format!("http://{address}")
        };
        let mut client = OperationsClient::connect(uri).await.map_err(|error| {
            format!("cannot reach the replica's admin API at {address}: {error}")
        })?;
        let digest = client
            .get_digest(GetDigestRequest {})
            .await
            .map_err(|status| {
                format!(
                    "the replica at {address} did not give its digest: {}",
                    status.message()
                )
            })?
            .into_inner();
        let mut stated = BTreeMap::new();
        for partition in digest.partitions {
            stated.insert(
                partition.partition,
                (
                    partition.position,
                    PartitionDigest {
                        sum: digest_from_bytes(&partition.digest)?,
                        states: partition.states,
                    },
                ),
            );
        }
        Ok(Self {
            name: format!("replica {address}"),
            generation: digest.generation,
            stated,
            source: Source::Replica(client),
        })
    }

    async fn hashes(&mut self, partition: u32) -> std::result::Result<Vec<StateHash>, String> {
        match &mut self.source {
            Source::Local(store) => {
                let store = store.clone();
                tokio::task::spawn_blocking(move || store.state_hashes(partition))
                    .await
                    .map_err(|error| error.to_string())?
                    .map_err(|error| error.to_string())
            }
            Source::Replica(client) => {
                let mut stream = client
                    .list_state_hashes(ListStateHashesRequest { partition })
                    .await
                    .map_err(|status| status.message().to_owned())?
                    .into_inner();
                let mut hashes = Vec::new();
                while let Some(hash) = stream.message().await.map_err(|s| s.message().to_owned())? {
                    hashes.push(StateHash {
                        patient_key: hash.patient_key,
                        hash: digest_from_bytes(&hash.hash)?,
                        partition,
                        offset: hash.offset,
                    });
                }
                Ok(hashes)
            }
        }
    }

    async fn state(
        &mut self,
        patient_key: &str,
    ) -> std::result::Result<Option<PatientCareState>, String> {
        match &mut self.source {
            Source::Local(store) => store.get(patient_key).map_err(|error| error.to_string()),
            Source::Replica(client) => match client
                .get_stored_state(GetStoredStateRequest {
                    patient_key: patient_key.to_owned(),
                })
                .await
            {
                Ok(response) => Ok(response.into_inner().state),
                Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
                Err(status) => Err(status.message().to_owned()),
            },
        }
    }
}

fn digest_from_bytes(bytes: &[u8]) -> std::result::Result<u128, String> {
    let bytes: [u8; 16] = bytes
        .try_into()
        .map_err(|_| format!("a digest of {} bytes; expected 16", bytes.len()))?;
    Ok(u128::from_be_bytes(bytes))
}

/// Folds the log again up to every position `targets` stated, and says
/// which agree. `progress` is told how far the fold has got now and then.
pub async fn verify(
    log: Arc<dyn EventLog>,
    topics: &Topics,
    mut targets: Vec<Target>,
    max_differences: usize,
    progress: impl Fn(VerifyProgress) + Send,
) -> Result<VerifyReport> {
    let started = Instant::now();
    let partitions = log.partition_count(&topics.events).await?;
    // Per partition, every position some store stated.
    let mut checkpoints: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    for partition in 0..partitions {
        let at = checkpoints.entry(partition).or_default();
        for target in &targets {
            at.insert(
                target
                    .stated
                    .get(&partition)
                    .map_or(0, |(position, _)| *position),
            );
        }
    }
    let total: u64 = checkpoints
        .values()
        .map(|at| at.last().copied().unwrap_or(0))
        .sum();
    let mut checks: Vec<StoreCheck> = targets
        .iter()
        .map(|target| StoreCheck {
            name: target.name.clone(),
            generation: target.generation,
            equal: true,
            ..StoreCheck::default()
        })
        .collect();
    let mut folded = 0u64;
    let mut last_report = Instant::now();
    for (&partition, at) in &checkpoints {
        let mut fold = PartitionFold::new(&*log, &topics.events, partition).await?;
        for &position in at {
            folded += fold
                .advance_to(position, |done| {
                    if last_report.elapsed() > Duration::from_millis(250) {
                        last_report = Instant::now();
                        progress(VerifyProgress {
                            records_done: folded + done,
                            records_total: total,
                            records_per_second: (folded + done) as f64
                                / started.elapsed().as_secs_f64().max(1e-3),
                        });
                    }
                })
                .await?;
            let fresh = fold.hashes();
            let expected = fresh
                .values()
                .fold(PartitionDigest::default(), |mut digest, &hash| {
                    digest.add(hash);
                    digest
                });
            for (target, check) in targets.iter_mut().zip(&mut checks) {
                let (stated_position, stated) =
                    target.stated.get(&partition).copied().unwrap_or_default();
                if stated_position != position {
                    continue;
                }
                let equal = stated == expected;
                check.partitions.push(PartitionCheck {
                    partition,
                    position,
                    states: stated.states,
                    digest: stated.sum.to_be_bytes().to_vec(),
                    expected_states: expected.states,
                    expected_digest: expected.sum.to_be_bytes().to_vec(),
                    equal,
                });
                if !equal {
                    check.equal = false;
                    explain(
                        target,
                        check,
                        &fold.states,
                        &fresh,
                        partition,
                        position,
                        max_differences,
                    )
                    .await;
                }
            }
        }
    }
    // A store may state a digest for a partition the topic does not have
    // (states that name no applied position).
    for (target, check) in targets.iter().zip(&mut checks) {
        for (&partition, &(position, stated)) in &target.stated {
            if partition < partitions || stated.states == 0 {
                continue;
            }
            check.equal = false;
            check.partitions.push(PartitionCheck {
                partition,
                position,
                states: stated.states,
                digest: stated.sum.to_be_bytes().to_vec(),
                equal: false,
                ..PartitionCheck::default()
            });
        }
    }
    Ok(VerifyReport {
        equal: checks.iter().all(|check| check.equal),
        stores: checks,
        records_folded: folded,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Names the patients of `partition` on which `target` and the fold
/// disagree, and how the first one differs.
async fn explain(
    target: &mut Target,
    check: &mut StoreCheck,
    folded: &HashMap<String, Arc<PatientCareState>>,
    fresh: &BTreeMap<String, u128>,
    partition: u32,
    position: u64,
    max_differences: usize,
) {
    let stored = match target.hashes(partition).await {
        Ok(stored) => stored,
        Err(error) => {
            check.error = format!("cannot list its states of partition {partition}: {error}");
            return;
        }
    };
    let mut differing = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for hash in &stored {
        seen.insert(hash.patient_key.as_str());
        if hash.offset >= position {
            continue; // changed since the stated position
        }
        if fresh.get(&hash.patient_key) != Some(&hash.hash) {
            differing.insert(hash.patient_key.clone());
        }
    }
    for key in fresh.keys() {
        if !seen.contains(key.as_str()) {
            differing.insert(key.clone());
        }
    }
    for key in &differing {
        if check.differing_patients.len() >= max_differences {
            break;
        }
        if !check.differing_patients.contains(key) {
            check.differing_patients.push(key.clone());
        }
    }
    if !check.diff.is_empty() {
        return;
    }
    let Some(first) = differing.first() else {
        return;
    };
    let stored = match target.state(first).await {
        Ok(state) => state,
        Err(error) => {
            check.error = format!("cannot read the state of {first}: {error}");
            return;
        }
    };
    let folded = fresh
        .contains_key(first)
        .then(|| folded.get(first).map(|state| &**state))
        .flatten();
    check.diff = field_diff(stored.as_ref(), folded);
    check.diff.insert(
        0,
        format!("{first} (partition {partition}, at offset {position}): store ≠ fold"),
    );
}

/// The fold of one partition, in memory.
struct PartitionFold<'a> {
    log: &'a dyn EventLog,
    topic: &'a str,
    partition: u32,
    reader: Box<dyn baton_log::LogReader>,
    /// Records read beyond the position reached so far.
    pending: Vec<baton_log::Record>,
    next: u64,
    states: HashMap<String, Arc<PatientCareState>>,
    /// The patients some event changed: `states` also holds the empty
    /// state of a patient whose only events were refused, which a store
    /// never commits.
    changed: std::collections::HashSet<String>,
    /// Every event applied so far: the fold starts from nothing, so it
    /// finds duplicates here, not in a store.
    applied: AppliedIds,
}

struct NothingStored;

impl StateSource for NothingStored {
    fn load(&mut self, _: &str) -> std::result::Result<Option<PatientCareState>, StoreError> {
        Ok(None)
    }

    fn applied_ids(&mut self, _: &str) -> std::result::Result<Vec<EventId>, StoreError> {
        Ok(Vec::new())
    }
}

impl<'a> PartitionFold<'a> {
    async fn new(log: &'a dyn EventLog, topic: &'a str, partition: u32) -> Result<Self> {
        let reader = log.reader(topic, BTreeMap::from([(partition, 0)])).await?;
        Ok(Self {
            log,
            topic,
            partition,
            reader,
            pending: Vec::new(),
            next: 0,
            states: HashMap::new(),
            changed: std::collections::HashSet::new(),
            applied: AppliedIds::new(),
        })
    }

    /// Folds every record below `position`; returns how many.
    async fn advance_to(&mut self, position: u64, mut progress: impl FnMut(u64)) -> Result<u64> {
        let mut folded = 0u64;
        while self.next < position {
            if self.pending.is_empty() {
                self.pending = self
                    .reader
                    .next_batch(FOLD_BATCH, Duration::from_millis(200))
                    .await?;
                if self.pending.is_empty() {
                    let end = self.log.end_offsets(self.topic).await?;
                    if end.get(self.partition as usize).copied().unwrap_or(0) < position {
                        return Err(ProjectorError::Replay(format!(
                            "partition {} of {} ends before offset {position}, which a store says it applied",
                            self.partition, self.topic
                        )));
                    }
                    continue;
                }
            }
            let take = self
                .pending
                .iter()
                .take_while(|record| record.offset < position)
                .count();
            let batch: Vec<_> = self.pending.drain(..take).collect();
            if batch.is_empty() {
                // The next record is at or past the position.
                self.next = position;
                break;
            }
            self.next = batch.last().map_or(self.next, |record| record.offset + 1);
            let mut states = std::mem::take(&mut self.states);
            let mut applied = std::mem::take(&mut self.applied);
            let (outcome, states, applied) = tokio::task::spawn_blocking(move || {
                let outcome = fold_batch(&batch, &mut states, &mut applied, &mut NothingStored)
                    .map(|outcome| {
                        let changed = outcome.states.into_keys().collect::<Vec<_>>();
                        (changed, batch.len())
                    });
                (outcome, states, applied)
            })
            .await?;
            self.states = states;
            self.applied = applied;
            let (changed, count) = outcome?;
            self.changed.extend(changed);
            folded += count as u64;
            progress(folded);
        }
        Ok(folded)
    }

    /// Every state folded so far, by patient key, as the hash the store
    /// would keep.
    fn hashes(&self) -> BTreeMap<String, u128> {
        self.changed
            .iter()
            .filter_map(|key| {
                let state = self.states.get(key)?;
                Some((key.clone(), state_hash(key, &state.encode_to_vec())))
            })
            .collect()
    }
}

/// How two states differ, field by field, as `path: store ≠ fold` lines
/// in the protobuf JSON mapping; at most [`MAX_DIFF_LINES`].
pub fn field_diff(
    stored: Option<&PatientCareState>,
    folded: Option<&PatientCareState>,
) -> Vec<String> {
    let json = |state: Option<&PatientCareState>| {
        state.map_or(serde_json::Value::Null, |state| {
            baton_proto::json::to_json_value(state).unwrap_or(serde_json::Value::Null)
        })
    };
    let mut lines = Vec::new();
    diff_values("", &json(stored), &json(folded), &mut lines);
    if lines.len() > MAX_DIFF_LINES {
        let more = lines.len() - MAX_DIFF_LINES;
        lines.truncate(MAX_DIFF_LINES);
        lines.push(format!("… and {more} more"));
    }
    lines
}

fn diff_values(
    path: &str,
    stored: &serde_json::Value,
    folded: &serde_json::Value,
    lines: &mut Vec<String>,
) {
    use serde_json::Value;
    match (stored, folded) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                diff_values(
                    &child,
                    a.get(key).unwrap_or(&Value::Null),
                    b.get(key).unwrap_or(&Value::Null),
                    lines,
                );
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for index in 0..a.len().max(b.len()) {
                diff_values(
                    &format!("{path}[{index}]"),
                    a.get(index).unwrap_or(&Value::Null),
                    b.get(index).unwrap_or(&Value::Null),
                    lines,
                );
            }
        }
        (a, b) if a == b => {}
        (a, b) => lines.push(format!(
            "{}: {} ≠ {}",
            if path.is_empty() { "(state)" } else { path },
            short(a),
            short(b)
        )),
    }
}

fn short(value: &serde_json::Value) -> String {
    let text = match value {
        serde_json::Value::Null => "(absent)".to_owned(),
        other => other.to_string(),
    };
    if text.chars().count() > 80 {
        format!("{}…", text.chars().take(80).collect::<String>())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_diff_names_each_path_that_differs() {
        let a = PatientCareState {
            patient_key: "9434765919".into(),
            version: 3,
            ..PatientCareState::default()
        };
        let b = PatientCareState {
            version: 4,
            ..a.clone()
        };
        assert_eq!(
            field_diff(Some(&a), Some(&b)),
            vec!["version: \"3\" ≠ \"4\"".to_owned()]
        );
        assert!(field_diff(Some(&a), Some(&a)).is_empty());
        let missing = field_diff(None, Some(&a));
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(
            missing[0].starts_with("(state): (absent) ≠ {"),
            "{missing:?}"
        );
    }
}
