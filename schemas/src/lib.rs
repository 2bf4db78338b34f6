//! Switchyard data contracts: the CloudEvent model and its JSON/HTTP formats, the typed event
//! record, and the configuration file types (with their generated JSON Schema).

pub mod cloudevent;
pub mod config;
pub mod duration;
pub mod http_binding;
pub mod record;
pub mod sources;

pub use cloudevent::{CloudEvent, Data, EventError, ExtensionValue};
pub use config::{Config, ConfigError};
pub use record::{ErrorKind, EventRecord, Status};

/// SQLite migrations in order: (version, name, SQL). Applied by the records store at start.
pub const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "event_records", include_str!("../sql/sqlite/0001_event_records.sql")),
    (2, "source_state", include_str!("../sql/sqlite/0002_source_state.sql")),
    (3, "cold_start", include_str!("../sql/sqlite/0003_cold_start.sql")),
    (4, "replay", include_str!("../sql/sqlite/0004_replay.sql")),
    (5, "registry", include_str!("../sql/sqlite/0005_registry.sql")),
    (6, "registry_sources", include_str!("../sql/sqlite/0006_registry_sources.sql")),
    (7, "drop_redundant_index", include_str!("../sql/sqlite/0007_drop_redundant_index.sql")),
    (8, "partial_dead_letter_index", include_str!("../sql/sqlite/0008_partial_dead_letter_index.sql")),
];

/// PostgreSQL migrations in order: (version, name, SQL). Applied by the records store at start, under
/// an advisory lock so replicas starting together apply each once.
pub const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "event_records", include_str!("../sql/postgres/0001_event_records.sql")),
    (2, "source_state", include_str!("../sql/postgres/0002_source_state.sql")),
    (3, "registry", include_str!("../sql/postgres/0003_registry.sql")),
    (4, "registry_sources", include_str!("../sql/postgres/0004_registry_sources.sql")),
];
