//! Folding one batch of log records into states, without IO of its own:
//! states come from a [`StateSource`], and everything to write comes back
//! as a [`BatchOutcome`] for the caller to append and commit.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use baton_care::{
    Applied, AppliedEvents, AppliedIds, Effect, EventId, LogPosition, PatientKey, ValidEvent,
    apply, new_state,
};
use baton_log::{NewRecord, Record};
use baton_proto::NamedMessage;
use baton_proto::events::v1::CareEvent;
use baton_proto::state::v1::PatientCareState;
use baton_telemetry::{TRACEPARENT_HEADER, TraceParent};
use prost::Message;

/// Header names of dead-letter records, as operators and tools see them.
pub mod dead_letter_headers {
    pub const REASON: &str = "baton-reason";
    pub const SOURCE_TOPIC: &str = "baton-source-topic";
    pub const SOURCE_PARTITION: &str = "baton-source-partition";
    pub const SOURCE_OFFSET: &str = "baton-source-offset";
    pub const EVENT_ID: &str = "event-id";
}

/// Where the fold finds a patient's state when it is not in memory yet,
/// and the events applied to it before.
pub(crate) trait StateSource {
    fn load(&mut self, key: &str) -> Result<Option<PatientCareState>, baton_store::StoreError>;
    /// Every event id applied to the state of `key`.
    fn applied_ids(&mut self, key: &str) -> Result<Vec<EventId>, baton_store::StoreError>;
}

/// The fold's [`AppliedEvents`] for one batch: `known` holds every id
/// applied to each patient whose state is in memory (read from the
/// [`StateSource`] whole when the state is, and kept up to date by every
/// batch since, so it also covers a commit still in flight); `added` is what
/// this batch applies, for its commit. A duplicate is then found without
/// asking the store per event, whose reads wait for a commit being written.
#[derive(Debug)]
struct BatchLedger<'a> {
    known: &'a mut AppliedIds,
    added: AppliedIds,
}

impl AppliedEvents for BatchLedger<'_> {
    fn contains(&self, patient_key: &str, event_id: EventId) -> bool {
        self.known.contains(patient_key, event_id)
    }

    fn insert(&mut self, patient_key: &str, event_id: EventId) {
        self.known.insert(patient_key, event_id);
        self.added.insert(patient_key, event_id);
    }

    fn of_patient(&self, patient_key: &str) -> Vec<EventId> {
        self.known.of_patient(patient_key)
    }
}

/// What a batch produced.
#[derive(Debug, Default)]
pub(crate) struct BatchOutcome {
    /// Every state the batch changed, by patient key.
    pub(crate) states: HashMap<String, Arc<PatientCareState>>,
    /// The trace each changed state continues: that of the last event
    /// that changed it, for the changelog record's `traceparent`.
    pub(crate) traces: HashMap<String, TraceParent>,
    /// Next offset to read per partition, covering every record of the batch.
    pub(crate) positions: BTreeMap<u32, u64>,
    /// Events the fold asked to append (merge hand-overs).
    pub(crate) appends: Vec<NewRecord>,
    /// Records that could not be applied, with their reason in headers.
    pub(crate) dead_letters: Vec<NewRecord>,
    /// The kind of each dead letter's reason, in the same order: a bounded
    /// label for metrics ([`Refusal::kind`]).
    pub(crate) dead_letter_kinds: Vec<&'static str>,
    /// The events the batch applied, by the patient key of the state
    /// they were applied to: committed beside the states.
    pub(crate) applied_ids: AppliedIds,
    pub(crate) applied: u64,
    pub(crate) duplicates: u64,
}

