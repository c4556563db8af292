//! `baton.admin.v1.Operations`: the operations API, served on its own
//! listener by the projector (all of it) and by query replicas (the
//! read-only part: positions, digest, state hashes, stored states).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use baton_log::group::Ownership;
use baton_log::topics::Topics;
use baton_log::{EventLog, LogError};
use baton_proto::admin::v1::operations_server::{Operations, OperationsServer};
use baton_proto::admin::v1::{
    CancelReplayRequest, DeadLetter, GetDeadLetterRequest, GetDigestRequest, GetDigestResponse,
    GetPositionsRequest, GetPositionsResponse, GetReplayStatusRequest, GetStoredStateRequest,
    GetStoredStateResponse, ListAuditRecordsRequest, ListAuditRecordsResponse,
    ListDeadLettersRequest, ListDeadLettersResponse, ListStateHashesRequest, PartitionDigest,
    PartitionPosition, PurgeDeadLettersRequest, PurgeDeadLettersResponse,
    RedriveDeadLettersRequest, RedriveDeadLettersResponse, ReplayStatus, Role, StartReplayRequest,
    StateHash, VerifyRequest, VerifyUpdate, verify_update,
};
use baton_store::{Store, StoreError};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::ProjectorError;
use crate::dead_letters::DeadLetters;
use crate::replay::Replays;
use crate::verify::{self, Target};

/// The port the projector's (and `baton up`'s) admin API listens on unless
/// configured otherwise; a query replica's is [`REPLICA_DEFAULT_PORT`].
pub const DEFAULT_PORT: u16 = 50053;
/// The port of a query replica's read-only admin API.
pub const REPLICA_DEFAULT_PORT: u16 = 50054;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The operations API over one store.
#[derive(Debug, Clone)]
pub struct AdminService {
    role: Role,
    store: Store,
    log: Arc<dyn EventLog>,
    topics: Topics,
    /// The projector's own: replays, and the dead letters it writes.
    projector: Option<ProjectorOperations>,
    /// The audit log and its topic, for `ListAuditRecords`.
    audit: Option<(Arc<dyn EventLog>, String)>,
    /// In a projector group: the partitions this projector owns.
    ownership: Option<Arc<Ownership>>,
}

#[derive(Debug, Clone)]
struct ProjectorOperations {
    replays: Replays,
    dead_letters: DeadLetters,
}

impl AdminService {
    /// The whole API, for the projector of `store`.
    pub fn projector(
        store: Store,
        log: Arc<dyn EventLog>,
        topics: Topics,
        replays: Replays,
        dead_letters: DeadLetters,
    ) -> Self {
        Self {
            role: Role::Projector,
            store,
            log,
            topics,
            projector: Some(ProjectorOperations {
                replays,
                dead_letters,
            }),
            audit: None,
            ownership: None,
        }
    }

    /// The read-only part, for a query replica's store.
    pub fn replica(store: Store, log: Arc<dyn EventLog>, topics: Topics) -> Self {
        Self {
            role: Role::Replica,
            store,
            log,
            topics,
            projector: None,
            audit: None,
            ownership: None,
        }
    }

    /// Answering `ListAuditRecords` from `topic` of `log` (the event log's
    /// cluster on Kafka; the audit log of the data folder on the embedded
    /// log).
    pub fn with_audit_log(mut self, log: Arc<dyn EventLog>, topic: impl Into<String>) -> Self {
        self.audit = Some((log, topic.into()));
        self
    }

    /// Answering `GetPositions` as a projector of a group owning what
    /// `ownership` holds: its own partitions from its store, the others as
    /// the changelog's latest progress records say.
    pub fn with_ownership(mut self, ownership: Arc<Ownership>) -> Self {
        self.ownership = Some(ownership);
        self
    }

    pub fn into_server(self) -> OperationsServer<Self> {
        OperationsServer::new(self)
    }

