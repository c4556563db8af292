//! ADT triggers: admissions, transfers, discharges, their cancellations,
//! leave, class changes, registrations, updates and merges.

use baton_proto::events::v1::care_event::Payload;
use baton_proto::events::v1::{
    AdmissionCancelled, Admitted, DetailsUpdated, Died, DischargeCancelled, DischargeMethod,
    Discharged, LeaveEnded, LeaveStarted, PatientClassChanged, PatientsMerged, PreAdmitted,
    Registered, TransferCancelled, Transferred,
};

use super::{Envelope, Mapper, codes, person, visit_id};
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
        "A21" => Visit::LeaveStart,
        "A22" => Visit::LeaveEnd,
        "A04" | "A28" | "A08" | "A31" => {
            person_details(mapper, trigger);
            return true;
        }
        "A40" => {
            merges(mapper);
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
    let clinical = match trigger {
        Visit::Admit => Some(("PV1", 44)),
        Visit::Discharge => Some(("PV1", 45)),
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
        Visit::ClassChange => {
            let payload = Payload::PatientClassChanged(PatientClassChanged {
                patient_class: class,
                ..Default::default()
            });
            let sources = vec![("patient_class_changed".into(), Location::field("PV1", 2))];
            mapper.push(&envelope, visit, payload, sources);
        }
        Visit::CancelAdmit => {
            let payload = Payload::AdmissionCancelled(AdmissionCancelled::default());
            mapper.push(&envelope, visit, payload, Vec::new());
        }
        Visit::CancelTransfer => {
            let payload = Payload::TransferCancelled(TransferCancelled::default());
            mapper.push(&envelope, visit, payload, Vec::new());
        }
        Visit::CancelDischarge => {
            let payload = Payload::DischargeCancelled(DischargeCancelled::default());
            mapper.push(&envelope, visit, payload, Vec::new());
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

/// A03: the discharge, and a death when PID-30 says so, PID-29 gives its
/// time, or the discharge method is death.
fn discharge<'m>(
    mapper: &mut Mapper<'m>,
    pid: &'m crate::Segment,
    pv1: &'m crate::Segment,
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
    mapper.push(envelope, visit.clone(), payload, sources);

    let died_at = mapper.time(Some(pid), 29);
    let indicator = mapper.value(pid, 30).first().to_ascii_uppercase();
    if died_at.is_some() || indicator == "Y" || method == DischargeMethod::Died {
        let sources = vec![("died.died_at".into(), Location::field("PID", 29))];
        mapper.push(envelope, None, Payload::Died(Died { died_at }), sources);
    }
}

/// A04/A28 register a person, A08/A31 update their details.
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
}

/// A40: each PID and the MRG after it is one merge; the PID patient
/// survives, the MRG-1 identifiers are retired into it.
fn merges(mapper: &mut Mapper<'_>) {
    let segments = mapper.message.segments();
    let mut pairs = Vec::new();
    let mut pid_sequence = 0;
    let mut mrg_sequence = 0;
    let mut current = None;
    for segment in segments {
        match segment.name() {
            "PID" => {
                pid_sequence += 1;
                current = Some((pid_sequence, segment));
            }
            "MRG" => {
                mrg_sequence += 1;
                if let Some(pid) = current.take() {
                    pairs.push((pid, (mrg_sequence, segment)));
                }
            }
            _ => {}
        }
    }
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
        let (retired, mut sources) =
            mapper.identity(mrg, mrg_sequence, 1, "patients_merged.retired");
        if retired.nhs_number.is_empty() && retired.local_ids.is_empty() {
            mapper.error(
                Location::nth("MRG", mrg_sequence, 1),
                ErrorCode::RequiredFieldMissing,
                "required: the prior patient identifiers merged into the PID patient",
            );
            continue;
        }
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
