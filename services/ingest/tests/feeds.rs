//! Real ADT feeds, as UK trusts send them, through the real MLLP listener
//! into the embedded log and folded by the real projector: each scenario
//! of issue 11 ends in the care state a clinician would expect.
//!
//! - A06/A07 move the patient; A04 begins an attendance that A01 continues;
//! - cancellations find what they cancel by time and place, whatever order
//!   the feed delivers them in;
//! - a message sent again with the same times wins over the first;
//! - deaths only as PID-30 says;
//! - A15/A26, A17, A45, A47; anything else refused `AR` naming it;
//! - an `AA` carries the consistency token of its events;
//! - the discharge is kept whole (from where, to where, the code sent).

mod support;

use baton_hl7::{AckCode, ErrorCode};
use baton_ingest::IngestConfig;
use baton_log::{ConsistencyToken, EventLog, Position, topics as log_topics};
use baton_projector::{Projector, ProjectorConfig};
use baton_proto::events::v1::{DischargeDestination, DischargeMethod, PatientClass};
use baton_proto::state::v1::{
    CancelMatch, CareSetting, Encounter, EncounterStatus, MergeKind, MovementKind, PatientCareState,
};
use baton_store::Store;
use support::{Feed, topics};

const NHS: [&str; 6] = [
    "9434765919",
    "9434765927",
    "9434765935",
    "9434765943",
    "9434765951",
    "9434765978",
];

/// A PV1 segment with `fields` set (PV1-1 is always 1).
fn pv1(fields: &[(usize, &str)]) -> String {
    segment("PV1|1", fields)
}

fn segment(start: &str, fields: &[(usize, &str)]) -> String {
    let mut parts: Vec<String> = start.split('|').map(str::to_owned).collect();
    for &(n, value) in fields {
        if parts.len() <= n {
            parts.resize(n + 1, String::new());
        }
        parts[n] = value.to_owned();
    }
    parts.join("|")
}

/// A PID for `nhs`, with extra fields (PID-29, PID-30...).
fn pid(nhs: &str, fields: &[(usize, &str)]) -> String {
    let base = format!("PID|1||H{nhs}^^^RXX^MR~{nhs}^^^NHS^NH||PATIENT^{nhs}||19400101|F");
    segment(&base, fields)
}

/// An ADT message. Times are London local `YYYYMMDDHHMM`: `recorded`
/// goes in EVN-2 (and MSH-7), `occurred` in EVN-6.
fn adt(trigger: &str, control: &str, recorded: &str, occurred: &str, body: &[String]) -> String {
    let mut text = format!(
        "MSH|^~\\&|PAS|RXX|BATON|RXX|{recorded}||ADT^{trigger}|{control}|P|2.4\r\
         EVN|{trigger}|{recorded}||||{occurred}\r"
    );
    for segment in body {
        text.push_str(segment);
        text.push('\r');
    }
    text
}

fn ward(name: &str) -> String {
    format!("{name}^^^RXX01")
}

fn encounter<'a>(state: &'a PatientCareState, encounter_id: &str) -> &'a Encounter {
    state
        .active_encounter
        .iter()
        .chain(&state.past_encounters)
        .find(|e| e.encounter_id == encounter_id)
        .unwrap_or_else(|| panic!("encounter {encounter_id} in {state:?}"))
}

fn wards(encounter: &Encounter) -> Vec<String> {
    encounter
        .location_history
        .iter()
        .map(|stay| stay.location.as_ref().unwrap().point_of_care.clone())
        .collect()
}

fn point_of_care(encounter: &Encounter) -> &str {
    encounter
        .location
        .as_ref()
        .map_or("", |l| l.point_of_care.as_str())
}

fn state(store: &Store, key: &str) -> PatientCareState {
    store
        .get(key)
        .unwrap()
        .unwrap_or_else(|| panic!("no state for {key}"))
}

