//! Small builders for valid care events, for tests, examples and the
//! synthetic population. Event ids are derived from the content, so the same
//! call twice makes the same event (a duplicate), and different calls make
//! different events.

use baton_proto::events::v1::{
    AdmissionCancelled, Admitted, CareEvent, CarePlanChanged, CarePlanStatus, Date, Demographics,
    DischargeCancelled, DischargeDestination, DischargeMethod, Discharged, EpisodeEndReason,
    EpisodeEnded, EpisodeStarted, EpisodeType, ExpectedDischargeDateSet, FrailtyAssessed,
    LocalIdentifier, Location, MedicallyOptimised, Pathway, PatientClass, PatientIdentity,
    PatientsMerged, ReferralAccepted, ReferralRequested, Registered, Service, Source,
    TransferCancelled, Transferred, care_event::Payload,
};
use prost_types::Timestamp;
use uuid::Uuid;

use crate::BATON_NAMESPACE;

/// The organisation the fixtures' events come from.
pub const ORGANISATION: &str = "RXX";

pub fn timestamp(seconds: i64) -> Timestamp {
    Timestamp { seconds, nanos: 0 }
}

/// An identity by NHS number, or by the local hospital number `RXX:<value>`
/// when `nhs` is not ten digits.
pub fn identity(nhs: &str) -> PatientIdentity {
    if nhs.len() == 10 && nhs.bytes().all(|b| b.is_ascii_digit()) {
        PatientIdentity {
            nhs_number: nhs.to_owned(),
            ..Default::default()
        }
    } else {
        PatientIdentity {
            local_ids: vec![LocalIdentifier {
                authority: ORGANISATION.to_owned(),
                value: nhs.to_owned(),
            }],
            ..Default::default()
        }
    }
}

pub fn ward(name: &str) -> Location {
    Location {
        point_of_care: name.to_owned(),
        facility: "MAIN".to_owned(),
        organisation: ORGANISATION.to_owned(),
        ..Default::default()
    }
}

/// An event recorded at the moment it occurred, from the PAS of `RXX`.
pub fn event(nhs: &str, seconds: i64, payload: Option<Payload>) -> CareEvent {
    let mut event = CareEvent {
        patient: Some(identity(nhs)),
        occurred_at: Some(timestamp(seconds)),
        recorded_at: Some(timestamp(seconds)),
        source: Some(Source {
            system: "PAS".to_owned(),
            organisation: ORGANISATION.to_owned(),
            message_id: String::new(),
        }),
        payload,
        ..Default::default()
    };
    event.event_id = content_id(&event);
    event
}

/// As [`event`], within hospital encounter `encounter_id`.
pub fn encounter_event(nhs: &str, encounter_id: &str, seconds: i64, payload: Payload) -> CareEvent {
    let mut event = event(nhs, seconds, Some(payload));
    event.encounter_id = encounter_id.to_owned();
    event.event_id = content_id(&event);
    event
}

pub fn admitted(nhs: &str, encounter_id: &str, seconds: i64, ward_name: &str) -> CareEvent {
    let location = (!ward_name.is_empty()).then(|| ward(ward_name));
    encounter_event(
        nhs,
        encounter_id,
        seconds,
        Payload::Admitted(Admitted {
            location,
            patient_class: PatientClass::Inpatient as i32,
            ..Default::default()
        }),
    )
}

pub fn transferred(nhs: &str, encounter_id: &str, seconds: i64, ward_name: &str) -> CareEvent {
    encounter_event(
        nhs,
        encounter_id,
        seconds,
        Payload::Transferred(Transferred {
            to: Some(ward(ward_name)),
            from: None,
        }),
    )
}

pub fn discharged(
    nhs: &str,
    encounter_id: &str,
    seconds: i64,
    destination: DischargeDestination,
) -> CareEvent {
    encounter_event(
        nhs,
        encounter_id,
        seconds,
        Payload::Discharged(Discharged {
            method: DischargeMethod::ClinicalAdvice as i32,
            destination: destination as i32,
            ..Default::default()
        }),
    )
}

pub fn virtual_ward_started(
    nhs: &str,
    episode_id: &str,
    seconds: i64,
    virtual_ward: &str,
) -> CareEvent {
    event(
        nhs,
        seconds,
        Some(Payload::EpisodeStarted(EpisodeStarted {
            episode_id: episode_id.to_owned(),
            r#type: EpisodeType::VirtualWard as i32,
            service: Some(Service {
                code: virtual_ward.to_owned(),
                name: format!("Virtual ward {virtual_ward}"),
                organisation: ORGANISATION.to_owned(),
            }),
            pathway: Pathway::Frailty as i32,
        })),
    )
}

pub fn episode_ended(
    nhs: &str,
    episode_id: &str,
    seconds: i64,
    reason: EpisodeEndReason,
) -> CareEvent {
    event(
        nhs,
        seconds,
        Some(Payload::EpisodeEnded(EpisodeEnded {
            episode_id: episode_id.to_owned(),
            reason: reason as i32,
        })),
    )
}

/// Cancels an admission of `encounter_id` (HL7 A11): the one with
/// `cancelled_event_id`, or with an empty id the latest in effect.
pub fn admission_cancelled(
    nhs: &str,
    encounter_id: &str,
    seconds: i64,
    cancelled_event_id: &str,
) -> CareEvent {
    encounter_event(
        nhs,
        encounter_id,
        seconds,
        Payload::AdmissionCancelled(AdmissionCancelled {
            cancelled_event_id: cancelled_event_id.to_owned(),
        }),
    )
}

