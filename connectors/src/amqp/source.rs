//! The AMQP source: consumes one RabbitMQ queue with manual acks and settles each message only
//! once its delivery's outcome is known (every invocation terminal and recorded); reconnects with
//! exponential backoff; on shutdown cancels the consumer, waits for in-flight acks and closes.

use std::time::Duration;

use futures::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties};
use switchyard_schemas::sources::amqp::{AmqpDeclare, ExchangeKind};
use switchyard_schemas::sources::AmqpSourceConfig;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::binding::{self, Origin};
use crate::{AckReceiver, Delivery, Outcome, Source, SourceContext, SourceError};

/// How long one connection attempt may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an AMQP session ended (the source then reconnects with backoff).
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    /// The connection or the channel could not be opened.
    #[error("source {source_name}: cannot connect to {url}: {source}")]
    Connect {
        /// The source's name.
        source_name: String,
        /// The broker URL, without the password.
        url: String,
        /// The client's error.
        #[source]
        source: lapin::Error,
    },
    /// Connecting took longer than 30 s.
    #[error("source {source_name}: connecting to {url} timed out")]
    ConnectTimeout {
        /// The source's name.
        source_name: String,
        /// The broker URL, without the password.
        url: String,
    },
    /// Declaring the queue, the exchange or a binding failed (for example a queue that exists with
    /// other arguments).
    #[error("source {source_name}: declaring {what} failed: {source}")]
    Declare {
        /// The source's name.
        source_name: String,
        /// What was being declared, e.g. `queue orders`.
        what: String,
        /// The client's error.
        #[source]
        source: lapin::Error,
    },
    /// Setting the prefetch or starting the consumer failed (for example the queue does not exist).
    #[error("source {source_name}: cannot consume queue {queue}: {source}")]
    Consume {
        /// The source's name.
        source_name: String,
        /// The queue.
        queue: String,
        /// The client's error.
        #[source]
        source: lapin::Error,
    },
    /// The connection or the channel failed while consuming.
    #[error("source {source_name}: lost the consumer of queue {queue}: {source}")]
    Lost {
        /// The source's name.
        source_name: String,
        /// The queue.
        queue: String,
        /// The client's error.
        #[source]
        source: lapin::Error,
    },
    /// The server cancelled the consumer (the queue was deleted, or the node went down).
    #[error("source {source_name}: the server cancelled the consumer of queue {queue}")]
    Cancelled {
        /// The source's name.
        source_name: String,
        /// The queue.
        queue: String,
    },
}

impl AmqpError {
    /// Whether connecting again may help. Every session error is retried with backoff (a missing
    /// queue or conflicting declaration may be fixed by an operator); this is `false` only for
    /// declarations the server refused as conflicting, which need a configuration change.
    pub fn retry_hint(&self) -> bool {
        match self {
            Self::Declare { source, .. } => !matches!(
                source.kind(),
                lapin::ErrorKind::ProtocolError(e) if e.get_id() == 406
            ),
            _ => true,
        }
    }
}

/// A RabbitMQ queue consumer (competing consumers: replicas on the same queue share its messages).
#[derive(Debug)]
pub struct AmqpSource {
    config: AmqpSourceConfig,
    /// `source` of wrapped plain messages.
    plain_source: String,
    /// Failed messages are rejected without requeue (dead-lettered by RabbitMQ) instead of acked.
    dead_letter_exchange: bool,
}

impl AmqpSource {
    /// A source for `config` (already validated).
    pub fn new(config: AmqpSourceConfig) -> Self {
        let plain_source = binding::plain_source(&config.url, &config.queue);
        let dead_letter_exchange = config.has_dead_letter_exchange();
        Self { config, plain_source, dead_letter_exchange }
    }

    /// The URL without its password, for messages.
    fn redacted_url(&self) -> String {
        match url::Url::parse(&self.config.url) {
            Ok(mut u) => {
                if u.password().is_some() {
                    let _ = u.set_password(Some("***"));
                }
                u.to_string()
            }
            Err(_) => "(invalid url)".to_owned(),
        }
    }

