-- One goodwill Earn of 10 points, as laurel-points writes it, one request
-- per transaction: the statements of services/points/src/writer.rs
-- (apply_batch), ledger/store.rs (load, save) and the runtime's
-- idempotency.rs (lookup, claim_many, store_many) and events/outbox.rs
-- (enqueue_many), each with one-element arrays where the service binds a
-- batch's. Run against a schema made by `laurel-points migrate`:
--
--   PGOPTIONS='-c search_path=SCHEMA' pgbench -n -M prepared \
--     -f deploy/bench/pgbench/earn.sql -D members=300 -c 64 -j 2 -T 10 URL
--
-- -D members=N draws the member from N (1 for one hot account).
\set m random(1, :members)
\set r random(1, 9223372036854775806)
-- The replay check before the request is queued (outside the transaction).
SELECT request_hash, response FROM idempotency_keys
 WHERE program_id = 'default' AND caller = 'bench' AND operation = 'Earn'
   AND request_id = 'pgbench-' || :r AND created_at > now() - interval '24 hours';
BEGIN;
-- Idempotency: claim the key.
WITH batch AS (
  SELECT ord::int, program_id, caller, operation, request_id, request_hash
  FROM unnest(ARRAY['default'], ARRAY['bench'], ARRAY['Earn'], ARRAY['pgbench-' || :r],
              ARRAY[sha256(('pgbench-' || :r)::bytea)])
       WITH ORDINALITY AS b(program_id, caller, operation, request_id, request_hash, ord)
), claimed AS (
  INSERT INTO idempotency_keys (program_id, caller, operation, request_id, request_hash, created_at)
  SELECT program_id, caller, operation, request_id, request_hash, now() FROM batch
  ORDER BY program_id, caller, operation, request_id
  ON CONFLICT (program_id, caller, operation, request_id) DO UPDATE
    SET request_hash = EXCLUDED.request_hash, response = NULL, subject = NULL,
        created_at = EXCLUDED.created_at
    WHERE idempotency_keys.created_at <= now() - interval '24 hours'
  RETURNING program_id, caller, operation, request_id
)
SELECT batch.ord FROM batch JOIN claimed USING (program_id, caller, operation, request_id);
-- The account: created when new, then locked.
INSERT INTO accounts (program_id, member_id, created_at, updated_at)
SELECT p, m, now(), now() FROM unnest(ARRAY['default'], ARRAY[md5('member-' || :m)::uuid]) AS b(p, m)
ORDER BY p, m
ON CONFLICT DO NOTHING;
SELECT a.status, a.balance, a.lots_total, a.held, a.debt, a.lifetime_earned, a.version
FROM accounts a JOIN unnest(ARRAY['default'], ARRAY[md5('member-' || :m)::uuid]) AS b(p, m)
  ON a.program_id = b.p AND a.member_id = b.m
ORDER BY a.program_id, a.member_id
FOR UPDATE OF a \gset
-- The account's pending and due lots (an earn spends nothing: amount 0).
WITH need AS (
  SELECT * FROM unnest(ARRAY['default'], ARRAY[md5('member-' || :m)::uuid], ARRAY[0::bigint], ARRAY[false])
    AS n(program_id, member_id, amount, everything)
), open AS (
  SELECT l.program_id, l.lot_id, l.member_id, l.movement_id, l.points, l.remaining, l.earned_at,
         l.available_from, l.expires_at, n.amount, n.everything,
         (l.available_from <= now() AND (l.expires_at IS NULL OR l.expires_at > now())) AS spendable,
         sum(CASE WHEN l.available_from <= now() AND (l.expires_at IS NULL OR l.expires_at > now()) THEN l.remaining ELSE 0 END)
           OVER (PARTITION BY l.program_id, l.member_id
                 ORDER BY l.expires_at NULLS LAST, l.earned_at, l.lot_id
                 ROWS UNBOUNDED PRECEDING) AS upto
  FROM lots l JOIN need n ON l.program_id = n.program_id AND l.member_id = n.member_id
  WHERE l.remaining > 0
)
SELECT program_id, lot_id, member_id, movement_id, points, remaining, earned_at, available_from, expires_at
FROM open
WHERE everything OR NOT spendable OR (upto - remaining) < amount OR lot_id = ANY(ARRAY[]::uuid[])
UNION
SELECT program_id, lot_id, member_id, movement_id, points, remaining, earned_at, available_from, expires_at
FROM lots WHERE lot_id = ANY(ARRAY[]::uuid[]);
\set balance :balance + 10
\set lots_total :lots_total + 10
\set lifetime_earned :lifetime_earned + 10
\set version :version + 1
-- Write back: the account, the movement, its two entries, the lot.
INSERT INTO accounts AS a (program_id, member_id, status, merged_into, balance, lots_total, held, debt, lifetime_earned, version, created_at, updated_at)
SELECT p, m, s, mi, b, l, h, d, le, v, now(), now()
FROM unnest(ARRAY['default'], ARRAY[md5('member-' || :m)::uuid], ARRAY[(:status)::smallint], ARRAY[NULL::uuid],
            ARRAY[(:balance)::bigint], ARRAY[(:lots_total)::bigint], ARRAY[(:held)::bigint], ARRAY[(:debt)::bigint],
            ARRAY[(:lifetime_earned)::bigint], ARRAY[(:version)::bigint])
     AS x(p, m, s, mi, b, l, h, d, le, v)
