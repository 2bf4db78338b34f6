-- Whether an invocation had to start a new function instance, and how long that took.
ALTER TABLE event_records ADD COLUMN cold_start INTEGER NOT NULL DEFAULT 0;
ALTER TABLE event_records ADD COLUMN init_ms INTEGER;