/// Folds `records` in order. A record that cannot be decoded, validated or
/// applied becomes a dead letter and the batch goes on.
///
/// `states` and `applied` are what the caller keeps in memory between
/// batches, and go together: a patient's state is in `states` exactly when
/// every id applied to it is in `applied`, so both may be ahead of the
/// source (a commit in flight). The fold reads a patient from `source` the
/// first time it meets them, and updates both in place.
pub(crate) fn fold_batch(
    records: &[Record],
    states: &mut HashMap<String, Arc<PatientCareState>>,
    applied: &mut AppliedIds,
    source: &mut impl StateSource,
) -> Result<BatchOutcome, baton_store::StoreError> {
    let mut outcome = BatchOutcome::default();
    let mut ledger = BatchLedger {
        known: applied,
        added: AppliedIds::new(),
    };
    // Cloned once at the end, not once per event: a state is far larger than an event.
    let mut changed = std::collections::HashSet::new();
    let content_type = CareEvent::content_type();
    let exporting = baton_telemetry::is_exporting();
    for record in records {
        outcome
            .positions
            .insert(record.partition, record.offset + 1);
        let parent = record
            .header(TRACEPARENT_HEADER)
            .and_then(|header| TraceParent::parse(header).ok());
        // A span per event only when someone collects them: the fold is
        // the hot path.
        let span = exporting.then(|| {
            let span = tracing::info_span!(
                "apply_event",
                partition = record.partition,
                offset = record.offset
            );
            if let Some(parent) = &parent {
                baton_telemetry::set_parent(&span, parent);
            }
            span
        });
        let entered = span.as_ref().map(tracing::Span::enter);
        let folded = fold_record(record, states, &mut ledger, source)?;
        let trace = match &span {
            Some(_) => baton_telemetry::current_traceparent(),
            None => parent.as_ref().map(TraceParent::child),
        };
        drop(entered);
        match folded {
            Ok(Folded::Changed { key, effects }) => {
                outcome.applied += 1;
                for Effect::Append { key, event } in effects {
                    let mut append = NewRecord::new(key.as_str(), event.encode_to_vec())
                        .with_header("content-type", content_type.as_bytes())
                        .with_header(dead_letter_headers::EVENT_ID, event.event_id.as_bytes());
                    if let Some(trace) = &trace {
                        append = append.with_header(TRACEPARENT_HEADER, trace.to_header_bytes());
                    }
                    outcome.appends.push(append);
                }
                match trace {
                    Some(trace) => {
                        outcome.traces.insert(key.clone(), trace);
                    }
                    None => {
                        outcome.traces.remove(&key);
                    }
                }
                changed.insert(key);
            }
            Ok(Folded::Duplicate) => outcome.duplicates += 1,
            Err(Refusal { kind, reason }) => {
                // The caller logs it: a rebuild meets letters written before.
                outcome.dead_letters.push(dead_letter(record, &reason));
                outcome.dead_letter_kinds.push(kind);
            }
        }
    }
    outcome.states = changed
        .into_iter()
        .map(|key| {
            let state = Arc::clone(states.get(&key).expect("a changed state is cached"));
            (key, state)
        })
        .collect();
    outcome.applied_ids = ledger.added;
    Ok(outcome)
}

enum Folded {
    Changed { key: String, effects: Vec<Effect> },
    Duplicate,
}

/// Why a record cannot be applied.
pub(crate) struct Refusal {
    /// A bounded category, `snake_case`, naming no patient: `content_type`,
    /// `key_not_utf8`, `invalid_key`, `undecodable`, `invalid_event`, or the
    /// fold's [`Rejection::kind`](baton_care::Rejection::kind).
    pub(crate) kind: &'static str,
    /// In words, with the values involved: the dead letter's header.
    pub(crate) reason: String,
}

impl Refusal {
    fn new(kind: &'static str, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
        }
    }
}

/// The outer `Result` is a store failure (stop, retry the batch later); the
/// inner one a bad record (dead-letter it, go on).
fn fold_record(
    record: &Record,
    states: &mut HashMap<String, Arc<PatientCareState>>,
    ledger: &mut BatchLedger<'_>,
    source: &mut impl StateSource,
) -> Result<Result<Folded, Refusal>, baton_store::StoreError> {
    if let Some(content_type) = record.header("content-type")
        && !content_type.ends_with(CareEvent::FULL_NAME.as_bytes())
    {
        return Ok(Err(Refusal::new(
            "content_type",
            format!(
                "content-type {:?} is not a {}",
                String::from_utf8_lossy(content_type),
                CareEvent::FULL_NAME
            ),
        )));
    }
    let Ok(key) = std::str::from_utf8(&record.key) else {
        return Ok(Err(Refusal::new(
            "key_not_utf8",
            "the record key is not UTF-8: expected a patient key",
        )));
    };
    let key = match PatientKey::parse(key) {
        Ok(key) => key,
        Err(problem) => {
            return Ok(Err(Refusal::new(
                "invalid_key",
                format!("the record key is not a patient key: {problem}"),
            )));
        }
    };
    let event = match CareEvent::decode(record.value.as_slice()) {
        Ok(event) => event,
        Err(error) => {
            return Ok(Err(Refusal::new(
                "undecodable",
                format!("cannot decode a {}: {error}", CareEvent::FULL_NAME),
            )));
        }
    };
    let event = match ValidEvent::new(event) {
        Ok(event) => event,
        Err(invalid) => return Ok(Err(Refusal::new("invalid_event", invalid.to_string()))),
    };
    if !states.contains_key(key.as_str()) {
        debug_assert!(
            !ledger.known.holds(key.as_str()),
            "ids are kept in memory only beside their state"
        );
        let (state, ids) = match source.load(key.as_str())? {
            Some(state) => (state, source.applied_ids(key.as_str())?),
            None => (new_state(&key), Vec::new()),
        };
        ledger.known.adopt(key.as_str(), ids);
        states.insert(key.as_str().to_owned(), Arc::new(state));
    }
    // Copied only if a commit in flight still holds this state.
    let state = Arc::make_mut(states.get_mut(key.as_str()).expect("inserted above"));
    // The fold sets `state.applied` to the position.
    let position = LogPosition::new(record.partition, record.offset);
    Ok(match apply(state, ledger, &event, position) {
        Ok(Applied::Changed { effects }) => Ok(Folded::Changed {
            key: key.into_string(),
            effects,
        }),
        Ok(Applied::Duplicate) => Ok(Folded::Duplicate),
        Err(rejection) => Err(Refusal::new(rejection.kind(), rejection.to_string())),
    })
}

