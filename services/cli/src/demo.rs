//! The demo of `baton up --demo`: a synthetic population published through
//! the real ingest API, then a summary read back through the query API.

use std::fmt::Write;
use std::net::SocketAddr;

use baton_log::ConsistencyToken;
use baton_proto::query::v1::care_state_query_client::CareStateQueryClient;
use baton_proto::query::v1::{CohortFilter, GetCareStateRequest, ListCohortRequest};
use baton_proto::state::v1::CareSetting;
use baton_runtime::{Clock, SystemClock};
use baton_synth::{Population, PopulationConfig};
use indicatif::{ProgressBar, ProgressStyle};

use crate::publish::{LineEvent, connect, publish_batch};
use crate::read::patient_ref;

const BATCH: usize = 500;

/// Journeys the demo starts a day: 300 patients over nearly three weeks,
/// so that on the day it is run some are newly in hospital and the others
/// at every later stage (home, on a virtual ward, in a care home).
const ARRIVALS_PER_DAY: u32 = 16;

/// Publishes the population and returns what to tell the user about it.
pub(crate) async fn publish_demo(
    ingest: SocketAddr,
    query: SocketAddr,
    patients: usize,
    seed: u64,
) -> anyhow::Result<String> {
    let (now, _) = SystemClock.unix_now();
    // Dated up to now, so the questions about today have answers.
    let config = PopulationConfig {
        patients,
        seed,
        arrivals_per_day: ARRIVALS_PER_DAY,
        ..PopulationConfig::default()
    }
    .standing_at(now);
    let first_journey = crate::render::when(Some(&prost_types::Timestamp {
        seconds: config.start_unix_seconds,
        nanos: 0,
    }));
    let events: Vec<LineEvent> = Population::try_new(config)?
        .enumerate()
        .map(|(index, event)| LineEvent::new(index + 1, event))
        .collect();
    let progress = ProgressBar::new(events.len() as u64).with_style(
        ProgressStyle::with_template(
            "publishing the demo population {bar:40} {pos}/{len} events ({per_sec})",
        )
        .expect("a valid progress template"),
    );
    let mut client = connect(&format!("http://{ingest}")).await?;
    let mut token = ConsistencyToken::empty();
    let mut last_patient = String::new();
    for batch in events.chunks(BATCH) {
        let published = publish_batch(&mut client, batch, false).await?;
        if let Ok(written) = published.consistency_token.parse::<ConsistencyToken>() {
            token.merge(&written);
        }
        if let Some(event) = published.events.last() {
            last_patient.clone_from(&event.patient_key);
        }
        progress.inc(batch.len() as u64);
    }
    progress.finish_and_clear();

    // Read our own writes: wait until the projection has applied them all.
    let mut query = CareStateQueryClient::new(
        crate::endpoint::connect(&query.to_string(), "the query API").await?,
    );
    query
        .get_care_state(GetCareStateRequest {
            patient: Some(patient_ref(&last_patient)),
            consistency_token: token.to_string(),
        })
        .await
        .map_err(|status| anyhow::anyhow!("waiting for the projection: {}", status.message()))?;

    let mut summary = format!(
        "Published {} demo events about {patients} patients (seed {seed}), their journeys \
         from {first_journey} up to now; all projected.\n",
        events.len()
    );
    for setting in [
        CareSetting::Hospital,
        CareSetting::HospitalLeave,
        CareSetting::VirtualWard,
        CareSetting::Community,
        CareSetting::CareHome,
        CareSetting::CommunityHospital,
        CareSetting::Deceased,
    ] {
        let (count, first) = count_cohort(&mut query, setting).await?;
        if count > 0 {
            let example =
                first.map_or(String::new(), |key| format!(", e.g. baton state get {key}"));
            let _ = writeln!(
                summary,
                "  {:<20} {count:>4} {}{example}",
                baton_care::cohort::setting_name(setting),
                if count == 1 { "patient" } else { "patients" }
            );
        }
    }
    Ok(summary)
}

/// How many patients a setting holds, and the first of them.
async fn count_cohort(
    query: &mut CareStateQueryClient<crate::endpoint::Transport>,
    setting: CareSetting,
) -> anyhow::Result<(usize, Option<String>)> {
    let mut count = 0;
    let mut first = None;
    let mut page_token = String::new();
    loop {
        let page = query
            .list_cohort(ListCohortRequest {
                filter: Some(CohortFilter {
                    setting: setting as i32,
                    ..Default::default()
                }),
                page_size: 1000,
                page_token,
            })
            .await
            .map_err(|status| anyhow::anyhow!("listing a cohort: {}", status.message()))?
            .into_inner();
        count += page.states.len();
        if first.is_none() {
            first = page.states.first().map(|s| s.patient_key.clone());
        }
        page_token = page.next_page_token;
        if page_token.is_empty() {
            return Ok((count, first));
        }
    }
}
