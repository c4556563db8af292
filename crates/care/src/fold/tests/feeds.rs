//! What real ADT feeds send. Cancellations carry the visit, the clinical
//! time of what they cancel and (A12) the locations, not an event id, and
//! arrive late or early; two messages may carry the same times; an
//! attendance (A04) turns into an admission; a class change (A06) moves the
//! patient; a move is planned (A15) and unplanned (A26); a visit moves to
//! another patient (A45); a patient's identifier changes (A47).

use baton_proto::events::v1::{
    AttendanceStarted, Location, PatientIdentifierChanged, TransferCancelled,
    TransferPlanCancelled, TransferPlanned, Transferred, VisitMoved,
};
use baton_proto::state::v1::CancelMatch;

use super::*;

const MINUTE: i64 = 60;

fn place(point_of_care: &str) -> Option<Location> {
    Some(ward(point_of_care))
}

/// An A12: the time of the transfer it cancels, where the patient was
/// before it (`from`, PV1-3) and where they were moved in error (`to`,
/// PV1-6), recorded at `recorded`.
fn transfer_entered_in_error(
    seconds: i64,
    from: Option<&str>,
    to: Option<&str>,
    recorded: i64,
) -> CareEvent {
    let cancel = encounter_event(
        NHS,
        "V1",
        seconds,
        Payload::TransferCancelled(TransferCancelled {
            cancelled_event_id: String::new(),
            from: from.and_then(place),
            to: to.and_then(place),
        }),
    );
    recorded_at(cancel, recorded)
}

/// A move from `from` (PV1-6) to `to`.
fn moved(seconds: i64, from: &str, to: &str) -> CareEvent {
    encounter_event(
        NHS,
        "V1",
        seconds,
        Payload::Transferred(Transferred {
            to: place(to),
            from: place(from),
        }),
    )
}

fn cancel_rules(encounter: &Encounter) -> Vec<(MovementKind, CancelMatch)> {
    encounter
        .cancellations
        .iter()
        .map(|c| (c.kind(), c.matched_by()))
        .collect()
}

fn encounter_of<'a>(state: &'a PatientCareState, encounter_id: &str) -> &'a Encounter {
    state
        .active_encounter
        .iter()
        .chain(&state.past_encounters)
        .find(|e| e.encounter_id == encounter_id)
        .unwrap_or_else(|| panic!("encounter {encounter_id} in {state:?}"))
}

/// The stay of the issue: admitted to AMU, moved to WARD-7 then WARD-9, the
/// move to WARD-9 entered in error (A12 with its time and locations),
/// discharged, the discharge entered in error (A13 with its time), and
/// discharged again, each message recorded a little after it happened.
/// `t` are the clinical times of the admission, the two moves and the two
/// discharges.
fn stay_with_corrections(t: [i64; 5], delays: [i64; 7]) -> Vec<CareEvent> {
    let [admitted_at, to_7, to_9, first_discharge, second_discharge] = t;
    let events = [
        admitted(NHS, "V1", admitted_at, "AMU"),
        moved(to_7, "AMU", "WARD-7"),
        moved(to_9, "WARD-7", "WARD-9"),
        transfer_entered_in_error(to_9, Some("WARD-7"), Some("WARD-9"), to_9),
        discharged(NHS, "V1", first_discharge, DischargeDestination::Home),
        discharge_cancelled(NHS, "V1", first_discharge, ""),
        discharged(NHS, "V1", second_discharge, DischargeDestination::CareHome),
    ];
    events
        .into_iter()
        .zip(delays)
        .map(|(event, delay)| {
            let recorded = event.recorded_at.unwrap().seconds + delay;
            recorded_at(event, recorded)
        })
        .collect()
}

fn assert_the_stay_ends_right(state: &PatientCareState, t: [i64; 5]) {
    let hours = |seconds: i64| (seconds - T0) / HOUR;
    let encounter = encounter_of(state, "V1");
    assert_eq!(encounter.status(), EncounterStatus::Finished);
    assert_eq!(
        stays(encounter),
        vec![
            stay("AMU", hours(t[0]), Some(hours(t[1]))),
            stay("WARD-7", hours(t[1]), Some(hours(t[4]))),
        ]
    );
    assert_eq!(encounter.discharged_at, ts(t[4]));
    assert_eq!(state.setting(), CareSetting::CareHome);
    assert_eq!(
        cancel_rules(encounter),
        vec![
            (MovementKind::Transfer, CancelMatch::ClinicalTimeAndLocation),
            (MovementKind::Discharge, CancelMatch::ClinicalTime),
        ]
    );
}

