//! Redeeming points for a reward: stock, limit and points in one
//! transaction (see the module documentation).

use laurel_proto::points::v1 as pb;
use laurel_runtime::{
    context::RequestContext,
    error::Violations,
    events::outbox::{self, NewEvent},
    idempotency::{Begun, Plain, RequestKey},
};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    model::{Fulfilment, Redemption, Reward},
    rules, store, validate,
};
use crate::{
    Points, clock_now,
    error::PointsError,
    ledger::ops::Spend,
    requests::{self as check, MAX_TEXT},
    writer::{Command, Reply, SOURCE},
};

impl Points {
    /// Redeem for a reward: `quantity` units at the reward's price.
    pub async fn redeem_reward(
        &self,
        ctx: &RequestContext,
        req: &pb::RedeemRequest,
    ) -> Result<pb::RedeemResponse, PointsError> {
        let mut v = Violations::new();
        check::request_id(&req.request_id, &mut v);
        let member = check::member_id(&req.member_id, "member_id", &mut v);
        check::text(&req.reason, "reason", MAX_TEXT, &mut v);
        v.check(
            req.points != 0,
            "points",
            "must be empty for rewards: the reward's price decides",
        );
        let (reward_id, quantity) = match &req.target {
            Some(pb::redeem_request::Target::Reward(choice)) => validate::choice(choice, &mut v),
            _ => {
                v.add("reward", "required");
                (Uuid::nil(), 0)
            }
        };
        v.finish()?;
        let program = ctx.program.as_str();
        self.members.ensure(program, member).await?;
        let key = RequestKey::new(ctx, "Redeem", &req.request_id);
        let mut fresh = match self.idempotency.begin(&self.db, key, req, Plain).await? {
            Begun::Replay(r) => return Ok(r),
            Begun::Fresh(fresh) => fresh,
        };
        let now = clock_now(&self.clock);
        let reward = take(fresh.tx(), program, reward_id, quantity, now).await?;
        let terms = &reward.terms;
        if terms.per_member_limit > 0 {
            let tz = self.settings.get(self.db.pool(), program).await?.tz;
            let taken = store::units_taken(
                fresh.tx(),
                program,
                reward_id,
                member,
                terms.limit_period.bounds(now, tz),
            )
            .await?;
            if !rules::within_limit(terms.per_member_limit, taken, quantity) {
                return Err(PointsError::RewardLimitReached(format!(
                    "at most {} per member {}; {taken} redeemed already",
                    terms.per_member_limit,
                    period_words(terms.limit_period),
                )));
            }
        }
        let points = rules::price_of(terms.points_price, quantity).ok_or_else(|| {
            PointsError::field(
                "reward.quantity",
                "the reward's price times the quantity exceeds 10^12 points",
            )
        })?;
        let spend = Command::Spend {
            op: Spend {
                program: program.to_owned(),
                member_id: member,
                points,
                reason: if req.reason.is_empty() {
                    format!("reward {}", terms.name)
                } else {
                    req.reason.clone()
                },
                reference: reward_id.to_string(),
                order_id: String::new(),
            },
            discount: None,
        };
        // A refusal (too few points, an inactive member) returns here: the
        // transaction is dropped, so the stock taken above goes back.
        let Reply::Redeem(mut response) = self.apply_in(fresh.tx(), spend).await? else {
            return Err(PointsError::Internal(anyhow::anyhow!(
                "the ledger answered a spend with another reply"
            )));
        };
        let movement_id = response
            .movement
            .as_ref()
            .and_then(|m| Uuid::parse_str(&m.movement_id).ok())
            .ok_or_else(|| PointsError::Internal(anyhow::anyhow!("the spend has no movement")))?;
        let redemption = Redemption {
            redemption_id: Uuid::now_v7(),
            reward_id,
            member_id: member,
            quantity,
            points,
            movement_id,
            status: Fulfilment::Pending,
            created_at: now,
            updated_at: now,
        };
        store::insert_redemption(fresh.tx(), program, &redemption).await?;
        let proto = redemption.to_proto();
        outbox::enqueue(
            fresh.tx(),
            SOURCE,
            NewEvent {
                program: &ctx.program,
                member_id: Some(member),
                occurred_at: now,
                recorded_at: now,
                card_version: None,
                payload: &pb::RewardRedeemed {
                    redemption: Some(proto.clone()),
                },
            },
        )
        .await?;
        response.reward_redemption = Some(proto);
        fresh.commit(&response, Some(member)).await?;
        Ok(response)
    }
}

/// Takes `quantity` units of the reward, or says precisely why not.
async fn take(
    tx: &mut PgConnection,
    program: &str,
    reward_id: Uuid,
    quantity: i64,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Reward, PointsError> {
    if let Some(reward) = store::take_stock(tx, program, reward_id, quantity, now).await? {
        return Ok(reward);
    }
    // Refused: read the reward under its lock to say why. It may have
    // changed in between (restocked, activated); then the lock held now
    // makes the second attempt certain.
    let reward = store::lock(tx, program, reward_id)
        .await?
        .ok_or(PointsError::RewardNotFound)?;
    if let Some(why) = rules::unavailable(&reward.terms, quantity, now) {
        return Err(PointsError::RewardUnavailable(why));
    }
    store::take_stock(tx, program, reward_id, quantity, now)
        .await?
        .ok_or_else(|| {
            PointsError::Internal(anyhow::anyhow!(
                "a redeemable reward refused its stock under lock"
            ))
        })
}

fn period_words(period: super::LimitPeriod) -> &'static str {
    match period {
        super::LimitPeriod::Window => "while the reward is valid",
        super::LimitPeriod::Day => "per day",
        super::LimitPeriod::Month => "per month",
        super::LimitPeriod::Quarter => "per quarter",
        super::LimitPeriod::Year => "per year",
    }
}
