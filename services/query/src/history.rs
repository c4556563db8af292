//! A patient's past: the timeline of the events applied to their state, and
//! their state as it was at a clinical or recorded time, folded again from
//! that timeline with the same pure fold the projector runs.

use std::collections::{HashMap, HashSet};

use baton_care::{AppliedIds, Instant, LogPosition, PatientKey, ValidEvent, apply, new_state};
use baton_proto::events::v1::CareEvent;
use baton_proto::query::v1::{TimeAxis, TimelineEntry};
use baton_proto::state::v1::{AppliedPosition, CancelMatch, PatientCareState};
use baton_store::{Store, StoreError, TimelineRecord};
use prost::Message;

/// The most merged records followed from one patient: merges chain (A into
/// B into C), but never this deep in a real register.
const MAX_MERGED_RECORDS: usize = 64;

/// One event of the patient's (or a merged record's) timeline that was
/// applied to its state.
struct Applied {
    event: ValidEvent,
    position: AppliedPosition,
    /// The record it was filed under, when not the requested patient's own.
    merged_record_key: Option<String>,
}

/// The events applied to `state` — and to every record merged into it — in
/// clinical order within `from..=to`, with corrections marked.
pub(crate) fn timeline(
    store: &Store,
    state: &PatientCareState,
    from: Instant,
    to: Instant,
) -> Result<Vec<TimelineEntry>, StoreError> {
    let records = merged_records(store, state)?;
    let mut seen = HashSet::new();
    let mut events = Vec::new();
    for (index, record) in records.iter().enumerate() {
        for applied in applied_events(store, record, from, to)? {
            if seen.insert(applied.event.event().event_id.clone()) {
                events.push(Applied {
                    merged_record_key: (index > 0).then(|| record.patient_key.clone()),
                    ..applied
                });
            }
        }
    }
    events.sort_by_key(|applied| {
        (
            applied.event.occurred(),
            applied.event.recorded(),
            applied.position.partition,
            applied.position.offset,
        )
    });

    // What each correction cancelled, and by which rule it was matched
    // (see baton.state.v1.Cancellation): the fold worked it out.
    let mut cancelled_by = HashMap::new();
    let mut cancels: HashMap<String, (String, CancelMatch)> = HashMap::new();
    for record in &records {
        for encounter in record
            .active_encounter
            .iter()
            .chain(&record.past_encounters)
        {
            for movement in &encounter.movements {
                if !movement.cancelled_by_event_id.is_empty() {
                    cancelled_by.insert(
                        movement.event_id.clone(),
                        movement.cancelled_by_event_id.clone(),
                    );
                }
            }
            for cancellation in &encounter.cancellations {
                cancels.insert(
                    cancellation.event_id.clone(),
                    (
                        cancellation.cancelled_event_id.clone(),
                        cancellation.matched_by(),
                    ),
                );
            }
        }
    }

    // Late: recorded after something of the patient that happened later.
    let mut late = vec![false; events.len()];
    let mut earliest_recorded_after = Instant::UNSET;
    for (index, applied) in events.iter().enumerate().rev() {
        let recorded = applied.event.recorded();
        late[index] = earliest_recorded_after.is_set() && recorded > earliest_recorded_after;
        if !earliest_recorded_after.is_set() || recorded < earliest_recorded_after {
            earliest_recorded_after = recorded;
        }
    }

    Ok(events
        .into_iter()
        .zip(late)
        .map(|(applied, late)| {
            let id = &applied.event.event().event_id;
            let (cancels_event_id, cancel_match) = cancels
                .get(id)
                .cloned()
                .unwrap_or((String::new(), CancelMatch::Unspecified));
            TimelineEntry {
                cancelled_by_event_id: cancelled_by.get(id).cloned().unwrap_or_default(),
                cancels_event_id,
                cancel_match: cancel_match as i32,
                merged_record_key: applied.merged_record_key.unwrap_or_default(),
                late,
                position: Some(applied.position),
                event: Some(applied.event.into_event()),
            }
        })
        .collect())
}

