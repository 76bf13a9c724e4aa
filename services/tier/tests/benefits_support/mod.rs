//! Helpers of the benefits and plans tests: members, ladders, benefits and
//! plans seeded or put, and the events the tier service wrote.

#![allow(dead_code)]

use chrono::{DateTime, Utc};
use laurel_proto::{
    common::v1::{EventEnvelope, Money},
    tier::v1 as pb,
};
use prost::{Message, Name};
use uuid::Uuid;

use laurel_runtime::clock::Clock;

use crate::common::{Stack, req, rid};

/// A member the tier service knows, with `tier` (seeded in its table, so
/// the test does not wait on the enrolment event).
pub async fn seed_member(stack: &Stack, tier: Option<&str>) -> Uuid {
    let member = Uuid::now_v7();
    known(stack, member, tier).await;
    member
}

/// Makes sure the tier service has a row for `member`, with `tier` when
/// given.
pub async fn known(stack: &Stack, member: Uuid, tier: Option<&str>) {
    sqlx::query(
        "INSERT INTO members (program_id, member_id, enrolled_at, tier_code, tier_source)
         VALUES ('default', $1, $2, $3, CASE WHEN $3::text IS NULL THEN NULL ELSE 'earned' END)
         ON CONFLICT (program_id, member_id) DO NOTHING",
    )
    .bind(member)
    .bind(stack.clock.now())
    .bind(tier)
    .execute(&stack.db)
    .await
    .expect("member seeded");
    if let Some(tier) = tier {
        set_tier(stack, member, tier).await;
    }
}

/// Sets the member's tier directly, as a manual assignment for ten years
/// (so a recomputation of the tier, when a subscription starts or ends,
/// keeps it).
pub async fn set_tier(stack: &Stack, member: Uuid, tier: &str) {
    sqlx::query(
        "UPDATE members SET tier_code = $2, tier_source = 'manual', manual_tier = $2,
                manual_until = $3, manual_note = 'seeded by the test'
         WHERE program_id = 'default' AND member_id = $1",
    )
    .bind(member)
    .bind(tier)
    .bind(stack.clock.now() + chrono::Duration::days(3650))
    .execute(&stack.db)
    .await
    .expect("tier set");
}

/// Stores `ladder` as the next version (directly, as published).
pub async fn seed_ladder(stack: &Stack, mut ladder: pb::Ladder) -> i64 {
    let version: i64 = sqlx::query_scalar(
        "SELECT COALESCE(max(version), 0) + 1 FROM ladders WHERE program_id = 'default'",
    )
    .fetch_one(&stack.db)
    .await
    .unwrap();
    ladder.version = version;
    sqlx::query(
        "INSERT INTO ladders (program_id, version, ladder, published_at) VALUES ('default', $1, $2, $3)",
    )
    .bind(version)
    .bind(ladder.encode_to_vec())
    .bind(stack.clock.now())
    .execute(&stack.db)
    .await
    .expect("ladder seeded");
    version
}

/// A ladder whose gold tier gives `grants`.
pub fn ladder_with_gold(grants: Vec<pb::BenefitGrant>, time_zone: &str) -> pb::Ladder {
    let mut ladder = crate::common::simple_ladder();
    ladder.time_zone = time_zone.into();
    ladder
        .tiers
        .iter_mut()
        .find(|t| t.code == "gold")
        .unwrap()
        .benefits = grants;
    ladder
}

pub fn grant(code: &str, quota: i32, period: pb::QuotaPeriod) -> pb::BenefitGrant {
    pb::BenefitGrant {
        benefit_code: code.into(),
        quota,
        period: period as i32,
    }
}

/// An active benefit of `kind`.
pub fn benefit(code: &str, kind: pb::BenefitKind) -> pb::Benefit {
    pb::Benefit {
        code: code.into(),
        name: code.to_uppercase(),
        kind: kind as i32,
        percent_bp: if kind == pb::BenefitKind::PercentDiscount {
            1_000
        } else {
            0
        },
        multiplier_bp: if kind == pb::BenefitKind::PointsMultiplier {
            20_000
        } else {
            0
        },
        active: true,
        ..Default::default()
    }
}

pub async fn put_benefit(stack: &Stack, b: pb::Benefit) -> pb::Benefit {
    stack
        .tier
        .clone()
        .put_benefit(req(pb::PutBenefitRequest {
            request_id: rid(),
            benefit: Some(b),
        }))
        .await
        .expect("benefit put")
        .into_inner()
        .benefit
        .unwrap()
}

