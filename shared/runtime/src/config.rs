//! Configuration from environment variables, checked once at start-up.

use std::{
    fmt::{self, Display},
    net::SocketAddr,
    str::FromStr,
    time::Duration,
};

use crate::{api_key::ApiKey, secret::RedactedUrl};

/// A configuration value that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid value {value:?} for {name}: {reason}")]
pub struct ConfigError {
    /// The environment variable.
    pub name: String,
    /// What it held.
    pub value: String,
    /// Why it was refused.
    pub reason: String,
}

/// Reads `name` and parses it, or returns `default` when it is unset or empty.
pub fn env_or<T>(name: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => {
            value.trim().parse().map_err(|e: T::Err| ConfigError {
                name: name.to_owned(),
                value,
                reason: e.to_string(),
            })
        }
        _ => Ok(default),
    }
}

/// Reads an optional variable; empty counts as unset.
pub fn env_opt(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Settings every service shares. Its `Debug` output hides passwords and
/// API keys.
#[derive(Clone)]
pub struct RuntimeConfig {
    /// Service name, used for the Postgres schema, logs and metrics.
    pub service: &'static str,
    /// gRPC listen address (`LAUREL_GRPC_ADDR`).
    pub grpc_addr: SocketAddr,
    /// Prometheus listen address (`LAUREL_METRICS_ADDR`); none disables it.
    pub metrics_addr: Option<SocketAddr>,
    /// Postgres (`DATABASE_URL`); may hold a password, so never log it
    /// unredacted (see [`crate::secret::redact_url`]).
    pub database_url: String,
    /// Postgres schema (`LAUREL_DB_SCHEMA`), the service name by default.
    pub db_schema: String,
    /// Pool size (`LAUREL_DB_MAX_CONNECTIONS`).
    pub db_max_connections: u32,
    /// Redis (`REDIS_URL`); may hold a password too.
    pub redis_url: String,
    /// Prefix of every Redis key (`LAUREL_REDIS_PREFIX`).
    pub redis_prefix: String,
    /// Programme used when a request names none (`LAUREL_DEFAULT_PROGRAM`).
    pub default_program: String,
    /// API keys with the programmes and scopes each may use
    /// (`LAUREL_API_KEYS`, syntax in [`crate::api_key`]). Empty is refused
    /// unless `dev_mode` is on.
    pub api_keys: Vec<ApiKey>,
    /// Development mode (`LAUREL_DEV_MODE=1`): lets the service start
    /// without API keys, with authentication off (keys that are configured
    /// are still enforced), and (in the member service) without a PII key.
    /// Never set it in production.
    pub dev_mode: bool,
    /// Longest a request may run (`LAUREL_REQUEST_TIMEOUT_MS`).
    pub request_timeout: Duration,
    /// Requests served at once before shedding (`LAUREL_MAX_CONCURRENT_REQUESTS`).
    pub max_concurrent_requests: usize,
    /// Time given to in-flight calls on SIGTERM (`LAUREL_SHUTDOWN_GRACE_MS`).
    pub shutdown_grace: Duration,
    /// Whether this process runs the outbox relay (`LAUREL_RELAY`).
    pub run_relay: bool,
}

/// The database settings alone (`DATABASE_URL`, `LAUREL_DB_SCHEMA`): all a
/// migration job needs, so it runs without the service's keys.
pub fn database_from_env(service: &str) -> Result<(String, String), ConfigError> {
    let url = env_or(
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/postgres".to_owned(),
    )?;
    let schema: String = env_or("LAUREL_DB_SCHEMA", service.to_owned())?;
    if schema.is_empty()
        || !schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(ConfigError {
            name: "LAUREL_DB_SCHEMA".into(),
            value: schema,
            reason: "use lower case letters, digits and underscores".into(),
        });
    }
    Ok((url, schema))
}

