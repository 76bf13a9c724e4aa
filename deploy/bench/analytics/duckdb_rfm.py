"""RFM in DuckDB over the benchmark's purchases, timed from stored
purchases to stored scores, with the service's rules
(services/analytics/src/rfm.rs and laurel_analytics_models::rfm):

- active: last purchase within --active-days of --as-of;
- recency: the last purchase day; frequency: distinct purchase days;
  monetary: spend net of refunds;
- scores by the min-rank method on five bins: 1 + floor(5 * (rank - 1) / n)
  with rank() (ties share a score), so the scores match the service's and
  the segment counts can be compared (NTILE(5) would cut ties in two);
- FM = (F + M + 1) // 2; the segment from the (R, FM) grid, numbered as
  laurel.analytics.v1.RfmSegment.

Untimed: loading the CSV into an on-disk database, and the per-member
aggregate table of the second figure. Timed: CREATE TABLE AS of the scores
(1) from the purchases (aggregation included) and (2) from the per-member
aggregates (what the service reads: member_spend, kept as purchases
arrive).

Prints one JSON line.
"""

import argparse
import datetime
import os
import time

import duckdb

from common import emit, hwm_kib, log, reset_peak, rss_kib

SEGMENT = """
CASE
  WHEN r = 5 AND fm = 1 THEN 4
  WHEN r = 5 AND fm <= 3 THEN 3
  WHEN r = 5 THEN 1
  WHEN r = 4 AND fm = 1 THEN 5
  WHEN r = 4 AND fm <= 3 THEN 3
  WHEN r = 4 THEN 2
  WHEN r = 3 AND fm <= 2 THEN 7
  WHEN r = 3 AND fm = 3 THEN 6
  WHEN r = 3 THEN 2
  WHEN r = 2 AND fm <= 2 THEN 10
  WHEN r = 1 AND fm <= 2 THEN 11
  WHEN fm <= 4 THEN 8
  ELSE 9
END
"""

SPEND_FROM_PURCHASES = """
SELECT member_id, max(day) AS last_day, count(DISTINCT day) AS purchase_days,
       sum(total_minor - refunded_minor) AS net_minor
FROM purchases WHERE member_id IS NOT NULL GROUP BY member_id
"""


def scoring(spend_sql, as_of, active_days):
    return f"""
WITH spend AS ({spend_sql}),
active AS (
  SELECT * FROM spend
  WHERE last_day > DATE '{as_of}' - {active_days} AND last_day <= DATE '{as_of}'
),
scored AS (
  SELECT member_id, last_day, purchase_days, net_minor,
    1 + (5 * (rank() OVER (ORDER BY last_day) - 1)) // count(*) OVER () AS r,
    1 + (5 * (rank() OVER (ORDER BY purchase_days) - 1)) // count(*) OVER () AS f,
    1 + (5 * (rank() OVER (ORDER BY net_minor) - 1)) // count(*) OVER () AS m
  FROM active
),
cells AS (SELECT *, (f + m + 1) // 2 AS fm FROM scored)
SELECT member_id, r AS recency, f AS frequency, m AS monetary, fm,
  {SEGMENT} AS segment,
  DATE '{as_of}' - last_day AS recency_days, purchase_days, net_minor
FROM cells
"""


def timed(con, table, sql):
    reset = reset_peak()
    before = rss_kib()
    started = time.perf_counter()
    con.execute(f"CREATE OR REPLACE TABLE {table} AS {sql}")
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "rss_before_kib": before,
        "peak_kib": hwm_kib() if reset else None,
    }


def segments(con, table):
    rows = con.execute(
        f"SELECT segment, count(*) FROM {table} GROUP BY segment ORDER BY segment"
    ).fetchall()
    return {str(s): n for s, n in rows}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--purchases", required=True, help="purchases CSV")
    ap.add_argument("--db", required=True, help="DuckDB database file (made anew)")
    ap.add_argument("--as-of", required=True, type=datetime.date.fromisoformat)
    ap.add_argument("--active-days", required=True, type=int)
    args = ap.parse_args()
    for path in (args.db, args.db + ".wal"):
        if os.path.exists(path):
            os.remove(path)

    con = duckdb.connect(args.db)
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    log(f"duckdb {duckdb.__version__}: loading {args.purchases} ({threads} threads)")
    started = time.perf_counter()
    con.execute(
        f"""CREATE TABLE purchases AS SELECT * FROM read_csv('{args.purchases}', header = true,
            columns = {{'order_id': 'VARCHAR', 'member_id': 'UUID', 'day': 'DATE',
                        'total_minor': 'BIGINT', 'refunded_minor': 'BIGINT'}})"""
    )
    con.execute(f"CREATE TABLE member_spend AS {SPEND_FROM_PURCHASES}")
    con.execute("CHECKPOINT")
    load_s = time.perf_counter() - started
    purchases = con.execute("SELECT count(*) FROM purchases").fetchone()[0]

    log("duckdb: RFM from the purchases ...")
    from_purchases = timed(
        con, "rfm_scores", scoring(SPEND_FROM_PURCHASES, args.as_of, args.active_days)
    )
    log(f"  {from_purchases['seconds']:.3f} s")
    log("duckdb: RFM from per-member aggregates ...")
    from_members = timed(
        con,
        "rfm_scores_members",
        scoring("SELECT * FROM member_spend", args.as_of, args.active_days),
    )
    log(f"  {from_members['seconds']:.3f} s")

    emit(
        {
            "duckdb_version": duckdb.__version__,
            "threads": int(threads),
            "purchases": purchases,
            "load_seconds": load_s,
            "from_purchases": from_purchases,
            "from_members": from_members,
            "members": con.execute("SELECT count(*) FROM rfm_scores").fetchone()[0],
            "segments": segments(con, "rfm_scores"),
            "segments_from_members": segments(con, "rfm_scores_members"),
        }
    )


if __name__ == "__main__":
    main()
