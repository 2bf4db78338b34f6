//! Configuration of the cron source (`type: cron`): a schedule in 5-field, 6-field (seconds) or
//! macro form, an IANA timezone, the tick payload, catch-up after downtime and the concurrency
//! policy. Expressions and timezones are parsed here so a bad one is rejected at config load.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::FieldError;

/// A cron source: fires a `dev.switchyard.cron.tick` CloudEvent at every scheduled instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CronSourceConfig {
    /// Unique source name: letters, digits, `-` and `_`, at most 63 characters. Part of each tick's
    /// `source` (`/switchyard/sources/<name>`) and `id`.
    pub name: String,
    /// Cron expression: 5 fields (`min hour dom month dow`), 6 fields (`sec min hour dom month dow`),
    /// or a macro: `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`.
    pub schedule: String,
    /// IANA timezone the schedule's wall-clock times are read in, e.g. `Europe/Berlin`.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// The tick's event data. JSON (any YAML value) unless `content_type` says otherwise, in which
    /// case it must be a string. Absent: the event has no data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// The tick's `datacontenttype`. Default `application/json` when `data` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// What to fire for ticks missed while no replica ran: `none` (default), `latest` (the most
    /// recent missed tick) or `all` (every missed tick in order, bounded by `max_catch_up` and
    /// `starting_deadline`).
    #[serde(default)]
    pub catch_up: CatchUp,
    /// Most missed ticks fired by `catch_up: all` (the most recent ones).
    #[serde(default = "default_max_catch_up")]
    pub max_catch_up: u32,
    /// A tick that could not be fired within this long after its scheduled instant (downtime,
    /// backpressure) is not fired at all. Absent: no deadline.
    #[serde(default, with = "crate::duration::option", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub starting_deadline: Option<Duration>,
    /// What happens when a tick arrives while the previous invocation still runs: `allow`
    /// (default), `forbid` (the new tick is skipped and recorded SKIPPED), `replace` (the running
    /// invocation is cancelled).
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
}

/// Catch-up policy for ticks missed during downtime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Missed ticks are not fired.
    #[default]
    None,
    /// Only the most recent missed tick is fired.
    Latest,
    /// Every missed tick is fired in order (bounded by `max_catch_up` and `starting_deadline`).
    All,
}

/// Concurrency policy, as in Kubernetes CronJob.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConcurrencyPolicy {
    /// Ticks run concurrently.
    #[default]
    Allow,
    /// A tick arriving while the previous invocation runs is skipped (recorded SKIPPED).
    Forbid,
    /// A tick arriving while the previous invocation runs cancels it.
    Replace,
}

fn default_timezone() -> String {
    "UTC".to_owned()
}

const fn default_max_catch_up() -> u32 {
    10
}

/// Upper bound for `max_catch_up`.
pub const MAX_CATCH_UP_LIMIT: u32 = 10_000;

impl Default for CronSourceConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            schedule: String::new(),
            timezone: default_timezone(),
            data: None,
            content_type: None,
            catch_up: CatchUp::default(),
            max_catch_up: default_max_catch_up(),
            starting_deadline: None,
            concurrency_policy: ConcurrencyPolicy::default(),
        }
    }
}

/// Parses a cron expression: 5 fields, 6 fields (leading seconds) or a macro. Day-of-month and
/// day-of-week combine with OR when both are restricted, as in Vixie cron.
///
/// # Errors
/// A message saying what is wrong with the expression.
pub fn parse_schedule(expr: &str) -> Result<croner::Cron, String> {
    let trimmed = expr.trim();
    if trimmed.eq_ignore_ascii_case("@reboot") {
        return Err("`@reboot` is not supported: a cron source fires at scheduled instants only".to_owned());
    }
    let text = if trimmed.eq_ignore_ascii_case("@midnight") { "@daily" } else { trimmed };
    if !text.starts_with('@') {
        let fields = text.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(format!(
                "{expr:?} has {fields} fields; use 5 (`min hour dom month dow`), 6 (`sec min hour dom month dow`) or a macro like `@hourly`"
            ));
        }
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|e| format!("invalid cron expression {expr:?}: {e}"))
}

