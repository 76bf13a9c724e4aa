//! Starts a member service and a points service on free ports against the
//! test Postgres (fresh schemas) and Redis (one fresh key prefix, so points
//! consumes the member service's events), with real gRPC clients and one
//! manual clock.

#![allow(dead_code)]

use std::{sync::Arc, time::Duration};

use laurel_proto::{
    member::v1::{self as mpb, member_service_client::MemberServiceClient},
    points::v1::{self as pb, points_service_client::PointsServiceClient},
};
use laurel_runtime::{clock::ManualClock, group_commit::GroupConfig};
use laurel_test_support as support;
use sqlx::PgPool;
use tonic::transport::Channel;
use uuid::Uuid;
// Not every test file uses every helper.
#[allow(unused_imports)]
pub use laurel_test_support::grpc::{fields, reason, req, rid};

#[allow(unused_imports)]
pub use support::eventually;

/// Member and points, running.
pub struct Stack {
    pub member: MemberServiceClient<Channel>,
    pub points: PointsServiceClient<Channel>,
    pub points_addr: std::net::SocketAddr,
    pub member_addr: std::net::SocketAddr,
    pub db: PgPool,
    pub points_schema: String,
    pub prefix: String,
    pub clock: ManualClock,
    member_running: support::Running,
    points_running: support::Running,
}

/// Options for [`spawn_with`].
#[derive(Clone, Default)]
pub struct Options {
    /// Share this points schema (a second replica).
    pub points_schema: Option<String>,
    /// Share this member stack (prefix and member address).
    pub join: Option<(String, std::net::SocketAddr)>,
    /// Group commit settings.
    pub group: Option<GroupConfig>,
    /// Run points without its relay (no events published, no invalidation
    /// from the outbox).
    pub no_points_relay: bool,
    /// API keys of the points service as (name, key, scopes such as
    /// `read|write`); none for development mode, where every call passes.
    pub points_keys: Vec<(String, String, String)>,
}

pub async fn spawn() -> Stack {
    spawn_with(Options::default()).await
}

pub async fn spawn_with(options: Options) -> Stack {
    let clock = ManualClock::new(chrono::Utc::now());
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
        phone_region: Some(phonenumber::country::Id::DE),
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

    let mut runtime = support::runtime_config("points");
    runtime.redis_prefix = prefix.clone();
    let shared = options.points_schema.is_some();
    if let Some(schema) = options.points_schema {
        runtime.db_schema = schema;
    }
    runtime.run_relay = !options.no_points_relay;
    if !options.points_keys.is_empty() {
        use laurel_runtime::api_key::{ApiKey, Programmes, Scopes};
        runtime.dev_mode = false;
        runtime.api_keys = options
            .points_keys
            .iter()
            .map(|(name, key, scopes)| {
                ApiKey::new(name, key, Programmes::Any, Scopes::parse(scopes).unwrap()).unwrap()
            })
            .collect();
    }
    let points_schema = runtime.db_schema.clone();
    let config = laurel_points::Config {
        runtime,
        member_addr: format!("http://{member_addr}"),
        member_api_key: None,
        group: options.group.unwrap_or_default(),
        job_interval: Duration::from_millis(100),
    };
    let app = laurel_points::build(config, Some(Arc::new(clock.clone())))
        .await
        .expect("points builds");
    let mut points_running = support::start(app).await;
    if shared {
        points_running.keep_schema();
    }
    let db = laurel_runtime::db::pool(&support::database_url(), &points_schema, 4).unwrap();
    Stack {
        member: MemberServiceClient::new(member_running.channel.clone()),
        points: PointsServiceClient::new(points_running.channel.clone()),
        points_addr: points_running.addr,
        member_addr,
        db,
        points_schema,
        prefix,
        clock,
        member_running,
        points_running,
    }
}

impl Stack {
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

    /// Goodwill points for `member`.
    pub async fn give(&self, member: Uuid, points: i64) -> pb::EarnResponse {
        self.points
            .clone()
            .earn(req(pb::EarnRequest {
                request_id: rid(),
                member_id: member.to_string(),
                kind: pb::EarnKind::Goodwill as i32,
                points,
                reason: "welcome".into(),
                ..Default::default()
            }))
            .await
            .expect("earn")
            .into_inner()
    }

    /// The member's balance.
    pub async fn balance(&self, member: Uuid) -> pb::Balance {
        self.points
            .clone()
            .get_balance(req(pb::GetBalanceRequest {
                member_id: member.to_string(),
            }))
            .await
            .expect("balance")
            .into_inner()
            .balance
            .unwrap()
    }

    /// Sum of every entry, and of the member accounts, per programme.
    pub async fn ledger_sums(&self) -> (i64, i64) {
        sqlx::query_as(
            "SELECT COALESCE(sum(points), 0)::bigint, COALESCE(sum(points) FILTER (WHERE account = 1), 0)::bigint FROM entries",
        )
        .fetch_one(&self.db)
        .await
        .unwrap()
    }

    /// Checks the ledger's invariants: entries balance, every account's
    /// cached balance equals its entries and its parts.
    pub async fn assert_ledger_consistent(&self) {
        let (all, _) = self.ledger_sums().await;
        assert_eq!(all, 0, "entries over all accounts sum to zero");
        let bad: Vec<(Uuid, i64, Option<i64>)> = sqlx::query_as(
            "SELECT a.member_id, a.balance, e.s FROM accounts a
             LEFT JOIN (SELECT member_id, sum(points)::bigint AS s FROM entries WHERE account = 1 GROUP BY member_id) e USING (member_id)
             WHERE a.balance <> COALESCE(e.s, 0)",
        )
        .fetch_all(&self.db)
        .await
        .unwrap();
        assert!(
            bad.is_empty(),
            "account balances equal their entries: {bad:?}"
        );
        let lots: Vec<(Uuid, i64, i64)> = sqlx::query_as(
            "SELECT a.member_id, a.lots_total, COALESCE(l.s, 0) FROM accounts a
             LEFT JOIN (SELECT member_id, sum(remaining)::bigint AS s FROM lots GROUP BY member_id) l USING (member_id)
             WHERE a.lots_total <> COALESCE(l.s, 0)",
        )
        .fetch_all(&self.db)
        .await
        .unwrap();
        assert!(lots.is_empty(), "lots hold what the accounts say: {lots:?}");
    }

    pub async fn stop(&mut self) {
        let _ = self.points_running.stop().await;
        let _ = self.member_running.stop().await;
    }
}

impl Stack {
    /// Another member replica on the same schema and prefix that reads
    /// balances from this points service (for GetMemberCard).
    pub async fn member_with_points(&self) -> (support::Running, MemberServiceClient<Channel>) {
        let mut runtime = support::runtime_config("member");
        runtime.redis_prefix = self.prefix.clone();
        runtime.db_schema = self.member_running.schema.clone();
        runtime.run_relay = false;
        let config = laurel_member::Config {
            runtime,
            pii_keys: laurel_member::pii::Keyring::single([42; 32]),
            phone_region: Some(phonenumber::country::Id::DE),
            points: laurel_member::LinkSettings::at(format!("http://{}", self.points_addr)),
            tier: None,
        };
        let app = laurel_member::build(config, Some(Arc::new(self.clock.clone())))
            .await
            .expect("member builds");
        let mut running = support::start(app).await;
        running.keep_schema();
        let client = MemberServiceClient::new(running.channel.clone());
        (running, client)
    }
}
