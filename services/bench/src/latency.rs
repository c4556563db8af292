//! `kafka-latency`: publish → visible in `GetCareState` through Kafka, at a
//! steady open-loop rate, on the production path.

use std::time::Duration;

use anyhow::Context;
use baton_projector::{Projector, ProjectorConfig, ProjectorStats};
use baton_proto::events::v1::CareEvent;
use baton_proto::ingest::v1::PublishRequest;
use baton_proto::ingest::v1::care_event_ingest_client::CareEventIngestClient;
use baton_proto::query::v1::care_state_query_client::CareStateQueryClient;
use baton_proto::query::v1::patient_ref::Ref;
use baton_proto::query::v1::{GetCareStateRequest, PatientRef};
use baton_query::{Materialiser, MaterialiserStats, QueryConfig, QueryService};
use baton_store::{Store, StoreConfig};
use clap::Args;
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::figures::{Failures, check_warm_up, latency_histogram, percentiles, record};
use crate::kafka::{
    Broker, InProcess, KafkaArgs, bind_loopback, channel, fresh_topics, spawn_ingest,
};

/// How long the calls still in flight when publishing stops may take: the
/// ingest's delivery timeout (30 s) plus the query's longest wait for a
/// consistency token (5 s), and a margin.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(40);

/// Publish → visible in GetCareState, through Kafka, at a steady rate.
///
/// Runs the production path in this process: the ingest API, the projector
/// (with its own sled store, publishing every committed state to the
/// changelog) and a query replica (a Materialiser following the changelog
/// into its own store, behind the query API), all over one broker. A
/// generator publishes --rate events per second from the synthetic feed,
/// in Publish calls of --batch events on a fixed schedule (open loop: a
/// slow answer never delays the next call). Each call's latency runs from
/// just before Publish until GetCareState of the patient of the batch's
/// last event, with the consistency token Publish returned, answers OK:
/// ingest → Kafka → projector → sled commit and flush → changelog →
/// replica → query. Calls of the first --warm-up seconds are left out.
///
/// Then, against the same broker in the same run, the broker's own round
/// trip at the same rate: records produced on the same schedule, in the
/// same batches, to a fresh topic, and fetched by a reader of it; produce
/// → fetched is what any path through this broker pays, so Baton's figure
/// can be judged on a machine the broker shares.
///
/// Budget: p99 ≤ 25 ms at 5k events/s (2-core machine).
#[derive(Debug, Args)]
pub(crate) struct LatencyArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Events published per second, whatever the answers
    #[arg(long, default_value_t = 5_000)]
    rate: u32,
    /// How long to publish, warm-up included
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// First seconds whose calls are left out of the figures
    #[arg(long, default_value_t = 5)]
    warm_up: u64,
    /// Partitions of each topic
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Events per Publish call
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// gRPC connections to each API; calls take them in turn
    #[arg(long, default_value_t = 4)]
    channels: usize,
    /// Seed of the synthetic population
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// What each service says when stopped.
#[derive(Debug)]
enum Report {
    Api,
    Projector(ProjectorStats),
    Replica(MaterialiserStats),
}

/// One Publish + GetCareState.
#[derive(Debug)]
struct Call {
    /// Since the first call was due.
    started: Duration,
    events: usize,
    outcome: Result<Timing, (&'static str, tonic::Status)>,
}

/// How long a call took, in all and until Publish answered.
#[derive(Debug, Clone, Copy)]
struct Timing {
    visible: Duration,
    published: Duration,
}

#[allow(clippy::print_stdout)]
pub(crate) async fn kafka_latency(args: LatencyArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rate > 0, "--rate 0: expected at least 1 event/s");
    anyhow::ensure!(
        args.batch > 0,
        "--batch 0: expected at least 1 event per call"
    );
    anyhow::ensure!(args.channels > 0, "--channels 0: expected at least 1");
    check_warm_up(args.warm_up, args.seconds)?;
    let broker = Broker::start(&args.kafka).await?;
    let topics = fresh_topics("latency", args.partitions);
    println!(
        "baton-bench kafka-latency: {} events/s as Publish calls of {} ({:.0} calls/s) for {} s, the first {} s left out; {} partitions, {} gRPC connections per API, seed {}",
        args.rate,
        args.batch,
        f64::from(args.rate) / args.batch as f64,
        args.seconds,
        args.warm_up,
        args.partitions,
        args.channels,
        args.seed
    );
    println!("broker      {}", broker.describe());
    println!(
        "topics      {}, {}, {}",
        topics.events, topics.state, topics.dead_letters
    );

