-- Idempotency keys are scoped to the caller as well as the programme, so two
-- callers that pick the same request_id never see each other's responses,
-- and expire after a window (created_at, on the service's clock).
ALTER TABLE idempotency_keys ADD COLUMN caller text NOT NULL DEFAULT '';
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys
    ADD CONSTRAINT idempotency_keys_pkey PRIMARY KEY (program_id, caller, operation, request_id);
CREATE INDEX IF NOT EXISTS idempotency_keys_expiry_idx ON idempotency_keys (created_at);
