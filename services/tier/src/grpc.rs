//! Thin gRPC handlers: read the request context, call the use case, wrap
//! the answer.

use laurel_proto::tier::v1::{self as pb, tier_service_server::TierService};
use laurel_runtime::context::request_context;
use tonic::{Request, Response, Status};

use crate::Tiers;

#[tonic::async_trait]
impl TierService for Tiers {
    async fn publish_ladder(
        &self,
        request: Request<pb::PublishLadderRequest>,
    ) -> Result<Response<pb::PublishLadderResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(
            self.publish_ladder(&ctx, request.get_ref()).await?,
        ))
    }

    async fn get_ladder(
        &self,
        request: Request<pb::GetLadderRequest>,
    ) -> Result<Response<pb::GetLadderResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(
            self.get_ladder(&ctx, request.get_ref()).await?,
        ))
    }

    async fn get_reevaluation(
        &self,
        request: Request<pb::GetReevaluationRequest>,
    ) -> Result<Response<pb::GetReevaluationResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(
            self.get_reevaluation(&ctx, request.get_ref()).await?,
        ))
    }

    async fn get_member_tier(
        &self,
        request: Request<pb::GetMemberTierRequest>,
    ) -> Result<Response<pb::GetMemberTierResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(
            self.get_member_tier(&ctx, request.get_ref()).await?,
        ))
    }

    async fn assign_tier(
        &self,
        request: Request<pb::AssignTierRequest>,
    ) -> Result<Response<pb::AssignTierResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(
            self.assign_tier(&ctx, request.get_ref()).await?,
        ))
    }

    async fn list_tier_history(
        &self,
        request: Request<pb::ListTierHistoryRequest>,
    ) -> Result<Response<pb::ListTierHistoryResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(
            self.list_tier_history(&ctx, request.get_ref()).await?,
        ))
    }

    async fn put_benefit(
        &self,
        request: Request<pb::PutBenefitRequest>,
    ) -> Result<Response<pb::PutBenefitResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(
            self.put_benefit(&ctx, request.get_ref()).await?,
        ))
    }

    async fn list_benefits(
        &self,
        request: Request<pb::ListBenefitsRequest>,
    ) -> Result<Response<pb::ListBenefitsResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(
            self.list_benefits(&ctx, request.get_ref()).await?,
        ))
    }

    async fn list_member_benefits(
        &self,
        request: Request<pb::ListMemberBenefitsRequest>,
    ) -> Result<Response<pb::ListMemberBenefitsResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(
            self.list_member_benefits(&ctx, request.get_ref()).await?,
        ))
    }

    async fn consume_benefit(
        &self,
        request: Request<pb::ConsumeBenefitRequest>,
    ) -> Result<Response<pb::ConsumeBenefitResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(
            self.consume_benefit(&ctx, request.get_ref()).await?,
        ))
    }

    async fn get_benefit_usage(
        &self,
        request: Request<pb::GetBenefitUsageRequest>,
    ) -> Result<Response<pb::GetBenefitUsageResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(
            self.get_benefit_usage(&ctx, request.get_ref()).await?,
        ))
    }

    async fn put_plan(
        &self,
        request: Request<pb::PutPlanRequest>,
    ) -> Result<Response<pb::PutPlanResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(self.put_plan(&ctx, request.get_ref()).await?))
    }

    async fn list_plans(
        &self,
        request: Request<pb::ListPlansRequest>,
    ) -> Result<Response<pb::ListPlansResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(
            self.list_plans(&ctx, request.get_ref()).await?,
        ))
    }

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<pb::SubscribeResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(
            self.subscribe(&ctx, request.get_ref()).await?,
        ))
    }

    async fn renew(
        &self,
        request: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(self.renew(&ctx, request.get_ref()).await?))
    }

    async fn cancel(
        &self,
        request: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::CancelResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(self.cancel(&ctx, request.get_ref()).await?))
    }

    async fn list_subscriptions(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(
            self.list_subscriptions(&ctx, request.get_ref()).await?,
        ))
    }
}
