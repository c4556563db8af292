//! The dead letters, for operators: listing them with their reasons,
//! showing one with its original record decoded, redriving chosen ones
//! into the events topic, and purging them from view.
//!
//! The dead-letter topic holds the projector's letters (the original
//! record's key and value, with `baton-reason` and `baton-source-*`
//! headers) and, for each redrive, one [`RedriveRecord`] (key
//! `redrive/<ms>`) saying which letters were appended again and where, so
//! a redrive is recorded in the log like everything else and a listing
//! shows what was redriven. Purging records nothing in the topic: it moves
//! the start from which letters are listed (see [`PurgeStart`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use baton_log::topics::Topics;
use baton_log::{ConsistencyToken, EventLog, NewRecord, Record};
use baton_proto::NamedMessage;
use baton_proto::admin::v1::{
    DeadLetter, DeadLetterSelection, RedriveCopy, RedriveDeadLettersResponse, RedriveRecord,
    Redriven,
};
use baton_proto::events::v1::CareEvent;
use baton_telemetry::TRACEPARENT_HEADER;
use prost::Message;

use crate::dead_letter_headers as headers;
use crate::{ProjectorError, Result};

/// Keys of redrive records start with this; patient keys never do.
pub const REDRIVE_KEY_PREFIX: &str = "redrive/";
/// Header of a redriven copy in the events topic: `<partition>/<offset>`
/// of the letter it copies.
pub const REDRIVEN_FROM_HEADER: &str = "baton-redriven-from";
const READ_BATCH: usize = 5_000;

/// Where listing starts in each partition of the dead-letter topic: letters
/// below are purged. Kept beside the log, by the backend (a consumer
/// group's committed offsets on Kafka).
#[async_trait]
pub trait PurgeStart: Send + Sync + std::fmt::Debug {
    async fn start(&self) -> Result<BTreeMap<u32, u64>>;
    async fn move_start(&self, start: BTreeMap<u32, u64>) -> Result<()>;
    /// What moving the start does, in words for the operator.
    fn effect(&self) -> String;
}

/// A letter as read, with the original record's headers.
#[derive(Debug, Clone)]
struct Letter {
    summary: DeadLetter,
    record: Record,
}

/// The dead letters of one log.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    log: Arc<dyn EventLog>,
    topics: Topics,
    purge: Arc<dyn PurgeStart>,
}

/// Everything on the dead-letter topic after the purge start.
struct Scan {
    letters: Vec<Letter>,
    /// Per letter (partition, offset), each time it was redriven.
    redriven: HashMap<(u32, u64), Vec<Redriven>>,
    ends: Vec<u64>,
}

impl DeadLetters {
    pub fn new(log: Arc<dyn EventLog>, topics: Topics, purge: Arc<dyn PurgeStart>) -> Self {
        Self { log, topics, purge }
    }

    async fn scan(&self) -> Result<Scan> {
        let topic = &self.topics.dead_letters;
        let ends = self.log.end_offsets(topic).await?;
        let start = self.purge.start().await?;
        let from: BTreeMap<u32, u64> = (0..ends.len() as u32)
            .map(|partition| {
                let start = start.get(&partition).copied().unwrap_or(0);
                (partition, start.min(ends[partition as usize]))
            })
            .collect();
        let mut scan = Scan {
            letters: Vec::new(),
            redriven: HashMap::new(),
            ends: ends.clone(),
        };
        if from.iter().all(|(&p, &offset)| offset >= ends[p as usize]) {
            return Ok(scan);
        }
        let mut reader = self.log.reader(topic, from).await?;
        loop {
            let positions = reader.positions();
            let done = ends
                .iter()
                .enumerate()
                .all(|(p, &end)| positions.get(&(p as u32)).copied().unwrap_or(0) >= end);
            if done {
                break;
            }
            for record in reader
                .next_batch(READ_BATCH, Duration::from_millis(100))
                .await?
            {
                if record.offset >= ends[record.partition as usize] {
                    continue;
                }
                if record.key.starts_with(REDRIVE_KEY_PREFIX.as_bytes()) {
                    if let Ok(redrive) = RedriveRecord::decode(record.value.as_slice()) {
                        for copy in redrive.copies {
                            scan.redriven
                                .entry((copy.dead_letter_partition, copy.dead_letter_offset))
                                .or_default()
                                .push(Redriven {
                                    at: redrive.at,
                                    partition: copy.events_partition,
                                    offset: copy.events_offset,
                                });
                        }
                    }
                    continue;
                }
                scan.letters.push(Letter {
                    summary: summarise(&record),
                    record,
                });
            }
        }
        scan.letters
            .sort_by_key(|letter| (letter.summary.partition, letter.summary.offset));
        for letter in &mut scan.letters {
            if let Some(redriven) = scan
                .redriven
                .get(&(letter.summary.partition, letter.summary.offset))
            {
                letter.summary.redriven = redriven.clone();
            }
        }
        Ok(scan)
    }

