//! A member's spend figures per currency (`member_spend`) and purchase
//! days (`member_days`): moved by each purchase and refund as it arrives,
//! and rebuilt from `purchases` alone whenever the facts move (a merge, an
//! erasure, a new time zone). Both ways give the same rows; a test checks.
//!
//! - orders: every purchase, fully refunded ones included;
//! - purchase days: distinct local days with a purchase;
//! - gross: purchase totals; refunded: refunds applied to them (never more
//!   than a purchase's total); a day's spend is its purchases net of their
//!   refunds, on the day of the purchase;
//! - first-day spend: the spend of the first purchase day (what
//!   `member_days` holds for that day), so the CLV summaries read one row
//!   per member: an earlier purchase arriving late replaces it, another
//!   purchase of that day adds to it, a refund of one of its purchases
//!   takes from it.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use sqlx::PgConnection;
use uuid::Uuid;

/// One member purchase as it arrives.
pub struct Purchase<'a> {
    /// Member.
    pub member: Uuid,
    /// Currency.
    pub currency: &'a str,
    /// Total, minor units (at least 0).
    pub total: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Local day.
    pub day: NaiveDate,
}

/// Counts a member's new purchase.
pub async fn add_purchase(
    tx: &mut PgConnection,
    program: &str,
    p: &Purchase<'_>,
) -> Result<(), sqlx::Error> {
    let new_day: bool = sqlx::query_scalar(
        "INSERT INTO member_days (program_id, member_id, currency_code, day, orders, spend_minor)
         VALUES ($1, $2, $3, $4, 1, $5)
         ON CONFLICT (program_id, member_id, currency_code, day) DO UPDATE SET
           orders = member_days.orders + 1, spend_minor = member_days.spend_minor + EXCLUDED.spend_minor
         RETURNING (xmax = 0)",
    )
    .bind(program)
    .bind(p.member)
    .bind(p.currency)
    .bind(p.day)
    .bind(p.total)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO member_spend (program_id, member_id, currency_code, first_purchase_at,
            last_purchase_at, first_day, last_day, orders, purchase_days, gross_minor,
            refunded_minor, refunds, first_day_spend_minor)
         VALUES ($1, $2, $3, $4, $4, $5, $5, 1, 1, $6, 0, 0, $6)
         ON CONFLICT (program_id, member_id, currency_code) DO UPDATE SET
           first_day_spend_minor = CASE
             WHEN EXCLUDED.first_day < member_spend.first_day THEN EXCLUDED.first_day_spend_minor
             WHEN EXCLUDED.first_day = member_spend.first_day
               THEN member_spend.first_day_spend_minor + EXCLUDED.first_day_spend_minor
             ELSE member_spend.first_day_spend_minor END,
           first_purchase_at = LEAST(member_spend.first_purchase_at, EXCLUDED.first_purchase_at),
           last_purchase_at = GREATEST(member_spend.last_purchase_at, EXCLUDED.last_purchase_at),
           first_day = LEAST(member_spend.first_day, EXCLUDED.first_day),
           last_day = GREATEST(member_spend.last_day, EXCLUDED.last_day),
           orders = member_spend.orders + 1,
           purchase_days = member_spend.purchase_days + $7,
           gross_minor = member_spend.gross_minor + EXCLUDED.gross_minor",
    )
    .bind(program)
    .bind(p.member)
    .bind(p.currency)
    .bind(p.at)
    .bind(p.day)
    .bind(p.total)
    .bind(i64::from(new_day))
    .execute(tx)
    .await?;
    Ok(())
}

/// Counts a refund of `amount` already applied to a member's purchase of
/// `day`.
pub async fn add_refund(
    tx: &mut PgConnection,
    program: &str,
    member: Uuid,
    currency: &str,
    day: NaiveDate,
    amount: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE member_days SET spend_minor = spend_minor - $5
         WHERE program_id = $1 AND member_id = $2 AND currency_code = $3 AND day = $4",
    )
    .bind(program)
    .bind(member)
    .bind(currency)
    .bind(day)
    .bind(amount)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE member_spend SET refunded_minor = refunded_minor + $4, refunds = refunds + 1,
           first_day_spend_minor = first_day_spend_minor
             - CASE WHEN first_day = $5 THEN $4 ELSE 0 END
         WHERE program_id = $1 AND member_id = $2 AND currency_code = $3",
    )
    .bind(program)
    .bind(member)
    .bind(currency)
    .bind(amount)
    .bind(day)
    .execute(tx)
    .await?;
    Ok(())
}

