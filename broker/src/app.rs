//! Wiring: configuration -> records store -> dispatcher -> HTTP API; graceful shutdown that stops
//! the ingress, drains in-flight invocations within the grace period and flushes records.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchyard_connectors::s3::{S3HttpHandle, S3Source};
use switchyard_connectors::{Source, SourceContext, SourceState};
use switchyard_dispatcher::records::RecordStore;
use switchyard_dispatcher::Dispatcher;
use switchyard_schemas::config::SourceConfig;
use switchyard_schemas::Config;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::api::{self, AppState};

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is not usable (exit 64).
    #[error("{0}")]
    Usage(String),
    /// Something else failed at start.
    #[error("{0}")]
    Other(String),
}

/// A running broker.
pub struct Running {
    /// The address the API listens on.
    pub addr: SocketAddr,
    /// The dispatcher.
    pub dispatcher: Dispatcher,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<bool>,
}

impl Running {
    /// Asks the broker to shut down (as SIGTERM does) and waits until it has. Returns whether
    /// in-flight work finished within the grace period.
    pub async fn shutdown(mut self) -> bool {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.done.await.unwrap_or(false)
    }

    /// Waits until the broker stops on its own signal.
    pub async fn wait(self) -> bool {
        self.done.await.unwrap_or(false)
    }
}

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Starts the broker; it runs until `signal` completes or [`Running::shutdown`] is called.
///
/// # Errors
/// [`StartError::Usage`] for unusable settings (non-loopback bind without tokens, a function that
/// cannot deploy), [`StartError::Other`] when the store or the listener fails.
pub async fn start(
    config: Config,
    insecure: bool,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, StartError> {
    let bind: SocketAddr = config
        .server
        .bind
        .parse()
        .map_err(|_| StartError::Usage(format!("server.bind: {:?} is not an address", config.server.bind)))?;
    if !is_loopback(&bind) && config.server.tokens.is_empty() && !insecure {
        return Err(StartError::Usage(format!(
            "server.bind {bind} is not a loopback address and server.tokens is empty: set tokens, or pass --insecure to serve without authentication"
        )));
    }
    if !is_loopback(&bind) && config.server.tokens.is_empty() {
        tracing::warn!(%bind, "serving without authentication on a non-loopback address (--insecure)");
    }
    let store = RecordStore::open(&config.store).await.map_err(|e| StartError::Other(e.to_string()))?;
    let state: Arc<dyn SourceState> = Arc::new(store.clone());
    let dispatcher = Dispatcher::start(&config, store.clone()).await.map_err(|e| StartError::Usage(e.to_string()))?;
    // Functions and triggers changed through the API (here or on another replica) override the file.
    let mut revision = 0;
    crate::registry::apply_since(&dispatcher, &mut revision)
        .await
        .map_err(|e| StartError::Other(format!("registry: {e}")))?;
    let background = tokio_util::sync::CancellationToken::new();
    crate::registry::spawn(dispatcher.clone(), store, revision, background.clone());
    for sc in &config.sources {
        if let Some(probe) = switchyard_connectors::lag::LagProbe::for_source(sc) {
            spawn_lag(&dispatcher, sc.name(), probe, background.clone());
        }
    }
    let sources = Sources::start(&config, &dispatcher, &state);
    let listener =
        TcpListener::bind(bind).await.map_err(|e| StartError::Other(format!("cannot listen on {bind}: {e}")))?;
    let addr = listener.local_addr().map_err(|e| StartError::Other(e.to_string()))?;
    let state = AppState {
        dispatcher: dispatcher.clone(),
        tokens: Arc::new(config.server.tokens.clone()),
        max_body_bytes: config.server.max_body_bytes,
        cron: sources.cron.clone(),
        s3: Arc::clone(&sources.s3),
    };
    let grace = config.server.shutdown_grace;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (http_stop_tx, http_stop_rx) = oneshot::channel::<()>();
    let app = api::router(state);
    let server = tokio::spawn(
        async move {
            let r = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = http_stop_rx.await;
                })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "HTTP server failed");
            }
        }
        .instrument(tracing::info_span!("http", %addr)),
    );
    let d = dispatcher.clone();
    let done = tokio::spawn(
        async move {
            tokio::select! {
                () = signal => {},
                _ = stop_rx => {},
            }
            tracing::info!(
                grace_s = grace.as_secs_f64(),
                "shutting down: ingress closed, draining in-flight invocations"
            );
            let _ = http_stop_tx.send(());
            background.cancel();
            let started = tokio::time::Instant::now();
            let sources_in_time = sources.stop(grace).await;
            let in_time = d.shutdown(grace.saturating_sub(started.elapsed())).await && sources_in_time;
            // In-flight HTTP requests finish once their invocations have; bound the wait anyway.
            if tokio::time::timeout(Duration::from_secs(5), server).await.is_err() {
                tracing::warn!("HTTP connections still open after the drain; closing them");
            }
            if in_time {
                tracing::info!("shutdown complete; all records flushed");
            } else {
                tracing::warn!(
                    "shutdown ran over the grace period; unfinished invocations were recorded as FAILURE (shutdown)"
                );
            }
            in_time
        }
        .instrument(tracing::info_span!("shutdown")),
    );
    tracing::info!(%addr, store = %config.store, functions = config.functions.len(), triggers = config.triggers.len(), "switchyard serving");
    Ok(Running { addr, dispatcher, stop: Some(stop_tx), done })
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Message sources and the tasks that forward their deliveries to the dispatcher.
struct Sources {
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// Handles on the cron sources, for the API.
    cron: crate::cron_ops::CronSources,
    /// The HTTP endpoints of `s3` sources with an `sns` or `webhook` input, by source name.
    s3: Arc<BTreeMap<String, S3HttpHandle>>,
}

