//! Keeps this replica's functions, triggers and sources in step with the shared registry in the
//! store: what the API changed (here or on another replica) is applied in revision order, at start
//! and then on every change. In each batch read, sources come after the functions and triggers, so a
//! source never starts before the triggers its events are meant for.

use switchyard_dispatcher::records::registry::{Entry, Kind};
use switchyard_dispatcher::records::RecordStore;
use switchyard_dispatcher::Dispatcher;
use switchyard_schemas::config::{FunctionConfig, SourceConfig, TriggerConfig};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::sources::{Change, ChangeError, Sources};

/// Applies every stored change after `*last` and advances it.
///
/// # Errors
/// The store's error (nothing after the failing read is applied; the next call retries).
pub async fn apply_since(dispatcher: &Dispatcher, sources: &Sources, last: &mut i64) -> Result<usize, String> {
    let entries = dispatcher.store().registry_since(*last).await.map_err(|e| e.to_string())?;
    let n = entries.len();
    let (source_entries, others): (Vec<Entry>, Vec<Entry>) = entries.into_iter().partition(|e| e.kind == Kind::Source);
    for e in others.iter().chain(&source_entries) {
        match e.kind {
            Kind::Source => apply_source(sources, e).await,
            _ => apply(dispatcher, e).await,
        }
        *last = (*last).max(e.revision);
    }
    Ok(n)
}

async fn apply_source(sources: &Sources, e: &Entry) {
    let name = &e.name;
    let result = match &e.config {
        Some(json) => {
            let config = match serde_json::from_str::<SourceConfig>(json) {
                Ok(c) => c,
                Err(err) => {
                    tracing::error!(source = %name, error = %err, "registry: stored source unreadable");
                    return;
                }
            };
            if let Err(err) = config.validate("source") {
                tracing::error!(source = %name, error = %err, "registry: stored source invalid; not started");
                return;
            }
            sources.upsert(config).await.map(|change| match change {
                Change::Created => tracing::info!(source = %name, revision = e.revision, "registry: source started"),
                Change::Replaced => {
                    tracing::info!(source = %name, revision = e.revision, "registry: source restarted with its new configuration");
                }
                Change::Unchanged => {}
            })
        }
        None => sources.remove(name).await.map(|removed| {
            if removed {
                tracing::info!(source = %name, revision = e.revision, "registry: source stopped and removed");
            }
        }),
    };
    match result {
        Ok(()) => {}
        Err(err @ ChangeError::DefinedInConfig { .. }) => {
            tracing::warn!(source = %name, error = %err, "registry: the config file's source is kept on this replica");
        }
        Err(err @ ChangeError::ShuttingDown) => tracing::debug!(source = %name, error = %err, "registry: not applied"),
    }
}

async fn apply(dispatcher: &Dispatcher, e: &Entry) {
    let name = &e.name;
    match (e.kind, &e.config) {
        (Kind::Function, Some(json)) => match serde_json::from_str::<FunctionConfig>(json) {
            Ok(config) if dispatcher.function(name).is_some_and(|f| f.config == config) => {}
            Ok(config) => match dispatcher.upsert_function(config).await {
                Ok(_) => tracing::info!(function = %name, revision = e.revision, "registry: function deployed"),
                Err(err) => tracing::error!(function = %name, error = %err, "registry: function not deployed here"),
            },
            Err(err) => tracing::error!(function = %name, error = %err, "registry: stored function unreadable"),
        },
        (Kind::Function, None) => {
            if dispatcher.function(name).is_some() {
                match dispatcher.remove_function(name).await {
                    Ok(()) => tracing::info!(function = %name, revision = e.revision, "registry: function removed"),
                    Err(err) => tracing::error!(function = %name, error = %err, "registry: function not removed here"),
                }
            }
        }
        (Kind::Trigger, Some(json)) => match serde_json::from_str::<TriggerConfig>(json) {
            Ok(config) if dispatcher.trigger(name).as_ref() == Some(&config) => {}
            Ok(config) => match dispatcher.upsert_trigger(config) {
                Ok(_) => tracing::info!(trigger = %name, revision = e.revision, "registry: trigger set"),
                Err(err) => tracing::error!(trigger = %name, error = %err, "registry: trigger not set here"),
            },
            Err(err) => tracing::error!(trigger = %name, error = %err, "registry: stored trigger unreadable"),
        },
        (Kind::Trigger, None) => {
            if dispatcher.remove_trigger(name) {
                tracing::info!(trigger = %name, revision = e.revision, "registry: trigger removed");
            }
        }
        (Kind::Source, _) => {}
    }
}

/// Follows the registry until `stop`, starting after revision `last`.
pub fn spawn(dispatcher: Dispatcher, sources: Sources, store: RecordStore, mut last: i64, stop: CancellationToken) {
    tokio::spawn(
        async move {
            let mut watch = store.registry_watch().await;
            loop {
                tokio::select! {
                    () = watch.changed() => {}
                    () = stop.cancelled() => return,
                }
                if let Err(e) = apply_since(&dispatcher, &sources, &mut last).await {
                    tracing::warn!(error = %e, "registry: cannot read changes; will retry");
                }
            }
        }
        .instrument(tracing::info_span!("registry")),
    );
}
