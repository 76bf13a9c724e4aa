//! Alert rules: checked from requests, stored and read back.

use chrono::{DateTime, Utc};
use laurel_proto::analytics::v1 as pb;
use laurel_runtime::error::Violations;
use sqlx::PgConnection;

use crate::kpi::{
    filter::{self, Filter},
    period::Period,
    request::{self, MAX_PERIODS},
};

/// Standard deviations of a DEVIATION rule when unset.
pub const DEFAULT_DEVIATIONS: f64 = 3.0;
/// Baseline periods of a DEVIATION rule when unset.
pub const DEFAULT_BASELINE_PERIODS: i32 = 28;
/// Fewest baseline periods a rule may ask for (and that must hold data
/// before a DEVIATION rule raises).
pub const MIN_BASELINE_PERIODS: i32 = 3;

/// How a rule compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// The value is above the threshold.
    Above,
    /// The value is below the threshold.
    Below,
    /// The value is further than `deviations` standard deviations from the
    /// baseline mean, either side.
    Deviation,
}

impl Condition {
    fn from_pb(c: pb::AlertCondition) -> Option<Self> {
        match c {
            pb::AlertCondition::Unspecified => None,
            pb::AlertCondition::Above => Some(Self::Above),
            pb::AlertCondition::Below => Some(Self::Below),
            pb::AlertCondition::Deviation => Some(Self::Deviation),
        }
    }

    /// As sent over gRPC.
    pub fn to_pb(self) -> pb::AlertCondition {
        match self {
            Self::Above => pb::AlertCondition::Above,
            Self::Below => pb::AlertCondition::Below,
            Self::Deviation => pb::AlertCondition::Deviation,
        }
    }
}

/// A checked rule, defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Caller-chosen id.
    pub rule_id: String,
    /// KPI watched.
    pub kpi: pb::Kpi,
    /// Its period.
    pub period: Period,
    /// Its filter.
    pub filter: Filter,
    /// Comparison.
    pub condition: Condition,
    /// Threshold of ABOVE and BELOW.
    pub threshold: f64,
    /// Standard deviations of DEVIATION (more than 0).
    pub deviations: f64,
    /// Baseline periods of DEVIATION (at least 3).
    pub baseline_periods: i32,
    /// Whether it is evaluated.
    pub enabled: bool,
}

/// Whether `id` is 1 to 64 letters, digits, '-' or '_'.
pub fn valid_rule_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Rule {
    /// Checks `raw`, naming fields under `rule.`.
    pub fn check(raw: Option<&pb::AlertRule>, v: &mut Violations) -> Option<Self> {
        let Some(raw) = raw else {
            v.add("rule", "required");
            return None;
        };
        let pb::AlertRule {
            rule_id,
            kpi,
            period,
            filter: raw_filter,
            condition,
            threshold,
            deviations,
            baseline_periods,
            enabled,
        } = raw;
        let rule_id = rule_id.trim();
        v.check(
            !valid_rule_id(rule_id),
            "rule.rule_id",
            "required: 1 to 64 letters, digits, '-' or '_'",
        );
        let kpi = request::kpi(*kpi, "rule.kpi".into(), v);
        let period = request::period(*period, "rule.period".into(), v);
        let narrows = kpi.map_or(
            filter::Narrows {
                purchases: true,
                members: true,
            },
            filter::narrows,
        );
        let filter = filter::check(raw_filter.as_ref(), narrows, "rule.filter", v);
        let condition = pb::AlertCondition::try_from(*condition)
            .ok()
            .and_then(Condition::from_pb);
        v.check(
            condition.is_none(),
            "rule.condition",
            "required: ABOVE, BELOW or DEVIATION",
        );
        v.check(!threshold.is_finite(), "rule.threshold", "a finite number");
        let deviations = if *deviations == 0.0 {
            DEFAULT_DEVIATIONS
        } else {
            *deviations
        };
        v.check(
            !(deviations.is_finite() && deviations > 0.0),
            "rule.deviations",
            "more than 0 (default 3)",
        );
        let baseline_periods = if *baseline_periods == 0 {
            DEFAULT_BASELINE_PERIODS
        } else {
            *baseline_periods
        };
        v.check(
            !(MIN_BASELINE_PERIODS..MAX_PERIODS as i32).contains(&baseline_periods),
            "rule.baseline_periods",
            format!(
                "from {MIN_BASELINE_PERIODS} to {} (default 28)",
                MAX_PERIODS - 1
            ),
        );
        Some(Self {
            rule_id: rule_id.to_owned(),
            kpi: kpi?,
            period: period?,
            filter,
            condition: condition?,
            threshold: *threshold,
            deviations,
            baseline_periods,
            enabled: *enabled,
        })
    }

    /// As sent over gRPC.
    pub fn to_pb(&self) -> pb::AlertRule {
        pb::AlertRule {
            rule_id: self.rule_id.clone(),
            kpi: self.kpi as i32,
            period: self.period.to_pb() as i32,
            filter: (!self.filter.is_empty()).then(|| self.filter.to_pb()),
            condition: self.condition.to_pb() as i32,
            threshold: self.threshold,
            deviations: self.deviations,
            baseline_periods: self.baseline_periods,
            enabled: self.enabled,
        }
    }
}

type RuleRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    f64,
    f64,
    i32,
    bool,
);

const COLUMNS: &str = "rule_id, kpi, period, channel, store_id, tier_code, condition, threshold,
                       deviations, baseline_periods, enabled";

fn from_row(r: RuleRow) -> Option<Rule> {
    let period = pb::Period::from_str_name(&r.2).and_then(|p| Period::from_pb(p as i32))?;
    let condition = pb::AlertCondition::from_str_name(&r.6).and_then(Condition::from_pb)?;
    Some(Rule {
        rule_id: r.0,
        kpi: pb::Kpi::from_str_name(&r.1)?,
        period,
        filter: Filter {
            channel: r.3,
            store_id: r.4,
            tier_code: r.5,
        },
        condition,
        threshold: r.7,
        deviations: r.8,
        baseline_periods: r.9,
        enabled: r.10,
    })
}

/// Adds or replaces `rule` in `program`.
pub async fn put(
    tx: &mut PgConnection,
    program: &str,
    rule: &Rule,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO alert_rules (program_id, rule_id, kpi, period, channel, store_id, tier_code,
            condition, threshold, deviations, baseline_periods, enabled, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (program_id, rule_id) DO UPDATE SET
           kpi = EXCLUDED.kpi, period = EXCLUDED.period, channel = EXCLUDED.channel,
           store_id = EXCLUDED.store_id, tier_code = EXCLUDED.tier_code,
           condition = EXCLUDED.condition, threshold = EXCLUDED.threshold,
           deviations = EXCLUDED.deviations, baseline_periods = EXCLUDED.baseline_periods,
           enabled = EXCLUDED.enabled, updated_at = EXCLUDED.updated_at",
    )
    .bind(program)
    .bind(&rule.rule_id)
    .bind(rule.kpi.as_str_name())
    .bind(rule.period.to_pb().as_str_name())
    .bind(&rule.filter.channel)
    .bind(&rule.filter.store_id)
    .bind(&rule.filter.tier_code)
    .bind(rule.condition.to_pb().as_str_name())
    .bind(rule.threshold)
    .bind(rule.deviations)
    .bind(rule.baseline_periods)
    .bind(rule.enabled)
    .bind(now)
    .execute(tx)
    .await?;
    Ok(())
}

/// The rules of `program` by id (only enabled ones when `enabled_only`).
pub async fn list(
    conn: &mut PgConnection,
    program: &str,
    enabled_only: bool,
) -> Result<Vec<Rule>, sqlx::Error> {
    let rows: Vec<RuleRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM alert_rules WHERE program_id = $1 AND (enabled OR NOT $2)
         ORDER BY rule_id"
    ))
    .bind(program)
    .bind(enabled_only)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().filter_map(from_row).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_ids_are_short_words() {
        assert!(valid_rule_id("points-farming_1"));
        assert!(valid_rule_id(&"a".repeat(64)));
        assert!(!valid_rule_id(&"a".repeat(65)));
        assert!(!valid_rule_id(""));
        assert!(!valid_rule_id("no spaces"));
        assert!(!valid_rule_id("é"));
    }

    #[test]
    fn defaults_are_filled_and_bad_numbers_named() {
        let mut v = Violations::new();
        let raw = pb::AlertRule {
            rule_id: "r1".into(),
            kpi: pb::Kpi::PointsIssued as i32,
            period: pb::Period::Day as i32,
            condition: pb::AlertCondition::Deviation as i32,
            ..Default::default()
        };
        let rule = Rule::check(Some(&raw), &mut v).unwrap();
        assert!(v.is_empty());
        assert_eq!((rule.deviations, rule.baseline_periods), (3.0, 28));
        let mut v = Violations::new();
        let bad = pb::AlertRule {
            rule_id: "bad id".into(),
            deviations: -1.0,
            baseline_periods: 2,
            threshold: f64::NAN,
            filter: Some(pb::KpiFilter {
                store_id: "s".into(),
                ..Default::default()
            }),
            kpi: pb::Kpi::Nps as i32,
            ..Default::default()
        };
        assert!(Rule::check(Some(&bad), &mut v).is_none());
        assert_eq!(
            v.fields(),
            [
                "rule.rule_id",
                "rule.period",
                "rule.filter.store_id",
                "rule.condition",
                "rule.threshold",
                "rule.deviations",
                "rule.baseline_periods"
            ]
        );
    }
}
