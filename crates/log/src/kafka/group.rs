//! [`join`]: a member of the consumer group sharing a topic's partitions.
//!
//! The member is a librdkafka consumer subscribed to the topic, with static
//! membership and cooperative-sticky assignment, polled on a thread of its
//! own. It reads nothing: every partition it is given is paused at once,
//! and the member's owner reads them with a [`KafkaReader`] of its own from
//! positions of its own. The group is only the arbiter of who owns what.
//!
//! Rebalances arrive in librdkafka's rebalance callback, on the member's
//! thread, which turns them into [`GroupChange`]s:
//! - an assignment is added to the [`Ownership`], then announced;
//! - a revocation is announced, and the callback waits (librdkafka keeps
//!   heartbeating meanwhile) until the owner [releases](crate::group::Release)
//!   the partitions, having committed what it did with them; only then do
//!   they leave the ownership and the assignment;
//! - a lost assignment leaves the ownership first, then is announced: the
//!   owner must not commit for it even before it hears.
//!
//! [`KafkaReader`]: super::reader::KafkaReader

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaResult;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::{KafkaConfig, kafka_error};
use crate::group::{CommitOffsets, GroupChange, GroupSettings, Membership, Ownership, Release};
use crate::{LogError, Result};

/// How long one poll of the member waits: the latency of a rebalance
/// reaching the owner, and of a stop reaching the thread.
const POLL: Duration = Duration::from_millis(100);

/// Joins `settings.group` as a member sharing `topic`'s partitions.
pub(crate) fn join(
    config: &KafkaConfig,
    topic: &str,
    settings: &GroupSettings,
) -> Result<Membership> {
    let ownership = Arc::new(Ownership::new(settings.instance_id.clone()));
    let (changes, changes_rx) = mpsc::unbounded_channel();
    let context = GroupContext {
        topic: topic.to_owned(),
        group: settings.group.clone(),
        ownership: Arc::clone(&ownership),
        changes,
    };
    let consumer: BaseConsumer<GroupContext> = config
        .group_member(settings)
        .create_with_context(context)
        .map_err(|source| LogError::InvalidConfig {
            key: "kafka.client".to_owned(),
            reason: format!(
                "librdkafka refused the settings of a member of group {:?}: {source}",
                settings.group
            ),
        })?;
    consumer
        .subscribe(&[topic])
        .map_err(|source| kafka_error("join the consumer group", Some(topic), None, source))?;
    let consumer = Arc::new(consumer);
    let stop = Arc::new(AtomicBool::new(false));
    {
        let consumer = Arc::clone(&consumer);
        let stop = Arc::clone(&stop);
        let group = settings.group.clone();
        std::thread::Builder::new()
            .name("baton-group".to_owned())
            .spawn(move || poll_until_stopped(&consumer, &stop, &group))
            .map_err(|_| LogError::Closed)?;
    }
    info!(
        group = %settings.group,
        instance_id = %settings.instance_id,
        %topic,
        session_timeout_ms = settings.session_timeout_ms,
        "joining the consumer group"
    );
    let committer = Arc::new(GroupMemberCommitter {
        consumer,
        topic: topic.to_owned(),
        ownership: Arc::clone(&ownership),
    });
    Ok(Membership::new(
        ownership,
        changes_rx,
        committer,
        Box::new(StopOnDrop(stop)),
    ))
}

/// Polls the member, which runs its rebalance callbacks, until `stop`.
/// The thread is left to end by itself: closing a consumer waits for the
/// group coordinator, without end when the cluster is gone.
fn poll_until_stopped(consumer: &BaseConsumer<GroupContext>, stop: &AtomicBool, group: &str) {
    while !stop.load(Ordering::Acquire) {
        match consumer.poll(POLL) {
            // A record fetched before its partition was paused: the
            // member's owner reads it with its own reader.
            None | Some(Ok(_)) => {}
            Some(Err(error)) => debug!(%group, %error, "consumer group member"),
        }
    }
    debug!(%group, "leaving the consumer group");
}

/// Stops the member's thread when the membership is dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

