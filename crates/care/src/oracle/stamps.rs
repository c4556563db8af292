//! The stamp order of today's fold, copied from `crate::time` so the
//! oracle keeps it whatever the optimised fold does to its own.

use std::cmp::Ordering;

use baton_proto::state::v1::FactStamp;

use crate::time::{Instant, LogPosition};

/// Orders two facts: by clinical time, then system time, then log position
/// (the later record wins a tie), then event id.
pub(super) fn compare_stamps(a: Option<&FactStamp>, b: Option<&FactStamp>) -> Ordering {
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
/// current fact).
pub(super) fn supersedes(candidate: &FactStamp, current: Option<&FactStamp>) -> bool {
    compare_stamps(Some(candidate), current) != Ordering::Less
}

/// Inserts `fact` into `history`, which is kept in stamp order.
pub(super) fn insert_by_stamp<T>(
    history: &mut Vec<T>,
    fact: T,
    stamp: impl Fn(&T) -> Option<&FactStamp>,
) {
    let at = history.partition_point(|f| compare_stamps(stamp(f), stamp(&fact)).is_le());
    history.insert(at, fact);
}

/// Of a history of yes/no facts in stamp order, the first of those at the
/// end that say the same as the latest.
pub(super) fn start_of_latest_run<T>(history: &[T], says: impl Fn(&T) -> bool) -> Option<&T> {
    let latest = says(history.last()?);
    let start = history
        .iter()
        .rposition(|f| says(f) != latest)
        .map_or(0, |before| before + 1);
    history.get(start)
}
