//! The S3 source task: an SQS long-poll loop with visibility extension and batched deletes, or the
//! request loop behind the broker's `POST /ingest/s3/<name>` for the SNS and webhook inputs.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName};
use bytes::Bytes;
use serde_json::{json, Value};
use switchyard_schemas::sources::s3::{S3SourceConfig, SnsInput, SqsInput, WebhookInput};
use switchyard_schemas::CloudEvent;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::aws;
use super::binding::{self, Notification};
use super::object::ObjectClient;
use super::sns::{self, SnsError, SnsMessage};
use crate::{Delivery, Outcome, Source, SourceContext, SourceError};

/// Longest wait between retries of a failing ReceiveMessage.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Requests waiting for the source before the endpoint answers 503.
const HTTP_QUEUE: usize = 64;

/// A configured S3 source.
#[derive(Debug)]
pub struct S3Source {
    config: S3SourceConfig,
    requests: Option<(mpsc::Sender<HttpRequest>, mpsc::Receiver<HttpRequest>)>,
}

/// One request to the source's HTTP endpoint.
#[derive(Debug)]
struct HttpRequest {
    headers: http::HeaderMap,
    body: Bytes,
    reply: oneshot::Sender<HttpReply>,
}

/// The answer to a request on the source's HTTP endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpReply {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Value,
}

impl HttpReply {
    fn new(status: u16, body: Value) -> Self {
        Self { status, body }
    }
    fn error(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self::new(status, json!({"error": {"code": code, "message": message.into()}}))
    }
}

/// The broker's side of an `sns` or `webhook` source: hands each request to the running source.
#[derive(Debug, Clone)]
pub struct S3HttpHandle {
    tx: mpsc::Sender<HttpRequest>,
}

impl S3HttpHandle {
    /// Handles one `POST /ingest/s3/<name>`: answers once every event the request carried is
    /// terminal and recorded (2xx), or with the reason it was refused. 503 when the source is not
    /// running or is shutting down, so the sender retries.
    pub async fn handle(&self, headers: http::HeaderMap, body: Bytes) -> HttpReply {
        let (reply, rx) = oneshot::channel();
        let unavailable = || HttpReply::error(503, "unavailable", "the source is not running");
        if self.tx.try_send(HttpRequest { headers, body, reply }).is_err() {
            return unavailable();
        }
        rx.await.unwrap_or_else(|_| unavailable())
    }
}

impl S3Source {
    /// A source for `config` (validated at config load).
    pub fn new(config: S3SourceConfig) -> Self {
        let requests = config.is_http().then(|| mpsc::channel(HTTP_QUEUE));
        Self { config, requests }
    }

    /// The handle the broker's HTTP endpoint uses, for `sns` and `webhook` sources.
    pub fn http_handle(&self) -> Option<S3HttpHandle> {
        self.requests.as_ref().map(|(tx, _)| S3HttpHandle { tx: tx.clone() })
    }
}

#[async_trait::async_trait]
impl Source for S3Source {
    async fn run(mut self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        if let Some(q) = self.config.sqs.clone() {
            return self.run_sqs(&q, &ctx).await;
        }
        let Some((_, rx)) = self.requests.take() else { return Ok(()) };
        let input = if let Some(s) = &self.config.sns {
            if !s.verify_signatures {
                tracing::warn!(
                    "SNS signature verification is OFF: anyone who can reach POST /ingest/s3/{} can inject events; use only for local testing",
                    self.config.name
                );
            }
            HttpInput::Sns { config: s.clone(), verifier: sns::Verifier::new(reqwest::Client::new()) }
        } else if let Some(w) = &self.config.webhook {
            HttpInput::Webhook(w.clone())
        } else {
            return Ok(());
        };
        let shared = Arc::new(Shared {
            objects: ObjectClient::new(self.config.aws.clone()),
            config: self.config.clone(),
            ctx: ctx.clone(),
        });
        tracing::info!(path = %format!("/ingest/s3/{}", self.config.name), "accepting S3 notifications over HTTP");
        run_http(rx, Arc::new(input), shared).await;
        Ok(())
    }
}

/// What request handlers and message tasks share.
struct Shared {
    config: S3SourceConfig,
    /// For the object access of the triggers the events reach (built on first use).
    objects: ObjectClient,
    ctx: SourceContext,
}

/// What became of one notification's events.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Summary {
    events: usize,
    invocations: usize,
    failed: usize,
    abandoned: bool,
}

