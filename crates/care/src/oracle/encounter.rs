//! Hospital encounters. Each movement (attendance, admission, transfer,
//! planned transfer, leave, class change, discharge) is kept in clinical
//! order, each cancellation beside them; after every event the cancellations
//! are matched to the movements again ([`match_cancellations`]) and the
//! encounter's status, location and history derived again from the
//! movements still in effect. So a late move lands in the right place, and
//! a cancel reverts exactly what it cancels whatever order the two arrive in.

use baton_proto::events::v1::{Discharged, ExpectedDischargeDateSet, Location, PatientClass};
use baton_proto::state::v1::{
    CancelMatch, Cancellation, Discharge, Encounter, EncounterStatus, ExpectedDischarge,
    LocationStay, MedicalOptimisation, Movement, MovementKind, OptimisationFact, PatientCareState,
    PlannedTransfer,
};
use prost_types::Timestamp;

use super::stamps::{insert_by_stamp, start_of_latest_run, supersedes};
use super::{Incoming, Rejection};
use crate::time::{Instant, LogPosition};

/// The payload-specific parts of a movement.
#[derive(Debug, Default)]
pub(super) struct MovementFacts {
    pub(super) kind: MovementKind,
    pub(super) location: Option<Location>,
    pub(super) from: Option<Location>,
    pub(super) patient_class: i32,
    pub(super) admission_method: i32,
    pub(super) discharge: Option<Discharge>,
    pub(super) expected_at: Option<Timestamp>,
    pub(super) attending_clinician: String,
}

pub(super) fn discharge_of(discharged: &Discharged) -> Discharge {
    Discharge {
        method: discharged.method,
        destination: discharged.destination,
        disposition_code: discharged.disposition_code.clone(),
        destination_code: discharged.destination_code.clone(),
        destination_organisation: discharged.destination_organisation.clone(),
        ..Default::default()
    }
}

/// Every encounter of the patient, active first.
pub(super) fn encounters_mut(state: &mut PatientCareState) -> impl Iterator<Item = &mut Encounter> {
    state
        .active_encounter
        .iter_mut()
        .chain(state.past_encounters.iter_mut())
}

pub(super) fn encounter_mut<'a>(
    state: &'a mut PatientCareState,
    encounter_id: &str,
) -> Option<&'a mut Encounter> {
    encounters_mut(state).find(|e| e.encounter_id == encounter_id)
}

/// The encounter `encounter_id`, created empty when Baton has not seen it:
/// a feed connected mid-stay (first message a transfer or a discharge), or
/// a cancellation arriving before what it cancels, still lands somewhere.
fn encounter_or_new<'a>(state: &'a mut PatientCareState, encounter_id: &str) -> &'a mut Encounter {
    if encounter_mut(state, encounter_id).is_none() {
        state.past_encounters.push(Encounter {
            encounter_id: encounter_id.to_owned(),
            ..Default::default()
        });
    }
    encounter_mut(state, encounter_id).expect("created above")
}

/// Records a movement.
pub(super) fn record(state: &mut PatientCareState, event: &Incoming<'_>, facts: MovementFacts) {
    let envelope = event.event();
    let organisation = envelope
        .source
        .as_ref()
        .map(|s| s.organisation.clone())
        .unwrap_or_default();
    let movement = Movement {
        event_id: envelope.event_id.clone(),
        kind: facts.kind as i32,
        occurred_at: envelope.occurred_at,
        recorded_at: envelope.recorded_at,
        location: facts.location,
        from: facts.from.map(Box::new),
        patient_class: facts.patient_class,
        admission_method: facts.admission_method,
        discharge: facts.discharge.map(Box::new),
        expected_at: facts.expected_at,
        attending_clinician: facts.attending_clinician,
        organisation,
        position: Some(event.position().into()),
        ..Default::default()
    };
    let encounter = encounter_or_new(state, &envelope.encounter_id);
    insert_movement(encounter, movement);
    derive_encounter(encounter);
}

/// Inserts `movement` in clinical order, after every movement it ties with
/// (which came before it in the log).
pub(super) fn insert_movement(encounter: &mut Encounter, movement: Movement) {
    let at = encounter
        .movements
        .partition_point(|m| movement_order(m) <= movement_order(&movement));
    encounter.movements.insert(at, movement);
}