#[test]
fn every_arrival_order_of_a_corrected_stay_ends_in_the_same_state() {
    let t = [at(0), at(2), at(5), at(26), at(30)];
    let events = stay_with_corrections(t, [0, 10, 10, 30 * MINUTE, 5, 20 * MINUTE, 5]);
    let expected = arrival_order_free(fold(&events));
    assert_the_stay_ends_right(&expected, t);
    let orders = permutations(events.len());
    assert_eq!(orders.len(), 5_040);
    for order in orders {
        let arrived: Vec<_> = order.iter().map(|&i| events[i].clone()).collect();
        let (state, outcomes) = replay(&arrived);
        assert!(
            outcomes.iter().all(Result::is_ok),
            "order {order:?}: {outcomes:?}"
        );
        assert_eq!(arrival_order_free(state), expected, "order {order:?}");
    }
}

proptest! {
    /// The stay above at any clinical times (in order: admission, moves,
    /// discharges), recorded after any delays, arriving in any order: the
    /// cancellations always find what they cancel, and every order ends in
    /// the same state and location history.
    #[test]
    fn a_corrected_stay_ends_alike_in_any_arrival_order(
        gaps in prop::array::uniform5(1i64..48 * HOUR),
        delays in prop::array::uniform7(0i64..3 * DAY),
        order in Just((0..7).collect::<Vec<usize>>()).prop_shuffle(),
    ) {
        let mut t = [0i64; 5];
        let mut clock = T0;
        for (slot, gap) in t.iter_mut().zip(gaps) {
            clock += gap;
            *slot = clock;
        }
        let events = stay_with_corrections(t, delays);
        // The log order of a feed: by when each was recorded.
        let mut in_log_order = events.clone();
        in_log_order.sort_by_key(|e| e.recorded_at.unwrap().seconds);
        let expected = arrival_order_free(fold(&in_log_order));
        let arrived: Vec<_> = order.iter().map(|&i| events[i].clone()).collect();
        let (state, outcomes) = replay(&arrived);
        prop_assert!(outcomes.iter().all(Result::is_ok), "{:?}", outcomes);
        let state = arrival_order_free(state);
        prop_assert_eq!(&state, &expected);
        let hours = |seconds: i64| (seconds - T0) / HOUR;
        let encounter = encounter_of(&state, "V1");
        prop_assert_eq!(
            encounter
                .location_history
                .iter()
                .map(|s| (s.location.as_ref().unwrap().point_of_care.clone(), s.from.unwrap().seconds))
                .collect::<Vec<_>>(),
            vec![("AMU".to_owned(), t[0]), ("WARD-7".to_owned(), t[1])],
            "times {:?}", t.map(hours)
        );
        prop_assert_eq!(encounter.discharged_at, ts(t[4]));
    }
}

#[test]
fn a_cancellation_takes_the_movement_at_its_clinical_time_not_the_latest() {
    // Two discharges (a readmission within the visit); the A13 carries the
    // time of the first and arrives after the second.
    let first = discharged(NHS, "V1", at(10), DischargeDestination::Home);
    let state = fold(&[
        admitted(NHS, "V1", at(0), "WARD-1"),
        first.clone(),
        admitted(NHS, "V1", at(12), "WARD-2"),
        discharged(NHS, "V1", at(20), DischargeDestination::CareHome),
        recorded_at(discharge_cancelled(NHS, "V1", at(10), ""), at(21)),
    ]);
    let encounter = encounter_of(&state, "V1");
    let cancelled: Vec<_> = encounter
        .movements
        .iter()
        .filter(|m| !m.cancelled_by_event_id.is_empty())
        .map(|m| m.event_id.clone())
        .collect();
    assert_eq!(cancelled, vec![valid(&first).event().event_id.clone()]);
    assert_eq!(encounter.discharged_at, ts(at(20)));
    assert_eq!(
        cancel_rules(encounter),
        [(MovementKind::Discharge, CancelMatch::ClinicalTime)]
    );
}

