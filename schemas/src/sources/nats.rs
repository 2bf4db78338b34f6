//! `type: nats`: NATS core subscriptions (at-most-once) or a JetStream durable pull consumer
//! (at-least-once).

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::FieldError;

/// A NATS source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsSourceConfig {
    /// Unique source name.
    pub name: String,
    /// Server URLs. Default `["nats://127.0.0.1:4222"]`.
    #[serde(default = "default_servers")]
    pub servers: Vec<String>,
    /// Core NATS: subjects to subscribe to (wildcards `*` and `>` allowed). Core NATS is
    /// AT-MOST-ONCE: a message that arrives while Switchyard is down, or that is in flight when it
    /// stops, is lost. Use `jetstream` for at-least-once. Required unless `jetstream` is set.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Core NATS: a queue group, so several replicas share the messages instead of each getting all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_group: Option<String>,
    /// JetStream: consume a stream through a durable pull consumer (at-least-once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jetstream: Option<JetStreamConfig>,
    /// Messages handled at once from this source (beyond it, the source waits). Default 256.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// User name for authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Password for authentication (use `${ENV}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Token for authentication (use `${ENV}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Recognise S3 notification JSON (AWS, MinIO; `s3:TestEvent` acked and ignored) in plain
    /// messages and deliver one `com.amazonaws.s3.*` event per record instead, mapped as the `s3`
    /// source does; the message is acked once all of them are terminal. Other messages are delivered
    /// as usual. Default false.
    #[serde(default)]
    pub s3_notifications: bool,
}

/// The JetStream stream and durable consumer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JetStreamConfig {
    /// Stream name. It must exist unless `create` is set.
    pub stream: String,
    /// Create the stream when it does not exist, with these settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<CreateStream>,
    /// Durable consumer name: replicas using the same name share the messages. Default: the source name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durable: Option<String>,
    /// Only these subjects of the stream (empty: all).
    #[serde(default)]
    pub filter_subjects: Vec<String>,
    /// Where a new consumer starts: `all` (default), `new`, or `by_start_time` (with `start_time`).
    #[serde(default)]
    pub deliver_policy: DeliverPolicy,
    /// RFC 3339 start time for `deliver_policy: by_start_time`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// How long the server waits for an ack before redelivering. While an invocation (or its
    /// retries) runs, Switchyard sends in-progress acks every `ack_wait / 3`. Default `30s`.
    #[serde(default = "default_ack_wait", with = "crate::duration")]
    #[schemars(with = "String")]
    pub ack_wait: Duration,
    /// Deliveries of one message before the server gives up on it; -1 for no limit. Default 5.
    #[serde(default = "default_max_deliver")]
    pub max_deliver: i64,
}

/// Settings of a stream Switchyard creates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStream {
    /// Subjects the stream captures.
    pub subjects: Vec<String>,
    /// `file` (default; survives a server restart) or `memory`.
    #[serde(default)]
    pub storage: StreamStorage,
}

/// Stream storage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamStorage {
    /// On disk.
    #[default]
    File,
    /// In memory.
    Memory,
}

/// Where a new durable consumer starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliverPolicy {
    /// Every message in the stream.
    #[default]
    All,
    /// Only messages published after the consumer is created.
    New,
    /// Messages from `start_time` on.
    ByStartTime,
}

fn default_servers() -> Vec<String> {
    vec!["nats://127.0.0.1:4222".to_owned()]
}
const fn default_max_in_flight() -> usize {
    256
}
const fn default_ack_wait() -> Duration {
    Duration::from_secs(30)
}
const fn default_max_deliver() -> i64 {
    5
}

fn check_subject(subject: &str, field: &str, wildcards: bool) -> Result<(), FieldError> {
    let tokens: Vec<&str> = subject.split('.').collect();
    let bad = subject.is_empty()
        || subject.chars().any(|c| c.is_whitespace())
        || tokens.iter().any(|t| t.is_empty())
        || tokens.iter().enumerate().any(|(i, t)| {
            (t.contains('*') && *t != "*")
                || (t.contains('>') && (*t != ">" || i + 1 != tokens.len()))
                || (!wildcards && (*t == "*" || *t == ">"))
        });
    if bad {
        return Err(FieldError::new(field, format!("{subject:?} is not a valid NATS subject")));
    }
    Ok(())
}

impl NatsSourceConfig {
    /// The durable consumer name.
    pub fn durable_name(&self) -> Option<String> {
        self.jetstream.as_ref().map(|j| j.durable.clone().unwrap_or_else(|| self.name.clone()))
    }

