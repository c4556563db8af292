//! The query API over gRPC on a real port, reading a sled store.

use std::time::Duration;

use baton_care::fixtures::{admitted, discharged, state_of, virtual_ward_started};
use baton_proto::events::v1::{DischargeDestination, LocalIdentifier};
use baton_proto::query::v1::care_state_query_client::CareStateQueryClient;
use baton_proto::query::v1::patient_ref::Ref;
use baton_proto::query::v1::{CohortFilter, GetCareStateRequest, ListCohortRequest, PatientRef};
use baton_proto::state::v1::CareSetting;
use baton_query::{QueryConfig, QueryService};
use baton_store::{Commit, Store};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

const TOPIC: &str = baton_log::topics::CARE_EVENTS;

async fn start(store: Store) -> CareStateQueryClient<Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let config = QueryConfig {
        max_consistency_wait_ms: 300,
        ..QueryConfig::default()
    };
    tokio::spawn(baton_query::run(
        QueryService::new(store, config, &baton_log::topics::Topics::default()),
        listener,
        std::future::pending(),
    ));
    CareStateQueryClient::connect(format!("http://{address}"))
        .await
        .unwrap()
}

fn by(reference: Ref) -> GetCareStateRequest {
    GetCareStateRequest {
        patient: Some(PatientRef {
            r#ref: Some(reference),
        }),
        consistency_token: String::new(),
    }
}

#[tokio::test]
async fn a_patient_is_found_by_any_identifier() {
    let store = Store::temporary().unwrap();
    store
        .commit(&Commit::new(TOPIC).with_state(state_of(vec![admitted("H77", "V1", 100, "AMU")])))
        .unwrap();
    store
        .commit(&Commit::new(TOPIC).with_state(state_of(vec![admitted(
            "9434765919",
            "V2",
            100,
            "AMU",
        )])))
        .unwrap();
    let mut client = start(store).await;

    let found = client
        .get_care_state(by(Ref::NhsNumber("9434765919".into())))
        .await
        .unwrap();
    assert_eq!(found.into_inner().state.unwrap().patient_key, "9434765919");
    let local = Ref::LocalId(LocalIdentifier {
        authority: "RXX".into(),
        value: "H77".into(),
    });
    let found = client.get_care_state(by(local)).await.unwrap();
    assert_eq!(
        found.into_inner().state.unwrap().setting(),
        CareSetting::Hospital
    );

    let missing = client
        .get_care_state(by(Ref::NhsNumber("4010232137".into())))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let bad = client
        .get_care_state(by(Ref::NhsNumber("4010232138".into())))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(
        bad.get_details_bad_request().unwrap().field_violations[0].field,
        "patient.nhs_number"
    );
    let none = client
        .get_care_state(GetCareStateRequest::default())
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_consistency_token_waits_for_the_projection() {
    let store = Store::temporary().unwrap();
    let state = state_of(vec![admitted("9434765919", "V1", 100, "AMU")]);
    store
        .commit(&Commit::new(TOPIC).with_state(state).with_position(0, 5))
        .unwrap();
    let mut client = start(store.clone()).await;
    let request = |token: &str| GetCareStateRequest {
        consistency_token: token.into(),
        ..by(Ref::NhsNumber("9434765919".into()))
    };

    // Offset 4 is applied (next offset 5): answered at once.
    client.get_care_state(request("v1:0=4")).await.unwrap();
    // Offset 9 is not: refused after the service's longest wait, naming
    // what is missing.
    let status = client.get_care_state(request("v1:0=9")).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status
            .message()
            .contains("partition 0 applied below offset 5, the token needs offset 9"),
        "{status:?}"
    );
    // With a call deadline shorter than that wait: DEADLINE_EXCEEDED from
    // the service, in time for the client to read it.
    let mut short = tonic::Request::new(request("v1:0=9"));
    short.set_timeout(Duration::from_millis(100));
    let status = client.get_care_state(short).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("deadline"), "{status:?}");
    // Applied while the query waits: answered as soon as it is.
    let later = store.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        later
            .commit(&Commit::new(TOPIC).with_position(0, 10))
            .unwrap();
    });
    client.get_care_state(request("v1:0=9")).await.unwrap();

    let bad = client.get_care_state(request("0=9")).await.unwrap_err();
    assert_eq!(
        bad.get_details_bad_request().unwrap().field_violations[0].field,
        "consistency_token"
    );
}

#[tokio::test]
async fn cohorts_page_through_every_member_once() {
    let store = Store::temporary().unwrap();
    let mut on_virtual_ward = Vec::new();
    for n in 0..25 {
        let local = format!("H{n:03}");
        let mut events = vec![admitted(&local, "V1", 100, "WARD-7")];
        if n % 2 == 0 {
            events.push(discharged(
                &local,
                "V1",
                200,
                DischargeDestination::VirtualWard,
            ));
            events.push(virtual_ward_started(&local, "VW-1", 300, "VW-FRAIL"));
            on_virtual_ward.push(format!("RXX:{local}"));
        }
        store
            .commit(&Commit::new(TOPIC).with_state(state_of(events)))
            .unwrap();
    }
    let mut client = start(store).await;
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_cohort(ListCohortRequest {
                filter: Some(CohortFilter {
                    setting: CareSetting::VirtualWard as i32,
                    organisation: "rxx".into(),
                    ward: "VW-FRAIL".into(),
                    ..Default::default()
                }),
                page_size: 4,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.states.len() <= 4);
        seen.extend(page.states.into_iter().map(|s| s.patient_key));
        page_token = page.next_page_token;
        if page_token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, on_virtual_ward);

    for (request, field) in [
        (
            ListCohortRequest {
                page_size: 1001,
                ..Default::default()
            },
            "page_size",
        ),
        (
            ListCohortRequest {
                page_token: "forged".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            ListCohortRequest {
                filter: Some(CohortFilter {
                    setting: 77,
                    ..Default::default()
                }),
                ..Default::default()
            },
            "filter.setting",
        ),
    ] {
        let status = client.list_cohort(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.get_details_bad_request().unwrap().field_violations[0].field,
            field
        );
    }
}
