//! Configuration of message sources: one internally tagged enum (`type: nats`, `type: amqp`, `type: kafka`,
//! `type: s3`, ...)
//! with one variant per connector. Adding a connector = a config module here, a variant, and a
//! match arm in `switchyard_connectors::build`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::FieldError;

pub mod amqp;
pub mod cron;
pub mod kafka;
pub mod nats;
pub mod s3;
pub use amqp::AmqpSourceConfig;
pub use cron::CronSourceConfig;
pub use kafka::KafkaSourceConfig;
pub use nats::NatsSourceConfig;
pub use s3::S3SourceConfig;

/// A message source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    /// RabbitMQ (AMQP 0-9-1): a queue consumed with manual acks (at-least-once).
    Amqp(AmqpSourceConfig),
    /// Cron: a tick event at every scheduled instant of a cron expression in an IANA timezone.
    Cron(CronSourceConfig),
    /// Kafka: a consumer group member with at-least-once delivery and per-key ordering.
    Kafka(KafkaSourceConfig),
    /// NATS: core subscriptions (at-most-once) or a JetStream durable consumer (at-least-once).
    Nats(NatsSourceConfig),
    /// S3 object notifications from an SQS queue, SNS HTTP deliveries or webhook posts.
    S3(S3SourceConfig),
}

impl SourceConfig {
    /// The source's unique name.
    pub fn name(&self) -> &str {
        match self {
            Self::Amqp(c) => &c.name,
            Self::Cron(c) => &c.name,
            Self::Kafka(c) => &c.name,
            Self::Nats(c) => &c.name,
            Self::S3(c) => &c.name,
        }
    }

    /// Whether plain messages holding S3 notification JSON become S3 events (`s3_notifications` of
    /// the `kafka`, `nats` and `amqp` sources).
    pub const fn expands_s3_notifications(&self) -> bool {
        match self {
            Self::Amqp(c) => c.s3_notifications,
            Self::Kafka(c) => c.s3_notifications,
            Self::Nats(c) => c.s3_notifications,
            Self::Cron(_) | Self::S3(_) => false,
        }
    }

    /// Checks the source's own fields. `at` is the field path, e.g. `sources[0]`.
    ///
    /// # Errors
    /// The first problem, with the field path.
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        match self {
            Self::Amqp(c) => c.validate(at),
            Self::Cron(c) => c.validate(at),
            Self::Kafka(c) => c.validate(at),
            Self::Nats(c) => c.validate(at),
            Self::S3(c) => c.validate(at),
        }
    }
}
