//! Replays: rebuilding the projection from the start of the log into a new
//! store generation while the live one keeps projecting and serving, then
//! swapping it in between two reads.
//!
//! 1. A marker (`store.replay`) records the replay, so a restart resumes
//!    it from the new generation's own committed positions.
//! 2. A rebuilding [`Projector`] (and any other [`Rebuild`], such as the
//!    timeline of `baton up`) folds the log into the new generation, pass
//!    after pass, until a pass is short: it has nearly caught up.
//! 3. The live writers are paused at a batch boundary (readers never are),
//!    the new generation reads the last records, is flushed, and the live
//!    pointer (`store.live`) is rewritten: from here on a restart opens the
//!    new generation. [`Store::swap_in`] then moves every handle to it, and
//!    the writers resume from its positions, which are at or beyond theirs,
//!    so no consistency token goes unanswered and no state goes back.
//! 4. The states the new generation holds differently are published to the
//!    changelog (so replicas converge without a full resend) and told to
//!    cohort watchers; the old generation is removed unless kept.
//!
//! A crash in 2 or 3 before the pointer is rewritten resumes the rebuild;
//! after it, the restart finishes step 4.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use baton_log::group::Ownership;
use baton_log::topics::Topics;
use baton_log::{EventLog, partition_for_key};
use baton_proto::admin::v1::ReplayStatus;
use baton_proto::admin::v1::replay_status::Phase;
use baton_proto::state::v1::PatientCareState;
use baton_store::{Generations, ReplayMarker, Store};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{Projector, ProjectorConfig, ProjectorError, Result, publish};

/// A pass that took less than this, or left fewer than [`SMALL_REMAINDER`]
/// records unread, leaves little for the writers to wait for at the swap.
const SHORT_PASS: Duration = Duration::from_millis(300);
const SMALL_REMAINDER: u64 = 2_000;
/// States published to the changelog together after a swap.
const REPUBLISH_CHUNK: usize = 1_000;

/// Something besides the projector that fills a store from the log and is
/// rebuilt with it: the query side's timeline, in `baton up`.
#[async_trait]
pub trait Rebuild: Send {
    /// Reads the log up to its end as it is now into its store.
    async fn catch_up(&mut self) -> std::result::Result<(), String>;
}

/// Makes a [`Rebuild`] writing into a new generation's store.
#[async_trait]
pub trait RebuildFactory: Send + Sync + fmt::Debug {
    /// For logs and errors, e.g. "timeline".
    fn name(&self) -> &'static str;
    async fn rebuild(&self, store: Store) -> std::result::Result<Box<dyn Rebuild>, String>;
}

/// The replays of one live store: start, follow, cancel, and resume after
/// a restart. Cloning shares them.
#[derive(Clone)]
pub struct Replays {
    inner: Arc<Inner>,
}

struct Inner {
    log: Arc<dyn EventLog>,
    live: Store,
    generations: Generations,
    config: ProjectorConfig,
    topics: Topics,
    factories: Vec<Arc<dyn RebuildFactory>>,
    status: watch::Sender<ReplayStatus>,
    running: Mutex<Option<CancellationToken>>,
    /// In a projector group, the partitions this projector owns: a
    /// replay publishes only theirs.
    ownership: Option<Arc<Ownership>>,
}

impl fmt::Debug for Replays {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replays")
            .field("generations", &self.inner.generations)
            .field("phase", &self.status().phase())
            .finish_non_exhaustive()
    }
}

impl Replays {
    /// The replays of `live`, whose generations are `generations`; a replay
    /// folds with `config` (less publishing) and rebuilds what `factories`
    /// make beside the projection.
    pub fn new(
        log: Arc<dyn EventLog>,
        live: Store,
        generations: Generations,
        config: ProjectorConfig,
        topics: Topics,
        factories: Vec<Arc<dyn RebuildFactory>>,
    ) -> Self {
        let idle = ReplayStatus {
            phase: Phase::Idle.into(),
            generation: live.generation(),
            previous_generation: live.generation(),
            ..ReplayStatus::default()
        };
        Self {
            inner: Arc::new(Inner {
                log,
                live,
                generations,
                config,
                topics,
                factories,
                status: watch::channel(idle).0,
                running: Mutex::new(None),
                ownership: None,
            }),
        }
    }

