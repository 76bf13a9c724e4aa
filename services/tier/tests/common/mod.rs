//! Starts a member service, optionally a points service, and a tier service
//! on free ports against the test Postgres (fresh schemas) and Redis (one
//! fresh key prefix, so the services consume each other's events), with real
//! gRPC clients and one manual clock.

#![allow(dead_code)]

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use laurel_proto::{
    member::v1::{self as mpb, member_service_client::MemberServiceClient},
    points::v1::points_service_client::PointsServiceClient,
    tier::v1::{self as pb, tier_service_client::TierServiceClient},
};
use laurel_runtime::clock::ManualClock;
use laurel_test_support as support;
use sqlx::PgPool;
use tonic::transport::Channel;
use uuid::Uuid;
// Not every test file uses every helper.
#[allow(unused_imports)]
pub use laurel_test_support::grpc::{eur, fields, reason, req, rid, timestamp};

pub use support::eventually;

/// Member, tier and (optionally) points, running.
pub struct Stack {
    pub member: MemberServiceClient<Channel>,
    pub tier: TierServiceClient<Channel>,
    pub points: Option<PointsServiceClient<Channel>>,
    pub member_addr: std::net::SocketAddr,
    pub tier_addr: std::net::SocketAddr,
    pub points_addr: Option<std::net::SocketAddr>,
    /// The tier schema.
    pub db: PgPool,
    pub tier_schema: String,
    pub prefix: String,
    pub clock: ManualClock,
    member_running: support::Running,
    tier_running: support::Running,
    points_running: Option<support::Running>,
}

/// Options for [`spawn_with`].
#[derive(Clone, Default)]
pub struct Options {
    /// Start a points service too.
    pub points: bool,
    /// Share this tier schema (a second replica, or a restart).
    pub tier_schema: Option<String>,
    /// Share this member stack (prefix and member address).
    pub join: Option<(String, std::net::SocketAddr)>,
    /// Start the clock here instead of now.
    pub start: Option<DateTime<Utc>>,
}

pub async fn spawn() -> Stack {
    spawn_with(Options::default()).await
}

pub async fn spawn_with(options: Options) -> Stack {
    let clock = ManualClock::new(options.start.unwrap_or_else(Utc::now));
    let prefix = options
        .join
        .as_ref()
        .map(|j| j.0.clone())
        .unwrap_or_else(support::fresh_prefix);
    let mut member_runtime = support::runtime_config("member");
    member_runtime.redis_prefix = prefix.clone();
    let member_config = laurel_member::Config {
        runtime: member_runtime,
        pii_keys: laurel_member::pii::Keyring::single([42; 32]),
        phone_region: None,
        points: laurel_member::LinkSettings::at("http://127.0.0.1:1"),
        tier: None,
    };
    let member_app = laurel_member::build(member_config, Some(Arc::new(clock.clone())))
        .await
        .expect("member builds");
    let member_running = support::start(member_app).await;
    let member_addr = options
        .join
        .as_ref()
        .map(|j| j.1)
        .unwrap_or(member_running.addr);

    let points_running = if options.points {
        let mut runtime = support::runtime_config("points");
        runtime.redis_prefix = prefix.clone();
        let config = laurel_points::Config {
            runtime,
            member_addr: format!("http://{member_addr}"),
            member_api_key: None,
            group: Default::default(),
            job_interval: Duration::from_millis(100),
        };
        let app = laurel_points::build(config, Some(Arc::new(clock.clone())))
            .await
            .expect("points builds");
        Some(support::start(app).await)
    } else {
        None
    };

    let mut runtime = support::runtime_config("tier");
    runtime.redis_prefix = prefix.clone();
    let shared = options.tier_schema.is_some();
    if let Some(schema) = options.tier_schema {
        runtime.db_schema = schema;
    }
    let tier_schema = runtime.db_schema.clone();
    let config = laurel_tier::Config {
        runtime,
        member_addr: format!("http://{member_addr}"),
        member_api_key: None,
        job_interval: Duration::from_millis(100),
    };
    let app = laurel_tier::build(config, Some(Arc::new(clock.clone())))
        .await
        .expect("tier builds");
    let mut tier_running = support::start(app).await;
    if shared {
        tier_running.keep_schema();
    }
    let db = laurel_runtime::db::pool(&support::database_url(), &tier_schema, 4).unwrap();
    Stack {
        member: MemberServiceClient::new(member_running.channel.clone()),
        tier: TierServiceClient::new(tier_running.channel.clone()),
        points: points_running
            .as_ref()
            .map(|p| PointsServiceClient::new(p.channel.clone())),
        member_addr,
        tier_addr: tier_running.addr,
        points_addr: points_running.as_ref().map(|p| p.addr),
        db,
        tier_schema,
        prefix,
        clock,
        member_running,
        tier_running,
        points_running,
    }
}

impl Stack {
    /// Enrols a member; returns its id. The tier service learns of it from
    /// the MemberCreated event.
    pub async fn member(&self) -> Uuid {
        let response = self
            .member
            .clone()
            .create_member(req(mpb::CreateMemberRequest {
                request_id: rid(),
                ..Default::default()
            }))
            .await
            .expect("member enrols");
        Uuid::parse_str(&response.into_inner().member.unwrap().member_id).unwrap()
    }

