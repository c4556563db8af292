//! Readiness: whether a process should be sent traffic yet.
//!
//! A process is ready when every [`ReadinessGate`] it made is: the
//! projector's opens once it has applied the log's end as it was at start,
//! a query replica's once it has caught up with the state changelog,
//! ingest's while the log answers. A process with no gates is ready.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The gates of one process; cheap to clone, shared with the `/ready`
/// handler.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    gates: Arc<Mutex<Vec<Arc<Gate>>>>,
}

struct Gate {
    /// What the gate waits for, as `/ready` says it: "projector catching up
    /// with the log".
    name: &'static str,
    /// `None` when ready; otherwise what it is waiting for now.
    waiting: Mutex<Option<String>>,
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("name", &self.name)
            .field("waiting", &*lock(&self.waiting))
            .finish()
    }
}

/// One condition of readiness, held by the part of the process that knows
/// when it holds. It starts not ready.
#[derive(Debug, Clone)]
pub struct ReadinessGate(Arc<Gate>);

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new gate, not ready yet, named by what it waits for.
    pub fn gate(&self, name: &'static str) -> ReadinessGate {
        let gate = Arc::new(Gate {
            name,
            waiting: Mutex::new(Some("starting".to_owned())),
        });
        lock(&self.gates).push(Arc::clone(&gate));
        ReadinessGate(gate)
    }

    /// Whether every gate is ready.
    pub fn is_ready(&self) -> bool {
        self.waiting_for().is_empty()
    }

    /// `name: what it waits for` of every gate not ready, in the order they
    /// were made.
    pub fn waiting_for(&self) -> Vec<String> {
        lock(&self.gates)
            .iter()
            .filter_map(|gate| {
                lock(&gate.waiting)
                    .as_ref()
                    .map(|detail| format!("{}: {detail}", gate.name))
            })
            .collect()
    }
}

impl ReadinessGate {
    /// The condition holds.
    pub fn ready(&self) {
        let mut waiting = lock(&self.0.waiting);
        if waiting.is_some() {
            tracing::info!(gate = self.0.name, "ready");
        }
        *waiting = None;
    }

    /// The condition does not hold (any more); `detail` says why, for
    /// `/ready`. It must not name a patient.
    pub fn waiting(&self, detail: impl Into<String>) {
        let detail = detail.into();
        let mut waiting = lock(&self.0.waiting);
        if waiting.is_none() {
            tracing::warn!(gate = self.0.name, %detail, "not ready");
        }
        *waiting = Some(detail);
    }

    pub fn is_ready(&self) -> bool {
        lock(&self.0.waiting).is_none()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_every_gate_is() {
        let readiness = Readiness::new();
        assert!(readiness.is_ready(), "no gate: nothing to wait for");
        let log = readiness.gate("event log reachable");
        let projector = readiness.gate("projector catching up with the log");
        assert_eq!(
            readiness.waiting_for(),
            vec![
                "event log reachable: starting",
                "projector catching up with the log: starting"
            ]
        );
        log.ready();
        projector.waiting("3 of 8 partitions behind the end at start");
        assert_eq!(
            readiness.waiting_for(),
            vec!["projector catching up with the log: 3 of 8 partitions behind the end at start"]
        );
        projector.ready();
        assert!(readiness.is_ready() && projector.is_ready());
        log.waiting("cannot read the end offsets");
        assert!(!readiness.is_ready(), "a gate can close again");
    }
}
