//! Use cases of the gRPC API (placeholders until built).

use laurel_proto::tier::v1 as pb;
use laurel_runtime::context::RequestContext;

use crate::{Tiers, error::TierError};

impl Tiers {
    /// `PutPlan`.
    pub(crate) async fn put_plan(
        &self,
        _ctx: &RequestContext,
        _request: &pb::PutPlanRequest,
    ) -> Result<pb::PutPlanResponse, TierError> {
        Err(TierError::precondition(
            "NOT_BUILT",
            "PutPlan is not built yet",
        ))
    }

    /// `ListPlans`.
    pub(crate) async fn list_plans(
        &self,
        _ctx: &RequestContext,
        _request: &pb::ListPlansRequest,
    ) -> Result<pb::ListPlansResponse, TierError> {
        Err(TierError::precondition(
            "NOT_BUILT",
            "ListPlans is not built yet",
        ))
    }

    /// `Subscribe`.
    pub(crate) async fn subscribe(
        &self,
        _ctx: &RequestContext,
        _request: &pb::SubscribeRequest,
    ) -> Result<pb::SubscribeResponse, TierError> {
        Err(TierError::precondition(
            "NOT_BUILT",
            "Subscribe is not built yet",
        ))
    }

    /// `Renew`.
    pub(crate) async fn renew(
        &self,
        _ctx: &RequestContext,
        _request: &pb::RenewRequest,
    ) -> Result<pb::RenewResponse, TierError> {
        Err(TierError::precondition(
            "NOT_BUILT",
            "Renew is not built yet",
        ))
    }

    /// `Cancel`.
    pub(crate) async fn cancel(
        &self,
        _ctx: &RequestContext,
        _request: &pb::CancelRequest,
    ) -> Result<pb::CancelResponse, TierError> {
        Err(TierError::precondition(
            "NOT_BUILT",
            "Cancel is not built yet",
        ))
    }

    /// `ListSubscriptions`.
    pub(crate) async fn list_subscriptions(
        &self,
        _ctx: &RequestContext,
        _request: &pb::ListSubscriptionsRequest,
    ) -> Result<pb::ListSubscriptionsResponse, TierError> {
        Err(TierError::precondition(
            "NOT_BUILT",
            "ListSubscriptions is not built yet",
        ))
    }
}
