//! Subscriptions through their life: renewal, cancellation (at period end
//! and now), grace, late renewal, expiry and reminders, with the clock
//! advanced through period ends and the events written.

mod benefits_support;
mod common;

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use laurel_proto::tier::v1 as pb;
use tonic::Code;
use uuid::Uuid;

use benefits_support::*;
use common::{reason, req, rid};

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 10, 12, 0, 0).unwrap()
}

fn on(month: u32, day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, month, day, 12, 0, 0).unwrap()
}

/// A stack at [`start`] with plan "plus" (free shipping, unlimited) and a
/// member.
async fn setup(grace_days: i32, reminder_days: i32) -> (common::Stack, Uuid) {
    let stack = common::spawn_with(common::Options {
        start: Some(start()),
        ..Default::default()
    })
    .await;
    put_benefit(&stack, benefit("ship", pb::BenefitKind::FreeShipping)).await;
    put_plan(
        &stack,
        plan(
            "plus",
            vec![grant("ship", 0, pb::QuotaPeriod::Unspecified)],
            grace_days,
            reminder_days,
        ),
    )
    .await;
    let member = seed_member(&stack, None).await;
    (stack, member)
}

async fn renew(stack: &common::Stack, id: &str) -> Result<pb::Subscription, tonic::Status> {
    stack
        .tier
        .clone()
        .renew(req(pb::RenewRequest {
            request_id: rid(),
            subscription_id: id.into(),
            payment_reference: "pay-renewal".into(),
        }))
        .await
        .map(|r| r.into_inner().subscription.unwrap())
}

async fn cancel(
    stack: &common::Stack,
    id: &str,
    mode: pb::CancelMode,
) -> Result<pb::Subscription, tonic::Status> {
    stack
        .tier
        .clone()
        .cancel(req(pb::CancelRequest {
            request_id: rid(),
            subscription_id: id.into(),
            mode: mode as i32,
            reason: "too expensive".into(),
        }))
        .await
        .map(|r| r.into_inner().subscription.unwrap())
}

/// Waits until the member's subscription `id` has `status`.
async fn wait_status(
    stack: &common::Stack,
    member: Uuid,
    id: &str,
    status: pb::SubscriptionStatus,
) -> pb::Subscription {
    common::eventually(
        Duration::from_secs(10),
        &format!("subscription reaches {status:?}"),
        || async {
            subscriptions(stack, member)
                .await
                .into_iter()
                .find(|s| s.subscription_id == id && s.status == status as i32)
        },
    )
    .await
}

fn has_ship(benefits: &[pb::MemberBenefit]) -> bool {
    benefits.iter().any(|b| {
        b.benefit.as_ref().unwrap().code == "ship" && b.source == pb::BenefitSource::PaidPlan as i32
    })
}

