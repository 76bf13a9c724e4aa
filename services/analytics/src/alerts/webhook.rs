//! Webhook delivery of alerts: each alert is POSTed as JSON to
//! `LAUREL_ANALYTICS_WEBHOOK_URL`, signed with
//! `LAUREL_ANALYTICS_WEBHOOK_SECRET`, and retried with exponential backoff
//! until the receiver answers 2xx or a day has passed.
//!
//! Headers: `X-Laurel-Alert-Id` (receivers deduplicate on it: delivery is
//! at least once, exactly once unless a replica dies between the
//! receiver's answer and recording it), `X-Laurel-Timestamp` (Unix seconds
//! of the attempt by the service clock) and `X-Laurel-Signature:
//! sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`.
//!
//! Only `http://` URLs: the client is hyper's (already linked through
//! tonic), without TLS; an `https` receiver needs a TLS-terminating proxy
//! (a sidecar) in front of it.

use std::{fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use laurel_runtime::{
    config::{ConfigError, env_opt},
    secret::{REDACTED, RedactedUrl},
};
use sha2::Sha256;

use super::store::{self, Claimed, Outcome};
use crate::{Analytics, error::AnalyticsError};

/// The receiver's URL.
pub const URL_VAR: &str = "LAUREL_ANALYTICS_WEBHOOK_URL";
/// The signing secret.
pub const SECRET_VAR: &str = "LAUREL_ANALYTICS_WEBHOOK_SECRET";
/// Longest wait between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Attempts stop this long after the alert was raised.
pub const GIVE_UP_AFTER: chrono::Duration = chrono::Duration::hours(24);
/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claimed alert is left to its claimer (longer than an
/// attempt).
const CLAIM: chrono::Duration = chrono::Duration::seconds(60);
/// Alerts tried at once.
const BATCH: i64 = 16;

/// A configured receiver.
#[derive(Clone)]
pub struct Webhook {
    url: String,
    uri: http::Uri,
    secret: Option<Arc<[u8]>>,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &RedactedUrl(&self.url))
            .field("secret", &self.secret.as_ref().map(|_| REDACTED))
            .finish()
    }
}

