//! The validated form of one version of the earn rules.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use laurel_proto::points::v1 as pb;

/// Most points per base amount, and the largest base amount.
pub const MAX_BASE: i64 = 1_000_000_000;
/// Largest multiplier, in basis points (100x).
pub const MAX_MULTIPLIER_BP: i64 = 1_000_000;
/// One times, in basis points.
pub const ONE_X_BP: i64 = 10_000;
/// Largest per-order or per-day cap.
pub const MAX_CAP: i64 = 1_000_000_000_000;
/// Most points one event earns.
pub const MAX_EVENT_POINTS: i64 = 1_000_000_000;
/// Longest category, SKU, tier or promotion name, in characters.
pub const MAX_KEY_CHARS: usize = 128;
/// Most entries in any one list of the rules.
pub const MAX_ENTRIES: usize = 10_000;

/// How an order's fractional points are rounded (once per order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoundingRule {
    /// Toward zero (also when unset).
    #[default]
    Down,
    /// Half away from zero.
    HalfUp,
    /// Away from zero.
    Up,
}

impl RoundingRule {
    /// Its wire form.
    pub fn to_proto(self) -> pb::Rounding {
        match self {
            Self::Down => pb::Rounding::Down,
            Self::HalfUp => pb::Rounding::HalfUp,
            Self::Up => pb::Rounding::Up,
        }
    }
}

/// Fixed points for one kind of event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EventRule {
    pub(super) kind: pb::EarnKind,
    pub(super) points: i64,
    pub(super) max_per_day: Option<u32>,
}

/// A time-boxed multiplier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Promotion {
    pub(super) name: String,
    pub(super) multiplier_bp: i64,
    pub(super) starts_at: DateTime<Utc>,
    pub(super) ends_at: DateTime<Utc>,
    /// Lower-case categories; empty: every category.
    pub(super) categories: BTreeSet<String>,
}

impl Promotion {
    /// Whether it runs at `at` (start inclusive, end exclusive).
    pub(super) fn is_active_at(&self, at: DateTime<Utc>) -> bool {
        self.starts_at <= at && at < self.ends_at
    }

    /// Whether it multiplies lines of `category` (lower case).
    pub(super) fn covers(&self, category: &str) -> bool {
        self.categories.is_empty() || self.categories.contains(category)
    }
}

/// One version of a programme's earn rules, checked by
/// [`validate`](super::validate): every bound holds and every key is in
/// lower case. Only validation makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    pub(super) version: i64,
    pub(super) effective_from: DateTime<Utc>,
    pub(super) published_at: Option<DateTime<Utc>>,
    pub(super) base_points: i64,
    pub(super) base_amount_minor: i64,
    pub(super) rounding: RoundingRule,
    pub(super) category_multipliers: BTreeMap<String, i64>,
    pub(super) sku_multipliers: BTreeMap<String, i64>,
    pub(super) excluded_categories: BTreeSet<String>,
    pub(super) excluded_skus: BTreeSet<String>,
    pub(super) max_points_per_order: Option<i64>,
    pub(super) max_points_per_day: Option<i64>,
    pub(super) event_rules: Vec<EventRule>,
    pub(super) tier_multipliers: BTreeMap<String, i64>,
    pub(super) promotions: Vec<Promotion>,
}

impl RuleSet {
    /// Version, 0 until published.
    pub fn version(&self) -> i64 {
        self.version
    }

    /// From when orders earn by these rules.
    pub fn effective_from(&self) -> DateTime<Utc> {
        self.effective_from
    }

    /// When they were published; `None` until then.
    pub fn published_at(&self) -> Option<DateTime<Utc>> {
        self.published_at
    }

    /// Rounding of an order's points.
    pub fn rounding(&self) -> RoundingRule {
        self.rounding
    }

    /// Most points one order earns, if capped.
    pub fn max_points_per_order(&self) -> Option<i64> {
        self.max_points_per_order
    }

    /// Most points orders earn per member and day, if capped.
    pub fn max_points_per_day(&self) -> Option<i64> {
        self.max_points_per_day
    }

    /// The same rules as published: `version` and `published_at` set.
    pub(super) fn published(mut self, version: i64, published_at: DateTime<Utc>) -> Self {
        self.version = version;
        self.published_at = Some(published_at);
        self
    }

    /// The wire form; [`validate`](super::validate) of it gives these rules
    /// back.
    pub fn to_proto(&self) -> pb::EarnRules {
        pb::EarnRules {
            version: self.version,
            effective_from: Some(to_timestamp(self.effective_from)),
            base_points: self.base_points,
            base_amount_minor: self.base_amount_minor,
            rounding: self.rounding.to_proto() as i32,
            category_multipliers: multipliers_to_proto(&self.category_multipliers),
            sku_multipliers: multipliers_to_proto(&self.sku_multipliers),
            excluded_categories: self.excluded_categories.iter().cloned().collect(),
            excluded_skus: self.excluded_skus.iter().cloned().collect(),
            max_points_per_order: self.max_points_per_order.unwrap_or(0),
            max_points_per_day: self.max_points_per_day.unwrap_or(0),
            event_rules: self.event_rules.iter().map(event_rule_to_proto).collect(),
            tier_multipliers: self
                .tier_multipliers
                .iter()
                .map(|(tier, bp)| pb::TierMultiplier {
                    tier: tier.clone(),
                    multiplier_bp: *bp,
                })
                .collect(),
            promotions: self.promotions.iter().map(promotion_to_proto).collect(),
            published_at: self.published_at.map(to_timestamp),
        }
    }
}

fn multipliers_to_proto(multipliers: &BTreeMap<String, i64>) -> Vec<pb::Multiplier> {
    multipliers
        .iter()
        .map(|(key, bp)| pb::Multiplier {
            key: key.clone(),
            multiplier_bp: *bp,
        })
        .collect()
}

fn event_rule_to_proto(rule: &EventRule) -> pb::EventRule {
    pb::EventRule {
        kind: rule.kind as i32,
        points: rule.points,
        // Validation keeps max_per_day within i32.
        max_per_day: rule
            .max_per_day
            .and_then(|n| i32::try_from(n).ok())
            .unwrap_or(0),
    }
}

fn promotion_to_proto(promotion: &Promotion) -> pb::Promotion {
    pb::Promotion {
        name: promotion.name.clone(),
        multiplier_bp: promotion.multiplier_bp,
        starts_at: Some(to_timestamp(promotion.starts_at)),
        ends_at: Some(to_timestamp(promotion.ends_at)),
        categories: promotion.categories.iter().cloned().collect(),
    }
}

/// A protobuf timestamp.
pub(super) fn to_timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        // Below one billion, so it fits.
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

/// A time from a protobuf timestamp, if it is one.
pub(super) fn from_timestamp(ts: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(ts.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)?;
    DateTime::from_timestamp(ts.seconds, nanos)
}
