use baton_proto::events::v1::care_event::Payload;
use baton_proto::events::v1::{
    AdministrativeSex, AdmissionMethod, DischargeDestination, DischargeMethod, NhsNumberStatus,
    PatientClass, ReferralPriority,
};

use super::*;

/// The triggers of real UK ADT feeds beyond the first set: deaths as PID-30
/// says, attendances, class changes that move, cancellations with their
/// times and locations, planned moves, swaps, visit moves, identifier
/// changes.
mod feeds;

const MSH: &str = "MSH|^~\\&|PAS|RXX|BATON|BATON|20260715093100||";

fn message(kind: &str, control: &str, rest: &[&str]) -> Message {
    let mut text = format!("{MSH}{kind}|{control}|P|2.5\r");
    for segment in rest {
        text.push_str(segment);
        text.push('\r');
    }
    Message::parse_str(&text).unwrap()
}

const PID: &str = "PID|1||H400123^^^RXX^MR~943 476 5919^^^NHS^NH||OKAFOR^GRACE^A||19400101|F|||1 High St^^Leeds^^LS1 4AP|||||||||||||||||||||01";
const PV1: &str = "PV1|1|I|WARD-7^B^3^RXX01||||C1234^JONES^ANN";

fn pv1_with(fields: &[(usize, &str)]) -> String {
    with_fields(PV1, fields)
}

fn with_fields(segment: &str, fields: &[(usize, &str)]) -> String {
    let mut parts: Vec<String> = segment.split('|').map(str::to_owned).collect();
    for &(n, value) in fields {
        if parts.len() <= n {
            parts.resize(n + 1, String::new());
        }
        parts[n] = value.to_owned();
    }
    parts.join("|")
}

fn map_ok(message: &Message) -> Mapped {
    let mapped = map(message, &MapConfig::default()).unwrap();
    mapped.check().unwrap();
    mapped
}

fn payloads(mapped: &Mapped) -> Vec<&'static str> {
    mapped
        .events()
        .map(|e| baton_care::payload_name(e.payload.as_ref().unwrap()))
        .collect()
}

fn utc(text: &str) -> i64 {
    text.parse::<jiff::Timestamp>().unwrap().as_second()
}

#[test]
fn an_admission_maps_patient_visit_location_and_times() {
    let pv1 = pv1_with(&[(4, "21"), (19, "V100")]);
    let m = message(
        "ADT^A01^ADT_A01",
        "M1",
        &["EVN|A01|20260715093000|||u1|20260715091500", PID, &pv1],
    );
    let mapped = map_ok(&m);
    assert_eq!(payloads(&mapped), ["admitted"]);
    let event = mapped.events().next().unwrap();
    let patient = event.patient.as_ref().unwrap();
    assert_eq!(patient.nhs_number, "9434765919", "spaces dropped");
    assert_eq!(patient.nhs_number_status, NhsNumberStatus::Verified as i32);
    assert_eq!(patient.local_ids[0].authority, "RXX");
    assert_eq!(patient.local_ids[0].value, "H400123");
    assert_eq!(event.encounter_id, "V100");
    // BST: 09:15 in London is 08:15 UTC.
    assert_eq!(
        event.occurred_at.unwrap().seconds,
        utc("2026-07-15T08:15:00Z")
    );
    assert_eq!(
        event.recorded_at.unwrap().seconds,
        utc("2026-07-15T08:30:00Z")
    );
    let source = event.source.as_ref().unwrap();
    assert_eq!(
        (source.system.as_str(), source.organisation.as_str()),
        ("PAS", "RXX")
    );
    assert_eq!(source.message_id, "M1");
    let Some(Payload::Admitted(admitted)) = &event.payload else {
        panic!()
    };
    let location = admitted.location.as_ref().unwrap();
    assert_eq!(
        (
            location.point_of_care.as_str(),
            location.room.as_str(),
            location.bed.as_str(),
            location.facility.as_str()
        ),
        ("WARD-7", "B", "3", "RXX01")
    );
    assert_eq!(admitted.patient_class, PatientClass::Inpatient as i32);
    assert_eq!(admitted.admission_method, AdmissionMethod::Emergency as i32);
    assert_eq!(admitted.attending_clinician, "JONES, ANN (C1234)");
}

#[test]
fn without_evn_times_come_from_pv1_44_then_msh_7() {
    let pv1 = pv1_with(&[(19, "V1"), (44, "20260115080000")]);
    let mapped = map_ok(&message("ADT^A01", "M1", &[PID, &pv1]));
    let event = mapped.events().next().unwrap();
    assert_eq!(
        event.occurred_at.unwrap().seconds,
        utc("2026-01-15T08:00:00Z")
    );
    assert_eq!(
        event.recorded_at.unwrap().seconds,
        utc("2026-07-15T08:31:00Z")
    );
}