#[test]
fn a_transfer_cancellation_sent_at_its_own_time_finds_the_move_by_its_locations() {
    // The A12 is stamped when the clerk corrected it (11:30), not with the
    // move's time; PV1-3 says where the patient was before the move.
    let state = fold(&[
        admitted(NHS, "V1", at(0), "AMU"),
        moved(at(1), "AMU", "WARD-7"),
        moved(at(2), "WARD-7", "WARD-9"),
        moved(at(3), "WARD-9", "WARD-12"),
        transfer_entered_in_error(at(4), Some("WARD-7"), None, at(4)),
    ]);
    let encounter = encounter_of(&state, "V1");
    assert_eq!(
        stays(encounter),
        vec![
            stay("AMU", 0, Some(1)),
            stay("WARD-7", 1, Some(3)),
            stay("WARD-12", 3, None)
        ],
        "the move from WARD-7 to WARD-9 is the one cancelled"
    );
    assert_eq!(
        cancel_rules(encounter),
        [(MovementKind::Transfer, CancelMatch::Location)]
    );
}

#[test]
fn a_transfer_without_prior_location_is_matched_by_where_the_patient_was() {
    // The A02s do not fill PV1-6: the location before each move is the one
    // the feed gave last.
    let state = fold(&[
        admitted(NHS, "V1", at(0), "AMU"),
        transferred(NHS, "V1", at(1), "WARD-7"),
        transferred(NHS, "V1", at(2), "WARD-9"),
        transfer_entered_in_error(at(3), Some("AMU"), Some("WARD-7"), at(3)),
    ]);
    let encounter = encounter_of(&state, "V1");
    assert_eq!(
        stays(encounter),
        vec![stay("AMU", 0, Some(2)), stay("WARD-9", 2, None)]
    );
}

#[test]
fn with_nothing_matching_the_latest_in_effect_by_then_is_cancelled() {
    let state = fold(&[
        admitted(NHS, "V1", at(0), "AMU"),
        transferred(NHS, "V1", at(1), "WARD-7"),
        transferred(NHS, "V1", at(2), "WARD-9"),
        // Stamped with its own time, no locations.
        transfer_cancelled(NHS, "V1", at(3), ""),
        // A later move, after the correction in clinical time: not it.
        transferred(NHS, "V1", at(4), "WARD-12"),
    ]);
    let encounter = encounter_of(&state, "V1");
    assert_eq!(
        stays(encounter),
        vec![
            stay("AMU", 0, Some(1)),
            stay("WARD-7", 1, Some(4)),
            stay("WARD-12", 4, None)
        ]
    );
    assert_eq!(
        cancel_rules(encounter),
        [(MovementKind::Transfer, CancelMatch::LatestInEffect)]
    );
}

#[test]
fn a_cancellation_arriving_first_waits_for_what_it_cancels() {
    let discharge = discharged(NHS, "V1", at(10), DischargeDestination::Home);
    let cancel = recorded_at(discharge_cancelled(NHS, "V1", at(10), ""), at(11));
    // The A13 arrives before anything of the visit.
    let mut state = fold(std::slice::from_ref(&cancel));
    let waiting = encounter_of(&state, "V1");
    assert_eq!(waiting.status(), EncounterStatus::Unspecified);
    assert!(waiting.movements.is_empty());
    assert_eq!(
        cancel_rules(waiting),
        [(MovementKind::Discharge, CancelMatch::Pending)]
    );
    assert_eq!(state.setting(), CareSetting::Community);

    state = fold_onto(state, &[admitted(NHS, "V1", at(0), "WARD-1")]);
    assert_eq!(active(&state).status(), EncounterStatus::InProgress);
    state = fold_onto(state, &[discharge]);
    // The discharge was entered in error: still in hospital.
    assert_eq!(active(&state).status(), EncounterStatus::InProgress);
    assert_eq!(state.setting(), CareSetting::Hospital);
    assert_eq!(
        cancel_rules(active(&state)),
        [(MovementKind::Discharge, CancelMatch::ClinicalTime)]
    );
    // A cancellation naming an event that has not arrived waits too.
    let named = fold(&[
        admitted(NHS, "V2", at(0), "WARD-1"),
        admission_cancelled(
            NHS,
            "V2",
            at(1),
            &valid(&admitted(NHS, "V2", at(0), "WARD-9"))
                .event()
                .event_id,
        ),
    ]);
    assert_eq!(active(&named).status(), EncounterStatus::InProgress);
    assert_eq!(
        cancel_rules(active(&named)),
        [(MovementKind::Admission, CancelMatch::Pending)]
    );
}

