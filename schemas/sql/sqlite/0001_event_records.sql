-- One row per invocation: written only by the records writer (PENDING, then SUCCESS or FAILURE).
-- Times are UTC RFC 3339 strings with microseconds, so they sort as text.
CREATE TABLE IF NOT EXISTS event_records (
    id                  TEXT PRIMARY KEY,      -- UUIDv7, ordered by creation: the pagination key
    event_id            TEXT NOT NULL,
    event_source        TEXT NOT NULL,
    event_type          TEXT NOT NULL,
    event_subject       TEXT,
    trigger_name        TEXT NOT NULL,
    function_name       TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('PENDING', 'SUCCESS', 'FAILURE', 'SKIPPED')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    received_at         TEXT NOT NULL,
    started_at          TEXT,
    finished_at         TEXT,
    duration_ms         INTEGER,
    request             TEXT NOT NULL,
    request_base64      INTEGER NOT NULL DEFAULT 0,
    request_size        INTEGER NOT NULL,
    request_truncated   INTEGER NOT NULL DEFAULT 0,
    response_status     INTEGER,
    response            TEXT,
    response_base64     INTEGER NOT NULL DEFAULT 0,
    response_size       INTEGER,
    response_truncated  INTEGER NOT NULL DEFAULT 0,
    error_kind          TEXT,
    error_message       TEXT,
    dead_lettered       INTEGER NOT NULL DEFAULT 0,
    trace_id            TEXT,
    logs                TEXT
);

CREATE INDEX IF NOT EXISTS event_records_function ON event_records (function_name, id);
CREATE INDEX IF NOT EXISTS event_records_status ON event_records (status, id);
CREATE INDEX IF NOT EXISTS event_records_type ON event_records (event_type, id);
CREATE INDEX IF NOT EXISTS event_records_received ON event_records (received_at);
CREATE INDEX IF NOT EXISTS event_records_event ON event_records (event_source, event_id);
