//! Two replicas of the member service on one database and one Redis: each
//! serves cards from its own memory, and a write on one is seen by the
//! other as soon as the invalidation arrives.

mod common;

use std::time::Duration;

use common::*;
use laurel_proto::member::v1 as pb;
use tonic::Code;

async fn pair() -> (TestApp, TestApp) {
    let a = spawn().await;
    let b = spawn_with(Options {
        schema: Some(a.schema.clone()),
        prefix: Some(a.prefix.clone()),
        relay: false,
        ..Options::default()
    })
    .await;
    (a, b)
}

async fn tags_on(app: &TestApp, id: &str) -> (Vec<String>, i64) {
    let m = app
        .client
        .clone()
        .get_member(req(pb::GetMemberRequest {
            member_id: id.into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    (m.tags, m.version)
}

#[tokio::test]
async fn a_write_on_one_replica_is_served_by_the_other() {
    let (mut a, b) = pair().await;
    let member = create(&mut a).await;
    let id = member.member_id.clone();
    // b serves the card from memory now.
    assert_eq!(tags_on(&b, &id).await, (vec!["vip".to_owned()], 1));
    assert_eq!(tags_on(&b, &id).await.1, 1);
    a.client
        .update_member(req(pb::UpdateMemberRequest {
            request_id: rid(),
            member: Some(pb::Member {
                member_id: id.clone(),
                tags: vec!["gold".into()],
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["tags".into()],
            }),
        }))
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "b serves the new card", || {
        let b = &b;
        let id = id.clone();
        async move { (tags_on(b, &id).await == (vec!["gold".to_owned()], 2)).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn an_identity_unlinked_or_erased_on_one_replica_stops_resolving_on_the_other() {
    let (mut a, b) = pair().await;
    let number = phone();
    let member = a
        .client
        .create_member(req(create_request(&number)))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    let lookup = |app: &TestApp, value: String| {
        let mut client = app.client.clone();
        async move {
            client
                .lookup_member(req(pb::LookupMemberRequest {
                    identity: Some(phone_identity(&value)),
                }))
                .await
        }
    };
    // b resolves the phone and keeps the resolution in memory.
    lookup(&b, number.clone()).await.unwrap();
    lookup(&b, number.clone()).await.unwrap();
    a.client
        .unlink_identity(req(pb::UnlinkIdentityRequest {
            request_id: rid(),
            member_id: member.member_id.clone(),
            identity: Some(phone_identity(&number)),
        }))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(5),
        "b no longer resolves the phone",
        || {
            let call = lookup(&b, number.clone());
            async move { (call.await.err()?.code() == Code::NotFound).then_some(()) }
        },
    )
    .await;

    let email = format!("{}@example.com", rid());
    a.client
        .link_identity(req(pb::LinkIdentityRequest {
            request_id: rid(),
            member_id: member.member_id.clone(),
            identity: Some(email_identity(&email)),
        }))
        .await
        .unwrap();
    let by_email = |app: &TestApp| {
        let mut client = app.client.clone();
        let email = email.clone();
        async move {
            client
                .lookup_member(req(pb::LookupMemberRequest {
                    identity: Some(email_identity(&email)),
                }))
                .await
        }
    };
    by_email(&b).await.unwrap();
    a.client
        .erase_member(req(pb::EraseMemberRequest {
            request_id: rid(),
            member_id: member.member_id.clone(),
        }))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(5),
        "b no longer resolves the email",
        || {
            let call = by_email(&b);
            async move { (call.await.err()?.code() == Code::NotFound).then_some(()) }
        },
    )
    .await;
}

#[tokio::test]
async fn a_merge_refreshes_the_cards_of_members_the_merged_one_referred() {
    let (mut a, b) = pair().await;
    let referrer = create(&mut a).await;
    let mut request = create_request(&phone());
    request.referral_code = referrer.referral_code.clone();
    let referred = a
        .client
        .create_member(req(request))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    let survivor = create(&mut a).await;
    let on_b = |id: String| {
        let mut client = b.client.clone();
        async move {
            client
                .get_member(req(pb::GetMemberRequest { member_id: id }))
                .await
                .unwrap()
                .into_inner()
                .member
                .unwrap()
        }
    };
    // b caches the referred member's card, naming the referrer.
    assert_eq!(
        on_b(referred.member_id.clone()).await.referred_by_member_id,
        referrer.member_id
    );
    a.client
        .merge_members(req(pb::MergeMembersRequest {
            request_id: rid(),
            survivor_member_id: survivor.member_id.clone(),
            merged_member_id: referrer.member_id.clone(),
        }))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(5),
        "b's card names the survivor",
        || {
            let card = on_b(referred.member_id.clone());
            let survivor = survivor.member_id.clone();
            async move { (card.await.referred_by_member_id == survivor).then_some(()) }
        },
    )
    .await;
}
