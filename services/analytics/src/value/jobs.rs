//! The scoring job: for every programme with settings, an RFM run each
//! day, and a value scoring each day and whenever a newer RFM run or model
//! fit exists than the last scoring.

use std::time::Duration;

use laurel_runtime::app::App;
use tokio::sync::watch;
use uuid::Uuid;

use crate::{Analytics, error::AnalyticsError};

/// Schedules the scoring job.
pub fn schedule(app: App, a: Analytics, interval: Duration) -> App {
    app.job("analytics-scoring", move |stop| {
        let a = a.clone();
        async move { repeat(stop, interval, || a.score_due()).await }
    })
}

async fn repeat<F, Fut>(
    mut stop: watch::Receiver<bool>,
    every: Duration,
    step: F,
) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), AnalyticsError>>,
{
    loop {
        if let Err(error) = step().await {
            tracing::warn!(%error, "analytics scoring failed; the next run tries again");
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

impl Analytics {
    /// Runs what is due in every programme.
    pub(crate) async fn score_due(&self) -> Result<(), AnalyticsError> {
        let programs: Vec<(String, String)> = {
            let mut conn = self.db.acquire().await?;
            sqlx::query_as("SELECT program_id, time_zone FROM settings")
                .fetch_all(&mut *conn)
                .await?
        };
        for (program, zone) in programs {
            let Ok(tz) = zone.parse::<chrono_tz::Tz>() else {
                continue;
            };
            let today = self.now().with_timezone(&tz).date_naive();
            // Ids are UUIDv7: their order is the order things happened in,
            // whatever the service clock says.
            let (rfm, model, scored) = {
                let mut conn = self.db.acquire().await?;
                let rfm: Option<(chrono::NaiveDate, Uuid)> = sqlx::query_as(
                    "SELECT as_of, run_id FROM rfm_runs WHERE program_id = $1
                     ORDER BY run_id DESC LIMIT 1",
                )
                .bind(&program)
                .fetch_optional(&mut *conn)
                .await?;
                let model: Option<Uuid> = sqlx::query_scalar(
                    "SELECT model_id FROM clv_models WHERE program_id = $1
                     ORDER BY model_id DESC LIMIT 1",
                )
                .bind(&program)
                .fetch_optional(&mut *conn)
                .await?;
                let scored: Option<(chrono::NaiveDate, Uuid)> = sqlx::query_as(
                    "SELECT as_of, run_id FROM value_runs WHERE program_id = $1
                     ORDER BY run_id DESC LIMIT 1",
                )
                .bind(&program)
                .fetch_optional(&mut *conn)
                .await?;
                (rfm, model, scored)
            };
            let rfm_today = rfm.is_some_and(|r| r.0 >= today);
            let (rfm_at, model_at) = (rfm.map(|r| r.1), model);
            let scored_at = scored;
            if !rfm_today {
                // Nothing to score (no active member) is not a failure.
                if let Err(error) = self.run_rfm(&program, "schedule").await {
                    tracing::warn!(%error, program, "scheduled RFM run failed");
                }
            }
            let due = match scored_at {
                None => true,
                Some((as_of, at)) => {
                    as_of < today
                        || rfm_at.is_some_and(|r| r > at)
                        || model_at.is_some_and(|m| m > at)
                }
            };
            if due && let Err(error) = self.score_values(&program).await {
                tracing::warn!(%error, program, "value scoring failed");
            }
            if let Err(error) = self.recommendations_due(&program).await {
                tracing::warn!(%error, program, "recommendation build failed");
            }
        }
        Ok(())
    }
}

impl Analytics {
    /// Builds the programme's recommendations when the last build is older
    /// than the interval (and the order lines changed since).
    async fn recommendations_due(&self, program: &str) -> Result<(), AnalyticsError> {
        let last: Option<chrono::DateTime<chrono::Utc>> = {
            let mut conn = self.db.acquire().await?;
            sqlx::query_scalar(
                "SELECT max(built_at) FROM recommendation_models WHERE program_id = $1",
            )
            .bind(program)
            .fetch_one(&mut *conn)
            .await?
        };
        let interval = chrono::Duration::from_std(self.config.recommend_interval)
            .unwrap_or(chrono::Duration::MAX);
        if last.is_some_and(|at| self.now() - at < interval) {
            return Ok(());
        }
        for level in [
            crate::recommend::Level::Sku,
            crate::recommend::Level::Category,
        ] {
            self.build_recommendations(program, level).await?;
        }
        Ok(())
    }
}