    /// The replays of a projector of a group, which owns the partitions
    /// `ownership` holds. A replay still folds every partition (the store
    /// is whole; a partition given later finds its states there), but
    /// tells the changelog only what differs in the partitions owned when
    /// it finishes, once the group has given this projector its share.
    /// Call before the replays are shared or resumed.
    pub fn with_ownership(mut self, ownership: Option<Arc<Ownership>>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.ownership = ownership;
        }
        self
    }

    /// The replay under way, or the last one.
    pub fn status(&self) -> ReplayStatus {
        self.inner.status.borrow().clone()
    }

    /// Follows the status.
    pub fn watch(&self) -> watch::Receiver<ReplayStatus> {
        self.inner.status.subscribe()
    }

    /// Whether a replay is under way.
    pub fn is_running(&self) -> bool {
        self.lock_running().is_some()
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, Option<CancellationToken>> {
        self.inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a replay into a new generation, in the background; one
    /// already under way is left as it is and its status returned.
    pub fn start(&self, keep_previous: bool) -> Result<ReplayStatus> {
        let mut running = self.lock_running();
        if running.is_some() {
            return Ok(self.status());
        }
        let marker = ReplayMarker {
            generation: self.inner.generations.next()?,
            previous: self.inner.live.generation(),
            keep_previous,
            started_at_ms: now_ms(),
        };
        self.inner.generations.record_replay(&marker)?;
        tracing::info!(
            generation = marker.generation,
            previous = marker.previous,
            keep_previous,
            "replay started"
        );
        *running = Some(self.spawn(marker, false));
        drop(running);
        Ok(self.status())
    }

    /// At start-up: resumes a replay a crash interrupted, or finishes one
    /// whose swap was made, as its marker says. Returns whether there was
    /// one.
    pub fn resume_interrupted(&self) -> Result<bool> {
        let Some(marker) = self.inner.generations.replay()? else {
            return Ok(false);
        };
        let live = self.inner.live.generation();
        if marker.generation != live && marker.previous != live {
            tracing::warn!(
                generation = marker.generation,
                previous = marker.previous,
                live,
                "a replay marker names neither the live generation nor the one it replaces; it is discarded"
            );
            self.inner.generations.clear_replay()?;
            return Ok(false);
        }
        tracing::info!(
            generation = marker.generation,
            swapped = marker.generation == live,
            "resuming the replay a restart interrupted"
        );
        *self.lock_running() = Some(self.spawn(marker, true));
        Ok(true)
    }

    /// Stops the replay under way before its swap, and removes its
    /// generation. After the swap it is too late: the replay finishes.
    pub fn cancel(&self) -> ReplayStatus {
        if let Some(cancel) = self.lock_running().as_ref() {
            cancel.cancel();
        }
        self.status()
    }

    fn spawn(&self, marker: ReplayMarker, resumed: bool) -> CancellationToken {
        let cancel = CancellationToken::new();
        self.update(|status| {
            *status = ReplayStatus {
                phase: Phase::Rebuilding.into(),
                generation: marker.generation,
                previous_generation: marker.previous,
                keep_previous: marker.keep_previous,
                started_at: Some(timestamp_ms(marker.started_at_ms)),
                resumed,
                ..ReplayStatus::default()
            };
        });
        let replays = self.clone();
        let token = cancel.clone();
        tokio::spawn(async move {
            let outcome = replays.run(&marker, &token).await;
            let finished = Some(prost_types::Timestamp::from(SystemTime::now()));
            match outcome {
                Ok(true) => replays.update(|status| {
                    status.phase = Phase::Done.into();
                    status.finished_at = finished;
                }),
                Ok(false) => replays.update(|status| {
                    status.phase = Phase::Cancelled.into();
                    status.finished_at = finished;
                }),
                Err(error) => {
                    tracing::error!(%error, generation = marker.generation, "replay failed");
                    replays.update(|status| {
                        status.phase = Phase::Failed.into();
                        status.error = error.to_string();
                        status.finished_at = finished;
                    });
                }
            }
            *replays.lock_running() = None;
        });
        cancel
    }

    fn update(&self, change: impl FnOnce(&mut ReplayStatus)) {
        self.inner.status.send_modify(|status| {
            change(status);
            let ended = match status.phase() {
                Phase::Done => Some("done"),
                Phase::Failed => Some("failed"),
                Phase::Cancelled => Some("cancelled"),
                _ => None,
            };
            // Counted once: the phase is set to an end only once.
            crate::metrics::record_replay(status, ended.filter(|_| status.finished_at.is_some()));
        });
    }

    /// The whole replay: `Ok(false)` when cancelled.
    async fn run(&self, marker: &ReplayMarker, cancel: &CancellationToken) -> Result<bool> {
        let inner = &self.inner;
        if marker.generation != inner.live.generation() {
            let Some(previous) = self.rebuild_and_swap(marker, cancel).await? else {
                return Ok(false);
            };
            self.finish(marker, Some(previous)).await?;
        } else {
            // Swapped before a restart: finish what comes after.
            let path = inner.generations.path_of(marker.previous);
            let previous = if path.exists() {
                Some(Store::open(&path, &inner.config.store())?)
            } else {
                None
            };
            self.finish(marker, previous).await?;
        }
        Ok(true)
    }

    /// Steps 2 and 3: returns the previous generation, or `None` when
    /// cancelled (the new generation removed).
    async fn rebuild_and_swap(
        &self,
        marker: &ReplayMarker,
        cancel: &CancellationToken,
    ) -> Result<Option<Store>> {
        let inner = &self.inner;
        let path = inner.generations.path_of(marker.generation);
        let store = {
            let path = path.clone();
            let config = inner.config.store();
            let number = marker.generation;
            tokio::task::spawn_blocking(move || Store::open_generation(path, &config, number))
                .await??
        };
        let mut projector = Projector::rebuild(
            Arc::clone(&inner.log),
            store.clone(),
            inner.config.clone(),
            inner.topics.clone(),
        )
        .await?;
        let mut others = Vec::new();
        for factory in &inner.factories {
            let rebuild = factory.rebuild(store.clone()).await.map_err(|error| {
                ProjectorError::Replay(format!("cannot rebuild the {}: {error}", factory.name()))
            })?;
            others.push((factory.name(), rebuild));
        }
        let progress = self.follow_progress(&projector, &store);

        loop {
            if cancel.is_cancelled() {
                progress.cancel();
                drop(projector);
                drop(others);
                drop(store);
                inner.generations.clear_replay()?;
                inner.generations.remove(marker.generation)?;
                tracing::info!(
                    generation = marker.generation,
                    "replay cancelled; its generation removed"
                );
                return Ok(None);
            }
            let pass = Instant::now();
            projector.catch_up_while(|| !cancel.is_cancelled()).await?;
            for (name, rebuild) in &mut others {
                rebuild.catch_up().await.map_err(|error| {
                    ProjectorError::Replay(format!("rebuilding the {name}: {error}"))
                })?;
            }
            if cancel.is_cancelled() {
                continue;
            }
            let unread = self.unread(&store).await?;
            if pass.elapsed() < SHORT_PASS || unread < SMALL_REMAINDER {
                break;
            }
        }

        // Written to disk before the writers pause, so the flush inside the
        // pause has only the last pass's few records to write, not the
        // whole generation (seconds for a million events).
        store.flush_async().await?;
        self.update(|status| status.phase = Phase::Swapping.into());
        let pausing = Instant::now();
        let paused = inner.live.pause_writers().await;
        projector.catch_up().await?;
        for (name, rebuild) in &mut others {
            rebuild.catch_up().await.map_err(|error| {
                ProjectorError::Replay(format!("rebuilding the {name}: {error}"))
            })?;
        }
        progress.cancel();
        let dead_letters = projector.stats().dead_letters;
        drop(projector);
        drop(others);
        store.flush_async().await?;
        inner.generations.set_live(marker.generation)?;
        let previous = inner.live.swap_in(&store)?;
        drop(paused);
        let paused_for = pausing.elapsed();
        let applied = inner.live.applied(&inner.topics.events)?;
        let done: u64 = applied.values().sum();
        self.update(|status| {
            status.phase = Phase::Republishing.into();
            status.writers_paused_micros = paused_for.as_micros() as u64;
            status.dead_letters = dead_letters;
            status.records_done = done;
            status.records_total = status.records_total.max(done);
        });
        tracing::info!(
            generation = marker.generation,
            writers_paused_ms = paused_for.as_millis() as u64,
            dead_letters,
            "replay swapped in"
        );
        Ok(Some(previous))
    }

    /// Records of the events topic the new generation has not applied yet.
    async fn unread(&self, store: &Store) -> Result<u64> {
        let ends = self
            .inner
            .log
            .end_offsets(&self.inner.topics.events)
            .await?;
        let applied = store.applied(&self.inner.topics.events)?;
        Ok(ends
            .iter()
            .enumerate()
            .map(|(partition, &end)| {
                end.saturating_sub(applied.get(&(partition as u32)).copied().unwrap_or(0))
            })
            .sum())
    }

    /// Reports the rebuild's progress every half second until cancelled.
    fn follow_progress(&self, projector: &Projector, store: &Store) -> CancellationToken {
        let stop = CancellationToken::new();
        let read = projector.records_read();
        let replays = self.clone();
        let store = store.clone();
        let events_topic = self.inner.topics.events.clone();
        let token = stop.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let base: u64 = store
                .applied(&events_topic)
                .map(|positions| positions.values().sum())
                .unwrap_or(0);
            let mut total = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            let mut ticks = 0u64;
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    _ = tick.tick() => {}
                }
                if ticks.is_multiple_of(10)
                    && let Ok(ends) = replays.inner.log.end_offsets(&events_topic).await
                {
                    total = ends.iter().sum();
                }
                ticks += 1;
                let this_run = read.load(Ordering::Relaxed);
                let rate = this_run as f64 / started.elapsed().as_secs_f64().max(1e-3);
                replays.update(|status| {
                    status.records_done = base + this_run;
                    status.records_total = total.max(base + this_run);
                    status.records_per_second = rate;
                });
            }
        });
        stop
    }

    /// Step 4: tells the changelog and watchers what the new generation
    /// holds differently, removes the previous generation unless kept, and
    /// clears the marker.
    async fn finish(&self, marker: &ReplayMarker, previous: Option<Store>) -> Result<()> {
        let inner = &self.inner;
        self.update(|status| status.phase = Phase::Republishing.into());
        if let Some(previous) = previous {
            let live = inner.live.clone();
            let differing =
                tokio::task::spawn_blocking(move || differing_states(&previous, &live)).await??;
            let count = differing.len() as u64;
            self.update(|status| status.states_differing = count);
            for state in &differing {
                inner.live.announce(Arc::clone(state));
            }
            if inner.config.publish_states && !differing.is_empty() {
                let partitions = inner.log.partition_count(&inner.topics.events).await?;
                let positions = inner.live.applied(&inner.topics.events)?;
                if let Some(ownership) = &inner.ownership {
                    ownership.first_assignment().await;
                }
                let (differing, positions) =
                    owned_share(differing, positions, partitions, inner.ownership.as_deref());
                let generation = inner.live.generation();
                let owner = inner.ownership.as_deref().map_or("", Ownership::member);
                let mut published = 0u64;
                for chunk in differing.chunks(REPUBLISH_CHUNK) {
                    let store = inner.live.clone();
                    let states = chunk.to_vec();
                    let ledgers = tokio::task::spawn_blocking(move || {
                        publish::stored_ledgers(&store, &states)
                    })
                    .await??;
                    let records = publish::changelog_records(
                        &inner.topics.events,
                        partitions,
                        generation,
                        (chunk, None),
                        &BTreeMap::new(),
                        publish::Headers {
                            traces: &Default::default(),
                            ledgers: &ledgers,
                            owner,
                        },
                    );
                    inner.log.append(&inner.topics.state, records).await?;
                    published += chunk.len() as u64;
                    self.update(|status| status.states_republished = published);
                }
                let progress = publish::changelog_records(
                    &inner.topics.events,
                    partitions,
                    generation,
                    (&[], None),
                    &positions,
                    publish::Headers {
                        traces: &Default::default(),
                        ledgers: &Default::default(),
                        owner,
                    },
                );
                inner.log.append(&inner.topics.state, progress).await?;
            }
            tracing::info!(
                generation = marker.generation,
                states_differing = count,
                "states that differ from the previous generation told to the changelog and watchers"
            );
        }
        if !marker.keep_previous {
            inner.generations.remove(marker.previous)?;
        }
        inner.generations.clear_replay()?;
        Ok(())
    }
}

