//! The members table, qualifying facts and tier history: SQL only, one
//! statement per chunk for the set-based paths (re-evaluation, jobs).

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgConnection, Row, postgres::PgRow};
use uuid::Uuid;

use crate::qualification::{
    Totals,
    step::{Change, Manual, MemberState, Ranges, Source, Sums},
};

/// A member row.
#[derive(Clone, Debug)]
pub struct Stored {
    /// Member.
    pub member: Uuid,
    /// Tier state.
    pub state: MemberState,
    /// Card version.
    pub version: i64,
    /// active, merged or erased.
    pub status: String,
    /// The survivor, for a merged member.
    pub merged_into: Option<Uuid>,
}

const COLUMNS: &str = "member_id, enrolled_at, earned_tier, earned_since, tier_code, tier_source,
    tier_since, manual_tier, manual_until, manual_note, period_start, period_end,
    pending_downgrade, pending_downgrade_at, warned_for, ladder_version, version, status, merged_into";

fn stored(r: &PgRow) -> Stored {
    let manual_tier: Option<String> = r.get("manual_tier");
    let manual_until: Option<DateTime<Utc>> = r.get("manual_until");
    let period_start: Option<DateTime<Utc>> = r.get("period_start");
    let period_end: Option<DateTime<Utc>> = r.get("period_end");
    let pending: Option<String> = r.get("pending_downgrade");
    let pending_at: Option<DateTime<Utc>> = r.get("pending_downgrade_at");
    let source: Option<String> = r.get("tier_source");
    Stored {
        member: r.get("member_id"),
        state: MemberState {
            enrolled_at: r.get("enrolled_at"),
            earned: r.get("earned_tier"),
            earned_since: r.get("earned_since"),
            tier: r.get("tier_code"),
            source: source.as_deref().and_then(Source::parse),
            tier_since: r.get("tier_since"),
            manual: manual_tier.zip(manual_until).map(|(tier, until)| Manual {
                tier,
                until,
                note: r.get("manual_note"),
            }),
            period: period_start.zip(period_end),
            pending: pending.zip(pending_at),
            warned_for: r.get("warned_for"),
            ladder_version: r.get("ladder_version"),
        },
        version: r.get("version"),
        status: r.get("status"),
        merged_into: r.get("merged_into"),
    }
}

/// A member's row, locked for the transaction.
pub async fn lock(
    tx: &mut PgConnection,
    program: &str,
    member: Uuid,
) -> Result<Option<Stored>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM members WHERE program_id = $1 AND member_id = $2 FOR UPDATE"
    ))
    .bind(program)
    .bind(member)
    .fetch_optional(tx)
    .await?;
    Ok(row.as_ref().map(stored))
}

/// A member's row, unlocked.
pub async fn read(
    conn: &mut PgConnection,
    program: &str,
    member: Uuid,
) -> Result<Option<Stored>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM members WHERE program_id = $1 AND member_id = $2"
    ))
    .bind(program)
    .bind(member)
    .fetch_optional(conn)
    .await?;
    Ok(row.as_ref().map(stored))
}

/// The next `limit` active members after `after` in id order, locked.
pub async fn lock_after(
    tx: &mut PgConnection,
    program: &str,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Stored>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM members
         WHERE program_id = $1 AND status = 'active' AND ($2::uuid IS NULL OR member_id > $2)
         ORDER BY member_id LIMIT $3 FOR UPDATE"
    ))
    .bind(program)
    .bind(after)
    .bind(limit)
    .fetch_all(tx)
    .await?;
    Ok(rows.iter().map(stored).collect())
}

/// Active members with something due at `now` (a period end, a pending
/// downgrade, a manual assignment ending, a warning to decide), locked;
/// rows another replica holds are skipped.
pub async fn lock_due(
    tx: &mut PgConnection,
    program: &str,
    now: DateTime<Utc>,
    grace_days: i32,
    warning_days: i32,
    limit: i64,
) -> Result<Vec<Stored>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM members
         WHERE program_id = $1 AND status = 'active' AND (
               (pending_downgrade IS NULL AND period_end <= $2)
            OR pending_downgrade_at <= $2
            OR manual_until <= $2
            OR ($4 > 0 AND pending_downgrade IS NULL
                AND period_end + make_interval(days => $3 - $4) <= $2
                AND warned_for IS DISTINCT FROM period_end + make_interval(days => $3))
            OR ($4 > 0 AND pending_downgrade_at - make_interval(days => $4) <= $2
                AND warned_for IS DISTINCT FROM pending_downgrade_at))
         LIMIT $5 FOR UPDATE SKIP LOCKED"
    ))
    .bind(program)
    .bind(now)
    .bind(grace_days)
    .bind(warning_days)
    .bind(limit)
    .fetch_all(tx)
    .await?;
    Ok(rows.iter().map(stored).collect())
}

