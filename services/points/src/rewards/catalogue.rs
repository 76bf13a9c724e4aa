//! Creating, reading, listing and changing rewards.

use laurel_proto::points::v1 as pb;
use laurel_runtime::{
    context::RequestContext,
    error::Violations,
    idempotency::{Begun, Plain, RequestKey},
    pagination,
};
use uuid::Uuid;

use super::{store, validate};
use crate::{Points, clock_now, error::PointsError, requests as check};

impl Points {
    /// CreateReward.
    pub async fn create_reward(
        &self,
        ctx: &RequestContext,
        req: &pb::CreateRewardRequest,
    ) -> Result<pb::CreateRewardResponse, PointsError> {
        let mut v = Violations::new();
        check::request_id(&req.request_id, &mut v);
        let terms = validate::new_reward(req.reward.as_ref(), &mut v);
        v.finish()?;
        let terms = terms.expect("no violations");
        let key = RequestKey::new(ctx, "CreateReward", &req.request_id);
        match self.idempotency.begin(&self.db, key, req, Plain).await? {
            Begun::Replay(r) => Ok(r),
            Begun::Fresh(mut fresh) => {
                let reward = store::insert(
                    fresh.tx(),
                    ctx.program.as_str(),
                    Uuid::now_v7(),
                    &terms,
                    clock_now(&self.clock),
                )
                .await?;
                let response = pb::CreateRewardResponse {
                    reward: Some(reward.to_proto()),
                };
                fresh.commit(&response, None).await?;
                Ok(response)
            }
        }
    }

    /// GetReward.
    pub async fn get_reward(
        &self,
        ctx: &RequestContext,
        req: &pb::GetRewardRequest,
    ) -> Result<pb::GetRewardResponse, PointsError> {
        let mut v = Violations::new();
        let id = check::uuid(&req.reward_id, "reward_id", "reward", &mut v);
        v.finish()?;
        let mut conn = self.db.acquire().await?;
        let reward = store::get(&mut conn, ctx.program.as_str(), id)
            .await?
            .ok_or(PointsError::RewardNotFound)?;
        Ok(pb::GetRewardResponse {
            reward: Some(reward.to_proto()),
        })
    }

    /// ListRewards: oldest first; `redeemable_only` keeps those active, in
    /// their window now and in stock.
    pub async fn list_rewards(
        &self,
        ctx: &RequestContext,
        req: &pb::ListRewardsRequest,
    ) -> Result<pb::ListRewardsResponse, PointsError> {
        let mut v = Violations::new();
        let (limit, after) = pagination::page(
            req.page_size,
            &req.page_token,
            |p| Uuid::parse_str(p).ok(),
            &mut v,
        );
        v.finish()?;
        let now = req.redeemable_only.then(|| clock_now(&self.clock));
        let mut conn = self.db.acquire().await?;
        let mut page = store::list(&mut conn, ctx.program.as_str(), after, now, limit + 1).await?;
        let next = if page.len() as i64 > limit {
            page.truncate(limit as usize);
            pagination::encode_token(&page.last().expect("a full page").reward_id.to_string())
        } else {
            String::new()
        };
        Ok(pb::ListRewardsResponse {
            rewards: page.iter().map(|r| r.to_proto()).collect(),
            next_page_token: next,
        })
    }

    /// UpdateReward: changes the fields the mask names; the version goes up.
    pub async fn update_reward(
        &self,
        ctx: &RequestContext,
        req: &pb::UpdateRewardRequest,
    ) -> Result<pb::UpdateRewardResponse, PointsError> {
        let mut v = Violations::new();
        check::request_id(&req.request_id, &mut v);
        let (id, patch) = validate::update(req.reward.as_ref(), req.update_mask.as_ref(), &mut v);
        v.finish()?;
        let key = RequestKey::new(ctx, "UpdateReward", &req.request_id);
        match self.idempotency.begin(&self.db, key, req, Plain).await? {
            Begun::Replay(r) => Ok(r),
            Begun::Fresh(mut fresh) => {
                let program = ctx.program.as_str();
                let stored = store::lock(fresh.tx(), program, id)
                    .await?
                    .ok_or(PointsError::RewardNotFound)?;
                let terms = patch.apply(&stored.terms)?;
                let reward = store::update(fresh.tx(), program, id, &terms, clock_now(&self.clock))
                    .await?
                    .ok_or(PointsError::RewardNotFound)?;
                let response = pb::UpdateRewardResponse {
                    reward: Some(reward.to_proto()),
                };
                fresh.commit(&response, None).await?;
                Ok(response)
            }
        }
    }
}
