//! GetMemberCard over real gRPC, Postgres and Redis: the profile from the
//! member's own field, the balance from the points field the points service
//! writes, a missing balance asked of a points service (here a small real
//! gRPC server over TCP) within the caller's deadline, and a card without a
//! balance, promptly, when that service is down.

mod common;

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use common::*;
use futures::future::BoxFuture;
use laurel_member::{LinkSettings, members::parse_grpc_timeout};
use laurel_proto::{
    member::v1 as pb,
    points::v1::{Balance, Expiring, GetBalanceRequest, GetBalanceResponse},
    tier::v1::MemberTier,
};
use laurel_runtime::{
    cache::Redis,
    card::{CardField, Cards, LocalLimits, card_key},
    context::ProgramId,
};
use prost::Message;
use redis::AsyncCommands;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, server::NamedService};
use uuid::Uuid;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

// ---------------------------------------------------------------- helpers

/// An address where nothing listens.
fn closed_port() -> String {
    let port = laurel_test_support::free_port();
    format!("http://127.0.0.1:{port}")
}

/// What the points service was sent with one GetBalance.
#[derive(Clone, Debug, Default)]
struct Seen {
    member_id: String,
    timeout: Option<Duration>,
    program: Option<String>,
    api_key: Option<String>,
    traceparent: Option<String>,
}

/// A points service that serves GetBalance only: it records the call,
/// waits `delay`, then answers `balance` (its member id set to the one
/// asked for). Everything else is UNIMPLEMENTED.
#[derive(Clone)]
struct FakePoints {
    delay: Duration,
    balance: Balance,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl NamedService for FakePoints {
    const NAME: &'static str = "laurel.points.v1.PointsService";
}

struct GetBalance(FakePoints);

impl tonic::server::UnaryService<GetBalanceRequest> for GetBalance {
    type Response = GetBalanceResponse;
    type Future = BoxFuture<'static, Result<tonic::Response<GetBalanceResponse>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<GetBalanceRequest>) -> Self::Future {
        let fake = self.0.clone();
        Box::pin(async move {
            let text = |name: &str| {
                request
                    .metadata()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let member_id = request.get_ref().member_id.clone();
            fake.seen.lock().unwrap().push(Seen {
                member_id: member_id.clone(),
                timeout: text("grpc-timeout").and_then(|t| parse_grpc_timeout(&t)),
                program: text("x-laurel-program"),
                api_key: text("x-api-key"),
                traceparent: text("traceparent"),
            });
            tokio::time::sleep(fake.delay).await;
            Ok(tonic::Response::new(GetBalanceResponse {
                balance: Some(Balance {
                    member_id,
                    ..fake.balance
                }),
            }))
        })
    }
}

impl tower_service::Service<http::Request<tonic::body::Body>> for FakePoints {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let fake = self.clone();
        Box::pin(async move {
            if request.uri().path() != "/laurel.points.v1.PointsService/GetBalance" {
                return Ok(tonic::Status::unimplemented("not in this fake").into_http());
            }
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(GetBalance(fake), request).await)
        })
    }
}

