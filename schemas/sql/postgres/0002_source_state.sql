-- Durable state of sources (last fired cron tick, ...) and once-only claims across replicas.
CREATE TABLE IF NOT EXISTS source_state (
    source      TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source, key)
);

CREATE TABLE IF NOT EXISTS source_claims (
    source      TEXT NOT NULL,
    key         TEXT NOT NULL,
    claimed_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source, key)
);
