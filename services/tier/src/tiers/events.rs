//! The tier side of the consumed events, each in the consumer's
//! transaction: enrolments add the member, purchases and refunds move
//! qualifying spend and orders on the day (in the ladder's time zone) the
//! purchase happened, earned points move qualifying points, and each can
//! upgrade at once; merges move the facts to the survivor, who keeps the
//! higher tier; erasure deletes the facts and notes.
//!
//! Facts are recorded even before any ladder exists, per currency, so a
//! later ladder counts them in its own currency.
//!
//! The card is invalidated at the new version before the consumer commits:
//! a reader that read the old rows fills at the old version, which the
//! invalidated card refuses, and the relay invalidates again after commit
//! for every TierChanged.

use chrono::{DateTime, Utc};
use laurel_proto::{member::v1 as member, points::v1 as points, tier::v1 as pb};
use laurel_runtime::{
    context::ProgramId,
    events::handler::{EventContext, HandlerError},
};
use sqlx::PgConnection;
use uuid::Uuid;

use super::store;
use crate::{Tiers, error::TierError};

fn id(raw: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(raw)
        .map_err(|e| HandlerError::terminal(anyhow::anyhow!("bad member id {raw:?}: {e}")))
}

fn time(t: &Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.as_ref()
        .and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .and_then(|at| DateTime::from_timestamp_micros(at.timestamp_micros()))
}

fn failed(e: TierError) -> HandlerError {
    match e {
        TierError::Db(e) => HandlerError::from(e),
        e => HandlerError::retryable(anyhow::anyhow!("{e}")),
    }
}

impl Tiers {
    async fn settle(
        &self,
        tx: &mut PgConnection,
        program: &str,
        member: Uuid,
        cause: pb::TierChangeReason,
        measures_changed: bool,
    ) -> Result<(), HandlerError> {
        let version = self
            .advance(tx, program, member, cause, measures_changed)
            .await
            .map_err(failed)?;
        self.invalidate(program, member, version).await;
        Ok(())
    }

    pub(crate) async fn invalidate(&self, program: &str, member: Uuid, version: Option<i64>) {
        if let (Some(version), Ok(program)) = (version, ProgramId::parse(program)) {
            self.cards.invalidate(&program, &member, version).await;
        }
    }

    /// The local day of `at` in the ladder's time zone (UTC before any).
    async fn day_of(
        &self,
        tx: &mut PgConnection,
        program: &str,
        at: DateTime<Utc>,
    ) -> Result<chrono::NaiveDate, HandlerError> {
        Ok(match self.ladder(tx, program, None).await? {
            Some(l) => l.rules.day(at),
            None => at.date_naive(),
        })
    }

    pub(crate) async fn on_member_created(
        &self,
        tx: &mut PgConnection,
        event: &EventContext,
        m: member::MemberCreated,
    ) -> Result<(), HandlerError> {
        let program = event.program_id();
        let member = id(&m.member_id)?;
        let at = event.occurred_at.unwrap_or_else(|| self.now());
        store::insert(tx, program, member, at).await?;
        self.settle(tx, program, member, pb::TierChangeReason::Qualified, false)
            .await
    }

