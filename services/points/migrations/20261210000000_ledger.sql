-- The points ledger. Every row is keyed by programme.
--
-- Double entry: a movement (one earn, redemption, expiry...) is a set of
-- entries that sum to zero, between a member account and the programme's
-- system accounts (issued, redeemed, expired, adjusted, transferred).
-- Entries are append-only; corrections are new movements. A member account's
-- row caches the sum of its entries, updated in the same transaction, and
-- splits it into points left in lots, points held and points owed.

-- A programme's points settings (laurel.points.v1.ProgramSettings bytes).
CREATE TABLE program_settings (
    program_id text        PRIMARY KEY,
    settings   bytea       NOT NULL,
    updated_at timestamptz NOT NULL
);

-- Member accounts. balance = lots_total + held - debt, always; lots_total,
-- held and debt are never negative, so no spend can take more than the
-- lots hold, whatever the application does: the last line of defence
-- against overspending.
CREATE TABLE accounts (
    program_id      text        NOT NULL,
    member_id       uuid        NOT NULL,
    status          smallint    NOT NULL DEFAULT 1,   -- 1 active, 2 merged, 3 erased
    merged_into     uuid,
    balance         bigint      NOT NULL DEFAULT 0,
    lots_total      bigint      NOT NULL DEFAULT 0,
    held            bigint      NOT NULL DEFAULT 0,
    debt            bigint      NOT NULL DEFAULT 0,
    lifetime_earned bigint      NOT NULL DEFAULT 0,
    version         bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    CONSTRAINT accounts_pkey PRIMARY KEY (program_id, member_id),
    CONSTRAINT accounts_parts_not_negative CHECK (lots_total >= 0 AND held >= 0 AND debt >= 0),
    CONSTRAINT accounts_balance_is_its_parts CHECK (balance = lots_total + held - debt)
);

-- Movements: what happened, as the member reads it in the statement.
CREATE TABLE movements (
    program_id          text        NOT NULL,
    movement_id         uuid        NOT NULL,
    member_id           uuid        NOT NULL,
    type                smallint    NOT NULL,
    points              bigint      NOT NULL,
    earn_kind           smallint    NOT NULL DEFAULT 0,
    reason              text        NOT NULL DEFAULT '',
    reference           text        NOT NULL DEFAULT '',
    order_id            text        NOT NULL DEFAULT '',
    related_movement_id uuid,
    counterparty        uuid,
    occurred_at         timestamptz NOT NULL,
    recorded_at         timestamptz NOT NULL,
    CONSTRAINT movements_pkey PRIMARY KEY (movement_id)
);
CREATE INDEX movements_recorded_idx ON movements (program_id, recorded_at);

-- Entries: the balanced sides of each movement. account: 1 member (member_id
-- set), 2 issued, 3 redeemed, 4 expired, 5 adjusted, 6 transferred.
CREATE TABLE entries (
    movement_id   uuid        NOT NULL,
    line          smallint    NOT NULL,
    program_id    text        NOT NULL,
    account       smallint    NOT NULL,
    member_id     uuid,
    points        bigint      NOT NULL,
    balance_after bigint,
    type          smallint    NOT NULL,
    recorded_at   timestamptz NOT NULL,
    CONSTRAINT entries_pkey PRIMARY KEY (movement_id, line),
    CONSTRAINT entries_member_accounts CHECK ((account = 1) = (member_id IS NOT NULL))
);
CREATE INDEX entries_statement_idx ON entries (program_id, member_id, movement_id DESC) WHERE member_id IS NOT NULL;
CREATE INDEX entries_report_idx ON entries (program_id, account, recorded_at);

-- Lots: each earn's points, with their own availability and expiry.
-- remaining is what is left unheld and unspent.
CREATE TABLE lots (
    program_id     text        NOT NULL,
    lot_id         uuid        NOT NULL,
    member_id      uuid        NOT NULL,
    movement_id    uuid        NOT NULL,
    points         bigint      NOT NULL,
    remaining      bigint      NOT NULL,
    earned_at      timestamptz NOT NULL,
    available_from timestamptz NOT NULL,
    expires_at     timestamptz,
    reminded       boolean     NOT NULL DEFAULT false,
    CONSTRAINT lots_pkey PRIMARY KEY (lot_id),
    CONSTRAINT lots_remaining_in_range CHECK (points > 0 AND remaining >= 0 AND remaining <= points)
);
-- Open lots of an account in spending order (soonest expiry first), and by
-- availability (pending ones).
CREATE INDEX lots_spending_idx ON lots (program_id, member_id, expires_at, earned_at, lot_id) WHERE remaining > 0;
CREATE INDEX lots_pending_idx ON lots (program_id, member_id, available_from) WHERE remaining > 0;
CREATE INDEX lots_due_idx ON lots (expires_at) WHERE remaining > 0 AND expires_at IS NOT NULL;
CREATE INDEX lots_reminder_idx ON lots (expires_at) WHERE remaining > 0 AND NOT reminded AND expires_at IS NOT NULL;

