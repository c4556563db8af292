//! A deterministic synthetic population of care journeys: the events a
//! hospital's PAS and EPR, a referral system, a virtual-ward platform, a
//! community trust and the national spine would send about mostly elderly,
//! often frail people. `baton up --demo` publishes it through the real
//! ingest API, the benchmark folds a million of its events, tests use it
//! as a realistic feed.
//!
//! - [`PopulationConfig`]: how many patients, the seed, when the feed
//!   starts, the trust's ODS code, how many events arrive late.
//! - [`Population`]: the feed itself, an iterator of [`CareEvent`]s in the
//!   order a real feed delivers them (by recorded time), the same for the
//!   same config. Journeys are generated as the feed reaches them and
//!   merged by time, so a million events never sit in memory at once.
//! - [`population_for_events`]: a config sized to about a number of events.
//! - [`nhs_number`]: valid NHS numbers from the `999` test range.
//!
//! Every event passes `baton_care::ValidEvent::from_producer`, and folding
//! each patient's events in feed order never meets a rejection: the demo
//! never dead-letters. Journeys hold admissions (some planned), ward moves,
//! frailty assessments, referrals to the frailty service, care teams, care
//! plans, expected discharge dates, medical optimisation, leave, discharges
//! to a virtual ward, home, a care home or a community hospital, virtual-ward
//! episodes, readmissions and deaths, and corrections of admissions,
//! transfers and discharges; a configurable share is recorded late.
//!
//! # Layout
//! - `journey`: one person's journey, drafted in clinical order, then given
//!   recorded times and ids.
//! - `catalogue`: the invented names, wards, clinicians and codes.
//! - `calendar`: dates and working hours without the wall clock.
//! - `nhs`: synthetic NHS numbers.
//!
//! ```
//! use baton_synth::{Population, PopulationConfig};
//!
//! let config = PopulationConfig { patients: 20, seed: 7, ..PopulationConfig::default() };
//! let feed: Vec<_> = Population::new(config.clone()).collect();
//! assert!(feed.len() > 20 * 10);
//! let recorded: Vec<i64> = feed.iter().map(|e| e.recorded_at.unwrap().seconds).collect();
//! assert!(recorded.is_sorted(), "in the order a feed delivers them");
//! assert_eq!(feed, baton_synth::events(config), "the same seed gives the same feed");
//! ```

mod calendar;
mod catalogue;
mod journey;
mod nhs;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::iter::FusedIterator;

use baton_proto::events::v1::CareEvent;

pub use nhs::{MAX_NHS_NUMBERS, nhs_number};

