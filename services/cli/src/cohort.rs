//! `baton cohort` and `baton watch`: who is where, once or live.

use baton_care::Instant;
use baton_care::cohort::{date_after, parse_date, parse_pathway, parse_referral_status};
use baton_proto::events::v1::{Date, Pathway};
use baton_proto::query::v1::{
    CohortChange, CohortFilter, DateRange, ListCohortRequest, MedicallyOptimisedCriterion,
    ReferralCriterion, WatchCohortRequest,
};
use baton_proto::state::v1::{CareSetting, PatientCareState, ReferralStatus};
use baton_runtime::{Clock, SystemClock};
use clap::Args;
use tonic::Code;

use crate::read::{QueryAddress, connect, json_line};
use crate::render::{self, Focus};

/// Who to list or watch. Every flag narrows the cohort; a patient must
/// match them all.
#[derive(Debug, Clone, Args)]
pub(crate) struct FilterArgs {
    /// Care setting: community, hospital, hospital-leave, virtual-ward,
    /// care-home, community-hospital, other-hospital, hospice, deceased
    #[arg(long, value_parser = parse_setting)]
    setting: Option<CareSetting>,
    /// Organisation (ODS code) of the setting, e.g. RXX
    #[arg(long)]
    organisation: Option<String>,
    /// Ward: a hospital ward (point of care), or the virtual ward a patient
    /// is on
    #[arg(long)]
    ward: Option<String>,
    /// On this virtual ward (its service code, e.g. VW-FRAIL-RXX), whatever
    /// the setting
    #[arg(long, value_name = "CODE")]
    virtual_ward: Option<String>,
    /// On an open episode of this pathway: frailty,
    /// acute-respiratory-infection, heart-failure, other
    #[arg(long, value_parser = parse_pathway)]
    pathway: Option<Pathway>,
    /// With a referral to this service (its code, e.g. FRAILTY-RXX); open
    /// (requested or accepted) unless --referral-status says otherwise
    #[arg(long, value_name = "SERVICE")]
    referred_to: Option<String>,
    /// Referral status, repeatable: requested, accepted, rejected,
    /// cancelled, completed
    #[arg(long, value_parser = parse_referral_status, requires = "referred_to")]
    referral_status: Vec<ReferralStatus>,
    /// Only referrals still requested past their respond-by time
    #[arg(long, requires = "referred_to")]
    overdue: bool,
    /// Latest Clinical Frailty Scale score at least this (1-9)
    #[arg(long, value_name = "SCORE")]
    min_frailty: Option<u32>,
    /// Aged at least this, where the date of birth is known
    #[arg(long, value_name = "YEARS")]
    min_age: Option<u32>,
    /// Medically optimised for discharge, still in the encounter
    #[arg(long)]
    medically_optimised: bool,
    /// Medically optimised for at least this many days (delayed discharges)
    #[arg(long, value_name = "DAYS")]
    min_days_optimised: Option<u32>,
    /// Expected date of discharge: today, tomorrow, YYYY-MM-DD, or
    /// FROM..TO (either end may be left open)
    #[arg(long, value_name = "DATES")]
    expected_discharge: Option<String>,
    /// Last discharged: today, yesterday, YYYY-MM-DD, or FROM..TO
    #[arg(long, value_name = "DATES")]
    discharged: Option<String>,
}

fn parse_setting(text: &str) -> Result<CareSetting, String> {
    baton_care::cohort::parse_setting(text)
}

impl FilterArgs {
    /// The query API's filter, with relative dates read against `now`.
    fn filter(&self, now: Instant) -> anyhow::Result<CohortFilter> {
        let dates = |flag: &str, text: &Option<String>| -> anyhow::Result<Option<DateRange>> {
            text.as_deref()
                .map(|text| date_range(text, now))
                .transpose()
                .map_err(|problem| anyhow::anyhow!("--{flag}: {problem}"))
        };
        let referral = self.referred_to.as_ref().map(|service| ReferralCriterion {
            service: service.clone(),
            statuses: self.referral_status.iter().map(|s| *s as i32).collect(),
            overdue: self.overdue,
        });
        let optimised = self.medically_optimised || self.min_days_optimised.is_some();
        Ok(CohortFilter {
            setting: self.setting.map_or(0, |s| s as i32),
            organisation: self.organisation.clone().unwrap_or_default(),
            ward: self.ward.clone().unwrap_or_default(),
            virtual_ward: self.virtual_ward.clone().unwrap_or_default(),
            pathway: self.pathway.map_or(0, |p| p as i32),
            referral,
            min_frailty_score: self.min_frailty.unwrap_or(0),
            min_age_years: self.min_age.unwrap_or(0),
            medically_optimised: optimised.then(|| MedicallyOptimisedCriterion {
                min_days: self.min_days_optimised.unwrap_or(0),
            }),
            expected_discharge: dates("expected-discharge", &self.expected_discharge)?,
            discharged: dates("discharged", &self.discharged)?,
        })
    }

    /// What the table should show beside where each patient is.
    fn focus(&self) -> Focus {
        if let Some(service) = &self.referred_to {
            Focus::Referral(service.clone())
        } else if self.virtual_ward.is_some()
            || self.pathway.is_some()
            || self.setting == Some(CareSetting::VirtualWard)
        {
            Focus::VirtualWard
        } else if self.medically_optimised
            || self.min_days_optimised.is_some()
            || self.expected_discharge.is_some()
        {
            Focus::Discharge
        } else if self.discharged.is_some() {
            Focus::Discharged
        } else {
            Focus::Place
        }
    }
}

