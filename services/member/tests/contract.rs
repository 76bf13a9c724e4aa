//! The platform contract every mutating RPC keeps: a replay returns the first
//! answer with one effect, racing copies have one effect and one answer, no
//! RPC reaches another programme's members, and a call in flight at shutdown
//! completes.

mod common;

use std::time::Duration;

use common::*;
use laurel_proto::member::v1 as pb;
use tonic::Code;

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&app.db).await.unwrap()
}

fn update_tags(member_id: &str, tags: &[&str]) -> pb::UpdateMemberRequest {
    pb::UpdateMemberRequest {
        request_id: rid(),
        member: Some(pb::Member {
            member_id: member_id.into(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["tags".into()],
        }),
    }
}

#[tokio::test]
async fn every_mutating_rpc_replays_its_first_answer_with_one_effect() {
    let mut app = spawn().await;
    let c = &mut app.client;

    let create = create_request(&phone());
    let first = c
        .create_member(req(create.clone()))
        .await
        .unwrap()
        .into_inner();
    let again = c.create_member(req(create)).await.unwrap().into_inner();
    assert_eq!(first, again);
    let member = first.member.unwrap();
    let id = member.member_id.clone();

    let update = update_tags(&id, &["gold"]);
    let first = c
        .update_member(req(update.clone()))
        .await
        .unwrap()
        .into_inner();
    let again = c.update_member(req(update)).await.unwrap().into_inner();
    assert_eq!(first, again);
    assert_eq!(
        first.member.unwrap().version,
        member.version + 1,
        "one effect"
    );

    let link = pb::LinkIdentityRequest {
        request_id: rid(),
        member_id: id.clone(),
        identity: Some(email_identity(&format!("{}@example.com", rid()))),
    };
    let first = c
        .link_identity(req(link.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first,
        c.link_identity(req(link.clone()))
            .await
            .unwrap()
            .into_inner()
    );

    let unlink = pb::UnlinkIdentityRequest {
        request_id: rid(),
        member_id: id.clone(),
        identity: link.identity.clone(),
    };
    let first = c
        .unlink_identity(req(unlink.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first,
        c.unlink_identity(req(unlink)).await.unwrap().into_inner()
    );

    let activity = by_id(&id, purchase(&format!("o-{}", rid()), 1000));
    let first = c
        .record_activity(req(activity.clone()))
        .await
        .unwrap()
        .into_inner();
    let again = c.record_activity(req(activity)).await.unwrap().into_inner();
    assert!(first.created && !again.created);
    assert_eq!(first.activity, again.activity);

    let other = c
        .create_member(req(create_request(&phone())))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    let merge = pb::MergeMembersRequest {
        request_id: rid(),
        survivor_member_id: id.clone(),
        merged_member_id: other.member_id.clone(),
    };
    let first = c
        .merge_members(req(merge.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first,
        c.merge_members(req(merge)).await.unwrap().into_inner()
    );

    let erase = pb::EraseMemberRequest {
        request_id: rid(),
        member_id: id.clone(),
    };
    let first = c
        .erase_member(req(erase.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first,
        c.erase_member(req(erase)).await.unwrap().into_inner()
    );

    assert_eq!(count(&app, "SELECT count(*) FROM members").await, 2);
    assert_eq!(count(&app, "SELECT count(*) FROM activities").await, 1);
    // Created twice, updated, linked, unlinked, merged (two events), erased.
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM outbox WHERE event_type <> 'member.ActivityRecorded'"
        )
        .await,
        8
    );
}

#[tokio::test]
async fn racing_copies_of_one_request_have_one_effect_and_the_same_answer() {
    let app = spawn().await;
    let create = create_request(&phone());
    let (mut a, mut b) = (app.client.clone(), app.client.clone());
    let (ra, rb) = tokio::join!(
        a.create_member(req(create.clone())),
        b.create_member(req(create.clone()))
    );
    assert_eq!(ra.unwrap().into_inner(), rb.unwrap().into_inner());
    assert_eq!(count(&app, "SELECT count(*) FROM members").await, 1);

    let id = app
        .client
        .clone()
        .lookup_member(req(pb::LookupMemberRequest {
            identity: create.identities.first().cloned(),
        }))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap()
        .member_id;
    let update = update_tags(&id, &["silver"]);
    let (ra, rb) = tokio::join!(
        a.update_member(req(update.clone())),
        b.update_member(req(update.clone()))
    );
    let (ra, rb) = (ra.unwrap().into_inner(), rb.unwrap().into_inner());
    assert_eq!(ra, rb);
    assert_eq!(ra.member.unwrap().version, 2);
}

#[tokio::test]
async fn no_rpc_reaches_a_member_of_another_programme() {
    let mut app = spawn().await;
    let phone = phone();
    let mine = app
        .client
        .create_member(in_program("brand-a", create_request(&phone)))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    let id = mine.member_id.clone();
    app.client
        .record_activity(in_program("brand-a", by_id(&id, purchase("o-iso", 500))))
        .await
        .unwrap();
    let c = &mut app.client;
    fn b<T>(message: T) -> tonic::Request<T> {
        in_program("brand-b", message)
    }
    let not_found = |r: Result<_, tonic::Status>, what: &str| {
        let status = r.err().unwrap_or_else(|| panic!("{what} reached brand-a"));
        assert_eq!(status.code(), Code::NotFound, "{what}: {status:?}");
    };
    not_found(
        c.get_member(b(pb::GetMemberRequest {
            member_id: id.clone(),
        }))
        .await
        .map(drop),
        "GetMember",
    );
    not_found(
        c.lookup_member(b(pb::LookupMemberRequest {
            identity: Some(phone_identity(&phone)),
        }))
        .await
        .map(drop),
        "LookupMember",
    );
    not_found(
        c.update_member(b(update_tags(&id, &["x"]))).await.map(drop),
        "UpdateMember",
    );
    not_found(
        c.link_identity(b(pb::LinkIdentityRequest {
            request_id: rid(),
            member_id: id.clone(),
            identity: Some(email_identity("iso@example.com")),
        }))
        .await
        .map(drop),
        "LinkIdentity",
    );
    not_found(
        c.unlink_identity(b(pb::UnlinkIdentityRequest {
            request_id: rid(),
            member_id: id.clone(),
            identity: Some(phone_identity(&phone)),
        }))
        .await
        .map(drop),
        "UnlinkIdentity",
    );
    let theirs = c
        .create_member(b(create_request(&common::phone())))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    not_found(
        c.merge_members(b(pb::MergeMembersRequest {
            request_id: rid(),
            survivor_member_id: theirs.member_id.clone(),
            merged_member_id: id.clone(),
        }))
        .await
        .map(drop),
        "MergeMembers",
    );
    not_found(
        c.record_activity(b(by_id(&id, purchase("o-iso-2", 500))))
            .await
            .map(drop),
        "RecordActivity",
    );
    not_found(
        c.list_activities(b(pb::ListActivitiesRequest {
            member_id: id.clone(),
            ..Default::default()
        }))
        .await
        .map(drop),
        "ListActivities",
    );
    not_found(
        c.export_member(b(pb::ExportMemberRequest {
            member_id: id.clone(),
        }))
        .await
        .map(drop),
        "ExportMember",
    );
    not_found(
        c.erase_member(b(pb::EraseMemberRequest {
            request_id: rid(),
            member_id: id.clone(),
        }))
        .await
        .map(drop),
        "EraseMember",
    );
    let listed = c
        .list_members(b(pb::ListMembersRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .members;
    assert!(listed.iter().all(|m| m.member_id != id), "ListMembers");
    // brand-a's member is untouched.
    let still = c
        .get_member(in_program(
            "brand-a",
            pb::GetMemberRequest {
                member_id: id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    assert_eq!(still.version, mine.version);
    assert_eq!(still.status, pb::MemberStatus::Active as i32);
}

#[tokio::test]
async fn a_call_in_flight_at_shutdown_completes() {
    let mut app = spawn().await;
    let member = create(&mut app).await;
    // Hold the member's row so the update waits inside the server.
    let mut blocker = app.db.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM members WHERE member_id = $1 FOR UPDATE")
        .bind(uuid::Uuid::parse_str(&member.member_id).unwrap())
        .execute(&mut *blocker)
        .await
        .unwrap();
    let mut client = app.client.clone();
    let update = update_tags(&member.member_id, &["late"]);
    let in_flight = tokio::spawn(async move { client.update_member(req(update)).await });
    let db = app.db.clone();
    eventually(Duration::from_secs(10), "the update waits on the row lock", || {
        let db = db.clone();
        async move {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%FOR UPDATE%'",
            )
            .fetch_one(&db)
            .await
            .ok()?;
            (waiting > 0).then_some(())
        }
    })
    .await;
    let channel = app.channel.clone();
    let stopping = tokio::spawn(async move {
        app.stop().await;
    });
    // Shutdown has begun once readiness says NOT_SERVING.
    eventually(
        Duration::from_secs(10),
        "readiness turned NOT_SERVING",
        || {
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
            async move {
                let status = health
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .status;
                (status
                    == tonic_health::pb::health_check_response::ServingStatus::NotServing as i32)
                    .then_some(())
            }
        },
    )
    .await;
    assert!(!in_flight.is_finished(), "the call is still in flight");
    blocker.commit().await.unwrap();
    let answer = in_flight
        .await
        .unwrap()
        .expect("the call in flight completes");
    assert_eq!(answer.into_inner().member.unwrap().tags, ["late"]);
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the server stops after it")
        .unwrap();
}
