//! ADT and REF messages to `baton.events.v1` care events.
//!
//! [`map`] turns one parsed message into the events it means (one, or
//! several: an A03 of a patient who died is a discharge and a death, an
//! A04 with a visit a registration and an attendance, an A17 two moves),
//! each with a deterministic event id, or refuses it with every problem
//! found and where in the message it is. Nothing here does IO or reads a clock.
//!
//! **Event ids** are name-based (v5) UUIDs under
//! [`baton_care::BATON_NAMESPACE`], derived from the sending application
//! and facility (MSH-3/4), the message type (MSH-9), the control id
//! (MSH-10) **and** every segment after MSH as sent (plus MSH-7 when the
//! message has no EVN time, since MSH-7 then is the event's time), and the
//! event's place in the message. A re-sent message gives the same ids, so it
//! changes nothing; a different message that reuses a control id (feeds do:
//! a discharge and its cancellation may share MSH-10) gives different ones.

mod adt;
mod codes;
mod referral;

use baton_care::{FieldViolation, InvalidEvent, ValidEvent};
use baton_proto::events::v1::care_event::Payload;
use baton_proto::events::v1::{
    CareEvent, Date, Demographics, LocalIdentifier, Location as PlaceOfCare, PatientIdentity,
    Source,
};
use prost_types::Timestamp;
use uuid::Uuid;

use crate::ack::AckCode;
use crate::problem::{ErrorCode, Location, Problem};
use crate::{Message, Segment, Value, Zone};

/// How a feed's messages are read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MapConfig {
    /// The zone of timestamps sent without an offset.
    pub zone: Zone,
}

/// What the acknowledgement needs from MSH, read from any message that
/// parses, mappable or not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// MSH-3 to MSH-6 as sent, component by component (decoded), so the
    /// ACK can swap sender and receiver in its own delimiters.
    pub sending_application: Vec<String>,
    pub sending_facility: Vec<String>,
    pub receiving_application: Vec<String>,
    pub receiving_facility: Vec<String>,
    /// MSH-9.1, e.g. `ADT`.
    pub message_type: String,
    /// MSH-9.2 (else EVN-1), e.g. `A01`.
    pub trigger: String,
    /// MSH-10, echoed in MSA-2.
    pub control_id: String,
    /// MSH-11.1 (P, T or D), echoed in the ACK.
    pub processing_id: String,
    /// MSH-12.1, echoed in the ACK.
    pub version: String,
}

impl Header {
    pub fn read(message: &Message) -> Self {
        let components = |field: usize| -> Vec<String> {
            let value = message.get("MSH", field);
            let mut parts: Vec<String> = (1..=3)
                .map(|n| value.component(n).text().into_owned())
                .collect();
            while parts.last().is_some_and(String::is_empty) {
                parts.pop();
            }
            parts
        };
        let message_type = message.get("MSH", 9);
        let mut trigger = message_type.component(2).text().into_owned();
        if trigger.is_empty() {
            trigger = message.get("EVN", 1).first().into_owned();
        }
        Self {
            sending_application: components(3),
            sending_facility: components(4),
            receiving_application: components(5),
            receiving_facility: components(6),
            message_type: message_type.component(1).text().to_ascii_uppercase(),
            trigger: trigger.to_ascii_uppercase(),
            control_id: message.get("MSH", 10).text().into_owned(),
            processing_id: message.get("MSH", 11).first().into_owned(),
            version: message.get("MSH", 12).first().into_owned(),
        }
    }

    /// The header of a message that could not be read whole (e.g. a frame
    /// past the size limit), from its first segment, if that is an MSH.
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        let start = bytes
            .iter()
            .position(|&b| b == b'M')
            .filter(|&at| at <= 8)?;
        let end = bytes[start..]
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .map_or(bytes.len(), |end| start + end);
        Message::parse(&bytes[start..end])
            .ok()
            .map(|message| Self::read(&message))
    }

    /// `ADT^A01`, for messages and metrics.
    pub fn kind(&self) -> String {
        match (self.message_type.is_empty(), self.trigger.is_empty()) {
            (true, _) => "unknown".to_owned(),
            (false, true) => self.message_type.clone(),
            (false, false) => format!("{}^{}", self.message_type, self.trigger),
        }
    }
}

