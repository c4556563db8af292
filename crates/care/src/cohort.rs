//! Cohorts: the questions downstream teams ask. A [`Cohort`] is a validated
//! filter — where the patient is (care setting, organisation, ward), which
//! virtual ward or pathway they are on, their referrals, frailty, age,
//! medical optimisation and discharge dates — that answers
//! [`Cohort::matches`] for one state, and [plans](Cohort::plan) which part
//! of the cohort index to read, so a store lists a cohort without reading
//! every patient.
//!
//! # The index
//!
//! [`index_entries`] gives each current state a handful of entries, each
//! ending in the patient key, sorted so that every criterion is one or a
//! few ordered ranges:
//!
//! | entry | for |
//! |---|---|
//! | `<dims>␟<setting>␟<organisation>␟<ward>␟<key>`, one per combination of the three (8) | where the patient is |
//! | `v␟<virtual ward code>␟<key>` | an active virtual-ward episode |
//! | `y␟<PATHWAY>␟<key>` | an active episode's pathway |
//! | `r␟<service code>␟<STATUS>␟<key>` | a referral's latest status |
//! | `f␟<SETTING or *>␟<score>␟<key>` | the latest frailty score, by setting and for any |
//! | `m␟<since, fixed width>␟<key>` | medically optimised during the active encounter, since when |
//! | `d␟<YYYY-MM-DD>␟<key>` | expected discharge date of the active encounter |
//! | `x␟<YYYY-MM-DD>␟<key>` | date of the latest discharge |
//! | `l␟<authority:value>␟<key>` | a local identifier that is not the key |
//!
//! A cohort is listed from the range of its most selective indexed
//! criterion; every candidate is then checked against the whole filter, and
//! kept only at its first entry in the plan, so a patient with two
//! referrals that both match is listed once.
//!
//! Time enters only as an argument (`now`), for ages, overdue referrals and
//! days optimised: the domain reads no clock.

mod membership;

use std::collections::BTreeSet;
use std::fmt::Write as _;

use baton_proto::events::v1::{Date, EpisodeType, Pathway};
use baton_proto::query::v1::{CohortFilter, DateRange};
use baton_proto::state::v1::{CareSetting, EpisodeStatus, PatientCareState, ReferralStatus};

pub use membership::decode_for_membership;

use crate::FieldViolation;
use crate::time::{EARLIEST_SECONDS, Instant, civil_from_days, days_from_civil, days_in_month};

/// Separates the parts of an index entry. Not allowed in ODS codes or ward
/// names by validation upstream, and escaped here regardless.
const SEPARATOR: char = '\u{1f}';
/// The character after [`SEPARATOR`]: a range ending in it holds every
/// entry that continues a prefix ending in the separator.
const AFTER_SEPARATOR: char = '\u{20}';
/// Stands for "any setting" in the frailty entries.
const ANY_SETTING: &str = "*";
const SECONDS_PER_DAY: i64 = 86_400;

/// Bumped whenever [`index_entries`] changes, so a store built with older
/// entries rebuilds its index when it opens.
pub const INDEX_VERSION: u32 = 2;

/// A validated cohort filter; the empty one is every current patient.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cohort {
    pub setting: Option<CareSetting>,
    pub organisation: Option<String>,
    /// A hospital ward (point of care), or a virtual ward's code while the
    /// patient is on it.
    pub ward: Option<String>,
    /// The code of a virtual ward the patient has an active episode on.
    pub virtual_ward: Option<String>,
    /// The pathway of an active episode.
    pub pathway: Option<Pathway>,
    pub referral: Option<ReferralCriterion>,
    /// Latest Clinical Frailty Scale score at least this.
    pub min_frailty_score: Option<u32>,
    /// Aged at least this many years, where the date of birth is known.
    pub min_age_years: Option<u32>,
    /// Medically optimised for at least this many whole days.
    pub min_days_optimised: Option<u32>,
    pub expected_discharge: Option<DayRange>,
    pub discharged: Option<DayRange>,
}

/// A referral to `service` whose latest status is one of `statuses`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferralCriterion {
    pub service: String,
    /// Never empty; sorted.
    pub statuses: Vec<ReferralStatus>,
    /// Only referrals still requested after their respond-by time.
    pub overdue: bool,
}

/// Days since 1970-01-01, both ends inclusive; `None` is open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayRange {
    pub from: Option<i64>,
    pub to: Option<i64>,
}

impl DayRange {
    fn contains(self, day: i64) -> bool {
        self.from.is_none_or(|from| day >= from) && self.to.is_none_or(|to| day <= to)
    }
}

/// Entries from `start` (inclusive) to `end` (exclusive) of the cohort
/// index, compared as bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct IndexRange {
    pub start: String,
    pub end: String,
}

impl IndexRange {
    fn prefix(prefix: String) -> Self {
        let end = after_prefix(&prefix);
        Self { start: prefix, end }
    }

    pub fn contains(&self, entry: &str) -> bool {
        entry >= self.start.as_str() && entry < self.end.as_str()
    }
}

