//! The operator's commands, thin clients of the admin API
//! (`baton.admin.v1.Operations`): `baton replay`, `baton verify`,
//! `baton lag` and `baton dlq`.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;
use baton_proto::NamedMessage;
use baton_proto::admin::v1::operations_client::OperationsClient;
use baton_proto::admin::v1::replay_status::Phase;
use baton_proto::admin::v1::{
    CancelReplayRequest, DeadLetter, DeadLetterSelection, GetDeadLetterRequest,
    GetPositionsRequest, GetPositionsResponse, GetReplayStatusRequest, ListDeadLettersRequest,
    PartitionPosition, PurgeDeadLettersRequest, RedriveDeadLettersRequest, ReplayStatus, Role,
    StartReplayRequest, VerifyReport, VerifyRequest, verify_update,
};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

/// Where the admin API is.
#[derive(Debug, Clone, Args)]
pub(crate) struct AdminAddress {
    /// Address of the admin API of the projector or `baton up` (HOST:PORT)
    #[arg(
        long = "admin",
        env = "BATON_ADMIN",
        default_value = "127.0.0.1:50053",
        value_name = "HOST:PORT"
    )]
    pub(crate) address: String,
}

pub(crate) async fn connect(
    address: &str,
) -> anyhow::Result<OperationsClient<crate::endpoint::Transport>> {
    let client = OperationsClient::new(
        crate::endpoint::connect(
            address,
            "the admin API (`baton up` or `baton-projector`, its --admin-listen)",
        )
        .await?,
    );
    Ok(client.max_decoding_message_size(64 * 1024 * 1024))
}

fn json<M: NamedMessage>(message: &M) -> anyhow::Result<String> {
    baton_proto::json::to_json(message).context("printing as JSON")
}

// --- replay -----------------------------------------------------------------

/// Rebuild the projection from the start of the log, with no read downtime.
///
/// The projector folds the whole event log again into a new store
/// generation beside the live one, while the live one keeps projecting and
/// the query API keeps answering from it. When the new generation has
/// caught up, it is swapped in between two reads (the projector's writes
/// pause for the last few records; reads never do), the states it holds
/// differently are published to the changelog, and the old generation is
/// removed (--keep-previous keeps it). A replay survives this command
/// going away and the projector restarting: `baton replay --status`
/// follows it again.
///
/// When to replay: after an upgrade of Baton that changes how events are
/// folded; when a store is suspect (`baton verify` disagrees); after a
/// change of the cohort index that you want built from scratch.
#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// Follow the replay under way (or show the last one) instead of
    /// starting one
    #[arg(long, conflicts_with_all = ["cancel", "keep_previous", "detach"])]
    status: bool,
    /// Stop the replay under way before its swap and remove its generation
    #[arg(long, conflicts_with_all = ["keep_previous", "detach"])]
    cancel: bool,
    /// Keep the previous generation's folder after the swap
    #[arg(long)]
    keep_previous: bool,
    /// Start the replay and return at once, without following it
    #[arg(long)]
    detach: bool,
    /// Print the status as JSON lines (baton.admin.v1.ReplayStatus)
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    admin: AdminAddress,
}

