//! The member service's own rules over real gRPC: money bounds, coded
//! fields, referral graphs across merges, privacy of free text and request
//! digests, and refusing to start without a personal-data key.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
    time::Duration,
};

use common::*;
use laurel_proto::{common::v1 as common_pb, member::v1 as pb};
use prost::Message;
use sha2::Digest;
use tonic::Code;
use uuid::Uuid;

fn money(currency: &str, amount_minor: i64) -> Option<common_pb::Money> {
    Some(common_pb::Money {
        currency_code: currency.into(),
        amount_minor,
    })
}

async fn record(app: &mut TestApp, request: pb::RecordActivityRequest) -> pb::Activity {
    app.client
        .record_activity(req(request))
        .await
        .expect("recorded")
        .into_inner()
        .activity
        .unwrap()
}

#[tokio::test]
async fn a_refund_that_would_overflow_the_order_is_refused_and_nothing_is_stored() {
    let mut app = spawn().await;
    let member = create(&mut app).await;
    let order = rid();
    record(&mut app, by_id(&member.member_id, purchase(&order, 1000))).await;
    record(
        &mut app,
        by_id(&member.member_id, refund(&rid(), &order, 600)),
    )
    .await;
    let status = app
        .client
        .record_activity(req(by_id(
            &member.member_id,
            refund(&rid(), &order, 9_223_372_036_854_775_307),
        )))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&status),
        ["activity.refund.amount.amount_minor"]
    );
    let refunds: Vec<i64> =
        sqlx::query_scalar("SELECT amount_minor FROM activities WHERE activity_type = 2")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(refunds, [600]);
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE event_type = 'member.ActivityRecorded'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(events, 2);
    // Within the bound, the remaining 4.00 is the limit.
    let over = app
        .client
        .record_activity(req(by_id(&member.member_id, refund(&rid(), &order, 401))))
        .await
        .unwrap_err();
    assert_eq!(over.code(), Code::FailedPrecondition);
    assert_eq!(reason(&over), "REFUND_EXCEEDS_ORDER");
    record(
        &mut app,
        by_id(&member.member_id, refund(&rid(), &order, 400)),
    )
    .await;
}

#[tokio::test]
async fn amounts_and_lines_above_their_bounds_are_named() {
    let mut app = spawn().await;
    let member = create(&mut app).await;
    let mut activity = purchase(&rid(), 1_000_000_000_000_001);
    if let Some(pb::activity::Detail::Purchase(p)) = &mut activity.detail {
        p.lines[0].quantity = 1_000_001;
        p.lines[0].unit_price_minor = i64::MAX;
    }
    let status = app
        .client
        .record_activity(req(by_id(&member.member_id, activity)))
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&status),
        [
            "activity.purchase.total.amount_minor",
            "activity.purchase.lines[0].quantity",
            "activity.purchase.lines[0].unit_price_minor",
        ]
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM activities")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn each_bad_coded_field_is_named() {
    let mut app = spawn().await;
    let mut request = create_request(&phone());
    let profile = request.profile.as_mut().unwrap();
    profile.region = "XX".into();
    profile.preferred_language = "en_GB".into();
    profile.time_zone = "Mars/Olympus".into();
    let status = app.client.create_member(req(request)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&status),
        [
            "profile.region",
            "profile.preferred_language",
            "profile.time_zone"
        ]
    );
    let mut subdivision = create_request(&phone());
    subdivision.profile.as_mut().unwrap().region = "DE-XX".into();
    let status = app
        .client
        .create_member(req(subdivision))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["profile.region"]);

    let mut good = create_request(&phone());
    let profile = good.profile.as_mut().unwrap();
    profile.region = "CN-SH".into();
    profile.preferred_language = "zh-Hans-CN".into();
    profile.time_zone = "Asia/Shanghai".into();
    let member = app
        .client
        .create_member(req(good))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    assert_eq!(member.profile.unwrap().region, "CN-SH");

    let mut activity = purchase(&rid(), 500);
    if let Some(pb::activity::Detail::Purchase(p)) = &mut activity.detail {
        p.total = money("ABC", 500);
    }
    let status = app
        .client
        .record_activity(req(by_id(&member.member_id, activity)))
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&status),
        ["activity.purchase.total.currency_code"]
    );
    let mut refund_activity = refund(&rid(), &rid(), 100);
    if let Some(pb::activity::Detail::Refund(r)) = &mut refund_activity.detail {
        r.amount = money("EURO", 100);
    }
    let status = app
        .client
        .record_activity(req(by_id(&member.member_id, refund_activity)))
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&status),
        ["activity.refund.amount.currency_code"]
    );
    let update = pb::UpdateMemberRequest {
        request_id: rid(),
        member: Some(pb::Member {
            member_id: member.member_id.clone(),
            profile: Some(pb::Profile {
                time_zone: "Europe/Nowhere".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["profile.time_zone".into()],
        }),
    };
    let status = app.client.update_member(req(update)).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["profile.time_zone"]);
}

