//! Reward redemptions after the fact: listing them, and recording their
//! fulfilment (a cancellation gives the points and the stock back).

use chrono::DateTime;
use laurel_proto::points::v1 as pb;
use laurel_runtime::{
    context::RequestContext,
    error::Violations,
    events::outbox::{self, NewEvent},
    idempotency::{Begun, Plain, RequestKey},
    pagination,
};
use uuid::Uuid;

use super::{model::Fulfilment, rules, store};
use crate::{
    Points, clock_now,
    error::PointsError,
    requests as check,
    writer::{Command, SOURCE},
};

impl Points {
    /// ListRewardRedemptions: newest first, of a reward and/or a member
    /// (neither: every redemption of the programme).
    pub async fn list_reward_redemptions(
        &self,
        ctx: &RequestContext,
        req: &pb::ListRewardRedemptionsRequest,
    ) -> Result<pb::ListRewardRedemptionsResponse, PointsError> {
        let mut v = Violations::new();
        let reward = (!req.reward_id.is_empty())
            .then(|| check::uuid(&req.reward_id, "reward_id", "reward", &mut v));
        let member = (!req.member_id.is_empty())
            .then(|| check::member_id(&req.member_id, "member_id", &mut v));
        let (limit, before) = pagination::page(
            req.page_size,
            &req.page_token,
            |p| {
                let (micros, id) = p.split_once('|')?;
                Some((
                    DateTime::from_timestamp_micros(micros.parse().ok()?)?,
                    Uuid::parse_str(id).ok()?,
                ))
            },
            &mut v,
        );
        v.finish()?;
        let mut conn = self.db.acquire().await?;
        let mut page = store::list_redemptions(
            &mut conn,
            ctx.program.as_str(),
            reward,
            member,
            before,
            limit + 1,
        )
        .await?;
        let next = if page.len() as i64 > limit {
            page.truncate(limit as usize);
            let last = page.last().expect("a full page");
            pagination::encode_token(&format!(
                "{}|{}",
                last.created_at.timestamp_micros(),
                last.redemption_id
            ))
        } else {
            String::new()
        };
        Ok(pb::ListRewardRedemptionsResponse {
            redemptions: page.iter().map(|r| r.to_proto()).collect(),
            next_page_token: next,
        })
    }

    /// UpdateFulfilment: a pending redemption becomes fulfilled or
    /// cancelled; cancelling returns the units to stock and the points to
    /// the lots they came from.
    pub async fn update_fulfilment(
        &self,
        ctx: &RequestContext,
        req: &pb::UpdateFulfilmentRequest,
    ) -> Result<pb::UpdateFulfilmentResponse, PointsError> {
        let mut v = Violations::new();
        check::request_id(&req.request_id, &mut v);
        let id = check::uuid(&req.redemption_id, "redemption_id", "redemption", &mut v);
        let to = match pb::FulfilmentStatus::try_from(req.fulfilment_status) {
            Ok(pb::FulfilmentStatus::Fulfilled) => Fulfilment::Fulfilled,
            Ok(pb::FulfilmentStatus::Cancelled) => Fulfilment::Cancelled,
            _ => {
                v.add(
                    "fulfilment_status",
                    "FULFILMENT_STATUS_FULFILLED or FULFILMENT_STATUS_CANCELLED",
                );
                Fulfilment::Pending
            }
        };
        v.finish()?;
        let key = RequestKey::new(ctx, "UpdateFulfilment", &req.request_id);
        let mut fresh = match self.idempotency.begin(&self.db, key, req, Plain).await? {
            Begun::Replay(r) => return Ok(r),
            Begun::Fresh(fresh) => fresh,
        };
        let program = ctx.program.as_str();
        let now = clock_now(&self.clock);
        let redemption = store::lock_redemption(fresh.tx(), program, id)
            .await?
            .ok_or(PointsError::RedemptionNotFound)?;
        rules::transition(redemption.status, to).map_err(PointsError::RedemptionNotPending)?;
        if to == Fulfilment::Cancelled {
            // The reward's lock before the member's account, as redemptions
            // take them.
            store::return_stock(
                fresh.tx(),
                program,
                redemption.reward_id,
                redemption.quantity,
                now,
            )
            .await?;
            // Points given back already by a Reverse call are not given twice.
            if !store::movement_reversed(fresh.tx(), redemption.movement_id).await? {
                let reverse = Command::ReverseRedemption {
                    program: program.to_owned(),
                    movement_id: redemption.movement_id,
                    reason: "reward cancelled".into(),
                };
                self.apply_in(fresh.tx(), reverse).await?;
            }
        }
        let updated = store::set_fulfilment(fresh.tx(), program, id, to, now).await?;
        let proto = updated.to_proto();
        outbox::enqueue(
            fresh.tx(),
            SOURCE,
            NewEvent {
                program: &ctx.program,
                member_id: Some(updated.member_id),
                occurred_at: now,
                recorded_at: now,
                card_version: None,
                payload: &pb::RewardFulfilmentChanged {
                    redemption: Some(proto.clone()),
                },
            },
        )
        .await?;
        let response = pb::UpdateFulfilmentResponse {
            redemption: Some(proto),
        };
        fresh.commit(&response, Some(updated.member_id)).await?;
        Ok(response)
    }
}
