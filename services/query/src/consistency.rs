//! Read-your-writes: waiting, within the call's deadline, until the store
//! has applied what a consistency token names.

use std::collections::BTreeMap;
use std::time::Duration;

use baton_log::ConsistencyToken;
use baton_store::Store;
use tokio::time::Instant;
use tonic::Status;
use tonic::metadata::MetadataMap;

/// The header in which gRPC clients send their deadline.
const GRPC_TIMEOUT: &str = "grpc-timeout";

/// How long a call may wait for its token, and why it would stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WaitBudget {
    until: Instant,
    /// The call's own deadline ends the wait (rather than the service's
    /// longest wait).
    by_deadline: bool,
    budget: Duration,
}

impl WaitBudget {
    /// The smaller of the call's deadline (less a margin, so the answer
    /// reaches the client before it gives up) and `max_wait`.
    pub(crate) fn of(metadata: &MetadataMap, max_wait: Duration) -> Self {
        let deadline = metadata
            .get(GRPC_TIMEOUT)
            .and_then(|value| value.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map(|timeout| timeout.saturating_sub((timeout / 10).min(Duration::from_millis(50))));
        let (budget, by_deadline) = match deadline {
            Some(deadline) if deadline < max_wait => (deadline, true),
            _ => (max_wait, false),
        };
        Self {
            until: Instant::now() + budget,
            by_deadline,
            budget,
        }
    }
}

/// Waits until `store` has applied everything `token` names in each of
/// `topics` (positions stored under those names).
pub(crate) async fn wait_for(
    store: &Store,
    topics: &[&str],
    token: &ConsistencyToken,
    budget: WaitBudget,
) -> Result<(), Status> {
    if token.is_empty() {
        return Ok(());
    }
    for topic in topics {
        let mut applied = store.watch(topic);
        let reached = tokio::time::timeout_at(
            budget.until,
            applied.wait_for(|applied| token.is_satisfied_by(applied)),
        )
        .await
        .map(|waited| waited.map(drop));
        match reached {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(Status::unavailable("the projection store is closing")),
            Err(_) => {
                let missing = missing(token, &applied.borrow());
                return Err(if budget.by_deadline {
                    Status::deadline_exceeded(format!(
                        "the call's deadline ({} ms) passed before the projection applied consistency token {token} ({missing}): the projector is behind; retry with a longer deadline",
                        budget.budget.as_millis()
                    ))
                } else {
                    Status::failed_precondition(format!(
                        "the projection has not applied consistency token {token} within this service's longest wait of {} ms ({missing}): retry, and check that the projector is running and reads the log the token came from",
                        budget.budget.as_millis()
                    ))
                });
            }
        }
    }
    Ok(())
}

/// `partition 0 applied below offset 5, the token needs offset 9`.
fn missing(token: &ConsistencyToken, applied: &BTreeMap<u32, u64>) -> String {
    token
        .last_written()
        .iter()
        .filter_map(|(partition, &offset)| {
            let next = applied.get(partition).copied().unwrap_or(0);
            (next <= offset).then(|| {
                format!("partition {partition} applied below offset {next}, the token needs offset {offset}")
            })
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// gRPC's `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(text: &str) -> Option<Duration> {
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value * 3600),
        "M" => Duration::from_secs(value * 60),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit_and_refuse_the_rest() {
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("150m"), Some(Duration::from_millis(150)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5u"), Some(Duration::from_micros(5)));
        for bad in ["", "S", "123456789S", "1x", "-1S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_nearer_of_deadline_and_longest_wait_bounds_the_wait() {
        let mut metadata = MetadataMap::new();
        let max = Duration::from_secs(5);
        assert!(!WaitBudget::of(&metadata, max).by_deadline);
        metadata.insert(GRPC_TIMEOUT, "1S".parse().unwrap());
        let budget = WaitBudget::of(&metadata, max);
        assert!(budget.by_deadline);
        assert_eq!(budget.budget, Duration::from_millis(950));
        metadata.insert(GRPC_TIMEOUT, "60S".parse().unwrap());
        assert!(!WaitBudget::of(&metadata, max).by_deadline);
    }

    #[test]
    fn what_is_missing_names_each_partition_behind() {
        let token: ConsistencyToken = "v1:0=4,2=9".parse().unwrap();
        let applied = BTreeMap::from([(0, 5), (2, 3)]);
        assert_eq!(
            missing(&token, &applied),
            "partition 2 applied below offset 3, the token needs offset 9"
        );
    }
}
