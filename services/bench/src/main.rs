//! `baton-bench`: Baton's own performance figures, printed, never asserted.
//! Compare them with the performance budget in the architecture brief.
//!
//! - `rebuild`: the projection from the embedded log into sled, against a
//!   pure in-memory fold of the same events.
//! - `kafka-latency`: publish → visible in `GetCareState` through Kafka, at
//!   a steady open-loop rate, on the production path (ingest, projector,
//!   changelog, query replica).
//! - `kafka-ingest`: sustained ingest throughput through Kafka.
//! - `kafka-catch-up`: a fresh projector folding a prepared events topic
//!   from offset 0.
//! - `kafka-group`: projector groups of 1, 2 and 3 processes catching up,
//!   and a killed projector's partitions taken over.
//! - `query`: the query API under load on loopback (GetCareState beside a
//!   bare tonic service, ListCohort, WatchCohort lag).
//! - `secure-query`: GetCareState over TLS with a JWT and the audit log on,
//!   beside plaintext without audit, and audit records per second.
//! - `mllp`: HL7 v2 messages per second acknowledged end to end over MLLP
//!   against the durable embedded log, on one connection and on several.
//! - `replay`: a replay into a new store generation under a query load and
//!   new events, the longest read at the swap, then verification speed.
//! - `long-history`: one patient with 40,000 events against one with 40:
//!   fold cost per event and the size of the state served.
//!
//! The Kafka benchmarks start a private Tansu broker unless `--kafka` names
//! a cluster, and use fresh topics on every run.
//!
//! # Layout
//! - `main.rs`: the command line.
//! - `rebuild.rs`: `rebuild`.
//! - `kafka.rs`: the broker, fresh topics and in-process services shared by
//!   the Kafka benchmarks.
//! - `latency.rs`, `ingest.rs`, `catch_up.rs`, `group.rs`: the Kafka
//!   benchmarks.
//! - `query.rs`: `query`, with the bare echo service of `proto/echo.proto`.
//! - `secure.rs`: `secure-query`.
//! - `mllp.rs`: `mllp`.
//! - `replay.rs`: `replay`.
//! - `history.rs`: `long-history`.
//! - `figures.rs`: rates, latency percentiles, sizes, peak memory.

mod catch_up;
mod figures;
mod group;
mod history;
mod ingest;
mod kafka;
mod latency;
mod mllp;
mod query;
mod rebuild;
mod replay;
mod secure;

use clap::{Parser, Subcommand};

/// mimalloc, configured by `baton_alloc::configure` first thing in `main`
/// (see baton-alloc for why and what it measured).
#[global_allocator]
static ALLOCATOR: baton_alloc::Allocator = baton_alloc::Allocator;

/// Baton's benchmarks. Figures are printed, never asserted; each one names
/// the budget it compares with (the performance budget of the architecture
/// brief, for a 2-core machine). Run them on a release build, on a quiet
/// machine.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Rebuild(rebuild::RebuildArgs),
    KafkaLatency(latency::LatencyArgs),
    KafkaIngest(ingest::IngestArgs),
    KafkaCatchUp(catch_up::CatchUpArgs),
    KafkaGroup(group::GroupArgs),
    Query(query::QueryArgs),
    SecureQuery(secure::SecureArgs),
    Mllp(mllp::MllpArgs),
    Replay(replay::ReplayArgs),
    LongHistory(history::HistoryArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    baton_alloc::configure();
    match Cli::parse().command {
        Command::Rebuild(args) => rebuild::rebuild(args).await,
        Command::KafkaLatency(args) => latency::kafka_latency(args).await,
        Command::KafkaIngest(args) => ingest::kafka_ingest(args).await,
        Command::KafkaCatchUp(args) => catch_up::kafka_catch_up(args).await,
        Command::KafkaGroup(args) => group::kafka_group(args).await,
        Command::Query(args) => query::query(args).await,
        Command::SecureQuery(args) => secure::secure_query(args).await,
        Command::Mllp(args) => mllp::mllp(args).await,
        Command::Replay(args) => replay::replay(args).await,
        Command::LongHistory(args) => history::long_history(args),
    }
}

#[cfg(test)]
mod tests {
    /// What the benchmark measures is what is deployed: every service
    /// binary of the workspace (each `services/*/src/main.rs`) declares
    /// mimalloc its global allocator, as this one does.
    #[test]
    fn every_service_binary_uses_mimalloc_configured() {
        let services = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("services/");
        let mut binaries = Vec::new();
        for entry in std::fs::read_dir(services).expect("services/ is readable") {
            let main = entry.expect("an entry").path().join("src/main.rs");
            let Ok(source) = std::fs::read_to_string(&main) else {
                continue;
            };
            let declared = source.contains(
                "#[global_allocator]\nstatic ALLOCATOR: baton_alloc::Allocator = baton_alloc::Allocator;",
            );
            assert!(
                declared,
                "{} does not use baton-alloc's mimalloc",
                main.display()
            );
            let configured = source
                .split_once("fn main()")
                .and_then(|(_, body)| body.split_once('{'))
                .is_some_and(|(_, body)| {
                    let first = body.trim_start();
                    first.starts_with("baton_alloc::configure();")
                        || first.starts_with("let allocator = baton_alloc::configure();")
                });
            assert!(
                configured,
                "{} does not call baton_alloc::configure() first in main",
                main.display()
            );
            binaries.push(main);
        }
        assert!(
            binaries.len() >= 5,
            "baton, bench, ingest, projector and query: {binaries:?}"
        );
    }
}