/// Rebuilds one member's figures from the facts.
pub async fn rebuild_member(
    tx: &mut PgConnection,
    program: &str,
    member: Uuid,
) -> Result<(), sqlx::Error> {
    rebuild(tx, program, Some(member)).await
}

/// Rebuilds every member's figures in `program` from the facts.
pub async fn rebuild_program(tx: &mut PgConnection, program: &str) -> Result<(), sqlx::Error> {
    rebuild(tx, program, None).await
}

async fn rebuild(
    tx: &mut PgConnection,
    program: &str,
    member: Option<Uuid>,
) -> Result<(), sqlx::Error> {
    let only = "($2::uuid IS NULL OR member_id = $2)";
    for table in ["member_days", "member_spend"] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE program_id = $1 AND {only}"
        ))
        .bind(program)
        .bind(member)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(&format!(
        "INSERT INTO member_days (program_id, member_id, currency_code, day, orders, spend_minor)
         SELECT program_id, member_id, currency_code, day, count(*), sum(total_minor - refunded_minor)
         FROM purchases WHERE program_id = $1 AND member_id IS NOT NULL AND {only}
         GROUP BY program_id, member_id, currency_code, day"
    ))
    .bind(program)
    .bind(member)
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!(
        "INSERT INTO member_spend (program_id, member_id, currency_code, first_purchase_at,
            last_purchase_at, first_day, last_day, orders, purchase_days, gross_minor,
            refunded_minor, refunds, first_day_spend_minor)
         SELECT s.program_id, s.member_id, s.currency_code, s.first_at, s.last_at, s.first_day,
                s.last_day, s.orders, s.days, s.gross, s.refunded, s.refunds,
                COALESCE(d.spend_minor, 0)
         FROM (SELECT p.program_id, p.member_id, p.currency_code, min(p.occurred_at) AS first_at,
                      max(p.occurred_at) AS last_at, min(p.day) AS first_day,
                      max(p.day) AS last_day, count(*) AS orders, count(DISTINCT p.day) AS days,
                      sum(p.total_minor) AS gross, sum(p.refunded_minor) AS refunded,
                      COALESCE(sum(r.n), 0) AS refunds
               FROM purchases p
               LEFT JOIN (SELECT order_id, count(*) AS n FROM refunds
                          WHERE program_id = $1 AND applied GROUP BY order_id) r
                 ON r.order_id = p.order_id
               WHERE p.program_id = $1 AND p.member_id IS NOT NULL AND {only}
               GROUP BY p.program_id, p.member_id, p.currency_code) s
         LEFT JOIN member_days d ON d.program_id = s.program_id AND d.member_id = s.member_id
              AND d.currency_code = s.currency_code AND d.day = s.first_day",
        only = "($2::uuid IS NULL OR p.member_id = $2)"
    ))
    .bind(program)
    .bind(member)
    .execute(tx)
    .await?;
    Ok(())
}

/// Moves every fact to its day in `tz` and rebuilds the figures.
pub async fn move_days(tx: &mut PgConnection, program: &str, tz: Tz) -> Result<(), sqlx::Error> {
    for table in [
        "purchases",
        "refunds",
        "feedback",
        "points_movements",
        "subscription_events",
    ] {
        sqlx::query(&format!(
            "UPDATE {table} SET day = (occurred_at AT TIME ZONE $2)::date WHERE program_id = $1"
        ))
        .bind(program)
        .bind(tz.name())
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "UPDATE purchase_lines l SET day = p.day FROM purchases p
         WHERE l.program_id = $1 AND p.program_id = $1 AND p.order_id = l.order_id",
    )
    .bind(program)
    .execute(&mut *tx)
    .await?;
    rebuild_program(tx, program).await
}
