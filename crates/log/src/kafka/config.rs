//! [`KafkaConfig`]: where the cluster is and how Baton's clients talk to it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::{LogError, Result};

/// librdkafka settings Baton sets itself because exactly-once effect depends
/// on them; `client` may not override them.
const RESERVED: &[(&str, &str)] = &[
    ("bootstrap.servers", "set bootstrap_servers instead"),
    (
        "enable.idempotence",
        "Baton's producer is always idempotent, so a retried send is never written twice",
    ),
    (
        "acks",
        "Baton always waits for all in-sync replicas (acks=all) before an append counts as durable",
    ),
    (
        "allow.auto.create.topics",
        "Baton creates its topics itself, with the right retention and compaction",
    ),
    (
        "enable.auto.commit",
        "Baton keeps read positions in its own store, never in Kafka",
    ),
    (
        "group.id",
        "Baton reads assigned partitions and joins no consumer group",
    ),
    (
        "auto.offset.reset",
        "a reader that falls off the log must fail loudly, not skip",
    ),
];

/// How Baton connects to a Kafka cluster.
///
/// ```toml
/// [kafka]
/// bootstrap_servers = "kafka-1:9092,kafka-2:9092"
/// replication_factor = 3
///
/// [kafka.client]   # passed to librdkafka as is: security, tuning
/// "security.protocol" = "SASL_SSL"
/// "sasl.mechanisms" = "SCRAM-SHA-512"
/// "sasl.username" = "baton"
/// "sasl.password" = "…"
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list of brokers to bootstrap from.
    pub bootstrap_servers: String,
    /// librdkafka settings applied to every client Baton creates (producer,
    /// readers, admin): `security.protocol`, `ssl.*`, `sasl.*`, `client.id`,
    /// `linger.ms`… See librdkafka's CONFIGURATION.md.
    pub client: BTreeMap<String, String>,
    /// Replicas of each topic Baton creates; -1 takes the broker's
    /// `default.replication.factor`.
    pub replication_factor: i32,
    /// Longest an admin or metadata request (create topic, partition count,
    /// end offsets) may take before it fails.
    pub operation_timeout_ms: u64,
    /// Longest an append waits for the cluster to acknowledge a record,
    /// retries included, before it fails (the caller may retry: events are
    /// deduplicated by id). librdkafka's `message.timeout.ms`.
    pub delivery_timeout_ms: u64,
    /// How long the producer waits to fill a batch: lower is quicker per
    /// event, higher packs more per request. librdkafka's `linger.ms`.
    pub linger_ms: u64,
    /// How long a fetch waits at the tail of a partition for new records
    /// before the broker answers. librdkafka's `fetch.wait.max.ms`.
    pub fetch_wait_max_ms: u64,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: String::new(),
            client: BTreeMap::new(),
            replication_factor: -1,
            operation_timeout_ms: 10_000,
            delivery_timeout_ms: 30_000,
            linger_ms: 2,
            fetch_wait_max_ms: 10,
        }
    }
}

