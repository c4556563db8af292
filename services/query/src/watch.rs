//! `WatchCohort`: a cohort's members now, then every change to it, as a
//! live board needs them.
//!
//! A watch subscribes to the store's change feed *before* it lists the
//! members, so nothing committed in between is missed; a change no newer
//! than what the listing showed is dropped. Each committed state then says,
//! against the members the watch knows, whether the patient joined, changed
//! or left. For a cohort that time alone can change (ages, overdue
//! referrals, days optimised) the members are listed again every
//! `watch_recheck_ms`.
//!
//! A client limited to organisations or services sees only the members
//! within its limit: a member who moves outside it has LEFT, sent with
//! their patient key and no state. Every state sent is recorded in the
//! audit log before it is queued; when the audit log cannot take the
//! records, the watch ends with `UNAVAILABLE`.
//!
//! Back-pressure: messages wait for the client in a bounded [`Outbox`]. When
//! it is full the watch waits for room, but at most `watch_slow_client_ms`
//! at a time: a client that stays `watch_buffer_messages` behind that long
//! — or lets the store's change feed overtake it meanwhile — is dropped with
//! `RESOURCE_EXHAUSTED`, the waiting messages discarded so the status
//! reaches it at once. A burst (a large commit) is absorbed; a client that
//! cannot keep up is not kept. The projector never waits for a watch: the
//! change feed is a broadcast that overwrites what a slow watch has not
//! read.

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use baton_care::Instant;
use baton_care::cohort::Cohort;
use baton_proto::query::v1::{CohortChange, WatchCohortResponse};
use baton_proto::state::v1::PatientCareState;
use baton_runtime::Clock;
use baton_store::{Store, StoreError};
use futures::Stream;
use tokio::sync::Notify;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::access::Access;

/// Members listed per store read while a watch starts or rechecks.
const LIST_PAGE: usize = 500;

/// What a watch's stream yields.
pub(crate) type WatchStream =
    Pin<Box<dyn Stream<Item = Result<WatchCohortResponse, Status>> + Send + 'static>>;

/// How watches use memory and time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WatchLimits {
    /// Messages waiting for a client before it is dropped as too slow.
    pub(crate) buffer_messages: usize,
    /// How often a cohort that time can change is listed again.
    pub(crate) recheck: Duration,
    /// Longest a full outbox may keep the watch waiting.
    pub(crate) slow_client: Duration,
}

/// Starts watching `cohort` in `store`; the watch ends when the client
/// goes away.
pub(crate) fn watch(
    store: Store,
    cohort: Cohort,
    clock: Arc<dyn Clock>,
    limits: WatchLimits,
    access: Access,
) -> WatchStream {
    let outbox = Arc::new(Outbox::new(limits.buffer_messages));
    let client_gone = CancellationToken::new();
    let watcher = Watcher {
        slow_client: limits.slow_client,
        changes: store.changes(),
        store,
        cohort,
        clock,
        members: HashMap::new(),
        outbox: Arc::clone(&outbox),
        access,
    };
    let stopped = client_gone.clone();
    let finished = Arc::clone(&outbox);
    let open = crate::metrics::watch_opened();
    tokio::spawn(async move {
        let _open = open;
        if let Err(status) = watcher.run(limits.recheck, stopped).await {
            finished.finish(status);
        }
    });
    Box::pin(outbox_stream(outbox, client_gone.drop_guard()))
}

struct Watcher {
    store: Store,
    changes: tokio::sync::broadcast::Receiver<Arc<PatientCareState>>,
    cohort: Cohort,
    clock: Arc<dyn Clock>,
    /// Each member's version, as last sent.
    members: HashMap<String, u64>,
    outbox: Arc<Outbox>,
    slow_client: Duration,
    /// The client's limit, and the audit of what it is sent.
    access: Access,
}

/// Why a watch stopped sending without an error for the client.
struct ClientGone;