/// A message that maps: its events and any warnings about fields that
/// could not be used (reported beside an `AA`).
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub header: Header,
    events: Vec<MappedEvent>,
    pub warnings: Vec<Problem>,
}

/// One event and where in the message each of its fields came from, so a
/// validation problem can name the HL7 field to fix.
#[derive(Debug, Clone, PartialEq)]
struct MappedEvent {
    event: CareEvent,
    /// (field path prefix in the event, where it came from), most specific
    /// first is not required: the longest matching prefix wins.
    sources: Vec<(String, Location)>,
}

impl Mapped {
    pub fn events(&self) -> impl Iterator<Item = &CareEvent> {
        self.events.iter().map(|e| &e.event)
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn into_events(self) -> Vec<CareEvent> {
        self.events.into_iter().map(|e| e.event).collect()
    }

    /// Validates every event as ingest will; the problems name HL7 fields.
    pub fn check(&self) -> Result<(), Vec<Problem>> {
        let invalid: Vec<(usize, InvalidEvent)> = self
            .events
            .iter()
            .enumerate()
            .filter_map(|(index, e)| {
                ValidEvent::from_producer(e.event.clone())
                    .err()
                    .map(|error| (index, error))
            })
            .collect();
        if invalid.is_empty() {
            Ok(())
        } else {
            Err(self.problems_of(&invalid))
        }
    }

    /// The problems of events that failed validation (by index in
    /// [`Mapped::events`]), each placed at the HL7 field it came from.
    pub fn problems_of(&self, invalid: &[(usize, InvalidEvent)]) -> Vec<Problem> {
        invalid
            .iter()
            .flat_map(|(index, error)| {
                error
                    .violations
                    .iter()
                    .map(move |violation| self.locate(*index, violation))
            })
            .collect()
    }

    fn locate(&self, index: usize, violation: &FieldViolation) -> Problem {
        let location = self.events.get(index).and_then(|e| {
            e.sources
                .iter()
                .filter(|(prefix, _)| {
                    violation.field == *prefix
                        || violation.field.starts_with(&format!("{prefix}."))
                        || violation.field.starts_with(&format!("{prefix}["))
                })
                .max_by_key(|(prefix, _)| prefix.len())
                .map(|(_, location)| location.clone())
        });
        let code = if violation.problem.starts_with("required") {
            ErrorCode::RequiredFieldMissing
        } else if violation.problem.starts_with("unknown value") {
            ErrorCode::TableValueNotFound
        } else {
            ErrorCode::DataTypeError
        };
        Problem::error(
            location,
            code,
            format!("{} ({})", violation.problem, violation.field),
        )
    }
}

/// A message Baton will not turn into events, with the ACK code to answer
/// (its [`Header`] is read with [`Header::read`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// `AR` for a message type Baton does not take, `AE` for one whose
    /// content is wrong.
    pub code: AckCode,
    pub problems: Vec<Problem>,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let problems: Vec<String> = self.problems.iter().map(ToString::to_string).collect();
        write!(
            f,
            "refused ({}): {}",
            self.code.as_str(),
            problems.join("; ")
        )
    }
}

/// The message types and events Baton maps, for messages and docs.
pub const SUPPORTED: &str =
    "ADT^A01–A08, A11–A13, A15, A17, A21, A22, A26, A28, A31, A40, A45, A47 and REF^I12–I14";

