//! Ordering of clinical and system times, and of facts that arrive late.

use std::cmp::Ordering;

use baton_proto::state::v1::{AppliedPosition, FactStamp};
use prost_types::Timestamp;

/// Where an event is in the log: its partition and offset. Events with the
/// same clinical and system times are ordered by it, the later record
/// winning, so a correction sent a minute after the message it corrects
/// wins even when both carry the same times; replay gives the same answer
/// because the log order is fixed. A patient's events share a partition;
/// across partitions (a merged record's events) the order is by partition,
/// then offset: arbitrary, but the same on every replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogPosition {
    pub partition: u32,
    pub offset: u64,
}

impl LogPosition {
    pub const fn new(partition: u32, offset: u64) -> Self {
        Self { partition, offset }
    }

    /// As stored in states; `None` orders first (facts kept before
    /// positions were).
    pub fn of(position: Option<&AppliedPosition>) -> Option<Self> {
        position.map(|p| Self::new(p.partition, p.offset))
    }
}

impl From<LogPosition> for AppliedPosition {
    fn from(position: LogPosition) -> Self {
        Self {
            partition: position.partition,
            offset: position.offset,
        }
    }
}

/// A point in time that orders like the timestamp it came from. Unset
/// timestamps order first, so a fact with a time beats one without.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant {
    seconds: i64,
    nanos: i32,
}

impl Instant {
    pub const UNSET: Instant = Instant {
        seconds: i64::MIN,
        nanos: 0,
    };

    pub fn of(timestamp: Option<&Timestamp>) -> Self {
        timestamp.map_or(Self::UNSET, |t| Self {
            seconds: t.seconds,
            nanos: t.nanos,
        })
    }

    pub fn is_set(self) -> bool {
        self != Self::UNSET
    }

    pub fn seconds(self) -> i64 {
        self.seconds
    }

    pub fn to_timestamp(self) -> Option<Timestamp> {
        self.is_set().then_some(Timestamp {
            seconds: self.seconds,
            nanos: self.nanos,
        })
    }
}

/// Orders two facts: by clinical time, then system time, then log position
/// (the later record wins a tie), then event id (for facts kept before
/// positions were), so every replica picks the same winner.
pub fn compare_stamps(a: Option<&FactStamp>, b: Option<&FactStamp>) -> Ordering {
    fn key(s: Option<&FactStamp>) -> Option<(Instant, Instant, Option<LogPosition>, &str)> {
        s.map(|s| {
            (
                Instant::of(s.occurred_at.as_ref()),
                Instant::of(s.recorded_at.as_ref()),
                LogPosition::of(s.position.as_ref()),
                s.event_id.as_str(),
            )
        })
    }
    key(a).cmp(&key(b))
}

/// True when `candidate` is at least as recent as `current` (or there is no
/// current fact): last writer by clinical time wins.
pub(crate) fn supersedes(candidate: &FactStamp, current: Option<&FactStamp>) -> bool {
    compare_stamps(Some(candidate), current) != Ordering::Less
}

/// Inserts `fact` into `history`, which is kept in stamp order, so the
/// history is the same whatever order its facts arrived in.
pub(crate) fn insert_by_stamp<T>(
    history: &mut Vec<T>,
    fact: T,
    stamp: impl Fn(&T) -> Option<&FactStamp>,
) {
    let at = history.partition_point(|f| compare_stamps(stamp(f), stamp(&fact)).is_le());
    crate::fold::lists::insert(history, at, fact);
}

/// Of a history of yes/no facts in stamp order, the first of those at the
/// end that say the same as the latest: since when what the latest says
/// has held. A late fact anywhere in the history can move it, which is why
/// the history is kept.
pub(crate) fn start_of_latest_run<T>(history: &[T], says: impl Fn(&T) -> bool) -> Option<&T> {
    let latest = says(history.last()?);
    let start = history
        .iter()
        .rposition(|f| says(f) != latest)
        .map_or(0, |before| before + 1);
    history.get(start)
}

