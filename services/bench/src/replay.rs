//! `replay`: a replay of the synthetic stream into a new store generation
//! while the live projector keeps applying new events and a query load
//! keeps reading; then a verification of the result.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use baton_log::embedded::{EmbeddedConfig, EmbeddedLog};
use baton_log::{EventLog, NewRecord, TopicSpec, topics};
use baton_projector::verify::{self, Target};
use baton_projector::{Projector, ProjectorConfig, Replays};
use baton_proto::admin::v1::replay_status::Phase;
use baton_proto::query::v1::care_state_query_client::CareStateQueryClient;
use baton_proto::query::v1::patient_ref::Ref;
use baton_proto::query::v1::{GetCareStateRequest, PatientRef};
use baton_query::{QueryConfig, QueryService};
use baton_store::{Generations, Store, StoreConfig};
use clap::Args;
use hdrhistogram::Histogram;
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::figures::{latency_histogram, peak_rss, percentiles, rate, record};

/// A replay under load: rebuild speed, the longest read at the swap, and
/// verification speed.
///
/// A synthetic stream is written to a fresh embedded log and projected
/// into the live store. Then, with `--clients` callers reading random
/// patients' states with GetCareState without pause and `--live-rate` new
/// events a second arriving for the live projector, a replay folds the log
/// into a new generation and swaps it in; finally `verify` folds the log
/// again in memory and compares digests.
///
/// Budgets: no GetCareState waits more than 50 ms at the swap; the replay
/// rate is the rebuild budget's (≥ 500k events/s on 2 cores).
#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// About how many events to generate
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Partitions of the events topic
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Concurrent GetCareState callers during the replay
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// New events a second for the live projector during the replay
    #[arg(long, default_value_t = 1_000)]
    live_rate: u64,
    /// Seed of the synthetic population
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[allow(clippy::print_stdout)]
pub(crate) async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    println!(
        "baton-bench replay: ~{} events, {} partitions, {} GetCareState callers, {} new events/s, in {}",
        args.events,
        args.partitions,
        args.clients,
        args.live_rate,
        work.path().display()
    );
    let config = baton_synth::population_for_events(args.events, args.seed);
    let log = Arc::new(EmbeddedLog::open(EmbeddedConfig {
        durable: false,
        ..EmbeddedConfig::new(work.path().join("log"))
    })?);
    let topics = topics::Topics {
        partitions: args.partitions,
        ..topics::Topics::default()
    };
    log.ensure_topic(topics::CARE_EVENTS, TopicSpec::events(args.partitions))
        .await?;
    let mut population = baton_synth::Population::new(config.clone());
    let (generated, written) =
        crate::rebuild::write_log(&log, population.by_ref(), args.events).await?;
    // What the live projector gets during the replay: more of the stream.
    let later: Vec<NewRecord> = {
        let mut later = Vec::new();
        for event in baton_synth::Population::new(baton_synth::PopulationConfig {
            seed: args.seed + 1_000,
            ..baton_synth::population_for_events(args.events / 10, args.seed + 1_000)
        }) {
            let valid = baton_care::ValidEvent::from_producer(event)
                .map_err(|error| anyhow::anyhow!("{error}"))?;
            let value = valid.event().encode_to_vec();
            for key in valid.log_keys() {
                later.push(NewRecord::new(key.as_str(), value.clone()));
            }
        }
        later
    };
    println!("generated   {generated:>9} events as {written} records");

    let generations = Generations::new(work.path(), "store");
    let store = Store::open(generations.live_path()?, &StoreConfig::default())?;
    let projector_config = ProjectorConfig {
        publish_states: false,
        ..ProjectorConfig::default()
    };
    let mut projector = Projector::start(
        log.clone(),
        store.clone(),
        projector_config.clone(),
        topics.clone(),
    )
    .await?;
    let started = Instant::now();
    let stats = projector.catch_up().await?;
    println!(
        "live store  {} records projected in {:.2?}: {}",
        stats.records,
        started.elapsed(),
        rate(stats.records as usize, started.elapsed())
    );
    let keys: Arc<Vec<String>> = Arc::new(
        store
            .states()
            .filter_map(Result::ok)
            .map(|state| state.patient_key)
            .collect(),
    );

    let stop = CancellationToken::new();
    let live = {
        let stop = stop.clone();
        tokio::spawn(async move { projector.run(stop.cancelled_owned()).await })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let query = QueryService::new(store.clone(), QueryConfig::default(), &topics);
    let serving = tokio::spawn(baton_query::run(
        query,
        listener,
        stop.clone().cancelled_owned(),
    ));

    let reading = Arc::new(AtomicBool::new(true));
    let mut callers = tokio::task::JoinSet::new();
    for index in 0..args.clients {
        let keys = Arc::clone(&keys);
        let reading = Arc::clone(&reading);
        let mut client = CareStateQueryClient::connect(format!("http://{address}")).await?;
        callers.spawn(async move {
            let mut calls: Vec<(Instant, Duration, bool)> = Vec::new();
            let mut next = index;
            while reading.load(Ordering::Relaxed) {
                next = (next * 7919 + 104_729) % keys.len();
                let started = Instant::now();
                let answer = client
                    .get_care_state(GetCareStateRequest {
                        patient: Some(PatientRef {
                            r#ref: Some(Ref::PatientKey(keys[next].clone())),
                        }),
                        ..GetCareStateRequest::default()
                    })
                    .await;
                calls.push((started, started.elapsed(), answer.is_ok()));
            }
            calls
        });
    }
    let feeding = {
        let log = log.clone();
        let per_tick = (args.live_rate / 10).max(1) as usize;
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            for chunk in later.chunks(per_tick) {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                if log
                    .append(topics::CARE_EVENTS, chunk.to_vec())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        })
    };

    let replays = Replays::new(
        log.clone(),
        store.clone(),
        generations,
        projector_config,
        topics.clone(),
        Vec::new(),
    );
    // A second of reading the live generation first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let replay_started = Instant::now();
    replays.start(false)?;
    let mut watch = replays.watch();
    let mut swap_began = None;
    let mut swap_ended = None;
    let done = loop {
        let status = watch.borrow_and_update().clone();
        match status.phase() {
            Phase::Swapping => {
                swap_began.get_or_insert_with(Instant::now);
            }
            Phase::Republishing | Phase::Done => {
                swap_began.get_or_insert_with(Instant::now);
                swap_ended.get_or_insert_with(Instant::now);
            }
            _ => {}
        }
        if matches!(
            status.phase(),
            Phase::Done | Phase::Failed | Phase::Cancelled
        ) {
            break status;
        }
        if watch.changed().await.is_err() {
            anyhow::bail!("the replay stopped reporting");
        }
    };
    let replay_took = replay_started.elapsed();
    anyhow::ensure!(
        done.phase() == Phase::Done,
        "the replay did not finish: {done:?}"
    );
    // A second of reading the new generation.
    tokio::time::sleep(Duration::from_secs(1)).await;
    reading.store(false, Ordering::Relaxed);
    let mut all = latency_histogram();
    let mut around_swap = latency_histogram();
    let (mut failed, mut calls) = (0u64, 0u64);
    let window = swap_began.zip(swap_ended).map(|(began, ended)| {
        (
            began - Duration::from_millis(50),
            ended + Duration::from_millis(50),
        )
    });
    while let Some(caller) = callers.join_next().await {
        for (started, latency, ok) in caller? {
            calls += 1;
            if !ok {
                failed += 1;
                continue;
            }
            record(&mut all, latency);
            if let Some((from, to)) = window
                && started + latency >= from
                && started <= to
            {
                record(&mut around_swap, latency);
            }
        }
    }
    println!(
        "replay      {} records into generation {} in {replay_took:.2?}: {} (while the live projector applied {} events/s)",
        done.records_done,
        done.generation,
        rate(done.records_done as usize, replay_took),
        args.live_rate
    );
    println!(
        "swap        writers paused {:.1} ms (reads never wait for the swap); {} states differ",
        done.writers_paused_micros as f64 / 1000.0,
        done.states_differing
    );
    println!(
        "reads       {calls} GetCareState calls, {failed} failed; all: {}",
        percentiles(&all)
    );
    println!(
        "at the swap {} calls in flight within 50 ms of it: longest {} (budget: ≤ 50 ms)",
        around_swap.len(),
        longest(&around_swap)
    );

    stop.cancel();
    let _ = feeding.await;
    live.await??;
    serving.await??;
    let target = Target::local("projector", &store, topics::CARE_EVENTS)?;
    let verifying = Instant::now();
    let report = verify::verify(log.clone(), &topics, vec![target], 10, |_| {}).await?;
    let verify_took = verifying.elapsed();
    println!(
        "verify      {} records folded again in memory in {verify_took:.2?}: {}; the store {}",
        report.records_folded,
        rate(report.records_folded as usize, verify_took),
        if report.equal { "agrees" } else { "DISAGREES" }
    );
    println!("peak memory {}", peak_rss());
    Ok(())
}

fn longest(histogram: &Histogram<u64>) -> String {
    if histogram.is_empty() {
        "none measured".to_owned()
    } else {
        format!("{:.2} ms", histogram.max() as f64 / 1000.0)
    }
}
