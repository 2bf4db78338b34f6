//! The running message sources, by name. The config file's sources start with the broker; sources
//! created, replaced or deleted through the API (here, or on another replica through the shared
//! registry) start, restart and stop at runtime. Each source has its own stop token and task tracker,
//! so one can be drained the way shutdown drains them all: it stops taking messages, its in-flight
//! deliveries finish and are acked or committed, then it returns.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use serde::Serialize;
use switchyard_connectors::s3::{S3HttpHandle, S3Source};
use switchyard_connectors::{Source, SourceContext, SourceState};
use switchyard_dispatcher::Dispatcher;
use switchyard_schemas::config::SourceConfig;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::cron_ops::CronSources;

/// Where a source's configuration comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The config file: the API cannot change or delete it.
    Config,
    /// The API (stored in the shared registry).
    Api,
}

/// A source as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SourceInfo {
    /// Its name.
    pub name: String,
    /// Where its configuration comes from.
    pub origin: Origin,
    /// Whether its tasks are running (false once it stopped with an error).
    pub running: bool,
    /// Its configuration.
    pub config: SourceConfig,
}

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A new source was started.
    Created,
    /// The source was drained and started again with the new configuration.
    Replaced,
    /// The source already runs with this configuration.
    Unchanged,
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The name belongs to a source of the config file.
    #[error(
        "source {name:?} is defined in the config file; change it there (the API manages only the sources it created)"
    )]
    DefinedInConfig {
        /// The source.
        name: String,
    },
    /// The broker is shutting down.
    #[error("shutting down: sources are not started or changed")]
    ShuttingDown,
}

/// The HTTP endpoints of `s3` sources with an `sns` or `webhook` input, by source name; cheap to
/// clone (clones share the map).
#[derive(Debug, Clone, Default)]
pub struct S3Handles {
    handles: Arc<RwLock<BTreeMap<String, S3HttpHandle>>>,
}

impl S3Handles {
    /// The endpoint of the source named `name`.
    pub fn get(&self, name: &str) -> Option<S3HttpHandle> {
        self.handles.read().unwrap_or_else(PoisonError::into_inner).get(name).cloned()
    }

    fn set(&self, name: &str, handle: Option<S3HttpHandle>) {
        let mut map = self.handles.write().unwrap_or_else(PoisonError::into_inner);
        match handle {
            Some(h) => map.insert(name.to_owned(), h),
            None => map.remove(name),
        };
    }
}

/// One running source.
#[derive(Debug, Clone)]
struct Running {
    config: SourceConfig,
    origin: Origin,
    stop: CancellationToken,
    /// The source's task, its forwarding task and the S3 fan-out tasks.
    tracker: TaskTracker,
}

impl Running {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            name: self.config.name().to_owned(),
            origin: self.origin,
            running: !self.tracker.is_empty(),
            config: self.config.clone(),
        }
    }
}

/// The running sources; cheap to clone.
#[derive(Clone)]
pub struct Sources {
    inner: Arc<Inner>,
}

struct Inner {
    dispatcher: Dispatcher,
    state: Arc<dyn SourceState>,
    /// How long a replaced or removed source may take to drain before the change goes on without it.
    grace: Duration,
    /// Cancelled at shutdown; every source's stop token is a child.
    shutdown: CancellationToken,
    /// Every task of every source, for the shutdown drain.
    all: TaskTracker,
    /// Names the config file defines (they stay the file's even before they start).
    file: Vec<SourceConfig>,
    running: RwLock<BTreeMap<String, Running>>,
    /// Serialises changes (a replacement waits for the old source's drain while holding it).
    changes: tokio::sync::Mutex<()>,
    cron: CronSources,
    s3: S3Handles,
}

/// How often source lag is read.
const LAG_EVERY: Duration = Duration::from_secs(5);

/// Deliveries a source may have queued for the dispatcher before it has to wait.
const SOURCE_CHANNEL: usize = 256;

