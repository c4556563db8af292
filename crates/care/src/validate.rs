//! Input validation: an event that passes becomes a [`ValidEvent`], whose
//! key, id and times are known to be well formed. Every problem is reported
//! at once, each naming its field path and what was expected.

use std::fmt;

use baton_proto::events::v1::{
    AdministrativeSex, AdmissionMethod, CareEvent, CarePlanStatus, Date, DischargeDestination,
    DischargeMethod, EpisodeEndReason, EpisodeType, Location, NhsNumberStatus, Pathway,
    PatientClass, PatientIdentity, ReferralPriority, care_event::Payload,
};
use prost_types::Timestamp;

use crate::identity::{EventId, NhsNumber, PatientKey, check_authority, check_local_value};
use crate::time::{EARLIEST_SECONDS, Instant, LATEST_SECONDS, days_from_civil, days_in_month};
use crate::{FieldViolation, InvalidEvent};

/// How far a clinical time may lie after the system time that recorded it:
/// a day covers time-zone mistakes in source systems, anything more is a bug.
const MAX_OCCURRED_AFTER_RECORDED_SECONDS: i64 = 24 * 60 * 60;

/// A care event that passed validation, with its parsed key and id.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidEvent {
    event: CareEvent,
    id: EventId,
    key: PatientKey,
    /// The second patient of an event about two: the record merged away
    /// (A40), the previous identity (A47) when its key differs, the patient a
    /// visit moves from (A45).
    other_key: Option<PatientKey>,
}

impl ValidEvent {
    /// Validates `event`. The event id is rewritten in canonical form, so
    /// the same UUID written in capitals is still the same event.
    pub fn new(mut event: CareEvent) -> Result<Self, InvalidEvent> {
        let mut check = Check::default();
        let id = check.event_id(&event.event_id);
        let key = check.patient(event.patient.as_ref(), "patient");
        check.envelope(&event);
        let mut other_key = match &event.payload {
            Some(Payload::PatientsMerged(merged)) => {
                check.patient(merged.retired.as_ref(), "patients_merged.retired")
            }
            Some(Payload::MergedRecordTransferred(transferred)) => check.patient(
                transferred.retired.as_ref(),
                "merged_record_transferred.retired",
            ),
            Some(Payload::PatientIdentifierChanged(changed)) => check.patient(
                changed.previous.as_ref(),
                "patient_identifier_changed.previous",
            ),
            Some(Payload::VisitMoved(moved)) => {
                check.patient(moved.from.as_ref(), "visit_moved.from")
            }
            Some(Payload::MovedVisitTransferred(transferred)) => {
                check.patient(transferred.from.as_ref(), "moved_visit_transferred.from")
            }
            _ => None,
        };
        if let (Some(key), Some(other)) = (&key, &other_key)
            && key == other
        {
            match &event.payload {
                Some(Payload::PatientsMerged(_)) => check.violation(
                    "patients_merged.retired",
                    format!(
                        "is the surviving patient {key} itself: a merge needs two different patients"
                    ),
                ),
                Some(Payload::VisitMoved(_)) => check.violation(
                    "visit_moved.from",
                    format!(
                        "is the patient {key} the visit moves to: a visit moves between two different patients"
                    ),
                ),
                // The identifier changed within the same key: nothing moves.
                _ => other_key = None,
            }
        }
        check.payload(&event);
        match (id, key, check.violations.is_empty()) {
            (Some(id), Some(key), true) => {
                event.event_id = id.to_string();
                Ok(Self {
                    event,
                    id,
                    key,
                    other_key,
                })
            }
            _ => Err(InvalidEvent {
                event_id: event.event_id,
                violations: check.violations,
            }),
        }
    }

    /// As [`ValidEvent::new`], also refusing payloads that only Baton's own
    /// projector may write (a producer cannot forge a hand-over).
    pub fn from_producer(event: CareEvent) -> Result<Self, InvalidEvent> {
        let valid = Self::new(event)?;
        let forged = match valid.payload() {
            Payload::MergedRecordTransferred(_) => Some((
                "merged_record_transferred",
                "is written by Baton's projector only; to merge patients publish patients_merged",
            )),
            Payload::MovedVisitTransferred(_) => Some((
                "moved_visit_transferred",
                "is written by Baton's projector only; to move a visit publish visit_moved",
            )),
            _ => None,
        };
        if let Some((field, problem)) = forged {
            return Err(InvalidEvent {
                event_id: valid.event.event_id,
                violations: vec![FieldViolation::new(field, problem)],
            });
        }
        Ok(valid)
    }

