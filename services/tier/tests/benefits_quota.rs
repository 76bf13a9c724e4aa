//! Consuming benefits: quotas held under concurrency, idempotent retries,
//! quotas renewing each period, refusals.

mod benefits_support;
mod common;

use chrono::{TimeZone, Utc};
use laurel_proto::tier::v1 as pb;
use tonic::Code;

use benefits_support::*;
use common::{reason, rid};

async fn gold_with_shipping(stack: &common::Stack, quota: i32, tz: &str) -> uuid::Uuid {
    put_benefit(stack, benefit("ship", pb::BenefitKind::FreeShipping)).await;
    seed_ladder(
        stack,
        ladder_with_gold(vec![grant("ship", quota, pb::QuotaPeriod::Month)], tz),
    )
    .await;
    seed_member(stack, Some("gold")).await
}

#[tokio::test]
async fn concurrent_uses_never_exceed_the_quota_and_retries_replay_without_using() {
    let mut stack = common::spawn().await;
    let member = gold_with_shipping(&stack, 2, "UTC").await;
    let ids: Vec<String> = (0..50).map(|_| rid()).collect();
    let attempts = ids.iter().map(|id| consume(&stack, id, member, "ship", 1));
    let results = futures::future::join_all(attempts).await;
    let succeeded: Vec<(usize, pb::ConsumeBenefitResponse)> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().ok().map(|ok| (i, ok.clone())))
        .collect();
    assert_eq!(succeeded.len(), 2, "exactly the quota succeeds");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code(), Code::ResourceExhausted, "{r:?}");
        assert_eq!(reason(r), "QUOTA_EXHAUSTED");
    }
    let mut used: Vec<i32> = succeeded
        .iter()
        .map(|(_, r)| r.benefit.as_ref().unwrap().used)
        .collect();
    used.sort();
    assert_eq!(used, [1, 2]);

    // A retry of a succeeded request answers the same and uses nothing.
    let (i, first) = &succeeded[0];
    let again = consume(&stack, &ids[*i], member, "ship", 1)
        .await
        .expect("replayed");
    assert_eq!(&again, first);
    let uses: i64 = sqlx::query_scalar("SELECT count(*) FROM benefit_uses")
        .fetch_one(&stack.db)
        .await
        .unwrap();
    assert_eq!(uses, 2);
    let listed = member_benefits(&stack, member).await;
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].used, listed[0].remaining), (2, 0));
    assert_eq!(listed[0].source, pb::BenefitSource::Tier as i32);
    assert_eq!(listed[0].source_code, "gold");

    // The same id with another request is refused.
    let reused = consume(&stack, &ids[*i], member, "ship", 2)
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::AlreadyExists);
    stack.stop().await;
}

#[tokio::test]
async fn a_use_beyond_what_is_left_changes_nothing() {
    let mut stack = common::spawn().await;
    let member = gold_with_shipping(&stack, 3, "UTC").await;
    consume(&stack, &rid(), member, "ship", 2)
        .await
        .expect("two of three");
    let refused = consume(&stack, &rid(), member, "ship", 2)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("1 left"),
        "{}",
        refused.message()
    );
    let listed = member_benefits(&stack, member).await;
    assert_eq!((listed[0].used, listed[0].remaining), (2, 1));
    let last = consume(&stack, &rid(), member, "ship", 1)
        .await
        .expect("the last one");
    assert_eq!(last.benefit.unwrap().remaining, 0);
    stack.stop().await;
}

#[tokio::test]
async fn the_quota_renews_when_the_month_turns_in_the_ladder_time_zone() {
    // 21:00 UTC on 31 March is 23:00 in Paris: still March there.
    let start = Utc.with_ymd_and_hms(2026, 3, 31, 21, 0, 0).unwrap();
    let mut stack = common::spawn_with(common::Options {
        start: Some(start),
        ..Default::default()
    })
    .await;
    let member = gold_with_shipping(&stack, 2, "Europe/Paris").await;
    let used = consume(&stack, &rid(), member, "ship", 2).await.unwrap();
    let april_paris = Utc.with_ymd_and_hms(2026, 3, 31, 22, 0, 0).unwrap();
    assert_eq!(time(&used.benefit.unwrap().period_end), april_paris);
    let refused = consume(&stack, &rid(), member, "ship", 1)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);

    // 23:00 UTC is 1 April in Paris: a new period.
    stack.advance(chrono::Duration::hours(2));
    let listed = member_benefits(&stack, member).await;
    assert_eq!((listed[0].used, listed[0].remaining), (0, 2));
    let renewed = consume(&stack, &rid(), member, "ship", 1)
        .await
        .expect("a new month");
    let b = renewed.benefit.unwrap();
    assert_eq!((b.used, b.remaining), (1, 1));
    assert_eq!(
        time(&b.period_end),
        Utc.with_ymd_and_hms(2026, 4, 30, 22, 0, 0).unwrap()
    );
    stack.stop().await;
}

#[tokio::test]
async fn benefits_not_granted_unknown_inactive_or_of_unknown_members_are_refused() {
    let mut stack = common::spawn().await;
    let gold = gold_with_shipping(&stack, 2, "UTC").await;
    let silver = seed_member(&stack, Some("silver")).await;

    let not_granted = consume(&stack, &rid(), silver, "ship", 1)
        .await
        .unwrap_err();
    assert_eq!(not_granted.code(), Code::FailedPrecondition);
    assert_eq!(reason(&not_granted), "BENEFIT_NOT_GRANTED");

    let unknown = consume(&stack, &rid(), gold, "lounge", 1)
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(reason(&unknown), "BENEFIT_NOT_FOUND");

    let stranger = consume(&stack, &rid(), uuid::Uuid::now_v7(), "ship", 1)
        .await
        .unwrap_err();
    assert_eq!(reason(&stranger), "MEMBER_NOT_FOUND");

    let invalid = consume(&stack, &rid(), gold, "ship", 1001)
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert_eq!(common::fields(&invalid), ["quantity"]);

    let mut off = benefit("ship", pb::BenefitKind::FreeShipping);
    off.active = false;
    put_benefit(&stack, off).await;
    let inactive = consume(&stack, &rid(), gold, "ship", 1).await.unwrap_err();
    assert_eq!(inactive.code(), Code::FailedPrecondition);
    assert_eq!(reason(&inactive), "BENEFIT_INACTIVE");
    assert!(
        member_benefits(&stack, gold).await.is_empty(),
        "inactive benefits are not listed"
    );
    let uses: i64 = sqlx::query_scalar("SELECT count(*) FROM benefit_uses")
        .fetch_one(&stack.db)
        .await
        .unwrap();
    assert_eq!(uses, 0);
    stack.stop().await;
}