    fn projector_only(&self, what: &str) -> Result<&ProjectorOperations, Status> {
        self.projector.as_ref().ok_or_else(|| {
            Status::failed_precondition(format!(
                "this is a query replica: {what} is done by the projector (baton-projector or baton up), ask its admin API"
            ))
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || work(store))
            .await
            .map_err(|error| Status::internal(format!("a store task failed: {error}")))?
            .map_err(|error| status_of(&ProjectorError::Store(error)))
    }
}

/// How an error of the projector's operations reaches an operator.
pub(crate) fn status_of(error: &ProjectorError) -> Status {
    match error {
        ProjectorError::Invalid(problem) => Status::invalid_argument(problem.clone()),
        ProjectorError::Log(LogError::InvalidConfig { .. }) => {
            Status::failed_precondition(error.to_string())
        }
        ProjectorError::Log(_) => Status::unavailable(error.to_string()),
        ProjectorError::Config(_) => Status::failed_precondition(error.to_string()),
        ProjectorError::Replay(_) => Status::failed_precondition(error.to_string()),
        ProjectorError::Store(_) | ProjectorError::Join(_) | ProjectorError::Admin(_) => {
            Status::internal(error.to_string())
        }
    }
}

#[tonic::async_trait]
impl Operations for AdminService {
    async fn get_positions(
        &self,
        _request: Request<GetPositionsRequest>,
    ) -> Result<Response<GetPositionsResponse>, Status> {
        let topic = self.topics.events.clone();
        let mut applied = self.blocking(move |store| store.applied(&topic)).await?;
        let now = SystemTime::now();
        let mut owners = BTreeMap::new();
        let partitions = if self.role == Role::Replica || self.ownership.is_some() {
            self.log
                .partition_count(&self.topics.events)
                .await
                .map_err(|error| status_of(&ProjectorError::Log(error)))?
        } else {
            0
        };
        if self.role == Role::Replica {
            // Who publishes each partition, as its latest progress says.
            for partition in 0..partitions {
                let progress = crate::restore::latest_progress(&self.log, &self.topics, partition)
                    .await
                    .map_err(|error| status_of(&error))?;
                owners.insert(
                    partition,
                    (progress.map(|p| p.owner).unwrap_or_default(), false),
                );
            }
        } else if let Some(ownership) = &self.ownership {
            for partition in 0..partitions {
                if ownership.owns(partition) {
                    owners.insert(partition, (ownership.member().to_owned(), true));
                    continue;
                }
                // Another projector's: as far as its latest progress says.
                let progress = crate::restore::latest_progress(&self.log, &self.topics, partition)
                    .await
                    .map_err(|error| status_of(&error))?;
                let (owner, next_offset) =
                    progress.map_or((String::new(), 0), |p| (p.owner, p.next_offset));
                applied.insert(partition, next_offset);
                owners.insert(partition, (owner, false));
            }
        }
        let mut partitions = measure_lag(&*self.log, &self.topics.events, &applied, now)
            .await
            .map_err(|error| status_of(&ProjectorError::Log(error)))?;
        for position in &mut partitions {
            if let Some((owner, owned_here)) = owners.remove(&position.partition) {
                position.owner = owner;
                position.owned_here = owned_here;
            }
        }
        Ok(Response::new(GetPositionsResponse {
            role: self.role.into(),
            events_topic: self.topics.events.clone(),
            generation: self.store.generation(),
            partitions,
            measured_at: Some(now.into()),
        }))
    }

    async fn get_digest(
        &self,
        _request: Request<GetDigestRequest>,
    ) -> Result<Response<GetDigestResponse>, Status> {
        let topic = self.topics.events.clone();
        let digest = self.blocking(move |store| store.digest_at(&topic)).await?;
        let mut partitions: BTreeMap<u32, PartitionDigest> = BTreeMap::new();
        for (&partition, &position) in &digest.positions {
            partitions.entry(partition).or_insert(PartitionDigest {
                partition,
                position,
                digest: 0u128.to_be_bytes().to_vec(),
                states: 0,
            });
        }
        for (&partition, stated) in &digest.partitions {
            let entry = partitions.entry(partition).or_insert(PartitionDigest {
                partition,
                ..PartitionDigest::default()
            });
            entry.digest = stated.sum.to_be_bytes().to_vec();
            entry.states = stated.states;
        }
        Ok(Response::new(GetDigestResponse {
            role: self.role.into(),
            events_topic: self.topics.events.clone(),
            generation: digest.generation,
            partitions: partitions.into_values().collect(),
        }))
    }

    type ListStateHashesStream = BoxStream<StateHash>;

    async fn list_state_hashes(
        &self,
        request: Request<ListStateHashesRequest>,
    ) -> Result<Response<Self::ListStateHashesStream>, Status> {
        let partition = request.into_inner().partition;
        let hashes = self
            .blocking(move |store| store.state_hashes(partition))
            .await?;
        let stream = futures_util_stream(hashes.into_iter().map(|hash| StateHash {
            patient_key: hash.patient_key,
            hash: hash.hash.to_be_bytes().to_vec(),
            offset: hash.offset,
        }));
        Ok(Response::new(stream))
    }

    async fn get_stored_state(
        &self,
        request: Request<GetStoredStateRequest>,
    ) -> Result<Response<GetStoredStateResponse>, Status> {
        let key = request.into_inner().patient_key;
        if key.is_empty() {
            return Err(Status::invalid_argument(
                "patient_key: required, the patient key exactly as Baton shows it",
            ));
        }
        let lookup = key.clone();
        match self.blocking(move |store| store.get(&lookup)).await? {
            Some(state) => Ok(Response::new(GetStoredStateResponse { state: Some(state) })),
            None => Err(Status::not_found(format!(
                "no state is stored for patient key {key:?}"
            ))),
        }
    }