/// Maps one message to care events.
pub fn map(message: &Message, config: &MapConfig) -> Result<Mapped, Refused> {
    let header = Header::read(message);
    let refuse = |code: AckCode, problems: Vec<Problem>| Refused { code, problems };
    if header.control_id.is_empty() {
        return Err(refuse(
            AckCode::Reject,
            vec![Problem::error(
                Some(Location::field("MSH", 10)),
                ErrorCode::RequiredFieldMissing,
                "required: the message control id that the acknowledgement refers to",
            )],
        ));
    }
    let mut mapper = Mapper::new(message, config, &header);
    let unsupported = match header.message_type.as_str() {
        "ADT" => (!adt::map(&mut mapper, &header.trigger))
            .then_some((ErrorCode::UnsupportedEventCode, "event")),
        "REF" => (!referral::map(&mut mapper, &header.trigger))
            .then_some((ErrorCode::UnsupportedEventCode, "event")),
        _ => Some((ErrorCode::UnsupportedMessageType, "message type")),
    };
    if let Some((code, what)) = unsupported {
        return Err(refuse(
            AckCode::Reject,
            vec![Problem::error(
                Some(Location::field("MSH", 9)),
                code,
                format!(
                    "unsupported {what} {}: Baton maps {SUPPORTED}",
                    header.kind()
                ),
            )],
        ));
    }
    if !mapper.problems.is_empty() {
        return Err(refuse(AckCode::Error, mapper.problems));
    }
    Ok(Mapped {
        header: header.clone(),
        events: mapper.events,
        warnings: mapper.warnings,
    })
}

/// The common part of every event of one message.
#[derive(Debug, Clone)]
struct Envelope {
    patient: PatientIdentity,
    occurred_at: Option<Timestamp>,
    recorded_at: Option<Timestamp>,
    sources: Vec<(String, Location)>,
    /// Where the visit number came from: PV1-19, or that of the PV1 of
    /// this patient's group in a message about two (A17).
    visit_at: Location,
}

/// The state of one mapping: the message, what was found wrong, and the
/// events so far.
struct Mapper<'m> {
    message: &'m Message,
    config: &'m MapConfig,
    header: &'m Header,
    source: Source,
    /// Whether MSH-7 is the time of the events (no EVN time), and so part
    /// of what identifies them.
    time_from_msh: bool,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
    events: Vec<MappedEvent>,
}

impl<'m> Mapper<'m> {
    fn new(message: &'m Message, config: &'m MapConfig, header: &'m Header) -> Self {
        let application = header
            .sending_application
            .first()
            .cloned()
            .unwrap_or_default();
        let facility = header.sending_facility.first().cloned().unwrap_or_default();
        // MSH-4 is the organisation when it is an ODS code; otherwise it
        // stays with the system name, so the source is still told apart.
        let (system, organisation) = if codes::is_ods_code(&facility) {
            (application, facility)
        } else if facility.is_empty() || application.is_empty() {
            (format!("{application}{facility}"), String::new())
        } else {
            (format!("{application}@{facility}"), String::new())
        };
        Self {
            message,
            config,
            header,
            source: Source {
                system,
                organisation,
                message_id: header.control_id.clone(),
            },
            time_from_msh: false,
            problems: Vec::new(),
            warnings: Vec::new(),
            events: Vec::new(),
        }
    }

    fn error(&mut self, location: Location, code: ErrorCode, message: impl Into<String>) {
        self.problems
            .push(Problem::error(Some(location), code, message));
    }

    fn warn(&mut self, location: Location, code: ErrorCode, message: impl Into<String>) {
        self.warnings
            .push(Problem::warning(location, code, message));
    }

    /// Occurrences of segment `name` with their 1-based sequence.
    fn all(&self, name: &str) -> Vec<(usize, &'m Segment)> {
        self.message
            .segments()
            .iter()
            .filter(|s| s.name() == name)
            .enumerate()
            .map(|(i, s)| (i + 1, s))
            .collect()
    }