    /// One connection: connect, declare, consume until the connection is lost (`Err`) or shutdown
    /// (`Ok`). `consuming` is set once the consumer started, which resets the backoff.
    async fn session(&self, ctx: &SourceContext, consuming: &mut bool) -> Result<(), AmqpError> {
        let name = &ctx.name;
        let connect_err = |source| AmqpError::Connect { source_name: name.clone(), url: self.redacted_url(), source };
        let properties = ConnectionProperties::default().with_connection_name(format!("switchyard:{name}").into());
        let connection = tokio::select! {
            biased;
            () = ctx.shutdown.cancelled() => return Ok(()),
            r = tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(&self.config.url, properties)) => match r {
                Err(_) => return Err(AmqpError::ConnectTimeout { source_name: name.clone(), url: self.redacted_url() }),
                Ok(r) => r.map_err(connect_err)?,
            },
        };
        let result = self.consume(ctx, &connection, consuming).await;
        if connection.status().connected() {
            let _ = connection.close(200, "switchyard source stopping".into()).await;
        }
        result
    }

    async fn consume(
        &self,
        ctx: &SourceContext,
        connection: &Connection,
        consuming: &mut bool,
    ) -> Result<(), AmqpError> {
        let name = &ctx.name;
        let queue = &self.config.queue;
        let channel = connection.create_channel().await.map_err(|source| AmqpError::Connect {
            source_name: name.clone(),
            url: self.redacted_url(),
            source,
        })?;
        if let Some(declare) = &self.config.declare {
            declare_topology(&channel, queue, declare).await.map_err(|(what, source)| AmqpError::Declare {
                source_name: name.clone(),
                what,
                source,
            })?;
        }
        let consume_err = |source| AmqpError::Consume { source_name: name.clone(), queue: queue.clone(), source };
        channel.basic_qos(self.config.prefetch, BasicQosOptions::default()).await.map_err(consume_err)?;
        let tag = ShortString::from(self.config.consumer_tag.clone().unwrap_or_default());
        let mut consumer = channel
            .basic_consume(queue.as_str().into(), tag, BasicConsumeOptions::default(), FieldTable::default())
            .await
            .map_err(consume_err)?;
        *consuming = true;
        tracing::info!(queue = %queue, prefetch = self.config.prefetch, consumer_tag = %consumer.tag(), "consuming");

        // Ack tasks of this channel; waited for at shutdown. Those of a lost channel are not: their
        // acks fail (the broker redelivers those messages) and they end when their outcome arrives.
        let acks = TaskTracker::new();
        let ended = loop {
            let next = tokio::select! {
                biased;
                () = ctx.shutdown.cancelled() => break Ok(()),
                next = consumer.next() => next,
            };
            match next {
                Some(Ok(delivery)) => {
                    if !self.handle(ctx, delivery, &acks).await {
                        break Ok(());
                    }
                }
                Some(Err(source)) => {
                    break Err(AmqpError::Lost { source_name: name.clone(), queue: queue.clone(), source })
                }
                None => break Err(AmqpError::Cancelled { source_name: name.clone(), queue: queue.clone() }),
            }
        };
        if ended.is_ok() {
            // Shutdown: take no more messages (those already prefetched but not handed on stay
            // unacked and are redelivered when the channel closes), settle what is in flight, close.
            if let Err(e) = channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()).await {
                tracing::debug!(error = %e, "basic.cancel failed");
            }
            acks.close();
            tracing::info!(in_flight = acks.len(), "consumer cancelled; waiting for in-flight acks");
            // Bounded by the broker: after `server.shutdown_grace` its dispatcher resolves every
            // remaining ack (Abandoned), so these tasks end.
            acks.wait().await;
            let _ = channel.close(200, "switchyard source stopping".into()).await;
        }
        ended
    }

    /// Hands one message to the dispatcher and spawns the task that settles it. `false` when the
    /// source must stop (shutdown, or the dispatcher is gone); the message then stays unacked.
    async fn handle(&self, ctx: &SourceContext, message: lapin::message::Delivery, acks: &TaskTracker) -> bool {
        let lapin::message::Delivery { delivery_tag, routing_key, redelivered, properties, data, acker, .. } = message;
        let origin = Origin { source: &self.plain_source, routing_key: routing_key.as_str() };
        let (delivery, outcome, invalid) = match binding::from_amqp(&properties, &data, origin) {
            Ok(event) => {
                let (d, rx) = Delivery::new(event);
                (d, rx, false)
            }
            Err(e) => {
                // Not lost silently, never requeued: SKIPPED records (for the triggers the wrapped
                // message matches), this error, and the dead-letter exchange when there is one.
                let event = binding::wrap_plain(&properties, &data, origin);
                tracing::error!(
                    queue = %self.config.queue, delivery_tag, event_id = %event.id, error = %e,
                    dead_letter_exchange = self.dead_letter_exchange,
                    "message is not a valid CloudEvent; recording it as SKIPPED and not requeueing it"
                );
                let (d, rx) = Delivery::skipped(event, format!("not a valid CloudEvent: {e}"));
                (d, rx, true)
            }
        };
        tracing::debug!(delivery_tag, redelivered, event_id = %delivery.event.id, "message received");
        let sent = tokio::select! {
            biased;
            () = ctx.shutdown.cancelled() => false,
            r = ctx.deliveries.send(delivery) => r.is_ok(),
        };
        if !sent {
            return false;
        }
        let dead_letter_exchange = self.dead_letter_exchange;
        // A `trace` span, like the Kafka source's: the OpenTelemetry layer exports spans down to
        // `debug`, and a span per ack (outside the message's trace) is not worth exporting.
        acks.spawn(
            settle(acker, outcome, invalid, dead_letter_exchange)
                .instrument(tracing::trace_span!("amqp_ack", source = %ctx.name, delivery_tag)),
        );
        true
    }
}

