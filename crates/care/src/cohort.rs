//! Cohorts: who is where. A [`Cohort`] is a validated filter (care setting,
//! organisation, ward); it answers [`Cohort::matches`] for one state, and
//! names the index it can be listed from, so a store can page through a
//! cohort without reading every patient.
//!
//! Every state that is not merged away has one index entry per combination
//! of the three criteria (eight in all), each ending in the patient key, so
//! any cohort is a single ordered prefix scan.

use baton_proto::events::v1::EpisodeType;
use baton_proto::query::v1::CohortFilter;
use baton_proto::state::v1::{CareSetting, PatientCareState};

use crate::FieldViolation;

/// Separates the parts of an index entry. Not allowed in ODS codes or ward
/// names by validation upstream, and escaped here regardless.
const SEPARATOR: char = '\u{1f}';

/// A validated cohort filter; an empty one is every current patient.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cohort {
    pub setting: Option<CareSetting>,
    pub organisation: Option<String>,
    pub ward: Option<String>,
}

impl Cohort {
    /// Checks a filter from the query API; `field` prefixes violations.
    pub fn from_filter(filter: &CohortFilter, field: &str) -> Result<Self, FieldViolation> {
        let setting = match CareSetting::try_from(filter.setting) {
            Ok(CareSetting::Unspecified) => None,
            Ok(setting) => Some(setting),
            Err(_) => {
                return Err(FieldViolation::new(
                    format!("{field}.setting"),
                    format!(
                        "unknown care setting {}; expected one of {}",
                        filter.setting,
                        setting_names().join(", ")
                    ),
                ));
            }
        };
        let text = |value: &str| {
            let value = value.trim();
            (!value.is_empty()).then(|| value.to_owned())
        };
        Ok(Self {
            setting,
            organisation: text(&filter.organisation).map(|o| o.to_ascii_uppercase()),
            ward: text(&filter.ward),
        })
    }

    pub fn matches(&self, state: &PatientCareState) -> bool {
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
    }

    /// The index prefix listing exactly this cohort, ordered by patient key.
    pub fn index_prefix(&self) -> String {
        entry(
            self.setting.map(|s| s.as_str_name()),
            self.organisation.as_deref(),
            self.ward.as_deref(),
            None,
        )
    }

    /// The patient key an index entry ends with.
    pub fn key_of_entry(entry: &str) -> &str {
        entry.rsplit(SEPARATOR).next().unwrap_or(entry)
    }
}

/// The index entries for a state: one per cohort it belongs to, and one per
/// local identifier it can be found by; none when it was merged into another.
pub fn index_entries(state: &PatientCareState) -> Vec<String> {
    if state.merged_into.is_some() {
        return Vec::new();
    }
    let place = Place::of(state);
    let setting = place.setting.as_str_name();
    let mut entries = Vec::with_capacity(8);
    for mask in 0..8u8 {
        entries.push(entry(
            (mask & 1 != 0).then_some(setting),
            (mask & 2 != 0).then_some(place.organisation),
            (mask & 4 != 0).then_some(place.ward),
            Some(&state.patient_key),
        ));
    }
    if let Some(identity) = &state.identity {
        for local in &identity.local_ids {
            let local = format!("{}:{}", local.authority, local.value);
            if local != state.patient_key {
                entries.push(format!(
                    "{}{}",
                    identifier_prefix(&local),
                    state.patient_key
                ));
            }
        }
    }
    entries
}

