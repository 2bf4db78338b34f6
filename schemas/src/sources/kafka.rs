//! `type: kafka`: a Kafka consumer group member with at-least-once delivery (offsets committed up to
//! a per-partition contiguous watermark of finished messages), per-key / per-partition / no ordering,
//! pause/resume backpressure and rebalances that drain and commit before partitions are released.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::FieldError;
pub use crate::config::Ordering;

/// librdkafka properties the source sets itself; `properties` may not override them.
pub const MANAGED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.key.password",
    "enable.ssl.certificate.verification",
];

/// A Kafka source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Unique source name.
    pub name: String,
    /// Bootstrap brokers as `host:port`. Default `["127.0.0.1:9092"]`.
    #[serde(default = "default_bootstrap_servers")]
    pub bootstrap_servers: Vec<String>,
    /// Topics to consume. An entry starting with `^` is a regular expression matched against every
    /// topic of the cluster (new matching topics are picked up as metadata refreshes).
    pub topics: Vec<String>,
    /// Consumer group: replicas with the same group share the partitions. Default: the source name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Where a group with no committed offset for a partition starts: `latest` (default: only
    /// messages produced from now on) or `earliest` (everything the topic still holds).
    #[serde(default)]
    pub start_offset: StartOffset,
    /// Name of the cluster in the `source` of wrapped plain messages (`kafka://<cluster>/<topic>`).
    /// Default: the first bootstrap server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Order of invocations for the triggers this source feeds that set no `ordering` of their own:
    /// `key` (default: messages with the same key run one after the other, different keys and
    /// messages without a key in parallel), `partition` (one message at a time per partition) or
    /// `none` (everything in parallel up to `max_in_flight`). Each trigger orders its own
    /// invocations: a slow function does not hold back another trigger's.
    #[serde(default)]
    pub ordering: Ordering,
    /// Messages taken from one partition and not yet finished (running or waiting for their key);
    /// at the limit the partition is paused until half of them finished. Bounds memory and, with
    /// `ordering: none`, the parallelism. 1..=100000, default 256.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// How often finished offsets are committed while consuming. Default `1s`.
    #[serde(default = "default_commit_interval", with = "crate::duration")]
    #[schemars(with = "String")]
    pub commit_interval: Duration,
    /// On a rebalance, how long revoked partitions' running invocations may take to finish before
    /// the partitions are released anyway (what did not finish is redelivered to the new owner).
    /// Keep it below the group's `max.poll.interval.ms` (300 s by default). Default `30s`.
    #[serde(default = "default_drain_timeout", with = "crate::duration")]
    #[schemars(with = "String")]
    pub drain_timeout: Duration,
    /// TLS to the brokers (`security.protocol` `ssl`, or `sasl_ssl` with `sasl`). Needs a build of
    /// librdkafka with OpenSSL (rdkafka's `ssl` feature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<KafkaTls>,
    /// SASL authentication (`security.protocol` `sasl_plaintext`, or `sasl_ssl` with `tls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<KafkaSasl>,
    /// Other librdkafka consumer properties, e.g. `session.timeout.ms: "45000"` or
    /// `partition.assignment.strategy: cooperative-sticky`. The properties the source manages
    /// (servers, group, offsets, commits, TLS, SASL) are rejected here; use their own fields.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Treat records holding S3 event notification JSON (`{"Records": [...]}` from S3, MinIO or SNS) as S3
    /// notifications: one `com.amazonaws.s3.*` event per record, mapped as the `s3` source does; the
    /// Kafka record counts as finished once all of them are terminal. Other records are delivered as
    /// usual. Default false.
    #[serde(default)]
    pub s3_notifications: bool,
}

/// Where a new group starts reading a partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StartOffset {
    /// The oldest message the partition holds.
    Earliest,
    /// Messages produced after the group first joined.
    #[default]
    Latest,
}

/// TLS settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaTls {
    /// PEM file of the CA certificates that sign the brokers' certificates. Default: the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// PEM client certificate, for mutual TLS (with `key_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// PEM private key of the client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// Password of `key_file` when it is encrypted (use `${ENV}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_password: Option<String>,
    /// Verify the brokers' certificates. Default true.
    #[serde(default = "default_true")]
    pub verify: bool,
}

/// SASL settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSasl {
    /// `plain`, `scram_sha_256` or `scram_sha_512`.
    pub mechanism: SaslMechanism,
    /// User name.
    pub username: String,
    /// Password (use `${ENV}`).
    pub password: String,
}

/// A SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SaslMechanism {
    /// `PLAIN` (send it over TLS only).
    Plain,
    /// `SCRAM-SHA-256`.
    #[serde(rename = "scram_sha_256")]
    ScramSha256,
    /// `SCRAM-SHA-512`.
    #[serde(rename = "scram_sha_512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The librdkafka name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

fn default_bootstrap_servers() -> Vec<String> {
    vec!["127.0.0.1:9092".to_owned()]
}
const fn default_max_in_flight() -> usize {
    256
}
const fn default_commit_interval() -> Duration {
    Duration::from_secs(1)
}
const fn default_drain_timeout() -> Duration {
    Duration::from_secs(30)
}
const fn default_true() -> bool {
    true
}