    pub fn event(&self) -> &CareEvent {
        &self.event
    }

    pub fn into_event(self) -> CareEvent {
        self.event
    }

    pub fn id(&self) -> EventId {
        self.id
    }

    /// The patient the event is about (for a merge, the survivor).
    pub fn key(&self) -> &PatientKey {
        &self.key
    }

    /// The second patient of an event about two: for a merge the patient
    /// merged away, for an identifier change the previous identity (when its
    /// key differs), for a visit move the patient the visit leaves.
    pub fn other_key(&self) -> Option<&PatientKey> {
        self.other_key.as_ref()
    }

    /// The keys the event is written under: the patient's, and for a merge,
    /// an identifier change or a visit move the other patient's too, so it is
    /// recorded against both. (A hand-over is written under the receiving
    /// patient's key only.)
    pub fn log_keys(&self) -> Vec<&PatientKey> {
        match (self.payload(), &self.other_key) {
            (
                Payload::PatientsMerged(_)
                | Payload::PatientIdentifierChanged(_)
                | Payload::VisitMoved(_),
                Some(other),
            ) => vec![&self.key, other],
            _ => vec![&self.key],
        }
    }

    pub fn payload(&self) -> &Payload {
        self.event
            .payload
            .as_ref()
            .expect("validation guarantees a payload")
    }

    pub fn occurred(&self) -> Instant {
        Instant::of(self.event.occurred_at.as_ref())
    }

    pub fn recorded(&self) -> Instant {
        Instant::of(self.event.recorded_at.as_ref())
    }

    /// A correction: it says another event was entered in error, so what
    /// was true then, as known now, leaves out both.
    pub fn is_correction(&self) -> bool {
        matches!(
            self.payload(),
            Payload::AdmissionCancelled(_)
                | Payload::TransferCancelled(_)
                | Payload::DischargeCancelled(_)
                | Payload::TransferPlanCancelled(_)
        )
    }

    /// The name of the payload as it appears in the JSON mapping and in
    /// error messages, e.g. `transfer_cancelled`.
    pub fn payload_name(&self) -> &'static str {
        payload_name(self.payload())
    }
}

pub fn payload_name(payload: &Payload) -> &'static str {
    match payload {
        Payload::Registered(_) => "registered",
        Payload::DetailsUpdated(_) => "details_updated",
        Payload::PreAdmitted(_) => "pre_admitted",
        Payload::Admitted(_) => "admitted",
        Payload::Transferred(_) => "transferred",
        Payload::LeaveStarted(_) => "leave_started",
        Payload::LeaveEnded(_) => "leave_ended",
        Payload::PatientClassChanged(_) => "patient_class_changed",
        Payload::Discharged(_) => "discharged",
        Payload::Died(_) => "died",
        Payload::AdmissionCancelled(_) => "admission_cancelled",
        Payload::TransferCancelled(_) => "transfer_cancelled",
        Payload::DischargeCancelled(_) => "discharge_cancelled",
        Payload::PatientsMerged(_) => "patients_merged",
        Payload::MergedRecordTransferred(_) => "merged_record_transferred",
        Payload::ReferralRequested(_) => "referral_requested",
        Payload::ReferralAccepted(_) => "referral_accepted",
        Payload::ReferralRejected(_) => "referral_rejected",
        Payload::ReferralCancelled(_) => "referral_cancelled",
        Payload::ReferralCompleted(_) => "referral_completed",
        Payload::EpisodeStarted(_) => "episode_started",
        Payload::EpisodeEnded(_) => "episode_ended",
        Payload::CarePlanChanged(_) => "care_plan_changed",
        Payload::FrailtyAssessed(_) => "frailty_assessed",
        Payload::MedicallyOptimised(_) => "medically_optimised",
        Payload::MedicallyOptimisedRevoked(_) => "medically_optimised_revoked",
        Payload::ExpectedDischargeDateSet(_) => "expected_discharge_date_set",
        Payload::CareTeamMemberAssigned(_) => "care_team_member_assigned",
        Payload::CareTeamMemberRemoved(_) => "care_team_member_removed",
        Payload::AttendanceStarted(_) => "attendance_started",
        Payload::TransferPlanned(_) => "transfer_planned",
        Payload::TransferPlanCancelled(_) => "transfer_plan_cancelled",
        Payload::VisitMoved(_) => "visit_moved",
        Payload::MovedVisitTransferred(_) => "moved_visit_transferred",
        Payload::PatientIdentifierChanged(_) => "patient_identifier_changed",
    }
}

