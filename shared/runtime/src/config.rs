//! Configuration from environment variables, checked once at start-up.

use std::{fmt::Display, net::SocketAddr, str::FromStr, time::Duration};

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

/// Settings every service shares.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Service name, used for the Postgres schema, logs and metrics.
    pub service: &'static str,
    /// gRPC listen address (`LAUREL_GRPC_ADDR`).
    pub grpc_addr: SocketAddr,
    /// Prometheus listen address (`LAUREL_METRICS_ADDR`); none disables it.
    pub metrics_addr: Option<SocketAddr>,
    /// Postgres (`DATABASE_URL`).
    pub database_url: String,
    /// Postgres schema (`LAUREL_DB_SCHEMA`), the service name by default.
    pub db_schema: String,
    /// Pool size (`LAUREL_DB_MAX_CONNECTIONS`).
    pub db_max_connections: u32,
    /// Redis (`REDIS_URL`).
    pub redis_url: String,
    /// Prefix of every Redis key (`LAUREL_REDIS_PREFIX`).
    pub redis_prefix: String,
    /// Programme used when a request names none (`LAUREL_DEFAULT_PROGRAM`).
    pub default_program: String,
    /// API keys accepted as `name:key` pairs (`LAUREL_API_KEYS`); empty means
    /// authentication is off.
    pub api_keys: Vec<(String, String)>,
    /// Longest a request may run (`LAUREL_REQUEST_TIMEOUT_MS`).
    pub request_timeout: Duration,
    /// Requests served at once before shedding (`LAUREL_MAX_CONCURRENT_REQUESTS`).
    pub max_concurrent_requests: usize,
    /// Time given to in-flight calls on SIGTERM (`LAUREL_SHUTDOWN_GRACE_MS`).
    pub shutdown_grace: Duration,
    /// Whether this process runs the outbox relay (`LAUREL_RELAY`).
    pub run_relay: bool,
}

impl RuntimeConfig {
    /// Reads the shared settings for `service` from the environment.
    pub fn from_env(service: &'static str) -> Result<Self, ConfigError> {
        let metrics_addr: String = env_or("LAUREL_METRICS_ADDR", "127.0.0.1:9464".to_owned())?;
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
        let api_keys = parse_api_keys(&env_or("LAUREL_API_KEYS", String::new())?)?;
        let default_program: String = env_or("LAUREL_DEFAULT_PROGRAM", "default".to_owned())?;
        crate::context::ProgramId::parse(&default_program).map_err(|reason| ConfigError {
            name: "LAUREL_DEFAULT_PROGRAM".into(),
            value: default_program.clone(),
            reason: reason.into(),
        })?;
        let db_schema: String = env_or("LAUREL_DB_SCHEMA", service.to_owned())?;
        if db_schema.is_empty()
            || !db_schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(ConfigError {
                name: "LAUREL_DB_SCHEMA".into(),
                value: db_schema,
                reason: "use lower case letters, digits and underscores".into(),
            });
        }
        Ok(Self {
            service,
            grpc_addr: env_or(
                "LAUREL_GRPC_ADDR",
                SocketAddr::from(([127, 0, 0, 1], 50051)),
            )?,
            metrics_addr,
            database_url: env_or(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/postgres".to_owned(),
            )?,
            db_schema,
            db_max_connections: env_or("LAUREL_DB_MAX_CONNECTIONS", 16)?,
            redis_url: env_or("REDIS_URL", "redis://127.0.0.1:6379/".to_owned())?,
            redis_prefix: env_or("LAUREL_REDIS_PREFIX", "laurel".to_owned())?,
            default_program,
            api_keys,
            request_timeout: Duration::from_millis(env_or("LAUREL_REQUEST_TIMEOUT_MS", 10_000)?),
            max_concurrent_requests: env_or("LAUREL_MAX_CONCURRENT_REQUESTS", 1024)?,
            shutdown_grace: Duration::from_millis(env_or("LAUREL_SHUTDOWN_GRACE_MS", 20_000)?),
            run_relay: env_or("LAUREL_RELAY", true)?,
        })
    }
}

fn parse_api_keys(raw: &str) -> Result<Vec<(String, String)>, ConfigError> {
    raw.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once(':') {
            Some((name, key)) if !name.is_empty() && key.len() >= 16 => {
                Ok((name.to_owned(), key.to_owned()))
            }
            _ => Err(ConfigError {
                name: "LAUREL_API_KEYS".into(),
                value: "<redacted>".into(),
                reason:
                    "expected comma-separated name:key pairs with keys of 16 or more characters"
                        .into(),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_parse_as_name_key_pairs() {
        let keys = parse_api_keys("pos:0123456789abcdef, crm:fedcba9876543210").unwrap();
        assert_eq!(keys[1], ("crm".into(), "fedcba9876543210".into()));
    }

    #[test]
    fn short_api_keys_are_refused() {
        assert!(parse_api_keys("pos:short").is_err());
    }
}