/// Folds the log again after the projector's own appends (hand-overs of
/// merges, identifier changes and visit moves) so they are applied too.
async fn project_with_hand_overs(feed: &Feed) -> Store {
    let store = feed.project().await;
    let mut projector = Projector::start(
        feed.log.clone(),
        store.clone(),
        ProjectorConfig::default(),
        topics(),
    )
    .await
    .unwrap();
    projector.catch_up().await.unwrap();
    store
}

#[tokio::test]
async fn a06_admits_an_ed_patient_to_the_ward_and_the_stay_goes_on_from_there() {
    let feed = Feed::start(IngestConfig::default()).await;
    let mut pas = feed.connect().await;
    let nhs = NHS[0];
    pas.accept_all(&[
        adt(
            "A04",
            "1",
            "202607150900",
            "202607150855",
            &[
                pid(nhs, &[]),
                pv1(&[(2, "E"), (3, &ward("ED")), (19, "V1")]),
            ],
        ),
        // Admitted to a ward from ED: the new location in PV1-3, ED in PV1-6.
        adt(
            "A06",
            "2",
            "202607151300",
            "202607151300",
            &[
                pid(nhs, &[]),
                pv1(&[(2, "I"), (3, &ward("WARD-3")), (6, &ward("ED")), (19, "V1")]),
            ],
        ),
        adt(
            "A02",
            "3",
            "202607161000",
            "202607161000",
            &[
                pid(nhs, &[]),
                pv1(&[
                    (2, "I"),
                    (3, &ward("WARD-4")),
                    (6, &ward("WARD-3")),
                    (19, "V1"),
                ]),
            ],
        ),
    ])
    .await;
    let store = feed.project().await;
    let state = state(&store, nhs);
    let stay = state.active_encounter.as_ref().expect("in hospital");
    assert!(state.past_encounters.is_empty(), "one encounter: {state:?}");
    assert_eq!(point_of_care(stay), "WARD-4");
    assert_eq!(wards(stay), ["ED", "WARD-3", "WARD-4"]);
    assert_eq!(stay.patient_class(), PatientClass::Inpatient);
    // 13:00 in London in July is 12:00 UTC: admitted when moved to the ward.
    assert_eq!(stay.admitted_at.unwrap().seconds % 86_400, 12 * 3600);
    assert_eq!(state.setting(), CareSetting::Hospital);
    feed.stop().await;
}

#[tokio::test]
async fn a04_begins_an_attendance_that_a01_continues_and_a11_and_a03_end() {
    let feed = Feed::start(IngestConfig::default()).await;
    let mut pas = feed.connect().await;
    let (admitted, registered_only) = (NHS[0], NHS[1]);
    let ed = |nhs| {
        [
            pid(nhs, &[]),
            pv1(&[(2, "E"), (3, &ward("ED")), (19, "V7")]),
        ]
    };
    pas.accept_all(&[
        adt("A04", "1", "202601150900", "202601150900", &ed(admitted)),
        adt(
            "A01",
            "2",
            "202601151200",
            "202601151200",
            &[
                pid(admitted, &[]),
                pv1(&[(2, "I"), (3, &ward("AMU")), (19, "V7")]),
            ],
        ),
        // A registration without a visit number: demographics only.
        adt(
            "A04",
            "3",
            "202601150930",
            "202601150930",
            &[pid(registered_only, &[]), pv1(&[(2, "O")])],
        ),
    ])
    .await;
    let store = feed.project().await;
    let state_now = state(&store, admitted);
    let stay = state_now.active_encounter.as_ref().unwrap();
    assert!(state_now.past_encounters.is_empty(), "no second encounter");
    assert_eq!(wards(stay), ["ED", "AMU"]);
    assert_eq!(stay.patient_class(), PatientClass::Inpatient);
    assert_eq!(state_now.setting_since.unwrap().seconds % 86_400, 9 * 3600);
    let registered = state(&store, registered_only);
    assert!(registered.active_encounter.is_none() && registered.past_encounters.is_empty());
    assert_eq!(
        registered.demographics.as_ref().unwrap().family_name,
        "PATIENT"
    );

    // The admission was entered in error (A11 carrying its time): back in ED.
    pas.accept(&adt(
        "A11",
        "4",
        "202601151400",
        "202601151200",
        &[
            pid(admitted, &[]),
            pv1(&[(2, "I"), (3, &ward("AMU")), (19, "V7")]),
        ],
    ))
    .await;
    let back_in_ed = state(&feed.project().await, admitted);
    let stay = back_in_ed.active_encounter.as_ref().unwrap();
    assert_eq!(point_of_care(stay), "ED");
    assert_eq!(stay.patient_class(), PatientClass::Emergency);
    // Sent home from ED.
    pas.accept(&adt(
        "A03",
        "5",
        "202601151500",
        "202601151500",
        &[
            pid(admitted, &[]),
            pv1(&[(2, "E"), (3, &ward("ED")), (19, "V7"), (37, "19")]),
        ],
    ))
    .await;
    let home = state(&feed.project().await, admitted);
    assert_eq!(home.past_encounters[0].status(), EncounterStatus::Finished);
    assert_eq!(home.setting(), CareSetting::Community);
    feed.stop().await;
}