#[test]
fn the_same_correction_sent_twice_cancels_once() {
    let first_discharge = discharged(NHS, "V1", at(10), DischargeDestination::Home);
    let cancel = discharge_cancelled(NHS, "V1", at(10), "");
    // Sent again under another control id: another event, the same meaning.
    let again = recorded_at(cancel.clone(), at(10) + MINUTE);
    let state = fold(&[
        admitted(NHS, "V1", at(0), "WARD-1"),
        discharged(NHS, "V1", at(5), DischargeDestination::Home),
        admitted(NHS, "V1", at(7), "WARD-1"),
        first_discharge,
        cancel,
        again,
    ]);
    let encounter = encounter_of(&state, "V1");
    assert_eq!(
        cancel_rules(encounter),
        [
            (MovementKind::Discharge, CancelMatch::ClinicalTime),
            (MovementKind::Discharge, CancelMatch::Repeat)
        ]
    );
    // The earlier discharge stands; the patient is in hospital again.
    assert_eq!(encounter.status(), EncounterStatus::InProgress);
    assert_eq!(
        encounter
            .movements
            .iter()
            .filter(|m| !m.cancelled_by_event_id.is_empty())
            .count(),
        1
    );
}

// ---------------------------------------------------------------------------
// Ties: the later record wins
// ---------------------------------------------------------------------------

#[test]
fn an_admission_sent_again_with_a_corrected_ward_at_the_same_time_wins() {
    // Both stamped 10:00:52, sent a minute apart: the second is later in the log.
    let first = admitted(NHS, "V1", at(10) + 52, "WARD-1");
    let corrected = admitted(NHS, "V1", at(10) + 52, "WARD-2");
    for (events, ward) in [
        ([first.clone(), corrected.clone()], "WARD-2"),
        ([corrected, first], "WARD-1"),
    ] {
        let state = fold(&events);
        let encounter = active(&state);
        assert_eq!(point_of_care(encounter), ward);
        assert_eq!(encounter.location_history.len(), 1, "{encounter:?}");
        assert_eq!(
            encounter.location_history[0]
                .location
                .as_ref()
                .unwrap()
                .point_of_care,
            ward
        );
    }
}

#[test]
fn facts_with_the_same_times_go_to_the_later_record() {
    let low = frailty_assessed(NHS, at(3), 4);
    let high = frailty_assessed(NHS, at(3), 7);
    let scale = |events: &[CareEvent]| fold(events).state.frailty.unwrap().clinical_frailty_scale;
    assert_eq!(scale(&[low.clone(), high.clone()]), 7);
    assert_eq!(scale(&[high, low]), 4);
    let smith = details_updated(at(3), demographics("Smith", ""));
    let jones = details_updated(at(3), demographics("Jones", ""));
    let name = |events: &[CareEvent]| fold(events).state.demographics.unwrap().family_name;
    assert_eq!(name(&[smith.clone(), jones.clone()]), "Jones");
    assert_eq!(name(&[jones, smith]), "Smith");
}

// ---------------------------------------------------------------------------
// Attendances, class changes, planned moves
// ---------------------------------------------------------------------------

fn attendance(encounter_id: &str, seconds: i64, point_of_care: &str) -> CareEvent {
    encounter_event(
        NHS,
        encounter_id,
        seconds,
        Payload::AttendanceStarted(AttendanceStarted {
            location: place(point_of_care),
            patient_class: PatientClass::Emergency as i32,
            attending_clinician: String::new(),
        }),
    )
}

fn class_changed_at(
    encounter_id: &str,
    seconds: i64,
    class: PatientClass,
    to: &str,
    from: &str,
) -> CareEvent {
    encounter_event(
        NHS,
        encounter_id,
        seconds,
        Payload::PatientClassChanged(PatientClassChanged {
            patient_class: class as i32,
            location: place(to),
            from: place(from),
        }),
    )
}