impl Cohort {
    /// Checks a filter from the query API; `field` prefixes violations.
    pub fn from_filter(filter: &CohortFilter, field: &str) -> Result<Self, FieldViolation> {
        let at = |name: &str| format!("{field}.{name}");
        let setting = match CareSetting::try_from(filter.setting) {
            Ok(CareSetting::Unspecified) => None,
            Ok(setting) => Some(setting),
            Err(_) => {
                return Err(FieldViolation::new(
                    at("setting"),
                    format!(
                        "unknown care setting {}; expected one of {}",
                        filter.setting,
                        setting_names().join(", ")
                    ),
                ));
            }
        };
        let pathway = match Pathway::try_from(filter.pathway) {
            Ok(Pathway::Unspecified) => None,
            Ok(pathway) => Some(pathway),
            Err(_) => {
                return Err(FieldViolation::new(
                    at("pathway"),
                    format!(
                        "unknown pathway {}; expected one of {}",
                        filter.pathway,
                        pathway_names().join(", ")
                    ),
                ));
            }
        };
        let referral = match &filter.referral {
            None => None,
            Some(referral) => Some(ReferralCriterion::from_proto(referral, &at("referral"))?),
        };
        let min_frailty_score = match filter.min_frailty_score {
            0 => None,
            score @ 1..=9 => Some(score),
            score => {
                return Err(FieldViolation::new(
                    at("min_frailty_score"),
                    format!(
                        "{score} is not a Clinical Frailty Scale score: expected 1 to 9 (0 for any)"
                    ),
                ));
            }
        };
        let min_age_years = match filter.min_age_years {
            0 => None,
            age @ 1..=150 => Some(age),
            age => {
                return Err(FieldViolation::new(
                    at("min_age_years"),
                    format!("{age} years: expected 1 to 150 (0 for any)"),
                ));
            }
        };
        let min_days_optimised = filter
            .medically_optimised
            .as_ref()
            .map(|criterion| criterion.min_days);
        if let Some(days) = min_days_optimised
            && days > 36_500
        {
            return Err(FieldViolation::new(
                at("medically_optimised.min_days"),
                format!("{days} days: expected at most 36500 (0 for any)"),
            ));
        }
        let text = |value: &str| {
            let value = value.trim();
            (!value.is_empty()).then(|| value.to_owned())
        };
        Ok(Self {
            setting,
            organisation: text(&filter.organisation).map(|o| o.to_ascii_uppercase()),
            ward: text(&filter.ward),
            virtual_ward: text(&filter.virtual_ward),
            pathway,
            referral,
            min_frailty_score,
            min_age_years,
            min_days_optimised,
            expected_discharge: day_range(
                filter.expected_discharge.as_ref(),
                &at("expected_discharge"),
            )?,
            discharged: day_range(filter.discharged.as_ref(), &at("discharged"))?,
        })
    }

    /// Whether `state` is a member at `now`. A state merged into another is
    /// never one.
    pub fn matches(&self, state: &PatientCareState, now: Instant) -> bool {
        if state.merged_into.is_some() {
            return false;
        }
        let place = Place::of(state);
        self.setting.is_none_or(|s| s == place.setting)
            && self
                .organisation
                .as_deref()
                .is_none_or(|o| o == place.organisation)
            && self.ward.as_deref().is_none_or(|w| w == place.ward)
            && self
                .virtual_ward
                .as_deref()
                .is_none_or(|code| active_virtual_wards(state).any(|c| c == code))
            && self
                .pathway
                .is_none_or(|pathway| active_pathways(state).any(|p| p == pathway))
            && self
                .referral
                .as_ref()
                .is_none_or(|criterion| criterion.matches(state, now))
            && self
                .min_frailty_score
                .is_none_or(|min| frailty_score(state).is_some_and(|score| score >= min))
            && self
                .min_age_years
                .is_none_or(|min| age_on(state, now).is_none_or(|age| age >= i64::from(min)))
            && self.min_days_optimised.is_none_or(|days| {
                optimised_since(state).is_some_and(|since| {
                    now.seconds() - since.seconds() >= i64::from(days) * SECONDS_PER_DAY
                })
            })
            && self.expected_discharge.is_none_or(|range| {
                expected_discharge_day(state).is_some_and(|day| range.contains(day))
            })
            && self
                .discharged
                .is_none_or(|range| discharged_day(state).is_some_and(|day| range.contains(day)))
    }

    /// Whether membership can change with the passing of time alone (ages,
    /// overdue referrals, days optimised), not only when a state changes.
    pub fn depends_on_time(&self) -> bool {
        self.min_age_years.is_some()
            || self.min_days_optimised.is_some_and(|days| days > 0)
            || self.referral.as_ref().is_some_and(|r| r.overdue)
    }