fn refused(name: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError {
        name: name.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

impl Webhook {
    /// The webhook of the environment; `None` without a URL.
    pub fn from_env(dev_mode: bool) -> Result<Option<Self>, ConfigError> {
        Self::parse(
            env_opt(URL_VAR).as_deref(),
            env_opt(SECRET_VAR).as_deref(),
            dev_mode,
        )
    }

    /// A webhook from its settings: a URL without a secret is refused
    /// unless in development mode (where deliveries go unsigned).
    pub fn parse(
        url: Option<&str>,
        secret: Option<&str>,
        dev_mode: bool,
    ) -> Result<Option<Self>, ConfigError> {
        let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let shown = laurel_runtime::secret::redact_url(url);
        let uri: http::Uri = url
            .parse()
            .map_err(|_| refused(URL_VAR, &shown, "not a URL"))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(refused(
                URL_VAR,
                &shown,
                "an http:// URL with a host (for https, put a TLS-terminating proxy in front)",
            ));
        }
        let secret = secret.filter(|s| !s.is_empty());
        if secret.is_none() && !dev_mode {
            return Err(refused(
                SECRET_VAR,
                "",
                "a webhook needs a signing secret (or LAUREL_DEV_MODE=1 on a development machine)",
            ));
        }
        Ok(Some(Self {
            url: url.to_owned(),
            uri,
            secret: secret.map(|s| Arc::from(s.as_bytes())),
        }))
    }

    /// A signed webhook (tests and embedders).
    pub fn signed(url: &str, secret: &str) -> Result<Self, ConfigError> {
        Self::parse(Some(url), Some(secret), false)?.ok_or_else(|| refused(URL_VAR, "", "required"))
    }
}

/// `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The wait after `failed` failed attempts: 1 s doubling, at most
/// [`MAX_BACKOFF`].
pub fn backoff(failed: i32) -> Duration {
    let doublings = u32::try_from(failed.saturating_sub(1)).unwrap_or(0).min(16);
    Duration::from_secs(1u64 << doublings).min(MAX_BACKOFF)
}

/// What an attempt at `now` that gave `result` makes of an alert raised at
/// `raised_at` with `failed_before` failed attempts.
pub fn outcome(
    result: Result<(), String>,
    raised_at: DateTime<Utc>,
    failed_before: i32,
    now: DateTime<Utc>,
) -> Outcome {
    match result {
        Ok(()) => Outcome::Delivered(now),
        Err(e) if now - raised_at >= GIVE_UP_AFTER => Outcome::Failed(e),
        Err(e) => {
            let wait = chrono::Duration::from_std(backoff(failed_before.saturating_add(1)))
                .unwrap_or(CLAIM);
            Outcome::Retry(now + wait, e)
        }
    }
}

/// The JSON body of an alert.
pub fn body(program: &str, alert: &store::Alert) -> Vec<u8> {
    let time = |at: DateTime<Utc>| at.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    serde_json::json!({
        "alert_id": alert.alert_id.to_string(),
        "program_id": program,
        "rule_id": alert.rule_id,
        "kpi": alert.kpi.as_str_name(),
        "period_start": time(alert.period_start),
        "value": alert.value,
        "expected": alert.expected,
        "stddev": alert.stddev,
        "raised_at": time(alert.raised_at),
    })
    .to_string()
    .into_bytes()
}

/// Posts alerts to the webhook.
#[derive(Clone)]
pub struct Sender {
    client: Client<HttpConnector, Full<Bytes>>,
    webhook: Webhook,
}

impl Sender {
    /// A sender with its own connection pool.
    pub fn new(webhook: Webhook) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(ATTEMPT_TIMEOUT));
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            webhook,
        }
    }

    /// One attempt at delivering `claimed` at `now`.
    async fn post(&self, claimed: &Claimed, now: DateTime<Utc>) -> Result<(), String> {
        let body = body(&claimed.program, &claimed.alert);
        let timestamp = now.timestamp();
        let mut request = http::Request::post(self.webhook.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("x-laurel-alert-id", claimed.alert.alert_id.to_string())
            .header("x-laurel-timestamp", timestamp.to_string());
        if let Some(secret) = &self.webhook.secret {
            request = request.header("x-laurel-signature", signature(secret, timestamp, &body));
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(ATTEMPT_TIMEOUT, self.client.request(request)).await {
            Err(_) => Err("timed out".into()),
            Ok(Err(e)) => Err(format!("{e:?}")),
            Ok(Ok(response)) if response.status().is_success() => Ok(()),
            Ok(Ok(response)) => Err(format!("answered {}", response.status())),
        }
    }
}

impl Analytics {
    /// Tries the alerts due for delivery; returns how many were tried.
    pub async fn deliver_due_alerts(&self, sender: &Sender) -> Result<usize, AnalyticsError> {
        let now = self.now();
        let claimed = {
            let mut conn = self.db.pool().acquire().await?;
            store::claim_due(&mut conn, now, now + CLAIM, BATCH).await?
        };
        if claimed.is_empty() {
            return Ok(0);
        }
        let attempts = claimed.iter().map(|c| async move {
            let result = sender.post(c, self.now()).await;
            (c, result)
        });
        let results = futures::future::join_all(attempts).await;
        let mut conn = self.db.pool().acquire().await?;
        for (c, result) in results {
            if let Err(error) = &result {
                tracing::warn!(alert = %c.alert.alert_id, %error, "alert delivery failed");
            }
            let outcome = outcome(result, c.alert.raised_at, c.alert.attempts, self.now());
            store::record_attempt(&mut conn, &c.program, c.alert.alert_id, &outcome).await?;
        }
        Ok(claimed.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_url_without_a_secret_refuses_to_start_outside_dev_mode() {
        assert!(Webhook::parse(None, None, false).unwrap().is_none());
        for secret in [None, Some("")] {
            let e = Webhook::parse(Some("http://hooks:8080/alerts"), secret, false).unwrap_err();
            assert_eq!(e.name, SECRET_VAR);
            let dev = Webhook::parse(Some("http://hooks:8080/alerts"), secret, true).unwrap();
            assert!(dev.unwrap().secret.is_none());
        }
        let e = Webhook::parse(Some("https://hooks/alerts"), Some("s"), false).unwrap_err();
        assert_eq!(e.name, URL_VAR);
        assert!(e.reason.contains("TLS-terminating proxy"), "{e}");
    }

    #[test]
    fn debug_output_hides_the_secret_and_passwords() {
        let w = Webhook::signed("http://user:pw-s3cret@hooks/alerts", "hook-s3cret").unwrap();
        let shown = format!("{w:?}");
        assert!(
            !shown.contains("hook-s3cret") && !shown.contains("pw-s3cret"),
            "{shown}"
        );
    }

    #[test]
    fn the_signature_is_the_hmac_of_timestamp_dot_body() {
        // Python: hmac.new(b"Jefe", b"1700000000.{}", hashlib.sha256).
        assert_eq!(
            signature(b"Jefe", 1_700_000_000, b"{}"),
            "sha256=d3793e2b4103edfbd98cc19591832f5fad701d413db9fcae0ae7dab8184ed207"
        );
    }

    #[test]
    fn backoff_doubles_from_a_second_up_to_five_minutes() {
        let waits: Vec<u64> = (1..=11).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    }

    #[test]
    fn an_attempt_a_day_after_raising_gives_up() {
        let raised = Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap();
        let soon = raised + chrono::Duration::seconds(5);
        assert_eq!(
            outcome(Err("refused".into()), raised, 2, soon),
            Outcome::Retry(soon + chrono::Duration::seconds(4), "refused".into())
        );
        let late = raised + GIVE_UP_AFTER;
        assert_eq!(
            outcome(Err("refused".into()), raised, 40, late),
            Outcome::Failed("refused".into())
        );
        assert_eq!(outcome(Ok(()), raised, 40, late), Outcome::Delivered(late));
    }
}