/// A topic name as Kafka allows it: 1..=249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl KafkaSourceConfig {
    /// The consumer group id.
    pub fn group_id(&self) -> &str {
        self.group.as_deref().unwrap_or(&self.name)
    }

    /// The cluster name in wrapped messages' `source`.
    pub fn cluster_name(&self) -> &str {
        self.cluster.as_deref().or(self.bootstrap_servers.first().map(String::as_str)).unwrap_or("kafka")
    }

    /// Checks every field before anything connects.
    ///
    /// # Errors
    /// The first problem, with the field path.
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        if self.bootstrap_servers.is_empty() {
            return Err(FieldError::new(format!("{at}.bootstrap_servers"), "needs at least one broker"));
        }
        for (i, s) in self.bootstrap_servers.iter().enumerate() {
            let ok = s.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && !host.contains("://") && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !ok {
                return Err(FieldError::new(
                    format!("{at}.bootstrap_servers[{i}]"),
                    format!("{s:?} is not host:port (no scheme)"),
                ));
            }
        }
        if self.topics.is_empty() {
            return Err(FieldError::new(format!("{at}.topics"), "needs at least one topic or ^regex"));
        }
        for (i, t) in self.topics.iter().enumerate() {
            let field = format!("{at}.topics[{i}]");
            if t.starts_with('^') {
                regex::Regex::new(t).map_err(|e| FieldError::new(&field, format!("not a valid regex: {e}")))?;
            } else if !valid_topic(t) {
                return Err(FieldError::new(
                    field,
                    format!("{t:?} is not a topic name (1-249 of letters, digits, '.', '_', '-'; or ^regex)"),
                ));
            }
        }
        if let Some(g) = &self.group {
            if g.is_empty() || g.chars().any(char::is_control) {
                return Err(FieldError::new(format!("{at}.group"), "must be non-empty, without control characters"));
            }
        }
        if !(1..=100_000).contains(&self.max_in_flight) {
            return Err(FieldError::new(format!("{at}.max_in_flight"), "must be 1..=100000"));
        }
        if self.commit_interval < Duration::from_millis(10) {
            return Err(FieldError::new(format!("{at}.commit_interval"), "must be at least 10ms"));
        }
        if self.drain_timeout.is_zero() {
            return Err(FieldError::new(format!("{at}.drain_timeout"), "must be more than 0s"));
        }
        if let Some(tls) = &self.tls {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return Err(FieldError::new(format!("{at}.tls.key_file"), "cert_file and key_file go together"));
            }
        }
        if let Some(sasl) = &self.sasl {
            if sasl.username.is_empty() {
                return Err(FieldError::new(format!("{at}.sasl.username"), "must not be empty"));
            }
        }
        for key in self.properties.keys() {
            let field = format!("{at}.properties.{key}");
            if MANAGED_PROPERTIES.contains(&key.as_str()) {
                return Err(FieldError::new(field, "is set by the source; use the source's own fields"));
            }
            if key.is_empty()
                || !key.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_')
            {
                return Err(FieldError::new(field, "not a librdkafka property name"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<KafkaSourceConfig, String> {
        let c: KafkaSourceConfig = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        c.validate("sources[0]").map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn defaults_and_full_config() {
        let c = parse("name: orders\ntopics: [orders]\n").unwrap();
        assert_eq!(c.bootstrap_servers, vec!["127.0.0.1:9092"]);
        assert_eq!((c.group_id(), c.start_offset, c.ordering), ("orders", StartOffset::Latest, Ordering::Key));
        assert_eq!((c.max_in_flight, c.commit_interval), (256, Duration::from_secs(1)));
        assert_eq!(c.cluster_name(), "127.0.0.1:9092");
        let c = parse(
            "name: o\nbootstrap_servers: [k1:9092, k2:9093]\ntopics: ['^orders\\..*', audit]\ngroup: g\n\
             start_offset: earliest\ncluster: prod\nordering: none\nmax_in_flight: 10\n\
             tls: {ca_file: /ca.pem}\nsasl: {mechanism: scram_sha_512, username: u, password: p}\n\
             properties: {session.timeout.ms: '45000'}\n",
        )
        .unwrap();
        assert_eq!((c.group_id(), c.cluster_name(), c.ordering), ("g", "prod", Ordering::None));
        assert!(c.tls.as_ref().unwrap().verify);
        assert_eq!(c.sasl.as_ref().unwrap().mechanism.as_str(), "SCRAM-SHA-512");
    }

    #[test]
    fn bad_configs_name_the_field() {
        let err = |y: &str| parse(y).unwrap_err();
        assert!(err("name: a\n").contains("topics"));
        assert!(err("name: a\ntopics: []\n").contains("sources[0].topics"));
        assert!(err("name: a\ntopics: ['a b']\n").contains("sources[0].topics[0]"));
        assert!(err("name: a\ntopics: ['^(']\n").contains("sources[0].topics[0]"));
        assert!(err("name: a\ntopics: [a]\nbootstrap_servers: ['kafka://x:1']\n").contains("bootstrap_servers[0]"));
        assert!(err("name: a\ntopics: [a]\nmax_in_flight: 0\n").contains("max_in_flight"));
        assert!(err("name: a\ntopics: [a]\nordering: random\n").contains("ordering"));
        assert!(err("name: a\ntopics: [a]\nproperties: {group.id: x}\n").contains("sources[0].properties.group.id"));
        assert!(err("name: a\ntopics: [a]\nproperties: {enable.auto.commit: 'true'}\n").contains("set by the source"));
        assert!(err("name: a\ntopics: [a]\ntls: {cert_file: c}\n").contains("tls.key_file"));
        assert!(err("name: a\ntopics: [a]\ncolour: red\n").contains("colour"));
    }
}
