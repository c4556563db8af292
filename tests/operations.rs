//! Operations end to end on the embedded log, with the real `baton up` and
//! the `baton` command: a replay under a query load, a replay killed with
//! SIGKILL and resumed, verification of an untouched store and of a
//! tampered copy, and a dead letter redriven once its admission arrived.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use baton_log::EventLog;
use baton_log::embedded::{EmbeddedConfig, EmbeddedLog};
use baton_log::topics::Topics;
use baton_projector::{Projector, ProjectorConfig};
use baton_proto::admin::v1::operations_client::OperationsClient;
use baton_proto::admin::v1::replay_status::Phase;
use baton_proto::admin::v1::{GetReplayStatusRequest, ReplayStatus, StartReplayRequest};
use baton_proto::events::v1::CareEvent;
use baton_proto::ingest::v1::PublishRequest;
use baton_proto::ingest::v1::care_event_ingest_client::CareEventIngestClient;
use baton_proto::query::v1::care_state_query_client::CareStateQueryClient;
use baton_proto::query::v1::patient_ref::Ref;
use baton_proto::query::v1::{CohortFilter, GetCareStateRequest, ListCohortRequest, PatientRef};
use baton_proto::state::v1::CareSetting;
use baton_store::{Generations, Store, StoreConfig};
use support::{Service, baton, eventually, free_address, try_baton};
use tonic::transport::Channel;

struct Up {
    service: Service,
    ingest: String,
    query: String,
    admin: String,
}

fn up(data: &Path) -> Up {
    let (ingest, query, admin) = (free_address(), free_address(), free_address());
    let service = Service::start(
        "baton",
        vec![
            "up".into(),
            "--ingest-listen".into(),
            ingest.to_string(),
            "--query-listen".into(),
            query.to_string(),
            "--admin-listen".into(),
            admin.to_string(),
            "--data-dir".into(),
            data.display().to_string(),
        ],
        Some(admin),
    );
    Up {
        service,
        ingest: format!("http://{ingest}"),
        query: format!("http://{query}"),
        admin: admin.to_string(),
    }
}

async fn publish(ingest: &str, events: &[CareEvent]) {
    let mut client = CareEventIngestClient::connect(ingest.to_owned())
        .await
        .unwrap();
    for batch in events.chunks(500) {
        client
            .publish(PublishRequest {
                events: batch.to_vec(),
                validate_only: false,
            })
            .await
            .expect("the synthetic events are valid");
    }
}

async fn admin(address: &str) -> OperationsClient<Channel> {
    OperationsClient::connect(format!("http://{address}"))
        .await
        .unwrap()
}

