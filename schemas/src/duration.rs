//! Human-readable durations (`30s`, `1m 30s`, `250ms`) for configuration fields.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Serialises a duration in humantime form (`1m 30s`).
///
/// # Errors
/// Never fails for a valid serializer.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

/// Parses a duration from a humantime string (`30s`, `500ms`, `2m`).
///
/// # Errors
/// When the string is not a duration.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// Parses `30s`, `500ms`, `1m 30s`.
///
/// # Errors
/// A message that quotes the text and shows the expected form.
pub fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration {text:?} ({e}); use a form like \"500ms\", \"30s\" or \"2m\""))
}

/// Optional durations.
pub mod option {
    use super::*;

    /// Serialises `Some(d)` as a humantime string and `None` as null.
    ///
    /// # Errors
    /// Never fails for a valid serializer.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// Parses an optional humantime string.
    ///
    /// # Errors
    /// When the string is not a duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| parse(&t).map_err(serde::de::Error::custom)).transpose()
    }
}
