//! Building and storing the neighbours of one programme and level.

use std::{collections::HashMap, time::Instant};

use chrono::NaiveDate;
use futures::TryStreamExt;
use laurel_analytics_models::recommend::{
    CoPurchaseConfig, CoPurchaseModel, OrderLine, ServeConfig, evaluate_hit_rate,
};
use sqlx::Row;
use uuid::Uuid;

use crate::{Analytics, error::AnalyticsError, rfm::epoch_day};

/// What is recommended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    /// SKUs.
    Sku,
    /// Categories.
    Category,
}

impl Level {
    /// As stored.
    pub fn name(self) -> &'static str {
        match self {
            Level::Sku => "sku",
            Level::Category => "category",
        }
    }
}

/// The list length hit rates are measured at.
pub const TOP_N: usize = 10;

/// Members whose held-out day is evaluated: all up to this many lines,
/// then a deterministic share of members (by id) that keeps about this many.
const EVALUATED_LINES: usize = 2_000_000;

/// Encodes each item's neighbours (see the migration).
pub fn encode(model: &CoPurchaseModel) -> Vec<u8> {
    let mut out = Vec::new();
    for item in 0..model.item_count() {
        let n = model.neighbours(item);
        out.extend_from_slice(&(n.len() as u32).to_le_bytes());
        for x in n {
            out.extend_from_slice(&x.item.to_le_bytes());
            out.extend_from_slice(&x.similarity.to_le_bytes());
            out.extend_from_slice(&x.support.to_le_bytes());
        }
    }
    out
}

impl Analytics {
    /// Builds and stores the neighbours of `program` at `level` when its
    /// order lines changed since the last build; returns whether it built.
    pub(crate) async fn build_recommendations(
        &self,
        program: &str,
        level: Level,
    ) -> Result<bool, AnalyticsError> {
        let started = Instant::now();
        let mut conn = self.db.acquire().await?;
        // One build per programme and level at a time across replicas (a
        // session lock: the build spans several statements).
        let key = format!("recommend:{program}:{}", level.name());
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
            .bind(&key)
            .fetch_one(&mut *conn)
            .await?;
        if !locked {
            return Ok(false);
        }
        let built = self.build_locked(&mut conn, program, level, started).await;
        sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
            .bind(&key)
            .execute(&mut *conn)
            .await?;
        built
    }

    async fn build_locked(
        &self,
        conn: &mut sqlx::PgConnection,
        program: &str,
        level: Level,
        started: Instant,
    ) -> Result<bool, AnalyticsError> {
        let lines_now: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM purchase_lines WHERE program_id = $1 AND member_id IS NOT NULL",
        )
        .bind(program)
        .fetch_one(&mut *conn)
        .await?;
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT lines FROM recommendation_models WHERE program_id = $1 AND level = $2
             ORDER BY model_id DESC LIMIT 1",
        )
        .bind(program)
        .bind(level.name())
        .fetch_optional(&mut *conn)
        .await?;
        if lines_now == 0 || last == Some(lines_now) {
            return Ok(false);
        }
        let column = match level {
            Level::Sku => "sku",
            Level::Category => "category",
        };
        let sql = format!(
            "SELECT member_id, day, {column}, category FROM purchase_lines
             WHERE program_id = $1 AND member_id IS NOT NULL AND {column} <> ''"
        );
        let mut rows = sqlx::query(&sql).bind(program).fetch(&mut *conn);
        let mut index: HashMap<String, u32> = HashMap::new();
        let mut items: Vec<String> = Vec::new();
        let mut categories: Vec<String> = Vec::new();
        let mut lines = Vec::new();
        while let Some(row) = rows.try_next().await? {
            let member: Uuid = row.try_get(0)?;
            let day: NaiveDate = row.try_get(1)?;
            let name: String = row.try_get(2)?;
            let item = match index.get(&name) {
                Some(&i) => i,
                None => {
                    let i = items.len() as u32;
                    let category: String = row.try_get(3)?;
                    categories.push(if level == Level::Sku {
                        category
                    } else {
                        String::new()
                    });
                    items.push(name.clone());
                    index.insert(name, i);
                    i
                }
            };
            lines.push(OrderLine {
                member_id: member.as_u128(),
                day: epoch_day(day),
                item,
            });
        }
        drop(rows);
        let item_count = items.len() as u32;
        let config = CoPurchaseConfig::default();
        let built = tokio::task::spawn_blocking(move || {
            let model = CoPurchaseModel::build(&lines, item_count, &config)?;
            // Evaluate on a deterministic share of members when there are
            // many lines: the hit rate is a mean, a large sample gives it.
            let share = (lines.len() / EVALUATED_LINES).max(1) as u128;
            let sample: Vec<OrderLine> = if share == 1 {
                lines
            } else {
                lines
                    .into_iter()
                    .filter(|l| l.member_id % share == 0)
                    .collect()
            };
            let serve = ServeConfig {
                top_n: TOP_N,
                ..ServeConfig::default()
            };
            let rates = evaluate_hit_rate(&sample, item_count, &config, &serve)?;
            Ok::<_, laurel_analytics_models::recommend::RecommendError>((model, rates))
        })
        .await
        .map_err(|e| AnalyticsError::Internal(anyhow::anyhow!("recommendation build: {e}")))?
        .map_err(|e| AnalyticsError::Internal(anyhow::anyhow!("recommendation build: {e}")))?;
        let (model, rates) = built;
        let buyers: Vec<i32> = (0..item_count)
            .map(|i| i32::try_from(model.buyers(i)).unwrap_or(i32::MAX))
            .collect();
        let model_id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO recommendation_models (program_id, level, model_id, built_at, lines, items,
                categories, buyers, neighbours, members_evaluated, hit_rate, popular_hit_rate, top_n)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(program)
        .bind(level.name())
        .bind(model_id)
        .bind(self.now())
        .bind(lines_now)
        .bind(&items)
        .bind(&categories)
        .bind(&buyers)
        .bind(encode(&model))
        .bind(rates.members_evaluated as i64)
        .bind(rates.model_hit_rate())
        .bind(rates.popular_hit_rate())
        .bind(TOP_N as i32)
        .execute(&mut *conn)
        .await?;
        // Older builds of this level are no longer served.
        sqlx::query(
            "DELETE FROM recommendation_models
             WHERE program_id = $1 AND level = $2 AND model_id <> $3",
        )
        .bind(program)
        .bind(level.name())
        .bind(model_id)
        .execute(&mut *conn)
        .await?;
        tracing::info!(
            program,
            level = level.name(),
            items = item_count,
            ms = started.elapsed().as_millis() as u64,
            hit_rate = rates.model_hit_rate(),
            popular = rates.popular_hit_rate(),
            "recommendations built"
        );
        Ok(true)
    }
}