/// How often source lag is read.
const LAG_EVERY: Duration = Duration::from_secs(5);

/// Reads a source's lag into `switchyard_source_lag_messages` until `stop`.
fn spawn_lag(
    dispatcher: &Dispatcher,
    source: &str,
    mut probe: switchyard_connectors::lag::LagProbe,
    stop: CancellationToken,
) {
    let metrics = Arc::clone(dispatcher.metrics());
    let source = source.to_owned();
    tokio::spawn(async move {
        loop {
            match probe.read().await {
                Ok(parts) => {
                    for (partition, n) in parts {
                        let label = switchyard_dispatcher::metrics::LagLabel { source: source.clone(), partition };
                        metrics.source_lag.get_or_create(&label).set(n);
                    }
                }
                Err(e) => tracing::debug!(%source, error = %e, "source lag not readable"),
            }
            tokio::select! {
                () = tokio::time::sleep(LAG_EVERY) => {}
                () = stop.cancelled() => return,
            }
        }
    });
}

/// The OpenTelemetry `messaging.system` of a source.
fn messaging_system(source: &switchyard_schemas::sources::SourceConfig) -> &'static str {
    use switchyard_schemas::sources::SourceConfig;
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

/// Deliveries a source may have queued for the dispatcher before it has to wait.
const SOURCE_CHANNEL: usize = 256;

impl Sources {
    fn start(config: &Config, dispatcher: &Dispatcher, state: &Arc<dyn SourceState>) -> Self {
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut cron = crate::cron_ops::CronSourcesBuilder::default();
        let mut s3 = BTreeMap::new();
        for sc in &config.sources {
            let name = sc.name().to_owned();
            let source: Box<dyn Source> = match sc {
                SourceConfig::S3(c) => {
                    let source = S3Source::new(c.clone());
                    if let Some(handle) = source.http_handle() {
                        s3.insert(name.clone(), handle);
                    }
                    Box::new(source)
                }
                _ => cron.build(sc),
            };
            let (tx, mut rx) = mpsc::channel(SOURCE_CHANNEL);
            let ctx = SourceContext {
                deliveries: tx,
                shutdown: shutdown.child_token(),
                name: name.clone(),
                state: Arc::clone(state),
            };
            tracker.spawn(
                async move {
                    match source.run(ctx).await {
                        Ok(()) => tracing::info!("source stopped"),
                        Err(e) => tracing::error!(error = %e, retry_hint = e.retry_hint(), "source failed"),
                    }
                }
                .instrument(tracing::info_span!("source", source = %name)),
            );
            let d = dispatcher.clone();
            let expand_s3 = sc.expands_s3_notifications();
            let parts_tracker = tracker.clone();
            let system = messaging_system(sc);
            // A clone shares the counter: no lock per delivery.
            let received = d
                .metrics()
                .events_received
                .get_or_create(&switchyard_dispatcher::metrics::SourceLabel { source: name.clone() })
                .clone();
            tracker.spawn(
                async move {
                    // Waits for room in the functions' queues: backpressure reaches the source through
                    // this bounded channel. A delivery refused at shutdown is dropped unacked.
                    while let Some(delivery) = rx.recv().await {
                        received.inc();
                        let deliveries = match expand_s3 {
                            true => match switchyard_connectors::s3::fanout::split(delivery) {
                                Ok((parts, done)) => {
                                    parts_tracker.spawn(done.in_current_span());
                                    parts
                                }
                                Err(delivery) => vec![*delivery],
                            },
                            false => vec![delivery],
                        };
                        for delivery in deliveries {
                            let span = crate::telemetry::receive_span(system, &name, &delivery.event);
                            if let Err(e) = d.dispatch(delivery).instrument(span).await {
                                tracing::debug!(error = %e, "delivery not dispatched");
                            }
                        }
                    }
                }
                .instrument(tracing::info_span!("source_forward", source = %sc.name())),
            );
        }
        tracker.close();
        Self { shutdown, tracker, cron: cron.finish(), s3: Arc::new(s3) }
    }

    /// Stops the sources: they stop taking messages, wait for in-flight acks and commit. Returns
    /// whether they finished within `grace`.
    async fn stop(&self, grace: Duration) -> bool {
        self.shutdown.cancel();
        let done = tokio::time::timeout(grace, self.tracker.wait()).await.is_ok();
        if !done {
            tracing::warn!("sources still draining after the grace period");
        }
        done
    }
}