/// Clinical time, system time, then position in the log; the event id only
/// for movements kept before positions were.
pub(super) fn movement_order(m: &Movement) -> (Instant, Instant, Option<LogPosition>, &str) {
    (
        Instant::of(m.occurred_at.as_ref()),
        Instant::of(m.recorded_at.as_ref()),
        LogPosition::of(m.position.as_ref()),
        m.event_id.as_str(),
    )
}

pub(super) fn cancellation_order(
    c: &Cancellation,
) -> (Instant, Instant, Option<LogPosition>, &str) {
    (
        Instant::of(c.occurred_at.as_ref()),
        Instant::of(c.recorded_at.as_ref()),
        LogPosition::of(c.position.as_ref()),
        c.event_id.as_str(),
    )
}

fn kind_name(kind: MovementKind) -> &'static str {
    match kind {
        MovementKind::Admission => "admission",
        MovementKind::Attendance => "attendance",
        MovementKind::Transfer => "transfer",
        MovementKind::TransferPlanned => "planned transfer",
        MovementKind::Discharge => "discharge",
        MovementKind::PreAdmission => "pre-admission",
        MovementKind::LeaveStart => "leave",
        MovementKind::LeaveEnd => "return from leave",
        MovementKind::ClassChange => "class change",
        MovementKind::Unspecified => "movement",
    }
}

/// What a cancellation of `kind` may cancel: an admission cancel (A11) also
/// cancels an attendance (A04), which is how UK feeds begin a stay in ED.
fn cancels(kind: MovementKind, movement: &Movement) -> bool {
    let target = movement.kind();
    target == kind || (kind == MovementKind::Admission && target == MovementKind::Attendance)
}

/// Where a cancellation looks for what it cancels.
#[derive(Debug, Default)]
pub(super) struct CancelFacts<'a> {
    pub(super) named_event_id: &'a str,
    pub(super) from: Option<Location>,
    pub(super) to: Option<Location>,
}

/// Records a cancellation of a movement of `kind`. Which movement it
/// cancels is worked out with the others when the encounter is derived; one
/// that matches nothing yet waits for what it cancels. Refused only when it
/// names an event of the encounter that is not a `kind`.
pub(super) fn cancel(
    state: &mut PatientCareState,
    event: &Incoming<'_>,
    kind: MovementKind,
    facts: CancelFacts<'_>,
) -> Result<(), Rejection> {
    let envelope = event.event();
    if !facts.named_event_id.is_empty()
        && let Some(named) = encounter_mut(state, &envelope.encounter_id).and_then(|e| {
            e.movements
                .iter()
                .find(|m| m.event_id == facts.named_event_id)
        })
        && !cancels(kind, named)
    {
        return Err(Rejection::CancelTargetNotFound {
            payload: event.payload_name(),
            encounter_id: envelope.encounter_id.clone(),
            cancelled_event_id: facts.named_event_id.to_owned(),
            what: kind_name(kind),
        });
    }
    let cancellation = Cancellation {
        event_id: envelope.event_id.clone(),
        kind: kind as i32,
        occurred_at: envelope.occurred_at,
        recorded_at: envelope.recorded_at,
        position: Some(event.position().into()),
        named_event_id: facts.named_event_id.to_owned(),
        from: facts.from,
        to: facts.to,
        ..Default::default()
    };
    let encounter = encounter_or_new(state, &envelope.encounter_id);
    let at = encounter
        .cancellations
        .partition_point(|c| cancellation_order(c) <= cancellation_order(&cancellation));
    encounter.cancellations.insert(at, cancellation);
    derive_encounter(encounter);
    Ok(())
}

/// Same place: the same point of care, and the same room, bed and facility
/// where both name one.
fn same_place(a: &Location, b: &Location) -> bool {
    let agree = |x: &str, y: &str| x.is_empty() || y.is_empty() || x.eq_ignore_ascii_case(y);
    !a.point_of_care.is_empty()
        && a.point_of_care.eq_ignore_ascii_case(&b.point_of_care)
        && agree(&a.room, &b.room)
        && agree(&a.bed, &b.bed)
        && agree(&a.facility, &b.facility)
}

