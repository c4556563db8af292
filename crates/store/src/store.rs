//! [`Store`]: the sled database, its commits and its reads.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use baton_care::Instant;
use baton_care::cohort::{self, Cohort};
use baton_proto::state::v1::PatientCareState;
use prost::Message;
use tokio::sync::{broadcast, watch};
use tracing::{debug, info, warn};

use crate::keys::{self, Fnv1a64};
use crate::{Commit, Result, StoreError, TimelineRecord};

/// How the store uses memory and disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Upper bound of sled's page cache, which keeps memory bounded while
    /// the store grows past it.
    pub cache_capacity_bytes: u64,
    /// How often sled flushes committed batches to disk in the background;
    /// `None` flushes only on [`Store::flush`]. A crash loses at most the
    /// batches since the last flush, always whole and always the latest.
    pub flush_every_ms: Option<u64>,
    /// States the [change feed](Store::changes) holds for its slowest
    /// reader: one that falls further behind is told it lagged (a watch is
    /// then dropped) rather than slowing commits down.
    pub change_feed_capacity: usize,
}

impl Default for StoreConfig {
    /// A 256 MiB cache, flushed every 500 ms; a change feed of 16,384
    /// states.
    fn default() -> Self {
        Self {
            cache_capacity_bytes: 256 * 1024 * 1024,
            flush_every_ms: Some(500),
            change_feed_capacity: 16_384,
        }
    }
}

/// One page of a cohort, from [`Store::list_cohort`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CohortPage {
    /// Members in the order of the index the cohort is listed from
    /// (patient-key order for a place, date order for a date range, …).
    pub states: Vec<PatientCareState>,
    /// Pass as `after` for the next page: the index entry the page ended
    /// at. `None` when this page is the last.
    pub next_after: Option<String>,
}

/// The sled projection store. Cloning is cheap and shares the database.
///
/// Every method but [`Store::flush_async`] blocks on disk: from async code,
/// call it on a dedicated thread or in `spawn_blocking`.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// The store is sled's default tree: a `Batch` is atomic within one
    /// tree only, and one batch holds states, entries and positions.
    db: sled::Db,
    /// `None` when temporary.
    path: Option<PathBuf>,
    /// Serialises commits: each diffs index entries and positions against
    /// what is stored, which a concurrent commit could change in between.
    writer: Mutex<()>,
    /// Per topic, the applied positions as of the latest commit; created by
    /// the first [`Store::watch`] of the topic.
    watchers: Mutex<HashMap<String, watch::Sender<BTreeMap<u32, u64>>>>,
    /// Every committed state, for watches of cohorts; nothing is kept
    /// while nobody listens.
    changes: broadcast::Sender<Arc<PatientCareState>>,
    /// How many states there are, as `meta/states` holds it.
    states: AtomicU64,
}

