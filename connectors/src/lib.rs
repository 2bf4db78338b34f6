//! The contract between message sources and the dispatcher: a [`Source`] turns messages into
//! [`Delivery`]s, each carrying an [`Ack`] that resolves to an [`Outcome`] only once every invocation
//! the message caused is terminal and its record is durable. No connectors exist yet; the HTTP
//! ingress in the broker uses the same contract.

pub mod amqp;
pub mod cron;
pub mod dead_letter;
pub mod kafka;
pub mod lag;
mod memory_state;
pub mod nats;
pub mod s3;

use std::fmt;
use std::sync::Arc;

pub use memory_state::MemoryState;
use switchyard_schemas::config::Ordering;
use switchyard_schemas::CloudEvent;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// What became of a delivery, reported to its source through the [`Ack`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every matched invocation is terminal and recorded. `failed` of them ended in FAILURE
    /// (dead-lettered); the source may now ack/commit the message.
    Completed {
        /// Invocations made (one per matched trigger).
        invocations: usize,
        /// Those that ended in FAILURE and were dead-lettered.
        failed: usize,
    },
    /// No trigger matched the event; it was counted and can be acked.
    Unmatched,
    /// The broker shut down before the invocations became terminal: do NOT ack; the message must be
    /// redelivered.
    Abandoned,
}

impl Outcome {
    /// Whether the source may ack/commit the message.
    pub const fn may_ack(&self) -> bool {
        !matches!(self, Self::Abandoned)
    }
}

/// The receiving half of an ack: the source awaits it before acking the message.
#[derive(Debug)]
pub struct AckReceiver(oneshot::Receiver<Outcome>);

impl AckReceiver {
    /// Waits for the outcome. A dispatcher that dropped the delivery without resolving it yields
    /// [`Outcome::Abandoned`], so a message is never acked by accident.
    pub async fn outcome(self) -> Outcome {
        self.0.await.unwrap_or(Outcome::Abandoned)
    }
}

/// The dispatcher's half: resolved exactly once.
#[derive(Debug)]
pub struct Ack(Option<oneshot::Sender<Outcome>>);

impl Ack {
    /// A connected ack pair.
    pub fn pair() -> (Self, AckReceiver) {
        let (tx, rx) = oneshot::channel();
        (Self(Some(tx)), AckReceiver(rx))
    }

    /// An ack nobody waits for (fire-and-forget ingress).
    pub const fn detached() -> Self {
        Self(None)
    }

    /// Resolves the ack. Later calls do nothing.
    pub fn resolve(&mut self, outcome: Outcome) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(outcome);
        }
    }
}

/// One message from a source, normalised to a CloudEvent.
#[derive(Debug)]
pub struct Delivery {
    /// The event.
    pub event: CloudEvent,
    /// Resolved when the message may be acked (or must not be).
    pub ack: Ack,
    /// When set, the event is not invoked: each matched trigger gets a SKIPPED record with this reason.
    pub skip: Option<String>,
    /// When cancelled, invocations still running stop and are recorded as FAILURE (`cancelled`).
    pub cancel: Option<CancellationToken>,
    /// When set, the message could not be decoded: the event (the message wrapped as a plain one)
    /// is not invoked; each matched trigger gets a FAILURE record, dead-lettered, with error kind
    /// `decode` and this message.
    pub undecodable: Option<String>,
    /// Where the message sits in an ordered stream (a Kafka partition and record key). Each matched
    /// trigger orders its invocations by it according to its `ordering`; `None`: no order.
    pub order: Option<OrderKey>,
    /// When cancelled, invocations that have not started yet (waiting for their turn in an ordered
    /// lane) are not made and not recorded, and the delivery resolves [`Outcome::Abandoned`] so the
    /// message is redelivered (a Kafka partition revoked from this member).
    pub withdraw: Option<CancellationToken>,
    /// The S3 client of the `type: s3` source the event came from, for the object access of the
    /// triggers it matches (`triggers[].object`). `None` for every other source: those triggers use
    /// their `object.aws`.
    pub object_client: Option<s3::object::ObjectClient>,
}

/// The position of a message in an ordered stream, for per-trigger ordering.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderKey {
    /// The ordered stream, e.g. `orders/3` for partition 3 of topic `orders`.
    pub stream: Arc<str>,
    /// The message's key within the stream (a Kafka record key), when it has one.
    pub key: Option<Arc<[u8]>>,
    /// The ordering for triggers that set none (the source's `ordering`).
    pub default: Ordering,
}

impl Delivery {
    /// A delivery and the receiver its source awaits.
    pub fn new(event: CloudEvent) -> (Self, AckReceiver) {
        let (ack, rx) = Ack::pair();
        let d = Self {
            event,
            ack,
            skip: None,
            cancel: None,
            undecodable: None,
            order: None,
            withdraw: None,
            object_client: None,
        };
        (d, rx)
    }

    /// A delivery that is recorded as SKIPPED (with `reason`) instead of invoked.
    pub fn skipped(event: CloudEvent, reason: impl Into<String>) -> (Self, AckReceiver) {
        let (mut d, rx) = Self::new(event);
        d.skip = Some(reason.into());
        (d, rx)
    }

    /// A message that could not be decoded, wrapped as `event`: recorded as FAILURE, dead-lettered,
    /// error kind `decode`, with `error` as the message, instead of invoked.
    pub fn undecodable(event: CloudEvent, error: impl Into<String>) -> (Self, AckReceiver) {
        let (mut d, rx) = Self::new(event);
        d.undecodable = Some(error.into());
        (d, rx)
    }

