//! The Kafka source: a consumer thread owns the librdkafka consumer (poll, pause/resume, commits,
//! rebalance callbacks that block until revoked partitions drained), an async scheduler hands
//! messages to the dispatcher in partition order, each carrying its partition and key so every
//! trigger can order its own invocations, and one small task per message waits for its outcome and
//! marks its offset terminal.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use switchyard_schemas::sources::kafka::StartOffset;
use switchyard_schemas::sources::KafkaSourceConfig;
use switchyard_schemas::CloudEvent;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::binding::{self, Incoming};
use super::offsets::{Offsets, Tp};
use crate::{Delivery, OrderKey, Source, SourceContext, SourceError};

/// A Kafka consumer-group member.
#[derive(Debug)]
pub struct KafkaSource {
    config: KafkaSourceConfig,
}

impl KafkaSource {
    /// A source for `config` (already validated).
    pub fn new(config: KafkaSourceConfig) -> Self {
        Self { config }
    }
}

/// The librdkafka configuration of a source's consumer.
pub fn client_config(config: &KafkaSourceConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in &config.properties {
        c.set(k, v);
    }
    c.set("bootstrap.servers", config.bootstrap_servers.join(","))
        .set("group.id", config.group_id())
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.offset.reset",
            match config.start_offset {
                StartOffset::Earliest => "earliest",
                StartOffset::Latest => "latest",
            },
        );
    if !config.properties.contains_key("client.id") {
        c.set("client.id", format!("switchyard-{}", config.name));
    }
    let protocol = match (&config.tls, &config.sasl) {
        (None, None) => "plaintext",
        (Some(_), None) => "ssl",
        (None, Some(_)) => "sasl_plaintext",
        (Some(_), Some(_)) => "sasl_ssl",
    };
    c.set("security.protocol", protocol);
    if let Some(tls) = &config.tls {
        for (key, value) in [
            ("ssl.ca.location", &tls.ca_file),
            ("ssl.certificate.location", &tls.cert_file),
            ("ssl.key.location", &tls.key_file),
            ("ssl.key.password", &tls.key_password),
        ] {
            if let Some(v) = value {
                c.set(key, v);
            }
        }
        c.set("enable.ssl.certificate.verification", if tls.verify { "true" } else { "false" });
    }
    if let Some(sasl) = &config.sasl {
        c.set("sasl.mechanism", sasl.mechanism.as_str())
            .set("sasl.username", &sasl.username)
            .set("sasl.password", &sasl.password);
    }
    // librdkafka's own `debug` contexts (a property) log at debug level: let them through.
    let level = if config.properties.contains_key("debug") { RDKafkaLogLevel::Debug } else { RDKafkaLogLevel::Warning };
    c.set_log_level(level);
    c
}

/// A message on its way from the consumer thread to the scheduler.
#[derive(Debug)]
struct Taken {
    tp: Tp,
    epoch: u64,
    offset: i64,
    /// The record key, for per-key ordering.
    key: Option<Arc<[u8]>>,
    event: CloudEvent,
    /// The decode error of a record that claimed to be a CloudEvent and was not.
    undecodable: Option<String>,
}

#[derive(Debug)]
enum ToScheduler {
    Message(Box<Taken>),
    Revoked(Vec<Tp>),
}

/// Rebalance and commit callbacks, run on the consumer thread inside `poll`.
struct Callbacks {
    offsets: Arc<Offsets>,
    to_scheduler: mpsc::UnboundedSender<ToScheduler>,
    drain_timeout: Duration,
    source: String,
}

fn tps_of(tpl: &TopicPartitionList) -> Vec<Tp> {
    tpl.elements().iter().map(|e| (Arc::from(e.topic()), e.partition())).collect()
}

