//! Contract checks of [`crate::lag()`]: every backend must give figures that
//! agree with its own end offsets and record timestamps.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::{append, end_offsets, read_exactly, reader, topic_with};
use crate::{EventLog, NewRecord, PartitionLag};

fn records(partition: u32, count: usize) -> Vec<NewRecord> {
    (0..count)
        .map(|i| NewRecord::new(format!("k{i}"), format!("v{i}")).to_partition(partition))
        .collect()
}

async fn lag_of(
    log: &dyn EventLog,
    topic: &str,
    applied: &BTreeMap<u32, u64>,
    now: std::time::SystemTime,
) -> Vec<PartitionLag> {
    crate::lag(log, topic, applied, now)
        .await
        .unwrap_or_else(|error| panic!("lag({topic:?}, {applied:?}) failed: {error}"))
}

pub(super) async fn lag_counts_unapplied_records_and_the_age_of_the_oldest(log: Arc<dyn EventLog>) {
    let topic = topic_with(&*log, "lag", 3).await;
    // Partition 0: three records, then two more a little later, so the
    // oldest unapplied record is older than the newest.
    append(&*log, &topic, records(0, 3)).await;
    append(&*log, &topic, records(1, 2)).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    append(&*log, &topic, records(0, 2)).await;

    let mut partition_zero = reader(&*log, &topic, &[(0, 0)]).await;
    let written = read_exactly(&mut *partition_zero, 5, 10).await;
    let stamp = |offset: usize| written[offset].timestamp_ms;
    assert!(
        stamp(4) - stamp(2) >= 1_000,
        "records appended 1.1 s apart carry timestamps {} and {}",
        stamp(2),
        stamp(4)
    );
    let now_ms = stamp(4) + 30_000;
    let now = UNIX_EPOCH + Duration::from_millis(now_ms as u64);

    // Partition 0 applied up to offset 2, partition 1 all of it, partition
    // 2 (empty) never.
    let applied = BTreeMap::from([(0, 2), (1, 2)]);
    let lags = lag_of(&*log, &topic, &applied, now).await;
    let ends = end_offsets(&*log, &topic).await;
    assert_eq!(ends, vec![5, 2, 0]);
    assert_eq!(
        lags.iter().map(|lag| lag.end_offset).collect::<Vec<_>>(),
        ends,
        "lag reports the log's end offsets"
    );
    assert_eq!(
        lags[0],
        PartitionLag {
            partition: 0,
            end_offset: 5,
            applied: 2,
            events: 3,
            seconds: Some((now_ms - stamp(2)) as f64 / 1000.0),
        },
        "the age of the oldest unapplied record (offset 2), not of the newest"
    );
    assert_eq!(
        lags[1],
        PartitionLag {
            partition: 1,
            end_offset: 2,
            applied: 2,
            events: 0,
            seconds: Some(0.0),
        }
    );
    assert_eq!(
        lags[2],
        PartitionLag {
            partition: 2,
            end_offset: 0,
            applied: 0,
            events: 0,
            seconds: Some(0.0),
        }
    );

    // Nothing applied: every record of partition 0 is behind.
    let lags = lag_of(&*log, &topic, &BTreeMap::new(), now).await;
    assert_eq!(
        (lags[0].events, lags[0].seconds),
        (5, Some((now_ms - stamp(0)) as f64 / 1000.0))
    );
    assert_eq!(lags[1].events, 2);

    // A clock behind the records' never gives a negative age.
    let lags = lag_of(&*log, &topic, &applied, UNIX_EPOCH).await;
    assert_eq!(lags[0].seconds, Some(0.0));

    // Caught up everywhere, or ahead (a store built from another log).
    let caught_up = BTreeMap::from([(0, 5), (1, 9), (2, 0)]);
    let lags = lag_of(&*log, &topic, &caught_up, now).await;
    assert!(
        lags.iter()
            .all(|lag| lag.events == 0 && lag.seconds == Some(0.0)),
        "{lags:?}"
    );
    assert_eq!(lags[1].applied, 9);
}
