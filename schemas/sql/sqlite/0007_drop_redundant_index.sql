-- event_records_event (event_source, event_id) is a prefix of event_records_idempotency
-- (event_source, event_id, trigger_name, status), which serves the same lookups; every record write
-- paid for both.
DROP INDEX IF EXISTS event_records_event;