    let work = tempfile::tempdir()?;
    let mut services = InProcess::new();

    let ingest_address =
        spawn_ingest(&mut services, &broker, &topics, args.batch, Report::Api).await?;

    let store = Store::open(work.path().join("projector"), &StoreConfig::default())
        .context("opening the projector's store")?;
    let mut projector = Projector::start(
        broker.connect().await?,
        store,
        ProjectorConfig {
            publish_states: true,
            ..ProjectorConfig::default()
        },
        topics.clone(),
    )
    .await
    .context("starting the projector")?;
    let stop = services.shutdown();
    services.spawn("projector", async move {
        Ok(Report::Projector(projector.run(stop).await?))
    });

    let replica = Store::open(work.path().join("replica"), &StoreConfig::default())
        .context("opening the query replica's store")?;
    let mut materialiser =
        Materialiser::start(broker.connect().await?, replica.clone(), topics.clone())
            .await
            .context("starting the query replica's materialiser")?;
    materialiser.catch_up().await?;
    let stop = services.shutdown();
    services.spawn("materialiser", async move {
        Ok(Report::Replica(materialiser.run(stop).await?))
    });
    let query = QueryService::new(replica, QueryConfig::default(), &topics);
    let (listener, query_address) = bind_loopback("query").await?;
    let stop = services.shutdown();
    services.spawn("query", async move {
        baton_query::run(query, listener, stop).await?;
        Ok(Report::Api)
    });

    let mut ingest_clients = Vec::new();
    let mut query_clients = Vec::new();
    for _ in 0..args.channels {
        ingest_clients.push(CareEventIngestClient::new(channel(ingest_address).await?));
        query_clients.push(CareStateQueryClient::new(channel(query_address).await?));
    }
    println!(
        "services    ingest {ingest_address}, query {query_address} (replica of the projector's store), in this process"
    );

    let measured = tokio::select! {
        measured = publish_at_rate(&args, ingest_clients, query_clients) => measured?,
        failure = services.failure() => return Err(failure),
    };
    let reports = services.stop().await?;
    let round_trip = broker_round_trip(&args, &broker).await?;

    // The schedule's span, or longer if the calls left late.
    let span = measured
        .sending
        .max(Duration::from_secs(args.seconds - args.warm_up))
        .as_secs_f64();
    println!(
        "latency     {} ({} calls after warm-up)",
        percentiles(&measured.latency),
        measured.latency.len()
    );
    println!(
        "  Publish   {} (of the above: until ingest answered)",
        percentiles(&measured.publish)
    );
    println!(
        "achieved    {:.0} events/s published and visible after warm-up ({} events; {:.0} events/s offered)",
        measured.visible_events as f64 / span,
        measured.visible_events,
        measured.sent_events as f64 / span,
    );
    if measured.feed_ran_out {
        println!("note        the synthetic feed ran out before the end: the run was shorter");
    }
    println!("errors      {}", measured.failures);
    if measured.unfinished > 0 {
        println!(
            "unfinished  {} calls had no answer {DRAIN_TIMEOUT:?} after publishing stopped",
            measured.unfinished
        );
    }
    println!(
        "schedule    calls left late by p99 {:.2} ms, max {:.2} ms (open loop: a late start means this process was short of CPU)",
        measured.lag.value_at_quantile(0.99) as f64 / 1000.0,
        measured.lag.max() as f64 / 1000.0
    );
    for report in reports {
        match report {
            Report::Api => {}
            Report::Projector(stats) => println!(
                "projector   {} records in {} batches ({:.1} per batch), {} changelog records (states and progress); folding {:.2?}, waiting for commit + flush + publish {:.2?}",
                stats.records,
                stats.batches,
                stats.records as f64 / stats.batches.max(1) as f64,
                stats.published,
                stats.fold_time,
                stats.commit_wait
            ),
            Report::Replica(stats) => println!(
                "replica     {} changelog records: {} states stored, {} progress records",
                stats.records, stats.states, stats.progress
            ),
        }
    }
    println!(
        "broker      produce → fetched {} ({} records at the same rate, no Baton in the path)",
        percentiles(&round_trip),
        round_trip.len()
    );
    println!(
        "  Baton     p99 {:.1}× the broker's own round trip",
        measured.latency.value_at_quantile(0.99) as f64
            / round_trip.value_at_quantile(0.99).max(1) as f64
    );
    println!("budget: p99 ≤ 25 ms at 5k events/s");
    Ok(())
}