#[test]
fn an_attendance_becomes_an_inpatient_stay_in_the_same_encounter() {
    let arrival = attendance("V1", at(0), "ED");
    let state = fold(std::slice::from_ref(&arrival));
    let encounter = active(&state);
    assert_eq!(encounter.status(), EncounterStatus::InProgress);
    assert_eq!(encounter.patient_class(), PatientClass::Emergency);
    assert_eq!(point_of_care(encounter), "ED");
    assert_eq!(encounter.admitted_at, None, "attending, not admitted");
    assert_eq!(state.setting(), CareSetting::Hospital);
    assert_eq!(state.setting_since, ts(at(0)));

    let admission = admitted(NHS, "V1", at(4), "AMU");
    let admitted_state = fold(&[arrival.clone(), admission.clone()]);
    assert!(
        admitted_state.past_encounters.is_empty(),
        "no second encounter"
    );
    let encounter = active(&admitted_state);
    assert_eq!(encounter.patient_class(), PatientClass::Inpatient);
    assert_eq!(encounter.admitted_at, ts(at(4)));
    assert_eq!(
        stays(encounter),
        vec![stay("ED", 0, Some(4)), stay("AMU", 4, None)]
    );
    // In hospital since the arrival.
    assert_eq!(admitted_state.setting_since, ts(at(0)));

    // A11 with the admission's time cancels the admission, not the attendance.
    let back_in_ed = fold_onto(admitted_state, &[admission_cancelled(NHS, "V1", at(4), "")]);
    let encounter = active(&back_in_ed);
    assert_eq!(point_of_care(encounter), "ED");
    assert_eq!(encounter.patient_class(), PatientClass::Emergency);
    assert_eq!(encounter.admitted_at, None);

    // A11 of the attendance: it never happened.
    let cancelled = fold(&[arrival.clone(), admission_cancelled(NHS, "V1", at(0), "")]);
    assert_eq!(cancelled.active_encounter, None);
    assert_eq!(
        cancelled.past_encounters[0].status(),
        EncounterStatus::Cancelled
    );
    assert_eq!(cancelled.setting(), CareSetting::Community);

    // A03 ends it.
    let home = fold(&[
        arrival,
        discharged(NHS, "V1", at(3), DischargeDestination::Home),
    ]);
    assert_eq!(home.past_encounters[0].status(), EncounterStatus::Finished);
    assert_eq!(home.setting(), CareSetting::Community);
    assert_eq!(
        home.last_discharge.as_ref().unwrap().location,
        place("ED"),
        "discharged from ED"
    );
}

#[test]
fn a_class_change_to_inpatient_moves_the_patient_to_the_ward() {
    let state = fold(&[
        attendance("V1", at(0), "ED"),
        class_changed_at("V1", at(3), PatientClass::Inpatient, "WARD-3", "ED"),
    ]);
    let encounter = active(&state);
    assert_eq!(point_of_care(encounter), "WARD-3");
    assert_eq!(encounter.patient_class(), PatientClass::Inpatient);
    assert_eq!(encounter.admitted_at, ts(at(3)));
    assert_eq!(
        stays(encounter),
        vec![stay("ED", 0, Some(3)), stay("WARD-3", 3, None)]
    );
    // A change of class where the patient already is: no move.
    let stayed = fold(&[
        admitted(NHS, "V1", at(0), "WARD-3"),
        class_changed_at("V1", at(3), PatientClass::DayCase, "WARD-3", ""),
    ]);
    assert_eq!(stays(active(&stayed)), vec![stay("WARD-3", 0, None)]);
    assert_eq!(active(&stayed).patient_class(), PatientClass::DayCase);
    // A07 back to outpatient, moved to the clinic.
    let back = fold(&[
        admitted(NHS, "V1", at(0), "WARD-3"),
        class_changed_at("V1", at(5), PatientClass::Outpatient, "OPD", "WARD-3"),
    ]);
    assert_eq!(point_of_care(active(&back)), "OPD");
    assert_eq!(active(&back).patient_class(), PatientClass::Outpatient);
}

fn planned(seconds: i64, to: &str, for_when: Option<i64>) -> CareEvent {
    encounter_event(
        NHS,
        "V1",
        seconds,
        Payload::TransferPlanned(TransferPlanned {
            to: place(to),
            planned_at: for_when.and_then(ts),
        }),
    )
}

