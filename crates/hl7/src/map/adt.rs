//! ADT triggers: attendances, admissions, transfers, planned transfers,
//! swaps, discharges, their cancellations, leave, class changes,
//! registrations, updates, merges, visit moves and identifier changes.

use baton_proto::events::v1::care_event::Payload;
use baton_proto::events::v1::{
    AdmissionCancelled, Admitted, AttendanceStarted, DetailsUpdated, Died, DischargeCancelled,
    DischargeMethod, Discharged, LeaveEnded, LeaveStarted, PatientClassChanged,
    PatientIdentifierChanged, PatientsMerged, PreAdmitted, Registered, TransferCancelled,
    TransferPlanCancelled, TransferPlanned, Transferred, VisitMoved,
};
use prost_types::Timestamp;

use super::{Envelope, Mapper, codes, person, visit_id};
use crate::Segment;
use crate::problem::{ErrorCode, Location};

/// The ADT triggers about a hospital encounter: they need PID and PV1,
/// and carry the visit number PV1-19.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Visit {
    Admit,
    Transfer,
    Discharge,
    PreAdmit,
    ClassChange,
    CancelAdmit,
    CancelTransfer,
    CancelDischarge,
    PlanTransfer,
    CancelPlannedTransfer,
    LeaveStart,
    LeaveEnd,
}

/// Maps an ADT message; false when Baton does not take `trigger`.
pub(super) fn map(mapper: &mut Mapper<'_>, trigger: &str) -> bool {
    let visit = match trigger {
        "A01" => Visit::Admit,
        "A02" => Visit::Transfer,
        "A03" => Visit::Discharge,
        "A05" => Visit::PreAdmit,
        "A06" | "A07" => Visit::ClassChange,
        "A11" => Visit::CancelAdmit,
        "A12" => Visit::CancelTransfer,
        "A13" => Visit::CancelDischarge,
        "A15" => Visit::PlanTransfer,
        "A21" => Visit::LeaveStart,
        "A22" => Visit::LeaveEnd,
        "A26" => Visit::CancelPlannedTransfer,
        "A04" | "A28" | "A08" | "A31" => {
            person_details(mapper, trigger);
            return true;
        }
        "A17" => {
            swap(mapper);
            return true;
        }
        "A40" => {
            merges(mapper);
            return true;
        }
        "A45" => {
            visit_moves(mapper);
            return true;
        }
        "A47" => {
            identifier_changes(mapper);
            return true;
        }
        _ => return false,
    };
    encounter(mapper, visit);
    true
}

