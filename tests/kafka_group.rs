//! Projectors sharing the partitions as a group, on a real Kafka-protocol
//! broker: three `baton-projector` processes share 12 partitions while
//! 200k events flow in through the ingest process.
//!
//! First as static members: one is killed with SIGKILL and restarted under
//! the same instance id, and gets its own partitions back. Then, the three
//! restarted as dynamic members of another group (the test broker, Tansu,
//! never hands a dead static member's partitions on; see docs/decisions.md):
//! one is killed and left dead (the survivors take its partitions over,
//! restoring them from the changelog), another is stopped gracefully, and
//! both come back. A merge whose two patients live on
//! partitions of different projectors is published meanwhile. At the end
//! the query replica's states, and each partition's states in the store of
//! the projector that owns it, equal a clean single-projector rebuild of
//! the log, and no patient's state went backwards on the changelog.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use baton_log::kafka::{KafkaConfig, KafkaLog};
use baton_log::testkit::TestBroker;
use baton_log::topics::Topics;
use baton_log::{ConsistencyToken, EventLog, partition_for_key};
use baton_proto::admin::v1::GetPositionsRequest;
use baton_proto::admin::v1::operations_client::OperationsClient;
use baton_proto::ingest::v1::PublishRequest;
use baton_proto::ingest::v1::care_event_ingest_client::CareEventIngestClient;
use baton_proto::query::v1::care_state_query_client::CareStateQueryClient;
use baton_proto::query::v1::patient_ref::Ref;
use baton_proto::query::v1::{GetCareStateRequest, PatientRef};
use baton_store::Store;
use support::stream::{
    applied_everything, assert_changelog_never_went_backwards, clean_rebuild, publish_all,
    stopped_and_caught_up, wait_for_token,
};
use support::{Service, eventually, free_address};

const PARTITIONS: u32 = 12;
const EVENTS: usize = 200_000;
/// Pause between batches of 500: the stream lasts long enough for the
/// kills and the stop to fall in the middle of it.
const PACE: Duration = Duration::from_millis(350);
/// Each wait for the group to settle: joins and session timeouts (30 s for
/// the static members, 6 s for the dynamic ones) take their time on the
/// test broker.
const SETTLE: Duration = Duration::from_secs(120);

fn service(broker: &TestBroker, data: &Path, name: &'static str, extra: &[String]) -> Vec<String> {
    let mut args = vec![
        "--kafka".to_owned(),
        broker.bootstrap_servers(),
        "--partitions".to_owned(),
        PARTITIONS.to_string(),
        "--data-dir".to_owned(),
        data.join(name).display().to_string(),
    ];
    args.extend_from_slice(extra);
    args
}

/// One projector of the group, with its instance id and admin address.
struct Member {
    instance: &'static str,
    admin: SocketAddr,
    process: Service,
}

/// How the projectors join: static members of one group, or dynamic
/// members of another.
#[derive(Debug, Clone, Copy)]
enum Joining {
    Static,
    Dynamic,
}

fn member(broker: &TestBroker, data: &Path, instance: &'static str, joining: Joining) -> Member {
    let admin = free_address();
    // Static members get the session timeout the README gives for rolling
    // upgrades that move nothing: a restart on a loaded CI machine can take
    // longer than the 6 s default. Dynamic members keep the default.
    let (group, static_membership, session_timeout_ms) = match joining {
        Joining::Static => ("baton-projector", "true", "30000"),
        Joining::Dynamic => ("baton-projector-dynamic", "false", "6000"),
    };
    let args = service(
        broker,
        data,
        instance,
        &[
            "--instance-id".to_owned(),
            instance.to_owned(),
            "--consumer-group".to_owned(),
            group.to_owned(),
            "--static-membership".to_owned(),
            static_membership.to_owned(),
            "--session-timeout-ms".to_owned(),
            session_timeout_ms.to_owned(),
            "--admin-listen".to_owned(),
            admin.to_string(),
        ],
    );
    Member {
        instance,
        admin,
        process: Service::start("baton-projector", args, Some(admin)),
    }
}