fn tpl_of(offsets: &[(Tp, i64)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in offsets {
        let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    tpl
}

/// A synchronous commit, tried up to 5 times over about 3 s: a commit that fails on a passing broker
/// error (a leader or coordinator moving, a timeout) at a rebalance or at shutdown would otherwise
/// send a whole in-flight window to be redelivered.
fn commit_sync<C: ConsumerContext>(consumer: &BaseConsumer<C>, commits: &[(Tp, i64)]) -> KafkaResult<()> {
    let tpl = tpl_of(commits);
    let mut attempt = 1;
    loop {
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 5 => {
                tracing::debug!(error = %e, attempt, "synchronous commit failed; retrying");
                std::thread::sleep(Duration::from_millis(200 * attempt));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

fn plain_tpl(tps: &[Tp]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in tps {
        tpl.add_partition(topic, *partition);
    }
    tpl
}

impl ClientContext for Callbacks {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(source = %self.source, facility = fac, "librdkafka: {message}");
            }
            RDKafkaLogLevel::Warning => tracing::warn!(source = %self.source, facility = fac, "librdkafka: {message}"),
            _ => tracing::debug!(source = %self.source, facility = fac, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(source = %self.source, error = %error, "kafka client error (librdkafka retries): {reason}");
    }
}

impl ConsumerContext for Callbacks {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let tps = tps_of(tpl);
                tracing::info!(source = %self.source, partitions = ?tps, "partitions assigned");
                self.offsets.assign(&tps);
            }
            Rebalance::Revoke(tpl) => {
                let tps = tps_of(tpl);
                // Stop taking their messages (queued ones are dropped), let running work finish
                // within the drain timeout, commit what finished, then let librdkafka release them.
                self.offsets.revoke(&tps);
                let _ = self.to_scheduler.send(ToScheduler::Revoked(tps.clone()));
                let started = Instant::now();
                let still_running = self.offsets.wait_idle(Some(&tps), self.drain_timeout);
                let commits = self.offsets.to_commit(Some(&tps));
                let lost = consumer.assignment_lost();
                if !commits.is_empty() && !lost {
                    match commit_sync(consumer, &commits) {
                        Ok(()) => self.offsets.committed(&commits),
                        Err(e) => tracing::warn!(source = %self.source, error = %e, "commit on revoke failed"),
                    }
                }
                self.offsets.remove(&tps);
                tracing::info!(
                    source = %self.source, partitions = ?tps, drained_ms = started.elapsed().as_millis() as u64,
                    still_running, lost, committed = ?commits, "partitions revoked"
                );
            }
            Rebalance::Error(e) => tracing::warn!(source = %self.source, error = %e, "rebalance error"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // librdkafka keeps a partition's application pause across unassign and assign, so a
        // partition paused at the in-flight limit before a rebalance and given back to this member
        // would stay paused for good. Our bookkeeping starts it unpaused: make librdkafka agree.
        if let Rebalance::Assign(tpl) = rebalance {
            if tpl.count() > 0 {
                if let Err(e) = consumer.resume(tpl) {
                    tracing::warn!(source = %self.source, error = %e, "resume of assigned partitions failed");
                }
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                let done: Vec<(Tp, i64)> = offsets
                    .elements()
                    .iter()
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(o) => Some(((Arc::from(e.topic()), e.partition()), o)),
                        _ => None,
                    })
                    .collect();
                self.offsets.committed(&done);
            }
            Err(e) => tracing::warn!(source = %self.source, error = %e, "offset commit failed; retried"),
        }
    }
}

#[async_trait::async_trait]
impl Source for KafkaSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let config = self.config;
        let offsets = Arc::new(Offsets::default());
        let (to_scheduler, from_consumer) = mpsc::unbounded_channel();
        let callbacks = Callbacks {
            offsets: Arc::clone(&offsets),
            to_scheduler: to_scheduler.clone(),
            drain_timeout: config.drain_timeout,
            source: ctx.name.clone(),
        };
        let consumer: BaseConsumer<Callbacks> =
            client_config(&config).create_with_context(callbacks).map_err(|e| SourceError::Connection {
                source_name: ctx.name.clone(),
                message: format!("cannot create the Kafka consumer: {e}"),
            })?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|e| SourceError::Connection {
            source_name: ctx.name.clone(),
            message: format!("cannot subscribe to {topics:?}: {e}"),
        })?;
        tracing::info!(source = %ctx.name, group = config.group_id(), topics = ?config.topics, ordering = ?config.ordering, "consuming");

        let stop = CancellationToken::new();
        let thread = {
            let (offsets, stop, ctx_shutdown) = (Arc::clone(&offsets), stop.clone(), ctx.shutdown.clone());
            let config = config.clone();
            let span = tracing::info_span!("kafka_consumer", source = %ctx.name);
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name(format!("kafka-{}", ctx.name))
                .spawn(move || {
                    let _enter = span.enter();
                    consume(&consumer, &config, &offsets, &to_scheduler, &ctx_shutdown, &stop);
                    drop(consumer); // leaves the group (the revoke callback commits once more)
                    let _ = done_tx.send(());
                })
                .map_err(|e| SourceError::Connection {
                    source_name: ctx.name.clone(),
                    message: format!("cannot start the consumer thread: {e}"),
                })?;
            done_rx
        };
        let scheduled = schedule(&ctx, &config, &offsets, from_consumer)
            .instrument(tracing::info_span!("kafka_scheduler", source = %ctx.name))
            .await;
        // The scheduler returns at shutdown once every handed-on message is resolved (or when the
        // dispatcher is gone): the consumer thread commits and closes.
        stop.cancel();
        let _ = thread.await;
        scheduled
    }
}

