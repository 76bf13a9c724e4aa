//! Ladders: invalid ones are refused with field violations naming the
//! problem, publishing is idempotent on its request_id, and a new version
//! re-evaluates every member in the background, reporting progress.

mod common;

use std::time::Duration;

use common::{eventually, fields, req, rid, simple_ladder, spawn};
use laurel_proto::tier::v1 as pb;

const WAIT: Duration = Duration::from_secs(20);

async fn refused(stack: &common::Stack, ladder: pb::Ladder) -> tonic::Status {
    stack
        .tier
        .clone()
        .publish_ladder(req(pb::PublishLadderRequest {
            request_id: rid(),
            ladder: Some(ladder),
        }))
        .await
        .expect_err("refused")
}

#[tokio::test]
async fn invalid_ladders_are_refused_naming_the_problem() {
    let stack = spawn().await;
    // Gold by 2 orders is easier than silver's 3 orders or 100 EUR.
    let mut overlapping = simple_ladder();
    overlapping.tiers[2].qualify_any.push(pb::Threshold {
        orders: 2,
        ..Default::default()
    });
    let status = refused(&stack, overlapping).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(fields(&status), vec!["ladder.tiers[2].qualify_any[1]"]);
    assert!(!status.details().is_empty());

    let mut no_base = simple_ladder();
    no_base.tiers.remove(0);
    let status = refused(&stack, no_base).await;
    assert_eq!(fields(&status), vec!["ladder.tiers[0].qualify_any"]);

    let mut unknown_benefit = simple_ladder();
    unknown_benefit.tiers[2].benefits.push(pb::BenefitGrant {
        benefit_code: "never-defined".into(),
        quota: 2,
        period: pb::QuotaPeriod::Month as i32,
    });
    let status = refused(&stack, unknown_benefit).await;
    assert_eq!(
        fields(&status),
        vec!["ladder.tiers[2].benefits[0].benefit_code"]
    );
    // Nothing was published.
    let none = stack
        .tier
        .clone()
        .get_ladder(req(pb::GetLadderRequest { version: 0 }))
        .await
        .unwrap_err();
    assert_eq!(common::reason(&none), "NO_LADDER");
}

#[tokio::test]
async fn publishing_is_idempotent_on_its_request_id() {
    let stack = spawn().await;
    let publish = |id: String, ladder: pb::Ladder| {
        let mut client = stack.tier.clone();
        async move {
            client
                .publish_ladder(req(pb::PublishLadderRequest {
                    request_id: id,
                    ladder: Some(ladder),
                }))
                .await
        }
    };
    let id = rid();
    let first = publish(id.clone(), simple_ladder())
        .await
        .unwrap()
        .into_inner();
    let again = publish(id.clone(), simple_ladder())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first);
    assert_eq!(first.ladder.as_ref().unwrap().version, 1);
    let mut other = simple_ladder();
    other.grace_days = 7;
    let status = publish(id, other.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::AlreadyExists);
    let second = publish(rid(), other).await.unwrap().into_inner();
    assert_eq!(second.ladder.unwrap().version, 2);
    let in_force = stack
        .tier
        .clone()
        .get_ladder(req(pb::GetLadderRequest { version: 0 }))
        .await
        .unwrap()
        .into_inner()
        .ladder
        .unwrap();
    assert_eq!((in_force.version, in_force.grace_days), (2, 7));
}

#[tokio::test]
async fn a_new_ladder_re_evaluates_every_member_with_progress() {
    let stack = spawn().await;
    stack.publish(simple_ladder()).await;
    let now = laurel_runtime::clock::Clock::now(&stack.clock);
    let mut members = Vec::new();
    for _ in 0..5 {
        let m = stack.member().await;
        stack.purchase(m, 15_000, now).await;
        members.push(m);
    }
    for m in &members {
        stack.wait_for_tier(*m, "silver").await;
    }
    // Gold gets easier: 150 EUR is enough now.
    let mut easier = simple_ladder();
    easier.tiers[1].qualify_any = vec![pb::Threshold {
        spend_minor: 5_000,
        ..Default::default()
    }];
    easier.tiers[2].qualify_any = vec![pb::Threshold {
        spend_minor: 15_000,
        ..Default::default()
    }];
    let published = stack.publish(easier).await;
    let started = published.reevaluation.unwrap();
    assert_eq!((started.ladder_version, started.members_total), (2, 5));
    let done = eventually(WAIT, "the re-evaluation finishes", || async {
        let r = stack
            .tier
            .clone()
            .get_reevaluation(req(pb::GetReevaluationRequest {
                reevaluation_id: started.reevaluation_id.clone(),
            }))
            .await
            .ok()?
            .into_inner()
            .reevaluation?;
        (r.state == pb::ReevaluationState::Done as i32).then_some(r)
    })
    .await;
    assert_eq!((done.members_done, done.members_changed), (5, 5));
    assert!(done.finished_at.is_some());
    for m in &members {
        let t = stack.tier_of(*m).await;
        assert_eq!((t.tier_code.as_str(), t.ladder_version), ("gold", 2));
        let history = stack
            .tier
            .clone()
            .list_tier_history(req(pb::ListTierHistoryRequest {
                member_id: m.to_string(),
                page_size: 1,
                page_token: String::new(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            history.entries[0].reason,
            pb::TierChangeReason::LadderChanged as i32
        );
        assert!(
            !history.next_page_token.is_empty(),
            "older entries on a next page"
        );
    }
    // A newer version supersedes a running one; the latest is reported.
    let latest = stack.publish(simple_ladder()).await.reevaluation.unwrap();
    let reported = stack
        .tier
        .clone()
        .get_reevaluation(req(pb::GetReevaluationRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .reevaluation
        .unwrap();
    assert_eq!(reported.reevaluation_id, latest.reevaluation_id);
}
