//! `mllp`: HL7 v2 messages per second acknowledged end to end. A real
//! MLLP listener over a real ingest path appends to a durable embedded log
//! on disk; senders on loopback send ADT messages (admit, transfer,
//! discharge of distinct patients) one at a time per connection, each
//! waiting for its `AA`, which comes only once the events are fsynced.
//! Run with one connection, then with several.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use baton_hl7::{AckCode, ReadAck};
use baton_ingest::mllp::{MllpClient, SystemClock};
use baton_ingest::{Ingest, IngestConfig, Mllp};
use baton_log::embedded::{EmbeddedConfig, EmbeddedLog};
use baton_log::{EventLog, topics};
use hdrhistogram::Histogram;
use tokio_util::sync::CancellationToken;

/// HL7 v2 messages/s acknowledged over MLLP, durable in the embedded log.
///
/// A real MLLP listener over the real ingest path appends to a durable
/// embedded log on disk; senders on loopback send ADT messages one at a
/// time per connection, each waiting for its `AA`, which comes only once
/// the message's events are fsynced. One run per connection count.
#[derive(Debug, clap::Args)]
pub(crate) struct MllpArgs {
    /// Messages per run
    #[arg(long, default_value_t = 6_000)]
    messages: usize,
    /// Connection counts to run with, one run each
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    connections: Vec<usize>,
    /// Append without fsync (not durable), to see what the fsync costs
    #[arg(long)]
    no_fsync: bool,
}

pub(crate) async fn mllp(args: MllpArgs) -> anyhow::Result<()> {
    run_mllp(args.messages, &args.connections, !args.no_fsync).await
}

/// Sends `messages` over each of `connection_counts` connection counts in
/// turn, each against a fresh durable embedded log, and prints the rates.
#[allow(clippy::print_stdout)]
async fn run_mllp(messages: usize, connection_counts: &[usize], fsync: bool) -> anyhow::Result<()> {
    println!(
        "baton-bench mllp: {messages} ADT messages per run, acknowledged AA only once appended to the embedded log ({})",
        if fsync {
            "fsynced: durable"
        } else {
            "NOT fsynced: to see what the fsync costs"
        }
    );
    for &connections in connection_counts {
        let run = run(messages, connections.max(1), fsync).await?;
        println!(
            "{connections:>2} connection{} {:>7} messages in {:>8.2?}: {:>6.0} messages/s acknowledged, latency p50 {:.2?} p99 {:.2?} max {:.2?}",
            if connections == 1 { " " } else { "s" },
            run.messages,
            run.elapsed,
            run.messages as f64 / run.elapsed.as_secs_f64(),
            Duration::from_micros(run.latency.value_at_quantile(0.5)),
            Duration::from_micros(run.latency.value_at_quantile(0.99)),
            Duration::from_micros(run.latency.max()),
        );
    }
    Ok(())
}

struct Run {
    messages: usize,
    elapsed: Duration,
    latency: Histogram<u64>,
}

async fn run(messages: usize, connections: usize, fsync: bool) -> anyhow::Result<Run> {
    let work = tempfile::tempdir()?;
    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(EmbeddedConfig {
        durable: fsync,
        ..EmbeddedConfig::new(work.path().join("log"))
    })?);
    // Every sender is on 127.0.0.1: one peer for the per-peer limit.
    let defaults = IngestConfig::default();
    let config = IngestConfig {
        mllp_max_connections: connections.max(defaults.mllp_max_connections),
        mllp_max_connections_per_peer: connections.max(defaults.mllp_max_connections_per_peer),
        ..defaults
    };
    let ingest = Ingest::start(log.clone(), config.clone(), &topics::Topics::default()).await?;
    let mllp = Mllp::new(ingest, &config, Arc::new(SystemClock))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let stop = CancellationToken::new();
    let server = tokio::spawn(baton_ingest::mllp::serve(
        mllp,
        listener,
        stop.clone().cancelled_owned(),
    ));

    let per_connection = messages.div_ceil(connections);
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for connection in 0..connections {
        let first = connection * per_connection;
        let last = (first + per_connection).min(messages);
        senders.spawn(send(address, first..last));
    }
    let mut latency = Histogram::<u64>::new(3)?;
    let mut sent = 0;
    while let Some(result) = senders.join_next().await {
        let (count, histogram) = result??;
        sent += count;
        latency.add(histogram)?;
    }
    let elapsed = started.elapsed();
    stop.cancel();
    server.await?;
    log.flush().await?;
    let written: u64 = log.end_offsets(topics::CARE_EVENTS).await?.iter().sum();
    anyhow::ensure!(
        written == sent as u64,
        "{sent} messages acknowledged but {written} events in the log"
    );
    Ok(Run {
        messages: sent,
        elapsed,
        latency,
    })
}

/// One connection sending messages `range`, each waiting for its ACK.
async fn send(
    address: SocketAddr,
    range: std::ops::Range<usize>,
) -> anyhow::Result<(usize, Histogram<u64>)> {
    let mut client = MllpClient::connect(address)
        .await
        .context("connecting to the listener")?;
    let mut latency = Histogram::<u64>::new(3)?;
    let count = range.len();
    for n in range {
        let message = adt_message(n);
        let started = Instant::now();
        let ack = client.send(message.as_bytes()).await?;
        latency.record(started.elapsed().as_micros() as u64)?;
        let ack = ReadAck::parse(&ack)?;
        anyhow::ensure!(
            ack.code == AckCode::Accept,
            "message {n} not accepted: {:?}",
            ack.problems
        );
    }
    Ok((count, latency))
}

/// Message `n`: patient `n / 3` is admitted, moved, then discharged.
fn adt_message(n: usize) -> String {
    let patient = n / 3;
    let (trigger, ward, extra) = match n % 3 {
        0 => ("A01", "AMU", ""),
        1 => ("A02", "WARD-7", ""),
        _ => ("A03", "WARD-7", "|||||||||||||||||1|19"),
    };
    let minute = n % 3 * 10;
    format!(
        "MSH|^~\\&|PAS|RXX|BATON|RXX|2026071509{minute:02}||ADT^{trigger}|BENCH-{n}|P|2.5\r\
         EVN|{trigger}|2026071509{minute:02}\r\
         PID|1||H{patient}^^^RXX^MR||PATIENT^{patient}||19400101|F\r\
         PV1|1|I|{ward}^^^RXX01||||||||||||||||V{patient}{extra}\r"
    )
}
