-- Functions and triggers created or changed through the API: stored so they survive restarts and reach
-- every replica (each change is announced with NOTIFY switchyard_registry). `config` is the JSON
-- configuration; NULL means deleted. `revision` comes from one sequence, so replicas apply changes in order.
CREATE SEQUENCE IF NOT EXISTS registry_revision;
CREATE TABLE IF NOT EXISTS registry (
    kind        TEXT NOT NULL CHECK (kind IN ('function', 'trigger')),
    name        TEXT NOT NULL,
    config      TEXT,
    revision    BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE INDEX IF NOT EXISTS registry_revision_idx ON registry (revision);
