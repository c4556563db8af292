//! What a synthetic population holds and how fast it is made:
//!
//! ```text
//! cargo run --release -p baton-synth --example population_stats -- 500
//! cargo run --release -p baton-synth --example population_stats -- --events 1000000
//! ```
//!
//! Prints the events by payload kind, the patients by care setting at the end
//! of the feed (folded with `baton_care::apply`), and the generation rate.
#![allow(clippy::print_stdout)]

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use baton_care::{AppliedIds, LogPosition, ValidEvent, apply, new_state, payload_name};
use baton_synth::{Population, PopulationConfig, population_for_events};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match args.as_slice() {
        [flag, events] if flag == "--events" => {
            population_for_events(events.parse().expect("a number of events"), 1)
        }
        [patients] => PopulationConfig {
            patients: patients.parse().expect("a number of patients"),
            ..PopulationConfig::default()
        },
        _ => PopulationConfig::default(),
    };
    let patients = config.patients;

    let started = Instant::now();
    let count = Population::new(config.clone()).count();
    let elapsed = started.elapsed();
    println!(
        "generated {count} events about {patients} patients in {elapsed:.2?}: {:.0} events/s",
        count as f64 / elapsed.as_secs_f64()
    );

    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let mut states = HashMap::new();
    let mut applied = AppliedIds::new();
    for (offset, event) in (0..).zip(Population::new(config)) {
        let valid = ValidEvent::from_producer(event).expect("a valid event");
        *kinds.entry(payload_name(valid.payload())).or_default() += 1;
        let state = states
            .entry(valid.key().clone())
            .or_insert_with(|| new_state(valid.key()));
        apply(state, &mut applied, &valid, LogPosition::new(0, offset)).expect("no rejection");
    }
    println!("\nevents by payload kind:");
    for (kind, n) in &kinds {
        println!("  {kind:<30} {n:>8}");
    }
    let mut settings: BTreeMap<&str, usize> = BTreeMap::new();
    for state in states.values() {
        *settings.entry(state.setting().as_str_name()).or_default() += 1;
    }
    println!("\npatients by care setting at the end:");
    for (setting, n) in &settings {
        println!("  {setting:<34} {n:>6}");
    }
}