struct GroupContext {
    topic: String,
    group: String,
    ownership: Arc<Ownership>,
    changes: mpsc::UnboundedSender<GroupChange>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let partitions: BTreeSet<u32> = tpl
            .elements_for_topic(&self.topic)
            .iter()
            .filter_map(|element| u32::try_from(element.partition()).ok())
            .collect();
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // Nothing is read here: start where a fetch costs least,
                // and pause before any fetch can matter.
                let _ = tpl.set_all_offsets(Offset::End);
                let assigned = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(error) = assigned.and_then(|()| consumer.pause(tpl)) {
                    warn!(group = %self.group, member = %self.ownership.member(), %error, "cannot take the partitions the group assigned");
                }
                info!(group = %self.group, member = %self.ownership.member(), ?partitions, "consumer group assigned partitions");
                self.ownership.grant(&partitions);
                let _ = self.changes.send(GroupChange::Assigned(partitions));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS if !consumer.assignment_lost() => {
                info!(group = %self.group, member = %self.ownership.member(), ?partitions, "consumer group revoking partitions: finishing with them");
                let (done, released) = oneshot::channel();
                let revoked = GroupChange::Revoked {
                    partitions: partitions.clone(),
                    release: Release::new(done),
                };
                if self.changes.send(revoked).is_ok() {
                    // Answered, or dropped, by the owner; nobody else waits.
                    let _ = released.blocking_recv();
                }
                self.ownership.withdraw(&partitions);
                self.unassign(consumer, tpl, cooperative);
                info!(group = %self.group, member = %self.ownership.member(), ?partitions, "partitions given back to the consumer group");
            }
            other => {
                // Lost (the session timed out), or a rebalance error: other
                // members may own these now.
                self.ownership.withdraw(&partitions);
                if other == RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                    warn!(group = %self.group, member = %self.ownership.member(), ?partitions, "consumer group assignment lost (session timed out): no more commits for these partitions");
                } else {
                    warn!(group = %self.group, member = %self.ownership.member(), error = ?other, ?partitions, "consumer group rebalance failed: giving these partitions up");
                }
                let _ = self.changes.send(GroupChange::Lost(partitions));
                self.unassign(consumer, tpl, cooperative);
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(error) = result {
            debug!(group = %self.group, %error, "consumer group commit failed");
        }
    }
}

impl GroupContext {
    fn unassign(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList, cooperative: bool) {
        let unassigned = if cooperative {
            consumer.incremental_unassign(tpl)
        } else {
            consumer.unassign()
        };
        if let Err(error) = unassigned {
            warn!(group = %self.group, member = %self.ownership.member(), %error, "cannot give partitions back to the consumer group");
        }
    }
}

/// Commits positions through the member, for the partitions it owns: a
/// group with live members takes commits from its members only.
struct GroupMemberCommitter {
    consumer: Arc<BaseConsumer<GroupContext>>,
    topic: String,
    ownership: Arc<Ownership>,
}

impl std::fmt::Debug for GroupMemberCommitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupMemberCommitter")
            .field("topic", &self.topic)
            .field("member", &self.ownership.member())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl CommitOffsets for GroupMemberCommitter {
    async fn commit_offsets(&self, positions: &BTreeMap<u32, u64>) -> Result<()> {
        let mut offsets = TopicPartitionList::new();
        for (&partition, &offset) in positions {
            if self.ownership.owns(partition) {
                offsets
                    .add_partition_offset(
                        &self.topic,
                        partition as i32,
                        Offset::Offset(offset as i64),
                    )
                    .map_err(|source| {
                        kafka_error(
                            "commit group offsets",
                            Some(&self.topic),
                            Some(partition),
                            source,
                        )
                    })?;
            }
        }
        if offsets.count() == 0 {
            return Ok(());
        }
        // Asynchronous: the answer comes to the commit callback, so a
        // cluster that is gone never holds the caller.
        self.consumer
            .commit(&offsets, CommitMode::Async)
            .map_err(|source| kafka_error("commit group offsets", Some(&self.topic), None, source))
    }
}
