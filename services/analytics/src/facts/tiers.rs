//! Tier changes and paid-membership events from the tier service: the
//! member's tier and plan status now, and every subscription event by day
//! (renewals and renewals due make the renewal rate).

use laurel_proto::tier::v1 as tpb;
use laurel_runtime::events::handler::{EventContext, HandlerError};
use sqlx::PgConnection;

use super::{ensure_member, id, time};
use crate::{Analytics, settings::day_of};

impl Analytics {
    pub(crate) async fn on_tier_changed(
        &self,
        tx: &mut PgConnection,
        event: &EventContext,
        m: tpb::TierChanged,
    ) -> Result<(), HandlerError> {
        let member = id(&m.member_id)?;
        let at = time(&m.effective_at)
            .or(event.occurred_at)
            .unwrap_or_else(|| self.now());
        ensure_member(tx, event.program_id(), member, at).await?;
        sqlx::query("UPDATE members SET tier_code = $3 WHERE program_id = $1 AND member_id = $2")
            .bind(event.program_id())
            .bind(member)
            .bind(&m.tier)
            .execute(tx)
            .await?;
        Ok(())
    }

    /// Keeps a subscription event and the member's plan status after it
    /// (`None` leaves the status alone).
    async fn subscription(
        &self,
        tx: &mut PgConnection,
        event: &EventContext,
        facts: Option<tpb::SubscriptionFacts>,
        kind: &str,
        status: Option<&str>,
    ) -> Result<(), HandlerError> {
        let Some(facts) = facts else {
            return Ok(());
        };
        let Some(sub) = facts.subscription else {
            return Ok(());
        };
        let program = event.program_id();
        let member = id(&sub.member_id)?;
        let at = time(&facts.occurred_at)
            .or(event.occurred_at)
            .unwrap_or_else(|| self.now());
        let settings = self.settings(tx, program).await?;
        ensure_member(tx, program, member, at).await?;
        sqlx::query(
            "INSERT INTO subscription_events (program_id, event_id, subscription_id, member_id, kind,
                occurred_at, day)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (program_id, event_id) DO NOTHING",
        )
        .bind(program)
        .bind(event.event_id)
        .bind(&sub.subscription_id)
        .bind(member)
        .bind(kind)
        .bind(at)
        .bind(day_of(settings.as_ref(), at))
        .execute(&mut *tx)
        .await?;
        if let Some(status) = status {
            sqlx::query(
                "UPDATE members SET plan_status = $3 WHERE program_id = $1 AND member_id = $2",
            )
            .bind(program)
            .bind(member)
            .bind(status)
            .execute(tx)
            .await?;
        }
        Ok(())
    }

    pub(crate) async fn on_subscription_started(
        &self,
        tx: &mut PgConnection,
        event: &EventContext,
        m: tpb::SubscriptionStarted,
    ) -> Result<(), HandlerError> {
        self.subscription(tx, event, m.facts, "started", Some("active"))
            .await
    }

    pub(crate) async fn on_subscription_renewed(
        &self,
        tx: &mut PgConnection,
        event: &EventContext,
        m: tpb::SubscriptionRenewed,
    ) -> Result<(), HandlerError> {
        self.subscription(tx, event, m.facts, "renewed", Some("active"))
            .await
    }

    pub(crate) async fn on_subscription_due(
        &self,
        tx: &mut PgConnection,
        event: &EventContext,
        m: tpb::SubscriptionRenewalDue,
    ) -> Result<(), HandlerError> {
        self.subscription(tx, event, m.facts, "due", None).await
    }

    pub(crate) async fn on_subscription_cancelled(
        &self,
        tx: &mut PgConnection,
        event: &EventContext,
        m: tpb::SubscriptionCancelled,
    ) -> Result<(), HandlerError> {
        self.subscription(tx, event, m.facts, "cancelled", Some("cancelled"))
            .await
    }

    pub(crate) async fn on_subscription_ended(
        &self,
        tx: &mut PgConnection,
        event: &EventContext,
        m: tpb::SubscriptionEnded,
    ) -> Result<(), HandlerError> {
        self.subscription(tx, event, m.facts, "ended", Some("ended"))
            .await
    }
}
