//! Points movements from `points.PointsMoved` (and, for history older than
//! the stream, from the points service's `ExportMovements`): every movement
//! is kept once (for issuance, redemption, expiry, liability and breakage
//! by day), and the member's earned, redeemed and expired totals move with
//! it.

use chrono::{DateTime, Utc};
use laurel_proto::points::v1::{self as ppb, MovementType};
use laurel_runtime::events::handler::{EventContext, HandlerError};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{ensure_member, optional_id, time};
use crate::{
    Analytics,
    settings::{Settings, day_of},
};

/// The kind a movement is kept as, and how it moves the member's totals
/// (earned, redeemed, expired), from its points as the member sees them.
pub fn classify(kind: Option<MovementType>, points: i64) -> (&'static str, [i64; 3]) {
    match kind {
        Some(MovementType::Earn) => ("earn", [points, 0, 0]),
        Some(MovementType::ReverseEarn) => ("reverse_earn", [points, 0, 0]),
        Some(MovementType::Redeem | MovementType::Capture) => ("redeem", [0, -points, 0]),
        Some(MovementType::ReverseRedemption) => ("reverse_redemption", [0, -points, 0]),
        Some(MovementType::Expire) => ("expire", [0, 0, -points]),
        _ => ("other", [0, 0, 0]),
    }
}

impl Analytics {
    pub(crate) async fn on_points_moved(
        &self,
        tx: &mut PgConnection,
        event: &EventContext,
        m: ppb::PointsMoved,
    ) -> Result<(), HandlerError> {
        let Some(movement) = m.movement else {
            return Ok(());
        };
        let program = event.program_id();
        let settings = self.settings(tx, program).await?;
        let fallback = event.occurred_at.unwrap_or_else(|| self.now());
        // The balance after the movement (the member's events arrive in
        // order), for the next best offer.
        let available = m.balance.as_ref().map(|b| b.available);
        let member = optional_id(&movement.member_id)?;
        Self::keep_movement(
            tx,
            program,
            movement,
            available,
            settings.as_ref(),
            fallback,
        )
        .await?;
        match member {
            Some(member) => self.announce_change(member).await,
            None => Ok(()),
        }
    }

    /// Keeps one movement (from a PointsMoved event or the points export),
    /// once: `points_movements` is keyed by movement_id, and the member's
    /// totals move only when the movement is new. `available`, the
    /// member's available points right after it, replaces the kept one
    /// when given and no newer movement set it; `fallback_at` stands in for
    /// a missing business time.
    ///
    /// An associated function rather than a free one so the bootstrap,
    /// outside `facts`, reaches it without an `Analytics` (this module is
    /// private to `facts`).
    pub(crate) async fn keep_movement(
        tx: &mut PgConnection,
        program: &str,
        movement: ppb::Movement,
        available: Option<i64>,
        settings: Option<&Settings>,
        fallback_at: DateTime<Utc>,
    ) -> Result<(), HandlerError> {
        let Ok(movement_id) = Uuid::parse_str(&movement.movement_id) else {
            return Ok(());
        };
        let member = optional_id(&movement.member_id)?;
        let at = time(&movement.occurred_at).unwrap_or(fallback_at);
        let (kind, [earned, redeemed, expired]) = classify(
            MovementType::try_from(movement.r#type).ok(),
            movement.points,
        );
        let new: Option<i32> = sqlx::query_scalar(
            "INSERT INTO points_movements (program_id, movement_id, member_id, kind, points, occurred_at, day)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (program_id, movement_id) DO NOTHING RETURNING 1",
        )
        .bind(program)
        .bind(movement_id)
        .bind(member)
        .bind(kind)
        .bind(movement.points)
        .bind(at)
        .bind(day_of(settings, at))
        .fetch_optional(&mut *tx)
        .await?;
        let (Some(_), Some(member)) = (new, member) else {
            return Ok(());
        };
        ensure_member(tx, program, member, at).await?;
        sqlx::query(
            "UPDATE members SET points_earned = points_earned + $3,
               points_redeemed = points_redeemed + $4, points_expired = points_expired + $5,
               points_available = CASE WHEN newer THEN $6 ELSE points_available END,
               points_available_after = CASE WHEN newer THEN $7 ELSE points_available_after END
             FROM (SELECT $6::bigint IS NOT NULL
                          AND (points_available_after IS NULL OR points_available_after < $7) AS newer
                   FROM members WHERE program_id = $1 AND member_id = $2) AS n
             WHERE program_id = $1 AND member_id = $2",
        )
        .bind(program)
        .bind(member)
        .bind(earned)
        .bind(redeemed)
        .bind(expired)
        .bind(available)
        .bind(movement_id)
        .execute(tx)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn movements_move_the_right_total_with_the_right_sign() {
        assert_eq!(
            classify(Some(MovementType::Earn), 100),
            ("earn", [100, 0, 0])
        );
        assert_eq!(
            classify(Some(MovementType::ReverseEarn), -40),
            ("reverse_earn", [-40, 0, 0])
        );
        assert_eq!(
            classify(Some(MovementType::Redeem), -30),
            ("redeem", [0, 30, 0])
        );
        assert_eq!(
            classify(Some(MovementType::Capture), -5),
            ("redeem", [0, 5, 0])
        );
        assert_eq!(
            classify(Some(MovementType::ReverseRedemption), 30),
            ("reverse_redemption", [0, -30, 0])
        );
        assert_eq!(
            classify(Some(MovementType::Expire), -7),
            ("expire", [0, 0, 7])
        );
        assert_eq!(
            classify(Some(MovementType::Merge), 50),
            ("other", [0, 0, 0])
        );
        assert_eq!(classify(None, 50), ("other", [0, 0, 0]));
    }
}