/// The stay of the issue: admitted to AMU, moved to WARD-7 then WARD-9,
/// the move to WARD-9 entered in error (A12: EVN-6 the move's time, PV1-3
/// where the patient was before, PV1-6 where they were moved in error),
/// discharged, the discharge entered in error (A13: EVN-6 its time), and
/// discharged again. Each message is recorded when sent.
fn corrected_stay(nhs: &str) -> Vec<String> {
    let at = |trigger: &str, control: &str, recorded: &str, occurred: &str, pv1: String| {
        adt(trigger, control, recorded, occurred, &[pid(nhs, &[]), pv1])
    };
    let visit = |fields: &[(usize, &str)]| {
        let mut fields = fields.to_vec();
        fields.extend([(2, "I"), (19, "V1")]);
        pv1(&fields)
    };
    vec![
        at(
            "A01",
            "1",
            "202611020840",
            "202611020840",
            visit(&[(3, &ward("AMU"))]),
        ),
        at(
            "A02",
            "2",
            "202611021400",
            "202611021400",
            visit(&[(3, &ward("WARD-7")), (6, &ward("AMU"))]),
        ),
        at(
            "A02",
            "3",
            "202611031000",
            "202611031000",
            visit(&[(3, &ward("WARD-9")), (6, &ward("WARD-7"))]),
        ),
        at(
            "A12",
            "4",
            "202611031130",
            "202611031000",
            visit(&[(3, &ward("WARD-7")), (6, &ward("WARD-9"))]),
        ),
        at(
            "A03",
            "5",
            "202611041100",
            "202611041100",
            visit(&[(3, &ward("WARD-7")), (36, "1"), (37, "19")]),
        ),
        // Reusing the control id of the discharge, as real feeds do.
        at(
            "A13",
            "5",
            "202611041130",
            "202611041100",
            visit(&[(3, &ward("WARD-7"))]),
        ),
        at(
            "A03",
            "7",
            "202611051100",
            "202611051100",
            visit(&[(3, &ward("WARD-7")), (36, "1"), (37, "54")]),
        ),
    ]
}