#[test]
fn a_transfer_has_where_to_and_where_from() {
    let pv1 = pv1_with(&[(6, "AMU^^^RXX01"), (19, "V1")]);
    let mapped = map_ok(&message(
        "ADT^A02",
        "M2",
        &["EVN|A02|20260715100000", PID, &pv1],
    ));
    let Some(Payload::Transferred(moved)) = &mapped.events().next().unwrap().payload else {
        panic!()
    };
    assert_eq!(moved.to.as_ref().unwrap().point_of_care, "WARD-7");
    assert_eq!(moved.from.as_ref().unwrap().point_of_care, "AMU");
}

#[test]
fn a_discharge_with_a_death_is_two_events() {
    let pv1 = pv1_with(&[(19, "V1"), (36, "4"), (37, "79")]);
    let pid = with_fields(PID, &[(29, "20260715110000"), (30, "Y")]);
    let mapped = map_ok(&message(
        "ADT^A03",
        "M3",
        &["EVN|A03|20260715113000", &pid, &pv1],
    ));
    assert_eq!(payloads(&mapped), ["discharged", "died"]);
    let events: Vec<_> = mapped.events().collect();
    let Some(Payload::Discharged(discharged)) = &events[0].payload else {
        panic!()
    };
    assert_eq!(discharged.method, DischargeMethod::Died as i32);
    assert_eq!(
        discharged.destination,
        DischargeDestination::Mortuary as i32
    );
    assert_eq!(
        (
            discharged.disposition_code.as_str(),
            discharged.destination_code.as_str()
        ),
        ("4", "79")
    );
    let Some(Payload::Died(died)) = &events[1].payload else {
        panic!()
    };
    assert_eq!(died.died_at.unwrap().seconds, utc("2026-07-15T10:00:00Z"));
    assert_ne!(events[0].event_id, events[1].event_id);
}

#[test]
fn a_plain_discharge_keeps_raw_codes_and_warns_about_unknown_ones() {
    let pv1 = pv1_with(&[(19, "V1"), (36, "1"), (37, "Nursing home")]);
    let mapped = map_ok(&message(
        "ADT^A03",
        "M3",
        &["EVN|A03|20260715113000", PID, &pv1],
    ));
    assert_eq!(payloads(&mapped), ["discharged"]);
    let Some(Payload::Discharged(d)) = &mapped.events().next().unwrap().payload else {
        panic!()
    };
    assert_eq!(d.method, DischargeMethod::ClinicalAdvice as i32);
    assert_eq!(d.destination, DischargeDestination::Unspecified as i32);
    assert_eq!(d.destination_code, "Nursing home");
    assert_eq!(mapped.warnings.len(), 1);
    assert_eq!(
        mapped.warnings[0].location,
        Some(Location::field("PV1", 37))
    );
}

#[test]
fn cancellations_leave_and_class_changes_carry_the_visit() {
    let pv1 = pv1_with(&[(19, "V9"), (2, "O")]);
    for (trigger, payload) in [
        ("A11", "admission_cancelled"),
        ("A12", "transfer_cancelled"),
        ("A13", "discharge_cancelled"),
        ("A21", "leave_started"),
        ("A22", "leave_ended"),
        ("A06", "patient_class_changed"),
        ("A07", "patient_class_changed"),
        ("A05", "pre_admitted"),
    ] {
        let m = message(
            &format!("ADT^{trigger}"),
            "M",
            &["EVN||20260715100000", PID, &pv1],
        );
        let mapped = map_ok(&m);
        assert_eq!(payloads(&mapped), [payload], "{trigger}");
        assert_eq!(
            mapped.events().next().unwrap().encounter_id,
            "V9",
            "{trigger}"
        );
    }
}

#[test]
fn registrations_and_updates_carry_demographics() {
    for (trigger, payload) in [
        ("A04", "registered"),
        ("A28", "registered"),
        ("A08", "details_updated"),
        ("A31", "details_updated"),
    ] {
        let m = message(
            &format!("ADT^{trigger}"),
            "M",
            &["EVN||20260715100000", PID, "PD1|||Leeds GP^^^^^^^^^B86001"],
        );
        let mapped = map_ok(&m);
        assert_eq!(payloads(&mapped), [payload], "{trigger}");
        let demographics = match &mapped.events().next().unwrap().payload {
            Some(Payload::Registered(r)) => r.demographics.clone(),
            Some(Payload::DetailsUpdated(u)) => u.demographics.clone(),
            other => panic!("{other:?}"),
        }
        .unwrap();
        assert_eq!(demographics.family_name, "OKAFOR");
        assert_eq!(demographics.given_name, "GRACE");
        assert_eq!(demographics.birth_date.unwrap().year, 1940);
        assert_eq!(demographics.sex, AdministrativeSex::Female as i32);
        assert_eq!(demographics.postcode, "LS1 4AP");
        assert_eq!(demographics.gp_practice, "B86001");
    }
}

