use baton_proto::events::v1::PatientClass;
use baton_proto::events::v1::care_event::Payload;

use super::*;

fn only<'a>(mapped: &'a Mapped, payload: &str) -> &'a Payload {
    mapped
        .events()
        .find(|e| baton_care::payload_name(e.payload.as_ref().unwrap()) == payload)
        .and_then(|e| e.payload.as_ref())
        .unwrap_or_else(|| panic!("no {payload} in {:?}", payloads(mapped)))
}

fn warned_at(mapped: &Mapped) -> Vec<String> {
    mapped
        .warnings
        .iter()
        .map(|w| w.location.as_ref().unwrap().to_string())
        .collect()
}

#[test]
fn a_death_is_recorded_only_when_pid_30_says_so() {
    let pv1 = pv1_with(&[(19, "V1"), (36, "1"), (37, "19")]);
    let died_pv1 = pv1_with(&[(19, "V1"), (36, "4"), (37, "79")]);
    // (PID-29, PID-30, PV1, a death?, a warning at PID-30?)
    let cases = [
        ("", "", &pv1, false, false),
        ("20260715110000", "Y", &pv1, true, false),
        ("", "Y", &pv1, true, false),
        // A stale date of death left behind: PID-30 N says not dead.
        ("20200101000000", "N", &pv1, false, true),
        ("20260715110000", "", &pv1, true, false),
        // The discharge method says died, PID-30 empty: a death.
        ("", "", &died_pv1, true, false),
        // ...but PID-30 N overrules it.
        ("", "N", &died_pv1, false, true),
    ];
    for (date, indicator, pv1, dies, warns) in cases {
        let pid = with_fields(PID, &[(29, date), (30, indicator)]);
        let case = format!(
            "PID-29 {date:?} PID-30 {indicator:?} PV1-36 {:?}",
            &pv1[pv1.len() - 6..]
        );
        let mapped = map_ok(&message(
            "ADT^A03",
            "D1",
            &["EVN|A03|20260715113000", &pid, pv1],
        ));
        let expected: &[&str] = if dies {
            &["discharged", "died"]
        } else {
            &["discharged"]
        };
        assert_eq!(payloads(&mapped), expected, "{case}");
        assert_eq!(
            warned_at(&mapped).contains(&"PID-30".to_owned()),
            warns,
            "{case}: {:?}",
            mapped.warnings
        );
        if dies && !date.is_empty() {
            let Payload::Died(died) = only(&mapped, "died") else {
                panic!()
            };
            assert_eq!(died.died_at.unwrap().seconds, utc("2026-07-15T10:00:00Z"));
        }
    }
    // A demographics update says so too (a death notified by the PAS).
    let pid = with_fields(PID, &[(29, "20260715110000"), (30, "Y")]);
    let mapped = map_ok(&message("ADT^A08", "D2", &["EVN||20260715120000", &pid]));
    assert_eq!(payloads(&mapped), ["details_updated", "died"]);
    let pid = with_fields(PID, &[(29, "20260715110000"), (30, "N")]);
    let mapped = map_ok(&message("ADT^A31", "D3", &["EVN||20260715120000", &pid]));
    assert_eq!(payloads(&mapped), ["details_updated"]);
}

#[test]
fn an_a04_with_a_visit_number_begins_an_attendance() {
    let ed = "PV1|1|E|ED^^^RXX01||||C1^WHO^DR||||||||||||V500";
    let mapped = map_ok(&message(
        "ADT^A04",
        "R1",
        &["EVN|A04|20260715090000", PID, ed],
    ));
    assert_eq!(payloads(&mapped), ["registered", "attendance_started"]);
    let event = mapped.events().nth(1).unwrap();
    assert_eq!(event.encounter_id, "V500");
    let Some(Payload::AttendanceStarted(attendance)) = &event.payload else {
        panic!()
    };
    assert_eq!(attendance.location.as_ref().unwrap().point_of_care, "ED");
    assert_eq!(attendance.patient_class, PatientClass::Emergency as i32);
    assert_eq!(attendance.attending_clinician, "WHO, DR (C1)");
    // Without a visit number: a registration only.
    let mapped = map_ok(&message(
        "ADT^A04",
        "R2",
        &["EVN|A04|20260715090000", PID, "PV1|1|O|CLINIC-4"],
    ));
    assert_eq!(payloads(&mapped), ["registered"]);
    // A visit number without a location: registered, with a warning.
    let mapped = map_ok(&message(
        "ADT^A04",
        "R3",
        &[
            "EVN|A04|20260715090000",
            PID,
            "PV1|1|O|||||||||||||||||V501",
        ],
    ));
    assert_eq!(payloads(&mapped), ["registered"]);
    assert_eq!(warned_at(&mapped), ["PV1-3"]);
    // A28 (add person information) never begins an attendance.
    let mapped = map_ok(&message("ADT^A28", "R4", &["EVN||20260715090000", PID, ed]));
    assert_eq!(payloads(&mapped), ["registered"]);
}