#[tokio::test]
async fn cancellations_find_what_they_cancel_in_whatever_order_the_feed_sends() {
    let feed = Feed::start(IngestConfig::default()).await;
    let mut pas = feed.connect().await;
    let orders: [&[usize]; 4] = [
        &[0, 1, 2, 3, 4, 5, 6],
        // Everything backwards: every cancellation before what it cancels.
        &[6, 5, 4, 3, 2, 1, 0],
        // The corrections first, then the rest late and out of order.
        &[3, 5, 0, 4, 6, 2, 1],
        &[0, 2, 4, 6, 1, 3, 5],
    ];
    for (nhs, order) in NHS.iter().zip(orders) {
        let messages = corrected_stay(nhs);
        for &i in order {
            pas.accept(&messages[i]).await;
        }
    }
    let store = feed.project().await;
    let mut outcomes = Vec::new();
    for nhs in &NHS[..orders.len()] {
        let state = state(&store, nhs);
        assert_eq!(state.version, 7, "{nhs}: every message applied");
        let stay = encounter(&state, "V1");
        let rules: Vec<_> = stay
            .cancellations
            .iter()
            .map(|c| (c.kind(), c.matched_by()))
            .collect();
        outcomes.push((
            stay.status(),
            wards(stay),
            stay.discharged_at,
            state.setting(),
            rules,
        ));
    }
    let (status, stays, discharged_at, setting, rules) = &outcomes[0];
    assert_eq!(*status, EncounterStatus::Finished);
    assert_eq!(stays, &["AMU", "WARD-7"], "the move to WARD-9 is reverted");
    // The second discharge stands (11:00 GMT on 5 November).
    assert_eq!(discharged_at.unwrap().seconds % 86_400, 11 * 3600);
    assert_eq!(*setting, CareSetting::CareHome, "discharged to a care home");
    assert_eq!(
        rules,
        &[
            (MovementKind::Transfer, CancelMatch::ClinicalTimeAndLocation),
            (MovementKind::Discharge, CancelMatch::ClinicalTime)
        ]
    );
    for (order, outcome) in orders.iter().zip(&outcomes) {
        assert_eq!(outcome, &outcomes[0], "arrival order {order:?}");
    }
    feed.stop().await;
}

#[tokio::test]
async fn an_admission_sent_again_with_the_same_times_and_a_corrected_ward_wins() {
    let feed = Feed::start(IngestConfig::default()).await;
    let mut pas = feed.connect().await;
    let nhs = NHS[0];
    // Both stamped 10:00:52; the second, a minute later, corrects the ward.
    for (control, ward_name) in [("A1", "WARD-1"), ("A2", "WARD-2")] {
        pas.accept(&adt(
            "A01",
            control,
            "20260715100052",
            "20260715100052",
            &[
                pid(nhs, &[]),
                pv1(&[(2, "I"), (3, &ward(ward_name)), (19, "V1")]),
            ],
        ))
        .await;
    }
    let state = state(&feed.project().await, nhs);
    let stay = state.active_encounter.as_ref().unwrap();
    assert_eq!(point_of_care(stay), "WARD-2", "the later record wins");
    assert_eq!(wards(stay), ["WARD-2"]);
    feed.stop().await;
}

#[tokio::test]
async fn a_death_is_recorded_only_when_pid_30_says_so() {
    let feed = Feed::start(IngestConfig::default()).await;
    let mut pas = feed.connect().await;
    let discharge = |nhs: &str, pid_fields: &[(usize, &str)], control: &str| {
        adt(
            "A03",
            control,
            "202607151200",
            "202607151200",
            &[
                pid(nhs, pid_fields),
                pv1(&[
                    (2, "I"),
                    (3, &ward("WARD-1")),
                    (19, "V1"),
                    (36, "1"),
                    (37, "19"),
                ]),
            ],
        )
    };
    // A stale date of death left in PID-29, PID-30 N: alive, with a warning.
    let (ack, text) = pas
        .send(&discharge(NHS[0], &[(29, "20190101"), (30, "N")], "D1"))
        .await;
    assert_eq!(ack.code, AckCode::Accept, "{text}");
    assert!(text.contains("ERR||PID^1^30|"), "{text}");
    assert!(text.contains("|W||||"), "a warning: {text}");
    pas.accept(&discharge(NHS[1], &[(29, "202607151130"), (30, "Y")], "D2"))
        .await;
    pas.accept(&discharge(NHS[2], &[(30, "Y")], "D3")).await;
    // PID-29 with PID-30 empty, notified by an update: a death.
    pas.accept(&adt(
        "A08",
        "D4",
        "202607151300",
        "202607151300",
        &[pid(NHS[3], &[(29, "202607150400")])],
    ))
    .await;
    let store = feed.project().await;
    let alive = state(&store, NHS[0]);
    assert!(alive.death.is_none());
    assert_eq!(alive.setting(), CareSetting::Community);
    for nhs in &NHS[1..4] {
        let dead = state(&store, nhs);
        assert_eq!(dead.setting(), CareSetting::Deceased, "{nhs}");
    }
    // 11:30 BST is 10:30 UTC.
    let died = state(&store, NHS[1]).death.unwrap().died_at.unwrap();
    assert_eq!(died.seconds % 86_400, 10 * 3600 + 30 * 60);
    feed.stop().await;
}

