//! Qualification through the member service's events: a purchase counts on
//! its day until that day leaves the rolling window, refunds take spend
//! (and a fully refunded order) back, concurrent purchases of one member
//! lose nothing and upgrade once per tier, the member card holds the tier
//! and follows an upgrade, and a gold member's next purchase earns the
//! points multiplier.

mod common;

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use common::{Stack, eventually, req, rid, simple_ladder, spawn, spawn_with};
use laurel_proto::{common::v1::EventEnvelope, points::v1 as ppb, tier::v1 as pb};
use prost::{Message, Name};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(15);

fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
}

async fn measures_reach(stack: &Stack, member: Uuid, spend: i64, orders: i64) -> pb::MemberTier {
    let what = format!("measures reach {spend} spent in {orders} orders");
    eventually(WAIT, &what, || async {
        let t = stack.tier_of(member).await;
        let m = t.measures?;
        (m.spend_minor == spend && m.orders == orders).then_some(t)
    })
    .await
}

/// The tier events about a member in the outbox, decoded.
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

#[tokio::test]
async fn a_purchase_stops_counting_the_day_it_leaves_the_rolling_window() {
    let stack = spawn_with(common::Options {
        start: Some(at(2026, 3, 10, 12)),
        ..Default::default()
    })
    .await;
    stack.publish(simple_ladder()).await;
    let m = stack.member().await;
    // Imported: it lands on its own day, the first day of today's window.
    stack.purchase(m, 15_000, at(2025, 3, 11, 10)).await;
    let t = stack.wait_for_tier(m, "silver").await;
    assert_eq!(t.measures.as_ref().unwrap().spend_minor, 15_000);
    assert_eq!(t.tier_if_period_ended_today, "silver");
    assert_eq!(t.next_tier_code, "gold");
    assert_eq!(t.missing[0].spend_minor, 35_000);
    // Cached until the day changes.
    assert_eq!(
        t.valid_until.map(|v| v.seconds),
        Some(at(2026, 3, 11, 0).timestamp())
    );
    assert_eq!(stack.tier_of(m).await, t);
    stack.advance(chrono::Duration::hours(12));
    let t = stack.tier_of(m).await;
    let measures = t.measures.unwrap();
    assert_eq!((measures.spend_minor, measures.orders), (0, 0));
    assert_eq!(
        measures.window_start.map(|w| w.seconds),
        Some(at(2025, 3, 12, 0).timestamp())
    );
    // Silver is kept until the review, but would not be if it were today.
    assert_eq!(t.tier_code, "silver");
    assert_eq!(t.tier_if_period_ended_today, "member");
    assert_eq!(t.missing[0].spend_minor, 50_000);
}

#[tokio::test]
async fn refunds_take_spend_back_and_a_full_refund_the_order() {
    let stack = spawn().await;
    stack.publish(simple_ladder()).await;
    let m = stack.member().await;
    let now = stack.clock.now_utc();
    let first = stack.purchase(m, 6_000, now).await;
    let second = stack.purchase(m, 6_000, now).await;
    let t = stack.wait_for_tier(m, "silver").await;
    assert_eq!(t.tier_if_period_ended_today, "silver");
    // Below the silver threshold again.
    stack.refund(m, &first, 3_000, now).await;
    let t = measures_reach(&stack, m, 9_000, 2).await;
    assert_eq!(t.tier_code, "silver");
    assert_eq!(t.tier_if_period_ended_today, "member");
    stack.refund(m, &second, 6_000, now).await;
    measures_reach(&stack, m, 3_000, 1).await;
    // The rest of the first order: fully refunded, it no longer counts.
    stack.refund(m, &first, 3_000, now).await;
    measures_reach(&stack, m, 0, 0).await;
}

#[tokio::test]
async fn concurrent_purchases_of_one_member_count_exactly_and_upgrade_once() {
    let stack = spawn().await;
    stack.publish(simple_ladder()).await;
    let m = stack.member().await;
    let now = stack.clock.now_utc();
    futures::future::join_all((0..20).map(|_| stack.purchase(m, 3_000, now))).await;
    let t = measures_reach(&stack, m, 60_000, 20).await;
    assert_eq!(t.tier_code, "gold");
    let tiers: Vec<String> = history(&stack, m)
        .await
        .into_iter()
        .rev()
        .map(|e| e.tier_code)
        .collect();
    assert_eq!(tiers, vec!["member", "silver", "gold"]);
    let changed = events::<pb::TierChanged>(&stack, m).await;
    assert_eq!(changed.len(), 3);
    let gold = changed.last().unwrap();
    assert_eq!(
        (
            gold.previous_tier.as_str(),
            gold.rank,
            gold.previous_rank,
            gold.reason.as_str()
        ),
        ("silver", 2, 1, "qualified")
    );
    assert_eq!(gold.reason_code, pb::TierChangeReason::Qualified as i32);
    assert_eq!(gold.ladder_version, 1);
}

