//! `query`: the query API under load on loopback, beside a bare tonic
//! service in the same run.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use baton_care::cohort::{Cohort, setting_name};
use baton_care::{ValidEvent, apply, new_state};
use baton_log::topics::Topics;
use baton_proto::query::v1::care_state_query_client::CareStateQueryClient;
use baton_proto::query::v1::patient_ref::Ref;
use baton_proto::query::v1::{
    CohortChange, CohortFilter, GetCareStateRequest, ListCohortRequest, PatientRef,
    WatchCohortRequest,
};
use baton_proto::state::v1::{CareSetting, PatientCareState};
use baton_query::{QueryConfig, QueryService};
use baton_store::{Commit, Store, StoreConfig};
use clap::Args;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use prost::Message;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::figures::{
    Failures, check_warm_up, latency_histogram, peak_rss, percentiles, record, size,
};
use crate::kafka::{bind_loopback, channel};

/// Generated code, whose items are `pub` as generated.
#[allow(unreachable_pub, missing_debug_implementations, clippy::all)]
mod echo {
    tonic::include_proto!("baton.bench.v1");
}

use echo::echo_client::EchoClient;
use echo::echo_server::{Echo, EchoServer};
use echo::{EchoReply, EchoRequest};

/// States committed together while the store is filled.
const FILL_CHUNK: usize = 10_000;

/// The query API under load, on loopback, with a bare tonic service beside
/// it for comparison.
///
/// Fills a fresh sled store with the care states of --patients synthetic
/// patients (folded from their events), serves it with the real query
/// service, and measures, with client and server in this process:
///
/// (1) GetCareState of random patients: requests/s and latency, from
/// --concurrency calls in flight over --connections HTTP/2 connections
/// (closed loop), the client keeping each answer as bytes; the same with a
/// client decoding every state; then the same load against a bare tonic
/// echo service answering as many bytes as an average state, and the
/// ratio;
/// (2) ListCohort listing --cohort-members members of a cohort, a page of
/// 1000 at a time: latency per page and per whole listing;
/// (3) WatchCohort: delivery lag (commit to client) while --watch-rate
/// state changes per second are committed to the store.
///
/// Budget: GetCareState ≥ 30k requests/s with p99 ≤ 2 ms on loopback
/// (2-core machine).
#[derive(Debug, Args)]
pub(crate) struct QueryArgs {
    /// Patients whose states fill the store
    #[arg(long, default_value_t = 100_000)]
    patients: usize,
    /// How long each load runs, warm-up included
    #[arg(long, default_value_t = 12)]
    seconds: u64,
    /// First seconds of each load left out of the figures
    #[arg(long, default_value_t = 2)]
    warm_up: u64,
    /// Calls in flight (closed loop: latency is about this ÷ throughput)
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// HTTP/2 connections the calls share
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Members listed per ListCohort listing
    #[arg(long, default_value_t = 5_000)]
    cohort_members: usize,
    /// State changes per second committed while a watch follows them
    #[arg(long, default_value_t = 2_000)]
    watch_rate: u32,
    /// How long the watch is measured
    #[arg(long, default_value_t = 10)]
    watch_seconds: u64,
    /// Seed of the synthetic population
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// sled page cache of the store, in MiB [default: the store's default]
    #[arg(long, value_name = "MIB")]
    cache_mib: Option<u64>,
}

