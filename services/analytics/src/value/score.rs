//! Scoring every member's value: the facts of all active members loaded in
//! one query, assessed ([`super::assess`]), stored as the latest figures,
//! and a `LifecycleChanged` for each member whose stage moved, all in one
//! transaction. Runs on a schedule (daily, and after a new RFM run or
//! model fit) and serves single members live.

use std::{fmt::Write as _, time::Instant};

use chrono::NaiveDate;
use laurel_proto::analytics::v1 as pb;
use laurel_runtime::{
    context::ProgramId,
    events::outbox::{self, NewEvent, PackedEvent},
};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::assess::{self, Assessment, FREQUENCY_WINDOW_DAYS, MemberFacts, stage_pb};
use crate::{
    Analytics, SOURCE,
    clv::{Model, latest_model},
    error::AnalyticsError,
    rfm::{epoch_day, stored::RunScores},
    settings::Settings,
};

fn count(x: i64) -> u32 {
    u32::try_from(x.max(0)).unwrap_or(u32::MAX)
}

/// The facts of the programme's active members (or of one member), with
/// each member's segment in `scores` (the stored RFM run).
pub async fn load(
    conn: &mut PgConnection,
    program: &str,
    s: &Settings,
    as_of: NaiveDate,
    member: Option<Uuid>,
    scores: Option<&RunScores>,
) -> Result<Vec<MemberFacts>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT m.member_id, sp.first_day, sp.last_day, sp.purchase_days, sp.orders,
                sp.gross_minor, sp.refunded_minor, sp.refunds, sp.first_day_spend_minor AS first_spend,
                m.negative_feedback, m.complaints, w.recent, w.prior, w.win_orders, w.win_spend,
                v.stage, v.probability_alive
         FROM members m
         LEFT JOIN member_spend sp ON sp.program_id = m.program_id AND sp.member_id = m.member_id
              AND sp.currency_code = $2
         LEFT JOIN (
             SELECT member_id,
                    sum(orders) FILTER (WHERE day > $3 - $6::int)::bigint AS recent,
                    sum(orders) FILTER (WHERE day <= $3 - $6::int AND day > $3 - 2 * $6::int)::bigint AS prior,
                    sum(orders) FILTER (WHERE day > $3 - $4::int)::bigint AS win_orders,
                    sum(spend_minor) FILTER (WHERE day > $3 - $4::int)::bigint AS win_spend
             FROM member_days
             WHERE program_id = $1 AND currency_code = $2 AND day <= $3
               AND day > $3 - greatest($4::int, 2 * $6::int)
               AND ($5::uuid IS NULL OR member_id = $5)
             GROUP BY member_id
         ) w ON w.member_id = m.member_id
         LEFT JOIN member_values v ON v.program_id = m.program_id AND v.member_id = m.member_id
         WHERE m.program_id = $1 AND m.status = 'active' AND ($5::uuid IS NULL OR m.member_id = $5)",
    )
    .bind(program)
    .bind(&s.currency)
    .bind(as_of)
    .bind(s.active_days)
    .bind(member)
    .bind(FREQUENCY_WINDOW_DAYS)
    .fetch_all(conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let member: Uuid = row.try_get(0)?;
        out.push(MemberFacts {
            member,
            first_day: row.try_get::<Option<NaiveDate>, _>(1)?.map(epoch_day),
            last_day: row.try_get::<Option<NaiveDate>, _>(2)?.map(epoch_day),
            purchase_days: count(row.try_get::<Option<i64>, _>(3)?.unwrap_or(0)),
            orders: count(row.try_get::<Option<i64>, _>(4)?.unwrap_or(0)),
            gross_minor: row.try_get::<Option<i64>, _>(5)?.unwrap_or(0),
            refunded_minor: row.try_get::<Option<i64>, _>(6)?.unwrap_or(0),
            refunds: count(row.try_get::<Option<i64>, _>(7)?.unwrap_or(0)),
            first_day_spend: row.try_get::<Option<i64>, _>(8)?.unwrap_or(0),
            negative_feedback: count(row.try_get(9)?),
            complaints: count(row.try_get(10)?),
            recent_orders: count(row.try_get::<Option<i64>, _>(11)?.unwrap_or(0)),
            prior_orders: count(row.try_get::<Option<i64>, _>(12)?.unwrap_or(0)),
            window_orders: row.try_get::<Option<i64>, _>(13)?.unwrap_or(0).max(0) as u64,
            window_spend: row.try_get::<Option<i64>, _>(14)?.unwrap_or(0),
            previous_stage: row.try_get(15)?,
            previous_alive: row.try_get::<Option<f64>, _>(16)?.filter(|p| *p >= 0.0),
            segment: scores
                .and_then(|r| r.get(member))
                .map(|r| i16::from(r.segment)),
        });
    }
    Ok(out)
}

/// The `LifecycleChanged` of a member whose stage moved.
fn changed(f: &MemberFacts, a: &Assessment) -> Option<pb::LifecycleChanged> {
    let stage = stage_pb(a.stage);
    (f.previous_stage != Some(stage)).then(|| pb::LifecycleChanged {
        member_id: f.member.to_string(),
        previous_stage: i32::from(f.previous_stage.unwrap_or(0)),
        stage: i32::from(stage),
        recency_days: i64::from(a.recency_days),
        rhythm_days: a.rhythm_days,
        probability_alive: a.alive.unwrap_or(-1.0),
        churn_score: i32::from(a.churn.score),
    })
}