    /// The ranges of the cohort index that hold every member at `now`,
    /// sorted and disjoint: those of the most selective criterion that has
    /// an index. Candidates read from them still need [`Cohort::matches`].
    pub fn plan(&self, now: Instant) -> Vec<IndexRange> {
        if let Some(referral) = &self.referral {
            let statuses: &[ReferralStatus] = if referral.overdue {
                &[ReferralStatus::Requested]
            } else {
                &referral.statuses
            };
            let mut ranges: Vec<IndexRange> = statuses
                .iter()
                .map(|status| {
                    IndexRange::prefix(tagged(
                        'r',
                        &[&referral.service, status.as_str_name()],
                        None,
                    ))
                })
                .collect();
            ranges.sort();
            return ranges;
        }
        if let Some(code) = &self.virtual_ward {
            return vec![IndexRange::prefix(tagged('v', &[code], None))];
        }
        if self.ward.is_some() {
            return vec![self.place_range()];
        }
        if let Some(range) = self.expected_discharge {
            return vec![day_index_range('d', range)];
        }
        if let Some(range) = self.discharged {
            return vec![day_index_range('x', range)];
        }
        if let Some(days) = self.min_days_optimised {
            let cutoff = now.seconds() - i64::from(days) * SECONDS_PER_DAY;
            return vec![IndexRange {
                start: tagged('m', &[], None),
                end: format!("m{SEPARATOR}{}{AFTER_SEPARATOR}", sortable_seconds(cutoff)),
            }];
        }
        if let Some(min) = self.min_frailty_score {
            let setting = self.setting.map_or(ANY_SETTING, |s| s.as_str_name());
            let within = tagged('f', &[setting], None);
            return vec![IndexRange {
                start: format!("{within}{min}"),
                end: after_prefix(&within),
            }];
        }
        if let Some(pathway) = self.pathway {
            return vec![IndexRange::prefix(tagged(
                'y',
                &[pathway.as_str_name()],
                None,
            ))];
        }
        vec![self.place_range()]
    }

    fn place_range(&self) -> IndexRange {
        IndexRange::prefix(place_entry(
            self.setting.map(|s| s.as_str_name()),
            self.organisation.as_deref(),
            self.ward.as_deref(),
            None,
        ))
    }

    /// The entry of `state` at which a listing from `plan` yields it: its
    /// first entry inside the plan. `None` when it has none there (it moved
    /// while the listing ran).
    pub fn listing_entry(state: &PatientCareState, plan: &[IndexRange]) -> Option<String> {
        index_entries(state)
            .into_iter()
            .filter(|entry| plan.iter().any(|range| range.contains(entry)))
            .min()
    }

    /// The patient key an index entry ends with.
    pub fn key_of_entry(entry: &str) -> &str {
        entry.rsplit(SEPARATOR).next().unwrap_or(entry)
    }

    /// A short fingerprint of the filter, so a page token is refused with
    /// any other filter than the one that produced it.
    pub fn fingerprint(&self) -> String {
        let mut hash: u32 = 0x811c_9dc5;
        for byte in format!("{self:?}").bytes() {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        format!("{hash:08x}")
    }
}

impl ReferralCriterion {
    fn from_proto(
        criterion: &baton_proto::query::v1::ReferralCriterion,
        field: &str,
    ) -> Result<Self, FieldViolation> {
        let service = criterion.service.trim();
        if service.is_empty() {
            return Err(FieldViolation::new(
                format!("{field}.service"),
                "required: the code of the service referred to, e.g. \"FRAILTY-RXX\"",
            ));
        }
        let mut statuses = BTreeSet::new();
        for (index, &status) in criterion.statuses.iter().enumerate() {
            match ReferralStatus::try_from(status) {
                Ok(ReferralStatus::Unspecified) | Err(_) => {
                    return Err(FieldViolation::new(
                        format!("{field}.statuses[{index}]"),
                        format!(
                            "{status} is not a referral status: expected one of {}",
                            referral_status_names().join(", ")
                        ),
                    ));
                }
                Ok(status) => {
                    statuses.insert(status);
                }
            }
        }
        if statuses.is_empty() {
            statuses.extend([ReferralStatus::Requested, ReferralStatus::Accepted]);
        }
        if criterion.overdue && !statuses.contains(&ReferralStatus::Requested) {
            return Err(FieldViolation::new(
                format!("{field}.overdue"),
                "an overdue referral is one still requested past its respond-by time: \
                 leave statuses empty or include REFERRAL_STATUS_REQUESTED",
            ));
        }
        Ok(Self {
            service: service.to_owned(),
            statuses: statuses.into_iter().collect(),
            overdue: criterion.overdue,
        })
    }

