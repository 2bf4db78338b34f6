//! The NATS source task: connect (with reconnects handled by the client), then either core
//! subscriptions or a JetStream durable pull consumer, bounded by `max_in_flight`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, stream};
use futures::StreamExt;
use switchyard_schemas::sources::nats::{DeliverPolicy, JetStreamConfig, StreamStorage};
use switchyard_schemas::sources::NatsSourceConfig;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::binding::{self, Incoming};
use crate::{Delivery, Outcome, Source, SourceContext, SourceError};

/// Longest wait between reconnect attempts of the JetStream consumer.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A configured NATS source.
#[derive(Debug)]
pub struct NatsSource {
    config: NatsSourceConfig,
}

impl NatsSource {
    /// A source for `config` (validated at config load).
    pub fn new(config: NatsSourceConfig) -> Self {
        Self { config }
    }

    fn err(&self, message: impl Into<String>) -> SourceError {
        SourceError::Connection { source_name: self.config.name.clone(), message: message.into() }
    }

    pub(crate) async fn connect(&self) -> Result<async_nats::Client, SourceError> {
        let mut opts = async_nats::ConnectOptions::new()
            .name(format!("switchyard-{}", self.config.name))
            .retry_on_initial_connect()
            .max_reconnects(None);
        if let Some(t) = &self.config.token {
            opts = opts.token(t.clone());
        }
        if let (Some(u), Some(p)) = (&self.config.user, &self.config.password) {
            opts = opts.user_and_password(u.clone(), p.clone());
        }
        let servers: Vec<async_nats::ServerAddr> = self
            .config
            .servers
            .iter()
            .map(|s| s.parse().map_err(|e| self.err(format!("server {s:?}: {e}"))))
            .collect::<Result<_, _>>()?;
        opts.connect(servers).await.map_err(|e| self.err(format!("connect: {e}")))
    }

    fn server_label(&self) -> String {
        self.config
            .servers
            .first()
            .and_then(|s| url::Url::parse(s).ok())
            .map(|u| format!("{}:{}", u.host_str().unwrap_or("localhost"), u.port().unwrap_or(4222)))
            .unwrap_or_else(|| "localhost:4222".to_owned())
    }
}

#[async_trait::async_trait]
impl Source for NatsSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let client = tokio::select! {
            c = self.connect() => c?,
            () = ctx.shutdown.cancelled() => return Ok(()),
        };
        let result = match &self.config.jetstream {
            Some(js) => self.run_jetstream(&client, js, &ctx).await,
            None => self.run_core(&client, &ctx).await,
        };
        let _ = client.flush().await;
        result
    }
}

impl NatsSource {
    async fn run_core(&self, client: &async_nats::Client, ctx: &SourceContext) -> Result<(), SourceError> {
        tracing::warn!(
            subjects = ?self.config.subjects,
            "core NATS is at-most-once: messages published while Switchyard is down or in flight at shutdown are lost; use jetstream for at-least-once"
        );
        let mut subs = Vec::new();
        for subject in &self.config.subjects {
            let sub = match &self.config.queue_group {
                Some(g) => client.queue_subscribe(subject.clone(), g.clone()).await,
                None => client.subscribe(subject.clone()).await,
            }
            .map_err(|e| self.err(format!("subscribe {subject}: {e}")))?;
            subs.push(sub);
        }
        let mut messages = futures::stream::select_all(subs);
        let limit = Arc::new(Semaphore::new(self.config.max_in_flight));
        let tracker = TaskTracker::new();
        let server = self.server_label();
        loop {
            let permit = tokio::select! {
                biased;
                () = ctx.shutdown.cancelled() => break,
                p = Arc::clone(&limit).acquire_owned() => p.map_err(|_| self.err("in-flight limit closed"))?,
            };
            let msg = tokio::select! {
                biased;
                () = ctx.shutdown.cancelled() => break,
                m = messages.next() => match m {
                    Some(m) => m,
                    None => break,
                },
            };
            let event = binding::to_event(Incoming {
                subject: msg.subject.as_str(),
                headers: msg.headers.as_ref(),
                payload: &msg.payload,
                server: &server,
                stable_id: None,
            });
            tracing::trace!(subject = %msg.subject, event_id = %event.id, "nats message");
            let (delivery, ack) = Delivery::new(event);
            if ctx.deliveries.send(delivery).await.is_err() {
                return Err(SourceError::DispatcherClosed { source_name: self.config.name.clone() });
            }
            tracker.spawn(async move {
                let _ = ack.outcome().await;
                drop(permit);
            });
        }
        // Unsubscribe first, then let what is in flight finish.
        drop(messages);
        tracker.close();
        tracker.wait().await;
        Ok(())
    }