    /// Letters whose reason contains `reason_contains` (all when empty),
    /// from `after` (a `partition/offset` page token) on, at most `limit`;
    /// and the token of the next page.
    pub async fn list(
        &self,
        reason_contains: &str,
        after: Option<(u32, u64)>,
        limit: usize,
    ) -> Result<(Vec<DeadLetter>, Option<(u32, u64)>)> {
        let scan = self.scan().await?;
        let mut page = Vec::new();
        let mut next = None;
        for letter in scan.letters {
            let at = (letter.summary.partition, letter.summary.offset);
            if after.is_some_and(|after| at <= after) {
                continue;
            }
            if !letter.summary.reason.contains(reason_contains) {
                continue;
            }
            if page.len() == limit {
                next = page
                    .last()
                    .map(|last: &DeadLetter| (last.partition, last.offset));
                break;
            }
            page.push(letter.summary);
        }
        Ok((page, next))
    }

    /// One letter, with its original record decoded as a care event when
    /// it decodes.
    pub async fn get(&self, partition: u32, offset: u64) -> Result<Option<DeadLetter>> {
        let scan = self.scan().await?;
        let Some(letter) = scan.letters.into_iter().find(|letter| {
            (letter.summary.partition, letter.summary.offset) == (partition, offset)
        }) else {
            return Ok(None);
        };
        let mut shown = letter.summary;
        shown.value = letter.record.value.clone();
        match CareEvent::decode(letter.record.value.as_slice()) {
            Ok(event) => match baton_proto::json::to_json(&event) {
                Ok(json) => shown.event_json = json,
                Err(error) => shown.decode_error = error.to_string(),
            },
            Err(error) => {
                shown.decode_error = format!("not a {}: {error}", CareEvent::FULL_NAME);
            }
        }
        Ok(Some(shown))
    }

    /// Appends the selected letters' original records to the events topic
    /// again (skipping those redriven before unless `again`), and records
    /// the redrive on the dead-letter topic.
    pub async fn redrive(
        &self,
        selection: &DeadLetterSelection,
        again: bool,
        dry_run: bool,
        requested_by: &str,
    ) -> Result<RedriveDeadLettersResponse> {
        check_selection(selection)?;
        let scan = self.scan().await?;
        let mut response = RedriveDeadLettersResponse::default();
        let mut chosen = Vec::new();
        for letter in scan.letters {
            if !selected(selection, &letter.summary) {
                continue;
            }
            response.selected += 1;
            if !letter.summary.redriven.is_empty() && !again {
                response.already_redriven += 1;
                continue;
            }
            chosen.push(letter);
        }
        if dry_run || chosen.is_empty() {
            response.dead_letters = chosen.into_iter().map(|letter| letter.summary).collect();
            return Ok(response);
        }
        let copies: Vec<NewRecord> = chosen.iter().map(copy_of).collect();
        let positions = self.log.append(&self.topics.events, copies).await?;
        let at = prost_types::Timestamp::from(SystemTime::now());
        let record = RedriveRecord {
            at: Some(at),
            requested_by: requested_by.to_owned(),
            copies: chosen
                .iter()
                .zip(&positions)
                .map(|(letter, position)| RedriveCopy {
                    dead_letter_partition: letter.summary.partition,
                    dead_letter_offset: letter.summary.offset,
                    events_partition: position.partition,
                    events_offset: position.offset,
                })
                .collect(),
        };
        let partition = chosen[0].summary.partition;
        let key = format!(
            "{REDRIVE_KEY_PREFIX}{}",
            at.seconds * 1000 + i64::from(at.nanos / 1_000_000)
        );
        self.log
            .append(
                &self.topics.dead_letters,
                vec![
                    NewRecord::new(key, record.encode_to_vec())
                        .with_header("content-type", RedriveRecord::content_type())
                        .to_partition(partition),
                ],
            )
            .await?;
        tracing::info!(
            redriven = chosen.len(),
            requested_by,
            "dead letters redriven to the events topic"
        );
        response.redriven = chosen.len() as u64;
        response.consistency_token = ConsistencyToken::from_positions(&positions).to_string();
        response.dead_letters = chosen
            .into_iter()
            .zip(&positions)
            .map(|(letter, position)| {
                let mut summary = letter.summary;
                summary.redriven.push(Redriven {
                    at: Some(at),
                    partition: position.partition,
                    offset: position.offset,
                });
                summary
            })
            .collect();
        Ok(response)
    }

