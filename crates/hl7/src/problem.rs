//! What is wrong with a message, and where: the content of an ACK's ERR
//! segments and of `baton hl7 map`'s answers.

use std::fmt;

/// A place in a message, as HL7's ERL data type names it (ERR-2):
/// segment, which occurrence of it, field, and optionally the repetition
/// and component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub segment: String,
    /// 1 for the first segment of that name.
    pub sequence: usize,
    pub field: usize,
    pub repetition: Option<usize>,
    pub component: Option<usize>,
}

impl Location {
    pub fn field(segment: &str, field: usize) -> Self {
        Self::nth(segment, 1, field)
    }

    /// Field `field` of occurrence `sequence` of `segment`.
    pub fn nth(segment: &str, sequence: usize, field: usize) -> Self {
        Self {
            segment: segment.to_owned(),
            sequence,
            field,
            repetition: None,
            component: None,
        }
    }

    /// The whole segment (field 0).
    pub fn segment(segment: &str) -> Self {
        Self::field(segment, 0)
    }

    pub fn repetition(mut self, repetition: usize) -> Self {
        self.repetition = Some(repetition);
        self
    }

    pub fn component(mut self, component: usize) -> Self {
        self.component = Some(component);
        self
    }

    /// The ERL form for ERR-2, e.g. `PID^1^3` or `PID^1^3^2^1`, its parts
    /// separated by `component`.
    pub fn erl(&self, component: char) -> String {
        let mut parts = vec![self.segment.clone(), self.sequence.to_string()];
        if self.field > 0 {
            parts.push(self.field.to_string());
            if self.repetition.is_some() || self.component.is_some() {
                parts.push(self.repetition.unwrap_or(1).to_string());
            }
            if let Some(c) = self.component {
                parts.push(c.to_string());
            }
        }
        parts.join(&component.to_string())
    }
}

impl fmt::Display for Location {
    /// As people write it: `PID-3`, `PID-3(2)`, `PV1-3.1`, `PID[2]-3` for a
    /// second PID segment, `MRG` for a whole segment.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.segment)?;
        if self.sequence > 1 {
            write!(f, "[{}]", self.sequence)?;
        }
        if self.field > 0 {
            write!(f, "-{}", self.field)?;
        }
        if let Some(r) = self.repetition.filter(|&r| r > 1) {
            write!(f, "({r})")?;
        }
        if let Some(c) = self.component {
            write!(f, ".{c}")?;
        }
        Ok(())
    }
}

/// HL7 table 0357, message error condition codes (ERR-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    SegmentSequenceError,
    RequiredFieldMissing,
    DataTypeError,
    TableValueNotFound,
    UnsupportedMessageType,
    UnsupportedEventCode,
    ApplicationInternalError,
}

impl ErrorCode {
    pub fn code(self) -> u16 {
        match self {
            Self::SegmentSequenceError => 100,
            Self::RequiredFieldMissing => 101,
            Self::DataTypeError => 102,
            Self::TableValueNotFound => 103,
            Self::UnsupportedMessageType => 200,
            Self::UnsupportedEventCode => 201,
            Self::ApplicationInternalError => 207,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Self::SegmentSequenceError => "Segment sequence error",
            Self::RequiredFieldMissing => "Required field missing",
            Self::DataTypeError => "Data type error",
            Self::TableValueNotFound => "Table value not found",
            Self::UnsupportedMessageType => "Unsupported message type",
            Self::UnsupportedEventCode => "Unsupported event code",
            Self::ApplicationInternalError => "Application internal error",
        }
    }
}

/// ERR-4: an error fails the message, a warning is reported beside an `AA`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Unknown when the message could not be read far enough to say.
    pub location: Option<Location>,
    pub code: ErrorCode,
    pub severity: Severity,
    /// What is wrong and what was expected, for the person fixing the feed.
    pub message: String,
}

impl Problem {
    pub fn error(location: Option<Location>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            location,
            code,
            severity: Severity::Error,
            message: message.into(),
        }
    }

    pub fn warning(location: Location, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            location: Some(location),
            code,
            severity: Severity::Warning,
            message: message.into(),
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        match &self.location {
            Some(location) => write!(f, "{location}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_read_as_erl_and_as_people_write_them() {
        let pid3 = Location::field("PID", 3);
        assert_eq!(pid3.erl('^'), "PID^1^3");
        assert_eq!(pid3.to_string(), "PID-3");
        let rep = Location::nth("PID", 2, 3).repetition(2).component(1);
        assert_eq!(rep.erl('^'), "PID^2^3^2^1");
        assert_eq!(rep.to_string(), "PID[2]-3(2).1");
        assert_eq!(Location::segment("PV1").erl('^'), "PV1^1");
        assert_eq!(Location::segment("PV1").to_string(), "PV1");
    }
}
