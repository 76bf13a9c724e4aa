//! Use cases of the gRPC API (placeholders until built).

use laurel_proto::tier::v1 as pb;
use laurel_runtime::context::RequestContext;

use crate::{Tiers, error::TierError};

impl Tiers {
    /// `PublishLadder`.
    pub(crate) async fn publish_ladder(
        &self,
        _ctx: &RequestContext,
        _request: &pb::PublishLadderRequest,
    ) -> Result<pb::PublishLadderResponse, TierError> {
        Err(TierError::precondition(
            "NOT_BUILT",
            "PublishLadder is not built yet",
        ))
    }

    /// `GetLadder`.
    pub(crate) async fn get_ladder(
        &self,
        _ctx: &RequestContext,
        _request: &pb::GetLadderRequest,
    ) -> Result<pb::GetLadderResponse, TierError> {
        Err(TierError::precondition(
            "NOT_BUILT",
            "GetLadder is not built yet",
        ))
    }

    /// `GetReevaluation`.
    pub(crate) async fn get_reevaluation(
        &self,
        _ctx: &RequestContext,
        _request: &pb::GetReevaluationRequest,
    ) -> Result<pb::GetReevaluationResponse, TierError> {
        Err(TierError::precondition(
            "NOT_BUILT",
            "GetReevaluation is not built yet",
        ))
    }
}