    async fn start_replay(
        &self,
        request: Request<StartReplayRequest>,
    ) -> Result<Response<ReplayStatus>, Status> {
        let replays = &self.projector_only("replaying")?.replays;
        let keep_previous = request.into_inner().keep_previous;
        replays
            .start(keep_previous)
            .map(Response::new)
            .map_err(|error| status_of(&error))
    }

    async fn get_replay_status(
        &self,
        _request: Request<GetReplayStatusRequest>,
    ) -> Result<Response<ReplayStatus>, Status> {
        let replays = &self.projector_only("replaying")?.replays;
        Ok(Response::new(replays.status()))
    }

    type WatchReplayStream = BoxStream<ReplayStatus>;

    async fn watch_replay(
        &self,
        _request: Request<GetReplayStatusRequest>,
    ) -> Result<Response<Self::WatchReplayStream>, Status> {
        let replays = self.projector_only("replaying")?.replays.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut watch = replays.watch();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                let status = watch.borrow_and_update().clone();
                let ended = ended(&status);
                if sender.send(Ok(status)).await.is_err() || ended {
                    break;
                }
                tokio::select! {
                    changed = watch.changed() => if changed.is_err() { break },
                    _ = tick.tick() => {}
                }
                // At most a few updates a second, whatever the rate of change.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn cancel_replay(
        &self,
        _request: Request<CancelReplayRequest>,
    ) -> Result<Response<ReplayStatus>, Status> {
        let replays = &self.projector_only("replaying")?.replays;
        Ok(Response::new(replays.cancel()))
    }

    type VerifyStream = BoxStream<VerifyUpdate>;

