//! `kafka-group`: projector groups through Kafka, as processes: catch-up of
//! a prepared events topic with 1, 2 and 3 projectors, and how long a
//! killed projector's partitions take to apply events again elsewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use baton_log::topics::Topics;
use baton_proto::admin::v1::GetPositionsRequest;
use baton_proto::admin::v1::operations_client::OperationsClient;
use clap::{ArgAction, Args};
use tokio::time::Instant;

use crate::catch_up::write_events;
use crate::figures::rate;
use crate::kafka::{Broker, KafkaArgs, fresh_topics};

/// How often the projectors' positions are asked for.
const POLL: Duration = Duration::from_millis(200);
/// Longest wait for a group to catch up or to take a partition over.
const PATIENCE: Duration = Duration::from_secs(1_800);
/// Events per second appended while a projector is killed.
const FAILOVER_RATE: usize = 2_000;

/// Projector groups through Kafka, with `baton-projector` processes.
///
/// Writes about --events synthetic events to a fresh events topic, then for
/// each count in --projectors starts that many projectors (fresh stores, a
/// fresh consumer group and changelog) and times them until every
/// partition is owned and applied to the end. The group forms while it
/// folds (the first members to join fold, then hand partitions on to later
/// ones, which restore them), so the rate is given from the start and from
/// the first assignment, with the time the last partition was assigned. With the largest
/// group still running and new events arriving at 2,000 a second, it
/// SIGKILLs one projector and times how long its partitions take to apply
/// events again on the survivors (the session timeout, 6 s by default,
/// then the rebalance and the restore from the changelog).
///
/// On one 2-core machine the projectors, the broker and this process share
/// the same cores: throughput does not grow with the group here. On
/// separate machines each projector folds only its share of the
/// partitions, so the group's catch-up rate would grow with its size up to
/// the partition count, bounded by the brokers.
///
/// Needs the `baton-projector` binary beside this one (`cargo build
/// --release -p baton-bench -p baton-projector`) or --projector-binary.
/// Budget: death to applying elsewhere ≤ 15 s with default settings.
///
/// The projectors log to stderr at warn; BATON_BENCH_PROJECTOR_LOG sets
/// their filter (e.g. info, to see assignments and restores).
#[derive(Debug, Args)]
pub(crate) struct GroupArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// About how many events to write and fold
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Partitions of each topic
    #[arg(long, default_value_t = 12)]
    partitions: u32,
    /// The group sizes to time, comma-separated
    #[arg(long, default_value = "1,2,3", value_delimiter = ',')]
    projectors: Vec<usize>,
    /// Join as static members (Tansu, the private broker, never hands a
    /// dead static member's partitions on: keep false there)
    #[arg(long, default_value_t = false, action = ArgAction::Set, value_name = "true|false")]
    static_membership: bool,
    /// Seed of the synthetic population
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The baton-projector binary [default: beside baton-bench]
    #[arg(long, value_name = "PATH")]
    projector_binary: Option<PathBuf>,
}