fn plan_cancelled(seconds: i64, to: Option<&str>) -> CareEvent {
    encounter_event(
        NHS,
        "V1",
        seconds,
        Payload::TransferPlanCancelled(TransferPlanCancelled {
            cancelled_event_id: String::new(),
            to: to.and_then(place),
        }),
    )
}

#[test]
fn a_planned_move_shows_until_it_happens_or_is_called_off() {
    let admission = admitted(NHS, "V1", at(0), "AMU");
    let plan = planned(at(2), "WARD-7", Some(at(5)));
    let state = fold(&[admission.clone(), plan.clone()]);
    let encounter = active(&state);
    let pending = encounter.planned_transfer.as_ref().unwrap();
    assert_eq!(pending.to, place("WARD-7"));
    assert_eq!(pending.planned_at, ts(at(5)));
    assert_eq!(pending.requested_at, ts(at(2)));
    assert_eq!(point_of_care(encounter), "AMU", "not moved yet");

    let moved_state = fold(&[
        admission.clone(),
        plan.clone(),
        transferred(NHS, "V1", at(5), "WARD-7"),
    ]);
    assert_eq!(active(&moved_state).planned_transfer, None);
    assert_eq!(point_of_care(active(&moved_state)), "WARD-7");

    let called_off = fold(&[
        admission.clone(),
        plan.clone(),
        plan_cancelled(at(3), Some("WARD-7")),
    ]);
    assert_eq!(active(&called_off).planned_transfer, None);
    assert_eq!(
        cancel_rules(active(&called_off)),
        [(MovementKind::TransferPlanned, CancelMatch::Location)]
    );
    // The call-off arriving first waits for the plan.
    let late_plan = fold(&[
        admission.clone(),
        plan_cancelled(at(3), Some("WARD-7")),
        plan.clone(),
    ]);
    assert_eq!(active(&late_plan).planned_transfer, None);

    let discharged_state = fold(&[
        admission,
        plan,
        discharged(NHS, "V1", at(4), DischargeDestination::Home),
    ]);
    assert_eq!(discharged_state.past_encounters[0].planned_transfer, None);
}

// ---------------------------------------------------------------------------
// Visits moved between patients, identifiers changed
// ---------------------------------------------------------------------------

#[test]
fn a_visit_filed_under_the_wrong_patient_moves_with_its_history() {
    let wrong = RETIRED_NHS;
    let mut source = empty_state(wrong);
    source = fold_onto(
        source,
        &[
            admitted(wrong, "V9", at(0), "AMU"),
            transferred(wrong, "V9", at(2), "WARD-7"),
            admitted(wrong, "V1", at(-100), "WARD-1"),
            discharged(wrong, "V1", at(-90), DischargeDestination::Home),
        ],
    );
    let mut target = fold(&[registered(at(-200), demographics("Smith", "LS1 4AP"))]);
    let move_visit = encounter_event(
        NHS,
        "V77",
        at(3),
        Payload::VisitMoved(VisitMoved {
            from: Some(identity(wrong)),
            from_encounter_id: "V9".into(),
        }),
    );
    let keys: Vec<_> = valid(&move_visit)
        .log_keys()
        .iter()
        .map(|k| k.to_string())
        .collect();
    assert_eq!(keys, [NHS, wrong]);

    // The source: the encounter leaves, handed over as data.
    let effects = apply_changed(&mut source, &move_visit);
    let [
        Effect::Append {
            key,
            event: hand_over,
        },
    ] = effects.as_slice()
    else {
        panic!("one hand-over, got {effects:?}");
    };
    assert_eq!(key.as_str(), NHS);
    assert!(
        source
            .active_encounter
            .iter()
            .chain(&source.past_encounters)
            .all(|e| e.encounter_id != "V9")
    );
    assert_eq!(source.setting(), CareSetting::Community);
    assert_eq!(source.moved_visits[0].to_patient_key, NHS);
    assert_eq!(source.moved_visits[0].to_encounter_id, "V77");
    // A late message for the moved visit under the wrong patient is refused.
    assert!(matches!(
        apply_next(&mut source, &transferred(wrong, "V9", at(4), "WARD-9")),
        Err(Rejection::VisitMovedAway { .. })
    ));
    // Producers cannot forge the hand-over.
    assert!(ValidEvent::from_producer(hand_over.clone()).is_err());

    // The target: the move itself changes no care, the hand-over brings it.
    assert!(apply_changed(&mut target, &move_visit).is_empty());
    assert!(apply_changed(&mut target, hand_over).is_empty());
    let encounter = active(&target);
    assert_eq!(encounter.encounter_id, "V77");
    assert_eq!(
        stays(encounter),
        vec![stay("AMU", 0, Some(2)), stay("WARD-7", 2, None)]
    );
    assert_eq!(target.setting(), CareSetting::Hospital);
    assert_eq!(target.demographics.as_ref().unwrap().family_name, "Smith");
    // Sent again after a crash: a duplicate.
    assert_eq!(apply_next(&mut target, hand_over), Ok(Applied::Duplicate));

    // A visit cannot move to the patient it is already filed under.
    let mut to_itself = move_visit;
    to_itself.patient = Some(identity(wrong));
    assert!(ValidEvent::new(to_itself).is_err());
}

