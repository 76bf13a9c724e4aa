//! The catalogue in Postgres (tables `rewards` and `reward_redemptions`),
//! every statement within the caller's connection or transaction.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row, postgres::PgRow};
use uuid::Uuid;

use super::{
    model::{Fulfilment, Redemption, Reward, Terms},
    period::LimitPeriod,
};

const REWARD: &str =
    "reward_id, name, description, points_price, stock, per_member_limit, limit_period,
                      valid_from, valid_until, active, created_at, version";

const REDEMPTION: &str = "redemption_id, reward_id, member_id, quantity, points, movement_id, status, created_at, updated_at";

fn reward(row: &PgRow) -> Result<Reward, sqlx::Error> {
    Ok(Reward {
        reward_id: row.try_get("reward_id")?,
        terms: Terms {
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            points_price: row.try_get("points_price")?,
            stock: row.try_get("stock")?,
            per_member_limit: row.try_get("per_member_limit")?,
            limit_period: LimitPeriod::from_code(row.try_get("limit_period")?),
            valid_from: row.try_get("valid_from")?,
            valid_until: row.try_get("valid_until")?,
            active: row.try_get("active")?,
        },
        created_at: row.try_get("created_at")?,
        version: row.try_get("version")?,
    })
}

fn redemption(row: &PgRow) -> Result<Redemption, sqlx::Error> {
    let status: i16 = row.try_get("status")?;
    Ok(Redemption {
        redemption_id: row.try_get("redemption_id")?,
        reward_id: row.try_get("reward_id")?,
        member_id: row.try_get("member_id")?,
        quantity: row.try_get("quantity")?,
        points: row.try_get("points")?,
        movement_id: row.try_get("movement_id")?,
        status: Fulfilment::from_code(status).ok_or_else(|| {
            sqlx::Error::Decode(format!("unknown fulfilment status {status}").into())
        })?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Adds a reward (version 1).
pub async fn insert(
    conn: &mut PgConnection,
    program: &str,
    reward_id: Uuid,
    terms: &Terms,
    now: DateTime<Utc>,
) -> Result<Reward, sqlx::Error> {
    let row = sqlx::query(&format!(
        "INSERT INTO rewards (program_id, reward_id, name, description, points_price, stock, per_member_limit, limit_period,
                              valid_from, valid_until, active, created_at, updated_at, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, 1)
         RETURNING {REWARD}"
    ))
    .bind(program)
    .bind(reward_id)
    .bind(&terms.name)
    .bind(&terms.description)
    .bind(terms.points_price)
    .bind(terms.stock)
    .bind(terms.per_member_limit)
    .bind(terms.limit_period.code())
    .bind(terms.valid_from)
    .bind(terms.valid_until)
    .bind(terms.active)
    .bind(now)
    .fetch_one(conn)
    .await?;
    reward(&row)
}

/// A reward.
pub async fn get(
    conn: &mut PgConnection,
    program: &str,
    reward_id: Uuid,
) -> Result<Option<Reward>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {REWARD} FROM rewards WHERE program_id = $1 AND reward_id = $2"
    ))
    .bind(program)
    .bind(reward_id)
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(reward)
    .transpose()
}

/// A reward, locked until the transaction ends.
pub async fn lock(
    conn: &mut PgConnection,
    program: &str,
    reward_id: Uuid,
) -> Result<Option<Reward>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {REWARD} FROM rewards WHERE program_id = $1 AND reward_id = $2 FOR UPDATE"
    ))
    .bind(program)
    .bind(reward_id)
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(reward)
    .transpose()
}

/// Replaces a reward's terms; its version goes up by one.
pub async fn update(
    conn: &mut PgConnection,
    program: &str,
    reward_id: Uuid,
    terms: &Terms,
    now: DateTime<Utc>,
) -> Result<Option<Reward>, sqlx::Error> {
    sqlx::query(&format!(
        "UPDATE rewards SET name = $3, description = $4, points_price = $5, stock = $6, per_member_limit = $7,
                limit_period = $8, valid_from = $9, valid_until = $10, active = $11, updated_at = $12, version = version + 1
         WHERE program_id = $1 AND reward_id = $2
         RETURNING {REWARD}"
    ))
    .bind(program)
    .bind(reward_id)
    .bind(&terms.name)
    .bind(&terms.description)
    .bind(terms.points_price)
    .bind(terms.stock)
    .bind(terms.per_member_limit)
    .bind(terms.limit_period.code())
    .bind(terms.valid_from)
    .bind(terms.valid_until)
    .bind(terms.active)
    .bind(now)
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(reward)
    .transpose()
}

/// A page of rewards after `after`, oldest first (reward ids are UUIDv7);
/// with `redeemable_at`, only those active, in their window then, and in
/// stock.
pub async fn list(
    conn: &mut PgConnection,
    program: &str,
    after: Option<Uuid>,
    redeemable_at: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<Reward>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {REWARD} FROM rewards
         WHERE program_id = $1 AND ($2::uuid IS NULL OR reward_id > $2)
           AND ($3::timestamptz IS NULL OR (active AND stock > 0
                AND (valid_from IS NULL OR valid_from <= $3) AND (valid_until IS NULL OR valid_until > $3)))
         ORDER BY reward_id LIMIT $4"
    ))
    .bind(program)
    .bind(after)
    .bind(redeemable_at)
    .bind(limit)
    .fetch_all(conn)
    .await?
    .iter()
    .map(reward)
    .collect()
}

