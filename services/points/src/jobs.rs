//! Background jobs, safe to run on every replica at once: expiring due
//! lots and timed-out holds goes through the ledger's write path, which
//! locks the account and zeroes what it expires, so each happens exactly
//! once; reminders claim their lots with `FOR UPDATE SKIP LOCKED` and mark
//! them in the transaction that writes the event.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use laurel_proto::points::v1 as pb;
use laurel_runtime::{
    app::App,
    context::ProgramId,
    events::outbox::{self, NewEvent},
};
use tokio::sync::watch;
use uuid::Uuid;

use crate::{
    Points, clock_now,
    ledger::book::timestamp,
    writer::{Command, SOURCE},
};

/// Most rows one run of a job takes on.
const BATCH: i64 = 500;

/// Adds the jobs to `app`.
pub fn schedule(app: App, points: Points, every: Duration) -> App {
    let (p1, p2, p3) = (points.clone(), points.clone(), points);
    app.job("points-expiry", move |stop| {
        repeat(stop, every, p1.clone(), |p| {
            Box::pin(async move { p.expire_lots().await })
        })
    })
    .job("points-hold-expiry", move |stop| {
        repeat(stop, every, p2.clone(), |p| {
            Box::pin(async move { p.expire_holds().await })
        })
    })
    .job("points-expiry-reminders", move |stop| {
        repeat(stop, every, p3.clone(), |p| {
            Box::pin(async move { p.send_reminders().await })
        })
    })
}

type Step = fn(Points) -> futures::future::BoxFuture<'static, anyhow::Result<usize>>;

async fn repeat(
    mut stop: watch::Receiver<bool>,
    every: Duration,
    points: Points,
    step: Step,
) -> anyhow::Result<()> {
    loop {
        // A full batch means more is waiting: go again at once.
        let done = step(points.clone()).await?;
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

impl Points {
    /// Expires the due lots of up to [`BATCH`] members; returns how many.
    pub async fn expire_lots(&self) -> anyhow::Result<usize> {
        let now = clock_now(&self.clock);
        let due: Vec<(String, Uuid)> = sqlx::query_as(
            "SELECT DISTINCT program_id, member_id FROM lots
             WHERE remaining > 0 AND expires_at <= $1 LIMIT $2",
        )
        .bind(now)
        .bind(BATCH)
        .fetch_all(self.db.pool())
        .await?;
        let runs = due.iter().map(|(program, member_id)| {
            self.submit(
                None,
                Command::ExpireDue {
                    program: program.clone(),
                    member_id: *member_id,
                },
            )
        });
        for result in futures::future::join_all(runs).await {
            if let Err(e) = result {
                tracing::warn!(error = %e, "expiring lots failed; the next run tries again");
            }
        }
        Ok(due.len())
    }

    /// Releases up to [`BATCH`] timed-out holds; returns how many.
    pub async fn expire_holds(&self) -> anyhow::Result<usize> {
        let now = clock_now(&self.clock);
        let due: Vec<(String, Uuid)> = sqlx::query_as(
            "SELECT program_id, hold_id FROM holds WHERE status = 1 AND expires_at <= $1 ORDER BY expires_at LIMIT $2",
        )
        .bind(now)
        .bind(BATCH)
        .fetch_all(self.db.pool())
        .await?;
        let runs = due.iter().map(|(program, hold_id)| {
            self.submit(
                None,
                Command::ExpireHold {
                    program: program.clone(),
                    hold_id: *hold_id,
                },
            )
        });
        for result in futures::future::join_all(runs).await {
            match result {
                Ok(_) | Err(crate::error::PointsError::Ledger(_)) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "expiring a hold failed; the next run tries again")
                }
            }
        }
        Ok(due.len())
    }

    /// Sends one PointsExpiring event per member and expiry date for lots
    /// entering their programme's reminder window; returns how many lots.
    pub async fn send_reminders(&self) -> anyhow::Result<usize> {
        let now = clock_now(&self.clock);
        let mut tx = self.db.pool().begin().await?;
        let candidates: Vec<(String, Uuid, Uuid, i64, DateTime<Utc>)> = sqlx::query_as(
            "SELECT program_id, lot_id, member_id, remaining, expires_at FROM lots
             WHERE remaining > 0 AND NOT reminded AND expires_at > $1 AND expires_at <= $1 + interval '366 days'
             ORDER BY expires_at LIMIT $2
             FOR UPDATE SKIP LOCKED",
        )
        .bind(now)
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let mut chosen = Vec::new();
        let mut reminders: BTreeMap<(String, Uuid, DateTime<Utc>), i64> = BTreeMap::new();
        for (program, lot, member, remaining, expires_at) in &candidates {
            let days = self
                .settings
                .get(self.db.pool(), program)
                .await?
                .proto
                .reminder_days;
            if days > 0 && *expires_at <= now + chrono::Duration::days(i64::from(days)) {
                chosen.push(*lot);
                *reminders
                    .entry((program.clone(), *member, *expires_at))
                    .or_default() += remaining;
            }
        }
        if chosen.is_empty() {
            return Ok(0);
        }
        sqlx::query("UPDATE lots SET reminded = true WHERE lot_id = ANY($1)")
            .bind(&chosen)
            .execute(&mut *tx)
            .await?;
        for ((program, member, expires_at), points) in reminders {
            let available = crate::queries::load_balance(&mut tx, &program, member, now)
                .await?
                .map(|(b, _)| b.available)
                .unwrap_or_default();
            let program_id = ProgramId::parse(&program).map_err(|e| anyhow::anyhow!(e))?;
            outbox::enqueue(
                &mut tx,
                SOURCE,
                NewEvent {
                    program: &program_id,
                    member_id: Some(member),
                    occurred_at: now,
                    recorded_at: now,
                    card_version: None,
                    payload: &pb::PointsExpiring {
                        member_id: member.to_string(),
                        points,
                        expires_at: Some(timestamp(expires_at)),
                        available,
                    },
                },
            )
            .await?;
        }
        tx.commit().await?;
        Ok(chosen.len())
    }
}