    async fn run_jetstream(
        &self,
        client: &async_nats::Client,
        js_config: &JetStreamConfig,
        ctx: &SourceContext,
    ) -> Result<(), SourceError> {
        let js = jetstream::new(client.clone());
        let durable = self.config.durable_name().unwrap_or_else(|| self.config.name.clone());
        let limit = Arc::new(Semaphore::new(self.config.max_in_flight));
        let tracker = TaskTracker::new();
        let server = self.server_label();
        let mut backoff = Duration::from_millis(100);
        'connect: loop {
            let consumer = tokio::select! {
                biased;
                () = ctx.shutdown.cancelled() => break 'connect,
                c = self.consumer(&js, js_config, &durable) => c,
            };
            let consumer = match consumer {
                Ok(c) => c,
                Err(e) if e.retry_hint() => {
                    tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "jetstream consumer not ready; retrying");
                    tokio::select! {
                        () = ctx.shutdown.cancelled() => break 'connect,
                        () = tokio::time::sleep(backoff) => {},
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let batch = self.config.max_in_flight.clamp(1, 256);
            let messages =
                consumer.stream().max_messages_per_batch(batch).heartbeat(Duration::from_secs(5)).messages().await;
            let mut messages = match messages {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "jetstream pull failed; retrying");
                    tokio::select! {
                        () = ctx.shutdown.cancelled() => break 'connect,
                        () = tokio::time::sleep(backoff) => {},
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            tracing::info!(stream = %js_config.stream, durable = %durable, "consuming");
            loop {
                let permit = tokio::select! {
                    biased;
                    () = ctx.shutdown.cancelled() => break 'connect,
                    p = Arc::clone(&limit).acquire_owned() => p.map_err(|_| self.err("in-flight limit closed"))?,
                };
                let next = tokio::select! {
                    biased;
                    () = ctx.shutdown.cancelled() => break 'connect,
                    m = messages.next() => m,
                };
                let msg = match next {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "jetstream message stream failed; resubscribing");
                        break;
                    }
                    None => break,
                };
                backoff = Duration::from_millis(100);
                let stable_id = msg.info().ok().map(|i| format!("{}:{}", i.stream, i.stream_sequence));
                let event = binding::to_event(Incoming {
                    subject: msg.subject.as_str(),
                    headers: msg.headers.as_ref(),
                    payload: &msg.payload,
                    server: &server,
                    stable_id: stable_id.as_deref(),
                });
                tracing::trace!(subject = %msg.subject, event_id = %event.id, "jetstream message");
                let (delivery, ack) = Delivery::new(event);
                if ctx.deliveries.send(delivery).await.is_err() {
                    return Err(SourceError::DispatcherClosed { source_name: self.config.name.clone() });
                }
                let keepalive = (js_config.ack_wait / 3).max(Duration::from_millis(300));
                // `trace`, not `debug`: spans down to `debug` are exported, and a span per ack
                // (outside the message's trace) is not worth exporting.
                let span = tracing::trace_span!("jetstream_ack", subject = %msg.subject);
                tracker.spawn(
                    async move {
                        let outcome = {
                            let wait = ack.outcome();
                            tokio::pin!(wait);
                            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
                            loop {
                                tokio::select! {
                                    o = &mut wait => break o,
                                    _ = tick.tick() => {
                                        // Still running (or retrying): keep the server from redelivering.
                                        if let Err(e) = msg.ack_with(jetstream::AckKind::Progress).await {
                                            tracing::debug!(error = %e, "in-progress ack failed");
                                        }
                                    }
                                }
                            }
                        };
                        let result = match outcome {
                            Outcome::Completed { .. } | Outcome::Unmatched => msg.ack().await,
                            // Not processed (shutdown): let another consumer have it now.
                            Outcome::Abandoned => msg.ack_with(jetstream::AckKind::Nak(None)).await,
                        };
                        if let Err(e) = result {
                            tracing::warn!(error = %e, "ack failed; the server will redeliver the message");
                        }
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
            tokio::select! {
                () = ctx.shutdown.cancelled() => break 'connect,
                () = tokio::time::sleep(backoff) => {},
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        tracker.close();
        tracker.wait().await;
        Ok(())
    }

    async fn consumer(
        &self,
        js: &jetstream::Context,
        c: &JetStreamConfig,
        durable: &str,
    ) -> Result<jetstream::consumer::Consumer<pull::Config>, SourceError> {
        let stream = match &c.create {
            Some(create) => js
                .get_or_create_stream(stream::Config {
                    name: c.stream.clone(),
                    subjects: create.subjects.clone(),
                    storage: match create.storage {
                        StreamStorage::File => stream::StorageType::File,
                        StreamStorage::Memory => stream::StorageType::Memory,
                    },
                    ..Default::default()
                })
                .await
                .map_err(|e| self.err(format!("stream {}: {e}", c.stream)))?,
            None => js.get_stream(&c.stream).await.map_err(|e| self.err(format!("stream {}: {e}", c.stream)))?,
        };
        let deliver_policy = match c.deliver_policy {
            DeliverPolicy::All => jetstream::consumer::DeliverPolicy::All,
            DeliverPolicy::New => jetstream::consumer::DeliverPolicy::New,
            DeliverPolicy::ByStartTime => {
                let t = c.start_time.as_deref().unwrap_or_default();
                let secs = chrono::DateTime::parse_from_rfc3339(t).map(|d| d.timestamp()).unwrap_or(0);
                let start_time = time::OffsetDateTime::from_unix_timestamp(secs)
                    .map_err(|e| self.err(format!("start_time: {e}")))?;
                jetstream::consumer::DeliverPolicy::ByStartTime { start_time }
            }
        };
        let mut config = pull::Config {
            durable_name: Some(durable.to_owned()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: c.ack_wait,
            max_deliver: c.max_deliver,
            max_ack_pending: i64::try_from(self.config.max_in_flight).unwrap_or(i64::MAX),
            deliver_policy,
            ..Default::default()
        };
        match c.filter_subjects.as_slice() {
            [] => {}
            [one] => config.filter_subject = one.clone(),
            many => config.filter_subjects = many.to_vec(),
        }
        stream
            .get_or_create_consumer(durable, config)
            .await
            .map_err(|e| self.err(format!("consumer {durable} on stream {}: {e}", c.stream)))
    }
}
