//! A guest's purchase (recorded without a member) reaches the points
//! consumer as an ActivityRecorded without a member id: it earns nothing and
//! is done with, not dead-lettered, and the member purchase behind it earns.

mod common;

use std::time::Duration;

use common::{Stack, eventually, req, rid, spawn};
use laurel_proto::{common::v1::Money, member::v1 as mpb, points::v1 as pb};
use laurel_runtime::{clock::Clock, events::dead_letter_key};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(15);

/// 1 point per euro.
async fn publish_rules(stack: &Stack) {
    let from = stack.clock.now() - chrono::Duration::days(1);
    stack
        .points
        .clone()
        .publish_earn_rules(req(pb::PublishEarnRulesRequest {
            request_id: rid(),
            rules: Some(pb::EarnRules {
                effective_from: Some(prost_types::Timestamp {
                    seconds: from.timestamp(),
                    nanos: 0,
                }),
                base_points: 1,
                base_amount_minor: 100,
                ..Default::default()
            }),
        }))
        .await
        .expect("rules publish");
}

/// A purchase of `total_minor` EUR cents by `member`, or by a guest.
async fn purchase(stack: &Stack, member: Option<Uuid>, total_minor: i64) {
    let order_id = rid();
    stack
        .member
        .clone()
        .record_activity(req(mpb::RecordActivityRequest {
            member: member.map(|m| mpb::record_activity_request::Member::MemberId(m.to_string())),
            auto_enroll: false,
            guest: member.is_none(),
            activity: Some(mpb::Activity {
                source: "pos".into(),
                external_id: order_id.clone(),
                detail: Some(mpb::activity::Detail::Purchase(mpb::Purchase {
                    order_id,
                    total: Some(Money {
                        currency_code: "EUR".into(),
                        amount_minor: total_minor,
                    }),
                    ..Default::default()
                })),
                ..Default::default()
            }),
        }))
        .await
        .expect("purchase recorded");
}

#[tokio::test]
async fn a_guest_purchase_is_skipped_and_the_members_next_purchase_earns() {
    let stack = spawn().await;
    publish_rules(&stack).await;
    let member = stack.member().await;
    purchase(&stack, None, 99_900).await;
    purchase(&stack, Some(member), 2_500).await;

    eventually(WAIT, "the member earns 25 points", || async {
        (stack.balance(member).await.available == 25).then_some(())
    })
    .await;
    // MemberCreated and both purchases went through the inbox: the guest's
    // was handled, not dead-lettered.
    eventually(WAIT, "three events handled", || async {
        let handled: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox")
            .fetch_one(&stack.db)
            .await
            .ok()?;
        (handled == 3).then_some(())
    })
    .await;
    let client = redis::Client::open(laurel_test_support::redis_url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let dead: i64 = redis::cmd("XLEN")
        .arg(dead_letter_key(&stack.prefix, "points"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(dead, 0);
    let (all, members) = stack.ledger_sums().await;
    assert_eq!((all, members), (0, 25), "only the member's points exist");
}
