//! Raised alerts and their delivery state.

use chrono::{DateTime, Utc};
use laurel_proto::analytics::v1 as pb;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::metrics::ts;

/// Webhook delivery of an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// No webhook was configured when it was raised.
    None,
    /// Waiting for a (next) attempt.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up after the retry window.
    Failed,
}

impl Delivery {
    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "pending" => Self::Pending,
            "delivered" => Self::Delivered,
            "failed" => Self::Failed,
            _ => Self::None,
        }
    }
}

/// A raised alert.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// Id (UUIDv7).
    pub alert_id: Uuid,
    /// Rule.
    pub rule_id: String,
    /// KPI.
    pub kpi: pb::Kpi,
    /// Start of the period that breached.
    pub period_start: DateTime<Utc>,
    /// Its value.
    pub value: f64,
    /// Threshold or baseline mean.
    pub expected: f64,
    /// Baseline standard deviation.
    pub stddev: f64,
    /// When it was raised.
    pub raised_at: DateTime<Utc>,
    /// Delivery state.
    pub delivery: Delivery,
    /// Attempts so far.
    pub attempts: i32,
    /// When it was delivered.
    pub delivered_at: Option<DateTime<Utc>>,
}

impl Alert {
    /// As sent over gRPC.
    pub fn to_pb(&self) -> pb::Alert {
        pb::Alert {
            alert_id: self.alert_id.to_string(),
            rule_id: self.rule_id.clone(),
            kpi: self.kpi as i32,
            period_start: Some(ts(self.period_start)),
            value: self.value,
            expected: self.expected,
            stddev: self.stddev,
            raised_at: Some(ts(self.raised_at)),
            delivery: self.delivery.as_str().to_owned(),
            attempts: self.attempts,
            delivered_at: self.delivered_at.map(ts),
        }
    }
}

type AlertRow = (
    Uuid,
    String,
    String,
    DateTime<Utc>,
    f64,
    f64,
    f64,
    DateTime<Utc>,
    String,
    i32,
    Option<DateTime<Utc>>,
);

/// Columns of an alert row, in `AlertRow` order.
const COLUMNS: &str = "alert_id, rule_id, kpi, period_start, value, expected, stddev,
                           raised_at, delivery, attempts, delivered_at";

fn from_row(r: AlertRow) -> Alert {
    Alert {
        alert_id: r.0,
        rule_id: r.1,
        kpi: pb::Kpi::from_str_name(&r.2).unwrap_or(pb::Kpi::Unspecified),
        period_start: r.3,
        value: r.4,
        expected: r.5,
        stddev: r.6,
        raised_at: r.7,
        delivery: Delivery::parse(&r.8),
        attempts: r.9,
        delivered_at: r.10,
    }
}

/// Stores `alert` unless its rule raised for its period already; whether
/// it was stored. A pending delivery is due at once.
pub async fn insert(
    tx: &mut PgConnection,
    program: &str,
    alert: &Alert,
) -> Result<bool, sqlx::Error> {
    let stored: Option<i32> = sqlx::query_scalar(
        "INSERT INTO alerts (program_id, alert_id, rule_id, kpi, period_start, value, expected,
            stddev, raised_at, delivery, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                 CASE WHEN $10 = 'pending' THEN $9 END)
         ON CONFLICT ON CONSTRAINT alerts_once_per_period DO NOTHING
         RETURNING 1",
    )
    .bind(program)
    .bind(alert.alert_id)
    .bind(&alert.rule_id)
    .bind(alert.kpi.as_str_name())
    .bind(alert.period_start)
    .bind(alert.value)
    .bind(alert.expected)
    .bind(alert.stddev)
    .bind(alert.raised_at)
    .bind(alert.delivery.as_str())
    .fetch_optional(tx)
    .await?;
    Ok(stored.is_some())
}

/// One page of `program`'s alerts (of `rule` when given), newest first,
/// after the position `(raised_at, alert_id)` when given.
pub async fn page(
    conn: &mut PgConnection,
    program: &str,
    rule: Option<&str>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Alert>, sqlx::Error> {
    let rows: Vec<AlertRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM alerts
         WHERE program_id = $1 AND ($2::text IS NULL OR rule_id = $2)
           AND ($3::timestamptz IS NULL OR (raised_at, alert_id) < ($3, $4))
         ORDER BY raised_at DESC, alert_id DESC LIMIT $5"
    ))
    .bind(program)
    .bind(rule)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// A pending alert claimed for an attempt.
#[derive(Clone, Debug)]
pub struct Claimed {
    /// Programme.
    pub program: String,
    /// The alert.
    pub alert: Alert,
}

type ClaimedRow = (
    String,
    Uuid,
    String,
    String,
    DateTime<Utc>,
    f64,
    f64,
    f64,
    DateTime<Utc>,
    String,
    i32,
    Option<DateTime<Utc>>,
);

/// Claims up to `limit` pending alerts due at `now` by moving their next
/// attempt to `until`, so no other replica tries them meanwhile.
pub async fn claim_due(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let rows: Vec<ClaimedRow> = sqlx::query_as(
        "UPDATE alerts a SET next_attempt_at = $2
             FROM (SELECT program_id, alert_id FROM alerts
                   WHERE delivery = 'pending' AND next_attempt_at <= $1
                   ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) due
             WHERE a.program_id = due.program_id AND a.alert_id = due.alert_id
             RETURNING a.program_id, a.alert_id, a.rule_id, a.kpi, a.period_start, a.value,
                       a.expected, a.stddev, a.raised_at, a.delivery, a.attempts, a.delivered_at",
    )
    .bind(now)
    .bind(until)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Claimed {
            program: r.0,
            alert: from_row((r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9, r.10, r.11)),
        })
        .collect())
}

/// What an attempt came to.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Delivered at this time.
    Delivered(DateTime<Utc>),
    /// Failed; try again at this time.
    Retry(DateTime<Utc>, String),
    /// Failed for good.
    Failed(String),
}

/// Records an attempt's outcome.
pub async fn record_attempt(
    conn: &mut PgConnection,
    program: &str,
    alert: Uuid,
    outcome: &Outcome,
) -> Result<(), sqlx::Error> {
    let (delivery, next, delivered, error) = match outcome {
        Outcome::Delivered(at) => (Delivery::Delivered, None, Some(*at), None),
        Outcome::Retry(next, e) => (Delivery::Pending, Some(*next), None, Some(e.as_str())),
        Outcome::Failed(e) => (Delivery::Failed, None, None, Some(e.as_str())),
    };
    sqlx::query(
        "UPDATE alerts SET delivery = $3, attempts = attempts + 1, next_attempt_at = $4,
           delivered_at = $5, last_error = $6
         WHERE program_id = $1 AND alert_id = $2",
    )
    .bind(program)
    .bind(alert)
    .bind(delivery.as_str())
    .bind(next)
    .bind(delivered)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}