/// Earliest and latest times accepted as clinical or system times.
pub(crate) const EARLIEST_SECONDS: i64 = -2_208_988_800; // 1900-01-01T00:00:00Z
pub(crate) const LATEST_SECONDS: i64 = 7_258_118_400; // 2200-01-01T00:00:00Z

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm), for comparing dates with timestamps without a calendar crate.
pub fn days_from_civil(year: i32, month: i32, day: i32) -> i64 {
    let year = i64::from(year) - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date of a count of days since 1970-01-01, as
/// (year, month, day): the inverse of [`days_from_civil`].
pub fn civil_from_days(days: i64) -> (i32, i32, i32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year as i32, month as i32, day as i32)
}

pub(crate) fn days_in_month(year: i32, month: i32) -> i32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(occurred: i64, recorded: i64, id: &str) -> FactStamp {
        FactStamp {
            occurred_at: Some(Timestamp {
                seconds: occurred,
                nanos: 0,
            }),
            recorded_at: Some(Timestamp {
                seconds: recorded,
                nanos: 0,
            }),
            event_id: id.into(),
            position: None,
        }
    }

    fn at_offset(mut stamp: FactStamp, offset: u64) -> FactStamp {
        stamp.position = Some(LogPosition::new(0, offset).into());
        stamp
    }

    #[test]
    fn clinical_time_decides_then_system_time_then_id() {
        assert!(supersedes(&stamp(2, 1, "a"), Some(&stamp(1, 9, "z"))));
        assert!(!supersedes(&stamp(1, 9, "z"), Some(&stamp(2, 1, "a"))));
        assert!(supersedes(&stamp(1, 2, "a"), Some(&stamp(1, 1, "z"))));
        assert!(supersedes(&stamp(1, 1, "b"), Some(&stamp(1, 1, "a"))));
        assert!(supersedes(&stamp(1, 1, "a"), None));
    }

    #[test]
    fn a_tie_in_time_goes_to_the_later_record_whatever_the_ids() {
        let first = at_offset(stamp(1, 1, "z"), 10);
        let second = at_offset(stamp(1, 1, "a"), 11);
        assert!(supersedes(&second, Some(&first)));
        assert!(!supersedes(&first, Some(&second)));
        // Time still comes first: an earlier record with a later time wins.
        assert!(supersedes(
            &at_offset(stamp(2, 1, "a"), 1),
            Some(&at_offset(stamp(1, 1, "b"), 99))
        ));
        // A fact kept before positions were orders before one with a position.
        assert!(supersedes(&first, Some(&stamp(1, 1, "zz"))));
    }

    #[test]
    fn a_history_keeps_stamp_order_whatever_the_arrival_order() {
        let facts = [stamp(3, 3, "c"), stamp(1, 1, "a"), stamp(2, 9, "b")];
        let mut history = Vec::new();
        for fact in facts {
            insert_by_stamp(&mut history, fact, |s| Some(s));
        }
        let ids: Vec<_> = history.iter().map(|s| s.event_id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }

    #[test]
    fn the_latest_run_starts_after_the_last_fact_that_says_otherwise() {
        // The index of the first fact of the latest run.
        let run = |says: &[bool]| {
            let history: Vec<(usize, bool)> = says.iter().copied().enumerate().collect();
            start_of_latest_run(&history, |&(_, says)| says).map(|&(index, _)| index)
        };
        assert_eq!(run(&[]), None);
        assert_eq!(run(&[true, true]), Some(0));
        assert_eq!(run(&[true, false, true, true]), Some(2));
        assert_eq!(run(&[true, true, false]), Some(2));
        assert_eq!(run(&[false, true, false, false]), Some(2));
    }

    #[test]
    fn unset_orders_first() {
        assert!(
            Instant::UNSET
                < Instant::of(Some(&Timestamp {
                    seconds: EARLIEST_SECONDS,
                    nanos: 0
                }))
        );
    }

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1900, 1, 1) * 86_400, EARLIEST_SECONDS);
        assert_eq!(days_from_civil(2200, 1, 1) * 86_400, LATEST_SECONDS);
        for days in [-2_208_988_800 / 86_400, -1, 0, 11_017, 20_513, 2_932_896] {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(days_from_civil(year, month, day), days);
        }
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(1900, 2), 28);
        assert_eq!(days_in_month(2000, 2), 29);
    }
}
