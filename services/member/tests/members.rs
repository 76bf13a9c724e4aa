//! Member RPCs over real gRPC against real Postgres and Redis.

mod common;

use common::*;
use laurel_proto::member::v1 as pb;
use tonic::Code;

#[tokio::test]
async fn create_then_get_returns_the_profile() {
    let mut app = spawn().await;
    let created = create(&mut app).await;
    assert_eq!(created.status, pb::MemberStatus::Active as i32);
    assert_eq!(created.referral_code.len(), 8);
    let got = app
        .client
        .get_member(req(pb::GetMemberRequest {
            member_id: created.member_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    assert_eq!(got.profile.unwrap().given_name, "Ada");
    assert_eq!(got.tags, ["vip"]);
}

#[tokio::test]
async fn create_refuses_every_bad_field_and_stores_nothing() {
    let mut app = spawn().await;
    let mut request = create_request("12");
    request.request_id = String::new();
    let profile = request.profile.as_mut().unwrap();
    profile.birth_date = "1990-02-30".into();
    profile.region = "Germany".into();
    profile.preferred_language = "!!".into();
    profile.time_zone = "Berlin".into();
    profile.gender = 9;
    request.identities.push(email_identity("not-an-email"));
    request.tags.push("Bad Tag!".into());
    request.referral_code = "x".into();
    request.consents.push(pb::Consent {
        channel: 0,
        ..Default::default()
    });
    let status = app.client.create_member(req(request)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields = violated_fields(&status);
    for f in [
        "request_id",
        "profile.birth_date",
        "profile.gender",
        "profile.region",
        "profile.preferred_language",
        "profile.time_zone",
        "identities[0].value",
        "identities[1].value",
        "consents[0].channel",
        "tags[1]",
        "referral_code",
    ] {
        assert!(fields.iter().any(|x| x == f), "{f} missing from {fields:?}");
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM members")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

#[tokio::test]
async fn retried_create_returns_the_first_result_and_a_changed_one_is_refused() {
    let mut app = spawn().await;
    let request = create_request(&phone());
    let first = app
        .client
        .create_member(req(request.clone()))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    let again = app
        .client
        .create_member(req(request.clone()))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    assert_eq!(first, again);
    let mut changed = request;
    changed.tags = vec!["other".into()];
    let status = app.client.create_member(req(changed)).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(reason(&status), "REQUEST_ID_REUSED");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM members")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn concurrent_enrolment_of_one_phone_has_exactly_one_winner() {
    let app = spawn().await;
    let number = phone();
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let mut client = app.client.clone();
        let request = create_request(&number);
        tasks.push(tokio::spawn(async move {
            client.create_member(req(request)).await
        }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(status) => assert_eq!(status.code(), Code::AlreadyExists, "{status:?}"),
        }
    }
    assert_eq!(won, 1);
}

#[tokio::test]
async fn lookup_normalises_phone_and_email() {
    let mut app = spawn().await;
    let number = phone();
    let mut request = create_request(&number);
    request
        .identities
        .push(email_identity("Ada.Lovelace@Example.COM"));
    let created = app
        .client
        .create_member(req(request))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    let national = format!("0{}", &number[3..]);
    for identity in [
        phone_identity(&national),
        email_identity("  ada.lovelace@example.com "),
    ] {
        let found = app
            .client
            .lookup_member(req(pb::LookupMemberRequest {
                identity: Some(identity),
            }))
            .await
            .unwrap()
            .into_inner()
            .member
            .unwrap();
        assert_eq!(found.member_id, created.member_id);
    }
    let missing = app
        .client
        .lookup_member(req(pb::LookupMemberRequest {
            identity: Some(email_identity("nobody@example.com")),
        }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test]
async fn get_of_an_unknown_or_malformed_id_fails_precisely() {
    let mut app = spawn().await;
    let missing = app
        .client
        .get_member(req(pb::GetMemberRequest {
            member_id: uuid::Uuid::now_v7().to_string(),
        }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let bad = app
        .client
        .get_member(req(pb::GetMemberRequest {
            member_id: "nope".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&bad), ["member_id"]);
}

#[tokio::test]
async fn programmes_never_see_each_other() {
    let mut app = spawn().await;
    let number = phone();
    let created = app
        .client
        .create_member(in_program("brand-a", create_request(&number)))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    let other = app
        .client
        .get_member(in_program(
            "brand-b",
            pb::GetMemberRequest {
                member_id: created.member_id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::NotFound);
    // The same phone may enrol in another programme.
    app.client
        .create_member(in_program("brand-b", create_request(&number)))
        .await
        .unwrap();
    let bad = app
        .client
        .get_member(in_program(
            "Not A Program",
            pb::GetMemberRequest {
                member_id: created.member_id,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&bad), ["x-laurel-program"]);
}

#[tokio::test]
async fn update_changes_only_masked_fields_and_a_read_after_sees_it() {
    let mut app = spawn().await;
    let created = create(&mut app).await;
    // Warm the card cache first.
    app.client
        .get_member(req(pb::GetMemberRequest {
            member_id: created.member_id.clone(),
        }))
        .await
        .unwrap();
    let update = pb::UpdateMemberRequest {
        request_id: rid(),
        member: Some(pb::Member {
            member_id: created.member_id.clone(),
            profile: Some(pb::Profile {
                given_name: "Augusta".into(),
                family_name: "ignored".into(),
                ..Default::default()
            }),
            tags: vec!["gold".into()],
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["profile.given_name".into(), "tags".into()],
        }),
    };
    let updated = app
        .client
        .update_member(req(update))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    assert_eq!(updated.version, created.version + 1);
    let got = app
        .client
        .get_member(req(pb::GetMemberRequest {
            member_id: created.member_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    let profile = got.profile.unwrap();
    assert_eq!(profile.given_name, "Augusta");
    assert_eq!(profile.family_name, "Lovelace");
    assert_eq!(got.tags, ["gold"]);
}

#[tokio::test]
async fn update_refuses_unknown_paths_and_bad_values() {
    let mut app = spawn().await;
    let created = create(&mut app).await;
    let update = pb::UpdateMemberRequest {
        request_id: rid(),
        member: Some(pb::Member {
            member_id: created.member_id.clone(),
            profile: Some(pb::Profile {
                birth_date: "tomorrow".into(),
                ..Default::default()
            }),
            status: pb::MemberStatus::Merged as i32,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec![
                "profile.birth_date".into(),
                "status".into(),
                "referral_code".into(),
            ],
        }),
    };
    let status = app.client.update_member(req(update)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields = violated_fields(&status);
    assert!(
        fields.contains(&"profile.birth_date".to_owned())
            && fields.contains(&"member.status".to_owned())
            && fields.contains(&"update_mask".to_owned()),
        "{fields:?}"
    );
}

#[tokio::test]
async fn consents_keep_the_newer_decision() {
    let mut app = spawn().await;
    let created = create(&mut app).await;
    let at = |secs| {
        Some(prost_types::Timestamp {
            seconds: secs,
            nanos: 0,
        })
    };
    let set = |granted, secs| pb::UpdateMemberRequest {
        request_id: rid(),
        member: Some(pb::Member {
            member_id: created.member_id.clone(),
            consents: vec![pb::Consent {
                channel: pb::ConsentChannel::Sms as i32,
                granted,
                source: "app".into(),
                updated_at: at(secs),
            }],
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["consents".into()],
        }),
    };
    app.client
        .update_member(req(set(true, 1_700_000_100)))
        .await
        .unwrap();
    let member = app
        .client
        .update_member(req(set(false, 1_700_000_000)))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    assert!(
        member.consents[0].granted,
        "an older withdrawal must not override a newer grant"
    );
}

#[tokio::test]
async fn list_members_pages_and_filters() {
    let mut app = spawn().await;
    for i in 0..5 {
        let mut request = create_request(&phone());
        request.tags = if i % 2 == 0 {
            vec!["even".into()]
        } else {
            vec![]
        };
        app.client.create_member(req(request)).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .client
            .list_members(req(pb::ListMembersRequest {
                page_size: 2,
                page_token: token,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(page.members.len() <= 2);
        seen.extend(page.members.into_iter().map(|m| m.member_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 5);
    let even = app
        .client
        .list_members(req(pb::ListMembersRequest {
            tag: "even".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(even.members.len(), 3);
    let bad = app
        .client
        .list_members(req(pb::ListMembersRequest {
            page_token: "garbage!".into(),
            page_size: -1,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), ["page_size", "page_token"]);
}

#[tokio::test]
async fn an_identity_belongs_to_one_member_and_can_move_after_unlink() {
    let mut app = spawn().await;
    let a = create(&mut app).await;
    let b = create(&mut app).await;
    let email = email_identity(&format!("{}@example.com", rid()));
    let link = |member: &str| pb::LinkIdentityRequest {
        request_id: rid(),
        member_id: member.into(),
        identity: Some(email.clone()),
    };
    let linked = app
        .client
        .link_identity(req(link(&a.member_id)))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    assert_eq!(linked.identities.len(), 2);
    let taken = app
        .client
        .link_identity(req(link(&b.member_id)))
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);
    assert_eq!(reason(&taken), "IDENTITY_TAKEN");
    app.client
        .unlink_identity(req(pb::UnlinkIdentityRequest {
            request_id: rid(),
            member_id: a.member_id.clone(),
            identity: Some(email.clone()),
        }))
        .await
        .unwrap();
    let gone = app
        .client
        .lookup_member(req(pb::LookupMemberRequest {
            identity: Some(email.clone()),
        }))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    app.client
        .link_identity(req(link(&b.member_id)))
        .await
        .unwrap();
    let found = app
        .client
        .lookup_member(req(pb::LookupMemberRequest {
            identity: Some(email),
        }))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    assert_eq!(found.member_id, b.member_id);
    let not_linked = app
        .client
        .unlink_identity(req(pb::UnlinkIdentityRequest {
            request_id: rid(),
            member_id: a.member_id,
            identity: Some(email_identity("never@example.com")),
        }))
        .await
        .unwrap_err();
    assert_eq!(not_linked.code(), Code::NotFound);
}

#[tokio::test]
async fn merge_moves_everything_to_the_survivor() {
    let mut app = spawn().await;
    let survivor = create(&mut app).await;
    let mut other_request = create_request(&phone());
    other_request.tags = vec!["app-user".into()];
    other_request
        .identities
        .push(email_identity("merged@example.com"));
    let merged = app
        .client
        .create_member(req(other_request))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    app.client
        .record_activity(req(by_id(&merged.member_id, purchase(&rid(), 500))))
        .await
        .unwrap();
    let result = app
        .client
        .merge_members(req(pb::MergeMembersRequest {
            request_id: rid(),
            survivor_member_id: survivor.member_id.clone(),
            merged_member_id: merged.member_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .survivor
        .unwrap();
    assert_eq!(result.identities.len(), 3);
    assert_eq!(result.tags, ["app-user", "vip"]);
    let via_old_id = app
        .client
        .get_member(req(pb::GetMemberRequest {
            member_id: merged.member_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    assert_eq!(via_old_id.member_id, survivor.member_id);
    let via_email = app
        .client
        .lookup_member(req(pb::LookupMemberRequest {
            identity: Some(email_identity("merged@example.com")),
        }))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    assert_eq!(via_email.member_id, survivor.member_id);
    let activities = app
        .client
        .list_activities(req(pb::ListActivitiesRequest {
            member_id: survivor.member_id.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .activities;
    assert_eq!(activities.len(), 1);
    let stored_status: i16 = sqlx::query_scalar("SELECT status FROM members WHERE member_id = $1")
        .bind(uuid::Uuid::parse_str(&merged.member_id).unwrap())
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored_status, pb::MemberStatus::Merged as i16);
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = 'member.MemberMerged'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(events, 1);
    let again = app
        .client
        .merge_members(req(pb::MergeMembersRequest {
            request_id: rid(),
            survivor_member_id: survivor.member_id.clone(),
            merged_member_id: merged.member_id,
        }))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    let itself = app
        .client
        .merge_members(req(pb::MergeMembersRequest {
            request_id: rid(),
            survivor_member_id: survivor.member_id.clone(),
            merged_member_id: survivor.member_id,
        }))
        .await
        .unwrap_err();
    assert_eq!(itself.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn referral_is_recorded_and_self_referral_refused() {
    let mut app = spawn().await;
    let referrer = create(&mut app).await;
    let mut request = create_request(&phone());
    request.referral_code = referrer.referral_code.to_lowercase();
    let referred = app
        .client
        .create_member(req(request))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    assert_eq!(referred.referred_by_member_id, referrer.member_id);
    // The referrer enrolling again with their own phone and own code.
    let own_phone = referrer.identities[0].value.clone();
    let mut again = create_request(&own_phone);
    again.referral_code = referrer.referral_code.clone();
    let status = app.client.create_member(req(again)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status), "SELF_REFERRAL");
    let mut unknown = create_request(&phone());
    unknown.referral_code = "ABCDEFGH".into();
    let status = app.client.create_member(req(unknown)).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["referral_code"]);
    let export = app
        .client
        .export_member(req(pb::ExportMemberRequest {
            member_id: referrer.member_id,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(export.referred_member_ids, [referred.member_id]);
}

#[tokio::test]
async fn personal_data_is_encrypted_at_rest() {
    let mut app = spawn().await;
    let number = phone();
    app.client
        .create_member(req(create_request(&number)))
        .await
        .unwrap();
    let dump: String = sqlx::query_scalar(
        "SELECT string_agg(t::text, ' ') FROM (SELECT m::text AS t FROM members m UNION ALL SELECT i::text FROM identities i UNION ALL SELECT k::text FROM idempotency_keys k UNION ALL SELECT o::text FROM outbox o) x",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    for secret in ["Ada", "Lovelace", "1990-12-10", number.as_str()] {
        assert!(
            !dump.contains(secret) && !dump.contains(&hex(secret)),
            "{secret} readable in the database"
        );
    }
}

#[tokio::test]
async fn erase_removes_personal_data_for_good() {
    let mut app = spawn().await;
    let number = phone();
    let created = app
        .client
        .create_member(req(create_request(&number)))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    let feedback = pb::Activity {
        source: "survey".into(),
        external_id: rid(),
        detail: Some(pb::activity::Detail::Feedback(pb::Feedback {
            nps_score: 9,
            comment: "call me on my phone".into(),
        })),
        ..Default::default()
    };
    app.client
        .record_activity(req(by_id(&created.member_id, feedback)))
        .await
        .unwrap();
    let erased = app
        .client
        .erase_member(req(pb::EraseMemberRequest {
            request_id: rid(),
            member_id: created.member_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    assert_eq!(erased.status, pb::MemberStatus::Erased as i32);
    let id = uuid::Uuid::parse_str(&created.member_id).unwrap();
    type Sealed = Option<Vec<u8>>;
    let (given, family, birth): (Sealed, Sealed, Sealed) = sqlx::query_as(
        "SELECT given_name_enc, family_name_enc, birth_date_enc FROM members WHERE member_id = $1",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(given.is_none() && family.is_none() && birth.is_none());
    let identities: i64 = sqlx::query_scalar("SELECT count(*) FROM identities")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(identities, 0);
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys WHERE subject = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(kept, 0);
    let bodies: Vec<Vec<u8>> = sqlx::query_scalar("SELECT body FROM activities")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert!(
        bodies
            .iter()
            .all(|b| !String::from_utf8_lossy(b).contains("call me"))
    );
    let got = app
        .client
        .get_member(req(pb::GetMemberRequest {
            member_id: created.member_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    assert_eq!(got.status, pb::MemberStatus::Erased as i32);
    assert!(got.identities.is_empty() && got.profile.unwrap().given_name.is_empty());
    let lookup = app
        .client
        .lookup_member(req(pb::LookupMemberRequest {
            identity: Some(phone_identity(&number)),
        }))
        .await
        .unwrap_err();
    assert_eq!(lookup.code(), Code::NotFound);
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = 'member.MemberErased'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(events, 1);
}