#[allow(clippy::print_stdout)]
pub(crate) async fn query(args: QueryArgs) -> anyhow::Result<()> {
    check_warm_up(args.warm_up, args.seconds)?;
    anyhow::ensure!(args.concurrency > 0, "--concurrency 0: expected at least 1");
    anyhow::ensure!(args.connections > 0, "--connections 0: expected at least 1");
    anyhow::ensure!(args.watch_rate > 0, "--watch-rate 0: expected at least 1");
    println!(
        "baton-bench query: {} patients, {} calls in flight over {} connections for {} s (first {} s left out); client and server in this process on loopback",
        args.patients, args.concurrency, args.connections, args.seconds, args.warm_up
    );
    let work = tempfile::tempdir()?;
    let mut config = StoreConfig::default();
    if let Some(mib) = args.cache_mib {
        config.cache_capacity_bytes = mib * 1024 * 1024;
    }
    let store = Store::open(work.path().join("store"), &config).context("opening the store")?;
    println!(
        "cache       {} MiB of sled page cache",
        config.cache_capacity_bytes / 1024 / 1024
    );
    let started = Instant::now();
    let states = fill(&store, args.patients, args.seed).await?;
    let average_bytes = states.iter().map(|s| s.encoded_len()).sum::<usize>() / states.len().max(1);
    println!(
        "store       {} states in {:.2?}, {} on disk, {average_bytes} bytes per state on average",
        states.len(),
        started.elapsed(),
        size(&work.path().join("store"))
    );

    let stop = CancellationToken::new();
    let (listener, query_address) = bind_loopback("query").await?;
    let service = QueryService::new(store.clone(), QueryConfig::default(), &Topics::default());
    tokio::spawn(baton_query::run(
        service,
        listener,
        stop.clone().cancelled_owned(),
    ));
    let (listener, echo_address) = bind_loopback("echo").await?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EchoServer::new(EchoService))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                stop.clone().cancelled_owned(),
            ),
    );

    let keys: Arc<Vec<String>> = Arc::new(
        states
            .iter()
            .filter(|s| s.merged_into.is_none())
            .map(|s| s.patient_key.clone())
            .collect(),
    );
    let request = |key: String| GetCareStateRequest {
        patient: Some(PatientRef {
            r#ref: Some(Ref::PatientKey(key)),
        }),
        consistency_token: String::new(),
    };
    // The server's figure: the client takes each answer as bytes, as the
    // bare service's client does, so the two compare the services alone.
    let baton = load(
        &args,
        query_address,
        Arc::clone(&keys),
        move |channel, key| {
            let mut grpc = tonic::client::Grpc::new(channel);
            async move {
                grpc.ready()
                    .await
                    .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
                grpc.unary(
                    tonic::Request::new(request(key)),
                    tonic::codegen::http::uri::PathAndQuery::from_static(
                        "/baton.query.v1.CareStateQuery/GetCareState",
                    ),
                    AnswerAsBytes::default(),
                )
                .await
                .map(drop)
            }
        },
    )
    .await?;
    report(
        "GetCareState",
        &baton,
        "the client keeps each answer as bytes",
    );
    // As a client that decodes every state sees it, on the same two cores.
    let decoding = load(
        &args,
        query_address,
        Arc::clone(&keys),
        move |channel, key| {
            let mut client =
                CareStateQueryClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
            async move { client.get_care_state(request(key)).await.map(drop) }
        },
    )
    .await?;
    report(
        "  decoded",
        &decoding,
        "the client decodes each state, on the same cores",
    );
    let reply_bytes = u32::try_from(average_bytes).unwrap_or(u32::MAX);
    let bare = load(&args, echo_address, keys, move |channel, key| {
        let mut client = EchoClient::new(channel);
        async move {
            client
                .echo(EchoRequest { key, reply_bytes })
                .await
                .map(drop)
        }
    })
    .await?;
    report(
        "bare tonic",
        &bare,
        &format!("echoing {reply_bytes} bytes, kept as bytes"),
    );
    println!(
        "ratio         GetCareState does {:.0}% of the bare service's requests/s; p99 {:.2}× the bare service's",
        100.0 * baton.rate / bare.rate.max(1.0),
        baton.latency.value_at_quantile(0.99) as f64
            / bare.latency.value_at_quantile(0.99).max(1) as f64
    );

    list_cohorts(&args, query_address, &store, &states).await?;
    watch_lag(&args, query_address, &store, &states).await?;
    stop.cancel();
    println!(
        "peak memory {} (server and client, this process)",
        peak_rss()
    );
    println!("budget: GetCareState ≥ 30k requests/s with p99 ≤ 2 ms (2-core machine)");
    Ok(())
}

#[allow(clippy::print_stdout)]
pub(crate) fn report(label: &str, measured: &Measured, how: &str) {
    println!(
        "{label:<13} {:.0} requests/s  {} ({how}; {} errors{})",
        measured.rate,
        percentiles(&measured.latency),
        measured.failures.total(),
        if measured.failures.total() > 0 {
            format!(": {}", measured.failures)
        } else {
            String::new()
        }
    );
}

/// A client codec that sends a `GetCareStateRequest` and keeps the answer
/// as the bytes that came, decoding nothing.
pub(crate) type AnswerAsBytes = LeanAnswer<GetCareStateRequest, bytes::Bytes>;

