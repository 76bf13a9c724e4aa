-- The rewards catalogue: rewards bought with points, and their redemptions.
--
-- Stock is decremented by a conditional UPDATE (stock >= quantity) that
-- holds the reward's row lock until the redemption commits; the CHECK below
-- is the last line of defence: stock never goes below zero, whatever the
-- application does.

-- Rewards. limit_period: 0 the whole validity window, 1 day, 2 month,
-- 3 quarter, 4 year (laurel.points.v1.Period numbers, UTC calendar periods).
-- version increases with every change, stock changes included.
CREATE TABLE rewards (
    program_id       text        NOT NULL,
    reward_id        uuid        NOT NULL,
    name             text        NOT NULL,
    description      text        NOT NULL DEFAULT '',
    points_price     bigint      NOT NULL,
    stock            bigint      NOT NULL,
    per_member_limit bigint      NOT NULL DEFAULT 0,
    limit_period     smallint    NOT NULL DEFAULT 0,
    valid_from       timestamptz,
    valid_until      timestamptz,
    active           boolean     NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    version          bigint      NOT NULL DEFAULT 1,
    CONSTRAINT rewards_pkey PRIMARY KEY (program_id, reward_id),
    CONSTRAINT rewards_stock_not_negative CHECK (stock >= 0),
    CONSTRAINT rewards_price_positive CHECK (points_price > 0),
    CONSTRAINT rewards_limit_not_negative CHECK (per_member_limit >= 0),
    CONSTRAINT rewards_limit_period_known CHECK (limit_period BETWEEN 0 AND 4),
    CONSTRAINT rewards_window_ordered CHECK (valid_from IS NULL OR valid_until IS NULL OR valid_from < valid_until)
);

-- Redemptions of rewards. status: 1 pending, 2 fulfilled, 3 cancelled
-- (laurel.points.v1.FulfilmentStatus numbers); only a pending one changes.
-- movement_id is the ledger's redemption movement.
CREATE TABLE reward_redemptions (
    program_id    text        NOT NULL,
    redemption_id uuid        NOT NULL,
    reward_id     uuid        NOT NULL,
    member_id     uuid        NOT NULL,
    quantity      bigint      NOT NULL,
    points        bigint      NOT NULL,
    movement_id   uuid        NOT NULL,
    status        smallint    NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    CONSTRAINT reward_redemptions_pkey PRIMARY KEY (program_id, redemption_id),
    CONSTRAINT reward_redemptions_reward_fkey FOREIGN KEY (program_id, reward_id) REFERENCES rewards (program_id, reward_id),
    CONSTRAINT reward_redemptions_movement_once UNIQUE (movement_id),
    CONSTRAINT reward_redemptions_amounts CHECK (quantity > 0 AND points > 0),
    CONSTRAINT reward_redemptions_status_known CHECK (status BETWEEN 1 AND 3)
);
-- Per-member limits count a member's units of a reward in a period.
CREATE INDEX reward_redemptions_limit_idx ON reward_redemptions (program_id, reward_id, member_id, created_at);
-- Listing, newest first, by reward or by member.
CREATE INDEX reward_redemptions_reward_idx ON reward_redemptions (program_id, reward_id, created_at DESC, redemption_id DESC);
CREATE INDEX reward_redemptions_member_idx ON reward_redemptions (program_id, member_id, created_at DESC, redemption_id DESC);
CREATE INDEX reward_redemptions_recent_idx ON reward_redemptions (program_id, created_at DESC, redemption_id DESC);
