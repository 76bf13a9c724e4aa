//! The Laurel member service: members, channel identities, consents, tags,
//! referrals, merges, erasure and the activity log.

pub mod activity_kind;
pub mod codes;
pub mod domain;
pub mod error;
mod grpc;
pub mod members;
pub mod merging;
pub mod money;
pub mod pii;
pub mod repo;
pub mod requests;

use laurel_proto::member::v1::member_service_server::MemberServiceServer;
use laurel_runtime::{
    api_key::Scope,
    app::App,
    auth::default_scope,
    card::{CardField, CardReader},
    clock::SharedClock,
    config::{ConfigError, RuntimeConfig, env_opt, env_or},
};
use sqlx::migrate::Migrator;

pub use crate::members::LinkSettings;
use crate::{
    members::{DEFAULT_POINTS_ADDR, DEFAULT_TIER_ADDR, Members, PointsLink, TierLink},
    pii::{Keyring, Pii},
};

/// This service's migrations.
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Development key, used only with `LAUREL_DEV_MODE=1` and no key configured.
const DEV_PII_KEY: [u8; 32] = *b"laurel-development-key-not-safe!";

/// The member service's configuration. Its `Debug` names key ids, never keys.
#[derive(Clone)]
pub struct Config {
    /// Shared settings.
    pub runtime: RuntimeConfig,
    /// Master keys for personal data (`LAUREL_PII_KEYS` as
    /// `id:base64,id:base64`, the first sealing, or one base64 key in
    /// `LAUREL_PII_KEY`); see [`pii`] for the rotation procedure.
    pub pii_keys: Keyring,
    /// Region for phone numbers without a country code
    /// (`LAUREL_DEFAULT_PHONE_REGION`, ISO 3166 alpha-2).
    pub phone_region: Option<phonenumber::country::Id>,
    /// How GetMemberCard reaches the points service (`LAUREL_POINTS_ADDR`,
    /// `LAUREL_POINTS_API_KEY`, `LAUREL_POINTS_TIMEOUT_MS`).
    pub points: LinkSettings,
    /// How GetMemberCard reaches the tier service (`LAUREL_TIER_ADDR`,
    /// `LAUREL_TIER_API_KEY`, `LAUREL_TIER_TIMEOUT_MS`); none when
    /// `LAUREL_TIER_ADDR` is `off`, and the card then has no tier.
    pub tier: Option<LinkSettings>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("runtime", &self.runtime)
            .field("pii_keys", &self.pii_keys)
            .field("phone_region", &self.phone_region)
            .field("points", &self.points)
            .field("tier", &self.tier)
            .finish()
    }
}

/// A yes/no environment switch: `1`, `true`, `yes`, `on` or their opposites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Switch(bool);

impl std::str::FromStr for Switch {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(Self(true)),
            "0" | "false" | "no" | "off" => Ok(Self(false)),
            _ => Err("must be 1 or 0"),
        }
    }
}

/// The PII keyring from `LAUREL_PII_KEYS` or `LAUREL_PII_KEY`. Without either
/// the service refuses to start, unless `LAUREL_DEV_MODE=1` allows the
/// development key.
fn pii_keys_from_env() -> Result<Keyring, ConfigError> {
    let refuse = |name: &str, reason: String| ConfigError {
        name: name.into(),
        value: "<redacted>".into(),
        reason,
    };
    match (env_opt("LAUREL_PII_KEYS"), env_opt("LAUREL_PII_KEY")) {
        (Some(_), Some(_)) => Err(refuse(
            "LAUREL_PII_KEYS",
            "set LAUREL_PII_KEYS or LAUREL_PII_KEY, not both".into(),
        )),
        (Some(ring), None) => Keyring::parse(&ring).map_err(|r| refuse("LAUREL_PII_KEYS", r)),
        (None, Some(key)) => pii::decode_key(&key).map(Keyring::single).ok_or_else(|| {
            refuse(
                "LAUREL_PII_KEY",
                "must be base64 of exactly 32 bytes".into(),
            )
        }),
        (None, None) => {
            if env_or("LAUREL_DEV_MODE", Switch(false))?.0 {
                tracing::warn!(
                    "LAUREL_DEV_MODE=1 and no LAUREL_PII_KEYS: personal data is encrypted with the PUBLIC development key; never use this outside development"
                );
                eprintln!(
                    "WARNING: LAUREL_DEV_MODE=1: personal data is encrypted with the public development key"
                );
                Ok(Keyring::single(DEV_PII_KEY))
            } else {
                Err(ConfigError {
                    name: "LAUREL_PII_KEYS".into(),
                    value: String::new(),
                    reason: "unset: set LAUREL_PII_KEYS (or LAUREL_PII_KEY) to the personal-data keys, or LAUREL_DEV_MODE=1 to use the development key".into(),
                })
            }
        }
    }
}

