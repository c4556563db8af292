//! What a virtual ward, a frailty service and a discharge team ask of
//! Baton, end to end on the embedded log: events go in through the ingest
//! API, the projector folds them, the timeline indexer files them, and the
//! answers come out of the query API over gRPC, with the query's clock set
//! by the test.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use baton_care::fixtures::{
    self, admitted, care_plan_changed, discharge_cancelled, discharged, episode_ended,
    expected_discharge_date_set, frailty_assessed, medically_optimised, patients_merged,
    recorded_at, referral_accepted, referral_requested, registered, transfer_cancelled,
    transferred, virtual_ward_started,
};
use baton_ingest::{Ingest, IngestConfig};
use baton_log::embedded::EmbeddedLog;
use baton_log::topics::Topics;
use baton_projector::{Projector, ProjectorConfig};
use baton_proto::events::v1::{CareEvent, Date, DischargeDestination, EpisodeEndReason, Pathway};
use baton_proto::ingest::v1::PublishRequest;
use baton_proto::ingest::v1::care_event_ingest_client::CareEventIngestClient;
use baton_proto::query::v1::care_state_query_client::CareStateQueryClient;
use baton_proto::query::v1::patient_ref::Ref;
use baton_proto::query::v1::{
    CohortChange, CohortFilter, DateRange, GetCareStateAsOfRequest, GetCareStateRequest,
    GetTimelineRequest, ListCohortRequest, MedicallyOptimisedCriterion, PatientRef,
    ReferralCriterion, TimeAxis, WatchCohortRequest, WatchCohortResponse,
};
use baton_proto::state::v1::{CancelMatch, CareSetting, PatientCareState, ReferralStatus};
use baton_query::{QueryConfig, QueryService, TimelineIndexer};
use baton_runtime::FixedClock;
use baton_store::Store;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;
/// 2026-03-02T00:00:00Z, a Monday.
const T0: i64 = 1_772_409_600;

/// Ingest, projector, timeline indexer and query on one embedded log.
struct Backbone {
    ingest: CareEventIngestClient<Channel>,
    query: CareStateQueryClient<Channel>,
    query_url: String,
    clock: Arc<FixedClock>,
    stop: CancellationToken,
}

impl Drop for Backbone {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(config: QueryConfig, now: i64) -> Backbone {
    let log = Arc::new(EmbeddedLog::temporary().unwrap());
    let topics = Topics {
        partitions: 4,
        ..Topics::default()
    };
    let store = Store::temporary().unwrap();
    let clock = Arc::new(FixedClock::at_unix(now as u64));
    let stop = CancellationToken::new();

    let ingest = Ingest::start(log.clone(), IngestConfig::default(), &topics)
        .await
        .unwrap();
    let ingest_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ingest_address = ingest_listener.local_addr().unwrap();
    tokio::spawn(baton_ingest::run(
        ingest,
        ingest_listener,
        stop.clone().cancelled_owned(),
    ));

    let mut projector = Projector::start(
        log.clone(),
        store.clone(),
        ProjectorConfig {
            publish_states: false,
            poll_wait_ms: 5,
            ..ProjectorConfig::default()
        },
        topics.clone(),
    )
    .await
    .unwrap();
    let stopped = stop.clone();
    tokio::spawn(async move { projector.run(stopped.cancelled_owned()).await });

    let mut timeline = TimelineIndexer::start(log.clone(), store.clone(), &topics)
        .await
        .unwrap();
    let stopped = stop.clone();
    tokio::spawn(async move { timeline.run(stopped.cancelled_owned()).await });

    let query = QueryService::new(store, config, &topics).with_clock(clock.clone());
    let query_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let query_address = query_listener.local_addr().unwrap();
    tokio::spawn(baton_query::run(
        query,
        query_listener,
        stop.clone().cancelled_owned(),
    ));

    Backbone {
        ingest: CareEventIngestClient::connect(format!("http://{ingest_address}"))
            .await
            .unwrap(),
        query: CareStateQueryClient::connect(format!("http://{query_address}"))
            .await
            .unwrap(),
        query_url: format!("http://{query_address}"),
        clock,
        stop,
    }
}

impl Backbone {
    /// Publishes `events` and waits until the projection and the timeline
    /// include them; returns the consistency token.
    async fn publish(&mut self, events: Vec<CareEvent>) -> String {
        let published = self
            .ingest
            .publish(PublishRequest {
                events,
                validate_only: false,
            })
            .await
            .unwrap()
            .into_inner();
        let first = &published.events[0].patient_key;
        self.timeline(first, &published.consistency_token)
            .await
            .unwrap();
        published.consistency_token
    }