/// Waits for the outcome, then acks, rejects or requeues the message.
///
/// | outcome | queue with a dead-letter exchange | without |
/// |---|---|---|
/// | completed, none failed / unmatched | ack | ack |
/// | completed, some failed (dead-lettered) / not a CloudEvent | nack, no requeue | ack |
/// | abandoned (shutdown) | nack, requeue | nack, requeue |
async fn settle(acker: lapin::Acker, outcome: AckReceiver, invalid: bool, dead_letter_exchange: bool) {
    let outcome = outcome.outcome().await;
    let failed = invalid || matches!(outcome, Outcome::Completed { failed, .. } if failed > 0);
    let (action, result) = match outcome {
        Outcome::Abandoned => ("requeue", acker.nack(BasicNackOptions { multiple: false, requeue: true }).await),
        _ if failed && dead_letter_exchange => {
            ("reject", acker.nack(BasicNackOptions { multiple: false, requeue: false }).await)
        }
        _ => ("ack", acker.ack(BasicAckOptions::default()).await),
    };
    match result {
        Ok(true) => tracing::trace!(action, %outcome, "settled"),
        Ok(false) => tracing::debug!(action, %outcome, "channel gone before settling; the broker redelivers"),
        Err(e) => tracing::debug!(action, %outcome, error = %e, "settling failed; the broker redelivers"),
    }
}

/// Declares the exchange, the queue and the bindings. On error: what failed, and why.
async fn declare_topology(channel: &Channel, queue: &str, declare: &AmqpDeclare) -> Result<(), (String, lapin::Error)> {
    if let Some(ex) = &declare.exchange {
        let kind = match ex.kind {
            ExchangeKind::Direct => lapin::ExchangeKind::Direct,
            ExchangeKind::Fanout => lapin::ExchangeKind::Fanout,
            ExchangeKind::Topic => lapin::ExchangeKind::Topic,
            ExchangeKind::Headers => lapin::ExchangeKind::Headers,
        };
        let options = ExchangeDeclareOptions { durable: ex.durable, ..ExchangeDeclareOptions::default() };
        channel
            .exchange_declare(ex.name.as_str().into(), kind, options, FieldTable::default())
            .await
            .map_err(|e| (format!("exchange {}", ex.name), e))?;
    }
    if let Some(q) = &declare.queue {
        let mut arguments = FieldTable::default();
        for (name, value) in &q.arguments {
            let v = match value {
                serde_json::Value::Bool(b) => AMQPValue::Boolean(*b),
                serde_json::Value::Number(n) => AMQPValue::LongLongInt(n.as_i64().unwrap_or_default()),
                other => AMQPValue::LongString(other.as_str().unwrap_or_default().into()),
            };
            arguments.insert(name.as_str().into(), v);
        }
        let options = QueueDeclareOptions { durable: q.durable, ..QueueDeclareOptions::default() };
        channel.queue_declare(queue.into(), options, arguments).await.map_err(|e| (format!("queue {queue}"), e))?;
    }
    for b in &declare.bindings {
        channel
            .queue_bind(
                queue.into(),
                b.exchange.as_str().into(),
                b.routing_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| (format!("binding of queue {queue} to exchange {} ({:?})", b.exchange, b.routing_key), e))?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl Source for AmqpSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let reconnect = &self.config.reconnect;
        let mut wait = reconnect.initial;
        while !ctx.shutdown.is_cancelled() {
            let mut consuming = false;
            let session = self.session(&ctx, &mut consuming).await;
            let Err(e) = session else {
                break;
            };
            if consuming {
                wait = reconnect.initial;
            }
            tracing::warn!(error = %e, retry_hint = e.retry_hint(), retry_in = ?wait, "AMQP session ended; reconnecting");
            tokio::select! {
                biased;
                () = ctx.shutdown.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
            wait = wait.saturating_mul(2).min(reconnect.max);
        }
        Ok(())
    }
}
