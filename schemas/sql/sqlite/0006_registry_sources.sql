-- Sources join functions and triggers in the shared registry. SQLite cannot change a CHECK
-- constraint in place, so the table is rebuilt with the same rows.
CREATE TABLE registry_v2 (
    kind        TEXT NOT NULL CHECK (kind IN ('function', 'trigger', 'source')),
    name        TEXT NOT NULL,
    config      TEXT,
    revision    INTEGER NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
INSERT INTO registry_v2 (kind, name, config, revision, updated_at)
    SELECT kind, name, config, revision, updated_at FROM registry;
DROP TABLE registry;
ALTER TABLE registry_v2 RENAME TO registry;
CREATE INDEX IF NOT EXISTS registry_revision ON registry (revision);
