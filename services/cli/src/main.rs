//! `baton`: run the whole backbone on one machine, publish events, and read
//! care states and cohorts. See `baton --help`.
//!
//! # Layout
//! - `up.rs`: `baton up`, all three services in one process.
//! - `demo.rs`: the synthetic population `baton up --demo` publishes.
//! - `hl7.rs`: `baton hl7 map` and `baton hl7 send`, for HL7 v2 feeds.
//! - `publish.rs`: `baton publish`, JSON lines through the ingest API.
//! - `read.rs`: `baton state get` (now or as of a time) and `baton timeline`.
//! - `cohort.rs`: `baton cohort` and `baton watch`, and their filters.
//! - `render.rs`: care states as people read them.
//! - `ops.rs`: `baton replay`, `verify`, `lag` and `dlq`, for operators.
//! - `audit.rs`: `baton audit`, who read a patient's record.
//! - `endpoint.rs`: `--query` and `--ingest` addresses.

mod audit;
mod cohort;
mod demo;
mod endpoint;
mod hl7;
mod ops;
mod publish;
mod read;
mod render;
mod up;

use clap::{Parser, Subcommand};

/// mimalloc, configured by `baton_alloc::configure` first thing in `main`
/// (see baton-alloc for why and what it measured).
#[global_allocator]
static ALLOCATOR: baton_alloc::Allocator = baton_alloc::Allocator;

/// Baton: an event-sourced backbone for care transitions.
///
/// Care events (admissions, transfers, discharges, referrals, virtual-ward
/// episodes...) go in through the ingest API; each patient's current care
/// state comes out of the query API.
///
/// Start here:
///   baton up --demo              run everything, with a synthetic population
///   baton cohort --setting virtual-ward
///   baton watch --setting hospital --min-frailty 6
///   baton state get 9990000018
///   baton timeline 9990000018
///   baton publish events.jsonl
///   baton hl7 map adt.hl7        what HL7 v2 messages map to
///   baton lag                    how far each store is behind the log
///   baton verify                 check the projection against a fresh fold
///   baton replay                 rebuild the projection, no read downtime
///   baton dlq list               the records that could not be applied
///   baton audit --patient 9434765919   who read a patient's record
///   baton hl7 send adt.hl7 --then-get
#[derive(Debug, Parser)]
// Verbatim: the "Start here" block is a list, one command a line.
#[command(
    name = "baton",
    version,
    propagate_version = true,
    verbatim_doc_comment
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    tls: endpoint::TlsFlags,
}

#[derive(Debug, Subcommand)]
enum Command {
    Up(up::UpArgs),
    Publish(publish::PublishArgs),
    #[command(subcommand)]
    State(read::StateCommand),
    Timeline(read::TimelineArgs),
    Cohort(cohort::CohortArgs),
    Watch(cohort::WatchArgs),
    #[command(subcommand)]
    Hl7(hl7::Hl7Command),
    Replay(ops::ReplayArgs),
    Verify(ops::VerifyArgs),
    Lag(ops::LagArgs),
    #[command(subcommand)]
    Dlq(ops::DlqCommand),
    Audit(audit::AuditArgs),
}

fn main() -> std::process::ExitCode {
    baton_alloc::configure();
    let cli = Cli::parse();
    endpoint::set_tls(cli.tls.clone());
    // Rust ignores SIGPIPE, so printing to a closed pipe (`baton cohort
    // --json | head`) would panic; a command-line tool should just stop.
    // Not so a server: rustls writes its records with writev, which raises
    // SIGPIPE when a client has gone, and that must not kill `baton up`.
    if !matches!(cli.command, Command::Up(_)) {
        sigpipe::reset();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&anyhow::anyhow!("cannot start the async runtime: {error}")),
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => up::up(args).await,
            Command::Publish(args) => publish::publish(args).await,
            Command::State(command) => read::state(command).await,
            Command::Timeline(args) => read::timeline(args).await,
            Command::Cohort(args) => cohort::cohort(args).await,
            Command::Watch(args) => cohort::watch(args).await,
            Command::Hl7(command) => hl7::hl7(command).await,
            Command::Replay(args) => ops::replay(args).await,
            Command::Verify(args) => ops::verify(args).await,
            Command::Lag(args) => ops::lag(args).await,
            Command::Dlq(command) => ops::dlq(command).await,
            Command::Audit(args) => audit::audit(args).await,
        }
    });
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

#[allow(clippy::print_stderr)]
fn fail(error: &anyhow::Error) -> std::process::ExitCode {
    eprintln!("error: {error:#}");
    std::process::ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn the_start_here_block_keeps_one_command_a_line() {
        let help = Cli::command().render_long_help().to_string();
        assert!(
            help.contains("Start here:\n  baton up --demo              run everything, with a synthetic population\n  baton cohort --setting virtual-ward\n"),
            "{help}"
        );
        assert!(
            help.contains("\n  baton hl7 send adt.hl7 --then-get\n"),
            "{help}"
        );
    }
}
