//! [`Store`]: the sled database, its commits and its reads.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwap;
use baton_care::cohort::{self, Cohort};
use baton_care::{EventId, Instant};
use baton_proto::state::v1::PatientCareState;
use prost::Message;
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock, broadcast, watch};
use tracing::{debug, info, warn};

use crate::keys::{self, PartitionDigest, Summary};
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

/// One page of a cohort as stored, from [`Store::list_cohort_encoded`]:
/// each member's patient key and the state's stored encoding, so the
/// answer is written without encoding the states again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EncodedCohortPage {
    /// Members (patient key, encoded `PatientCareState`), in index order.
    pub members: Vec<(String, Vec<u8>)>,
    /// As [`CohortPage::next_after`].
    pub next_after: Option<String>,
}

/// The sled projection store. Cloning is cheap and shares the database.
///
/// A handle reads and writes the store's *live generation*, which
/// [`Store::swap_in`] replaces with a rebuilt one between two reads: a
/// replay folds the log into a new generation beside the live one, then
/// swaps it in, and every clone of the handle (the projector, the query
/// API) moves to it at once. Writers take a [`WriterPermit`] around their
/// batches so that a swap happens between batches, never inside one.
///
/// Every method but [`Store::flush_async`] and the permit methods blocks on
/// disk: from async code, call it on a dedicated thread or in
/// `spawn_blocking`.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    live: ArcSwap<Generation>,
    /// Serialises commits: each diffs index entries, digests and positions
    /// against what is stored, which a concurrent commit could change in
    /// between.
    writer: Mutex<()>,
    /// Per topic, the applied positions as of the latest commit; created by
    /// the first [`Store::watch`] of the topic.
    watchers: Mutex<HashMap<String, watch::Sender<BTreeMap<u32, u64>>>>,
    /// Every committed state, for watches of cohorts; nothing is kept
    /// while nobody listens.
    changes: broadcast::Sender<Arc<PatientCareState>>,
    /// Held shared by each writer between its batches' boundaries, and
    /// exclusively by a generation swap.
    writers: Arc<RwLock<()>>,
    /// Set while a swap waits for the writers, so they stop at their next
    /// boundary instead of starting another batch.
    swap_requested: AtomicBool,
    /// How many states the live generation holds, as its `meta/states`
    /// says.
    states: AtomicU64,
    config: StoreConfig,
}

/// One sled database: a generation of the projection.
struct Generation {
    /// The store is sled's default tree: a `Batch` is atomic within one
    /// tree only, and one batch holds states, entries and positions.
    db: sled::Db,
    /// `None` when temporary.
    path: Option<PathBuf>,
    /// 0 for a store never rebuilt; each replay's generation is one more.
    number: u64,
}

/// The digests of a store at the positions its states include, read
/// together: see [`Store::digest_at`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreDigest {
    pub generation: u64,
    /// Per partition of the topic asked about, the next offset to read.
    pub positions: BTreeMap<u32, u64>,
    /// Per partition, the digest of the states whose last applied event is
    /// in it; a partition with no state is absent.
    pub partitions: BTreeMap<u32, PartitionDigest>,
}

/// One state as the digest knows it: see [`Store::state_hashes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateHash {
    pub patient_key: String,
    pub hash: u128,
    /// The partition whose digest holds it: that of its last applied event.
    pub partition: u32,
    /// Offset of the state's last applied event, in its partition.
    pub offset: u64,
}

/// Lets a writer commit to the live generation; see
/// [`Store::writer_permit`].
#[derive(Debug)]
pub struct WriterPermit {
    _permit: OwnedRwLockReadGuard<()>,
}

/// Every writer stopped at a batch boundary; dropping this lets them go on.
/// See [`Store::pause_writers`].
#[derive(Debug)]
pub struct WritersPaused {
    store: Store,
    _exclusive: OwnedRwLockWriteGuard<()>,
}

