//! The tier jobs, safe on every replica at once:
//!
//! - reviews: members with something due (a period end, a downgrade at the
//!   end of its grace, a manual assignment ending, a warning to decide) are
//!   claimed with `FOR UPDATE SKIP LOCKED` and moved on in chunks, so each
//!   change happens once;
//! - re-evaluations after a ladder change: the running re-evaluation's row
//!   is claimed with `FOR UPDATE SKIP LOCKED`, the next chunk of members
//!   after its cursor is evaluated with set-based statements (one sum, one
//!   update, one history insert, one outbox insert per chunk), and the
//!   cursor moves in the same transaction, so a restart resumes where the
//!   last chunk committed and no member is counted twice.

use std::{
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    time::Duration,
};

use laurel_proto::tier::v1 as pb;
use laurel_runtime::{app::App, context::ProgramId, events::outbox};
use sqlx::PgConnection;
use tokio::sync::watch;
use uuid::Uuid;

use super::{Loaded, SOURCE, pack_events, store};
use crate::{
    Tiers,
    error::TierError,
    qualification::step::{Change, Warning, ranges, step},
};

/// Members one review transaction takes on.
const REVIEW_BATCH: i64 = 1_000;

static CHUNK: AtomicUsize = AtomicUsize::new(5_000);
static PAUSE_MS: AtomicU64 = AtomicU64::new(0);

/// Sets how many members one re-evaluation transaction takes on (default
/// 5,000) and a pause between chunks (default none), for this process:
/// tests use small chunks to stop a re-evaluation half-way.
pub fn set_reevaluation_pace(chunk: usize, pause: Duration) {
    CHUNK.store(chunk.max(1), Ordering::Relaxed);
    PAUSE_MS.store(pause.as_millis() as u64, Ordering::Relaxed);
}

/// Adds the tier jobs to `app`, each running every `interval`.
pub fn schedule(app: App, tiers: Tiers, interval: Duration) -> App {
    let (t1, t2) = (tiers.clone(), tiers);
    app.job("tier-reviews", move |stop| {
        let t = t1.clone();
        async move {
            repeat(stop, interval, || {
                let t = t.clone();
                // Due members are claimed until none is left inside one run.
                async move { t.review_due().await.map(|_| 0) }
            })
            .await
        }
    })
    .job("tier-reevaluations", move |stop| {
        let t = t2.clone();
        async move {
            repeat(stop, interval, || {
                let t = t.clone();
                async move { t.reevaluate(Some(1)).await }
            })
            .await
        }
    })
}

