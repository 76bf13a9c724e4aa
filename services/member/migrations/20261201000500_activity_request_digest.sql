-- The request digest of an activity is now a keyed HMAC, and erasing a
-- member forgets it (NULL): it was derived from a request that may have held
-- a phone number or an email address.
ALTER TABLE activities ALTER COLUMN request_hash DROP NOT NULL;