    fn matches(&self, state: &PatientCareState, now: Instant) -> bool {
        state.referrals.iter().any(|referral| {
            let status = referral.status();
            referral
                .service
                .as_ref()
                .is_some_and(|s| s.code == self.service)
                && self.statuses.contains(&status)
                && (!self.overdue
                    || (status == ReferralStatus::Requested
                        && referral
                            .respond_by
                            .as_ref()
                            .is_some_and(|by| Instant::of(Some(by)) < now)))
        })
    }
}

/// The index entries for a state: one per cohort criterion it can be listed
/// by, and one per local identifier it can be found by; none when it was
/// merged into another. Sorted, without repeats.
pub fn index_entries(state: &PatientCareState) -> Vec<String> {
    if state.merged_into.is_some() {
        return Vec::new();
    }
    let key = state.patient_key.as_str();
    let place = Place::of(state);
    let setting = place.setting.as_str_name();
    let mut entries = BTreeSet::new();
    for mask in 0..8u8 {
        entries.insert(place_entry(
            (mask & 1 != 0).then_some(setting),
            (mask & 2 != 0).then_some(place.organisation),
            (mask & 4 != 0).then_some(place.ward),
            Some(key),
        ));
    }
    for code in active_virtual_wards(state) {
        entries.insert(tagged('v', &[code], Some(key)));
    }
    for pathway in active_pathways(state) {
        entries.insert(tagged('y', &[pathway.as_str_name()], Some(key)));
    }
    for referral in &state.referrals {
        if let Some(service) = referral.service.as_ref().filter(|s| !s.code.is_empty()) {
            entries.insert(tagged(
                'r',
                &[&service.code, referral.status().as_str_name()],
                Some(key),
            ));
        }
    }
    if let Some(score) = frailty_score(state) {
        let score = score.to_string();
        for within in [setting, ANY_SETTING] {
            entries.insert(tagged('f', &[within, &score], Some(key)));
        }
    }
    if let Some(since) = optimised_since(state) {
        entries.insert(tagged(
            'm',
            &[&sortable_seconds(since.seconds())],
            Some(key),
        ));
    }
    if let Some(day) = expected_discharge_day(state) {
        entries.insert(tagged('d', &[&iso_date(day)], Some(key)));
    }
    if let Some(day) = discharged_day(state) {
        entries.insert(tagged('x', &[&iso_date(day)], Some(key)));
    }
    if let Some(identity) = &state.identity {
        for local in &identity.local_ids {
            let local = format!("{}:{}", local.authority, local.value);
            if local != state.patient_key {
                entries.insert(format!("{}{key}", identifier_prefix(&local)));
            }
        }
    }
    entries.into_iter().collect()
}

/// The index prefix under which a patient is found by a local identifier
/// (`AUTHORITY:VALUE`) that is not their key, e.g. the hospital number of a
/// patient keyed by NHS number.
pub fn identifier_prefix(local_id: &str) -> String {
    tagged('l', &[local_id], None)
}

/// Where a state places the patient, as the cohort criteria see it.
struct Place<'a> {
    setting: CareSetting,
    organisation: &'a str,
    /// A hospital ward (point of care) or a virtual ward's service code.
    ward: &'a str,
}

