-- Versions of each programme's earn rules. A version is never changed: a
-- change is a new version, effective from its own time. `rules` is the
-- encoded laurel.points.v1.EarnRules (with version and published_at set);
-- the columns beside it are what lookups need.

CREATE TABLE earn_rules (
    program_id     text        NOT NULL,
    version        bigint      NOT NULL,
    effective_from timestamptz NOT NULL,
    published_at   timestamptz NOT NULL,
    rules          bytea       NOT NULL,
    CONSTRAINT earn_rules_pkey PRIMARY KEY (program_id, version),
    CONSTRAINT earn_rules_version_check CHECK (version >= 1)
);

-- The version in force at a time: the greatest effective_from at or before
-- it, the highest version among equals.
CREATE INDEX earn_rules_in_force_idx ON earn_rules (program_id, effective_from DESC, version DESC);