/// Payloads that belong to a hospital encounter and so need `encounter_id`.
fn needs_encounter(payload: &Payload) -> bool {
    matches!(
        payload,
        Payload::PreAdmitted(_)
            | Payload::Admitted(_)
            | Payload::Transferred(_)
            | Payload::LeaveStarted(_)
            | Payload::LeaveEnded(_)
            | Payload::PatientClassChanged(_)
            | Payload::Discharged(_)
            | Payload::AdmissionCancelled(_)
            | Payload::TransferCancelled(_)
            | Payload::DischargeCancelled(_)
            | Payload::AttendanceStarted(_)
            | Payload::TransferPlanned(_)
            | Payload::TransferPlanCancelled(_)
            | Payload::VisitMoved(_)
            | Payload::MovedVisitTransferred(_)
    )
}

/// A field's path as the checks pass it down: written out only when a
/// violation names it, so a valid event costs no string per field.
type Field<'a> = &'a dyn fmt::Display;

/// `parent.child`.
#[derive(Clone, Copy)]
struct Path<'a>(Field<'a>, &'a str);

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

#[derive(Default)]
struct Check {
    violations: Vec<FieldViolation>,
}

impl Check {
    fn violation(&mut self, field: impl fmt::Display, problem: impl Into<String>) {
        self.violations
            .push(FieldViolation::new(field.to_string(), problem));
    }

    fn required(&mut self, field: Field<'_>, value: &str, example: &str) {
        if value.trim().is_empty() {
            self.violation(field, format!("required, e.g. {example}"));
        }
    }

    fn event_id(&mut self, text: &str) -> Option<EventId> {
        EventId::parse(text)
            .map_err(|problem| self.violation("event_id", problem))
            .ok()
    }

    fn patient(&mut self, identity: Option<&PatientIdentity>, field: &str) -> Option<PatientKey> {
        let Some(identity) = identity else {
            self.violation(
                field,
                "required: the patient's NHS number or a local identifier",
            );
            return None;
        };
        self.enumeration::<NhsNumberStatus>(
            &Path(&field, "nhs_number_status"),
            identity.nhs_number_status,
        );
        for (i, local) in identity.local_ids.iter().enumerate() {
            if let Err(problem) = check_authority(&local.authority) {
                self.violation(format!("{field}.local_ids[{i}].authority"), problem);
            }
            if let Err(problem) = check_local_value(&local.value) {
                self.violation(format!("{field}.local_ids[{i}].value"), problem);
            }
        }
        if !identity.nhs_number.is_empty()
            && let Err(problem) = NhsNumber::parse(&identity.nhs_number)
        {
            self.violation(format!("{field}.nhs_number"), problem);
            return None;
        }
        match PatientKey::of_identity(identity, field) {
            Ok(key) => Some(key),
            Err(violation) => {
                if !self
                    .violations
                    .iter()
                    .any(|v| v.field.starts_with(&violation.field))
                {
                    self.violations.push(violation);
                }
                None
            }
        }
    }

    fn timestamp(&mut self, field: Field<'_>, timestamp: Option<&Timestamp>, required: bool) {
        let Some(timestamp) = timestamp else {
            if required {
                self.violation(
                    field,
                    "required: an RFC 3339 time such as \"2026-03-29T01:30:00Z\"",
                );
            }
            return;
        };
        if !(0..1_000_000_000).contains(&timestamp.nanos) {
            self.violation(
                field,
                format!("nanos must be 0 to 999999999, got {}", timestamp.nanos),
            );
        } else if !(EARLIEST_SECONDS..LATEST_SECONDS).contains(&timestamp.seconds) {
            self.violation(
                field,
                format!(
                    "must lie between 1900-01-01 and 2200-01-01, got {} seconds since 1970",
                    timestamp.seconds
                ),
            );
        }
    }

