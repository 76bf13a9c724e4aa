//! A guest's purchase (recorded without a member) reaches the tier consumer
//! as an ActivityRecorded without a member id: it moves no measures and is
//! done with, not dead-lettered, and the member purchase behind it counts.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{Stack, eventually, req, rid, spawn};
use laurel_proto::{common::v1::Money, member::v1 as mpb};
use laurel_runtime::events::dead_letter_key;

const WAIT: Duration = Duration::from_secs(15);

async fn guest_purchase(stack: &Stack, total_minor: i64) {
    let order_id = rid();
    stack
        .member
        .clone()
        .record_activity(req(mpb::RecordActivityRequest {
            member: None,
            auto_enroll: false,
            guest: true,
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
        .expect("guest purchase recorded");
}

#[tokio::test]
async fn a_guest_purchase_is_skipped_and_the_members_next_purchase_counts() {
    let stack = spawn().await;
    stack.publish(common::simple_ladder()).await;
    let member = stack.member().await;
    guest_purchase(&stack, 99_900).await;
    stack.purchase(member, 4_000, Utc::now()).await;

    let tier = eventually(WAIT, "the member's purchase is measured", || async {
        let tier = stack.tier_of(member).await;
        (tier.measures.as_ref()?.orders == 1).then_some(tier)
    })
    .await;
    let measures = tier.measures.unwrap();
    assert_eq!((measures.spend_minor, measures.orders), (4_000, 1));
    // MemberCreated and both purchases went through the inbox: the guest's
    // was handled, not dead-lettered.
    eventually(WAIT, "three member events handled", || async {
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
        .arg(dead_letter_key(&stack.prefix, "tier"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(dead, 0);
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM qualifying_orders")
        .fetch_one(&stack.db)
        .await
        .unwrap();
    assert_eq!(orders, 1, "only the member's order qualifies");
}
