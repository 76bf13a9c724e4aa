//! Versions of a programme's earn rules in Postgres (table `earn_rules`).
//! Versions are numbered 1, 2, ... per programme and never change.

use chrono::{DateTime, Timelike, Utc};
use laurel_proto::points::v1 as pb;
use prost::Message;
use sqlx::{Connection, PgConnection, Row, postgres::PgRow};

use super::{model::RuleSet, validate};

/// Stored rules that no longer pass validation (or do not decode): a bug
/// or a manual edit, never the caller's fault.
#[derive(Debug, thiserror::Error)]
#[error("stored earn rules of version {version} are unusable: {why}")]
pub struct UnusableStoredRules {
    /// The version.
    pub version: i64,
    /// What is wrong.
    pub why: String,
}

/// Publishes `rules` as the programme's next version, published `now`, and
/// returns them as stored. Concurrent publishers of one programme are
/// serialised, so versions have no gaps and no duplicates. Inside a
/// caller's transaction, the version is taken in it.
pub async fn publish(
    conn: &mut PgConnection,
    program: &str,
    rules: &RuleSet,
    now: DateTime<Utc>,
) -> Result<pb::EarnRules, sqlx::Error> {
    let mut tx = conn.begin().await?;
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('laurel.points.earn_rules:' || $1, 0))",
    )
    .bind(program)
    .execute(&mut *tx)
    .await?;
    let version: i64 = sqlx::query_scalar(
        "SELECT coalesce(max(version), 0) + 1 FROM earn_rules WHERE program_id = $1",
    )
    .bind(program)
    .fetch_one(&mut *tx)
    .await?;
    // Postgres keeps microseconds; so does the copy inside the bytes.
    let published_at = now
        .with_nanosecond(now.nanosecond() / 1_000 * 1_000)
        .unwrap_or(now);
    let published = rules.clone().published(version, published_at).to_proto();
    sqlx::query(
        "INSERT INTO earn_rules (program_id, version, effective_from, published_at, rules) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(program)
    .bind(version)
    .bind(rules.effective_from())
    .bind(published_at)
    .bind(published.encode_to_vec())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(published)
}

/// The version in force at `at`: the greatest `effective_from` at or before
/// it, the highest version among equals; `None` before the first.
pub async fn in_force(
    conn: &mut PgConnection,
    program: &str,
    at: DateTime<Utc>,
) -> Result<Option<RuleSet>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT version, rules FROM earn_rules \
         WHERE program_id = $1 AND effective_from <= $2 \
         ORDER BY effective_from DESC, version DESC LIMIT 1",
    )
    .bind(program)
    .bind(at)
    .fetch_optional(conn)
    .await?;
    row.map(|row| rule_set(&row)).transpose()
}

/// Every version, ordered by `effective_from` then version (the order
/// [`in_force`] picks from).
pub(super) async fn all_in_force_order(
    conn: &mut PgConnection,
    program: &str,
) -> Result<Vec<RuleSet>, sqlx::Error> {
    sqlx::query(
        "SELECT version, rules FROM earn_rules WHERE program_id = $1 \
         ORDER BY effective_from, version",
    )
    .bind(program)
    .fetch_all(conn)
    .await?
    .iter()
    .map(rule_set)
    .collect()
}

/// Up to `limit` versions, newest first, below `before_version` when given
/// (the last version of the previous page).
pub async fn list(
    conn: &mut PgConnection,
    program: &str,
    before_version: Option<i64>,
    limit: i64,
) -> Result<Vec<pb::EarnRules>, sqlx::Error> {
    sqlx::query(
        "SELECT version, rules FROM earn_rules \
         WHERE program_id = $1 AND ($2::bigint IS NULL OR version < $2) \
         ORDER BY version DESC LIMIT $3",
    )
    .bind(program)
    .bind(before_version)
    .bind(limit.max(0))
    .fetch_all(conn)
    .await?
    .iter()
    .map(stored_proto)
    .collect()
}

fn unusable(version: i64, why: impl ToString) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(UnusableStoredRules {
        version,
        why: why.to_string(),
    }))
}

fn stored_proto(row: &PgRow) -> Result<pb::EarnRules, sqlx::Error> {
    let version: i64 = row.try_get("version")?;
    let bytes: Vec<u8> = row.try_get("rules")?;
    pb::EarnRules::decode(bytes.as_slice()).map_err(|e| unusable(version, e))
}

fn rule_set(row: &PgRow) -> Result<RuleSet, sqlx::Error> {
    let stored = stored_proto(row)?;
    let published_at = stored
        .published_at
        .as_ref()
        .and_then(super::model::from_timestamp)
        .ok_or_else(|| unusable(stored.version, "no published_at"))?;
    let rules = validate(&stored)
        .map_err(|violations| unusable(stored.version, violations.fields().join(", ")))?;
    Ok(rules.published(stored.version, published_at))
}
