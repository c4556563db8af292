//! `kafka-catch-up`: a fresh projector folding a prepared events topic from
//! offset 0, through Kafka.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use baton_ingest::{Ingest, IngestConfig};
use baton_log::EventLog;
use baton_log::topics::Topics;
use baton_projector::{Projector, ProjectorConfig};
use baton_proto::events::v1::CareEvent;
use baton_store::{Store, StoreConfig};
use clap::{ArgAction, Args};
use indicatif::ProgressBar;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::figures::{peak_rss, rate, size};
use crate::kafka::{Broker, KafkaArgs, fresh_topics};

/// Events appended per call while preparing the topic.
const WRITE_CHUNK: usize = 10_000;
/// Chunks the generator may be ahead of the appends.
const CHUNKS_AHEAD: usize = 4;

/// A fresh projector catching up with a prepared events topic, through
/// Kafka.
///
/// First writes about --events synthetic events to a fresh events topic,
/// in appends of 10,000 events encoded as the ingest API writes them
/// (printing the produce rate), then times a fresh projector (a new sled
/// store in a temporary folder) folding the whole topic from offset 0:
/// reading from Kafka, folding, committing to sled and, with
/// --publish-states true (the default, as in production), flushing each
/// commit and publishing the changed states to the changelog topic.
///
/// Budget: none for Kafka itself; the nearest is the rebuild's (from the
/// embedded log into sled: ≥ 500k events/s, see `rebuild`). A private Tansu
/// keeps everything in memory: 1M events take about 0.3 GB, and the
/// changelog about 6 KB per state published.
#[derive(Debug, Args)]
pub(crate) struct CatchUpArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// About how many events to write and fold
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Partitions of each topic
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Most records per projector batch
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// Publish committed states to the changelog topic, as in production
    #[arg(long, default_value_t = true, action = ArgAction::Set, value_name = "true|false")]
    publish_states: bool,
    /// Seed of the synthetic population
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[allow(clippy::print_stdout)]
pub(crate) async fn kafka_catch_up(args: CatchUpArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.batch > 0,
        "--batch 0: expected at least 1 record per batch"
    );
    let broker = Broker::start(&args.kafka).await?;
    let topics = fresh_topics("catch-up", args.partitions);
    println!(
        "baton-bench kafka-catch-up: ~{} events, {} partitions, batches of {}, states published to the changelog: {}, seed {}",
        args.events,
        args.partitions,
        args.batch,
        if args.publish_states { "yes" } else { "no" },
        args.seed
    );
    println!("broker      {}", broker.describe());
    println!(
        "topics      {}, {}, {}",
        topics.events, topics.state, topics.dead_letters
    );

    let log = broker.connect().await?;
    write_events(&log, &topics, args.events, args.seed).await?;

    let work = tempfile::tempdir()?;
    let store = Store::open(work.path().join("store"), &StoreConfig::default())
        .context("opening the projector's store")?;
    let mut projector = Projector::start(
        broker.connect().await?,
        store.clone(),
        ProjectorConfig {
            batch_max_records: args.batch,
            publish_states: args.publish_states,
            ..ProjectorConfig::default()
        },
        topics.clone(),
    )
    .await
    .context("starting the projector")?;
    let started = Instant::now();
    let stats = projector.catch_up().await?;
    let catch_up = started.elapsed();
    println!(
        "catch-up    {:>9} records from Kafka into sled in {catch_up:.2?}: {} ({} batches, {:.0} records per batch, {} duplicates, {} dead letters)",
        stats.records,
        rate(stats.records as usize, catch_up),
        stats.batches,
        stats.records as f64 / stats.batches.max(1) as f64,
        stats.duplicates,
        stats.dead_letters
    );
    println!(
        "            of which folding {:.2?}, waiting for the previous batch's commit{} {:.2?}, the rest reading from Kafka",
        stats.fold_time,
        if args.publish_states {
            ", flush and publication"
        } else {
            ""
        },
        stats.commit_wait
    );
    println!(
        "published   {} changelog records (states, then progress per partition) to {}",
        stats.published,
        if args.publish_states {
            topics.state.as_str()
        } else {
            "no changelog (--publish-states false)"
        }
    );
    println!(
        "states      {} in the store, {} on disk",
        store.state_count()?,
        size(&work.path().join("store"))
    );
    println!(
        "peak memory {} (this process; the broker's is its own)",
        peak_rss()
    );
    println!(
        "budget: none for Kafka catch-up; the rebuild from the embedded log must reach ≥ 500k events/s"
    );
    Ok(())
}

/// Writes about `events` synthetic events of population `seed` to
/// `topics.events`, in appends of 10,000 encoded as the ingest API writes
/// them, printing the produce rate.
#[allow(clippy::print_stdout)]
pub(crate) async fn write_events(
    log: &Arc<dyn EventLog>,
    topics: &Topics,
    events: usize,
    seed: u64,
) -> anyhow::Result<()> {
    let writer = Ingest::start(
        log.clone(),
        IngestConfig {
            max_batch_events: WRITE_CHUNK,
            ..IngestConfig::default()
        },
        topics,
    )
    .await
    .context("preparing the topics")?;
    let config = baton_synth::population_for_events(events, seed);
    let patients = config.patients;
    let (chunks, mut generated) = mpsc::channel::<Vec<CareEvent>>(CHUNKS_AHEAD);
    let generator = tokio::task::spawn_blocking(move || {
        let mut population = baton_synth::Population::new(config);
        loop {
            let chunk: Vec<CareEvent> = population.by_ref().take(WRITE_CHUNK).collect();
            if chunk.is_empty() || chunks.blocking_send(chunk).is_err() {
                break;
            }
        }
    });
    let progress = ProgressBar::new(events as u64);
    let started = Instant::now();
    let mut waiting_for_generator = Duration::ZERO;
    let mut written = 0;
    loop {
        let waiting = Instant::now();
        let Some(chunk) = generated.recv().await else {
            break;
        };
        waiting_for_generator += waiting.elapsed();
        written += chunk.len();
        writer
            .publish(chunk, false, None)
            .await
            .with_context(|| format!("appending events {written} onwards to {}", topics.events))?;
        progress.set_position(written as u64);
    }
    generator.await?;
    log.flush().await?;
    let producing = started.elapsed();
    progress.finish_and_clear();
    let records: u64 = log.end_offsets(&topics.events).await?.iter().sum();
    println!(
        "produced    {written:>9} events about {patients} patients as {records} records in {producing:.2?}: {} (of which {waiting_for_generator:.2?} waiting for the generator)",
        rate(written, producing)
    );
    Ok(())
}
