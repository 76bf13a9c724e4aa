//! Time moving a member's tier, with the clock advanced through period
//! ends: a review downgrades after its grace period with a warning before,
//! qualifying again during grace cancels the downgrade, a manual tier
//! expires back to the earned one, and a merge leaves the survivor with the
//! higher tier and both members' facts.

mod common;

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use common::{Stack, eventually, req, rid, simple_ladder, spawn, spawn_with};
use laurel_proto::{common::v1::EventEnvelope, member::v1 as mpb, tier::v1 as pb};
use prost::{Message, Name};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(15);

fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
}

async fn events<T: Message + Name + Default>(stack: &Stack, member: Uuid) -> Vec<T> {
    let rows: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT envelope FROM outbox WHERE member_id = $1 AND event_type = $2 ORDER BY seq",
    )
    .bind(member)
    .bind(format!("tier.{}", T::NAME))
    .fetch_all(&stack.db)
    .await
    .unwrap();
    rows.iter()
        .map(|b| {
            EventEnvelope::decode(b.as_slice())
                .unwrap()
                .payload
                .unwrap()
                .to_msg()
                .unwrap()
        })
        .collect()
}

async fn history(stack: &Stack, member: Uuid) -> Vec<pb::TierHistoryEntry> {
    stack
        .tier
        .clone()
        .list_tier_history(req(pb::ListTierHistoryRequest {
            member_id: member.to_string(),
            page_size: 100,
            page_token: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .entries
}

async fn until_tier<F: Fn(&pb::MemberTier) -> bool>(
    stack: &Stack,
    member: Uuid,
    what: &str,
    check: F,
) -> pb::MemberTier {
    eventually(WAIT, what, || async {
        let t = stack.tier_of(member).await;
        check(&t).then_some(t)
    })
    .await
}

/// Gold from a purchase the day before the clock's start, so the period
/// under review (from the upgrade) holds nothing.
async fn gold_with_grace(start: DateTime<Utc>) -> (Stack, Uuid) {
    let stack = spawn_with(common::Options {
        start: Some(start),
        ..Default::default()
    })
    .await;
    let mut ladder = simple_ladder();
    ladder.grace_days = 10;
    ladder.warning_days = 5;
    stack.publish(ladder).await;
    let m = stack.member().await;
    stack
        .purchase(m, 60_000, start - chrono::Duration::days(1))
        .await;
    let t = stack.wait_for_tier(m, "gold").await;
    assert_eq!(
        t.secured_until.map(|s| s.seconds),
        Some(at(2027, 1, 25, 0).timestamp()),
        "secured until the period end and its grace"
    );
    (stack, m)
}

#[tokio::test]
async fn a_review_downgrades_after_the_grace_period_with_a_warning_before() {
    let (stack, m) = gold_with_grace(at(2026, 1, 15, 12)).await;
    stack.clock.set(at(2027, 1, 15, 1));
    let t = until_tier(&stack, m, "the review decides a downgrade", |t| {
        t.pending_downgrade_tier_code == "silver"
    })
    .await;
    assert_eq!(t.tier_code, "gold", "kept during grace");
    assert_eq!(
        t.pending_downgrade_at.map(|p| p.seconds),
        Some(at(2027, 1, 25, 0).timestamp())
    );
    assert!(
        events::<pb::TierDowngradeWarning>(&stack, m)
            .await
            .is_empty()
    );
    stack.clock.set(at(2027, 1, 21, 0));
    let warning = eventually(WAIT, "a warning five days ahead", || async {
        events::<pb::TierDowngradeWarning>(&stack, m).await.pop()
    })
    .await;
    assert_eq!(
        (warning.tier.as_str(), warning.downgrade_to.as_str()),
        ("gold", "silver")
    );
    assert_eq!(warning.missing[0].spend_minor, 50_000);
    stack.clock.set(at(2027, 1, 25, 1));
    let t = stack.wait_for_tier(m, "silver").await;
    assert_eq!(t.pending_downgrade_tier_code, "");
    let last = events::<pb::TierChanged>(&stack, m).await.pop().unwrap();
    assert_eq!(
        (last.reason.as_str(), last.rank, last.previous_rank),
        ("downgraded", 1, 2)
    );
    assert_eq!(
        last.effective_at.map(|e| e.seconds),
        Some(at(2027, 1, 25, 0).timestamp())
    );
    assert_eq!(events::<pb::TierDowngradeWarning>(&stack, m).await.len(), 1);
    let h = history(&stack, m).await;
    assert_eq!(h[0].reason, pb::TierChangeReason::Downgraded as i32);
}

#[tokio::test]
async fn qualifying_again_during_grace_cancels_the_downgrade() {
    let (stack, m) = gold_with_grace(at(2026, 1, 15, 12)).await;
    stack.clock.set(at(2027, 1, 15, 1));
    until_tier(&stack, m, "the review decides a downgrade", |t| {
        t.pending_downgrade_tier_code == "silver"
    })
    .await;
    stack.clock.set(at(2027, 1, 18, 9));
    stack.purchase(m, 55_000, at(2027, 1, 18, 9)).await;
    let t = until_tier(&stack, m, "the downgrade is cancelled", |t| {
        t.pending_downgrade_tier_code.is_empty()
    })
    .await;
    assert_eq!(
        t.secured_until.map(|s| s.seconds),
        Some(at(2028, 1, 25, 0).timestamp()),
        "another period from the last one's end"
    );
    stack.clock.set(at(2027, 1, 26, 0));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stack.tier_of(m).await.tier_code, "gold");
    assert!(
        events::<pb::TierChanged>(&stack, m)
            .await
            .iter()
            .all(|e| e.reason != "downgraded")
    );
}

#[tokio::test]
async fn a_manual_tier_expires_back_to_the_earned_tier() {
    let stack = spawn().await;
    stack.publish(simple_ladder()).await;
    let m = stack.member().await;
    stack.wait_for_tier(m, "member").await;
    let until = stack.clock.now_utc() + chrono::Duration::days(2);
    let assign = |request_id: String, tier: &str| pb::AssignTierRequest {
        request_id,
        member_id: m.to_string(),
        tier_code: tier.into(),
        reason: "press trip".into(),
        until: Some(common::timestamp(until)),
    };
    let id = rid();
    let first = stack
        .tier
        .clone()
        .assign_tier(req(assign(id.clone(), "gold")))
        .await
        .unwrap()
        .into_inner();
    let tier = first.tier.clone().unwrap();
    assert_eq!(
        (
            tier.tier_code.as_str(),
            tier.source,
            tier.earned_tier_code.as_str()
        ),
        ("gold", pb::TierSource::Manual as i32, "member")
    );
    assert_eq!(
        tier.secured_until.map(|s| s.seconds),
        Some(until.timestamp())
    );
    // The same request answers the same; another under its id is refused.
    let again = stack
        .tier
        .clone()
        .assign_tier(req(assign(id.clone(), "gold")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first);
    let refused = stack
        .tier
        .clone()
        .assign_tier(req(assign(id, "silver")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::AlreadyExists);
    let unknown = stack
        .tier
        .clone()
        .assign_tier(req(assign(rid(), "diamond")))
        .await
        .unwrap_err();
    assert_eq!(common::fields(&unknown), vec!["tier_code"]);
    let h = history(&stack, m).await;
    assert_eq!(
        (h[0].tier_code.as_str(), h[0].note.as_str()),
        ("gold", "press trip")
    );
    stack.advance(chrono::Duration::days(3));
    let t = stack.wait_for_tier(m, "member").await;
    assert_eq!(t.source, pb::TierSource::Earned as i32);
    let last = events::<pb::TierChanged>(&stack, m).await.pop().unwrap();
    assert_eq!(last.reason, "manual_ended");
    assert_eq!(
        last.effective_at.map(|e| e.seconds),
        Some(until.timestamp())
    );
}

#[tokio::test]
async fn a_merge_leaves_the_survivor_the_higher_tier_and_both_members_facts() {
    let stack = spawn().await;
    stack.publish(simple_ladder()).await;
    let (survivor, merged) = (stack.member().await, stack.member().await);
    let now = stack.clock.now_utc();
    stack.purchase(survivor, 4_000, now).await;
    stack.purchase(merged, 60_000, now).await;
    stack.wait_for_tier(merged, "gold").await;
    eventually(WAIT, "the survivor's purchase counts", || async {
        (stack.tier_of(survivor).await.measures?.spend_minor == 4_000).then_some(())
    })
    .await;
    stack
        .member
        .clone()
        .merge_members(req(mpb::MergeMembersRequest {
            request_id: rid(),
            survivor_member_id: survivor.to_string(),
            merged_member_id: merged.to_string(),
        }))
        .await
        .expect("merge");
    let t = stack.wait_for_tier(survivor, "gold").await;
    let measures = t.measures.unwrap();
    assert_eq!((measures.spend_minor, measures.orders), (64_000, 2));
    let last = events::<pb::TierChanged>(&stack, survivor)
        .await
        .pop()
        .unwrap();
    assert_eq!(last.reason, "merge");
    // The merged id answers with the survivor's tier.
    assert_eq!(stack.tier_of(merged).await.member_id, survivor.to_string());
}

trait NowUtc {
    fn now_utc(&self) -> DateTime<Utc>;
}

impl NowUtc for laurel_runtime::clock::ManualClock {
    fn now_utc(&self) -> DateTime<Utc> {
        laurel_runtime::clock::Clock::now(self)
    }
}