impl Watcher {
    async fn run(mut self, recheck: Duration, stopped: CancellationToken) -> Result<(), Status> {
        let listing = tokio::select! {
            () = stopped.cancelled() => return Ok(()),
            listing = self.send_members() => listing,
        };
        match listing {
            Ok(()) => {}
            Err(Stop::Client) => return Ok(()),
            Err(Stop::Status(status)) => return Err(status),
        }
        let mut recheck = tokio::time::interval(recheck);
        recheck.reset();
        let timed = self.cohort.depends_on_time();
        loop {
            let outcome = tokio::select! {
                () = stopped.cancelled() => return Ok(()),
                change = self.changes.recv() => match change {
                    Ok(state) => self.on_change(state).await,
                    Err(RecvError::Lagged(missed)) => {
                        crate::metrics::record_watch_dropped(crate::metrics::Dropped::FellBehind);
                        return Err(Status::resource_exhausted(format!(
                            "this watch fell behind the projection by {missed} state changes: read the stream faster, or watch a narrower cohort; watch again to resync"
                        )));
                    }
                    Err(RecvError::Closed) => {
                        return Err(Status::unavailable("the query service is stopping: watch again"));
                    }
                },
                _ = recheck.tick(), if timed => self.recheck().await,
            };
            match outcome {
                Ok(()) => {}
                Err(Stop::Client) => return Ok(()),
                Err(Stop::Status(status)) => return Err(status),
            }
        }
    }

    fn now(&self) -> Instant {
        let (seconds, nanos) = self.clock.unix_now();
        Instant::of(Some(&prost_types::Timestamp { seconds, nanos }))
    }

