//! Starts a member service on a free port against the test Postgres (a
//! fresh schema) and Redis (a fresh key prefix), with a real gRPC client.

#![allow(dead_code)]

use std::{net::SocketAddr, sync::Arc};

use laurel_member::Config;
use laurel_proto::member::v1::{self as pb, member_service_client::MemberServiceClient};
use laurel_runtime::{
    api_key::{ApiKey, Programmes, Scopes},
    clock::ManualClock,
};
use laurel_test_support as support;
use sqlx::PgPool;
use tonic::transport::Channel;
// Not every test file uses every helper.
#[allow(unused_imports)]
pub use laurel_test_support::grpc::{fields as violated_fields, in_program, reason, req, rid};

#[allow(unused_imports)]
pub use support::eventually;

/// A running member service.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: MemberServiceClient<Channel>,
    pub channel: Channel,
    pub schema: String,
    pub prefix: String,
    pub redis_url: String,
    pub db: PgPool,
    pub clock: ManualClock,
    running: support::Running,
}

/// Options for [`spawn_with`].
#[derive(Clone, Default)]
pub struct Options {
    pub redis_url: Option<String>,
    pub schema: Option<String>,
    pub prefix: Option<String>,
    pub api_keys: Vec<(String, String)>,
    /// Keys granting only the scopes named (`read|write` and so on), beside
    /// the all-scope `api_keys`.
    pub scoped_keys: Vec<(String, String, String)>,
    pub relay: bool,
    /// Where GetMemberCard finds the points service; a closed port when unset.
    pub points: Option<laurel_member::LinkSettings>,
    /// How GetMemberCard reaches the tier service; none for no tier.
    pub tier: Option<laurel_member::LinkSettings>,
}

pub async fn spawn() -> TestApp {
    spawn_with(Options {
        relay: true,
        ..Options::default()
    })
    .await
}

/// Starts the member service from its production wiring (`laurel_member::build`)
/// through the generic harness, with a fresh schema, prefix and port.
pub async fn spawn_with(options: Options) -> TestApp {
    let mut runtime = support::runtime_config("member");
    let shared_schema = options.schema.is_some();
    if let Some(schema) = options.schema {
        runtime.db_schema = schema;
    }
    if let Some(prefix) = options.prefix {
        runtime.redis_prefix = prefix;
    }
    if let Some(url) = options.redis_url {
        runtime.redis_url = url;
    }
    runtime.dev_mode = options.api_keys.is_empty() && options.scoped_keys.is_empty();
    runtime.api_keys = options
        .api_keys
        .iter()
        .map(|(name, key)| ApiKey::new(name, key, Programmes::Any, Scopes::ALL).unwrap())
        .chain(options.scoped_keys.iter().map(|(name, key, scopes)| {
            ApiKey::new(name, key, Programmes::Any, Scopes::parse(scopes).unwrap()).unwrap()
        }))
        .collect();
    runtime.run_relay = options.relay;
    let (schema, prefix, redis_url) = (
        runtime.db_schema.clone(),
        runtime.redis_prefix.clone(),
        runtime.redis_url.clone(),
    );
    let config = Config {
        runtime,
        pii_keys: laurel_member::pii::Keyring::single([42; 32]),
        phone_region: Some(phonenumber::country::Id::DE),
        points: options
            .points
            .unwrap_or_else(|| laurel_member::LinkSettings::at("http://127.0.0.1:1")),
        tier: options.tier.clone(),
    };
    let clock = ManualClock::new(chrono::Utc::now());
    let app = laurel_member::build(config, Some(Arc::new(clock.clone())))
        .await
        .expect("service builds");
    let mut running = support::start(app).await;
    if shared_schema {
        running.keep_schema();
    }
    let db = laurel_runtime::db::pool(&support::database_url(), &schema, 4).unwrap();
    TestApp {
        addr: running.addr,
        client: MemberServiceClient::new(running.channel.clone()),
        channel: running.channel.clone(),
        schema,
        prefix,
        redis_url,
        db,
        clock,
        running,
    }
}

impl TestApp {
    /// Stops the server gracefully and waits for it.
    pub async fn stop(&mut self) {
        let _ = self.running.stop().await;
    }
}

static PHONE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A valid German mobile number no other test uses.
pub fn phone() -> String {
    let n = PHONE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let salt = (uuid::Uuid::now_v7().as_u128() % 9_000) as u64;
    format!("+49151{:04}{:04}", salt, n % 10_000)
}

pub fn phone_identity(value: &str) -> pb::Identity {
    pb::Identity {
        r#type: pb::IdentityType::Phone as i32,
        value: value.into(),
        ..Default::default()
    }
}

pub fn email_identity(value: &str) -> pb::Identity {
    pb::Identity {
        r#type: pb::IdentityType::Email as i32,
        value: value.into(),
        ..Default::default()
    }
}

pub fn create_request(phone: &str) -> pb::CreateMemberRequest {
    pb::CreateMemberRequest {
        request_id: rid(),
        profile: Some(pb::Profile {
            given_name: "Ada".into(),
            family_name: "Lovelace".into(),
            birth_date: "1990-12-10".into(),
            region: "DE".into(),
            preferred_language: "de-DE".into(),
            time_zone: "Europe/Berlin".into(),
            ..Default::default()
        }),
        identities: vec![phone_identity(phone)],
        tags: vec!["vip".into()],
        ..Default::default()
    }
}

pub async fn create(app: &mut TestApp) -> pb::Member {
    app.client
        .create_member(req(create_request(&phone())))
        .await
        .expect("created")
        .into_inner()
        .member
        .unwrap()
}

pub fn purchase(order_id: &str, amount: i64) -> pb::Activity {
    pb::Activity {
        source: "pos".into(),
        external_id: order_id.into(),
        detail: Some(pb::activity::Detail::Purchase(pb::Purchase {
            order_id: order_id.into(),
            total: Some(laurel_proto::common::v1::Money {
                currency_code: "EUR".into(),
                amount_minor: amount,
            }),
            lines: vec![pb::OrderLine {
                sku: "SKU-1".into(),
                category: "shoes".into(),
                quantity: 1,
                unit_price_minor: amount,
            }],
            store_id: "store-17".into(),
            channel: pb::SalesChannel::InStore as i32,
        })),
        ..Default::default()
    }
}

pub fn refund(external_id: &str, order_id: &str, amount: i64) -> pb::Activity {
    pb::Activity {
        source: "pos".into(),
        external_id: external_id.into(),
        detail: Some(pb::activity::Detail::Refund(pb::Refund {
            order_id: order_id.into(),
            amount: Some(laurel_proto::common::v1::Money {
                currency_code: "EUR".into(),
                amount_minor: amount,
            }),
            lines: vec![],
        })),
        ..Default::default()
    }
}

pub fn by_id(member_id: &str, activity: pb::Activity) -> pb::RecordActivityRequest {
    pb::RecordActivityRequest {
        member: Some(pb::record_activity_request::Member::MemberId(
            member_id.into(),
        )),
        auto_enroll: false,
        guest: false,
        activity: Some(activity),
    }
}