ON CONFLICT (program_id, member_id) DO UPDATE SET
  status = EXCLUDED.status, merged_into = EXCLUDED.merged_into, balance = EXCLUDED.balance,
  lots_total = EXCLUDED.lots_total, held = EXCLUDED.held, debt = EXCLUDED.debt,
  lifetime_earned = EXCLUDED.lifetime_earned, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at;
INSERT INTO movements (program_id, movement_id, member_id, type, points, earn_kind, reason, reference, order_id,
                       related_movement_id, counterparty, occurred_at, recorded_at)
SELECT * FROM unnest(ARRAY['default'], ARRAY[md5('movement-' || :r)::uuid], ARRAY[md5('member-' || :m)::uuid],
                     ARRAY[1::smallint], ARRAY[10::bigint], ARRAY[7::smallint], ARRAY['laurel-bench goodwill'],
                     ARRAY[''], ARRAY[''], ARRAY[NULL::uuid], ARRAY[NULL::uuid], ARRAY[now()], ARRAY[now()]);
INSERT INTO entries (movement_id, line, program_id, account, member_id, points, balance_after, type, recorded_at)
SELECT m, l, p, a, mb, pt, ba, t, now()
FROM unnest(ARRAY[md5('movement-' || :r)::uuid, md5('movement-' || :r)::uuid], ARRAY[0::smallint, 1::smallint],
            ARRAY['default', 'default'], ARRAY[1::smallint, 2::smallint], ARRAY[md5('member-' || :m)::uuid, NULL::uuid],
            ARRAY[10::bigint, -10::bigint], ARRAY[(:balance)::bigint, NULL::bigint], ARRAY[1::smallint, 1::smallint])
     AS x(m, l, p, a, mb, pt, ba, t);
INSERT INTO lots (program_id, lot_id, member_id, movement_id, points, remaining, earned_at, available_from, expires_at)
SELECT * FROM unnest(ARRAY['default'], ARRAY[md5('lot-' || :r)::uuid], ARRAY[md5('member-' || :m)::uuid],
                     ARRAY[md5('movement-' || :r)::uuid], ARRAY[10::bigint], ARRAY[10::bigint],
                     ARRAY[now()], ARRAY[now()], ARRAY[now() + interval '365 days']);
-- The event: the member's sequence number, then the outbox row (an
-- envelope of about the size the service writes).
INSERT INTO member_sequences (program_id, member_id, source, last_sequence)
SELECT p, m, 'points', n FROM unnest(ARRAY['default'], ARRAY[md5('member-' || :m)::uuid], ARRAY[1::bigint]) AS b(p, m, n)
ON CONFLICT (program_id, member_id, source)
DO UPDATE SET last_sequence = member_sequences.last_sequence + EXCLUDED.last_sequence
RETURNING program_id, member_id, last_sequence;
INSERT INTO outbox (event_id, program_id, member_id, source, event_type, envelope, card_version, member_sequence)
SELECT e, p, m, 'points', t, b, v, s
FROM unnest(ARRAY[md5('event-' || :r)::uuid], ARRAY['default'], ARRAY[md5('member-' || :m)::uuid],
            ARRAY['laurel.points.v1.PointsMoved'], ARRAY[decode(repeat('5a', 400), 'hex')],
            ARRAY[(:version)::bigint], ARRAY[(:version)::bigint])
     WITH ORDINALITY AS x(e, p, m, t, b, v, s, ord)
ORDER BY ord;
-- Idempotency: the stored response.
UPDATE idempotency_keys k SET response = b.response, subject = b.subject
FROM unnest(ARRAY['default'], ARRAY['bench'], ARRAY['Earn'], ARRAY['pgbench-' || :r],
            ARRAY[decode(repeat('a5', 300), 'hex')], ARRAY[md5('member-' || :m)::uuid])
     AS b(program_id, caller, operation, request_id, response, subject)
WHERE k.program_id = b.program_id AND k.caller = b.caller
  AND k.operation = b.operation AND k.request_id = b.request_id;
COMMIT;