/// Of the `differing` states and the `positions` a replay would publish,
/// those of the partitions `ownership` holds (all of them outside a
/// group): another projector publishes for the rest, from its own store.
fn owned_share(
    mut differing: Vec<Arc<PatientCareState>>,
    mut positions: BTreeMap<u32, u64>,
    partitions: u32,
    ownership: Option<&Ownership>,
) -> (Vec<Arc<PatientCareState>>, BTreeMap<u32, u64>) {
    if let Some(ownership) = ownership {
        let owned = ownership.owned();
        differing.retain(|state| {
            owned.contains(&partition_for_key(state.patient_key.as_bytes(), partitions))
        });
        positions.retain(|partition, _| owned.contains(partition));
    }
    (differing, positions)
}

/// The states of `live` whose bytes differ from `previous`'s (or that
/// `previous` lacks), compared by their hashes in patient-key order.
fn differing_states(previous: &Store, live: &Store) -> Result<Vec<Arc<PatientCareState>>> {
    let mut old = previous.hashes();
    let mut next_old = old.next().transpose()?;
    let mut differing = Vec::new();
    for new in live.hashes() {
        let new = new?;
        while next_old
            .as_ref()
            .is_some_and(|old| old.patient_key < new.patient_key)
        {
            next_old = old.next().transpose()?;
        }
        let same = next_old
            .as_ref()
            .is_some_and(|old| old.patient_key == new.patient_key && old.hash == new.hash);
        if !same && let Some(state) = live.get(&new.patient_key)? {
            differing.push(Arc::new(state));
        }
    }
    Ok(differing)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

fn timestamp_ms(ms: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn state(key: &str) -> Arc<PatientCareState> {
        Arc::new(PatientCareState {
            patient_key: key.to_owned(),
            ..PatientCareState::default()
        })
    }

    #[test]
    fn a_replay_in_a_group_publishes_only_for_the_partitions_it_owns() {
        let keys: Vec<String> = (0..40).map(|n| format!("patient-{n}")).collect();
        let differing: Vec<_> = keys.iter().map(|key| state(key)).collect();
        let positions: BTreeMap<u32, u64> = (0..4).map(|partition| (partition, 100)).collect();

        let (all, everywhere) = owned_share(differing.clone(), positions.clone(), 4, None);
        assert_eq!(all.len(), 40, "outside a group, everything");
        assert_eq!(everywhere, positions);

        let ownership = Ownership::new("projector-1");
        ownership.grant(&BTreeSet::from([1, 3]));
        let (mine, my_positions) = owned_share(differing, positions, 4, Some(&ownership));
        assert_eq!(my_positions.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
        let expected: Vec<&String> = keys
            .iter()
            .filter(|key| matches!(partition_for_key(key.as_bytes(), 4), 1 | 3))
            .collect();
        assert!(!expected.is_empty() && expected.len() < 40, "{expected:?}");
        assert_eq!(
            mine.iter()
                .map(|state| &state.patient_key)
                .collect::<Vec<_>>(),
            expected
        );
    }
}
