//! ExportMovements over real gRPC: the programme's whole ledger history in
//! movement_id order, in batches, resumable, filtered, each movement as
//! the write that made it returned it, with its owner's balance after,
//! operators only.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::{Options, Stack, fields, reason, req, rid, spawn, spawn_with};
use laurel_proto::{common::v1::Money, points::v1 as pb};
use laurel_runtime::clock::Clock;
use tonic::Code;
use uuid::Uuid;

/// Every batch of an export, read to its end.
async fn export(
    stack: &Stack,
    request: pb::ExportMovementsRequest,
) -> Vec<pb::ExportMovementsResponse> {
    let mut stream = stack
        .points
        .clone()
        .export_movements(req(request))
        .await
        .expect("the export starts")
        .into_inner();
    let mut batches = Vec::new();
    while let Some(batch) = stream.message().await.expect("a batch") {
        batches.push(batch);
    }
    batches
}

/// The movement ids of `batches`, in the order received.
fn ids(batches: &[pb::ExportMovementsResponse]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| b.movements.iter().map(|m| m.movement_id.clone()))
        .collect()
}

/// The error an export answers with before its first batch.
async fn refused(
    stack: &Stack,
    request: tonic::Request<pb::ExportMovementsRequest>,
) -> tonic::Status {
    match stack.points.clone().export_movements(request).await {
        Ok(_) => panic!("the export started"),
        Err(status) => status,
    }
}

fn ts(at: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    })
}

/// Goodwill points for `member`, as if given at `at`.
async fn give_at(stack: &Stack, member: Uuid, points: i64, at: DateTime<Utc>) -> pb::Movement {
    stack
        .points
        .clone()
        .earn(req(pb::EarnRequest {
            request_id: rid(),
            member_id: member.to_string(),
            kind: pb::EarnKind::Goodwill as i32,
            points,
            reason: "welcome".into(),
            occurred_at: ts(at),
            ..Default::default()
        }))
        .await
        .expect("earn")
        .into_inner()
        .movement
        .unwrap()
}

/// `points` spent by `member` as a discount on an order.
async fn redeem(stack: &Stack, member: Uuid, points: i64) -> pb::Movement {
    stack
        .points
        .clone()
        .redeem(req(pb::RedeemRequest {
            request_id: rid(),
            member_id: member.to_string(),
            target: Some(pb::redeem_request::Target::Order(pb::OrderDiscount {
                order_id: format!("o-{}", rid()),
                order_total: Some(Money {
                    currency_code: "EUR".into(),
                    amount_minor: 100_000,
                }),
            })),
            points,
            reason: "discount".into(),
        }))
        .await
        .expect("redeem")
        .into_inner()
        .movement
        .unwrap()
}

async fn transfer(stack: &Stack, from: Uuid, to: Uuid, points: i64) -> pb::Movement {
    stack
        .points
        .clone()
        .transfer(req(pb::TransferRequest {
            request_id: rid(),
            from_member_id: from.to_string(),
            to_member_id: to.to_string(),
            points,
            reason: "gift".into(),
        }))
        .await
        .expect("transfer")
        .into_inner()
        .movement
        .unwrap()
}

async fn adjust(stack: &Stack, member: Uuid, points: i64) -> pb::Movement {
    stack
        .points
        .clone()
        .adjust(req(pb::AdjustRequest {
            request_id: rid(),
            member_id: member.to_string(),
            points,
            reason: "correction".into(),
            operator: "ops".into(),
        }))
        .await
        .expect("adjust")
        .into_inner()
        .movement
        .unwrap()
}