impl<'a> Place<'a> {
    fn of(state: &'a PatientCareState) -> Self {
        let setting = state.setting();
        let ward = match setting {
            CareSetting::Hospital | CareSetting::HospitalLeave => state
                .active_encounter
                .as_ref()
                .and_then(|e| e.location.as_ref())
                .map_or("", |l| l.point_of_care.as_str()),
            CareSetting::VirtualWard => state
                .episodes
                .iter()
                .rev()
                .find(|e| e.r#type() == EpisodeType::VirtualWard && e.ended_at.is_none())
                .and_then(|e| e.service.as_ref())
                .map_or("", |s| s.code.as_str()),
            _ => "",
        };
        Self {
            setting,
            organisation: &state.setting_organisation,
            ward,
        }
    }
}

fn active_episodes(
    state: &PatientCareState,
) -> impl Iterator<Item = &baton_proto::state::v1::Episode> {
    state
        .episodes
        .iter()
        .filter(|e| e.status() == EpisodeStatus::Active)
}

fn active_virtual_wards(state: &PatientCareState) -> impl Iterator<Item = &str> {
    active_episodes(state)
        .filter(|e| e.r#type() == EpisodeType::VirtualWard)
        .filter_map(|e| e.service.as_ref())
        .map(|s| s.code.as_str())
        .filter(|code| !code.is_empty())
}

fn active_pathways(state: &PatientCareState) -> impl Iterator<Item = Pathway> {
    active_episodes(state)
        .map(|e| e.pathway())
        .filter(|p| *p != Pathway::Unspecified)
}

fn frailty_score(state: &PatientCareState) -> Option<u32> {
    state
        .frailty
        .as_ref()
        .map(|f| f.clinical_frailty_scale)
        .filter(|score| (1..=9).contains(score))
}

/// Since when the patient has been medically optimised, if they are, during
/// an active encounter.
fn optimised_since(state: &PatientCareState) -> Option<Instant> {
    if !state.medically_optimised || state.active_encounter.is_none() {
        return None;
    }
    Some(Instant::of(state.medically_optimised_since.as_ref())).filter(|since| since.is_set())
}

fn expected_discharge_day(state: &PatientCareState) -> Option<i64> {
    state.active_encounter.as_ref()?;
    day_of_date(state.expected_discharge_date.as_ref()?)
}

fn discharged_day(state: &PatientCareState) -> Option<i64> {
    let at = state.last_discharge.as_ref()?.discharged_at.as_ref()?;
    Some(at.seconds.div_euclid(SECONDS_PER_DAY))
}

/// Whole years from the date of birth to the UTC date of `now`.
fn age_on(state: &PatientCareState, now: Instant) -> Option<i64> {
    let born = state.demographics.as_ref()?.birth_date.as_ref()?;
    day_of_date(born)?;
    let (year, month, day) = civil_from_days(now.seconds().div_euclid(SECONDS_PER_DAY));
    let mut age = i64::from(year) - i64::from(born.year);
    if (month, day) < (born.month, born.day) {
        age -= 1;
    }
    Some(age)
}

fn day_of_date(date: &Date) -> Option<i64> {
    let valid = (1..=12).contains(&date.month)
        && date.day >= 1
        && date.day <= days_in_month(date.year, date.month);
    valid.then(|| days_from_civil(date.year, date.month, date.day))
}

fn day_range(range: Option<&DateRange>, field: &str) -> Result<Option<DayRange>, FieldViolation> {
    let Some(range) = range else {
        return Ok(None);
    };
    let day = |date: Option<&Date>, end: &str| -> Result<Option<i64>, FieldViolation> {
        let Some(date) = date else { return Ok(None) };
        day_of_date(date)
            .filter(|_| (1900..=2199).contains(&date.year))
            .map(Some)
            .ok_or_else(|| {
                FieldViolation::new(
                    format!("{field}.{end}"),
                    format!(
                        "{:04}-{:02}-{:02} is not a date: expected a calendar date from 1900 to 2199",
                        date.year, date.month, date.day
                    ),
                )
            })
    };
    let range = DayRange {
        from: day(range.from.as_ref(), "from")?,
        to: day(range.to.as_ref(), "to")?,
    };
    if let (Some(from), Some(to)) = (range.from, range.to)
        && from > to
    {
        return Err(FieldViolation::new(
            field,
            format!(
                "from {} is after to {}: expected from on or before to",
                iso_date(from),
                iso_date(to)
            ),
        ));
    }
    Ok(Some(range))
}

fn day_index_range(tag: char, range: DayRange) -> IndexRange {
    let within = tagged(tag, &[], None);
    IndexRange {
        start: match range.from {
            Some(from) => format!("{within}{}", iso_date(from)),
            None => within.clone(),
        },
        end: match range.to {
            Some(to) => format!("{within}{}{AFTER_SEPARATOR}", iso_date(to)),
            None => after_prefix(&within),
        },
    }
}

fn iso_date(day: i64) -> String {
    let (year, month, day) = civil_from_days(day);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Seconds as 12 digits counted from 1900 (the earliest time an event may
/// carry), so they sort as text.
fn sortable_seconds(seconds: i64) -> String {
    format!("{:012}", seconds.saturating_sub(EARLIEST_SECONDS).max(0))
}

/// `<tag>␟<part>␟…[<key>]`.
fn tagged(tag: char, parts: &[&str], key: Option<&str>) -> String {
    let mut entry = String::new();
    entry.push(tag);
    entry.push(SEPARATOR);
    for part in parts {
        entry.push_str(&escape(part));
        entry.push(SEPARATOR);
    }
    if let Some(key) = key {
        entry.push_str(key);
    }
    entry
}

/// The first string after every one that starts with `prefix`, which ends
/// with the separator.
fn after_prefix(prefix: &str) -> String {
    let mut end = prefix.strip_suffix(SEPARATOR).unwrap_or(prefix).to_owned();
    end.push(AFTER_SEPARATOR);
    end
}

fn place_entry(
    setting: Option<&str>,
    organisation: Option<&str>,
    ward: Option<&str>,
    key: Option<&str>,
) -> String {
    let mut entry = String::new();
    let mut dimensions = String::new();
    for (letter, part) in [('s', setting), ('o', organisation), ('w', ward)] {
        if let Some(part) = part {
            dimensions.push(letter);
            entry.push_str(&escape(part));
            entry.push(SEPARATOR);
        }
    }
    let mut full = dimensions;
    full.push(SEPARATOR);
    full.push_str(&entry);
    if let Some(key) = key {
        full.push_str(key);
    }
    full
}

fn escape(part: &str) -> String {
    part.replace(SEPARATOR, " ")
}

/// `PREFIX_SOME_NAME` → `some-name`.
fn kebab(proto_name: &str, prefix: &str) -> String {
    proto_name
        .trim_start_matches(prefix)
        .to_ascii_lowercase()
        .replace('_', "-")
}

/// Parses `some-name`, `SOME_NAME` or `PREFIX_SOME_NAME` into an enum.
fn parse_kebab<T: PartialEq + Copy>(
    text: &str,
    prefix: &str,
    from_name: impl Fn(&str) -> Option<T>,
    unspecified: T,
    what: &str,
    names: Vec<String>,
) -> Result<T, String> {
    let normalised = text.trim().to_ascii_uppercase().replace('-', "_");
    let name = if normalised.starts_with(prefix) {
        normalised
    } else {
        format!("{prefix}{normalised}")
    };
    from_name(&name)
        .filter(|value| *value != unspecified)
        .ok_or_else(|| {
            format!(
                "unknown {what} {text:?}; expected one of {}",
                names.join(", ")
            )
        })
}

/// The names a user may give a care setting, e.g. `virtual-ward`.
pub fn setting_names() -> Vec<String> {
    (1..)
        .map_while(|n| CareSetting::try_from(n).ok())
        .map(setting_name)
        .collect()
}

/// `CARE_SETTING_VIRTUAL_WARD` → `virtual-ward`.
pub fn setting_name(setting: CareSetting) -> String {
    kebab(setting.as_str_name(), "CARE_SETTING_")
}

/// Parses `virtual-ward`, `VIRTUAL_WARD` or `CARE_SETTING_VIRTUAL_WARD`.
pub fn parse_setting(text: &str) -> Result<CareSetting, String> {
    parse_kebab(
        text,
        "CARE_SETTING_",
        CareSetting::from_str_name,
        CareSetting::Unspecified,
        "care setting",
        setting_names(),
    )
}

/// The names a user may give a pathway, e.g. `heart-failure`.
pub fn pathway_names() -> Vec<String> {
    (1..)
        .map_while(|n| Pathway::try_from(n).ok())
        .map(|p| kebab(p.as_str_name(), "PATHWAY_"))
        .collect()
}

/// Parses `heart-failure`, `HEART_FAILURE` or `PATHWAY_HEART_FAILURE`.
pub fn parse_pathway(text: &str) -> Result<Pathway, String> {
    parse_kebab(
        text,
        "PATHWAY_",
        Pathway::from_str_name,
        Pathway::Unspecified,
        "pathway",
        pathway_names(),
    )
}

/// The names a user may give a referral status, e.g. `accepted`.
pub fn referral_status_names() -> Vec<String> {
    (1..)
        .map_while(|n| ReferralStatus::try_from(n).ok())
        .map(|s| kebab(s.as_str_name(), "REFERRAL_STATUS_"))
        .collect()
}

/// Parses `accepted`, `ACCEPTED` or `REFERRAL_STATUS_ACCEPTED`.
pub fn parse_referral_status(text: &str) -> Result<ReferralStatus, String> {
    parse_kebab(
        text,
        "REFERRAL_STATUS_",
        ReferralStatus::from_str_name,
        ReferralStatus::Unspecified,
        "referral status",
        referral_status_names(),
    )
}

/// A user's date: `YYYY-MM-DD`.
pub fn parse_date(text: &str) -> Result<Date, String> {
    let invalid = || format!("{text:?} is not a date: expected YYYY-MM-DD, e.g. 2026-03-31");
    let mut parts = text.trim().splitn(3, '-');
    let mut next = |digits: usize| {
        parts
            .next()
            .filter(|p| p.len() == digits && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<i32>().ok())
            .ok_or_else(invalid)
    };
    let date = Date {
        year: next(4)?,
        month: next(2)?,
        day: next(2)?,
    };
    day_of_date(&date).ok_or_else(invalid)?;
    Ok(date)
}

/// The UTC date of `now`, and of days after it: "today" and "tomorrow".
pub fn date_after(now: Instant, days: i64) -> Date {
    let (year, month, day) = civil_from_days(now.seconds().div_euclid(SECONDS_PER_DAY) + days);
    Date { year, month, day }
}

impl std::fmt::Display for IndexRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |text: &str| {
            let mut out = String::new();
            for c in text.chars() {
                match c {
                    SEPARATOR => out.push('␟'),
                    AFTER_SEPARATOR => out.push('⁺'),
                    c => {
                        let _ = write!(out, "{c}");
                    }
                }
            }
            out
        };
        write!(f, "[{}, {})", show(&self.start), show(&self.end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{
        self, admitted, discharged, expected_discharge_date_set, frailty_assessed,
        medically_optimised, state_of, timestamp, virtual_ward_started,
    };
    use baton_proto::events::v1::{CareEvent, DischargeDestination};

    const NHS: &str = "9434765919";
    const DAY: i64 = SECONDS_PER_DAY;
    /// 2026-03-02T00:00:00Z
    const T0: i64 = 1_772_409_600;

    fn at(day: i64) -> Instant {
        Instant::of(Some(&timestamp(T0 + day * DAY)))
    }

    fn place(
        setting: Option<CareSetting>,
        organisation: Option<&str>,
        ward: Option<&str>,
    ) -> Cohort {
        Cohort {
            setting,
            organisation: organisation.map(str::to_owned),
            ward: ward.map(str::to_owned),
            ..Cohort::default()
        }
    }

    /// Whether a listing of `cohort` from an index holding `state`'s
    /// entries finds it: the plan covers one of its entries and the filter
    /// matches.
    fn listed(cohort: &Cohort, state: &PatientCareState, now: Instant) -> bool {
        let plan = cohort.plan(now);
        let found = Cohort::listing_entry(state, &plan).is_some();
        let matches = cohort.matches(state, now);
        assert!(
            found || !matches,
            "{cohort:?} matches but its plan {plan:?} misses every entry of {:?}",
            index_entries(state)
        );
        found && matches
    }

    fn referral_requested(id: &str, service: &str, day: i64, respond_by_day: i64) -> CareEvent {
        fixtures::referral_requested(NHS, id, service, T0 + day * DAY, T0 + respond_by_day * DAY)
    }

    fn referral_accepted(id: &str, day: i64) -> CareEvent {
        fixtures::referral_accepted(NHS, id, T0 + day * DAY)
    }

    #[test]
    fn an_inpatient_is_in_the_hospital_ward_cohorts() {
        let state = state_of(vec![admitted(NHS, "V1", T0, "WARD-7")]);
        let now = at(1);
        for c in [
            place(None, None, None),
            place(Some(CareSetting::Hospital), None, None),
            place(Some(CareSetting::Hospital), Some("RXX"), Some("WARD-7")),
            place(None, None, Some("WARD-7")),
        ] {
            assert!(listed(&c, &state, now), "{c:?}");
        }
        for c in [
            place(Some(CareSetting::VirtualWard), None, None),
            place(None, Some("RYY"), None),
            place(None, None, Some("WARD-8")),
        ] {
            assert!(!listed(&c, &state, now), "{c:?}");
        }
        assert!(
            index_entries(&state)
                .iter()
                .all(|e| Cohort::key_of_entry(e) == NHS)
        );
    }

    #[test]
    fn a_virtual_ward_patient_is_listed_by_the_virtual_ward_and_pathway() {
        let state = state_of(vec![
            admitted(NHS, "V1", T0, "WARD-7"),
            discharged(NHS, "V1", T0 + DAY, DischargeDestination::VirtualWard),
            virtual_ward_started(NHS, "VW-1", T0 + 2 * DAY, "VW-FRAIL"),
        ]);
        let now = at(3);
        assert!(listed(
            &place(
                Some(CareSetting::VirtualWard),
                Some("RXX"),
                Some("VW-FRAIL")
            ),
            &state,
            now
        ));
        assert!(!listed(&place(None, None, Some("WARD-7")), &state, now));
        let on_ward = Cohort {
            virtual_ward: Some("VW-FRAIL".into()),
            ..Cohort::default()
        };
        assert!(listed(&on_ward, &state, now));
        let on_other = Cohort {
            virtual_ward: Some("VW-RESP".into()),
            ..Cohort::default()
        };
        assert!(!listed(&on_other, &state, now));
        let episode = &state.episodes[0];
        let frailty_pathway = Cohort {
            pathway: Some(episode.pathway()),
            ..Cohort::default()
        };
        assert!(listed(&frailty_pathway, &state, now));
        let heart_failure = Cohort {
            pathway: Some(Pathway::HeartFailure),
            ..Cohort::default()
        };
        assert!(!listed(&heart_failure, &state, now));
        // Discharged a day after T0: the discharged range finds them.
        let discharged_then = Cohort {
            discharged: Some(DayRange {
                from: Some(T0 / DAY + 1),
                to: Some(T0 / DAY + 1),
            }),
            ..Cohort::default()
        };
        assert!(listed(&discharged_then, &state, now));
        let discharged_later = Cohort {
            discharged: Some(DayRange {
                from: Some(T0 / DAY + 2),
                to: None,
            }),
            ..Cohort::default()
        };
        assert!(!listed(&discharged_later, &state, now));
    }

    #[test]
    fn frailty_is_listed_by_score_and_setting_and_age_only_excludes_the_known_young() {
        let mut state = state_of(vec![
            admitted(NHS, "V1", T0, "WARD-7"),
            frailty_assessed(NHS, T0 + 60, 6),
        ]);
        let now = at(1);
        let frail_in_hospital = |min| Cohort {
            setting: Some(CareSetting::Hospital),
            min_frailty_score: Some(min),
            ..Cohort::default()
        };
        assert!(listed(&frail_in_hospital(6), &state, now));
        assert!(listed(&frail_in_hospital(5), &state, now));
        assert!(!listed(&frail_in_hospital(7), &state, now));
        let frail_at_home = Cohort {
            setting: Some(CareSetting::Community),
            min_frailty_score: Some(5),
            ..Cohort::default()
        };
        assert!(!listed(&frail_at_home, &state, now));

        let over_65 = Cohort {
            min_age_years: Some(65),
            ..frail_in_hospital(6)
        };
        state.demographics.get_or_insert_default().birth_date = None;
        assert!(listed(&over_65, &state, now), "no birth date: not excluded");
        // 65 on 2026-03-03, the day after `now`.
        state.demographics.get_or_insert_default().birth_date = Some(Date {
            year: 1961,
            month: 3,
            day: 4,
        });
        assert!(!listed(&over_65, &state, now));
        assert!(listed(&over_65, &state, at(2)));
        assert!(over_65.depends_on_time());
    }

    #[test]
    fn referrals_are_listed_by_service_and_status_once_and_overdue_by_time() {
        let state = state_of(vec![
            referral_requested("R1", "FRAILTY", 0, 2),
            referral_requested("R2", "FRAILTY", 0, 10),
            referral_accepted("R2", 1),
            referral_requested("R3", "FALLS", 0, 1),
        ]);
        let open = Cohort {
            referral: Some(ReferralCriterion {
                service: "FRAILTY".into(),
                statuses: vec![ReferralStatus::Requested, ReferralStatus::Accepted],
                overdue: false,
            }),
            ..Cohort::default()
        };
        let plan = open.plan(at(1));
        assert_eq!(plan.len(), 2, "{plan:?}");
        let in_plan: Vec<String> = index_entries(&state)
            .into_iter()
            .filter(|e| plan.iter().any(|r| r.contains(e)))
            .collect();
        assert_eq!(in_plan.len(), 2, "one entry per status: {in_plan:?}");
        assert!(listed(&open, &state, at(1)));
        assert_eq!(
            Cohort::listing_entry(&state, &plan).as_deref(),
            in_plan.iter().min().map(String::as_str)
        );

        let overdue = Cohort {
            referral: Some(ReferralCriterion {
                overdue: true,
                ..open.referral.clone().unwrap()
            }),
            ..Cohort::default()
        };
        assert!(!listed(&overdue, &state, at(1)), "R1 is due on day 2");
        assert!(listed(&overdue, &state, at(3)));
        assert!(overdue.depends_on_time());
        let accepted_only = Cohort {
            referral: Some(ReferralCriterion {
                service: "FALLS".into(),
                statuses: vec![ReferralStatus::Accepted],
                overdue: false,
            }),
            ..Cohort::default()
        };
        assert!(!listed(&accepted_only, &state, at(3)));
    }

    #[test]
    fn medically_optimised_patients_are_listed_by_days_waiting_and_expected_discharge() {
        let state = state_of(vec![
            admitted(NHS, "V1", T0, "WARD-7"),
            medically_optimised(NHS, "V1", T0 + DAY),
            expected_discharge_date_set(NHS, "V1", T0 + DAY, date_after(at(4), 0)),
        ]);
        let waiting = |days| Cohort {
            setting: Some(CareSetting::Hospital),
            min_days_optimised: Some(days),
            ..Cohort::default()
        };
        assert!(listed(&waiting(0), &state, at(1)));
        assert!(!listed(&waiting(2), &state, at(2)), "one day optimised");
        assert!(listed(&waiting(2), &state, at(3)));
        let due = |from: i64, to: i64| Cohort {
            expected_discharge: Some(DayRange {
                from: Some(T0 / DAY + from),
                to: Some(T0 / DAY + to),
            }),
            ..Cohort::default()
        };
        assert!(listed(&due(4, 4), &state, at(1)));
        assert!(listed(&due(3, 5), &state, at(1)));
        assert!(!listed(&due(5, 6), &state, at(1)));

        let home = state_of(vec![
            admitted(NHS, "V1", T0, "WARD-7"),
            medically_optimised(NHS, "V1", T0 + DAY),
            discharged(NHS, "V1", T0 + 2 * DAY, DischargeDestination::Home),
        ]);
        assert!(
            !listed(&waiting(0), &home, at(3)),
            "discharged: no longer waiting"
        );
    }

    #[test]
    fn filters_are_checked_and_normalised() {
        let filter = CohortFilter {
            setting: CareSetting::VirtualWard as i32,
            organisation: " rxx ".into(),
            ..Default::default()
        };
        assert_eq!(
            Cohort::from_filter(&filter, "filter").unwrap(),
            place(Some(CareSetting::VirtualWard), Some("RXX"), None)
        );
        let refused = |filter: CohortFilter| Cohort::from_filter(&filter, "filter").unwrap_err();
        let violation = refused(CohortFilter {
            setting: 99,
            ..Default::default()
        });
        assert_eq!(violation.field, "filter.setting");
        assert!(violation.problem.contains("virtual-ward"), "{violation}");
        let violation = refused(CohortFilter {
            min_frailty_score: 10,
            ..Default::default()
        });
        assert_eq!(violation.field, "filter.min_frailty_score");
        let violation = refused(CohortFilter {
            referral: Some(baton_proto::query::v1::ReferralCriterion::default()),
            ..Default::default()
        });
        assert_eq!(violation.field, "filter.referral.service");
        let violation = refused(CohortFilter {
            referral: Some(baton_proto::query::v1::ReferralCriterion {
                service: "S".into(),
                statuses: vec![ReferralStatus::Accepted as i32],
                overdue: true,
            }),
            ..Default::default()
        });
        assert_eq!(violation.field, "filter.referral.overdue");
        let violation = refused(CohortFilter {
            expected_discharge: Some(DateRange {
                from: Some(parse_date("2026-03-05").unwrap()),
                to: Some(parse_date("2026-03-04").unwrap()),
            }),
            ..Default::default()
        });
        assert_eq!(violation.field, "filter.expected_discharge");
        assert!(violation.problem.contains("after"), "{violation}");
        let violation = refused(CohortFilter {
            discharged: Some(DateRange {
                from: Some(Date {
                    year: 2026,
                    month: 2,
                    day: 30,
                }),
                to: None,
            }),
            ..Default::default()
        });
        assert_eq!(violation.field, "filter.discharged.from");
        let default_statuses = Cohort::from_filter(
            &CohortFilter {
                referral: Some(baton_proto::query::v1::ReferralCriterion {
                    service: " FRAILTY ".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "filter",
        )
        .unwrap();
        assert_eq!(
            default_statuses.referral.unwrap(),
            ReferralCriterion {
                service: "FRAILTY".into(),
                statuses: vec![ReferralStatus::Requested, ReferralStatus::Accepted],
                overdue: false
            }
        );
    }

    #[test]
    fn names_parse_in_every_spelling() {
        for text in ["virtual-ward", "VIRTUAL_WARD", "CARE_SETTING_VIRTUAL_WARD"] {
            assert_eq!(parse_setting(text).unwrap(), CareSetting::VirtualWard);
        }
        let error = parse_setting("ward").unwrap_err();
        assert!(error.contains("hospital-leave"), "{error}");
        assert!(parse_setting("unspecified").is_err());
        assert_eq!(
            parse_pathway("heart-failure").unwrap(),
            Pathway::HeartFailure
        );
        assert_eq!(
            parse_referral_status("accepted").unwrap(),
            ReferralStatus::Accepted
        );
        assert!(parse_date("2026-02-29").is_err());
        assert_eq!(parse_date("2028-02-29").unwrap().day, 29);
        assert!(parse_date("26-02-01").is_err());
    }

    #[test]
    fn fingerprints_tell_filters_apart() {
        let a = place(Some(CareSetting::Hospital), None, None);
        let b = place(Some(CareSetting::Community), None, None);
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
        assert_ne!(a.fingerprint(), b.fingerprint());
    }
}