    /// Sends every member a page at a time, so a large cohort is never
    /// held in memory whole.
    async fn send_members(&mut self) -> Result<(), Stop> {
        let now = self.now();
        let mut after = None;
        loop {
            let (states, next) = self.page(after, now).await?;
            // A patient whose entry moved further on while the pages were
            // read is listed twice: once is enough, and a newer state comes
            // through the change feed anyway.
            let states: Vec<PatientCareState> = states
                .into_iter()
                .filter(|state| !self.members.contains_key(&state.patient_key))
                .collect();
            self.audit(&states).await?;
            for state in states {
                self.members
                    .insert(state.patient_key.clone(), state.version);
                self.outbox
                    .push_waiting(message(CohortChange::Member, Some(state)))
                    .await
                    .map_err(|ClientGone| Stop::Client)?;
            }
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        self.outbox
            .push_waiting(message(CohortChange::Synced, None))
            .await
            .map_err(|ClientGone| Stop::Client)
    }

    /// One page of the members at `now`, after the index entry `after`.
    async fn page(
        &self,
        after: Option<String>,
        now: Instant,
    ) -> Result<(Vec<PatientCareState>, Option<String>), Stop> {
        let store = self.store.clone();
        let cohort = self.cohort.clone();
        let limit = self.access.limit();
        blocking(move || {
            let page = store.list_cohort_admitted(
                &cohort,
                after.as_deref(),
                LIST_PAGE,
                LIST_PAGE,
                now,
                &|state| limit.admits(state),
            )?;
            Ok((page.states, page.next_after))
        })
        .await
    }

    /// Records that `states` are being sent.
    async fn audit(&self, states: &[PatientCareState]) -> Result<(), Stop> {
        self.access
            .read(
                crate::access::WATCH_COHORT,
                states
                    .iter()
                    .map(|state| (state.patient_key.as_str(), state.patient_key.as_str())),
            )
            .await
            .map_err(Stop::Status)
    }

    async fn on_change(&mut self, state: Arc<PatientCareState>) -> Result<(), Stop> {
        let key = state.patient_key.as_str();
        let admitted = self.access.admits(&state);
        let is_member = admitted && self.cohort.matches(&state, self.now());
        let change = match self.members.get(key) {
            Some(&sent) if state.version <= sent => return Ok(()),
            Some(_) if is_member => CohortChange::Changed,
            Some(_) => CohortChange::Left,
            None if !is_member => return Ok(()),
            None => {
                // Committed before the listing read a newer state of the
                // patient, who was no member by then: that newer state is
                // on the feed too, and decides.
                let store = self.store.clone();
                let patient = key.to_owned();
                let stored = blocking(move || store.get(&patient)).await?;
                if stored.is_some_and(|stored| stored.version > state.version) {
                    return Ok(());
                }
                CohortChange::Joined
            }
        };
        if change == CohortChange::Left {
            self.members.remove(key);
        } else {
            self.members.insert(key.to_owned(), state.version);
        }
        if !admitted {
            // Left for outside the client's limit: nothing of where to.
            let mut left = message(CohortChange::Left, None);
            left.patient_key = key.to_owned();
            return self.send(left).await;
        }
        self.audit(std::slice::from_ref(&*state)).await?;
        self.send(message(change, Some((*state).clone()))).await
    }

    /// Lists the cohort again, a page at a time, and sends who joined or
    /// left with time alone.
    async fn recheck(&mut self) -> Result<(), Stop> {
        let now = self.now();
        let mut listed = HashSet::new();
        let mut after = None;
        loop {
            let (states, next) = self.page(after, now).await?;
            for state in states {
                listed.insert(state.patient_key.clone());
                if !self.members.contains_key(&state.patient_key) {
                    self.members
                        .insert(state.patient_key.clone(), state.version);
                    self.audit(std::slice::from_ref(&state)).await?;
                    self.send(message(CohortChange::Joined, Some(state)))
                        .await?;
                }
            }
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let gone: Vec<String> = self
            .members
            .keys()
            .filter(|key| !listed.contains(*key))
            .cloned()
            .collect();
        for key in gone {
            let store = self.store.clone();
            let patient = key.clone();
            let state = blocking(move || store.get(&patient))
                .await?
                .filter(|state| self.access.admits(state));
            if let Some(state) = &state {
                self.audit(std::slice::from_ref(state)).await?;
            }
            self.members.remove(&key);
            let mut left = message(CohortChange::Left, state);
            left.patient_key = key;
            self.send(left).await?;
        }
        Ok(())
    }

    /// Queues `message`, waiting at most `slow_client` for room.
    async fn send(&self, message: WatchCohortResponse) -> Result<(), Stop> {
        match self.outbox.push(message) {
            Ok(()) => Ok(()),
            Err(Push::Gone) => Err(Stop::Client),
            Err(Push::Full(message)) => {
                match tokio::time::timeout(self.slow_client, self.outbox.push_waiting(*message))
                    .await
                {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(ClientGone)) => Err(Stop::Client),
                    Err(_) => {
                        crate::metrics::record_watch_dropped(crate::metrics::Dropped::SlowClient);
                        let waiting = self.outbox.abandon();
                        Err(Stop::Status(Status::resource_exhausted(format!(
                            "this watch's client stayed {waiting} messages behind for {} ms: read the stream faster, or watch a narrower cohort; watch again to resync",
                            self.slow_client.as_millis()
                        ))))
                    }
                }
            }
        }
    }
}

enum Stop {
    Client,
    Status(Status),
}

fn message(change: CohortChange, state: Option<PatientCareState>) -> WatchCohortResponse {
    WatchCohortResponse {
        change: change as i32,
        patient_key: state
            .as_ref()
            .map(|s| s.patient_key.clone())
            .unwrap_or_default(),
        state,
    }
}

async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Stop> {
    match tokio::task::spawn_blocking(read).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => {
            tracing::error!(%error, "projection store read failed during a watch");
            Err(Stop::Status(Status::unavailable(format!(
                "projection store read failed: {error}; watch again"
            ))))
        }
        Err(error) => Err(Stop::Status(Status::internal(format!(
            "a store read task failed: {error}"
        )))),
    }
}

/// Messages waiting for one client, at most `capacity`, then how the
/// stream ends.
struct Outbox {
    state: Mutex<OutboxState>,
    /// A message or the end is ready for the client.
    ready: Notify,
    /// The client took a message: room for a waiting producer.
    taken: Notify,
    capacity: usize,
}

#[derive(Default)]
struct OutboxState {
    queue: VecDeque<WatchCohortResponse>,
    /// Sent once the queue is empty; the stream ends after it.
    end: Option<Status>,
    ended: bool,
    client_gone: bool,
}

enum Push {
    /// No room: the message, given back.
    Full(Box<WatchCohortResponse>),
    Gone,
}

