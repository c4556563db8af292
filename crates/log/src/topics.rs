//! Names the canonical topics (configurable elsewhere; these are defaults)
//! and the naming rule every backend enforces.

use crate::{LogError, Result};

/// Every accepted care event, keyed by patient key, in recorded order.
pub const CARE_EVENTS: &str = "baton.care-events.v1";
/// Current care state per patient (compacted), keyed by patient key.
pub const CARE_STATE: &str = "baton.care-state.v1";
/// Records that could not be decoded or applied, with the reason.
pub const DEAD_LETTERS: &str = "baton.dead-letters.v1";

/// Kafka's limit, kept by the embedded backend too so a topic created
/// there can always be created on a broker.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Applies Kafka's topic naming rule: 1..=249 characters from
/// `[a-zA-Z0-9._-]`, and not `.` or `..`.
pub fn validate_topic_name(topic: &str) -> Result<()> {
    let invalid = |reason: String| LogError::InvalidTopicName {
        topic: topic.to_owned(),
        reason,
    };
    if topic.is_empty() {
        return Err(invalid("the name is empty".to_owned()));
    }
    if topic == "." || topic == ".." {
        return Err(invalid("\".\" and \"..\" are reserved".to_owned()));
    }
    if topic.len() > MAX_TOPIC_NAME_LEN {
        return Err(invalid(format!(
            "the name is {} bytes long, expected at most {MAX_TOPIC_NAME_LEN}",
            topic.len()
        )));
    }
    if let Some(bad) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(invalid(format!(
            "character {bad:?} is not allowed, expected only ASCII letters, digits, '.', '_' and '-'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_topics_are_valid_names() {
        for topic in [CARE_EVENTS, CARE_STATE, DEAD_LETTERS] {
            validate_topic_name(topic).unwrap();
        }
    }

    #[test]
    fn names_kafka_would_refuse_are_rejected() {
        let too_long = "a".repeat(MAX_TOPIC_NAME_LEN + 1);
        for (topic, reason) in [
            ("", "empty"),
            (".", "reserved"),
            ("..", "reserved"),
            ("a/b", "'/'"),
            ("a b", "' '"),
            ("é", "'é'"),
            (too_long.as_str(), "at most 249"),
        ] {
            let error = validate_topic_name(topic).unwrap_err();
            assert!(matches!(error, LogError::InvalidTopicName { .. }));
            assert!(error.to_string().contains(reason), "{topic:?}: {error}");
        }
        validate_topic_name(&"a".repeat(MAX_TOPIC_NAME_LEN)).unwrap();
    }
}
