//! Thin gRPC handlers: read the request context, call the use case, wrap
//! the answer.

use futures::{StreamExt, TryStreamExt, stream::BoxStream};
use laurel_proto::points::v1::{self as pb, points_service_server::PointsService};
use laurel_runtime::{context::request_context, error::Violations};
use tonic::{Request, Response, Status};

use crate::{Points, error::PointsError, requests};

#[tonic::async_trait]
impl PointsService for Points {
    type ExportMovementsStream = BoxStream<'static, Result<pb::ExportMovementsResponse, Status>>;

    async fn earn(
        &self,
        request: Request<pb::EarnRequest>,
    ) -> Result<Response<pb::EarnResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(self.earn(&ctx, request.get_ref()).await?))
    }

    async fn preview_earn(
        &self,
        request: Request<pb::PreviewEarnRequest>,
    ) -> Result<Response<pb::PreviewEarnResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(
            self.preview_earn(&ctx, request.get_ref()).await?,
        ))
    }

    async fn redeem(
        &self,
        request: Request<pb::RedeemRequest>,
    ) -> Result<Response<pb::RedeemResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(self.redeem(&ctx, request.get_ref()).await?))
    }

    async fn hold(
        &self,
        request: Request<pb::HoldRequest>,
    ) -> Result<Response<pb::HoldResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(self.hold(&ctx, request.get_ref()).await?))
    }

    async fn capture(
        &self,
        request: Request<pb::CaptureRequest>,
    ) -> Result<Response<pb::CaptureResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(self.capture(&ctx, request.get_ref()).await?))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(self.release(&ctx, request.get_ref()).await?))
    }

    async fn reverse(
        &self,
        request: Request<pb::ReverseRequest>,
    ) -> Result<Response<pb::ReverseResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(self.reverse(&ctx, request.get_ref()).await?))
    }

    async fn adjust(
        &self,
        request: Request<pb::AdjustRequest>,
    ) -> Result<Response<pb::AdjustResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(self.adjust(&ctx, request.get_ref()).await?))
    }

    async fn transfer(
        &self,
        request: Request<pb::TransferRequest>,
    ) -> Result<Response<pb::TransferResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(self.transfer(&ctx, request.get_ref()).await?))
    }

    async fn get_balance(
        &self,
        request: Request<pb::GetBalanceRequest>,
    ) -> Result<Response<pb::GetBalanceResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new({
            let mut v = Violations::new();
            let member = requests::member_id(&request.get_ref().member_id, "member_id", &mut v);
            v.finish().map_err(PointsError::from)?;
            pb::GetBalanceResponse {
                balance: Some(self.balance(&ctx.program, member).await?),
            }
        }))
    }

    async fn list_entries(
        &self,
        request: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<pb::ListEntriesResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new({
            let (lines, next_page_token) = self.statement(&ctx.program, request.get_ref()).await?;
            pb::ListEntriesResponse {
                lines,
                next_page_token,
            }
        }))
    }

    async fn export_movements(
        &self,
        request: Request<pb::ExportMovementsRequest>,
    ) -> Result<Response<Self::ExportMovementsStream>, Status> {
        let ctx = request_context(&request)?;
        let batches = Points::export_movements(self, &ctx.program, request.get_ref())?;
        Ok(Response::new(batches.map_err(Status::from).boxed()))
    }

    async fn get_liability(
        &self,
        request: Request<pb::GetLiabilityRequest>,
    ) -> Result<Response<pb::GetLiabilityResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(
            self.liability(&ctx.program, request.get_ref()).await?,
        ))
    }

    async fn get_program_settings(
        &self,
        request: Request<pb::GetProgramSettingsRequest>,
    ) -> Result<Response<pb::GetProgramSettingsResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(pb::GetProgramSettingsResponse {
            settings: Some(self.program_settings(&ctx).await?),
        }))
    }

    async fn update_program_settings(
        &self,
        request: Request<pb::UpdateProgramSettingsRequest>,
    ) -> Result<Response<pb::UpdateProgramSettingsResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(
            self.update_program_settings(&ctx, request.get_ref())
                .await?,
        ))
    }

    async fn publish_earn_rules(
        &self,
        request: Request<pb::PublishEarnRulesRequest>,
    ) -> Result<Response<pb::PublishEarnRulesResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(
            self.publish_rules(&ctx, request.get_ref()).await?,
        ))
    }

    async fn list_earn_rules(
        &self,
        request: Request<pb::ListEarnRulesRequest>,
    ) -> Result<Response<pb::ListEarnRulesResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(
            self.list_rules(&ctx, request.get_ref()).await?,
        ))
    }

    async fn create_reward(
        &self,
        request: Request<pb::CreateRewardRequest>,
    ) -> Result<Response<pb::CreateRewardResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(
            self.create_reward(&ctx, request.get_ref()).await?,
        ))
    }

    async fn get_reward(
        &self,
        request: Request<pb::GetRewardRequest>,
    ) -> Result<Response<pb::GetRewardResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(
            self.get_reward(&ctx, request.get_ref()).await?,
        ))
    }

    async fn list_rewards(
        &self,
        request: Request<pb::ListRewardsRequest>,
    ) -> Result<Response<pb::ListRewardsResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(
            self.list_rewards(&ctx, request.get_ref()).await?,
        ))
    }

    async fn update_reward(
        &self,
        request: Request<pb::UpdateRewardRequest>,
    ) -> Result<Response<pb::UpdateRewardResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(
            self.update_reward(&ctx, request.get_ref()).await?,
        ))
    }

    async fn list_reward_redemptions(
        &self,
        request: Request<pb::ListRewardRedemptionsRequest>,
    ) -> Result<Response<pb::ListRewardRedemptionsResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(
            self.list_reward_redemptions(&ctx, request.get_ref())
                .await?,
        ))
    }

    async fn update_fulfilment(
        &self,
        request: Request<pb::UpdateFulfilmentRequest>,
    ) -> Result<Response<pb::UpdateFulfilmentResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(
            self.update_fulfilment(&ctx, request.get_ref()).await?,
        ))
    }
}