/// Takes `quantity` units of a reward when it is redeemable at `now`, in
/// one conditional statement: the row lock it takes serialises redemptions
/// of the reward until the transaction ends, and a concurrent one that
/// committed first is seen (Postgres evaluates the condition again on the
/// newest row), so stock never goes below zero. `None` when the reward is
/// missing or not redeemable; the reward after the change otherwise.
pub async fn take_stock(
    conn: &mut PgConnection,
    program: &str,
    reward_id: Uuid,
    quantity: i64,
    now: DateTime<Utc>,
) -> Result<Option<Reward>, sqlx::Error> {
    sqlx::query(&format!(
        "UPDATE rewards SET stock = stock - $3, version = version + 1, updated_at = $4
         WHERE program_id = $1 AND reward_id = $2 AND active AND stock >= $3
           AND (valid_from IS NULL OR valid_from <= $4) AND (valid_until IS NULL OR valid_until > $4)
         RETURNING {REWARD}"
    ))
    .bind(program)
    .bind(reward_id)
    .bind(quantity)
    .bind(now)
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(reward)
    .transpose()
}

/// Puts `quantity` units back (a cancelled redemption), whatever the
/// reward's state now.
pub async fn return_stock(
    conn: &mut PgConnection,
    program: &str,
    reward_id: Uuid,
    quantity: i64,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE rewards SET stock = stock + $3, version = version + 1, updated_at = $4 WHERE program_id = $1 AND reward_id = $2")
        .bind(program)
        .bind(reward_id)
        .bind(quantity)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// Units of a reward a member redeemed within `period` (`None`: ever),
/// cancelled redemptions not counted.
pub async fn units_taken(
    conn: &mut PgConnection,
    program: &str,
    reward_id: Uuid,
    member: Uuid,
    period: Option<(DateTime<Utc>, DateTime<Utc>)>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE(sum(quantity), 0)::bigint FROM reward_redemptions
         WHERE program_id = $1 AND reward_id = $2 AND member_id = $3 AND status <> $4
           AND ($5::timestamptz IS NULL OR (created_at >= $5 AND created_at < $6))",
    )
    .bind(program)
    .bind(reward_id)
    .bind(member)
    .bind(Fulfilment::Cancelled.code())
    .bind(period.map(|p| p.0))
    .bind(period.map(|p| p.1))
    .fetch_one(conn)
    .await
}

/// Records a redemption.
pub async fn insert_redemption(
    conn: &mut PgConnection,
    program: &str,
    r: &Redemption,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO reward_redemptions (program_id, redemption_id, reward_id, member_id, quantity, points, movement_id, status, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(program)
    .bind(r.redemption_id)
    .bind(r.reward_id)
    .bind(r.member_id)
    .bind(r.quantity)
    .bind(r.points)
    .bind(r.movement_id)
    .bind(r.status.code())
    .bind(r.created_at)
    .bind(r.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// A redemption, locked until the transaction ends.
pub async fn lock_redemption(
    conn: &mut PgConnection,
    program: &str,
    redemption_id: Uuid,
) -> Result<Option<Redemption>, sqlx::Error> {
    sqlx::query(&format!("SELECT {REDEMPTION} FROM reward_redemptions WHERE program_id = $1 AND redemption_id = $2 FOR UPDATE"))
        .bind(program)
        .bind(redemption_id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(redemption)
        .transpose()
}

/// Sets a redemption's fulfilment status.
pub async fn set_fulfilment(
    conn: &mut PgConnection,
    program: &str,
    redemption_id: Uuid,
    status: Fulfilment,
    now: DateTime<Utc>,
) -> Result<Redemption, sqlx::Error> {
    let row = sqlx::query(&format!(
        "UPDATE reward_redemptions SET status = $3, updated_at = $4 WHERE program_id = $1 AND redemption_id = $2 RETURNING {REDEMPTION}"
    ))
    .bind(program)
    .bind(redemption_id)
    .bind(status.code())
    .bind(now)
    .fetch_one(conn)
    .await?;
    redemption(&row)
}

/// Whether a spending movement was reversed already (by a Reverse call).
pub async fn movement_reversed(
    conn: &mut PgConnection,
    movement_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM movements WHERE related_movement_id = $1 AND type = $2)",
    )
    .bind(movement_id)
    .bind(laurel_proto::points::v1::MovementType::ReverseRedemption as i16)
    .fetch_one(conn)
    .await
}

/// A page of redemptions before `before`, newest first, of one reward
/// and/or one member (neither: the programme's).
pub async fn list_redemptions(
    conn: &mut PgConnection,
    program: &str,
    reward_id: Option<Uuid>,
    member: Option<Uuid>,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Redemption>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {REDEMPTION} FROM reward_redemptions
         WHERE program_id = $1 AND ($2::uuid IS NULL OR reward_id = $2) AND ($3::uuid IS NULL OR member_id = $3)
           AND ($4::timestamptz IS NULL OR (created_at, redemption_id) < ($4, $5))
         ORDER BY created_at DESC, redemption_id DESC LIMIT $6"
    ))
    .bind(program)
    .bind(reward_id)
    .bind(member)
    .bind(before.map(|b| b.0))
    .bind(before.map(|b| b.1))
    .bind(limit)
    .fetch_all(conn)
    .await?
    .iter()
    .map(redemption)
    .collect()
}
