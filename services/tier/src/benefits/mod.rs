//! The benefits catalogue, what members are entitled to with their quotas,
//! consumption and usage figures.
//!
//! # Entitlements
//!
//! A member's benefits now are the grants of their tier (in the ladder in
//! force) and of the plans of their live subscriptions (active, cancelling
//! or in grace); when several give one benefit, the most generous wins
//! ([`entitle::entitlements`]). Quotas renew each calendar month, quarter or
//! year in the ladder's time zone (UTC without a ladder).
//!
//! # Consuming ([`crate::Tiers`]'s `consume_benefit`)
//!
//! One short transaction opened with the request's idempotency key: one
//! statement reads the member's tier, live plans, the ladder version and the
//! catalogue revision (the ladder and catalogue themselves come from
//! in-process caches keyed on those); one statement adds the uses to the
//! member's counter of the period with a conditional upsert, whose row lock
//! serialises concurrent uses, so the quota is never exceeded, and records
//! the use; the response is stored with the key. A refusal rolls it all back.

mod api;
pub(crate) mod catalogue;
pub mod entitle;
pub mod period;
pub(crate) mod validate;

use chrono::{DateTime, Utc};
use laurel_proto::tier::v1 as pb;
use sqlx::PgConnection;
use uuid::Uuid;

/// Statuses of subscriptions that give their plan's benefits and floor.
pub(crate) const LIVE: &str = "('active', 'cancelling', 'in_grace')";

/// Which of `codes` the programme's catalogue does not hold, in order.
pub async fn unknown_codes(
    tx: &mut PgConnection,
    program: &str,
    codes: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    if codes.is_empty() {
        return Ok(Vec::new());
    }
    let known: Vec<String> =
        sqlx::query_scalar("SELECT code FROM benefits WHERE program_id = $1 AND code = ANY($2)")
            .bind(program)
            .bind(codes)
            .fetch_all(&mut *tx)
            .await?;
    Ok(codes
        .iter()
        .filter(|c| !known.contains(c))
        .cloned()
        .collect())
}

/// What decides a member's benefits, read in one statement.
#[derive(Clone, Debug, sqlx::FromRow)]
pub(crate) struct MemberState {
    /// Effective tier code.
    pub tier: Option<String>,
    /// Ladder version in force.
    pub ladder_version: Option<i64>,
    /// Catalogue revision.
    pub revision: i64,
    /// Plan codes of live subscriptions.
    pub plans: Vec<String>,
}

/// The member's state; `None` when the service knows no active member.
pub(crate) async fn member_state(
    conn: &mut PgConnection,
    program: &str,
    member: Uuid,
) -> Result<Option<MemberState>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT m.tier_code AS tier,
                (SELECT max(version) FROM ladders WHERE program_id = $1) AS ladder_version,
                COALESCE((SELECT revision FROM catalogue_revisions WHERE program_id = $1), 0)
                  AS revision,
                ARRAY(SELECT plan_code FROM subscriptions
                      WHERE program_id = $1 AND member_id = $2 AND status IN {LIVE}) AS plans
         FROM members m
         WHERE m.program_id = $1 AND m.member_id = $2 AND m.status = 'active'"
    ))
    .bind(program)
    .bind(member)
    .fetch_optional(&mut *conn)
    .await
}

/// A protobuf timestamp.
pub(crate) fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

/// A member's benefit as answered, `used` uses into the period ending at
/// `period_end`.
pub(crate) fn member_benefit(
    e: &entitle::Entitlement,
    used: i64,
    period_end: Option<DateTime<Utc>>,
) -> pb::MemberBenefit {
    let unlimited = e.unlimited();
    let used = if unlimited { 0 } else { used.max(0) };
    pb::MemberBenefit {
        benefit: Some(e.benefit.clone()),
        source: e.source as i32,
        source_code: e.source_code.clone(),
        quota: e.quota,
        period: e.period as i32,
        used: i32::try_from(used).unwrap_or(i32::MAX),
        remaining: if unlimited {
            0
        } else {
            i32::try_from((i64::from(e.quota) - used).max(0)).unwrap_or(0)
        },
        unlimited,
        period_end: if unlimited {
            None
        } else {
            period_end.map(timestamp)
        },
    }
}
