//! Baton's projection store: each patient's current care state, the cohort
//! index beside it and the log positions the states include, in one sled
//! database the projector writes and the query service reads; and each
//! patient's timeline of events, which the query side files.
//!
//! # Main types
//!
//! - [`Store`]: [`open`](Store::open) a directory, [`commit`](Store::commit)
//!   a projector batch, read a state ([`get`](Store::get)), a cohort a page
//!   at a time ([`list_cohort`](Store::list_cohort)), the applied positions
//!   ([`applied`](Store::applied), [`watch`](Store::watch)), every state
//!   ([`states`](Store::states)) and a [`digest`](Store::digest) to compare a
//!   rebuild with; follow every committed state ([`changes`](Store::changes));
//!   read a patient's [`timeline`](Store::timeline);
//! - [`Commit`]: what one batch writes: states, timeline records
//!   ([`TimelineRecord`]) and next offsets per partition;
//! - [`StoreConfig`]: cache size and background flush interval;
//! - [`StoreError`]: everything that can fail, naming the path or key;
//! - [`changelog`]: the records that publish committed states to
//!   `baton.care-state.v1`, and how a replica reads them back.
//!
//! # Layout
//!
//! Everything lives in sled's default tree, because a sled batch is atomic
//! within one tree only. Keys start with their kind:
//!
//! | key | value |
//! |---|---|
//! | `meta/format` | layout version, u32 big-endian; a newer one is refused on open |
//! | `s/<patient key>` | the `PatientCareState`, protobuf-encoded |
//! | `a/<patient key>\x1f<event id, 16 bytes>` | the patient's other event ids of the same commit, 16 bytes each: every one was applied to the state, so it is a duplicate there ([`Store::applied_ids`]); format 3 moved these out of the states, where they made a state grow with its history, one empty key per event; format 4 writes one key per patient per commit |
//! | `e/<patient key>` | the state's summary (its hash, the partition of its last applied event and that event's offset) then its cohort index entries (length-prefixed strings), so a commit diffs old and new entries and moves the digests without decoding the old state |
//! | `d/<partition>` | the digest of the partition's states: the wrapping sum of their hashes and their count |
//! | `meta/generation` | the generation number, u64 big-endian; absent for generation 0 |
//! | `i/<index entry>` | empty; entries come from [`baton_care::cohort::index_entries`] and end with the patient key, so a cohort is one or a few ordered range scans |
//! | `t/<patient key>\x1f<occurred_at><partition><offset>` | the event, as logged: the patient's timeline in clinical order |
//! | `meta/index` | the version of the index entries; another version is rebuilt from the states on open |
//! | `meta/states` | how many states there are, u64 big-endian, updated in each commit's batch ([`Store::stored_states`]) |
//! | `p/<topic>\x1f<partition, u32 BE>` | next offset to read, u64 big-endian (the timeline's under `<topic>#timeline`) |
//!
//! # Atomicity and recovery
//!
//! [`Store::commit`] writes a batch's states, the ids of the events applied
//! to them, the index entries they gain and lose, and the positions it moves forward in one `sled::Batch`. sled
//! applies a batch atomically, and after a crash recovers a prefix of the
//! batches in the order they were applied: each batch wholly or not at all,
//! and none without every batch before it. So the stored positions always
//! say exactly which events the stored states include, and the index always
//! matches the states. A projector that reopens the store and resumes
//! reading at [`Store::applied`] takes every event into account exactly once:
//! the events of a batch lost in the crash are read again, and their effects
//! were lost with them.
//!
//! Commits are not flushed one by one: sled flushes in the background every
//! [`StoreConfig::flush_every_ms`], so a crash loses at most that much recent
//! work, which is then replayed from the log. Call [`Store::flush`] on a
//! graceful shutdown, or when a commit must be durable before going on.
//!
//! # Digests
//!
//! Every commit keeps, per partition, the sum of the hashes (xxh3-128 of
//! patient key and encoded state) of the states whose last applied event
//! is in that partition, in the same batch as the states. A sum does not
//! depend on the order states were written in, so two stores holding the
//! same states have the same digests, and [`Store::digest_at`] reads them
//! with the positions they are at, in constant time, however large the
//! store. `baton verify` compares them with a fresh fold of the log.
//!
//! # Generations
//!
//! A replay folds the log into a new store beside the live one (see
//! [`Generations`] for the folders and the pointer to the live one), then
//! [`Store::swap_in`] makes it live for every handle at once, between two
//! reads, while writers wait at a batch boundary ([`Store::pause_writers`]).
//!
//! # Example
//!
//! ```
//! use baton_care::cohort::Cohort;
//! use baton_care::fixtures::admitted;
//! use baton_care::{apply, new_state, AppliedIds, LogPosition, ValidEvent};
//! use baton_store::{Commit, Store};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Store::temporary()?;
//! let event = ValidEvent::new(admitted("9434765919", "V1", 1_700_000_000, "WARD-7"))?;
//! let mut state = new_state(event.key());
//! let mut applied = AppliedIds::new();
//! apply(&mut state, &mut applied, &event, LogPosition::new(0, 0))?;
//!
//! let mut commit = Commit::new("baton.care-events.v1").with_state(state).with_position(0, 1);
//! // The applied event ids go beside the states: a duplicate stays a no-op.
//! commit.applied = applied.iter().map(|(key, id)| (key.to_owned(), id)).collect();
//! store.commit(&commit)?;
//! assert!(store.is_applied("9434765919", event.id())?);
//!
//! assert_eq!(store.get("9434765919")?.unwrap().version, 1);
//! assert_eq!(store.applied("baton.care-events.v1")?[&0], 1);
//! let ward = Cohort { ward: Some("WARD-7".into()), ..Cohort::default() };
//! assert_eq!(store.list_cohort(&ward, None, 50, baton_care::Instant::UNSET)?.states.len(), 1);
//! # Ok(())
//! # }
//! ```

pub mod changelog;
mod commit;
mod error;
mod keys;
mod store;

pub use commit::{Commit, TimelineRecord};
pub use error::{Result, StoreError};
pub mod generations;

pub use generations::{Generations, ReplayMarker};
pub use keys::{PartitionDigest, UNPLACED_PARTITION, state_hash};
pub use store::{
    CohortPage, EncodedCohortPage, StateHash, Store, StoreConfig, StoreDigest, WriterPermit,
    WritersPaused,
};
