//! The audit log: who read whose record, when, how they proved who they
//! are and why they say they did — and every call refused.
//!
//! Every read of patient data (each state `GetCareState`,
//! `GetCareStateAsOf` and `GetTimeline` answer with, each patient a
//! `ListCohort` page or a `WatchCohort` stream sends) and every refusal is
//! an [`AuditRecord`], appended to the audit topic (`baton.audit.v1`, kept
//! forever; on the embedded log, its own log in the data folder) by one
//! writer task with group commit: records that arrive while an append is
//! in flight go together in the next one.
//!
//! - [`Durability::BeforeResponse`] (the default): a read's records are
//!   durable before its response is sent.
//! - [`Durability::WithinDelay`]: the response goes once its records are
//!   queued; they are durable within `max_delay_ms`, or the log is counted
//!   down and reads refused until it recovers. The writer gathers records
//!   for `max_delay_ms / 20` (1 to 10 ms) before each append, so an append
//!   carries many records: its fixed cost, not the records, was what a
//!   busy audit log spent its time on.
//!
//! When the audit log cannot take records, a read **fails closed**
//! (`UNAVAILABLE`), unless `fail_closed = false`, when the failure is
//! logged and counted and the read goes on.
//!
//! # Layout
//! - `lib.rs`: [`AuditConfig`], [`Auditor`] and its writer.
//! - `record.rs`: [`Caller`] (who is calling, from the request) and the
//!   records made of it.
//! - `list.rs`: [`list`], reading records back for `baton audit`.
//! - `metrics.rs`: records written, appends failed, reads refused.

mod list;
pub mod metrics;
mod record;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use baton_log::{EventLog, NewRecord, TopicSpec};
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

pub use baton_proto::audit::v1::{AssertedBy, AuditRecord, Authentication, Outcome};
pub use list::{AuditFilter, AuditPage, ListError, list, patient_key_of};
pub use record::{Caller, METADATA_PURPOSE, METADATA_ROLE, METADATA_USER};

/// The audit topic unless configured otherwise.
pub const AUDIT_TOPIC: &str = "baton.audit.v1";

/// When a read's audit records are durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Before the response is sent.
    BeforeResponse,
    /// Within `max_delay_ms` of the response.
    WithinDelay,
}

/// The `audit` table of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Record reads and refusals. Off only for a throwaway demo: nothing
    /// then says who read what.
    pub enabled: bool,
    /// The topic records go to (on Kafka; the embedded log keeps its own
    /// log under the data folder with this topic in it).
    pub topic: String,
    /// Partitions of the topic when Baton creates it.
    pub partitions: u32,
    /// `before_response` or `within_delay`.
    pub durability: Durability,
    /// With `within_delay`: longest a record may wait to be durable before
    /// reads are refused.
    pub max_delay_ms: u64,
    /// Longest one append may take before the audit log counts as down.
    pub append_timeout_ms: u64,
    /// Refuse reads (`UNAVAILABLE`) when the audit log cannot take their
    /// records. `false` lets them through, logged and counted.
    pub fail_closed: bool,
    /// Most records in one append.
    pub max_batch_records: usize,
    /// Most records waiting for the writer; past it, reads are refused as
    /// when the log is down.
    pub queue_records: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            topic: AUDIT_TOPIC.to_owned(),
            partitions: 8,
            durability: Durability::BeforeResponse,
            max_delay_ms: 1_000,
            append_timeout_ms: 5_000,
            fail_closed: true,
            max_batch_records: 5_000,
            queue_records: 100_000,
        }
    }
}

impl AuditConfig {
    /// Checks the settings, naming the bad one under `audit.`.
    pub fn validate(&self) -> Result<(), String> {
        baton_log::topics::validate_topic_name(&self.topic)
            .map_err(|error| format!("audit.topic: {error}"))?;
        if self.partitions == 0 {
            return Err("audit.partitions: 0: expected at least 1".into());
        }
        if self.append_timeout_ms == 0 {
            return Err(
                "audit.append_timeout_ms: expected a positive number of milliseconds".into(),
            );
        }
        if self.durability == Durability::WithinDelay && self.max_delay_ms == 0 {
            return Err("audit.max_delay_ms: expected a positive number of milliseconds with durability = \"within_delay\"".into());
        }
        if self.max_batch_records == 0 {
            return Err("audit.max_batch_records: expected at least 1".into());
        }
        if self.queue_records < self.max_batch_records {
            return Err(format!(
                "audit.queue_records: {} is fewer than max_batch_records ({}): expected at least as many",
                self.queue_records, self.max_batch_records
            ));
        }
        Ok(())
    }
}

