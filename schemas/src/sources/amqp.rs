//! `type: amqp`: a RabbitMQ (AMQP 0-9-1) queue consumed with manual acks (at-least-once), with
//! optional declaration of the queue, an exchange and bindings.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::FieldError;

/// The queue argument that names a queue's dead-letter exchange.
pub const DEAD_LETTER_EXCHANGE_ARGUMENT: &str = "x-dead-letter-exchange";

/// A RabbitMQ (AMQP 0-9-1) source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AmqpSourceConfig {
    /// Unique source name.
    pub name: String,
    /// AMQP URI of the broker, `amqp://user:password@host:port/vhost` (the vhost percent-encoded,
    /// `%2f` for `/`). Use `${ENV}` for the credentials. Default `amqp://guest:guest@127.0.0.1:5672/%2f`.
    #[serde(default = "default_url")]
    pub url: String,
    /// The queue to consume. Several replicas consuming the same queue are competing consumers:
    /// each message goes to one of them.
    pub queue: String,
    /// Deliveries handed out and not yet acked at once (`basic.qos` prefetch count): bounds the
    /// messages in flight, and so the concurrency, from this source. A message holds its slot until
    /// its records are committed, so set it well above the functions' concurrency. 1..=65535.
    /// Default 256.
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// Consumer tag. Default: the server picks one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_tag: Option<String>,
    /// Whether the queue has a dead-letter exchange. When it has, a message whose invocations failed
    /// for good is rejected without requeue (so RabbitMQ dead-letters it); otherwise it is acked
    /// (the FAILURE record, marked dead-lettered, is the dead letter). Default: true when
    /// `declare.queue.arguments` sets `x-dead-letter-exchange`, else false. Set it when a policy
    /// gives the queue its dead-letter exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_exchange: Option<bool>,
    /// Declare the queue, an exchange and bindings on every (re)connect. Default: declare nothing
    /// (the queue must exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declare: Option<AmqpDeclare>,
    /// Backoff between reconnect attempts after the connection or channel is lost.
    #[serde(default)]
    pub reconnect: AmqpReconnect,
    /// Recognise S3 notification JSON (AWS, MinIO; `s3:TestEvent` acked and ignored) in plain
    /// messages and deliver one `com.amazonaws.s3.*` event per record instead, mapped as the `s3`
    /// source does; the message is acked once all of them are terminal. Other messages are delivered
    /// as usual. Default false.
    #[serde(default)]
    pub s3_notifications: bool,
}

/// What to declare before consuming.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AmqpDeclare {
    /// Declare the consumed queue with these settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<DeclareQueue>,
    /// Declare an exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<DeclareExchange>,
    /// Bind the consumed queue to exchanges.
    #[serde(default)]
    pub bindings: Vec<DeclareBinding>,
}

/// Settings of the declared queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeclareQueue {
    /// Survives a broker restart (its persistent messages too). Default true.
    #[serde(default = "default_true")]
    pub durable: bool,
    /// Queue arguments, e.g. `x-dead-letter-exchange: dlx`, `x-queue-type: quorum`,
    /// `x-message-ttl: 60000`. Values are strings, integers or booleans.
    #[serde(default)]
    pub arguments: BTreeMap<String, serde_json::Value>,
}

impl Default for DeclareQueue {
    fn default() -> Self {
        Self { durable: default_true(), arguments: BTreeMap::new() }
    }
}

/// An exchange to declare.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeclareExchange {
    /// Exchange name.
    pub name: String,
    /// Exchange type: `direct` (default), `fanout`, `topic` or `headers`.
    #[serde(default)]
    pub kind: ExchangeKind,
    /// Survives a broker restart. Default true.
    #[serde(default = "default_true")]
    pub durable: bool,
}

/// An exchange type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExchangeKind {
    /// Routes on an exact routing key.
    #[default]
    Direct,
    /// Routes to every bound queue.
    Fanout,
    /// Routes on routing-key patterns (`*`, `#`).
    Topic,
    /// Routes on message headers.
    Headers,
}

/// A binding of the consumed queue to an exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeclareBinding {
    /// The exchange (it must exist, or be `declare.exchange`).
    pub exchange: String,
    /// The routing key (or pattern for a topic exchange). Default empty.
    #[serde(default)]
    pub routing_key: String,
}

/// Reconnect backoff: the wait doubles after each failed attempt, from `initial` up to `max`, and
/// starts over once a connection consumed successfully.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AmqpReconnect {
    /// First wait. Default `500ms`.
    #[serde(default = "default_initial", with = "crate::duration")]
    #[schemars(with = "String")]
    pub initial: Duration,
    /// Longest wait. Default `30s`.
    #[serde(default = "default_max", with = "crate::duration")]
    #[schemars(with = "String")]
    pub max: Duration,
}

impl Default for AmqpReconnect {
    fn default() -> Self {
        Self { initial: default_initial(), max: default_max() }
    }
}

fn default_url() -> String {
    "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned()
}
const fn default_prefetch() -> u16 {
    256
}
const fn default_true() -> bool {
    true
}
const fn default_initial() -> Duration {
    Duration::from_millis(500)
}
const fn default_max() -> Duration {
    Duration::from_secs(30)
}

/// AMQP short strings (queue, exchange, tag and routing-key names) are at most 255 bytes.
fn check_short(value: &str, field: &str, allow_empty: bool) -> Result<(), FieldError> {
    if value.len() > 255 {
        return Err(FieldError::new(field, format!("at most 255 bytes, got {}", value.len())));
    }
    if !allow_empty && value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(field, "must not contain control characters"));
    }
    Ok(())
}

