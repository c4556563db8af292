//! Rough append and read throughput of the embedded log.
//!
//! `cargo run --release -p baton-log --example throughput [records] [dir] [read-batch]`
//!
//! Appends `records` (default 1,000,000) care-event-sized records to a
//! 4-partition topic in batches of 1,000 (durable, group-committed), then
//! reads them all back through one reader, as the projector does on a
//! rebuild. Given a `dir` that already holds the records, only reads
//! (from a cold cache). A measuring tool, not a test: timings depend on the machine.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use baton_log::embedded::{EmbeddedConfig, EmbeddedLog};
use baton_log::{EventLog, NewRecord, TopicSpec};

const TOPIC: &str = "baton.care-events.v1";
const PARTITIONS: u32 = 4;
const APPEND_BATCH: usize = 1_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let total: usize = args.next().map_or(Ok(1_000_000), |arg| arg.parse())?;
    let scratch = tempfile::tempdir()?;
    let path = args
        .next()
        .map_or_else(|| scratch.path().join("log"), Into::into);
    let read_batch: usize = args.next().map_or(Ok(1_000), |arg| arg.parse())?;
    let log = EmbeddedLog::open(EmbeddedConfig::new(path))?;
    log.ensure_topic(TOPIC, TopicSpec::events(PARTITIONS))
        .await?;

    // ~200 bytes: a typical encoded care event plus a traceparent header.
    let value = vec![0x5a_u8; 200];
    let started = Instant::now();
    // A log left by an earlier run (a `dir` was given) is only read back.
    let mut appended = log.end_offsets(TOPIC).await?.iter().sum::<u64>() as usize;
    let already = appended;
    while appended < total {
        let count = APPEND_BATCH.min(total - appended);
        let records = (appended..appended + count)
            .map(|i| {
                NewRecord::new(format!("{:010}", i % 50_000), value.clone()).with_header(
                    "traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                )
            })
            .collect();
        log.append(TOPIC, records).await?;
        appended += count;
    }
    report("append", total - already.min(total), started.elapsed());
    println!("  flushes: {}", log.flush_count());

    // The first pass may load pages from disk; the second reads from cache.
    for pass in ["read", "read again (warm cache)"] {
        read_all(&log, total, read_batch, pass).await?;
    }
    Ok(())
}

async fn read_all(
    log: &EmbeddedLog,
    total: usize,
    read_batch: usize,
    pass: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let from: BTreeMap<u32, u64> = (0..PARTITIONS).map(|partition| (partition, 0)).collect();
    let mut reader = log.reader(TOPIC, from).await?;
    let started = Instant::now();
    let mut read = 0;
    let mut bytes = 0;
    while read < total {
        let batch = reader
            .next_batch(read_batch, Duration::from_secs(1))
            .await?;
        if batch.is_empty() {
            return Err(format!("only {read} of {total} records came back").into());
        }
        read += batch.len();
        bytes += batch.iter().map(|record| record.value.len()).sum::<usize>();
    }
    report(pass, read, started.elapsed());
    println!("  value bytes read: {bytes}");
    Ok(())
}

fn report(what: &str, records: usize, elapsed: Duration) {
    let per_second = records as f64 / elapsed.as_secs_f64();
    println!("{what}: {records} records in {elapsed:.2?} = {per_second:.0} records/s");
}
