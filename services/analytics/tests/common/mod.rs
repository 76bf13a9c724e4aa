//! Starts a member service, optionally points and tier services, and an
//! analytics service on free ports against the test Postgres (fresh
//! schemas) and Redis (one fresh key prefix, so analytics consumes the
//! others' events), with real gRPC clients and one manual clock.

#![allow(dead_code)]

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use laurel_proto::{
    analytics::v1::{self as pb, analytics_service_client::AnalyticsServiceClient},
    member::v1::{self as mpb, member_service_client::MemberServiceClient},
    points::v1::points_service_client::PointsServiceClient,
    tier::v1::tier_service_client::TierServiceClient,
};
use laurel_runtime::clock::ManualClock;
use laurel_test_support as support;
use sqlx::PgPool;
use tonic::transport::Channel;
use uuid::Uuid;

// Not every test file uses every helper.
#[allow(unused_imports)]
pub use laurel_test_support::grpc::{eur, fields, req, rid, timestamp};

pub use support::eventually;

/// How long an event may take to reach analytics.
pub const WAIT: Duration = Duration::from_secs(15);

/// The services, running.
pub struct Stack {
    pub member: MemberServiceClient<Channel>,
    pub member_addr: std::net::SocketAddr,
    pub analytics: AnalyticsServiceClient<Channel>,
    pub points: Option<PointsServiceClient<Channel>>,
    /// The points service's URL, when it runs.
    pub points_addr: Option<String>,
    pub tier: Option<TierServiceClient<Channel>>,
    /// The analytics schema.
    pub db: PgPool,
    pub schema: String,
    pub prefix: String,
    pub clock: ManualClock,
    running: Vec<support::Running>,
}

/// Options for [`spawn_with`].
#[derive(Clone, Default)]
pub struct Options {
    /// Start a points service too.
    pub points: bool,
    /// Start a tier service too.
    pub tier: bool,
    /// Start the clock here instead of now.
    pub start: Option<DateTime<Utc>>,
    /// Analytics job interval (default 100 ms).
    pub job_interval: Option<Duration>,
    /// Analytics on its own key prefix: it hears none of the others' events.
    pub deaf: bool,
}

pub async fn spawn() -> Stack {
    spawn_with(Options::default()).await
}

pub async fn spawn_with(options: Options) -> Stack {
    let clock = ManualClock::new(options.start.unwrap_or_else(Utc::now));
    let shared_clock = || -> laurel_runtime::clock::SharedClock { Arc::new(clock.clone()) };
    let prefix = support::fresh_prefix();
    let mut running = Vec::new();
    let mut member_runtime = support::runtime_config("member");
    member_runtime.redis_prefix = prefix.clone();
    let member_config = laurel_member::Config {
        runtime: member_runtime,
        pii_keys: laurel_member::pii::Keyring::single([42; 32]),
        phone_region: None,
        points: laurel_member::LinkSettings::at("http://127.0.0.1:1"),
        tier: None,
    };
    let member_app = laurel_member::build(member_config, Some(shared_clock()))
        .await
        .expect("member builds");
    let member_running = support::start(member_app).await;
    let member_addr = member_running.addr;
    let member = MemberServiceClient::new(member_running.channel.clone());
    running.push(member_running);

    let mut points_addr = None;
    let points = if options.points {
        let mut runtime = support::runtime_config("points");
        runtime.redis_prefix = prefix.clone();
        let config = laurel_points::Config {
            runtime,
            member_addr: format!("http://{member_addr}"),
            member_api_key: None,
            group: Default::default(),
            job_interval: Duration::from_millis(100),
        };
        let app = laurel_points::build(config, Some(shared_clock()))
            .await
            .expect("points builds");
        let r = support::start(app).await;
        points_addr = Some(format!("http://{}", r.addr));
        let client = PointsServiceClient::new(r.channel.clone());
        running.push(r);
        Some(client)
    } else {
        None
    };
    let tier = if options.tier {
        let mut runtime = support::runtime_config("tier");
        runtime.redis_prefix = prefix.clone();
        let config = laurel_tier::Config {
            runtime,
            member_addr: format!("http://{member_addr}"),
            member_api_key: None,
            job_interval: Duration::from_millis(100),
        };
        let app = laurel_tier::build(config, Some(shared_clock()))
            .await
            .expect("tier builds");
        let r = support::start(app).await;
        let client = TierServiceClient::new(r.channel.clone());
        running.push(r);
        Some(client)
    } else {
        None
    };

    let mut runtime = support::runtime_config("analytics");
    if !options.deaf {
        runtime.redis_prefix = prefix.clone();
    }
    let schema = runtime.db_schema.clone();
    let config = laurel_analytics::Config {
        runtime,
        job_interval: options.job_interval.unwrap_or(Duration::from_millis(100)),
        recommend_interval: Duration::ZERO,
        recommend_cache: Duration::ZERO,
        recommend_memory: true,
        // Announcements come a moment before their commit here.
        recommend_grace: Duration::from_millis(500),
        points_addr: points_addr.clone(),
        points_api_key: None,
        webhook: None,
    };
    let app = laurel_analytics::build(config, Some(shared_clock()))
        .await
        .expect("analytics builds");
    let r = support::start(app).await;
    let analytics = AnalyticsServiceClient::new(r.channel.clone());
    running.push(r);
    let db = laurel_runtime::db::pool(&support::database_url(), &schema, 4).unwrap();
    Stack {
        member,
        member_addr,
        analytics,
        points,
        points_addr,
        tier,
        db,
        schema,
        prefix,
        clock,
        running,
    }
}

