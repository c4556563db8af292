//! Every file of the shared HL7 v2 corpus (`../shared/corpus/hl7v2-samples`
//! beside the repository) is handled without a panic: it maps to events
//! that pass Baton's validation, or it is refused with a reason naming
//! where. The corpus lives outside the repository; without it this test
//! says so loudly and checks nothing else (the other tests use fixtures
//! committed here).

use std::path::PathBuf;

use baton_hl7::{AckCode, MapConfig, Message, map};

fn corpus() -> Option<PathBuf> {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/corpus/hl7v2-samples"
    ));
    dir.is_dir().then_some(dir)
}

#[test]
#[allow(clippy::print_stderr)]
fn every_corpus_message_maps_or_is_refused_with_a_reason() {
    let Some(dir) = corpus() else {
        eprintln!(
            "SKIPPED: the HL7 v2 corpus is not at ../shared/corpus/hl7v2-samples beside the repository"
        );
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "hl7"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 60,
        "only {} files in {}",
        files.len(),
        dir.display()
    );
    let (mut mapped, mut refused) = (0, 0);
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy();
        let bytes = std::fs::read(path).unwrap();
        let message = match Message::parse(&bytes) {
            Ok(message) => message,
            Err(error) => {
                assert!(!error.to_string().is_empty());
                refused += 1;
                continue;
            }
        };
        match map(&message, &MapConfig::default()) {
            Ok(events) => match events.check() {
                Ok(()) => {
                    assert!(!events.is_empty(), "{name}: mapped to no events");
                    mapped += 1;
                }
                Err(problems) => {
                    assert!(!problems.is_empty(), "{name}");
                    for problem in &problems {
                        assert!(
                            problem.location.is_some(),
                            "{name}: {problem} names no field"
                        );
                    }
                    refused += 1;
                }
            },
            Err(refusal) => {
                assert!(
                    !refusal.problems.is_empty(),
                    "{name}: refused without a reason"
                );
                assert!(matches!(refusal.code, AckCode::Error | AckCode::Reject));
                refused += 1;
            }
        }
    }
    eprintln!("corpus: {mapped} files mapped, {refused} refused with a reason");
    assert_eq!(mapped + refused, files.len());
    assert!(
        mapped >= 20,
        "only {mapped} of {} corpus files map",
        files.len()
    );
}