    fn first(&self, name: &str) -> Option<&'m Segment> {
        self.message.segment(name)
    }

    /// The first `name` segment, or a problem saying the event needs it.
    fn require(&mut self, name: &str, why: &str) -> Option<&'m Segment> {
        let found = self.first(name);
        if found.is_none() {
            self.error(
                Location::segment(name),
                ErrorCode::SegmentSequenceError,
                format!(
                    "required: a {name} segment ({why}) in {}",
                    self.header.kind()
                ),
            );
        }
        found
    }

    fn value(&self, segment: &'m Segment, field: usize) -> Value<'m> {
        self.message.field(segment, field)
    }

    fn text(&self, segment: Option<&'m Segment>, field: usize) -> String {
        segment.map_or_else(String::new, |s| self.value(s, field).text().into_owned())
    }

    /// A timestamp field; a bad one is a problem, an empty one `None`.
    fn time(&mut self, segment: Option<&'m Segment>, field: usize) -> Option<Timestamp> {
        let segment = segment?;
        let value = self.value(segment, field).component(1);
        if value.is_empty() {
            return None;
        }
        match self.config.zone.parse(&value.text()) {
            Ok(time) => Some(time),
            Err(problem) => {
                let location = Location::field(segment.name(), field);
                self.error(location, ErrorCode::DataTypeError, problem);
                None
            }
        }
    }

    /// occurred_at from EVN-6, else `clinical` (e.g. PV1-44 of an
    /// admission), else EVN-2, else MSH-7; recorded_at from EVN-2, else
    /// MSH-7.
    fn times(
        &mut self,
        clinical: Option<(&'static str, usize)>,
    ) -> (
        Option<Timestamp>,
        Option<Timestamp>,
        Vec<(String, Location)>,
    ) {
        let evn = self.first("EVN");
        let msh = self.first("MSH");
        let mut sources = Vec::new();
        let recorded = match self.time(evn, 2) {
            Some(time) => {
                sources.push(("recorded_at".to_owned(), Location::field("EVN", 2)));
                Some(time)
            }
            None => {
                self.time_from_msh = true;
                sources.push(("recorded_at".to_owned(), Location::field("MSH", 7)));
                self.time(msh, 7)
            }
        };
        let mut occurred = self.time(evn, 6).map(|t| (t, Location::field("EVN", 6)));
        if occurred.is_none()
            && let Some((name, field)) = clinical
        {
            let segment = self.first(name);
            occurred = self
                .time(segment, field)
                .map(|t| (t, Location::field(name, field)));
        }
        let occurred = match occurred {
            Some((time, location)) => {
                sources.push(("occurred_at".to_owned(), location));
                Some(time)
            }
            None => {
                let location = sources[0].1.clone();
                sources.push(("occurred_at".to_owned(), location));
                recorded
            }
        };
        (occurred, recorded, sources)
    }

    /// The patient of PID occurrence `sequence`, from PID-3.
    fn envelope(
        &mut self,
        pid: &'m Segment,
        sequence: usize,
        clinical: Option<(&'static str, usize)>,
    ) -> Envelope {
        let (mut patient, mut sources) = self.identity(pid, sequence, 3, "patient");
        if !patient.nhs_number.is_empty() {
            patient.nhs_number_status = codes::nhs_number_status(&self.text(Some(pid), 32)) as i32;
        }
        let (occurred_at, recorded_at, times) = self.times(clinical);
        sources.extend(times);
        sources.push(("source.system".to_owned(), Location::field("MSH", 3)));
        sources.push(("source.organisation".to_owned(), Location::field("MSH", 4)));
        sources.push(("payload".to_owned(), Location::field("MSH", 9)));
        Envelope {
            patient,
            occurred_at,
            recorded_at,
            sources,
            visit_at: Location::field("PV1", 19),
        }
    }

    /// A patient identity from a CX field (PID-3, MRG-1): the repetition
    /// with identifier type `NH` or assigning authority `NHS` is the NHS
    /// number (spaces dropped); every other is a local identifier under its
    /// assigning authority (CX-4), or the sending facility when it has
    /// none. Type `MR` comes first, so it makes the key when there is no
    /// NHS number.
    fn identity(
        &mut self,
        segment: &'m Segment,
        sequence: usize,
        field: usize,
        path: &str,
    ) -> (PatientIdentity, Vec<(String, Location)>) {
        let at = || Location::nth(segment.name(), sequence, field);
        let mut identity = PatientIdentity::default();
        let mut locals: Vec<(bool, LocalIdentifier, usize)> = Vec::new();
        let mut sources = vec![(path.to_owned(), at())];
        let fallback = self
            .header
            .sending_facility
            .first()
            .or(self.header.sending_application.first())
            .cloned()
            .unwrap_or_default();
        for (index, repetition) in self.value(segment, field).repetitions().enumerate() {
            let id = repetition.component(1).text();
            if id.is_empty() {
                continue;
            }
            let kind = repetition.component(5).text().to_ascii_uppercase();
            let assigner = repetition.component(4);
            let mut authority = assigner.subcomponent(1).text().into_owned();
            if authority.is_empty() {
                authority = assigner.subcomponent(2).text().into_owned();
            }
            if kind == "NH" || authority.eq_ignore_ascii_case("NHS") {
                let number: String = id.chars().filter(|c| !c.is_whitespace()).collect();
                if identity.nhs_number.is_empty() {
                    identity.nhs_number = number;
                    sources.push((format!("{path}.nhs_number"), at().repetition(index + 1)));
                } else if identity.nhs_number != number {
                    self.error(
                        at().repetition(index + 1),
                        ErrorCode::DataTypeError,
                        format!(
                            "a second, different NHS number {number:?} (the first is {:?}): send one",
                            identity.nhs_number
                        ),
                    );
                }
                continue;
            }
            if authority.is_empty() {
                authority.clone_from(&fallback);
            }
            locals.push((
                kind != "MR",
                LocalIdentifier {
                    authority,
                    value: id.into_owned(),
                },
                index + 1,
            ));
        }
        locals.sort_by_key(|(not_mr, _, _)| *not_mr);
        for (i, (_, local, repetition)) in locals.into_iter().enumerate() {
            sources.push((
                format!("{path}.local_ids[{i}]"),
                at().repetition(repetition),
            ));
            identity.local_ids.push(local);
        }
        (identity, sources)
    }

    /// Demographics from PID-5, 7, 8, 11 and PD1-3.
    fn demographics(
        &mut self,
        pid: &'m Segment,
        path: &str,
    ) -> (Demographics, Vec<(String, Location)>) {
        let name = self.value(pid, 5);
        let birth = self.value(pid, 7).component(1).text().into_owned();
        let birth_date = if birth.is_empty() {
            None
        } else {
            let date = date(&birth);
            if date.is_none() {
                self.error(
                    Location::field("PID", 7),
                    ErrorCode::DataTypeError,
                    format!("expected a date of birth YYYYMMDD[HHMM…], got {birth:?}"),
                );
            }
            date
        };
        let sex_code = self.value(pid, 8).first().into_owned();
        let sex = codes::sex(&sex_code).unwrap_or_else(|| {
            self.warn(
                Location::field("PID", 8),
                ErrorCode::TableValueNotFound,
                format!("sex {sex_code:?} is not in HL7 table 0001 (F, M, O, U, A, N): left unset"),
            );
            baton_proto::events::v1::AdministrativeSex::Unspecified
        });
        let postcode = self
            .value(pid, 11)
            .repetitions()
            .map(|address| address.component(5).text().into_owned())
            .find(|p| !p.is_empty())
            .unwrap_or_default();
        let mut gp_practice = String::new();
        if let Some(pd1) = self.first("PD1") {
            let practice = self.value(pd1, 3);
            let code = [
                practice.component(10).first(),
                practice.component(3).first(),
            ]
            .into_iter()
            .find(|c| !c.is_empty())
            .unwrap_or_default()
            .into_owned();
            if codes::is_ods_code(&code) {
                gp_practice = code;
            } else if !code.is_empty() {
                self.warn(
                    Location::field("PD1", 3),
                    ErrorCode::DataTypeError,
                    format!("GP practice {code:?} is not an ODS code (3 to 10 capital letters and digits): left unset"),
                );
            }
        }
        let sources = vec![
            (format!("{path}.birth_date"), Location::field("PID", 7)),
            (format!("{path}.sex"), Location::field("PID", 8)),
            (format!("{path}.gp_practice"), Location::field("PD1", 3)),
            (path.to_owned(), Location::field("PID", 5)),
        ];
        (
            Demographics {
                family_name: name.component(1).first().into_owned(),
                given_name: name.component(2).text().into_owned(),
                birth_date,
                sex: sex as i32,
                postcode,
                gp_practice,
            },
            sources,
        )
    }

    /// A PL field (PV1-3, PV1-6): point of care, room, bed, facility.
    fn place(&self, segment: &'m Segment, field: usize) -> Option<PlaceOfCare> {
        let value = self.value(segment, field);
        let place = PlaceOfCare {
            point_of_care: value.component(1).first().into_owned(),
            room: value.component(2).first().into_owned(),
            bed: value.component(3).first().into_owned(),
            facility: value.component(4).first().into_owned(),
            organisation: String::new(),
        };
        (place != PlaceOfCare::default()).then_some(place)
    }

    /// A coded value mapped through `table`; a code not in it is a warning
    /// and maps to the default.
    fn coded<T: Default>(
        &mut self,
        segment: &'m Segment,
        field: usize,
        table: fn(&str) -> Option<T>,
        what: &str,
    ) -> (T, String) {
        let code = self.value(segment, field).first().into_owned();
        match table(&code) {
            Some(value) => (value, code),
            None => {
                self.warn(
                    Location::field(segment.name(), field),
                    ErrorCode::TableValueNotFound,
                    format!(
                        "{what} {code:?} is not a code Baton knows (see docs/hl7.md): left unset"
                    ),
                );
                (T::default(), code)
            }
        }
    }

    /// Adds an event with a derived id.
    fn push(
        &mut self,
        envelope: &Envelope,
        encounter_id: Option<String>,
        payload: Payload,
        mut sources: Vec<(String, Location)>,
    ) {
        let index = self.events.len();
        let name = baton_care::payload_name(&payload);
        let event_id = self.event_id(index, name);
        sources.extend(envelope.sources.iter().cloned());
        if encounter_id.is_some() {
            sources.push(("encounter_id".to_owned(), envelope.visit_at.clone()));
        }
        self.events.push(MappedEvent {
            event: CareEvent {
                event_id: event_id.to_string(),
                patient: Some(envelope.patient.clone()),
                occurred_at: envelope.occurred_at,
                recorded_at: envelope.recorded_at,
                source: Some(self.source.clone()),
                encounter_id: encounter_id.unwrap_or_default(),
                payload: Some(payload),
                ..Default::default()
            },
            sources,
        });
    }

    /// See the module documentation for why these parts.
    fn event_id(&self, index: usize, payload: &str) -> Uuid {
        let msh = self.message.segment("MSH");
        let raw = |field| msh.map_or("", |s| self.message.field(s, field).raw());
        let mut name = String::from("baton-hl7/v1\n");
        for part in [raw(3), raw(4), raw(9), raw(10)] {
            name.push_str(part);
            name.push('\n');
        }
        if self.time_from_msh {
            name.push_str(raw(7));
        }
        name.push('\n');
        name.push_str(&self.message.body_text());
        name.push_str(&format!("\n{index}:{payload}"));
        Uuid::new_v5(&baton_care::BATON_NAMESPACE, name.as_bytes())
    }
}

/// The visit number, PV1-19 (CX-1).
fn visit_id(mapper: &Mapper<'_>, pv1: &Segment) -> String {
    mapper.value(pv1, 19).component(1).text().into_owned()
}

/// A date from the first eight digits of a DT/DTM value, as written (a
/// birth date has no time zone).
fn date(text: &str) -> Option<Date> {
    let digits = text.get(..8)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, month, day) = (
        digits[..4].parse().ok()?,
        digits[4..6].parse().ok()?,
        digits[6..].parse().ok()?,
    );
    jiff::civil::Date::new(year, month, day).ok()?;
    Some(Date {
        year: i32::from(year),
        month: i32::from(month),
        day: i32::from(day),
    })
}

/// A person (XCN) as the source names them: `Family, Given (id)`.
fn person(value: Value<'_>) -> String {
    let id = value.component(1).first();
    let name = join_name(value.component(2).first(), value.component(3).text());
    match (name.is_empty(), id.is_empty()) {
        (true, _) => id.into_owned(),
        (false, true) => name,
        (false, false) => format!("{name} ({id})"),
    }
}

/// A person's name (XPN): `Family, Given`.
fn name(value: Value<'_>) -> String {
    join_name(value.component(1).first(), value.component(2).text())
}

fn join_name(family: std::borrow::Cow<'_, str>, given: std::borrow::Cow<'_, str>) -> String {
    match (family.is_empty(), given.is_empty()) {
        (true, _) => given.into_owned(),
        (false, true) => family.into_owned(),
        (false, false) => format!("{family}, {given}"),
    }
}

#[cfg(test)]
mod tests;
