-- Replay: the whole event when `request` was cut at the capture cap, and the record a replay came from.
ALTER TABLE event_records ADD COLUMN event TEXT;
ALTER TABLE event_records ADD COLUMN replay_of TEXT;
CREATE INDEX IF NOT EXISTS event_records_dead ON event_records (dead_lettered, id);
CREATE INDEX IF NOT EXISTS event_records_idempotency ON event_records (event_source, event_id, trigger_name, status);