/// `state` as it was at `time` on `axis`, folded from the events applied to
/// it, and how many were folded; `None` when none had happened (or been
/// recorded) by then.
pub(crate) fn as_of(
    store: &Store,
    state: &PatientCareState,
    time: Instant,
    axis: TimeAxis,
) -> Result<(Option<PatientCareState>, u32), StoreError> {
    let mut events = applied_events(store, state, Instant::UNSET, Instant::UNSET)?;
    // The projector's order: the log's, within the patient's partition.
    events.sort_by_key(|applied| (applied.position.partition, applied.position.offset));
    let cancelled: HashSet<&str> = state
        .active_encounter
        .iter()
        .chain(&state.past_encounters)
        .flat_map(|encounter| &encounter.movements)
        .filter(|movement| !movement.cancelled_by_event_id.is_empty())
        .map(|movement| movement.event_id.as_str())
        .collect();
    let included = |event: &ValidEvent| match axis {
        // What was true then, as known now: corrections take back what
        // they voided, whenever they were made.
        TimeAxis::Clinical => {
            event.occurred() <= time
                && !cancelled.contains(event.event().event_id.as_str())
                && !event.is_correction()
        }
        TimeAxis::Recorded | TimeAxis::Unspecified => event.recorded() <= time,
    };

    let Ok(key) = PatientKey::parse(&state.patient_key) else {
        return Ok((None, 0));
    };
    let mut then = new_state(&key);
    let mut then_applied = AppliedIds::new();
    let mut folded = 0u32;
    for applied in events.iter().filter(|applied| included(&applied.event)) {
        // At its own position, so ties in time resolve as they did in the
        // projector. An event that needs something left out (a move within
        // an admission that came later) is left out too.
        let position = LogPosition::new(applied.position.partition, applied.position.offset);
        if let Ok(baton_care::Applied::Changed { .. }) =
            apply(&mut then, &mut then_applied, &applied.event, position)
        {
            folded += 1;
        }
    }
    Ok(((folded > 0).then_some(then), folded))
}

/// `state` first, then every record merged into it, directly or through
/// another merged record.
fn merged_records(
    store: &Store,
    state: &PatientCareState,
) -> Result<Vec<PatientCareState>, StoreError> {
    let mut records = vec![state.clone()];
    let mut keys: HashSet<String> = HashSet::from([state.patient_key.clone()]);
    let mut next = 0;
    while next < records.len() && records.len() < MAX_MERGED_RECORDS {
        let retired: Vec<String> = records[next]
            .merged_from
            .iter()
            .map(|link| link.patient_key.clone())
            .filter(|key| keys.insert(key.clone()))
            .collect();
        for key in retired {
            if let Some(record) = store.get(&key)? {
                records.push(record);
            }
        }
        next += 1;
    }
    Ok(records)
}

/// The events filed on `state`'s timeline within `from..=to` that were
/// applied to it, in the timeline's order.
///
/// Which were applied is worked out as the projector did: the record's
/// events, every one filed under its key, folded again in log order up to
/// the last one its state includes, with the same pure fold, so a
/// dead-lettered event (or a duplicate) is left out exactly as it was
/// there. The state keeps no list of applied ids (it would grow with the
/// patient's history).
fn applied_events(
    store: &Store,
    state: &PatientCareState,
    from: Instant,
    to: Instant,
) -> Result<Vec<Applied>, StoreError> {
    let mut filed: Vec<(TimelineRecord, ValidEvent)> = store
        .timeline(&state.patient_key, Instant::UNSET, Instant::UNSET)?
        .into_iter()
        .filter_map(|record| {
            let event = decode(&record)?;
            Some((record, event))
        })
        .collect();
    filed.sort_by_key(|(record, _)| (record.partition, record.offset));
    let reached = |record: &TimelineRecord| {
        state
            .applied
            .as_ref()
            .is_some_and(|last| record.partition != last.partition || record.offset <= last.offset)
    };
    let Ok(key) = PatientKey::parse(&state.patient_key) else {
        return Ok(Vec::new());
    };
    let mut refolded = new_state(&key);
    let mut seen = AppliedIds::new();
    let mut applied: Vec<Applied> = filed
        .into_iter()
        .filter(|(record, _)| reached(record))
        .filter_map(|(record, event)| {
            let position = LogPosition::new(record.partition, record.offset);
            let changed = matches!(
                apply(&mut refolded, &mut seen, &event, position),
                Ok(baton_care::Applied::Changed { .. })
            );
            let in_range = (!from.is_set() || event.occurred() >= from)
                && (!to.is_set() || event.occurred() <= to);
            (changed && in_range).then_some(Applied {
                event,
                position: AppliedPosition {
                    partition: record.partition,
                    offset: record.offset,
                },
                merged_record_key: None,
            })
        })
        .collect();
    applied.sort_by_key(|applied| {
        (
            applied.event.occurred(),
            applied.position.partition,
            applied.position.offset,
        )
    });
    Ok(applied)
}

/// A filed event as the fold saw it (canonical event id); `None` for one
/// that is not valid, which the projector never applied.
fn decode(record: &TimelineRecord) -> Option<ValidEvent> {
    let event = CareEvent::decode(record.event.as_slice()).ok()?;
    ValidEvent::new(event).ok()
}