/// Cancels a transfer of `encounter_id` (HL7 A12), as [`admission_cancelled`].
pub fn transfer_cancelled(
    nhs: &str,
    encounter_id: &str,
    seconds: i64,
    cancelled_event_id: &str,
) -> CareEvent {
    encounter_event(
        nhs,
        encounter_id,
        seconds,
        Payload::TransferCancelled(TransferCancelled {
            cancelled_event_id: cancelled_event_id.to_owned(),
            ..Default::default()
        }),
    )
}

/// Cancels a discharge of `encounter_id` (HL7 A13), as [`admission_cancelled`].
pub fn discharge_cancelled(
    nhs: &str,
    encounter_id: &str,
    seconds: i64,
    cancelled_event_id: &str,
) -> CareEvent {
    encounter_event(
        nhs,
        encounter_id,
        seconds,
        Payload::DischargeCancelled(DischargeCancelled {
            cancelled_event_id: cancelled_event_id.to_owned(),
        }),
    )
}

pub fn frailty_assessed(nhs: &str, seconds: i64, clinical_frailty_scale: u32) -> CareEvent {
    event(
        nhs,
        seconds,
        Some(Payload::FrailtyAssessed(FrailtyAssessed {
            clinical_frailty_scale,
            assessor: "Frailty team".to_owned(),
        })),
    )
}

/// Registered with a name and date of birth (HL7 A04/A28).
pub fn registered(
    nhs: &str,
    seconds: i64,
    family_name: &str,
    birth_date: Option<Date>,
) -> CareEvent {
    event(
        nhs,
        seconds,
        Some(Payload::Registered(Registered {
            demographics: Some(Demographics {
                family_name: family_name.to_owned(),
                given_name: "Pat".to_owned(),
                birth_date,
                ..Default::default()
            }),
        })),
    )
}

/// Referral `referral_id` to the service coded `service`, to be answered
/// by `respond_by` (HL7 REF^I12).
pub fn referral_requested(
    nhs: &str,
    referral_id: &str,
    service: &str,
    seconds: i64,
    respond_by: i64,
) -> CareEvent {
    event(
        nhs,
        seconds,
        Some(Payload::ReferralRequested(ReferralRequested {
            referral_id: referral_id.to_owned(),
            service: Some(Service {
                code: service.to_owned(),
                name: String::new(),
                organisation: ORGANISATION.to_owned(),
            }),
            respond_by: Some(timestamp(respond_by)),
            ..Default::default()
        })),
    )
}

pub fn referral_accepted(nhs: &str, referral_id: &str, seconds: i64) -> CareEvent {
    event(
        nhs,
        seconds,
        Some(Payload::ReferralAccepted(ReferralAccepted {
            referral_id: referral_id.to_owned(),
        })),
    )
}

/// Version `version` of care plan `care_plan_id`, active.
pub fn care_plan_changed(nhs: &str, care_plan_id: &str, version: u32, seconds: i64) -> CareEvent {
    event(
        nhs,
        seconds,
        Some(Payload::CarePlanChanged(CarePlanChanged {
            care_plan_id: care_plan_id.to_owned(),
            version,
            status: CarePlanStatus::Active as i32,
            ..Default::default()
        })),
    )
}

/// No longer meets the criteria to reside, during `encounter_id`.
pub fn medically_optimised(nhs: &str, encounter_id: &str, seconds: i64) -> CareEvent {
    encounter_event(
        nhs,
        encounter_id,
        seconds,
        Payload::MedicallyOptimised(MedicallyOptimised {}),
    )
}

pub fn expected_discharge_date_set(
    nhs: &str,
    encounter_id: &str,
    seconds: i64,
    date: Date,
) -> CareEvent {
    encounter_event(
        nhs,
        encounter_id,
        seconds,
        Payload::ExpectedDischargeDateSet(ExpectedDischargeDateSet {
            expected_discharge_date: Some(date),
        }),
    )
}

/// `retired_nhs` merged into `survivor_nhs` (HL7 A40).
pub fn patients_merged(survivor_nhs: &str, retired_nhs: &str, seconds: i64) -> CareEvent {
    event(
        survivor_nhs,
        seconds,
        Some(Payload::PatientsMerged(PatientsMerged {
            retired: Some(identity(retired_nhs)),
        })),
    )
}

/// Changes when the event was recorded, and so its id.
pub fn recorded_at(mut event: CareEvent, seconds: i64) -> CareEvent {
    event.recorded_at = Some(timestamp(seconds));
    event.event_id = content_id(&event);
    event
}

fn content_id(event: &CareEvent) -> String {
    let mut event = event.clone();
    event.event_id.clear();
    Uuid::new_v5(&BATON_NAMESPACE, format!("{event:?}").as_bytes()).to_string()
}

/// The state `events` fold into, in the order given (as if at offsets 0,
/// 1, 2... of one partition); panics on an invalid event or a rejection, as
/// a test should.
pub fn state_of(
    events: impl IntoIterator<Item = CareEvent>,
) -> baton_proto::state::v1::PatientCareState {
    let events: Vec<_> = events
        .into_iter()
        .map(|e| crate::ValidEvent::new(e).expect("a valid event"))
        .collect();
    let mut state = crate::new_state(events.first().expect("at least one event").key());
    let mut applied = crate::AppliedIds::new();
    for (offset, event) in (0..).zip(&events) {
        crate::apply(
            &mut state,
            &mut applied,
            event,
            crate::LogPosition::new(0, offset),
        )
        .expect("an event that applies");
    }
    state
}
