-- Members, their identities and consents, and the activity log. Every row is
-- keyed by programme. Personal data (names, birth date, identity values) is
-- stored only encrypted; identities are found through a keyed hash.

CREATE TABLE members (
    program_id         text        NOT NULL,
    member_id          uuid        NOT NULL,
    status             smallint    NOT NULL,
    given_name_enc     bytea,
    family_name_enc    bytea,
    birth_date_enc     bytea,
    gender             smallint    NOT NULL DEFAULT 0,
    region             text        NOT NULL DEFAULT '',
    preferred_language text        NOT NULL DEFAULT '',
    time_zone          text        NOT NULL DEFAULT '',
    tags               text[]      NOT NULL DEFAULT '{}',
    referral_code      text        NOT NULL,
    referred_by        uuid,
    merged_into        uuid,
    enrolled_at        timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    version            bigint      NOT NULL DEFAULT 1,
    CONSTRAINT members_pkey PRIMARY KEY (program_id, member_id),
    CONSTRAINT members_referral_code_key UNIQUE (program_id, referral_code)
);
CREATE INDEX members_enrolled_idx ON members (program_id, enrolled_at, member_id);
CREATE INDEX members_tags_idx ON members USING gin (tags);
CREATE INDEX members_referred_by_idx ON members (program_id, referred_by) WHERE referred_by IS NOT NULL;

CREATE TABLE identities (
    program_id    text        NOT NULL,
    identity_type smallint    NOT NULL,
    namespace     text        NOT NULL DEFAULT '',
    lookup_hash   bytea       NOT NULL,
    value_enc     bytea       NOT NULL,
    member_id     uuid        NOT NULL,
    linked_at     timestamptz NOT NULL,
    CONSTRAINT identities_pkey PRIMARY KEY (program_id, lookup_hash),
    CONSTRAINT identities_member_fkey FOREIGN KEY (program_id, member_id) REFERENCES members
);
CREATE INDEX identities_member_idx ON identities (program_id, member_id);

CREATE TABLE consents (
    program_id text        NOT NULL,
    member_id  uuid        NOT NULL,
    channel    smallint    NOT NULL,
    granted    boolean     NOT NULL,
    source     text        NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL,
    CONSTRAINT consents_pkey PRIMARY KEY (program_id, member_id, channel),
    CONSTRAINT consents_member_fkey FOREIGN KEY (program_id, member_id) REFERENCES members
);

CREATE TABLE activities (
    program_id    text        NOT NULL,
    activity_id   uuid        NOT NULL,
    member_id     uuid        NOT NULL,
    activity_type smallint    NOT NULL,
    source        text        NOT NULL,
    external_id   text        NOT NULL,
    occurred_at   timestamptz NOT NULL,
    recorded_at   timestamptz NOT NULL,
    order_id      text,
    currency      text,
    amount_minor  bigint,
    body          bytea       NOT NULL,
    request_hash  bytea       NOT NULL,
    CONSTRAINT activities_pkey PRIMARY KEY (program_id, activity_id),
    CONSTRAINT activities_source_external_id_key UNIQUE (program_id, source, external_id),
    CONSTRAINT activities_member_fkey FOREIGN KEY (program_id, member_id) REFERENCES members
);
CREATE INDEX activities_member_idx ON activities (program_id, member_id, occurred_at DESC, activity_id DESC);
CREATE UNIQUE INDEX activities_purchase_order_key ON activities (program_id, order_id) WHERE activity_type = 1;
CREATE INDEX activities_refund_order_idx ON activities (program_id, order_id) WHERE activity_type = 2;
