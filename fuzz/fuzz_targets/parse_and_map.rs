//! Any bytes through everything a listener does with them: MLLP framing,
//! splitting a file into messages, parsing, reading every value, mapping,
//! validating and acknowledging. Nothing may panic, and a parsed message
//! written out again must parse to the same message.
#![no_main]

use baton_hl7::mllp::{Frame, FrameDecoder};
use baton_hl7::{AckCode, Header, MapConfig, Message, acknowledgement, map, split_messages};
use libfuzzer_sys::fuzz_target;

fn exercise(bytes: &[u8], config: &MapConfig) {
    let Ok(message) = Message::parse(bytes) else {
        return;
    };
    for segment in message.segments() {
        for field in 0..=segment.len() + 1 {
            let value = message.field(segment, field);
            let _ = value.text();
            for repetition in value.repetitions() {
                for component in 1..4 {
                    let _ = repetition.component(component).subcomponent(2).text();
                }
            }
        }
    }
    let again = Message::parse_str(&message.to_text()).expect("a written message parses");
    assert_eq!(again, message, "a written message parses to itself");
    let header = Header::read(&message);
    let (code, problems) = match map(&message, config) {
        Ok(mapped) => match mapped.check() {
            Ok(()) => (AckCode::Accept, mapped.warnings.clone()),
            Err(problems) => (AckCode::Error, problems),
        },
        Err(refused) => (refused.code, refused.problems),
    };
    let token = (code == AckCode::Accept).then_some("v1:0=1");
    let ack = acknowledgement(Some(&header), code, &problems, "FUZZ", "20260101", token);
    let read = baton_hl7::ReadAck::parse(ack.as_bytes()).expect("an acknowledgement reads back");
    assert_eq!(read.consistency_token.as_deref(), token);
}

fuzz_target!(|data: &[u8]| {
    let config = MapConfig::default();
    exercise(data, &config);
    for message in split_messages(data) {
        exercise(&message, &config);
    }
    let mut decoder = FrameDecoder::new(2048);
    for chunk in data.chunks(97) {
        for frame in decoder.push(chunk) {
            match frame {
                Frame::Message(bytes) => exercise(&bytes, &config),
                Frame::TooLarge { head, .. } => {
                    let _ = Header::sniff(&head);
                }
            }
        }
    }
});
