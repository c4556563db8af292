//! Baton's care domain, kept pure: no IO, no clock, no threads.
//!
//! - [`ValidEvent`]: an event that passed [validation](ValidEvent::new) —
//!   NHS number modulus-11 check, required fields per payload, sane
//!   timestamps, well-formed identifiers — or the [`InvalidEvent`] saying
//!   which fields are wrong and what was expected.
//! - [`apply`]: the fold `(state, event at a log position) -> state` for
//!   every payload, deterministic and total over valid events: cancellations
//!   revert exactly what they cancel, late events land by clinical time, ties
//!   in time go to the later record ([`LogPosition`]), duplicate event ids
//!   change nothing ([`AppliedEvents`], kept beside the states). Effects (a merge or visit hand-over) come back as data.
//! - [`access`]: which patients a client limited to organisations or
//!   services may see.
//! - [`cohort`]: the questions downstream teams ask, as predicates and as
//!   index entries the store keeps beside each state.
//!
//! ```
//! use baton_care::{apply, new_state, Applied, AppliedIds, LogPosition, ValidEvent};
//! use baton_care::fixtures::admitted;
//!
//! let event = ValidEvent::new(admitted("9434765919", "V1", 1_700_000_000, "WARD-7")).unwrap();
//! let mut state = new_state(event.key());
//! // Which events each state has had: kept beside the states, not in them.
//! let mut applied = AppliedIds::new();
//! // The event is at offset 42 of partition 3 of the log.
//! let position = LogPosition::new(3, 42);
//! assert!(matches!(apply(&mut state, &mut applied, &event, position), Ok(Applied::Changed { .. })));
//! // Sent again, it changes nothing.
//! assert_eq!(apply(&mut state, &mut applied, &event, LogPosition::new(3, 43)), Ok(Applied::Duplicate));
//! assert_eq!(state.active_encounter.unwrap().location.unwrap().point_of_care, "WARD-7");
//! ```

pub mod access;
mod applied;
pub mod cohort;
pub mod fixtures;
mod fold;
mod identity;
/// Today's fold, the oracle of the fold's refactoring (issue 13): tests only.
#[cfg(any(test, feature = "oracle"))]
#[doc(hidden)]
#[allow(deprecated)]
pub mod oracle;
mod time;
mod validate;

use std::fmt;

pub use applied::{AppliedEvents, AppliedIds};
pub use fold::{Applied, Effect, Rejection, apply, apply_new, new_state};
pub use identity::{BATON_NAMESPACE, EventId, NhsNumber, PatientKey};
pub use time::{Instant, LogPosition, civil_from_days, compare_stamps, days_from_civil};
pub use validate::{ValidEvent, payload_name};

/// One problem with one field of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path in snake_case as in the .proto, e.g. `admitted.location`.
    pub field: String,
    /// What is wrong and what was expected.
    pub problem: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// An event that failed validation, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid event {event_id:?}: {}", violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct InvalidEvent {
    /// As sent, which may itself be the problem.
    pub event_id: String,
    pub violations: Vec<FieldViolation>,
}