async fn create_referred(app: &mut TestApp, code: &str) -> pb::Member {
    let mut request = create_request(&phone());
    request.referral_code = code.into();
    app.client
        .create_member(req(request))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap()
}

async fn referrer_of(app: &TestApp, member: &str) -> Option<Uuid> {
    sqlx::query_scalar("SELECT referred_by FROM members WHERE member_id = $1")
        .bind(Uuid::parse_str(member).unwrap())
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_merge_keeps_the_referral_graph_acyclic() {
    let mut app = spawn().await;
    // M referred X, X referred S; then M is merged into S.
    let m = create(&mut app).await;
    let x = create_referred(&mut app, &m.referral_code).await;
    let s = create_referred(&mut app, &x.referral_code).await;
    assert_eq!(s.referred_by_member_id, x.member_id);
    let survivor = app
        .client
        .merge_members(req(pb::MergeMembersRequest {
            request_id: rid(),
            survivor_member_id: s.member_id.clone(),
            merged_member_id: m.member_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .survivor
        .unwrap();
    // The survivor's own referral, which led back to the merged member, is
    // dropped; the merged member's referral of X moves to the survivor.
    assert_eq!(survivor.referred_by_member_id, "");
    assert_eq!(referrer_of(&app, &s.member_id).await, None);
    assert_eq!(
        referrer_of(&app, &x.member_id).await.map(|u| u.to_string()),
        Some(s.member_id.clone())
    );
    let export = app
        .client
        .export_member(req(pb::ExportMemberRequest {
            member_id: s.member_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(export.referred_member_ids, [x.member_id]);
    assert_eq!(export.merged_member_ids, [m.member_id]);
    let in_a_cycle: i64 = sqlx::query_scalar(
        "WITH RECURSIVE chain(start, id, depth) AS (
             SELECT member_id, referred_by, 1 FROM members WHERE referred_by IS NOT NULL
             UNION ALL
             SELECT c.start, m.referred_by, c.depth + 1 FROM members m JOIN chain c ON m.member_id = c.id
             WHERE m.referred_by IS NOT NULL AND c.id <> c.start AND c.depth < 100)
         SELECT count(*) FROM chain WHERE id = start",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(in_a_cycle, 0, "a member refers itself through the graph");
}

fn with_attributes(mut activity: pb::Activity) -> pb::Activity {
    activity.attributes = [
        ("note".to_owned(), "call Ada on +4915112345678".to_owned()),
        ("cashier".to_owned(), "Bob".to_owned()),
    ]
    .into();
    activity
}

async fn published_activities(app: &TestApp) -> Vec<pb::Activity> {
    let envelopes: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT envelope FROM outbox WHERE event_type = 'member.ActivityRecorded' ORDER BY seq",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    envelopes
        .iter()
        .map(|e| {
            let envelope = common_pb::EventEnvelope::decode(e.as_slice()).unwrap();
            let recorded: pb::ActivityRecorded = envelope.payload.unwrap().to_msg().unwrap();
            recorded.activity.unwrap()
        })
        .collect()
}

async fn stored_activities(app: &TestApp) -> Vec<pb::Activity> {
    let bodies: Vec<Vec<u8>> = sqlx::query_scalar("SELECT body FROM activities")
        .fetch_all(&app.db)
        .await
        .unwrap();
    bodies
        .iter()
        .map(|b| pb::Activity::decode(b.as_slice()).unwrap())
        .collect()
}

#[tokio::test]
async fn attributes_stay_out_of_events_and_are_gone_after_erasure() {
    let mut app = spawn().await;
    let member = create(&mut app).await;
    let order = rid();
    let recorded = record(
        &mut app,
        by_id(&member.member_id, with_attributes(purchase(&order, 900))),
    )
    .await;
    assert_eq!(recorded.attributes.len(), 2, "the caller gets them back");
    let published = published_activities(&app).await;
    assert_eq!(published.len(), 1);
    assert!(published[0].attributes.is_empty());
    assert_eq!(published[0].external_id, order, "the rest is published");
    assert_eq!(stored_activities(&app).await[0].attributes.len(), 2);
    app.client
        .erase_member(req(pb::EraseMemberRequest {
            request_id: rid(),
            member_id: member.member_id.clone(),
        }))
        .await
        .unwrap();
    let stored = stored_activities(&app).await;
    assert_eq!(stored.len(), 1);
    assert!(stored[0].attributes.is_empty());
    let listed = app
        .client
        .list_activities(req(pb::ListActivitiesRequest {
            member_id: member.member_id.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .activities;
    assert!(listed.iter().all(|a| a.attributes.is_empty()));
}

async fn digests(app: &TestApp) -> Vec<Option<Vec<u8>>> {
    sqlx::query_scalar("SELECT request_hash FROM activities ORDER BY activity_id")
        .fetch_all(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn request_digests_are_keyed_and_forgotten_on_erasure() {
    let mut app = spawn().await;
    let number = phone();
    let request = pb::RecordActivityRequest {
        member: Some(pb::record_activity_request::Member::Identity(
            phone_identity(&number),
        )),
        auto_enroll: true,
        guest: false,
        activity: Some(purchase(&rid(), 700)),
    };
    let first = app
        .client
        .record_activity(req(request.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(first.created && first.member_enrolled);
    let plain = sha2::Sha256::digest(request.encode_to_vec()).to_vec();
    let stored = digests(&app).await;
    assert_eq!(stored.len(), 1);
    let digest = stored[0].clone().expect("a digest is kept");
    assert_eq!(digest.len(), 32);
    assert_ne!(digest, plain, "an unkeyed hash of the request");
    let replay = app
        .client
        .record_activity(req(request.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(!replay.created);
    app.client
        .erase_member(req(pb::EraseMemberRequest {
            request_id: rid(),
            member_id: first.activity.unwrap().member_id,
        }))
        .await
        .unwrap();
    assert_eq!(digests(&app).await, [None]);
    let after = app.client.record_activity(req(request)).await.unwrap_err();
    assert_eq!(after.code(), Code::FailedPrecondition);
    assert_eq!(reason(&after), "MEMBER_NOT_ACTIVE");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM activities")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 1, "the replay recorded nothing");
}

/// The member binary with no personal-data key in its environment.
fn member_binary(extra: &[(&str, &str)]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_laurel-member"));
    command
        .env_remove("LAUREL_PII_KEY")
        .env_remove("LAUREL_PII_KEYS")
        .env_remove("LAUREL_DEV_MODE")
        .env("LAUREL_API_KEYS", "test:0123456789abcdef-test:*:*")
        .env("DATABASE_URL", laurel_test_support::database_url())
        .env("REDIS_URL", laurel_test_support::redis_url())
        .env(
            "LAUREL_DB_SCHEMA",
            laurel_test_support::fresh_schema("member"),
        )
        .env("LAUREL_REDIS_PREFIX", laurel_test_support::fresh_prefix())
        .env("LAUREL_GRPC_ADDR", "127.0.0.1:0")
        .env("LAUREL_METRICS_ADDR", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in extra {
        command.env(name, value);
    }
    command
}

async fn refused_start(extra: &[(&str, &str)]) -> String {
    let output = tokio::time::timeout(Duration::from_secs(20), member_binary(extra).output())
        .await
        .expect("exits quickly")
        .expect("runs");
    assert!(!output.status.success(), "started without a usable key");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn the_service_refuses_to_start_without_a_pii_key() {
    let stderr = refused_start(&[]).await;
    assert!(stderr.contains("LAUREL_PII_KEYS"), "stderr: {stderr}");
    let stderr = refused_start(&[("LAUREL_PII_KEYS", "k1:not-base64")]).await;
    assert!(stderr.contains("LAUREL_PII_KEYS"), "stderr: {stderr}");
    assert!(
        !stderr.contains("not-base64"),
        "the key is echoed: {stderr}"
    );
    let stderr = refused_start(&[("LAUREL_DEV_MODE", "0")]).await;
    assert!(stderr.contains("LAUREL_PII_KEYS"), "stderr: {stderr}");
}

#[tokio::test]
async fn the_service_refuses_to_start_without_api_keys() {
    let key = format!("k1:{}", base64_key());
    let stderr = refused_start(&[("LAUREL_API_KEYS", ""), ("LAUREL_PII_KEYS", &key)]).await;
    assert!(stderr.contains("LAUREL_API_KEYS"), "stderr: {stderr}");
    assert!(!stderr.contains(&key), "the PII key is echoed: {stderr}");
}

fn base64_key() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([7u8; 32])
}

#[tokio::test]
async fn development_mode_starts_with_a_loud_warning() {
    let mut child = member_binary(&[("LAUREL_DEV_MODE", "1")])
        .spawn()
        .expect("runs");
    let stderr = child
        .stderr
        .take()
        .unwrap()
        .into_owned_fd()
        .expect("a pipe");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(std::fs::File::from(stderr)).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut warned = false;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("development key") => {
                warned = true;
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let still_running = child.try_wait().expect("polls").is_none();
    child.kill().await.expect("stops");
    assert!(warned, "no warning about the development key");
    assert!(still_running, "dev mode did not start");
}
