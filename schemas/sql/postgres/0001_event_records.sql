-- One row per invocation: written only by the records writer (PENDING, then SUCCESS, FAILURE or SKIPPED).
-- The same columns as the SQLite store, with native types.
CREATE TABLE IF NOT EXISTS event_records (
    id                  UUID PRIMARY KEY,      -- UUIDv7, ordered by creation: the pagination key
    event_id            TEXT NOT NULL,
    event_source        TEXT NOT NULL,
    event_type          TEXT NOT NULL,
    event_subject       TEXT,
    trigger_name        TEXT NOT NULL,
    function_name       TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('PENDING', 'SUCCESS', 'FAILURE', 'SKIPPED')),
    attempts            BIGINT NOT NULL DEFAULT 0,
    received_at         TIMESTAMPTZ NOT NULL,
    started_at          TIMESTAMPTZ,
    finished_at         TIMESTAMPTZ,
    duration_ms         BIGINT,
    request             TEXT NOT NULL,
    request_base64      BOOLEAN NOT NULL DEFAULT FALSE,
    request_size        BIGINT NOT NULL,
    request_truncated   BOOLEAN NOT NULL DEFAULT FALSE,
    response_status     BIGINT,
    response            TEXT,
    response_base64     BOOLEAN NOT NULL DEFAULT FALSE,
    response_size       BIGINT,
    response_truncated  BOOLEAN NOT NULL DEFAULT FALSE,
    error_kind          TEXT,
    error_message       TEXT,
    dead_lettered       BOOLEAN NOT NULL DEFAULT FALSE,
    trace_id            TEXT,
    logs                TEXT,
    cold_start          BOOLEAN NOT NULL DEFAULT FALSE,
    init_ms             BIGINT,
    event               TEXT,
    replay_of           UUID
);

CREATE INDEX IF NOT EXISTS event_records_function ON event_records (function_name, id);
CREATE INDEX IF NOT EXISTS event_records_status ON event_records (status, id);
CREATE INDEX IF NOT EXISTS event_records_type ON event_records (event_type, id);
CREATE INDEX IF NOT EXISTS event_records_received ON event_records (received_at);
CREATE INDEX IF NOT EXISTS event_records_event ON event_records (event_source, event_id, trigger_name, status);
CREATE INDEX IF NOT EXISTS event_records_dead ON event_records (id) WHERE dead_lettered;
