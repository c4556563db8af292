//! `baton state get` and `baton timeline`: one patient through the query
//! API, now, as of a time, or event by event.

use std::str::FromStr;

use baton_proto::NamedMessage;
use baton_proto::events::v1::LocalIdentifier;
use baton_proto::query::v1::care_state_query_client::CareStateQueryClient;
use baton_proto::query::v1::patient_ref::Ref;
use baton_proto::query::v1::{
    GetCareStateAsOfRequest, GetCareStateRequest, GetTimelineRequest, PatientRef, TimeAxis,
};
use baton_proto::state::v1::PatientCareState;
use clap::{Args, Subcommand, ValueEnum};
use prost_types::Timestamp;
use tonic::Code;

use crate::render;

/// Read patients' care state.
#[derive(Debug, Subcommand)]
pub(crate) enum StateCommand {
    /// Show one patient's care state: now, or as it was at a time.
    ///
    /// PATIENT is an NHS number (9434765919 or 943 476 5919), a local
    /// identifier AUTHORITY:VALUE (RXX:H123456), or a patient key.
    ///
    /// With --as-of, the state as it was then: on the clinical axis (the
    /// default) what was true at that time as Baton knows it now, with
    /// corrections recorded later taken into account; on the recorded axis
    /// what Baton's records said at that time.
    Get(GetArgs),
}

#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    /// NHS number, AUTHORITY:VALUE local identifier, or patient key
    patient: String,
    /// Print the state as JSON (the protobuf JSON mapping)
    #[arg(long)]
    json: bool,
    /// Wait until the projection has applied this token (from `baton publish`)
    #[arg(long)]
    consistency_token: Option<String>,
    /// The state as it was at this time: RFC 3339 (2026-03-02T10:00:00Z)
    /// or a date (2026-03-02, midnight UTC)
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    as_of: Option<Timestamp>,
    /// Which time --as-of means
    #[arg(long, value_enum, default_value_t = Axis::Clinical, requires = "as_of")]
    axis: Axis,
    #[command(flatten)]
    query: QueryAddress,
}

/// The time axis of `--as-of`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Axis {
    /// When things happened (occurred_at): what was true then
    Clinical,
    /// When they were recorded (recorded_at): what the records said then
    Recorded,
}

/// Show a patient's events in clinical order, corrections marked.
///
/// Each line is one event applied to the patient's state (or to a record
/// merged into it): when it happened, what it was, and when it was
/// recorded. An event entered in error is marked CANCELLED with the
/// correction that voided it; an event recorded after something that
/// happened later is marked LATE.
#[derive(Debug, Args)]
pub(crate) struct TimelineArgs {
    /// NHS number, AUTHORITY:VALUE local identifier, or patient key
    patient: String,
    /// Only events that happened at or after this time (RFC 3339 or a date)
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    from: Option<Timestamp>,
    /// Only events that happened at or before this time (RFC 3339 or a date)
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    to: Option<Timestamp>,
    /// Print one JSON timeline entry per line
    #[arg(long)]
    json: bool,
    /// Wait until the projection has applied this token (from `baton publish`)
    #[arg(long)]
    consistency_token: Option<String>,
    #[command(flatten)]
    query: QueryAddress,
}

/// RFC 3339, or a date meaning its midnight in UTC.
pub(crate) fn parse_time(text: &str) -> Result<Timestamp, String> {
    let text = text.trim();
    let with_time = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_owned()
    };
    Timestamp::from_str(&with_time).map_err(|_| {
        format!("{text:?} is not a time: expected RFC 3339 (2026-03-02T10:00:00Z) or a date (2026-03-02)")
    })
}

/// One message as one line of the protobuf JSON mapping.
pub(crate) fn json_line<M: NamedMessage>(message: &M) -> anyhow::Result<String> {
    Ok(serde_json::to_string(&baton_proto::json::to_json_value(
        message,
    )?)?)
}

#[derive(Debug, Clone, Args)]
pub(crate) struct QueryAddress {
    /// Address of the query API: HOST:PORT, or a URL
    #[arg(
        long = "query",
        env = "BATON_QUERY",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:50052"
    )]
    address: String,
}

pub(crate) async fn connect(
    query: &QueryAddress,
) -> anyhow::Result<CareStateQueryClient<crate::endpoint::Transport>> {
    let client =
        CareStateQueryClient::new(crate::endpoint::connect(&query.address, "the query API").await?);
    Ok(client.max_decoding_message_size(64 * 1024 * 1024))
}

