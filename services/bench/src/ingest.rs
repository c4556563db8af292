//! `kafka-ingest`: sustained ingest throughput through Kafka.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use baton_proto::events::v1::CareEvent;
use baton_proto::ingest::v1::PublishRequest;
use baton_proto::ingest::v1::care_event_ingest_client::CareEventIngestClient;
use clap::Args;
use hdrhistogram::Histogram;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::figures::{Failures, check_warm_up, latency_histogram, percentiles, record};
use crate::kafka::{Broker, InProcess, KafkaArgs, channel, fresh_topics, spawn_ingest};

/// How long a failed call's client waits before its next call, so a broker
/// that is down is not hammered.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Sustained ingest throughput through Kafka.
///
/// Runs the ingest API in this process over the broker (no projector) and
/// --clients concurrent closed-loop gRPC publishers, each sending Publish
/// calls of --batch synthetic events as fast as they are acknowledged
/// (acknowledged = every in-sync replica has the records). Prints the
/// events acknowledged per second and the Publish latency per call, both
/// after the first --warm-up seconds.
///
/// The events come from a pool of --pool-events synthetic events generated
/// before the run, so generating them costs nothing while measuring; the
/// pool is sent again when used up (the ingest API does not deduplicate;
/// the projector would).
///
/// No budget names ingest alone: the budget's Kafka figure is
/// publish → visible, p99 ≤ 25 ms at 5k events/s (see kafka-latency), so
/// ingest must sustain well above 5k events/s to leave room for the rest.
#[derive(Debug, Args)]
pub(crate) struct IngestArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// How long to publish, warm-up included
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// First seconds whose calls are left out of the figures
    #[arg(long, default_value_t = 2)]
    warm_up: u64,
    /// Concurrent publishers, each with its own gRPC connection
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Events per Publish call
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Partitions of each topic
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Synthetic events generated before the run and sent in turn
    #[arg(long, default_value_t = 100_000)]
    pool_events: usize,
    /// Seed of the synthetic population
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// What one publisher measured after the warm-up.
#[derive(Debug)]
struct Publisher {
    latency: Histogram<u64>,
    events: usize,
    failures: Failures,
}

#[allow(clippy::print_stdout)]
pub(crate) async fn kafka_ingest(args: IngestArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.clients > 0, "--clients 0: expected at least 1");
    anyhow::ensure!(
        args.batch > 0,
        "--batch 0: expected at least 1 event per call"
    );
    anyhow::ensure!(args.pool_events > 0, "--pool-events 0: expected at least 1");
    check_warm_up(args.warm_up, args.seconds)?;
    let broker = Broker::start(&args.kafka).await?;
    let topics = fresh_topics("ingest", args.partitions);
    println!(
        "baton-bench kafka-ingest: {} closed-loop publishers, Publish calls of {} events, for {} s, the first {} s left out; {} partitions, seed {}",
        args.clients, args.batch, args.seconds, args.warm_up, args.partitions, args.seed
    );
    println!("broker      {}", broker.describe());
    println!("topic       {}", topics.events);

    let generating = Instant::now();
    let pool: Vec<CareEvent> = baton_synth::Population::new(baton_synth::population_for_events(
        args.pool_events,
        args.seed,
    ))
    .take(args.pool_events)
    .collect();
    let batches: Arc<Vec<Vec<CareEvent>>> =
        Arc::new(pool.chunks(args.batch).map(<[CareEvent]>::to_vec).collect());
    drop(pool);
    println!(
        "pool        {} events in {} batches, generated in {:.2?}",
        batches.iter().map(Vec::len).sum::<usize>(),
        batches.len(),
        generating.elapsed()
    );

    let mut services = InProcess::new();
    let address = spawn_ingest(&mut services, &broker, &topics, args.batch, ()).await?;
    let mut clients = Vec::new();
    for _ in 0..args.clients {
        clients.push(CareEventIngestClient::new(channel(address).await?));
    }
    println!("services    ingest {address}, in this process");

    let begin = Instant::now();
    let warm_up = begin + Duration::from_secs(args.warm_up);
    let end = begin + Duration::from_secs(args.seconds);
    let mut publishers = tokio::task::JoinSet::new();
    for (index, client) in clients.into_iter().enumerate() {
        let batches = Arc::clone(&batches);
        // Publishers start at different places in the pool.
        let first = index * batches.len() / args.clients;
        publishers.spawn(publish_until(client, batches, first, warm_up, end));
    }
    let mut measured = Vec::new();
    let collected = async {
        while let Some(publisher) = publishers.join_next().await {
            measured.push(publisher.context("a publisher panicked")?);
        }
        anyhow::Ok(())
    };
    tokio::select! {
        collected = collected => collected?,
        failure = services.failure() => return Err(failure),
    }
    services.stop().await?;

    let mut latency = latency_histogram();
    let mut events = 0;
    let mut failures = Failures::default();
    for publisher in measured {
        latency.add(&publisher.latency)?;
        events += publisher.events;
        failures.merge(publisher.failures);
    }
    let window = end.saturating_duration_since(warm_up);
    println!(
        "throughput  {:.0} events/s acknowledged ({} events in {:.2?} after warm-up)",
        events as f64 / window.as_secs_f64(),
        events,
        window
    );
    println!(
        "Publish     {} per call of {} events ({} calls)",
        percentiles(&latency),
        args.batch,
        latency.len()
    );
    println!("errors      {failures}");
    println!(
        "budget: no ingest-only figure; publish → visible must hold p99 ≤ 25 ms at 5k events/s (kafka-latency)"
    );
    Ok(())
}

/// Publishes batch after batch until `end`, counting what was acknowledged
/// after `warm_up`.
async fn publish_until(
    mut client: CareEventIngestClient<Channel>,
    batches: Arc<Vec<Vec<CareEvent>>>,
    first: usize,
    warm_up: Instant,
    end: Instant,
) -> Publisher {
    let mut publisher = Publisher {
        latency: latency_histogram(),
        events: 0,
        failures: Failures::default(),
    };
    for batch in batches.iter().cycle().skip(first) {
        let started = Instant::now();
        if started >= end {
            break;
        }
        let answer = client
            .publish(PublishRequest {
                events: batch.clone(),
                validate_only: false,
            })
            .await;
        let finished = Instant::now();
        let counted = started >= warm_up && finished <= end;
        match answer {
            Ok(_) if counted => {
                record(&mut publisher.latency, finished - started);
                publisher.events += batch.len();
            }
            Ok(_) => {}
            Err(status) => {
                if counted {
                    publisher.failures.add("Publish", &status);
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
    publisher
}