impl Shared {
    /// Filters and delivers `events` (with the source's S3 client for the triggers' object access), and waits until each is terminal and recorded.
    async fn deliver(&self, events: Vec<CloudEvent>) -> Summary {
        let mut summary = Summary::default();
        let mut acks = Vec::new();
        for event in events {
            if !binding::matches(&self.config.filter, &event) {
                tracing::trace!(event_id = %event.id, "filtered out");
                continue;
            }
            tracing::trace!(event_id = %event.id, ty = %event.ty, "s3 event");
            let (delivery, ack) = Delivery::new(event);
            let delivery = delivery.with_object_client(self.objects.clone());
            if self.ctx.deliveries.send(delivery).await.is_err() {
                summary.abandoned = true;
                break;
            }
            summary.events += 1;
            acks.push(ack);
        }
        for outcome in futures::future::join_all(acks.into_iter().map(|a| a.outcome())).await {
            match outcome {
                Outcome::Completed { invocations, failed } => {
                    summary.invocations += invocations;
                    summary.failed += failed;
                }
                Outcome::Unmatched => {}
                Outcome::Abandoned => summary.abandoned = true,
            }
        }
        summary
    }
}

enum HttpInput {
    Sns { config: SnsInput, verifier: sns::Verifier },
    Webhook(WebhookInput),
}

