//! `baton audit`: who read a patient's record, or what a client read, from
//! the audit log (through the admin API's `ListAuditRecords`).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use baton_proto::admin::v1::ListAuditRecordsRequest;
use baton_proto::audit::v1::{AssertedBy, AuditRecord, Authentication, Outcome};
use clap::Args;
use prost_types::Timestamp;

use crate::ops::AdminAddress;

/// Who read a patient's record, when and why — or what a client read.
///
/// Every read of patient data (GetCareState, GetCareStateAsOf,
/// GetTimeline, each patient of a ListCohort page or a WatchCohort stream)
/// and every refused call is a record in the audit log, with the client,
/// how it proved who it is, the end user, role and purpose it asserted
/// (x-baton-user, x-baton-role, x-baton-purpose, or its token's claims),
/// and the outcome. Oldest first.
///
///   baton audit --patient 943 476 5919
///   baton audit --patient 9434765919 --since 7d
///   baton audit --client frailty-board --since 2026-03-01 --json
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
#[command(group(clap::ArgGroup::new("whose").required(true).multiple(true).args(["patient", "client"])))]
pub(crate) struct AuditArgs {
    /// The patient: NHS number (spaces allowed), patient key or AUTHORITY:LOCAL-ID
    #[arg(long, num_args = 1.., value_delimiter = None)]
    patient: Option<Vec<String>>,
    /// The client id, as the clients table names it
    #[arg(long)]
    client: Option<String>,
    /// Only records since: RFC 3339, a date (2026-03-02), or a span back from now (90m, 24h, 7d)
    #[arg(long, value_parser = parse_since)]
    since: Option<Timestamp>,
    /// At most this many records
    #[arg(long, default_value_t = 1000)]
    limit: u32,
    /// One baton.audit.v1.AuditRecord per line, as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    admin: AdminAddress,
}

/// A span back from now (`90m`, `24h`, `7d`), else a time as `baton
/// timeline --from` takes it.
fn parse_since(text: &str) -> Result<Timestamp, String> {
    let text = text.trim();
    let span = text
        .strip_suffix('d')
        .map(|n| (n, 86_400))
        .or_else(|| text.strip_suffix('h').map(|n| (n, 3_600)))
        .or_else(|| text.strip_suffix('m').map(|n| (n, 60)));
    if let Some((number, unit)) = span
        && let Ok(number) = number.parse::<u64>()
    {
        let back = Duration::from_secs(number.saturating_mul(unit));
        let since = SystemTime::now()
            .checked_sub(back)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        return Ok(Timestamp::from(since));
    }
    crate::read::parse_time(text)
        .map_err(|problem| format!("{problem}, or a span back from now such as 90m, 24h or 7d"))
}

#[allow(clippy::print_stdout)]
pub(crate) async fn audit(args: AuditArgs) -> anyhow::Result<()> {
    let mut client = crate::ops::connect(&args.admin.address).await?;
    let patient = args
        .patient
        .map(|words| words.join(" "))
        .unwrap_or_default();
    let mut records = Vec::new();
    let mut scanned = 0;
    let mut page_token = String::new();
    while (records.len() as u32) < args.limit {
        let page = client
            .list_audit_records(ListAuditRecordsRequest {
                patient: patient.clone(),
                client_id: args.client.clone().unwrap_or_default(),
                since: args.since,
                limit: (args.limit - records.len() as u32).min(10_000),
                page_token: page_token.clone(),
            })
            .await
            .context("listing audit records")?
            .into_inner();
        scanned += page.scanned;
        records.extend(page.records);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if args.json {
        for record in &records {
            println!("{}", crate::read::json_line(record)?);
        }
    } else {
        print!("{}", render(&records, scanned));
    }
    Ok(())
}

fn render(records: &[AuditRecord], scanned: u64) -> String {
    if records.is_empty() {
        return format!("No audit records match ({scanned} read).\n");
    }
    let mut text = format!(
        "{:<20}  {:<18}  {:<12}  {:<16}  {:<8}  {:<14}  who (user, role, purpose)\n",
        "at", "client", "rpc", "patient", "outcome", "authenticated"
    );
    for record in records {
        let outcome = match Outcome::try_from(record.outcome) {
            Ok(Outcome::Read) => "read",
            Ok(Outcome::Denied) => "denied",
            Ok(Outcome::NotFound) => "unknown",
            _ => "?",
        };
        let authenticated = match Authentication::try_from(record.authenticated_by) {
            Ok(Authentication::ClientCertificate) => "certificate",
            Ok(Authentication::BearerToken) => "token",
            _ => "none",
        };
        let asserted = match AssertedBy::try_from(record.asserted_by) {
            Ok(AssertedBy::Token | AssertedBy::Metadata) => format!(
                "{}, {}, {}{}",
                dash(&record.user),
                dash(&record.role),
                dash(&record.purpose),
                if record.asserted_by == AssertedBy::Token as i32 {
                    " (token)"
                } else {
                    ""
                }
            ),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            text,
            "{:<20}  {:<18}  {:<12}  {:<16}  {:<8}  {:<14}  {}",
            record.at.as_ref().map_or_else(
                || "-".to_owned(),
                |at| at
                    .to_string()
                    .get(..19)
                    .unwrap_or_default()
                    .replace('T', " "),
            ),
            dash(&record.client_id),
            record.rpc,
            dash(&record.patient_key),
            outcome,
            authenticated,
            asserted
        );
        if !record.detail.is_empty() {
            let _ = writeln!(text, "{:<20}  {}", "", record.detail);
        }
    }
    let _ = writeln!(text, "{} records ({scanned} read)", records.len());
    text
}

fn dash(text: &str) -> &str {
    if text.is_empty() { "-" } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_spans_dates_and_times_and_names_the_forms() {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let day = parse_since("1d").unwrap();
        assert!((now - 86_400 - day.seconds).abs() <= 5);
        assert_eq!(parse_since("2026-03-02").unwrap().seconds, 1_772_409_600);
        let wrong = parse_since("yesterday").unwrap_err();
        assert!(
            wrong.contains("RFC 3339") && wrong.contains("24h"),
            "{wrong}"
        );
    }

    #[test]
    fn records_render_one_a_line_with_who_and_why() {
        let record = AuditRecord {
            client_id: "frailty-board".into(),
            rpc: "GetCareState".into(),
            patient_key: "9434765919".into(),
            outcome: Outcome::Read as i32,
            authenticated_by: Authentication::BearerToken as i32,
            user: "555123456789".into(),
            role: "R8000".into(),
            purpose: "direct care".into(),
            asserted_by: AssertedBy::Metadata as i32,
            ..Default::default()
        };
        let text = render(&[record], 7);
        assert!(
            text.contains("frailty-board") && text.contains("555123456789, R8000, direct care"),
            "{text}"
        );
        assert!(text.ends_with("1 records (7 read)\n"), "{text}");
        assert!(render(&[], 3).contains("No audit records match (3 read)"));
    }
}