    fn date(&mut self, field: Field<'_>, date: Option<&Date>, required: bool) {
        let Some(date) = date else {
            if required {
                self.violation(
                    field,
                    "required: a date such as {\"year\": 2026, \"month\": 3, \"day\": 29}",
                );
            }
            return;
        };
        if !(1900..2200).contains(&date.year) || !(1..=12).contains(&date.month) {
            self.violation(
                field,
                format!(
                    "expected a calendar date between 1900 and 2199, got {}-{:02}-{:02}",
                    date.year, date.month, date.day
                ),
            );
        } else if !(1..=days_in_month(date.year, date.month)).contains(&date.day) {
            self.violation(
                field,
                format!(
                    "{}-{:02} has {} days, got day {}",
                    date.year,
                    date.month,
                    days_in_month(date.year, date.month),
                    date.day
                ),
            );
        }
    }

    /// Refuses enum numbers this version does not know, naming the known ones.
    fn enumeration<E: TryFrom<i32> + KnownValues>(&mut self, field: Field<'_>, value: i32) {
        if E::try_from(value).is_err() {
            self.violation(
                field,
                format!(
                    "unknown value {value}; expected one of {}",
                    E::known().join(", ")
                ),
            );
        }
    }

    fn required_enumeration<E: TryFrom<i32> + KnownValues>(
        &mut self,
        field: Field<'_>,
        value: i32,
    ) {
        if value == 0 {
            self.violation(
                field,
                format!("required: one of {}", E::known()[1..].join(", ")),
            );
        } else {
            self.enumeration::<E>(field, value);
        }
    }

