-- Figures computed from the facts: RFM runs and scores, CLV model fits,
-- and every member's value, lifecycle stage and churn risk.

CREATE TABLE rfm_runs (
    program_id    text NOT NULL,
    run_id        uuid NOT NULL,
    as_of         date NOT NULL,
    members       bigint NOT NULL,
    bins          int NOT NULL,
    currency_code text NOT NULL,
    trigger       text NOT NULL, -- schedule | request
    duration_ms   bigint NOT NULL,
    grid          bigint[] NOT NULL, -- 25 counts, (R - 1) * 5 + (FM - 1), five-point scale
    segments      bigint[] NOT NULL, -- 11 counts, in RfmSegment order
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (program_id, run_id)
);
CREATE INDEX rfm_runs_latest ON rfm_runs (program_id, created_at DESC);

-- The latest run's scores only (a run replaces the previous one's rows).
CREATE TABLE rfm_scores (
    program_id     text NOT NULL,
    member_id      uuid NOT NULL,
    run_id         uuid NOT NULL,
    recency        smallint NOT NULL,
    frequency      smallint NOT NULL,
    monetary       smallint NOT NULL,
    fm             smallint NOT NULL,
    segment        smallint NOT NULL,
    recency_days   int NOT NULL,
    purchase_days  bigint NOT NULL,
    net_spend_minor bigint NOT NULL,
    PRIMARY KEY (program_id, member_id)
);

CREATE TABLE clv_models (
    program_id        text NOT NULL,
    model_id          uuid NOT NULL,
    calibration_start date NOT NULL,
    calibration_end   date NOT NULL,
    customers         bigint NOT NULL,
    likelihood_terms  bigint NOT NULL,
    spend_customers   bigint NOT NULL,
    r double precision NOT NULL, alpha double precision NOT NULL,
    a double precision NOT NULL, b double precision NOT NULL,
    bg_log_likelihood double precision NOT NULL,
    p double precision, q double precision, gamma double precision,
    gg_log_likelihood double precision,
    duration_ms       bigint NOT NULL,
    fitted_at         timestamptz NOT NULL,
    PRIMARY KEY (program_id, model_id)
);

-- Every member's value and outlook, from the latest scoring.
CREATE TABLE member_values (
    program_id           text NOT NULL,
    member_id            uuid NOT NULL,
    stage                smallint NOT NULL,
    rhythm_days          double precision NOT NULL,
    recency_days         int NOT NULL,
    probability_alive    double precision NOT NULL, -- -1: no model
    expected_purchases   double precision NOT NULL,
    predictive_clv_minor bigint NOT NULL,
    historical_clv_minor bigint NOT NULL,
    churn_score          smallint NOT NULL,
    churn_components     double precision[] NOT NULL,
    value_at_risk_minor  bigint NOT NULL,
    model_id             uuid,
    scored_at            timestamptz NOT NULL,
    PRIMARY KEY (program_id, member_id)
);
CREATE INDEX member_values_at_risk ON member_values (program_id, value_at_risk_minor DESC)
    WHERE churn_score >= 50;

-- Each scoring of every member's value, newest last.
CREATE TABLE value_runs (
    program_id  text NOT NULL,
    run_id      uuid NOT NULL,
    as_of       date NOT NULL,
    members     bigint NOT NULL,
    changed     bigint NOT NULL, -- lifecycle stage changes (LifecycleChanged events)
    model_id    uuid,
    duration_ms bigint NOT NULL,
    scored_at   timestamptz NOT NULL,
    PRIMARY KEY (program_id, run_id)
);
CREATE INDEX value_runs_latest ON value_runs (program_id, scored_at DESC);

-- Co-purchase neighbours, built from every member's order lines, per
-- level (sku or category); the newest build serves.
CREATE TABLE recommendation_models (
    program_id        text NOT NULL,
    level             text NOT NULL, -- sku | category
    model_id          uuid NOT NULL,
    built_at          timestamptz NOT NULL,
    lines             bigint NOT NULL,
    items             text[] NOT NULL, -- item i's name
    categories        text[] NOT NULL, -- item i's category (sku level), else ''
    buyers            int[] NOT NULL,  -- item i's distinct buyers
    neighbours        bytea NOT NULL,  -- per item: u32 count, then (u32 item, f64 similarity, u32 support) each, little endian
    members_evaluated bigint NOT NULL,
    hit_rate          double precision NOT NULL,
    popular_hit_rate  double precision NOT NULL,
    top_n             int NOT NULL,
    PRIMARY KEY (program_id, level, model_id)
);