#[test]
fn a_class_change_carries_the_new_location_and_the_one_before() {
    let pv1 = "PV1|1|I|WARD-3^^^RXX01|||ED^^^RXX01|||||||||||||V500";
    let mapped = map_ok(&message(
        "ADT^A06",
        "C1",
        &["EVN|A06|20260715120000", PID, pv1],
    ));
    let Payload::PatientClassChanged(changed) = only(&mapped, "patient_class_changed") else {
        panic!()
    };
    assert_eq!(changed.patient_class, PatientClass::Inpatient as i32);
    assert_eq!(changed.location.as_ref().unwrap().point_of_care, "WARD-3");
    assert_eq!(changed.from.as_ref().unwrap().point_of_care, "ED");
}

#[test]
fn cancellations_carry_the_time_and_places_of_what_they_cancel() {
    // A12: EVN-6 the time of the transfer; PV1-3 where the patient was
    // before it, PV1-6 where they were moved in error.
    let pv1 = "PV1|1|I|WARD-7^^^RXX01|||WARD-9^^^RXX01|||||||||||||V1";
    let mapped = map_ok(&message(
        "ADT^A12",
        "X1",
        &["EVN|A12|20260715113000||||20260715100000", PID, pv1],
    ));
    let event = mapped.events().next().unwrap();
    assert_eq!(
        event.occurred_at.unwrap().seconds,
        utc("2026-07-15T09:00:00Z")
    );
    let Some(Payload::TransferCancelled(cancel)) = &event.payload else {
        panic!()
    };
    assert_eq!(cancel.from.as_ref().unwrap().point_of_care, "WARD-7");
    assert_eq!(cancel.to.as_ref().unwrap().point_of_care, "WARD-9");
    // A11 without EVN-6: the admission time its PV1-44 still carries.
    let pv1 = pv1_with(&[(19, "V1"), (44, "20260715080000")]);
    let mapped = map_ok(&message(
        "ADT^A11",
        "X2",
        &["EVN|A11|20260715113000", PID, &pv1],
    ));
    let event = mapped.events().next().unwrap();
    assert_eq!(
        event.occurred_at.unwrap().seconds,
        utc("2026-07-15T07:00:00Z")
    );
    // A13 without EVN-6: the discharge time of PV1-45.
    let pv1 = pv1_with(&[(19, "V1"), (45, "20260715090000")]);
    let mapped = map_ok(&message(
        "ADT^A13",
        "X3",
        &["EVN|A13|20260715113000", PID, &pv1],
    ));
    let event = mapped.events().next().unwrap();
    assert_eq!(
        event.occurred_at.unwrap().seconds,
        utc("2026-07-15T08:00:00Z")
    );
}

#[test]
fn a_pending_transfer_and_its_cancellation_name_the_pending_location() {
    let pv1 = pv1_with(&[(19, "V1"), (42, "WARD-12^^^RXX01")]);
    let mapped = map_ok(&message(
        "ADT^A15",
        "P1",
        &["EVN|A15|20260715100000|20260715140000", PID, &pv1],
    ));
    let Payload::TransferPlanned(planned) = only(&mapped, "transfer_planned") else {
        panic!()
    };
    assert_eq!(planned.to.as_ref().unwrap().point_of_care, "WARD-12");
    assert_eq!(
        planned.planned_at.unwrap().seconds,
        utc("2026-07-15T13:00:00Z")
    );
    let mapped = map_ok(&message(
        "ADT^A26",
        "P2",
        &["EVN|A26|20260715110000", PID, &pv1],
    ));
    let Payload::TransferPlanCancelled(cancel) = only(&mapped, "transfer_plan_cancelled") else {
        panic!()
    };
    assert_eq!(cancel.to.as_ref().unwrap().point_of_care, "WARD-12");
    // An A15 that does not say where to is refused naming PV1-42.
    let m = message(
        "ADT^A15",
        "P3",
        &["EVN|A15|20260715100000", PID, &pv1_with(&[(19, "V1")])],
    );
    let problems = map(&m, &MapConfig::default()).unwrap().check().unwrap_err();
    assert_eq!(problems[0].location, Some(Location::field("PV1", 42)));
}