/// What can go wrong making a population: only a config that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid population config: {field}: {problem}")]
    InvalidConfig {
        field: &'static str,
        problem: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What population to make. The same config always makes the same feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PopulationConfig {
    /// How many people; each has one journey of about twenty events.
    pub patients: usize,
    /// Everything random in the feed derives from it.
    pub seed: u64,
    /// When the first journey starts, in seconds since the Unix epoch. All
    /// clinical and recorded times follow from it; nothing reads the clock.
    /// Default: Monday 2026-01-05 08:00 UTC.
    pub start_unix_seconds: i64,
    /// ODS code of the acute trust whose PAS, EPR and virtual wards send
    /// most events (and that issues the hospital numbers). Default `RXX`.
    pub organisation: String,
    /// Share of events, per thousand, that their source records late:
    /// minutes to most of a day after they happened, so they arrive out of
    /// clinical order, as they do from real feeds. Default 50.
    pub late_events_per_mille: u16,
    /// How many journeys start per day, which spreads the population over
    /// time. Default 48.
    pub arrivals_per_day: u32,
    /// Where the feed stops, in seconds since the Unix epoch: events
    /// recorded after it are left out, so every journey under way then is
    /// cut there, as a live system would hold it at that moment (an event
    /// that happened before but is recorded late has not arrived yet).
    /// Default `None`: every journey to its end. See
    /// [`PopulationConfig::standing_at`].
    pub until_unix_seconds: Option<i64>,
}

impl Default for PopulationConfig {
    fn default() -> Self {
        Self {
            patients: 500,
            seed: 1,
            start_unix_seconds: calendar::midnight(2026, 1, 5) + 8 * calendar::HOUR,
            organisation: "RXX".to_owned(),
            late_events_per_mille: 50,
            arrivals_per_day: 48,
            until_unix_seconds: None,
        }
    }
}

/// How long before the moment of [`PopulationConfig::standing_at`] the
/// last journey starts: a day, so the newest patients are in hospital and
/// the ones before them at every later stage.
const LAST_ARRIVAL_BEFORE_NOW: i64 = calendar::DAY;

impl PopulationConfig {
    /// This population as it stands at `now_unix_seconds`: dated so that
    /// its journeys start over the days before (at 08:00 UTC on a day, as
    /// the default does, `arrivals_per_day` a day, the last about a day
    /// before `now_unix_seconds`) and cut at that moment
    /// ([`PopulationConfig::until_unix_seconds`]). Questions about today,
    /// such as who is expected home tomorrow or who was discharged
    /// yesterday, then have answers. Journeys start on whole days, so the
    /// same day gives the same times, and a later moment the same day only
    /// adds what was recorded in between.
    pub fn standing_at(self, now_unix_seconds: i64) -> Self {
        let patients = i64::try_from(self.patients).unwrap_or(i64::MAX);
        let arrivals = patients.saturating_mul(journey::arrival_slot(&self));
        let first_arrival = now_unix_seconds
            .saturating_sub(LAST_ARRIVAL_BEFORE_NOW)
            .saturating_sub(arrivals);
        let day_start = first_arrival - first_arrival.rem_euclid(calendar::DAY);
        Self {
            start_unix_seconds: day_start + 8 * calendar::HOUR,
            until_unix_seconds: Some(now_unix_seconds),
            ..self
        }
    }

    /// Checks that the config can make a valid feed: an ODS code, a share
    /// out of a thousand, NHS numbers enough, and times that validation
    /// accepts (births after 1900, everything before 2200).
    pub fn check(&self) -> Result<()> {
        let invalid = |field, problem: String| Err(Error::InvalidConfig { field, problem });
        let organisation = &self.organisation;
        if !(3..=10).contains(&organisation.len())
            || !organisation
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            return invalid(
                "organisation",
                format!(
                    "expected an ODS code of 3 to 10 capital letters and digits such as \"RXX\", got {organisation:?}"
                ),
            );
        }
        if self.late_events_per_mille > 1000 {
            return invalid(
                "late_events_per_mille",
                format!("expected 0 to 1000, got {}", self.late_events_per_mille),
            );
        }
        if self.arrivals_per_day == 0 {
            return invalid("arrivals_per_day", "expected at least 1, got 0".to_owned());
        }
        if self.patients as u64 > MAX_NHS_NUMBERS {
            return invalid(
                "patients",
                format!(
                    "expected at most {MAX_NHS_NUMBERS} (the NHS number test range holds no more), got {}",
                    self.patients
                ),
            );
        }
        let earliest = calendar::midnight(2001, 1, 1);
        let latest = calendar::midnight(2100, 1, 1);
        if !(earliest..latest).contains(&self.start_unix_seconds) {
            return invalid(
                "start_unix_seconds",
                format!(
                    "expected a time from 2001 (so centenarians were born after 1900) to 2100, got {}",
                    self.start_unix_seconds
                ),
            );
        }
        let last_arrival = journey::arrival_floor(self, self.patients as u64);
        if last_arrival >= calendar::midnight(2190, 1, 1) {
            return invalid(
                "arrivals_per_day",
                format!(
                    "{} patients at {} a day would run past 2190; start more journeys a day",
                    self.patients, self.arrivals_per_day
                ),
            );
        }
        Ok(())
    }
}

/// The feed of a synthetic population, in recorded order, up to
/// `until_unix_seconds` when the config sets it.
///
/// Journeys start in patient order, `arrivals_per_day` a day. Each journey
/// is generated when the feed reaches its start, and its events are merged
/// with those of the journeys under way, ordered by recorded time, then
/// patient number, then the journey's own order. Only the journeys under
/// way are in memory.
pub struct Population {
    config: PopulationConfig,
    /// The next patient whose journey has not started.
    next_patient: u64,
    patients: u64,
    /// The rest of each journey under way, in recorded order.
    under_way: HashMap<u64, VecDeque<CareEvent>>,
    /// The recorded time of each journey's next event.
    due: BinaryHeap<Reverse<(i64, u64)>>,
}

impl Population {
    /// The feed of `config`'s population.
    ///
    /// # Panics
    /// If the config fails [`PopulationConfig::check`].
    pub fn new(config: PopulationConfig) -> Self {
        Self::try_new(config).unwrap_or_else(|error| panic!("{error}"))
    }

    /// As [`Population::new`], returning a config that cannot work as an error.
    pub fn try_new(config: PopulationConfig) -> Result<Self> {
        config.check()?;
        Ok(Self {
            patients: config.patients as u64,
            config,
            next_patient: 0,
            under_way: HashMap::new(),
            due: BinaryHeap::new(),
        })
    }

    pub fn config(&self) -> &PopulationConfig {
        &self.config
    }

