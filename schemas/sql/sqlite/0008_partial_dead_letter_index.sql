-- Dead-lettered records are few: index only them. Every record write paid for an entry in the full
-- (dead_lettered, id) index, most of them for dead_lettered = 0, which no query looks up by index
-- (listing records that were not dead-lettered walks the primary key, newest first). Queries say
-- `dead_lettered` (not `dead_lettered = ?`), so that SQLite can use this index.
DROP INDEX IF EXISTS event_records_dead;
CREATE INDEX IF NOT EXISTS event_records_dead ON event_records (id) WHERE dead_lettered;
