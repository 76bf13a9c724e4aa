-- The benefits catalogue, paid plans, subscriptions, and benefit use.

-- Every PutBenefit and PutPlan raises the programme's revision, so caches of
-- the catalogue (benefits and plans) key on it and are never stale.
CREATE TABLE catalogue_revisions (
    program_id text   PRIMARY KEY,
    revision   bigint NOT NULL
);

-- The benefits catalogue.
CREATE TABLE benefits (
    program_id text        NOT NULL,
    code       text        NOT NULL,
    -- laurel.tier.v1.Benefit, encoded, as stored (validated).
    benefit    bytea       NOT NULL,
    active     boolean     NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (program_id, code)
);

-- Paid membership plans.
CREATE TABLE plans (
    program_id text        NOT NULL,
    code       text        NOT NULL,
    -- laurel.tier.v1.Plan, encoded, as stored (validated).
    plan       bytea       NOT NULL,
    active     boolean     NOT NULL,
    -- The plan's tier floor ('' for none), for the floors of a member.
    tier_floor text        NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (program_id, code)
);

-- Members' subscriptions. Live ones (active, cancelling, in_grace) give the
-- plan's benefits and tier floor. A member has at most one live
-- subscription per plan when subscribing (checked under the member's row
-- lock); a merge keeps the union, so the survivor can hold two.
CREATE TABLE subscriptions (
    subscription_id      uuid        PRIMARY KEY,
    program_id           text        NOT NULL,
    member_id            uuid        NOT NULL,
    plan_code            text        NOT NULL,
    status               text        NOT NULL
                         CHECK (status IN ('active', 'cancelling', 'in_grace', 'expired', 'cancelled')),
    -- Terms when subscribed.
    currency_code        text        NOT NULL,
    price_minor          bigint      NOT NULL CHECK (price_minor >= 0),
    billing_period       smallint    NOT NULL CHECK (billing_period IN (1, 2)),
    grace_days           integer     NOT NULL CHECK (grace_days >= 0),
    reminder_days        integer     NOT NULL CHECK (reminder_days >= 0),
    started_at           timestamptz NOT NULL,
    current_period_start timestamptz NOT NULL,
    current_period_end   timestamptz NOT NULL,
    grace_until          timestamptz,
    renewals             integer     NOT NULL DEFAULT 0,
    -- Personal: removed on erasure.
    payment_reference    text,
    cancel_reason        text,
    ended_at             timestamptz,
    -- The period end a renewal reminder was sent for (once per period).
    reminded_for         timestamptz,
    updated_at           timestamptz NOT NULL
);
CREATE INDEX subscriptions_member ON subscriptions (program_id, member_id, started_at DESC);
CREATE INDEX subscriptions_period_end ON subscriptions (current_period_end)
    WHERE status IN ('active', 'cancelling');
CREATE INDEX subscriptions_grace ON subscriptions (grace_until) WHERE status = 'in_grace';
CREATE INDEX subscriptions_plan ON subscriptions (program_id, plan_code)
    WHERE status IN ('active', 'cancelling', 'in_grace');

-- Uses of a limited benefit per member and quota period: the row is the
-- lock that keeps concurrent uses within the quota.
CREATE TABLE benefit_counters (
    program_id   text        NOT NULL,
    member_id    uuid        NOT NULL,
    benefit_code text        NOT NULL,
    -- laurel.tier.v1.QuotaPeriod number.
    period       smallint    NOT NULL,
    period_start timestamptz NOT NULL,
    used         bigint      NOT NULL CHECK (used >= 0),
    PRIMARY KEY (program_id, member_id, benefit_code, period, period_start)
);

-- Every use of a benefit, for usage figures.
CREATE TABLE benefit_uses (
    consumption_id uuid        PRIMARY KEY,
    program_id     text        NOT NULL,
    member_id      uuid        NOT NULL,
    benefit_code   text        NOT NULL,
    quantity       integer     NOT NULL CHECK (quantity > 0),
    -- What it was used for (an order id): removed on erasure.
    reference      text,
    -- 'tier' or 'paid_plan', and the tier or plan code that gave it.
    source         text        NOT NULL,
    source_code    text        NOT NULL,
    used_at        timestamptz NOT NULL
);
CREATE INDEX benefit_uses_time ON benefit_uses (program_id, used_at);
CREATE INDEX benefit_uses_member ON benefit_uses (program_id, member_id);