impl Sources {
    /// The source set for `file` (the config file's sources, started by [`Sources::start_file`]).
    /// `grace` bounds the drain of a replaced or removed source.
    pub fn new(file: &[SourceConfig], dispatcher: &Dispatcher, state: Arc<dyn SourceState>, grace: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                dispatcher: dispatcher.clone(),
                state,
                grace,
                shutdown: CancellationToken::new(),
                all: TaskTracker::new(),
                file: file.to_vec(),
                running: RwLock::new(BTreeMap::new()),
                changes: tokio::sync::Mutex::new(()),
                cron: CronSources::default(),
                s3: S3Handles::default(),
            }),
        }
    }

    /// Starts the config file's sources.
    pub async fn start_file(&self) {
        let _changes = self.inner.changes.lock().await;
        for config in &self.inner.file {
            self.spawn(config.clone(), Origin::Config);
        }
    }

    /// The cron sources' handles (the cron API).
    pub fn cron(&self) -> &CronSources {
        &self.inner.cron
    }

    /// The `s3` sources' HTTP endpoints.
    pub fn s3(&self) -> &S3Handles {
        &self.inner.s3
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Running>> {
        self.inner.running.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Running>> {
        self.inner.running.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every source, by name.
    pub fn list(&self) -> Vec<SourceInfo> {
        self.read().values().map(Running::info).collect()
    }

    /// The source named `name`.
    pub fn get(&self, name: &str) -> Option<SourceInfo> {
        self.read().get(name).map(Running::info)
    }

    fn is_file_defined(&self, name: &str) -> bool {
        self.inner.file.iter().any(|c| c.name() == name)
    }

    /// Starts the API source `config`, or replaces the one of that name: the old one is drained
    /// first (at most the grace period), then the new one starts. A source that already runs with
    /// this configuration is left alone; one that stopped with an error is started again.
    ///
    /// # Errors
    /// [`ChangeError::DefinedInConfig`] for a name of the config file, [`ChangeError::ShuttingDown`].
    pub async fn upsert(&self, config: SourceConfig) -> Result<Change, ChangeError> {
        let name = config.name().to_owned();
        if self.is_file_defined(&name) {
            return Err(ChangeError::DefinedInConfig { name });
        }
        let _changes = self.inner.changes.lock().await;
        if self.inner.shutdown.is_cancelled() {
            return Err(ChangeError::ShuttingDown);
        }
        let old = self.read().get(&name).cloned();
        let change = match old {
            Some(old) if old.config == config && !old.tracker.is_empty() => return Ok(Change::Unchanged),
            Some(old) => {
                self.drain(&old).await;
                Change::Replaced
            }
            None => Change::Created,
        };
        self.spawn(config, Origin::Api);
        Ok(change)
    }

    /// Stops and forgets the API source named `name` after draining it (at most the grace period).
    /// Returns whether there was one.
    ///
    /// # Errors
    /// [`ChangeError::DefinedInConfig`] for a name of the config file.
    pub async fn remove(&self, name: &str) -> Result<bool, ChangeError> {
        if self.is_file_defined(name) {
            return Err(ChangeError::DefinedInConfig { name: name.to_owned() });
        }
        let _changes = self.inner.changes.lock().await;
        let removed = self.write().remove(name);
        let Some(old) = removed else { return Ok(false) };
        self.inner.cron.remove(name);
        self.inner.s3.set(name, None);
        self.drain(&old).await;
        Ok(true)
    }

    /// Stops one source and waits (at most the grace period) until its in-flight deliveries are
    /// settled and it has returned.
    async fn drain(&self, old: &Running) {
        let name = old.config.name();
        old.stop.cancel();
        old.tracker.close();
        if tokio::time::timeout(self.inner.grace, old.tracker.wait()).await.is_err() {
            tracing::warn!(
                source = %name,
                grace_s = self.inner.grace.as_secs_f64(),
                "source still draining after the grace period; going on without waiting (it finishes in the background)"
            );
        } else {
            tracing::info!(source = %name, "source drained and stopped");
        }
    }

    /// Spawns `config`'s source, its forwarding task and its lag probe, and records it.
    fn spawn(&self, config: SourceConfig, origin: Origin) {
        let inner = &self.inner;
        let name = config.name().to_owned();
        let stop = inner.shutdown.child_token();
        let tracker = TaskTracker::new();
        let source: Box<dyn Source> = match &config {
            SourceConfig::S3(c) => {
                inner.cron.remove(&name);
                let source = S3Source::new(c.clone());
                inner.s3.set(&name, source.http_handle());
                Box::new(source)
            }
            _ => {
                inner.s3.set(&name, None);
                inner.cron.build(&config)
            }
        };
        if let Some(probe) = switchyard_connectors::lag::LagProbe::for_source(&config) {
            spawn_lag(&inner.dispatcher, &name, probe, stop.clone());
        }
        let (tx, mut rx) = mpsc::channel(SOURCE_CHANNEL);
        let ctx = SourceContext {
            deliveries: tx,
            shutdown: stop.clone(),
            name: name.clone(),
            state: Arc::clone(&inner.state),
        };
        let span = tracing::info_span!("source", source = %name);
        tokio::spawn(
            inner.all.track_future(
                tracker.track_future(
                    async move {
                        match source.run(ctx).await {
                            Ok(()) => tracing::info!("source stopped"),
                            Err(e) => tracing::error!(error = %e, retry_hint = e.retry_hint(), "source failed"),
                        }
                    }
                    .instrument(span),
                ),
            ),
        );
        let d = inner.dispatcher.clone();
        let expand_s3 = config.expands_s3_notifications();
        let parts = (inner.all.clone(), tracker.clone());
        let system = messaging_system(&config);
        // A clone shares the counter: no lock per delivery.
        let received = d
            .metrics()
            .events_received
            .get_or_create(&switchyard_dispatcher::metrics::SourceLabel { source: name.clone() })
            .clone();
        let forward_name = name.clone();
        tokio::spawn(
            inner.all.track_future(
                tracker.track_future(
                    async move {
                        // Waits for room in the functions' queues: backpressure reaches the source through
                        // this bounded channel. A delivery refused at shutdown is dropped unacked.
                        while let Some(delivery) = rx.recv().await {
                            received.inc();
                            let deliveries = match expand_s3 {
                                true => match switchyard_connectors::s3::fanout::split(delivery) {
                                    Ok((parts_of, done)) => {
                                        tokio::spawn(
                                            parts.0.track_future(parts.1.track_future(done.in_current_span())),
                                        );
                                        parts_of
                                    }
                                    Err(delivery) => vec![*delivery],
                                },
                                false => vec![delivery],
                            };
                            for delivery in deliveries {
                                let span = crate::telemetry::receive_span(system, &forward_name, &delivery.event);
                                if let Err(e) = d.dispatch_traced(delivery, span).await {
                                    tracing::debug!(error = %e, "delivery not dispatched");
                                }
                            }
                        }
                    }
                    .instrument(tracing::info_span!("source_forward", source = %name)),
                ),
            ),
        );
        tracing::info!(source = %name, ?origin, kind = system, "source started");
        self.write().insert(name, Running { config, origin, stop, tracker });
    }

    /// Stops every source: they stop taking messages, wait for in-flight acks and commit. Returns
    /// whether they finished within `grace`.
    pub async fn stop(&self, grace: Duration) -> bool {
        self.inner.shutdown.cancel();
        self.inner.all.close();
        let done = tokio::time::timeout(grace, self.inner.all.wait()).await.is_ok();
        if !done {
            tracing::warn!("sources still draining after the grace period");
        }
        done
    }
}

/// Reads a source's lag into `switchyard_source_lag_messages` until `stop`.
fn spawn_lag(
    dispatcher: &Dispatcher,
    source: &str,
    mut probe: switchyard_connectors::lag::LagProbe,
    stop: CancellationToken,
) {
    let metrics = Arc::clone(dispatcher.metrics());
    let source = source.to_owned();
    let span = tracing::info_span!("source_lag", source = %source);
    tokio::spawn(
        async move {
            loop {
                tokio::select! {
                    r = probe.read() => match r {
                        Ok(parts) => {
                            for (partition, n) in parts {
                                let label =
                                    switchyard_dispatcher::metrics::LagLabel { source: source.clone(), partition };
                                metrics.source_lag.get_or_create(&label).set(n);
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "source lag not readable"),
                    },
                    () = stop.cancelled() => return,
                }
                tokio::select! {
                    () = tokio::time::sleep(LAG_EVERY) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
        .instrument(span),
    );
}

/// The OpenTelemetry `messaging.system` of a source.
fn messaging_system(source: &SourceConfig) -> &'static str {
    match source {
        SourceConfig::Nats(_) => "nats",
        SourceConfig::Amqp(_) => "rabbitmq",
        SourceConfig::Cron(_) => "cron",
        SourceConfig::Kafka(_) => "kafka",
        SourceConfig::S3(c) if c.sqs.is_some() => "aws_sqs",
        SourceConfig::S3(c) if c.sns.is_some() => "aws_sns",
        SourceConfig::S3(_) => "http",
    }
}

#[cfg(test)]
mod tests {
    use switchyard_schemas::Config;

    /// The registry stores a source as JSON: every kind must read back as the same configuration.
    #[test]
    fn every_kind_of_source_reads_back_from_its_stored_json() {
        let yaml = r"
sources:
  - {type: nats, name: core, subjects: [a.b], queue_group: q, user: u, password: p}
  - type: nats
    name: js
    jetstream: {stream: S, durable: d, filter_subjects: [a.>], ack_wait: 5s, deliver_policy: new,
                create: {subjects: [a.>], storage: memory}}
  - {type: amqp, name: rabbit, url: 'amqp://guest:guest@127.0.0.1:5672/%2f', queue: q}
  - {type: kafka, name: k, bootstrap_servers: ['127.0.0.1:9092'], topics: [t], group: g, start_offset: earliest, ordering: key}
  - {type: cron, name: c, schedule: '*/5 * * * *', timezone: Europe/Berlin, catch_up: all}
  - {type: s3, name: hooks, webhook: {token: a-webhook-token-of-some-length}}
  - {type: s3, name: sqs, sqs: {queue_url: 'http://127.0.0.1:5055/123456789012/q', visibility_timeout: 30s}}
";
        let config = Config::from_yaml_str(yaml, "t.yaml", |_| None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.sources.len(), 7);
        for source in &config.sources {
            let json = serde_json::to_string(source).unwrap();
            let back: switchyard_schemas::config::SourceConfig = serde_json::from_str(&json).unwrap();
            assert_eq!(&back, source, "{json}");
        }
    }
}
