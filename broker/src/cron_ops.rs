//! The running cron sources by name, kept by the broker so the API and CLI can list them with
//! their next fire times, pause and resume them, and fire one now.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use switchyard_connectors::cron::{CronHandle, CronSource};
use switchyard_connectors::Source;
use switchyard_schemas::config::SourceConfig;

/// Handles on the running cron sources, by name; cheap to clone (clones share the map). Sources
/// added, replaced or removed at runtime update it.
#[derive(Debug, Clone, Default)]
pub struct CronSources {
    handles: Arc<RwLock<BTreeMap<String, CronHandle>>>,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

impl CronSources {
    /// Builds the source for `config`. A cron source's handle replaces any under its name; any
    /// other kind of source removes it (the name is no longer a cron schedule).
    pub fn build(&self, config: &SourceConfig) -> Box<dyn Source> {
        if let SourceConfig::Cron(c) = config {
            let source = CronSource::new(c.clone());
            self.write().insert(c.name.clone(), source.handle());
            return Box::new(source);
        }
        self.remove(config.name());
        switchyard_connectors::build(config)
    }

    /// Forgets the source named `name` (it was removed).
    pub fn remove(&self, name: &str) {
        self.write().remove(name);
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, CronHandle>> {
        self.handles.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The source named `name`.
    pub fn get(&self, name: &str) -> Option<CronHandle> {
        self.handles.read().unwrap_or_else(PoisonError::into_inner).get(name).cloned()
    }

    /// Every cron source, by name.
    pub fn list(&self) -> Vec<CronHandle> {
        self.handles.read().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
    }

    /// A source as JSON: configuration, status and its next `next` fire times.
    pub fn describe(handle: &CronHandle, next: usize) -> Value {
        let c = handle.config();
        let status = handle.status();
        json!({
            "name": c.name,
            "schedule": c.schedule,
            "timezone": c.timezone,
            "catch_up": c.catch_up,
            "concurrency_policy": c.concurrency_policy,
            "paused": status.paused,
            "running": status.running,
            "last_fired": status.last_fired.map(ts),
            "next": handle.next(next).into_iter().map(ts).collect::<Vec<_>>(),
        })
    }
}
