//! HL7 timestamps (`YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]`) to
//! protobuf timestamps. A time without an offset is read in the feed's
//! [`Zone`] (default `Europe/London`), so both GMT and BST come out right.

use std::fmt;
use std::time::SystemTime;

use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone};
use prost_types::Timestamp;

use crate::{Error, Result};

/// The zone a sender's local times are in, from the IANA database compiled
/// into Baton (no system tzdata needed).
#[derive(Clone, PartialEq)]
pub struct Zone {
    name: String,
    zone: TimeZone,
}

impl Zone {
    pub const DEFAULT: &'static str = "Europe/London";

    pub fn named(name: &str) -> Result<Self> {
        let zone = TimeZone::get(name).map_err(|error| Error::TimeZone {
            name: name.to_owned(),
            problem: error.to_string(),
        })?;
        Ok(Self {
            name: name.to_owned(),
            zone,
        })
    }

    pub fn london() -> Self {
        Self::named(Self::DEFAULT).expect("the compiled-in IANA database has Europe/London")
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `now` as an HL7 timestamp with its offset in this zone, e.g.
    /// `20260329013000+0100`, for the MSH-7 of an acknowledgement.
    pub fn format(&self, now: SystemTime) -> String {
        let Ok(timestamp) = jiff::Timestamp::try_from(now) else {
            return String::new();
        };
        let datetime = self.zone.to_datetime(timestamp);
        let offset = self.zone.to_offset(timestamp).seconds();
        let sign = if offset < 0 { '-' } else { '+' };
        let offset = offset.unsigned_abs();
        format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}{sign}{:02}{:02}",
            datetime.year(),
            datetime.month(),
            datetime.day(),
            datetime.hour(),
            datetime.minute(),
            datetime.second(),
            offset / 3600,
            offset % 3600 / 60
        )
    }

    /// Parses an HL7 DTM/TS value. Missing trailing parts default to the
    /// start of the period (`2026` is 2026-01-01 00:00). A local time that
    /// the spring clock change skips is read with the offset before it
    /// (01:30 on the day BST starts is 01:30 GMT); one the autumn change
    /// repeats takes the earlier, summer-time reading.
    pub fn parse(&self, text: &str) -> std::result::Result<Timestamp, String> {
        let text = text.trim();
        let problem = |why: &str| {
            format!(
                "{why}: expected an HL7 timestamp YYYY[MM[DD[HH[MM[SS[.SSSS]]]]]][+/-ZZZZ] such as \"20260329013000\", got {text:?}"
            )
        };
        let (local, offset) = match text.find(['+', '-']) {
            Some(at) => (&text[..at], Some(&text[at..])),
            None => (text, None),
        };
        let (digits, fraction) = match local.split_once('.') {
            Some((digits, fraction)) => (digits, Some(fraction)),
            None => (local, None),
        };
        if !digits.bytes().all(|b| b.is_ascii_digit())
            || !matches!(digits.len(), 4 | 6 | 8 | 10 | 12 | 14)
        {
            return Err(problem(
                "the date and time must be 4 to 14 digits in pairs after the year",
            ));
        }
        let part = |from: usize, to: usize, default: i64| -> i64 {
            digits
                .get(from..to)
                .and_then(|p| p.parse().ok())
                .unwrap_or(default)
        };
        let nanos = match fraction {
            None => 0,
            Some(fraction)
                if digits.len() == 14
                    && (1..=4).contains(&fraction.len())
                    && fraction.bytes().all(|b| b.is_ascii_digit()) =>
            {
                let value: i32 = fraction.parse().map_err(|_| problem("bad fraction"))?;
                value * 10_i32.pow(9 - fraction.len() as u32)
            }
            Some(_) => {
                return Err(problem(
                    "a fraction of a second needs all 14 digits before it and 1 to 4 after",
                ));
            }
        };
        let datetime = DateTime::new(
            part(0, 4, 0) as i16,
            part(4, 6, 1) as i8,
            part(6, 8, 1) as i8,
            part(8, 10, 0) as i8,
            part(10, 12, 0) as i8,
            part(12, 14, 0) as i8,
            nanos,
        )
        .map_err(|error| problem(&format!("not a real date and time ({error})")))?;
        let instant = match offset {
            Some(offset) => {
                let sign = if offset.starts_with('-') { -1 } else { 1 };
                let hhmm = &offset[1..];
                if hhmm.len() != 4 || !hhmm.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(problem("the offset must be +HHMM or -HHMM"));
                }
                let hours: i32 = hhmm[..2].parse().unwrap_or(99);
                let minutes: i32 = hhmm[2..].parse().unwrap_or(99);
                if hours > 14 || minutes > 59 {
                    return Err(problem("the offset is out of range"));
                }
                let offset = Offset::from_seconds(sign * (hours * 3600 + minutes * 60))
                    .map_err(|error| problem(&error.to_string()))?;
                offset
                    .to_timestamp(datetime)
                    .map_err(|error| problem(&error.to_string()))?
            }
            None => self
                .zone
                .to_ambiguous_timestamp(datetime)
                .compatible()
                .map_err(|error| problem(&error.to_string()))?,
        };
        Ok(Timestamp {
            seconds: instant.as_second(),
            nanos: instant.subsec_nanosecond(),
        })
    }
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Zone").field(&self.name).finish()
    }
}