-- How much each spending movement (redeem, capture, expiry, reversal,
-- transfer) took from each lot; negative when it put points back.
CREATE TABLE lot_uses (
    movement_id uuid   NOT NULL,
    lot_id      uuid   NOT NULL,
    points      bigint NOT NULL,
    CONSTRAINT lot_uses_pkey PRIMARY KEY (movement_id, lot_id)
);
CREATE INDEX lot_uses_lot_idx ON lot_uses (lot_id);

-- Holds: points reserved at checkout. status: 1 active, 2 captured,
-- 3 released, 4 expired; each resolves at most once.
CREATE TABLE holds (
    program_id  text        NOT NULL,
    hold_id     uuid        NOT NULL,
    member_id   uuid        NOT NULL,
    points      bigint      NOT NULL,
    captured    bigint      NOT NULL DEFAULT 0,
    status      smallint    NOT NULL,
    expires_at  timestamptz NOT NULL,
    reference   text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL,
    resolved_at timestamptz,
    movement_id uuid,
    CONSTRAINT holds_pkey PRIMARY KEY (hold_id),
    CONSTRAINT holds_amounts CHECK (points > 0 AND captured >= 0 AND captured <= points)
);
CREATE INDEX holds_due_idx ON holds (expires_at) WHERE status = 1;
CREATE INDEX holds_member_idx ON holds (program_id, member_id) WHERE status = 1;

-- Which lots each hold reserved, and how much from each.
CREATE TABLE hold_lots (
    hold_id uuid   NOT NULL,
    lot_id  uuid   NOT NULL,
    points  bigint NOT NULL,
    CONSTRAINT hold_lots_pkey PRIMARY KEY (hold_id, lot_id),
    CONSTRAINT hold_lots_positive CHECK (points > 0)
);

-- Orders that earned: an order earns once, and refunds reverse it in
-- proportion to what was refunded.
CREATE TABLE order_earns (
    program_id     text        NOT NULL,
    order_id       text        NOT NULL,
    member_id      uuid        NOT NULL,
    movement_id    uuid        NOT NULL,
    lot_id         uuid,
    points         bigint      NOT NULL,
    total_minor    bigint      NOT NULL,
    currency       text        NOT NULL,
    refunded_minor bigint      NOT NULL DEFAULT 0,
    reversed       bigint      NOT NULL DEFAULT 0,
    CONSTRAINT order_earns_pkey PRIMARY KEY (program_id, order_id),
    CONSTRAINT order_earns_bounds CHECK (refunded_minor >= 0 AND refunded_minor <= total_minor AND reversed >= 0 AND reversed <= points)
);

-- Points earned per member, day and kind, for daily caps.
CREATE TABLE daily_earnings (
    program_id text     NOT NULL,
    member_id  uuid     NOT NULL,
    day        date     NOT NULL,
    earn_kind  smallint NOT NULL,
    points     bigint   NOT NULL DEFAULT 0,
    events     integer  NOT NULL DEFAULT 0,
    CONSTRAINT daily_earnings_pkey PRIMARY KEY (program_id, member_id, day, earn_kind)
);

-- Members' tiers over time, kept from the tier service's TierChanged events.
CREATE TABLE member_tiers (
    program_id   text        NOT NULL,
    member_id    uuid        NOT NULL,
    effective_at timestamptz NOT NULL,
    tier         text        NOT NULL,
    CONSTRAINT member_tiers_pkey PRIMARY KEY (program_id, member_id, effective_at)
);

-- A redemption is reversed at most once.
CREATE UNIQUE INDEX movements_reversed_once ON movements (related_movement_id) WHERE type = 5;
-- Holds and orders reach their member's accounts through these.
CREATE INDEX order_earns_member_idx ON order_earns (program_id, member_id);