/// The consumer thread's loop: poll, take, pause, resume, commit, until shutdown; then wait for
/// running work (bounded by the broker's shutdown grace) and commit once more.
fn consume(
    consumer: &BaseConsumer<Callbacks>,
    config: &KafkaSourceConfig,
    offsets: &Offsets,
    to_scheduler: &mpsc::UnboundedSender<ToScheduler>,
    shutdown: &CancellationToken,
    stop: &CancellationToken,
) {
    let cluster = config.cluster_name().to_owned();
    let limit = config.max_in_flight;
    let resume_at = limit / 2;
    let mut last_commit = Instant::now();
    let mut last_error: Option<(String, Instant)> = None;
    while !shutdown.is_cancelled() && !stop.is_cancelled() {
        let resumable = offsets.resumable(resume_at);
        if !resumable.is_empty() {
            if let Err(e) = consumer.resume(&plain_tpl(&resumable)) {
                tracing::warn!(error = %e, "resume failed");
            }
            tracing::trace!(partitions = ?resumable, "resumed");
        }
        if last_commit.elapsed() >= config.commit_interval {
            last_commit = Instant::now();
            let commits = offsets.to_commit(None);
            if !commits.is_empty() {
                if let Err(e) = consumer.commit(&tpl_of(&commits), CommitMode::Async) {
                    tracing::debug!(error = %e, "async commit not sent");
                }
            }
        }
        let timeout = if offsets.any_paused() { Duration::from_millis(5) } else { Duration::from_millis(100) };
        let message = match consumer.poll(timeout) {
            None => continue,
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                // librdkafka reconnects by itself; log each distinct error once per 10 s.
                let text = e.to_string();
                let repeat =
                    last_error.as_ref().is_some_and(|(t, at)| *t == text && at.elapsed() < Duration::from_secs(10));
                if !repeat {
                    tracing::warn!(error = %text, "kafka consumer error; continuing");
                    last_error = Some((text, Instant::now()));
                }
                continue;
            }
        };
        let tp: Tp = (Arc::from(message.topic()), message.partition());
        let Some(taken) = offsets.take(&tp, message.offset(), limit) else {
            tracing::debug!(topic = %tp.0, partition = tp.1, offset = message.offset(), "message of an unassigned partition dropped");
            continue;
        };
        if taken.pause {
            if let Err(e) = consumer.pause(&plain_tpl(std::slice::from_ref(&tp))) {
                tracing::warn!(error = %e, "pause failed");
            }
            tracing::trace!(topic = %tp.0, partition = tp.1, "paused at the in-flight limit");
        }
        let msg = decode(&message, &cluster, tp, taken.epoch);
        if to_scheduler.send(ToScheduler::Message(Box::new(msg))).is_err() {
            break;
        }
    }
    // Shutdown: nothing new starts; what runs finishes (the dispatcher resolves it within its grace).
    offsets.close();
    loop {
        let running = offsets.wait_idle(None, Duration::from_secs(5));
        if running == 0 {
            break;
        }
        tracing::info!(running, "waiting for in-flight messages before the final commit");
    }
    let commits = offsets.to_commit(None);
    if !commits.is_empty() {
        match commit_sync(consumer, &commits) {
            Ok(()) => offsets.committed(&commits),
            Err(e) => tracing::warn!(error = %e, "final commit failed; uncommitted messages will be redelivered"),
        }
    }
    tracing::info!(committed = ?commits, "consumer stopped");
}

