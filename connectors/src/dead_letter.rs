//! Dead-letter sinks: where an event goes when its retries are exhausted. The event is published as a
//! structured-mode CloudEvent (JSON) carrying why it failed in extensions. Connections are opened on
//! first use, kept, and reopened after a failure.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use switchyard_schemas::config::DeadLetterSink;
use switchyard_schemas::{CloudEvent, ExtensionValue};
use tokio::sync::Mutex;

/// Longest time one publish attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per dead letter (with 100 ms, 400 ms between them).
const ATTEMPTS: u32 = 3;
/// The error message is cut to this many bytes in the `dlerror` extension.
const ERROR_BYTES: usize = 1024;

/// Why the event is a dead letter.
#[derive(Debug, Clone)]
pub struct DeadLetterInfo<'a> {
    /// The error kind (`timeout`, `handler`, ...).
    pub error_kind: &'a str,
    /// The error message.
    pub error: &'a str,
    /// Attempts made.
    pub attempts: u32,
    /// The trigger.
    pub trigger: &'a str,
    /// The function.
    pub function: &'a str,
    /// The record that says it failed.
    pub record_id: String,
}

/// The event as it is dead-lettered: the original with `dl*` extensions added.
pub fn dead_letter_event(event: &CloudEvent, why: &DeadLetterInfo<'_>) -> CloudEvent {
    let mut e = event.clone();
    let mut error = why.error.to_owned();
    if error.len() > ERROR_BYTES {
        let mut cut = ERROR_BYTES;
        while !error.is_char_boundary(cut) {
            cut -= 1;
        }
        error.truncate(cut);
    }
    let s = |v: &str| ExtensionValue::String(v.to_owned());
    e.extensions.insert("dlerror".into(), ExtensionValue::String(error));
    e.extensions.insert("dlerrorkind".into(), s(why.error_kind));
    e.extensions.insert("dlattempts".into(), ExtensionValue::Integer(i64::from(why.attempts)));
    e.extensions.insert("dltrigger".into(), s(why.trigger));
    e.extensions.insert("dlfunction".into(), s(why.function));
    e.extensions.insert("dlrecordid".into(), s(&why.record_id));
    e
}

enum Conn {
    Kafka(rdkafka::producer::FutureProducer),
    Nats(async_nats::Client),
    Amqp(#[allow(dead_code)] Connection, Channel),
}

/// Publishes dead letters to the sinks triggers name. Cheap to share (`Arc`).
pub struct DeadLetterPublisher {
    http: reqwest::Client,
    conns: Mutex<HashMap<String, Conn>>,
}

impl std::fmt::Debug for DeadLetterPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterPublisher").finish_non_exhaustive()
    }
}

impl DeadLetterPublisher {
    /// A publisher sending HTTP dead letters with `http`.
    pub fn new(http: reqwest::Client) -> Self {
        Self { http, conns: Mutex::new(HashMap::new()) }
    }