#[tokio::test]
async fn a15_plans_a_move_a26_calls_it_off_and_a17_swaps_two_patients_at_once() {
    let feed = Feed::start(IngestConfig::default()).await;
    let mut pas = feed.connect().await;
    let (a, b) = (NHS[0], NHS[1]);
    let admit = |nhs: &str, control: &str, ward_name: &str, visit: &str| {
        adt(
            "A01",
            control,
            "202607150900",
            "202607150900",
            &[
                pid(nhs, &[]),
                pv1(&[(2, "I"), (3, &ward(ward_name)), (19, visit)]),
            ],
        )
    };
    pas.accept_all(&[
        admit(a, "1", "WARD-1^^B1", "VA"),
        admit(b, "2", "WARD-2^^B2", "VB"),
    ])
    .await;
    // A is to move to WARD-12 at 14:00 (EVN-3), and has not left WARD-1.
    let planned = format!(
        "MSH|^~\\&|PAS|RXX|BATON|RXX|202607151000||ADT^A15|3|P|2.4\r\
         EVN|A15|202607151000|202607151400\r{}\r{}\r",
        pid(a, &[]),
        pv1(&[
            (2, "I"),
            (3, &ward("WARD-1")),
            (19, "VA"),
            (42, &ward("WARD-12"))
        ]),
    );
    pas.accept(&planned).await;
    let store = feed.project().await;
    let pending = state(&store, a);
    let stay = pending.active_encounter.as_ref().unwrap();
    assert_eq!(point_of_care(stay), "WARD-1", "not moved yet");
    let move_to = stay.planned_transfer.as_ref().expect("a planned move");
    assert_eq!(move_to.to.as_ref().unwrap().point_of_care, "WARD-12");
    assert_eq!(move_to.planned_at.unwrap().seconds % 86_400, 13 * 3600);

    pas.accept(&adt(
        "A26",
        "4",
        "202607151100",
        "202607151100",
        &[
            pid(a, &[]),
            pv1(&[
                (2, "I"),
                (3, &ward("WARD-1")),
                (19, "VA"),
                (42, &ward("WARD-12")),
            ]),
        ],
    ))
    .await;
    // A and B swap beds: one message, two PID/PV1 groups.
    let swap = format!(
        "MSH|^~\\&|PAS|RXX|BATON|RXX|202607151200||ADT^A17|5|P|2.4\r\
         EVN|A17|202607151200\r{}\r{}\r{}\r{}\r",
        pid(a, &[]),
        pv1(&[
            (2, "I"),
            (3, "WARD-2^^B2^RXX01"),
            (6, "WARD-1^^B1^RXX01"),
            (19, "VA")
        ]),
        pid(b, &[]),
        pv1(&[
            (2, "I"),
            (3, "WARD-1^^B1^RXX01"),
            (6, "WARD-2^^B2^RXX01"),
            (19, "VB")
        ]),
    );
    let written = feed.records().await;
    pas.accept(&swap).await;
    assert_eq!(feed.records().await, written + 2, "two moves, one append");
    let store = feed.project().await;
    let moved_a = state(&store, a);
    let moved_b = state(&store, b);
    let stay_a = moved_a.active_encounter.as_ref().unwrap();
    assert_eq!(stay_a.planned_transfer, None, "called off");
    assert_eq!(point_of_care(stay_a), "WARD-2");
    assert_eq!(stay_a.location.as_ref().unwrap().bed, "B2");
    let stay_b = moved_b.active_encounter.as_ref().unwrap();
    assert_eq!(point_of_care(stay_b), "WARD-1");
    assert_eq!(stay_b.location.as_ref().unwrap().bed, "B1");
    feed.stop().await;
}