fn encounter(mapper: &mut Mapper<'_>, trigger: Visit) {
    let pid = mapper.require("PID", "the patient");
    let pv1 = mapper.require("PV1", "the visit: PV1-19 visit number, PV1-3 location");
    let (Some(pid), Some(pv1)) = (pid, pv1) else {
        return;
    };
    // When EVN-6 is empty, the clinical time: of the admission (PV1-44),
    // of the discharge (PV1-45), and for their cancellations, of what they
    // cancel, which the PV1 of an A11 or A13 still carries.
    let clinical = match trigger {
        Visit::Admit | Visit::CancelAdmit => Some(("PV1", 44)),
        Visit::Discharge | Visit::CancelDischarge => Some(("PV1", 45)),
        _ => None,
    };
    let envelope = mapper.envelope(pid, 1, clinical);
    let visit = Some(visit_id(mapper, pv1));
    let location = Location::field("PV1", 3);
    let (class, _) = mapper.coded(pv1, 2, codes::patient_class, "patient class (PV1-2)");
    let class = class as i32;
    match trigger {
        Visit::Admit => {
            let (method, _) =
                mapper.coded(pv1, 4, codes::admission_method, "admission type (PV1-4)");
            let payload = Payload::Admitted(Admitted {
                location: mapper.place(pv1, 3),
                patient_class: class,
                admission_method: method as i32,
                attending_clinician: person(mapper.value(pv1, 7)),
            });
            mapper.push(
                &envelope,
                visit,
                payload,
                vec![("admitted.location".into(), location)],
            );
        }
        Visit::Transfer => {
            let payload = Payload::Transferred(Transferred {
                to: mapper.place(pv1, 3),
                from: mapper.place(pv1, 6),
            });
            let sources = vec![
                ("transferred.to".into(), location),
                ("transferred.from".into(), Location::field("PV1", 6)),
            ];
            mapper.push(&envelope, visit, payload, sources);
        }
        Visit::Discharge => discharge(mapper, pid, pv1, &envelope, visit),
        Visit::PreAdmit => {
            let (method, _) =
                mapper.coded(pv1, 4, codes::admission_method, "admission type (PV1-4)");
            let pv2 = mapper.first("PV2");
            let expected = mapper.time(pv2, 8).map(|t| (t, Location::field("PV2", 8)));
            let expected = expected.or_else(|| {
                mapper
                    .time(Some(pv1), 44)
                    .map(|t| (t, Location::field("PV1", 44)))
            });
            let mut sources = vec![("pre_admitted.expected_location".into(), location)];
            if let Some((_, at)) = &expected {
                sources.push(("pre_admitted.expected_admission_at".into(), at.clone()));
            }
            let payload = Payload::PreAdmitted(PreAdmitted {
                expected_location: mapper.place(pv1, 3),
                expected_admission_at: expected.map(|(t, _)| t),
                patient_class: class,
                admission_method: method as i32,
            });
            mapper.push(&envelope, visit, payload, sources);
        }
        // A06 (outpatient or ED to inpatient) and A07 (the reverse) carry
        // the new location in PV1-3 and the one before in PV1-6: the
        // patient moves when it differs from where they are.
        Visit::ClassChange => {
            let payload = Payload::PatientClassChanged(PatientClassChanged {
                patient_class: class,
                location: mapper.place(pv1, 3),
                from: mapper.place(pv1, 6),
            });
            let sources = vec![
                ("patient_class_changed.location".into(), location),
                (
                    "patient_class_changed.from".into(),
                    Location::field("PV1", 6),
                ),
                ("patient_class_changed".into(), Location::field("PV1", 2)),
            ];
            mapper.push(&envelope, visit, payload, sources);
        }
        Visit::CancelAdmit => {
            let payload = Payload::AdmissionCancelled(AdmissionCancelled::default());
            mapper.push(&envelope, visit, payload, Vec::new());
        }
        // PV1-3 is where the patient was before the transfer cancelled,
        // PV1-6 where they were moved in error.
        Visit::CancelTransfer => {
            let payload = Payload::TransferCancelled(TransferCancelled {
                cancelled_event_id: String::new(),
                from: mapper.place(pv1, 3),
                to: mapper.place(pv1, 6),
            });
            let sources = vec![
                ("transfer_cancelled.from".into(), location),
                ("transfer_cancelled.to".into(), Location::field("PV1", 6)),
            ];
            mapper.push(&envelope, visit, payload, sources);
        }
        Visit::CancelDischarge => {
            let payload = Payload::DischargeCancelled(DischargeCancelled::default());
            mapper.push(&envelope, visit, payload, Vec::new());
        }
        // The patient is still at PV1-3; PV1-42 is where they are to go,
        // EVN-3 when.
        Visit::PlanTransfer => {
            let evn = mapper.first("EVN");
            let payload = Payload::TransferPlanned(TransferPlanned {
                to: mapper.place(pv1, 42),
                planned_at: mapper.time(evn, 3),
            });
            let sources = vec![
                ("transfer_planned.to".into(), Location::field("PV1", 42)),
                (
                    "transfer_planned.planned_at".into(),
                    Location::field("EVN", 3),
                ),
            ];
            mapper.push(&envelope, visit, payload, sources);
        }
        Visit::CancelPlannedTransfer => {
            let payload = Payload::TransferPlanCancelled(TransferPlanCancelled {
                cancelled_event_id: String::new(),
                to: mapper.place(pv1, 42),
            });
            let sources = vec![(
                "transfer_plan_cancelled.to".into(),
                Location::field("PV1", 42),
            )];
            mapper.push(&envelope, visit, payload, sources);
        }
        Visit::LeaveStart => {
            let pv2 = mapper.first("PV2");
            let payload = Payload::LeaveStarted(LeaveStarted {
                expected_return_at: mapper.time(pv2, 47),
            });
            let sources = vec![(
                "leave_started.expected_return_at".into(),
                Location::field("PV2", 47),
            )];
            mapper.push(&envelope, visit, payload, sources);
        }
        Visit::LeaveEnd => mapper.push(
            &envelope,
            visit,
            Payload::LeaveEnded(LeaveEnded {}),
            Vec::new(),
        ),
    }
}

