//! Small constructors for the well-known time types, used by tests, the
//! demo population and the benchmark.

use prost_types::Timestamp;

use crate::events::v1::Date;

/// A `Timestamp` at whole seconds since the Unix epoch.
pub fn timestamp_from_unix_seconds(seconds: i64) -> Timestamp {
    Timestamp { seconds, nanos: 0 }
}

/// A calendar `Date`; not validated here (validation lives in `baton-care`).
pub fn date(year: i32, month: i32, day: i32) -> Date {
    Date { year, month, day }
}