/// Adds a member (from MemberCreated, or first seen); no effect when known.
pub async fn insert(
    conn: &mut PgConnection,
    program: &str,
    member: Uuid,
    enrolled_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO members (program_id, member_id, enrolled_at) VALUES ($1, $2, $3)
         ON CONFLICT (program_id, member_id) DO NOTHING",
    )
    .bind(program)
    .bind(member)
    .bind(enrolled_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Adds `points` to the member's qualifying `day` and raises the member's
/// version (adding the member, enrolled at `enrolled_at`, if unknown: its
/// version is then 2, as if added and raised), in one statement; returns
/// the new version.
pub async fn count_points(
    tx: &mut PgConnection,
    program: &str,
    member: Uuid,
    enrolled_at: DateTime<Utc>,
    day: chrono::NaiveDate,
    points: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "WITH day AS (
           INSERT INTO qualifying_days (program_id, member_id, day, currency_code, points)
           VALUES ($1, $2, $4, '', $5)
           ON CONFLICT (program_id, member_id, day, currency_code)
           DO UPDATE SET points = qualifying_days.points + EXCLUDED.points
         )
         INSERT INTO members (program_id, member_id, enrolled_at, version) VALUES ($1, $2, $3, 2)
         ON CONFLICT (program_id, member_id)
         DO UPDATE SET version = members.version + 1, updated_at = now()
         RETURNING version",
    )
    .bind(program)
    .bind(member)
    .bind(enrolled_at)
    .bind(day)
    .bind(points)
    .fetch_one(tx)
    .await
}

/// Totals over each member's ranges, in one statement: spend and orders in
/// `currency`, points whatever the currency.
pub async fn sums(
    conn: &mut PgConnection,
    program: &str,
    currency: &str,
    items: &[(Uuid, Ranges)],
) -> Result<HashMap<Uuid, Sums>, sqlx::Error> {
    if items.is_empty() {
        return Ok(HashMap::new());
    }
    let col = |f: fn(&Ranges) -> NaiveDate| items.iter().map(|(_, r)| f(r)).collect::<Vec<_>>();
    let rows = sqlx::query(
        "SELECT r.m,
           COALESCE(sum(d.spend_minor) FILTER (WHERE d.currency_code = $2 AND d.day >= r.cs AND d.day < r.ce), 0)::bigint,
           COALESCE(sum(d.orders)      FILTER (WHERE d.currency_code = $2 AND d.day >= r.cs AND d.day < r.ce), 0)::bigint,
           COALESCE(sum(d.points)      FILTER (WHERE d.day >= r.cs AND d.day < r.ce), 0)::bigint,
           COALESCE(sum(d.spend_minor) FILTER (WHERE d.currency_code = $2 AND d.day >= r.rs AND d.day < r.re), 0)::bigint,
           COALESCE(sum(d.orders)      FILTER (WHERE d.currency_code = $2 AND d.day >= r.rs AND d.day < r.re), 0)::bigint,
           COALESCE(sum(d.points)      FILTER (WHERE d.day >= r.rs AND d.day < r.re), 0)::bigint,
           COALESCE(sum(d.spend_minor) FILTER (WHERE d.currency_code = $2 AND d.day >= r.ks AND d.day < r.ke), 0)::bigint,
           COALESCE(sum(d.orders)      FILTER (WHERE d.currency_code = $2 AND d.day >= r.ks AND d.day < r.ke), 0)::bigint,
           COALESCE(sum(d.points)      FILTER (WHERE d.day >= r.ks AND d.day < r.ke), 0)::bigint
         FROM unnest($3::uuid[], $4::date[], $5::date[], $6::date[], $7::date[], $8::date[], $9::date[])
              AS r(m, cs, ce, rs, re, ks, ke)
         LEFT JOIN qualifying_days d
           ON d.program_id = $1 AND d.member_id = r.m
          AND d.day >= LEAST(r.cs, r.rs, r.ks) AND d.day < GREATEST(r.ce, r.re, r.ke)
         GROUP BY r.m",
    )
    .bind(program)
    .bind(currency)
    .bind(items.iter().map(|(m, _)| *m).collect::<Vec<_>>())
    .bind(col(|r| r.current.0))
    .bind(col(|r| r.current.1))
    .bind(col(|r| r.review.0))
    .bind(col(|r| r.review.1))
    .bind(col(|r| r.catchup.0))
    .bind(col(|r| r.catchup.1))
    .fetch_all(conn)
    .await?;
    let totals = |r: &PgRow, i: usize| Totals {
        spend: r.get(i),
        orders: r.get(i + 1),
        points: r.get(i + 2),
    };
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                Sums {
                    current: totals(r, 1),
                    review: totals(r, 4),
                    catchup: totals(r, 7),
                },
            )
        })
        .collect())
}

