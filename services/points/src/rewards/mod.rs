//! The rewards catalogue: rewards with a points price, stock, per-member
//! limits and a validity window. (Being built: every call answers
//! UNIMPLEMENTED until then.)

use laurel_proto::points::v1 as pb;
use laurel_runtime::context::RequestContext;

use crate::{Points, error::PointsError};

fn not_yet() -> PointsError {
    PointsError::Internal(anyhow::anyhow!("the rewards catalogue is not built yet"))
}

impl Points {
    /// CreateReward.
    pub async fn create_reward(
        &self,
        _: &RequestContext,
        _: &pb::CreateRewardRequest,
    ) -> Result<pb::CreateRewardResponse, PointsError> {
        Err(not_yet())
    }
    /// GetReward.
    pub async fn get_reward(
        &self,
        _: &RequestContext,
        _: &pb::GetRewardRequest,
    ) -> Result<pb::GetRewardResponse, PointsError> {
        Err(not_yet())
    }
    /// ListRewards.
    pub async fn list_rewards(
        &self,
        _: &RequestContext,
        _: &pb::ListRewardsRequest,
    ) -> Result<pb::ListRewardsResponse, PointsError> {
        Err(not_yet())
    }
    /// UpdateReward.
    pub async fn update_reward(
        &self,
        _: &RequestContext,
        _: &pb::UpdateRewardRequest,
    ) -> Result<pb::UpdateRewardResponse, PointsError> {
        Err(not_yet())
    }
    /// ListRewardRedemptions.
    pub async fn list_reward_redemptions(
        &self,
        _: &RequestContext,
        _: &pb::ListRewardRedemptionsRequest,
    ) -> Result<pb::ListRewardRedemptionsResponse, PointsError> {
        Err(not_yet())
    }
    /// UpdateFulfilment.
    pub async fn update_fulfilment(
        &self,
        _: &RequestContext,
        _: &pb::UpdateFulfilmentRequest,
    ) -> Result<pb::UpdateFulfilmentResponse, PointsError> {
        Err(not_yet())
    }
    /// Redeem for a reward.
    pub async fn redeem_reward(
        &self,
        _: &RequestContext,
        _: &pb::RedeemRequest,
    ) -> Result<pb::RedeemResponse, PointsError> {
        Err(not_yet())
    }
}