/// The partitions the projector at `admin` says it owns, with the owner
/// it names for each; `None` when it does not answer.
async fn owned(admin: SocketAddr) -> Option<(BTreeSet<u32>, BTreeMap<u32, String>)> {
    let mut client = OperationsClient::connect(format!("http://{admin}"))
        .await
        .ok()?;
    let positions = client
        .get_positions(GetPositionsRequest {})
        .await
        .ok()?
        .into_inner();
    let mine = positions
        .partitions
        .iter()
        .filter(|p| p.owned_here)
        .map(|p| p.partition)
        .collect();
    let owners = positions
        .partitions
        .iter()
        .map(|p| (p.partition, p.owner.clone()))
        .collect();
    Some((mine, owners))
}

/// The state of `patient` on the query replica at `token`.
async fn care_state(
    query: SocketAddr,
    patient: &str,
    token: &ConsistencyToken,
) -> Option<baton_proto::state::v1::PatientCareState> {
    let mut client = CareStateQueryClient::connect(format!("http://{query}"))
        .await
        .ok()?;
    let request = GetCareStateRequest {
        patient: Some(PatientRef {
            r#ref: Some(Ref::PatientKey(patient.to_owned())),
        }),
        consistency_token: token.to_string(),
    };
    client
        .get_care_state(request)
        .await
        .ok()?
        .into_inner()
        .state
}

/// How many events the projector at `admin` has yet to apply in the
/// partitions it owns.
async fn behind(admin: SocketAddr) -> Option<u64> {
    let mut client = OperationsClient::connect(format!("http://{admin}"))
        .await
        .ok()?;
    let positions = client
        .get_positions(GetPositionsRequest {})
        .await
        .ok()?
        .into_inner();
    Some(
        positions
            .partitions
            .iter()
            .filter(|p| p.owned_here)
            .map(|p| p.lag_events)
            .sum(),
    )
}

/// Waits until the running `members` own every partition between them,
/// each at least one and none twice; returns each one's share.
fn settled(
    runtime: &tokio::runtime::Runtime,
    members: &[&Member],
    what: &str,
) -> BTreeMap<&'static str, BTreeSet<u32>> {
    eventually(what, SETTLE, || {
        let mut shares = BTreeMap::new();
        for member in members {
            let (mine, _) = runtime.block_on(owned(member.admin))?;
            if mine.is_empty() {
                return None;
            }
            shares.insert(member.instance, mine);
        }
        let total: usize = shares.values().map(BTreeSet::len).sum();
        let union: BTreeSet<u32> = shares.values().flatten().copied().collect();
        (total == PARTITIONS as usize && union.len() == PARTITIONS as usize).then_some(shares)
    })
}

/// Two NHS numbers outside the synthetic population, whose partitions
/// belong to different members of `shares`.
fn patients_of_two_members(shares: &BTreeMap<&'static str, BTreeSet<u32>>) -> (String, String) {
    let owner_of = |nhs: &str| {
        let partition = partition_for_key(nhs.as_bytes(), PARTITIONS);
        shares
            .iter()
            .find(|(_, owned)| owned.contains(&partition))
            .map(|(instance, _)| *instance)
    };
    let first = baton_synth::nhs_number(850_000);
    let second = (850_001..)
        .map(baton_synth::nhs_number)
        .find(|nhs| owner_of(nhs) != owner_of(&first))
        .expect("patients of two members");
    (first, second)
}

/// Publishes a merge of `retired` into `survivor` (both first assessed
/// for frailty) and returns its consistency token.
async fn publish_merge(ingest: String, survivor: &str, retired: &str) -> ConsistencyToken {
    use baton_care::fixtures::{frailty_assessed, patients_merged};
    let mut client = CareEventIngestClient::connect(ingest)
        .await
        .expect("connect to ingest");
    let mut token = ConsistencyToken::empty();
    for events in [
        vec![
            frailty_assessed(survivor, 1_700_000_000, 4),
            frailty_assessed(retired, 1_700_000_100, 7),
        ],
        vec![patients_merged(survivor, retired, 1_700_000_200)],
    ] {
        let published = client
            .publish(PublishRequest {
                events,
                validate_only: false,
            })
            .await
            .expect("publish the merge")
            .into_inner()
            .consistency_token;
        token.merge(&published.parse().expect("a token"));
    }
    token
}

