//! The paid-plan side of the consumed events (placeholders until built).

use laurel_proto::member::v1 as member;
use laurel_runtime::events::handler::{EventContext, HandlerError};
use sqlx::PgConnection;

use crate::Tiers;

impl Tiers {
    pub(crate) async fn on_plans_merged(
        &self,
        _tx: &mut PgConnection,
        _event: &EventContext,
        _m: &member::MemberMerged,
    ) -> Result<(), HandlerError> {
        Ok(())
    }

    pub(crate) async fn on_plans_erased(
        &self,
        _tx: &mut PgConnection,
        _event: &EventContext,
        _m: &member::MemberErased,
    ) -> Result<(), HandlerError> {
        Ok(())
    }
}
