-- The spend of a member's first purchase day, kept in member_spend beside
-- first_day: always member_days.spend_minor of that member, currency and
-- day (purchases net of their refunds). The CLV summaries read it instead
-- of joining member_days (repeat spend = net spend - first day's spend).

ALTER TABLE member_spend ADD COLUMN first_day_spend_minor bigint NOT NULL DEFAULT 0;

UPDATE member_spend s SET first_day_spend_minor = d.spend_minor
FROM member_days d
WHERE d.program_id = s.program_id AND d.member_id = s.member_id
  AND d.currency_code = s.currency_code AND d.day = s.first_day
  AND d.spend_minor <> 0;