    /// Records a purchase of `amount_minor` EUR cents at `at`; returns the
    /// order id.
    pub async fn purchase(&self, member: Uuid, amount_minor: i64, at: DateTime<Utc>) -> String {
        let order_id = format!("o-{}", Uuid::now_v7());
        self.activity(
            member,
            at,
            mpb::activity::Detail::Purchase(mpb::Purchase {
                order_id: order_id.clone(),
                total: Some(eur(amount_minor)),
                ..Default::default()
            }),
        )
        .await;
        order_id
    }

    /// Records a refund of `amount_minor` EUR cents of `order_id` at `at`.
    pub async fn refund(&self, member: Uuid, order_id: &str, amount_minor: i64, at: DateTime<Utc>) {
        self.activity(
            member,
            at,
            mpb::activity::Detail::Refund(mpb::Refund {
                order_id: order_id.to_owned(),
                amount: Some(eur(amount_minor)),
                ..Default::default()
            }),
        )
        .await;
    }

    async fn activity(&self, member: Uuid, at: DateTime<Utc>, detail: mpb::activity::Detail) {
        self.member
            .clone()
            .record_activity(req(mpb::RecordActivityRequest {
                member: Some(mpb::record_activity_request::Member::MemberId(
                    member.to_string(),
                )),
                activity: Some(mpb::Activity {
                    source: "pos".into(),
                    external_id: Uuid::now_v7().to_string(),
                    occurred_at: Some(timestamp(at)),
                    detail: Some(detail),
                    ..Default::default()
                }),
                ..Default::default()
            }))
            .await
            .expect("activity recorded");
    }

    /// Publishes `ladder`; returns the response.
    pub async fn publish(&self, ladder: pb::Ladder) -> pb::PublishLadderResponse {
        self.tier
            .clone()
            .publish_ladder(req(pb::PublishLadderRequest {
                request_id: rid(),
                ladder: Some(ladder),
            }))
            .await
            .expect("ladder published")
            .into_inner()
    }

    /// The member's tier.
    pub async fn tier_of(&self, member: Uuid) -> pb::MemberTier {
        self.tier
            .clone()
            .get_member_tier(req(pb::GetMemberTierRequest {
                member_id: member.to_string(),
            }))
            .await
            .expect("member tier")
            .into_inner()
            .tier
            .unwrap()
    }

    /// Waits until the member's tier code is `code`.
    pub async fn wait_for_tier(&self, member: Uuid, code: &str) -> pb::MemberTier {
        let what = format!("member {member} reaches tier {code}");
        eventually(Duration::from_secs(10), &what, || async {
            let tier = self
                .tier
                .clone()
                .get_member_tier(req(pb::GetMemberTierRequest {
                    member_id: member.to_string(),
                }))
                .await
                .ok()?
                .into_inner()
                .tier?;
            (tier.tier_code == code).then_some(tier)
        })
        .await
    }

    /// Moves the manual clock forward.
    pub fn advance(&self, by: chrono::Duration) {
        self.clock.advance(by);
    }

    /// Another member replica on the same schema and prefix whose
    /// GetMemberCard reaches this tier (and points) service.
    pub async fn member_with_links(&self) -> (support::Running, MemberServiceClient<Channel>) {
        let mut runtime = support::runtime_config("member");
        runtime.redis_prefix = self.prefix.clone();
        runtime.db_schema = self.member_running.schema.clone();
        runtime.run_relay = false;
        let points = self.points_addr.map_or_else(
            || "http://127.0.0.1:1".to_owned(),
            |a| format!("http://{a}"),
        );
        let config = laurel_member::Config {
            runtime,
            pii_keys: laurel_member::pii::Keyring::single([42; 32]),
            phone_region: None,
            points: laurel_member::LinkSettings::at(points),
            tier: Some(laurel_member::LinkSettings::at(format!(
                "http://{}",
                self.tier_addr
            ))),
        };
        let app = laurel_member::build(config, Some(Arc::new(self.clock.clone())))
            .await
            .expect("member builds");
        let mut running = support::start(app).await;
        running.keep_schema();
        let client = MemberServiceClient::new(running.channel.clone());
        (running, client)
    }

    pub async fn stop(&mut self) {
        let _ = self.tier_running.stop().await;
        if let Some(p) = self.points_running.as_mut() {
            let _ = p.stop().await;
        }
        let _ = self.member_running.stop().await;
    }
}

/// A three-tier EUR ladder over a rolling 12 months: member (base), silver
/// (spend 100.00 EUR or 3 orders), gold (spend 500.00 EUR).
pub fn simple_ladder() -> pb::Ladder {
    let tier = |code: &str, qualify_any: Vec<pb::Threshold>| pb::Tier {
        code: code.into(),
        name: code.to_uppercase(),
        qualify_any,
        benefits: vec![],
    };
    pb::Ladder {
        tiers: vec![
            tier("member", vec![]),
            tier(
                "silver",
                vec![
                    pb::Threshold {
                        spend_minor: 10_000,
                        ..Default::default()
                    },
                    pb::Threshold {
                        orders: 3,
                        ..Default::default()
                    },
                ],
            ),
            tier(
                "gold",
                vec![pb::Threshold {
                    spend_minor: 50_000,
                    ..Default::default()
                }],
            ),
        ],
        window: Some(pb::QualificationWindow {
            kind: pb::WindowKind::RollingMonths as i32,
            months: 12,
        }),
        currency_code: "EUR".into(),
        time_zone: "UTC".into(),
        max_downgrade_levels: 1,
        grace_days: 0,
        warning_days: 0,
        ..Default::default()
    }
}
