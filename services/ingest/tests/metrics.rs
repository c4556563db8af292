//! Ingest's metrics, over the embedded log: events accepted and refused by
//! reason, publish latency, MLLP messages by type and ACK code — and no
//! patient in the exposition, whatever the senders put in their messages.
//!
//! One test per file: the registry is the process's own.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use baton_care::fixtures::{admitted, transferred};
use baton_ingest::mllp::Clock;
use baton_ingest::{Ingest, IngestConfig, Mllp, PublishError};
use baton_log::embedded::EmbeddedLog;
use baton_log::topics;
use baton_telemetry::metrics::{Format, naming_problems, render};

mod support;

use support::sample;

#[derive(Debug)]
struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_784_000_000)
    }
}

fn adt(trigger: &str, control: &str, nhs: &str, ward: &str) -> String {
    format!(
        "MSH|^~\\&|PAS|RXX|BATON|RXX|202607151000||ADT^{trigger}^ADT_A01|{control}|P|2.5\r\
         EVN|{trigger}|202607151000||||202607151000\r\
         PID|1||H{nhs}^^^RXX^MR~{nhs}^^^NHS^NH||PATIENT^{nhs}||19400101|F\r\
         PV1|1|I|{ward}^^^RXX01||||||||||||||||VISIT-27182\r"
    )
}

#[tokio::test]
async fn events_and_messages_are_counted_and_no_patient_named() {
    baton_ingest::metrics::register();
    let log = Arc::new(EmbeddedLog::temporary().unwrap());
    let config = IngestConfig {
        max_batch_events: 3,
        ..IngestConfig::default()
    };
    let topics = topics::Topics {
        partitions: 4,
        ..topics::Topics::default()
    };
    let ingest = Ingest::start(log, config.clone(), &topics).await.unwrap();

    let nhs = "9434765919";
    ingest
        .publish(
            vec![
                admitted(nhs, "VISIT-27182", 1_000, "AMU"),
                transferred(nhs, "VISIT-27182", 2_000, "WARD-7"),
            ],
            false,
            None,
        )
        .await
        .unwrap();
    // One invalid event (a bad NHS number) refuses its valid neighbour too.
    let refused = ingest
        .publish(
            vec![
                admitted("9434765918", "VISIT-1", 1_000, "AMU"),
                admitted("4010232137", "VISIT-2", 1_000, "AMU"),
            ],
            false,
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, PublishError::Invalid { .. }));
    let too_many = vec![admitted(nhs, "VISIT-3", 1_000, "AMU"); 4];
    ingest.publish(too_many, false, None).await.unwrap_err();
    // Validating only writes nothing and counts nothing.
    ingest
        .publish(vec![admitted("9434765918", "V", 1, "X")], true, None)
        .await
        .unwrap_err();

    let mllp = Mllp::new(ingest, &config, Arc::new(FixedClock)).unwrap();
    let answer = |ack: &str, code: &str| assert!(ack.contains(&format!("MSA|{code}|")), "{ack}");
    answer(
        &mllp
            .handle(adt("A01", "M1", "4010232137", "AMU").as_bytes())
            .await,
        "AA",
    );
    answer(
        &mllp
            .handle(adt("A02", "M2", "4010232137", "WARD-9").as_bytes())
            .await,
        "AA",
    );
    // Content Baton cannot take: the visit number is missing.
    let no_visit = adt("A01", "M3", "4010232137", "AMU").replace("VISIT-27182", "");
    answer(&mllp.handle(no_visit.as_bytes()).await, "AE");
    // A type Baton does not map, and one that is a patient's number.
    let lab = "MSH|^~\\&|LAB|RXX|BATON|RXX|202607150900||ORU^R01|M4|P|2.5\rPID|1||1^^^RXX\r";
    answer(&mllp.handle(lab.as_bytes()).await, "AR");
    let odd = adt("A01", "M5", "4010232137", "AMU").replace("ADT^A01^ADT_A01", "9990000301^X");
    answer(&mllp.handle(odd.as_bytes()).await, "AR");
    answer(&mllp.handle(b"not hl7 at all").await, "AR");

    let text = render(Format::Text);
    assert_eq!(sample(&text, "baton_ingest_events_accepted_total"), 4.0);
    let rejected = |reason: &str| {
        sample(
            &text,
            &format!("baton_ingest_events_rejected_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(rejected("invalid"), 1.0);
    assert_eq!(rejected("batch_refused"), 1.0);
    assert_eq!(rejected("batch_too_large"), 4.0);
    assert_eq!(rejected("log_unavailable"), 0.0);
    assert_eq!(sample(&text, "baton_ingest_publish_seconds_count"), 3.0);
    assert_eq!(sample(&text, "baton_ingest_log_append_seconds_count"), 3.0);
    let messages = |kind: &str, code: &str| {
        sample(
            &text,
            &format!("baton_mllp_messages_total{{message_type=\"{kind}\",ack_code=\"{code}\"}}"),
        )
    };
    assert_eq!(messages("ADT^A01", "AA"), 1.0);
    assert_eq!(messages("ADT^A02", "AA"), 1.0);
    assert_eq!(messages("ADT^A01", "AE"), 1.0);
    assert_eq!(messages("other", "AR"), 3.0);

    for secret in [
        "9434765919",
        "9434765918",
        "4010232137",
        "9990000301",
        "H4010232137",
        "VISIT-27182",
        "WARD-9",
        "ORU",
    ] {
        assert!(!text.contains(secret), "{secret} in the metrics:\n{text}");
    }
    assert_eq!(naming_problems(&text), Vec::<String>::new(), "{text}");
}
