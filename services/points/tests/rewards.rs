//! The rewards catalogue over gRPC against real Postgres and Redis:
//! creating, reading, listing and changing rewards; redeeming them for
//! points (stock, validity, per-member limits, concurrency, retries); and
//! fulfilling or cancelling redemptions. Tests that move points end with
//! the ledger's invariants checked.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::{Stack, eventually, fields, reason, req, rid, spawn};
use laurel_proto::{common::v1::EventEnvelope, points::v1 as pb};
use laurel_runtime::clock::Clock;
use prost::Message;
use tonic::{Code, Status};
use uuid::Uuid;

fn ts(at: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_micros() as i32 * 1_000,
    })
}

/// An active reward, redeemable now and forever.
fn reward(name: &str, points_price: i64, stock: i64) -> pb::Reward {
    pb::Reward {
        name: name.into(),
        description: format!("a {name}"),
        points_price,
        stock,
        active: true,
        ..Default::default()
    }
}

async fn create(stack: &Stack, reward: pb::Reward) -> pb::Reward {
    stack
        .points
        .clone()
        .create_reward(req(pb::CreateRewardRequest {
            request_id: rid(),
            reward: Some(reward),
        }))
        .await
        .expect("reward created")
        .into_inner()
        .reward
        .unwrap()
}

async fn get(stack: &Stack, reward_id: &str) -> pb::Reward {
    stack
        .points
        .clone()
        .get_reward(req(pb::GetRewardRequest {
            reward_id: reward_id.into(),
        }))
        .await
        .expect("reward read")
        .into_inner()
        .reward
        .unwrap()
}

fn redeem_request(member: Uuid, reward_id: &str, quantity: i64) -> pb::RedeemRequest {
    pb::RedeemRequest {
        request_id: rid(),
        member_id: member.to_string(),
        target: Some(pb::redeem_request::Target::Reward(pb::RewardChoice {
            reward_id: reward_id.into(),
            quantity,
        })),
        points: 0,
        reason: String::new(),
    }
}

async fn redeem(
    stack: &Stack,
    member: Uuid,
    reward_id: &str,
    quantity: i64,
) -> Result<pb::RedeemResponse, Status> {
    stack
        .points
        .clone()
        .redeem(req(redeem_request(member, reward_id, quantity)))
        .await
        .map(|r| r.into_inner())
}

async fn fulfil(
    stack: &Stack,
    redemption_id: &str,
    status: pb::FulfilmentStatus,
) -> Result<pb::RewardRedemption, Status> {
    stack
        .points
        .clone()
        .update_fulfilment(req(pb::UpdateFulfilmentRequest {
            request_id: rid(),
            redemption_id: redemption_id.into(),
            fulfilment_status: status as i32,
        }))
        .await
        .map(|r| r.into_inner().redemption.unwrap())
}

/// The member's balance as the ledger holds it (the card is refreshed
/// asynchronously, so it is not what these tests compare).
async fn points(stack: &Stack, member: Uuid) -> i64 {
    sqlx::query_scalar("SELECT COALESCE((SELECT balance FROM accounts WHERE member_id = $1), 0)")
        .bind(member)
        .fetch_one(&stack.db)
        .await
        .unwrap()
}

async fn redemption_rows(stack: &Stack) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM reward_redemptions")
        .fetch_one(&stack.db)
        .await
        .unwrap()
}

/// Each lot of the member with what is left in it, oldest first.
async fn lots(stack: &Stack, member: Uuid) -> Vec<(Uuid, i64)> {
    sqlx::query_as(
        "SELECT lot_id, remaining FROM lots WHERE member_id = $1 ORDER BY earned_at, lot_id",
    )
    .bind(member)
    .fetch_all(&stack.db)
    .await
    .unwrap()
}

async fn list(stack: &Stack, redeemable_only: bool) -> Vec<String> {
    stack
        .points
        .clone()
        .list_rewards(req(pb::ListRewardsRequest {
            page_size: 0,
            page_token: String::new(),
            redeemable_only,
        }))
        .await
        .unwrap()
        .into_inner()
        .rewards
        .into_iter()
        .map(|r| r.name)
        .collect()
}

fn refused(result: Result<impl std::fmt::Debug, Status>, code: Code, why: &str) -> Status {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(reason(&status), why, "{status:?}");
    status
}

/// The one event of `event_type` in the outbox, about `member`.
async fn published_once<T: prost::Name + Default>(
    stack: &Stack,
    event_type: &str,
    member: Uuid,
) -> T {
    let envelopes: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT envelope FROM outbox WHERE event_type = $1")
            .bind(event_type)
            .fetch_all(&stack.db)
            .await
            .unwrap();
    assert_eq!(envelopes.len(), 1, "{event_type}");
    let envelope = EventEnvelope::decode(envelopes[0].as_slice()).unwrap();
    assert_eq!(envelope.member_id, member.to_string());
    envelope.payload.unwrap().to_msg().unwrap()
}