/// A03: the discharge, and a death when the feed says so (see [`death`]).
fn discharge<'m>(
    mapper: &mut Mapper<'m>,
    pid: &'m Segment,
    pv1: &'m Segment,
    envelope: &Envelope,
    visit: Option<String>,
) {
    let (method, disposition_code) = mapper.coded(
        pv1,
        36,
        codes::discharge_method,
        "discharge disposition (PV1-36)",
    );
    let destination_code = mapper.value(pv1, 37).first().into_owned();
    let (destination, _) = mapper.coded(
        pv1,
        37,
        codes::discharge_destination,
        "discharge destination (PV1-37)",
    );
    let payload = Payload::Discharged(Discharged {
        method: method as i32,
        destination: destination as i32,
        disposition_code,
        destination_code,
        destination_organisation: String::new(),
    });
    let sources = vec![
        ("discharged.method".into(), Location::field("PV1", 36)),
        ("discharged.destination".into(), Location::field("PV1", 37)),
    ];
    mapper.push(envelope, visit, payload, sources);
    died_if_so(mapper, pid, envelope, method == DischargeMethod::Died);
}

/// Whether the PID says the patient died, and when (PID-29): PID-30 `Y` is
/// a death; `N` is not, even when PID-29 holds a date (some systems leave a
/// stale one) or the discharge method is death; with PID-30 empty, a date
/// in PID-29 or a discharge method of death is one. A contradiction is a
/// warning beside the `AA`.
fn death<'m>(
    mapper: &mut Mapper<'m>,
    pid: &'m Segment,
    discharged_dead: bool,
) -> Option<Option<Timestamp>> {
    let died_at = mapper.time(Some(pid), 29);
    let indicator = mapper.value(pid, 30).first().to_ascii_uppercase();
    match indicator.as_str() {
        "Y" => Some(died_at),
        "N" => {
            if died_at.is_some() || discharged_dead {
                let said = if died_at.is_some() {
                    "PID-29 holds a date of death"
                } else {
                    "the discharge method (PV1-36) is death"
                };
                mapper.warn(
                    Location::field("PID", 30),
                    ErrorCode::DataTypeError,
                    format!(
                        "{said} but PID-30 says the patient is not dead (N): no death recorded"
                    ),
                );
            }
            None
        }
        "" => (died_at.is_some() || discharged_dead).then_some(died_at),
        other => {
            mapper.warn(
                Location::field("PID", 30),
                ErrorCode::TableValueNotFound,
                format!(
                    "patient death indicator {other:?} is not Y or N (HL7 table 0136): read as empty"
                ),
            );
            (died_at.is_some() || discharged_dead).then_some(died_at)
        }
    }
}

fn died_if_so<'m>(
    mapper: &mut Mapper<'m>,
    pid: &'m Segment,
    envelope: &Envelope,
    discharged_dead: bool,
) {
    if let Some(died_at) = death(mapper, pid, discharged_dead) {
        let sources = vec![("died.died_at".into(), Location::field("PID", 29))];
        mapper.push(envelope, None, Payload::Died(Died { died_at }), sources);
    }
}

/// A04/A28 register a person, A08/A31 update their details; each also
/// records a death when the PID says so. An A04 with a visit number
/// (PV1-19) and a location (PV1-3) also begins an attendance: an ED
/// arrival or an outpatient appointment.
fn person_details(mapper: &mut Mapper<'_>, trigger: &str) {
    let Some(pid) = mapper.require("PID", "the patient") else {
        return;
    };
    let envelope = mapper.envelope(pid, 1, None);
    let registered = matches!(trigger, "A04" | "A28");
    let path = if registered {
        "registered.demographics"
    } else {
        "details_updated.demographics"
    };
    let (demographics, sources) = mapper.demographics(pid, path);
    let payload = if registered {
        Payload::Registered(Registered {
            demographics: Some(demographics),
        })
    } else {
        Payload::DetailsUpdated(DetailsUpdated {
            demographics: Some(demographics),
        })
    };
    mapper.push(&envelope, None, payload, sources);
    if trigger == "A04"
        && let Some(pv1) = mapper.first("PV1")
    {
        attendance(mapper, pv1, &envelope);
    }
    died_if_so(mapper, pid, &envelope, false);
}

