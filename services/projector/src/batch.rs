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
use baton_proto::events::v1::care_event::Payload;
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

/// Where the fold finds a patient's state when it is not in the batch yet,
/// and the events applied to it before.
pub(crate) trait StateSource {
    fn load(&mut self, key: &str) -> Result<Option<PatientCareState>, baton_store::StoreError>;
    /// Whether `event_id` was applied to the state of `key`.
    fn applied(&mut self, key: &str, event_id: EventId) -> Result<bool, baton_store::StoreError>;
    /// Every event id applied to the state of `key`.
    fn applied_ids(&mut self, key: &str) -> Result<Vec<EventId>, baton_store::StoreError>;
}

/// The fold's [`AppliedEvents`] for one batch: what the store (or the
/// previous batch, whose commit may still be in flight) says was applied,
/// looked up before the fold asks, and what this batch applies.
#[derive(Debug, Default)]
struct BatchLedger {
    known: AppliedIds,
    added: AppliedIds,
    /// Keys whose every applied id is in `known` (a retired record's).
    whole: std::collections::HashSet<String>,
    /// Keys with no stored state when the batch met them: nothing was
    /// applied to them before but what `recent` holds.
    fresh: std::collections::HashSet<String>,
}

impl BatchLedger {
    /// Looks up what the fold will ask about `event` applied to `key`.
    fn prepare(
        &mut self,
        key: &str,
        event: &ValidEvent,
        recent: &AppliedIds,
        source: &mut impl StateSource,
    ) -> Result<(), baton_store::StoreError> {
        let id = event.id();
        if !self.contains(key, id)
            && (recent.contains(key, id)
                || (!self.fresh.contains(key) && source.applied(key, id)?))
        {
            self.known.insert(key, id);
        }
        let retires = event.key().as_str() != key
            && matches!(
                event.payload(),
                Payload::PatientsMerged(_) | Payload::PatientIdentifierChanged(_)
            );
        if retires && self.whole.insert(key.to_owned()) {
            let stored = if self.fresh.contains(key) {
                Vec::new()
            } else {
                source.applied_ids(key)?
            };
            for id in stored.into_iter().chain(recent.of_patient(key)) {
                self.known.insert(key, id);
            }
        }
        Ok(())
    }
}

impl AppliedEvents for BatchLedger {
    fn contains(&self, patient_key: &str, event_id: EventId) -> bool {
        self.known.contains(patient_key, event_id) || self.added.contains(patient_key, event_id)
    }

    fn insert(&mut self, patient_key: &str, event_id: EventId) {
        self.added.insert(patient_key, event_id);
    }

    fn of_patient(&self, patient_key: &str) -> Vec<EventId> {
        let mut ids = self.known.of_patient(patient_key);
        ids.extend(self.added.of_patient(patient_key));
        ids.sort_unstable();
        ids.dedup();
        ids
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
/// applied becomes a dead letter and the batch goes on. `recent` holds the
/// ids the previous batch applied, whose commit may not have landed yet.
pub(crate) fn fold_batch(
    records: &[Record],
    states: &mut HashMap<String, Arc<PatientCareState>>,
    recent: &AppliedIds,
    source: &mut impl StateSource,
) -> Result<BatchOutcome, baton_store::StoreError> {
    let mut outcome = BatchOutcome::default();
    let mut ledger = BatchLedger::default();
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
        let folded = fold_record(record, states, &mut ledger, recent, source)?;
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
    ledger: &mut BatchLedger,
    recent: &AppliedIds,
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
        let state = match source.load(key.as_str())? {
            Some(state) => state,
            None => {
                ledger.fresh.insert(key.as_str().to_owned());
                new_state(&key)
            }
        };
        states.insert(key.as_str().to_owned(), Arc::new(state));
    }
    ledger.prepare(key.as_str(), &event, recent, source)?;
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

        fn applied(&mut self, _: &str, _: EventId) -> Result<bool, baton_store::StoreError> {
            Ok(false)
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
        let outcome = fold_batch(&records, &mut states, &AppliedIds::new(), &mut Empty).unwrap();
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
        let outcome = fold_batch(&records, &mut states, &AppliedIds::new(), &mut Empty).unwrap();
        assert!(
            outcome.dead_letters.is_empty(),
            "{:?}",
            outcome.dead_letters
        );
        assert_eq!(outcome.appends.len(), 1);
        assert_eq!(outcome.appends[0].key, survivor.as_bytes());
        assert!(outcome.states[retired].merged_into.is_some());
    }
}
