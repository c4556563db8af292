//! Connections that hold an MLLP slot without sending a message cannot
//! lock a real feed out: silent connections and a half-sent frame are
//! closed by `mllp_frame_timeout_ms`, a real feed then gets in, and every
//! close is counted by reason in the listener's stats and in Prometheus.
//!
//! One test in this file: the metrics registry is the process's own.

use std::time::Duration;

use baton_hl7::AckCode;
use baton_ingest::IngestConfig;
use baton_ingest::mllp::CloseReason;
use baton_telemetry::metrics::{Format, render};

mod support;

use support::{Feed, sample};

fn admit(control: &str) -> String {
    format!(
        "MSH|^~\\&|PAS|RXX|BATON|RXX|202607150900||ADT^A01^ADT_A01|{control}|P|2.5\r\
         EVN|A01|202607150900||||202607150900\r\
         PID|1||H9434765919^^^RXX^MR~9434765919^^^NHS^NH||PATIENT^A||19400101|F\r\
         PV1|1|I|AMU^^^RXX01||||||||||||||||V1\r"
    )
}

#[tokio::test]
async fn idle_and_half_sent_connections_are_closed_so_a_real_feed_gets_in() {
    baton_ingest::metrics::register();
    let feed = Feed::start(IngestConfig {
        mllp_max_connections: 4,
        mllp_frame_timeout_ms: 300,
        ..IngestConfig::default()
    })
    .await;
    // Every slot taken: three connections that send nothing, and one that
    // sends a message (acknowledged) then half of the next and stops.
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(feed.connect().await);
    }
    let mut slow = feed.connect().await;
    let (ack, text) = slow.send(&admit("1")).await;
    assert_eq!(ack.code, AckCode::Accept, "{text}");
    let half = baton_hl7::mllp::frame(admit("2").as_bytes());
    slow.write(&half[..half.len() / 2]).await;

    // A real feed retries until a slot is free, then is acknowledged.
    let mut refused = 0_u64;
    let (ack, text) = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let mut sender = feed.connect().await;
            match sender.try_send(&admit("3")).await {
                Some(answer) => return answer,
                None => {
                    refused += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
    .await
    .expect("a slot is freed by the frame timeout");
    assert_eq!(ack.code, AckCode::Accept, "{text}");
    assert_eq!(ack.control_id, "3");

    for connection in &mut silent {
        assert!(connection.closed_by_listener().await);
    }
    assert!(slow.closed_by_listener().await);
    let stats = feed.stats.snapshot();
    assert_eq!(stats.closed[&CloseReason::FrameTimeout], 4, "{stats:?}");
    assert_eq!(stats.closed[&CloseReason::MaxConnections], refused);
    assert_eq!(stats.connections_refused, refused);
    assert_eq!(stats.closed[&CloseReason::IdleTimeout], 0);
    assert_eq!(stats.accepted, 2);

    let exposition = render(Format::Text);
    assert_eq!(
        sample(
            &exposition,
            "baton_mllp_connections_closed_total{reason=\"frame_timeout\"}"
        ),
        4.0
    );
    assert_eq!(
        sample(
            &exposition,
            "baton_mllp_connections_closed_total{reason=\"max_connections\"}"
        ),
        refused as f64
    );
    assert_eq!(
        sample(
            &exposition,
            "baton_mllp_connections_closed_total{reason=\"max_connections_per_peer\"}"
        ),
        0.0,
        "every reason is exposed from the start"
    );
    feed.stop().await;
}