#[tokio::test]
async fn the_member_card_holds_the_tier_and_follows_an_upgrade() {
    let stack = spawn().await;
    stack.publish(simple_ladder()).await;
    let m = stack.member().await;
    let first = stack.wait_for_tier(m, "member").await;
    let client = redis::Client::open(laurel_test_support::redis_url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{}:card:default:{m}", stack.prefix);
    let card = |mut redis: redis::aio::MultiplexedConnection, key: String| async move {
        let (value, version): (Option<Vec<u8>>, Option<i64>) = redis::cmd("HMGET")
            .arg(&key)
            .arg("tier")
            .arg("tier:v")
            .query_async(&mut redis)
            .await
            .unwrap();
        (
            value.map(|v| pb::MemberTier::decode(v.as_slice()).unwrap()),
            version,
        )
    };
    // GetMemberTier fills the card (a fill racing with a version change,
    // such as the ladder's re-evaluation reaching the member, is skipped:
    // the next read fills it).
    let first_code = first.tier_code.clone();
    eventually(
        Duration::from_secs(10),
        "GetMemberTier fills the card",
        || {
            let (redis, key, first_code, stack) =
                (redis.clone(), key.clone(), first_code.clone(), &stack);
            async move {
                let answered = stack.tier_of(m).await;
                let (cached, _) = card(redis, key).await;
                (answered.tier_code == first_code && cached.as_ref() == Some(&answered))
                    .then_some(())
            }
        },
    )
    .await;
    stack.purchase(m, 60_000, stack.clock.now_utc()).await;
    // Read after write: the next answer after the upgrade is gold, never
    // the cached member tier.
    let gold = stack.wait_for_tier(m, "gold").await;
    assert_eq!(stack.tier_of(m).await.tier_code, "gold");
    eventually(
        Duration::from_secs(10),
        "the card holds gold at the stored version",
        || {
            let (redis, key, gold_code, stack) =
                (redis.clone(), key.clone(), gold.tier_code.clone(), &stack);
            async move {
                let answered = stack.tier_of(m).await;
                let (cached, version) = card(redis, key).await;
                let stored: i64 =
                    sqlx::query_scalar("SELECT version FROM members WHERE member_id = $1")
                        .bind(m)
                        .fetch_one(&stack.db)
                        .await
                        .unwrap();
                (answered.tier_code == gold_code
                    && version == Some(stored)
                    && cached.map(|c| c.tier_code) == Some(gold_code))
                .then_some(())
            }
        },
    )
    .await;
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
}

/// The points schema of this stack, found by the member it knows.
async fn points_tier(stack: &Stack, member: Uuid) -> Option<String> {
    let schemas: Vec<String> = sqlx::query_scalar(
        "SELECT table_schema::text FROM information_schema.tables WHERE table_name = 'member_tiers'",
    )
    .fetch_all(&stack.db)
    .await
    .ok()?;
    for schema in schemas {
        let tier: Option<String> = sqlx::query_scalar(&format!(
            "SELECT tier FROM \"{schema}\".member_tiers WHERE member_id = $1 ORDER BY effective_at DESC LIMIT 1"
        ))
        .bind(member)
        .fetch_optional(&stack.db)
        .await
        .ok()
        .flatten();
        if tier.is_some() {
            return tier;
        }
    }
    None
}

#[tokio::test]
async fn a_purchase_reaching_gold_makes_the_next_purchase_earn_the_gold_multiplier() {
    let stack = spawn_with(common::Options {
        points: true,
        ..Default::default()
    })
    .await;
    let points = stack.points.clone().unwrap();
    let now = stack.clock.now_utc();
    points
        .clone()
        .publish_earn_rules(req(ppb::PublishEarnRulesRequest {
            request_id: rid(),
            rules: Some(ppb::EarnRules {
                effective_from: Some(common::timestamp(now - chrono::Duration::days(30))),
                base_points: 1,
                base_amount_minor: 100,
                tier_multipliers: vec![ppb::TierMultiplier {
                    tier: "gold".into(),
                    multiplier_bp: 20_000,
                }],
                ..Default::default()
            }),
        }))
        .await
        .expect("earn rules");
    stack.publish(simple_ladder()).await;
    let m = stack.member().await;
    let total = |points: laurel_proto::points::v1::points_service_client::PointsServiceClient<
        tonic::transport::Channel,
    >| async move {
        let b = points
            .clone()
            .get_balance(req(ppb::GetBalanceRequest {
                member_id: m.to_string(),
            }))
            .await
            .ok()?
            .into_inner()
            .balance?;
        Some(b.available + b.pending)
    };
    stack.purchase(m, 60_000, now).await;
    let changed = stack.wait_for_tier(m, "gold").await;
    assert_eq!(changed.source, pb::TierSource::Earned as i32);
    eventually(WAIT, "points hear the tier change", || async {
        (points_tier(&stack, m).await.as_deref() == Some("gold")).then_some(())
    })
    .await;
    let before = eventually(WAIT, "the first purchase earns", || async {
        total(points.clone()).await.filter(|t| *t >= 600)
    })
    .await;
    stack.advance(chrono::Duration::minutes(1));
    stack.purchase(m, 10_000, stack.clock.now_utc()).await;
    eventually(WAIT, "the gold purchase earns double", || async {
        (total(points.clone()).await == Some(before + 200)).then_some(())
    })
    .await;
}

/// A goodwill earn of `points` through the points service.
async fn goodwill(stack: &Stack, member: Uuid, points: i64) {
    stack
        .points
        .clone()
        .unwrap()
        .earn(req(ppb::EarnRequest {
            request_id: rid(),
            member_id: member.to_string(),
            kind: ppb::EarnKind::Goodwill as i32,
            points,
            reason: "test".into(),
            ..Default::default()
        }))
        .await
        .expect("goodwill earn");
}

#[tokio::test]
async fn earned_points_upgrade_a_member_when_a_tier_asks_for_points() {
    let stack = spawn_with(common::Options {
        points: true,
        ..Default::default()
    })
    .await;
    let mut ladder = simple_ladder();
    ladder.tiers[1].qualify_any.push(pb::Threshold {
        points: 500,
        ..Default::default()
    });
    stack.publish(ladder).await;
    let m = stack.member().await;
    goodwill(&stack, m, 300).await;
    eventually(WAIT, "300 points are measured", || async {
        let t = stack.tier_of(m).await;
        (t.measures?.points == 300).then_some(())
    })
    .await;
    assert_eq!(stack.tier_of(m).await.tier_code, "member");
    goodwill(&stack, m, 250).await;
    let silver = stack.wait_for_tier(m, "silver").await;
    assert_eq!(silver.measures.unwrap().points, 550);
}

#[tokio::test]
async fn earned_points_show_in_the_measures_when_no_tier_asks_for_them() {
    let stack = spawn_with(common::Options {
        points: true,
        ..Default::default()
    })
    .await;
    stack.publish(simple_ladder()).await;
    let m = stack.member().await;
    // A first answer is cached at the member's version; the earn must
    // raise it, or the measures would stay at 0.
    assert_eq!(stack.tier_of(m).await.measures.unwrap().points, 0);
    goodwill(&stack, m, 20_000).await;
    let t = eventually(WAIT, "20000 points are measured", || async {
        let t = stack.tier_of(m).await;
        (t.measures.as_ref()?.points == 20_000).then_some(t)
    })
    .await;
    assert_eq!(t.tier_code, "member", "points qualify for nothing here");
    let history = stack
        .tier
        .clone()
        .list_tier_history(req(pb::ListTierHistoryRequest {
            member_id: m.to_string(),
            ..Default::default()
        }))
        .await
        .expect("history")
        .into_inner();
    assert!(
        history.entries.iter().all(|c| c.tier_code == "member"),
        "no upgrade recorded: {history:?}"
    );
}

trait NowUtc {
    fn now_utc(&self) -> DateTime<Utc>;
}

impl NowUtc for laurel_runtime::clock::ManualClock {
    fn now_utc(&self) -> DateTime<Utc> {
        laurel_runtime::clock::Clock::now(self)
    }
}
