-- Tables every service schema holds for the shared runtime: the outbox of
-- events waiting for the relay, the inbox of events a consumer has applied,
-- and stored results of idempotent requests. Every row names its programme.

CREATE TABLE outbox (
    seq          bigserial PRIMARY KEY,
    event_id     uuid        NOT NULL CONSTRAINT outbox_event_id_key UNIQUE,
    program_id   text        NOT NULL,
    member_id    uuid,
    source       text        NOT NULL,
    event_type   text        NOT NULL,
    envelope     bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished_idx ON outbox (seq) WHERE published_at IS NULL;

CREATE TABLE inbox (
    consumer     text        NOT NULL,
    event_id     uuid        NOT NULL,
    program_id   text        NOT NULL,
    stream_id    text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT inbox_pkey PRIMARY KEY (consumer, event_id)
);

CREATE TABLE idempotency_keys (
    program_id   text        NOT NULL,
    operation    text        NOT NULL,
    request_id   text        NOT NULL,
    request_hash bytea       NOT NULL,
    response     bytea,
    subject      uuid,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (program_id, operation, request_id)
);
CREATE INDEX idempotency_keys_subject_idx ON idempotency_keys (program_id, subject) WHERE subject IS NOT NULL;