#[tokio::test]
async fn a_renewal_extends_the_period_and_a_cancellation_at_period_end_ends_it_then() {
    let (mut stack, member) = setup(0, 0).await;
    assert!(!has_ship(&member_benefits(&stack, member).await));
    let sub = subscribe(&stack, member, "plus").await;
    assert_eq!(sub.status, pb::SubscriptionStatus::Active as i32);
    assert_eq!(time(&sub.current_period_end), on(2, 10));
    assert_eq!(sub.price.as_ref().unwrap().amount_minor, 999);
    let started = events::<pb::SubscriptionStarted>(&stack).await;
    assert_eq!(started.len(), 1);
    assert_eq!(sub_of(&started[0].facts), sub);
    assert!(has_ship(&member_benefits(&stack, member).await));

    let renewed = renew(&stack, &sub.subscription_id).await.expect("renewed");
    assert_eq!(time(&renewed.current_period_start), on(2, 10));
    assert_eq!(time(&renewed.current_period_end), on(3, 10));
    assert_eq!(renewed.renewals, 1);
    assert_eq!(renewed.payment_reference, "pay-renewal");
    let r = events::<pb::SubscriptionRenewed>(&stack).await;
    assert_eq!(r.len(), 1);
    assert!(!r[0].late);

    let cancelling = cancel(&stack, &sub.subscription_id, pb::CancelMode::AtPeriodEnd)
        .await
        .expect("cancelled at period end");
    assert_eq!(cancelling.status, pb::SubscriptionStatus::Cancelling as i32);
    let again = cancel(&stack, &sub.subscription_id, pb::CancelMode::AtPeriodEnd)
        .await
        .unwrap_err();
    assert_eq!(reason(&again), "SUBSCRIPTION_CANCELLING");
    let c = events::<pb::SubscriptionCancelled>(&stack).await;
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0].mode, c[0].reason.as_str()),
        (pb::CancelMode::AtPeriodEnd as i32, "too expensive")
    );
    // Still running until the period end.
    stack.clock.set(on(3, 10) - chrono::Duration::minutes(1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(has_ship(&member_benefits(&stack, member).await));
    assert!(events::<pb::SubscriptionEnded>(&stack).await.is_empty());

    stack.clock.set(on(3, 10) + chrono::Duration::minutes(1));
    let ended = wait_status(
        &stack,
        member,
        &sub.subscription_id,
        pb::SubscriptionStatus::Cancelled,
    )
    .await;
    assert_eq!(time(&ended.ended_at), on(3, 10));
    let e = events::<pb::SubscriptionEnded>(&stack).await;
    assert_eq!(e.len(), 1);
    assert!(!e[0].expired);
    assert_eq!(time(&e[0].facts.as_ref().unwrap().occurred_at), on(3, 10));
    assert!(!has_ship(&member_benefits(&stack, member).await));
    let late = renew(&stack, &sub.subscription_id).await.unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert_eq!(reason(&late), "SUBSCRIPTION_ENDED");
    stack.stop().await;
}

#[tokio::test]
async fn a_cancellation_now_ends_at_once() {
    let (mut stack, member) = setup(5, 0).await;
    let sub = subscribe(&stack, member, "plus").await;
    stack.advance(chrono::Duration::days(3));
    let cancelled = cancel(&stack, &sub.subscription_id, pb::CancelMode::Now)
        .await
        .expect("cancelled");
    assert_eq!(cancelled.status, pb::SubscriptionStatus::Cancelled as i32);
    assert_eq!(time(&cancelled.ended_at), on(1, 13));
    assert_eq!(
        events::<pb::SubscriptionCancelled>(&stack).await[0].mode,
        pb::CancelMode::Now as i32
    );
    let ended = events::<pb::SubscriptionEnded>(&stack).await;
    assert_eq!(ended.len(), 1);
    assert!(!ended[0].expired);
    assert!(!has_ship(&member_benefits(&stack, member).await));
    assert_eq!(
        reason(&renew(&stack, &sub.subscription_id).await.unwrap_err()),
        "SUBSCRIPTION_ENDED"
    );
    // A new subscription to the plan is taken again.
    subscribe(&stack, member, "plus").await;
    stack.stop().await;
}

#[tokio::test]
async fn a_late_renewal_in_grace_continues_and_an_unrenewed_one_expires_after_grace() {
    let (mut stack, member) = setup(5, 0).await;
    let sub = subscribe(&stack, member, "plus").await;
    stack.clock.set(on(2, 11));
    let grace = wait_status(
        &stack,
        member,
        &sub.subscription_id,
        pb::SubscriptionStatus::InGrace,
    )
    .await;
    assert_eq!(time(&grace.grace_until), on(2, 15));
    assert!(
        has_ship(&member_benefits(&stack, member).await),
        "benefits continue in grace"
    );

    let renewed = renew(&stack, &sub.subscription_id)
        .await
        .expect("late renewal");
    assert_eq!(renewed.status, pb::SubscriptionStatus::Active as i32);
    assert_eq!(time(&renewed.current_period_start), on(2, 10));
    assert_eq!(time(&renewed.current_period_end), on(3, 10));
    assert!(renewed.grace_until.is_none());
    let r = events::<pb::SubscriptionRenewed>(&stack).await;
    assert_eq!(r.len(), 1);
    assert!(r[0].late);

    // Unrenewed this time: grace, then expiry five days after the period.
    stack.clock.set(on(3, 16));
    let expired = wait_status(
        &stack,
        member,
        &sub.subscription_id,
        pb::SubscriptionStatus::Expired,
    )
    .await;
    assert_eq!(time(&expired.ended_at), on(3, 15));
    let e = events::<pb::SubscriptionEnded>(&stack).await;
    assert_eq!(e.len(), 1);
    assert!(e[0].expired);
    assert!(!has_ship(&member_benefits(&stack, member).await));
    assert_eq!(
        reason(&renew(&stack, &sub.subscription_id).await.unwrap_err()),
        "SUBSCRIPTION_ENDED"
    );
    stack.stop().await;
}

#[tokio::test]
async fn without_grace_a_subscription_expires_at_its_period_end() {
    let (mut stack, member) = setup(0, 0).await;
    let sub = subscribe(&stack, member, "plus").await;
    stack.clock.set(on(2, 10) + chrono::Duration::seconds(1));
    let expired = wait_status(
        &stack,
        member,
        &sub.subscription_id,
        pb::SubscriptionStatus::Expired,
    )
    .await;
    assert_eq!(time(&expired.ended_at), on(2, 10));
    let e = events::<pb::SubscriptionEnded>(&stack).await;
    assert_eq!(e.len(), 1);
    assert!(e[0].expired);
    stack.stop().await;
}

#[tokio::test]
async fn renewal_reminders_are_sent_once_per_period_and_not_when_cancelling() {
    let (mut stack, member) = setup(0, 3).await;
    let other = seed_member(&stack, None).await;
    let sub = subscribe(&stack, member, "plus").await;
    let leaving = subscribe(&stack, other, "plus").await;
    cancel(
        &stack,
        &leaving.subscription_id,
        pb::CancelMode::AtPeriodEnd,
    )
    .await
    .unwrap();

    stack.clock.set(on(2, 6));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        events::<pb::SubscriptionRenewalDue>(&stack)
            .await
            .is_empty(),
        "not yet due"
    );

    stack.clock.set(on(2, 8));
    let first =
        wait_events::<pb::SubscriptionRenewalDue, _>(&stack, "a reminder", 1, |_| true).await;
    assert_eq!(sub_of(&first[0].facts).subscription_id, sub.subscription_id);
    stack.advance(chrono::Duration::hours(12));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        events::<pb::SubscriptionRenewalDue>(&stack).await.len(),
        1,
        "once per period"
    );

    renew(&stack, &sub.subscription_id).await.unwrap();
    stack.clock.set(on(3, 8));
    let both =
        wait_events::<pb::SubscriptionRenewalDue, _>(&stack, "a second reminder", 2, |_| true)
            .await;
    assert_eq!(time(&sub_of(&both[1].facts).current_period_end), on(3, 10));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(events::<pb::SubscriptionRenewalDue>(&stack).await.len(), 2);
    stack.stop().await;
}