/// `today`, `tomorrow`, `yesterday`, `YYYY-MM-DD` or `FROM..TO`.
fn date_range(text: &str, now: Instant) -> Result<DateRange, String> {
    let day = |text: &str| -> Result<Option<Date>, String> {
        match text.trim() {
            "" => Ok(None),
            "today" => Ok(Some(date_after(now, 0))),
            "tomorrow" => Ok(Some(date_after(now, 1))),
            "yesterday" => Ok(Some(date_after(now, -1))),
            date => parse_date(date)
                .map(Some)
                .map_err(|problem| format!("{problem}, or today, tomorrow, yesterday")),
        }
    };
    let (from, to) = match text.split_once("..") {
        Some((from, to)) => (day(from)?, day(to)?),
        None => {
            let date = day(text)?;
            (date, date)
        }
    };
    if from.is_none() && to.is_none() {
        return Err(format!(
            "{text:?} names no date: expected a date, or a range FROM..TO"
        ));
    }
    Ok(DateRange { from, to })
}

/// List the patients in a cohort: who is where.
///
/// With no filter, every current patient. Examples:
///   baton cohort --setting virtual-ward
///   baton cohort --setting hospital --organisation RXX --ward WARD-7
///   baton cohort --virtual-ward VW-FRAIL-RXX
///   baton cohort --setting hospital --min-frailty 6 --min-age 65
///   baton cohort --referred-to FRAILTY-RXX --overdue
///   baton cohort --setting hospital --min-days-optimised 2   (delayed discharges)
///   baton cohort --expected-discharge today..tomorrow
///   baton cohort --discharged yesterday
#[derive(Debug, Args)]
pub(crate) struct CohortArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// Show at most this many patients (default: all)
    #[arg(long)]
    limit: Option<usize>,
    /// Print one JSON state per line instead of a table
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    query: QueryAddress,
}

#[allow(clippy::print_stdout)]
pub(crate) async fn cohort(args: CohortArgs) -> anyhow::Result<()> {
    let now = now();
    let filter = args.filter.filter(now)?;
    let mut client = connect(&args.query).await?;
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
            println!("{}", json_line(state)?);
        }
        return Ok(());
    }
    print!(
        "{}",
        render::cohort_table(&states, &args.filter.focus(), now)
    );
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
    Ok(())
}

/// Watch a cohort live: its members now, then who joins, changes and
/// leaves, as it happens. Ctrl-C to stop.
///
/// Takes the same filters as `baton cohort`. Examples:
///   baton watch --virtual-ward VW-FRAIL-RXX       a virtual ward's board
///   baton watch --referred-to FRAILTY-RXX --setting hospital
///                                                 my patients, admitted
///   baton watch --setting hospital --medically-optimised --json
#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// Print each message as one JSON object per line (the protobuf JSON
    /// mapping of baton.query.v1.WatchCohortResponse)
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    query: QueryAddress,
}

#[allow(clippy::print_stdout)]
pub(crate) async fn watch(args: WatchArgs) -> anyhow::Result<()> {
    let now = now();
    let filter = args.filter.filter(now)?;
    let focus = args.filter.focus();
    let mut client = connect(&args.query).await?;
    let mut stream = client
        .watch_cohort(WatchCohortRequest {
            filter: Some(filter),
        })
        .await
        .map_err(|status| anyhow::anyhow!("{}", status.message()))?
        .into_inner();
    let mut members = 0usize;
    loop {
        let message = tokio::select! {
            () = baton_runtime::shutdown_signal() => return Ok(()),
            message = stream.message() => message,
        };
        let message = match message {
            Ok(Some(message)) => message,
            Ok(None) => anyhow::bail!("the query service ended the watch"),
            Err(status) if status.code() == Code::ResourceExhausted => {
                anyhow::bail!("{} (this terminal read too slowly)", status.message())
            }
            Err(status) => anyhow::bail!("{}", status.message()),
        };
        if args.json {
            println!("{}", json_line(&message)?);
            continue;
        }
        let change = message.change();
        match change {
            CohortChange::Member => members += 1,
            CohortChange::Synced => {
                println!(
                    "— {members} {} now; watching for changes (Ctrl-C to stop)",
                    if members == 1 { "member" } else { "members" }
                );
                continue;
            }
            _ => {}
        }
        let state = message.state.unwrap_or_else(|| PatientCareState {
            patient_key: message.patient_key.clone(),
            ..Default::default()
        });
        println!("{}", render::cohort_change(change, &state, &focus, now));
    }
}

fn now() -> Instant {
    let (seconds, nanos) = SystemClock.unix_now();
    Instant::of(Some(&prost_types::Timestamp { seconds, nanos }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-03-02T10:00:00Z
    fn monday() -> Instant {
        Instant::of(Some(&prost_types::Timestamp {
            seconds: 1_772_445_600,
            nanos: 0,
        }))
    }

    fn ymd(date: &Option<Date>) -> Option<(i32, i32, i32)> {
        date.as_ref().map(|d| (d.year, d.month, d.day))
    }

    #[test]
    fn dates_are_read_as_people_write_them() {
        let today = date_range("today", monday()).unwrap();
        assert_eq!(ymd(&today.from), Some((2026, 3, 2)));
        assert_eq!(ymd(&today.to), Some((2026, 3, 2)));
        let soon = date_range("today..tomorrow", monday()).unwrap();
        assert_eq!(ymd(&soon.to), Some((2026, 3, 3)));
        let open = date_range("2026-02-27..", monday()).unwrap();
        assert_eq!(ymd(&open.from), Some((2026, 2, 27)));
        assert_eq!(open.to, None);
        let error = date_range("next week", monday()).unwrap_err();
        assert!(error.contains("YYYY-MM-DD"), "{error}");
        assert!(date_range("..", monday()).is_err());
    }
}