/// Whether the locations a cancellation gives fit the movement: every one
/// that can be compared agrees, and at least one could be. `None` when the
/// cancellation gives none. `before` is where the patient was before the
/// movement, for a transfer that did not say where it was from.
fn places_fit(
    cancellation: &Cancellation,
    movement: &Movement,
    before: Option<&Location>,
) -> Option<bool> {
    if cancellation.from.is_none() && cancellation.to.is_none() {
        return None;
    }
    let mut compared = false;
    let pairs = [
        (cancellation.to.as_ref(), movement.location.as_ref()),
        (
            cancellation.from.as_ref(),
            movement.from.as_deref().or(before),
        ),
    ];
    for (given, known) in pairs {
        if let (Some(given), Some(known)) = (given, known) {
            if !same_place(given, known) {
                return Some(false);
            }
            compared = true;
        }
    }
    Some(compared)
}

/// How closely a cancellation fits a movement it may cancel, best first;
/// `None` when it does not fit at all but by the fallback.
fn fit(
    cancellation: &Cancellation,
    movement: &Movement,
    before: Option<&Location>,
) -> Option<CancelMatch> {
    let same_time = cancellation.occurred_at.is_some()
        && Instant::of(cancellation.occurred_at.as_ref())
            == Instant::of(movement.occurred_at.as_ref());
    match (same_time, places_fit(cancellation, movement, before)) {
        (true, None) => Some(CancelMatch::ClinicalTime),
        (true, Some(true)) => Some(CancelMatch::ClinicalTimeAndLocation),
        (true, Some(false)) => Some(CancelMatch::ClinicalTime),
        (false, Some(true)) => Some(CancelMatch::Location),
        (false, _) => None,
    }
}

/// The tiers of [`fit`], tried in turn for every cancellation, so a close
/// fit is never taken by a looser one.
const TIERS: [CancelMatch; 3] = [
    CancelMatch::ClinicalTimeAndLocation,
    CancelMatch::ClinicalTime,
    CancelMatch::Location,
];

/// Which movement each cancellation took, and how.
struct Matching {
    /// For each movement, the cancellation that cancels it.
    taken_by: Vec<Option<usize>>,
    /// For each cancellation, the movement it matched and the rule.
    matched: Vec<Option<(usize, CancelMatch)>>,
}

impl Matching {
    fn is_open(&self, cancellation: usize) -> bool {
        self.matched[cancellation].is_none()
    }

    /// `cancellation` cancels `movement`, or repeats the correction that
    /// already did.
    fn take(&mut self, cancellation: usize, movement: usize, rule: CancelMatch) {
        if self.taken_by[movement].is_none() {
            self.taken_by[movement] = Some(cancellation);
            self.matched[cancellation] = Some((movement, rule));
        } else {
            self.matched[cancellation] = Some((movement, CancelMatch::Repeat));
        }
    }
}

