//! Acknowledgements (original mode): `AA` when the message's events are
//! durably in the log, `AE` when its content is wrong or the log could not
//! take it (the sender may retry), `AR` when Baton does not take it at all.
//! Every problem becomes an ERR segment naming the segment and field
//! (ERR-2), the HL7 error code (ERR-3), the severity (ERR-4) and what is
//! wrong (ERR-8).
//!
//! An `AA` ends with a Baton segment, `ZBT`, whose first field is the
//! consistency token of the message's events ([`CONSISTENCY_SEGMENT`]): a
//! sender that passes it to the query API reads its own writes. Receivers
//! that do not know the segment skip it, as HL7 asks of Z-segments.

use crate::map::Header;
use crate::problem::{Problem, Severity};
use crate::{Delimiters, Message, Result};

/// MSA-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckCode {
    /// `AA`: accepted, and durable.
    Accept,
    /// `AE`: not accepted; fix the message, or retry if the log was down.
    Error,
    /// `AR`: rejected; Baton does not process this message.
    Reject,
}

impl AckCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "AA",
            Self::Error => "AE",
            Self::Reject => "AR",
        }
    }

    fn parse(code: &str) -> Option<Self> {
        match code {
            "AA" | "CA" => Some(Self::Accept),
            "AE" | "CE" => Some(Self::Error),
            "AR" | "CR" => Some(Self::Reject),
            _ => None,
        }
    }
}

/// The application Baton names itself as when the message did not say
/// who it was sent to.
pub const BATON_APPLICATION: &str = "BATON";

/// The Z-segment of an `AA` carrying the consistency token (ZBT-1).
pub const CONSISTENCY_SEGMENT: &str = "ZBT";

/// Builds the ACK of a message. `header` is `None` when the message could
/// not be parsed at all; `control_id` is the ACK's own MSH-10 and `at` its
/// MSH-7 (the caller's clock, formatted with [`crate::Zone::format`]);
/// `consistency_token`, given for an accepted message, goes in ZBT-1.
pub fn acknowledgement(
    header: Option<&Header>,
    code: AckCode,
    problems: &[Problem],
    control_id: &str,
    at: &str,
    consistency_token: Option<&str>,
) -> String {
    let d = Delimiters::default();
    let empty = Header::default();
    let header = header.unwrap_or(&empty);
    let hd = |parts: &[String]| -> String {
        parts
            .iter()
            .map(|p| d.escape(p))
            .collect::<Vec<_>>()
            .join(&d.component.to_string())
    };
    let sender = if header.receiving_application.is_empty() {
        BATON_APPLICATION.to_owned()
    } else {
        hd(&header.receiving_application)
    };
    let message_type = if header.trigger.is_empty() {
        "ACK".to_owned()
    } else {
        format!("ACK^{}^ACK", d.escape(&header.trigger))
    };
    let processing = if header.processing_id.is_empty() {
        "P"
    } else {
        &header.processing_id
    };
    let version = if header.version.is_empty() {
        "2.5"
    } else {
        &header.version
    };
    let mut ack = format!(
        "MSH|^~\\&|{sender}|{}|{}|{}|{at}||{message_type}|{}|{}|{}\r",
        hd(&header.receiving_facility),
        hd(&header.sending_application),
        hd(&header.sending_facility),
        d.escape(control_id),
        d.escape(processing),
        d.escape(version),
    );
    let summary = problems
        .iter()
        .find(|p| p.is_error())
        .or(problems.first())
        .map(ToString::to_string)
        .unwrap_or_default();
    ack.push_str(&format!(
        "MSA|{}|{}|{}\r",
        code.as_str(),
        d.escape(&header.control_id),
        d.escape(&truncate(&summary, 80)),
    ));
    for problem in problems {
        let location = problem
            .location
            .as_ref()
            .map(|l| l.erl(d.component))
            .unwrap_or_default();
        let severity = match problem.severity {
            Severity::Error => "E",
            Severity::Warning => "W",
        };
        ack.push_str(&format!(
            "ERR||{location}|{}^{}^HL70357|{severity}||||{}\r",
            problem.code.code(),
            problem.code.text(),
            d.escape(&problem.to_string()),
        ));
    }
    if let Some(token) = consistency_token {
        ack.push_str(&format!("{CONSISTENCY_SEGMENT}|{}\r", d.escape(token)));
    }
    ack
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// An acknowledgement as a sender reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadAck {
    pub code: AckCode,
    /// MSA-2: the control id of the message acknowledged.
    pub control_id: String,
    /// ERR-8 (else ERR-2 and ERR-3) of each ERR segment, and MSA-3.
    pub problems: Vec<String>,
    /// ZBT-1 of a Baton `AA`: pass it to the query API to read the
    /// message's writes.
    pub consistency_token: Option<String>,
}

