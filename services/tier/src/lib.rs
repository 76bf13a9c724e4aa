//! The Laurel tier-and-benefits service: each programme's versioned tier
//! ladder and every member's tier (qualified from activity and points
//! events, reviewed at period ends, assigned by hand, floored by paid
//! plans), the benefits tiers and plans give with their quotas, and paid
//! membership subscriptions.

pub mod benefits;
pub mod error;
mod events;
mod grpc;
pub mod ladder;
pub mod plans;
pub mod qualification;
pub mod tiers;

use std::time::Duration;

use chrono::{DateTime, Utc};
use laurel_proto::tier::v1::{self as pb, tier_service_server::TierServiceServer};
use laurel_runtime::{
    api_key::Scope,
    app::App,
    auth::default_scope,
    card::{CardField, Cards},
    clock::SharedClock,
    config::{ConfigError, RuntimeConfig, env_opt, env_or},
    db::Db,
    idempotency::Idempotency,
};
use sqlx::migrate::Migrator;

/// This service's migrations.
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// The tier service's configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Shared settings.
    pub runtime: RuntimeConfig,
    /// The member service (`LAUREL_MEMBER_ADDR`, default
    /// `http://127.0.0.1:50051`), asked once about a member never seen.
    pub member_addr: String,
    /// API key for calls to the member service (`LAUREL_MEMBER_API_KEY`).
    pub member_api_key: Option<String>,
    /// How often the review, subscription and re-evaluation jobs run
    /// (`LAUREL_TIER_JOB_INTERVAL_MS`, default 1000).
    pub job_interval: Duration,
}

impl Config {
    /// Reads the configuration from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            runtime: RuntimeConfig::from_env("tier")?,
            member_addr: env_opt("LAUREL_MEMBER_ADDR")
                .unwrap_or_else(|| "http://127.0.0.1:50051".into()),
            member_api_key: env_opt("LAUREL_MEMBER_API_KEY"),
            job_interval: Duration::from_millis(env_or("LAUREL_TIER_JOB_INTERVAL_MS", 1000u64)?),
        })
    }
}

/// The service's state, shared by the handlers, the consumer and the jobs.
#[derive(Clone)]
pub struct Tiers {
    pub(crate) db: Db,
    pub(crate) idempotency: Idempotency,
    /// The tier field of the member card: the member's `MemberTier`.
    pub(crate) cards: Cards<pb::MemberTier>,
    pub(crate) clock: SharedClock,
    pub(crate) config: Config,
    /// The tier side's in-memory state: ladders in force, member directory.
    pub(crate) local: tiers::Local,
}

impl std::fmt::Debug for Tiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tiers").finish_non_exhaustive()
    }
}

impl Tiers {
    /// The clock's time, in whole microseconds (what Postgres stores).
    pub fn now(&self) -> DateTime<Utc> {
        clock_now(&self.clock)
    }
}

/// The clock's time, in whole microseconds (what Postgres stores), so a
/// time read back compares equal to the one written.
pub fn clock_now(clock: &SharedClock) -> DateTime<Utc> {
    let now = clock.now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// Digest key of stored requests: tier requests hold no secrets, so a fixed
/// key only keeps digests comparable.
const REQUEST_DIGEST_KEY: &[u8] = b"laurel-tier-request-digest";

/// Operators' calls need the admin scope; the rest follow the default by
/// method name.
fn scopes(path: &str) -> Scope {
    match path.rsplit('/').next().unwrap_or_default() {
        "PublishLadder" | "AssignTier" | "PutBenefit" | "PutPlan" => Scope::Admin,
        _ => default_scope(path),
    }
}

/// Builds the tier service on the shared runtime: bound to its port, ready
/// to `run`.
pub async fn build(config: Config, clock: Option<SharedClock>) -> anyhow::Result<App> {
    let mut app = App::build(config.runtime.clone(), &MIGRATIONS).await?;
    if let Some(clock) = clock {
        app = app.with_clock(clock);
    }
    let tiers = Tiers {
        db: app.db().clone(),
        idempotency: app.idempotency(REQUEST_DIGEST_KEY),
        cards: app.cards(CardField::Tier),
        clock: app.clock(),
        config: config.clone(),
        local: tiers::Local::new(),
    };
    let app = app
        .grpc(TierServiceServer::new(tiers.clone()))
        .scopes(scopes)
        .relay(Some(CardField::Tier))
        .consumer("tier", &["member", "points"], events::router(tiers.clone()));
    let app = tiers::jobs::schedule(app, tiers.clone(), config.job_interval);
    Ok(plans::jobs::schedule(app, tiers, config.job_interval))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_calls_need_admin() {
        let path = |m: &str| format!("/laurel.tier.v1.TierService/{m}");
        assert_eq!(scopes(&path("PublishLadder")), Scope::Admin);
        assert_eq!(scopes(&path("PutPlan")), Scope::Admin);
        assert_eq!(scopes(&path("GetMemberTier")), Scope::Read);
        assert_eq!(scopes(&path("ListMemberBenefits")), Scope::Read);
        assert_eq!(scopes(&path("ConsumeBenefit")), Scope::Write);
        assert_eq!(scopes(&path("Subscribe")), Scope::Write);
    }
}