#[tokio::test]
async fn a45_moves_a_visit_to_the_right_patient_and_a47_changes_an_identifier() {
    let feed = Feed::start(IngestConfig::default()).await;
    let mut pas = feed.connect().await;
    let (wrong, right) = (NHS[0], NHS[1]);
    pas.accept_all(&[
        adt(
            "A01",
            "1",
            "202607150900",
            "202607150900",
            &[
                pid(wrong, &[]),
                pv1(&[(2, "I"), (3, &ward("AMU")), (19, "V9")]),
            ],
        ),
        adt(
            "A02",
            "2",
            "202607151000",
            "202607151000",
            &[
                pid(wrong, &[]),
                pv1(&[(2, "I"), (3, &ward("WARD-7")), (19, "V9")]),
            ],
        ),
        adt(
            "A04",
            "3",
            "202607140900",
            "202607140900",
            &[pid(right, &[])],
        ),
    ])
    .await;
    // V9 was filed under the wrong patient: it is the right one's (MRG-1
    // the wrong patient, MRG-5 the visit there, PV1-19 its new number).
    let move_visit = format!(
        "MSH|^~\\&|PAS|RXX|BATON|RXX|202607151100||ADT^A45^ADT_A45|4|P|2.4\r\
         EVN|A45|202607151100\r{}\rMRG|{wrong}^^^NHS^NH||||V9\r{}\r",
        pid(right, &[]),
        pv1(&[(2, "I"), (19, "V19")]),
    );
    pas.accept(&move_visit).await;
    // A patient known by hospital number only gets a new one.
    let local_only = "PID|1||H100^^^RXX^MR||LOCAL^ONLY||19500101|M";
    pas.accept(&adt(
        "A01",
        "5",
        "202607150900",
        "202607150900",
        &[
            local_only.into(),
            pv1(&[(2, "I"), (3, &ward("WARD-5")), (19, "V5")]),
        ],
    ))
    .await;
    pas.accept(
        "MSH|^~\\&|PAS|RXX|BATON|RXX|202607151200||ADT^A47^ADT_A30|6|P|2.4\r\
         EVN|A47|202607151200\rPID|1||H200^^^RXX^MR||LOCAL^ONLY||19500101|M\rMRG|H100^^^RXX^MR\r",
    )
    .await;

    let store = project_with_hand_overs(&feed).await;
    let left = state(&store, wrong);
    assert!(
        left.active_encounter.is_none() && left.past_encounters.is_empty(),
        "the visit left the wrong record: {left:?}"
    );
    assert_eq!(left.moved_visits[0].to_patient_key, right);
    assert_eq!(left.setting(), CareSetting::Community);
    let arrived = state(&store, right);
    let stay = encounter(&arrived, "V19");
    assert_eq!(wards(stay), ["AMU", "WARD-7"], "with its history");
    assert_eq!(arrived.setting(), CareSetting::Hospital);

    let old = state(&store, "RXX:H100");
    let link = old.merged_into.as_ref().expect("the old key points on");
    assert_eq!(
        (link.patient_key.as_str(), link.kind()),
        ("RXX:H200", MergeKind::IdentifierChanged)
    );
    let renamed = state(&store, "RXX:H200");
    assert_eq!(point_of_care(encounter(&renamed, "V5")), "WARD-5");
    let ids: Vec<_> = renamed
        .identity
        .as_ref()
        .unwrap()
        .local_ids
        .iter()
        .map(|l| l.value.as_str())
        .collect();
    assert_eq!(ids, ["H200"], "the old number is no longer the patient's");

    // Anything Baton does not take is refused, naming it.
    let (ack, text) = pas
        .send(&adt(
            "A09",
            "7",
            "202607151300",
            "202607151300",
            &[pid(right, &[]), pv1(&[(19, "V19")])],
        ))
        .await;
    assert_eq!(ack.code, AckCode::Reject, "{text}");
    assert!(
        text.contains(&format!("{}^", ErrorCode::UnsupportedEventCode.code())),
        "{text}"
    );
    assert!(ack.problems[0].contains("ADT^A09"), "{text}");
    feed.stop().await;
}