impl AmqpSourceConfig {
    /// Whether a message that failed for good is rejected without requeue (the queue has a
    /// dead-letter exchange) rather than acked.
    pub fn has_dead_letter_exchange(&self) -> bool {
        self.dead_letter_exchange.unwrap_or_else(|| {
            self.declare
                .as_ref()
                .and_then(|d| d.queue.as_ref())
                .is_some_and(|q| q.arguments.contains_key(DEAD_LETTER_EXCHANGE_ARGUMENT))
        })
    }

    /// Checks every field before anything connects.
    ///
    /// # Errors
    /// The first problem, with the field path.
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        let url =
            url::Url::parse(&self.url).map_err(|e| FieldError::new(format!("{at}.url"), format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "amqp" | "amqps") {
            return Err(FieldError::new(
                format!("{at}.url"),
                format!("must be an amqp:// or amqps:// URL, got scheme {:?}", url.scheme()),
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(FieldError::new(format!("{at}.url"), "needs a host"));
        }
        check_short(&self.queue, &format!("{at}.queue"), false)?;
        if self.queue.starts_with("amq.") && self.declare.as_ref().is_some_and(|d| d.queue.is_some()) {
            return Err(FieldError::new(
                format!("{at}.queue"),
                "names starting with `amq.` are reserved by the broker",
            ));
        }
        if self.prefetch == 0 {
            return Err(FieldError::new(format!("{at}.prefetch"), "must be at least 1"));
        }
        if let Some(tag) = &self.consumer_tag {
            check_short(tag, &format!("{at}.consumer_tag"), false)?;
        }
        if self.reconnect.initial.is_zero() {
            return Err(FieldError::new(format!("{at}.reconnect.initial"), "must be more than 0s"));
        }
        if self.reconnect.max < self.reconnect.initial {
            return Err(FieldError::new(format!("{at}.reconnect.max"), "must be at least reconnect.initial"));
        }
        if let Some(d) = &self.declare {
            let dat = format!("{at}.declare");
            if let Some(q) = &d.queue {
                for (name, value) in &q.arguments {
                    let field = format!("{dat}.queue.arguments.{name}");
                    check_short(name, &field, false)?;
                    let ok = match value {
                        serde_json::Value::String(s) => s.len() <= 65_535,
                        serde_json::Value::Bool(_) => true,
                        serde_json::Value::Number(n) => n.is_i64(),
                        _ => false,
                    };
                    if !ok {
                        return Err(FieldError::new(field, "must be a string, an integer or a boolean"));
                    }
                }
            }
            if let Some(e) = &d.exchange {
                check_short(&e.name, &format!("{dat}.exchange.name"), false)?;
                if e.name.starts_with("amq.") {
                    return Err(FieldError::new(
                        format!("{dat}.exchange.name"),
                        "names starting with `amq.` are reserved by the broker",
                    ));
                }
            }
            for (i, b) in d.bindings.iter().enumerate() {
                let bat = format!("{dat}.bindings[{i}]");
                check_short(&b.exchange, &format!("{bat}.exchange"), false)?;
                check_short(&b.routing_key, &format!("{bat}.routing_key"), true)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<AmqpSourceConfig, String> {
        let c: AmqpSourceConfig = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        c.validate("sources[0]").map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn defaults_and_declarations() {
        let c = parse("name: a\nqueue: orders\n").unwrap();
        assert_eq!(c.url, "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(c.prefetch, 256);
        assert_eq!(c.reconnect, AmqpReconnect::default());
        assert!(!c.has_dead_letter_exchange());
        let c = parse(
            "name: a\nqueue: orders\ndeclare:\n  queue: {arguments: {x-dead-letter-exchange: dlx, x-message-ttl: 1000}}\n  exchange: {name: shop, kind: topic}\n  bindings: [{exchange: shop, routing_key: 'order.#'}]\n",
        )
        .unwrap();
        let d = c.declare.as_ref().unwrap();
        assert!(d.queue.as_ref().unwrap().durable);
        assert_eq!(d.exchange.as_ref().unwrap().kind, ExchangeKind::Topic);
        assert!(c.has_dead_letter_exchange());
        let c = parse("name: a\nqueue: q\ndead_letter_exchange: true\n").unwrap();
        assert!(c.has_dead_letter_exchange());
    }

    #[test]
    fn bad_configs_name_the_field() {
        let err = |y: &str| parse(y).unwrap_err();
        assert!(err("name: a\n").contains("queue"));
        assert!(err("name: a\nqueue: ''\n").contains("sources[0].queue"));
        assert!(err("name: a\nqueue: q\nurl: 'http://x'\n").contains("sources[0].url"));
        assert!(err("name: a\nqueue: q\nurl: 'not a url'\n").contains("sources[0].url"));
        assert!(err("name: a\nqueue: q\nprefetch: 0\n").contains("sources[0].prefetch"));
        assert!(err("name: a\nqueue: q\nprefetch: 70000\n").contains("prefetch"));
        assert!(err("name: a\nqueue: q\nreconnect: {initial: 5s, max: 1s}\n").contains("sources[0].reconnect.max"));
        assert!(err("name: a\nqueue: q\ndeclare: {queue: {arguments: {x-a: [1]}}}\n")
            .contains("sources[0].declare.queue.arguments.x-a"));
        assert!(err("name: a\nqueue: q\ndeclare: {exchange: {name: amq.topic}}\n").contains("declare.exchange.name"));
        assert!(err("name: a\nqueue: q\ndeclare: {bindings: [{exchange: ''}]}\n")
            .contains("sources[0].declare.bindings[0].exchange"));
        assert!(err("name: a\nqueue: q\ncolour: red\n").contains("colour"));
    }
}
