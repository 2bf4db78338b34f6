//! Wiring: configuration -> records store -> dispatcher -> HTTP API; graceful shutdown that stops
//! the ingress, drains in-flight invocations within the grace period and flushes records.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchyard_connectors::SourceState;
use switchyard_dispatcher::records::RecordStore;
use switchyard_dispatcher::Dispatcher;
use switchyard_schemas::Config;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::api::{self, AppState};
use crate::sources::Sources;

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
    let listener =
        TcpListener::bind(bind).await.map_err(|e| StartError::Other(format!("cannot listen on {bind}: {e}")))?;
    let addr = listener.local_addr().map_err(|e| StartError::Other(e.to_string()))?;
    let grace = config.server.shutdown_grace;
    let sources = Sources::new(&config.sources, &dispatcher, state, grace);
    // Functions and triggers changed through the API (here or on another replica) override the file.
    // Sources created through the API start with them (in a batch, after the functions and triggers
    // they feed); the file's sources start next, and their names stay the file's.
    let mut revision = 0;
    crate::registry::apply_since(&dispatcher, &sources, &mut revision)
        .await
        .map_err(|e| StartError::Other(format!("registry: {e}")))?;
    sources.start_file().await;
    let background = tokio_util::sync::CancellationToken::new();
    crate::registry::spawn(dispatcher.clone(), sources.clone(), store, revision, background.clone());
    let state = AppState {
        dispatcher: dispatcher.clone(),
        tokens: Arc::new(config.server.tokens.clone()),
        max_body_bytes: config.server.max_body_bytes,
        cron: sources.cron().clone(),
        s3: sources.s3().clone(),
        sources: sources.clone(),
    };
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