impl FakePoints {
    /// Serves on a free local port; returns its address.
    async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = tonic::transport::Server::builder().add_service(self.clone());
        tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
        format!("http://{addr}")
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn fake_points(delay: Duration, available: i64) -> FakePoints {
    FakePoints {
        delay,
        balance: balance("", available, 9),
        seen: Arc::default(),
    }
}

fn balance(member_id: &str, available: i64, version: i64) -> Balance {
    Balance {
        valid_until: None,
        member_id: member_id.into(),
        available,
        pending: 20,
        held: 5,
        total: available + 25,
        expiring: vec![Expiring {
            expires_at: Some(prost_types::Timestamp {
                seconds: 1_900_000_000,
                nanos: 0,
            }),
            points: 40,
        }],
        lifetime_earned: available + 500,
        version,
    }
}

/// A member service whose GetMemberCard finds the points service at `addr`
/// and waits for it at most `timeout`.
async fn spawn_with_points(addr: String, api_key: Option<&str>, timeout: Duration) -> TestApp {
    spawn_with(Options {
        relay: true,
        points: Some(LinkSettings {
            addr,
            api_key: api_key.map(str::to_owned),
            timeout,
        }),
        ..Options::default()
    })
    .await
}

/// The points field of a member's card, as the points service writes it.
fn points_field(app: &TestApp) -> Cards<Balance> {
    let redis = Redis::new(&app.redis_url, &app.prefix).unwrap();
    Cards::new(redis, CardField::Points, LocalLimits::default())
}

async fn write_points(app: &TestApp, program: &str, balance: &Balance) {
    let program = ProgramId::parse(program).unwrap();
    let member = Uuid::parse_str(&balance.member_id).unwrap();
    assert!(
        points_field(app)
            .fill(&program, &member, balance.version, &balance.encode_to_vec())
            .await,
        "redis took the points field"
    );
}

fn card_request(member_id: &str) -> tonic::Request<pb::GetMemberCardRequest> {
    req(pb::GetMemberCardRequest {
        member_id: member_id.into(),
    })
}

async fn card(
    app: &mut TestApp,
    request: tonic::Request<pb::GetMemberCardRequest>,
) -> pb::MemberCard {
    app.client
        .get_member_card(request)
        .await
        .expect("a card")
        .into_inner()
        .card
        .expect("card set")
}

fn points_status(card: &pb::MemberCard) -> pb::PointsStatus {
    pb::PointsStatus::try_from(card.points_status).unwrap()
}

// ---------------------------------------------------------------- profile

#[tokio::test]
async fn the_card_shows_the_profile_summary_and_no_tier_without_a_tier_service() {
    let mut app = spawn().await;
    let created = create(&mut app).await;
    // As GetMember answers (CreateMember's own answer carries the enrolment
    // time at a finer precision than Postgres keeps).
    let member = app
        .client
        .get_member(req(pb::GetMemberRequest {
            member_id: created.member_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    let card = card(&mut app, card_request(&member.member_id)).await;
    let summary = card.member.as_ref().unwrap();
    assert_eq!(
        summary,
        &pb::MemberSummary {
            member_id: member.member_id.clone(),
            program_id: "default".into(),
            status: pb::MemberStatus::Active as i32,
            given_name: "Ada".into(),
            family_name: "Lovelace".into(),
            tags: vec!["vip".into()],
            enrolled_at: member.enrolled_at,
            version: member.version,
        }
    );
    assert_eq!(card.tier_code, "");
    assert_eq!(card.tier_status, pb::TierStatus::NotProvided as i32);
}

#[tokio::test]
async fn bad_and_unknown_ids_fail_as_get_member_does() {
    let mut app = spawn().await;
    let invalid = app
        .client
        .get_member_card(card_request("not-a-uuid"))
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&invalid), ["member_id"]);

    let unknown = app
        .client
        .get_member_card(card_request(&Uuid::now_v7().to_string()))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(reason(&unknown), "MEMBER_NOT_FOUND");

    let member = create(&mut app).await;
    let elsewhere = app
        .client
        .get_member_card(in_program(
            "brand-b",
            pb::GetMemberCardRequest {
                member_id: member.member_id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        elsewhere.code(),
        Code::NotFound,
        "another programme's member"
    );
}

#[tokio::test]
async fn an_erased_members_card_holds_no_personal_data() {
    let mut app = spawn().await;
    let member = create(&mut app).await;
    app.client
        .erase_member(req(pb::EraseMemberRequest {
            request_id: rid(),
            member_id: member.member_id.clone(),
        }))
        .await
        .unwrap();
    let card = card(&mut app, card_request(&member.member_id)).await;
    let summary = card.member.unwrap();
    assert_eq!(summary.status, pb::MemberStatus::Erased as i32);
    assert_eq!(
        (summary.given_name.as_str(), summary.family_name.as_str()),
        ("", "")
    );
}

// ---------------------------------------------------------------- points

#[tokio::test]
async fn with_the_points_service_down_the_card_answers_promptly_without_a_balance() {
    // The card may wait two seconds for a balance and the caller five: a
    // refused connection must not use up either.
    let mut app = spawn_with_points(closed_port(), None, Duration::from_secs(2)).await;
    let member = create(&mut app).await;
    for attempt in 0..2 {
        let mut request = card_request(&member.member_id);
        request.set_timeout(Duration::from_secs(5));
        let started = Instant::now();
        let card = card(&mut app, request).await;
        let took = started.elapsed();
        assert_eq!(
            points_status(&card),
            pb::PointsStatus::Unavailable,
            "attempt {attempt}"
        );
        assert_eq!(card.points, None);
        assert_eq!(card.member.unwrap().given_name, "Ada");
        assert!(
            took < Duration::from_secs(1),
            "attempt {attempt} took {took:?}"
        );
    }
}

#[tokio::test]
async fn the_card_shows_the_balance_the_points_service_wrote_on_it() {
    // Nothing listens for points: the balance can only come from the card.
    let mut app = spawn_with_points(closed_port(), None, Duration::from_secs(2)).await;
    let member = create(&mut app).await;
    let written = balance(&member.member_id, 1_240, 3);
    write_points(&app, "default", &written).await;

    let card = card(&mut app, card_request(&member.member_id)).await;
    assert_eq!(points_status(&card), pb::PointsStatus::FromCard);
    assert_eq!(card.points, Some(written));
}

#[tokio::test]
async fn a_newer_balance_on_the_card_replaces_the_one_shown_before() {
    let mut app = spawn_with_points(closed_port(), None, Duration::from_secs(2)).await;
    let member = create(&mut app).await;
    write_points(&app, "default", &balance(&member.member_id, 100, 1)).await;
    let first = card(&mut app, card_request(&member.member_id)).await;
    assert_eq!(first.points.unwrap().available, 100);

    // As the points service does on a change: its relay bumps the version
    // (dropping the field and telling every replica), then a read fills it.
    let program = ProgramId::parse("default").unwrap();
    let id = Uuid::parse_str(&member.member_id).unwrap();
    assert!(points_field(&app).invalidate(&program, &id, 2).await);
    write_points(&app, "default", &balance(&member.member_id, 150, 2)).await;

    eventually(
        Duration::from_secs(5),
        "the card shows the new balance",
        || {
            let mut client = app.client.clone();
            let request = card_request(&member.member_id);
            async move {
                let card = client
                    .get_member_card(request)
                    .await
                    .ok()?
                    .into_inner()
                    .card?;
                let points = card.points?;
                (points.available == 150 && card.points_status == pb::PointsStatus::FromCard as i32)
                    .then_some(())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_balance_missing_from_the_card_is_asked_of_the_points_service() {
    let points = fake_points(Duration::ZERO, 70);
    let mut app = spawn_with_points(
        points.serve().await,
        Some("member-to-points-key"),
        Duration::from_secs(2),
    )
    .await;
    // A member of brand-a, asked for within the caller's trace.
    let member = app
        .client
        .create_member(in_program("brand-a", create_request(&phone())))
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    let mut request = in_program(
        "brand-a",
        pb::GetMemberCardRequest {
            member_id: member.member_id.clone(),
        },
    );
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );

    let card = card(&mut app, request).await;
    assert_eq!(points_status(&card), pb::PointsStatus::FromPointsService);
    assert_eq!(card.points, Some(balance(&member.member_id, 70, 9)));

    let seen = points.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let call = &seen[0];
    assert_eq!(call.member_id, member.member_id);
    assert_eq!(call.program.as_deref(), Some("brand-a"));
    assert_eq!(call.api_key.as_deref(), Some("member-to-points-key"));
    let traceparent = call.traceparent.as_deref().unwrap_or_default();
    assert!(
        traceparent.starts_with(&format!("00-{TRACE_ID}-")),
        "the caller's trace: {traceparent:?}"
    );
    assert!(call.timeout.is_some_and(|t| t <= Duration::from_secs(2)));

    // The points field is the points service's: the member service never
    // writes it, not even with a balance in hand.
    let key = card_key(
        &app.prefix,
        "brand-a",
        &Uuid::parse_str(&member.member_id).unwrap(),
    );
    let mut redis = redis::Client::open(app.redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let fields: Vec<String> = redis.hkeys(&key).await.unwrap();
    assert!(
        fields.iter().all(|f| !f.starts_with("points")),
        "member wrote the points field: {fields:?}"
    );
}

#[tokio::test]
async fn the_points_call_gets_the_callers_remaining_deadline() {
    let points = fake_points(Duration::from_secs(10), 70);
    let mut app = spawn_with_points(points.serve().await, None, Duration::from_secs(5)).await;
    let member = create(&mut app).await;
    let deadline = Duration::from_millis(400);
    let mut request = card_request(&member.member_id);
    request.set_timeout(deadline);
    let started = Instant::now();
    let answer = app.client.get_member_card(request).await;
    let took = started.elapsed();

    let card = answer
        .expect("the card answers before the caller's deadline")
        .into_inner()
        .card
        .unwrap();
    assert_eq!(points_status(&card), pb::PointsStatus::Unavailable);
    assert_eq!(card.points, None);
    assert!(took < deadline, "took {took:?}");
    let seen = points.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let sent = seen[0].timeout.expect("a grpc-timeout was sent");
    assert!(
        sent > Duration::ZERO && sent < deadline,
        "sent {sent:?} of the caller's {deadline:?}"
    );
}

#[tokio::test]
async fn without_a_caller_deadline_the_points_call_is_capped() {
    let points = fake_points(Duration::from_secs(10), 70);
    let cap = Duration::from_millis(300);
    let mut app = spawn_with_points(points.serve().await, None, cap).await;
    let member = create(&mut app).await;
    let started = Instant::now();
    let card = card(&mut app, card_request(&member.member_id)).await;
    let took = started.elapsed();
    assert_eq!(points_status(&card), pb::PointsStatus::Unavailable);
    assert!(
        took >= cap && took < Duration::from_secs(3),
        "took {took:?}"
    );
    let sent = points.seen()[0].timeout.expect("a grpc-timeout was sent");
    assert!(sent <= cap, "sent {sent:?}");
}

#[tokio::test]
async fn a_merged_members_card_is_the_survivors_with_the_survivors_balance() {
    let mut app = spawn_with_points(closed_port(), None, Duration::from_secs(2)).await;
    let survivor = create(&mut app).await;
    let merged = create(&mut app).await;
    app.client
        .merge_members(req(pb::MergeMembersRequest {
            request_id: rid(),
            survivor_member_id: survivor.member_id.clone(),
            merged_member_id: merged.member_id.clone(),
        }))
        .await
        .unwrap();
    let survivors = balance(&survivor.member_id, 880, 4);
    write_points(&app, "default", &survivors).await;
    write_points(&app, "default", &balance(&merged.member_id, 1, 4)).await;

    let card = card(&mut app, card_request(&merged.member_id)).await;
    assert_eq!(card.member.as_ref().unwrap().member_id, survivor.member_id);
    assert_eq!(points_status(&card), pb::PointsStatus::FromCard);
    assert_eq!(card.points, Some(survivors));
}

// ---------------------------------------------------------------- tier

/// A member service whose GetMemberCard finds nothing at the points or tier
/// addresses: fields can only come from the card.
async fn spawn_with_closed_owners() -> TestApp {
    spawn_with(Options {
        relay: true,
        points: Some(LinkSettings::at(closed_port())),
        tier: Some(LinkSettings::at(closed_port())),
        ..Options::default()
    })
    .await
}

async fn write_tier(app: &TestApp, member: &str, tier: &MemberTier, version: i64) {
    let redis = Redis::new(&app.redis_url, &app.prefix).unwrap();
    let cards: Cards<MemberTier> = Cards::new(redis, CardField::Tier, LocalLimits::default());
    let program = ProgramId::parse("default").unwrap();
    let member = Uuid::parse_str(member).unwrap();
    assert!(
        cards
            .fill(&program, &member, version, &tier.encode_to_vec())
            .await,
        "redis took the tier field"
    );
}

fn gold(member_id: &str, valid_until: Option<prost_types::Timestamp>) -> MemberTier {
    MemberTier {
        member_id: member_id.into(),
        tier_code: "gold".into(),
        tier_name: "Gold".into(),
        secured_until: Some(prost_types::Timestamp {
            seconds: 1_900_000_000,
            nanos: 0,
        }),
        valid_until,
        ..Default::default()
    }
}

#[tokio::test]
async fn the_card_shows_the_tier_the_tier_service_wrote_on_it() {
    let mut app = spawn_with_closed_owners().await;
    let member = create(&mut app).await;
    write_tier(&app, &member.member_id, &gold(&member.member_id, None), 4).await;

    let card = card(&mut app, card_request(&member.member_id)).await;
    assert_eq!(card.tier_status, pb::TierStatus::FromCard as i32);
    assert_eq!(card.tier_code, "gold");
    assert_eq!(card.tier_name, "Gold");
    assert_eq!(card.tier_secured_until.unwrap().seconds, 1_900_000_000);
    // The balance is not on the card and its owner is down: the tier still
    // shows.
    assert_eq!(points_status(&card), pb::PointsStatus::Unavailable);
}

#[tokio::test]
async fn a_tier_past_its_valid_until_is_not_served_from_the_card() {
    let mut app = spawn_with_closed_owners().await;
    let member = create(&mut app).await;
    let past = prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() - 60,
        nanos: 0,
    };
    write_tier(
        &app,
        &member.member_id,
        &gold(&member.member_id, Some(past)),
        4,
    )
    .await;

    let card = card(&mut app, card_request(&member.member_id)).await;
    assert_eq!(card.tier_status, pb::TierStatus::Unavailable as i32);
    assert_eq!(card.tier_code, "");
}

#[tokio::test]
async fn with_the_tier_service_down_the_card_answers_promptly_without_a_tier() {
    let mut app = spawn_with_closed_owners().await;
    let member = create(&mut app).await;
    let mut request = card_request(&member.member_id);
    request.set_timeout(Duration::from_secs(5));
    let started = Instant::now();
    let card = card(&mut app, request).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(card.tier_status, pb::TierStatus::Unavailable as i32);
    assert_eq!(card.member.unwrap().given_name, "Ada");
}