#[tokio::test]
async fn a_created_reward_reads_back_and_a_retried_create_makes_no_second() {
    let stack = spawn().await;
    let mut client = stack.points.clone();
    let request = pb::CreateRewardRequest {
        request_id: rid(),
        reward: Some(pb::Reward {
            limit_period: pb::Period::Month as i32,
            per_member_limit: 2,
            valid_until: ts(stack.clock.now() + Duration::days(30)),
            ..reward("  Mug  ", 500, 10)
        }),
    };
    let created = client
        .create_reward(req(request.clone()))
        .await
        .unwrap()
        .into_inner()
        .reward
        .unwrap();
    let id = Uuid::parse_str(&created.reward_id).unwrap();
    assert_eq!(id.get_version_num(), 7, "reward ids are UUIDv7");
    assert_eq!(
        (
            created.name.as_str(),
            created.points_price,
            created.stock,
            created.version
        ),
        ("Mug", 500, 10, 1)
    );
    assert_eq!(
        (created.per_member_limit, created.limit_period),
        (2, pb::Period::Month as i32)
    );
    assert!(created.created_at.is_some());
    assert_eq!(get(&stack, &created.reward_id).await, created);

    let again = client
        .create_reward(req(request.clone()))
        .await
        .unwrap()
        .into_inner()
        .reward
        .unwrap();
    assert_eq!(again, created, "a retry returns the first answer");
    assert_eq!(list(&stack, false).await, ["Mug"], "and creates nothing");
    let reused = client
        .create_reward(req(pb::CreateRewardRequest {
            reward: Some(reward("Cap", 1, 1)),
            ..request
        }))
        .await;
    refused(reused, Code::AlreadyExists, "REQUEST_ID_REUSED");
}