impl Default for Zone {
    fn default() -> Self {
        Self::london()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> i64 {
        jiff::Timestamp::strptime("%Y-%m-%dT%H:%M:%S%z", text)
            .or_else(|_| text.parse::<jiff::Timestamp>())
            .unwrap()
            .as_second()
    }

    #[test]
    fn local_times_in_london_know_bst_from_gmt() {
        let london = Zone::london();
        // GMT in winter: local equals UTC.
        assert_eq!(
            london.parse("20260115093000").unwrap().seconds,
            utc("2026-01-15T09:30:00Z")
        );
        // BST in summer: one hour ahead of UTC.
        assert_eq!(
            london.parse("20260715093000").unwrap().seconds,
            utc("2026-07-15T08:30:00Z")
        );
        // 2026-03-29 01:30 does not exist in London (clocks go 01:00 -> 02:00):
        // read as GMT, the offset in force before the change.
        assert_eq!(
            london.parse("20260329013000").unwrap().seconds,
            utc("2026-03-29T01:30:00Z")
        );
        // 2026-10-25 01:30 happens twice: the earlier (BST) reading is taken.
        assert_eq!(
            london.parse("20261025013000").unwrap().seconds,
            utc("2026-10-25T00:30:00Z")
        );
    }

    #[test]
    fn an_offset_wins_over_the_zone() {
        let london = Zone::london();
        assert_eq!(
            london.parse("20260715093000+0000").unwrap().seconds,
            utc("2026-07-15T09:30:00Z")
        );
        assert_eq!(
            london.parse("198908181126+0215").unwrap().seconds,
            utc("1989-08-18T09:11:00Z")
        );
        assert_eq!(
            london.parse("20260715093000-0500").unwrap().seconds,
            utc("2026-07-15T14:30:00Z")
        );
    }

    #[test]
    fn partial_times_and_fractions() {
        let london = Zone::london();
        assert_eq!(
            london.parse("2026").unwrap().seconds,
            utc("2026-01-01T00:00:00Z")
        );
        assert_eq!(
            london.parse("202601").unwrap().seconds,
            utc("2026-01-01T00:00:00Z")
        );
        assert_eq!(
            london.parse("20260115").unwrap().seconds,
            utc("2026-01-15T00:00:00Z")
        );
        let precise = london.parse("20210817151943.4+0200").unwrap();
        assert_eq!(precise.seconds, utc("2021-08-17T13:19:43Z"));
        assert_eq!(precise.nanos, 400_000_000);
        assert_eq!(
            london.parse("20260115093000.1234").unwrap().nanos,
            123_400_000
        );
    }

    #[test]
    fn bad_timestamps_say_what_was_expected() {
        let london = Zone::london();
        for bad in [
            "",
            "26",
            "2026011",
            "20261301",
            "20260230",
            "2026011509300",
            "20260115093000.",
            "20260115.5",
            "20260115093000+01",
            "20260115093000+2500",
            "abc",
            "20260115T0930",
        ] {
            let error = london.parse(bad).unwrap_err();
            assert!(
                error.contains("expected an HL7 timestamp"),
                "{bad:?}: {error}"
            );
        }
    }

    #[test]
    fn zones_are_named_and_unknown_ones_refused() {
        assert_eq!(Zone::default().name(), "Europe/London");
        let new_york = Zone::named("America/New_York").unwrap();
        assert_eq!(
            new_york.parse("20260115093000").unwrap().seconds,
            utc("2026-01-15T14:30:00Z")
        );
        let error = Zone::named("Europe/Lundon").unwrap_err().to_string();
        assert!(error.contains("\"Europe/Lundon\""), "{error}");
    }

    #[test]
    fn formats_now_with_its_offset() {
        let london = Zone::london();
        let summer = SystemTime::UNIX_EPOCH
            + std::time::Duration::from_secs(utc("2026-07-15T08:30:00Z") as u64);
        assert_eq!(london.format(summer), "20260715093000+0100");
        let winter = SystemTime::UNIX_EPOCH
            + std::time::Duration::from_secs(utc("2026-01-15T09:30:00Z") as u64);
        assert_eq!(london.format(winter), "20260115093000+0000");
        assert_eq!(
            london.parse(&london.format(summer)).unwrap().seconds,
            utc("2026-07-15T08:30:00Z")
        );
    }
}