/// The index prefix under which a patient is found by a local identifier
/// (`AUTHORITY:VALUE`) that is not their key, e.g. the hospital number of a
/// patient keyed by NHS number.
pub fn identifier_prefix(local_id: &str) -> String {
    format!("l{SEPARATOR}{}{SEPARATOR}", escape(local_id))
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

fn entry(
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

/// The names a user may give a care setting, e.g. `virtual-ward`.
pub fn setting_names() -> Vec<String> {
    (1..)
        .map_while(|n| CareSetting::try_from(n).ok())
        .map(setting_name)
        .collect()
}

/// `CARE_SETTING_VIRTUAL_WARD` → `virtual-ward`.
pub fn setting_name(setting: CareSetting) -> String {
    setting
        .as_str_name()
        .trim_start_matches("CARE_SETTING_")
        .to_ascii_lowercase()
        .replace('_', "-")
}

/// Parses `virtual-ward`, `VIRTUAL_WARD` or `CARE_SETTING_VIRTUAL_WARD`.
pub fn parse_setting(text: &str) -> Result<CareSetting, String> {
    let normalised = text.trim().to_ascii_uppercase().replace('-', "_");
    let name = if normalised.starts_with("CARE_SETTING_") {
        normalised
    } else {
        format!("CARE_SETTING_{normalised}")
    };
    CareSetting::from_str_name(&name)
        .filter(|s| *s != CareSetting::Unspecified)
        .ok_or_else(|| {
            format!(
                "unknown care setting {text:?}; expected one of {}",
                setting_names().join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{admitted, discharged, state_of, virtual_ward_started};
    use baton_proto::events::v1::DischargeDestination;

    fn cohort(
        setting: Option<CareSetting>,
        organisation: Option<&str>,
        ward: Option<&str>,
    ) -> Cohort {
        Cohort {
            setting,
            organisation: organisation.map(str::to_owned),
            ward: ward.map(str::to_owned),
        }
    }

    #[test]
    fn an_inpatient_is_in_the_hospital_ward_cohorts() {
        let state = state_of(vec![admitted("9434765919", "V1", 100, "WARD-7")]);
        let entries = index_entries(&state);
        assert_eq!(entries.len(), 8, "{entries:?}");
        for c in [
            cohort(None, None, None),
            cohort(Some(CareSetting::Hospital), None, None),
            cohort(Some(CareSetting::Hospital), Some("RXX"), Some("WARD-7")),
            cohort(None, None, Some("WARD-7")),
        ] {
            assert!(c.matches(&state), "{c:?}");
            let prefix = c.index_prefix();
            assert!(
                entries.iter().any(|e| e.starts_with(&prefix)),
                "{c:?} {prefix:?}"
            );
        }
        for c in [
            cohort(Some(CareSetting::VirtualWard), None, None),
            cohort(None, Some("RYY"), None),
            cohort(None, None, Some("WARD-8")),
        ] {
            assert!(!c.matches(&state), "{c:?}");
            let prefix = c.index_prefix();
            assert!(!entries.iter().any(|e| e.starts_with(&prefix)), "{c:?}");
        }
        assert!(
            entries
                .iter()
                .all(|e| Cohort::key_of_entry(e) == "9434765919")
        );
    }

    #[test]
    fn a_virtual_ward_patient_is_listed_by_the_virtual_ward_id() {
        let state = state_of(vec![
            admitted("9434765919", "V1", 100, "WARD-7"),
            discharged("9434765919", "V1", 200, DischargeDestination::VirtualWard),
            virtual_ward_started("9434765919", "VW-1", 300, "VW-FRAIL"),
        ]);
        assert!(
            cohort(
                Some(CareSetting::VirtualWard),
                Some("RXX"),
                Some("VW-FRAIL")
            )
            .matches(&state)
        );
        assert!(!cohort(None, None, Some("WARD-7")).matches(&state));
    }

    #[test]
    fn filters_are_checked_and_normalised() {
        let filter = CohortFilter {
            setting: CareSetting::VirtualWard as i32,
            organisation: " rxx ".into(),
            ward: String::new(),
        };
        assert_eq!(
            Cohort::from_filter(&filter, "filter").unwrap(),
            cohort(Some(CareSetting::VirtualWard), Some("RXX"), None)
        );
        let bad = CohortFilter {
            setting: 99,
            ..Default::default()
        };
        let violation = Cohort::from_filter(&bad, "filter").unwrap_err();
        assert_eq!(violation.field, "filter.setting");
        assert!(violation.problem.contains("virtual-ward"), "{violation}");
    }

    #[test]
    fn settings_parse_in_every_spelling() {
        for text in ["virtual-ward", "VIRTUAL_WARD", "CARE_SETTING_VIRTUAL_WARD"] {
            assert_eq!(parse_setting(text).unwrap(), CareSetting::VirtualWard);
        }
        let error = parse_setting("ward").unwrap_err();
        assert!(error.contains("hospital-leave"), "{error}");
        assert!(parse_setting("unspecified").is_err());
    }
}
