//! `long-history`: what a long history costs one patient, against a short
//! one: fold cost per event and the size of the state `GetCareState`
//! answers with.

use std::time::{Duration, Instant};

use baton_care::fixtures::{
    admitted, care_plan_changed, discharged, frailty_assessed, transferred, virtual_ward_started,
};
use baton_care::{Applied, AppliedIds, LogPosition, PatientKey, ValidEvent, apply, new_state};
use baton_proto::events::v1::{CareEvent, DischargeDestination};
use clap::Args;
use prost::Message;

/// One patient with a long history against one with a short history.
///
/// A patient on a remote-monitoring virtual ward for years: a hospital
/// stay (admission, a ward move, discharge to the virtual ward), the
/// virtual-ward episode, then readings that replace what came before:
/// frailty assessments and new versions of one care plan, hours apart,
/// all in clinical order. The same history is folded cut at `--short`
/// events and at `--long`.
///
/// Budget (issue 13): at `--long 40000`, the fold cost per event and the
/// state's encoded size (what `GetCareState` answers with: the stored
/// bytes) within 2× of the patient with 40.
#[derive(Debug, Args)]
pub(crate) struct HistoryArgs {
    /// Events of the short history
    #[arg(long, default_value_t = 40)]
    short: usize,
    /// Events of the long history
    #[arg(long, default_value_t = 40_000)]
    long: usize,
    /// Folds of each history after one warm-up fold; the fastest is shown
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

const NHS: &str = "9434765919";
/// Monday 2026-01-05 08:00 UTC.
const START: i64 = 1_767_600_000;
const HOUR: i64 = 3_600;

/// The first `events` events of the history described on [`HistoryArgs`].
fn history(events: usize) -> Vec<CareEvent> {
    let stay = [
        admitted(NHS, "V1", START, "WARD-1"),
        transferred(NHS, "V1", START + 6 * HOUR, "WARD-2"),
        discharged(
            NHS,
            "V1",
            START + 48 * HOUR,
            DischargeDestination::VirtualWard,
        ),
        virtual_ward_started(NHS, "VW1", START + 49 * HOUR, "VW-FRAILTY"),
    ];
    let readings = (0u32..).map(|i| {
        let at = START + 50 * HOUR + i64::from(i) * HOUR;
        if i % 2 == 0 {
            frailty_assessed(NHS, at, 1 + i % 9)
        } else {
            care_plan_changed(NHS, "CP1", i, at)
        }
    });
    stay.into_iter().chain(readings).take(events).collect()
}

/// What folding one history cost.
struct Folded {
    events: usize,
    elapsed: Duration,
    /// The last tenth of the events: what the next event costs.
    tail: Duration,
    tail_events: usize,
    /// What `GetCareState` serves for the patient.
    encoded: usize,
    /// The ids of applied events kept for dedupe, beside the state.
    applied_ids: usize,
}

/// The fastest of `runs` folds of `events`, after one not counted.
fn fastest_fold(events: &[CareEvent], runs: usize) -> anyhow::Result<Folded> {
    fold(events)?;
    let mut fastest = fold(events)?;
    for _ in 1..runs {
        let folded = fold(events)?;
        if folded.elapsed < fastest.elapsed {
            fastest = folded;
        }
    }
    Ok(fastest)
}

fn fold(events: &[CareEvent]) -> anyhow::Result<Folded> {
    let valid = events
        .iter()
        .map(|event| {
            ValidEvent::from_producer(event.clone())
                .and_then(|produced| ValidEvent::new(produced.event().clone()))
                .map_err(|e| anyhow::anyhow!("{e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut state = new_state(&PatientKey::parse(NHS).map_err(|e| anyhow::anyhow!("{e}"))?);
    let mut applied = AppliedIds::new();
    let tail_from = valid.len() - valid.len().div_ceil(10);
    let started = Instant::now();
    let mut tail_started = started;
    for (offset, event) in (0..).zip(&valid) {
        if offset == tail_from as u64 {
            tail_started = Instant::now();
        }
        match apply(&mut state, &mut applied, event, LogPosition::new(0, offset)) {
            Ok(Applied::Changed { .. }) => {}
            other => anyhow::bail!("event {offset} of the history did not apply: {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    Ok(Folded {
        events: valid.len(),
        elapsed,
        tail: tail_started.elapsed(),
        tail_events: valid.len() - tail_from,
        encoded: state.encoded_len(),
        applied_ids: applied.len(),
    })
}

fn per_event(elapsed: Duration, events: usize) -> Duration {
    elapsed / u32::try_from(events.max(1)).unwrap_or(u32::MAX)
}

#[allow(clippy::print_stdout)]
pub(crate) fn long_history(args: HistoryArgs) -> anyhow::Result<()> {
    let HistoryArgs { short, long, runs } = args;
    anyhow::ensure!(
        short >= 4 && long >= short && runs >= 1,
        "--short must be at least 4, --long at least --short and --runs at least 1, got {short}, {long} and {runs}"
    );
    println!(
        "baton-bench long-history: one patient with {short} events, one with {long}; the fastest of {runs} folds of each"
    );
    let short = fastest_fold(&history(short), runs)?;
    let long = fastest_fold(&history(long), runs)?;
    for folded in [&short, &long] {
        println!(
            "{:>6} events  folded in {:.2?}: {:.2?} per event, {:.2?} per event over the last {}; state {} bytes encoded; {} event ids kept beside it for dedupe",
            folded.events,
            folded.elapsed,
            per_event(folded.elapsed, folded.events),
            per_event(folded.tail, folded.tail_events),
            folded.tail_events,
            folded.encoded,
            folded.applied_ids
        );
    }
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(f64::MIN_POSITIVE);
    println!(
        "ratio         per event {:.1}× (last tenth {:.1}×), state size {:.1}× (budget: both ≤ 2×)",
        ratio(
            per_event(long.elapsed, long.events),
            per_event(short.elapsed, short.events)
        ),
        ratio(
            per_event(long.tail, long.tail_events),
            per_event(short.tail, short.tail_events)
        ),
        long.encoded as f64 / short.encoded as f64
    );
    Ok(())
}