impl Drop for WritersPaused {
    fn drop(&mut self) {
        // Before the lock is released (fields drop after this body).
        self.store
            .inner
            .swap_requested
            .store(false, Ordering::SeqCst);
    }
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
        let number = match db.get(keys::GENERATION_KEY)? {
            Some(value) => keys::decode_u64(&value).map_err(|reason| StoreError::Corrupt {
                key: keys::describe_key(keys::GENERATION_KEY),
                reason,
            })?,
            None => 0,
        };
        info!(
            path = %path.display(),
            generation = number,
            cache_capacity_bytes = config.cache_capacity_bytes,
            flush_every_ms = config.flush_every_ms,
            "projection store opened"
        );
        let store = Self::from_db(db, Some(path.to_owned()), number, config);
        store.check_index_version()?;
        store.load_state_count()?;
        Ok(store)
    }

    /// Opens the store of generation `number` at `path` for a replay to
    /// fill: created empty and stamped with its number, or, after a crash,
    /// reopened as it was, so the replay resumes from its own positions.
    /// Refuses a directory holding another generation.
    pub fn open_generation(
        path: impl AsRef<Path>,
        config: &StoreConfig,
        number: u64,
    ) -> Result<Self> {
        let path = path.as_ref();
        let store = Self::open(path, config)?;
        let found = store.generation();
        if found == number {
            return Ok(store);
        }
        let db = store.db();
        let fresh = found == 0 && db.scan_prefix(keys::STATE_PREFIX).next().is_none();
        if !fresh {
            return Err(StoreError::Corrupt {
                key: keys::describe_key(keys::GENERATION_KEY),
                reason: format!(
                    "{} holds generation {found}, not {number}: remove it or choose another directory",
                    path.display()
                ),
            });
        }
        db.insert(keys::GENERATION_KEY, &number.to_be_bytes()[..])?;
        db.flush()?;
        Ok(Self::from_db(
            db.clone(),
            Some(path.to_owned()),
            number,
            config,
        ))
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
        Ok(Self::from_db(db, None, 0, &StoreConfig::default()))
    }

    fn from_db(db: sled::Db, path: Option<PathBuf>, number: u64, config: &StoreConfig) -> Self {
        Self::from_generation(Arc::new(Generation { db, path, number }), config)
    }

    fn from_generation(generation: Arc<Generation>, config: &StoreConfig) -> Self {
        let (changes, _) = broadcast::channel(config.change_feed_capacity.max(1));
        Self {
            inner: Arc::new(Inner {
                live: ArcSwap::new(generation),
                writer: Mutex::new(()),
                watchers: Mutex::new(HashMap::new()),
                changes,
                writers: Arc::new(RwLock::new(())),
                swap_requested: AtomicBool::new(false),
                states: AtomicU64::new(0),
                config: config.clone(),
            }),
        }
    }

    /// The live generation's database.
    fn db(&self) -> sled::Db {
        self.inner.live.load().db.clone()
    }

    /// Whether `event_id` was applied to the state of `patient_key` (a
    /// commit's [`Commit::applied`]).
    pub fn is_applied(&self, patient_key: &str, event_id: EventId) -> Result<bool> {
        Ok(self.applied_ids(patient_key)?.contains(&event_id))
    }

    /// Every event id applied to the state of `patient_key`, commit by
    /// commit (each commit's in the order it gave them).
    pub fn applied_ids(&self, patient_key: &str) -> Result<Vec<EventId>> {
        let mut ids = Vec::new();
        for item in self.db().scan_prefix(keys::applied_prefix(patient_key)) {
            let (key, value) = item?;
            ids.extend(
                keys::event_ids_of(&key, &value).map_err(|reason| StoreError::Corrupt {
                    key: keys::describe_key(&key),
                    reason,
                })?,
            );
        }
        Ok(ids)
    }

    /// The live generation's number: 0 for a store never rebuilt.
    pub fn generation(&self) -> u64 {
        self.inner.live.load().number
    }

    /// Rebuilds the cohort index from the states when it was built by
    /// another version of [`cohort::index_entries`] (an upgrade), so every
    /// cohort lists exactly its members. A new store is stamped with the
    /// current version.
    fn check_index_version(&self) -> Result<()> {
        let db = self.db();
        let stored = match db.get(keys::INDEX_VERSION_KEY)? {
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
        for key in db.scan_prefix(keys::INDEX_PREFIX).keys() {
            batch.remove(key?);
            staged += 1;
            if staged.is_multiple_of(10_000) {
                db.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        let mut rebuilt = 0usize;
        for item in db.scan_prefix(keys::STATE_PREFIX) {
            let (key, value) = item?;
            let state = decode_state(&key, &value)?;
            let entries = cohort::index_entries(&state);
            for entry in &entries {
                batch.insert(keys::index_key(entry), &[][..]);
            }
            batch.insert(
                keys::entries_key(&state.patient_key),
                keys::encode_summary(&summary_of(&state, &value), &entries),
            );
            rebuilt += 1;
            if rebuilt.is_multiple_of(10_000) {
                db.apply_batch(std::mem::take(&mut batch))?;
                info!(states = rebuilt, "rebuilding the cohort index");
            }
        }
        batch.insert(
            keys::INDEX_VERSION_KEY,
            &cohort::INDEX_VERSION.to_be_bytes()[..],
        );
        db.apply_batch(batch)?;
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
        let count = match self.db().get(keys::STATE_COUNT_KEY)? {
            Some(value) => decode_offset(keys::STATE_COUNT_KEY, &value)?,
            None => {
                let _writer = self.lock_writer();
                let count = self.state_count()? as u64;
                self.db()
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

    /// Where the live generation lives; `None` when temporary.
    pub fn path(&self) -> Option<PathBuf> {
        self.inner.live.load().path.clone()
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
        let db = self.db();

        let encoded = commit.encoded_states();
        let mut latest = BTreeMap::new();
        for (state, encoded) in commit.states.iter().zip(encoded) {
            latest.insert(state.patient_key.as_str(), (state, encoded));
        }
        let mut batch = sled::Batch::default();
        let mut digests = BTreeMap::new();
        let mut created = 0;
        for (key, (state, encoded)) in &latest {
            if stage_state(&db, &mut batch, &mut digests, key, state, encoded)? {
                created += 1;
            }
        }
        let states = self.inner.states.load(Ordering::Acquire) + created;
        if created > 0 {
            batch.insert(keys::STATE_COUNT_KEY, &states.to_be_bytes()[..]);
        }
        for (&partition, digest) in &digests {
            batch.insert(keys::digest_key(partition), digest.encode());
        }
        for (key, &generation) in &commit.state_generations {
            batch.insert(
                keys::state_generation_key(key),
                &generation.to_be_bytes()[..],
            );
        }
        // One key per patient, not per event: sled's cost is per key.
        let mut applied: BTreeMap<&str, Vec<EventId>> = BTreeMap::new();
        for (patient_key, event_id) in &commit.applied {
            applied.entry(patient_key).or_default().push(*event_id);
        }
        for (patient_key, event_ids) in &applied {
            let (key, value) = keys::applied_chunk(patient_key, event_ids);
            batch.insert(key, value);
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
            stage_positions(&db, &mut batch, &commit.topic, &commit.positions)?,
        )];
        for (topic, positions) in &commit.upstream {
            advanced.push((topic, stage_positions(&db, &mut batch, topic, positions)?));
        }
        if commit.publish {
            let keys: Vec<String> = latest
                .keys()
                .copied()
                .chain(commit.earlier_unpublished.iter().map(String::as_str))
                .collect::<std::collections::BTreeSet<&str>>()
                .into_iter()
                .map(str::to_owned)
                .collect();
            batch.insert(keys::UNPUBLISHED_KEY, keys::encode_entries(&keys));
        }
        db.apply_batch(batch)?;
        self.inner.states.store(states, Ordering::Release);

        for (topic, positions) in &advanced {
            self.notify_watchers(topic, positions);
        }
        if self.inner.changes.receiver_count() > 0 {
            for (state, _) in latest.values() {
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
        let db = self.db();
        match db.get(&key)? {
            Some(recorded) if recorded.as_ref() == identity.as_bytes() => Ok(()),
            Some(recorded) => Err(StoreError::WrongSource {
                path: self.path().as_deref().map_or_else(
                    || "(temporary)".to_owned(),
                    |path| path.display().to_string(),
                ),
                topic: topic.to_owned(),
                recorded: String::from_utf8_lossy(&recorded).into_owned(),
                given: identity.to_owned(),
            }),
            None => {
                db.insert(key, identity.as_bytes())?;
                Ok(())
            }
        }
    }

    /// The patient keys of the latest commit marked
    /// [`to_publish`](Commit::to_publish): those whose publication a crash
    /// may have cut short. Empty when no such commit was made.
    pub fn unpublished(&self) -> Result<Vec<String>> {
        match self.db().get(keys::UNPUBLISHED_KEY)? {
            Some(value) => keys::decode_entries(&value).map_err(|reason| StoreError::Corrupt {
                key: keys::describe_key(keys::UNPUBLISHED_KEY),
                reason,
            }),
            None => Ok(Vec::new()),
        }
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
        self.db().flush()?;
        Ok(())
    }

    /// [`Store::flush`] without blocking the async runtime.
    pub async fn flush_async(&self) -> Result<()> {
        self.db().flush_async().await?;
        Ok(())
    }

    /// The state of `patient_key` as stored: an encoded
    /// `PatientCareState`, for a reader that passes it on without looking
    /// inside (the query API's `GetCareState`).
    pub fn get_encoded(&self, patient_key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .db()
            .get(keys::state_key(patient_key))?
            .map(|value| value.to_vec()))
    }

    /// On a query replica, the projector's store generation the stored
    /// state of `patient_key` was published from (0 when none was named).
    pub fn state_generation(&self, patient_key: &str) -> Result<u64> {
        let key = keys::state_generation_key(patient_key);
        match self.db().get(&key)? {
            Some(value) => decode_offset(&key, &value),
            None => Ok(0),
        }
    }

    /// The state of `patient_key`, if any event for it was committed.
    /// A state merged into another is returned as it is: its `merged_into`
    /// names the survivor.
    pub fn get(&self, patient_key: &str) -> Result<Option<PatientCareState>> {
        let key = keys::state_key(patient_key);
        self.db()
            .get(&key)?
            .map(|value| decode_state(&key, &value))
            .transpose()
    }

    /// Per partition of `topic`, the next offset to read: every record below
    /// it is in the stored states. Partitions never committed are absent.
    pub fn applied(&self, topic: &str) -> Result<BTreeMap<u32, u64>> {
        applied_in(&self.db(), topic)
    }

    /// Marks where a generation swap may come: between two batches of a
    /// writer, which holds the permit while a batch is folded and committed
    /// and lets it go (after finishing its commit) when
    /// [`Store::swap_requested`] says a swap waits. A writer that gets the
    /// permit back checks [`Store::generation`]: if it changed, it reads
    /// its positions again, since the store it writes is another.
    pub async fn writer_permit(&self) -> WriterPermit {
        WriterPermit {
            _permit: Arc::clone(&self.inner.writers).read_owned().await,
        }
    }

    /// Whether a swap waits for writers to let their permits go.
    pub fn swap_requested(&self) -> bool {
        self.inner.swap_requested.load(Ordering::SeqCst)
    }

    /// Waits until every writer has let its permit go at a batch boundary,
    /// and keeps them there until the returned guard is dropped: for a
    /// generation swap, and the last catch-up of the replay before it.
    /// Readers are never held.
    pub async fn pause_writers(&self) -> WritersPaused {
        self.inner.swap_requested.store(true, Ordering::SeqCst);
        let exclusive = Arc::clone(&self.inner.writers).write_owned().await;
        WritersPaused {
            store: self.clone(),
            _exclusive: exclusive,
        }
    }

    /// Makes the live generation of `replacement` (a rebuilt store) this
    /// store's, for every clone of this handle, atomically between two
    /// reads; returns the previous generation as a handle of its own (to
    /// compare it with the new one, then drop and remove it).
    ///
    /// Call it with the writers paused ([`Store::pause_writers`]) and the
    /// replacement caught up with the log at least as far as this store:
    /// positions then never go backwards, so consistency tokens keep
    /// working, and watchers of positions are told the new ones. Nothing
    /// may write through `replacement` afterwards.
    pub fn swap_in(&self, replacement: &Store) -> Result<Store> {
        let _writer = self.lock_writer();
        let previous = self.inner.live.swap(replacement.inner.live.load_full());
        self.inner.states.store(
            replacement.inner.states.load(Ordering::Acquire),
            Ordering::Release,
        );
        let topics: Vec<String> = self.lock_watchers().keys().cloned().collect();
        for topic in topics {
            let positions = self.applied(&topic)?;
            self.notify_watchers(&topic, &positions);
        }
        info!(
            from_generation = previous.number,
            to_generation = self.generation(),
            "projection store generation swapped in"
        );
        Ok(Self::from_generation(previous, &self.inner.config))
    }

    /// Tells watchers of cohorts about `state` as if it had been committed:
    /// after a swap, for the states the new generation holds differently.
    pub fn announce(&self, state: Arc<PatientCareState>) {
        if self.inner.changes.receiver_count() > 0 {
            let _ = self.inner.changes.send(state);
        }
    }

    /// The digest of every partition and the positions of `topic` that it
    /// is at, read together (no commit lands in between).
    pub fn digest_at(&self, topic: &str) -> Result<StoreDigest> {
        let _writer = self.lock_writer();
        let db = self.db();
        let positions = applied_in(&db, topic)?;
        let mut partitions = BTreeMap::new();
        for item in db.scan_prefix(keys::DIGEST_PREFIX) {
            let (key, value) = item?;
            let partition =
                keys::partition_of(&key, keys::DIGEST_PREFIX.len()).map_err(|reason| {
                    StoreError::Corrupt {
                        key: keys::describe_key(&key),
                        reason,
                    }
                })?;
            let digest = PartitionDigest::decode(&value).map_err(|reason| StoreError::Corrupt {
                key: keys::describe_key(&key),
                reason,
            })?;
            if digest.states > 0 {
                partitions.insert(partition, digest);
            }
        }
        Ok(StoreDigest {
            generation: self.generation(),
            positions,
            partitions,
        })
    }

    /// Every state in `partition`'s digest with its hash and the offset of
    /// its last applied event, in patient-key order: to find which patients
    /// differ when two digests do.
    pub fn state_hashes(&self, partition: u32) -> Result<Vec<StateHash>> {
        let mut hashes = Vec::new();
        for hash in self.hashes() {
            let hash = hash?;
            if hash.partition == partition {
                hashes.push(hash);
            }
        }
        Ok(hashes)
    }

    /// Every state's hash, in patient-key order, read lazily: to compare
    /// two generations without decoding their states.
    pub fn hashes(&self) -> impl Iterator<Item = Result<StateHash>> + use<> {
        self.db().scan_prefix(keys::ENTRIES_PREFIX).map(|item| {
            let (key, value) = item?;
            let (summary, _) =
                keys::decode_summary(&value).map_err(|reason| StoreError::Corrupt {
                    key: keys::describe_key(&key),
                    reason,
                })?;
            let patient_key =
                std::str::from_utf8(&key[keys::ENTRIES_PREFIX.len()..]).map_err(|e| {
                    StoreError::Corrupt {
                        key: keys::describe_key(&key),
                        reason: format!("patient key is not UTF-8: {e}"),
                    }
                })?;
            Ok(StateHash {
                patient_key: patient_key.to_owned(),
                hash: summary.hash,
                partition: summary.partition,
                offset: summary.offset,
            })
        })
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
        let Some(entry) = self.db().scan_prefix(&prefix).keys().next() else {
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
        self.list_cohort_admitted(cohort, after, limit, limit, now, &|_| true)
    }

    /// [`Store::list_cohort`] of the members `admit` lets through (a
    /// client's limit to organisations or services): up to `limit` of
    /// them, reading at most `scan` index entries (at least `limit`), so a
    /// page for a client that may see few members ends in bounded time,
    /// short, with `next_after` to go on from.
    pub fn list_cohort_admitted(
        &self,
        cohort: &Cohort,
        after: Option<&str>,
        limit: usize,
        scan: usize,
        now: Instant,
        admit: &dyn Fn(&PatientCareState) -> bool,
    ) -> Result<CohortPage> {
        let mut states = Vec::new();
        let next_after = self.scan_cohort(
            cohort,
            after,
            limit,
            scan,
            now,
            admit,
            Decoding::Whole,
            &mut |state, _| {
                states.push(state);
            },
        )?;
        Ok(CohortPage { states, next_after })
    }

    /// [`Store::list_cohort_admitted`], each member as its stored bytes:
    /// what `ListCohort` answers with. The states are decoded only to be
    /// checked, and only in the fields the checks read
    /// ([`cohort::decode_for_membership`]): `admit` is given those.
    pub fn list_cohort_encoded(
        &self,
        cohort: &Cohort,
        after: Option<&str>,
        limit: usize,
        scan: usize,
        now: Instant,
        admit: &dyn Fn(&PatientCareState) -> bool,
    ) -> Result<EncodedCohortPage> {
        let mut members = Vec::new();
        let next_after = self.scan_cohort(
            cohort,
            after,
            limit,
            scan,
            now,
            admit,
            Decoding::ForMembership,
            &mut |state, encoded| {
                members.push((state.patient_key, encoded.to_vec()));
            },
        )?;
        Ok(EncodedCohortPage {
            members,
            next_after,
        })
    }

    /// The scan of [`Store::list_cohort_admitted`]: hands `take` each
    /// member and its stored bytes, returns where the page ended.
    #[allow(clippy::too_many_arguments)]
    fn scan_cohort(
        &self,
        cohort: &Cohort,
        after: Option<&str>,
        limit: usize,
        scan: usize,
        now: Instant,
        admit: &dyn Fn(&PatientCareState) -> bool,
        decoding: Decoding,
        take: &mut dyn FnMut(PatientCareState, &[u8]),
    ) -> Result<Option<String>> {
        let limit = limit.max(1);
        let scan = scan.max(limit);
        let plan = cohort.plan(now);
        // One generation for the whole page, should a swap come meanwhile.
        let db = self.db();
        let mut taken = 0usize;
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
            for key in db.range::<Vec<u8>, _>((start, end)).keys() {
                if read == scan || taken == limit {
                    return Ok(last_entry);
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
                let state_key = keys::state_key(patient_key);
                let stored = db.get(&state_key)?;
                let state = stored
                    .as_ref()
                    .map(|value| decoding.decode(&state_key, value))
                    .transpose()?;
                let (Some(state), Some(stored)) = (state, stored) else {
                    return Err(StoreError::Corrupt {
                        key: keys::describe_key(&key),
                        reason: format!(
                            "index entry names patient {patient_key:?}, who has no state"
                        ),
                    });
                };
                let first_here = Cohort::listing_entry(&state, &plan).as_deref() == Some(entry);
                if first_here && cohort.matches(&state, now) && admit(&state) {
                    last_entry = Some(entry.to_owned());
                    take(state, &stored);
                    taken += 1;
                } else {
                    debug!(patient_key, "not a member where the listing found them");
                    last_entry = Some(entry.to_owned());
                }
            }
        }
        Ok(None)
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
        for item in self.db().range(start..) {
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
        self.db().scan_prefix(keys::STATE_PREFIX).map(|item| {
            let (key, value) = item?;
            decode_state(&key, &value)
        })
    }

    /// How many patients have a state, merged-away ones included. Reads
    /// every state: for verification and tests, not for a hot path.
    pub fn state_count(&self) -> Result<usize> {
        let mut count = 0;
        for item in self.db().scan_prefix(keys::STATE_PREFIX).keys() {
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
        Ok(self.db().size_on_disk()?)
    }

    /// Every cohort index entry in order, as [`cohort::index_entries`]
    /// makes them: to verify the index against the states.
    pub fn index_entries(&self) -> impl Iterator<Item = Result<String>> + use<> {
        self.db().scan_prefix(keys::INDEX_PREFIX).keys().map(|key| {
            let key = key?;
            String::from_utf8(key[keys::INDEX_PREFIX.len()..].to_vec()).map_err(|e| {
                StoreError::Corrupt {
                    key: keys::describe_key(&key),
                    reason: format!("index entry is not UTF-8: {e}"),
                }
            })
        })
    }

    /// A digest of every state as 32 hex digits: the sum of the partition
    /// digests of [`Store::digest_at`], equal for two stores holding equal
    /// states however they were written, so a replay can be compared with
    /// the live store. Positions and the index are not included; they
    /// follow from the states and the log.
    pub fn digest(&self) -> Result<String> {
        let digest = self.digest_at("")?;
        let sum = digest
            .partitions
            .values()
            .fold(0u128, |sum, partition| sum.wrapping_add(partition.sum));
        Ok(format!("{sum:032x}"))
    }

    /// Recomputes every digest and summary from the states, as a check of
    /// the ones kept by commits: for tests and `baton verify`'s own checks.
    pub fn recomputed_digests(&self) -> Result<BTreeMap<u32, PartitionDigest>> {
        let mut digests: BTreeMap<u32, PartitionDigest> = BTreeMap::new();
        for item in self.db().scan_prefix(keys::STATE_PREFIX) {
            let (key, value) = item?;
            let state = decode_state(&key, &value)?;
            let summary = summary_of(&state, &value);
            digests
                .entry(summary.partition)
                .or_default()
                .add(summary.hash);
        }
        Ok(digests)
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path())
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

/// The summary the store keeps of `state`, encoded as `encoded`.
fn summary_of(state: &PatientCareState, encoded: &[u8]) -> Summary {
    let (partition, offset) = state
        .applied
        .as_ref()
        .map_or((keys::UNPLACED_PARTITION, 0), |applied| {
            (applied.partition, applied.offset)
        });
    Summary {
        hash: keys::state_hash(&state.patient_key, encoded),
        partition,
        offset,
    }
}

/// The digest of `partition` as the batch being staged leaves it: read
/// from `db` the first time.
fn digest_in<'a>(
    db: &sled::Db,
    digests: &'a mut BTreeMap<u32, PartitionDigest>,
    partition: u32,
) -> Result<&'a mut PartitionDigest> {
    if let std::collections::btree_map::Entry::Vacant(vacant) = digests.entry(partition) {
        let key = keys::digest_key(partition);
        let digest = match db.get(&key)? {
            Some(value) => {
                PartitionDigest::decode(&value).map_err(|reason| StoreError::Corrupt {
                    key: keys::describe_key(&key),
                    reason,
                })?
            }
            None => PartitionDigest::default(),
        };
        vacant.insert(digest);
    }
    Ok(digests.get_mut(&partition).expect("inserted above"))
}

/// Adds `state`, the difference between its stored and new index entries
/// and its move in the digests to `batch`; whether the patient had no state
/// before (every stored state has its `e/` summary).
fn stage_state(
    db: &sled::Db,
    batch: &mut sled::Batch,
    digests: &mut BTreeMap<u32, PartitionDigest>,
    key: &str,
    state: &PatientCareState,
    encoded: &[u8],
) -> Result<bool> {
    let entries_key = keys::entries_key(key);
    let (old_summary, old) = match db.get(&entries_key)? {
        Some(value) => {
            let (summary, entries) =
                keys::decode_summary(&value).map_err(|reason| StoreError::Corrupt {
                    key: keys::describe_key(&entries_key),
                    reason,
                })?;
            (Some(summary), entries)
        }
        None => (None, Vec::new()),
    };
    let summary = summary_of(state, encoded);
    let new = cohort::index_entries(state);
    for gone in old.iter().filter(|entry| !new.contains(entry)) {
        batch.remove(keys::index_key(gone));
    }
    for added in new.iter().filter(|entry| !old.contains(entry)) {
        batch.insert(keys::index_key(added), &[][..]);
    }
    if let Some(old_summary) = old_summary {
        digest_in(db, digests, old_summary.partition)?.remove(old_summary.hash);
    }
    digest_in(db, digests, summary.partition)?.add(summary.hash);
    batch.insert(entries_key, keys::encode_summary(&summary, &new));
    batch.insert(keys::state_key(key), encoded);
    Ok(old_summary.is_none())
}

/// Adds the `positions` of `topic` that move forward to `batch`, and
/// returns them.
fn stage_positions(
    db: &sled::Db,
    batch: &mut sled::Batch,
    topic: &str,
    positions: &BTreeMap<u32, u64>,
) -> Result<BTreeMap<u32, u64>> {
    let mut advanced = BTreeMap::new();
    for (&partition, &next_offset) in positions {
        let key = keys::position_key(topic, partition);
        let stored = match db.get(&key)? {
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

/// Per partition of `topic`, the next offset to read, as stored in `db`.
fn applied_in(db: &sled::Db, topic: &str) -> Result<BTreeMap<u32, u64>> {
    let prefix = keys::positions_prefix(topic);
    let mut positions = BTreeMap::new();
    for item in db.scan_prefix(&prefix) {
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
            match found {
                1 => {
                    migrate_from_format_1(db, path)?;
                    migrate_from_format_2(db, path)?;
                    stamp_format_4(db)
                }
                2 => {
                    migrate_from_format_2(db, path)?;
                    stamp_format_4(db)
                }
                3 => stamp_format_4(db),
                keys::FORMAT_VERSION => Ok(()),
                _ => Err(StoreError::Corrupt {
                    key: keys::describe_key(keys::FORMAT_KEY),
                    reason: format!(
                        "format version {found} was never written by Baton; expected {}",
                        keys::FORMAT_VERSION
                    ),
                }),
            }
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

/// Format 4 writes a commit's applied ids one key per patient; format 3's
/// keys, one per event, are chunks of one id, read as they are: only the
/// stamp changes (so that an older Baton, which would not read the chunks,
/// refuses the store).
fn stamp_format_4(db: &sled::Db) -> Result<()> {
    db.insert(keys::FORMAT_KEY, &4u32.to_be_bytes()[..])?;
    db.flush()?;
    info!("projection store stamped format 4: nothing to rewrite");
    Ok(())
}

/// Format 1 kept only the index entries under `e/` and no digests: puts
/// each state's summary in front of its entries and sums the digests, then
/// stamps format 2. Interrupted, it runs again on the next open (the format
/// is stamped last, in the batch of the digests).
fn migrate_from_format_1(db: &sled::Db, path: &Path) -> Result<()> {
    info!(path = %path.display(), "migrating the projection store from format 1 to 2 (state digests)");
    let mut digests: BTreeMap<u32, PartitionDigest> = BTreeMap::new();
    let mut batch = sled::Batch::default();
    let mut migrated = 0usize;
    for item in db.scan_prefix(keys::STATE_PREFIX) {
        let (key, value) = item?;
        let state = decode_state(&key, &value)?;
        let entries_key = keys::entries_key(&state.patient_key);
        let entries = match db.get(&entries_key)? {
            // A previous, interrupted migration may have written this one.
            Some(old) => match keys::decode_summary(&old) {
                Ok((_, entries)) if migrated_already(&old, &state, &value) => entries,
                _ => keys::decode_entries(&old).map_err(|reason| StoreError::Corrupt {
                    key: keys::describe_key(&entries_key),
                    reason,
                })?,
            },
            None => cohort::index_entries(&state),
        };
        stage_migrated_summary(
            &mut batch,
            &mut digests,
            &state,
            &value,
            entries_key,
            &entries,
        );
        migrated += 1;
        if migrated.is_multiple_of(10_000) {
            db.apply_batch(std::mem::take(&mut batch))?;
        }
    }
    finish_migration(db, batch, &digests, 2)?;
    info!(states = migrated, "projection store migrated to format 2");
    Ok(())
}

/// Format 2 kept the ids of every applied event in the state
/// (`applied_event_ids`), so a state grew with its history: moves them to
/// `a/` keys beside the state, writes each state again without them (with
/// its summary, whose hash is of the new bytes), sums the digests again,
/// then stamps format 3. Interrupted, it runs again on the next open and
/// finds the states already moved unchanged.
#[allow(deprecated)]
fn migrate_from_format_2(db: &sled::Db, path: &Path) -> Result<()> {
    info!(path = %path.display(), "migrating the projection store from format 2 to 3 (applied event ids beside the states)");
    let mut digests: BTreeMap<u32, PartitionDigest> = BTreeMap::new();
    let mut batch = sled::Batch::default();
    let (mut migrated, mut moved) = (0usize, 0usize);
    for item in db.scan_prefix(keys::STATE_PREFIX) {
        let (key, value) = item?;
        let mut state = decode_state(&key, &value)?;
        let entries_key = keys::entries_key(&state.patient_key);
        let entries = match db.get(&entries_key)? {
            Some(old) => {
                keys::decode_summary(&old)
                    .map_err(|reason| StoreError::Corrupt {
                        key: keys::describe_key(&entries_key),
                        reason,
                    })?
                    .1
            }
            None => cohort::index_entries(&state),
        };
        let ids = std::mem::take(&mut state.applied_event_ids);
        for id in &ids {
            let id = EventId::parse(id).map_err(|reason| StoreError::Corrupt {
                key: keys::describe_key(&key),
                reason: format!("an applied event id is not one: {reason}"),
            })?;
            batch.insert(keys::applied_key(&state.patient_key, id), &[][..]);
        }
        moved += ids.len();
        let encoded = if ids.is_empty() {
            value.to_vec()
        } else {
            let encoded = state.encode_to_vec();
            batch.insert(key.clone(), encoded.as_slice());
            encoded
        };
        stage_migrated_summary(
            &mut batch,
            &mut digests,
            &state,
            &encoded,
            entries_key,
            &entries,
        );
        migrated += 1;
        if migrated.is_multiple_of(10_000) {
            db.apply_batch(std::mem::take(&mut batch))?;
            info!(
                states = migrated,
                "moving applied event ids out of the states"
            );
        }
    }
    finish_migration(db, batch, &digests, 3)?;
    info!(
        states = migrated,
        applied_ids = moved,
        "projection store migrated to format 3"
    );
    Ok(())
}

/// Writes a migrated state's summary (of `encoded`, its bytes as now
/// stored) in front of its index `entries`, and adds it to its partition's
/// digest.
fn stage_migrated_summary(
    batch: &mut sled::Batch,
    digests: &mut BTreeMap<u32, PartitionDigest>,
    state: &PatientCareState,
    encoded: &[u8],
    entries_key: Vec<u8>,
    entries: &[String],
) {
    let summary = summary_of(state, encoded);
    digests
        .entry(summary.partition)
        .or_default()
        .add(summary.hash);
    batch.insert(entries_key, keys::encode_summary(&summary, entries));
}

/// The last step of a migration: replaces the partition digests with
/// `digests`, summed again over the migrated states, and stamps `format`,
/// in one batch with the rest of `batch`, then flushes.
fn finish_migration(
    db: &sled::Db,
    mut batch: sled::Batch,
    digests: &BTreeMap<u32, PartitionDigest>,
    format: u32,
) -> Result<()> {
    for item in db.scan_prefix(keys::DIGEST_PREFIX).keys() {
        batch.remove(item?);
    }
    for (&partition, digest) in digests {
        batch.insert(keys::digest_key(partition), digest.encode());
    }
    batch.insert(keys::FORMAT_KEY, &format.to_be_bytes()[..]);
    db.apply_batch(batch)?;
    db.flush()?;
    Ok(())
}

/// Whether `entries_value` already holds the summary of `state` (written by
/// an interrupted migration), rather than format 1's bare entries.
fn migrated_already(entries_value: &[u8], state: &PatientCareState, encoded: &[u8]) -> bool {
    keys::decode_summary(entries_value)
        .is_ok_and(|(summary, _)| summary == summary_of(state, encoded))
}

/// How a listing decodes the states it checks.
#[derive(Debug, Clone, Copy)]
enum Decoding {
    /// Every field: the states are handed on.
    Whole,
    /// Only what the membership checks read: the stored bytes are handed on.
    ForMembership,
}

impl Decoding {
    fn decode(self, key: &[u8], value: &[u8]) -> Result<PatientCareState> {
        match self {
            Self::Whole => decode_state(key, value),
            Self::ForMembership => {
                cohort::decode_for_membership(value).map_err(|e| StoreError::Corrupt {
                    key: keys::describe_key(key),
                    reason: format!("not a PatientCareState: {e}"),
                })
            }
        }
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
            store.db().remove(keys::STATE_COUNT_KEY).unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        assert_eq!(store.stored_states(), 2);
        assert!(store.db().contains_key(keys::STATE_COUNT_KEY).unwrap());
    }
}
