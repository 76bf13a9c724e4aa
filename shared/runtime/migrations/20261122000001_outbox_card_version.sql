-- The member card version an event's change produced, when the change alters
-- the card: the relay invalidates the card at that version, and only then.
ALTER TABLE outbox ADD COLUMN card_version bigint;
