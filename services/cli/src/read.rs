//! `baton state get` and `baton cohort`: reading through the query API.

use anyhow::Context;
use baton_proto::events::v1::LocalIdentifier;
use baton_proto::query::v1::care_state_query_client::CareStateQueryClient;
use baton_proto::query::v1::patient_ref::Ref;
use baton_proto::query::v1::{CohortFilter, GetCareStateRequest, ListCohortRequest, PatientRef};
use baton_proto::state::v1::PatientCareState;
use clap::{Args, Subcommand};
use tonic::Code;
use tonic::transport::Channel;

use crate::render;

/// Read patients' care state.
#[derive(Debug, Subcommand)]
pub(crate) enum StateCommand {
    /// Show one patient's current care state.
    ///
    /// PATIENT is an NHS number (9434765919 or 943 476 5919), a local
    /// identifier AUTHORITY:VALUE (RXX:H123456), or a patient key.
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
    #[command(flatten)]
    query: QueryAddress,
}

#[derive(Debug, Args)]
pub(crate) struct QueryAddress {
    /// Address of the query API
    #[arg(
        long = "query",
        env = "BATON_QUERY",
        default_value = "http://127.0.0.1:50052"
    )]
    address: String,
}

/// List the patients in a cohort: who is where.
///
/// With no filter, every current patient. Examples:
///   baton cohort --setting virtual-ward
///   baton cohort --setting hospital --organisation RXX --ward WARD-7
#[derive(Debug, Args)]
pub(crate) struct CohortArgs {
    /// Care setting: community, hospital, hospital-leave, virtual-ward,
    /// care-home, community-hospital, other-hospital, hospice, deceased
    #[arg(long, value_parser = parse_setting)]
    setting: Option<baton_proto::state::v1::CareSetting>,
    /// Organisation (ODS code) of the setting, e.g. RXX
    #[arg(long)]
    organisation: Option<String>,
    /// Ward: a hospital ward (point of care) or a virtual ward's id
    #[arg(long)]
    ward: Option<String>,
    /// Show at most this many patients (default: all)
    #[arg(long)]
    limit: Option<usize>,
    /// Print one JSON state per line instead of a table
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    query: QueryAddress,
}

fn parse_setting(text: &str) -> Result<baton_proto::state::v1::CareSetting, String> {
    baton_care::cohort::parse_setting(text)
}

async fn connect(query: &QueryAddress) -> anyhow::Result<CareStateQueryClient<Channel>> {
    let client = CareStateQueryClient::connect(query.address.clone())
        .await
        .with_context(|| {
            format!(
                "cannot reach the query API at {}: is `baton up` running?",
                query.address
            )
        })?;
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
    let request = GetCareStateRequest {
        patient: Some(patient_ref(&args.patient)),
        consistency_token: args.consistency_token.unwrap_or_default(),
    };
    let state = match client.get_care_state(request).await {
        Ok(response) => response.into_inner().state.unwrap_or_default(),
        Err(status) if status.code() == Code::NotFound => {
            anyhow::bail!(
                "{}: Baton has no events about this patient",
                status.message()
            )
        }
        Err(status) => anyhow::bail!("{}", status.message()),
    };
    if args.json {
        println!("{}", pretty_json(&state)?);
    } else {
        print!("{}", render::care_state(&state));
    }
    Ok(())
}

fn pretty_json(state: &PatientCareState) -> anyhow::Result<String> {
    let value = baton_proto::json::to_json_value(state)?;
    Ok(serde_json::to_string_pretty(&value)?)
}

#[allow(clippy::print_stdout)]
pub(crate) async fn cohort(args: CohortArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.query).await?;
    let filter = CohortFilter {
        setting: args.setting.map_or(0, |s| s as i32),
        organisation: args.organisation.clone().unwrap_or_default(),
        ward: args.ward.clone().unwrap_or_default(),
    };
    let limit = args.limit.unwrap_or(usize::MAX);
    let mut states = Vec::new();
    let mut page_token = String::new();
    loop {
        let page_size = (limit - states.len()).min(1000) as u32;
        let response = client
            .list_cohort(ListCohortRequest {
                filter: Some(filter.clone()),
                page_size,
                page_token,
            })
            .await
            .map_err(|status| anyhow::anyhow!("{}", status.message()))?
            .into_inner();
        states.extend(response.states);
        page_token = response.next_page_token;
        if page_token.is_empty() || states.len() >= limit {
            break;
        }
    }
    if args.json {
        for state in &states {
            println!(
                "{}",
                serde_json::to_string(&baton_proto::json::to_json_value(state)?)?
            );
        }
    } else {
        print!("{}", render::cohort_table(&states));
        let more = if page_token.is_empty() {
            ""
        } else {
            " (more with a higher --limit)"
        };
        let noun = if states.len() == 1 {
            "patient"
        } else {
            "patients"
        };
        println!("{} {noun}{more}", states.len());
    }
    Ok(())
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
}