fn dead_letter(record: &Record, reason: &str) -> NewRecord {
    let mut dead = NewRecord::new(record.key.clone(), record.value.clone())
        .with_header(dead_letter_headers::REASON, reason.as_bytes())
        .with_header(dead_letter_headers::SOURCE_TOPIC, record.topic.as_bytes())
        .with_header(
            dead_letter_headers::SOURCE_PARTITION,
            record.partition.to_string(),
        )
        .with_header(
            dead_letter_headers::SOURCE_OFFSET,
            record.offset.to_string(),
        );
    for name in [dead_letter_headers::EVENT_ID, TRACEPARENT_HEADER] {
        if let Some(value) = record.header(name) {
            dead = dead.with_header(name, value.to_vec());
        }
    }
    dead
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_care::fixtures::{admitted, transferred};
    use baton_proto::events::v1::care_event::Payload;
    use baton_proto::events::v1::{PatientsMerged, TransferCancelled};
    use baton_proto::state::v1::AppliedPosition;

    #[derive(Default)]
    struct Empty;

    impl StateSource for Empty {
        fn load(&mut self, _: &str) -> Result<Option<PatientCareState>, baton_store::StoreError> {
            Ok(None)
        }

        fn applied_ids(&mut self, _: &str) -> Result<Vec<EventId>, baton_store::StoreError> {
            Ok(Vec::new())
        }
    }

    fn record(offset: u64, key: &str, event: &CareEvent) -> Record {
        Record {
            topic: "events".into(),
            partition: 2,
            offset,
            key: key.as_bytes().to_vec(),
            value: event.encode_to_vec(),
            headers: Vec::new(),
            timestamp_ms: 0,
        }
    }

    #[test]
    fn bad_records_are_dead_lettered_and_the_rest_applied() {
        let nhs = "9434765919";
        let garbage = Record {
            value: vec![0xff, 0xff, 0xff],
            ..record(1, nhs, &admitted(nhs, "V1", 100, "A"))
        };
        // Names the admission: not a transfer, so it cannot apply.
        let mut cancel_nothing = admitted(nhs, "V1", 150, "A");
        cancel_nothing.payload = Some(Payload::TransferCancelled(TransferCancelled {
            cancelled_event_id: admitted(nhs, "V1", 100, "A").event_id,
            ..Default::default()
        }));
        let records = vec![
            record(0, nhs, &admitted(nhs, "V1", 100, "A")),
            garbage,
            record(2, "not a key!", &transferred(nhs, "V1", 200, "B")),
            record(3, nhs, &cancel_nothing),
            record(4, nhs, &transferred(nhs, "V1", 300, "C")),
            record(5, nhs, &transferred(nhs, "V1", 300, "C")),
        ];
        let mut states = HashMap::new();
        let outcome =
            fold_batch(&records, &mut states, &mut AppliedIds::new(), &mut Empty).unwrap();
        assert_eq!(
            (
                outcome.applied,
                outcome.duplicates,
                outcome.dead_letters.len()
            ),
            (2, 1, 3)
        );
        assert_eq!(outcome.positions, BTreeMap::from([(2, 6)]));
        let state = &outcome.states[nhs];
        assert_eq!(
            state
                .active_encounter
                .as_ref()
                .unwrap()
                .location
                .as_ref()
                .unwrap()
                .point_of_care,
            "C"
        );
        assert_eq!(
            state.applied,
            Some(AppliedPosition {
                partition: 2,
                offset: 4
            })
        );
        let reasons: Vec<String> = outcome
            .dead_letters
            .iter()
            .map(|d| {
                let reason = d
                    .headers
                    .iter()
                    .find(|h| h.name == dead_letter_headers::REASON)
                    .unwrap();
                String::from_utf8(reason.value.clone()).unwrap()
            })
            .collect();
        assert!(reasons[0].contains("cannot decode"), "{reasons:?}");
        assert!(reasons[1].contains("not a patient key"), "{reasons:?}");
        assert!(reasons[2].contains("not a transfer"), "{reasons:?}");
        let offsets: Vec<_> = outcome
            .dead_letters
            .iter()
            .map(|d| {
                d.headers
                    .iter()
                    .find(|h| h.name == dead_letter_headers::SOURCE_OFFSET)
                    .unwrap()
                    .value
                    .clone()
            })
            .collect();
        assert_eq!(offsets, vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]);
        assert_eq!(
            outcome.dead_letter_kinds,
            vec!["undecodable", "invalid_key", "cancel_target_not_found"],
            "each dead letter's kind, bounded, in order"
        );
    }

    #[test]
    fn a_merge_on_the_retired_side_asks_for_a_hand_over() {
        let survivor = "9434765919";
        let retired = "4010232137";
        let mut merge = admitted(survivor, "V1", 100, "A");
        merge.encounter_id.clear();
        merge.payload = Some(Payload::PatientsMerged(PatientsMerged {
            retired: Some(baton_care::fixtures::identity(retired)),
        }));
        let records = vec![
            record(0, retired, &admitted(retired, "V9", 50, "A")),
            record(1, retired, &merge),
        ];
        let mut states = HashMap::new();
        let outcome =
            fold_batch(&records, &mut states, &mut AppliedIds::new(), &mut Empty).unwrap();
        assert!(
            outcome.dead_letters.is_empty(),
            "{:?}",
            outcome.dead_letters
        );
        assert_eq!(outcome.appends.len(), 1);
        assert_eq!(outcome.appends[0].key, survivor.as_bytes());
        assert!(outcome.states[retired].merged_into.is_some());
    }

    /// A store holding one patient's state and the ids applied to it,
    /// counting what the fold asks of it.
    #[derive(Default)]
    struct Stored {
        state: Option<PatientCareState>,
        ids: Vec<EventId>,
        loads: usize,
        id_reads: usize,
    }

    impl StateSource for Stored {
        fn load(&mut self, _: &str) -> Result<Option<PatientCareState>, baton_store::StoreError> {
            self.loads += 1;
            Ok(self.state.clone())
        }

        fn applied_ids(&mut self, _: &str) -> Result<Vec<EventId>, baton_store::StoreError> {
            self.id_reads += 1;
            Ok(self.ids.clone())
        }
    }

    #[test]
    fn a_stored_patient_is_read_once_and_duplicates_are_found_in_memory_after() {
        let nhs = "9434765919";
        let admission = admitted(nhs, "V1", 100, "A");
        let first = fold_batch(
            &[record(0, nhs, &admission)],
            &mut HashMap::new(),
            &mut AppliedIds::new(),
            &mut Empty,
        )
        .unwrap();
        let id = ValidEvent::new(admission.clone()).unwrap().id();
        let mut store = Stored {
            state: Some((*first.states[nhs]).clone()),
            ids: vec![id],
            ..Stored::default()
        };

        // The stored admission, sent again: a duplicate, known from the
        // ids read with the state.
        let (mut states, mut applied) = (HashMap::new(), AppliedIds::new());
        let transfer = transferred(nhs, "V1", 200, "B");
        let second = fold_batch(
            &[record(1, nhs, &admission), record(2, nhs, &transfer)],
            &mut states,
            &mut applied,
            &mut store,
        )
        .unwrap();
        assert_eq!((second.applied, second.duplicates), (1, 1));
        let transfer_id = ValidEvent::new(transfer.clone()).unwrap().id();
        assert_eq!(
            second.applied_ids.iter().collect::<Vec<_>>(),
            vec![(nhs, transfer_id)]
        );

        // The next batch meets both again before any commit landed: both
        // duplicates, and the store is not asked again.
        let third = fold_batch(
            &[record(3, nhs, &transfer), record(4, nhs, &admission)],
            &mut states,
            &mut applied,
            &mut store,
        )
        .unwrap();
        assert_eq!((third.applied, third.duplicates), (0, 2));
        assert!(third.applied_ids.is_empty());
        assert_eq!((store.loads, store.id_reads), (1, 1));
    }
}
