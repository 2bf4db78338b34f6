//! The running cron sources by name, kept by the broker so the API and CLI can list them with
//! their next fire times, pause and resume them, and fire one now.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use switchyard_connectors::cron::{CronHandle, CronSource};
use switchyard_connectors::Source;
use switchyard_schemas::config::SourceConfig;

/// Handles on the configured cron sources, by name; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct CronSources {
    handles: Arc<BTreeMap<String, CronHandle>>,
}

/// Collects cron handles while the sources are built.
#[derive(Debug, Default)]
pub struct CronSourcesBuilder {
    handles: BTreeMap<String, CronHandle>,
}

impl CronSourcesBuilder {
    /// Builds the source for `config`, keeping a handle when it is a cron source.
    pub fn build(&mut self, config: &SourceConfig) -> Box<dyn Source> {
        #[allow(irrefutable_let_patterns)]
        if let SourceConfig::Cron(c) = config {
            let source = CronSource::new(c.clone());
            self.handles.insert(c.name.clone(), source.handle());
            return Box::new(source);
        }
        switchyard_connectors::build(config)
    }

    /// The handles collected.
    pub fn finish(self) -> CronSources {
        CronSources { handles: Arc::new(self.handles) }
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

impl CronSources {
    /// The source named `name`.
    pub fn get(&self, name: &str) -> Option<&CronHandle> {
        self.handles.get(name)
    }

    /// Every cron source, by name.
    pub fn iter(&self) -> impl Iterator<Item = &CronHandle> {
        self.handles.values()
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