async fn repeat<F, Fut>(
    mut stop: watch::Receiver<bool>,
    every: Duration,
    step: F,
) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<usize, TierError>>,
{
    loop {
        match step().await {
            // More may be waiting: go on at once, unless asked to stop.
            Ok(done) if done > 0 => {
                if *stop.borrow() {
                    return Ok(());
                }
                continue;
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "tier job failed; the next run tries again"),
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

/// What a chunk did.
struct Chunk {
    changed: i64,
    /// Members whose card changed without a TierChanged (the relay
    /// invalidates the others).
    quiet: Vec<(Uuid, i64)>,
}

impl Tiers {
    /// Moves every member with something due on to now; returns how many.
    pub async fn review_due(&self) -> Result<usize, TierError> {
        let programs: Vec<String> = sqlx::query_scalar("SELECT DISTINCT program_id FROM ladders")
            .fetch_all(self.db.pool())
            .await?;
        let mut total = 0;
        for program in programs {
            loop {
                let now = self.now();
                let mut tx = self.db.begin().await?;
                let Some(ladder) = self.ladder(&mut tx, &program, None).await? else {
                    break;
                };
                let rows = store::lock_due(
                    &mut tx,
                    &program,
                    now,
                    ladder.rules.grace_days as i32,
                    ladder.rules.warning_days as i32,
                    REVIEW_BATCH,
                )
                .await?;
                if rows.is_empty() {
                    break;
                }
                let n = rows.len();
                let chunk = self
                    .evaluate_chunk(
                        &mut tx,
                        &program,
                        &ladder,
                        rows,
                        pb::TierChangeReason::Qualified,
                    )
                    .await?;
                tx.commit().await?;
                self.invalidate_all(&program, &chunk.quiet).await;
                total += n;
                if (n as i64) < REVIEW_BATCH {
                    break;
                }
            }
        }
        Ok(total)
    }

    /// Evaluates chunks of the running re-evaluations until none is left
    /// (or `max_chunks` were done); returns how many members it evaluated.
    pub async fn reevaluate(&self, max_chunks: Option<usize>) -> Result<usize, TierError> {
        let mut total = 0;
        let mut chunks = 0;
        loop {
            if max_chunks.is_some_and(|m| chunks >= m) {
                return Ok(total);
            }
            let now = self.now();
            let mut tx = self.db.begin().await?;
            let claimed: Option<(Uuid, String, i64, Option<Uuid>)> = sqlx::query_as(
                "SELECT id, program_id, ladder_version, cursor FROM reevaluations
                 WHERE state = 'running' ORDER BY started_at LIMIT 1 FOR UPDATE SKIP LOCKED",
            )
            .fetch_optional(&mut *tx)
            .await?;
            let Some((id, program, version, cursor)) = claimed else {
                return Ok(total);
            };
            let ladder = self.ladder(&mut tx, &program, Some(version)).await?;
            let Some(ladder) = ladder.filter(|l| l.rules.version == version) else {
                sqlx::query(
                    "UPDATE reevaluations SET state = 'superseded', updated_at = $2 WHERE id = $1",
                )
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                continue;
            };
            let rows = store::lock_after(
                &mut tx,
                &program,
                cursor,
                CHUNK.load(Ordering::Relaxed) as i64,
            )
            .await?;
            let Some(last) = rows.last().map(|r| r.member) else {
                sqlx::query(
                    "UPDATE reevaluations SET state = 'done', finished_at = $2, updated_at = $2 WHERE id = $1",
                )
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                continue;
            };
            let n = rows.len();
            let chunk = self
                .evaluate_chunk(
                    &mut tx,
                    &program,
                    &ladder,
                    rows,
                    pb::TierChangeReason::LadderChanged,
                )
                .await?;
            sqlx::query(
                "UPDATE reevaluations SET cursor = $2, members_done = members_done + $3,
                    members_changed = members_changed + $4, updated_at = $5
                 WHERE id = $1",
            )
            .bind(id)
            .bind(last)
            .bind(n as i64)
            .bind(chunk.changed)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            self.invalidate_all(&program, &chunk.quiet).await;
            total += n;
            chunks += 1;
            let pause = PAUSE_MS.load(Ordering::Relaxed);
            if pause > 0 {
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }
    }

    async fn invalidate_all(&self, program: &str, members: &[(Uuid, i64)]) {
        let Ok(program) = ProgramId::parse(program) else {
            return;
        };
        for batch in members.chunks(64) {
            futures::future::join_all(
                batch
                    .iter()
                    .map(|(m, v)| self.cards.invalidate(&program, m, *v)),
            )
            .await;
        }
    }

    /// One step for each of `rows` (locked), written with one statement per
    /// table; returns what changed.
    async fn evaluate_chunk(
        &self,
        tx: &mut PgConnection,
        program: &str,
        ladder: &Loaded,
        rows: Vec<store::Stored>,
        cause: pb::TierChangeReason,
    ) -> Result<Chunk, TierError> {
        let now = self.now();
        let rules = &ladder.rules;
        let items: Vec<(Uuid, _)> = rows
            .iter()
            .map(|r| (r.member, ranges(rules, &r.state, now)))
            .collect();
        let sums = store::sums(tx, program, &rules.currency, &items).await?;
        let program_id =
            ProgramId::parse(program).map_err(|e| TierError::Internal(anyhow::anyhow!("{e}")))?;
        // The chunk's plan floors in one statement, so a chunk costs a few
        // statements whatever moves.
        let members: Vec<Uuid> = rows.iter().map(|r| r.member).collect();
        let floors = crate::plans::floors_of(tx, program, &members).await?;
        let mut states = Vec::new();
        let mut changes: Vec<(Uuid, Change)> = Vec::new();
        let mut events = Vec::new();
        let mut quiet = Vec::new();
        for row in &rows {
            let s = sums.get(&row.member).copied().unwrap_or_default();
            let member_floors = floors.get(&row.member).map_or(&[][..], Vec::as_slice);
            let o = step(rules, &row.state, &s, member_floors, now, cause);
            if o.change.is_none() && o.warning.is_none() && o.state.same_but_version(&row.state) {
                continue;
            }
            let version = row.version + 1;
            let loud = o
                .change
                .as_ref()
                .is_some_and(|c| c.previous.as_ref() != Some(&c.tier));
            if !loud {
                quiet.push((row.member, version));
            }
            let member_changes: Vec<Change> = o.change.iter().cloned().collect();
            let member_warnings: Vec<Warning> = o.warning.iter().cloned().collect();
            pack_events(
                &program_id,
                row.member,
                &member_changes,
                &member_warnings,
                rules.version,
                version,
                now,
                &mut events,
            )?;
            states.push((row.member, o.state, version));
            changes.extend(o.change.map(|c| (row.member, c)));
        }
        let writes: Vec<(Uuid, &_, i64)> = states.iter().map(|(m, s, v)| (*m, s, *v)).collect();
        store::save_many(tx, program, &writes, now).await?;
        let recorded: Vec<(Uuid, &Change)> = changes.iter().map(|(m, c)| (*m, c)).collect();
        store::record_many(tx, program, &recorded, rules.version).await?;
        outbox::enqueue_many(tx, SOURCE, &events).await?;
        Ok(Chunk {
            changed: changes
                .iter()
                .filter(|(_, c)| c.previous.as_ref() != Some(&c.tier))
                .count() as i64,
            quiet,
        })
    }
}
