//! The subscription jobs: renewal reminders, grace, expiry, cancellations
//! taking effect. Safe on every replica at once: each subscription is
//! moved in its own transaction that re-reads it under `FOR UPDATE SKIP
//! LOCKED` with the condition that made it due, so each change (and its
//! event) happens exactly once; reminders mark the period they were sent
//! for in the transaction that writes the event.

use std::time::Duration;

use chrono::{DateTime, Utc};
use laurel_proto::tier::v1 as pb;
use laurel_runtime::{app::App, context::ProgramId};
use tokio::sync::watch;
use uuid::Uuid;

use super::{COLUMNS, Row, Status, at_period_end, publish, save};
use crate::{Tiers, error::TierError};

/// Most subscriptions one run of a step takes on.
const BATCH: i64 = 500;

/// Adds the subscription jobs to `app`, each running every `interval`.
pub fn schedule(app: App, tiers: Tiers, interval: Duration) -> App {
    app.job("tier-subscriptions", move |stop| {
        run(stop, interval, tiers.clone())
    })
}

async fn run(mut stop: watch::Receiver<bool>, every: Duration, tiers: Tiers) -> anyhow::Result<()> {
    loop {
        // Period ends before grace ends, so a subscription whose grace also
        // passed expires in the same run.
        let done = tiers.end_periods().await?
            + tiers.end_grace().await?
            + tiers.send_renewal_reminders().await?;
        // A full batch means more is waiting: go again at once.
        if done as i64 >= BATCH {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return Ok(()),
        }
        if *stop.borrow() {
            return Ok(());
        }
    }
}

/// Which change a step makes.
#[derive(Clone, Copy, Debug)]
enum Due {
    /// The paid period ended (active or cancelling).
    PeriodEnd,
    /// The grace period ended.
    GraceEnd,
}

impl Due {
    /// The condition under which the subscription is due at `$2`.
    fn condition(self) -> &'static str {
        match self {
            Self::PeriodEnd => "status IN ('active', 'cancelling') AND current_period_end <= $2",
            Self::GraceEnd => "status = 'in_grace' AND grace_until <= $2",
        }
    }

    fn order(self) -> &'static str {
        match self {
            Self::PeriodEnd => "current_period_end",
            Self::GraceEnd => "grace_until",
        }
    }
}

impl Tiers {
    /// Moves subscriptions whose paid period ended into grace, expiry or
    /// their cancellation; returns how many were due.
    pub async fn end_periods(&self) -> anyhow::Result<usize> {
        self.step(Due::PeriodEnd).await
    }

    /// Expires subscriptions whose grace ended; returns how many were due.
    pub async fn end_grace(&self) -> anyhow::Result<usize> {
        self.step(Due::GraceEnd).await
    }

    async fn step(&self, due: Due) -> anyhow::Result<usize> {
        let now = self.now();
        let ids: Vec<Uuid> = sqlx::query_scalar(&format!(
            "SELECT subscription_id FROM subscriptions WHERE {} ORDER BY {} LIMIT $1",
            due.condition(),
            due.order()
        ))
        .bind(BATCH)
        .bind(now)
        .fetch_all(self.db.pool())
        .await?;
        for id in &ids {
            if let Err(e) = self.move_due(*id, due, now).await {
                tracing::warn!(error = %e, subscription = %id, "a subscription change failed; the next run tries again");
            }
        }
        Ok(ids.len())
    }

    /// Applies `due` to one subscription, if it is still due.
    async fn move_due(&self, id: Uuid, due: Due, now: DateTime<Utc>) -> Result<(), TierError> {
        let mut tx = self.db.pool().begin().await?;
        let row: Option<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM subscriptions WHERE subscription_id = $1 AND {}
             FOR UPDATE SKIP LOCKED",
            due.condition()
        ))
        .bind(id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(mut row) = row else {
            return Ok(());
        };
        let (next, at) = match due {
            Due::PeriodEnd => match at_period_end(row.status(), row.grace_days) {
                Some(next) => (next, row.current_period_end),
                None => return Ok(()),
            },
            Due::GraceEnd => (
                Status::Expired,
                row.grace_until.unwrap_or(row.current_period_end),
            ),
        };
        row.status = next.as_str().to_owned();
        if next == Status::InGrace {
            row.grace_until = Some(at + chrono::Duration::days(i64::from(row.grace_days.max(0))));
            save(&mut tx, &row, now).await?;
            tx.commit().await?;
            return Ok(());
        }
        row.ended_at = Some(at);
        save(&mut tx, &row, now).await?;
        publish(
            &mut tx,
            &row,
            at,
            now,
            &pb::SubscriptionEnded {
                facts: Some(row.facts(at)),
                expired: next == Status::Expired,
            },
        )
        .await?;
        let card = self
            .refresh_tier(
                &mut tx,
                &row.program_id,
                row.member_id,
                pb::TierChangeReason::PaidPlan,
            )
            .await?;
        tx.commit().await?;
        if let (Some(version), Ok(program)) = (card, ProgramId::parse(&row.program_id)) {
            self.cards
                .invalidate(&program, &row.member_id, version)
                .await;
        }
        Ok(())
    }

    /// Sends `SubscriptionRenewalDue` for active subscriptions entering
    /// their reminder window, once per period; returns how many.
    pub async fn send_renewal_reminders(&self) -> anyhow::Result<usize> {
        let now = self.now();
        let mut tx = self.db.pool().begin().await?;
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "UPDATE subscriptions SET reminded_for = current_period_end, updated_at = $1
             WHERE subscription_id IN (
               SELECT subscription_id FROM subscriptions
               WHERE status = 'active' AND reminder_days > 0
                 AND current_period_end > $1 AND current_period_end <= $1 + interval '366 days'
                 AND current_period_end - make_interval(days => reminder_days) <= $1
                 AND reminded_for IS DISTINCT FROM current_period_end
               ORDER BY current_period_end LIMIT $2
               FOR UPDATE SKIP LOCKED)
             RETURNING {COLUMNS}"
        ))
        .bind(now)
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            publish(
                &mut tx,
                row,
                now,
                now,
                &pb::SubscriptionRenewalDue {
                    facts: Some(row.facts(now)),
                },
            )
            .await?;
        }
        tx.commit().await?;
        Ok(rows.len())
    }
}
