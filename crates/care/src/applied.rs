//! Which events were applied to which state: what makes a duplicate a
//! no-op. Kept beside the states, not in them, so a state does not grow
//! with its patient's history (issue 13): the projector keeps it in its
//! store, a refold in memory ([`AppliedIds`]).

use std::collections::{HashMap, HashSet};

use crate::EventId;

/// The ids of the events applied to each patient's state, as the fold asks
/// for them ([`apply`](crate::apply)). Answers must be exact: an id applied
/// to a state any time before is a duplicate there, however long ago.
pub trait AppliedEvents {
    /// Whether `event_id` was applied to the state of `patient_key`.
    fn contains(&self, patient_key: &str, event_id: EventId) -> bool;
    /// Records that `event_id` was applied to the state of `patient_key`.
    fn insert(&mut self, patient_key: &str, event_id: EventId);
    /// Every id applied to the state of `patient_key`, in id order: a
    /// retired record hands them over to the survivor of a merge.
    fn of_patient(&self, patient_key: &str) -> Vec<EventId>;
}

/// An [`AppliedEvents`] in memory: for a fold that starts from nothing
/// (a refold of a timeline, tests, benchmarks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedIds {
    by_patient: HashMap<String, HashSet<EventId>>,
}

impl AppliedIds {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many (patient, event) pairs are recorded.
    pub fn len(&self) -> usize {
        self.by_patient.values().map(HashSet::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_patient.values().all(HashSet::is_empty)
    }

    /// Every recorded pair, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, EventId)> {
        self.by_patient
            .iter()
            .flat_map(|(key, ids)| ids.iter().map(move |&id| (key.as_str(), id)))
    }

    /// Whether every id applied to `patient_key` is here: it was
    /// [adopted](AppliedIds::adopt) or inserted. (A store's ids reach
    /// memory whole, or not at all.)
    pub fn holds(&self, patient_key: &str) -> bool {
        self.by_patient.contains_key(patient_key)
    }

    /// Takes `ids` as every id applied to `patient_key` so far (read from a
    /// store), adding to any already here.
    pub fn adopt(&mut self, patient_key: &str, ids: impl IntoIterator<Item = EventId>) {
        self.by_patient
            .entry(patient_key.to_owned())
            .or_default()
            .extend(ids);
    }

    /// Adds every pair of `other`.
    pub fn merge(&mut self, other: AppliedIds) {
        for (key, ids) in other.by_patient {
            match self.by_patient.get_mut(&key) {
                Some(mine) => mine.extend(ids),
                None => {
                    self.by_patient.insert(key, ids);
                }
            }
        }
    }

    /// Forgets every pair.
    pub fn clear(&mut self) {
        self.by_patient.clear();
    }
}

impl AppliedEvents for AppliedIds {
    fn contains(&self, patient_key: &str, event_id: EventId) -> bool {
        self.by_patient
            .get(patient_key)
            .is_some_and(|ids| ids.contains(&event_id))
    }

    fn insert(&mut self, patient_key: &str, event_id: EventId) {
        match self.by_patient.get_mut(patient_key) {
            Some(ids) => {
                ids.insert(event_id);
            }
            None => {
                self.by_patient
                    .insert(patient_key.to_owned(), HashSet::from([event_id]));
            }
        }
    }

    fn of_patient(&self, patient_key: &str) -> Vec<EventId> {
        let mut ids: Vec<EventId> = self
            .by_patient
            .get(patient_key)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> EventId {
        EventId::from(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn ids_are_kept_per_patient_and_listed_in_order() {
        let mut applied = AppliedIds::new();
        applied.insert("9434765919", id(3));
        applied.insert("9434765919", id(1));
        applied.insert("9434765919", id(3));
        applied.insert("4010232137", id(2));
        assert!(applied.contains("9434765919", id(1)));
        assert!(!applied.contains("4010232137", id(1)));
        assert!(!applied.contains("nobody", id(1)));
        assert_eq!(applied.of_patient("9434765919"), vec![id(1), id(3)]);
        assert_eq!(applied.of_patient("nobody"), Vec::<EventId>::new());
        assert_eq!(applied.len(), 3);
        assert!(applied.holds("4010232137") && !applied.holds("nobody"));
        applied.adopt("nobody", []);
        assert!(applied.holds("nobody") && !applied.contains("nobody", id(1)));
        applied.adopt("nobody", [id(1)]);
        assert!(applied.contains("nobody", id(1)));
        applied.clear();
        assert!(applied.is_empty());
    }
}