fn attendance<'m>(mapper: &mut Mapper<'m>, pv1: &'m Segment, envelope: &Envelope) {
    let visit = visit_id(mapper, pv1);
    if visit.is_empty() {
        return;
    }
    let Some(location) = mapper.place(pv1, 3) else {
        mapper.warn(
            Location::field("PV1", 3),
            ErrorCode::RequiredFieldMissing,
            "a visit number (PV1-19) but no location: registered, but no attendance begun (send the ED or clinic in PV1-3)",
        );
        return;
    };
    let (class, _) = mapper.coded(pv1, 2, codes::patient_class, "patient class (PV1-2)");
    let payload = Payload::AttendanceStarted(AttendanceStarted {
        location: Some(location),
        patient_class: class as i32,
        attending_clinician: person(mapper.value(pv1, 7)),
    });
    let sources = vec![
        (
            "attendance_started.location".into(),
            Location::field("PV1", 3),
        ),
        (
            "attendance_started.patient_class".into(),
            Location::field("PV1", 2),
        ),
    ];
    mapper.push(envelope, Some(visit), payload, sources);
}

/// A segment and which occurrence of its name it is (1 for the first).
type Nth<'m> = (usize, &'m Segment);

/// Each PID of the message and the segment `after` that follows it before
/// the next PID.
fn groups<'m>(mapper: &Mapper<'m>, after: &str) -> Vec<(Nth<'m>, Nth<'m>)> {
    let mut groups = Vec::new();
    let (mut pid_sequence, mut after_sequence) = (0, 0);
    let mut current = None;
    for segment in mapper.message.segments() {
        if segment.name() == "PID" {
            pid_sequence += 1;
            current = Some((pid_sequence, segment));
        } else if segment.name() == after {
            after_sequence += 1;
            if let Some(pid) = current.take() {
                groups.push((pid, (after_sequence, segment)));
            }
        }
    }
    groups
}

/// A17: two patients swap beds. Two PID/PV1 groups, each PV1-3 the
/// patient's new location (the other's old one), PV1-6 their old one: two
/// moves, published together.
fn swap(mapper: &mut Mapper<'_>) {
    let groups = groups(mapper, "PV1");
    if groups.len() != 2 {
        mapper.error(
            Location::segment("PID"),
            ErrorCode::SegmentSequenceError,
            format!(
                "required: two PID segments each followed by its PV1 (the two patients swapped), found {}",
                groups.len()
            ),
        );
        return;
    }
    for ((pid_sequence, pid), (pv1_sequence, pv1)) in groups {
        let mut envelope = mapper.envelope(pid, pid_sequence, None);
        envelope.visit_at = Location::nth("PV1", pv1_sequence, 19);
        let visit = Some(visit_id(mapper, pv1));
        let payload = Payload::Transferred(Transferred {
            to: mapper.place(pv1, 3),
            from: mapper.place(pv1, 6),
        });
        let sources = vec![
            (
                "transferred.to".into(),
                Location::nth("PV1", pv1_sequence, 3),
            ),
            (
                "transferred.from".into(),
                Location::nth("PV1", pv1_sequence, 6),
            ),
        ];
        mapper.push(&envelope, visit, payload, sources);
    }
}

/// A40: each PID and the MRG after it is one merge; the PID patient
/// survives, the MRG-1 identifiers are retired into it.
fn merges(mapper: &mut Mapper<'_>) {
    let pairs = groups(mapper, "MRG");
    if pairs.is_empty() {
        mapper.error(
            Location::segment("MRG"),
            ErrorCode::SegmentSequenceError,
            "required: a PID segment (the surviving patient) followed by an MRG segment (MRG-1, the identifiers merged into it)",
        );
        return;
    }
    for ((pid_sequence, pid), (mrg_sequence, mrg)) in pairs {
        let envelope = mapper.envelope(pid, pid_sequence, None);
        let Some((retired, mut sources)) = prior_patient(
            mapper,
            mrg,
            mrg_sequence,
            "patients_merged.retired",
            "the prior patient identifiers merged into the PID patient",
        ) else {
            continue;
        };
        sources.push((
            "patients_merged".into(),
            Location::nth("MRG", mrg_sequence, 1),
        ));
        let payload = Payload::PatientsMerged(PatientsMerged {
            retired: Some(retired),
        });
        mapper.push(&envelope, None, payload, sources);
    }
}