    fn ods_code(&mut self, field: Field<'_>, code: &str) {
        if !code.is_empty()
            && (code.len() < 3
                || code.len() > 10
                || !code
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()))
        {
            self.violation(
                field,
                format!("expected an ODS code of 3 to 10 capital letters and digits such as \"RXX\", got {code:?}"),
            );
        }
    }

    fn location(&mut self, field: Field<'_>, location: Option<&Location>, required: bool) {
        match location {
            None if required => self.violation(
                field,
                "required: at least the point of care (ward) or the facility",
            ),
            Some(location)
                if required
                    && location.point_of_care.is_empty()
                    && location.facility.is_empty() =>
            {
                self.violation(
                    field,
                    "needs at least point_of_care (the ward) or facility (the site)",
                )
            }
            Some(location) => self.ods_code(&Path(field, "organisation"), &location.organisation),
            None => {}
        }
    }

    fn envelope(&mut self, event: &CareEvent) {
        self.timestamp(&"occurred_at", event.occurred_at.as_ref(), true);
        self.timestamp(&"recorded_at", event.recorded_at.as_ref(), true);
        if let (Some(occurred), Some(recorded)) = (&event.occurred_at, &event.recorded_at)
            && occurred.seconds - recorded.seconds > MAX_OCCURRED_AFTER_RECORDED_SECONDS
        {
            self.violation(
                    "occurred_at",
                    format!(
                        "is {} hours after recorded_at: an event cannot be recorded before it happens (more than a day apart suggests a time-zone or clock error)",
                        (occurred.seconds - recorded.seconds) / 3600
                    ),
                );
        }
        match &event.source {
            None => self.violation("source", "required: at least source.system, e.g. \"PAS\""),
            Some(source) => {
                self.required(&"source.system", &source.system, "\"PAS\"");
                self.ods_code(&"source.organisation", &source.organisation);
            }
        }
        if let Some(payload) = &event.payload
            && needs_encounter(payload)
            && event.encounter_id.trim().is_empty()
        {
            self.violation(
                "encounter_id",
                format!(
                    "required for {}: the visit number (HL7 PV1-19) of the hospital encounter",
                    payload_name(payload)
                ),
            );
        }
        if !event.causation_id.is_empty() && EventId::parse(&event.causation_id).is_err() {
            self.violation(
                "causation_id",
                format!(
                    "expected the event id (a UUID) of the causing event, got {:?}",
                    event.causation_id
                ),
            );
        }
    }

    fn payload(&mut self, event: &CareEvent) {
        let Some(payload) = &event.payload else {
            self.violation(
                "payload",
                "required: exactly one of registered, details_updated, pre_admitted, admitted, transferred, leave_started, leave_ended, patient_class_changed, discharged, died, admission_cancelled, transfer_cancelled, discharge_cancelled, patients_merged, referral_requested, referral_accepted, referral_rejected, referral_cancelled, referral_completed, episode_started, episode_ended, care_plan_changed, frailty_assessed, medically_optimised, medically_optimised_revoked, expected_discharge_date_set, care_team_member_assigned, care_team_member_removed, attendance_started, transfer_planned, transfer_plan_cancelled, visit_moved, patient_identifier_changed",
            );
            return;
        };
        let name = payload_name(payload);
        let field = |part| Path(&name, part);
        match payload {
            Payload::Registered(registered) => self.demographics(
                &field("demographics"),
                registered.demographics.as_ref(),
                event,
            ),
            Payload::DetailsUpdated(updated) => {
                self.demographics(&field("demographics"), updated.demographics.as_ref(), event)
            }
            Payload::PreAdmitted(pre) => {
                self.location(
                    &field("expected_location"),
                    pre.expected_location.as_ref(),
                    false,
                );
                self.timestamp(
                    &field("expected_admission_at"),
                    pre.expected_admission_at.as_ref(),
                    false,
                );
                self.enumeration::<PatientClass>(&field("patient_class"), pre.patient_class);
                self.enumeration::<AdmissionMethod>(
                    &field("admission_method"),
                    pre.admission_method,
                );
            }
            Payload::Admitted(admitted) => {
                self.location(&field("location"), admitted.location.as_ref(), true);
                self.enumeration::<PatientClass>(&field("patient_class"), admitted.patient_class);
                self.enumeration::<AdmissionMethod>(
                    &field("admission_method"),
                    admitted.admission_method,
                );
            }
            Payload::Transferred(transferred) => {
                self.location(&field("to"), transferred.to.as_ref(), true);
                self.location(&field("from"), transferred.from.as_ref(), false);
            }
            Payload::LeaveStarted(leave) => self.timestamp(
                &field("expected_return_at"),
                leave.expected_return_at.as_ref(),
                false,
            ),
            Payload::LeaveEnded(_) => {}
            Payload::PatientClassChanged(changed) => {
                self.required_enumeration::<PatientClass>(
                    &field("patient_class"),
                    changed.patient_class,
                );
                self.location(&field("location"), changed.location.as_ref(), false);
                self.location(&field("from"), changed.from.as_ref(), false);
            }
            Payload::Discharged(discharged) => {
                self.enumeration::<DischargeMethod>(&field("method"), discharged.method);
                self.enumeration::<DischargeDestination>(
                    &field("destination"),
                    discharged.destination,
                );
                self.ods_code(
                    &field("destination_organisation"),
                    &discharged.destination_organisation,
                );
            }
            Payload::Died(died) => self.timestamp(&field("died_at"), died.died_at.as_ref(), false),
            Payload::AdmissionCancelled(cancel) => {
                self.cancelled_id(&field("cancelled_event_id"), &cancel.cancelled_event_id)
            }
            Payload::TransferCancelled(cancel) => {
                self.cancelled_id(&field("cancelled_event_id"), &cancel.cancelled_event_id);
                self.location(&field("from"), cancel.from.as_ref(), false);
                self.location(&field("to"), cancel.to.as_ref(), false);
            }
            Payload::DischargeCancelled(cancel) => {
                self.cancelled_id(&field("cancelled_event_id"), &cancel.cancelled_event_id)
            }
            // The retired identity was checked with the envelope.
            Payload::PatientsMerged(_) => {}
            Payload::MergedRecordTransferred(transferred) => {
                if transferred.retired_state.is_none() {
                    self.violation(
                        field("retired_state"),
                        "required: the retired patient's state",
                    );
                }
                if EventId::parse(&transferred.merge_event_id).is_err() {
                    self.violation(
                        field("merge_event_id"),
                        "required: the event id (a UUID) of the merge",
                    );
                }
                for (index, id) in transferred.applied_event_ids.iter().enumerate() {
                    if let Err(problem) = EventId::parse(id) {
                        self.violation(format!("{}[{index}]", field("applied_event_ids")), problem);
                    }
                }
            }
            Payload::AttendanceStarted(attendance) => {
                self.location(&field("location"), attendance.location.as_ref(), true);
                self.enumeration::<PatientClass>(&field("patient_class"), attendance.patient_class);
            }
            Payload::TransferPlanned(planned) => {
                self.location(&field("to"), planned.to.as_ref(), true);
                self.timestamp(&field("planned_at"), planned.planned_at.as_ref(), false);
            }
            Payload::TransferPlanCancelled(cancel) => {
                self.cancelled_id(&field("cancelled_event_id"), &cancel.cancelled_event_id);
                self.location(&field("to"), cancel.to.as_ref(), false);
            }
            // The patients were checked with the envelope.
            Payload::VisitMoved(moved) => self.required(
                &field("from_encounter_id"),
                &moved.from_encounter_id,
                "\"V2001\": the visit's number under the patient it moves from (HL7 MRG-5)",
            ),
            Payload::MovedVisitTransferred(transferred) => {
                if transferred.encounter.is_none() {
                    self.violation(field("encounter"), "required: the moved encounter");
                }
                if EventId::parse(&transferred.visit_moved_event_id).is_err() {
                    self.violation(
                        field("visit_moved_event_id"),
                        "required: the event id (a UUID) of the visit move",
                    );
                }
            }
            Payload::PatientIdentifierChanged(_) => {}
            Payload::ReferralRequested(referral) => {
                self.required(
                    &field("referral_id"),
                    &referral.referral_id,
                    "\"REF-000123\"",
                );
                match &referral.service {
                    Some(service) if !service.code.is_empty() || !service.name.is_empty() => {
                        self.ods_code(&field("service.organisation"), &service.organisation)
                    }
                    _ => self.violation(
                        field("service"),
                        "required: the service referred to, at least its code or name",
                    ),
                }
                self.enumeration::<ReferralPriority>(&field("priority"), referral.priority);
                self.ods_code(
                    &field("referring_organisation"),
                    &referral.referring_organisation,
                );
                self.timestamp(&field("respond_by"), referral.respond_by.as_ref(), false);
            }
            Payload::ReferralAccepted(r) => {
                self.required(&field("referral_id"), &r.referral_id, "\"REF-000123\"")
            }
            Payload::ReferralRejected(r) => {
                self.required(&field("referral_id"), &r.referral_id, "\"REF-000123\"")
            }
            Payload::ReferralCancelled(r) => {
                self.required(&field("referral_id"), &r.referral_id, "\"REF-000123\"")
            }
            Payload::ReferralCompleted(r) => {
                self.required(&field("referral_id"), &r.referral_id, "\"REF-000123\"")
            }
            Payload::EpisodeStarted(episode) => {
                self.required(
                    &field("episode_id"),
                    &episode.episode_id,
                    "\"VW-2026-0042\"",
                );
                self.required_enumeration::<EpisodeType>(&field("type"), episode.r#type);
                self.enumeration::<Pathway>(&field("pathway"), episode.pathway);
                let service = episode.service.clone().unwrap_or_default();
                if episode.r#type == EpisodeType::VirtualWard as i32 && service.code.is_empty() {
                    self.violation(
                        field("service.code"),
                        "required for a virtual-ward episode: the virtual ward's id, e.g. \"VW-FRAIL-RXX\"",
                    );
                }
                self.ods_code(&field("service.organisation"), &service.organisation);
            }
            Payload::EpisodeEnded(episode) => {
                self.required(
                    &field("episode_id"),
                    &episode.episode_id,
                    "\"VW-2026-0042\"",
                );
                self.enumeration::<EpisodeEndReason>(&field("reason"), episode.reason);
            }
            Payload::CarePlanChanged(plan) => {
                self.required(&field("care_plan_id"), &plan.care_plan_id, "\"CP-7781\"");
                if plan.version == 0 {
                    self.violation(
                        field("version"),
                        "required: versions start at 1 and grow with every change",
                    );
                }
                self.enumeration::<CarePlanStatus>(&field("status"), plan.status);
                for (i, goal) in plan.goals.iter().enumerate() {
                    self.date(
                        &format!("{name}.goals[{i}].target_date"),
                        goal.target_date.as_ref(),
                        false,
                    );
                }
            }
            Payload::FrailtyAssessed(frailty) => {
                if !(1..=9).contains(&frailty.clinical_frailty_scale) {
                    self.violation(
                        field("clinical_frailty_scale"),
                        format!(
                            "expected a Clinical Frailty Scale score from 1 (very fit) to 9 (terminally ill), got {}",
                            frailty.clinical_frailty_scale
                        ),
                    );
                }
            }
            Payload::MedicallyOptimised(_) | Payload::MedicallyOptimisedRevoked(_) => {}
            Payload::ExpectedDischargeDateSet(set) => self.date(
                &field("expected_discharge_date"),
                set.expected_discharge_date.as_ref(),
                true,
            ),
            Payload::CareTeamMemberAssigned(assigned) => match &assigned.member {
                None => self.violation(field("member"), "required: at least member.member_id"),
                Some(member) => {
                    self.required(
                        &field("member.member_id"),
                        &member.member_id,
                        "a GMC, NMC or staff number",
                    );
                    self.ods_code(&field("member.organisation"), &member.organisation);
                }
            },
            Payload::CareTeamMemberRemoved(removed) => self.required(
                &field("member_id"),
                &removed.member_id,
                "a GMC, NMC or staff number",
            ),
        }
    }

    fn cancelled_id(&mut self, field: Field<'_>, id: &str) {
        if !id.is_empty()
            && let Err(problem) = EventId::parse(id)
        {
            self.violation(field, problem);
        }
    }

    fn demographics(
        &mut self,
        field: Field<'_>,
        demographics: Option<&baton_proto::events::v1::Demographics>,
        event: &CareEvent,
    ) {
        let Some(demographics) = demographics else {
            self.violation(
                field,
                "required: the patient's details (name, birth date, ...)",
            );
            return;
        };
        self.date(
            &Path(field, "birth_date"),
            demographics.birth_date.as_ref(),
            false,
        );
        if let (Some(birth), Some(occurred)) = (&demographics.birth_date, &event.occurred_at) {
            let birth_seconds = days_from_civil(birth.year, birth.month, birth.day) * 86_400;
            if (1..=12).contains(&birth.month) && birth_seconds > occurred.seconds + 86_400 {
                self.violation(
                    Path(field, "birth_date"),
                    "is after occurred_at: a patient cannot be recorded before birth",
                );
            }
        }
        self.enumeration::<AdministrativeSex>(&Path(field, "sex"), demographics.sex);
        self.ods_code(&Path(field, "gp_practice"), &demographics.gp_practice);
    }
}