/// Produce → fetched on `broker`, on the schedule of the Baton run: a
/// batch of `--batch` records every `--batch / --rate` seconds (open loop),
/// each carrying when it was due, to a fresh topic a reader follows.
async fn broker_round_trip(args: &LatencyArgs, broker: &Broker) -> anyhow::Result<Histogram<u64>> {
    use baton_log::{EventLog, NewRecord, TopicSpec};
    let log = broker.connect().await?;
    let topic = fresh_topics("latency-broker", args.partitions).events;
    log.ensure_topic(&topic, TopicSpec::events(args.partitions))
        .await
        .context("creating the round-trip topic")?;
    let from = (0..args.partitions)
        .map(|partition| (partition, 0))
        .collect();
    let mut reader = log.reader(&topic, from).await?;
    let calls = (u64::from(args.rate) * args.seconds).div_ceil(args.batch as u64);
    let period = Duration::from_secs_f64(args.batch as f64 / f64::from(args.rate));
    let warm_up = Duration::from_secs(args.warm_up);
    let begin = Instant::now();
    let producer = {
        let log = std::sync::Arc::clone(&log);
        let (topic, batch) = (topic.clone(), args.batch);
        tokio::spawn(async move {
            let mut sends = tokio::task::JoinSet::new();
            for index in 0..calls {
                let due = begin + period.mul_f64(index as f64);
                tokio::time::sleep_until(due).await;
                let sent = (due - begin).as_micros() as u64;
                let records = (0..batch)
                    .map(|i| {
                        NewRecord::new(format!("probe-{index}-{i}"), sent.to_be_bytes().to_vec())
                    })
                    .collect();
                let (log, topic) = (std::sync::Arc::clone(&log), topic.clone());
                sends.spawn(async move { log.append(&topic, records).await.map(drop) });
            }
            while let Some(sent) = sends.join_next().await {
                sent??;
            }
            anyhow::Ok(())
        })
    };
    let expected = calls * args.batch as u64;
    let mut round_trip = latency_histogram();
    let (mut fetched, deadline) = (0, begin + Duration::from_secs(args.seconds) + DRAIN_TIMEOUT);
    while fetched < expected && Instant::now() < deadline {
        for probe in reader
            .next_batch(10_000, Duration::from_millis(100))
            .await?
        {
            fetched += 1;
            let Ok(sent) = <[u8; 8]>::try_from(probe.value.as_slice()) else {
                continue;
            };
            let sent = Duration::from_micros(u64::from_be_bytes(sent));
            if sent >= warm_up {
                record(&mut round_trip, begin.elapsed().saturating_sub(sent));
            }
        }
    }
    producer
        .await
        .context("the round-trip producer panicked")??;
    Ok(round_trip)
}

/// The figures of the calls started after the warm-up.
#[derive(Debug)]
struct Measured {
    /// Publish → visible.
    latency: Histogram<u64>,
    /// Publish alone.
    publish: Histogram<u64>,
    /// How late each call left against its schedule.
    lag: Histogram<u64>,
    sent_events: usize,
    visible_events: usize,
    /// From the end of the warm-up to the last call sent.
    sending: Duration,
    failures: Failures,
    /// Calls (warm-up included) with no answer when the drain timed out.
    unfinished: usize,
    feed_ran_out: bool,
}