/// Works out which movement each cancellation cancels, from all of them,
/// and marks those movements. A function of the encounter's movements and
/// cancellations only, not of the order they arrived in:
///
/// 1. a cancellation naming an event cancels it (and waits for it until it
///    arrives);
/// 2. otherwise the movement of its kind whose clinical time is its own
///    (feeds send the time of the event cancelled in EVN-6) and, for a
///    transfer, whose locations are the ones it gives; then one at that
///    time only; then, for a transfer, one between those locations at
///    another time;
/// 3. failing all that, the latest movement of its kind still in effect at
///    its clinical time; with none, it is pending.
///
/// Cancellations are taken in clinical order within each step; one that
/// fits only a movement an earlier one cancelled repeats that correction.
pub(super) fn match_cancellations(encounter: &mut Encounter) {
    for movement in &mut encounter.movements {
        movement.cancelled_by_event_id.clear();
        movement.cancelled_recorded_at = None;
    }
    if encounter.cancellations.is_empty() {
        return;
    }
    let movements = &encounter.movements;
    let cancellations = &encounter.cancellations;
    // Where the patient was before each movement, as the feed said it.
    let mut before: Vec<Option<usize>> = Vec::with_capacity(movements.len());
    let mut last = None;
    for (m, movement) in movements.iter().enumerate() {
        before.push(last);
        if movement.location.is_some() && movement.kind() != MovementKind::TransferPlanned {
            last = Some(m);
        }
    }
    let place_before = |m: usize| before[m].and_then(|b| movements[b].location.as_ref());
    let mut matching = Matching {
        taken_by: vec![None; movements.len()],
        matched: vec![None; cancellations.len()],
    };

    for (c, cancellation) in cancellations.iter().enumerate() {
        if cancellation.named_event_id.is_empty() {
            continue;
        }
        let named = movements.iter().position(|m| {
            m.event_id == cancellation.named_event_id && cancels(cancellation.kind(), m)
        });
        if let Some(m) = named {
            matching.take(c, m, CancelMatch::EventId);
        }
    }
    let unnamed = |c: usize| cancellations[c].named_event_id.is_empty();
    for tier in TIERS {
        for (c, cancellation) in cancellations.iter().enumerate() {
            if !unnamed(c) || !matching.is_open(c) {
                continue;
            }
            let fits = |m: usize| {
                cancels(cancellation.kind(), &movements[m])
                    && fit(cancellation, &movements[m], place_before(m)) == Some(tier)
            };
            let untaken = (0..movements.len())
                .rev()
                .find(|&m| fits(m) && matching.taken_by[m].is_none());
            if let Some(m) = untaken.or_else(|| (0..movements.len()).rev().find(|&m| fits(m))) {
                matching.take(c, m, tier);
            }
        }
    }
    for (c, cancellation) in cancellations.iter().enumerate() {
        if !unnamed(c) || !matching.is_open(c) {
            continue;
        }
        let by_then = Instant::of(cancellation.occurred_at.as_ref());
        let latest = (0..movements.len()).rev().find(|&m| {
            cancels(cancellation.kind(), &movements[m])
                && matching.taken_by[m].is_none()
                && Instant::of(movements[m].occurred_at.as_ref()) <= by_then
        });
        if let Some(m) = latest {
            matching.take(c, m, CancelMatch::LatestInEffect);
        }
    }

    let Matching { taken_by, matched } = matching;
    for (cancellation, matched) in encounter.cancellations.iter_mut().zip(matched) {
        match matched {
            Some((m, rule)) => {
                cancellation
                    .cancelled_event_id
                    .clone_from(&encounter.movements[m].event_id);
                cancellation.matched_by = rule as i32;
            }
            None => {
                cancellation.cancelled_event_id.clear();
                cancellation.matched_by = CancelMatch::Pending as i32;
            }
        }
    }
    for (movement, taken_by) in encounter.movements.iter_mut().zip(taken_by) {
        if let Some(c) = taken_by {
            let cancellation = &encounter.cancellations[c];
            movement
                .cancelled_by_event_id
                .clone_from(&cancellation.event_id);
            movement.cancelled_recorded_at = cancellation.recorded_at;
        }
    }
}

/// The encounter a medical-optimisation or discharge-date event is about:
/// the named one, else the one in progress.
fn target_encounter<'a>(
    state: &'a mut PatientCareState,
    event: &Incoming<'_>,
) -> Result<&'a mut Encounter, Rejection> {
    let payload = event.payload_name();
    let encounter_id = &event.event().encounter_id;
    if encounter_id.is_empty() {
        state
            .active_encounter
            .as_mut()
            .filter(|e| is_live(e))
            .ok_or(Rejection::NoActiveEncounter { payload })
    } else {
        encounter_mut(state, encounter_id).ok_or_else(|| Rejection::UnknownEncounter {
            payload,
            encounter_id: encounter_id.clone(),
        })
    }
}

pub(super) fn set_medically_optimised(
    state: &mut PatientCareState,
    event: &Incoming<'_>,
    optimised: bool,
    reason: &str,
) -> Result<(), Rejection> {
    let encounter = target_encounter(state, event)?;
    let optimisation = encounter
        .medical_optimisation
        .get_or_insert_with(Default::default);
    let fact = OptimisationFact {
        optimised,
        revoked_reason: if optimised {
            String::new()
        } else {
            reason.to_owned()
        },
        stamp: Some(event.stamp()),
    };
    insert_by_stamp(&mut optimisation.history, fact, |f| f.stamp.as_ref());
    derive_optimisation(optimisation);
    Ok(())
}

