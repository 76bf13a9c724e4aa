//! Enrolments, merges and erasure.

use laurel_proto::member::v1 as member;
use laurel_runtime::events::handler::{EventContext, HandlerError};
use sqlx::PgConnection;

use super::{id, spend};
use crate::Analytics;

/// Fact tables whose rows name a member.
const MEMBER_FACTS: [&str; 6] = [
    "purchases",
    "purchase_lines",
    "refunds",
    "feedback",
    "points_movements",
    "subscription_events",
];

impl Analytics {
    pub(crate) async fn on_member_created(
        &self,
        tx: &mut PgConnection,
        event: &EventContext,
        m: member::MemberCreated,
    ) -> Result<(), HandlerError> {
        let member = id(&m.member_id)?;
        let at = event.occurred_at.unwrap_or_else(|| self.now());
        // A fact about the member may have come first (another stream):
        // the enrolment sets the real date.
        sqlx::query(
            "INSERT INTO members (program_id, member_id, enrolled_at) VALUES ($1, $2, $3)
             ON CONFLICT (program_id, member_id) DO UPDATE SET enrolled_at = EXCLUDED.enrolled_at",
        )
        .bind(event.program_id())
        .bind(member)
        .bind(at)
        .execute(tx)
        .await?;
        Ok(())
    }

    /// The merged member's facts become the survivor's; the survivor's
    /// spend figures are rebuilt from them, counters added up.
    pub(crate) async fn on_member_merged(
        &self,
        tx: &mut PgConnection,
        event: &EventContext,
        m: member::MemberMerged,
    ) -> Result<(), HandlerError> {
        let program = event.program_id();
        let (survivor, merged) = (id(&m.survivor_member_id)?, id(&m.merged_member_id)?);
        if survivor == merged {
            return Ok(());
        }
        let at = event.occurred_at.unwrap_or_else(|| self.now());
        super::ensure_member(tx, program, survivor, at).await?;
        super::ensure_member(tx, program, merged, at).await?;
        for table in MEMBER_FACTS {
            sqlx::query(&format!(
                "UPDATE {table} SET member_id = $3 WHERE program_id = $1 AND member_id = $2"
            ))
            .bind(program)
            .bind(merged)
            .bind(survivor)
            .execute(&mut *tx)
            .await?;
        }
        // Counters add up; the latest feedback is the later one; the
        // earlier enrolment stands.
        sqlx::query(
            "UPDATE members s SET
               enrolled_at = LEAST(s.enrolled_at, m.enrolled_at),
               points_earned = s.points_earned + m.points_earned,
               points_redeemed = s.points_redeemed + m.points_redeemed,
               points_expired = s.points_expired + m.points_expired,
               negative_feedback = s.negative_feedback + m.negative_feedback,
               complaints = s.complaints + m.complaints,
               campaign_exposures = s.campaign_exposures + m.campaign_exposures,
               campaign_conversions = s.campaign_conversions + m.campaign_conversions,
               latest_nps = CASE WHEN m.latest_feedback_at > s.latest_feedback_at
                                   OR s.latest_feedback_at IS NULL
                                 THEN COALESCE(NULLIF(m.latest_nps, -1), s.latest_nps) ELSE s.latest_nps END,
               latest_feedback_at = GREATEST(s.latest_feedback_at, m.latest_feedback_at)
             FROM members m
             WHERE s.program_id = $1 AND s.member_id = $2 AND m.program_id = $1 AND m.member_id = $3",
        )
        .bind(program)
        .bind(survivor)
        .bind(merged)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE members SET status = 'merged', merged_into = $3,
               points_earned = 0, points_redeemed = 0, points_expired = 0,
               negative_feedback = 0, complaints = 0, campaign_exposures = 0, campaign_conversions = 0
             WHERE program_id = $1 AND member_id = $2",
        )
        .bind(program)
        .bind(merged)
        .bind(survivor)
        .execute(&mut *tx)
        .await?;
        spend::rebuild_member(tx, program, merged).await?;
        spend::rebuild_member(tx, program, survivor).await?;
        crate::value::store::forget(tx, program, merged).await?;
        self.announce_change(merged).await?;
        self.announce_change(survivor).await
    }

    /// Nothing personal stays: the member's purchases remain anonymised
    /// (no member, not a guest), so programme totals do not change, and
    /// every per-member figure goes.
    pub(crate) async fn on_member_erased(
        &self,
        tx: &mut PgConnection,
        event: &EventContext,
        m: member::MemberErased,
    ) -> Result<(), HandlerError> {
        let program = event.program_id();
        let member = id(&m.member_id)?;
        for table in MEMBER_FACTS {
            sqlx::query(&format!(
                "UPDATE {table} SET member_id = NULL WHERE program_id = $1 AND member_id = $2"
            ))
            .bind(program)
            .bind(member)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE members SET status = 'erased', tier_code = '', plan_status = 'none',
               points_earned = 0, points_redeemed = 0, points_expired = 0, latest_nps = -1,
               latest_feedback_at = NULL, negative_feedback = 0, complaints = 0,
               campaign_exposures = 0, campaign_conversions = 0
             WHERE program_id = $1 AND member_id = $2",
        )
        .bind(program)
        .bind(member)
        .execute(&mut *tx)
        .await?;
        spend::rebuild_member(tx, program, member).await?;
        crate::value::store::forget(tx, program, member).await?;
        self.announce_change(member).await
    }
}
