//! Identifiers that exist only when valid: NHS numbers, patient keys, event ids.

use std::fmt;

use baton_proto::events::v1::{LocalIdentifier, PatientIdentity};
use uuid::Uuid;

use crate::FieldViolation;

/// A ten-digit NHS number whose check digit passes the modulus-11 check.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NhsNumber(String);

impl NhsNumber {
    /// Validates `text`, which must be exactly ten digits (no spaces).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() != 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("expected 10 digits with no spaces, got {text:?}"));
        }
        let digits: Vec<u32> = text.bytes().map(|b| u32::from(b - b'0')).collect();
        let weighted: u32 = digits[..9]
            .iter()
            .zip((2..=10).rev())
            .map(|(d, w)| d * w)
            .sum();
        let check = match 11 - weighted % 11 {
            11 => 0,
            10 => {
                return Err(format!(
                    "{text:?} is not an NHS number: no check digit can make it pass the modulus-11 check"
                ));
            }
            check => check,
        };
        if digits[9] != check {
            return Err(format!(
                "{text:?} fails the modulus-11 check: the check digit should be {check}, not {}",
                digits[9]
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NhsNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The key of a patient in the log and the store: the NHS number when
/// present and valid, else `authority:local-id` of the first local
/// identifier. The two forms cannot collide: only the second has a colon.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PatientKey(String);

impl PatientKey {
    pub fn from_nhs_number(nhs_number: &NhsNumber) -> Self {
        Self(nhs_number.0.clone())
    }

    /// Validates a local identifier and makes `authority:value` of it.
    pub fn from_local_id(local: &LocalIdentifier) -> Result<Self, String> {
        check_authority(&local.authority).map_err(|problem| format!("authority: {problem}"))?;
        check_local_value(&local.value).map_err(|problem| format!("value: {problem}"))?;
        Ok(Self(format!("{}:{}", local.authority, local.value)))
    }

    /// Parses a key as Baton prints it: ten digits (an NHS number, checked)
    /// or `authority:local-id`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.split_once(':') {
            None => NhsNumber::parse(text)
                .map(|nhs| Self::from_nhs_number(&nhs))
                .map_err(|problem| {
                    format!("expected an NHS number or authority:local-id: {problem}")
                }),
            Some((authority, value)) => Self::from_local_id(&LocalIdentifier {
                authority: authority.to_owned(),
                value: value.to_owned(),
            }),
        }
    }

    /// The key of an identity; the violation names the field under `field`.
    pub fn of_identity(identity: &PatientIdentity, field: &str) -> Result<Self, FieldViolation> {
        if !identity.nhs_number.is_empty() {
            return NhsNumber::parse(&identity.nhs_number)
                .map(|nhs| Self::from_nhs_number(&nhs))
                .map_err(|problem| FieldViolation::new(format!("{field}.nhs_number"), problem));
        }
        let Some(first) = identity.local_ids.first() else {
            return Err(FieldViolation::new(
                field,
                "required: an NHS number or at least one local identifier (authority and value)",
            ));
        };
        Self::from_local_id(first)
            .map_err(|problem| FieldViolation::new(format!("{field}.local_ids[0]"), problem))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for PatientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Authorities become part of a key, so they are short codes without colons.
pub(crate) fn check_authority(authority: &str) -> Result<(), String> {
    if authority.is_empty() {
        return Err("required, e.g. an ODS code like \"RXX\" or a system name".into());
    }
    if authority.len() > 64
        || !authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(format!(
            "expected up to 64 letters, digits, '.', '-' or '_', got {authority:?}"
        ));
    }
    Ok(())
}

pub(crate) fn check_local_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("required, e.g. a hospital number".into());
    }
    if value.len() > 64 || value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "expected up to 64 characters without spaces or control characters, got {value:?}"
        ));
    }
    Ok(())
}

/// A producer-assigned event id: a UUID, kept in canonical lowercase
/// hyphenated form so the same id always compares equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(Uuid);