    pub(crate) async fn on_activity(
        &self,
        tx: &mut PgConnection,
        event: &EventContext,
        m: member::ActivityRecorded,
    ) -> Result<(), HandlerError> {
        let Some(activity) = m.activity else {
            return Err(HandlerError::terminal(anyhow::anyhow!(
                "ActivityRecorded without an activity"
            )));
        };
        // A guest's purchase or refund (RecordActivity with guest set) names
        // no member: no member's spend moves, so it is done with, not
        // dead-lettered.
        if activity.member_id.is_empty() {
            return Ok(());
        }
        let program = event.program_id();
        let member_id = id(&activity.member_id)?;
        let occurred_at = time(&activity.occurred_at).unwrap_or_else(|| self.now());
        use member::activity::Detail;
        let counted_for = match activity.detail {
            Some(Detail::Purchase(p)) => {
                let Some(total) = p.total.filter(|t| t.amount_minor >= 0) else {
                    return Ok(());
                };
                store::insert(tx, program, member_id, occurred_at).await?;
                // The member's row lock first: one member's facts and tier
                // change one transaction at a time.
                store::lock(tx, program, member_id).await?;
                let day = self.day_of(tx, program, occurred_at).await?;
                let currency = total.currency_code.trim().to_ascii_uppercase();
                let new: Option<i32> = sqlx::query_scalar(
                    "INSERT INTO qualifying_orders (program_id, order_id, member_id, day, currency_code, total_minor)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (program_id, order_id) DO NOTHING RETURNING 1",
                )
                .bind(program)
                .bind(&p.order_id)
                .bind(member_id)
                .bind(day)
                .bind(&currency)
                .bind(total.amount_minor)
                .fetch_optional(&mut *tx)
                .await?;
                if new.is_none() {
                    return Ok(());
                }
                add_day(
                    tx,
                    program,
                    member_id,
                    day,
                    &currency,
                    total.amount_minor,
                    1,
                    0,
                )
                .await?;
                member_id
            }
            Some(Detail::Refund(r)) => {
                let order: Option<(Uuid, chrono::NaiveDate, String, i64, i64)> = sqlx::query_as(
                    "SELECT member_id, day, currency_code, total_minor, refunded_minor FROM qualifying_orders
                     WHERE program_id = $1 AND order_id = $2",
                )
                .bind(program)
                .bind(&r.order_id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((owner, ..)) = order else {
                    return Ok(());
                };
                store::lock(tx, program, owner).await?;
                // Read again under the member's lock.
                let (owner, day, currency, total, refunded): (Uuid, chrono::NaiveDate, String, i64, i64) =
                    sqlx::query_as(
                        "SELECT member_id, day, currency_code, total_minor, refunded_minor FROM qualifying_orders
                         WHERE program_id = $1 AND order_id = $2 FOR UPDATE",
                    )
                    .bind(program)
                    .bind(&r.order_id)
                    .fetch_one(&mut *tx)
                    .await?;
                let left = total - refunded;
                let amount = match &r.amount {
                    Some(a) if a.currency_code.trim().eq_ignore_ascii_case(&currency) => {
                        a.amount_minor.clamp(0, left)
                    }
                    Some(_) => return Ok(()),
                    None => left,
                };
                if amount == 0 && left > 0 {
                    return Ok(());
                }
                let now_full = refunded + amount == total && refunded < total;
                sqlx::query(
                    "UPDATE qualifying_orders SET refunded_minor = refunded_minor + $3
                     WHERE program_id = $1 AND order_id = $2",
                )
                .bind(program)
                .bind(&r.order_id)
                .bind(amount)
                .execute(&mut *tx)
                .await?;
                add_day(
                    tx,
                    program,
                    owner,
                    day,
                    &currency,
                    -amount,
                    if now_full { -1 } else { 0 },
                    0,
                )
                .await?;
                owner
            }
            _ => return Ok(()),
        };
        self.settle(
            tx,
            program,
            counted_for,
            pb::TierChangeReason::Qualified,
            true,
        )
        .await
    }

    pub(crate) async fn on_points_moved(
        &self,
        tx: &mut PgConnection,
        event: &EventContext,
        m: points::PointsMoved,
    ) -> Result<(), HandlerError> {
        let Some(movement) = m.movement else {
            return Ok(());
        };
        let kind = points::MovementType::try_from(movement.r#type);
        if !matches!(
            kind,
            Ok(points::MovementType::Earn | points::MovementType::ReverseEarn)
        ) || movement.points == 0
        {
            return Ok(());
        }
        let program = event.program_id();
        let member_id = id(&movement.member_id)?;
        let occurred_at = time(&movement.occurred_at)
            .or(event.occurred_at)
            .unwrap_or_else(|| self.now());
        let ladder = self.ladder(tx, program, None).await?;
        let day = ladder
            .as_ref()
            .map_or(occurred_at.date_naive(), |l| l.rules.day(occurred_at));
        if !ladder.is_some_and(|l| l.rules.counts_points()) {
            // No tier asks for points: the movement changes no tier, only the
            // measures `GetMemberTier` shows (and a later ladder may count
            // them). One statement (the day's points, the member's row and
            // its version) instead of a recomputation keeps the tier service
            // from contending with every earn.
            let version =
                store::count_points(tx, program, member_id, occurred_at, day, movement.points)
                    .await?;
            self.invalidate(program, member_id, Some(version)).await;
            return Ok(());
        }
        store::insert(tx, program, member_id, occurred_at).await?;
        store::lock(tx, program, member_id).await?;
        add_day(tx, program, member_id, day, "", 0, 0, movement.points).await?;
        self.settle(
            tx,
            program,
            member_id,
            pb::TierChangeReason::Qualified,
            true,
        )
        .await
    }

    pub(crate) async fn on_tiers_merged(
        &self,
        tx: &mut PgConnection,
        event: &EventContext,
        m: &member::MemberMerged,
    ) -> Result<(), HandlerError> {
        let program = event.program_id();
        let (survivor, merged) = (id(&m.survivor_member_id)?, id(&m.merged_member_id)?);
        if survivor == merged {
            return Ok(());
        }
        let at = event.occurred_at.unwrap_or_else(|| self.now());
        // Locks in id order, so two merges never wait on each other.
        let (first, second) = if survivor < merged {
            (survivor, merged)
        } else {
            (merged, survivor)
        };
        let a = store::lock(tx, program, first).await?;
        let b = store::lock(tx, program, second).await?;
        let (s_row, m_row) = if first == survivor { (a, b) } else { (b, a) };
        let Some(m_row) = m_row.filter(|r| r.status == "active") else {
            return Ok(());
        };
        if s_row.is_none() {
            store::insert(tx, program, survivor, m_row.state.enrolled_at).await?;
        }
        sqlx::query(
            "INSERT INTO qualifying_days (program_id, member_id, day, currency_code, spend_minor, orders, points)
             SELECT program_id, $3, day, currency_code, spend_minor, orders, points
             FROM qualifying_days WHERE program_id = $1 AND member_id = $2
             ON CONFLICT (program_id, member_id, day, currency_code) DO UPDATE SET
               spend_minor = qualifying_days.spend_minor + EXCLUDED.spend_minor,
               orders = qualifying_days.orders + EXCLUDED.orders,
               points = qualifying_days.points + EXCLUDED.points",
        )
        .bind(program)
        .bind(merged)
        .bind(survivor)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM qualifying_days WHERE program_id = $1 AND member_id = $2")
            .bind(program)
            .bind(merged)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE qualifying_orders SET member_id = $3 WHERE program_id = $1 AND member_id = $2",
        )
        .bind(program)
        .bind(merged)
        .bind(survivor)
        .execute(&mut *tx)
        .await?;
        // The survivor keeps the higher earned tier, with its period.
        if let Some(ladder) = self.ladder(tx, program, None).await? {
            let rank = |code: &Option<String>| {
                code.as_deref()
                    .and_then(|c| ladder.rules.rank(c))
                    .map_or(-1, |r| r as i64)
            };
            let s_earned = s_row.as_ref().and_then(|r| r.state.earned.clone());
            if rank(&m_row.state.earned) > rank(&s_earned) {
                let s = &m_row.state;
                sqlx::query(
                    "UPDATE members SET earned_tier = $3, earned_since = $4, period_start = $5, period_end = $6,
                        pending_downgrade = NULL, pending_downgrade_at = NULL, warned_for = NULL
                     WHERE program_id = $1 AND member_id = $2",
                )
                .bind(program)
                .bind(survivor)
                .bind(&s.earned)
                .bind(s.earned_since)
                .bind(s.period.map(|p| p.0))
                .bind(s.period.map(|p| p.1))
                .execute(&mut *tx)
                .await?;
            }
        }
        let merged_version: i64 = sqlx::query_scalar(
            "UPDATE members SET status = 'merged', merged_into = $3, version = version + 1, updated_at = $4
             WHERE program_id = $1 AND member_id = $2 RETURNING version",
        )
        .bind(program)
        .bind(merged)
        .bind(survivor)
        .bind(at)
        .fetch_one(&mut *tx)
        .await?;
        self.invalidate(program, merged, Some(merged_version)).await;
        self.settle(tx, program, survivor, pb::TierChangeReason::Merge, true)
            .await
    }

    pub(crate) async fn on_tiers_erased(
        &self,
        tx: &mut PgConnection,
        event: &EventContext,
        m: &member::MemberErased,
    ) -> Result<(), HandlerError> {
        let program = event.program_id();
        let member = id(&m.member_id)?;
        store::lock(tx, program, member).await?;
        for sql in [
            "DELETE FROM qualifying_days WHERE program_id = $1 AND member_id = $2",
            "DELETE FROM qualifying_orders WHERE program_id = $1 AND member_id = $2",
            "UPDATE tier_history SET note = NULL WHERE program_id = $1 AND member_id = $2",
        ] {
            sqlx::query(sql)
                .bind(program)
                .bind(member)
                .execute(&mut *tx)
                .await?;
        }
        let version: Option<i64> = sqlx::query_scalar(
            "UPDATE members SET status = 'erased', manual_tier = NULL, manual_until = NULL,
                manual_note = NULL, pending_downgrade = NULL, pending_downgrade_at = NULL,
                version = version + 1, updated_at = now()
             WHERE program_id = $1 AND member_id = $2 RETURNING version",
        )
        .bind(program)
        .bind(member)
        .fetch_optional(&mut *tx)
        .await?;
        self.invalidate(program, member, version).await;
        Ok(())
    }
}

/// Adds to a member's facts of one day and currency.
#[allow(clippy::too_many_arguments)]
async fn add_day(
    tx: &mut PgConnection,
    program: &str,
    member: Uuid,
    day: chrono::NaiveDate,
    currency: &str,
    spend: i64,
    orders: i64,
    points: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO qualifying_days (program_id, member_id, day, currency_code, spend_minor, orders, points)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (program_id, member_id, day, currency_code) DO UPDATE SET
           spend_minor = qualifying_days.spend_minor + EXCLUDED.spend_minor,
           orders = qualifying_days.orders + EXCLUDED.orders,
           points = qualifying_days.points + EXCLUDED.points",
    )
    .bind(program)
    .bind(member)
    .bind(day)
    .bind(currency)
    .bind(spend)
    .bind(orders)
    .bind(points)
    .execute(tx)
    .await?;
    Ok(())
}
