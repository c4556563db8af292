//! The generations of a projection store in one data folder, and the
//! pointer to the live one.
//!
//! | path | what |
//! |---|---|
//! | `<root>/store` | generation 0: the store as first built |
//! | `<root>/store.g<N>` | generation N, built by the Nth replay |
//! | `<root>/store.live` | the live generation's number, as text; absent means 0 |
//! | `<root>/store.replay` | the replay under way, as JSON ([`ReplayMarker`]) |
//!
//! Both small files are written whole to a temporary file, synced, renamed
//! over the old one and the folder synced, so after a crash each is either
//! the old or the new file, never a torn one. Writing `store.live` is the
//! moment a replay takes effect: before it the old generation is live on
//! restart, after it the new one.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Result, StoreError};

/// The generations of one store under a data folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generations {
    root: PathBuf,
    name: String,
}

/// A replay under way: written when it starts, removed when it is done,
/// so a process that restarts finishes what a crash interrupted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayMarker {
    /// The generation being built.
    pub generation: u64,
    /// The generation that was live when the replay started.
    pub previous: u64,
    /// Keep the previous generation's folder after the swap.
    pub keep_previous: bool,
    /// When the replay was asked for, in milliseconds since 1970.
    pub started_at_ms: u64,
}

impl Generations {
    /// The generations of the store named `name` (e.g. `store`) in `root`.
    pub fn new(root: impl Into<PathBuf>, name: impl Into<String>) -> Self {
        Self {
            root: root.into(),
            name: name.into(),
        }
    }

    /// The folder of `generation`.
    pub fn path_of(&self, generation: u64) -> PathBuf {
        match generation {
            0 => self.root.join(&self.name),
            n => self.root.join(format!("{}.g{n}", self.name)),
        }
    }

    fn pointer_path(&self) -> PathBuf {
        self.root.join(format!("{}.live", self.name))
    }

    fn marker_path(&self) -> PathBuf {
        self.root.join(format!("{}.replay", self.name))
    }

    /// The live generation's number.
    pub fn live(&self) -> Result<u64> {
        let path = self.pointer_path();
        match fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map_err(|_| StoreError::Corrupt {
                key: path.display().to_string(),
                reason: format!("{:?} is not a generation number", text.trim()),
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    /// The live generation's folder.
    pub fn live_path(&self) -> Result<PathBuf> {
        Ok(self.path_of(self.live()?))
    }

    /// Makes `generation` the one opened from now on, durably.
    pub fn set_live(&self, generation: u64) -> Result<()> {
        write_atomically(&self.pointer_path(), format!("{generation}\n").as_bytes())
    }

    /// Every generation with a folder, in order.
    pub fn list(&self) -> Result<Vec<u64>> {
        let mut found = Vec::new();
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(found),
            Err(source) => {
                return Err(StoreError::Io {
                    path: self.root.clone(),
                    source,
                });
            }
        };
        let numbered = format!("{}.g", self.name);
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::Io {
                path: self.root.clone(),
                source,
            })?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name == self.name {
                found.push(0);
            } else if let Some(number) = name.strip_prefix(&numbered)
                && let Ok(number) = number.parse::<u64>()
            {
                found.push(number);
            }
        }
        found.sort_unstable();
        Ok(found)
    }

    /// The number a new generation gets: above every one there is.
    pub fn next(&self) -> Result<u64> {
        let highest = self.list()?.into_iter().max().unwrap_or(0);
        Ok(highest.max(self.live()?) + 1)
    }

    /// The replay under way, if any.
    pub fn replay(&self) -> Result<Option<ReplayMarker>> {
        let path = self.marker_path();
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|error| StoreError::Corrupt {
                        key: path.display().to_string(),
                        reason: format!("not a replay marker: {error}"),
                    })
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    /// Records that `marker`'s replay is under way, durably.
    pub fn record_replay(&self, marker: &ReplayMarker) -> Result<()> {
        let json = serde_json::to_vec_pretty(marker).expect("a marker serialises");
        write_atomically(&self.marker_path(), &json)
    }

    /// Records that no replay is under way.
    pub fn clear_replay(&self) -> Result<()> {
        let path = self.marker_path();
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.root),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    /// Removes the folder of `generation`, which must not be live; nothing
    /// to do if it is gone already.
    pub fn remove(&self, generation: u64) -> Result<()> {
        let path = self.path_of(generation);
        if generation == self.live()? {
            return Err(StoreError::Corrupt {
                key: path.display().to_string(),
                reason: format!("generation {generation} is live and cannot be removed"),
            });
        }
        match fs::remove_dir_all(&path) {
            Ok(()) => sync_dir(&self.root),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new
/// one, whole.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|source| StoreError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let temporary = path.with_extension("tmp");
    let io = |source| StoreError::Io {
        path: temporary.clone(),
        source,
    };
    let mut file = fs::File::create(&temporary).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    fs::rename(&temporary, path).map_err(|source| StoreError::Io {
        path: path.to_owned(),
        source,
    })?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    // A folder is opened read-only to sync it (Unix); elsewhere the rename
    // is as durable as the platform makes it.
    #[cfg(unix)]
    fs::File::open(dir)
        .and_then(|folder| folder.sync_all())
        .map_err(|source| StoreError::Io {
            path: dir.to_owned(),
            source,
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pointer_names_the_live_generation_and_numbers_only_grow() {
        let dir = tempfile::tempdir().unwrap();
        let generations = Generations::new(dir.path(), "store");
        assert_eq!(generations.live().unwrap(), 0);
        assert_eq!(generations.live_path().unwrap(), dir.path().join("store"));
        assert_eq!(generations.next().unwrap(), 1);

        fs::create_dir_all(generations.path_of(0)).unwrap();
        fs::create_dir_all(generations.path_of(1)).unwrap();
        fs::create_dir_all(dir.path().join("store.gx")).unwrap();
        assert_eq!(generations.list().unwrap(), vec![0, 1]);
        assert_eq!(generations.next().unwrap(), 2);

        generations.set_live(1).unwrap();
        assert_eq!(generations.live().unwrap(), 1);
        assert_eq!(
            generations.live_path().unwrap(),
            dir.path().join("store.g1")
        );
        assert!(
            generations
                .remove(1)
                .unwrap_err()
                .to_string()
                .contains("live")
        );
        generations.remove(0).unwrap();
        generations.remove(0).unwrap();
        assert_eq!(generations.list().unwrap(), vec![1]);
        assert_eq!(generations.next().unwrap(), 2);
    }

    #[test]
    fn a_replay_marker_round_trips_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let generations = Generations::new(dir.path(), "store");
        assert_eq!(generations.replay().unwrap(), None);
        let marker = ReplayMarker {
            generation: 2,
            previous: 1,
            keep_previous: true,
            started_at_ms: 1_700_000_000_000,
        };
        generations.record_replay(&marker).unwrap();
        assert_eq!(generations.replay().unwrap(), Some(marker));
        generations.clear_replay().unwrap();
        generations.clear_replay().unwrap();
        assert_eq!(generations.replay().unwrap(), None);

        fs::write(dir.path().join("store.replay"), "{").unwrap();
        let error = generations.replay().unwrap_err().to_string();
        assert!(
            error.contains("store.replay") && error.contains("not a replay marker"),
            "{error}"
        );
        fs::write(dir.path().join("store.live"), "two").unwrap();
        let error = generations.live().unwrap_err().to_string();
        assert!(
            error.contains("\"two\" is not a generation number"),
            "{error}"
        );
    }
}
