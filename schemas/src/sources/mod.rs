//! Configuration of message sources: one internally tagged enum (`type: nats`, `type: amqp`, ...)
//! with one variant per connector. Adding a connector = a config module here, a variant, and a
//! match arm in `switchyard_connectors::build`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::FieldError;

/// A message source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {}

impl SourceConfig {
    /// The source's unique name.
    pub fn name(&self) -> &str {
        match *self {}
    }

    /// Checks the source's own fields. `at` is the field path, e.g. `sources[0]`.
    ///
    /// # Errors
    /// The first problem, with the field path.
    pub fn validate(&self, _at: &str) -> Result<(), FieldError> {
        match *self {}
    }
}