/// A client codec that sends a `Request` and takes from the answer only
/// what `Answer` reads (see [`Answer`]): the server's figure, without a
/// client decoding what it does not need on the same two cores.
pub(crate) struct LeanAnswer<Request, Answer>(std::marker::PhantomData<fn(Request) -> Answer>);

impl<Request, Answer> Default for LeanAnswer<Request, Answer> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

/// What a [`LeanAnswer`] client keeps of an answer.
pub(crate) trait Answer: Sized + Send + 'static {
    fn take(src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Self, tonic::Status>;
}

/// The answer's bytes as they came.
impl Answer for bytes::Bytes {
    fn take(src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Self, tonic::Status> {
        use bytes::Buf;
        Ok(src.copy_to_bytes(src.remaining()))
    }
}

/// Of a `ListCohortResponse`, how many states came and the token of the
/// next page: prost skips over each state's fields without decoding them.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct NextPageToken {
    /// Each state skipped, only counted.
    #[prost(message, repeated, tag = "1")]
    pub(crate) states: Vec<()>,
    #[prost(string, tag = "2")]
    pub(crate) next_page_token: String,
}

impl Answer for NextPageToken {
    fn take(src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Self, tonic::Status> {
        Self::decode(src).map_err(|error| tonic::Status::internal(error.to_string()))
    }
}

impl<Request, Kept> tonic::codec::Codec for LeanAnswer<Request, Kept>
where
    Request: prost::Message + Send + 'static,
    Kept: Answer,
{
    type Encode = Request;
    type Decode = Kept;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self::Encoder {
        Self::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        Self::default()
    }
}

impl<Request: prost::Message, Kept> tonic::codec::Encoder for LeanAnswer<Request, Kept> {
    type Item = Request;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Request,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        item.encode(dst)
            .map_err(|error| tonic::Status::internal(error.to_string()))
    }
}

impl<Request, Kept: Answer> tonic::codec::Decoder for LeanAnswer<Request, Kept> {
    type Item = Kept;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Kept>, tonic::Status> {
        Kept::take(src).map(Some)
    }
}

/// Folds each synthetic patient's events in memory and commits the states.
pub(crate) async fn fill(
    store: &Store,
    patients: usize,
    seed: u64,
) -> anyhow::Result<Vec<PatientCareState>> {
    let config = baton_synth::PopulationConfig {
        patients,
        seed,
        ..baton_synth::PopulationConfig::default()
    };
    let progress = ProgressBar::new(patients as u64);
    let folded = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<PatientCareState>> {
        let mut states: HashMap<String, PatientCareState> = HashMap::new();
        let mut applied = baton_care::AppliedIds::new();
        for (offset, event) in (0..).zip(baton_synth::Population::new(config)) {
            let event = ValidEvent::new(event)?;
            let state = states
                .entry(event.key().to_string())
                .or_insert_with(|| new_state(event.key()));
            // The feed never meets a rejection; a merge's retired side is
            // the other patient's and handed over by the projector, so left
            // out here.
            let position = baton_care::LogPosition::new(0, offset);
            let _ = apply(state, &mut applied, &event, position);
            progress.set_position(states.len() as u64);
        }
        progress.finish_and_clear();
        let mut states: Vec<PatientCareState> = states.into_values().collect();
        states.sort_by(|a, b| a.patient_key.cmp(&b.patient_key));
        Ok(states)
    })
    .await??;
    let committing = store.clone();
    let states = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<PatientCareState>> {
        for chunk in folded.chunks(FILL_CHUNK) {
            committing.commit(&Commit::new("bench").with_states(chunk.iter().cloned()))?;
        }
        committing.flush()?;
        Ok(folded)
    })
    .await??;
    Ok(states)
}

/// What one load measured after its warm-up.
#[derive(Debug)]
pub(crate) struct Measured {
    pub(crate) rate: f64,
    pub(crate) latency: Histogram<u64>,
    pub(crate) failures: Failures,
}

/// How a closed-loop load runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub(crate) seconds: u64,
    pub(crate) warm_up: u64,
    pub(crate) concurrency: usize,
}

impl From<&QueryArgs> for Shape {
    fn from(args: &QueryArgs) -> Self {
        Self {
            seconds: args.seconds,
            warm_up: args.warm_up,
            concurrency: args.concurrency,
        }
    }
}

