//! Sharing a topic's partitions among the processes of a consumer group:
//! which partitions this process owns, and how that changes.
//!
//! A member is given partitions ([`GroupChange::Assigned`]), asked to give
//! some back ([`GroupChange::Revoked`], answered once it has finished with
//! them), or told it lost some without being asked
//! ([`GroupChange::Lost`]: its session timed out, and another member may
//! own them already). The [`Ownership`] it holds says, at any instant,
//! which partitions it may still commit and publish for: a lost partition
//! leaves it before the change is even delivered.
//!
//! Joining a group never moves a reader: where a member starts reading a
//! partition it is given is its own business (Baton's projector takes it
//! from its store). The offsets a member commits to the group are for
//! monitoring only.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, watch};

use crate::{LogError, Result};

/// How a process joins the group sharing a topic's partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSettings {
    /// The consumer group: every member shares the topic's partitions.
    pub group: String,
    /// This member's static identity (`group.instance.id`), e.g. its pod
    /// name: a member that comes back under the same identity within the
    /// session timeout gets its partitions back without a rebalance.
    pub instance_id: String,
    /// How long the group waits for a silent member before giving its
    /// partitions to the others.
    pub session_timeout_ms: u64,
    /// Joins as a static member (KIP-345: `group.instance.id` is
    /// `instance_id`), whose restart within the session timeout moves no
    /// partition. Off, `instance_id` only names the member (`client.id`).
    pub static_membership: bool,
}

/// The partitions a member owns now. Shared: the membership changes it,
/// and whoever commits or publishes for a partition asks it first.
#[derive(Debug)]
pub struct Ownership {
    member: String,
    owned: RwLock<BTreeSet<u32>>,
    /// How many assignments have been handled: 0 until the group first
    /// gave this member its share (which may be no partition at all).
    assignments: watch::Sender<u64>,
}

impl Ownership {
    pub fn new(member: impl Into<String>) -> Self {
        Self {
            member: member.into(),
            owned: RwLock::new(BTreeSet::new()),
            assignments: watch::Sender::new(0),
        }
    }

    /// The member's instance id.
    pub fn member(&self) -> &str {
        &self.member
    }

    pub fn owns(&self, partition: u32) -> bool {
        self.owned
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&partition)
    }

    pub fn owned(&self) -> BTreeSet<u32> {
        self.owned
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Adds `partitions`.
    pub fn grant(&self, partitions: &BTreeSet<u32>) {
        self.owned
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(partitions);
    }

    /// Removes `partitions`.
    pub fn withdraw(&self, partitions: &BTreeSet<u32>) {
        self.owned
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|partition| !partitions.contains(partition));
    }

    /// Says that an assignment was handled: its partitions are ready.
    pub fn assignment_handled(&self) {
        self.assignments.send_modify(|count| *count += 1);
    }

    /// Resolves once the first assignment has been handled.
    pub async fn first_assignment(&self) {
        let mut assignments = self.assignments.subscribe();
        // Fails only if the sender went, which it cannot while `self` lives.
        let _ = assignments.wait_for(|&count| count > 0).await;
    }
}

/// A change of the partitions a member owns.
#[derive(Debug)]
pub enum GroupChange {
    /// These partitions are the member's now. They are in its
    /// [`Ownership`] already.
    Assigned(BTreeSet<u32>),
    /// The group takes these partitions back once the member says it is
    /// done with them ([`Release::done`]), having finished and committed
    /// what it was doing with them; until then they stay in its
    /// [`Ownership`].
    Revoked {
        partitions: BTreeSet<u32>,
        release: Release,
    },
    /// These partitions were taken without asking (the member's session
    /// timed out): another member may own them already. They have left
    /// the member's [`Ownership`].
    Lost(BTreeSet<u32>),
}

/// The answer a revocation waits for; dropping it answers too.
#[derive(Debug)]
pub struct Release(Option<oneshot::Sender<()>>);

impl Release {
    pub fn new(done: oneshot::Sender<()>) -> Self {
        Self(Some(done))
    }

    /// Gives the partitions back.
    pub fn done(mut self) {
        if let Some(done) = self.0.take() {
            // Fails only when the group stopped waiting.
            let _ = done.send(());
        }
    }
}

/// Commits a member's positions to its group, for monitoring.
#[async_trait]
pub trait CommitOffsets: Send + Sync + fmt::Debug {
    /// Commits `positions` (the next offset to read per partition) of the
    /// group's topic.
    async fn commit_offsets(&self, positions: &BTreeMap<u32, u64>) -> Result<()>;
}

/// This process's membership of a group: its partitions, their changes,
/// and a way to commit positions as a member. Dropping it leaves the
/// group (a static member is only forgotten after its session timeout).
pub struct Membership {
    ownership: Arc<Ownership>,
    changes: mpsc::UnboundedReceiver<GroupChange>,
    committer: Arc<dyn CommitOffsets>,
    /// Whatever keeps the backend's member alive.
    _member: Box<dyn Send + Sync>,
}

impl fmt::Debug for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Membership")
            .field("member", &self.ownership.member())
            .field("owned", &self.ownership.owned())
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// A membership whose changes come through `changes`, the backend
    /// keeping `ownership` up to date as it sends them.
    pub fn new(
        ownership: Arc<Ownership>,
        changes: mpsc::UnboundedReceiver<GroupChange>,
        committer: Arc<dyn CommitOffsets>,
        member: Box<dyn Send + Sync>,
    ) -> Self {
        Self {
            ownership,
            changes,
            committer,
            _member: member,
        }
    }

    pub fn ownership(&self) -> Arc<Ownership> {
        Arc::clone(&self.ownership)
    }

    pub fn committer(&self) -> Arc<dyn CommitOffsets> {
        Arc::clone(&self.committer)
    }

    /// The next change; cancel-safe. Fails with [`LogError::Closed`] when
    /// the backend's member stopped.
    pub async fn next_change(&mut self) -> Result<GroupChange> {
        self.changes.recv().await.ok_or(LogError::Closed)
    }
}
