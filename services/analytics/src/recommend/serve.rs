//! Serving: the newest build of each programme and level in memory, a
//! member's answer cached for [`ANSWER_TTL`].

use std::{collections::HashMap, sync::Arc, time::Duration};

use laurel_analytics_models::recommend::{
    CoPurchaseConfig, CoPurchaseModel, MemberPurchase, Neighbour, Recommendation,
    RecommendationSource, Reward, ServeConfig, next_best_offers,
};
use laurel_proto::analytics::v1 as pb;
use laurel_runtime::{context::RequestContext, error::Violations};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::{
    build::Level,
    memory::{Lookup, Memory},
};
use crate::{
    Analytics,
    error::AnalyticsError,
    metrics::{member_id, ts},
    rfm::epoch_day,
};

/// A member's most recent lines read for serving.
const HISTORY_LINES: i64 = 500;

/// A stored build, ready to serve.
pub struct Loaded {
    model_id: Uuid,
    model: CoPurchaseModel,
    items: Vec<String>,
    index: HashMap<String, u32>,
    categories: Vec<u32>,
    quality: pb::GetRecommendationQualityResponse,
}

/// Builds by programme and level.
type ModelCache = moka::sync::Cache<(String, Level), Arc<Option<Loaded>>>;
/// Answers by programme, member, level and limit.
type AnswerCache =
    moka::sync::Cache<(String, Uuid, Level, i32), Arc<pb::GetRecommendationsResponse>>;

/// This replica's builds and answers, each kept for the configured time
/// (none when it is zero), and its members' views.
#[derive(Clone)]
pub struct Models {
    models: Option<ModelCache>,
    answers: Option<AnswerCache>,
    pub(crate) memory: Memory,
}

/// Where an answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerFrom {
    /// This member's answer, given lately.
    Cache,
    /// Computed from the members' view in memory.
    Memory,
    /// Computed from the member's rows in Postgres.
    Database,
}

impl AnswerFrom {
    /// As sent in the `laurel-answer-from` response header.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cache => "cache",
            Self::Memory => "memory",
            Self::Database => "database",
        }
    }
}

impl Models {
    /// Caches keeping builds and answers for `ttl`; members' views when
    /// `memory` says so.
    pub fn new(ttl: Duration, memory: Memory) -> Self {
        if ttl.is_zero() {
            return Self {
                models: None,
                answers: None,
                memory,
            };
        }
        Self {
            memory,
            models: Some(
                moka::sync::Cache::builder()
                    .max_capacity(1_000)
                    .time_to_live(ttl)
                    .build(),
            ),
            answers: Some(
                moka::sync::Cache::builder()
                    .max_capacity(200_000)
                    .time_to_live(ttl)
                    .build(),
            ),
        }
    }
}

fn decode(bytes: &[u8], items: usize) -> Option<Vec<Vec<Neighbour>>> {
    let mut out = Vec::with_capacity(items);
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = bytes.get(at..at + n)?;
        at += n;
        Some(s)
    };
    for _ in 0..items {
        let count = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let mut list = Vec::with_capacity(count);
        for _ in 0..count {
            let item = u32::from_le_bytes(take(4)?.try_into().ok()?);
            let similarity = f64::from_le_bytes(take(8)?.try_into().ok()?);
            let support = u32::from_le_bytes(take(4)?.try_into().ok()?);
            list.push(Neighbour {
                item,
                similarity,
                support,
            });
        }
        out.push(list);
    }
    Some(out)
}