    fn start_journey(&mut self) {
        let patient = self.next_patient;
        self.next_patient += 1;
        let rest = journey::journey(&self.config, patient);
        if let Some(first) = rest.front() {
            self.due.push(Reverse((recorded_seconds(first), patient)));
            self.under_way.insert(patient, rest);
        }
    }
}

fn recorded_seconds(event: &CareEvent) -> i64 {
    event.recorded_at.as_ref().map_or(i64::MIN, |t| t.seconds)
}

impl Iterator for Population {
    type Item = CareEvent;

    fn next(&mut self) -> Option<CareEvent> {
        // A journey not yet started records nothing before its arrival, so
        // once the earliest due event precedes the next arrival it is the
        // next event of the whole feed.
        while self.next_patient < self.patients
            && self.due.peek().is_none_or(|Reverse((recorded, _))| {
                journey::arrival_floor(&self.config, self.next_patient) <= *recorded
            })
        {
            self.start_journey();
        }
        let Reverse((recorded, _)) = self.due.peek()?;
        if self
            .config
            .until_unix_seconds
            .is_some_and(|until| *recorded > until)
        {
            return None;
        }
        let Reverse((_, patient)) = self.due.pop()?;
        let rest = self
            .under_way
            .get_mut(&patient)
            .expect("every due journey is under way");
        let event = rest.pop_front().expect("a due journey has an event left");
        match rest.front() {
            Some(next) => self.due.push(Reverse((recorded_seconds(next), patient))),
            None => {
                self.under_way.remove(&patient);
            }
        }
        Some(event)
    }
}

impl FusedIterator for Population {}

impl fmt::Debug for Population {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Population")
            .field("config", &self.config)
            .field("next_patient", &self.next_patient)
            .field("journeys_under_way", &self.under_way.len())
            .field(
                "events_pending",
                &self.under_way.values().map(VecDeque::len).sum::<usize>(),
            )
            .finish()
    }
}

/// The whole feed of `config`'s population at once.
///
/// # Panics
/// If the config fails [`PopulationConfig::check`].
pub fn events(config: PopulationConfig) -> Vec<CareEvent> {
    Population::new(config).collect()
}

/// Journeys sampled to learn how many events a journey holds.
const SAMPLE_JOURNEYS: u64 = 2_000;

/// A default config with `seed`, sized so its feed holds about
/// `approx_events` events (within a few percent for large figures): the
/// first journeys of the population are sampled for their mean length.
pub fn population_for_events(approx_events: usize, seed: u64) -> PopulationConfig {
    let config = PopulationConfig {
        seed,
        ..PopulationConfig::default()
    };
    let sample = (approx_events as u64 / 20).clamp(50, SAMPLE_JOURNEYS);
    let sampled: usize = (0..sample)
        .map(|patient| journey::journey(&config, patient).len())
        .sum();
    let mean = sampled as f64 / sample as f64;
    let patients = (approx_events as f64 / mean).round() as usize;
    PopulationConfig {
        patients: patients.clamp(1, MAX_NHS_NUMBERS as usize),
        ..config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(event: &CareEvent) -> i64 {
        recorded_seconds(event)
    }

    #[test]
    fn the_merge_is_a_stable_sort_of_all_journeys_by_recorded_time() {
        let config = PopulationConfig {
            patients: 300,
            seed: 9,
            ..PopulationConfig::default()
        };
        let mut everything: Vec<(i64, u64, usize, CareEvent)> = (0..300)
            .flat_map(|patient| {
                journey::journey(&config, patient)
                    .into_iter()
                    .enumerate()
                    .map(move |(index, event)| (recorded(&event), patient, index, event))
            })
            .collect();
        everything.sort_by_key(|(recorded, patient, index, _)| (*recorded, *patient, *index));
        let sorted: Vec<CareEvent> = everything.into_iter().map(|(.., event)| event).collect();
        assert_eq!(Population::new(config).collect::<Vec<_>>(), sorted);
    }

    #[test]
    fn only_the_journeys_under_way_are_held() {
        let mut population = Population::new(PopulationConfig {
            patients: 3_000,
            ..PopulationConfig::default()
        });
        let mut most_under_way = 0;
        while population.next().is_some() {
            most_under_way = most_under_way.max(population.under_way.len());
        }
        assert!(
            most_under_way < 1_500,
            "{most_under_way} of 3000 journeys held at once"
        );
    }

    #[test]
    fn an_empty_population_has_no_events() {
        let config = PopulationConfig {
            patients: 0,
            ..PopulationConfig::default()
        };
        assert_eq!(Population::new(config).next(), None);
    }

    #[test]
    fn the_default_start_is_monday_morning() {
        // 2026-01-05T08:00:00Z
        assert_eq!(
            PopulationConfig::default().start_unix_seconds,
            1_767_600_000
        );
    }
}
