-- The consumer advances a member's sequence in the statement that locks it
-- and keeps the number it replaced, so the event's place in the sequence is
-- known without a second statement after the effect (the transaction rolls
-- the advance back with the effect).
ALTER TABLE consumer_sequences ADD COLUMN previous_sequence bigint NOT NULL DEFAULT 0;