    /// Hides every letter below `until` (0: every letter there is now) in
    /// each partition from listings and redrives; returns how many and
    /// what it did.
    pub async fn purge(&self, until: u64, dry_run: bool) -> Result<(u64, String)> {
        let scan = self.scan().await?;
        let limit = |partition: u32| {
            let end = scan.ends[partition as usize];
            if until == 0 { end } else { until.min(end) }
        };
        let purged = scan
            .letters
            .iter()
            .filter(|letter| letter.summary.offset < limit(letter.summary.partition))
            .count() as u64;
        if dry_run {
            return Ok((purged, self.purge.effect()));
        }
        let mut start = self.purge.start().await?;
        for partition in 0..scan.ends.len() as u32 {
            let entry = start.entry(partition).or_insert(0);
            *entry = (*entry).max(limit(partition));
        }
        self.purge.move_start(start).await?;
        tracing::info!(purged, "dead letters purged from view");
        Ok((purged, self.purge.effect()))
    }
}

fn check_selection(selection: &DeadLetterSelection) -> Result<()> {
    let any =
        selection.all || selection.partition.is_some() || !selection.reason_contains.is_empty();
    if !any {
        return Err(ProjectorError::Invalid(
            "selection: choose the dead letters (all, a partition with an offset range, or a reason)"
                .into(),
        ));
    }
    Ok(())
}

fn selected(selection: &DeadLetterSelection, letter: &DeadLetter) -> bool {
    if let Some(partition) = selection.partition {
        if letter.partition != partition || letter.offset < selection.from_offset {
            return false;
        }
        if selection.until_offset > 0 && letter.offset >= selection.until_offset {
            return false;
        }
    }
    letter.reason.contains(&selection.reason_contains)
}

/// The letter's original record, as it was first appended, marked as a
/// copy of the letter.
fn copy_of(letter: &Letter) -> NewRecord {
    let record = &letter.record;
    let mut copy = NewRecord::new(record.key.clone(), record.value.clone()).with_header(
        REDRIVEN_FROM_HEADER,
        format!("{}/{}", letter.summary.partition, letter.summary.offset),
    );
    for name in ["content-type", headers::EVENT_ID, TRACEPARENT_HEADER] {
        if let Some(value) = record.header(name) {
            copy = copy.with_header(name, value.to_vec());
        }
    }
    copy
}

fn summarise(record: &Record) -> DeadLetter {
    let text = |name: &str| {
        record
            .header(name)
            .map(|value| String::from_utf8_lossy(value).into_owned())
            .unwrap_or_default()
    };
    let number = |name: &str| text(name).parse::<u64>().unwrap_or(0);
    DeadLetter {
        partition: record.partition,
        offset: record.offset,
        reason: text(headers::REASON),
        source_topic: text(headers::SOURCE_TOPIC),
        source_partition: number(headers::SOURCE_PARTITION) as u32,
        source_offset: number(headers::SOURCE_OFFSET),
        dead_lettered_at: Some(prost_types::Timestamp {
            seconds: record.timestamp_ms.div_euclid(1000),
            nanos: (record.timestamp_ms.rem_euclid(1000) * 1_000_000) as i32,
        }),
        event_id: text(headers::EVENT_ID),
        patient_key: String::from_utf8_lossy(&record.key).into_owned(),
        ..DeadLetter::default()
    }
}

