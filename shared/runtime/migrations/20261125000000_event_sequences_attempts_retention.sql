-- The event backbone, second pass.
--
-- member_sequences: the last sequence handed out per (programme, member,
-- source); the outbox writer bumps it in the transaction of the change, so
-- a member's events are numbered 1, 2, 3... without gaps.
-- consumer_sequences: the last sequence a consumer group applied per
-- (programme, member, source), written with the effect, so a handler can
-- tell an in-order event from a gap or a late one.
-- event_attempts: handler failures per (group, event), so retries are
-- counted by real attempts and not by stream deliveries.
-- The remaining indexes let the retention job prune by age cheaply.

ALTER TABLE outbox ADD COLUMN member_sequence bigint NOT NULL DEFAULT 0;

CREATE TABLE member_sequences (
    program_id    text   NOT NULL,
    member_id     uuid   NOT NULL,
    source        text   NOT NULL,
    last_sequence bigint NOT NULL,
    CONSTRAINT member_sequences_pkey PRIMARY KEY (program_id, member_id, source)
);

CREATE TABLE consumer_sequences (
    consumer      text        NOT NULL,
    program_id    text        NOT NULL,
    member_id     uuid        NOT NULL,
    source        text        NOT NULL,
    last_sequence bigint      NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT consumer_sequences_pkey PRIMARY KEY (consumer, program_id, member_id, source)
);

CREATE TABLE event_attempts (
    consumer   text        NOT NULL,
    event_id   uuid        NOT NULL,
    attempts   integer     NOT NULL,
    last_error text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT event_attempts_pkey PRIMARY KEY (consumer, event_id)
);

CREATE INDEX outbox_published_at_idx ON outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX inbox_processed_at_idx ON inbox (processed_at);
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
CREATE INDEX event_attempts_updated_at_idx ON event_attempts (updated_at);
