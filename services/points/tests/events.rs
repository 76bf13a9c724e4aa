//! End to end through the member service's events: a purchase recorded at
//! the member service earns by the published rules, a refund takes the
//! points back, tier multipliers follow TierChanged events, a merge moves
//! lots to the survivor, and erasure forfeits the balance, balanced.

mod common;

use std::time::Duration;

use common::{Stack, eventually, req, rid, spawn};
use laurel_proto::{
    common::v1::{EventEnvelope, Money},
    member::v1 as mpb,
    points::v1 as pb,
    tier::v1 as tpb,
};
use laurel_runtime::clock::Clock;
use prost::{Message, Name};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(15);

fn eur(amount_minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: "EUR".into(),
        amount_minor,
    })
}

fn ts(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

/// 1 point per euro, double on shoes for gold members, gift cards nothing.
async fn publish_rules(stack: &Stack) {
    stack
        .points
        .clone()
        .publish_earn_rules(req(pb::PublishEarnRulesRequest {
            request_id: rid(),
            rules: Some(pb::EarnRules {
                effective_from: Some(ts(stack.clock.now() - chrono::Duration::days(30))),
                base_points: 1,
                base_amount_minor: 100,
                excluded_categories: vec!["gift-cards".into()],
                tier_multipliers: vec![pb::TierMultiplier {
                    tier: "gold".into(),
                    multiplier_bp: 20_000,
                }],
                ..Default::default()
            }),
        }))
        .await
        .expect("rules publish");
}

async fn purchase(
    stack: &Stack,
    member: Uuid,
    order_id: &str,
    total: i64,
    lines: Vec<mpb::OrderLine>,
) {
    stack
        .member
        .clone()
        .record_activity(req(mpb::RecordActivityRequest {
            member: Some(mpb::record_activity_request::Member::MemberId(
                member.to_string(),
            )),
            auto_enroll: false,
            guest: false,
            activity: Some(mpb::Activity {
                source: "pos".into(),
                external_id: format!("sale-{order_id}"),
                occurred_at: Some(ts(stack.clock.now())),
                detail: Some(mpb::activity::Detail::Purchase(mpb::Purchase {
                    order_id: order_id.into(),
                    total: eur(total),
                    lines,
                    ..Default::default()
                })),
                ..Default::default()
            }),
        }))
        .await
        .expect("purchase recorded");
}

async fn refund(stack: &Stack, member: Uuid, order_id: &str, amount: i64) {
    stack
        .member
        .clone()
        .record_activity(req(mpb::RecordActivityRequest {
            member: Some(mpb::record_activity_request::Member::MemberId(
                member.to_string(),
            )),
            auto_enroll: false,
            guest: false,
            activity: Some(mpb::Activity {
                source: "pos".into(),
                external_id: format!("refund-{order_id}-{amount}"),
                occurred_at: Some(ts(stack.clock.now())),
                detail: Some(mpb::activity::Detail::Refund(mpb::Refund {
                    order_id: order_id.into(),
                    amount: eur(amount),
                    lines: vec![],
                })),
                ..Default::default()
            }),
        }))
        .await
        .expect("refund recorded");
}

async fn wait_for_available(stack: &Stack, member: Uuid, want: i64, what: &str) {
    eventually(WAIT, what, || async {
        (stack.balance(member).await.available == want).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_purchase_earns_once_and_a_refund_takes_back_its_share() {
    let stack = spawn().await;
    publish_rules(&stack).await;
    let m = stack.member().await;
    let lines = vec![
        mpb::OrderLine {
            sku: "shoe-1".into(),
            category: "shoes".into(),
            quantity: 2,
            unit_price_minor: 5_000,
        },
        mpb::OrderLine {
            sku: "gc-50".into(),
            category: "gift-cards".into(),
            quantity: 1,
            unit_price_minor: 5_000,
        },
    ];
    purchase(&stack, m, "A-1", 15_000, lines).await;
    wait_for_available(
        &stack,
        m,
        100,
        "the purchase earns 100 points (gift card excluded)",
    )
    .await;
    // Half the order refunded: half the points go.
    refund(&stack, m, "A-1", 7_500).await;
    wait_for_available(&stack, m, 50, "the refund reverses half").await;
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM order_earns WHERE order_id = 'A-1'")
        .fetch_one(&stack.db)
        .await
        .unwrap();
    assert_eq!(orders, 1, "the order earned once");
    stack.assert_ledger_consistent().await;
}

#[tokio::test]
async fn tier_changes_from_events_multiply_later_orders() {
    let stack = spawn().await;
    publish_rules(&stack).await;
    let m = stack.member().await;
    // Published here as the tier service publishes it (the tier crate's
    // own tests drive this end to end).
    let event = tpb::TierChanged {
        member_id: m.to_string(),
        previous_tier: String::new(),
        tier: "gold".into(),
        effective_at: Some(ts(stack.clock.now() - chrono::Duration::hours(1))),
        reason: "qualified".into(),
        ..Default::default()
    };
    let envelope = EventEnvelope {
        event_id: Uuid::now_v7().to_string(),
        event_type: format!("tier.{}", tpb::TierChanged::NAME),
        source: "tier".into(),
        program_id: "default".into(),
        member_id: m.to_string(),
        occurred_at: event.effective_at,
        recorded_at: event.effective_at,
        trace_context: Default::default(),
        payload: Some(prost_types::Any::from_msg(&event).unwrap()),
        member_sequence: 1,
    };
    let client = redis::Client::open(laurel_test_support::redis_url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let _: String = redis::cmd("XADD")
        .arg(format!("{}:events:tier", stack.prefix))
        .arg("*")
        .arg("envelope")
        .arg(envelope.encode_to_vec())
        .arg("type")
        .arg(&envelope.event_type)
        .query_async(&mut redis)
        .await
        .unwrap();
    eventually(WAIT, "the tier is recorded", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM member_tiers WHERE tier = 'gold'")
            .fetch_one(&stack.db)
            .await
            .unwrap();
        (n == 1).then_some(())
    })
    .await;
    purchase(&stack, m, "G-1", 10_000, vec![]).await;
    wait_for_available(&stack, m, 200, "a gold member earns double").await;
}

#[tokio::test]
async fn a_merge_moves_points_to_the_survivor_and_erasure_forfeits_them() {
    let stack = spawn().await;
    let (survivor, merged) = (stack.member().await, stack.member().await);
    stack.give(survivor, 10).await;
    stack.give(merged, 32).await;
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
    wait_for_available(&stack, survivor, 42, "the survivor holds both balances").await;
    // The merged id answers with the survivor's balance; transfers refuse it.
    assert_eq!(stack.balance(merged).await.available, 42);
    let refused = stack
        .points
        .clone()
        .transfer(req(pb::TransferRequest {
            request_id: rid(),
            from_member_id: merged.to_string(),
            to_member_id: survivor.to_string(),
            points: 1,
            reason: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    stack
        .member
        .clone()
        .erase_member(req(mpb::EraseMemberRequest {
            request_id: rid(),
            member_id: survivor.to_string(),
        }))
        .await
        .expect("erase");
    eventually(WAIT, "erasure forfeits the balance", || async {
        let (status, balance): (i16, i64) =
            sqlx::query_as("SELECT status, balance FROM accounts WHERE member_id = $1")
                .bind(survivor)
                .fetch_one(&stack.db)
                .await
                .unwrap();
        (status == 3 && balance == 0).then_some(())
    })
    .await;
    stack.assert_ledger_consistent().await;
    let liability = stack
        .points
        .clone()
        .get_liability(req(pb::GetLiabilityRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(liability.ledger_sum, 0);
    assert_eq!(liability.outstanding, 0);
    assert_eq!(liability.issued, 42);
    assert_eq!(liability.expired, 42);
}