impl ReadAck {
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let message = Message::parse(bytes)?;
        let code_text = message.get("MSA", 1).text().into_owned();
        let code = AckCode::parse(&code_text).ok_or_else(|| {
            crate::Error::parse(
                "MSA-1",
                format!("expected an acknowledgement code AA, AE or AR, got {code_text:?}"),
            )
        })?;
        let mut problems: Vec<String> = message
            .segments()
            .iter()
            .filter(|s| s.name() == "ERR")
            .map(|err| {
                let text = message.field(err, 8).text();
                if text.is_empty() {
                    format!(
                        "{} {}",
                        message.field(err, 2).raw(),
                        message.field(err, 3).component(2).text()
                    )
                } else {
                    text.into_owned()
                }
            })
            .collect();
        let msa_text = message.get("MSA", 3).text();
        if problems.is_empty() && !msa_text.is_empty() {
            problems.push(msa_text.into_owned());
        }
        let consistency_token = message
            .segment(CONSISTENCY_SEGMENT)
            .map(|zbt| message.field(zbt, 1).text().into_owned())
            .filter(|token| !token.is_empty());
        Ok(Self {
            code,
            control_id: message.get("MSA", 2).text().into_owned(),
            problems,
            consistency_token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::{ErrorCode, Location};

    #[test]
    fn swaps_sender_and_receiver_and_names_each_problem() {
        let message = Message::parse_str(
            "MSH|^~\\&|PAS|RXX|BATON|RXX01|20260101||ADT^A01^ADT_A01|M1|T|2.4\r",
        )
        .unwrap();
        let header = Header::read(&message);
        let problems = [Problem::error(
            Some(Location::field("PID", 3)),
            ErrorCode::DataTypeError,
            "\"9434765918\" fails the modulus-11 check",
        )];
        let ack = acknowledgement(
            Some(&header),
            AckCode::Error,
            &problems,
            "A1",
            "20260101120000+0000",
            None,
        );
        let lines: Vec<&str> = ack.split('\r').collect();
        assert_eq!(
            lines[0],
            "MSH|^~\\&|BATON|RXX01|PAS|RXX|20260101120000+0000||ACK^A01^ACK|A1|T|2.4"
        );
        assert!(lines[1].starts_with("MSA|AE|M1|PID-3: "), "{}", lines[1]);
        assert_eq!(
            lines[2],
            "ERR||PID^1^3|102^Data type error^HL70357|E||||PID-3: \"9434765918\" fails the modulus-11 check"
        );
        let read = ReadAck::parse(ack.as_bytes()).unwrap();
        assert_eq!(read.code, AckCode::Error);
        assert_eq!(read.control_id, "M1");
        assert_eq!(
            read.problems,
            ["PID-3: \"9434765918\" fails the modulus-11 check"]
        );
    }

    #[test]
    fn an_unreadable_message_still_gets_an_ack() {
        let ack = acknowledgement(None, AckCode::Reject, &[], "A2", "20260101", None);
        assert!(
            ack.starts_with("MSH|^~\\&|BATON||||20260101||ACK|A2|P|2.5\rMSA|AR||\r"),
            "{ack}"
        );
        assert_eq!(
            ReadAck::parse(ack.as_bytes()).unwrap().code,
            AckCode::Reject
        );
    }

    #[test]
    fn text_with_delimiters_is_escaped() {
        let problems = [Problem::error(
            None,
            ErrorCode::DataTypeError,
            "a|b^c&d~e\\f",
        )];
        let ack = acknowledgement(None, AckCode::Error, &problems, "A3", "2026", None);
        assert!(ack.contains("a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f"), "{ack}");
        let read = ReadAck::parse(ack.as_bytes()).unwrap();
        assert_eq!(read.problems, ["a|b^c&d~e\\f"]);
    }

    #[test]
    fn an_accepted_message_carries_its_consistency_token_last() {
        let message =
            Message::parse_str("MSH|^~\\&|PAS|RXX|BATON|RXX|20260101||ADT^A01|M1|P|2.5\r").unwrap();
        let header = Header::read(&message);
        let warning = Problem::warning(
            Location::field("PV1", 37),
            ErrorCode::TableValueNotFound,
            "left unset",
        );
        let ack = acknowledgement(
            Some(&header),
            AckCode::Accept,
            &[warning],
            "A4",
            "20260101",
            Some("v1:2=41,3=7"),
        );
        let names: Vec<&str> = ack
            .split('\r')
            .filter(|s| !s.is_empty())
            .map(|s| &s[..3])
            .collect();
        assert_eq!(names, ["MSH", "MSA", "ERR", "ZBT"]);
        assert!(ack.ends_with("ZBT|v1:2=41,3=7\r"), "{ack}");
        let read = ReadAck::parse(ack.as_bytes()).unwrap();
        assert_eq!(read.code, AckCode::Accept);
        assert_eq!(read.consistency_token.as_deref(), Some("v1:2=41,3=7"));
        let refused = acknowledgement(Some(&header), AckCode::Error, &[], "A5", "2026", None);
        assert_eq!(
            ReadAck::parse(refused.as_bytes())
                .unwrap()
                .consistency_token,
            None
        );
    }
}
