-- Functions and triggers created or changed through the API: stored so they survive restarts and reach
-- every replica sharing the store. `config` is the JSON configuration; NULL means deleted. `revision`
-- grows with every change across the whole table, so a replica applies what is newer than it has seen.
CREATE TABLE IF NOT EXISTS registry (
    kind        TEXT NOT NULL CHECK (kind IN ('function', 'trigger')),
    name        TEXT NOT NULL,
    config      TEXT,
    revision    INTEGER NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE INDEX IF NOT EXISTS registry_revision ON registry (revision);
