//! The tier side of the consumed events (placeholders until built).

use laurel_proto::{member::v1 as member, points::v1 as points};
use laurel_runtime::events::handler::{EventContext, HandlerError};
use sqlx::PgConnection;

use crate::Tiers;

impl Tiers {
    pub(crate) async fn on_member_created(
        &self,
        _tx: &mut PgConnection,
        _event: &EventContext,
        _m: member::MemberCreated,
    ) -> Result<(), HandlerError> {
        Ok(())
    }

    pub(crate) async fn on_activity(
        &self,
        _tx: &mut PgConnection,
        _event: &EventContext,
        _m: member::ActivityRecorded,
    ) -> Result<(), HandlerError> {
        Ok(())
    }

    pub(crate) async fn on_points_moved(
        &self,
        _tx: &mut PgConnection,
        _event: &EventContext,
        _m: points::PointsMoved,
    ) -> Result<(), HandlerError> {
        Ok(())
    }

    pub(crate) async fn on_tiers_merged(
        &self,
        _tx: &mut PgConnection,
        _event: &EventContext,
        _m: &member::MemberMerged,
    ) -> Result<(), HandlerError> {
        Ok(())
    }

    pub(crate) async fn on_tiers_erased(
        &self,
        _tx: &mut PgConnection,
        _event: &EventContext,
        _m: &member::MemberErased,
    ) -> Result<(), HandlerError> {
        Ok(())
    }
}