/// A member's statement, newest first.
async fn statement(stack: &Stack, member: Uuid) -> Vec<pb::StatementLine> {
    stack
        .points
        .clone()
        .list_entries(req(pb::ListEntriesRequest {
            member_id: member.to_string(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .lines
}

#[tokio::test]
async fn the_export_streams_every_movement_of_the_programme_in_recorded_order_in_batches() {
    let stack = spawn().await;
    let (ada, bob) = (stack.member().await, stack.member().await);
    let now = stack.clock.now();
    // Balances after, by hand: ada 100, bob 200, ada 70, ada 50 / bob 220,
    // bob 210, ada 55, bob 100.
    let made = vec![
        give_at(&stack, ada, 100, now).await,
        give_at(&stack, bob, 200, now).await,
        redeem(&stack, ada, 30).await,
        transfer(&stack, ada, bob, 20).await,
        adjust(&stack, bob, -10).await,
        adjust(&stack, ada, 5).await,
        redeem(&stack, bob, 110).await,
    ];

    let batches = export(
        &stack,
        pb::ExportMovementsRequest {
            batch_size: 3,
            ..Default::default()
        },
    )
    .await;

    let sizes: Vec<usize> = batches.iter().map(|b| b.movements.len()).collect();
    assert_eq!(sizes, [3, 3, 1]);
    let made_ids: Vec<String> = made.iter().map(|m| m.movement_id.clone()).collect();
    assert_eq!(ids(&batches), made_ids, "recorded order");
    let mut sorted = made_ids.clone();
    sorted.sort();
    assert_eq!(made_ids, sorted, "recorded order is movement_id order");
    for batch in &batches {
        assert_eq!(
            batch.last_movement_id,
            batch.movements.last().unwrap().movement_id
        );
        assert_eq!(batch.balances_after.len(), batch.movements.len());
    }
    // Each exported movement is what the write returned (and PointsMoved
    // carried): entries, reason, times, the transfer from its sender's side.
    let exported: Vec<&pb::Movement> = batches.iter().flat_map(|b| &b.movements).collect();
    for (exported, made) in exported.iter().zip(&made) {
        assert_eq!(*exported, made);
    }
    let gift = exported[3];
    assert_eq!(gift.r#type, pb::MovementType::Transfer as i32);
    assert_eq!(
        (gift.member_id.as_str(), gift.points),
        (ada.to_string().as_str(), -20)
    );
    assert_eq!(gift.counterparty_member_id, bob.to_string());
    assert_eq!(gift.entries.len(), 4);
    let balances: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.balances_after.iter().copied())
        .collect();
    assert_eq!(balances, [100, 200, 70, 50, 210, 55, 100]);

    // The owner's statement line shows the same movement and balance.
    for member in [ada, bob] {
        for line in statement(&stack, member).await {
            let movement = line.movement.unwrap();
            let i = exported
                .iter()
                .position(|m| m.movement_id == movement.movement_id)
                .expect("listed movements are exported");
            if exported[i].member_id != member.to_string() {
                // Bob's side of ada's transfer: exported once, from ada's.
                assert_eq!(i, 3);
                continue;
            }
            assert_eq!(*exported[i], movement);
            assert_eq!(balances[i], line.balance_after);
        }
    }
}

#[tokio::test]
async fn resuming_after_a_cursor_yields_exactly_the_rest() {
    let stack = spawn().await;
    let member = stack.member().await;
    for _ in 0..5 {
        stack.give(member, 10).await;
    }
    redeem(&stack, member, 25).await;
    let all = ids(&export(&stack, pb::ExportMovementsRequest::default()).await);
    assert_eq!(all.len(), 6);

    let first = export(
        &stack,
        pb::ExportMovementsRequest {
            batch_size: 2,
            ..Default::default()
        },
    )
    .await;
    let cursor = first[0].last_movement_id.clone();
    assert_eq!(cursor, all[1]);
    let rest = export(
        &stack,
        pb::ExportMovementsRequest {
            after_movement_id: cursor,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(&rest), all[2..]);

    // After the last movement there is nothing: the stream ends at once.
    let after_last = export(
        &stack,
        pb::ExportMovementsRequest {
            after_movement_id: all[5].clone(),
            ..Default::default()
        },
    )
    .await;
    assert!(after_last.is_empty());
}

#[tokio::test]
async fn a_programme_exports_its_own_movements_only() {
    let stack = spawn().await;
    assert!(
        export(&stack, pb::ExportMovementsRequest::default())
            .await
            .is_empty(),
        "no movements, no batch"
    );
    let member = stack.member().await;
    let own = stack.give(member, 10).await.movement.unwrap();
    // The same movement under another programme (and a later id).
    let other = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO movements (program_id, movement_id, member_id, type, points, earn_kind, reason,
            reference, order_id, related_movement_id, counterparty, occurred_at, recorded_at)
         SELECT 'other', $2, member_id, type, points, earn_kind, reason, reference, order_id,
            related_movement_id, counterparty, occurred_at, recorded_at
         FROM movements WHERE movement_id = $1",
    )
    .bind(Uuid::parse_str(&own.movement_id).unwrap())
    .bind(other)
    .execute(&stack.db)
    .await
    .unwrap();
    let exported = ids(&export(&stack, pb::ExportMovementsRequest::default()).await);
    assert_eq!(exported, [own.movement_id]);
}

#[tokio::test]
async fn type_and_business_time_filters_narrow_the_export() {
    let stack = spawn().await;
    let member = stack.member().await;
    let now = stack.clock.now();
    let day = Duration::days(1);
    let earned_3_days_ago = give_at(&stack, member, 100, now - day * 3).await;
    let earned_2_days_ago = give_at(&stack, member, 50, now - day * 2).await;
    let earned_yesterday = give_at(&stack, member, 20, now - day).await;
    let redeemed_now = redeem(&stack, member, 30).await;
    let adjusted_now = adjust(&stack, member, -5).await;
    let exported = |request| {
        let stack = &stack;
        async move { ids(&export(stack, request).await) }
    };

    let earns = exported(pb::ExportMovementsRequest {
        movement_types: vec![pb::MovementType::Earn as i32],
        ..Default::default()
    })
    .await;
    assert_eq!(
        earns,
        [
            earned_3_days_ago.movement_id.clone(),
            earned_2_days_ago.movement_id.clone(),
            earned_yesterday.movement_id.clone()
        ]
    );

    let spends = exported(pb::ExportMovementsRequest {
        movement_types: vec![
            pb::MovementType::Adjust as i32,
            pb::MovementType::Redeem as i32,
        ],
        ..Default::default()
    })
    .await;
    assert_eq!(
        spends,
        [
            redeemed_now.movement_id.clone(),
            adjusted_now.movement_id.clone()
        ]
    );

    // [from, to): two and one days ago; not three days ago, not now.
    let window = exported(pb::ExportMovementsRequest {
        occurred_from: ts(earned_2_days_ago.occurred_at_time()),
        occurred_to: ts(now - day / 2),
        ..Default::default()
    })
    .await;
    assert_eq!(
        window,
        [
            earned_2_days_ago.movement_id.clone(),
            earned_yesterday.movement_id.clone()
        ]
    );

    let from_only = exported(pb::ExportMovementsRequest {
        occurred_from: ts(now - day / 2),
        ..Default::default()
    })
    .await;
    assert_eq!(
        from_only,
        [
            redeemed_now.movement_id.clone(),
            adjusted_now.movement_id.clone()
        ]
    );

    // The upper bound is exclusive: up to the yesterday's earn's own time.
    let both = exported(pb::ExportMovementsRequest {
        movement_types: vec![pb::MovementType::Earn as i32],
        occurred_to: ts(earned_yesterday.occurred_at_time()),
        batch_size: 1,
        ..Default::default()
    })
    .await;
    assert_eq!(
        both,
        [
            earned_3_days_ago.movement_id.clone(),
            earned_2_days_ago.movement_id.clone()
        ]
    );
}

/// The business time of a movement.
trait OccurredAt {
    fn occurred_at_time(&self) -> DateTime<Utc>;
}

impl OccurredAt for pb::Movement {
    fn occurred_at_time(&self) -> DateTime<Utc> {
        let t = self.occurred_at.as_ref().unwrap();
        DateTime::from_timestamp(t.seconds, t.nanos as u32).unwrap()
    }
}

/// `message` for the programme, under the API key `key`.
fn with_key<T>(key: &str, message: T) -> tonic::Request<T> {
    let mut request = req(message);
    request
        .metadata_mut()
        .insert("x-api-key", key.parse().unwrap());
    request
}

#[tokio::test]
async fn the_export_needs_the_admin_scope() {
    let (clerk, operator) = ("0123456789abcdef-clerk", "0123456789abcdef-operator");
    let stack = spawn_with(Options {
        points_keys: vec![
            ("shop".into(), clerk.into(), "read|write".into()),
            ("ops".into(), operator.into(), "admin".into()),
        ],
        ..Options::default()
    })
    .await;
    let member = stack.member().await;
    stack
        .points
        .clone()
        .earn(with_key(
            clerk,
            pb::EarnRequest {
                request_id: rid(),
                member_id: member.to_string(),
                kind: pb::EarnKind::Goodwill as i32,
                points: 10,
                ..Default::default()
            },
        ))
        .await
        .expect("a clerk earns");

    let status = refused(
        &stack,
        with_key(clerk, pb::ExportMovementsRequest::default()),
    )
    .await;
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(reason(&status), "SCOPE_MISSING");

    let mut batches = stack
        .points
        .clone()
        .export_movements(with_key(operator, pb::ExportMovementsRequest::default()))
        .await
        .expect("an admin key exports")
        .into_inner();
    let batch = batches.message().await.unwrap().expect("one batch");
    assert_eq!(batch.movements.len(), 1);
    assert_eq!(batch.balances_after, [10]);
}

#[tokio::test]
async fn a_bad_export_request_names_its_field() {
    let stack = spawn().await;
    let at = |seconds, nanos| Some(prost_types::Timestamp { seconds, nanos });
    const T0: i64 = 1_700_000_000;
    for (request, field) in [
        (
            pb::ExportMovementsRequest {
                after_movement_id: "not-an-id".into(),
                ..Default::default()
            },
            "after_movement_id",
        ),
        (
            pb::ExportMovementsRequest {
                batch_size: -1,
                ..Default::default()
            },
            "batch_size",
        ),
        (
            pb::ExportMovementsRequest {
                batch_size: 5001,
                ..Default::default()
            },
            "batch_size",
        ),
        (
            pb::ExportMovementsRequest {
                occurred_from: at(T0, 0),
                occurred_to: at(T0, 0),
                ..Default::default()
            },
            "occurred_to",
        ),
        (
            pb::ExportMovementsRequest {
                occurred_from: at(T0 + 86_400, 0),
                occurred_to: at(T0, 0),
                ..Default::default()
            },
            "occurred_to",
        ),
        (
            pb::ExportMovementsRequest {
                occurred_from: at(T0, -1),
                ..Default::default()
            },
            "occurred_from",
        ),
        (
            pb::ExportMovementsRequest {
                movement_types: vec![
                    pb::MovementType::Earn as i32,
                    pb::MovementType::Unspecified as i32,
                ],
                ..Default::default()
            },
            "movement_types[1]",
        ),
        (
            pb::ExportMovementsRequest {
                movement_types: vec![99],
                ..Default::default()
            },
            "movement_types[0]",
        ),
    ] {
        let status = refused(&stack, req(request)).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert_eq!(fields(&status), [field]);
    }
    // The largest batch is allowed.
    export(
        &stack,
        pb::ExportMovementsRequest {
            batch_size: 5000,
            ..Default::default()
        },
    )
    .await;
}

/// Peak resident memory of this process, in KiB (VmHWM).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The server runs inside this test process: an export that loaded the
/// history at once, or ran ahead of its reader, would raise the peak by the
/// size of the history (here about 60 MB); paging from Postgres as the
/// client reads keeps it near one batch.
#[tokio::test]
async fn a_large_export_streams_with_bounded_memory() {
    const ROWS: i64 = 70_000;
    let stack = spawn().await;
    let member = stack.member().await;
    let first = stack.give(member, 10).await.movement.unwrap();
    // Copies of that movement and its entries under increasing ids below
    // every real UUIDv7, each with a full statement text (about 850 bytes
    // on the wire).
    let mut tx = stack.db.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO movements (program_id, movement_id, member_id, type, points, earn_kind, reason,
            reference, order_id, related_movement_id, counterparty, occurred_at, recorded_at)
         SELECT m.program_id, ('00000000-0000-7000-8000-' || lpad(to_hex(i), 12, '0'))::uuid,
            m.member_id, m.type, m.points, m.earn_kind, repeat('r', 500), repeat('f', 128), m.order_id,
            NULL, NULL, m.occurred_at, m.recorded_at
         FROM movements m, generate_series(1, $1) AS i",
    )
    .bind(ROWS)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO entries (movement_id, line, program_id, account, member_id, points, balance_after, type, recorded_at)
         SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(i), 12, '0'))::uuid,
            e.line, e.program_id, e.account, e.member_id, e.points, e.balance_after, e.type, e.recorded_at
         FROM entries e, generate_series(1, $1) AS i",
    )
    .bind(ROWS)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let before = peak_rss_kib();
    let started = std::time::Instant::now();
    let mut stream = stack
        .points
        .clone()
        .export_movements(req(pb::ExportMovementsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let (mut count, mut bytes, mut batches) = (0_i64, 0_usize, 0);
    let mut last = String::new();
    while let Some(batch) = stream.message().await.unwrap() {
        count += batch.movements.len() as i64;
        bytes += prost::Message::encoded_len(&batch);
        batches += 1;
        assert!(batch.movements.iter().all(|m| m.entries.len() == 2));
        last = batch.last_movement_id;
    }
    let elapsed = started.elapsed();
    let grown_mib = peak_rss_kib().saturating_sub(before) / 1024;
    println!(
        "exported {count} movements ({} MiB) in {batches} batches in {elapsed:?}: {:.0}/s, peak RSS grew {grown_mib} MiB",
        bytes / (1024 * 1024),
        count as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(count, ROWS + 1);
    assert_eq!(last, first.movement_id, "the real movement comes last");
    assert!(
        bytes > 50 * 1024 * 1024,
        "the history is large: {bytes} bytes"
    );
    assert!(grown_mib < 24, "peak RSS grew {grown_mib} MiB");
}

#[tokio::test]
async fn a_client_that_stops_reading_ends_its_export_and_others_go_on() {
    let stack = spawn().await;
    let member = stack.member().await;
    for _ in 0..6 {
        stack.give(member, 10).await;
    }
    for _ in 0..3 {
        let mut stream = stack
            .points
            .clone()
            .export_movements(req(pb::ExportMovementsRequest {
                batch_size: 1,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap();
        assert_eq!(first.movements.len(), 1);
        drop(stream);
    }
    let all = export(&stack, pb::ExportMovementsRequest::default()).await;
    assert_eq!(ids(&all).len(), 6);
}