/// The names of an enum's values, for error messages.
trait KnownValues {
    fn known() -> Vec<&'static str>;
}

macro_rules! known_values {
    ($($ty:ty),* $(,)?) => {$(
        impl KnownValues for $ty {
            fn known() -> Vec<&'static str> {
                (0..64).filter_map(|n| <$ty>::try_from(n).ok()).map(|v| v.as_str_name()).collect()
            }
        }
    )*};
}

known_values!(
    AdministrativeSex,
    AdmissionMethod,
    CarePlanStatus,
    DischargeDestination,
    DischargeMethod,
    EpisodeEndReason,
    EpisodeType,
    NhsNumberStatus,
    Pathway,
    PatientClass,
    ReferralPriority,
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{admitted, event, identity};
    use baton_proto::events::v1::{FrailtyAssessed, LocalIdentifier, PatientsMerged, Source};

    fn fields(error: &InvalidEvent) -> Vec<&str> {
        error.violations.iter().map(|v| v.field.as_str()).collect()
    }

    #[test]
    fn a_complete_event_is_valid() {
        let valid = ValidEvent::new(admitted("9434765919", "V1", 100, "WARD-A")).unwrap();
        assert_eq!(valid.key().as_str(), "9434765919");
        assert_eq!(valid.payload_name(), "admitted");
    }

    #[test]
    fn reports_every_problem_with_its_field() {
        let mut bad = admitted("9434765918", "", 100, "");
        bad.event_id = "nope".into();
        bad.recorded_at = None;
        bad.source = Some(Source {
            system: String::new(),
            organisation: "rxx".into(),
            message_id: String::new(),
        });
        let error = ValidEvent::new(bad).unwrap_err();
        assert_eq!(
            fields(&error),
            vec![
                "event_id",
                "patient.nhs_number",
                "recorded_at",
                "source.system",
                "source.organisation",
                "encounter_id",
                "admitted.location"
            ],
            "{error}"
        );
        let text = error.to_string();
        assert!(
            text.contains("patient.nhs_number: \"9434765918\" fails the modulus-11 check"),
            "{text}"
        );
    }

    #[test]
    fn missing_payload_and_patient_are_named() {
        let mut bad = event("9434765919", 100, None);
        bad.patient = None;
        let error = ValidEvent::new(bad).unwrap_err();
        assert_eq!(fields(&error), vec!["patient", "payload"]);
    }

    #[test]
    fn frailty_scores_outside_1_to_9_are_refused() {
        for (score, ok) in [(0, false), (1, true), (9, true), (10, false)] {
            let e = event(
                "9434765919",
                100,
                Some(Payload::FrailtyAssessed(FrailtyAssessed {
                    clinical_frailty_scale: score,
                    assessor: String::new(),
                })),
            );
            assert_eq!(ValidEvent::new(e).is_ok(), ok, "score {score}");
        }
    }

    #[test]
    fn occurred_far_after_recorded_is_refused() {
        let mut e = admitted("9434765919", "V1", 100, "WARD-A");
        e.occurred_at = Some(Timestamp {
            seconds: 100 + 3 * 86_400,
            nanos: 0,
        });
        let error = ValidEvent::new(e).unwrap_err();
        assert_eq!(fields(&error), vec!["occurred_at"]);
    }

    #[test]
    fn timestamps_out_of_range_are_refused() {
        let mut e = admitted("9434765919", "V1", 100, "WARD-A");
        e.recorded_at = Some(Timestamp {
            seconds: LATEST_SECONDS + 1,
            nanos: 0,
        });
        e.occurred_at = Some(Timestamp {
            seconds: 100,
            nanos: -1,
        });
        let error = ValidEvent::new(e).unwrap_err();
        assert_eq!(
            fields(&error),
            vec!["occurred_at", "recorded_at"],
            "{error}"
        );
    }

    #[test]
    fn unknown_enum_values_name_the_known_ones() {
        let mut e = admitted("9434765919", "V1", 100, "WARD-A");
        if let Some(Payload::Admitted(a)) = &mut e.payload {
            a.patient_class = 42;
        }
        let error = ValidEvent::new(e).unwrap_err();
        assert!(
            error.violations[0]
                .problem
                .contains("PATIENT_CLASS_INPATIENT"),
            "{error}"
        );
    }

    #[test]
    fn local_identifiers_make_keys_and_are_checked() {
        let mut e = admitted("", "V1", 100, "WARD-A");
        e.patient = Some(PatientIdentity {
            local_ids: vec![LocalIdentifier {
                authority: "RXX".into(),
                value: "H 1".into(),
            }],
            ..Default::default()
        });
        let error = ValidEvent::new(e.clone()).unwrap_err();
        assert_eq!(
            fields(&error),
            vec!["patient.local_ids[0].value"],
            "{error}"
        );
        e.patient = Some(PatientIdentity {
            local_ids: vec![LocalIdentifier {
                authority: "RXX".into(),
                value: "H1".into(),
            }],
            ..Default::default()
        });
        assert_eq!(ValidEvent::new(e).unwrap().key().as_str(), "RXX:H1");
    }

    #[test]
    fn a_merge_is_written_under_both_keys_and_not_into_itself() {
        let merge = event(
            "9434765919",
            100,
            Some(Payload::PatientsMerged(PatientsMerged {
                retired: Some(identity("4010232137")),
            })),
        );
        let valid = ValidEvent::new(merge.clone()).unwrap();
        let keys: Vec<_> = valid
            .log_keys()
            .iter()
            .map(|k| k.as_str().to_owned())
            .collect();
        assert_eq!(keys, vec!["9434765919", "4010232137"]);

        let mut into_itself = merge;
        into_itself.payload = Some(Payload::PatientsMerged(PatientsMerged {
            retired: Some(identity("9434765919")),
        }));
        let error = ValidEvent::new(into_itself).unwrap_err();
        assert_eq!(fields(&error), vec!["patients_merged.retired"]);
    }

    #[test]
    fn producers_cannot_forge_a_merge_hand_over() {
        let forged = event(
            "9434765919",
            100,
            Some(Payload::MergedRecordTransferred(Default::default())),
        );
        assert!(ValidEvent::from_producer(forged).is_err());
    }

    #[test]
    fn event_ids_are_canonicalised() {
        let mut e = admitted("9434765919", "V1", 100, "WARD-A");
        e.event_id = e.event_id.to_uppercase();
        let valid = ValidEvent::new(e).unwrap();
        assert_eq!(
            valid.event().event_id,
            valid.event().event_id.to_lowercase()
        );
    }
}
