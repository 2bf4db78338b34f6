//! The cron tick as a CloudEvent: `type` `dev.switchyard.cron.tick`, `source`
//! `/switchyard/sources/<name>`, `time` the scheduled instant, and an `id` derived from the source
//! name and the scheduled instant only, so every replica computes the same id for the same tick.

use chrono::{DateTime, SecondsFormat, Utc};
use switchyard_schemas::sources::cron::{is_json_media_type, CronSourceConfig};
use switchyard_schemas::{CloudEvent, Data};

/// The `type` of every tick.
pub const TICK_TYPE: &str = "dev.switchyard.cron.tick";

/// The `source` of a cron source's ticks.
pub fn source_uri(name: &str) -> String {
    format!("/switchyard/sources/{name}")
}

/// The deterministic id of the tick scheduled at `at`: `<name>:<instant in UTC, RFC 3339>`, e.g.
/// `nightly:2026-03-08T07:00:00Z`.
pub fn tick_id(name: &str, at: DateTime<Utc>) -> String {
    format!("{name}:{}", at.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// The id of a tick fired by hand ("fire now"): distinct from every scheduled tick's id.
pub fn manual_id(name: &str, at: DateTime<Utc>) -> String {
    format!("{name}:{}:manual-{}", at.to_rfc3339_opts(SecondsFormat::Millis, true), uuid::Uuid::new_v4().simple())
}

/// Builds the tick event with `id`, scheduled at `at` (written with the schedule's local offset).
pub fn tick_event(config: &CronSourceConfig, tz: chrono_tz::Tz, id: String, at: DateTime<Utc>) -> CloudEvent {
    let mut event = CloudEvent::new(id, source_uri(&config.name), TICK_TYPE);
    event.time = Some(at.with_timezone(&tz).fixed_offset());
    if let Some(data) = &config.data {
        let content_type = config.content_type.clone().unwrap_or_else(|| "application/json".to_owned());
        event.data = Some(match data {
            serde_json::Value::String(s) if !is_json_media_type(&content_type) => Data::Text(s.clone()),
            other => Data::Json(other.clone()),
        });
        event.datacontenttype = Some(content_type);
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_is_deterministic_and_valid() {
        let config = CronSourceConfig {
            name: "nightly".into(),
            schedule: "@daily".into(),
            data: Some(serde_json::json!({"job": "report"})),
            ..CronSourceConfig::default()
        };
        let at: DateTime<Utc> = "2026-03-08T07:00:00Z".parse().unwrap();
        let tz: chrono_tz::Tz = "America/New_York".parse().unwrap();
        let e = tick_event(&config, tz, tick_id("nightly", at), at);
        e.validate().unwrap();
        assert_eq!(e.id, "nightly:2026-03-08T07:00:00Z");
        assert_eq!(e.source, "/switchyard/sources/nightly");
        assert_eq!(e.ty, TICK_TYPE);
        assert_eq!(e.time.unwrap().to_rfc3339(), "2026-03-08T03:00:00-04:00");
        assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
        assert_ne!(manual_id("nightly", at), manual_id("nightly", at));
    }
}
