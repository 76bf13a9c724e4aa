//! The evaluation job: every enabled rule of every programme with settings
//! is evaluated on its KPI ([`super::evaluate`]); each breach not raised
//! before becomes an alert and an `AlertRaised` event in one transaction.
//! Safe on every replica at once: the unique (rule, period) constraint
//! lets one insert win, and only the winner enqueues the event.

use chrono::{DateTime, Utc};
use laurel_proto::analytics::v1 as pb;
use laurel_runtime::{
    context::ProgramId,
    events::outbox::{self, NewEvent, PackedEvent},
};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    evaluate::{self, Breach},
    rule::{self, Rule},
    store,
};
use crate::{
    Analytics, SOURCE,
    error::AnalyticsError,
    kpi::{
        period::{Window, day_start},
        sql,
    },
    settings::{self, Settings},
};

impl Analytics {
    /// Evaluates every enabled rule now; returns how many alerts were
    /// raised.
    pub async fn evaluate_alert_rules(&self) -> Result<usize, AnalyticsError> {
        let programs: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT program_id FROM alert_rules WHERE enabled")
                .fetch_all(self.db.pool())
                .await?;
        let mut raised = 0;
        for program in programs {
            raised += self.evaluate_program(&program).await?;
        }
        Ok(raised)
    }

    async fn evaluate_program(&self, program: &str) -> Result<usize, AnalyticsError> {
        let mut conn = self.db.pool().acquire().await?;
        let Some(settings) = settings::read(&mut conn, program).await? else {
            return Ok(0);
        };
        let rules = rule::list(&mut conn, program, true).await?;
        let now = self.now();
        let mut raised = 0;
        for rule in rules {
            let breaches = breaches_now(&mut conn, program, &settings, &rule, now).await?;
            if !breaches.is_empty() {
                raised += self
                    .raise(program, &settings, &rule, &breaches, now)
                    .await?;
            }
        }
        Ok(raised)
    }

    /// Stores the breaches not raised before and enqueues their events.
    async fn raise(
        &self,
        program: &str,
        settings: &Settings,
        rule: &Rule,
        breaches: &[Breach],
        now: DateTime<Utc>,
    ) -> Result<usize, AnalyticsError> {
        let program_id = ProgramId::parse(program).map_err(|e| {
            AnalyticsError::Internal(anyhow::anyhow!("stored programme {program:?}: {e}"))
        })?;
        let delivery = if self.config.webhook.is_some() {
            store::Delivery::Pending
        } else {
            store::Delivery::None
        };
        let mut tx = self.db.pool().begin().await?;
        let mut events = Vec::new();
        for breach in breaches {
            let alert = store::Alert {
                alert_id: Uuid::now_v7(),
                rule_id: rule.rule_id.clone(),
                kpi: rule.kpi,
                period_start: day_start(settings.tz, breach.start),
                value: breach.value,
                expected: breach.expected,
                stddev: breach.stddev,
                raised_at: now,
                delivery,
                attempts: 0,
                delivered_at: None,
            };
            if !store::insert(&mut tx, program, &alert).await? {
                continue;
            }
            tracing::info!(program, rule = %rule.rule_id, value = breach.value, "alert raised");
            events.push(PackedEvent::pack(
                SOURCE,
                NewEvent {
                    program: &program_id,
                    member_id: None,
                    occurred_at: now,
                    recorded_at: now,
                    card_version: None,
                    payload: &pb::AlertRaised {
                        alert: Some(alert.to_pb()),
                        evaluated_at: Some(crate::metrics::ts(now)),
                    },
                },
            )?);
        }
        outbox::enqueue_many(&mut tx, SOURCE, &events).await?;
        tx.commit().await?;
        Ok(events.len())
    }
}

/// The breaches of `rule` at `now`: its KPI over the periods it needs,
/// ending with the current one.
async fn breaches_now(
    conn: &mut PgConnection,
    program: &str,
    settings: &Settings,
    rule: &Rule,
    now: DateTime<Utc>,
) -> Result<Vec<Breach>, sqlx::Error> {
    let current = rule.period.start_of(settings.day(now));
    let count = evaluate::periods_needed(rule);
    let Some(first) = rule.period.shift(current, 1 - count) else {
        return Ok(Vec::new());
    };
    let window = Window {
        period: rule.period,
        first,
        count,
    };
    let points = sql::series(conn, program, settings, rule.kpi, window, &rule.filter).await?;
    Ok(evaluate::breaches(rule, sql::shape(rule.kpi), &points))
}