async fn run_http(mut rx: mpsc::Receiver<HttpRequest>, input: Arc<HttpInput>, shared: Arc<Shared>) {
    let tracker = TaskTracker::new();
    loop {
        let req = tokio::select! {
            biased;
            () = shared.ctx.shutdown.cancelled() => break,
            r = rx.recv() => match r {
                Some(r) => r,
                None => break,
            },
        };
        let (input, shared) = (Arc::clone(&input), Arc::clone(&shared));
        tracker.spawn(
            async move {
                let reply = match &*input {
                    HttpInput::Webhook(w) => webhook(w, &shared, &req.headers, &req.body).await,
                    HttpInput::Sns { config, verifier } => sns_request(config, verifier, &shared, &req.body).await,
                };
                let _ = req.reply.send(reply);
            }
            // `trace`: spans down to `debug` are exported, and one per request outside the
            // message's trace is not worth exporting.
            .instrument(tracing::trace_span!("s3_http")),
        );
    }
    // Refuse what is queued (503: the sender retries), finish what runs.
    rx.close();
    while let Ok(req) = rx.try_recv() {
        let _ = req.reply.send(HttpReply::error(503, "shutting_down", "shutting down"));
    }
    tracker.close();
    tracker.wait().await;
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn reply_for(summary: Summary) -> HttpReply {
    if summary.abandoned {
        return HttpReply::error(503, "shutting_down", "shutting down before the events completed; send again");
    }
    HttpReply::new(200, json!({"events": summary.events, "invocations": summary.invocations, "failed": summary.failed}))
}

async fn notification_reply(shared: &Shared, body: &[u8]) -> HttpReply {
    match binding::parse(body) {
        Ok(Notification::Test) => HttpReply::new(200, json!({"events": 0, "ignored": "s3:TestEvent"})),
        Ok(Notification::Events(events)) => reply_for(shared.deliver(events).await),
        Err(e) => HttpReply::error(400, "invalid_notification", e.to_string()),
    }
}

async fn webhook(w: &WebhookInput, shared: &Shared, headers: &http::HeaderMap, body: &[u8]) -> HttpReply {
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if !presented.is_some_and(|p| constant_time_eq(p.as_bytes(), w.token.as_bytes())) {
        return HttpReply::error(401, "unauthorized", "missing or wrong bearer token");
    }
    notification_reply(shared, body).await
}

async fn sns_request(config: &SnsInput, verifier: &sns::Verifier, shared: &Shared, body: &[u8]) -> HttpReply {
    let msg = match SnsMessage::parse(body) {
        Ok(m) => m,
        Err(e) => return HttpReply::error(400, "invalid_sns_message", e.to_string()),
    };
    if !config.topic_arns.is_empty() && !config.topic_arns.contains(&msg.topic_arn) {
        tracing::warn!(topic = %msg.topic_arn, "SNS message from a topic not in sns.topic_arns refused");
        return HttpReply::error(403, "forbidden_topic", format!("topic {} is not accepted here", msg.topic_arn));
    }
    if config.verify_signatures {
        match verifier.verify(&msg).await {
            Ok(()) => {}
            Err(e @ SnsError::Certificate { .. }) => {
                tracing::warn!(error = %e, "cannot verify SNS message yet");
                return HttpReply::error(503, "certificate_unavailable", e.to_string());
            }
            Err(e) => {
                tracing::warn!(error = %e, topic = %msg.topic_arn, "SNS message refused");
                return HttpReply::error(403, "bad_signature", e.to_string());
            }
        }
    }
    match msg.ty.as_str() {
        "Notification" => notification_reply(shared, msg.message.as_bytes()).await,
        "SubscriptionConfirmation" => confirm(config, &msg).await,
        "UnsubscribeConfirmation" => {
            tracing::warn!(topic = %msg.topic_arn, "SNS says this endpoint was unsubscribed");
            HttpReply::new(200, json!({"unsubscribed": msg.topic_arn}))
        }
        other => HttpReply::error(400, "invalid_sns_message", format!("Type: unknown {other:?}")),
    }
}

async fn confirm(config: &SnsInput, msg: &SnsMessage) -> HttpReply {
    let Some(url) = msg.subscribe_url.as_deref() else {
        return HttpReply::error(400, "invalid_sns_message", "SubscribeURL: missing");
    };
    if !config.confirm_subscriptions {
        tracing::warn!(topic = %msg.topic_arn, subscribe_url = %url, "SNS subscription awaits confirmation: visit the URL");
        return HttpReply::new(200, json!({"confirmed": false}));
    }
    if config.verify_signatures {
        if let Err(e) = sns::check_sns_url(url) {
            return HttpReply::error(403, "bad_subscribe_url", e.to_string());
        }
    }
    match reqwest::get(url).await.and_then(reqwest::Response::error_for_status) {
        Ok(_) => {
            tracing::info!(topic = %msg.topic_arn, "SNS subscription confirmed");
            HttpReply::new(200, json!({"confirmed": true}))
        }
        Err(e) => {
            tracing::warn!(topic = %msg.topic_arn, error = %e, "SNS subscription confirmation failed");
            HttpReply::error(502, "confirmation_failed", format!("GET SubscribeURL: {e}"))
        }
    }
}

impl S3Source {
    fn err(&self, message: impl Into<String>) -> SourceError {
        SourceError::Connection { source_name: self.config.name.clone(), message: message.into() }
    }

    async fn run_sqs(&self, q: &SqsInput, ctx: &SourceContext) -> Result<(), SourceError> {
        let sdk = aws::sdk_config(&self.config.aws, aws::region_of_queue_url(&q.queue_url)).await;
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let redrive = match q.redrive {
            Some(r) => r,
            None => self.detect_redrive(&sqs, &q.queue_url).await,
        };
        if !redrive {
            tracing::warn!(
                queue = %q.queue_url,
                "no redrive policy on the queue: a message whose invocations fail for good is deleted once its FAILURE record (dead-lettered) is written"
            );
        }
        let shared = Arc::new(Shared {
            objects: ObjectClient::from_sdk(&sdk, &self.config.aws),
            config: self.config.clone(),
            ctx: ctx.clone(),
        });
        let (delete_tx, delete_rx) = mpsc::channel::<String>(1024);
        let deleter = tokio::spawn(
            deleter(sqs.clone(), q.queue_url.clone(), delete_rx).instrument(tracing::debug_span!("sqs_delete")),
        );
        let limit = Arc::new(Semaphore::new(q.max_in_flight));
        let tracker = TaskTracker::new();
        let vt = i32::try_from(q.visibility_timeout.as_secs()).unwrap_or(43_200);
        let wait = i32::try_from(q.wait_time.as_secs()).unwrap_or(20);
        let mut backoff = Duration::from_millis(200);
        tracing::info!(queue = %q.queue_url, redrive, "receiving S3 notifications from SQS");
        loop {
            let first = tokio::select! {
                biased;
                () = ctx.shutdown.cancelled() => break,
                p = Arc::clone(&limit).acquire_owned() => p.map_err(|_| self.err("in-flight limit closed"))?,
            };
            let room = limit.available_permits() + 1;
            let n = i32::try_from(room.min(q.max_messages as usize)).unwrap_or(10);
            let receive = sqs
                .receive_message()
                .queue_url(&q.queue_url)
                .max_number_of_messages(n)
                .wait_time_seconds(wait)
                .visibility_timeout(vt)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .send();
            // Cancelling a receive in flight loses nothing: what it got reappears after the timeout.
            let resp = tokio::select! {
                biased;
                () = ctx.shutdown.cancelled() => break,
                r = receive => r,
            };
            let messages = match resp {
                Ok(r) => {
                    backoff = Duration::from_millis(200);
                    r.messages.unwrap_or_default()
                }
                Err(e) => {
                    tracing::warn!(error = %DisplayErrorContext(&e), backoff_ms = backoff.as_millis() as u64, "ReceiveMessage failed; retrying");
                    tokio::select! {
                        () = ctx.shutdown.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {},
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            let mut first = Some(first);
            for msg in messages {
                let permit = match first.take() {
                    Some(p) => p,
                    None => Arc::clone(&limit).acquire_owned().await.map_err(|_| self.err("in-flight limit closed"))?,
                };
                let job = MessageJob {
                    sqs: sqs.clone(),
                    queue_url: q.queue_url.clone(),
                    visibility: q.visibility_timeout,
                    redrive,
                    shared: Arc::clone(&shared),
                    deletes: delete_tx.clone(),
                };
                // `trace`, like the other sources' per-message spans: not exported.
                let span = tracing::trace_span!("sqs_message", message_id = msg.message_id.as_deref().unwrap_or(""));
                tracker.spawn(
                    async move {
                        job.run(msg).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
        }
        tracker.close();
        tracker.wait().await;
        drop(delete_tx);
        let _ = deleter.await;
        Ok(())
    }

    /// Whether the queue has a redrive policy; when it cannot be read, assume it has (so failures
    /// are never deleted on a guess).
    async fn detect_redrive(&self, sqs: &aws_sdk_sqs::Client, queue_url: &str) -> bool {
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await;
        match attrs {
            Ok(a) => a.attributes().is_some_and(|m| m.contains_key(&QueueAttributeName::RedrivePolicy)),
            Err(e) => {
                tracing::warn!(error = %DisplayErrorContext(&e), "cannot read the queue's RedrivePolicy; failures are left on the queue (set sqs.redrive to choose)");
                true
            }
        }
    }
}

/// Handles one SQS message from receipt to delete.
struct MessageJob {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    visibility: Duration,
    redrive: bool,
    shared: Arc<Shared>,
    deletes: mpsc::Sender<String>,
}

impl MessageJob {
    async fn run(self, msg: aws_sdk_sqs::types::Message) {
        let Some(receipt) = msg.receipt_handle.clone() else { return };
        let receives = msg
            .attributes
            .as_ref()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .cloned()
            .unwrap_or_default();
        let body = msg.body.as_deref().unwrap_or("");
        let events = match binding::parse(body.as_bytes()) {
            Ok(Notification::Test) => {
                tracing::debug!("s3:TestEvent deleted");
                let _ = self.deletes.send(receipt).await;
                return;
            }
            Ok(Notification::Events(events)) => events,
            Err(e) => {
                tracing::warn!(error = %e, receives = %receives, "SQS message is not an S3 notification; left on the queue for its redrive policy");
                return;
            }
        };
        let summary = {
            let work = self.shared.deliver(events);
            tokio::pin!(work);
            let every = (self.visibility / 3).max(Duration::from_millis(300));
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tokio::select! {
                    s = &mut work => break s,
                    _ = tick.tick() => self.set_visibility(&receipt, self.visibility).await,
                }
            }
        };
        if summary.abandoned {
            // Not processed (shutdown): make it visible again now for another consumer.
            self.set_visibility(&receipt, Duration::ZERO).await;
        } else if summary.failed > 0 && self.redrive {
            tracing::warn!(
                failed = summary.failed,
                receives = %receives,
                "invocations failed for good; message left for the queue's redrive policy"
            );
        } else {
            let _ = self.deletes.send(receipt).await;
        }
    }

    async fn set_visibility(&self, receipt: &str, to: Duration) {
        let secs = i32::try_from(to.as_secs()).unwrap_or(43_200);
        let r = self
            .sqs
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(secs)
            .send()
            .await;
        if let Err(e) = r {
            tracing::debug!(error = %DisplayErrorContext(&e), "ChangeMessageVisibility failed");
        }
    }
}

/// Deletes messages in batches of up to 10 (one call per batch); a failed delete only means the
/// message is received again (at-least-once).
async fn deleter(sqs: aws_sdk_sqs::Client, queue_url: String, mut rx: mpsc::Receiver<String>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 10 {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let entries: Vec<_> = batch
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| {
                DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(r).build().ok()
            })
            .collect();
        match sqs.delete_message_batch().queue_url(&queue_url).set_entries(Some(entries)).send().await {
            Ok(out) => {
                for f in out.failed() {
                    tracing::warn!(code = %f.code(), message = f.message().unwrap_or(""), "DeleteMessage failed; the message will be received again");
                }
            }
            Err(e) => {
                tracing::warn!(error = %DisplayErrorContext(&e), "DeleteMessageBatch failed; the messages will be received again");
            }
        }
    }
}