/// An order line.
pub fn line(sku: &str, category: &str, quantity: i64, unit_price_minor: i64) -> mpb::OrderLine {
    mpb::OrderLine {
        sku: sku.into(),
        category: category.into(),
        quantity,
        unit_price_minor,
    }
}

impl Stack {
    /// Sets EUR / `tz` settings with defaults.
    pub async fn settings(&self, tz: &str) -> pb::Settings {
        self.analytics
            .clone()
            .put_settings(req(pb::PutSettingsRequest {
                request_id: rid(),
                settings: Some(pb::Settings {
                    currency_code: "EUR".into(),
                    time_zone: tz.into(),
                    ..Default::default()
                }),
            }))
            .await
            .expect("settings")
            .into_inner()
            .settings
            .unwrap()
    }

    /// Enrols a member; returns its id.
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

    /// Records an activity of `member` at `at`; returns the activity id.
    pub async fn activity(
        &self,
        member: Uuid,
        at: DateTime<Utc>,
        detail: mpb::activity::Detail,
    ) -> String {
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
            .expect("activity recorded")
            .into_inner()
            .activity
            .unwrap()
            .activity_id
    }

    /// Records a purchase of `amount_minor` EUR cents at `at` with `lines`;
    /// returns the order id.
    pub async fn purchase_with(
        &self,
        member: Uuid,
        amount_minor: i64,
        at: DateTime<Utc>,
        lines: Vec<mpb::OrderLine>,
    ) -> String {
        let order_id = format!("o-{}", Uuid::now_v7());
        self.activity(
            member,
            at,
            mpb::activity::Detail::Purchase(mpb::Purchase {
                order_id: order_id.clone(),
                total: Some(eur(amount_minor)),
                lines,
                channel: mpb::SalesChannel::InStore as i32,
                store_id: "store-1".into(),
            }),
        )
        .await;
        order_id
    }

    /// Records a purchase of `amount_minor` EUR cents at `at`.
    pub async fn purchase(&self, member: Uuid, amount_minor: i64, at: DateTime<Utc>) -> String {
        self.purchase_with(member, amount_minor, at, vec![]).await
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

    /// The member's metrics, or the error.
    pub async fn metrics(&self, member: Uuid) -> Result<pb::MemberMetrics, tonic::Status> {
        Ok(self
            .analytics
            .clone()
            .get_member_metrics(req(pb::GetMemberMetricsRequest {
                member_id: member.to_string(),
            }))
            .await?
            .into_inner()
            .metrics
            .unwrap())
    }

    /// Waits until the member's metrics satisfy `ok`.
    pub async fn metrics_until(
        &self,
        member: Uuid,
        what: &str,
        ok: impl Fn(&pb::MemberMetrics) -> bool,
    ) -> pb::MemberMetrics {
        eventually(WAIT, what, || async {
            self.metrics(member).await.ok().filter(|m| ok(m))
        })
        .await
    }

    /// Events of the analytics consumer applied so far (inbox rows).
    pub async fn applied(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM inbox")
            .fetch_one(&self.db)
            .await
            .unwrap_or(0)
    }

    /// Moves the manual clock forward.
    pub fn advance(&self, by: chrono::Duration) {
        self.clock.advance(by);
    }
}