impl RuntimeConfig {
    /// Reads the shared settings for `service` from the environment; each
    /// service has its own default ports (see [`default_ports`]).
    pub fn from_env(service: &'static str) -> Result<Self, ConfigError> {
        let metrics_addr: String = env_or(
            "LAUREL_METRICS_ADDR",
            format!("127.0.0.1:{}", default_ports(service).1),
        )?;
        let metrics_addr = match metrics_addr.as_str() {
            "off" | "none" => None,
            addr => Some(
                addr.parse()
                    .map_err(|e: std::net::AddrParseError| ConfigError {
                        name: "LAUREL_METRICS_ADDR".into(),
                        value: addr.into(),
                        reason: e.to_string(),
                    })?,
            ),
        };
        let dev_mode = parse_dev_mode(env_opt("LAUREL_DEV_MODE").as_deref())?;
        let api_keys = parse_api_keys(env_opt("LAUREL_API_KEYS").as_deref(), dev_mode)?;
        let default_program: String = env_or("LAUREL_DEFAULT_PROGRAM", "default".to_owned())?;
        crate::context::ProgramId::parse(&default_program).map_err(|reason| ConfigError {
            name: "LAUREL_DEFAULT_PROGRAM".into(),
            value: default_program.clone(),
            reason: reason.into(),
        })?;
        let (database_url, db_schema) = database_from_env(service)?;
        Ok(Self {
            service,
            grpc_addr: env_or(
                "LAUREL_GRPC_ADDR",
                SocketAddr::from(([127, 0, 0, 1], default_ports(service).0)),
            )?,
            metrics_addr,
            database_url,
            db_schema,
            db_max_connections: env_or("LAUREL_DB_MAX_CONNECTIONS", 16)?,
            redis_url: env_or("REDIS_URL", "redis://127.0.0.1:6379/".to_owned())?,
            redis_prefix: env_or("LAUREL_REDIS_PREFIX", "laurel".to_owned())?,
            default_program,
            api_keys,
            dev_mode,
            request_timeout: Duration::from_millis(env_or("LAUREL_REQUEST_TIMEOUT_MS", 10_000)?),
            max_concurrent_requests: env_or("LAUREL_MAX_CONCURRENT_REQUESTS", 1024)?,
            shutdown_grace: Duration::from_millis(env_or("LAUREL_SHUTDOWN_GRACE_MS", 20_000)?),
            run_relay: env_or("LAUREL_RELAY", true)?,
        })
    }
}

impl fmt::Debug for RuntimeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured so that a new field cannot be added without deciding
        // whether it is secret.
        let Self {
            service,
            grpc_addr,
            metrics_addr,
            database_url,
            db_schema,
            db_max_connections,
            redis_url,
            redis_prefix,
            default_program,
            api_keys,
            dev_mode,
            request_timeout,
            max_concurrent_requests,
            shutdown_grace,
            run_relay,
        } = self;
        f.debug_struct("RuntimeConfig")
            .field("service", service)
            .field("grpc_addr", grpc_addr)
            .field("metrics_addr", metrics_addr)
            .field("database_url", &RedactedUrl(database_url))
            .field("db_schema", db_schema)
            .field("db_max_connections", db_max_connections)
            .field("redis_url", &RedactedUrl(redis_url))
            .field("redis_prefix", redis_prefix)
            .field("default_program", default_program)
            .field("api_keys", api_keys)
            .field("dev_mode", dev_mode)
            .field("request_timeout", request_timeout)
            .field("max_concurrent_requests", max_concurrent_requests)
            .field("shutdown_grace", shutdown_grace)
            .field("run_relay", run_relay)
            .finish()
    }
}

fn parse_dev_mode(raw: Option<&str>) -> Result<bool, ConfigError> {
    match raw.map(str::trim) {
        None | Some("0") | Some("false") => Ok(false),
        Some("1") | Some("true") => Ok(true),
        Some(other) => Err(ConfigError {
            name: "LAUREL_DEV_MODE".into(),
            value: other.into(),
            reason: "use 1 to turn development mode on, 0 or unset for off".into(),
        }),
    }
}

