//! Use cases of the gRPC API (placeholders until built).

use laurel_proto::tier::v1 as pb;
use laurel_runtime::context::RequestContext;

use crate::{Tiers, error::TierError};

impl Tiers {
    /// `PutBenefit`.
    pub(crate) async fn put_benefit(
        &self,
        _ctx: &RequestContext,
        _request: &pb::PutBenefitRequest,
    ) -> Result<pb::PutBenefitResponse, TierError> {
        Err(TierError::precondition(
            "NOT_BUILT",
            "PutBenefit is not built yet",
        ))
    }

    /// `ListBenefits`.
    pub(crate) async fn list_benefits(
        &self,
        _ctx: &RequestContext,
        _request: &pb::ListBenefitsRequest,
    ) -> Result<pb::ListBenefitsResponse, TierError> {
        Err(TierError::precondition(
            "NOT_BUILT",
            "ListBenefits is not built yet",
        ))
    }

    /// `ListMemberBenefits`.
    pub(crate) async fn list_member_benefits(
        &self,
        _ctx: &RequestContext,
        _request: &pb::ListMemberBenefitsRequest,
    ) -> Result<pb::ListMemberBenefitsResponse, TierError> {
        Err(TierError::precondition(
            "NOT_BUILT",
            "ListMemberBenefits is not built yet",
        ))
    }

    /// `ConsumeBenefit`.
    pub(crate) async fn consume_benefit(
        &self,
        _ctx: &RequestContext,
        _request: &pb::ConsumeBenefitRequest,
    ) -> Result<pb::ConsumeBenefitResponse, TierError> {
        Err(TierError::precondition(
            "NOT_BUILT",
            "ConsumeBenefit is not built yet",
        ))
    }

    /// `GetBenefitUsage`.
    pub(crate) async fn get_benefit_usage(
        &self,
        _ctx: &RequestContext,
        _request: &pb::GetBenefitUsageRequest,
    ) -> Result<pb::GetBenefitUsageResponse, TierError> {
        Err(TierError::precondition(
            "NOT_BUILT",
            "GetBenefitUsage is not built yet",
        ))
    }
}