#[test]
fn a_swap_moves_both_patients_in_one_message() {
    let m = message(
        "ADT^A17^ADT_A17",
        "S1",
        &[
            "EVN|A17|20260715100000",
            "PID|1||9434765919^^^NHS^NH",
            "PV1|1|I|WARD-2^^B2^RXX01|||WARD-1^^B1^RXX01|||||||||||||V1",
            "PID|2||4010232137^^^NHS^NH",
            "PV1|1|I|WARD-1^^B1^RXX01|||WARD-2^^B2^RXX01|||||||||||||V2",
        ],
    );
    let mapped = map_ok(&m);
    assert_eq!(payloads(&mapped), ["transferred", "transferred"]);
    let moves: Vec<_> = mapped
        .events()
        .map(|e| {
            let Some(Payload::Transferred(t)) = &e.payload else {
                panic!()
            };
            (
                e.patient.as_ref().unwrap().nhs_number.clone(),
                e.encounter_id.clone(),
                t.to.as_ref().unwrap().bed.clone(),
            )
        })
        .collect();
    assert_eq!(
        moves,
        [
            ("9434765919".into(), "V1".into(), "B2".into()),
            ("4010232137".into(), "V2".into(), "B1".into())
        ]
    );
    // One patient only: refused.
    let one = message(
        "ADT^A17",
        "S2",
        &["EVN|A17|20260715100000", PID, &pv1_with(&[(19, "V1")])],
    );
    let refused = map(&one, &MapConfig::default()).unwrap_err();
    assert_eq!(refused.code, AckCode::Error);
    assert!(refused.to_string().contains("two PID"), "{refused}");
    // The second patient's visit number is checked where it was sent.
    let m = message(
        "ADT^A17",
        "S3",
        &[
            "EVN|A17|20260715100000",
            "PID|1||9434765919^^^NHS^NH",
            "PV1|1|I|WARD-2|||WARD-1|||||||||||||V1",
            "PID|2||4010232137^^^NHS^NH",
            "PV1|1|I|WARD-1|||WARD-2",
        ],
    );
    let problems = map(&m, &MapConfig::default()).unwrap().check().unwrap_err();
    assert_eq!(problems[0].location, Some(Location::nth("PV1", 2, 19)));
}

#[test]
fn a_visit_move_names_both_patients_and_both_visit_numbers() {
    let m = message(
        "ADT^A45^ADT_A45",
        "V1",
        &[
            "EVN|A45|20260715100000",
            "PID|1||9434765919^^^NHS^NH",
            "MRG|4010232137^^^NHS^NH||||V9",
            &pv1_with(&[(19, "V77")]),
        ],
    );
    let mapped = map_ok(&m);
    let event = mapped.events().next().unwrap();
    assert_eq!(event.patient.as_ref().unwrap().nhs_number, "9434765919");
    assert_eq!(event.encounter_id, "V77");
    let Some(Payload::VisitMoved(moved)) = &event.payload else {
        panic!()
    };
    assert_eq!(moved.from.as_ref().unwrap().nhs_number, "4010232137");
    assert_eq!(moved.from_encounter_id, "V9");
    // Without a PV1 visit number it keeps its number.
    let m = message(
        "ADT^A45",
        "V2",
        &[
            "EVN|A45|20260715100000",
            "PID|1||9434765919^^^NHS^NH",
            "MRG|4010232137^^^NHS^NH||||V9",
        ],
    );
    assert_eq!(map_ok(&m).events().next().unwrap().encounter_id, "V9");
    // Without MRG-5 there is nothing to move.
    let m = message(
        "ADT^A45",
        "V3",
        &[
            "EVN|A45|20260715100000",
            "PID|1||9434765919^^^NHS^NH",
            "MRG|4010232137^^^NHS^NH",
        ],
    );
    let refused = map(&m, &MapConfig::default()).unwrap_err();
    assert_eq!(
        refused.problems[0].location,
        Some(Location::field("MRG", 5))
    );
}

#[test]
fn an_identifier_change_names_the_new_and_the_previous_identifier() {
    let m = message(
        "ADT^A47^ADT_A30",
        "I1",
        &[
            "EVN|A47|20260715100000",
            "PID|1||H2^^^RXX^MR",
            "MRG|H1^^^RXX^MR",
        ],
    );
    let mapped = map_ok(&m);
    let event = mapped.events().next().unwrap();
    assert_eq!(event.patient.as_ref().unwrap().local_ids[0].value, "H2");
    let Some(Payload::PatientIdentifierChanged(changed)) = &event.payload else {
        panic!()
    };
    assert_eq!(changed.previous.as_ref().unwrap().local_ids[0].value, "H1");
    let no_mrg1 = message(
        "ADT^A47",
        "I2",
        &["EVN||2026", "PID|1||H2^^^RXX^MR", "MRG|"],
    );
    let refused = map(&no_mrg1, &MapConfig::default()).unwrap_err();
    assert_eq!(
        refused.problems[0].location,
        Some(Location::field("MRG", 1))
    );
}
