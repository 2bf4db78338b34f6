//! Source lag: how many messages wait at the source, read from the broker's own bookkeeping (a
//! JetStream durable consumer's pending count, a RabbitMQ queue's ready messages, a Kafka consumer
//! group's committed offsets against each partition's high watermark). Read from the outside on a
//! connection of its own, so the sources themselves stay unchanged.

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use switchyard_schemas::sources::{AmqpSourceConfig, KafkaSourceConfig, NatsSourceConfig, SourceConfig};

/// Reads one source's lag.
pub enum LagProbe {
    /// A JetStream durable consumer.
    JetStream {
        /// The source's configuration.
        config: NatsSourceConfig,
        /// The connection, once made.
        client: Option<async_nats::jetstream::Context>,
    },
    /// A RabbitMQ queue.
    Amqp {
        /// The source's configuration.
        config: AmqpSourceConfig,
        /// The connection and channel, once made.
        conn: Option<(Connection, Channel)>,
    },
    /// A Kafka consumer group (its listed topics; a regex subscription is not probed).
    Kafka {
        /// The source's configuration.
        config: KafkaSourceConfig,
        /// A consumer with the group's id that never joins the group (it only reads offsets).
        consumer: Option<Arc<BaseConsumer>>,
    },
}

impl std::fmt::Debug for LagProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LagProbe").finish_non_exhaustive()
    }
}

impl LagProbe {
    /// A probe for `config`, when its lag can be read (a JetStream durable consumer or an AMQP queue).
    pub fn for_source(config: &SourceConfig) -> Option<Self> {
        match config {
            SourceConfig::Nats(c) if c.jetstream.as_ref().is_some_and(|j| j.durable.is_some()) => {
                Some(Self::JetStream { config: c.clone(), client: None })
            }
            SourceConfig::Amqp(c) => Some(Self::Amqp { config: c.clone(), conn: None }),
            SourceConfig::Kafka(c) if c.topics.iter().any(|t| !t.starts_with('^')) => {
                Some(Self::Kafka { config: c.clone(), consumer: None })
            }
            _ => None,
        }
    }

    /// Messages waiting at the source, per partition (`""` where there are none).
    ///
    /// # Errors
    /// What failed; the connection is made again on the next call.
    pub async fn read(&mut self) -> Result<Vec<(String, i64)>, String> {
        let r = self.read_once().await;
        if r.is_err() {
            match self {
                Self::JetStream { client, .. } => *client = None,
                Self::Amqp { conn, .. } => *conn = None,
                Self::Kafka { consumer, .. } => *consumer = None,
            }
        }
        r
    }

    async fn read_once(&mut self) -> Result<Vec<(String, i64)>, String> {
        match self {
            Self::JetStream { config, client } => {
                if client.is_none() {
                    let c = crate::nats::NatsSource::new(config.clone()).connect().await.map_err(|e| e.to_string())?;
                    *client = Some(async_nats::jetstream::new(c));
                }
                let js = client.as_ref().expect("connected above");
                let jsc = config.jetstream.as_ref().expect("a JetStream source");
                let durable = jsc.durable.as_deref().expect("a durable consumer");
                let mut consumer: async_nats::jetstream::consumer::PullConsumer =
                    js.get_consumer_from_stream(durable, &jsc.stream).await.map_err(|e| e.to_string())?;
                let info = consumer.info().await.map_err(|e| e.to_string())?;
                Ok(vec![(String::new(), i64::try_from(info.num_pending).unwrap_or(i64::MAX))])
            }
            Self::Amqp { config, conn } => {
                if conn.is_none() {
                    let c = Connection::connect(&config.url, ConnectionProperties::default())
                        .await
                        .map_err(|e| e.to_string())?;
                    let ch = c.create_channel().await.map_err(|e| e.to_string())?;
                    *conn = Some((c, ch));
                }
                let (_, ch) = conn.as_ref().expect("connected above");
                let q = ch
                    .queue_declare(
                        config.queue.as_str().into(),
                        QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() },
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(vec![(String::new(), i64::from(q.message_count()))])
            }
            Self::Kafka { config, consumer } => {
                if consumer.is_none() {
                    let c: BaseConsumer = crate::kafka::client_config(config).create().map_err(|e| e.to_string())?;
                    *consumer = Some(Arc::new(c));
                }
                let c = Arc::clone(consumer.as_ref().expect("created above"));
                let topics: Vec<String> = config.topics.iter().filter(|t| !t.starts_with('^')).cloned().collect();
                // librdkafka's calls block: keep them off the runtime's threads.
                tokio::task::spawn_blocking(move || kafka_lag(&c, &topics)).await.map_err(|e| e.to_string())?
            }
        }
    }
}

/// Per `topic/partition`: high watermark minus the group's committed offset (minus the low watermark
/// when nothing is committed yet).
fn kafka_lag(consumer: &BaseConsumer, topics: &[String]) -> Result<Vec<(String, i64)>, String> {
    const TIMEOUT: Duration = Duration::from_secs(5);
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let md = consumer.fetch_metadata(Some(topic), TIMEOUT).map_err(|e| e.to_string())?;
        for t in md.topics() {
            for p in t.partitions() {
                tpl.add_partition(t.name(), p.id());
            }
        }
    }
    let committed = consumer.committed_offsets(tpl, TIMEOUT).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for e in committed.elements() {
        let (low, high) = consumer.fetch_watermarks(e.topic(), e.partition(), TIMEOUT).map_err(|e| e.to_string())?;
        let from = match e.offset() {
            Offset::Offset(n) => n,
            _ => low,
        };
        out.push((format!("{}/{}", e.topic(), e.partition()), (high - from).max(0)));
    }
    Ok(out)
}
