//! A log a test can step into before each append: to hold appends back,
//! or to make them fail as a broker that is down would.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::group::{GroupSettings, Membership};
use crate::{EventLog, LogReader, NewRecord, Position, Result, TopicSpec};

/// What a test does before an append reaches the inner log.
#[async_trait]
pub trait BeforeAppend: Send + Sync + std::fmt::Debug + 'static {
    /// Called with the append's topic, before anything is written; an
    /// error is the append's answer and nothing is written.
    async fn before_append(&self, topic: &str) -> Result<()>;
}

/// `inner`, with `before` run ahead of every append (also of each
/// `enqueue_append`, which appends through [`EventLog::append`] here).
/// Everything else is the inner log's.
#[derive(Debug)]
pub struct InterceptedLog<L, B> {
    pub inner: L,
    pub before: B,
}

#[async_trait]
impl<L: EventLog, B: BeforeAppend> EventLog for InterceptedLog<L, B> {
    async fn ensure_topic(&self, topic: &str, spec: TopicSpec) -> Result<u32> {
        self.inner.ensure_topic(topic, spec).await
    }

    async fn partition_count(&self, topic: &str) -> Result<u32> {
        self.inner.partition_count(topic).await
    }

    async fn append(&self, topic: &str, records: Vec<NewRecord>) -> Result<Vec<Position>> {
        self.before.before_append(topic).await?;
        self.inner.append(topic, records).await
    }

    async fn end_offsets(&self, topic: &str) -> Result<Vec<u64>> {
        self.inner.end_offsets(topic).await
    }

    async fn reader(&self, topic: &str, from: BTreeMap<u32, u64>) -> Result<Box<dyn LogReader>> {
        self.inner.reader(topic, from).await
    }

    async fn identity(&self) -> Result<String> {
        self.inner.identity().await
    }

    async fn flush(&self) -> Result<()> {
        self.inner.flush().await
    }

    async fn join_group(&self, topic: &str, settings: &GroupSettings) -> Result<Membership> {
        self.inner.join_group(topic, settings).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::LogError;
    use crate::embedded::EmbeddedLog;

    #[derive(Debug, Default)]
    struct Switch(AtomicBool);

    #[async_trait]
    impl BeforeAppend for Switch {
        async fn before_append(&self, _topic: &str) -> Result<()> {
            if self.0.load(Ordering::SeqCst) {
                Err(LogError::Closed)
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn a_refused_append_writes_nothing_and_the_next_goes_through() {
        let log = InterceptedLog {
            inner: EmbeddedLog::temporary().unwrap(),
            before: Switch::default(),
        };
        log.ensure_topic("t", TopicSpec::events(1)).await.unwrap();
        let record = || vec![NewRecord::new("k", b"v".to_vec())];
        log.before.0.store(true, Ordering::SeqCst);
        assert!(matches!(
            log.append("t", record()).await,
            Err(LogError::Closed)
        ));
        assert!(log.enqueue_append("t", record()).await.is_err());
        assert_eq!(log.end_offsets("t").await.unwrap(), vec![0]);
        log.before.0.store(false, Ordering::SeqCst);
        log.append("t", record()).await.unwrap();
        assert_eq!(log.end_offsets("t").await.unwrap(), vec![1]);
    }
}