fn local(value: &str) -> LocalIdentifier {
    LocalIdentifier {
        authority: ORGANISATION.into(),
        value: value.into(),
    }
}

fn identifier_changed(new: PatientIdentity, previous: PatientIdentity, seconds: i64) -> CareEvent {
    let mut event = event(
        NHS,
        seconds,
        Some(Payload::PatientIdentifierChanged(
            PatientIdentifierChanged {
                previous: Some(previous),
            },
        )),
    );
    event.patient = Some(new);
    event.event_id = Uuid::new_v5(&BATON_NAMESPACE, format!("{event:?}").as_bytes()).to_string();
    event
}

#[test]
fn a_changed_identifier_moves_the_record_to_its_new_key_with_its_history() {
    let only = |value: &str| PatientIdentity {
        local_ids: vec![local(value)],
        ..Default::default()
    };
    // Known by hospital number only: the number is the key.
    let mut old = empty_state("RXX:H1");
    let mut admission = admitted("H1", "V1", at(0), "WARD-1");
    admission.patient = Some(only("H1"));
    old = fold_onto(old, &[admission]);
    assert_eq!(old.patient_key, "RXX:H1");

    let change = identifier_changed(only("H2"), only("H1"), at(5));
    let keys: Vec<_> = valid(&change)
        .log_keys()
        .iter()
        .map(|k| k.to_string())
        .collect();
    assert_eq!(keys, ["RXX:H2", "RXX:H1"]);
    let effects = apply_changed(&mut old, &change);
    let [
        Effect::Append {
            key,
            event: hand_over,
        },
    ] = effects.as_slice()
    else {
        panic!("one hand-over, got {effects:?}");
    };
    assert_eq!(key.as_str(), "RXX:H2");
    let link = old.merged_into.as_ref().unwrap();
    assert_eq!(link.patient_key, "RXX:H2");
    assert_eq!(link.kind(), MergeKind::IdentifierChanged);

    let mut new = empty_state("RXX:H2");
    assert!(apply_changed(&mut new, &change).is_empty());
    assert!(apply_changed(&mut new, hand_over).is_empty());
    assert_eq!(
        point_of_care(active(&new)),
        "WARD-1",
        "the history came along"
    );
    assert_eq!(new.merged_from[0].kind(), MergeKind::IdentifierChanged);
    assert_eq!(
        new.identity.as_ref().unwrap().local_ids,
        vec![local("H2")],
        "the previous number is no longer the patient's"
    );

    // Keyed by NHS number, the hospital number changes in place.
    let with_nhs = |value: &str| PatientIdentity {
        nhs_number: NHS.into(),
        local_ids: vec![local(value)],
        ..Default::default()
    };
    let mut admission = admitted(NHS, "V1", at(0), "WARD-1");
    admission.patient = Some(with_nhs("H1"));
    let change = identifier_changed(with_nhs("H2"), with_nhs("H1"), at(5));
    assert_eq!(valid(&change).log_keys().len(), 1);
    let state = fold(&[admission, change]);
    assert_eq!(
        state.identity.as_ref().unwrap().local_ids,
        vec![local("H2")]
    );
    assert_eq!(state.merged_into, None);
    assert_eq!(point_of_care(active(&state)), "WARD-1");
}