impl KafkaConfig {
    /// A configuration for the given bootstrap servers, with defaults for
    /// everything else.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            ..Self::default()
        }
    }

    /// Checks what librdkafka would not, naming the bad setting.
    pub fn validate(&self) -> Result<()> {
        let invalid = |key: &str, reason: String| LogError::InvalidConfig {
            key: key.to_owned(),
            reason,
        };
        if self.bootstrap_servers.trim().is_empty() {
            return Err(invalid(
                "bootstrap_servers",
                "empty: expected a comma-separated host:port list, e.g. \"kafka-1:9092,kafka-2:9092\""
                    .to_owned(),
            ));
        }
        for server in self.bootstrap_servers.split(',') {
            let server = server.trim();
            let port = server
                .rsplit_once(':')
                .map(|(_, port)| port.trim_start_matches(']'));
            if !port.is_some_and(|port| port.parse::<u16>().is_ok_and(|port| port > 0)) {
                return Err(invalid(
                    "bootstrap_servers",
                    format!("{server:?} is not host:port, e.g. \"kafka-1:9092\""),
                ));
            }
        }
        if self.replication_factor == 0 || self.replication_factor < -1 {
            return Err(invalid(
                "replication_factor",
                format!(
                    "{} is not a replica count: expected at least 1, or -1 for the broker's default",
                    self.replication_factor
                ),
            ));
        }
        for (key, value) in [
            ("operation_timeout_ms", self.operation_timeout_ms),
            ("delivery_timeout_ms", self.delivery_timeout_ms),
        ] {
            if value == 0 {
                return Err(invalid(
                    key,
                    "0: expected a positive number of milliseconds".to_owned(),
                ));
            }
        }
        for (key, why) in RESERVED {
            if self.client.contains_key(*key) {
                return Err(invalid(
                    &format!("client.{key}"),
                    format!("Baton sets it itself and it cannot be overridden: {why}"),
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn operation_timeout(&self) -> Duration {
        Duration::from_millis(self.operation_timeout_ms)
    }

    /// A client configuration: Baton's tunable `defaults`, then the
    /// pass-through settings (which may override them), then `required`
    /// (which nothing overrides: [`KafkaConfig::validate`] refuses them in
    /// `client`).
    fn client_config(
        &self,
        defaults: &[(&str, String)],
        required: &[(&str, &str)],
    ) -> ClientConfig {
        let mut config = ClientConfig::new();
        // Baton's requests are small and latency-bound (a Publish waits for
        // its produce request, a consistency token for the next fetch):
        // Nagle's algorithm would hold them back. Overridable.
        config.set("socket.nagle.disable", "true");
        for (key, value) in defaults {
            config.set(*key, value);
        }
        for (key, value) in &self.client {
            config.set(key, value);
        }
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("allow.auto.create.topics", "false");
        for (key, value) in required {
            config.set(*key, *value);
        }
        config
    }

    /// The idempotent producer behind `append`.
    pub(crate) fn producer(&self) -> ClientConfig {
        self.client_config(
            &[
                ("linger.ms", self.linger_ms.to_string()),
                ("message.timeout.ms", self.delivery_timeout_ms.to_string()),
            ],
            &[("enable.idempotence", "true"), ("acks", "all")],
        )
    }

    /// A reader of explicitly assigned partitions: no group, no committed
    /// offsets, and an error rather than a silent jump when an offset is
    /// out of range.
    pub(crate) fn reader(&self) -> ClientConfig {
        self.client_config(
            &[
                ("fetch.wait.max.ms", self.fetch_wait_max_ms.to_string()),
                ("enable.partition.eof", "false".to_owned()),
            ],
            &[
                // rd_kafka_assign needs a group id; the group is never joined
                // and nothing is committed to it.
                ("group.id", "baton-reader"),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "error"),
            ],
        )
    }

    /// A consumer of `group` that only commits offsets for monitoring: it
    /// is never subscribed or assigned, so it never joins the group, and it
    /// commits only what it is given.
    pub(crate) fn group_committer(&self, group: &str) -> ClientConfig {
        self.client_config(
            &[],
            &[
                ("group.id", group),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
            ],
        )
    }

    /// A member of the consumer group sharing a topic's partitions: static
    /// membership from `settings.instance_id`, cooperative-sticky
    /// assignment (a rebalance moves only the partitions that change
    /// hands), and nothing committed but what it is given.
    pub(crate) fn group_member(&self, settings: &crate::group::GroupSettings) -> ClientConfig {
        let session_timeout = settings.session_timeout_ms.to_string();
        // A third of the session, as Kafka advises, and at most 3 s.
        let heartbeat = (settings.session_timeout_ms / 3)
            .clamp(100, 3_000)
            .to_string();
        let mut config = self.client_config(
            &[
                ("session.timeout.ms", session_timeout),
                ("heartbeat.interval.ms", heartbeat),
                // The member reads nothing (its partitions are paused): a
                // fetch racing the pause costs at most this per partition.
                ("max.partition.fetch.bytes", "65536".to_owned()),
            ],
            &[
                ("group.id", settings.group.as_str()),
                ("client.id", settings.instance_id.as_str()),
                ("partition.assignment.strategy", "cooperative-sticky"),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "latest"),
            ],
        );
        if settings.static_membership {
            config.set("group.instance.id", &settings.instance_id);
        }
        config
    }

    /// The admin client that creates topics.
    pub(crate) fn admin(&self) -> ClientConfig {
        self.client_config(&[], &[])
    }
}

/// Settings such as `sasl.password` must not reach logs: only the servers
/// and the names of the pass-through settings are shown.
impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("client", &self.client.keys().collect::<Vec<_>>())
            .field("replication_factor", &self.replication_factor)
            .field("operation_timeout_ms", &self.operation_timeout_ms)
            .field("delivery_timeout_ms", &self.delivery_timeout_ms)
            .field("linger_ms", &self.linger_ms)
            .field("fetch_wait_max_ms", &self.fetch_wait_max_ms)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(config: &KafkaConfig) -> String {
        config.validate().unwrap_err().to_string()
    }

    #[test]
    fn a_plain_address_list_is_valid() {
        KafkaConfig::new("127.0.0.1:9092").validate().unwrap();
        KafkaConfig::new("kafka-1:9092, kafka-2:9093")
            .validate()
            .unwrap();
        KafkaConfig::new("[::1]:9092").validate().unwrap();
    }

    #[test]
    fn bad_settings_are_named_with_the_expected_form() {
        let message = problem(&KafkaConfig::new(""));
        assert!(message.contains("bootstrap_servers"), "{message}");
        let message = problem(&KafkaConfig::new("kafka-1"));
        assert!(
            message.contains("\"kafka-1\" is not host:port"),
            "{message}"
        );
        let message = problem(&KafkaConfig {
            replication_factor: 0,
            ..KafkaConfig::new("k:1")
        });
        assert!(message.contains("replication_factor"), "{message}");
        let mut config = KafkaConfig::new("k:1");
        config
            .client
            .insert("enable.idempotence".into(), "false".into());
        let message = problem(&config);
        assert!(message.contains("client.enable.idempotence"), "{message}");
        assert!(message.contains("cannot be overridden"), "{message}");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let mut config = KafkaConfig::new("k:1");
        config
            .client
            .insert("sasl.password".into(), "hunter2".into());
        let debug = format!("{config:?}");
        assert!(debug.contains("sasl.password"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn pass_through_settings_reach_every_client() {
        let mut config = KafkaConfig::new("k:1");
        config
            .client
            .insert("security.protocol".into(), "SSL".into());
        config.client.insert("linger.ms".into(), "20".into());
        for client in [config.producer(), config.reader(), config.admin()] {
            assert_eq!(client.get("security.protocol"), Some("SSL"));
            assert_eq!(client.get("allow.auto.create.topics"), Some("false"));
        }
        assert_eq!(config.producer().get("linger.ms"), Some("20"));
        assert_eq!(config.producer().get("enable.idempotence"), Some("true"));
        assert_eq!(config.reader().get("auto.offset.reset"), Some("error"));
        let committer = config.group_committer("baton-projector");
        assert_eq!(committer.get("group.id"), Some("baton-projector"));
        assert_eq!(committer.get("enable.auto.commit"), Some("false"));
        assert_eq!(committer.get("security.protocol"), Some("SSL"));
    }
}