    async fn verify(
        &self,
        request: Request<VerifyRequest>,
    ) -> Result<Response<Self::VerifyStream>, Status> {
        self.projector_only("verifying")?;
        let request = request.into_inner();
        let max_differences = match request.max_differences {
            0 => verify::DEFAULT_MAX_DIFFERENCES,
            n => n as usize,
        };
        let mut targets = vec![
            Target::local("projector", &self.store, &self.topics.events)
                .map_err(|error| status_of(&error))?,
        ];
        for address in &request.replicas {
            targets.push(
                Target::replica(address)
                    .await
                    .map_err(Status::unavailable)?,
            );
        }
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        let log = Arc::clone(&self.log);
        let topics = self.topics.clone();
        tokio::spawn(async move {
            let progress = {
                let sender = sender.clone();
                move |progress| {
                    let _ = sender.try_send(Ok(VerifyUpdate {
                        update: Some(verify_update::Update::Progress(progress)),
                    }));
                }
            };
            let outcome = verify::verify(log, &topics, targets, max_differences, progress).await;
            let message = match outcome {
                Ok(report) => Ok(VerifyUpdate {
                    update: Some(verify_update::Update::Report(report)),
                }),
                Err(error) => Err(status_of(&error)),
            };
            let _ = sender.send(message).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn list_audit_records(
        &self,
        request: Request<ListAuditRecordsRequest>,
    ) -> Result<Response<ListAuditRecordsResponse>, Status> {
        let Some((log, topic)) = &self.audit else {
            return Err(Status::failed_precondition(
                "this admin API has no audit log: ask the admin API of baton up, baton-projector or a query replica on Kafka",
            ));
        };
        let request = request.into_inner();
        let patient_key = match request.patient.trim() {
            "" => None,
            text => Some(
                baton_audit::patient_key_of(text)
                    .map_err(|problem| Status::invalid_argument(format!("patient: {problem}")))?,
            ),
        };
        let filter = baton_audit::AuditFilter {
            patient_key,
            client_id: Some(request.client_id.trim().to_owned()).filter(|id| !id.is_empty()),
            since: request.since.map(|since| since.seconds),
        };
        let limit = match request.limit {
            0 => 1000,
            n => n.min(10_000) as usize,
        };
        let page = baton_audit::list(&**log, topic, &filter, limit, &request.page_token)
            .await
            .map_err(|error| match error {
                baton_audit::ListError::PageToken(_) => Status::invalid_argument(error.to_string()),
                baton_audit::ListError::Log(_) => Status::unavailable(error.to_string()),
            })?;
        Ok(Response::new(ListAuditRecordsResponse {
            records: page.records,
            next_page_token: page.next_page_token,
            scanned: page.scanned,
        }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        let dead_letters = &self.projector_only("reading dead letters")?.dead_letters;
        let request = request.into_inner();
        let after = parse_page_token(&request.page_token)?;
        let limit = match request.limit {
            0 => 100,
            n => n.min(10_000) as usize,
        };
        let (page, next) = dead_letters
            .list(&request.reason_contains, after, limit)
            .await
            .map_err(|error| status_of(&error))?;
        Ok(Response::new(ListDeadLettersResponse {
            dead_letters: page,
            next_page_token: next.map_or_else(String::new, |(p, o)| format!("{p}/{o}")),
        }))
    }

    async fn get_dead_letter(
        &self,
        request: Request<GetDeadLetterRequest>,
    ) -> Result<Response<DeadLetter>, Status> {
        let dead_letters = &self.projector_only("reading dead letters")?.dead_letters;
        let request = request.into_inner();
        match dead_letters
            .get(request.partition, request.offset)
            .await
            .map_err(|error| status_of(&error))?
        {
            Some(letter) => Ok(Response::new(letter)),
            None => Err(Status::not_found(format!(
                "no dead letter at partition {} offset {} of {} (purged, a redrive record, or never written)",
                request.partition, request.offset, self.topics.dead_letters
            ))),
        }
    }

    async fn redrive_dead_letters(
        &self,
        request: Request<RedriveDeadLettersRequest>,
    ) -> Result<Response<RedriveDeadLettersResponse>, Status> {
        let dead_letters = &self.projector_only("redriving dead letters")?.dead_letters;
        let request = request.into_inner();
        let selection = request.selection.unwrap_or_default();
        dead_letters
            .redrive(
                &selection,
                request.again,
                request.dry_run,
                &request.requested_by,
            )
            .await
            .map(Response::new)
            .map_err(|error| status_of(&error))
    }

    async fn purge_dead_letters(
        &self,
        request: Request<PurgeDeadLettersRequest>,
    ) -> Result<Response<PurgeDeadLettersResponse>, Status> {
        let dead_letters = &self.projector_only("purging dead letters")?.dead_letters;
        let request = request.into_inner();
        let (purged, effect) = dead_letters
            .purge(request.until_offset, request.dry_run)
            .await
            .map_err(|error| status_of(&error))?;
        Ok(Response::new(PurgeDeadLettersResponse { purged, effect }))
    }
}

/// Per partition of `topic`: its end, the `applied` position, and the lag
/// in events and in seconds (how long the first record not yet applied has
/// waited, from its timestamp).
async fn measure_lag(
    log: &dyn EventLog,
    topic: &str,
    applied: &BTreeMap<u32, u64>,
    now: SystemTime,
) -> Result<Vec<PartitionPosition>, LogError> {
    let ends = log.end_offsets(topic).await?;
    let now_ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64);
    let mut positions = Vec::with_capacity(ends.len());
    for (partition, &end_offset) in ends.iter().enumerate() {
        let partition = partition as u32;
        let applied = applied
            .get(&partition)
            .copied()
            .unwrap_or(0)
            .min(end_offset);
        let lag_events = end_offset - applied;
        let mut lag_seconds = 0.0;
        if lag_events > 0 {
            let mut reader = log
                .reader(topic, BTreeMap::from([(partition, applied)]))
                .await?;
            if let Some(first) = reader
                .next_batch(1, Duration::from_millis(500))
                .await?
                .first()
            {
                lag_seconds = ((now_ms - first.timestamp_ms).max(0)) as f64 / 1000.0;
            }
        }
        positions.push(PartitionPosition {
            partition,
            end_offset,
            applied,
            lag_events,
            lag_seconds,
            owner: String::new(),
            owned_here: true,
        });
    }
    Ok(positions)
}

fn ended(status: &ReplayStatus) -> bool {
    use baton_proto::admin::v1::replay_status::Phase;
    matches!(
        status.phase(),
        Phase::Idle | Phase::Done | Phase::Failed | Phase::Cancelled
    )
}

fn parse_page_token(token: &str) -> Result<Option<(u32, u64)>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        Status::invalid_argument(format!(
            "page_token: {token:?} is not a page token from a previous ListDeadLetters response"
        ))
    };
    let (partition, offset) = token.split_once('/').ok_or_else(invalid)?;
    Ok(Some((
        partition.parse().map_err(|_| invalid())?,
        offset.parse().map_err(|_| invalid())?,
    )))
}

fn futures_util_stream<T: Send + 'static>(
    items: impl Iterator<Item = T> + Send + 'static,
) -> BoxStream<T> {
    Box::pin(tokio_stream::iter(items.map(Ok)))
}

/// Serves `admin` on `listener` until `shutdown` completes.
pub async fn serve(
    admin: AdminService,
    listener: impl Into<baton_tls::TlsListener>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    use tonic::server::NamedService;

    baton_runtime::grpc::serve(
        "admin",
        &[<OperationsServer<AdminService> as NamedService>::NAME],
        listener,
        |router| router.add_service(admin.into_server()),
        shutdown,
    )
    .await
}