async fn replay_status(client: &mut OperationsClient<Channel>) -> ReplayStatus {
    client
        .get_replay_status(GetReplayStatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Waits until the projection has applied everything published.
async fn caught_up(admin_address: &str) {
    let mut client = admin(admin_address).await;
    for _ in 0..1200 {
        let positions = client
            .get_positions(baton_proto::admin::v1::GetPositionsRequest {})
            .await
            .unwrap()
            .into_inner();
        if positions.partitions.iter().all(|p| p.lag_events == 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the projection did not catch up");
}

/// The digest of a clean rebuild of the embedded log in `data` (Baton
/// stopped), and the digest of its live store.
async fn clean_rebuild_and_live_digests(data: &Path) -> (String, String) {
    let log: Arc<dyn EventLog> =
        Arc::new(EmbeddedLog::open(EmbeddedConfig::new(data.join("log"))).unwrap());
    let scratch = tempfile::tempdir().unwrap();
    let rebuilt = Store::open(scratch.path().join("store"), &StoreConfig::default()).unwrap();
    let mut projector = Projector::rebuild(
        log,
        rebuilt.clone(),
        ProjectorConfig::default(),
        Topics::default(),
    )
    .await
    .unwrap();
    projector.catch_up().await.unwrap();
    let live_path = Generations::new(data, "store").live_path().unwrap();
    let live = Store::open(live_path, &StoreConfig::default()).unwrap();
    (rebuilt.digest().unwrap(), live.digest().unwrap())
}

fn by_key(key: &str) -> PatientRef {
    PatientRef {
        r#ref: Some(Ref::PatientKey(key.to_owned())),
    }
}

/// What a client calling GetCareState and ListCohort in a loop saw.
#[derive(Debug, Default)]
struct Load {
    calls: AtomicU64,
    failures: AtomicU64,
    backwards: AtomicU64,
}

async fn query_load(query: String, keys: Vec<String>, stop: Arc<AtomicBool>, load: Arc<Load>) {
    let mut client = CareStateQueryClient::connect(query).await.unwrap();
    let mut versions: HashMap<String, u64> = HashMap::new();
    let hospital = CohortFilter {
        setting: CareSetting::Hospital.into(),
        ..CohortFilter::default()
    };
    while !stop.load(Ordering::Relaxed) {
        for key in &keys {
            load.calls.fetch_add(1, Ordering::Relaxed);
            match client
                .get_care_state(GetCareStateRequest {
                    patient: Some(by_key(key)),
                    ..GetCareStateRequest::default()
                })
                .await
            {
                Ok(response) => {
                    let version = response.into_inner().state.map_or(0, |s| s.version);
                    let seen = versions.entry(key.clone()).or_default();
                    if version < *seen {
                        load.backwards.fetch_add(1, Ordering::Relaxed);
                    }
                    *seen = (*seen).max(version);
                }
                Err(status) if status.code() == tonic::Code::NotFound => {}
                Err(_) => {
                    load.failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        load.calls.fetch_add(1, Ordering::Relaxed);
        if client
            .list_cohort(ListCohortRequest {
                filter: Some(hospital.clone()),
                page_size: 100,
                ..ListCohortRequest::default()
            })
            .await
            .is_err()
        {
            load.failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_under_query_load_swaps_in_with_no_failed_call_and_no_state_going_back() {
    let data = tempfile::tempdir().unwrap();
    let mut baton_up = up(data.path());
    let events = baton_synth::events(baton_synth::population_for_events(12_000, 21));
    let (before, during) = events.split_at(events.len() * 2 / 3);
    publish(&baton_up.ingest, before).await;
    caught_up(&baton_up.admin).await;

    let keys: Vec<String> = {
        let mut keys: Vec<String> = before
            .iter()
            .filter_map(|event| {
                let patient = event.patient.as_ref()?;
                (!patient.nhs_number.is_empty()).then(|| patient.nhs_number.clone())
            })
            .collect();
        keys.sort();
        keys.dedup();
        keys.into_iter().take(200).collect()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Load::default());
    let loading = tokio::spawn(query_load(
        baton_up.query.clone(),
        keys,
        Arc::clone(&stop),
        Arc::clone(&load),
    ));

    let mut client = admin(&baton_up.admin).await;
    let started = client
        .start_replay(StartReplayRequest {
            keep_previous: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(started.phase(), Phase::Rebuilding);
    assert_eq!((started.generation, started.previous_generation), (1, 0));
    // New events arrive while the replay runs; the live projector applies them.
    publish(&baton_up.ingest, during).await;
    let done = loop {
        let status = replay_status(&mut client).await;
        if !matches!(
            status.phase(),
            Phase::Rebuilding | Phase::Swapping | Phase::Republishing
        ) {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done.phase(), Phase::Done, "{done:?}");
    assert_eq!(
        done.states_differing, 0,
        "the same fold gives the same states"
    );
    caught_up(&baton_up.admin).await;
    // The load goes on a little on the new generation.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    loading.await.unwrap();

    assert!(load.calls.load(Ordering::Relaxed) > 200, "{load:?}");
    assert_eq!(load.failures.load(Ordering::Relaxed), 0, "{load:?}");
    assert_eq!(load.backwards.load(Ordering::Relaxed), 0, "{load:?}");

    // The command reports the same, and the generations on disk moved.
    let status = baton(&["replay", "--status", "--admin", &baton_up.admin]);
    assert!(
        status.contains("generation 1 (replacing 0): done"),
        "{status}"
    );
    let verified = baton(&["verify", "--admin", &baton_up.admin]);
    assert!(
        verified.contains("projector (generation 1): EQUAL"),
        "{verified}"
    );

    baton_up.service.stop();
    let generations = Generations::new(data.path(), "store");
    assert_eq!(generations.live().unwrap(), 1);
    assert_eq!(
        generations.list().unwrap(),
        vec![1],
        "the old one is removed"
    );
    assert_eq!(generations.replay().unwrap(), None);
    let (clean, live) = clean_rebuild_and_live_digests(data.path()).await;
    assert_eq!(live, clean, "the replayed store equals a clean rebuild");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_killed_mid_way_resumes_from_its_own_positions_after_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let mut baton_up = up(data.path());
    let events = baton_synth::events(baton_synth::population_for_events(80_000, 22));
    publish(&baton_up.ingest, &events).await;
    caught_up(&baton_up.admin).await;

    let mut client = admin(&baton_up.admin).await;
    let out = baton(&[
        "replay",
        "--detach",
        "--keep-previous",
        "--admin",
        &baton_up.admin,
    ]);
    assert!(out.contains("rebuilding"), "{out}");
    let part_way = loop {
        let status = replay_status(&mut client).await;
        assert_eq!(
            status.phase(),
            Phase::Rebuilding,
            "killed too late: {status:?}"
        );
        if status.records_done > 0 {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    baton_up.service.kill();
    assert!(part_way.records_done < events.len() as u64, "{part_way:?}");
    let generations = Generations::new(data.path(), "store");
    assert_eq!(
        generations.live().unwrap(),
        0,
        "not swapped before the kill"
    );
    assert!(
        generations.replay().unwrap().is_some(),
        "the marker survives"
    );

    baton_up.service.restart();
    let mut client = admin(&baton_up.admin).await;
    let done = eventually(
        "the resumed replay to finish",
        Duration::from_secs(300),
        || {
            let status = futures_block(replay_status(&mut client));
            (status.phase() == Phase::Done).then_some(status)
        },
    );
    assert!(done.resumed, "{done:?}");
    assert_eq!(done.generation, 1);
    let shown = baton(&["replay", "--status", "--admin", &baton_up.admin]);
    assert!(shown.contains("resumed after a restart"), "{shown}");
    assert!(shown.contains("generation 0 kept"), "{shown}");
    baton_up.service.stop();
    assert_eq!(generations.live().unwrap(), 1);
    assert_eq!(
        generations.list().unwrap(),
        vec![0, 1],
        "--keep-previous kept 0"
    );
    let (clean, live) = clean_rebuild_and_live_digests(data.path()).await;
    assert_eq!(live, clean);
}

/// Runs a future to completion from synchronous code inside a test that
/// is itself on a multi-threaded runtime.
fn futures_block<F: std::future::Future>(future: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_agrees_with_an_untouched_store_and_names_the_patient_a_tampered_copy_changed() {
    let data = tempfile::tempdir().unwrap();
    let mut baton_up = up(data.path());
    let events = baton_synth::events(baton_synth::population_for_events(3_000, 23));
    publish(&baton_up.ingest, &events).await;
    caught_up(&baton_up.admin).await;
    let verified = baton(&["verify", "--admin", &baton_up.admin]);
    assert!(
        verified.contains("projector (generation 0): EQUAL"),
        "{verified}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&baton(&["verify", "--json", "--admin", &baton_up.admin])).unwrap();
    assert_eq!(report["equal"], true, "{report}");
    baton_up.service.stop();

    // A copy of the store, with one patient's state written wrong through
    // the store's own API.
    let copy = tempfile::tempdir().unwrap();
    copy_dir(data.path(), copy.path());
    let tampered = {
        let store = Store::open(copy.path().join("store"), &StoreConfig::default()).unwrap();
        let mut state = store
            .states()
            .map(Result::unwrap)
            .find(|state| state.demographics.is_some())
            .expect("a patient with demographics");
        state.demographics.as_mut().unwrap().family_name = "WRONG".into();
        store
            .commit(&baton_store::Commit::new("baton.care-events.v1").with_state(state.clone()))
            .unwrap();
        store.flush().unwrap();
        state.patient_key
    };
    let mut on_copy = up(copy.path());
    let (ok, stdout, stderr) = try_baton(&["verify", "--admin", &on_copy.admin]);
    assert!(!ok, "verify must fail on the tampered copy: {stdout}");
    assert!(stderr.contains("disagree"), "{stderr}");
    assert!(stdout.contains("DIFFERS"), "{stdout}");
    assert!(
        stdout.contains(&format!("patients whose states differ: {tampered}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("demographics.familyName: \"WRONG\" ≠"),
        "the field-level diff: {stdout}"
    );
    on_copy.service.stop();

    // The original still agrees.
    let mut again = up(data.path());
    let verified = baton(&["verify", "--admin", &again.admin]);
    assert!(verified.contains("EQUAL"), "{verified}");
    again.service.stop();
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in walk(from) {
        let relative = entry.strip_prefix(from).unwrap();
        let target = to.join(relative);
        if entry.is_dir() {
            std::fs::create_dir_all(&target).unwrap();
        } else {
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(&entry, &target).unwrap();
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = vec![dir.to_owned()];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_for_an_unknown_encounter_applies_once_redriven_after_its_admission() {
    use baton_care::fixtures::{admitted, medically_optimised};

    let data = tempfile::tempdir().unwrap();
    let mut baton_up = up(data.path());
    let nhs = "9434765919";
    // Medically optimised on a stay Baton has not seen: dead-lettered.
    let early = medically_optimised(nhs, "V7", 2_000);
    publish(&baton_up.ingest, std::slice::from_ref(&early)).await;
    let listed = eventually("the dead letter", Duration::from_secs(30), || {
        let listed = baton(&["dlq", "list", "--admin", &baton_up.admin]);
        listed.contains(nhs).then_some(listed)
    });
    assert!(listed.contains("1 dead letters"), "{listed}");
    assert!(
        listed.contains("V7"),
        "the reason names the encounter: {listed}"
    );
    let letter = listed
        .lines()
        .nth(1)
        .and_then(|line| line.split_whitespace().next())
        .unwrap()
        .to_owned();
    let shown = baton(&["dlq", "show", &letter, "--admin", &baton_up.admin]);
    assert!(shown.contains(&early.event_id), "{shown}");
    assert!(shown.contains("\"medicallyOptimised\""), "decoded: {shown}");

    // The admission arrives; the letter applies once redriven.
    publish(&baton_up.ingest, &[admitted(nhs, "V7", 1_000, "WARD-7")]).await;
    caught_up(&baton_up.admin).await;
    let redriven = baton(&["dlq", "redrive", "--all", "--admin", &baton_up.admin]);
    assert!(redriven.contains("1 selected, 1 redriven"), "{redriven}");
    let token = redriven
        .split("--consistency-token ")
        .nth(1)
        .expect("a token to read the effect with")
        .trim()
        .to_owned();
    let state: serde_json::Value = serde_json::from_str(&baton(&[
        "state",
        "get",
        nhs,
        "--json",
        "--consistency-token",
        &token,
        "--query",
        &baton_up.query,
    ]))
    .unwrap();
    assert_eq!(state["medicallyOptimised"], true, "{state}");
    let version = state["version"].clone();

    // Twice changes nothing: skipped as redriven, and with --again the
    // event is a duplicate.
    let twice = baton(&["dlq", "redrive", "--all", "--admin", &baton_up.admin]);
    assert!(
        twice.contains("0 redriven, 1 skipped as redriven before"),
        "{twice}"
    );
    let again = baton(&[
        "dlq",
        "redrive",
        "--all",
        "--again",
        "--admin",
        &baton_up.admin,
    ]);
    assert!(again.contains("1 redriven"), "{again}");
    caught_up(&baton_up.admin).await;
    let state: serde_json::Value = serde_json::from_str(&baton(&[
        "state",
        "get",
        nhs,
        "--json",
        "--query",
        &baton_up.query,
    ]))
    .unwrap();
    assert_eq!(state["version"], version, "a duplicate changes nothing");
    let listed = baton(&["dlq", "list", "--admin", &baton_up.admin]);
    assert!(listed.contains("[redriven 2x"), "{listed}");

    // A fresh fold meets the letter, the admission and the copies in log
    // order, and agrees.
    let verified = baton(&["verify", "--admin", &baton_up.admin]);
    assert!(verified.contains("EQUAL"), "{verified}");

    // Purge asks first, then hides them; the log keeps them.
    let (ok, asked, _) = try_baton(&["dlq", "purge", "--admin", &baton_up.admin]);
    assert!(
        !ok && asked.contains("1 dead letters would be purged"),
        "{asked}"
    );
    let purged = baton(&["dlq", "purge", "--yes", "--admin", &baton_up.admin]);
    assert!(purged.contains("1 dead letters purged"), "{purged}");
    let listed = baton(&["dlq", "list", "--admin", &baton_up.admin]);
    assert!(listed.contains("No dead letters."), "{listed}");
    baton_up.service.stop();
}
