//! Baton's topics: their default names, [`Topics`] (the names and
//! partition count a deployment uses, created on start-up when missing) and
//! the naming rule every backend enforces.

use serde::{Deserialize, Serialize};

use crate::{EventLog, LogError, Result, TopicSpec};

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

/// The topics a Baton deployment uses: the `[topics]` table of the
/// configuration, shared by every service.
///
/// ```toml
/// [topics]
/// events = "baton.care-events.v1"
/// state = "baton.care-state.v1"
/// dead_letters = "baton.dead-letters.v1"
/// partitions = 8
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Topics {
    /// Every accepted care event, keyed by patient, kept forever.
    pub events: String,
    /// The latest care state per patient, compacted.
    pub state: String,
    /// What the projector could not apply, with the reason, kept forever.
    pub dead_letters: String,
    /// Partitions of each topic when Baton creates it. Fixed afterwards: a
    /// patient's partition is murmur2(patient key) mod this count, and their
    /// events keep their order only within one partition.
    pub partitions: u32,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            events: CARE_EVENTS.to_owned(),
            state: CARE_STATE.to_owned(),
            dead_letters: DEAD_LETTERS.to_owned(),
            partitions: 8,
        }
    }
}

impl Topics {
    /// Checks every name and the partition count, naming the bad setting
    /// as `topics.<key>`.
    pub fn validate(&self) -> Result<()> {
        for (key, topic) in [
            ("events", &self.events),
            ("state", &self.state),
            ("dead_letters", &self.dead_letters),
        ] {
            validate_topic_name(topic).map_err(|error| LogError::InvalidConfig {
                key: format!("topics.{key}"),
                reason: error.to_string(),
            })?;
        }
        if self.events == self.state
            || self.events == self.dead_letters
            || self.state == self.dead_letters
        {
            return Err(LogError::InvalidConfig {
                key: "topics".to_owned(),
                reason: format!(
                    "events, state and dead_letters must be three different topics, got {:?}, {:?} and {:?}",
                    self.events, self.state, self.dead_letters
                ),
            });
        }
        if self.partitions == 0 {
            return Err(LogError::InvalidConfig {
                key: "topics.partitions".to_owned(),
                reason: "0: expected at least 1".to_owned(),
            });
        }
        Ok(())
    }

    /// Creates whichever topics are missing and returns the partition count
    /// of the events topic.
    ///
    /// The state topic must have at least as many partitions as the events
    /// topic: a patient's state is published to the partition number their
    /// events are in, so one reader of a partition sees a patient's states
    /// and the progress records about them in order.
    pub async fn ensure(&self, log: &dyn EventLog) -> Result<u32> {
        self.validate()?;
        let events = log
            .ensure_topic(&self.events, TopicSpec::events(self.partitions))
            .await?;
        let state = log
            .ensure_topic(&self.state, TopicSpec::compacted(events))
            .await?;
        log.ensure_topic(&self.dead_letters, TopicSpec::events(events))
            .await?;
        if state < events {
            return Err(LogError::InvalidConfig {
                key: "topics.state".to_owned(),
                reason: format!(
                    "topic {:?} has {state} partitions, fewer than the {events} of {:?}: recreate it with at least {events}",
                    self.state, self.events
                ),
            });
        }
        if events != self.partitions {
            tracing::info!(
                topic = %self.events,
                existing = events,
                configured = self.partitions,
                "the events topic exists with another partition count; keeping it"
            );
        }
        Ok(events)
    }
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
    fn topic_settings_are_checked_and_named() {
        Topics::default().validate().unwrap();
        let same = Topics {
            state: CARE_EVENTS.to_owned(),
            ..Topics::default()
        };
        assert!(
            same.validate()
                .unwrap_err()
                .to_string()
                .contains("three different topics")
        );
        let bad = Topics {
            dead_letters: "dead letters".to_owned(),
            ..Topics::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("topics.dead_letters")
        );
        let none = Topics {
            partitions: 0,
            ..Topics::default()
        };
        assert!(
            none.validate()
                .unwrap_err()
                .to_string()
                .contains("topics.partitions")
        );
    }

    #[tokio::test]
    async fn ensure_creates_the_three_topics() {
        let log = crate::embedded::EmbeddedLog::temporary().unwrap();
        let topics = Topics {
            partitions: 3,
            ..Topics::default()
        };
        assert_eq!(topics.ensure(&log).await.unwrap(), 3);
        for topic in [CARE_EVENTS, CARE_STATE, DEAD_LETTERS] {
            assert_eq!(log.partition_count(topic).await.unwrap(), 3);
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