impl Store {
    /// Opens (or creates) the store at `path`, with every state, index entry
    /// and position of the last batch that reached disk.
    ///
    /// Blocks while sled recovers its files: call it at start-up, before
    /// serving, or inside `spawn_blocking`.
    pub fn open(path: impl AsRef<Path>, config: &StoreConfig) -> Result<Self> {
        let path = path.as_ref();
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(config.cache_capacity_bytes)
            .flush_every_ms(config.flush_every_ms)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })?;
        check_format(&db, path)?;
        info!(
            path = %path.display(),
            cache_capacity_bytes = config.cache_capacity_bytes,
            flush_every_ms = config.flush_every_ms,
            "projection store opened"
        );
        let store = Self::from_db(db, Some(path.to_owned()), config);
        store.check_index_version()?;
        store.load_state_count()?;
        Ok(store)
    }

    /// For tests and rebuilds that are thrown away: a store in a sled
    /// temporary database (under the memory-backed `/dev/shm` on Linux, so
    /// keep it small), deleted when the last handle drops.
    pub fn temporary() -> Result<Self> {
        let db = sled::Config::new().temporary(true).open()?;
        db.insert(keys::FORMAT_KEY, &keys::FORMAT_VERSION.to_be_bytes()[..])?;
        db.insert(
            keys::INDEX_VERSION_KEY,
            &cohort::INDEX_VERSION.to_be_bytes()[..],
        )?;
        Ok(Self::from_db(db, None, &StoreConfig::default()))
    }

    fn from_db(db: sled::Db, path: Option<PathBuf>, config: &StoreConfig) -> Self {
        let (changes, _) = broadcast::channel(config.change_feed_capacity.max(1));
        Self {
            inner: Arc::new(Inner {
                db,
                path,
                writer: Mutex::new(()),
                watchers: Mutex::new(HashMap::new()),
                changes,
                states: AtomicU64::new(0),
            }),
        }
    }

    /// Rebuilds the cohort index from the states when it was built by
    /// another version of [`cohort::index_entries`] (an upgrade), so every
    /// cohort lists exactly its members. A new store is stamped with the
    /// current version.
    fn check_index_version(&self) -> Result<()> {
        let stored = match self.inner.db.get(keys::INDEX_VERSION_KEY)? {
            Some(value) => {
                Some(
                    keys::decode_u32(&value).map_err(|reason| StoreError::Corrupt {
                        key: keys::describe_key(keys::INDEX_VERSION_KEY),
                        reason,
                    })?,
                )
            }
            None => None,
        };
        if stored == Some(cohort::INDEX_VERSION) {
            return Ok(());
        }
        let _writer = self.lock_writer();
        // Whatever the old entries were, none is kept: every entry is
        // written again from the states.
        let mut batch = sled::Batch::default();
        let mut staged = 0usize;
        for key in self.inner.db.scan_prefix(keys::INDEX_PREFIX).keys() {
            batch.remove(key?);
            staged += 1;
            if staged.is_multiple_of(10_000) {
                self.inner.db.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        let mut rebuilt = 0usize;
        for item in self.inner.db.scan_prefix(keys::STATE_PREFIX) {
            let (key, value) = item?;
            let state = decode_state(&key, &value)?;
            let entries = cohort::index_entries(&state);
            for entry in &entries {
                batch.insert(keys::index_key(entry), &[][..]);
            }
            batch.insert(
                keys::entries_key(&state.patient_key),
                keys::encode_entries(&entries),
            );
            rebuilt += 1;
            if rebuilt.is_multiple_of(10_000) {
                self.inner.db.apply_batch(std::mem::take(&mut batch))?;
                info!(states = rebuilt, "rebuilding the cohort index");
            }
        }
        batch.insert(
            keys::INDEX_VERSION_KEY,
            &cohort::INDEX_VERSION.to_be_bytes()[..],
        );
        self.inner.db.apply_batch(batch)?;
        if rebuilt > 0 {
            info!(
                states = rebuilt,
                from_version = stored,
                to_version = cohort::INDEX_VERSION,
                "cohort index rebuilt for this version of Baton"
            );
        }
        Ok(())
    }

    fn lock_writer(&self) -> MutexGuard<'_, ()> {
        self.inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads `meta/states`; a store written before the count was kept is
    /// counted now, once.
    fn load_state_count(&self) -> Result<()> {
        let count = match self.inner.db.get(keys::STATE_COUNT_KEY)? {
            Some(value) => decode_offset(keys::STATE_COUNT_KEY, &value)?,
            None => {
                let _writer = self.lock_writer();
                let count = self.state_count()? as u64;
                self.inner
                    .db
                    .insert(keys::STATE_COUNT_KEY, &count.to_be_bytes()[..])?;
                if count > 0 {
                    info!(
                        states = count,
                        "states counted once, for the store's metrics"
                    );
                }
                count
            }
        };
        self.inner.states.store(count, Ordering::Release);
        Ok(())
    }

    /// Where the store lives; `None` when temporary.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// Writes every state of `commit`, the index entries they gain and lose,
    /// its timeline records and the positions that move forward, in one
    /// atomic batch, then tells [watchers](Store::watch) of the topic and
    /// the [change feed](Store::changes).
    ///
    /// The batch is in memory and visible to reads when this returns; it
    /// reaches disk with sled's next background flush, or [`Store::flush`].
    pub fn commit(&self, commit: &Commit) -> Result<()> {
        if commit.is_empty() {
            return Ok(());
        }
        let _writer = self.lock_writer();

        let mut latest = BTreeMap::new();
        for state in &commit.states {
            latest.insert(state.patient_key.as_str(), state);
        }
        let mut batch = sled::Batch::default();
        let mut created = 0;
        for (key, state) in &latest {
            if self.stage_state(&mut batch, key, state)? {
                created += 1;
            }
        }
        let states = self.inner.states.load(Ordering::Acquire) + created;
        if created > 0 {
            batch.insert(keys::STATE_COUNT_KEY, &states.to_be_bytes()[..]);
        }
        for record in &commit.timeline {
            batch.insert(
                keys::timeline_key(
                    &record.patient_key,
                    record.occurred_seconds,
                    record.occurred_nanos,
                    record.partition,
                    record.offset,
                ),
                record.event.as_slice(),
            );
        }
        let mut advanced = vec![(
            commit.topic.as_str(),
            self.stage_positions(&mut batch, &commit.topic, &commit.positions)?,
        )];
        for (topic, positions) in &commit.upstream {
            advanced.push((topic, self.stage_positions(&mut batch, topic, positions)?));
        }
        if commit.publish {
            let keys: Vec<String> = latest.keys().map(|&key| key.to_owned()).collect();
            batch.insert(keys::UNPUBLISHED_KEY, keys::encode_entries(&keys));
        }
        self.inner.db.apply_batch(batch)?;
        self.inner.states.store(states, Ordering::Release);

        for (topic, positions) in &advanced {
            self.notify_watchers(topic, positions);
        }
        if self.inner.changes.receiver_count() > 0 {
            for state in latest.values() {
                // Fails only when the last receiver went meanwhile.
                let _ = self.inner.changes.send(Arc::clone(state));
            }
        }
        debug!(
            topic = %commit.topic,
            states = latest.len(),
            partitions_advanced = advanced[0].1.len(),
            "projection batch committed"
        );
        Ok(())
    }

    /// Ties the store's positions in `topic` to the log named `identity`
    /// ([`baton_log::EventLog::identity`]): the first time, records it;
    /// afterwards, refuses another log, whose offsets would name other
    /// records.
    pub fn bind_source(&self, topic: &str, identity: &str) -> Result<()> {
        let key = format!("{}{topic}", keys::SOURCE_PREFIX);
        match self.inner.db.get(&key)? {
            Some(recorded) if recorded.as_ref() == identity.as_bytes() => Ok(()),
            Some(recorded) => Err(StoreError::WrongSource {
                path: self.path().map_or_else(
                    || "(temporary)".to_owned(),
                    |path| path.display().to_string(),
                ),
                topic: topic.to_owned(),
                recorded: String::from_utf8_lossy(&recorded).into_owned(),
                given: identity.to_owned(),
            }),
            None => {
                self.inner.db.insert(key, identity.as_bytes())?;
                Ok(())
            }
        }
    }

    /// The patient keys of the latest commit marked
    /// [`to_publish`](Commit::to_publish): those whose publication a crash
    /// may have cut short. Empty when no such commit was made.
    pub fn unpublished(&self) -> Result<Vec<String>> {
        match self.inner.db.get(keys::UNPUBLISHED_KEY)? {
            Some(value) => keys::decode_entries(&value).map_err(|reason| StoreError::Corrupt {
                key: keys::describe_key(keys::UNPUBLISHED_KEY),
                reason,
            }),
            None => Ok(Vec::new()),
        }
    }

    /// Adds `state` and the difference between its stored and new index
    /// entries to `batch`; whether the patient had no state before.
    fn stage_state(
        &self,
        batch: &mut sled::Batch,
        key: &str,
        state: &PatientCareState,
    ) -> Result<bool> {
        self.stage_entries(batch, key, state)?;
        let state_key = keys::state_key(key);
        let created = !self.inner.db.contains_key(&state_key)?;
        batch.insert(state_key, state.encode_to_vec());
        Ok(created)
    }

    /// Adds the difference between the stored index entries of `key` and
    /// those of `state` to `batch`.
    fn stage_entries(
        &self,
        batch: &mut sled::Batch,
        key: &str,
        state: &PatientCareState,
    ) -> Result<()> {
        let entries_key = keys::entries_key(key);
        let old = match self.inner.db.get(&entries_key)? {
            Some(value) => keys::decode_entries(&value).map_err(|reason| StoreError::Corrupt {
                key: keys::describe_key(&entries_key),
                reason,
            })?,
            None => Vec::new(),
        };
        let new = cohort::index_entries(state);
        for gone in old.iter().filter(|entry| !new.contains(entry)) {
            batch.remove(keys::index_key(gone));
        }
        for added in new.iter().filter(|entry| !old.contains(entry)) {
            batch.insert(keys::index_key(added), &[][..]);
        }
        if old != new {
            batch.insert(entries_key, keys::encode_entries(&new));
        }
        Ok(())
    }

    /// Adds the `positions` of `topic` that move forward to `batch`, and
    /// returns them.
    fn stage_positions(
        &self,
        batch: &mut sled::Batch,
        topic: &str,
        positions: &BTreeMap<u32, u64>,
    ) -> Result<BTreeMap<u32, u64>> {
        let mut advanced = BTreeMap::new();
        for (&partition, &next_offset) in positions {
            let key = keys::position_key(topic, partition);
            let stored = match self.inner.db.get(&key)? {
                Some(value) => Some(decode_offset(&key, &value)?),
                None => None,
            };
            if stored.is_some_and(|stored| stored >= next_offset) {
                continue;
            }
            batch.insert(key, &next_offset.to_be_bytes()[..]);
            advanced.insert(partition, next_offset);
        }
        Ok(advanced)
    }

    fn notify_watchers(&self, topic: &str, advanced: &BTreeMap<u32, u64>) {
        if advanced.is_empty() {
            return;
        }
        let watchers = self.lock_watchers();
        let Some(sender) = watchers.get(topic) else {
            return;
        };
        sender.send_if_modified(|positions| {
            let mut modified = false;
            for (&partition, &next_offset) in advanced {
                if positions.get(&partition) < Some(&next_offset) {
                    positions.insert(partition, next_offset);
                    modified = true;
                }
            }
            modified
        });
    }

    /// Makes every committed batch durable: for a graceful shutdown, or a
    /// caller that must not lose what it committed.
    pub fn flush(&self) -> Result<()> {
        self.inner.db.flush()?;
        Ok(())
    }

    /// [`Store::flush`] without blocking the async runtime.
    pub async fn flush_async(&self) -> Result<()> {
        self.inner.db.flush_async().await?;
        Ok(())
    }

    /// The state of `patient_key` as stored: an encoded
    /// `PatientCareState`, for a reader that passes it on without looking
    /// inside (the query API's `GetCareState`).
    pub fn get_encoded(&self, patient_key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .inner
            .db
            .get(keys::state_key(patient_key))?
            .map(|value| value.to_vec()))
    }

    /// The state of `patient_key`, if any event for it was committed.
    /// A state merged into another is returned as it is: its `merged_into`
    /// names the survivor.
    pub fn get(&self, patient_key: &str) -> Result<Option<PatientCareState>> {
        let key = keys::state_key(patient_key);
        self.inner
            .db
            .get(&key)?
            .map(|value| decode_state(&key, &value))
            .transpose()
    }

    /// Per partition of `topic`, the next offset to read: every record below
    /// it is in the stored states. Partitions never committed are absent.
    pub fn applied(&self, topic: &str) -> Result<BTreeMap<u32, u64>> {
        let prefix = keys::positions_prefix(topic);
        let mut positions = BTreeMap::new();
        for item in self.inner.db.scan_prefix(&prefix) {
            let (key, value) = item?;
            let partition =
                keys::partition_of(&key, prefix.len()).map_err(|reason| StoreError::Corrupt {
                    key: keys::describe_key(&key),
                    reason,
                })?;
            positions.insert(partition, decode_offset(&key, &value)?);
        }
        Ok(positions)
    }

    /// Follows [`Store::applied`] of `topic`: the receiver holds the stored
    /// positions now, and is updated after every commit that moves one.
    /// The query service waits on it for a consistency token.
    ///
    /// Should the stored positions be unreadable, the error is logged and
    /// the receiver comes back already closed, so a waiter fails at once
    /// rather than waiting for positions it could never be shown.
    pub fn watch(&self, topic: &str) -> watch::Receiver<BTreeMap<u32, u64>> {
        // Held while reading the positions: a commit that lands meanwhile
        // notifies only once the sender is in place, so no update is lost.
        let mut watchers = self.lock_watchers();
        if let Some(sender) = watchers.get(topic) {
            return sender.subscribe();
        }
        match self.applied(topic) {
            Ok(positions) => {
                let (sender, receiver) = watch::channel(positions);
                watchers.insert(topic.to_owned(), sender);
                receiver
            }
            Err(error) => {
                warn!(topic, %error, "cannot read applied positions to watch; the watch is closed");
                watch::channel(BTreeMap::new()).1
            }
        }
    }

    fn lock_watchers(&self) -> MutexGuard<'_, HashMap<String, watch::Sender<BTreeMap<u32, u64>>>> {
        self.inner
            .watchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The state of the patient known by the local identifier
    /// `AUTHORITY:VALUE` when it is not their key (e.g. a hospital number of
    /// a patient keyed by NHS number).
    pub fn find_by_local_id(&self, local_id: &str) -> Result<Option<PatientCareState>> {
        let prefix = keys::index_key(&baton_care::cohort::identifier_prefix(local_id));
        let Some(entry) = self.inner.db.scan_prefix(&prefix).keys().next() else {
            return Ok(None);
        };
        let entry = entry?;
        let patient_key =
            std::str::from_utf8(&entry[prefix.len()..]).map_err(|e| StoreError::Corrupt {
                key: keys::describe_key(&entry),
                reason: format!("identifier entry is not UTF-8: {e}"),
            })?;
        self.get(patient_key)
    }

    /// Up to `limit` (at least one) members of `cohort` at `now`, read from
    /// the index ranges of [`Cohort::plan`] in order, starting strictly
    /// after the index entry `after`: keyset paging, so a page stays correct
    /// however the cohort changed since the previous one.
    ///
    /// Each candidate's state is checked against the whole cohort as it is
    /// read, so a patient who left the cohort in a commit that raced with
    /// the listing is left out rather than shown in a place they no longer
    /// are, and is yielded only at its first entry in the plan, so a
    /// patient with several matching entries is listed once.
    pub fn list_cohort(
        &self,
        cohort: &Cohort,
        after: Option<&str>,
        limit: usize,
        now: Instant,
    ) -> Result<CohortPage> {
        let limit = limit.max(1);
        let plan = cohort.plan(now);
        let mut page = CohortPage::default();
        let mut last_entry: Option<String> = None;
        let mut read = 0usize;
        for range in &plan {
            if after.is_some_and(|after| after >= range.end.as_str()) {
                continue;
            }
            let start = match after {
                Some(after) if after >= range.start.as_str() => {
                    Bound::Excluded(keys::index_key(after))
                }
                _ => Bound::Included(keys::index_key(&range.start)),
            };
            let end = Bound::Excluded(keys::index_key(&range.end));
            for key in self.inner.db.range::<Vec<u8>, _>((start, end)).keys() {
                if read == limit {
                    page.next_after = last_entry;
                    return Ok(page);
                }
                read += 1;
                let key = key?;
                let entry = std::str::from_utf8(&key[keys::INDEX_PREFIX.len()..]).map_err(|e| {
                    StoreError::Corrupt {
                        key: keys::describe_key(&key),
                        reason: format!("index entry is not UTF-8: {e}"),
                    }
                })?;
                let patient_key = Cohort::key_of_entry(entry);
                let Some(state) = self.get(patient_key)? else {
                    return Err(StoreError::Corrupt {
                        key: keys::describe_key(&key),
                        reason: format!(
                            "index entry names patient {patient_key:?}, who has no state"
                        ),
                    });
                };
                let first_here = Cohort::listing_entry(&state, &plan).as_deref() == Some(entry);
                if first_here && cohort.matches(&state, now) {
                    page.states.push(state);
                } else {
                    debug!(patient_key, "not a member where the listing found them");
                }
                last_entry = Some(entry.to_owned());
            }
        }
        Ok(page)
    }

    /// Follows every state committed from now on, in commit order: for
    /// watches of cohorts. A receiver that falls more than
    /// [`StoreConfig::change_feed_capacity`] states behind gets
    /// `RecvError::Lagged` instead of slowing commits down.
    pub fn changes(&self) -> broadcast::Receiver<Arc<PatientCareState>> {
        self.inner.changes.subscribe()
    }

    /// The events filed on the timeline of `patient_key` whose clinical
    /// time is within `from..=to` (unset bounds are open), in clinical
    /// order then log order.
    pub fn timeline(
        &self,
        patient_key: &str,
        from: Instant,
        to: Instant,
    ) -> Result<Vec<TimelineRecord>> {
        let prefix = keys::timeline_prefix(patient_key);
        let start = match from.to_timestamp() {
            Some(from) => keys::timeline_time_bound(patient_key, from.seconds, from.nanos),
            None => prefix.clone(),
        };
        let mut records = Vec::new();
        for item in self.inner.db.range(start..) {
            let (key, value) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            let (seconds, nanos, partition, offset) =
                keys::decode_timeline_suffix(&key[prefix.len()..]).map_err(|reason| {
                    StoreError::Corrupt {
                        key: keys::describe_key(&key),
                        reason,
                    }
                })?;
            if let Some(to) = to.to_timestamp()
                && (seconds, nanos) > (to.seconds, to.nanos)
            {
                break;
            }
            records.push(TimelineRecord {
                patient_key: patient_key.to_owned(),
                occurred_seconds: seconds,
                occurred_nanos: nanos,
                partition,
                offset,
                event: value.to_vec(),
            });
        }
        Ok(records)
    }

    /// Every state in patient-key order, read lazily: commits made while
    /// iterating may or may not be seen.
    pub fn states(&self) -> impl Iterator<Item = Result<PatientCareState>> + use<> {
        self.inner.db.scan_prefix(keys::STATE_PREFIX).map(|item| {
            let (key, value) = item?;
            decode_state(&key, &value)
        })
    }

    /// How many patients have a state, merged-away ones included. Reads
    /// every state: for verification and tests, not for a hot path.
    pub fn state_count(&self) -> Result<usize> {
        let mut count = 0;
        for item in self.inner.db.scan_prefix(keys::STATE_PREFIX).keys() {
            item?;
            count += 1;
        }
        Ok(count)
    }

    /// How many patients have a state, merged-away ones included, as kept
    /// with every commit: costs nothing, unlike [`Store::state_count`].
    pub fn stored_states(&self) -> u64 {
        self.inner.states.load(Ordering::Acquire)
    }

    /// The size of the store's files on disk, in bytes.
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.inner.db.size_on_disk()?)
    }

    /// Every cohort index entry in order, as [`cohort::index_entries`]
    /// makes them: to verify the index against the states.
    pub fn index_entries(&self) -> impl Iterator<Item = Result<String>> + use<> {
        self.inner
            .db
            .scan_prefix(keys::INDEX_PREFIX)
            .keys()
            .map(|key| {
                let key = key?;
                String::from_utf8(key[keys::INDEX_PREFIX.len()..].to_vec()).map_err(|e| {
                    StoreError::Corrupt {
                        key: keys::describe_key(&key),
                        reason: format!("index entry is not UTF-8: {e}"),
                    }
                })
            })
    }

    /// A digest of every state (patient key and encoded state, in key
    /// order) as 16 hex digits: equal for two stores holding equal states,
    /// so a replay can be compared with the live store. Positions and the
    /// index are not included; they follow from the states and the log.
    pub fn digest(&self) -> Result<String> {
        let mut hash = Fnv1a64::new();
        for item in self.inner.db.scan_prefix(keys::STATE_PREFIX) {
            let (key, value) = item?;
            hash.write_field(&key[keys::STATE_PREFIX.len()..]);
            hash.write_field(&value);
        }
        Ok(format!("{:016x}", hash.finish()))
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// Refuses a store written in a newer format; stamps an empty one with
/// ours.
fn check_format(db: &sled::Db, path: &Path) -> Result<()> {
    match db.get(keys::FORMAT_KEY)? {
        Some(value) => {
            let found = keys::decode_u32(&value).map_err(|reason| StoreError::Corrupt {
                key: keys::describe_key(keys::FORMAT_KEY),
                reason,
            })?;
            if found > keys::FORMAT_VERSION {
                return Err(StoreError::NewerFormat {
                    path: path.to_owned(),
                    found,
                    supported: keys::FORMAT_VERSION,
                });
            }
            if found < keys::FORMAT_VERSION {
                return Err(StoreError::Corrupt {
                    key: keys::describe_key(keys::FORMAT_KEY),
                    reason: format!(
                        "format version {found} was never written by Baton; expected {}",
                        keys::FORMAT_VERSION
                    ),
                });
            }
            Ok(())
        }
        None if db.is_empty() => {
            db.insert(keys::FORMAT_KEY, &keys::FORMAT_VERSION.to_be_bytes()[..])?;
            Ok(())
        }
        None => Err(StoreError::Corrupt {
            key: keys::describe_key(keys::FORMAT_KEY),
            reason: "missing in a non-empty database: is this directory a Baton projection store?"
                .to_owned(),
        }),
    }
}

fn decode_state(key: &[u8], value: &[u8]) -> Result<PatientCareState> {
    PatientCareState::decode(value).map_err(|e| StoreError::Corrupt {
        key: keys::describe_key(key),
        reason: format!("not a PatientCareState: {e}"),
    })
}

fn decode_offset(key: &[u8], value: &[u8]) -> Result<u64> {
    keys::decode_u64(value).map_err(|reason| StoreError::Corrupt {
        key: keys::describe_key(key),
        reason,
    })
}

#[cfg(test)]
mod state_count_tests {
    use super::*;

    /// A store written before `meta/states` existed is counted when opened.
    #[test]
    fn a_store_without_the_count_is_counted_once_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let state = |key: &str| PatientCareState {
            patient_key: key.to_owned(),
            version: 1,
            ..Default::default()
        };
        {
            let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
            store
                .commit(&Commit::new("events").with_states([state("RXX:H1"), state("RXX:H2")]))
                .unwrap();
            store.inner.db.remove(keys::STATE_COUNT_KEY).unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        assert_eq!(store.stored_states(), 2);
        assert!(store.inner.db.contains_key(keys::STATE_COUNT_KEY).unwrap());
    }
}
