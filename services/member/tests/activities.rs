//! RecordActivity and ListActivities over real gRPC.

mod common;

use common::*;
use laurel_proto::member::v1 as pb;
use tonic::Code;

#[tokio::test]
async fn a_purchase_is_recorded_once_however_often_it_is_retried() {
    let mut app = spawn().await;
    let member = create(&mut app).await;
    let order = rid();
    let request = by_id(&member.member_id, purchase(&order, 1999));
    let first = app
        .client
        .record_activity(req(request.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(first.created);
    let again = app
        .client
        .record_activity(req(request.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created);
    assert_eq!(first.activity, again.activity);
    let mut changed = request;
    if let Some(pb::activity::Detail::Purchase(p)) =
        changed.activity.as_mut().unwrap().detail.as_mut()
    {
        p.total.as_mut().unwrap().amount_minor = 1;
    }
    let status = app.client.record_activity(req(changed)).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(reason(&status), "ACTIVITY_CONFLICT");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM activities")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE event_type = 'member.ActivityRecorded'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((rows, events), (1, 1));
}

#[tokio::test]
async fn the_business_time_is_kept_apart_from_the_recording_time() {
    let mut app = spawn().await;
    let member = create(&mut app).await;
    let mut activity = purchase(&rid(), 100);
    activity.occurred_at = Some(prost_types::Timestamp {
        seconds: 1_500_000_000,
        nanos: 0,
    });
    let stored = app
        .client
        .record_activity(req(by_id(&member.member_id, activity)))
        .await
        .unwrap()
        .into_inner()
        .activity
        .unwrap();
    assert_eq!(stored.occurred_at.unwrap().seconds, 1_500_000_000);
    assert!(stored.recorded_at.unwrap().seconds > 1_700_000_000);
}

#[tokio::test]
async fn refunds_point_at_their_order_and_never_exceed_it() {
    let mut app = spawn().await;
    let member = create(&mut app).await;
    let order = rid();
    app.client
        .record_activity(req(by_id(&member.member_id, purchase(&order, 1000))))
        .await
        .unwrap();
    app.client
        .record_activity(req(by_id(&member.member_id, refund(&rid(), &order, 600))))
        .await
        .unwrap();
    let too_much = app
        .client
        .record_activity(req(by_id(&member.member_id, refund(&rid(), &order, 401))))
        .await
        .unwrap_err();
    assert_eq!(too_much.code(), Code::FailedPrecondition);
    assert_eq!(reason(&too_much), "REFUND_EXCEEDS_ORDER");
    app.client
        .record_activity(req(by_id(&member.member_id, refund(&rid(), &order, 400))))
        .await
        .unwrap();
    let unknown = app
        .client
        .record_activity(req(by_id(
            &member.member_id,
            refund(&rid(), "no-such-order", 1),
        )))
        .await
        .unwrap_err();
    assert_eq!(reason(&unknown), "ORDER_NOT_FOUND");
}

#[tokio::test]
async fn an_unknown_identity_enrols_only_when_asked() {
    let mut app = spawn().await;
    let number = phone();
    let mut request = pb::RecordActivityRequest {
        member: Some(pb::record_activity_request::Member::Identity(
            phone_identity(&number),
        )),
        auto_enroll: false,
        guest: false,
        activity: Some(purchase(&rid(), 300)),
    };
    let status = app
        .client
        .record_activity(req(request.clone()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    request.auto_enroll = true;
    let response = app
        .client
        .record_activity(req(request))
        .await
        .unwrap()
        .into_inner();
    assert!(response.member_enrolled && response.created);
    let member = app
        .client
        .lookup_member(req(pb::LookupMemberRequest {
            identity: Some(phone_identity(&number)),
        }))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    assert_eq!(member.member_id, response.activity.unwrap().member_id);
    let created: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = 'member.MemberCreated'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(created, 1);
}

#[tokio::test]
async fn every_bad_activity_field_is_named() {
    let mut app = spawn().await;
    let member = create(&mut app).await;
    let bad = pb::Activity {
        source: String::new(),
        external_id: String::new(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: 4_000_000_000,
            nanos: 0,
        }),
        detail: Some(pb::activity::Detail::Purchase(pb::Purchase {
            order_id: String::new(),
            total: Some(laurel_proto::common::v1::Money {
                currency_code: "euro".into(),
                amount_minor: -5,
            }),
            lines: vec![pb::OrderLine {
                sku: String::new(),
                quantity: 0,
                unit_price_minor: -1,
                ..Default::default()
            }],
            channel: 99,
            ..Default::default()
        })),
        ..Default::default()
    };
    let status = app
        .client
        .record_activity(req(by_id(&member.member_id, bad)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields = violated_fields(&status);
    for f in [
        "activity.source",
        "activity.external_id",
        "activity.occurred_at",
        "activity.purchase.order_id",
        "activity.purchase.total.currency_code",
        "activity.purchase.total.amount_minor",
        "activity.purchase.lines[0].sku",
        "activity.purchase.lines[0].quantity",
        "activity.purchase.lines[0].unit_price_minor",
        "activity.purchase.channel",
    ] {
        assert!(fields.iter().any(|x| x == f), "{f} missing from {fields:?}");
    }
    let feedback = pb::Activity {
        source: "survey".into(),
        external_id: rid(),
        detail: Some(pb::activity::Detail::Feedback(pb::Feedback {
            nps_score: 11,
            comment: String::new(),
        })),
        ..Default::default()
    };
    let status = app
        .client
        .record_activity(req(by_id(&member.member_id, feedback)))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["activity.feedback.nps_score"]);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM activities")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn activities_list_newest_first_in_pages() {
    let mut app = spawn().await;
    let member = create(&mut app).await;
    for i in 0..5 {
        let mut activity = purchase(&rid(), 100 + i);
        activity.occurred_at = Some(prost_types::Timestamp {
            seconds: 1_600_000_000 + i,
            nanos: 0,
        });
        app.client
            .record_activity(req(by_id(&member.member_id, activity)))
            .await
            .unwrap();
    }
    let mut times = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .client
            .list_activities(req(pb::ListActivitiesRequest {
                member_id: member.member_id.clone(),
                page_size: 2,
                page_token: token,
            }))
            .await
            .unwrap()
            .into_inner();
        times.extend(
            page.activities
                .iter()
                .map(|a| a.occurred_at.unwrap().seconds),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        times,
        (0..5).rev().map(|i| 1_600_000_000 + i).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn free_text_stays_out_of_events() {
    let mut app = spawn().await;
    let member = create(&mut app).await;
    let review = pb::Activity {
        source: "web".into(),
        external_id: rid(),
        detail: Some(pb::activity::Detail::Review(pb::Review {
            sku: "SKU-1".into(),
            rating: 5,
            text: "secret words".into(),
        })),
        ..Default::default()
    };
    app.client
        .record_activity(req(by_id(&member.member_id, review)))
        .await
        .unwrap();
    let envelopes: Vec<Vec<u8>> = sqlx::query_scalar("SELECT envelope FROM outbox")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert!(
        envelopes
            .iter()
            .all(|e| !String::from_utf8_lossy(e).contains("secret words"))
    );
}
