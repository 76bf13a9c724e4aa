//! The facts and member metrics through real events: purchases and refunds
//! move the member's figures (other currencies kept apart), feedback and
//! complaints are counted, a merge moves everything to the survivor, a
//! redelivered event counts once, and a full rebuild from the fact tables
//! equals the figures kept incrementally.

mod common;

use chrono::{Duration, TimeZone, Utc};
use common::{Stack, WAIT, eventually, fields, line, req, rid, spawn};
use laurel_proto::{
    analytics::v1 as pb,
    common::v1::{EventEnvelope, Money},
    member::v1 as mpb,
};
use prost::Message;
use uuid::Uuid;

/// A stream entry: its id and fields.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

fn at(y: i32, m: u32, d: u32, h: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
}

#[tokio::test]
async fn purchases_and_refunds_move_the_members_figures_in_the_programmes_currency() {
    let stack = spawn().await;
    stack.settings("Europe/Paris").await;
    let m = stack.member().await;
    // Two purchases on one Paris day (23:30 UTC on the 1st is the 2nd in
    // Paris), one on another day, one in USD.
    let o1 = stack
        .purchase_with(
            m,
            10_000,
            at(2026, 3, 1, 23),
            vec![line("A", "shoes", 1, 10_000)],
        )
        .await;
    stack.purchase(m, 5_000, at(2026, 3, 2, 9)).await;
    stack.purchase(m, 3_000, at(2026, 3, 10, 9)).await;
    stack
        .activity(
            m,
            at(2026, 3, 11, 9),
            mpb::activity::Detail::Purchase(mpb::Purchase {
                order_id: "usd-1".into(),
                total: Some(Money {
                    currency_code: "USD".into(),
                    amount_minor: 7_000,
                }),
                ..Default::default()
            }),
        )
        .await;
    stack.refund(m, &o1, 4_000, at(2026, 3, 12, 9)).await;
    let metrics = stack
        .metrics_until(m, "the refund is counted", |x| x.refunds == 1)
        .await;
    assert_eq!(metrics.orders, 3);
    assert_eq!(
        metrics.purchase_days, 2,
        "the 2nd (twice, Paris time) and the 10th"
    );
    assert_eq!(metrics.gross_spend_minor, 18_000);
    assert_eq!(metrics.net_spend_minor, 14_000);
    assert_eq!(metrics.refunded_minor, 4_000);
    assert_eq!(metrics.average_order_minor, 6_000);
    assert_eq!(
        metrics.first_purchase_at.unwrap().seconds,
        at(2026, 3, 1, 23).timestamp()
    );
    assert_eq!(
        metrics.last_purchase_at.unwrap().seconds,
        at(2026, 3, 10, 9).timestamp()
    );
    assert_eq!(
        metrics.other_currency_spend,
        vec![Money {
            currency_code: "USD".into(),
            amount_minor: 7_000
        }]
    );
    // The rest of the order (the member service refuses more).
    stack.refund(m, &o1, 6_000, at(2026, 3, 13, 9)).await;
    let metrics = stack
        .metrics_until(m, "the second refund is counted", |x| x.refunds == 2)
        .await;
    assert_eq!(metrics.refunded_minor, 10_000);
    assert_eq!(metrics.net_spend_minor, 8_000);
    assert_eq!(
        metrics.orders, 3,
        "a fully refunded order still counts as an order"
    );
}

#[tokio::test]
async fn feedback_reviews_and_complaints_are_counted() {
    let stack = spawn().await;
    stack.settings("UTC").await;
    let m = stack.member().await;
    let now = laurel_runtime::clock::Clock::now(&stack.clock);
    use mpb::activity::Detail;
    let feedback = |score| {
        Detail::Feedback(mpb::Feedback {
            nps_score: score,
            comment: "text stays in the member service".into(),
        })
    };
    stack
        .activity(m, now - Duration::days(3), feedback(9))
        .await;
    stack
        .activity(m, now - Duration::days(1), feedback(4))
        .await;
    // An older score arriving later does not replace the latest.
    stack
        .activity(m, now - Duration::days(5), feedback(10))
        .await;
    stack
        .activity(
            m,
            now,
            Detail::Review(mpb::Review {
                sku: "A".into(),
                rating: 1,
                text: String::new(),
            }),
        )
        .await;
    stack
        .activity(
            m,
            now,
            Detail::Review(mpb::Review {
                sku: "B".into(),
                rating: 5,
                text: String::new(),
            }),
        )
        .await;
    stack
        .activity(
            m,
            now,
            Detail::Custom(mpb::Custom {
                name: "complaint".into(),
            }),
        )
        .await;
    let metrics = stack
        .metrics_until(m, "the complaint is counted", |x| x.complaints == 1)
        .await;
    assert_eq!(metrics.latest_nps, 4);
    assert_eq!(
        metrics.negative_feedback, 2,
        "the 4 and the one-star review"
    );
}