/// Optimised or not as the latest fact by clinical time says; still
/// optimised, it has been since the first time it was said after the latest
/// revocation.
fn derive_optimisation(optimisation: &mut MedicalOptimisation) {
    let Some(latest) = optimisation.history.last() else {
        return;
    };
    let since = start_of_latest_run(&optimisation.history, |f| f.optimised)
        .filter(|first| first.optimised)
        .and_then(|first| first.stamp.as_ref())
        .and_then(|s| s.occurred_at);
    let (optimised, revoked_reason, stamp) = (
        latest.optimised,
        latest.revoked_reason.clone(),
        latest.stamp.clone(),
    );
    optimisation.optimised = optimised;
    optimisation.since = since;
    optimisation.revoked_reason = revoked_reason;
    optimisation.stamp = stamp;
}

pub(super) fn set_expected_discharge(
    state: &mut PatientCareState,
    event: &Incoming<'_>,
    set: &ExpectedDischargeDateSet,
) -> Result<(), Rejection> {
    let encounter = target_encounter(state, event)?;
    let stamp = event.stamp();
    if encounter
        .expected_discharge
        .as_ref()
        .is_none_or(|current| supersedes(&stamp, current.stamp.as_ref()))
    {
        encounter.expected_discharge = Some(ExpectedDischarge {
            date: set.expected_discharge_date,
            stamp: Some(stamp),
        });
    }
    Ok(())
}

/// In hospital now: attending or admitted and not discharged (on leave
/// counts).
pub(super) fn is_live(encounter: &Encounter) -> bool {
    matches!(
        encounter.status(),
        EncounterStatus::InProgress | EncounterStatus::OnLeave
    )
}