/// Writes the tier state of many members at their new card versions, in
/// one statement.
pub async fn save_many(
    tx: &mut PgConnection,
    program: &str,
    rows: &[(Uuid, &MemberState, i64)],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    fn col<T>(rows: &[(Uuid, &MemberState, i64)], f: impl Fn(&MemberState) -> T) -> Vec<T> {
        rows.iter().map(|(_, s, _)| f(s)).collect()
    }
    sqlx::query(
        "UPDATE members AS t SET
            earned_tier = u.earned_tier, earned_since = u.earned_since,
            tier_code = u.tier_code, tier_source = u.tier_source, tier_since = u.tier_since,
            manual_tier = u.manual_tier, manual_until = u.manual_until, manual_note = u.manual_note,
            period_start = u.period_start, period_end = u.period_end,
            pending_downgrade = u.pending_downgrade, pending_downgrade_at = u.pending_downgrade_at,
            warned_for = u.warned_for, ladder_version = u.ladder_version,
            version = u.version, updated_at = $18
         FROM unnest($2::uuid[], $3::text[], $4::timestamptz[], $5::text[], $6::text[], $7::timestamptz[],
                     $8::text[], $9::timestamptz[], $10::text[], $11::timestamptz[], $12::timestamptz[],
                     $13::text[], $14::timestamptz[], $15::timestamptz[], $16::bigint[], $17::bigint[])
              AS u(member_id, earned_tier, earned_since, tier_code, tier_source, tier_since,
                   manual_tier, manual_until, manual_note, period_start, period_end,
                   pending_downgrade, pending_downgrade_at, warned_for, ladder_version, version)
         WHERE t.program_id = $1 AND t.member_id = u.member_id",
    )
    .bind(program)
    .bind(rows.iter().map(|r| r.0).collect::<Vec<_>>())
    .bind(col(rows, |s| s.earned.clone()))
    .bind(col(rows, |s| s.earned_since))
    .bind(col(rows, |s| s.tier.clone()))
    .bind(col(rows, |s| s.source.map(|x| x.as_str().to_owned())))
    .bind(col(rows, |s| s.tier_since))
    .bind(col(rows, |s| s.manual.as_ref().map(|m| m.tier.clone())))
    .bind(col(rows, |s| s.manual.as_ref().map(|m| m.until)))
    .bind(col(rows, |s| s.manual.as_ref().and_then(|m| m.note.clone())))
    .bind(col(rows, |s| s.period.map(|p| p.0)))
    .bind(col(rows, |s| s.period.map(|p| p.1)))
    .bind(col(rows, |s| s.pending.as_ref().map(|p| p.0.clone())))
    .bind(col(rows, |s| s.pending.as_ref().map(|p| p.1)))
    .bind(col(rows, |s| s.warned_for))
    .bind(col(rows, |s| s.ladder_version))
    .bind(rows.iter().map(|r| r.2).collect::<Vec<_>>())
    .bind(now)
    .execute(tx)
    .await?;
    Ok(())
}

/// Raises a member's card version (its measures changed); returns it.
pub async fn bump(tx: &mut PgConnection, program: &str, member: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE members SET version = version + 1, updated_at = now()
         WHERE program_id = $1 AND member_id = $2 RETURNING version",
    )
    .bind(program)
    .bind(member)
    .fetch_one(tx)
    .await
}

/// Keeps tier changes in the history, in one statement.
pub async fn record_many(
    tx: &mut PgConnection,
    program: &str,
    changes: &[(Uuid, &Change)],
    ladder_version: i64,
) -> Result<(), sqlx::Error> {
    if changes.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO tier_history (id, program_id, member_id, previous_tier, tier_code, reason, note, effective_at, ladder_version)
         SELECT id, $1, m, p, t, r, n, e, $9
         FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[], $8::timestamptz[])
              AS c(id, m, p, t, r, n, e)",
    )
    .bind(program)
    .bind(changes.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
    .bind(changes.iter().map(|c| c.0).collect::<Vec<_>>())
    .bind(changes.iter().map(|c| c.1.previous.clone()).collect::<Vec<_>>())
    .bind(changes.iter().map(|c| c.1.tier.clone()).collect::<Vec<_>>())
    .bind(
        changes
            .iter()
            .map(|c| crate::qualification::step::reason_word(c.1.reason).to_owned())
            .collect::<Vec<_>>(),
    )
    .bind(changes.iter().map(|c| c.1.note.clone()).collect::<Vec<_>>())
    .bind(changes.iter().map(|c| c.1.effective_at).collect::<Vec<_>>())
    .bind(ladder_version)
    .execute(tx)
    .await?;
    Ok(())
}
