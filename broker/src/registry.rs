//! Keeps this replica's functions and triggers in step with the shared registry in the store: what
//! the API changed (here or on another replica) is applied in revision order, at start and then on
//! every change.

use switchyard_dispatcher::records::registry::{Entry, Kind};
use switchyard_dispatcher::records::RecordStore;
use switchyard_dispatcher::Dispatcher;
use switchyard_schemas::config::{FunctionConfig, TriggerConfig};
use tokio_util::sync::CancellationToken;

/// Applies every stored change after `*last` and advances it.
///
/// # Errors
/// The store's error (nothing after the failing read is applied; the next call retries).
pub async fn apply_since(dispatcher: &Dispatcher, last: &mut i64) -> Result<usize, String> {
    let entries = dispatcher.store().registry_since(*last).await.map_err(|e| e.to_string())?;
    let n = entries.len();
    for e in entries {
        apply(dispatcher, &e).await;
        *last = e.revision;
    }
    Ok(n)
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
    }
}

/// Follows the registry until `stop`, starting after revision `last`.
pub fn spawn(dispatcher: Dispatcher, store: RecordStore, mut last: i64, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut watch = store.registry_watch().await;
        loop {
            tokio::select! {
                () = watch.changed() => {}
                () = stop.cancelled() => return,
            }
            if let Err(e) = apply_since(&dispatcher, &mut last).await {
                tracing::warn!(error = %e, "registry: cannot read changes; will retry");
            }
        }
    });
}