async fn load(
    conn: &mut PgConnection,
    program: &str,
    level: Level,
) -> Result<Option<Loaded>, AnalyticsError> {
    let Some(row) = sqlx::query(
        "SELECT model_id, items, categories, buyers, neighbours, members_evaluated, hit_rate,
                popular_hit_rate, top_n, built_at
         FROM recommendation_models WHERE program_id = $1 AND level = $2
         ORDER BY model_id DESC LIMIT 1",
    )
    .bind(program)
    .bind(level.name())
    .fetch_optional(conn)
    .await?
    else {
        return Ok(None);
    };
    let items: Vec<String> = row.try_get("items")?;
    let category_names: Vec<String> = row.try_get("categories")?;
    let buyers: Vec<i32> = row.try_get("buyers")?;
    let bytes: Vec<u8> = row.try_get("neighbours")?;
    let neighbours = decode(&bytes, items.len())
        .ok_or_else(|| AnalyticsError::Internal(anyhow::anyhow!("stored neighbours unreadable")))?;
    let model = CoPurchaseModel::from_parts(
        CoPurchaseConfig::default(),
        neighbours,
        buyers.into_iter().map(|b| b.max(0) as u32).collect(),
    )
    .map_err(|e| AnalyticsError::Internal(anyhow::anyhow!("stored neighbours: {e}")))?;
    let mut category_index: HashMap<&str, u32> = HashMap::new();
    let categories = category_names
        .iter()
        .map(|c| {
            let n = category_index.len() as u32;
            *category_index.entry(c.as_str()).or_insert(n)
        })
        .collect();
    let index = items
        .iter()
        .enumerate()
        .map(|(i, s)| (s.clone(), i as u32))
        .collect();
    Ok(Some(Loaded {
        model_id: row.try_get("model_id")?,
        model,
        items,
        index,
        categories,
        quality: pb::GetRecommendationQualityResponse {
            members: row.try_get("members_evaluated")?,
            hit_rate: row.try_get("hit_rate")?,
            popular_hit_rate: row.try_get("popular_hit_rate")?,
            top_n: row.try_get("top_n")?,
            built_at: Some(ts(row.try_get("built_at")?)),
        },
    }))
}

fn level_of(raw: i32, v: &mut Violations) -> Level {
    match pb::RecommendationLevel::try_from(raw) {
        Ok(pb::RecommendationLevel::Category) => Level::Category,
        Ok(_) => Level::Sku,
        Err(_) => {
            v.add("level", "SKU or CATEGORY");
            Level::Sku
        }
    }
}

impl Analytics {
    async fn model(
        &self,
        program: &str,
        level: Level,
    ) -> Result<Arc<Option<Loaded>>, AnalyticsError> {
        let key = (program.to_owned(), level);
        let cache = self.recommendations.models.as_ref();
        if let Some(m) = cache.and_then(|c| c.get(&key)) {
            return Ok(m);
        }
        let mut conn = self.db.acquire().await?;
        let loaded = Arc::new(load(&mut conn, program, level).await?);
        if let Some(c) = cache {
            c.insert(key, loaded.clone());
        }
        Ok(loaded)
    }

    /// A member's balance and recent items at `level` from Postgres.
    async fn member_from_db(
        &self,
        program: &str,
        member: Uuid,
        level: Level,
        loaded: &Loaded,
    ) -> Result<(i64, Vec<MemberPurchase>), AnalyticsError> {
        let mut conn = self.db.acquire().await?;
        let member_row: Option<(i64,)> = sqlx::query_as(
            "SELECT points_available FROM members
             WHERE program_id = $1 AND member_id = $2 AND status = 'active'",
        )
        .bind(program)
        .bind(member)
        .fetch_optional(&mut *conn)
        .await?;
        let (balance,) = member_row.ok_or(AnalyticsError::MemberNotFound)?;
        let column = level.name();
        let rows = sqlx::query(&format!(
            "SELECT day, {column} FROM purchase_lines
             WHERE program_id = $1 AND member_id = $2 ORDER BY day DESC LIMIT $3"
        ))
        .bind(program)
        .bind(member)
        .bind(HISTORY_LINES)
        .fetch_all(&mut *conn)
        .await?;
        let purchases = rows
            .iter()
            .filter_map(|r| {
                let day: chrono::NaiveDate = r.try_get(0).ok()?;
                let name: String = r.try_get(1).ok()?;
                Some(MemberPurchase {
                    day: epoch_day(day),
                    item: *loaded.index.get(&name)?,
                })
            })
            .collect();
        Ok((balance, purchases))
    }