/// Matches the cancellations, then computes status, class, location,
/// history, planned move and discharge from the movements in effect.
/// Medical optimisation and the expected discharge date are kept as they
/// are: they are facts of their own.
pub(super) fn derive_encounter(encounter: &mut Encounter) {
    match_cancellations(encounter);
    let starts_stay =
        |m: &Movement| matches!(m.kind(), MovementKind::Admission | MovementKind::Attendance);
    let has_start = encounter.movements.iter().any(starts_stay);
    let start_in_effect = encounter
        .movements
        .iter()
        .any(|m| starts_stay(m) && m.cancelled_by_event_id.is_empty());
    // Every admission and attendance entered in error: the stay never happened.
    let stay_cancelled = has_start && !start_in_effect;

    let mut status = EncounterStatus::Unspecified;
    let mut location: Option<Location> = None;
    let mut history: Vec<LocationStay> = Vec::new();
    let mut admitted_at = None;
    let mut started_at = None;
    let mut discharged_at = None;
    let mut discharge = None;
    let mut expected_admission_at = None;
    let mut expected_return_at = None;
    let mut planned: Option<&Movement> = None;
    let mut organisation = String::new();
    let mut patient_class = 0;
    let mut admission_method = 0;
    let mut attending_clinician = String::new();

    for movement in encounter
        .movements
        .iter()
        .filter(|m| m.cancelled_by_event_id.is_empty())
    {
        if !movement.organisation.is_empty() {
            organisation.clone_from(&movement.organisation);
        }
        if movement.patient_class != 0 {
            patient_class = movement.patient_class;
        }
        if movement.admission_method != 0 {
            admission_method = movement.admission_method;
        }
        if !movement.attending_clinician.is_empty() {
            attending_clinician.clone_from(&movement.attending_clinician);
        }
        match movement.kind() {
            MovementKind::PreAdmission => {
                if status == EncounterStatus::Unspecified {
                    status = EncounterStatus::Planned;
                    location.clone_from(&movement.location);
                }
                expected_admission_at = movement.expected_at;
            }
            MovementKind::Admission | MovementKind::Attendance => {
                // An admission during an attendance continues the stay as
                // an inpatient one; after a discharge it is a readmission.
                let live = matches!(
                    status,
                    EncounterStatus::InProgress | EncounterStatus::OnLeave
                );
                if movement.kind() == MovementKind::Admission {
                    admitted_at = movement.occurred_at;
                }
                if !live {
                    status = EncounterStatus::InProgress;
                    started_at = movement.occurred_at;
                }
                discharged_at = None;
                discharge = None;
                move_to(&mut history, &mut location, movement, live);
            }
            // Moves in a cancelled stay, or after the discharge in clinical
            // time, stay in the audit trail but change nothing.
            _ if stay_cancelled || status == EncounterStatus::Finished => {}
            MovementKind::Transfer => {
                if matches!(
                    status,
                    EncounterStatus::Unspecified | EncounterStatus::Planned
                ) {
                    status = EncounterStatus::InProgress;
                    started_at = movement.occurred_at;
                }
                move_to(&mut history, &mut location, movement, true);
                planned = None;
            }
            MovementKind::ClassChange => {
                // A06: an ED or outpatient attendance becomes an inpatient
                // stay, usually on a ward elsewhere.
                if movement.patient_class == PatientClass::Inpatient as i32 && admitted_at.is_none()
                {
                    admitted_at = movement.occurred_at;
                }
                if movement.location.is_some() {
                    if matches!(
                        status,
                        EncounterStatus::Unspecified | EncounterStatus::Planned
                    ) {
                        status = EncounterStatus::InProgress;
                        started_at = movement.occurred_at;
                    }
                    move_to(&mut history, &mut location, movement, true);
                    planned = None;
                }
            }
            MovementKind::TransferPlanned => planned = Some(movement),
            MovementKind::LeaveStart => {
                if status == EncounterStatus::InProgress {
                    status = EncounterStatus::OnLeave;
                    expected_return_at = movement.expected_at;
                }
            }
            MovementKind::LeaveEnd => {
                if status == EncounterStatus::OnLeave {
                    status = EncounterStatus::InProgress;
                }
                expected_return_at = None;
            }
            MovementKind::Discharge => {
                status = EncounterStatus::Finished;
                discharged_at = movement.occurred_at;
                expected_return_at = None;
                planned = None;
                if let Some(last) = history.last_mut() {
                    last.until = movement.occurred_at;
                }
                discharge = movement.discharge.clone().map(|d| {
                    Box::new(Discharge {
                        encounter_id: encounter.encounter_id.clone(),
                        discharged_at: movement.occurred_at,
                        location: location.clone(),
                        ..*d
                    })
                });
            }
            MovementKind::Unspecified => {}
        }
    }
    let planned_transfer = planned.map(|m| PlannedTransfer {
        to: m.location.clone(),
        planned_at: m.expected_at,
        requested_at: m.occurred_at,
        event_id: m.event_id.clone(),
    });
    if stay_cancelled {
        history.clear();
        status = if status == EncounterStatus::Planned {
            EncounterStatus::Planned
        } else {
            EncounterStatus::Cancelled
        };
        if status == EncounterStatus::Cancelled {
            location = None;
        }
        admitted_at = None;
        started_at = None;
        discharged_at = None;
        discharge = None;
    } else if status == EncounterStatus::Unspecified && !encounter.movements.is_empty() {
        // Nothing in effect: everything was entered in error.
        status = EncounterStatus::Cancelled;
    }

    encounter.status = status as i32;
    encounter.location = location;
    encounter.location_history = history;
    encounter.admitted_at = admitted_at;
    encounter.started_at = started_at;
    encounter.discharged_at = discharged_at;
    encounter.discharge = discharge;
    encounter.expected_admission_at = expected_admission_at;
    encounter.expected_return_at = expected_return_at;
    encounter.planned_transfer = if status == EncounterStatus::Finished {
        None
    } else {
        planned_transfer.map(Box::new)
    };
    encounter.organisation = organisation;
    encounter.patient_class = patient_class;
    encounter.admission_method = admission_method;
    encounter.attending_clinician = attending_clinician;
}

/// Moves the patient to the movement's location, starting a stay there.
/// Within a stay (`continuing`), a move to where the patient already is
/// changes nothing; a stay that would last no time at all (two moves with
/// the same clinical time) gives way to the later one, so the later record
/// says where the patient went. A stay the discharge ended is kept (a
/// readmission within the same encounter).
fn move_to(
    history: &mut Vec<LocationStay>,
    location: &mut Option<Location>,
    movement: &Movement,
    continuing: bool,
) {
    let Some(to) = movement.location.as_ref() else {
        return;
    };
    if let Some(last) = history.last_mut().filter(|s| s.until.is_none()) {
        if continuing && last.location.as_ref() == Some(to) {
            return;
        }
        if Instant::of(last.from.as_ref()) == Instant::of(movement.occurred_at.as_ref()) {
            history.pop();
        } else {
            last.until = movement.occurred_at;
        }
    }
    *location = Some(to.clone());
    history.push(LocationStay {
        location: Some(to.clone()),
        from: movement.occurred_at,
        until: None,
        event_id: movement.event_id.clone(),
    });
}