    /// Checks every field before anything connects.
    ///
    /// # Errors
    /// The first problem, with the field path.
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        if self.servers.is_empty() {
            return Err(FieldError::new(format!("{at}.servers"), "needs at least one server URL"));
        }
        for (i, s) in self.servers.iter().enumerate() {
            let ok = url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "nats" | "tls" | "ws" | "wss"));
            if !ok {
                return Err(FieldError::new(format!("{at}.servers[{i}]"), format!("{s:?} is not a nats:// URL")));
            }
        }
        for (i, s) in self.subjects.iter().enumerate() {
            check_subject(s, &format!("{at}.subjects[{i}]"), true)?;
        }
        if self.max_in_flight == 0 {
            return Err(FieldError::new(format!("{at}.max_in_flight"), "must be at least 1"));
        }
        if self.token.is_some() && (self.user.is_some() || self.password.is_some()) {
            return Err(FieldError::new(format!("{at}.token"), "use either token or user/password"));
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(FieldError::new(format!("{at}.password"), "user and password go together"));
        }
        match &self.jetstream {
            None => {
                if self.subjects.is_empty() {
                    return Err(FieldError::new(
                        format!("{at}.subjects"),
                        "needs at least one subject (or set `jetstream` for a stream)",
                    ));
                }
            }
            Some(js) => {
                let jat = format!("{at}.jetstream");
                if !self.subjects.is_empty() || self.queue_group.is_some() {
                    return Err(FieldError::new(
                        format!("{at}.subjects"),
                        "subjects and queue_group are for core NATS; with jetstream use jetstream.filter_subjects",
                    ));
                }
                let name_ok =
                    |n: &str| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                if !name_ok(&js.stream) {
                    return Err(FieldError::new(format!("{jat}.stream"), "letters, digits, '-' and '_' only"));
                }
                if let Some(d) = &js.durable {
                    if !name_ok(d) {
                        return Err(FieldError::new(format!("{jat}.durable"), "letters, digits, '-' and '_' only"));
                    }
                }
                for (i, s) in js.filter_subjects.iter().enumerate() {
                    check_subject(s, &format!("{jat}.filter_subjects[{i}]"), true)?;
                }
                if let Some(c) = &js.create {
                    if c.subjects.is_empty() {
                        return Err(FieldError::new(format!("{jat}.create.subjects"), "needs at least one subject"));
                    }
                    for (i, s) in c.subjects.iter().enumerate() {
                        check_subject(s, &format!("{jat}.create.subjects[{i}]"), true)?;
                    }
                }
                match (js.deliver_policy, &js.start_time) {
                    (DeliverPolicy::ByStartTime, None) => {
                        return Err(FieldError::new(format!("{jat}.start_time"), "required with by_start_time"))
                    }
                    (DeliverPolicy::ByStartTime, Some(t)) if chrono::DateTime::parse_from_rfc3339(t).is_err() => {
                        return Err(FieldError::new(format!("{jat}.start_time"), "must be an RFC 3339 time"));
                    }
                    (_, Some(_)) => {
                        return Err(FieldError::new(
                            format!("{jat}.start_time"),
                            "only with deliver_policy: by_start_time",
                        ))
                    }
                    _ => {}
                }
                if js.ack_wait < Duration::from_secs(1) {
                    return Err(FieldError::new(format!("{jat}.ack_wait"), "must be at least 1s"));
                }
                if js.max_deliver == 0 || js.max_deliver < -1 {
                    return Err(FieldError::new(format!("{jat}.max_deliver"), "must be -1 (no limit) or at least 1"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<NatsSourceConfig, String> {
        let c: NatsSourceConfig = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        c.validate("sources[0]").map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn core_and_jetstream_configs() {
        let c = parse("name: a\nsubjects: [orders.*, 'audit.>']\nqueue_group: workers\n").unwrap();
        assert_eq!(c.servers, vec!["nats://127.0.0.1:4222"]);
        assert!(c.jetstream.is_none());
        let c = parse("name: a\njetstream: {stream: ORDERS, create: {subjects: [orders.>]}}\n").unwrap();
        let js = c.jetstream.as_ref().unwrap();
        assert_eq!(
            (js.ack_wait, js.max_deliver, js.create.as_ref().unwrap().storage),
            (Duration::from_secs(30), 5, StreamStorage::File)
        );
        assert_eq!(c.durable_name().as_deref(), Some("a"));
    }

    #[test]
    fn bad_configs_name_the_field() {
        let err = |y: &str| parse(y).unwrap_err();
        assert!(err("name: a\n").contains("sources[0].subjects"));
        assert!(err("name: a\nsubjects: ['a..b']\n").contains("sources[0].subjects[0]"));
        assert!(err("name: a\nsubjects: ['a.>.b']\n").contains("sources[0].subjects[0]"));
        assert!(err("name: a\nservers: ['http://x']\nsubjects: [a]\n").contains("sources[0].servers[0]"));
        assert!(err("name: a\njetstream: {stream: 'A B'}\n").contains("jetstream.stream"));
        assert!(err("name: a\njetstream: {stream: A, deliver_policy: by_start_time}\n").contains("start_time"));
        assert!(err("name: a\njetstream: {stream: A, max_deliver: 0}\n").contains("max_deliver"));
        assert!(err("name: a\nsubjects: [a]\njetstream: {stream: A}\n").contains("sources[0].subjects"));
        assert!(err("name: a\nsubjects: [a]\ncolour: red\n").contains("colour"));
    }
}