fn parse_api_keys(raw: Option<&str>, dev_mode: bool) -> Result<Vec<ApiKey>, ConfigError> {
    let refused = |value: &str, reason: String| ConfigError {
        name: "LAUREL_API_KEYS".into(),
        value: value.into(),
        reason,
    };
    let keys = ApiKey::parse_list(raw.unwrap_or_default())
        .map_err(|reason| refused(crate::secret::REDACTED, reason))?;
    if keys.is_empty() && !dev_mode {
        return Err(refused(
            "",
            "no API keys: set name:key:programmes:scopes entries, or LAUREL_DEV_MODE=1 \
             to run without authentication on a development machine"
                .into(),
        ));
    }
    Ok(keys)
}

/// The default gRPC and metrics ports of a service, so services started
/// side by side without settings do not collide: member 50051/9464, points
/// 50052/9465, tier 50053/9466, campaign 50054/9467, analytics 50055/9468.
pub fn default_ports(service: &str) -> (u16, u16) {
    match service {
        "points" => (50052, 9465),
        "tier" => (50053, 9466),
        "campaign" => (50054, 9467),
        "analytics" => (50055, 9468),
        _ => (50051, 9464),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_key::Scope;

    #[test]
    fn api_keys_parse_with_their_programmes_and_scopes() {
        let keys = parse_api_keys(
            Some("pos:0123456789abcdef:brand-a:read|write, crm:fedcba9876543210"),
            false,
        )
        .unwrap();
        assert_eq!(&*keys[0].name, "pos");
        assert!(!keys[0].scopes.contains(Scope::Admin));
        assert_eq!(&*keys[1].name, "crm");
    }

    #[test]
    fn without_api_keys_the_service_refuses_to_start() {
        for raw in [None, Some(""), Some(" , ")] {
            let error = parse_api_keys(raw, false).unwrap_err();
            assert_eq!(error.name, "LAUREL_API_KEYS");
            assert!(error.to_string().contains("LAUREL_DEV_MODE"), "{error}");
        }
    }

    #[test]
    fn dev_mode_allows_starting_without_api_keys() {
        assert!(parse_api_keys(None, true).unwrap().is_empty());
    }

    #[test]
    fn a_bad_entry_is_refused_without_showing_the_keys() {
        let error = parse_api_keys(Some("pos:0123456789abcdef, crm:short"), false).unwrap_err();
        let shown = error.to_string();
        assert!(shown.contains("LAUREL_API_KEYS"), "{shown}");
        assert!(shown.contains("entry 2"), "{shown}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(!shown.contains("short"), "{shown}");
    }

    #[test]
    fn dev_mode_takes_one_or_zero() {
        assert!(!parse_dev_mode(None).unwrap());
        assert!(!parse_dev_mode(Some("0")).unwrap());
        assert!(parse_dev_mode(Some("1")).unwrap());
        assert_eq!(
            parse_dev_mode(Some("yes")).unwrap_err().name,
            "LAUREL_DEV_MODE"
        );
    }

    #[test]
    fn debug_output_hides_passwords_and_keys() {
        let config = RuntimeConfig {
            service: "member",
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            metrics_addr: None,
            database_url: "postgres://app:pg-s3cret@db:5432/laurel".into(),
            db_schema: "member".into(),
            db_max_connections: 4,
            redis_url: "redis://:redis-s3cret@cache:6379/".into(),
            redis_prefix: "laurel".into(),
            default_program: "default".into(),
            api_keys: parse_api_keys(Some("pos:0123456789abcdef"), false).unwrap(),
            dev_mode: false,
            request_timeout: Duration::from_secs(1),
            max_concurrent_requests: 1,
            shutdown_grace: Duration::from_secs(1),
            run_relay: false,
        };
        let shown = format!("{config:?}");
        for secret in ["pg-s3cret", "redis-s3cret", "0123456789abcdef"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("postgres://app:***@db:5432/laurel"),
            "{shown}"
        );
        assert!(shown.contains("pos"), "{shown}");
    }
}