#[test]
#[allow(clippy::print_stderr)] // the figures of the run, for whoever reads the test output
fn projectors_share_the_partitions_and_take_over_a_failed_ones() {
    let Some(broker) = TestBroker::start() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path();
    let (ingest_address, query_address) = (free_address(), free_address());
    let listen = |address: SocketAddr| vec!["--listen".to_owned(), address.to_string()];
    let mut ingest = Service::start(
        "baton-ingest",
        service(&broker, data, "baton-ingest", &listen(ingest_address)),
        Some(ingest_address),
    );
    let mut query = Service::start(
        "baton-query",
        service(&broker, data, "baton-query", &listen(query_address)),
        Some(query_address),
    );
    let mut p0 = member(&broker, data, "projector-0", Joining::Static);
    let mut p1 = member(&broker, data, "projector-1", Joining::Static);
    let mut p2 = member(&broker, data, "projector-2", Joining::Static);

    let events = baton_synth::events(baton_synth::population_for_events(EVENTS + EVENTS / 50, 17));
    assert!(events.len() >= EVENTS, "{} events", events.len());
    let first_patient = baton_care::ValidEvent::new(events[0].clone())
        .expect("a valid event")
        .key()
        .to_string();
    let started = Instant::now();
    let publishing = runtime.spawn(publish_all(
        format!("http://{ingest_address}"),
        events.clone(),
        PACE,
    ));

    let shares = settled(
        &runtime,
        &[&p0, &p1, &p2],
        "three projectors share 12 partitions",
    );
    eprintln!("{:.0?}: shared {shares:?}", started.elapsed());

    // Killed and back under the same instance id within the session
    // timeout: static membership gives it its own partitions again.
    p1.process.kill();
    p1.process.restart();
    let again = settled(
        &runtime,
        &[&p0, &p1, &p2],
        "the restarted projector back in",
    );
    assert_eq!(
        again["projector-1"], shares["projector-1"],
        "a projector restarted with its instance id gets its partitions back"
    );
    eprintln!(
        "{:.0?}: projector-1 killed and back with its partitions",
        started.elapsed()
    );

    // The same three, their stores kept, as dynamic members of another
    // group: each partition is taken over by whoever gets it.
    for member in [&mut p0, &mut p1, &mut p2] {
        member.process.stop();
    }
    let mut p0 = member(&broker, data, "projector-0", Joining::Dynamic);
    let mut p1 = member(&broker, data, "projector-1", Joining::Dynamic);
    let mut p2 = member(&broker, data, "projector-2", Joining::Dynamic);
    let shares = settled(
        &runtime,
        &[&p0, &p1, &p2],
        "three dynamic members share 12 partitions",
    );
    eprintln!("{:.0?}: shared again {shares:?}", started.elapsed());

    // Killed for good, mid-stream: the survivors take its partitions over.
    p1.process.kill();
    let survivors = settled(
        &runtime,
        &[&p0, &p2],
        "the survivors take over the killed one's partitions",
    );
    eprintln!(
        "{:.0?}: projector-1 killed; {survivors:?}",
        started.elapsed()
    );
    assert!(
        !publishing.is_finished(),
        "the kill fell in the middle of the stream"
    );

    // Stopped gracefully: it finishes and commits, then the last one takes over.
    p2.process.stop();
    let alone = settled(&runtime, &[&p0], "the last projector owns every partition");
    eprintln!("{:.0?}: projector-2 stopped; {alone:?}", started.elapsed());

    p1.process.restart();
    p2.process.restart();
    let shares = settled(
        &runtime,
        &[&p0, &p1, &p2],
        "all three share the partitions again",
    );
    eprintln!("{:.0?}: all back: {shares:?}", started.elapsed());

    // A merge across two projectors' partitions: the retired record's
    // hand-over travels through the log to the survivor's owner.
    let (survivor, retired) = patients_of_two_members(&shares);
    let mut token = runtime.block_on(publish_merge(
        format!("http://{ingest_address}"),
        &survivor,
        &retired,
    ));
    token.merge(&runtime.block_on(publishing).expect("publishing"));
    for member in [&mut p0, &mut p1, &mut p2] {
        member.process.assert_running();
    }

    runtime.block_on(wait_for_token(
        format!("http://{query_address}"),
        &first_patient,
        &token,
    ));
    let (retired_state, survivor_state) =
        eventually("the merge reaches both records", SETTLE, || {
            let retired_state = runtime.block_on(care_state(query_address, &retired, &token))?;
            let survivor_state = runtime.block_on(care_state(query_address, &survivor, &token))?;
            let merged = retired_state.merged_into.is_some()
                && survivor_state
                    .merged_from
                    .iter()
                    .any(|link| link.patient_key == retired);
            merged.then_some((retired_state, survivor_state))
        });
    assert_eq!(
        retired_state.merged_into.map(|link| link.patient_key),
        Some(survivor.clone()),
        "the retired record says where it went"
    );
    assert_ne!(
        partition_for_key(survivor_state.patient_key.as_bytes(), PARTITIONS),
        partition_for_key(retired.as_bytes(), PARTITIONS)
    );
    // Every projector caught up with its partitions, hand-overs included.
    eventually(
        "every projector caught up with its partitions",
        SETTLE,
        || {
            [&p0, &p1, &p2]
                .iter()
                .all(|member| runtime.block_on(behind(member.admin)) == Some(0))
                .then_some(())
        },
    );

    runtime.block_on(async {
        // Who owns what at the end, before everything stops.
        let mut owners: BTreeMap<u32, &'static str> = BTreeMap::new();
        for member in [&p0, &p1, &p2] {
            let (mine, named) = owned(member.admin).await.expect("the projector answers");
            for partition in mine {
                assert_eq!(named[&partition], member.instance, "a projector names itself");
                owners.insert(partition, member.instance);
            }
        }
        assert_eq!(owners.len(), PARTITIONS as usize);

        let topics = Topics {
            partitions: PARTITIONS,
            ..Topics::default()
        };
        let log = KafkaLog::connect(KafkaConfig::new(broker.bootstrap_servers()))
            .await
            .expect("connect");
        let state_end = log.end_offsets(&topics.state).await.expect("end offsets");
        let replica = stopped_and_caught_up(
            &mut query,
            &data.join("baton-query/replica"),
            async |store: &Store| applied_everything(store, &topics.state, &state_end),
        )
        .await;
        let mut stores = BTreeMap::new();
        for member in [&mut p0, &mut p1, &mut p2] {
            member.process.stop();
            let store = Store::open(
                data.join(member.instance).join("store"),
                &baton_store::StoreConfig::default(),
            )
            .expect("open the store");
            stores.insert(member.instance, store);
        }
        ingest.stop();

        // A clean rebuild from the same log by one projector, in this process.
        let (rebuilt, stats) = clean_rebuild(&log, &topics).await;
        assert_eq!(stats.dead_letters, 0, "every event applies");
        let expected = rebuilt.digest().expect("digest");
        assert_eq!(
            replica.digest().expect("digest"),
            expected,
            "the replica materialised from the group's changelog holds the states of a clean rebuild"
        );
        let rebuilt_digest = rebuilt.digest_at(&topics.events).expect("digest");
        for (&partition, &owner) in &owners {
            // Positions are not compared: stopping one projector hands its
            // partitions to the others, whose take-over may fold a merge
            // again and append its hand-over again (a duplicate, a no-op)
            // after the last of them stopped.
            let digest = stores[owner].digest_at(&topics.events).expect("digest");
            assert_eq!(
                digest.partitions.get(&partition),
                rebuilt_digest.partitions.get(&partition),
                "{owner}'s states of partition {partition} are a clean rebuild's"
            );
        }
        let repeats = assert_changelog_never_went_backwards(&log, &topics.state).await;
        eprintln!(
            "{} events over {PARTITIONS} partitions and 3 projectors (one SIGKILLed twice, one stopped), {} patients, {repeats} states repeated in the changelog, digest {expected}, {:.0?}",
            events.len() + 3,
            rebuilt.state_count().expect("count"),
            started.elapsed()
        );
    });
}