/// Parses an IANA timezone name (`UTC`, `Europe/Berlin`).
///
/// # Errors
/// A message naming the unknown zone.
pub fn parse_timezone(name: &str) -> Result<chrono_tz::Tz, String> {
    name.parse::<chrono_tz::Tz>().map_err(|_| format!("unknown IANA timezone {name:?} (e.g. \"Europe/Berlin\")"))
}

/// Whether a media type is JSON (`application/json`, `application/*+json`, `text/json`).
pub fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

impl CronSourceConfig {
    /// Checks every field before anything runs. `at` is the field path, e.g. `sources[0]`.
    ///
    /// # Errors
    /// The first problem, naming the field.
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        crate::config::check_name(&self.name, &format!("{at}.name"))?;
        let cron = parse_schedule(&self.schedule).map_err(|m| FieldError::new(format!("{at}.schedule"), m))?;
        // A pattern like `0 0 30 2 *` parses but never matches.
        let probe = chrono::DateTime::<chrono::Utc>::from_timestamp(0, 0).unwrap_or_default();
        if cron.find_next_occurrence(&probe, false).is_err() {
            return Err(FieldError::new(format!("{at}.schedule"), format!("{:?} never fires", self.schedule)));
        }
        parse_timezone(&self.timezone).map_err(|m| FieldError::new(format!("{at}.timezone"), m))?;
        if let Some(ct) = &self.content_type {
            let ok = ct.split(';').next().is_some_and(|essence| {
                let mut parts = essence.trim().split('/');
                matches!((parts.next(), parts.next(), parts.next()), (Some(t), Some(s), None) if !t.is_empty() && !s.is_empty())
            });
            if !ok {
                return Err(FieldError::new(format!("{at}.content_type"), format!("{ct:?} is not a media type")));
            }
            if !is_json_media_type(ct) && self.data.as_ref().is_some_and(|d| !d.is_string()) {
                return Err(FieldError::new(
                    format!("{at}.data"),
                    format!("must be a string when content_type is {ct:?} (not JSON)"),
                ));
            }
        }
        if self.max_catch_up == 0 || self.max_catch_up > MAX_CATCH_UP_LIMIT {
            return Err(FieldError::new(
                format!("{at}.max_catch_up"),
                format!("must be between 1 and {MAX_CATCH_UP_LIMIT}, got {}", self.max_catch_up),
            ));
        }
        if self.starting_deadline.is_some_and(|d| d.is_zero()) {
            return Err(FieldError::new(format!("{at}.starting_deadline"), "must be more than 0s"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(schedule: &str, tz: &str) -> CronSourceConfig {
        CronSourceConfig {
            name: "c".into(),
            schedule: schedule.into(),
            timezone: tz.into(),
            ..CronSourceConfig::default()
        }
    }

    #[test]
    fn accepts_five_six_fields_and_macros() {
        for s in ["*/5 * * * *", "0 */5 * * * *", "@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly"] {
            cfg(s, "UTC").validate("sources[0]").unwrap_or_else(|e| panic!("{s}: {e}"));
        }
    }

    #[test]
    fn rejects_bad_expressions_and_zones_naming_the_field() {
        for s in ["", "* * *", "61 * * * *", "* * * * * * *", "@reboot", "@often", "0 0 30 2 *"] {
            let e = cfg(s, "UTC").validate("sources[3]").unwrap_err();
            assert_eq!(e.field, "sources[3].schedule", "{s}: {e}");
        }
        let e = cfg("@hourly", "Mars/Olympus").validate("sources[1]").unwrap_err();
        assert_eq!(e.field, "sources[1].timezone");
        assert!(e.message.contains("Mars/Olympus"));
    }

    #[test]
    fn text_data_needs_a_string() {
        let mut c = cfg("@hourly", "UTC");
        c.content_type = Some("text/plain".into());
        c.data = Some(serde_json::json!({"a": 1}));
        assert_eq!(c.validate("s").unwrap_err().field, "s.data");
        c.data = Some(serde_json::json!("hello"));
        c.validate("s").unwrap();
    }
}