/// A [`PurgeStart`] kept in a small JSON file beside the log (the data
/// folder of the embedded log): the letters stay in the log, the file says
/// where listing starts.
#[derive(Debug, Clone)]
pub struct FilePurgeStart {
    path: std::path::PathBuf,
}

impl FilePurgeStart {
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

#[async_trait]
impl PurgeStart for FilePurgeStart {
    async fn start(&self) -> Result<BTreeMap<u32, u64>> {
        match tokio::fs::read(&self.path).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| {
                ProjectorError::Invalid(format!(
                    "{}: not the dead letters' purge start ({error}); remove it to list every letter",
                    self.path.display()
                ))
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(error) => Err(ProjectorError::Invalid(format!(
                "cannot read {}: {error}",
                self.path.display()
            ))),
        }
    }

    async fn move_start(&self, start: BTreeMap<u32, u64>) -> Result<()> {
        let json = serde_json::to_vec(&start).expect("offsets serialise");
        let temporary = self.path.with_extension("tmp");
        let write = async {
            tokio::fs::write(&temporary, &json).await?;
            tokio::fs::File::open(&temporary).await?.sync_all().await?;
            tokio::fs::rename(&temporary, &self.path).await
        };
        write.await.map_err(|error| {
            ProjectorError::Invalid(format!("cannot write {}: {error}", self.path.display()))
        })
    }

    fn effect(&self) -> String {
        format!(
            "the letters stay in the dead-letter log; {} now says where listing and redriving start",
            self.path.display()
        )
    }
}

/// The consumer group whose committed offsets mark where the dead letters
/// are listed from on Kafka (`baton dlq purge`).
pub const PURGE_GROUP: &str = "baton-dead-letters";

/// A [`PurgeStart`] kept as a consumer group's committed offsets on the
/// dead-letter topic: on Kafka the topic keeps its records forever, and
/// any Kafka tool sees where Baton's listing starts.
#[derive(Debug, Clone)]
pub struct GroupPurgeStart {
    log: Arc<dyn EventLog>,
    topic: String,
    group: String,
}

impl GroupPurgeStart {
    pub fn new(log: Arc<dyn EventLog>, topics: &Topics) -> Self {
        Self {
            log,
            topic: topics.dead_letters.clone(),
            group: PURGE_GROUP.to_owned(),
        }
    }
}

#[async_trait]
impl PurgeStart for GroupPurgeStart {
    async fn start(&self) -> Result<BTreeMap<u32, u64>> {
        Ok(self
            .log
            .group_offsets(&self.group, &self.topic)
            .await?
            .unwrap_or_default())
    }

    async fn move_start(&self, start: BTreeMap<u32, u64>) -> Result<()> {
        match self
            .log
            .commit_group_offsets(&self.group, &self.topic, &start)
            .await?
        {
            baton_log::GroupOffsets::Committed => Ok(()),
            baton_log::GroupOffsets::NotSupported => Err(ProjectorError::Invalid(
                "this log has no consumer groups to keep the purge start in".into(),
            )),
        }
    }

    fn effect(&self) -> String {
        format!(
            "{} keeps its records (retention forever); the committed offsets of consumer group {} now mark where listing and redriving start",
            self.topic, self.group
        )
    }
}

/// Where the purge start is kept for `log`: a consumer group on Kafka, a
/// file at `file` beside the embedded log.
pub fn purge_start(
    log: &Arc<dyn EventLog>,
    topics: &Topics,
    kafka: bool,
    file: impl Into<std::path::PathBuf>,
) -> Arc<dyn PurgeStart> {
    if kafka {
        Arc::new(GroupPurgeStart::new(Arc::clone(log), topics))
    } else {
        Arc::new(FilePurgeStart::new(file))
    }
}