/// The audit log could not take records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("the audit log cannot take records: {0}")]
    Unavailable(String),
}

impl AuditError {
    /// What a refused read answers: `UNAVAILABLE`, retryable.
    pub fn status(&self) -> tonic::Status {
        tonic::Status::unavailable(format!(
            "{self}; reads are refused until it can (audit.fail_closed)"
        ))
    }
}

/// Records waiting for the writer, and whom to tell when they are durable.
struct Pending {
    records: Vec<AuditRecord>,
    done: Option<oneshot::Sender<Result<(), AuditError>>>,
}

#[derive(Debug)]
struct Inner {
    queue: mpsc::UnboundedSender<Pending>,
    queued: Arc<AtomicUsize>,
    /// The last append succeeded (or none has failed yet).
    healthy: Arc<AtomicBool>,
    config: AuditConfig,
    /// `service` of every record.
    service: &'static str,
    host: String,
}

/// Records reads and refusals in the audit log. Cloning shares the writer.
#[derive(Debug, Clone)]
pub struct Auditor {
    inner: Option<Arc<Inner>>,
}

impl Auditor {
    /// Records nothing (`audit.enabled = false`).
    pub fn off() -> Self {
        Self { inner: None }
    }

    /// Creates the topic in `log` if missing and starts the writer; records
    /// name `service` (`query`, `ingest`, `admin`). Off when
    /// `config.enabled` is false.
    pub async fn start(
        log: Arc<dyn EventLog>,
        config: &AuditConfig,
        service: &'static str,
    ) -> Result<Self, AuditError> {
        if !config.enabled {
            tracing::warn!(
                service,
                "audit is off (audit.enabled = false): nothing records who reads patient data"
            );
            return Ok(Self::off());
        }
        config.validate().map_err(AuditError::Unavailable)?;
        log.ensure_topic(&config.topic, TopicSpec::events(config.partitions))
            .await
            .map_err(|error| {
                AuditError::Unavailable(format!("cannot create topic {:?}: {error}", config.topic))
            })?;
        metrics::register();
        let (queue, receiver) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            queue,
            queued: Arc::new(AtomicUsize::new(0)),
            healthy: Arc::new(AtomicBool::new(true)),
            config: config.clone(),
            service,
            host: host_name(),
        });
        let writer = Writer {
            log,
            topic: config.topic.clone(),
            timeout: Duration::from_millis(match config.durability {
                Durability::BeforeResponse => config.append_timeout_ms,
                Durability::WithinDelay => config.append_timeout_ms.min(config.max_delay_ms),
            }),
            max_batch: config.max_batch_records,
            linger: match config.durability {
                // Reads wait: the batch is whatever arrived meanwhile.
                Durability::BeforeResponse => Duration::ZERO,
                // Nobody waits: gather a few milliseconds' worth, so each
                // append carries many records rather than one or two.
                Durability::WithinDelay => {
                    Duration::from_millis((config.max_delay_ms / 20).clamp(1, 10))
                }
            },
            queued: Arc::clone(&inner.queued),
            healthy: Arc::clone(&inner.healthy),
        };
        tokio::spawn(writer.run(receiver));
        tracing::info!(service, topic = %config.topic, durability = ?config.durability, fail_closed = config.fail_closed, "audit log on");
        Ok(Self { inner: Some(inner) })
    }

    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// The service and host records name.
    pub(crate) fn origin(&self) -> (&'static str, &str) {
        self.inner
            .as_ref()
            .map_or(("", ""), |inner| (inner.service, inner.host.as_str()))
    }

    /// Records `records`, durably before returning with
    /// `before_response`, queued with `within_delay`. An error means the
    /// read they record must be refused (with `fail_closed`; without, the
    /// failure is logged and `Ok` returned).
    pub async fn record(&self, records: Vec<AuditRecord>) -> Result<(), AuditError> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        if records.is_empty() {
            return Ok(());
        }
        let count = records.len();
        let outcome = match inner.config.durability {
            Durability::BeforeResponse => {
                let (done, durable) = oneshot::channel();
                match self.enqueue(inner, records, Some(done)) {
                    Err(error) => Err(error),
                    Ok(()) => durable.await.unwrap_or_else(|_| {
                        Err(AuditError::Unavailable(
                            "the audit writer has stopped".into(),
                        ))
                    }),
                }
            }
            Durability::WithinDelay => {
                if inner.healthy.load(Ordering::Acquire) {
                    self.enqueue(inner, records, None)
                } else {
                    // Still queued, so that the writer finds out when the
                    // log is back; the read waits no longer than that.
                    let _ = self.enqueue(inner, records, None);
                    Err(AuditError::Unavailable(format!(
                        "records are not durable within audit.max_delay_ms ({} ms)",
                        inner.config.max_delay_ms
                    )))
                }
            }
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(error) if inner.config.fail_closed => {
                metrics::refused(count);
                tracing::warn!(%error, records = count, "refused a read: its audit records cannot be written");
                Err(error)
            }
            Err(error) => {
                metrics::lost(count);
                tracing::error!(%error, records = count, "audit records not written; the read goes on (audit.fail_closed = false)");
                Ok(())
            }
        }
    }

    /// Records `records` without waiting: for refused calls, which send
    /// no patient data whatever becomes of their records.
    pub fn record_detached(&self, records: Vec<AuditRecord>) {
        let Some(inner) = &self.inner else {
            return;
        };
        if let Err(error) = self.enqueue(inner, records, None) {
            tracing::warn!(%error, "a refusal's audit record was not queued");
        }
    }

    fn enqueue(
        &self,
        inner: &Inner,
        records: Vec<AuditRecord>,
        done: Option<oneshot::Sender<Result<(), AuditError>>>,
    ) -> Result<(), AuditError> {
        let count = records.len();
        let waiting = inner.queued.fetch_add(count, Ordering::AcqRel);
        if waiting + count > inner.config.queue_records {
            inner.queued.fetch_sub(count, Ordering::AcqRel);
            return Err(AuditError::Unavailable(format!(
                "{waiting} records are waiting to be written (audit.queue_records is {})",
                inner.config.queue_records
            )));
        }
        inner
            .queue
            .send(Pending { records, done })
            .map_err(|_| AuditError::Unavailable("the audit writer has stopped".into()))
    }

    /// Waits until every record queued so far has been appended (or its
    /// append failed): before a planned shutdown.
    pub async fn drain(&self, within: Duration) {
        let Some(inner) = &self.inner else {
            return;
        };
        let deadline = tokio::time::Instant::now() + within;
        while inner.queued.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The one task appending records.
struct Writer {
    log: Arc<dyn EventLog>,
    topic: String,
    timeout: Duration,
    max_batch: usize,
    /// How long a batch waits for more records after its first.
    linger: Duration,
    queued: Arc<AtomicUsize>,
    healthy: Arc<AtomicBool>,
}

impl Writer {
    async fn run(self, mut receiver: mpsc::UnboundedReceiver<Pending>) {
        // Taken from the queue but past the last batch's room.
        let mut carried: Option<Pending> = None;
        loop {
            let first = match carried.take() {
                Some(pending) => pending,
                None => match receiver.recv().await {
                    Some(pending) => pending,
                    None => return,
                },
            };
            let mut batch = vec![first];
            let mut count = batch[0].records.len();
            if !self.linger.is_zero() {
                tokio::time::sleep(self.linger).await;
            }
            // Group commit: everything that queued meanwhile goes too.
            while count < self.max_batch {
                match receiver.try_recv() {
                    Ok(pending) if count + pending.records.len() > self.max_batch => {
                        carried = Some(pending);
                        break;
                    }
                    Ok(pending) => {
                        count += pending.records.len();
                        batch.push(pending);
                    }
                    Err(_) => break,
                }
            }
            let outcome = self.append(&batch).await;
            self.queued.fetch_sub(count, Ordering::AcqRel);
            match &outcome {
                Ok(()) => {
                    if !self.healthy.swap(true, Ordering::AcqRel) {
                        tracing::info!(topic = %self.topic, "the audit log takes records again");
                    }
                    metrics::written(count);
                }
                Err(error) => {
                    if self.healthy.swap(false, Ordering::AcqRel) {
                        tracing::error!(%error, topic = %self.topic, "the audit log cannot take records");
                    }
                    metrics::append_failed();
                }
            }
            for pending in batch {
                if let Some(done) = pending.done {
                    let _ = done.send(outcome.clone());
                }
            }
        }
    }

    async fn append(&self, batch: &[Pending]) -> Result<(), AuditError> {
        let records: Vec<NewRecord> = batch
            .iter()
            .flat_map(|pending| &pending.records)
            .map(|record| NewRecord::new(record::key_of(record), record.encode_to_vec()))
            .collect();
        match tokio::time::timeout(self.timeout, self.log.append(&self.topic, records)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(AuditError::Unavailable(error.to_string())),
            Err(_) => Err(AuditError::Unavailable(format!(
                "an append to {:?} took longer than {} ms",
                self.topic,
                self.timeout.as_millis()
            ))),
        }
    }
}

/// This machine's name, for the records (`HOSTNAME`, else
/// `/etc/hostname`, else empty).
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .unwrap_or_default()
}
