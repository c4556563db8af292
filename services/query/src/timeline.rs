//! Every patient's events, filed by clinical time, for `GetTimeline` and
//! `GetCareStateAsOf`.
//!
//! [`TimelineIndexer`] reads the event log (`baton.care-events.v1`) from the
//! positions held in the query's store and files each event under its
//! patient key and `occurred_at`, in one sled batch with the positions
//! ([`timeline_positions_topic`]): after a crash it resumes there, and a
//! record filed twice is written again unchanged. It files every event
//! that decodes; which of them were applied is decided when the timeline is
//! read, by folding the patient's filed events again in log order up to the
//! state's own position (`history`), so an event the projector
//! dead-lettered, or a duplicate, never shows.
//!
//! The projector's fold stays as it was: the timeline costs the query side
//! one more reader of the log and the events' bytes on its disk.

use std::future::Future;
use std::sync::Arc;

use baton_log::topics::Topics;
use baton_log::{EventLog, Record};
use baton_proto::events::v1::CareEvent;
use baton_store::{Commit, Store, TimelineRecord};
use prost::Message;

use crate::QueryError;
use crate::follow::{self, Follow};

/// The name the indexer's positions in the event log are stored under: the
/// events topic with a suffix no Kafka topic name can have, so they never
/// mix with the projector's positions in the same store.
pub fn timeline_positions_topic(events_topic: &str) -> String {
    format!("{events_topic}#timeline")
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimelineStats {
    pub records: u64,
    pub filed: u64,
    /// Records with no patient key, no clinical time or no decodable
    /// event: the projector dead-letters them, so no state includes them.
    pub skipped: u64,
}

/// Files the event log's events on their patients' timelines.
#[derive(Debug)]
pub struct TimelineIndexer {
    log: Arc<dyn EventLog>,
    store: Store,
    events_topic: String,
    positions_topic: String,
    stats: TimelineStats,
}

impl TimelineIndexer {
    /// Creates the topics if missing, and ties the store's timeline to this
    /// log.
    pub async fn start(
        log: Arc<dyn EventLog>,
        store: Store,
        topics: &Topics,
    ) -> Result<Self, QueryError> {
        topics.ensure(&*log).await?;
        let positions_topic = timeline_positions_topic(&topics.events);
        store.bind_source(&positions_topic, &log.identity().await?)?;
        Ok(Self {
            log,
            store,
            events_topic: topics.events.clone(),
            positions_topic,
            stats: TimelineStats::default(),
        })
    }

    pub fn stats(&self) -> TimelineStats {
        self.stats
    }

    /// Files the event log up to its end as it is when called.
    pub async fn catch_up(&mut self) -> Result<TimelineStats, QueryError> {
        follow::catch_up(self).await?;
        tracing::info!(stats = ?self.stats, "timeline caught up with the event log");
        Ok(self.stats)
    }

    /// Follows the event log until `shutdown` completes.
    pub async fn run(
        &mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<TimelineStats, QueryError> {
        follow::follow(self, shutdown).await?;
        Ok(self.stats)
    }
}

/// Rebuilds the timeline into a new store generation during a replay, so
/// the generation swapped in answers `GetTimeline` and `GetCareStateAsOf`
/// as the old one did (`baton up`, where the timeline shares the
/// projector's store).
#[derive(Debug, Clone)]
pub struct TimelineRebuild {
    log: Arc<dyn EventLog>,
    topics: Topics,
}

impl TimelineRebuild {
    pub fn new(log: Arc<dyn EventLog>, topics: Topics) -> Self {
        Self { log, topics }
    }
}

#[async_trait::async_trait]
impl baton_projector::RebuildFactory for TimelineRebuild {
    fn name(&self) -> &'static str {
        "timeline"
    }

    async fn rebuild(&self, store: Store) -> Result<Box<dyn baton_projector::Rebuild>, String> {
        let indexer = TimelineIndexer::start(Arc::clone(&self.log), store, &self.topics)
            .await
            .map_err(|error| error.to_string())?;
        Ok(Box::new(indexer))
    }
}

#[async_trait::async_trait]
impl baton_projector::Rebuild for TimelineIndexer {
    async fn catch_up(&mut self) -> Result<(), String> {
        follow::catch_up(self)
            .await
            .map_err(|error| error.to_string())
    }
}

impl Follow for TimelineIndexer {
    fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    fn store(&self) -> &Store {
        &self.store
    }

    fn topic(&self) -> &str {
        &self.events_topic
    }

    fn positions_topic(&self) -> &str {
        &self.positions_topic
    }

    async fn apply(&mut self, records: Vec<Record>) -> Result<(), QueryError> {
        let store = self.store.clone();
        let positions_topic = self.positions_topic.clone();
        let mut stats = self.stats;
        let stats = tokio::task::spawn_blocking(move || {
            let commit = file_batch(&positions_topic, &records, &mut stats);
            store.commit(&commit).map(|()| stats)
        })
        .await
        .map_err(|error| QueryError::Materialise(format!("a store task failed: {error}")))??;
        self.stats = stats;
        Ok(())
    }
}

/// One commit filing every record of the batch that can be filed.
fn file_batch(positions_topic: &str, records: &[Record], stats: &mut TimelineStats) -> Commit {
    let mut commit = Commit::new(positions_topic);
    for record in records {
        stats.records += 1;
        commit.positions.insert(record.partition, record.offset + 1);
        match timeline_record(record) {
            Ok(filed) => {
                stats.filed += 1;
                commit.timeline.push(filed);
            }
            Err(reason) => {
                stats.skipped += 1;
                tracing::debug!(
                    partition = record.partition,
                    offset = record.offset,
                    reason,
                    "not filed on a timeline"
                );
            }
        }
    }
    commit
}

fn timeline_record(record: &Record) -> Result<TimelineRecord, &'static str> {
    let patient_key = std::str::from_utf8(&record.key)
        .ok()
        .filter(|key| !key.is_empty() && !key.contains('\u{1f}'))
        .ok_or("the record key is not a patient key")?;
    let event = CareEvent::decode(record.value.as_slice()).map_err(|_| "not a CareEvent")?;
    let occurred = event.occurred_at.ok_or("no occurred_at")?;
    Ok(TimelineRecord {
        patient_key: patient_key.to_owned(),
        occurred_seconds: occurred.seconds,
        occurred_nanos: occurred.nanos,
        partition: record.partition,
        offset: record.offset,
        event: record.value.clone(),
    })
}