/// `--concurrency` closed-loop callers of `call` with random keys, over
/// `--connections` channels to `address`.
async fn load<F, Fut>(
    args: &QueryArgs,
    address: SocketAddr,
    keys: Arc<Vec<String>>,
    call: F,
) -> anyhow::Result<Measured>
where
    F: Fn(Channel, String) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send,
{
    let mut channels = Vec::new();
    for _ in 0..args.connections {
        channels.push(channel(address).await?);
    }
    load_over(args.into(), channels, keys, call).await
}

/// `shape.concurrency` closed-loop callers of `call` with random keys,
/// sharing `channels`.
pub(crate) async fn load_over<F, Fut>(
    args: Shape,
    channels: Vec<Channel>,
    keys: Arc<Vec<String>>,
    call: F,
) -> anyhow::Result<Measured>
where
    F: Fn(Channel, String) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send,
{
    let begin = Instant::now();
    let warm_up = begin + Duration::from_secs(args.warm_up);
    let end = begin + Duration::from_secs(args.seconds);
    let mut callers = tokio::task::JoinSet::new();
    for index in 0..args.concurrency {
        let channel = channels[index % channels.len()].clone();
        let keys = Arc::clone(&keys);
        let call = call.clone();
        callers.spawn(async move {
            let mut latency = latency_histogram();
            let mut failures = Failures::default();
            let mut random = XorShift(0x9e37_79b9_7f4a_7c15 ^ (index as u64 + 1));
            loop {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                let key = keys[random.below(keys.len())].clone();
                let answer = call(channel.clone(), key).await;
                let finished = Instant::now();
                if started >= warm_up && finished <= end {
                    match answer {
                        Ok(()) => record(&mut latency, finished - started),
                        Err(status) => failures.add("call", &status),
                    }
                }
            }
            (latency, failures)
        });
    }
    let mut measured = Measured {
        rate: 0.0,
        latency: latency_histogram(),
        failures: Failures::default(),
    };
    while let Some(caller) = callers.join_next().await {
        let (latency, failures) = caller.context("a caller panicked")?;
        measured.latency.add(&latency)?;
        measured.failures.merge(failures);
    }
    measured.rate = measured.latency.len() as f64 / (end - warm_up).as_secs_f64();
    Ok(measured)
}