    /// Places the delivery in an ordered stream; `withdraw` takes back what has not started yet.
    #[must_use]
    pub fn with_order(mut self, order: OrderKey, withdraw: CancellationToken) -> Self {
        self.order = Some(order);
        self.withdraw = Some(withdraw);
        self
    }

    /// Attaches the S3 client of the `type: s3` source the event came from (see [`Self::object_client`]).
    #[must_use]
    pub fn with_object_client(mut self, client: s3::object::ObjectClient) -> Self {
        self.object_client = Some(client);
        self
    }

    /// Lets the source cancel the delivery's running invocations with `token`.
    #[must_use]
    pub fn with_cancel(mut self, token: CancellationToken) -> Self {
        self.cancel = Some(token);
        self
    }
}

/// What a source is given to run: where deliveries go, and when to stop.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// Deliveries go here; the channel is bounded, so a full dispatcher slows the source down.
    pub deliveries: mpsc::Sender<Delivery>,
    /// Cancelled at shutdown: stop taking messages, wait for in-flight acks, commit, return.
    pub shutdown: CancellationToken,
    /// The source's name from the configuration.
    pub name: String,
    /// Shared, durable state in the broker's store (offsets, last fired ticks, claims).
    pub state: Arc<dyn SourceState>,
}

/// A store failure seen by a source.
#[derive(Debug, Clone, thiserror::Error)]
#[error("source state {operation}: {message}")]
pub struct StateError {
    /// What was being done.
    pub operation: &'static str,
    /// The store's message.
    pub message: String,
}

/// Durable key/value state and once-only claims, shared by every replica on the same store.
#[async_trait::async_trait]
pub trait SourceState: Send + Sync + fmt::Debug + 'static {
    /// Claims `key` for `source` once across every replica sharing the store: `true` for the one
    /// caller that won, `false` for everyone after it.
    ///
    /// # Errors
    /// [`StateError`] when the store fails (the caller must not assume it won).
    async fn claim(&self, source: &str, key: &str) -> Result<bool, StateError>;

    /// Reads a value.
    ///
    /// # Errors
    /// [`StateError`] when the store fails.
    async fn get(&self, source: &str, key: &str) -> Result<Option<String>, StateError>;

    /// Writes a value (last write wins).
    ///
    /// # Errors
    /// [`StateError`] when the store fails.
    async fn put(&self, source: &str, key: &str, value: &str) -> Result<(), StateError>;
}

/// Builds the source a configuration entry describes (the one explicit registry of connectors).
pub fn build(config: &switchyard_schemas::config::SourceConfig) -> Box<dyn Source> {
    use switchyard_schemas::config::SourceConfig;
    match config {
        SourceConfig::Amqp(c) => Box::new(amqp::AmqpSource::new(c.clone())),
        SourceConfig::Cron(c) => Box::new(cron::CronSource::new(c.clone())),
        SourceConfig::Kafka(c) => Box::new(kafka::KafkaSource::new(c.clone())),
        SourceConfig::Nats(c) => Box::new(nats::NatsSource::new(c.clone())),
        SourceConfig::S3(c) => Box::new(s3::S3Source::new(c.clone())),
    }
}

/// Why a source stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source could not connect or lost its connection for good.
    #[error("source {source_name}: connection failed: {message}")]
    Connection {
        /// The source's name.
        source_name: String,
        /// What happened.
        message: String,
    },
    /// The dispatcher is gone (the broker is shutting down).
    #[error("source {source_name}: dispatcher closed")]
    DispatcherClosed {
        /// The source's name.
        source_name: String,
    },
}

impl SourceError {
    /// Whether running the source again may help.
    pub const fn retry_hint(&self) -> bool {
        matches!(self, Self::Connection { .. })
    }
}

/// A message source.
#[async_trait::async_trait]
pub trait Source: Send + 'static {
    /// Consumes messages until `ctx.shutdown` is cancelled, then drains and returns.
    ///
    /// # Errors
    /// [`SourceError`] when the source cannot go on.
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError>;
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Completed { invocations, failed } => {
                write!(f, "completed ({invocations} invocations, {failed} failed)")
            }
            Self::Unmatched => f.write_str("unmatched"),
            Self::Abandoned => f.write_str("abandoned"),
        }
    }
}

/// Fixtures the bindings' unit tests share.
#[cfg(test)]
pub(crate) mod test_support {
    use switchyard_schemas::{CloudEvent, Data, ExtensionValue};

    /// A JSON event with a subject, non-ASCII data and one extension: what every binding must round-trip.
    pub(crate) fn sample_event() -> CloudEvent {
        let mut e = CloudEvent::new("id-1", "/shop", "com.example.order");
        e.subject = Some("orders/1".into());
        e.datacontenttype = Some("application/json".into());
        e.data = Some(Data::Json(serde_json::json!({"n": 1, "name": "Zoë"})));
        e.extensions.insert("tenant".into(), ExtensionValue::String("acme".into()));
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ack_resolves_once_and_dropped_ack_means_abandoned() {
        let (mut ack, rx) = Ack::pair();
        ack.resolve(Outcome::Unmatched);
        ack.resolve(Outcome::Completed { invocations: 1, failed: 0 });
        assert_eq!(rx.outcome().await, Outcome::Unmatched);

        let (ack, rx) = Ack::pair();
        drop(ack);
        let outcome = rx.outcome().await;
        assert_eq!(outcome, Outcome::Abandoned);
        assert!(!outcome.may_ack());
    }
}
