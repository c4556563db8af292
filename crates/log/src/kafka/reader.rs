//! [`KafkaReader`]: a consumer of explicitly assigned partitions.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use super::KafkaConfig;
use crate::{Header, LogError, LogReader, Record, Result};

/// Follows assigned partitions from explicit offsets. librdkafka prefetches
/// in the background; `next_batch` takes what has arrived.
///
/// Cancel-safe: a `next_batch` dropped while waiting loses nothing, because
/// a record leaves librdkafka's queue only when it is put in the batch
/// returned.
pub(crate) struct KafkaReader {
    topic: String,
    consumer: StreamConsumer,
    /// Next offset to return per partition.
    positions: BTreeMap<u32, u64>,
}

impl KafkaReader {
    pub(crate) fn open(
        config: &KafkaConfig,
        topic: &str,
        from: BTreeMap<u32, u64>,
    ) -> Result<Self> {
        let consumer: StreamConsumer =
            config
                .reader()
                .create()
                .map_err(|source| LogError::InvalidConfig {
                    key: "kafka.client".to_owned(),
                    reason: format!("librdkafka refused the reader settings: {source}"),
                })?;
        let mut assignment = TopicPartitionList::new();
        for (&partition, &offset) in &from {
            assignment
                .add_partition_offset(topic, partition as i32, Offset::Offset(offset as i64))
                .map_err(|source| read_error(topic, Some(partition), Some(offset), source))?;
        }
        consumer
            .assign(&assignment)
            .map_err(|source| read_error(topic, None, None, source))?;
        Ok(Self {
            topic: topic.to_owned(),
            consumer,
            positions: from,
        })
    }
}

/// Adds a received message to `batch`, moving `positions` past it, or fails
/// on an error the reader cannot get past. Transient errors (a broker
/// restarting) are logged: librdkafka reconnects and carries on by itself.
fn take(
    topic: &str,
    positions: &mut BTreeMap<u32, u64>,
    received: Result<BorrowedMessage<'_>, KafkaError>,
    batch: &mut Vec<Record>,
) -> Result<()> {
    let message = match received {
        Ok(message) => message,
        Err(error) if is_transient(&error) => {
            warn!(topic, %error, "kafka read interrupted; librdkafka retries");
            return Ok(());
        }
        Err(error) => return Err(read_error(topic, None, None, error)),
    };
    let partition = message.partition() as u32;
    let offset = message.offset() as u64;
    let Some(next) = positions.get_mut(&partition) else {
        warn!(
            topic,
            partition, offset, "record from a partition this reader was not given; ignored"
        );
        return Ok(());
    };
    if offset < *next {
        // Already returned (a fetch can repeat the start of a batch).
        return Ok(());
    }
    *next = offset + 1;
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|header| Header::new(header.key, header.value.unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    batch.push(Record {
        topic: topic.to_owned(),
        partition,
        offset,
        key: message.key().unwrap_or_default().to_vec(),
        value: message.payload().unwrap_or_default().to_vec(),
        headers,
        timestamp_ms: message.timestamp().to_millis().unwrap_or_default(),
    });
    Ok(())
}

/// Errors librdkafka recovers from by itself (reconnecting, finding the
/// new leader); anything else stops the reader.
fn is_transient(error: &KafkaError) -> bool {
    let code = match error {
        KafkaError::MessageConsumption(code) | KafkaError::Global(code) => *code,
        _ => return false,
    };
    matches!(
        code,
        RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::NetworkException
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::NotLeaderForPartition
            | RDKafkaErrorCode::LeaderNotAvailable
            | RDKafkaErrorCode::Resolve
            | RDKafkaErrorCode::BrokerNotAvailable
    )
}

fn read_error(
    topic: &str,
    partition: Option<u32>,
    offset: Option<u64>,
    source: KafkaError,
) -> LogError {
    LogError::kafka("read", Some(topic), partition, offset, source)
}

impl fmt::Debug for KafkaReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaReader")
            .field("topic", &self.topic)
            .field("positions", &self.positions)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl LogReader for KafkaReader {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        if self.positions.is_empty() {
            // Nothing assigned: nothing will ever arrive.
            tokio::time::sleep(wait).await;
            return Ok(Vec::new());
        }
        let Self {
            topic,
            consumer,
            positions,
        } = self;
        let mut batch = Vec::new();
        let Ok(first) = tokio::time::timeout(wait, consumer.recv()).await else {
            return Ok(batch);
        };
        take(topic, positions, first, &mut batch)?;
        while batch.len() < max {
            let Some(received) = consumer.recv().now_or_never() else {
                break;
            };
            take(topic, positions, received, &mut batch)?;
        }
        Ok(batch)
    }

    fn positions(&self) -> BTreeMap<u32, u64> {
        self.positions.clone()
    }
}