/// Lists the smallest place cohort with at least `--cohort-members`
/// members (its first that many), again and again.
#[allow(clippy::print_stdout)]
async fn list_cohorts(
    args: &QueryArgs,
    address: SocketAddr,
    store: &Store,
    states: &[PatientCareState],
) -> anyhow::Result<()> {
    let mut sizes: HashMap<(CareSetting, String), usize> = HashMap::new();
    for state in states.iter().filter(|s| s.merged_into.is_none()) {
        *sizes
            .entry((state.setting(), state.setting_organisation.clone()))
            .or_default() += 1;
        *sizes.entry((state.setting(), String::new())).or_default() += 1;
    }
    let Some(((setting, organisation), members)) = sizes
        .into_iter()
        .filter(|(_, size)| *size >= args.cohort_members)
        .min_by_key(|(_, size)| *size)
    else {
        println!(
            "ListCohort    skipped: no cohort has {} members among {} patients (raise --patients)",
            args.cohort_members,
            states.len()
        );
        return Ok(());
    };
    let filter = CohortFilter {
        setting: setting as i32,
        organisation: organisation.clone(),
        ..Default::default()
    };
    debug_assert!(Cohort::from_filter(&filter, "filter").is_ok());
    let listed_in = format!(
        "{} members of {} ({members} in all), pages of 1000",
        args.cohort_members,
        describe(setting, &organisation)
    );
    // The server's figure: the client keeps each page as bytes (reading
    // only the next page's token), as GetCareState's load does.
    let grpc = tonic::client::Grpc::new(channel(address).await?)
        .max_decoding_message_size(256 * 1024 * 1024);
    let (pages, listings) = time_listings(args, &filter, |request| {
        let mut grpc = grpc.clone();
        async move {
            grpc.ready().await?;
            let answer = grpc
                .unary(
                    tonic::Request::new(request),
                    tonic::codegen::http::uri::PathAndQuery::from_static(
                        "/baton.query.v1.CareStateQuery/ListCohort",
                    ),
                    LeanAnswer::<ListCohortRequest, NextPageToken>::default(),
                )
                .await?
                .into_inner();
            Ok((answer.states.len(), answer.next_page_token))
        }
    })
    .await?;
    println!(
        "ListCohort    {listed_in}: per page {} (the client keeps each page as bytes)",
        percentiles(&pages)
    );
    println!(
        "              per listing of {}: {} ({} listings)",
        args.cohort_members,
        percentiles(&listings),
        listings.len()
    );
    // As a client that decodes every state sees it, on the same two cores.
    let client = CareStateQueryClient::new(channel(address).await?)
        .max_decoding_message_size(256 * 1024 * 1024);
    let (pages, listings) = time_listings(args, &filter, |request| {
        let mut client = client.clone();
        async move {
            let answer = client.list_cohort(request).await?.into_inner();
            Ok((answer.states.len(), answer.next_page_token))
        }
    })
    .await?;
    println!(
        "  decoded     per page {} (the client decodes every state)",
        percentiles(&pages)
    );
    println!(
        "              per listing of {}: {} ({} listings)",
        args.cohort_members,
        percentiles(&listings),
        listings.len()
    );
    // Where a page's time goes, without gRPC: the store's scan as
    // ListCohort makes it (index entries, state reads, decoding what the
    // membership checks read, the checks) and with whole states decoded,
    // encoding the response, and a client decoding it.
    let cohort = Cohort::from_filter(&filter, "filter").map_err(|v| anyhow::anyhow!(v.problem))?;
    let store = store.clone();
    let seconds = args.seconds;
    let (scan, whole, encode, decode) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let (mut scan, mut whole, mut encode, mut decode) = (
                latency_histogram(),
                latency_histogram(),
                latency_histogram(),
                latency_histogram(),
            );
            let now =
                baton_care::Instant::of(Some(&prost_types::Timestamp::from(SystemTime::now())));
            let until = std::time::Instant::now() + Duration::from_secs(seconds);
            while std::time::Instant::now() < until {
                let started = std::time::Instant::now();
                let encoded =
                    store.list_cohort_encoded(&cohort, None, 1000, 1000, now, &|_| true)?;
                record(&mut scan, started.elapsed());
                drop(encoded);
                let started = std::time::Instant::now();
                let page = store.list_cohort(&cohort, None, 1000, now)?;
                record(&mut whole, started.elapsed());
                let started = std::time::Instant::now();
                let bytes = baton_proto::query::v1::ListCohortResponse {
                    states: page.states,
                    next_page_token: String::new(),
                }
                .encode_to_vec();
                record(&mut encode, started.elapsed());
                let started = std::time::Instant::now();
                let decoded = baton_proto::query::v1::ListCohortResponse::decode(bytes.as_slice())?;
                record(&mut decode, started.elapsed());
                drop(decoded);
            }
            Ok((scan, whole, encode, decode))
        })
        .await??;
    println!(
        "  a page of 1000, in the store alone: scan {} (as ListCohort: decoding what the checks read)",
        percentiles(&scan)
    );
    println!(
        "                  scan decoding whole states {}",
        percentiles(&whole)
    );
    println!(
        "                  encoding it with prost {} (the server sends the stored bytes instead)",
        percentiles(&encode)
    );
    println!(
        "                  a client decoding it {}",
        percentiles(&decode)
    );
    Ok(())
}

/// Lists the first `--cohort-members` members of `filter` a page of 1000
/// at a time, again and again for `--seconds`, each page through `page`
/// (which answers how many states came and the next page's token): the
/// latency per page and per whole listing.
async fn time_listings<Page, Answered>(
    args: &QueryArgs,
    filter: &CohortFilter,
    mut page: Page,
) -> anyhow::Result<(Histogram<u64>, Histogram<u64>)>
where
    Page: FnMut(ListCohortRequest) -> Answered,
    Answered: std::future::Future<Output = anyhow::Result<(usize, String)>>,
{
    let mut pages = latency_histogram();
    let mut listings = latency_histogram();
    let until = Instant::now() + Duration::from_secs(args.seconds);
    while Instant::now() < until {
        let listing = Instant::now();
        let (mut listed, mut page_token) = (0, String::new());
        while listed < args.cohort_members {
            let started = Instant::now();
            let (states, next_page_token) = page(ListCohortRequest {
                filter: Some(filter.clone()),
                page_size: (args.cohort_members - listed).min(1000) as u32,
                page_token,
            })
            .await?;
            record(&mut pages, started.elapsed());
            listed += states;
            page_token = next_page_token;
            if page_token.is_empty() {
                break;
            }
        }
        record(&mut listings, listing.elapsed());
    }
    Ok((pages, listings))
}