/// A member's churn components as stored (and sent).
pub fn components(a: &Assessment) -> [f64; 6] {
    let c = &a.churn.components;
    [
        c.p_alive_drop,
        c.overdue,
        c.frequency_decline,
        c.refunds,
        c.negative_feedback,
        c.complaints,
    ]
}

impl Analytics {
    /// Scores every active member of `program` now; `None` when another
    /// scoring holds the programme.
    pub(crate) async fn score_values(&self, program: &str) -> Result<Option<i64>, AnalyticsError> {
        let started = Instant::now();
        let mut tx = self.db.begin().await?;
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext('values:' || $1))")
                .bind(program)
                .fetch_one(&mut *tx)
                .await?;
        if !locked {
            return Ok(None);
        }
        let s = self.required_settings(&mut tx, program).await?;
        let now = self.now();
        let day = s.day(now);
        let model = latest_model(&mut tx, program, &s).await?;
        let scores = self.rfm_scores(&mut tx, program).await?;
        let facts = load(&mut tx, program, &s, day, None, scores.as_deref()).await?;
        drop(scores);
        let assessed = assess::assess_all(
            &facts,
            &s,
            model.as_ref(),
            epoch_day(day),
            assess::DEFAULT_HORIZON_WEEKS,
        )
        .map_err(AnalyticsError::Internal)?;
        sqlx::query("DELETE FROM member_values WHERE program_id = $1")
            .bind(program)
            .execute(&mut *tx)
            .await?;
        copy_values(&mut tx, program, &facts, &assessed, model.as_ref(), now).await?;
        let program_id = ProgramId::parse(program)
            .map_err(|e| AnalyticsError::Internal(anyhow::anyhow!("{e}")))?;
        let mut changes = 0i64;
        for chunk in facts.iter().zip(&assessed).collect::<Vec<_>>().chunks(1000) {
            let mut events = Vec::new();
            for (f, a) in chunk {
                if let Some(event) = changed(f, a) {
                    events.push(PackedEvent::pack(
                        SOURCE,
                        NewEvent {
                            program: &program_id,
                            member_id: Some(f.member),
                            occurred_at: now,
                            recorded_at: now,
                            card_version: None,
                            payload: &event,
                        },
                    )?);
                }
            }
            changes += events.len() as i64;
            outbox::enqueue_many(&mut tx, SOURCE, &events).await?;
        }
        sqlx::query(
            "INSERT INTO value_runs (program_id, run_id, as_of, members, changed, model_id,
                duration_ms, scored_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(program)
        .bind(Uuid::now_v7())
        .bind(day)
        .bind(facts.len() as i64)
        .bind(changes)
        .bind(model.as_ref().map(|m| m.id))
        .bind(started.elapsed().as_millis() as i64)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(changes))
    }

    /// One member's value now, live from the facts.
    pub(crate) async fn member_value(
        &self,
        conn: &mut PgConnection,
        program: &str,
        member: Uuid,
        horizon_weeks: u32,
    ) -> Result<(MemberFacts, Assessment, Option<Model>), AnalyticsError> {
        let s = self.required_settings(conn, program).await?;
        let day = s.day(self.now());
        let model = latest_model(conn, program, &s).await?;
        let scores = self.rfm_scores(conn, program).await?;
        let mut facts = load(conn, program, &s, day, Some(member), scores.as_deref()).await?;
        let f = facts.pop().ok_or(AnalyticsError::MemberNotFound)?;
        let a = assess::assess_all(
            std::slice::from_ref(&f),
            &s,
            model.as_ref(),
            epoch_day(day),
            horizon_weeks,
        )
        .map_err(AnalyticsError::Internal)?
        .pop()
        .ok_or(AnalyticsError::MemberNotFound)?;
        Ok((f, a, model))
    }
}

async fn copy_values(
    tx: &mut PgConnection,
    program: &str,
    facts: &[MemberFacts],
    assessed: &[Assessment],
    model: Option<&Model>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), sqlx::Error> {
    let mut copy = tx
        .copy_in_raw(
            "COPY member_values (program_id, member_id, stage, rhythm_days, recency_days,
                probability_alive, expected_purchases, predictive_clv_minor, historical_clv_minor,
                churn_score, churn_components, value_at_risk_minor, model_id, scored_at) FROM STDIN",
        )
        .await?;
    let model = model.map_or_else(|| "\\N".to_owned(), |m| m.id.to_string());
    let now = now.to_rfc3339();
    let mut buf = String::with_capacity(1 << 20);
    for (f, a) in facts.iter().zip(assessed) {
        let c = components(a);
        let _ = writeln!(
            buf,
            "{program}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{{{},{},{},{},{},{}}}\t{}\t{model}\t{now}",
            f.member,
            stage_pb(a.stage),
            a.rhythm_days,
            a.recency_days,
            a.alive.unwrap_or(-1.0),
            a.expected_purchases,
            a.predictive_clv,
            a.historical_clv,
            a.churn.score,
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            c[5],
            a.value_at_risk,
        );
        if buf.len() > (1 << 20) - 512 {
            copy.send(buf.as_bytes()).await?;
            buf.clear();
        }
    }
    if !buf.is_empty() {
        copy.send(buf.as_bytes()).await?;
    }
    copy.finish().await?;
    Ok(())
}