/// Sends the calls on schedule, each in its own task, then waits for the
/// answers still due.
async fn publish_at_rate(
    args: &LatencyArgs,
    ingest_clients: Vec<CareEventIngestClient<Channel>>,
    query_clients: Vec<CareStateQueryClient<Channel>>,
) -> anyhow::Result<Measured> {
    let total_events = u64::from(args.rate) * args.seconds;
    let calls = total_events.div_ceil(args.batch as u64);
    let period = Duration::from_secs_f64(args.batch as f64 / f64::from(args.rate));
    let warm_up = Duration::from_secs(args.warm_up);
    // A few percent more than needed: the sizing is approximate.
    let mut feed = baton_synth::Population::new(baton_synth::population_for_events(
        (total_events + total_events / 10) as usize + args.batch,
        args.seed,
    ));

    let (calls_done, mut answers) = mpsc::unbounded_channel::<Call>();
    let mut lag = latency_histogram();
    let (mut sent_calls, mut sent_events) = (0, 0);
    let mut feed_ran_out = false;
    let begin = Instant::now();
    let mut last_sent = begin;
    for index in 0..calls {
        let due = begin + period.mul_f64(index as f64);
        tokio::time::sleep_until(due).await;
        let events: Vec<CareEvent> = feed.by_ref().take(args.batch).collect();
        if events.is_empty() {
            feed_ran_out = true;
            break;
        }
        sent_calls += 1;
        let started = due - begin;
        if started >= warm_up {
            record(&mut lag, due.elapsed());
            sent_events += events.len();
        }
        let slot = index as usize % ingest_clients.len();
        let ingest = ingest_clients[slot].clone();
        let query = query_clients[slot].clone();
        let calls_done = calls_done.clone();
        tokio::spawn(async move {
            let events_sent = events.len();
            let outcome = publish_then_read(ingest, query, events).await;
            // The receiver is gone only once the drain timed out.
            let _ = calls_done.send(Call {
                started,
                events: events_sent,
                outcome,
            });
        });
        last_sent = Instant::now();
    }
    drop(calls_done);

    let mut measured = Measured {
        latency: latency_histogram(),
        publish: latency_histogram(),
        lag,
        sent_events,
        visible_events: 0,
        sending: last_sent.saturating_duration_since(begin + warm_up),
        failures: Failures::default(),
        unfinished: 0,
        feed_ran_out,
    };
    let mut answered = 0;
    let drain_until = Instant::now() + DRAIN_TIMEOUT;
    loop {
        match tokio::time::timeout_at(drain_until, answers.recv()).await {
            Ok(Some(call)) => {
                answered += 1;
                if call.started < warm_up {
                    continue;
                }
                match call.outcome {
                    Ok(timing) => {
                        record(&mut measured.latency, timing.visible);
                        record(&mut measured.publish, timing.published);
                        measured.visible_events += call.events;
                    }
                    Err((rpc, status)) => measured.failures.add(rpc, &status),
                }
            }
            Ok(None) => break,
            Err(_elapsed) => {
                measured.unfinished = sent_calls - answered;
                break;
            }
        }
    }
    Ok(measured)
}

/// Publishes `events`, then reads the state of the last event's patient
/// with the consistency token.
async fn publish_then_read(
    mut ingest: CareEventIngestClient<Channel>,
    mut query: CareStateQueryClient<Channel>,
    events: Vec<CareEvent>,
) -> Result<Timing, (&'static str, tonic::Status)> {
    let started = Instant::now();
    let published = ingest
        .publish(PublishRequest {
            events,
            validate_only: false,
        })
        .await
        .map_err(|status| ("Publish", status))?
        .into_inner();
    let published_after = started.elapsed();
    let Some(last) = published.events.last() else {
        return Err((
            "Publish",
            tonic::Status::internal("the answer names no published event"),
        ));
    };
    query
        .get_care_state(GetCareStateRequest {
            patient: Some(PatientRef {
                r#ref: Some(Ref::PatientKey(last.patient_key.clone())),
            }),
            consistency_token: published.consistency_token,
        })
        .await
        .map_err(|status| ("GetCareState", status))?;
    Ok(Timing {
        visible: started.elapsed(),
        published: published_after,
    })
}
