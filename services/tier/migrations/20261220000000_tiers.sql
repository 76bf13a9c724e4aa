-- Tier ladders (versioned) and every member's tier.

-- A programme's ladder versions; the highest is in force.
CREATE TABLE ladders (
    program_id   text        NOT NULL,
    version      bigint      NOT NULL CHECK (version > 0),
    -- laurel.tier.v1.Ladder, encoded, as published (validated).
    ladder       bytea       NOT NULL,
    published_at timestamptz NOT NULL,
    PRIMARY KEY (program_id, version)
);

-- The members this service knows (from the member service's events) and
-- their tier state. One row per member; the row lock serialises changes of
-- one member's tier.
CREATE TABLE members (
    program_id           text        NOT NULL,
    member_id            uuid        NOT NULL,
    enrolled_at          timestamptz NOT NULL,
    status               text        NOT NULL DEFAULT 'active'
                         CHECK (status IN ('active', 'merged', 'erased')),
    merged_into          uuid,
    -- The tier the measures earned and since when (NULL: not evaluated).
    earned_tier          text,
    earned_since         timestamptz,
    -- The effective tier (manual, else the higher of earned and plan floor).
    tier_code            text,
    tier_source          text CHECK (tier_source IN ('earned', 'manual', 'paid_plan')),
    tier_since           timestamptz,
    -- A manual assignment in force.
    manual_tier          text,
    manual_until         timestamptz,
    manual_note          text,
    -- The qualification period the earned tier is reviewed at the end of.
    period_start         timestamptz,
    period_end           timestamptz,
    -- A downgrade decided at a review, waiting out its grace period.
    pending_downgrade    text,
    pending_downgrade_at timestamptz,
    -- Effective time of the downgrade a warning was sent for (once each).
    warned_for           timestamptz,
    ladder_version       bigint,
    -- Card version: every change of the tier state raises it.
    version              bigint      NOT NULL DEFAULT 1,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (program_id, member_id)
);
CREATE INDEX members_review ON members (program_id, period_end) WHERE status = 'active';
CREATE INDEX members_manual ON members (program_id, manual_until)
    WHERE status = 'active' AND manual_until IS NOT NULL;
CREATE INDEX members_downgrade ON members (program_id, pending_downgrade_at)
    WHERE status = 'active' AND pending_downgrade_at IS NOT NULL;

-- Qualifying measures per member, day (in the ladder's time zone, UTC
-- before any ladder) and currency, so a window is a sum over a range of
-- days and a ladder counts only its own currency, whenever it came.
-- Purchases fill spend and orders in their currency; points go in the row
-- of currency ''.
CREATE TABLE qualifying_days (
    program_id    text   NOT NULL,
    member_id     uuid   NOT NULL,
    day           date   NOT NULL,
    currency_code text   NOT NULL DEFAULT '',
    spend_minor   bigint NOT NULL DEFAULT 0,
    orders        bigint NOT NULL DEFAULT 0,
    points        bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (program_id, member_id, day, currency_code)
);

-- Orders counted, so a refund reduces the day and amount the purchase
-- counted on, and a full refund takes the order back out.
CREATE TABLE qualifying_orders (
    program_id     text        NOT NULL,
    order_id       text        NOT NULL,
    member_id      uuid        NOT NULL,
    day            date        NOT NULL,
    currency_code  text        NOT NULL,
    total_minor    bigint      NOT NULL CHECK (total_minor >= 0),
    refunded_minor bigint      NOT NULL DEFAULT 0
                   CHECK (refunded_minor >= 0 AND refunded_minor <= total_minor),
    PRIMARY KEY (program_id, order_id)
);
CREATE INDEX qualifying_orders_member ON qualifying_orders (program_id, member_id);

-- Every change of a member's tier, with its reason.
CREATE TABLE tier_history (
    id             uuid        PRIMARY KEY,
    program_id     text        NOT NULL,
    member_id      uuid        NOT NULL,
    previous_tier  text,
    tier_code      text        NOT NULL,
    reason         text        NOT NULL,
    note           text,
    effective_at   timestamptz NOT NULL,
    ladder_version bigint,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tier_history_member ON tier_history (program_id, member_id, effective_at DESC, id DESC);

-- Background re-evaluations of every member after a ladder change,
-- resumable from their cursor.
CREATE TABLE reevaluations (
    id              uuid        PRIMARY KEY,
    program_id      text        NOT NULL,
    ladder_version  bigint      NOT NULL,
    state           text        NOT NULL CHECK (state IN ('running', 'done', 'superseded')),
    members_total   bigint      NOT NULL DEFAULT 0,
    members_done    bigint      NOT NULL DEFAULT 0,
    members_changed bigint      NOT NULL DEFAULT 0,
    -- The last member id evaluated (members are walked in id order).
    cursor          uuid,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reevaluations_running ON reevaluations (program_id) WHERE state = 'running';
