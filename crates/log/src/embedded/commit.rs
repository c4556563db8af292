//! Group commit: concurrent appends share one `fsync`.
//!
//! A flush makes durable everything written before it started, so an append
//! that finished writing while another flush was being prepared does not
//! need a flush of its own. Each append takes a ticket *after* its write;
//! the flusher records the highest ticket issued before it flushes, and
//! every append whose ticket is at or below that mark is durable once the
//! flush returns. Under load, one flush covers every append queued behind
//! the one in progress, so the flush rate stays bounded by disk latency
//! rather than growing with the append rate.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::Result;

#[derive(Debug, Default)]
pub(crate) struct GroupCommit {
    /// Tickets issued: one per completed write.
    issued: AtomicU64,
    /// Every ticket at or below this is on stable storage.
    durable: AtomicU64,
    /// Flushes performed, for metrics: compared with the append count it
    /// shows how well appends are being grouped.
    flushes: AtomicU64,
    /// Serialises flushes so waiting appends can coalesce behind one.
    flushing: tokio::sync::Mutex<()>,
}

impl GroupCommit {
    /// Call after a write is in sled (not yet flushed).
    pub(crate) fn ticket(&self) -> u64 {
        self.issued.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub(crate) fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// Returns once the write holding `ticket` is durable, flushing `db`
    /// unless another flush already covered it.
    pub(crate) async fn wait_durable(&self, ticket: u64, db: &sled::Db) -> Result<()> {
        if self.durable.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        let _flushing = self.flushing.lock().await;
        if self.durable.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        // Writes behind every ticket issued so far happened before this
        // point, so the flush below covers them all.
        let covered = self.issued.load(Ordering::SeqCst);
        db.flush_async().await?;
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.durable.fetch_max(covered, Ordering::SeqCst);
        Ok(())
    }
}