impl Outbox {
    fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(OutboxState::default()),
            ready: Notify::new(),
            taken: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutboxState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `message` if there is room; otherwise gives it back.
    fn push(&self, message: WatchCohortResponse) -> Result<(), Push> {
        let mut state = self.lock();
        if state.client_gone {
            return Err(Push::Gone);
        }
        if state.queue.len() >= self.capacity {
            return Err(Push::Full(Box::new(message)));
        }
        state.queue.push_back(message);
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// Discards the waiting messages, so the status the caller gives
    /// [`Outbox::finish`] next reaches the client at once; returns how many
    /// were waiting.
    fn abandon(&self) -> usize {
        let mut state = self.lock();
        let waiting = state.queue.len();
        state.queue.clear();
        waiting
    }

    /// Queues `message`, waiting for room.
    async fn push_waiting(&self, message: WatchCohortResponse) -> Result<(), ClientGone> {
        loop {
            {
                let mut state = self.lock();
                if state.client_gone {
                    return Err(ClientGone);
                }
                if state.queue.len() < self.capacity {
                    state.queue.push_back(message);
                    drop(state);
                    self.ready.notify_one();
                    return Ok(());
                }
            }
            self.taken.notified().await;
        }
    }

    /// Ends the stream with `status` once the queue is sent.
    fn finish(&self, status: Status) {
        self.lock().end = Some(status);
        self.ready.notify_one();
    }

    /// The next message for the client, the final status, or `None` when
    /// the stream is over.
    async fn next(&self) -> Option<Result<WatchCohortResponse, Status>> {
        loop {
            {
                let mut state = self.lock();
                if let Some(message) = state.queue.pop_front() {
                    drop(state);
                    self.taken.notify_one();
                    return Some(Ok(message));
                }
                if state.ended {
                    return None;
                }
                if let Some(status) = state.end.take() {
                    state.ended = true;
                    return Some(Err(status));
                }
            }
            self.ready.notified().await;
        }
    }
}

/// The client's side of an outbox; dropping it (the client went away)
/// stops the watch.
fn outbox_stream(
    outbox: Arc<Outbox>,
    guard: tokio_util::sync::DropGuard,
) -> impl Stream<Item = Result<WatchCohortResponse, Status>> + Send + 'static {
    struct Client {
        outbox: Arc<Outbox>,
        _stop_watch_when_dropped: tokio_util::sync::DropGuard,
    }
    impl Drop for Client {
        fn drop(&mut self) {
            self.outbox.lock().client_gone = true;
            self.outbox.taken.notify_one();
        }
    }
    let client = Client {
        outbox,
        _stop_watch_when_dropped: guard,
    };
    futures::stream::unfold(client, |client| async move {
        let next = client.outbox.next().await?;
        Some((next, client))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn numbered(n: u64) -> WatchCohortResponse {
        WatchCohortResponse {
            patient_key: n.to_string(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_client_too_far_behind_gets_the_status_at_once_not_the_backlog() {
        let outbox = Arc::new(Outbox::new(2));
        let guard = CancellationToken::new().drop_guard();
        let mut stream = Box::pin(outbox_stream(Arc::clone(&outbox), guard));
        outbox.push(numbered(1)).ok().unwrap();
        outbox.push(numbered(2)).ok().unwrap();
        assert!(matches!(outbox.push(numbered(3)), Err(Push::Full(_))));
        assert_eq!(outbox.abandon(), 2);
        outbox.finish(Status::resource_exhausted("too slow"));
        let status = stream.next().await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn messages_arrive_in_order_and_a_waiting_producer_gets_room() {
        let outbox = Arc::new(Outbox::new(1));
        let token = CancellationToken::new();
        let mut stream = Box::pin(outbox_stream(
            Arc::clone(&outbox),
            token.clone().drop_guard(),
        ));
        let producer = {
            let outbox = Arc::clone(&outbox);
            tokio::spawn(async move {
                for n in 0..5 {
                    outbox.push_waiting(numbered(n)).await.ok().unwrap();
                }
            })
        };
        for n in 0..5 {
            let message = stream.next().await.unwrap().unwrap();
            assert_eq!(message.patient_key, n.to_string());
        }
        producer.await.unwrap();
        drop(stream);
        assert!(token.is_cancelled(), "dropping the stream stops the watch");
        assert!(matches!(outbox.push(numbered(9)), Err(Push::Gone)));
    }
}