/// A projector process of the benchmark.
struct Member {
    child: Child,
    admin: SocketAddr,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the projectors say of each partition: owned by whom (the index of
/// the member answering), and applied up to where.
#[derive(Debug, Default)]
struct GroupView {
    owners: BTreeMap<u32, usize>,
    applied: BTreeMap<u32, u64>,
    behind: u64,
}

async fn view(members: &[Option<Member>]) -> GroupView {
    let mut view = GroupView::default();
    for (index, member) in members.iter().enumerate() {
        let Some(member) = member else { continue };
        let Ok(mut client) = OperationsClient::connect(format!("http://{}", member.admin)).await
        else {
            continue;
        };
        let Ok(positions) = client.get_positions(GetPositionsRequest {}).await else {
            continue;
        };
        for partition in positions.into_inner().partitions {
            if partition.owned_here {
                view.owners.insert(partition.partition, index);
                view.applied.insert(partition.partition, partition.applied);
                view.behind += partition.lag_events;
            }
        }
    }
    view
}

#[allow(clippy::print_stdout)]
pub(crate) async fn kafka_group(args: GroupArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.projectors.iter().all(|&n| n > 0),
        "--projectors: expected group sizes of at least 1, e.g. 1,2,3"
    );
    let binary = match &args.projector_binary {
        Some(binary) => binary.clone(),
        None => std::env::current_exe()?.with_file_name("baton-projector"),
    };
    anyhow::ensure!(
        binary.exists(),
        "{} not found: build it beside baton-bench (cargo build --release -p baton-bench -p baton-projector) or name it with --projector-binary",
        binary.display()
    );
    let broker = Broker::start(&args.kafka).await?;
    let topics = fresh_topics("group", args.partitions);
    println!(
        "baton-bench kafka-group: ~{} events, {} partitions, groups of {:?}, static membership: {}, seed {}",
        args.events, args.partitions, args.projectors, args.static_membership, args.seed
    );
    println!("broker      {}", broker.describe());
    let log = broker.connect().await?;
    write_events(&log, &topics, args.events, args.seed).await?;
    let records: u64 = log.end_offsets(&topics.events).await?.iter().sum();

    let work = tempfile::tempdir()?;
    let mut last = Vec::new();
    for (run, &size) in args.projectors.iter().enumerate() {
        // The same events; a fresh changelog and group, so every store
        // folds from offset 0 rather than restoring an earlier run's.
        let run_topics = Topics {
            state: format!("{}.{run}", topics.state),
            dead_letters: format!("{}.{run}", topics.dead_letters),
            ..topics.clone()
        };
        let group = format!("{}.group-{run}", topics.events);
        let started = Instant::now();
        let mut members = Vec::new();
        for index in 0..size {
            members.push(Some(start_member(
                &binary,
                &broker,
                &run_topics,
                &group,
                &work.path().join(format!("run-{run}/projector-{index}")),
                index,
                args.static_membership,
            )?));
        }
        let mut first_owned = None;
        let mut assigned = None;
        loop {
            anyhow::ensure!(
                started.elapsed() < PATIENCE,
                "a group of {size} did not catch up within {PATIENCE:?}"
            );
            let view = view(&members).await;
            if !view.owners.is_empty() {
                first_owned.get_or_insert(started.elapsed());
            }
            if view.owners.len() == args.partitions as usize {
                let all = *assigned.get_or_insert(started.elapsed());
                if view.behind == 0 {
                    let total = started.elapsed();
                    let first = first_owned.unwrap_or(all);
                    println!(
                        "{size} projector{} {records} records caught up {total:.2?} after starting: {} from the start, {} from the first assignment (after {first:.2?}); every partition assigned after {all:.2?}",
                        if size == 1 { "  " } else { "s " },
                        rate(records as usize, total),
                        rate(records as usize, total.saturating_sub(first)),
                    );
                    break;
                }
            }
            tokio::time::sleep(POLL).await;
        }
        last = members;
    }

    if last.len() >= 2 {
        failover(&broker, &topics, &mut last, args.seed).await?;
    }
    drop(last);
    println!(
        "one shared 2-core machine: the projectors, the broker and the benchmark take turns on the same cores, so the group does not fold faster than one projector here; on separate machines each folds only its share of the partitions"
    );
    println!("budget: death to applying elsewhere ≤ 15 s with default settings");
    Ok(())
}

fn start_member(
    binary: &Path,
    broker: &Broker,
    topics: &Topics,
    group: &str,
    data: &Path,
    index: usize,
    static_membership: bool,
) -> anyhow::Result<Member> {
    let admin = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let child = Command::new(binary)
        .args([
            "--kafka",
            &broker.bootstrap_servers(),
            "--data-dir",
            &data.display().to_string(),
            "--instance-id",
            &format!("bench-projector-{index}"),
            "--consumer-group",
            group,
            "--static-membership",
            &static_membership.to_string(),
            "--admin-listen",
            &admin.to_string(),
            "--metrics-listen",
            "off",
        ])
        .env("BATON_TOPICS__EVENTS", &topics.events)
        .env("BATON_TOPICS__STATE", &topics.state)
        .env("BATON_TOPICS__DEAD_LETTERS", &topics.dead_letters)
        .env("BATON_TOPICS__PARTITIONS", topics.partitions.to_string())
        .env(
            "BATON_LOG",
            std::env::var("BATON_BENCH_PROJECTOR_LOG").unwrap_or_else(|_| "warn".to_owned()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    Ok(Member { child, admin })
}

/// Kills the last member of a caught-up group while events arrive, and
/// times until each of its partitions has applied an event on a survivor.
#[allow(clippy::print_stdout)]
async fn failover(
    broker: &Broker,
    topics: &Topics,
    members: &mut [Option<Member>],
    seed: u64,
) -> anyhow::Result<()> {
    let log = broker.connect().await?;
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    // New patients (another seed), at a steady rate, in the background.
    let appending = {
        let log = log.clone();
        let topics = topics.clone();
        tokio::spawn(async move {
            let config = baton_synth::population_for_events(FAILOVER_RATE * 120, seed + stamp);
            let mut population = baton_synth::Population::new(config);
            let ingest = baton_ingest::Ingest::start(log, Default::default(), &topics).await?;
            loop {
                let chunk: Vec<_> = population.by_ref().take(FAILOVER_RATE / 10).collect();
                if chunk.is_empty() {
                    return anyhow::Ok(());
                }
                ingest.publish(chunk, false, None).await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    let victim = members.len() - 1;
    let before = view(members).await;
    let orphans: BTreeSet<u32> = before
        .owners
        .iter()
        .filter(|&(_, &owner)| owner == victim)
        .map(|(&partition, _)| partition)
        .collect();
    let killed = Instant::now();
    members[victim] = None;
    let mut reassigned = None;
    let taken_over = loop {
        anyhow::ensure!(
            killed.elapsed() < PATIENCE,
            "the killed projector's partitions were never taken over"
        );
        let now = view(members).await;
        if orphans
            .iter()
            .all(|partition| now.owners.contains_key(partition))
        {
            reassigned.get_or_insert(killed.elapsed());
        }
        let applying = orphans.iter().all(|partition| {
            now.owners.contains_key(partition)
                && now.applied.get(partition) > before.applied.get(partition)
        });
        if applying {
            break killed.elapsed();
        }
        tokio::time::sleep(POLL).await;
    };
    appending.abort();
    println!(
        "failover    projector {victim} of {} SIGKILLed with {} partitions: all owned by survivors {:.2?} later (the session timeout, then the rebalance), all applying events again {taken_over:.2?} later (the restore from the changelog, then the fold)",
        members.len(),
        orphans.len(),
        reassigned.unwrap_or(taken_over),
    );
    Ok(())
}
