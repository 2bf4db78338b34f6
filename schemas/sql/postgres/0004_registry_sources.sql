-- Sources join functions and triggers in the shared registry.
ALTER TABLE registry DROP CONSTRAINT IF EXISTS registry_kind_check;
ALTER TABLE registry ADD CONSTRAINT registry_kind_check CHECK (kind IN ('function', 'trigger', 'source'));
