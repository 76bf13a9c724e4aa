-- Alert rules on KPIs and the alerts they raised, with their webhook
-- delivery. Enum values are stored by their proto names.

CREATE TABLE alert_rules (
    program_id       text NOT NULL,
    rule_id          text NOT NULL,
    kpi              text NOT NULL, -- Kpi name, for example KPI_POINTS_ISSUED
    period           text NOT NULL, -- Period name
    channel          text NOT NULL DEFAULT '',
    store_id         text NOT NULL DEFAULT '',
    tier_code        text NOT NULL DEFAULT '',
    condition        text NOT NULL, -- AlertCondition name
    threshold        double precision NOT NULL,
    deviations       double precision NOT NULL,
    baseline_periods int NOT NULL,
    enabled          boolean NOT NULL,
    updated_at       timestamptz NOT NULL,
    PRIMARY KEY (program_id, rule_id)
);
CREATE INDEX alert_rules_enabled ON alert_rules (program_id) WHERE enabled;

CREATE TABLE alerts (
    program_id      text NOT NULL,
    alert_id        uuid NOT NULL,
    rule_id         text NOT NULL,
    kpi             text NOT NULL,
    period_start    timestamptz NOT NULL,
    value           double precision NOT NULL,
    expected        double precision NOT NULL,
    stddev          double precision NOT NULL,
    raised_at       timestamptz NOT NULL,
    delivery        text NOT NULL, -- none | pending | delivered | failed
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,   -- pending only: the next try (or the end of a claim)
    delivered_at    timestamptz,
    last_error      text,
    PRIMARY KEY (program_id, alert_id),
    -- A rule raises at most once per period.
    CONSTRAINT alerts_once_per_period UNIQUE (program_id, rule_id, period_start)
);
CREATE INDEX alerts_newest ON alerts (program_id, raised_at DESC, alert_id DESC);
CREATE INDEX alerts_rule_newest ON alerts (program_id, rule_id, raised_at DESC, alert_id DESC);
CREATE INDEX alerts_due ON alerts (next_attempt_at) WHERE delivery = 'pending';
