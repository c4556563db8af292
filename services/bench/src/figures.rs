//! How figures are counted and shown: rates, latency percentiles, failed
//! calls by status code, sizes on disk and peak memory.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;

pub(crate) fn rate(count: usize, elapsed: Duration) -> String {
    format!(
        "{:.0}k events/s",
        count as f64 / elapsed.as_secs_f64() / 1000.0
    )
}

/// Refuses a run whose warm-up would leave nothing to measure.
pub(crate) fn check_warm_up(warm_up: u64, seconds: u64) -> anyhow::Result<()> {
    anyhow::ensure!(
        warm_up < seconds,
        "--warm-up {warm_up} leaves nothing of --seconds {seconds} to measure: expected fewer warm-up seconds"
    );
    Ok(())
}

/// Latencies in microseconds, from 1 µs to 10 minutes, to 3 significant
/// digits.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Records `latency`, clamped into the histogram's range.
pub(crate) fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    histogram.saturating_record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
}

/// `p50 1.20 ms  p90 …  p99 …  p99.9 …  max …`, or why there is none.
pub(crate) fn percentiles(histogram: &Histogram<u64>) -> String {
    if histogram.is_empty() {
        return "no calls measured".to_owned();
    }
    let ms = |micros: u64| format!("{:.2} ms", micros as f64 / 1000.0);
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        ms(histogram.value_at_quantile(0.50)),
        ms(histogram.value_at_quantile(0.90)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.value_at_quantile(0.999)),
        ms(histogram.max()),
    )
}

/// Failed calls by what failed and the gRPC status code.
#[derive(Debug, Default)]
pub(crate) struct Failures {
    by_kind: BTreeMap<String, u64>,
    /// The first message of each kind, which usually says why.
    examples: BTreeMap<String, String>,
}

impl Failures {
    pub(crate) fn add(&mut self, call: &str, status: &tonic::Status) {
        let kind = format!("{call} {:?}", status.code());
        self.examples
            .entry(kind.clone())
            .or_insert_with(|| status.message().to_owned());
        *self.by_kind.entry(kind).or_default() += 1;
    }

    pub(crate) fn merge(&mut self, other: Self) {
        for (kind, count) in other.by_kind {
            *self.by_kind.entry(kind).or_default() += count;
        }
        for (kind, example) in other.examples {
            self.examples.entry(kind).or_insert(example);
        }
    }

    pub(crate) fn total(&self) -> u64 {
        self.by_kind.values().sum()
    }
}

impl fmt::Display for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.total())?;
        for (kind, count) in &self.by_kind {
            let example = self.examples.get(kind).map_or("", String::as_str);
            write!(f, "\n              {count} × {kind}: {example}")?;
        }
        Ok(())
    }
}

pub(crate) fn size(path: &Path) -> String {
    fn total(path: &Path) -> u64 {
        std::fs::read_dir(path).map_or(0, |entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => total(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
    }
    format!("{:.1} MiB", total(path) as f64 / 1024.0 / 1024.0)
}

/// This process's peak resident memory (not the broker's).
pub(crate) fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l["VmHWM:".len()..].trim().to_owned())
        })
        .unwrap_or_else(|| "unknown (no /proc/self/status)".to_owned())
}