#[test]
fn a_merge_retires_each_mrg_into_its_pid() {
    let m = message(
        "ADT^A40^ADT_A39",
        "M4",
        &[
            "EVN|A40|20260715100000",
            "PID|1||9434765919^^^NHS^NH",
            "MRG|4010232137^^^NHS^NH",
            "PID|2||H2^^^RXX^MR",
            "MRG|H3^^^RXX^MR",
        ],
    );
    let mapped = map_ok(&m);
    assert_eq!(payloads(&mapped), ["patients_merged", "patients_merged"]);
    let events: Vec<_> = mapped.events().collect();
    let Some(Payload::PatientsMerged(first)) = &events[0].payload else {
        panic!()
    };
    assert_eq!(events[0].patient.as_ref().unwrap().nhs_number, "9434765919");
    assert_eq!(first.retired.as_ref().unwrap().nhs_number, "4010232137");
    let Some(Payload::PatientsMerged(second)) = &events[1].payload else {
        panic!()
    };
    assert_eq!(events[1].patient.as_ref().unwrap().local_ids[0].value, "H2");
    assert_eq!(second.retired.as_ref().unwrap().local_ids[0].value, "H3");

    let refused = map(
        &message("ADT^A40", "M5", &["EVN||2026", "PID|1||H2^^^RXX"]),
        &MapConfig::default(),
    )
    .unwrap_err();
    assert_eq!(refused.code, AckCode::Error);
    assert!(refused.to_string().contains("MRG"), "{refused}");
}

#[test]
fn referrals_request_modify_and_cancel() {
    let rf1 = "RF1|P^Pending|A^ASAP|Med^Medical||O|REF-1^EPIC|||20260715|O^Provider Ordered^HL70336|REF-0^EXT";
    let prd = "PRD|RT^Referred to|SMITH^JO|||||FRAIL-RXX";
    let m = message("REF^I12^REF_I12", "R1", &[rf1, prd, PID]);
    let mapped = map_ok(&m);
    let Some(Payload::ReferralRequested(request)) = &mapped.events().next().unwrap().payload else {
        panic!()
    };
    assert_eq!(request.referral_id, "REF-1");
    assert_eq!(request.priority, ReferralPriority::Urgent as i32);
    assert_eq!(request.original_referral_id, "REF-0");
    let service = request.service.as_ref().unwrap();
    assert_eq!(
        (service.code.as_str(), service.name.as_str()),
        ("FRAIL-RXX", "SMITH, JO")
    );
    assert_eq!(request.reason.as_ref().unwrap().display, "Provider Ordered");
    assert_eq!(request.referring_organisation, "RXX");

    // Without a referred-to provider, the referral type names the service.
    let by_type = super::map(
        &message("REF^I12", "R1", &[rf1, PID]),
        &MapConfig::default(),
    )
    .unwrap();
    let Some(Payload::ReferralRequested(request)) = &by_type.events().next().unwrap().payload
    else {
        panic!()
    };
    assert_eq!(request.service.as_ref().unwrap().code, "Med");

    for (status, payload) in [
        ("A", "referral_accepted"),
        ("R", "referral_rejected"),
        ("C", "referral_cancelled"),
        ("E", "referral_completed"),
        ("P", "referral_requested"),
    ] {
        let rf1 = rf1.replacen("P^Pending", status, 1);
        let modified = map_ok(&message("REF^I13", "R2", &[&rf1, PID]));
        assert_eq!(payloads(&modified), [payload], "{status}");
    }
    let cancelled = map_ok(&message("REF^I14", "R3", &[rf1, PID]));
    assert_eq!(payloads(&cancelled), ["referral_cancelled"]);
    let refused = map(
        &message("REF^I13", "R4", &["RF1|Q||||||REF-1", PID]),
        &MapConfig::default(),
    )
    .unwrap_err();
    assert_eq!(
        refused.problems[0].location,
        Some(Location::field("RF1", 1))
    );
}