#[allow(clippy::print_stdout)]
pub(crate) async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.admin.address).await?;
    let status = if args.cancel {
        client
            .cancel_replay(CancelReplayRequest {})
            .await?
            .into_inner()
    } else if args.status {
        client
            .get_replay_status(GetReplayStatusRequest {})
            .await?
            .into_inner()
    } else {
        client
            .start_replay(StartReplayRequest {
                keep_previous: args.keep_previous,
            })
            .await?
            .into_inner()
    };
    if args.detach || args.cancel || !running(&status) {
        print_status(&status, args.json)?;
        return finished(&status);
    }
    // Follow it until it ends; Ctrl-C leaves it running.
    let mut stream = client
        .watch_replay(GetReplayStatusRequest {})
        .await?
        .into_inner();
    let bar = (!args.json).then(|| {
        let bar = ProgressBar::new(status.records_total.max(1));
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:12} [{bar:40}] {human_pos}/{human_len} records  {per_sec}  eta {eta}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar
    });
    let mut last = status;
    loop {
        let next = tokio::select! {
            next = stream.message() => next?,
            _ = tokio::signal::ctrl_c() => {
                if let Some(bar) = &bar { bar.abandon(); }
                println!("The replay goes on in the projector; `baton replay --status` follows it again.");
                return Ok(());
            }
        };
        let Some(status) = next else { break };
        if args.json {
            println!("{}", json(&status)?);
        } else if let Some(bar) = &bar {
            bar.set_length(status.records_total.max(status.records_done).max(1));
            bar.set_position(status.records_done);
            bar.set_message(phase_name(status.phase()).to_owned());
        }
        last = status;
        if !running(&last) {
            break;
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if !args.json {
        print_status(&last, false)?;
    }
    finished(&last)
}

fn running(status: &ReplayStatus) -> bool {
    matches!(
        status.phase(),
        Phase::Rebuilding | Phase::Swapping | Phase::Republishing
    )
}

fn finished(status: &ReplayStatus) -> anyhow::Result<()> {
    if status.phase() == Phase::Failed {
        anyhow::bail!("the replay failed: {}", status.error);
    }
    Ok(())
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Unspecified | Phase::Idle => "idle",
        Phase::Rebuilding => "rebuilding",
        Phase::Swapping => "swapping",
        Phase::Republishing => "republishing",
        Phase::Done => "done",
        Phase::Failed => "failed",
        Phase::Cancelled => "cancelled",
    }
}

#[allow(clippy::print_stdout)]
fn print_status(status: &ReplayStatus, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        println!("{}", json(status)?);
        return Ok(());
    }
    let phase = status.phase();
    if phase == Phase::Idle || phase == Phase::Unspecified {
        println!(
            "No replay since the projector started; the live store is generation {}.",
            status.generation
        );
        return Ok(());
    }
    let mut text = format!(
        "Replay into generation {} (replacing {}): {}",
        status.generation,
        status.previous_generation,
        phase_name(phase)
    );
    if status.resumed {
        text.push_str(", resumed after a restart");
    }
    let _ = write!(
        text,
        "\n  records   {} of {} folded",
        status.records_done, status.records_total
    );
    if status.records_per_second > 0.0 {
        let _ = write!(text, " ({:.0}/s)", status.records_per_second);
    }
    if matches!(phase, Phase::Republishing | Phase::Done) {
        let _ = write!(
            text,
            "\n  swap      writers paused {:.1} ms; reads never waited",
            status.writers_paused_micros as f64 / 1000.0
        );
        let _ = write!(
            text,
            "\n  states    {} differ from the previous generation, {} republished to the changelog",
            status.states_differing, status.states_republished
        );
        if status.dead_letters > 0 {
            let _ = write!(
                text,
                "\n  dead      {} records could not be applied (dead-lettered when first met)",
                status.dead_letters
            );
        }
        if phase == Phase::Done {
            let _ = write!(
                text,
                "\n  previous  generation {} {}",
                status.previous_generation,
                if status.keep_previous {
                    "kept"
                } else {
                    "removed"
                }
            );
        }
    }
    if !status.error.is_empty() {
        let _ = write!(text, "\n  error     {}", status.error);
    }
    println!("{text}");
    Ok(())
}

// --- verify -----------------------------------------------------------------

/// Check the projection against a fresh fold of the log.
///
/// The projector folds the event log again in memory (never touching its
/// live store) up to the positions its store and each replica named say
/// they have applied, and compares, per partition, an order-independent
/// digest of all states. Equal digests mean equal stores. On a mismatch it
/// names the patients whose states differ and shows, field by field, how
/// the first one differs; the command then exits non-zero.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// Also check the query replica whose admin API is at HOST:PORT (its
    /// --admin-listen, default 127.0.0.1:50054); repeat for more
    #[arg(long = "replica", value_name = "HOST:PORT")]
    replicas: Vec<String>,
    /// Most patients named per store that disagrees
    #[arg(long, default_value_t = 10)]
    max_differences: u32,
    /// Print the report as JSON (baton.admin.v1.VerifyReport)
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    admin: AdminAddress,
}