/// What the user typed, as the query API's patient reference.
pub(crate) fn patient_ref(text: &str) -> PatientRef {
    let text = text.trim();
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let reference = if compact.len() == 10 && compact.bytes().all(|b| b.is_ascii_digit()) {
        Ref::NhsNumber(compact)
    } else if let Some((authority, value)) = text.split_once(':') {
        Ref::LocalId(LocalIdentifier {
            authority: authority.to_owned(),
            value: value.to_owned(),
        })
    } else {
        Ref::PatientKey(text.to_owned())
    };
    PatientRef {
        r#ref: Some(reference),
    }
}

#[allow(clippy::print_stdout)]
pub(crate) async fn state(command: StateCommand) -> anyhow::Result<()> {
    let StateCommand::Get(args) = command;
    let mut client = connect(&args.query).await?;
    let patient = Some(patient_ref(&args.patient));
    let consistency_token = args.consistency_token.unwrap_or_default();
    let state = match &args.as_of {
        None => client
            .get_care_state(GetCareStateRequest {
                patient,
                consistency_token,
            })
            .await
            .map_err(not_found_is_no_events)?
            .into_inner()
            .state
            .unwrap_or_default(),
        Some(time) => {
            let axis = match args.axis {
                Axis::Clinical => TimeAxis::Clinical,
                Axis::Recorded => TimeAxis::Recorded,
            };
            let answer = client
                .get_care_state_as_of(GetCareStateAsOfRequest {
                    patient,
                    time: Some(*time),
                    axis: axis as i32,
                    consistency_token,
                })
                .await
                .map_err(not_found_is_no_events)?
                .into_inner();
            match answer.state {
                Some(state) => state,
                None => {
                    let what = match args.axis {
                        Axis::Clinical => "had happened",
                        Axis::Recorded => "had been recorded",
                    };
                    println!("Nothing about {} {what} by {time}.", args.patient.trim());
                    return Ok(());
                }
            }
        }
    };
    if args.json {
        println!("{}", pretty_json(&state)?);
        return Ok(());
    }
    if let Some(time) = &args.as_of {
        println!(
            "As of {time} ({} time), folded from {} events:",
            match args.axis {
                Axis::Clinical => "clinical",
                Axis::Recorded => "recorded",
            },
            state.version
        );
    }
    print!("{}", render::care_state(&state));
    Ok(())
}

#[allow(clippy::print_stdout)]
pub(crate) async fn timeline(args: TimelineArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.query).await?;
    let answer = client
        .get_timeline(GetTimelineRequest {
            patient: Some(patient_ref(&args.patient)),
            from: args.from,
            to: args.to,
            consistency_token: args.consistency_token.unwrap_or_default(),
        })
        .await
        .map_err(not_found_is_no_events)?
        .into_inner();
    if args.json {
        for entry in &answer.entries {
            println!("{}", json_line(entry)?);
        }
        return Ok(());
    }
    print!("{}", render::timeline(&answer.patient_key, &answer.entries));
    Ok(())
}

fn not_found_is_no_events(status: tonic::Status) -> anyhow::Error {
    if status.code() == Code::NotFound {
        anyhow::anyhow!(
            "{}: Baton has no events about this patient",
            status.message()
        )
    } else {
        anyhow::anyhow!("{}", status.message())
    }
}

fn pretty_json(state: &PatientCareState) -> anyhow::Result<String> {
    let value = baton_proto::json::to_json_value(state)?;
    Ok(serde_json::to_string_pretty(&value)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patients_are_named_as_people_write_them() {
        let nhs = |text| match patient_ref(text).r#ref {
            Some(Ref::NhsNumber(n)) => n,
            other => panic!("{other:?}"),
        };
        assert_eq!(nhs("943 476 5919"), "9434765919");
        assert!(
            matches!(patient_ref("RXX:H123").r#ref, Some(Ref::LocalId(l)) if l.authority == "RXX" && l.value == "H123")
        );
        assert!(matches!(patient_ref("abc").r#ref, Some(Ref::PatientKey(_))));
    }

    #[test]
    fn times_are_rfc_3339_or_dates() {
        assert_eq!(parse_time("2026-03-02").unwrap().seconds, 1_772_409_600);
        assert_eq!(
            parse_time("2026-03-02T10:00:00Z").unwrap().seconds,
            1_772_445_600
        );
        assert!(parse_time("yesterday").unwrap_err().contains("RFC 3339"));
    }
}