#[tokio::test]
async fn an_aa_carries_the_consistency_token_of_the_messages_events() {
    let feed = Feed::start(IngestConfig::default()).await;
    let mut pas = feed.connect().await;
    let (survivor, retired) = (NHS[0], NHS[1]);
    let (ack, text) = pas
        .send(&adt(
            "A01",
            "T1",
            "202607150900",
            "202607150900",
            &[
                pid(survivor, &[]),
                pv1(&[(2, "I"), (3, &ward("AMU")), (19, "V1")]),
            ],
        ))
        .await;
    assert!(text.trim_end().ends_with(&format!(
        "ZBT|{}",
        ack.consistency_token.as_deref().unwrap()
    )));
    let token: ConsistencyToken = ack.consistency_token.unwrap().parse().unwrap();
    let ends = feed.log.end_offsets(log_topics::CARE_EVENTS).await.unwrap();
    let written: Vec<Position> = (0..)
        .zip(&ends)
        .filter(|(_, end)| **end > 0)
        .map(|(partition, end)| Position::new(partition, end - 1))
        .collect();
    assert_eq!(token, ConsistencyToken::from_positions(&written));

    // A merge is written under both patients: the token covers both.
    let (ack, _) = pas
        .send(&format!(
            "MSH|^~\\&|PAS|RXX|BATON|RXX|202607151000||ADT^A40|T2|P|2.4\r\
             EVN|A40|202607151000\r{}\rMRG|{retired}^^^NHS^NH\r",
            pid(survivor, &[])
        ))
        .await;
    let token: ConsistencyToken = ack.consistency_token.unwrap().parse().unwrap();
    let partitions: Vec<u32> = token.last_written().keys().copied().collect();
    let expected: std::collections::BTreeSet<u32> = [survivor, retired]
        .iter()
        .map(|key| baton_log::partition_for_key(key.as_bytes(), support::PARTITIONS))
        .collect();
    assert_eq!(partitions, expected.into_iter().collect::<Vec<_>>());

    // A refusal carries none.
    let (ack, _) = pas.send("not hl7").await;
    assert_eq!(ack.consistency_token, None);
    feed.stop().await;
}

#[tokio::test]
async fn a_discharge_is_kept_whole_from_where_to_where_and_the_code_sent() {
    let feed = Feed::start(IngestConfig::default()).await;
    let mut pas = feed.connect().await;
    let nhs = NHS[0];
    pas.accept_all(&[
        adt(
            "A01",
            "1",
            "202607150900",
            "202607150900",
            &[
                pid(nhs, &[]),
                pv1(&[(2, "I"), (3, &ward("WARD-7")), (19, "V1")]),
            ],
        ),
        adt(
            "A03",
            "2",
            "202607171100",
            "202607171100",
            &[
                pid(nhs, &[]),
                pv1(&[
                    (2, "I"),
                    (3, &ward("WARD-7")),
                    (19, "V1"),
                    (36, "1"),
                    (37, "54"),
                ]),
            ],
        ),
    ])
    .await;
    let state = state(&feed.project().await, nhs);
    let discharge = state.last_discharge.as_ref().unwrap();
    assert_eq!(discharge.destination(), DischargeDestination::CareHome);
    assert_eq!(discharge.destination_code, "54", "PV1-37 as sent");
    assert_eq!(discharge.method(), DischargeMethod::ClinicalAdvice);
    assert_eq!(
        discharge.location.as_ref().unwrap().point_of_care,
        "WARD-7",
        "where from"
    );
    assert_eq!(state.setting(), CareSetting::CareHome);
    feed.stop().await;
}