    /// Publishes `event` (already carrying the `dl*` extensions) to `sink`, retrying a few times.
    ///
    /// # Errors
    /// The last attempt's error, naming the sink.
    pub async fn publish(&self, sink: &DeadLetterSink, event: &CloudEvent) -> Result<(), String> {
        let body = event.to_json_vec();
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 * 4u64.pow(attempt - 1))).await;
            }
            match tokio::time::timeout(ATTEMPT_TIMEOUT, self.publish_once(sink, &body)).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => last = e,
                Err(_) => last = format!("no answer within {ATTEMPT_TIMEOUT:?}"),
            }
            // Reopen the connection on the next attempt.
            self.conns.lock().await.remove(&key(sink));
        }
        Err(format!("dead-letter sink {}: {last}", describe(sink)))
    }

    async fn publish_once(&self, sink: &DeadLetterSink, body: &[u8]) -> Result<(), String> {
        const CONTENT_TYPE: &str = "application/cloudevents+json; charset=utf-8";
        match sink {
            DeadLetterSink::Http { url } => {
                let resp = self
                    .http
                    .post(url)
                    .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
                    .body(body.to_vec())
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("answered {}", resp.status()))
                }
            }
            DeadLetterSink::Nats { url, subject } => {
                let client = {
                    let mut conns = self.conns.lock().await;
                    if let Entry::Vacant(slot) = conns.entry(key(sink)) {
                        let c = async_nats::connect(url.as_str()).await.map_err(|e| e.to_string())?;
                        slot.insert(Conn::Nats(c));
                    }
                    match conns.get(&key(sink)) {
                        Some(Conn::Nats(c)) => c.clone(),
                        _ => return Err("connection kind mismatch".into()),
                    }
                };
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("content-type", CONTENT_TYPE);
                client
                    .publish_with_headers(subject.clone(), headers, body.to_vec().into())
                    .await
                    .map_err(|e| e.to_string())?;
                client.flush().await.map_err(|e| e.to_string())
            }
            DeadLetterSink::Kafka { brokers, topic, properties } => {
                let producer = {
                    let mut conns = self.conns.lock().await;
                    if let Entry::Vacant(slot) = conns.entry(key(sink)) {
                        let mut cfg = rdkafka::ClientConfig::new();
                        cfg.set("bootstrap.servers", brokers.join(","))
                            .set("acks", "all")
                            .set("message.timeout.ms", "5000");
                        for (k, v) in properties {
                            cfg.set(k, v);
                        }
                        let p: rdkafka::producer::FutureProducer = cfg.create().map_err(|e| e.to_string())?;
                        slot.insert(Conn::Kafka(p));
                    }
                    match conns.get(&key(sink)) {
                        Some(Conn::Kafka(p)) => p.clone(),
                        _ => return Err("connection kind mismatch".into()),
                    }
                };
                let record_key = serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| {
                        v.get("partitionkey").or_else(|| v.get("id")).and_then(|k| k.as_str().map(str::to_owned))
                    })
                    .unwrap_or_default();
                let headers = rdkafka::message::OwnedHeaders::new()
                    .insert(rdkafka::message::Header { key: "content-type", value: Some(CONTENT_TYPE) });
                let record = rdkafka::producer::FutureRecord::to(topic).payload(body).key(&record_key).headers(headers);
                producer.send(record, ATTEMPT_TIMEOUT).await.map(drop).map_err(|(e, _)| e.to_string())
            }
            DeadLetterSink::Amqp { url, exchange, routing_key } => {
                let mut conns = self.conns.lock().await;
                if let Entry::Vacant(slot) = conns.entry(key(sink)) {
                    let conn =
                        Connection::connect(url, ConnectionProperties::default()).await.map_err(|e| e.to_string())?;
                    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
                    ch.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| e.to_string())?;
                    slot.insert(Conn::Amqp(conn, ch));
                }
                let Some(Conn::Amqp(_, ch)) = conns.get(&key(sink)) else {
                    return Err("connection kind mismatch".into());
                };
                let props = BasicProperties::default().with_content_type(CONTENT_TYPE.into()).with_delivery_mode(2);
                let confirm = ch
                    .basic_publish(
                        exchange.as_str().into(),
                        routing_key.as_str().into(),
                        BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
                        body,
                        props,
                    )
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())?;
                match confirm {
                    Confirmation::Nack(_) => Err("the broker refused the message (nack)".into()),
                    // A mandatory message that no queue took comes back.
                    Confirmation::Ack(Some(_)) => {
                        Err(format!("no queue is bound to exchange {exchange:?} with key {routing_key:?}"))
                    }
                    Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
                }
            }
        }
    }
}

fn key(sink: &DeadLetterSink) -> String {
    match sink {
        DeadLetterSink::Http { url } => format!("http {url}"),
        DeadLetterSink::Nats { url, .. } => format!("nats {url}"),
        DeadLetterSink::Amqp { url, exchange, routing_key } => format!("amqp {url} {exchange} {routing_key}"),
        DeadLetterSink::Kafka { brokers, properties, .. } => format!("kafka {} {properties:?}", brokers.join(",")),
    }
}

fn describe(sink: &DeadLetterSink) -> String {
    match sink {
        DeadLetterSink::Http { url } => format!("http {url}"),
        DeadLetterSink::Nats { subject, .. } => format!("nats subject {subject:?}"),
        DeadLetterSink::Amqp { exchange, routing_key, .. } => {
            format!("amqp exchange {exchange:?} key {routing_key:?}")
        }
        DeadLetterSink::Kafka { topic, .. } => format!("kafka topic {topic:?}"),
    }
}