#[allow(clippy::print_stdout)]
pub(crate) async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.admin.address).await?;
    let mut stream = client
        .verify(VerifyRequest {
            replicas: args.replicas.clone(),
            max_differences: args.max_differences,
        })
        .await?
        .into_inner();
    let bar = (!args.json).then(|| {
        let bar = ProgressBar::new(1);
        bar.set_style(
            ProgressStyle::with_template(
                "folding [{bar:40}] {human_pos}/{human_len} records  {per_sec}  eta {eta}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar
    });
    let mut report = None;
    while let Some(update) = stream.message().await? {
        match update.update {
            Some(verify_update::Update::Progress(progress)) => {
                if let Some(bar) = &bar {
                    bar.set_length(progress.records_total.max(1));
                    bar.set_position(progress.records_done);
                }
            }
            Some(verify_update::Update::Report(done)) => report = Some(done),
            None => {}
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = report.context("the admin API ended the verification without a report")?;
    if args.json {
        println!("{}", json(&report)?);
    } else {
        print!("{}", render_report(&report));
    }
    if !report.equal {
        anyhow::bail!("the stores disagree with a fresh fold of the log");
    }
    Ok(())
}

fn render_report(report: &VerifyReport) -> String {
    let mut text = format!(
        "Folded {} records in {:.1} s ({:.0}/s).\n",
        report.records_folded,
        report.seconds,
        report.records_folded as f64 / report.seconds.max(1e-3)
    );
    for store in &report.stores {
        let _ = writeln!(
            text,
            "\n{} (generation {}): {}",
            store.name,
            store.generation,
            if store.equal { "EQUAL" } else { "DIFFERS" }
        );
        let _ = writeln!(
            text,
            "  {:>9}  {:>10}  {:>8}  {:<16}  {:<16}  result",
            "partition", "position", "states", "digest", "fold"
        );
        for partition in &store.partitions {
            let _ = writeln!(
                text,
                "  {:>9}  {:>10}  {:>8}  {:<16}  {:<16}  {}",
                partition.partition,
                partition.position,
                partition.states,
                short_hex(&partition.digest),
                short_hex(&partition.expected_digest),
                if partition.equal {
                    "equal".to_owned()
                } else {
                    format!("DIFFERS (fold: {} states)", partition.expected_states)
                }
            );
        }
        if !store.differing_patients.is_empty() {
            let _ = writeln!(
                text,
                "  patients whose states differ: {}",
                store.differing_patients.join(", ")
            );
        }
        for line in &store.diff {
            let _ = writeln!(text, "    {line}");
        }
        if !store.error.is_empty() {
            let _ = writeln!(text, "  error: {}", store.error);
        }
    }
    text
}

fn short_hex(bytes: &[u8]) -> String {
    bytes.iter().take(8).fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

// --- lag --------------------------------------------------------------------

/// Show how far behind the log each store is.
///
/// Per partition of the events topic: the log's end offset, the position
/// the projector has applied (and each replica named), and the lag in
/// events and in seconds (how long the oldest record not yet applied has
/// waited). In a projector group an owner column names the projector
/// (instance id) owning each partition: the projector asked answers for
/// the others from the changelog's latest progress records.
#[derive(Debug, Args)]
pub(crate) struct LagArgs {
    /// Also show the query replica whose admin API is at HOST:PORT; repeat
    /// for more
    #[arg(long = "replica", value_name = "HOST:PORT")]
    replicas: Vec<String>,
    /// Refresh every --interval until Ctrl-C
    #[arg(long)]
    watch: bool,
    /// Seconds between refreshes with --watch
    #[arg(long, default_value_t = 2.0, requires = "watch")]
    interval: f64,
    /// Print each measurement as JSON lines (baton.admin.v1.GetPositionsResponse)
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    admin: AdminAddress,
}

#[allow(clippy::print_stdout)]
pub(crate) async fn lag(args: LagArgs) -> anyhow::Result<()> {
    let mut projector = connect(&args.admin.address).await?;
    let mut replicas = Vec::new();
    for address in &args.replicas {
        replicas.push((address.clone(), connect(address).await?));
    }
    loop {
        let mut measured = vec![(
            args.admin.address.clone(),
            projector
                .get_positions(GetPositionsRequest {})
                .await?
                .into_inner(),
        )];
        for (address, client) in &mut replicas {
            measured.push((
                address.clone(),
                client
                    .get_positions(GetPositionsRequest {})
                    .await
                    .with_context(|| format!("asking the replica at {address}"))?
                    .into_inner(),
            ));
        }
        if args.json {
            for (_, positions) in &measured {
                println!("{}", json(positions)?);
            }
        } else {
            if args.watch {
                // Clear the screen and go home, as `watch` does.
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", render_lag(&measured));
        }
        if !args.watch {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs_f64(args.interval.max(0.2))) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

fn role_name(positions: &GetPositionsResponse) -> &'static str {
    match positions.role() {
        Role::Replica => "replica",
        _ => "projector",
    }
}

fn render_lag(measured: &[(String, GetPositionsResponse)]) -> String {
    let Some((_, first)) = measured.first() else {
        return String::new();
    };
    let mut text = format!("{}\n", first.events_topic);
    // In a projector group: who owns each partition, as the first answer
    // naming one says (a projector names itself for its own).
    let owner_of = |index: usize| -> Option<&str> {
        let named = |p: &PartitionPosition| !p.owner.is_empty();
        measured
            .iter()
            .filter_map(|(_, positions)| positions.partitions.get(index))
            .filter(|p| named(p))
            .max_by_key(|p| p.owned_here)
            .map(|p| p.owner.as_str())
    };
    let grouped = (0..first.partitions.len()).any(|index| owner_of(index).is_some());
    let _ = write!(text, "  {:>9}  {:>10}", "partition", "log end");
    if grouped {
        let _ = write!(text, "  {:>20}", "owner");
    }
    for (address, positions) in measured {
        let _ = write!(
            text,
            "  {:>24}",
            format!("{} {address}", role_name(positions))
        );
    }
    text.push('\n');
    for (index, partition) in first.partitions.iter().enumerate() {
        let _ = write!(
            text,
            "  {:>9}  {:>10}",
            partition.partition, partition.end_offset
        );
        if grouped {
            let _ = write!(text, "  {:>20}", owner_of(index).unwrap_or("-"));
        }
        for (_, positions) in measured {
            let cell = positions.partitions.get(index).map_or_else(
                || "-".to_owned(),
                |p| {
                    if p.lag_events == 0 {
                        format!("{} (caught up)", p.applied)
                    } else {
                        format!("{} (-{}, {:.1}s)", p.applied, p.lag_events, p.lag_seconds)
                    }
                },
            );
            let _ = write!(text, "  {cell:>24}");
        }
        text.push('\n');
    }
    for (address, positions) in measured {
        let behind: u64 = positions.partitions.iter().map(|p| p.lag_events).sum();
        let oldest = positions
            .partitions
            .iter()
            .map(|p| p.lag_seconds)
            .fold(0.0, f64::max);
        let _ = writeln!(
            text,
            "{} {address} (generation {}): {} events behind, oldest waiting {:.1} s",
            role_name(positions),
            positions.generation,
            behind,
            oldest
        );
    }
    text
}

// --- dlq --------------------------------------------------------------------

/// Work the dead letters: records the projector could not apply.
///
/// Each dead letter is the original record, with the reason it could not
/// be applied and where it was read from. Fix the cause (a missing
/// admission arrives, a fixed Baton is deployed), then redrive the letters:
/// their records are appended to the events topic again and applied, or
/// dead-lettered again with the new reason.
#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// List the dead letters, oldest first.
    List(DlqListArgs),
    /// Show one dead letter and its original record (decoded, else in hex).
    Show(DlqShowArgs),
    /// Append chosen dead letters to the events topic again.
    ///
    /// Idempotent: events are deduplicated by id, and letters redriven
    /// before are skipped unless --again. Each redrive is recorded on the
    /// dead-letter topic, and `baton dlq list` shows it.
    Redrive(DlqRedriveArgs),
    /// Hide the dead letters there are now (or below --until) from listing
    /// and redrive.
    ///
    /// The records are not deleted: the log is the record. On the
    /// embedded log a file beside it marks where listing starts; on Kafka
    /// the dead-letter topic keeps them forever and a consumer group's
    /// committed offsets mark the start. Without --yes, says how many it
    /// would purge and purges nothing.
    Purge(DlqPurgeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct DlqListArgs {
    /// Only letters whose reason contains this text
    #[arg(long)]
    reason: Option<String>,
    /// At most this many
    #[arg(long, default_value_t = 1000)]
    limit: u32,
    /// One baton.admin.v1.DeadLetter per line, as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    admin: AdminAddress,
}

#[derive(Debug, Args)]
pub(crate) struct DlqShowArgs {
    /// The letter, as PARTITION/OFFSET of the dead-letter topic (from `baton dlq list`)
    #[arg(value_parser = parse_letter)]
    letter: (u32, u64),
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    admin: AdminAddress,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).multiple(true).args(["all", "partition", "reason"])))]
pub(crate) struct DlqRedriveArgs {
    /// Every dead letter
    #[arg(long)]
    all: bool,
    /// Letters of this partition of the dead-letter topic (with --from, --until)
    #[arg(long)]
    partition: Option<u32>,
    /// First offset, with --partition
    #[arg(long, default_value_t = 0, requires = "partition")]
    from: u64,
    /// Offset to stop before, with --partition (default: the end)
    #[arg(long, requires = "partition")]
    until: Option<u64>,
    /// Letters whose reason contains this text
    #[arg(long)]
    reason: Option<String>,
    /// Include letters redriven before
    #[arg(long)]
    again: bool,
    /// Say what would be redriven, and append nothing
    #[arg(long)]
    dry_run: bool,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    admin: AdminAddress,
}

#[derive(Debug, Args)]
pub(crate) struct DlqPurgeArgs {
    /// Purge only letters below this offset in each partition
    #[arg(long)]
    until: Option<u64>,
    /// Do it (without, only say how many would be purged)
    #[arg(long)]
    yes: bool,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    admin: AdminAddress,
}

fn parse_letter(text: &str) -> Result<(u32, u64), String> {
    let invalid =
        || format!("{text:?} is not PARTITION/OFFSET, e.g. 0/17 (as `baton dlq list` shows)");
    let (partition, offset) = text.split_once('/').ok_or_else(invalid)?;
    Ok((
        partition.trim().parse().map_err(|_| invalid())?,
        offset.trim().parse().map_err(|_| invalid())?,
    ))
}

#[allow(clippy::print_stdout)]
pub(crate) async fn dlq(command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List(args) => {
            let mut client = connect(&args.admin.address).await?;
            let mut letters = Vec::new();
            let mut page_token = String::new();
            while (letters.len() as u32) < args.limit {
                let page = client
                    .list_dead_letters(ListDeadLettersRequest {
                        reason_contains: args.reason.clone().unwrap_or_default(),
                        limit: (args.limit - letters.len() as u32).min(1000),
                        page_token: page_token.clone(),
                    })
                    .await?
                    .into_inner();
                letters.extend(page.dead_letters);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            if args.json {
                for letter in &letters {
                    println!("{}", json(letter)?);
                }
            } else {
                print!("{}", render_letters(&letters));
            }
        }
        DlqCommand::Show(args) => {
            let mut client = connect(&args.admin.address).await?;
            let letter = client
                .get_dead_letter(GetDeadLetterRequest {
                    partition: args.letter.0,
                    offset: args.letter.1,
                })
                .await?
                .into_inner();
            if args.json {
                println!("{}", json(&letter)?);
            } else {
                print!("{}", render_letter(&letter));
            }
        }
        DlqCommand::Redrive(args) => {
            let mut client = connect(&args.admin.address).await?;
            let response = client
                .redrive_dead_letters(RedriveDeadLettersRequest {
                    selection: Some(DeadLetterSelection {
                        all: args.all,
                        partition: args.partition,
                        from_offset: args.from,
                        until_offset: args.until.unwrap_or(0),
                        reason_contains: args.reason.clone().unwrap_or_default(),
                    }),
                    dry_run: args.dry_run,
                    again: args.again,
                    requested_by: std::env::var("USER").unwrap_or_default(),
                })
                .await?
                .into_inner();
            if args.json {
                println!("{}", json(&response)?);
            } else {
                let verb = if args.dry_run {
                    "would redrive"
                } else {
                    "redriven"
                };
                println!(
                    "{} selected, {} {verb}, {} skipped as redriven before (--again includes them)",
                    response.selected,
                    if args.dry_run {
                        response.dead_letters.len() as u64
                    } else {
                        response.redriven
                    },
                    response.already_redriven
                );
                print!("{}", render_letters(&response.dead_letters));
                if !response.consistency_token.is_empty() {
                    println!(
                        "Read their effect with: baton state get <patient> --consistency-token {}",
                        response.consistency_token
                    );
                }
            }
        }
        DlqCommand::Purge(args) => {
            let mut client = connect(&args.admin.address).await?;
            let response = client
                .purge_dead_letters(PurgeDeadLettersRequest {
                    until_offset: args.until.unwrap_or(0),
                    dry_run: !args.yes,
                })
                .await?
                .into_inner();
            if args.json {
                println!("{}", json(&response)?);
            } else if args.yes {
                println!(
                    "{} dead letters purged: {}.",
                    response.purged, response.effect
                );
            } else {
                println!(
                    "{} dead letters would be purged: {}.\nRun again with --yes to purge them.",
                    response.purged, response.effect
                );
            }
            if !args.yes {
                anyhow::bail!("nothing purged: add --yes");
            }
        }
    }
    Ok(())
}

fn render_letters(letters: &[DeadLetter]) -> String {
    if letters.is_empty() {
        return "No dead letters.\n".to_owned();
    }
    let mut text = format!(
        "{:<10}  {:<20}  {:<14}  {:<16}  reason\n",
        "letter", "dead-lettered", "source", "patient"
    );
    for letter in letters {
        let at = letter
            .dead_lettered_at
            .as_ref()
            .map_or_else(String::new, |t| crate::render::when(Some(t)));
        let mut reason = letter.reason.clone();
        if let Some(last) = letter.redriven.last() {
            let _ = write!(
                reason,
                "  [redriven {}x, last to {}/{}]",
                letter.redriven.len(),
                last.partition,
                last.offset
            );
        }
        let _ = writeln!(
            text,
            "{:<10}  {:<20}  {:<14}  {:<16}  {}",
            format!("{}/{}", letter.partition, letter.offset),
            at,
            format!("{}/{}", letter.source_partition, letter.source_offset),
            letter.patient_key,
            reason
        );
    }
    let _ = writeln!(text, "{} dead letters", letters.len());
    text
}

fn render_letter(letter: &DeadLetter) -> String {
    let mut text = format!(
        "dead letter {}/{}\n  reason    {}\n  source    {} partition {} offset {}\n  event id  {}\n  patient   {}\n",
        letter.partition,
        letter.offset,
        letter.reason,
        letter.source_topic,
        letter.source_partition,
        letter.source_offset,
        letter.event_id,
        letter.patient_key
    );
    for redriven in &letter.redriven {
        let _ = writeln!(
            text,
            "  redriven  to {}/{}{}",
            redriven.partition,
            redriven.offset,
            redriven
                .at
                .as_ref()
                .map(|t| format!(" at {}", crate::render::when(Some(t))))
                .unwrap_or_default()
        );
    }
    if letter.event_json.is_empty() {
        let _ = writeln!(
            text,
            "  the record does not decode ({}); its {} bytes:",
            letter.decode_error,
            letter.value.len()
        );
        text.push_str(&hex_dump(&letter.value));
    } else {
        let pretty = serde_json::from_str::<serde_json::Value>(&letter.event_json)
            .and_then(|value| serde_json::to_string_pretty(&value))
            .unwrap_or_else(|_| letter.event_json.clone());
        let _ = writeln!(text, "  event:\n{pretty}");
    }
    text
}

/// Sixteen bytes a line: offset, hex, and the printable ones.
fn hex_dump(bytes: &[u8]) -> String {
    let mut text = String::new();
    for (line, chunk) in bytes.chunks(16).enumerate() {
        let _ = write!(text, "    {:08x}  ", line * 16);
        for index in 0..16 {
            match chunk.get(index) {
                Some(byte) => {
                    let _ = write!(text, "{byte:02x} ");
                }
                None => text.push_str("   "),
            }
        }
        text.push(' ');
        for &byte in chunk {
            text.push(if byte.is_ascii_graphic() || byte == b' ' {
                byte as char
            } else {
                '.'
            });
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_are_named_partition_slash_offset() {
        assert_eq!(parse_letter("0/17").unwrap(), (0, 17));
        assert!(parse_letter("17").unwrap_err().contains("PARTITION/OFFSET"));
        assert!(parse_letter("a/1").is_err());
    }

    #[test]
    fn a_hex_dump_shows_offsets_bytes_and_printable_text() {
        let dump = hex_dump(b"\xff\x00baton care events!");
        let lines: Vec<&str> = dump.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("    00000000  ff 00 62 61"), "{dump}");
        assert!(lines[0].ends_with("..baton care eve"), "{dump}");
        assert!(lines[1].starts_with("    00000010  6e 74 73 21"), "{dump}");
    }

    fn position(partition: u32, applied: u64, owner: &str, owned_here: bool) -> PartitionPosition {
        PartitionPosition {
            partition,
            end_offset: 10,
            applied,
            lag_events: 10 - applied,
            lag_seconds: 0.0,
            owner: owner.into(),
            owned_here,
        }
    }

    #[test]
    fn a_projector_group_shows_the_owner_of_each_partition() {
        let answer = |partitions| GetPositionsResponse {
            role: Role::Projector.into(),
            events_topic: "baton.care-events.v1".into(),
            partitions,
            ..Default::default()
        };
        let grouped = render_lag(&[(
            "127.0.0.1:50053".into(),
            answer(vec![
                position(0, 10, "projector-0", true),
                position(1, 8, "projector-1", false),
                position(2, 0, "", false),
            ]),
        )]);
        let rows: Vec<&str> = grouped.lines().collect();
        assert!(rows[1].contains("owner"), "{grouped}");
        assert!(
            rows[2].contains("projector-0") && rows[2].contains("10 (caught up)"),
            "{grouped}"
        );
        assert!(
            rows[3].contains("projector-1") && rows[3].contains("8 (-2"),
            "{grouped}"
        );
        assert!(
            rows[4].trim_start().starts_with("2") && rows[4].contains(" - "),
            "{grouped}"
        );

        let alone = render_lag(&[(
            "127.0.0.1:50053".into(),
            answer(vec![position(0, 10, "", true)]),
        )]);
        assert!(
            !alone.contains("owner"),
            "no owner column on its own: {alone}"
        );
    }
}
