-- The analytics service's own copy of the facts, fed by every other
-- service's events (and bootstrapped from their exports), and the figures
-- computed from them. Every row carries its programme.

CREATE TABLE settings (
    program_id              text PRIMARY KEY,
    currency_code           text NOT NULL,
    time_zone               text NOT NULL,
    rfm_bins                int NOT NULL,
    active_days             int NOT NULL,
    expected_lifespan_years double precision NOT NULL,
    default_rhythm_days     int NOT NULL,
    annual_discount_bp      int NOT NULL,
    updated_at              timestamptz NOT NULL
);

-- One row per member ever seen; points, tier, plan and feedback figures
-- are kept here as events arrive.
CREATE TABLE members (
    program_id           text NOT NULL,
    member_id            uuid NOT NULL,
    enrolled_at          timestamptz NOT NULL,
    status               text NOT NULL DEFAULT 'active', -- active | merged | erased
    merged_into          uuid,
    tier_code            text NOT NULL DEFAULT '',
    plan_status          text NOT NULL DEFAULT 'none',
    points_earned        bigint NOT NULL DEFAULT 0,
    points_redeemed      bigint NOT NULL DEFAULT 0,
    points_expired       bigint NOT NULL DEFAULT 0,
    points_available     bigint NOT NULL DEFAULT 0, -- balance after the latest movement
    latest_nps           int NOT NULL DEFAULT -1,
    latest_feedback_at   timestamptz,
    negative_feedback    bigint NOT NULL DEFAULT 0,
    complaints           bigint NOT NULL DEFAULT 0,
    campaign_exposures   bigint NOT NULL DEFAULT 0,
    campaign_conversions bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (program_id, member_id)
);
CREATE INDEX members_enrolled ON members (program_id, enrolled_at);

-- Every purchase, members' and guests' (member_id NULL, guest true). An
-- erased member's purchases stay, anonymised (member_id NULL, guest false).
CREATE TABLE purchases (
    program_id     text NOT NULL,
    order_id       text NOT NULL,
    activity_id    uuid NOT NULL,
    member_id      uuid,
    guest          boolean NOT NULL,
    currency_code  text NOT NULL,
    total_minor    bigint NOT NULL,
    refunded_minor bigint NOT NULL DEFAULT 0,
    occurred_at    timestamptz NOT NULL,
    day            date NOT NULL, -- in the programme's time zone
    channel        text NOT NULL DEFAULT '',
    store_id       text NOT NULL DEFAULT '',
    PRIMARY KEY (program_id, order_id)
);
CREATE INDEX purchases_member ON purchases (program_id, member_id, day);
CREATE INDEX purchases_day ON purchases (program_id, day);

CREATE TABLE purchase_lines (
    program_id       text NOT NULL,
    order_id         text NOT NULL,
    line             int NOT NULL,
    member_id        uuid,
    day              date NOT NULL,
    sku              text NOT NULL,
    category         text NOT NULL,
    quantity         bigint NOT NULL,
    unit_price_minor bigint NOT NULL,
    PRIMARY KEY (program_id, order_id, line)
);
CREATE INDEX purchase_lines_member ON purchase_lines (program_id, member_id, day);

CREATE TABLE refunds (
    program_id    text NOT NULL,
    activity_id   uuid NOT NULL,
    order_id      text NOT NULL,
    member_id     uuid,
    currency_code text NOT NULL,
    amount_minor  bigint NOT NULL, -- as applied: at most what was left of the purchase
    applied       boolean NOT NULL, -- false: its purchase was unknown or in another currency
    occurred_at   timestamptz NOT NULL,
    day           date NOT NULL,
    PRIMARY KEY (program_id, activity_id)
);
CREATE INDEX refunds_order ON refunds (program_id, order_id);

-- A member's purchase days per currency: distinct days, and spend net of
-- refunds on the day of the purchase refunded.
CREATE TABLE member_days (
    program_id    text NOT NULL,
    member_id     uuid NOT NULL,
    currency_code text NOT NULL,
    day           date NOT NULL,
    orders        bigint NOT NULL,
    spend_minor   bigint NOT NULL,
    PRIMARY KEY (program_id, member_id, currency_code, day)
);

-- A member's spend figures per currency, kept from the facts above.
CREATE TABLE member_spend (
    program_id        text NOT NULL,
    member_id         uuid NOT NULL,
    currency_code     text NOT NULL,
    first_purchase_at timestamptz NOT NULL,
    last_purchase_at  timestamptz NOT NULL,
    first_day         date NOT NULL,
    last_day          date NOT NULL,
    orders            bigint NOT NULL,
    purchase_days     bigint NOT NULL,
    gross_minor       bigint NOT NULL,
    refunded_minor    bigint NOT NULL,
    refunds           bigint NOT NULL,
    PRIMARY KEY (program_id, member_id, currency_code)
);
CREATE INDEX member_spend_currency ON member_spend (program_id, currency_code, last_day);

-- Feedback scores and product reviews.
CREATE TABLE feedback (
    program_id  text NOT NULL,
    activity_id uuid NOT NULL,
    member_id   uuid,
    kind        text NOT NULL, -- nps | review | complaint
    score       int NOT NULL,  -- NPS 0..10, review rating 1..5, complaint 0
    occurred_at timestamptz NOT NULL,
    day         date NOT NULL,
    PRIMARY KEY (program_id, activity_id)
);
CREATE INDEX feedback_day ON feedback (program_id, kind, day);

-- Points movements as the member sees them (positive in, negative out).
CREATE TABLE points_movements (
    program_id  text NOT NULL,
    movement_id uuid NOT NULL,
    member_id   uuid,
    kind        text NOT NULL, -- earn | reverse_earn | redeem | reverse_redemption | expire | other
    points      bigint NOT NULL,
    occurred_at timestamptz NOT NULL,
    day         date NOT NULL,
    PRIMARY KEY (program_id, movement_id)
);
CREATE INDEX points_movements_day ON points_movements (program_id, day);

-- Paid-membership events, for the renewal rate.
CREATE TABLE subscription_events (
    program_id      text NOT NULL,
    event_id        uuid NOT NULL,
    subscription_id text NOT NULL,
    member_id       uuid,
    kind            text NOT NULL, -- started | renewed | due | cancelled | ended
    occurred_at     timestamptz NOT NULL,
    day             date NOT NULL,
    PRIMARY KEY (program_id, event_id)
);
CREATE INDEX subscription_events_day ON subscription_events (program_id, kind, day);

-- How far a bootstrap from an owner's export got, per programme and
-- source, so a rerun goes on where the last one stopped.
CREATE TABLE bootstrap_cursors (
    program_id text NOT NULL,
    source     text NOT NULL, -- members | activities | movements
    cursor     text NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (program_id, source)
);
