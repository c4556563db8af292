//! `baton publish`: care events written as JSON lines (the protobuf JSON
//! mapping of `baton.events.v1.CareEvent`), published through the ingest API.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::Context;
use baton_log::ConsistencyToken;
use baton_proto::events::v1::CareEvent;
use baton_proto::ingest::v1::PublishRequest;
use baton_proto::ingest::v1::care_event_ingest_client::CareEventIngestClient;
use clap::Args;
use tonic_types::StatusExt;

/// Publish care events from a JSON-lines file.
///
/// Each line is one baton.events.v1.CareEvent in the protobuf JSON mapping,
/// e.g. {"eventId": "…", "patient": {"nhsNumber": "9434765919"}, "admitted": {…}}.
/// Blank lines are skipped. Events go in batches; a batch with an invalid
/// event is refused whole, and every problem is reported with its line.
/// Publishing the same events again is harmless: they are deduplicated by
/// event id.
#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// JSON-lines file of care events, or - for standard input
    file: PathBuf,
    /// Address of the ingest API: HOST:PORT, or a URL
    #[arg(
        long,
        env = "BATON_INGEST",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:50051"
    )]
    ingest: String,
    /// Events per Publish call
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    batch_size: u32,
    /// Check the events without writing them
    #[arg(long)]
    validate_only: bool,
}

/// One event read from a file, with where it came from.
#[derive(Debug)]
pub(crate) struct LineEvent {
    line: usize,
    event: CareEvent,
}

pub(crate) async fn connect(
    address: &str,
) -> anyhow::Result<CareEventIngestClient<crate::endpoint::Transport>> {
    let client =
        CareEventIngestClient::new(crate::endpoint::connect(address, "the ingest API").await?);
    Ok(client.max_encoding_message_size(64 * 1024 * 1024))
}

#[allow(clippy::print_stdout)]
pub(crate) async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let events = read_events(&args.file)?;
    if events.is_empty() {
        anyhow::bail!("{} holds no events", args.file.display());
    }
    let mut client = connect(&args.ingest).await?;
    let mut token = ConsistencyToken::empty();
    let mut patients = std::collections::BTreeSet::new();
    for batch in events.chunks(args.batch_size as usize) {
        let published = publish_batch(&mut client, batch, args.validate_only).await?;
        token.merge(&published.consistency_token.parse().unwrap_or_default());
        patients.extend(published.events.into_iter().map(|e| e.patient_key));
    }
    let verb = if args.validate_only {
        "validated"
    } else {
        "published"
    };
    println!(
        "{verb} {} {} about {} {}",
        events.len(),
        plural(events.len(), "event", "events"),
        patients.len(),
        plural(patients.len(), "patient", "patients")
    );
    if !args.validate_only {
        println!("consistency token: {token}");
        println!(
            "(pass it to `baton state get <patient> --consistency-token {token}` to read your writes)"
        );
    }
    Ok(())
}

fn plural<'a>(count: usize, one: &'a str, many: &'a str) -> &'a str {
    if count == 1 { one } else { many }
}

/// Publishes one batch; a refusal becomes an error listing each problem
/// against the line of the event it concerns.
pub(crate) async fn publish_batch(
    client: &mut CareEventIngestClient<crate::endpoint::Transport>,
    batch: &[LineEvent],
    validate_only: bool,
) -> anyhow::Result<baton_proto::ingest::v1::PublishResponse> {
    let request = PublishRequest {
        events: batch.iter().map(|e| e.event.clone()).collect(),
        validate_only,
    };
    match client.publish(request).await {
        Ok(response) => Ok(response.into_inner()),
        Err(status) => Err(explain(&status, batch)),
    }
}

fn explain(status: &tonic::Status, batch: &[LineEvent]) -> anyhow::Error {
    let Some(bad_request) = status.get_details_bad_request() else {
        return anyhow::anyhow!("{:?}: {}", status.code(), status.message());
    };
    let mut lines = vec![format!(
        "the batch of lines {}–{} was refused, nothing in it was written:",
        batch.first().map_or(0, |e| e.line),
        batch.last().map_or(0, |e| e.line)
    )];
    for violation in &bad_request.field_violations {
        let line = event_index(&violation.field)
            .and_then(|i| batch.get(i))
            .map_or_else(String::new, |e| format!("line {}: ", e.line));
        let field = violation
            .field
            .split_once("].")
            .map_or(violation.field.as_str(), |(_, f)| f);
        lines.push(format!("  {line}{field}: {}", violation.description));
    }
    anyhow::anyhow!(lines.join("\n"))
}

/// `events[12].patient` → 12.
fn event_index(field: &str) -> Option<usize> {
    field
        .strip_prefix("events[")?
        .split_once(']')?
        .0
        .parse()
        .ok()
}

/// Reads JSON lines, reporting every line that is not a care event.
pub(crate) fn read_events(path: &PathBuf) -> anyhow::Result<Vec<LineEvent>> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Box::new(std::io::BufReader::new(file))
    };
    let mut events = Vec::new();
    let mut problems = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let number = index + 1;
        let line =
            line.with_context(|| format!("cannot read line {number} of {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        match baton_proto::json::from_json::<CareEvent>(&line) {
            Ok(event) => events.push(LineEvent {
                line: number,
                event,
            }),
            Err(error) => problems.push(format!("  line {number}: {error}")),
        }
    }
    if !problems.is_empty() {
        anyhow::bail!(
            "{} is not a file of care events in the JSON mapping (one baton.events.v1.CareEvent per line); nothing was published:\n{}",
            path.display(),
            problems.join("\n")
        );
    }
    Ok(events)
}

impl LineEvent {
    pub(crate) fn new(line: usize, event: CareEvent) -> Self {
        Self { line, event }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_with_problems_are_all_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, "{\"eventId\": \"x\"}\n\n{\"nope\": 1}\nnot json\n").unwrap();
        let error = read_events(&path).unwrap_err().to_string();
        assert!(error.contains("line 3"), "{error}");
        assert!(error.contains("line 4"), "{error}");
        assert!(!error.contains("line 1:"), "{error}");
    }

    #[test]
    fn the_example_file_publishes_and_projects_cleanly() {
        let path =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/events.jsonl");
        let events = read_events(&path).unwrap();
        assert_eq!(events.len(), 12);
        let valid: Vec<_> = events
            .into_iter()
            .map(|e| baton_care::ValidEvent::from_producer(e.event).unwrap())
            .collect();
        let mut state = baton_care::new_state(valid[0].key());
        let mut applied = baton_care::AppliedIds::new();
        for (offset, event) in (0..).zip(&valid) {
            let position = baton_care::LogPosition::new(0, offset);
            baton_care::apply(&mut state, &mut applied, event, position).unwrap();
        }
        assert_eq!(
            state.setting(),
            baton_proto::state::v1::CareSetting::VirtualWard
        );
        let encounter = &state.past_encounters[0];
        // The cancelled transfer to WARD-7 is gone; the corrected one stands.
        let wards: Vec<_> = encounter
            .location_history
            .iter()
            .map(|stay| stay.location.as_ref().unwrap().point_of_care.as_str())
            .collect();
        assert_eq!(wards, vec!["AMU", "ELDERLY-CARE"]);
    }

    #[test]
    fn violations_point_at_their_event() {
        assert_eq!(event_index("events[12].patient.nhs_number"), Some(12));
        assert_eq!(event_index("events"), None);
    }
}
