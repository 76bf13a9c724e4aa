//! The Laurel points service: a double-entry points ledger (accounts,
//! balanced entries, lots with expiry and pending periods, holds), the earn
//! rules that turn orders and events into points, and a rewards catalogue.
//! Writes go through the runtime's group commit: many concurrent requests
//! share one transaction, each answered only after it commits.

mod admin;
mod api;
pub mod error;
mod events;
pub mod export;
mod grpc;
mod jobs;
pub mod ledger;
pub mod members;
pub mod queries;
pub mod requests;
pub mod rewards;
pub mod rules;
pub mod settings;
pub mod writer;

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use laurel_proto::points::v1::{self as pb, points_service_server::PointsServiceServer};
use laurel_runtime::{
    api_key::Scope,
    app::App,
    auth::default_scope,
    card::{CardField, Cards},
    clock::SharedClock,
    config::{ConfigError, RuntimeConfig, env_opt, env_or},
    db::Db,
    group_commit::{GroupCommit, GroupConfig},
    idempotency::Idempotency,
};
use sqlx::migrate::Migrator;

use crate::{members::MemberDirectory, rules::RulesCache, settings::SettingsStore, writer::Writer};

/// This service's migrations.
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// The points service's configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Shared settings.
    pub runtime: RuntimeConfig,
    /// The member service (`LAUREL_MEMBER_ADDR`, default
    /// `http://127.0.0.1:50051`), asked once about a member never seen.
    pub member_addr: String,
    /// API key for calls to the member service (`LAUREL_MEMBER_API_KEY`).
    pub member_api_key: Option<String>,
    /// Group commit sizes (`LAUREL_GROUP_COMMIT_*`).
    pub group: GroupConfig,
    /// How often the expiry, hold and reminder jobs run
    /// (`LAUREL_POINTS_JOB_INTERVAL_MS`, default 1000).
    pub job_interval: Duration,
}

impl Config {
    /// Reads the configuration from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            runtime: RuntimeConfig::from_env("points")?,
            member_addr: env_opt("LAUREL_MEMBER_ADDR")
                .unwrap_or_else(|| "http://127.0.0.1:50051".into()),
            member_api_key: env_opt("LAUREL_MEMBER_API_KEY"),
            group: GroupConfig::from_env()?,
            job_interval: Duration::from_millis(env_or("LAUREL_POINTS_JOB_INTERVAL_MS", 1000u64)?),
        })
    }
}

/// The service's state, shared by the handlers, the consumer and the jobs.
#[derive(Clone)]
pub struct Points {
    pub(crate) db: Db,
    pub(crate) writer: GroupCommit<Writer>,
    pub(crate) direct: Writer,
    pub(crate) idempotency: Idempotency,
    pub(crate) settings: SettingsStore,
    pub(crate) rules: Arc<RulesCache>,
    pub(crate) members: MemberDirectory,
    pub(crate) cards: Cards<pb::Balance>,
    pub(crate) replies: api::ReplyCache,
    pub(crate) clock: SharedClock,
}

impl std::fmt::Debug for Points {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Points").finish_non_exhaustive()
    }
}

/// The clock's time, in whole microseconds (what Postgres stores), so a
/// time read back compares equal to the one written.
pub fn clock_now(clock: &SharedClock) -> DateTime<Utc> {
    let now = clock.now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// Digest key of stored requests: points requests hold no personal data,
/// so a fixed key only keeps digests comparable.
const REQUEST_DIGEST_KEY: &[u8] = b"laurel-points-request-digest";

/// The scope each call needs: ExportMovements reads the whole programme's
/// ledger, every member's movements, so it is an operator's call and needs
/// admin. The default already gives `Export*` admin by its name; naming it
/// here keeps it so whatever the default becomes. The rest follow the
/// default by method name.
fn scopes(path: &str) -> Scope {
    match path.rsplit('/').next().unwrap_or_default() {
        "ExportMovements" => Scope::Admin,
        _ => default_scope(path),
    }
}

/// Builds the points service on the shared runtime: bound to its port,
/// ready to `run`.
pub async fn build(config: Config, clock: Option<SharedClock>) -> anyhow::Result<App> {
    let mut app = App::build(config.runtime.clone(), &MIGRATIONS).await?;
    if let Some(clock) = clock {
        app = app.with_clock(clock);
    }
    let idempotency = app.idempotency(REQUEST_DIGEST_KEY);
    let cards = app.cards(CardField::Points);
    let direct = Writer {
        idempotency: idempotency.clone(),
        clock: app.clock(),
        cards: cards.clone(),
    };
    let points = Points {
        db: app.db().clone(),
        writer: GroupCommit::start(app.pool().clone(), direct.clone(), config.group),
        direct,
        idempotency,
        settings: SettingsStore::default(),
        rules: Arc::new(RulesCache::default()),
        members: MemberDirectory::new(
            &config.member_addr,
            config.member_api_key.clone(),
            app.pool().clone(),
        )?,
        cards,
        replies: api::reply_cache(),
        clock: app.clock(),
    };
    let app = app
        .grpc(PointsServiceServer::new(points.clone()))
        .scopes(scopes)
        .relay(Some(CardField::Points))
        .consumer(
            "points",
            &["member", "tier"],
            events::router(points.clone()),
        );
    Ok(jobs::schedule(app, points, config.job_interval))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_movement_export_needs_admin_and_the_rest_their_default() {
        let path = |m: &str| format!("/laurel.points.v1.PointsService/{m}");
        assert_eq!(scopes(&path("ExportMovements")), Scope::Admin);
        assert_eq!(scopes(&path("ListEntries")), Scope::Read);
        assert_eq!(scopes(&path("GetBalance")), Scope::Read);
        assert_eq!(scopes(&path("Earn")), Scope::Write);
        assert_eq!(scopes(&path("Redeem")), Scope::Write);
    }
}