#[tokio::test]
async fn a_merge_moves_purchases_to_the_survivor_and_rebuild_agrees() {
    let stack = spawn().await;
    stack.settings("UTC").await;
    let (a, b) = (stack.member().await, stack.member().await);
    stack.purchase(a, 1_000, at(2026, 1, 5, 10)).await;
    let ob = stack.purchase(b, 2_000, at(2026, 1, 5, 12)).await;
    stack.purchase(b, 4_000, at(2026, 2, 1, 12)).await;
    stack.refund(b, &ob, 500, at(2026, 2, 2, 12)).await;
    stack
        .metrics_until(b, "b's refund", |x| x.refunds == 1)
        .await;
    stack
        .member
        .clone()
        .merge_members(req(mpb::MergeMembersRequest {
            request_id: rid(),
            survivor_member_id: a.to_string(),
            merged_member_id: b.to_string(),
        }))
        .await
        .expect("merge");
    let merged = stack
        .metrics_until(a, "a holds b's purchases", |x| x.orders == 3)
        .await;
    assert_eq!(merged.purchase_days, 2, "the 5th of January counts once");
    assert_eq!(merged.gross_spend_minor, 7_000);
    assert_eq!(merged.net_spend_minor, 6_500);
    assert_eq!(merged.refunds, 1);
    let gone = stack.metrics(b).await.unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);
    assert_eq!(
        first_day_spend(&stack, a).await,
        (chrono::NaiveDate::from_ymd_opt(2026, 1, 5).unwrap(), 2_500),
        "a's 1,000 and b's 2,000 less its 500 refunded"
    );

    // The first purchase day's spend, kept as purchases and refunds arrive
    // (c is never merged, so only the incremental figures hold it): a
    // purchase on the 10th, then two on the 1st arriving late, a refund of
    // one of those and one of the 10th's.
    let c = stack.member().await;
    let later = stack.purchase(c, 3_000, at(2026, 2, 10, 12)).await;
    stack
        .metrics_until(c, "c's first purchase", |x| x.orders == 1)
        .await;
    assert_eq!(
        first_day_spend(&stack, c).await,
        (chrono::NaiveDate::from_ymd_opt(2026, 2, 10).unwrap(), 3_000)
    );
    let earlier = stack.purchase(c, 2_000, at(2026, 2, 1, 9)).await;
    stack
        .metrics_until(c, "c's late earlier purchase", |x| x.orders == 2)
        .await;
    assert_eq!(
        first_day_spend(&stack, c).await,
        (chrono::NaiveDate::from_ymd_opt(2026, 2, 1).unwrap(), 2_000),
        "an earlier day replaces the first day"
    );
    stack.purchase(c, 1_500, at(2026, 2, 1, 18)).await;
    stack
        .metrics_until(c, "c's second purchase of the 1st", |x| x.orders == 3)
        .await;
    stack.refund(c, &earlier, 500, at(2026, 2, 11, 9)).await;
    stack.refund(c, &later, 1_000, at(2026, 2, 11, 10)).await;
    stack
        .metrics_until(c, "c's refunds", |x| x.refunds == 2)
        .await;
    assert_eq!(
        first_day_spend(&stack, c).await,
        (chrono::NaiveDate::from_ymd_opt(2026, 2, 1).unwrap(), 3_000),
        "2,000 + 1,500 on the 1st, less the 500 refunded; the 10th's refund does not count"
    );
    assert_rebuild_agrees(&stack).await;
}

/// A member's first purchase day and its spend, as `member_spend` keeps them.
async fn first_day_spend(stack: &Stack, member: Uuid) -> (chrono::NaiveDate, i64) {
    sqlx::query_as(
        "SELECT first_day, first_day_spend_minor FROM member_spend
         WHERE member_id = $1 AND currency_code = 'EUR'",
    )
    .bind(member)
    .fetch_one(&stack.db)
    .await
    .unwrap()
}

