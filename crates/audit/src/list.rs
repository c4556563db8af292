//! Reading audit records back: `baton audit --patient X` reads the one
//! partition a patient's records are in, `--client Y` every partition.
//! The log is scanned, not indexed: an audit question is rare, and the
//! log is the record.

use std::collections::BTreeMap;
use std::time::Duration;

use baton_care::PatientKey;
use baton_log::{EventLog, LogError, partition_for_key};
use prost::Message;

use crate::AuditRecord;

const PAGE_TOKEN_PREFIX: &str = "a1:";

/// Which records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// About this patient key.
    pub patient_key: Option<String>,
    /// Of this client id.
    pub client_id: Option<String>,
    /// At or after this time (seconds since 1970).
    pub since: Option<i64>,
}

impl AuditFilter {
    fn matches(&self, record: &AuditRecord) -> bool {
        self.patient_key
            .as_ref()
            .is_none_or(|key| &record.patient_key == key)
            && self
                .client_id
                .as_ref()
                .is_none_or(|client| &record.client_id == client)
            && self
                .since
                .is_none_or(|since| record.at.as_ref().is_some_and(|at| at.seconds >= since))
    }
}

/// One page of records, oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditPage {
    pub records: Vec<AuditRecord>,
    /// Empty on the last page.
    pub next_page_token: String,
    /// Records read to find these.
    pub scanned: u64,
}

/// The patient key `text` names: an NHS number (spaces allowed), a patient
/// key or `AUTHORITY:LOCAL-ID`.
pub fn patient_key_of(text: &str) -> Result<String, String> {
    let text = text.trim();
    let text = if text.contains(':') {
        text.to_owned()
    } else {
        text.replace(' ', "")
    };
    PatientKey::parse(&text).map(PatientKey::into_string)
}

/// Up to `limit` records of `topic` that `filter` matches, from where
/// `page_token` (empty: the start) says.
pub async fn list(
    log: &dyn EventLog,
    topic: &str,
    filter: &AuditFilter,
    limit: usize,
    page_token: &str,
) -> Result<AuditPage, ListError> {
    let limit = limit.max(1);
    let partitions = match log.partition_count(topic).await {
        Ok(partitions) => partitions,
        // Nothing was ever audited here.
        Err(LogError::UnknownTopic { .. }) => return Ok(AuditPage::default()),
        Err(error) => return Err(ListError::Log(error)),
    };
    let ends = log.end_offsets(topic).await.map_err(ListError::Log)?;
    let in_scope: Vec<u32> = match &filter.patient_key {
        Some(key) => vec![partition_for_key(key.as_bytes(), partitions)],
        None => (0..partitions).collect(),
    };
    let mut from = parse_page_token(page_token)?;
    for partition in &in_scope {
        from.entry(*partition).or_insert(0);
    }
    from.retain(|partition, _| in_scope.contains(partition));
    let mut page = AuditPage::default();
    for &partition in &in_scope {
        let end = ends.get(partition as usize).copied().unwrap_or(0);
        let start = from[&partition].min(end);
        if start >= end {
            from.insert(partition, end);
            continue;
        }
        let mut reader = log
            .reader(topic, BTreeMap::from([(partition, start)]))
            .await
            .map_err(ListError::Log)?;
        let mut next = start;
        'partition: while next < end {
            let batch = reader
                .next_batch(1000, Duration::from_millis(500))
                .await
                .map_err(ListError::Log)?;
            if batch.is_empty() {
                break;
            }
            for record in batch {
                if record.offset >= end {
                    break 'partition;
                }
                next = record.offset + 1;
                page.scanned += 1;
                let Ok(audit) = AuditRecord::decode(record.value.as_slice()) else {
                    tracing::warn!(
                        partition,
                        offset = record.offset,
                        "an audit record does not decode; skipped"
                    );
                    continue;
                };
                if filter.matches(&audit) {
                    page.records.push(audit);
                    if page.records.len() == limit {
                        from.insert(partition, next);
                        if from.iter().any(|(p, offset)| {
                            *offset < ends.get(*p as usize).copied().unwrap_or(0)
                        }) {
                            page.next_page_token = page_token_of(&from);
                        }
                        sort(&mut page.records);
                        return Ok(page);
                    }
                }
            }
        }
        from.insert(partition, end.max(next));
    }
    sort(&mut page.records);
    Ok(page)
}

/// Oldest first across partitions.
fn sort(records: &mut [AuditRecord]) {
    records.sort_by_key(|record| {
        record
            .at
            .as_ref()
            .map_or((i64::MIN, 0), |at| (at.seconds, at.nanos))
    });
}

fn page_token_of(from: &BTreeMap<u32, u64>) -> String {
    let positions: Vec<String> = from
        .iter()
        .map(|(partition, offset)| format!("{partition}={offset}"))
        .collect();
    format!("{PAGE_TOKEN_PREFIX}{}", positions.join(","))
}

fn parse_page_token(token: &str) -> Result<BTreeMap<u32, u64>, ListError> {
    let token = token.trim();
    if token.is_empty() {
        return Ok(BTreeMap::new());
    }
    let invalid = || ListError::PageToken(token.to_owned());
    let rest = token.strip_prefix(PAGE_TOKEN_PREFIX).ok_or_else(invalid)?;
    rest.split(',')
        .map(|pair| {
            let (partition, offset) = pair.split_once('=').ok_or_else(invalid)?;
            Ok((
                partition.parse().map_err(|_| invalid())?,
                offset.parse().map_err(|_| invalid())?,
            ))
        })
        .collect()
}

/// Why records could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("page_token: {0:?} is not a page token from a previous ListAuditRecords response")]
    PageToken(String),
    #[error("audit log: {0}")]
    Log(LogError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_forgeries_are_named() {
        let from = BTreeMap::from([(0, 12), (3, 40)]);
        assert_eq!(parse_page_token(&page_token_of(&from)).unwrap(), from);
        for forged in ["x", "a1:0", "a1:0=x", "v1:0=1"] {
            assert!(matches!(
                parse_page_token(forged),
                Err(ListError::PageToken(_))
            ));
        }
    }

    #[test]
    fn patients_are_named_as_people_write_them() {
        assert_eq!(patient_key_of("943 476 5919").unwrap(), "9434765919");
        assert_eq!(patient_key_of(" RXX:H123 ").unwrap(), "RXX:H123");
        assert!(patient_key_of("9434765918").is_err());
    }
}
