//! baton-hl7: HL7 v2 into Baton.
//!
//! # Layout
//! - `parse.rs`: [`Message`], a small parser that honours MSH-1/MSH-2.
//! - `time.rs`: [`Zone`], HL7 timestamps read in the feed's time zone.

mod parse;
mod time;

pub use parse::{Delimiters, Message, Segment, Value, unescape};
pub use time::Zone;

/// Why HL7 input could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The bytes are not an HL7 v2 message; `at` names the segment or field.
    #[error("cannot parse the message: {at}: {problem}")]
    Parse { at: String, problem: String },
    #[error(
        "unknown time zone {name:?} ({problem}); expected an IANA name such as \"Europe/London\""
    )]
    TimeZone { name: String, problem: String },
}

impl Error {
    pub(crate) fn parse(at: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Parse {
            at: at.into(),
            problem: problem.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