fn decode(message: &BorrowedMessage<'_>, cluster: &str, tp: Tp, epoch: u64) -> Taken {
    let headers: Vec<(&str, Option<&[u8]>)> =
        message.headers().map(|h| h.iter().map(|h| (h.key, h.value)).collect()).unwrap_or_default();
    let incoming = Incoming {
        topic: &tp.0,
        partition: tp.1,
        offset: message.offset(),
        key: message.key(),
        headers: &headers,
        payload: message.payload(),
        timestamp_ms: message.timestamp().to_millis(),
        cluster,
    };
    let (event, undecodable) = match binding::to_event(&incoming) {
        Ok(event) => (event, None),
        Err(e) => {
            tracing::warn!(
                topic = %tp.0, partition = tp.1, offset = message.offset(), error = %e,
                "record is not a valid CloudEvent; dead-lettering it"
            );
            (binding::wrap_undecodable(&incoming, &e), Some(format!("not a valid CloudEvent: {e}")))
        }
    };
    Taken { tp, epoch, offset: message.offset(), key: message.key().map(Arc::from), event, undecodable }
}

/// Hands messages to the dispatcher in partition order (each trigger orders its invocations by
/// the partition and key every delivery carries) until shutdown; then waits for the outcome of
/// everything handed on.
async fn schedule(
    ctx: &SourceContext,
    config: &KafkaSourceConfig,
    offsets: &Arc<Offsets>,
    mut from_consumer: mpsc::UnboundedReceiver<ToScheduler>,
) -> Result<(), SourceError> {
    // Per partition assignment: its stream name, and the token that withdraws its messages still
    // waiting for their turn in a trigger's lane when the partition is revoked (or at shutdown), so
    // they are redelivered instead of held.
    let mut assigned: HashMap<(Tp, u64), (Arc<str>, CancellationToken)> = HashMap::new();
    let acks = TaskTracker::new();
    let mut result = Ok(());
    loop {
        tokio::select! {
            biased;
            () = ctx.shutdown.cancelled() => break,
            m = from_consumer.recv() => match m {
                None => break,
                Some(ToScheduler::Revoked(tps)) => assigned.retain(|(tp, _), (_, withdraw)| {
                    let revoked = tps.contains(tp);
                    if revoked {
                        withdraw.cancel();
                    }
                    !revoked
                }),
                Some(ToScheduler::Message(m)) => {
                    let (stream, withdraw) = assigned
                        .entry((m.tp.clone(), m.epoch))
                        .or_insert_with(|| (Arc::from(format!("{}/{}", m.tp.0, m.tp.1)), CancellationToken::new()))
                        .clone();
                    let order = OrderKey { stream, key: m.key.clone(), default: config.ordering };
                    if let Err(e) = hand_on(ctx, offsets, *m, order, withdraw, &acks).await {
                        result = Err(e);
                        break;
                    }
                }
            },
        }
    }
    // Not started yet: given back (uncommitted, redelivered later); running ones are awaited.
    for (_, withdraw) in assigned.values() {
        withdraw.cancel();
    }
    acks.close();
    acks.wait().await;
    result
}

/// Gives one message to the dispatcher and spawns the task that waits for its outcome. A message
/// whose partition was revoked meanwhile is dropped.
async fn hand_on(
    ctx: &SourceContext,
    offsets: &Arc<Offsets>,
    m: Taken,
    order: OrderKey,
    withdraw: CancellationToken,
    acks: &TaskTracker,
) -> Result<(), SourceError> {
    let Taken { tp, epoch, offset, event, undecodable, .. } = m;
    if !offsets.start(&tp, epoch) {
        return Ok(());
    }
    let (delivery, outcome) = match undecodable {
        Some(error) => Delivery::undecodable(event, error),
        None => Delivery::new(event),
    };
    let delivery = delivery.with_order(order, withdraw);
    tracing::trace!(topic = %tp.0, partition = tp.1, offset, event_id = %delivery.event.id, "message handed on");
    if ctx.deliveries.send(delivery).await.is_err() {
        offsets.finish(&tp, epoch, offset, false);
        return Err(SourceError::DispatcherClosed { source_name: ctx.name.clone() });
    }
    let offsets = Arc::clone(offsets);
    acks.spawn(
        async move {
            let outcome = outcome.outcome().await;
            offsets.finish(&tp, epoch, offset, outcome.may_ack());
        }
        .instrument(tracing::trace_span!("kafka_ack")),
    );
    Ok(())
}
