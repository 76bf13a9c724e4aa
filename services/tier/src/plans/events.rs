//! The paid-plan side of the consumed events: a merge gives the survivor
//! the union of both members' subscriptions and benefit use; an erasure ends
//! the member's live subscriptions and removes what is personal (payment
//! references, cancellation reasons, what benefits were used for).

use laurel_proto::{member::v1 as member, tier::v1 as pb};
use laurel_runtime::events::handler::{EventContext, HandlerError};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{COLUMNS, Row, Status, publish, save};
use crate::{Tiers, benefits::LIVE};

fn member_id(raw: &str, what: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(raw).map_err(|e| HandlerError::terminal(anyhow::anyhow!("{what}: {e}")))
}

impl Tiers {
    pub(crate) async fn on_plans_merged(
        &self,
        tx: &mut PgConnection,
        event: &EventContext,
        m: &member::MemberMerged,
    ) -> Result<(), HandlerError> {
        let program = event.program_id();
        let survivor = member_id(&m.survivor_member_id, "survivor_member_id")?;
        let merged = member_id(&m.merged_member_id, "merged_member_id")?;
        if survivor == merged {
            return Ok(());
        }
        let now = self.now();
        let moved = sqlx::query(
            "UPDATE subscriptions SET member_id = $3, updated_at = $4
             WHERE program_id = $1 AND member_id = $2",
        )
        .bind(program)
        .bind(merged)
        .bind(survivor)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // Uses of one period add up: the survivor has what is left of the
        // quota after both members' uses.
        sqlx::query(
            "INSERT INTO benefit_counters (program_id, member_id, benefit_code, period, period_start, used)
             SELECT program_id, $3, benefit_code, period, period_start, used
             FROM benefit_counters WHERE program_id = $1 AND member_id = $2
             ON CONFLICT (program_id, member_id, benefit_code, period, period_start)
             DO UPDATE SET used = benefit_counters.used + EXCLUDED.used",
        )
        .bind(program)
        .bind(merged)
        .bind(survivor)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM benefit_counters WHERE program_id = $1 AND member_id = $2")
            .bind(program)
            .bind(merged)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE benefit_uses SET member_id = $3 WHERE program_id = $1 AND member_id = $2",
        )
        .bind(program)
        .bind(merged)
        .bind(survivor)
        .execute(&mut *tx)
        .await?;
        if moved > 0 {
            // The tier side ran first, before these subscriptions were the
            // survivor's: their floors apply now. The TierChanged event it
            // writes carries the card version for the relay.
            self.refresh_tier(tx, program, survivor, pb::TierChangeReason::Merge)
                .await
                .map_err(HandlerError::retryable)?;
        }
        Ok(())
    }

    pub(crate) async fn on_plans_erased(
        &self,
        tx: &mut PgConnection,
        event: &EventContext,
        m: &member::MemberErased,
    ) -> Result<(), HandlerError> {
        let program = event.program_id();
        let member = member_id(&m.member_id, "member_id")?;
        let now = self.now();
        let live: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM subscriptions
             WHERE program_id = $1 AND member_id = $2 AND status IN {LIVE}
             FOR UPDATE"
        ))
        .bind(program)
        .bind(member)
        .fetch_all(&mut *tx)
        .await?;
        // Live subscriptions end (not as churn: expired = false) so the
        // paid-member counts of analytics stay right.
        for mut row in live {
            row.status = Status::Cancelled.as_str().to_owned();
            row.ended_at = Some(now);
            row.payment_reference = None;
            row.cancel_reason = None;
            save(&mut *tx, &row, now).await?;
            publish(
                &mut *tx,
                &row,
                now,
                now,
                &pb::SubscriptionEnded {
                    facts: Some(row.facts(now)),
                    expired: false,
                },
            )
            .await?;
        }
        sqlx::query(
            "UPDATE subscriptions SET payment_reference = NULL, cancel_reason = NULL, updated_at = $3
             WHERE program_id = $1 AND member_id = $2",
        )
        .bind(program)
        .bind(member)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE benefit_uses SET reference = NULL WHERE program_id = $1 AND member_id = $2",
        )
        .bind(program)
        .bind(member)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}
