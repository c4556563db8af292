//! The one error type of the crate.

use std::path::PathBuf;

/// Result alias used throughout `baton-store`.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything that can go wrong with the projection store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// sled could not open the directory: it is missing and cannot be
    /// created, another process holds its lock, or its files are damaged.
    #[error("cannot open the projection store at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },

    /// sled failed while reading or writing an open store (disk full, IO
    /// error).
    #[error("projection store storage failed: {0}")]
    Storage(#[from] sled::Error),

    /// A file or folder of the store's generations could not be read or
    /// written.
    #[error("projection store file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Stored bytes do not decode: the store was damaged on disk or written
    /// by an incompatible build. `key` is the store key, e.g. `s/9434765919`.
    #[error("corrupt record {key:?} in the projection store: {reason}")]
    Corrupt { key: String, reason: String },

    /// The store was built from another log than the one this process
    /// reads: its positions would name other records, so resuming would
    /// skip or repeat events.
    #[error(
        "the projection store at {path} was built from topic {topic:?} of {recorded}, but this process reads it from {given}: use an empty --data-dir for this log, or point Baton at the log the store was built from"
    )]
    WrongSource {
        path: String,
        topic: String,
        recorded: String,
        given: String,
    },

    /// The store was written by a newer Baton whose layout this build does
    /// not know; reading it could silently misread states or positions.
    #[error(
        "the projection store at {path} has format version {found}, but this build reads at most version {supported}: run a newer Baton, or rebuild the projection into an empty directory"
    )]
    NewerFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
}