/// Every member's figures as kept equal the figures rebuilt from the
/// fact tables.
async fn assert_rebuild_agrees(stack: &Stack) {
    let snapshot = || async {
        let days: Vec<(Uuid, String, chrono::NaiveDate, i64, i64)> = sqlx::query_as(
            "SELECT member_id, currency_code, day, orders, spend_minor FROM member_days
             ORDER BY 1, 2, 3",
        )
        .fetch_all(&stack.db)
        .await
        .unwrap();
        type Spend = (
            Uuid,
            String,
            i64,
            i64,
            i64,
            i64,
            i64,
            chrono::NaiveDate,
            chrono::NaiveDate,
            i64,
        );
        let spend: Vec<Spend> = sqlx::query_as(
            "SELECT member_id, currency_code, orders, purchase_days, gross_minor, refunded_minor,
                    refunds, first_day, last_day, first_day_spend_minor
             FROM member_spend ORDER BY 1, 2",
        )
        .fetch_all(&stack.db)
        .await
        .unwrap();
        (days, spend)
    };
    let kept = snapshot().await;
    assert!(!kept.1.is_empty());
    // The first day's spend is that day's in member_days.
    for s in &kept.1 {
        let first_day = kept
            .0
            .iter()
            .find(|d| (d.0, &d.1, d.2) == (s.0, &s.1, s.7))
            .expect("the first day is a purchase day");
        assert_eq!(s.9, first_day.4, "first-day spend of {} {}", s.0, s.1);
    }
    let mut tx = stack.db.begin().await.unwrap();
    laurel_analytics::facts::spend::rebuild_program(&mut tx, "default")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        snapshot().await,
        kept,
        "rebuilt from the facts = kept incrementally"
    );
}

#[tokio::test]
async fn a_redelivered_event_counts_once_and_guests_are_kept_apart() {
    let stack = spawn().await;
    stack.settings("UTC").await;
    let m = stack.member().await;
    stack.purchase(m, 2_500, at(2026, 4, 1, 10)).await;
    stack
        .metrics_until(m, "the purchase", |x| x.orders == 1)
        .await;
    // The same envelope again, as a redelivery after a crash would bring it.
    let client = redis::Client::open(laurel_test_support::redis_url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let stream = format!("{}:events:member", stack.prefix);
    let entries: Vec<StreamEntry> = redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await
        .unwrap();
    let purchase = entries
        .iter()
        .filter_map(|(_, fields)| fields.iter().find(|(k, _)| k == "envelope"))
        .map(|(_, v)| EventEnvelope::decode(v.as_slice()).unwrap())
        .find(|e| e.event_type.ends_with("ActivityRecorded"))
        .expect("the purchase event");
    let before = stack.applied().await;
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("envelope")
        .arg(purchase.encode_to_vec())
        .arg("type")
        .arg(&purchase.event_type)
        .query_async(&mut redis)
        .await
        .unwrap();
    // Something after it, so we know the copy was read.
    stack.purchase(m, 1_000, at(2026, 4, 2, 10)).await;
    let metrics = stack
        .metrics_until(m, "the second purchase", |x| x.orders >= 2)
        .await;
    assert_eq!(metrics.orders, 2, "the copy counted once");
    assert_eq!(metrics.gross_spend_minor, 3_500);
    assert_eq!(stack.applied().await, before + 1);
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM purchases")
        .fetch_one(&stack.db)
        .await
        .unwrap();
    assert_eq!(orders, 2);
}

#[tokio::test]
async fn settings_are_validated_field_by_field_and_a_new_time_zone_moves_days() {
    let stack = spawn().await;
    let bad = stack
        .analytics
        .clone()
        .put_settings(req(pb::PutSettingsRequest {
            request_id: rid(),
            settings: Some(pb::Settings {
                currency_code: "EURO".into(),
                time_zone: "Mars/Olympus".into(),
                rfm_bins: 11,
                active_days: -1,
                ..Default::default()
            }),
        }))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let mut f = fields(&bad);
    f.sort();
    assert_eq!(
        f,
        [
            "settings.active_days",
            "settings.currency_code",
            "settings.rfm_bins",
            "settings.time_zone"
        ]
    );
    let none = stack
        .analytics
        .clone()
        .get_settings(req(pb::GetSettingsRequest {}))
        .await
        .unwrap_err();
    assert_eq!(none.code(), tonic::Code::FailedPrecondition);
    let s = stack.settings("UTC").await;
    assert_eq!(
        (s.rfm_bins, s.active_days, s.annual_discount_bp),
        (5, 365, 1000)
    );
    let m = stack.member().await;
    // 23:00 UTC on the 1st is the 2nd in Tokyo.
    stack.purchase(m, 1_000, at(2026, 5, 1, 23)).await;
    stack.purchase(m, 1_000, at(2026, 5, 2, 1)).await;
    let utc = stack
        .metrics_until(m, "two purchases", |x| x.orders == 2)
        .await;
    assert_eq!(utc.purchase_days, 2);
    stack.settings("Asia/Tokyo").await;
    eventually(WAIT, "Tokyo days", || async {
        let m = stack.metrics(m).await.ok()?;
        (m.purchase_days == 1).then_some(())
    })
    .await;
}
