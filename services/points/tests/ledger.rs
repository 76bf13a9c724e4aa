//! The ledger over gRPC against real Postgres and Redis: earn, redeem,
//! hold/capture/release, reverse, adjust, transfer, the statement and the
//! liability report; every test ends with the ledger's invariants checked.

mod common;

use common::{fields, reason, req, rid, spawn};
use laurel_proto::{common::v1::Money, points::v1 as pb};
use tonic::Code;

fn eur(amount_minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: "EUR".into(),
        amount_minor,
    })
}

#[tokio::test]
async fn earn_redeem_and_the_balance_agree_with_the_entries() {
    let stack = spawn().await;
    let m = stack.member().await;
    let earned = stack.give(m, 1_240).await;
    assert_eq!(earned.balance.as_ref().unwrap().available, 1_240);
    let movement = earned.movement.unwrap();
    assert_eq!(movement.points, 1_240);
    assert_eq!(movement.entries.iter().map(|e| e.points).sum::<i64>(), 0);
    assert_eq!(stack.balance(m).await.available, 1_240);

    let mut points = stack.points.clone();
    let redeemed = points
        .redeem(req(pb::RedeemRequest {
            request_id: rid(),
            member_id: m.to_string(),
            target: Some(pb::redeem_request::Target::Order(pb::OrderDiscount {
                order_id: "o-1".into(),
                order_total: eur(10_000),
            })),
            points: 1_240,
            reason: String::new(),
        }))
        .await
        .expect("spends exactly what it shows")
        .into_inner();
    assert_eq!(redeemed.balance.unwrap().available, 0);
    assert_eq!(redeemed.discount.unwrap().amount_minor, 1_240);
    let refused = points
        .redeem(req(pb::RedeemRequest {
            request_id: rid(),
            member_id: m.to_string(),
            target: Some(pb::redeem_request::Target::Order(pb::OrderDiscount {
                order_id: "o-2".into(),
                order_total: eur(10_000),
            })),
            points: 1,
            reason: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "INSUFFICIENT_POINTS");
    assert_eq!(stack.balance(m).await.available, 0);
    stack.assert_ledger_consistent().await;
}

#[tokio::test]
async fn a_retried_request_changes_nothing_and_a_reused_id_fails() {
    let stack = spawn().await;
    let m = stack.member().await;
    let mut points = stack.points.clone();
    let earn = pb::EarnRequest {
        request_id: rid(),
        member_id: m.to_string(),
        kind: pb::EarnKind::Goodwill as i32,
        points: 100,
        reason: "sorry".into(),
        ..Default::default()
    };
    let first = points.earn(req(earn.clone())).await.unwrap().into_inner();
    let again = points.earn(req(earn.clone())).await.unwrap().into_inner();
    assert_eq!(first, again);
    assert_eq!(stack.balance(m).await.available, 100);
    let other = points
        .earn(req(pb::EarnRequest { points: 5, ..earn }))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::AlreadyExists);
    assert_eq!(stack.balance(m).await.available, 100);
    stack.assert_ledger_consistent().await;
}

#[tokio::test]
async fn holds_capture_part_and_give_back_the_rest() {
    let stack = spawn().await;
    let m = stack.member().await;
    stack.give(m, 500).await;
    let mut points = stack.points.clone();
    let hold = points
        .hold(req(pb::HoldRequest {
            request_id: rid(),
            member_id: m.to_string(),
            points: 300,
            timeout: None,
            reference: "checkout-1".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    let balance = hold.balance.unwrap();
    assert_eq!(
        (balance.available, balance.held, balance.total),
        (200, 300, 500)
    );
    let hold_id = hold.hold.unwrap().hold_id;
    let too_much = points
        .capture(req(pb::CaptureRequest {
            request_id: rid(),
            hold_id: hold_id.clone(),
            points: 301,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(too_much.code(), Code::InvalidArgument);
    assert_eq!(fields(&too_much), ["points"]);
    let captured = points
        .capture(req(pb::CaptureRequest {
            request_id: rid(),
            hold_id: hold_id.clone(),
            points: 120,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let balance = captured.balance.unwrap();
    assert_eq!(
        (balance.available, balance.held, balance.total),
        (380, 0, 380)
    );
    let twice = points
        .release(req(pb::ReleaseRequest {
            request_id: rid(),
            hold_id,
        }))
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Code::FailedPrecondition);
    stack.assert_ledger_consistent().await;
}

#[tokio::test]
async fn an_expired_hold_cannot_be_captured_and_releases_itself() {
    let stack = spawn().await;
    let m = stack.member().await;
    stack.give(m, 50).await;
    let mut points = stack.points.clone();
    let hold = points
        .hold(req(pb::HoldRequest {
            request_id: rid(),
            member_id: m.to_string(),
            points: 50,
            timeout: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
            reference: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    stack.clock.advance(chrono::Duration::seconds(61));
    let late = points
        .capture(req(pb::CaptureRequest {
            request_id: rid(),
            hold_id: hold.hold.unwrap().hold_id,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert_eq!(reason(&late), "HOLD_EXPIRED");
    common::eventually(
        std::time::Duration::from_secs(10),
        "the hold expires by itself",
        || async {
            let b = stack.balance(m).await;
            (b.available == 50 && b.held == 0).then_some(())
        },
    )
    .await;
    stack.assert_ledger_consistent().await;
}

#[tokio::test]
async fn transfers_move_points_and_bad_input_changes_nothing() {
    let stack = spawn().await;
    let (a, b) = (stack.member().await, stack.member().await);
    stack.give(a, 70).await;
    let mut points = stack.points.clone();
    let moved = points
        .transfer(req(pb::TransferRequest {
            request_id: rid(),
            from_member_id: a.to_string(),
            to_member_id: b.to_string(),
            points: 30,
            reason: "gift".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.from_balance.unwrap().available, 40);
    assert_eq!(moved.to_balance.unwrap().available, 30);
    for (points_value, field) in [(0, "points"), (-5, "points"), (i64::MAX, "points")] {
        let bad = points
            .transfer(req(pb::TransferRequest {
                request_id: rid(),
                from_member_id: a.to_string(),
                to_member_id: b.to_string(),
                points: points_value,
                reason: String::new(),
            }))
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert_eq!(fields(&bad), [field]);
    }
    let unknown = points
        .earn(req(pb::EarnRequest {
            request_id: rid(),
            member_id: uuid::Uuid::now_v7().to_string(),
            kind: pb::EarnKind::Goodwill as i32,
            points: 5,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(stack.balance(a).await.available, 40);
    stack.assert_ledger_consistent().await;
}

#[tokio::test]
async fn every_mutation_replays_its_first_answer_and_changes_nothing_again() {
    let stack = spawn().await;
    let (m, n) = (stack.member().await, stack.member().await);
    stack.give(m, 1_000).await;
    let mut points = stack.points.clone();
    let redeem = pb::RedeemRequest {
        request_id: rid(),
        member_id: m.to_string(),
        target: Some(pb::redeem_request::Target::Order(pb::OrderDiscount {
            order_id: "r-1".into(),
            order_total: eur(10_000),
        })),
        points: 100,
        reason: String::new(),
    };
    let first = points
        .redeem(req(redeem.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        points
            .redeem(req(redeem.clone()))
            .await
            .unwrap()
            .into_inner(),
        first
    );
    let hold = pb::HoldRequest {
        request_id: rid(),
        member_id: m.to_string(),
        points: 200,
        timeout: None,
        reference: String::new(),
    };
    let held = points.hold(req(hold.clone())).await.unwrap().into_inner();
    assert_eq!(
        points.hold(req(hold.clone())).await.unwrap().into_inner(),
        held
    );
    let capture = pb::CaptureRequest {
        request_id: rid(),
        hold_id: held.hold.unwrap().hold_id,
        points: 150,
        ..Default::default()
    };
    let captured = points
        .capture(req(capture.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        points
            .capture(req(capture.clone()))
            .await
            .unwrap()
            .into_inner(),
        captured
    );
    let reverse = pb::ReverseRequest {
        request_id: rid(),
        target: Some(pb::reverse_request::Target::RedemptionMovementId(
            captured.movement.unwrap().movement_id,
        )),
        reason: String::new(),
    };
    let reversed = points
        .reverse(req(reverse.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        points
            .reverse(req(reverse.clone()))
            .await
            .unwrap()
            .into_inner(),
        reversed
    );
    let transfer = pb::TransferRequest {
        request_id: rid(),
        from_member_id: m.to_string(),
        to_member_id: n.to_string(),
        points: 300,
        reason: String::new(),
    };
    let moved = points
        .transfer(req(transfer.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        points
            .transfer(req(transfer.clone()))
            .await
            .unwrap()
            .into_inner(),
        moved
    );
    let adjust = pb::AdjustRequest {
        request_id: rid(),
        member_id: n.to_string(),
        points: -50,
        reason: "correction".into(),
        operator: "ops".into(),
    };
    let adjusted = points
        .adjust(req(adjust.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        points
            .adjust(req(adjust.clone()))
            .await
            .unwrap()
            .into_inner(),
        adjusted
    );
    // 1000 - 100 redeemed - 150 captured + 150 reversed - 300 transferred.
    assert_eq!(stack.balance(m).await.available, 600);
    assert_eq!(stack.balance(n).await.available, 250);
    // A reused id with another payload fails and changes nothing.
    let reused = points
        .transfer(req(pb::TransferRequest {
            points: 1,
            ..transfer
        }))
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::AlreadyExists);
    assert_eq!(stack.balance(m).await.available, 600);
    let movements: i64 = sqlx::query_scalar("SELECT count(*) FROM movements")
        .fetch_one(&stack.db)
        .await
        .unwrap();
    assert_eq!(
        movements, 6,
        "earn, redeem, capture, reversal, transfer, adjustment: once each"
    );
    stack.assert_ledger_consistent().await;
}

#[tokio::test]
async fn a_balance_read_after_a_write_is_never_older_than_the_write() {
    // Without the relay nothing but the write path itself moves the card.
    let stack = common::spawn_with(common::Options {
        no_points_relay: true,
        ..Default::default()
    })
    .await;
    let m = stack.member().await;
    stack.give(m, 100).await;
    for round in 1..=5 {
        assert_eq!(
            stack.balance(m).await.available,
            100 * round,
            "read twice: the card is warm"
        );
        assert_eq!(stack.balance(m).await.available, 100 * round);
        stack.give(m, 100).await;
    }
    assert_eq!(stack.balance(m).await.available, 600);
}
