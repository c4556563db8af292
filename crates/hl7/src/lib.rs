//! baton-hl7: HL7 v2 into Baton, without IO.
//!
//! Hospital systems speak HL7 v2 over MLLP. This crate reads their ADT and
//! referral messages and says what they mean as `baton.events.v1` care
//! events; the ingest service's MLLP listener publishes them and answers
//! each message with the acknowledgement built here.
//!
//! - [`Message`]: a small parser that honours the delimiters a message
//!   declares in MSH-1/MSH-2, repetitions, components, subcomponents,
//!   escapes (`\F\ \S\ \T\ \R\ \E\ \Xhh\`), CR, LF or CRLF between segments
//!   and a leading byte-order mark. It never panics (it is fuzzed:
//!   `fuzz/`); what it cannot read is an [`Error::Parse`].
//! - [`map`]: ADT A01–A08, A11–A13, A15, A17, A21, A22, A26, A28, A31,
//!   A40, A45, A47 and REF I12–I14 to events with deterministic ids
//!   ([`Mapped`]), or a
//!   [`Refused`] naming each problem's segment and field ([`Problem`],
//!   [`Location`]). [`Mapped::check`] validates the events as ingest will,
//!   placing every violation back at its HL7 field.
//! - [`acknowledgement`]: the `ACK` with `MSA` and one `ERR` per problem;
//!   [`ReadAck`] reads one, for senders.
//! - [`mllp`]: MLLP framing with a size limit, as a sans-IO decoder.
//! - [`Zone`]: timestamps without an offset read in the feed's IANA zone.
//!
//! ```
//! use baton_hl7::{MapConfig, Message, map};
//!
//! let text = "MSH|^~\\&|PAS|RXX|BATON|RXX|20260715093000||ADT^A01|M1|P|2.5\r\
//!             EVN|A01|20260715093000\r\
//!             PID|1||9434765919^^^NHS^NH\r\
//!             PV1|1|I|WARD-7^^^RXX01||||||||||||||||V100\r";
//! let message = Message::parse_str(text).unwrap();
//! let mapped = map(&message, &MapConfig::default()).unwrap();
//! mapped.check().unwrap();
//! let event = mapped.events().next().unwrap();
//! assert_eq!(event.encounter_id, "V100");
//! // 09:30 in London in July is 08:30 UTC (BST).
//! assert_eq!(event.occurred_at.unwrap().seconds % 86_400, 8 * 3600 + 30 * 60);
//! ```
//!
//! # Layout
//! - `parse.rs`: [`Message`], [`Segment`], [`Value`], [`Delimiters`], escapes.
//! - `time.rs`: [`Zone`] and HL7 timestamps.
//! - `map/`: [`map`], event ids and identities (`mod.rs`), ADT triggers
//!   (`adt.rs`), REF triggers (`referral.rs`), code tables (`codes.rs`).
//! - `problem.rs`: [`Problem`], [`Location`], HL7 error codes.
//! - `ack.rs`: building and reading acknowledgements.
//! - `mllp.rs`: MLLP frames.

mod ack;
mod map;
pub mod mllp;
mod parse;
mod problem;
mod time;

pub use ack::{AckCode, BATON_APPLICATION, CONSISTENCY_SEGMENT, ReadAck, acknowledgement};
pub use map::{Header, MapConfig, Mapped, Refused, SUPPORTED, map};
pub use parse::{Delimiters, Message, Segment, Value, split_messages, unescape};
pub use problem::{ErrorCode, Location, Problem, Severity};
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