/// MRG-1, which must name someone.
fn prior_patient<'m>(
    mapper: &mut Mapper<'m>,
    mrg: &'m Segment,
    mrg_sequence: usize,
    path: &str,
    what: &str,
) -> Option<(
    baton_proto::events::v1::PatientIdentity,
    Vec<(String, Location)>,
)> {
    let (identity, sources) = mapper.identity(mrg, mrg_sequence, 1, path);
    if identity.nhs_number.is_empty() && identity.local_ids.is_empty() {
        mapper.error(
            Location::nth("MRG", mrg_sequence, 1),
            ErrorCode::RequiredFieldMissing,
            format!("required: {what}"),
        );
        return None;
    }
    Some((identity, sources))
}

/// A45: each MRG (MRG-1 the patient the visit was filed under, MRG-5 its
/// visit number there) and the PV1 after it (PV1-19 its number under the
/// PID patient; MRG-5 again when empty) moves one visit to the PID patient.
fn visit_moves(mapper: &mut Mapper<'_>) {
    let Some(pid) = mapper.require("PID", "the patient the visit moves to") else {
        return;
    };
    let mrgs = mapper.all("MRG");
    if mrgs.is_empty() {
        mapper.error(
            Location::segment("MRG"),
            ErrorCode::SegmentSequenceError,
            "required: an MRG segment: MRG-1 the patient the visit moves from, MRG-5 its visit number",
        );
        return;
    }
    let pv1s = mapper.all("PV1");
    let patient = mapper.envelope(pid, 1, None);
    for (mrg_sequence, mrg) in mrgs {
        let Some((from, mut sources)) = prior_patient(
            mapper,
            mrg,
            mrg_sequence,
            "visit_moved.from",
            "the patient the visit was filed under",
        ) else {
            continue;
        };
        let from_visit = mapper.value(mrg, 5).component(1).text().into_owned();
        if from_visit.is_empty() {
            mapper.error(
                Location::nth("MRG", mrg_sequence, 5),
                ErrorCode::RequiredFieldMissing,
                "required: the prior visit number, the visit to move",
            );
            continue;
        }
        let mut envelope = patient.clone();
        let pv1 = pv1s.get(mrg_sequence - 1).map(|&(_, pv1)| pv1);
        let to_visit = pv1
            .map(|pv1| visit_id(mapper, pv1))
            .filter(|visit| !visit.is_empty());
        envelope.visit_at = if to_visit.is_some() {
            Location::nth("PV1", mrg_sequence, 19)
        } else {
            Location::nth("MRG", mrg_sequence, 5)
        };
        sources.push((
            "visit_moved.from_encounter_id".into(),
            Location::nth("MRG", mrg_sequence, 5),
        ));
        let payload = Payload::VisitMoved(VisitMoved {
            from: Some(from),
            from_encounter_id: from_visit.clone(),
        });
        mapper.push(
            &envelope,
            Some(to_visit.unwrap_or(from_visit)),
            payload,
            sources,
        );
    }
}

/// A47: each PID and the MRG after it: MRG-1 the identifier the patient
/// had, PID-3 the one they have now.
fn identifier_changes(mapper: &mut Mapper<'_>) {
    let pairs = groups(mapper, "MRG");
    if pairs.is_empty() {
        mapper.error(
            Location::segment("MRG"),
            ErrorCode::SegmentSequenceError,
            "required: a PID segment (PID-3, the new identifier) followed by an MRG segment (MRG-1, the previous one)",
        );
        return;
    }
    for ((pid_sequence, pid), (mrg_sequence, mrg)) in pairs {
        let envelope = mapper.envelope(pid, pid_sequence, None);
        let Some((previous, sources)) = prior_patient(
            mapper,
            mrg,
            mrg_sequence,
            "patient_identifier_changed.previous",
            "the previous patient identifier",
        ) else {
            continue;
        };
        let payload = Payload::PatientIdentifierChanged(PatientIdentifierChanged {
            previous: Some(previous),
        });
        mapper.push(&envelope, None, payload, sources);
    }
}