impl EventId {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("required: a UUID such as \"0b7a4d52-5d7e-4c1a-9a7e-2f1c3b4d5e6f\"".into());
        }
        let uuid = Uuid::parse_str(text)
            .map_err(|error| format!("expected a UUID such as \"0b7a4d52-5d7e-4c1a-9a7e-2f1c3b4d5e6f\", got {text:?} ({error})"))?;
        if uuid.is_nil() {
            return Err(
                "the nil UUID is not an event id: generate a random (v4) or name-based (v5) UUID"
                    .into(),
            );
        }
        Ok(Self(uuid))
    }

    /// A name-based id derived from another event's id, so an event that
    /// Baton itself derives is the same every time it is derived.
    pub fn derived(from: EventId, purpose: &str) -> Self {
        let mut name = from.0.as_bytes().to_vec();
        name.extend_from_slice(purpose.as_bytes());
        Self(Uuid::new_v5(&BATON_NAMESPACE, &name))
    }

    pub fn uuid(&self) -> Uuid {
        self.0
    }

    /// The id's 16 bytes, as a store keeps it.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.into_bytes()
    }

    /// The id from the 16 bytes [`EventId::to_bytes`] gave.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(Uuid::from_bytes(bytes))
    }
}

impl From<Uuid> for EventId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

/// Namespace for Baton's name-based (v5) event ids.
pub const BATON_NAMESPACE: Uuid = Uuid::from_u128(0x6d2c_1f0e_8a4b_4c3d_9e5f_7a1b_2c3d_4e5f);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_nhs_numbers() {
        for valid in ["9434765919", "9434765870", "4010232137", "0000000000"] {
            assert!(NhsNumber::parse(valid).is_ok(), "{valid}");
        }
    }

    #[test]
    fn rejects_bad_check_digits_and_forms_saying_why() {
        assert_eq!(
            NhsNumber::parse("9434765918").unwrap_err(),
            "\"9434765918\" fails the modulus-11 check: the check digit should be 9, not 8"
        );
        assert!(
            NhsNumber::parse("943 476 5919")
                .unwrap_err()
                .contains("10 digits")
        );
        assert!(
            NhsNumber::parse("94347659190")
                .unwrap_err()
                .contains("10 digits")
        );
        // check digit would be 10: no valid number has these nine digits
        assert!(
            NhsNumber::parse("1000000010")
                .unwrap_err()
                .contains("no check digit")
        );
    }

    #[test]
    fn keys_prefer_the_nhs_number() {
        let identity = PatientIdentity {
            nhs_number: "9434765919".into(),
            local_ids: vec![LocalIdentifier {
                authority: "RXX".into(),
                value: "A123".into(),
            }],
            ..Default::default()
        };
        assert_eq!(
            PatientKey::of_identity(&identity, "patient")
                .unwrap()
                .as_str(),
            "9434765919"
        );
        let local_only = PatientIdentity {
            nhs_number: String::new(),
            ..identity
        };
        assert_eq!(
            PatientKey::of_identity(&local_only, "patient")
                .unwrap()
                .as_str(),
            "RXX:A123"
        );
    }

    #[test]
    fn an_invalid_nhs_number_is_an_error_not_a_fallback() {
        let identity = PatientIdentity {
            nhs_number: "9434765918".into(),
            local_ids: vec![LocalIdentifier {
                authority: "RXX".into(),
                value: "A123".into(),
            }],
            ..Default::default()
        };
        let violation = PatientKey::of_identity(&identity, "patient").unwrap_err();
        assert_eq!(violation.field, "patient.nhs_number");
    }

    #[test]
    fn parses_printed_keys() {
        assert_eq!(PatientKey::parse("RXX:A123").unwrap().as_str(), "RXX:A123");
        assert!(PatientKey::parse("RX X:A123").is_err());
        assert!(
            PatientKey::parse("12345")
                .unwrap_err()
                .contains("NHS number")
        );
    }

    #[test]
    fn event_ids_are_canonical() {
        let upper = EventId::parse("0B7A4D52-5D7E-4C1A-9A7E-2F1C3B4D5E6F").unwrap();
        let lower = EventId::parse("0b7a4d52-5d7e-4c1a-9a7e-2f1c3b4d5e6f").unwrap();
        assert_eq!(upper, lower);
        assert_eq!(upper.to_string(), "0b7a4d52-5d7e-4c1a-9a7e-2f1c3b4d5e6f");
        assert!(EventId::parse("00000000-0000-0000-0000-000000000000").is_err());
        assert!(
            EventId::parse("not-a-uuid")
                .unwrap_err()
                .contains("expected a UUID")
        );
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let id = EventId::parse("0b7a4d52-5d7e-4c1a-9a7e-2f1c3b4d5e6f").unwrap();
        assert_eq!(EventId::derived(id, "merge"), EventId::derived(id, "merge"));
        assert_ne!(EventId::derived(id, "merge"), EventId::derived(id, "other"));
        assert_ne!(EventId::derived(id, "merge"), id);
    }
}
