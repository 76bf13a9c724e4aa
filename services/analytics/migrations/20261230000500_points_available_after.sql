-- The movement after which members.points_available was taken: a movement
-- kept later (a bootstrap reading history beside live events) replaces the
-- figure only when it is newer (movement ids are UUIDv7, time-ordered).
ALTER TABLE members ADD COLUMN points_available_after uuid;
