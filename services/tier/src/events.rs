//! What the tier service does with other services' events, each in the
//! consumer's transaction with the inbox row, so it happens once:
//! enrolments start a member's tier, purchases and refunds
//! (member.ActivityRecorded) and earned points (points.PointsMoved) move the
//! qualifying measures and can upgrade at once, merges keep the higher tier
//! and the union of subscriptions, erasure removes what is personal.

use laurel_proto::{member::v1 as member, points::v1 as points};
use laurel_runtime::events::router::Router;

use crate::Tiers;

/// The consumer's routes.
pub fn router(tiers: Tiers) -> Router {
    let (t1, t2, t3, t4, t5) = (
        tiers.clone(),
        tiers.clone(),
        tiers.clone(),
        tiers.clone(),
        tiers,
    );
    Router::new()
        .on(move |tx, event, m: member::MemberCreated| {
            let t = t1.clone();
            Box::pin(async move { t.on_member_created(tx, event, m).await })
        })
        .on(move |tx, event, m: member::ActivityRecorded| {
            let t = t2.clone();
            Box::pin(async move { t.on_activity(tx, event, m).await })
        })
        .on(move |tx, event, m: points::PointsMoved| {
            let t = t3.clone();
            Box::pin(async move { t.on_points_moved(tx, event, m).await })
        })
        .on(move |tx, event, m: member::MemberMerged| {
            let t = t4.clone();
            Box::pin(async move {
                t.on_tiers_merged(tx, event, &m).await?;
                t.on_plans_merged(tx, event, &m).await
            })
        })
        .on(move |tx, event, m: member::MemberErased| {
            let t = t5.clone();
            Box::pin(async move {
                t.on_plans_erased(tx, event, &m).await?;
                t.on_tiers_erased(tx, event, &m).await
            })
        })
}
