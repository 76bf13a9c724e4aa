//! Use cases of the gRPC API (placeholders until built).

use laurel_proto::tier::v1 as pb;
use laurel_runtime::context::RequestContext;

use crate::{Tiers, error::TierError};

impl Tiers {
    /// `GetMemberTier`.
    pub(crate) async fn get_member_tier(
        &self,
        _ctx: &RequestContext,
        _request: &pb::GetMemberTierRequest,
    ) -> Result<pb::GetMemberTierResponse, TierError> {
        Err(TierError::precondition(
            "NOT_BUILT",
            "GetMemberTier is not built yet",
        ))
    }

    /// `AssignTier`.
    pub(crate) async fn assign_tier(
        &self,
        _ctx: &RequestContext,
        _request: &pb::AssignTierRequest,
    ) -> Result<pb::AssignTierResponse, TierError> {
        Err(TierError::precondition(
            "NOT_BUILT",
            "AssignTier is not built yet",
        ))
    }

    /// `ListTierHistory`.
    pub(crate) async fn list_tier_history(
        &self,
        _ctx: &RequestContext,
        _request: &pb::ListTierHistoryRequest,
    ) -> Result<pb::ListTierHistoryResponse, TierError> {
        Err(TierError::precondition(
            "NOT_BUILT",
            "ListTierHistory is not built yet",
        ))
    }
}