#[test]
fn unsupported_types_are_rejected_naming_the_type() {
    let refused = map(&message("ORU^R01", "O1", &[PID]), &MapConfig::default()).unwrap_err();
    assert_eq!(refused.code, AckCode::Reject);
    assert_eq!(refused.problems[0].code, ErrorCode::UnsupportedMessageType);
    assert!(refused.problems[0].message.contains("ORU^R01"), "{refused}");
    let refused = map(&message("ADT^A09", "A9", &[PID]), &MapConfig::default()).unwrap_err();
    assert_eq!(refused.code, AckCode::Reject);
    assert_eq!(refused.problems[0].code, ErrorCode::UnsupportedEventCode);
    assert!(refused.problems[0].message.contains("ADT^A09"), "{refused}");
}

#[test]
fn a_missing_control_id_is_rejected() {
    let refused = map(&message("ADT^A01", "", &[PID, PV1]), &MapConfig::default()).unwrap_err();
    assert_eq!(refused.code, AckCode::Reject);
    assert_eq!(
        refused.problems[0].location,
        Some(Location::field("MSH", 10))
    );
}

#[test]
fn validation_problems_name_the_hl7_field() {
    // No visit number.
    let m = message("ADT^A01", "M1", &["EVN||20260715100000", PID, PV1]);
    let problems = map(&m, &MapConfig::default()).unwrap().check().unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].location, Some(Location::field("PV1", 19)));
    assert_eq!(problems[0].code, ErrorCode::RequiredFieldMissing);
    // A bad NHS number, in the second repetition of PID-3.
    let pid = PID.replace("943 476 5919", "9434765918");
    let pv1 = pv1_with(&[(19, "V1")]);
    let m = message("ADT^A01", "M1", &["EVN||20260715100000", &pid, &pv1]);
    let problems = map(&m, &MapConfig::default()).unwrap().check().unwrap_err();
    assert_eq!(
        problems[0].location,
        Some(Location::field("PID", 3).repetition(2))
    );
    assert!(problems[0].message.contains("modulus-11"), "{problems:?}");
    // No location.
    let m = message(
        "ADT^A02",
        "M1",
        &["EVN||20260715100000", PID, "PV1|1|I|||||||||||||||||V1"],
    );
    let problems = map(&m, &MapConfig::default()).unwrap().check().unwrap_err();
    assert_eq!(problems[0].location, Some(Location::field("PV1", 3)));
    // A missing segment and a bad time are found by the mapper itself.
    let refused = map(
        &message("ADT^A01", "M1", &["EVN||2026071", PID]),
        &MapConfig::default(),
    )
    .unwrap_err();
    assert_eq!(refused.code, AckCode::Error);
    let locations: Vec<_> = refused
        .problems
        .iter()
        .map(|p| p.location.clone().unwrap().to_string())
        .collect();
    assert_eq!(locations, ["PV1"], "{refused}");
    let refused = map(
        &message("ADT^A02", "M1", &["EVN||2026071", PID, PV1]),
        &MapConfig::default(),
    )
    .unwrap_err();
    assert_eq!(
        refused.problems[0].location,
        Some(Location::field("EVN", 2))
    );
}

#[test]
fn a_resent_message_has_the_same_ids_and_a_reused_control_id_does_not() {
    let pv1 = pv1_with(&[(19, "V1")]);
    let discharge = message("ADT^A03", "SAME", &["EVN||20260715100000", PID, &pv1]);
    let cancel = message("ADT^A13", "SAME", &["EVN||20260715100500", PID, &pv1]);
    let id = |m: &Message| map_ok(m).events().next().unwrap().event_id.clone();
    assert_eq!(id(&discharge), id(&discharge));
    let crlf = Message::parse_str(&discharge.to_text().replace('\r', "\r\n")).unwrap();
    assert_eq!(id(&crlf), id(&discharge), "separators do not change the id");
    assert_ne!(id(&discharge), id(&cancel));
    // The same content under another control id is another message.
    let again = message("ADT^A03", "OTHER", &["EVN||20260715100000", PID, &pv1]);
    assert_ne!(id(&discharge), id(&again));
}

#[test]
fn local_ids_without_an_authority_take_the_sending_facility() {
    let m = message(
        "ADT^A08",
        "M",
        &["EVN||20260715100000", "PID|1||X1^^^^PI~H9^^^^MR||DOE^J"],
    );
    let mapped = map_ok(&m);
    let patient = mapped.events().next().unwrap().patient.clone().unwrap();
    let ids: Vec<_> = patient
        .local_ids
        .iter()
        .map(|l| format!("{}:{}", l.authority, l.value))
        .collect();
    assert_eq!(ids, ["RXX:H9", "RXX:X1"], "the MR identifier first");
}