/// A monthly EUR plan.
pub fn plan(
    code: &str,
    grants: Vec<pb::BenefitGrant>,
    grace_days: i32,
    reminder_days: i32,
) -> pb::Plan {
    pb::Plan {
        code: code.into(),
        name: code.to_uppercase(),
        price: Some(Money {
            currency_code: "EUR".into(),
            amount_minor: 999,
        }),
        billing_period: pb::BillingPeriod::Monthly as i32,
        benefits: grants,
        tier_floor: String::new(),
        grace_days,
        reminder_days,
        active: true,
    }
}

pub async fn put_plan(stack: &Stack, p: pb::Plan) -> pb::Plan {
    stack
        .tier
        .clone()
        .put_plan(req(pb::PutPlanRequest {
            request_id: rid(),
            plan: Some(p),
        }))
        .await
        .expect("plan put")
        .into_inner()
        .plan
        .unwrap()
}

pub async fn subscribe(stack: &Stack, member: Uuid, plan: &str) -> pb::Subscription {
    stack
        .tier
        .clone()
        .subscribe(req(pb::SubscribeRequest {
            request_id: rid(),
            member_id: member.to_string(),
            plan_code: plan.into(),
            payment_reference: format!("pay-{}", Uuid::now_v7()),
        }))
        .await
        .expect("subscribed")
        .into_inner()
        .subscription
        .unwrap()
}

pub async fn consume(
    stack: &Stack,
    request_id: &str,
    member: Uuid,
    code: &str,
    quantity: i32,
) -> Result<pb::ConsumeBenefitResponse, tonic::Status> {
    stack
        .tier
        .clone()
        .consume_benefit(req(pb::ConsumeBenefitRequest {
            request_id: request_id.into(),
            member_id: member.to_string(),
            benefit_code: code.into(),
            quantity,
            reference: "order-1".into(),
        }))
        .await
        .map(|r| r.into_inner())
}

pub async fn member_benefits(stack: &Stack, member: Uuid) -> Vec<pb::MemberBenefit> {
    stack
        .tier
        .clone()
        .list_member_benefits(req(pb::ListMemberBenefitsRequest {
            member_id: member.to_string(),
        }))
        .await
        .expect("member benefits")
        .into_inner()
        .benefits
}

pub async fn subscriptions(stack: &Stack, member: Uuid) -> Vec<pb::Subscription> {
    stack
        .tier
        .clone()
        .list_subscriptions(req(pb::ListSubscriptionsRequest {
            member_id: member.to_string(),
        }))
        .await
        .expect("subscriptions")
        .into_inner()
        .subscriptions
}

/// The tier events of type `P` the service wrote (outbox order).
pub async fn events<P: Message + Name + Default>(stack: &Stack) -> Vec<P> {
    let rows: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT envelope FROM outbox WHERE event_type = $1 ORDER BY seq")
            .bind(format!("tier.{}", P::NAME))
            .fetch_all(&stack.db)
            .await
            .expect("outbox read");
    rows.iter()
        .map(|bytes| {
            let envelope = EventEnvelope::decode(bytes.as_slice()).unwrap();
            envelope.payload.unwrap().to_msg::<P>().unwrap()
        })
        .collect()
}

/// Waits until `count` tier events of type `P` about `subscription` exist.
pub async fn wait_events<P, F>(stack: &Stack, what: &str, count: usize, pick: F) -> Vec<P>
where
    P: Message + Name + Default + Clone,
    F: Fn(&P) -> bool,
{
    crate::common::eventually(std::time::Duration::from_secs(10), what, || async {
        let found: Vec<P> = events::<P>(stack)
            .await
            .into_iter()
            .filter(|e| pick(e))
            .collect();
        (found.len() >= count).then_some(found)
    })
    .await
}

/// The subscription named in some facts.
pub fn sub_of(facts: &Option<pb::SubscriptionFacts>) -> pb::Subscription {
    facts.as_ref().unwrap().subscription.clone().unwrap()
}

pub fn time(t: &Option<prost_types::Timestamp>) -> DateTime<Utc> {
    let t = t.as_ref().expect("a time");
    DateTime::from_timestamp(t.seconds, t.nanos as u32).unwrap()
}
