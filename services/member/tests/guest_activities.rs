//! Guest purchases and refunds (RecordActivity with guest set) over real
//! gRPC: recorded once without a member, published without one, refused
//! when they name or enrol a member or are not about money.

mod common;

use common::*;
use laurel_proto::{common::v1::EventEnvelope, member::v1 as pb};
use prost::Message;
use tonic::Code;

fn guest(activity: pb::Activity) -> pb::RecordActivityRequest {
    pb::RecordActivityRequest {
        member: None,
        auto_enroll: false,
        guest: true,
        activity: Some(activity),
    }
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&app.db).await.unwrap()
}

#[tokio::test]
async fn a_guest_purchase_is_recorded_once_and_published_without_a_member() {
    let app = spawn().await;
    let request = guest(purchase(&rid(), 2599));
    let first = app
        .client
        .clone()
        .record_activity(req(request.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(first.created);
    assert!(!first.member_enrolled);
    let stored = first.activity.clone().unwrap();
    assert_eq!(stored.member_id, "");
    assert_eq!(stored.r#type, pb::ActivityType::Purchase as i32);
    assert!(!stored.activity_id.is_empty());

    let again = app
        .client
        .clone()
        .record_activity(req(request.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created);
    assert_eq!(again.activity, first.activity);

    // The same (source, external_id) with other content is a conflict.
    let mut changed = request;
    if let Some(pb::activity::Detail::Purchase(p)) =
        changed.activity.as_mut().unwrap().detail.as_mut()
    {
        p.store_id = "store-18".into();
    }
    let status = app
        .client
        .clone()
        .record_activity(req(changed))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(reason(&status), "ACTIVITY_CONFLICT");

    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM activities WHERE member_id IS NULL"
        )
        .await,
        1
    );
    let (outbox_member, envelope): (Option<uuid::Uuid>, Vec<u8>) = sqlx::query_as(
        "SELECT member_id, envelope FROM outbox WHERE event_type = 'member.ActivityRecorded'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(outbox_member, None);
    let envelope = EventEnvelope::decode(envelope.as_slice()).unwrap();
    assert_eq!(envelope.member_id, "");
    assert_eq!(envelope.member_sequence, 0);
    let event: pb::ActivityRecorded = envelope.payload.unwrap().to_msg().unwrap();
    let published = event.activity.unwrap();
    assert_eq!(published.member_id, "");
    assert_eq!(published.activity_id, stored.activity_id);
}

#[tokio::test]
async fn a_guest_activity_names_no_member_enrols_none_and_is_about_money() {
    let app = spawn().await;
    let named = |member| pb::RecordActivityRequest {
        member: Some(member),
        ..guest(purchase(&rid(), 100))
    };
    for (request, field) in [
        (
            named(pb::record_activity_request::Member::MemberId(rid())),
            "member_id",
        ),
        (
            named(pb::record_activity_request::Member::Identity(
                phone_identity(&phone()),
            )),
            "identity",
        ),
        (
            pb::RecordActivityRequest {
                auto_enroll: true,
                ..guest(purchase(&rid(), 100))
            },
            "auto_enroll",
        ),
        (
            guest(pb::Activity {
                source: "app".into(),
                external_id: rid(),
                detail: Some(pb::activity::Detail::CheckIn(pb::CheckIn {
                    location_id: "store-17".into(),
                })),
                ..Default::default()
            }),
            "activity",
        ),
    ] {
        let status = app
            .client
            .clone()
            .record_activity(req(request))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert_eq!(violated_fields(&status), [field]);
    }
    assert_eq!(count(&app, "SELECT count(*) FROM activities").await, 0);
    assert_eq!(count(&app, "SELECT count(*) FROM members").await, 0);
}

#[tokio::test]
async fn a_guest_refund_takes_back_part_of_a_guest_order_only() {
    let mut app = spawn().await;
    let member = create(&mut app).await;
    let guest_order = rid();
    let member_order = rid();
    let record = |request: pb::RecordActivityRequest| {
        let mut client = app.client.clone();
        async move { client.record_activity(req(request)).await }
    };
    record(guest(purchase(&guest_order, 1000))).await.unwrap();
    record(by_id(&member.member_id, purchase(&member_order, 1000)))
        .await
        .unwrap();

    let refunded = record(guest(refund(&rid(), &guest_order, 400)))
        .await
        .unwrap()
        .into_inner()
        .activity
        .unwrap();
    assert_eq!(refunded.member_id, "");
    let too_much = record(guest(refund(&rid(), &guest_order, 700)))
        .await
        .unwrap_err();
    assert_eq!(reason(&too_much), "REFUND_EXCEEDS_ORDER");
    // Neither side refunds the other's order.
    let members_order = record(guest(refund(&rid(), &member_order, 100)))
        .await
        .unwrap_err();
    assert_eq!(reason(&members_order), "ORDER_NOT_FOUND");
    let guests_order = record(by_id(&member.member_id, refund(&rid(), &guest_order, 100)))
        .await
        .unwrap_err();
    assert_eq!(reason(&guests_order), "ORDER_NOT_FOUND");
}

#[tokio::test]
async fn guest_purchases_show_in_no_members_activities_and_change_no_member() {
    let mut app = spawn().await;
    let member = create(&mut app).await;
    let own = app
        .client
        .record_activity(req(by_id(&member.member_id, purchase(&rid(), 500))))
        .await
        .unwrap()
        .into_inner()
        .activity
        .unwrap();
    let sequences_before = count(
        &app,
        "SELECT COALESCE(sum(last_sequence), 0)::bigint FROM member_sequences",
    )
    .await;
    for _ in 0..3 {
        app.client
            .record_activity(req(guest(purchase(&rid(), 900))))
            .await
            .unwrap();
    }
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
    assert_eq!(listed, [own]);
    let after = app
        .client
        .get_member(req(pb::GetMemberRequest {
            member_id: member.member_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    assert_eq!(after.version, member.version);
    assert_eq!(count(&app, "SELECT count(*) FROM members").await, 1);
    assert_eq!(
        count(
            &app,
            "SELECT COALESCE(sum(last_sequence), 0)::bigint FROM member_sequences"
        )
        .await,
        sequences_before,
        "guest events take no member's sequence number"
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM activities WHERE member_id IS NULL"
        )
        .await,
        3
    );
}