    /// The timeline request doubles as a wait for both the projection and
    /// the timeline indexer.
    async fn timeline(
        &mut self,
        patient: &str,
        token: &str,
    ) -> Result<baton_proto::query::v1::GetTimelineResponse, tonic::Status> {
        self.query
            .get_timeline(GetTimelineRequest {
                patient: Some(key(patient)),
                consistency_token: token.to_owned(),
                ..Default::default()
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn state(&mut self, patient: &str) -> PatientCareState {
        self.query
            .get_care_state(GetCareStateRequest {
                patient: Some(key(patient)),
                consistency_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .state
            .unwrap()
    }

    /// Every member of the cohort, paging 2 at a time.
    async fn cohort(&mut self, filter: CohortFilter) -> Vec<PatientCareState> {
        let mut members = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .query
                .list_cohort(ListCohortRequest {
                    filter: Some(filter.clone()),
                    page_size: 2,
                    page_token,
                })
                .await
                .unwrap()
                .into_inner();
            members.extend(page.states);
            page_token = page.next_page_token;
            if page_token.is_empty() {
                return members;
            }
        }
    }

    async fn keys(&mut self, filter: CohortFilter) -> Vec<String> {
        let mut keys: Vec<String> = self
            .cohort(filter)
            .await
            .into_iter()
            .map(|s| s.patient_key)
            .collect();
        keys.sort();
        keys
    }

    async fn watch(&mut self, filter: CohortFilter) -> Watch {
        Self::watch_on(&mut self.query, filter).await
    }

    /// A watch through `client`, read up to its SYNCED.
    async fn watch_on(client: &mut CareStateQueryClient<Channel>, filter: CohortFilter) -> Watch {
        let stream = client
            .watch_cohort(WatchCohortRequest {
                filter: Some(filter),
            })
            .await
            .unwrap()
            .into_inner();
        let mut watch = Watch { stream };
        let mut members = Vec::new();
        loop {
            let message = watch.next().await;
            match message.change() {
                CohortChange::Member => members.push(message.patient_key),
                CohortChange::Synced => break,
                other => panic!("{other:?} before SYNCED"),
            }
        }
        watch
    }
}

struct Watch {
    stream: Streaming<WatchCohortResponse>,
}

impl Watch {
    async fn next(&mut self) -> WatchCohortResponse {
        tokio::time::timeout(Duration::from_secs(10), self.stream.message())
            .await
            .expect("a watch message within 10 s")
            .expect("the watch is still open")
            .expect("the watch has not ended")
    }

    /// Reads until `patient` has had `change` with a state satisfying
    /// `state_is`; returns that state.
    async fn until(
        &mut self,
        patient: &str,
        change: CohortChange,
        state_is: impl Fn(&PatientCareState) -> bool,
    ) -> PatientCareState {
        loop {
            let message = self.next().await;
            if message.patient_key == patient && message.change() == change {
                let state = message.state.unwrap();
                if state_is(&state) {
                    return state;
                }
            }
        }
    }
}

fn key(patient: &str) -> PatientRef {
    PatientRef {
        r#ref: Some(Ref::PatientKey(patient.to_owned())),
    }
}

fn date(year: i32, month: i32, day: i32) -> Date {
    Date { year, month, day }
}

/// NHS numbers that pass the modulus-11 check.
const PATIENTS: [&str; 8] = [
    "9434765919",
    "4010232137",
    "9990000018",
    "9990000026",
    "9990000034",
    "9990000042",
    "9990000050",
    "9990000069",
];

fn into_virtual_ward(nhs: &str, at: i64, virtual_ward: &str) -> Vec<CareEvent> {
    vec![
        admitted(nhs, "V1", at, "AMU"),
        discharged(nhs, "V1", at + DAY, DischargeDestination::VirtualWard),
        virtual_ward_started(nhs, "VW-1", at + DAY + HOUR, virtual_ward),
    ]
}

#[tokio::test]
async fn a_virtual_ward_sees_who_is_on_it_since_when_on_which_pathway_and_plan_live() {
    let mut baton = start(QueryConfig::default(), T0 + 10 * DAY).await;
    let [a, b, c, ..] = PATIENTS;
    let ward = CohortFilter {
        virtual_ward: "VW-FRAIL-RXX".into(),
        ..Default::default()
    };
    let mut board = baton.watch(ward.clone()).await;

    let mut events = into_virtual_ward(a, T0, "VW-FRAIL-RXX");
    events.push(care_plan_changed(a, "CP-A", 1, T0 + DAY + 2 * HOUR));
    baton.publish(events).await;
    board.until(a, CohortChange::Joined, |_| true).await;
    baton
        .publish(into_virtual_ward(b, T0 + DAY, "VW-FRAIL-RXX"))
        .await;
    board.until(b, CohortChange::Joined, |_| true).await;
    // Another ward's patient is not on this board.
    baton.publish(into_virtual_ward(c, T0, "VW-RESP-RXX")).await;

    // Who is on my virtual ward now, since when, on which pathway, with
    // which care plan version.
    let members = baton.cohort(ward.clone()).await;
    let mut on_ward: Vec<_> = members
        .iter()
        .map(|state| {
            let episode = state.episodes.last().unwrap();
            (
                state.patient_key.as_str(),
                episode.started_at.as_ref().unwrap().seconds,
                episode.pathway(),
                state.care_plan.as_ref().map(|plan| plan.version),
            )
        })
        .collect();
    on_ward.sort();
    assert_eq!(
        on_ward,
        vec![
            (b, T0 + 2 * DAY + HOUR, Pathway::Frailty, None),
            (a, T0 + DAY + HOUR, Pathway::Frailty, Some(1)),
        ]
    );
    let by_pathway = baton
        .keys(CohortFilter {
            setting: CareSetting::VirtualWard as i32,
            pathway: Pathway::Frailty as i32,
            ..Default::default()
        })
        .await;
    let mut expected = vec![a.to_owned(), b.to_owned(), c.to_owned()];
    expected.sort();
    assert_eq!(by_pathway, expected);

    // The board follows a plan change, a readmission and a new patient.
    baton
        .publish(vec![care_plan_changed(b, "CP-B", 1, T0 + 3 * DAY)])
        .await;
    let changed = board
        .until(b, CohortChange::Changed, |s| s.care_plan.is_some())
        .await;
    assert_eq!(changed.care_plan.unwrap().version, 1);

    baton
        .publish(vec![
            admitted(a, "V2", T0 + 4 * DAY, "AMU"),
            episode_ended(a, "VW-1", T0 + 4 * DAY, EpisodeEndReason::Readmitted),
        ])
        .await;
    let left = board.until(a, CohortChange::Left, |_| true).await;
    assert_eq!(left.setting(), CareSetting::Hospital, "readmitted");

    let d = PATIENTS[3];
    baton
        .publish(into_virtual_ward(d, T0 + 4 * DAY, "VW-FRAIL-RXX"))
        .await;
    board.until(d, CohortChange::Joined, |_| true).await;
    let mut now_on_ward = vec![b.to_owned(), d.to_owned()];
    now_on_ward.sort();
    assert_eq!(baton.keys(ward).await, now_on_ward);
}

#[tokio::test]
async fn a_frailty_service_finds_frail_inpatients_its_referrals_and_hears_of_admissions() {
    // Now: two days after T0.
    let mut baton = start(QueryConfig::default(), T0 + 2 * DAY).await;
    let [old, young, unknown_age, mildly_frail, at_home, ..] = PATIENTS;
    let mut events = Vec::new();
    for (nhs, born, score, admit) in [
        (old, Some(date(1950, 5, 1)), 7, true),
        (young, Some(date(1990, 5, 1)), 7, true),
        (unknown_age, None, 6, true),
        (mildly_frail, Some(date(1940, 1, 1)), 5, true),
        (at_home, Some(date(1945, 1, 1)), 8, false),
    ] {
        events.push(registered(nhs, T0 - 30 * DAY, "Frail", born));
        events.push(frailty_assessed(nhs, T0 - DAY, score));
        if admit {
            events.push(admitted(nhs, "V1", T0, "WARD-3"));
        }
    }
    // Referrals to the frailty service: one overdue, one accepted, one open.
    events.push(referral_requested(
        at_home,
        "R1",
        "FRAILTY-RXX",
        T0,
        T0 + DAY,
    ));
    events.push(referral_requested(
        mildly_frail,
        "R2",
        "FRAILTY-RXX",
        T0,
        T0 + DAY,
    ));
    events.push(referral_accepted(mildly_frail, "R2", T0 + HOUR));
    events.push(referral_requested(
        old,
        "R3",
        "FRAILTY-RXX",
        T0,
        T0 + 10 * DAY,
    ));
    events.push(referral_requested(young, "R4", "FALLS-RXX", T0, T0 + DAY));
    baton.publish(events).await;

    let sorted = |mut keys: Vec<&str>| {
        keys.sort();
        keys.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    // Who is in hospital now with CFS >= 6, aged 65 or over where known.
    let frail_inpatients = baton
        .keys(CohortFilter {
            setting: CareSetting::Hospital as i32,
            min_frailty_score: 6,
            min_age_years: 65,
            ..Default::default()
        })
        .await;
    assert_eq!(frail_inpatients, sorted(vec![old, unknown_age]));

    // Which of my referrals are open, accepted or overdue.
    let referrals = |statuses: Vec<ReferralStatus>, overdue: bool| CohortFilter {
        referral: Some(ReferralCriterion {
            service: "FRAILTY-RXX".into(),
            statuses: statuses.into_iter().map(|s| s as i32).collect(),
            overdue,
        }),
        ..Default::default()
    };
    assert_eq!(
        baton.keys(referrals(vec![], false)).await,
        sorted(vec![old, mildly_frail, at_home])
    );
    assert_eq!(
        baton
            .keys(referrals(vec![ReferralStatus::Accepted], false))
            .await,
        sorted(vec![mildly_frail])
    );
    assert_eq!(
        baton.keys(referrals(vec![], true)).await,
        sorted(vec![at_home])
    );

    // When one of my patients is admitted, I want to know at once.
    let mut admissions = baton
        .watch(CohortFilter {
            setting: CareSetting::Hospital as i32,
            ..referrals(vec![], false)
        })
        .await;
    baton
        .publish(vec![admitted(at_home, "V7", T0 + 2 * DAY, "AMU")])
        .await;
    let joined = admissions
        .until(at_home, CohortChange::Joined, |_| true)
        .await;
    assert_eq!(
        joined
            .active_encounter
            .unwrap()
            .location
            .unwrap()
            .point_of_care,
        "AMU"
    );
}

#[tokio::test]
async fn a_discharge_team_sees_delayed_discharges_who_goes_home_soon_and_where_they_went() {
    let now = T0 + 2 * DAY + 10 * HOUR;
    let mut baton = start(
        QueryConfig {
            watch_recheck_ms: 100,
            ..QueryConfig::default()
        },
        now,
    )
    .await;
    let [
        long_wait,
        short_wait,
        due_today,
        due_tomorrow,
        to_care_home,
        to_virtual_ward,
        home_last_week,
        ..,
    ] = PATIENTS;
    let mut events = vec![
        admitted(long_wait, "V1", T0 - 6 * DAY, "WARD-1"),
        medically_optimised(long_wait, "V1", T0 - 3 * DAY),
        admitted(short_wait, "V1", T0 - DAY, "WARD-2"),
        medically_optimised(short_wait, "V1", T0 + DAY),
        admitted(due_today, "V1", T0, "WARD-1"),
        expected_discharge_date_set(due_today, "V1", T0, date(2026, 3, 4)),
        admitted(due_tomorrow, "V1", T0, "WARD-2"),
        expected_discharge_date_set(due_tomorrow, "V1", T0, date(2026, 3, 5)),
    ];
    for (nhs, destination, day) in [
        (to_care_home, DischargeDestination::CareHome, 1),
        (to_virtual_ward, DischargeDestination::VirtualWard, 2),
        (home_last_week, DischargeDestination::Home, -5),
    ] {
        events.push(admitted(nhs, "V1", T0 - 10 * DAY, "WARD-4"));
        events.push(discharged(nhs, "V1", T0 + day * DAY + HOUR, destination));
    }
    baton.publish(events).await;
    let sorted = |mut keys: Vec<&str>| {
        keys.sort();
        keys.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };

    // Medically optimised but still in a bed, for how long, on which ward.
    let delayed = |min_days| CohortFilter {
        setting: CareSetting::Hospital as i32,
        medically_optimised: Some(MedicallyOptimisedCriterion { min_days }),
        ..Default::default()
    };
    let waiting = baton.cohort(delayed(2)).await;
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].patient_key, long_wait);
    assert_eq!(
        waiting[0]
            .medically_optimised_since
            .as_ref()
            .unwrap()
            .seconds,
        T0 - 3 * DAY
    );
    assert_eq!(
        waiting[0]
            .active_encounter
            .as_ref()
            .unwrap()
            .location
            .as_ref()
            .unwrap()
            .point_of_care,
        "WARD-1"
    );
    assert_eq!(
        baton.keys(delayed(0)).await,
        sorted(vec![long_wait, short_wait])
    );

    // Who is expected home today or tomorrow (today is 2026-03-04).
    let expected_home = baton
        .keys(CohortFilter {
            expected_discharge: Some(DateRange {
                from: Some(date(2026, 3, 4)),
                to: Some(date(2026, 3, 5)),
            }),
            ..Default::default()
        })
        .await;
    assert_eq!(expected_home, sorted(vec![due_today, due_tomorrow]));

    // Where each was discharged to, over the last two days.
    let recent = baton
        .cohort(CohortFilter {
            discharged: Some(DateRange {
                from: Some(date(2026, 3, 3)),
                to: None,
            }),
            ..Default::default()
        })
        .await;
    let mut destinations: Vec<_> = recent
        .iter()
        .map(|s| {
            (
                s.patient_key.clone(),
                s.last_discharge.as_ref().unwrap().destination(),
            )
        })
        .collect();
    destinations.sort();
    let mut expected = vec![
        (to_care_home.to_owned(), DischargeDestination::CareHome),
        (
            to_virtual_ward.to_owned(),
            DischargeDestination::VirtualWard,
        ),
    ];
    expected.sort();
    assert_eq!(destinations, expected);

    // A delayed-discharge board: the short wait joins when its second day
    // passes, with no event, because time alone changes this cohort.
    let mut board = baton.watch(delayed(2)).await;
    baton
        .clock
        .set(UNIX_EPOCH + Duration::from_secs((T0 + 3 * DAY + HOUR) as u64));
    board
        .until(short_wait, CohortChange::Joined, |_| true)
        .await;
    // A discharge takes the long wait off the board.
    baton
        .publish(vec![discharged(
            long_wait,
            "V1",
            T0 + 3 * DAY,
            DischargeDestination::Home,
        )])
        .await;
    let left = board.until(long_wait, CohortChange::Left, |_| true).await;
    assert_eq!(left.setting(), CareSetting::Community);
}

#[tokio::test]
async fn a_timeline_shows_corrections_as_corrections_and_the_past_can_be_asked_both_ways() {
    let mut baton = start(QueryConfig::default(), T0 + 10 * DAY).await;
    let nhs = PATIENTS[0];
    let to_ward_7 = transferred(nhs, "V1", T0 + HOUR, "WARD-7");
    // Three days later the ward clerk corrects it: the move to WARD-7 was
    // entered in error, the patient went to ELDERLY-CARE.
    let correction = recorded_at(
        transfer_cancelled(nhs, "V1", T0 + HOUR, &to_ward_7.event_id),
        T0 + 3 * DAY,
    );
    let actual_move = recorded_at(
        transferred(nhs, "V1", T0 + HOUR + 60, "ELDERLY-CARE"),
        T0 + 3 * DAY,
    );
    baton
        .publish(vec![
            admitted(nhs, "V1", T0, "AMU"),
            to_ward_7.clone(),
            frailty_assessed(nhs, T0 + 2 * HOUR, 6),
        ])
        .await;
    let token = baton
        .publish(vec![correction.clone(), actual_move.clone()])
        .await;

    let timeline = baton.timeline(nhs, &token).await.unwrap();
    let lines: Vec<_> = timeline
        .entries
        .iter()
        .map(|entry| {
            let event = entry.event.as_ref().unwrap();
            (
                baton_care::payload_name(event.payload.as_ref().unwrap()),
                entry.cancelled_by_event_id.clone(),
                entry.cancels_event_id.clone(),
                entry.late,
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            ("admitted", String::new(), String::new(), false),
            (
                "transferred",
                correction.event_id.clone(),
                String::new(),
                false
            ),
            (
                "transfer_cancelled",
                String::new(),
                to_ward_7.event_id.clone(),
                true
            ),
            ("transferred", String::new(), String::new(), true),
            ("frailty_assessed", String::new(), String::new(), false),
        ]
    );
    let window = baton
        .query
        .get_timeline(GetTimelineRequest {
            patient: Some(key(nhs)),
            from: Some(fixtures::timestamp(T0 + HOUR)),
            to: Some(fixtures::timestamp(T0 + HOUR + 60)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(window.entries.len(), 3, "{:?}", window.entries);

    let ward_at = |state: &PatientCareState| {
        state
            .active_encounter
            .as_ref()
            .unwrap()
            .location
            .as_ref()
            .unwrap()
            .point_of_care
            .clone()
    };
    let as_of = |time: i64, axis: TimeAxis| GetCareStateAsOfRequest {
        patient: Some(key(nhs)),
        time: Some(fixtures::timestamp(time)),
        axis: axis as i32,
        consistency_token: String::new(),
    };
    // What was true at 90 minutes, as known now: ELDERLY-CARE.
    let then = baton
        .query
        .get_care_state_as_of(as_of(T0 + 90 * 60, TimeAxis::Clinical))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ward_at(then.state.as_ref().unwrap()), "ELDERLY-CARE");
    assert!(then.state.unwrap().frailty.is_none(), "assessed later");
    // What the records said a day later: WARD-7, before the correction.
    let known = baton
        .query
        .get_care_state_as_of(as_of(T0 + DAY, TimeAxis::Recorded))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ward_at(known.state.as_ref().unwrap()), "WARD-7");
    assert_eq!(known.events_applied, 3);
    // Before anything happened: nothing.
    let before = baton
        .query
        .get_care_state_as_of(as_of(T0 - DAY, TimeAxis::Clinical))
        .await
        .unwrap()
        .into_inner();
    assert!(before.state.is_none());
    // Now, both ways, equals the current state's picture.
    assert_eq!(ward_at(&baton.state(nhs).await), "ELDERLY-CARE");

    let refused = baton
        .query
        .get_care_state_as_of(GetCareStateAsOfRequest {
            axis: 0,
            ..as_of(T0, TimeAxis::Clinical)
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("axis"), "{refused:?}");
}

#[tokio::test]
async fn a_timeline_says_how_each_correction_found_what_it_cancels_and_ties_replay_alike() {
    let mut baton = start(QueryConfig::default(), T0 + 10 * DAY).await;
    let nhs = PATIENTS[1];
    // Two admissions stamped the same: the second (later in the log) corrects the ward.
    let first = admitted(nhs, "V1", T0, "WARD-1");
    let corrected = admitted(nhs, "V1", T0, "WARD-2");
    let discharge = discharged(nhs, "V1", T0 + DAY, DischargeDestination::Home);
    // The A13 as feeds send it: no event id, the discharge's clinical time.
    let cancel = recorded_at(
        discharge_cancelled(nhs, "V1", T0 + DAY, ""),
        T0 + DAY + HOUR,
    );
    // An A12 for a move that has not arrived: it waits.
    let waiting = recorded_at(
        transfer_cancelled(nhs, "V1", T0 + 2 * DAY, ""),
        T0 + 2 * DAY,
    );
    baton.publish(vec![first, corrected]).await;
    let token = baton
        .publish(vec![discharge.clone(), cancel.clone(), waiting.clone()])
        .await;
    let timeline = baton.timeline(nhs, &token).await.unwrap();
    let corrections: Vec<_> = timeline
        .entries
        .iter()
        .filter(|entry| entry.cancel_match() != CancelMatch::Unspecified)
        .map(|entry| {
            (
                entry.event.as_ref().unwrap().event_id.clone(),
                entry.cancels_event_id.clone(),
                entry.cancel_match(),
            )
        })
        .collect();
    assert_eq!(
        corrections,
        vec![
            (
                cancel.event_id.clone(),
                discharge.event_id.clone(),
                CancelMatch::ClinicalTime
            ),
            (
                waiting.event_id.clone(),
                String::new(),
                CancelMatch::Pending
            ),
        ]
    );
    // As of then, on either axis, the tie resolves as the projector did.
    for axis in [TimeAxis::Clinical, TimeAxis::Recorded] {
        let then = baton
            .query
            .get_care_state_as_of(GetCareStateAsOfRequest {
                patient: Some(key(nhs)),
                time: Some(fixtures::timestamp(T0 + HOUR)),
                axis: axis as i32,
                consistency_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .state
            .unwrap();
        let stay = then.active_encounter.as_ref().unwrap();
        assert_eq!(
            stay.location.as_ref().unwrap().point_of_care,
            "WARD-2",
            "{axis:?}"
        );
    }
    let now = baton.state(nhs).await;
    assert_eq!(
        now.setting(),
        CareSetting::Hospital,
        "the discharge was cancelled"
    );
}

#[tokio::test]
async fn a_merged_record_s_events_stay_on_the_survivor_s_timeline() {
    let mut baton = start(QueryConfig::default(), T0 + 10 * DAY).await;
    let [survivor, retired, ..] = PATIENTS;
    baton
        .publish(vec![
            admitted(retired, "R1", T0, "AMU"),
            admitted(survivor, "S1", T0 + DAY, "WARD-2"),
        ])
        .await;
    let token = baton
        .publish(vec![patients_merged(survivor, retired, T0 + 2 * DAY)])
        .await;
    // The hand-over is appended by the projector: wait for it.
    let mut timeline = baton.timeline(survivor, &token).await.unwrap();
    for _ in 0..100 {
        if timeline
            .entries
            .iter()
            .any(|entry| entry.merged_record_key == retired)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        timeline = baton.timeline(survivor, "").await.unwrap();
    }
    let from_retired: Vec<_> = timeline
        .entries
        .iter()
        .filter(|entry| entry.merged_record_key == retired)
        .map(|entry| entry.event.as_ref().unwrap().encounter_id.clone())
        .collect();
    assert_eq!(from_retired, vec!["R1".to_owned()], "{timeline:?}");
    let merges = timeline
        .entries
        .iter()
        .filter(|entry| {
            matches!(
                entry.event.as_ref().unwrap().payload,
                Some(baton_proto::events::v1::care_event::Payload::PatientsMerged(_))
            )
        })
        .count();
    assert_eq!(merges, 1, "the merge, filed under both keys, shows once");
}

#[tokio::test]
async fn a_watch_that_cannot_keep_up_is_dropped_and_the_projection_goes_on() {
    let mut baton = start(
        QueryConfig {
            watch_buffer_messages: 8,
            watch_slow_client_ms: 200,
            ..QueryConfig::default()
        },
        T0 + DAY,
    )
    .await;
    // The stalled client on a connection of its own with HTTP/2's smallest
    // windows, so the transport cannot absorb what it does not read.
    let channel = Channel::from_shared(baton.query_url.clone())
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut stalled = Backbone::watch_on(
        &mut CareStateQueryClient::new(channel),
        CohortFilter {
            setting: CareSetting::Hospital as i32,
            ..Default::default()
        },
    )
    .await;
    // 2,500 admissions, more than the transport buffers between the
    // service and the client hold; the watcher reads nothing meanwhile.
    let mut last = String::new();
    for round in 0..25 {
        let events: Vec<CareEvent> = (0..100)
            .map(|n| {
                let local = format!("RXX:H{round:02}{n:03}");
                last = local.clone();
                let mut event = admitted("9434765919", "V1", T0, "AMU");
                event.patient = Some(baton_proto::events::v1::PatientIdentity {
                    local_ids: vec![baton_proto::events::v1::LocalIdentifier {
                        authority: "RXX".into(),
                        value: local.trim_start_matches("RXX:").to_owned(),
                    }],
                    ..Default::default()
                });
                event.event_id = uuid_for(&local);
                event
            })
            .collect();
        baton.publish(events).await;
    }
    // The projection never waited for the watcher.
    assert_eq!(baton.state(&last).await.setting(), CareSetting::Hospital);
    // The watcher is told why it was dropped, after what it had been sent.
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), stalled.stream.message())
            .await
            .expect("the watch answers")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the watch ended without saying why"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::ResourceExhausted, "{ended:?}");
    assert!(ended.message().contains("behind for 200 ms"), "{ended:?}");
}

fn uuid_for(text: &str) -> String {
    uuid::Uuid::new_v5(&baton_care::BATON_NAMESPACE, text.as_bytes()).to_string()
}
