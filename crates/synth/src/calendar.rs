//! Seconds, days and calendar dates, without a calendar crate and without
//! the wall clock: every time in the population derives from the config.

use baton_proto::events::v1::Date;
use rand::RngExt;

pub(crate) const MINUTE: i64 = 60;
pub(crate) const HOUR: i64 = 60 * MINUTE;
pub(crate) const DAY: i64 = 24 * HOUR;

/// The calendar date (UTC) of a time in seconds since the Unix epoch.
pub(crate) fn date_of(seconds: i64) -> Date {
    let (year, month, day) = baton_care::civil_from_days(seconds.div_euclid(DAY));
    Date { year, month, day }
}

/// Seconds since the epoch of midnight (UTC) starting a date.
pub(crate) fn midnight(year: i32, month: i32, day: i32) -> i64 {
    baton_care::days_from_civil(year, month, day) * DAY
}

/// The first moment at or after `at` that falls within working hours
/// (`from_hour` to `to_hour`, UTC), at a random minute when it has to move:
/// ward rounds, assessments and discharges happen in the day.
pub(crate) fn in_working_hours(
    rng: &mut impl RngExt,
    at: i64,
    from_hour: i64,
    to_hour: i64,
) -> i64 {
    let day_start = at - at.rem_euclid(DAY);
    let since_midnight = at - day_start;
    if (from_hour * HOUR..to_hour * HOUR).contains(&since_midnight) {
        return at;
    }
    let opening = if since_midnight < from_hour * HOUR {
        day_start + from_hour * HOUR
    } else {
        day_start + DAY + from_hour * HOUR
    };
    opening + rng.random_range(0..(to_hour - from_hour) * HOUR / 2)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    use super::*;

    #[test]
    fn dates_round_trip_through_days() {
        for days in (-30_000..80_000).step_by(7) {
            let (year, month, day) = baton_care::civil_from_days(days);
            assert_eq!(baton_care::days_from_civil(year, month, day), days);
        }
        let date = date_of(midnight(2026, 1, 5) + 8 * HOUR);
        assert_eq!((date.year, date.month, date.day), (2026, 1, 5));
        let date = date_of(midnight(2028, 2, 29) + DAY - 1);
        assert_eq!((date.year, date.month, date.day), (2028, 2, 29));
    }

    #[test]
    fn working_hours_never_go_back_in_time() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let monday = midnight(2026, 1, 5);
        for at in (monday..monday + 2 * DAY).step_by(617) {
            let moved = in_working_hours(&mut rng, at, 8, 18);
            assert!(moved >= at);
            let hour = moved.rem_euclid(DAY) / HOUR;
            assert!((8..18).contains(&hour), "{at} -> {moved}");
            assert!(moved - at < DAY);
        }
    }
}