#[tokio::test]
async fn a_bad_reward_is_refused_with_each_field_named() {
    let stack = spawn().await;
    let mut client = stack.points.clone();
    let now = stack.clock.now();
    let bad = pb::Reward {
        name: " ".into(),
        points_price: 0,
        stock: -1,
        per_member_limit: -3,
        limit_period: 42,
        valid_from: ts(now),
        valid_until: ts(now - Duration::seconds(1)),
        ..Default::default()
    };
    let status = client
        .create_reward(req(pb::CreateRewardRequest {
            request_id: String::new(),
            reward: Some(bad),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        fields(&status),
        [
            "request_id",
            "reward.name",
            "reward.points_price",
            "reward.stock",
            "reward.per_member_limit",
            "reward.limit_period",
            "reward.valid_until"
        ]
    );
    for (r, field) in [
        (
            pb::Reward {
                name: "x".repeat(201),
                ..reward("", 1, 1)
            },
            "reward.name",
        ),
        (
            pb::Reward {
                points_price: 1_000_000_000_001,
                ..reward("a", 1, 1)
            },
            "reward.points_price",
        ),
        (
            pb::Reward {
                stock: 1_000_000_000_001,
                ..reward("a", 1, 1)
            },
            "reward.stock",
        ),
    ] {
        let status = client
            .create_reward(req(pb::CreateRewardRequest {
                request_id: rid(),
                reward: Some(r),
            }))
            .await
            .unwrap_err();
        assert_eq!(fields(&status), [field]);
    }
    let status = client
        .create_reward(req(pb::CreateRewardRequest {
            request_id: rid(),
            reward: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(fields(&status), ["reward"]);
    let status = client
        .get_reward(req(pb::GetRewardRequest {
            reward_id: "mug".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), fields(&status)),
        (Code::InvalidArgument, vec!["reward_id".to_owned()])
    );
    refused(
        client
            .get_reward(req(pb::GetRewardRequest {
                reward_id: Uuid::now_v7().to_string(),
            }))
            .await,
        Code::NotFound,
        "REWARD_NOT_FOUND",
    );
    assert!(list(&stack, false).await.is_empty(), "nothing was created");
}

#[tokio::test]
async fn an_update_changes_only_the_masked_fields_and_raises_the_version() {
    let stack = spawn().await;
    let mut client = stack.points.clone();
    let created = create(&stack, reward("Mug", 500, 10)).await;
    let update = pb::UpdateRewardRequest {
        request_id: rid(),
        reward: Some(pb::Reward {
            reward_id: created.reward_id.clone(),
            name: "Big mug".into(),
            stock: 25,
            points_price: 1, // not in the mask: ignored
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["name".into(), "stock".into()],
        }),
    };
    let updated = client
        .update_reward(req(update.clone()))
        .await
        .unwrap()
        .into_inner()
        .reward
        .unwrap();
    assert_eq!(
        updated,
        pb::Reward {
            name: "Big mug".into(),
            stock: 25,
            version: 2,
            ..created.clone()
        }
    );
    let again = client
        .update_reward(req(update.clone()))
        .await
        .unwrap()
        .into_inner()
        .reward
        .unwrap();
    assert_eq!(again, updated, "a retried update is not applied twice");
    assert_eq!(get(&stack, &created.reward_id).await.version, 2);

    let deactivated = client
        .update_reward(req(pb::UpdateRewardRequest {
            request_id: rid(),
            reward: Some(pb::Reward {
                reward_id: created.reward_id.clone(),
                active: false,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["active".into()],
            }),
        }))
        .await
        .unwrap()
        .into_inner()
        .reward
        .unwrap();
    assert_eq!(
        (
            deactivated.active,
            deactivated.version,
            deactivated.name.as_str()
        ),
        (false, 3, "Big mug")
    );

    // Bad paths and values are named; the window is checked against the
    // stored reward.
    let status = client
        .update_reward(req(pb::UpdateRewardRequest {
            request_id: rid(),
            reward: Some(pb::Reward {
                reward_id: created.reward_id.clone(),
                stock: -1,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["stock".into(), "created_at".into()],
            }),
        }))
        .await
        .unwrap_err();
    assert_eq!(fields(&status), ["update_mask.paths[1]", "reward.stock"]);
    let status = client
        .update_reward(req(pb::UpdateRewardRequest {
            request_id: rid(),
            reward: Some(pb::Reward {
                reward_id: created.reward_id.clone(),
                ..Default::default()
            }),
            update_mask: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(fields(&status), ["update_mask"]);
    let now = stack.clock.now();
    client
        .update_reward(req(pb::UpdateRewardRequest {
            request_id: rid(),
            reward: Some(pb::Reward {
                reward_id: created.reward_id.clone(),
                valid_from: ts(now),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["valid_from".into()],
            }),
        }))
        .await
        .unwrap();
    let status = client
        .update_reward(req(pb::UpdateRewardRequest {
            request_id: rid(),
            reward: Some(pb::Reward {
                reward_id: created.reward_id.clone(),
                valid_until: ts(now - Duration::days(1)),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["valid_until".into()],
            }),
        }))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), fields(&status)),
        (Code::InvalidArgument, vec!["reward.valid_until".to_owned()])
    );
    assert_eq!(
        get(&stack, &created.reward_id).await.version,
        4,
        "a refused update changes nothing"
    );
    let missing = client
        .update_reward(req(pb::UpdateRewardRequest {
            request_id: rid(),
            reward: Some(pb::Reward {
                reward_id: Uuid::now_v7().to_string(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["active".into()],
            }),
        }))
        .await;
    refused(missing, Code::NotFound, "REWARD_NOT_FOUND");
}

#[tokio::test]
async fn the_catalogue_pages_oldest_first_and_can_show_only_what_is_redeemable_now() {
    let stack = spawn().await;
    let now = stack.clock.now();
    create(&stack, reward("open", 10, 5)).await;
    create(
        &stack,
        pb::Reward {
            active: false,
            ..reward("inactive", 10, 5)
        },
    )
    .await;
    create(&stack, reward("sold out", 10, 0)).await;
    create(
        &stack,
        pb::Reward {
            valid_from: ts(now + Duration::days(1)),
            ..reward("coming", 10, 5)
        },
    )
    .await;
    create(
        &stack,
        pb::Reward {
            valid_until: ts(now),
            ..reward("over", 10, 5)
        },
    )
    .await;
    create(
        &stack,
        pb::Reward {
            valid_from: ts(now),
            valid_until: ts(now + Duration::days(1)),
            ..reward("in window", 10, 5)
        },
    )
    .await;

    assert_eq!(list(&stack, true).await, ["open", "in window"]);
    let mut client = stack.points.clone();
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_rewards(req(pb::ListRewardsRequest {
                page_size: 4,
                page_token: token,
                redeemable_only: false,
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(page.rewards.len() <= 4);
        names.extend(page.rewards.into_iter().map(|r| r.name));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(
        names,
        [
            "open",
            "inactive",
            "sold out",
            "coming",
            "over",
            "in window"
        ]
    );
    let bad = client
        .list_rewards(req(pb::ListRewardsRequest {
            page_size: -1,
            page_token: "%%".into(),
            redeemable_only: false,
        }))
        .await
        .unwrap_err();
    assert_eq!(fields(&bad), ["page_size", "page_token"]);

    stack.clock.advance(Duration::days(2));
    assert_eq!(
        list(&stack, true).await,
        ["open", "coming"],
        "the window is judged by the clock"
    );
}

#[tokio::test]
async fn redeeming_takes_the_stock_and_the_points_and_records_a_pending_redemption() {
    let stack = spawn().await;
    let m = stack.member().await;
    stack.give(m, 1_000).await;
    let mug = create(&stack, reward("Mug", 300, 5)).await;
    // Read once, so the member's card is filled before the spend.
    eventually(
        std::time::Duration::from_secs(5),
        "the card shows the earn",
        || async { (stack.balance(m).await.available == 1_000).then_some(()) },
    )
    .await;

    let redeemed = redeem(&stack, m, &mug.reward_id, 2).await.unwrap();
    let movement = redeemed.movement.unwrap();
    assert_eq!(movement.points, -600);
    assert_eq!(movement.r#type, pb::MovementType::Redeem as i32);
    assert_eq!(redeemed.balance.unwrap().available, 400);
    assert_eq!(redeemed.discount, None);
    let redemption = redeemed.reward_redemption.unwrap();
    assert_eq!(
        (
            redemption.reward_id.as_str(),
            redemption.member_id.clone(),
            redemption.quantity,
            redemption.points
        ),
        (mug.reward_id.as_str(), m.to_string(), 2, 600)
    );
    assert_eq!(redemption.movement_id, movement.movement_id);
    assert_eq!(
        redemption.fulfilment_status,
        pb::FulfilmentStatus::Pending as i32
    );
    assert_eq!(
        Uuid::parse_str(&redemption.redemption_id)
            .unwrap()
            .get_version_num(),
        7
    );

    let after = get(&stack, &mug.reward_id).await;
    assert_eq!(
        (after.stock, after.version),
        (3, 2),
        "stock changes are changes"
    );
    assert_eq!(points(&stack, m).await, 400);
    // The member's card follows (its PointsMoved event left with the spend).
    eventually(
        std::time::Duration::from_secs(5),
        "the card shows the spend",
        || async { (stack.balance(m).await.available == 400).then_some(()) },
    )
    .await;

    let mut client = stack.points.clone();
    for (reward_id, member_id) in [
        (mug.reward_id.clone(), String::new()),
        (String::new(), m.to_string()),
        (mug.reward_id.clone(), m.to_string()),
    ] {
        let listed = client
            .list_reward_redemptions(req(pb::ListRewardRedemptionsRequest {
                reward_id,
                member_id,
                page_size: 0,
                page_token: String::new(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.redemptions, std::slice::from_ref(&redemption));
    }

    // The redemption is announced to other services.
    let event: pb::RewardRedeemed = published_once(&stack, "points.RewardRedeemed", m).await;
    assert_eq!(event.redemption, Some(redemption));
    stack.assert_ledger_consistent().await;
}

#[tokio::test]
async fn a_refused_redemption_says_why_and_changes_nothing() {
    let stack = spawn().await;
    let m = stack.member().await;
    stack.give(m, 1_000).await;
    let now = stack.clock.now();
    let one_left = create(&stack, reward("last one", 10, 1)).await;
    let sold_out = create(&stack, reward("sold out", 10, 0)).await;
    let inactive = create(
        &stack,
        pb::Reward {
            active: false,
            ..reward("inactive", 10, 5)
        },
    )
    .await;
    let coming = create(
        &stack,
        pb::Reward {
            valid_from: ts(now + Duration::hours(1)),
            ..reward("coming", 10, 5)
        },
    )
    .await;
    let ending = create(
        &stack,
        pb::Reward {
            valid_until: ts(now + Duration::hours(1)),
            ..reward("ending", 10, 5)
        },
    )
    .await;
    let dear = create(&stack, reward("dear", 1_001, 5)).await;

    let cases = [
        (
            &one_left,
            2,
            Code::FailedPrecondition,
            "REWARD_UNAVAILABLE",
            "not enough stock left for this quantity",
        ),
        (
            &sold_out,
            1,
            Code::FailedPrecondition,
            "REWARD_UNAVAILABLE",
            "the reward is out of stock",
        ),
        (
            &inactive,
            1,
            Code::FailedPrecondition,
            "REWARD_UNAVAILABLE",
            "the reward is inactive",
        ),
        (
            &coming,
            1,
            Code::FailedPrecondition,
            "REWARD_UNAVAILABLE",
            "the reward is not yet valid",
        ),
        (
            &dear,
            1,
            Code::FailedPrecondition,
            "INSUFFICIENT_POINTS",
            "",
        ),
    ];
    for (r, quantity, code, why, message) in cases {
        let status = refused(redeem(&stack, m, &r.reward_id, quantity).await, code, why);
        assert!(status.message().contains(message), "{}: {status:?}", r.name);
        assert_eq!(
            get(&stack, &r.reward_id).await,
            *r,
            "{}: the reward is untouched",
            r.name
        );
    }
    stack.clock.advance(Duration::hours(1));
    let status = refused(
        redeem(&stack, m, &ending.reward_id, 1).await,
        Code::FailedPrecondition,
        "REWARD_UNAVAILABLE",
    );
    assert!(
        status.message().contains("the reward has expired"),
        "{status:?}"
    );
    assert_eq!(get(&stack, &ending.reward_id).await, ending);
    refused(
        redeem(&stack, m, &Uuid::now_v7().to_string(), 1).await,
        Code::NotFound,
        "REWARD_NOT_FOUND",
    );

    // Bad input is named before anything is read.
    for (quantity, field) in [(0, "reward.quantity"), (1_001, "reward.quantity")] {
        let status = redeem(&stack, m, &one_left.reward_id, quantity)
            .await
            .unwrap_err();
        assert_eq!(
            (status.code(), fields(&status)),
            (Code::InvalidArgument, vec![field.to_owned()])
        );
    }
    let status = redeem(&stack, m, "mug", 1).await.unwrap_err();
    assert_eq!(fields(&status), ["reward.reward_id"]);
    let status = stack
        .points
        .clone()
        .redeem(req(pb::RedeemRequest {
            points: 10,
            ..redeem_request(m, &one_left.reward_id, 1)
        }))
        .await
        .unwrap_err();
    assert_eq!(fields(&status), ["points"]);
    refused(
        redeem(&stack, Uuid::now_v7(), &one_left.reward_id, 1).await,
        Code::NotFound,
        "MEMBER_NOT_FOUND",
    );

    assert_eq!(points(&stack, m).await, 1_000);
    assert_eq!(redemption_rows(&stack).await, 0);
    stack.assert_ledger_consistent().await;
}

#[tokio::test]
async fn a_refused_spend_puts_the_stock_back_and_frees_the_request_id() {
    let stack = spawn().await;
    let m = stack.member().await;
    stack.give(m, 50).await;
    let mug = create(&stack, reward("Mug", 100, 3)).await;
    let request = redeem_request(m, &mug.reward_id, 1);
    let mut client = stack.points.clone();
    refused(
        client
            .redeem(req(request.clone()))
            .await
            .map(|r| r.into_inner()),
        Code::FailedPrecondition,
        "INSUFFICIENT_POINTS",
    );
    assert_eq!(
        get(&stack, &mug.reward_id).await,
        mug,
        "stock and version as before"
    );

    stack.give(m, 50).await;
    let redeemed = client
        .redeem(req(request))
        .await
        .expect("the same request_id, once the points are there")
        .into_inner();
    assert_eq!(redeemed.reward_redemption.unwrap().points, 100);
    assert_eq!(get(&stack, &mug.reward_id).await.stock, 2);
    assert_eq!(points(&stack, m).await, 0);
    stack.assert_ledger_consistent().await;
}

#[tokio::test]
async fn the_per_member_limit_counts_units_in_the_period_and_resets_with_the_next() {
    let stack = spawn().await;
    let (m, other) = (stack.member().await, stack.member().await);
    stack.give(m, 10_000).await;
    stack.give(other, 10_000).await;
    let daily = create(
        &stack,
        pb::Reward {
            per_member_limit: 3,
            limit_period: pb::Period::Day as i32,
            ..reward("coffee", 10, 100)
        },
    )
    .await;
    redeem(&stack, m, &daily.reward_id, 2).await.unwrap();
    let status = refused(
        redeem(&stack, m, &daily.reward_id, 2).await,
        Code::FailedPrecondition,
        "REWARD_LIMIT_REACHED",
    );
    assert!(
        status
            .message()
            .contains("at most 3 per member per day; 2 redeemed already"),
        "{status:?}"
    );
    redeem(&stack, m, &daily.reward_id, 1)
        .await
        .expect("the third unit fits");
    refused(
        redeem(&stack, m, &daily.reward_id, 1).await,
        Code::FailedPrecondition,
        "REWARD_LIMIT_REACHED",
    );
    redeem(&stack, other, &daily.reward_id, 3)
        .await
        .expect("the limit is per member");
    assert_eq!(
        get(&stack, &daily.reward_id).await.stock,
        94,
        "refusals took no stock"
    );
    assert_eq!(points(&stack, m).await, 10_000 - 30);

    stack.clock.advance(Duration::days(1));
    redeem(&stack, m, &daily.reward_id, 3)
        .await
        .expect("a new day, a new allowance");
    refused(
        redeem(&stack, m, &daily.reward_id, 1).await,
        Code::FailedPrecondition,
        "REWARD_LIMIT_REACHED",
    );

    // Without a period, the limit holds for the whole validity window.
    let once = create(
        &stack,
        pb::Reward {
            per_member_limit: 1,
            ..reward("welcome gift", 10, 100)
        },
    )
    .await;
    redeem(&stack, m, &once.reward_id, 1).await.unwrap();
    stack.clock.advance(Duration::days(400));
    let status = refused(
        redeem(&stack, m, &once.reward_id, 1).await,
        Code::FailedPrecondition,
        "REWARD_LIMIT_REACHED",
    );
    assert!(
        status.message().contains("while the reward is valid"),
        "{status:?}"
    );
    stack.assert_ledger_consistent().await;
}

/// Redeems, retrying what the service asks to retry (with the same
/// request_id, as a client would).
async fn redeem_retrying(
    stack: &Stack,
    request: pb::RedeemRequest,
) -> Result<pb::RedeemResponse, Status> {
    let mut client = stack.points.clone();
    for _ in 0..50 {
        match client.redeem(req(request.clone())).await {
            Err(s)
                if matches!(
                    s.code(),
                    Code::Unavailable | Code::Aborted | Code::ResourceExhausted
                ) =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            other => return other.map(|r| r.into_inner()),
        }
    }
    panic!("still asked to retry after 50 attempts");
}

#[tokio::test]
async fn concurrent_redemptions_never_take_more_than_the_stock() {
    let stack = spawn().await;
    let mut members = Vec::new();
    for _ in 0..40 {
        let m = stack.member().await;
        stack.give(m, 100).await;
        members.push(m);
    }
    let mug = create(&stack, reward("Mug", 100, 10)).await;
    let stack = std::sync::Arc::new(stack);
    let tasks: Vec<_> = members
        .iter()
        .map(|m| {
            let (stack, request) = (stack.clone(), redeem_request(*m, &mug.reward_id, 1));
            tokio::spawn(async move { redeem_retrying(&stack, request).await })
        })
        .collect();
    let mut won = Vec::new();
    for (m, task) in members.iter().zip(tasks) {
        match task.await.unwrap() {
            Ok(r) => {
                assert_eq!(r.balance.unwrap().available, 0);
                won.push(*m);
            }
            Err(s) => {
                assert_eq!(
                    (s.code(), reason(&s).as_str()),
                    (Code::FailedPrecondition, "REWARD_UNAVAILABLE"),
                    "{s:?}"
                );
                assert!(s.message().contains("out of stock"), "{s:?}");
            }
        }
    }
    assert_eq!(won.len(), 10, "exactly the stock was sold");
    assert_eq!(get(&stack, &mug.reward_id).await.stock, 0);
    assert_eq!(redemption_rows(&stack).await, 10);
    for m in &members {
        assert_eq!(
            points(&stack, *m).await,
            if won.contains(m) { 0 } else { 100 },
            "member {m}"
        );
    }
    stack.assert_ledger_consistent().await;
}

#[tokio::test]
async fn concurrent_redemptions_by_one_member_stop_exactly_at_the_limit() {
    let stack = spawn().await;
    let m = stack.member().await;
    stack.give(m, 1_000).await;
    let capped = create(
        &stack,
        pb::Reward {
            per_member_limit: 3,
            limit_period: pb::Period::Year as i32,
            ..reward("cap", 10, 100)
        },
    )
    .await;
    let stack = std::sync::Arc::new(stack);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (stack, request) = (stack.clone(), redeem_request(m, &capped.reward_id, 1));
            tokio::spawn(async move { redeem_retrying(&stack, request).await })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(s) => assert_eq!(reason(&s), "REWARD_LIMIT_REACHED", "{s:?}"),
        }
    }
    assert_eq!(ok, 3);
    assert_eq!(get(&stack, &capped.reward_id).await.stock, 97);
    assert_eq!(points(&stack, m).await, 970);
    stack.assert_ledger_consistent().await;
}

#[tokio::test]
async fn a_retried_redemption_returns_the_first_answer_and_takes_nothing_twice() {
    let stack = spawn().await;
    let m = stack.member().await;
    stack.give(m, 1_000).await;
    let mug = create(&stack, reward("Mug", 100, 10)).await;
    let request = redeem_request(m, &mug.reward_id, 2);
    let first = redeem_retrying(&stack, request.clone()).await.unwrap();
    let again = redeem_retrying(&stack, request.clone()).await.unwrap();
    assert_eq!(again, first);

    // Retries racing each other: one redemption.
    let stack = std::sync::Arc::new(stack);
    let racing = redeem_request(m, &mug.reward_id, 1);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (stack, request) = (stack.clone(), racing.clone());
            tokio::spawn(async move { redeem_retrying(&stack, request).await.unwrap() })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "every retry sees the same redemption"
    );

    assert_eq!(get(&stack, &mug.reward_id).await.stock, 7);
    assert_eq!(points(&stack, m).await, 700);
    assert_eq!(redemption_rows(&stack).await, 2);
    let reused = stack
        .points
        .clone()
        .redeem(req(pb::RedeemRequest {
            target: Some(pb::redeem_request::Target::Reward(pb::RewardChoice {
                reward_id: mug.reward_id.clone(),
                quantity: 3,
            })),
            ..request
        }))
        .await
        .map(|r| r.into_inner());
    refused(reused, Code::AlreadyExists, "REQUEST_ID_REUSED");
    stack.assert_ledger_consistent().await;
}

#[tokio::test]
async fn cancelling_returns_the_points_to_their_lots_and_the_units_to_stock() {
    let stack = spawn().await;
    let m = stack.member().await;
    stack.give(m, 100).await;
    stack.clock.advance(Duration::hours(1));
    stack.give(m, 200).await;
    let before = lots(&stack, m).await;
    let capped = create(
        &stack,
        pb::Reward {
            per_member_limit: 2,
            ..reward("Mug", 125, 5)
        },
    )
    .await;
    let redeemed = redeem(&stack, m, &capped.reward_id, 2).await.unwrap();
    let redemption = redeemed.reward_redemption.unwrap();
    assert_eq!(points(&stack, m).await, 50);
    assert_ne!(lots(&stack, m).await, before);
    refused(
        redeem(&stack, m, &capped.reward_id, 1).await,
        Code::FailedPrecondition,
        "REWARD_LIMIT_REACHED",
    );

    let request = pb::UpdateFulfilmentRequest {
        request_id: rid(),
        redemption_id: redemption.redemption_id.clone(),
        fulfilment_status: pb::FulfilmentStatus::Cancelled as i32,
    };
    let mut client = stack.points.clone();
    let cancelled = client
        .update_fulfilment(req(request.clone()))
        .await
        .unwrap()
        .into_inner()
        .redemption
        .unwrap();
    assert_eq!(
        cancelled.fulfilment_status,
        pb::FulfilmentStatus::Cancelled as i32
    );
    assert_eq!(
        (cancelled.created_at, cancelled.points),
        (redemption.created_at, redemption.points)
    );
    assert_eq!(points(&stack, m).await, 300);
    assert_eq!(
        lots(&stack, m).await,
        before,
        "every point back in the lot it came from"
    );
    assert_eq!(get(&stack, &capped.reward_id).await.stock, 5);
    let reversal: (i16, i64, Option<Uuid>) = sqlx::query_as(
        "SELECT type, points, related_movement_id FROM movements WHERE member_id = $1 AND type = $2",
    )
    .bind(m)
    .bind(pb::MovementType::ReverseRedemption as i16)
    .fetch_one(&stack.db)
    .await
    .unwrap();
    assert_eq!(
        reversal,
        (
            pb::MovementType::ReverseRedemption as i16,
            250,
            Some(Uuid::parse_str(&redemption.movement_id).unwrap())
        )
    );

    let again = client
        .update_fulfilment(req(request))
        .await
        .unwrap()
        .into_inner()
        .redemption
        .unwrap();
    assert_eq!(again, cancelled, "a retried cancel returns nothing twice");
    assert_eq!(points(&stack, m).await, 300);
    // The cancellation is announced once, the retry adds nothing.
    let event: pb::RewardFulfilmentChanged =
        published_once(&stack, "points.RewardFulfilmentChanged", m).await;
    assert_eq!(event.redemption, Some(cancelled.clone()));
    refused(
        fulfil(
            &stack,
            &redemption.redemption_id,
            pb::FulfilmentStatus::Cancelled,
        )
        .await,
        Code::FailedPrecondition,
        "REDEMPTION_NOT_PENDING",
    );
    refused(
        fulfil(
            &stack,
            &redemption.redemption_id,
            pb::FulfilmentStatus::Fulfilled,
        )
        .await,
        Code::FailedPrecondition,
        "REDEMPTION_NOT_PENDING",
    );

    redeem(&stack, m, &capped.reward_id, 2)
        .await
        .expect("cancelled units do not count against the limit");
    assert_eq!(get(&stack, &capped.reward_id).await.stock, 3);
    stack.assert_ledger_consistent().await;
}

#[tokio::test]
async fn a_fulfilled_redemption_is_final() {
    let stack = spawn().await;
    let m = stack.member().await;
    stack.give(m, 100).await;
    let mug = create(&stack, reward("Mug", 100, 1)).await;
    let redemption = redeem(&stack, m, &mug.reward_id, 1)
        .await
        .unwrap()
        .reward_redemption
        .unwrap();
    stack.clock.advance(Duration::minutes(5));
    let fulfilled = fulfil(
        &stack,
        &redemption.redemption_id,
        pb::FulfilmentStatus::Fulfilled,
    )
    .await
    .unwrap();
    assert_eq!(
        fulfilled.fulfilment_status,
        pb::FulfilmentStatus::Fulfilled as i32
    );
    assert!(
        fulfilled.updated_at.as_ref().unwrap().seconds
            >= redemption.created_at.as_ref().unwrap().seconds + 300
    );
    let status = refused(
        fulfil(
            &stack,
            &redemption.redemption_id,
            pb::FulfilmentStatus::Cancelled,
        )
        .await,
        Code::FailedPrecondition,
        "REDEMPTION_NOT_PENDING",
    );
    assert!(status.message().contains("fulfilled already"), "{status:?}");
    assert_eq!(
        points(&stack, m).await,
        0,
        "a fulfilled reward keeps its points"
    );
    assert_eq!(get(&stack, &mug.reward_id).await.stock, 0);

    for status in [
        pb::FulfilmentStatus::Pending,
        pb::FulfilmentStatus::Unspecified,
    ] {
        let s = fulfil(&stack, &redemption.redemption_id, status)
            .await
            .unwrap_err();
        assert_eq!(
            (s.code(), fields(&s)),
            (Code::InvalidArgument, vec!["fulfilment_status".to_owned()])
        );
    }
    let s = fulfil(&stack, "nope", pb::FulfilmentStatus::Fulfilled)
        .await
        .unwrap_err();
    assert_eq!(fields(&s), ["redemption_id"]);
    refused(
        fulfil(
            &stack,
            &Uuid::now_v7().to_string(),
            pb::FulfilmentStatus::Fulfilled,
        )
        .await,
        Code::NotFound,
        "REDEMPTION_NOT_FOUND",
    );
    stack.assert_ledger_consistent().await;
}

#[tokio::test]
async fn redemptions_page_newest_first_by_reward_and_by_member() {
    let stack = spawn().await;
    let (m, other) = (stack.member().await, stack.member().await);
    stack.give(m, 1_000).await;
    stack.give(other, 1_000).await;
    let (mug, cap) = (
        create(&stack, reward("Mug", 10, 100)).await,
        create(&stack, reward("Cap", 10, 100)).await,
    );
    let mut mine = Vec::new();
    for r in [&mug, &cap, &mug, &cap, &mug] {
        mine.push(
            redeem(&stack, m, &r.reward_id, 1)
                .await
                .unwrap()
                .reward_redemption
                .unwrap()
                .redemption_id,
        );
        redeem(&stack, other, &r.reward_id, 1).await.unwrap();
        stack.clock.advance(Duration::seconds(1));
    }
    mine.reverse();

    let mut client = stack.points.clone();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_reward_redemptions(req(pb::ListRewardRedemptionsRequest {
                reward_id: String::new(),
                member_id: m.to_string(),
                page_size: 2,
                page_token: token,
            }))
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.redemptions.into_iter().map(|r| r.redemption_id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, mine, "the member's, newest first");
    let mugs_of_m = client
        .list_reward_redemptions(req(pb::ListRewardRedemptionsRequest {
            reward_id: mug.reward_id.clone(),
            member_id: m.to_string(),
            page_size: 0,
            page_token: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .redemptions;
    assert_eq!(
        mugs_of_m
            .iter()
            .map(|r| r.redemption_id.clone())
            .collect::<Vec<_>>(),
        [mine[0].clone(), mine[2].clone(), mine[4].clone()]
    );
    let all_mugs = client
        .list_reward_redemptions(req(pb::ListRewardRedemptionsRequest {
            reward_id: mug.reward_id.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .redemptions;
    assert_eq!(all_mugs.len(), 6);
    let bad = client
        .list_reward_redemptions(req(pb::ListRewardRedemptionsRequest {
            reward_id: "x".into(),
            member_id: "y".into(),
            page_size: -1,
            page_token: pagination_token("garbage"),
        }))
        .await
        .unwrap_err();
    assert_eq!(
        fields(&bad),
        ["reward_id", "member_id", "page_size", "page_token"]
    );
}

fn pagination_token(position: &str) -> String {
    laurel_runtime::pagination::encode_token(position)
}

#[tokio::test]
async fn a_rewards_movement_is_undone_by_cancelling_not_by_reverse() {
    let stack = spawn().await;
    let member = stack.member().await;
    stack.give(member, 500).await;
    let created = create(&stack, reward("mug", 200, 5)).await;
    let redeemed = redeem(&stack, member, &created.reward_id, 1)
        .await
        .expect("redeems");
    let movement_id = redeemed.movement.unwrap().movement_id;
    let refused = stack
        .points
        .clone()
        .reverse(req(pb::ReverseRequest {
            request_id: rid(),
            target: Some(pb::reverse_request::Target::RedemptionMovementId(
                movement_id,
            )),
            reason: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(common::fields(&refused), ["redemption_movement_id"]);
    assert_eq!(points(&stack, member).await, 300, "nothing came back");
    assert_eq!(get(&stack, &created.reward_id).await.stock, 4);
}