fn describe(setting: CareSetting, organisation: &str) -> String {
    if organisation.is_empty() {
        format!("--setting {}", setting_name(setting))
    } else {
        format!(
            "--setting {} --organisation {organisation}",
            setting_name(setting)
        )
    }
}

/// Commits `--watch-rate` changes per second of hospital patients' states,
/// each stamped with its commit time, while a watch of the hospital cohort
/// measures how late each reaches it.
#[allow(clippy::print_stdout)]
async fn watch_lag(
    args: &QueryArgs,
    address: SocketAddr,
    store: &Store,
    states: &[PatientCareState],
) -> anyhow::Result<()> {
    let mut members: Vec<PatientCareState> = states
        .iter()
        .filter(|s| s.merged_into.is_none() && s.setting() == CareSetting::Hospital)
        .cloned()
        .collect();
    if members.is_empty() {
        println!("WatchCohort   skipped: no patient is in hospital");
        return Ok(());
    }
    let mut client = CareStateQueryClient::new(channel(address).await?)
        .max_decoding_message_size(64 * 1024 * 1024);
    let syncing = Instant::now();
    let mut stream = client
        .watch_cohort(WatchCohortRequest {
            filter: Some(CohortFilter {
                setting: CareSetting::Hospital as i32,
                ..Default::default()
            }),
        })
        .await?
        .into_inner();
    let mut synced_members = 0;
    loop {
        let message = stream
            .message()
            .await?
            .context("the watch ended before it synced")?;
        match message.change() {
            CohortChange::Member => synced_members += 1,
            CohortChange::Synced => break,
            _ => {}
        }
    }
    let synced = syncing.elapsed();

    let done = CancellationToken::new();
    let finished = done.clone();
    let receiver = tokio::spawn(async move {
        let mut lag = latency_histogram();
        loop {
            let message = tokio::select! {
                () = finished.cancelled() => break,
                message = stream.message() => match message {
                    Ok(Some(message)) => message,
                    _ => break,
                },
            };
            if message.change() != CohortChange::Changed {
                continue;
            }
            if let Some(committed) = message.state.and_then(|s| s.last_recorded_at) {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                let committed = Duration::new(
                    u64::try_from(committed.seconds).unwrap_or(0),
                    u32::try_from(committed.nanos).unwrap_or(0),
                );
                record(&mut lag, now.saturating_sub(committed));
            }
        }
        lag
    });

    // Every 10 ms, a commit of rate/100 changed states.
    let per_tick = (args.watch_rate as usize / 100).max(1);
    let ticks = args.watch_seconds * 100;
    let mut interval = tokio::time::interval(Duration::from_millis(10));
    let mut next = 0;
    let mut sent = 0;
    for _ in 0..ticks {
        interval.tick().await;
        let mut commit = Commit::new("bench-watch");
        for _ in 0..per_tick {
            let index = next % members.len();
            let state = &mut members[index];
            next += 1;
            state.version += 1;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            state.last_recorded_at = Some(prost_types::Timestamp {
                seconds: now.as_secs() as i64,
                nanos: now.subsec_nanos() as i32,
            });
            commit = commit.with_state(state.clone());
            sent += 1;
        }
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.commit(&commit)).await??;
    }
    // Let the last changes arrive, then end the watch.
    tokio::time::sleep(Duration::from_millis(500)).await;
    done.cancel();
    let lag = receiver.await.context("the watch receiver panicked")?;
    println!(
        "WatchCohort   synced {synced_members} members in {synced:.2?}; {sent} changes at {} changes/s for {} s, {} delivered: lag {}",
        args.watch_rate,
        args.watch_seconds,
        lag.len(),
        percentiles(&lag)
    );
    Ok(())
}

/// A tiny deterministic generator for picking keys: the benchmark needs
/// spread, not statistics.
#[derive(Debug, Clone, Copy)]
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound.max(1) as u64) as usize
    }
}

/// The bare service: answers `reply_bytes` bytes, nothing else.
#[derive(Debug, Clone, Copy)]
struct EchoService;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn echo(
        &self,
        request: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<EchoReply>, tonic::Status> {
        let request = request.into_inner();
        Ok(tonic::Response::new(EchoReply {
            payload: vec![b'x'; request.reply_bytes as usize],
        }))
    }
}