    /// `GetRecommendations`, and where the answer came from.
    pub(crate) async fn get_recommendations(
        &self,
        ctx: &RequestContext,
        request: &pb::GetRecommendationsRequest,
    ) -> Result<(pb::GetRecommendationsResponse, AnswerFrom), AnalyticsError> {
        let mut v = Violations::new();
        let member = member_id(&request.member_id, &mut v);
        let limit = match request.limit {
            0 => 10,
            l @ 1..=100 => l,
            _ => {
                v.add("limit", "from 1 to 100 (0 for 10)");
                0
            }
        };
        let level = level_of(request.level, &mut v);
        v.finish()?;
        let program = ctx.program.as_str();
        let key = (program.to_owned(), member, level, limit);
        let answers = self.recommendations.answers.as_ref();
        if let Some(answer) = answers.and_then(|c| c.get(&key)) {
            return Ok(((*answer).clone(), AnswerFrom::Cache));
        }
        let loaded = self.model(program, level).await?;
        let loaded = (*loaded).as_ref().ok_or_else(|| {
            AnalyticsError::not_computed("NO_RECOMMENDATIONS", "no order lines to learn from yet")
        })?;
        let memory = &self.recommendations.memory;
        let (balance, purchases, from) =
            match memory.lookup(program, level, loaded.model_id, &member) {
                Lookup::Found(balance, purchases) => (balance, purchases, AnswerFrom::Memory),
                lookup => {
                    if matches!(lookup, Lookup::Load) {
                        self.load_view(program, level, loaded.model_id, &loaded.items);
                    }
                    let (balance, purchases) =
                        self.member_from_db(program, member, level, loaded).await?;
                    (balance, purchases, AnswerFrom::Database)
                }
            };
        let s = self.required_settings_of(program).await?;
        let as_of = epoch_day(s.day(self.now()));
        let serve = ServeConfig {
            top_n: limit as usize,
            ..ServeConfig::default()
        };
        let recommended = loaded
            .model
            .recommend(&purchases, as_of, &serve)
            .map_err(|e| AnalyticsError::Internal(anyhow::anyhow!("{e}")))?;
        let offer = self
            .next_best_offer(program, balance, &recommended, &purchases, loaded)
            .await;
        let answer = pb::GetRecommendationsResponse {
            // Nothing from the member's own co-purchases: the popular list.
            popular_fallback: !recommended
                .iter()
                .any(|r| r.source == RecommendationSource::CoPurchase),
            items: recommended
                .iter()
                .map(|r: &Recommendation| pb::Recommendation {
                    item: loaded
                        .items
                        .get(r.item as usize)
                        .cloned()
                        .unwrap_or_default(),
                    score: r.score,
                })
                .collect(),
            next_best_offer: offer,
        };
        // Only answers that read Postgres are kept: one from memory costs
        // less to compute again than to keep.
        if let Some(c) = answers.filter(|_| from == AnswerFrom::Database) {
            c.insert(key, Arc::new(answer.clone()));
        }
        Ok((answer, from))
    }

    async fn next_best_offer(
        &self,
        program: &str,
        balance: i64,
        recommended: &[Recommendation],
        purchases: &[MemberPurchase],
        loaded: &Loaded,
    ) -> Option<pb::Offer> {
        let catalogue = self.rewards.catalogue(program).await?;
        let rewards: Vec<Reward> = catalogue
            .iter()
            .enumerate()
            .map(|(i, r)| Reward {
                reward_id: i as u64,
                points_cost: r.points_price.max(0),
                item: None,
                category: None,
            })
            .collect();
        let bought: Vec<u32> = purchases.iter().map(|p| p.item).collect();
        let best = next_best_offers(
            balance,
            &rewards,
            recommended,
            &bought,
            &loaded.categories,
            1,
        )
        .ok()?
        .into_iter()
        .next()?;
        let reward = catalogue.get(best.reward_id as usize)?;
        Some(pb::Offer {
            reward_id: reward.reward_id.clone(),
            points_cost: reward.points_price,
            reason: format!(
                "the most valuable reward {} points ({balance} available) afford",
                reward.points_price
            ),
        })
    }

    /// `GetRecommendationQuality`.
    pub(crate) async fn get_recommendation_quality(
        &self,
        ctx: &RequestContext,
        request: &pb::GetRecommendationQualityRequest,
    ) -> Result<pb::GetRecommendationQualityResponse, AnalyticsError> {
        let mut v = Violations::new();
        let level = level_of(request.level, &mut v);
        v.finish()?;
        let loaded = self.model(ctx.program.as_str(), level).await?;
        let loaded = (*loaded).as_ref().ok_or_else(|| {
            AnalyticsError::not_computed("NO_RECOMMENDATIONS", "no order lines to learn from yet")
        })?;
        Ok(loaded.quality)
    }
}