impl Config {
    /// Reads the configuration from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let runtime = RuntimeConfig::from_env("member")?;
        let pii_keys = pii_keys_from_env()?;
        let phone_region = match env_opt("LAUREL_DEFAULT_PHONE_REGION") {
            None => None,
            Some(raw) => {
                Some(
                    raw.trim()
                        .to_ascii_uppercase()
                        .parse()
                        .map_err(|_| ConfigError {
                            name: "LAUREL_DEFAULT_PHONE_REGION".into(),
                            value: raw.clone(),
                            reason: "must be an ISO 3166 alpha-2 country code".into(),
                        })?,
                )
            }
        };
        Ok(Self {
            runtime,
            pii_keys,
            phone_region,
            points: LinkSettings::from_env("POINTS", DEFAULT_POINTS_ADDR)?.ok_or_else(|| {
                ConfigError {
                    name: "LAUREL_POINTS_ADDR".into(),
                    value: "off".into(),
                    reason: "the points service cannot be off".into(),
                }
            })?,
            tier: LinkSettings::from_env("TIER", DEFAULT_TIER_ADDR)?,
        })
    }
}

/// The scope each call needs: ExportActivities reads the whole programme's
/// activity log, guests' included, so it is an operator's call and needs
/// admin (as ExportMember does by its name); the rest follow the default by
/// method name.
fn scopes(path: &str) -> Scope {
    match path.rsplit('/').next().unwrap_or_default() {
        "ExportActivities" => Scope::Admin,
        _ => default_scope(path),
    }
}

/// Builds the member service on the shared runtime: bound to its port,
/// ready to `run`.
pub async fn build(config: Config, clock: Option<SharedClock>) -> anyhow::Result<App> {
    let mut app = App::build(config.runtime.clone(), &MIGRATIONS).await?;
    if let Some(clock) = clock {
        app = app.with_clock(clock);
    }
    let pii = Pii::new(&config.pii_keys);
    // The points field is the points service's: this service only reads it.
    let points = PointsLink::new(
        "points",
        &config.points,
        CardReader::new(app.cards(CardField::Points)),
    )?;
    // So is the tier field the tier service's.
    let tier = match &config.tier {
        Some(settings) => Some(TierLink::new(
            "tier",
            settings,
            CardReader::new(app.cards(CardField::Tier)),
        )?),
        None => None,
    };
    let members = Members {
        db: app.db().clone(),
        cards: app.cards(CardField::Member),
        identities: members::identity_cache(),
        idempotency: app.idempotency(&pii.request_digest_key()),
        pii,
        clock: app.clock(),
        phone_region: config.phone_region,
        points,
        tier,
        request_timeout: config.runtime.request_timeout,
    };
    Ok(app
        .grpc(MemberServiceServer::new(members))
        .scopes(scopes)
        .relay(Some(CardField::Member)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_activity_export_needs_admin_and_the_rest_their_default() {
        let path = |m: &str| format!("/laurel.member.v1.MemberService/{m}");
        assert_eq!(scopes(&path("ExportActivities")), Scope::Admin);
        assert_eq!(scopes(&path("ExportMember")), Scope::Admin);
        assert_eq!(scopes(&path("ListActivities")), Scope::Read);
        assert_eq!(scopes(&path("RecordActivity")), Scope::Write);
    }
}
