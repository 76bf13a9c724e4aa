//! Checks the earn rules a programme publishes, once, into a [`RuleSet`]:
//! every field out of bounds becomes a field violation under `rules.`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Timelike, Utc};
use laurel_proto::points::v1 as pb;
use laurel_runtime::error::Violations;

use super::model::{
    EventRule, MAX_BASE, MAX_CAP, MAX_ENTRIES, MAX_EVENT_POINTS, MAX_KEY_CHARS, MAX_MULTIPLIER_BP,
    Promotion, RoundingRule, RuleSet, from_timestamp,
};

/// Checks `rules` (their `version` and `published_at` are output only and
/// ignored) and returns them in validated form, or every violation found.
pub fn validate(rules: &pb::EarnRules) -> Result<RuleSet, Violations> {
    let pb::EarnRules {
        version: _,
        effective_from,
        base_points,
        base_amount_minor,
        rounding,
        category_multipliers,
        sku_multipliers,
        excluded_categories,
        excluded_skus,
        max_points_per_order,
        max_points_per_day,
        event_rules,
        tier_multipliers,
        promotions,
        published_at: _,
    } = rules;
    let mut v = Violations::new();
    let effective_from = effective_from_time(effective_from.as_ref(), &mut v);
    bounded(*base_points, 0, MAX_BASE, "rules.base_points", &mut v);
    bounded(
        *base_amount_minor,
        1,
        MAX_BASE,
        "rules.base_amount_minor",
        &mut v,
    );
    let rounding = rounding_rule(*rounding, &mut v);
    let category_multipliers =
        multipliers(category_multipliers, "rules.category_multipliers", &mut v);
    let sku_multipliers = multipliers(sku_multipliers, "rules.sku_multipliers", &mut v);
    let excluded_categories = key_set(excluded_categories, "rules.excluded_categories", &mut v);
    let excluded_skus = key_set(excluded_skus, "rules.excluded_skus", &mut v);
    let max_points_per_order = cap(*max_points_per_order, "rules.max_points_per_order", &mut v);
    let max_points_per_day = cap(*max_points_per_day, "rules.max_points_per_day", &mut v);
    let event_rules = event_rule_list(event_rules, &mut v);
    let tier_multipliers = tier_multiplier_map(tier_multipliers, &mut v);
    let promotions = promotion_list(promotions, &mut v);
    v.finish()?;
    Ok(RuleSet {
        version: 0,
        // Set whenever no violation was recorded.
        effective_from: effective_from.unwrap_or_default(),
        published_at: None,
        base_points: *base_points,
        base_amount_minor: *base_amount_minor,
        rounding,
        category_multipliers,
        sku_multipliers,
        excluded_categories,
        excluded_skus,
        max_points_per_order,
        max_points_per_day,
        event_rules,
        tier_multipliers,
        promotions,
    })
}

fn bounded(value: i64, min: i64, max: i64, field: &str, v: &mut Violations) {
    v.check(
        !(min..=max).contains(&value),
        field,
        format!("must be between {min} and {max}"),
    );
}

/// A time Postgres and every client can hold: years 1 to 9999.
fn time(
    ts: Option<&prost_types::Timestamp>,
    field: &str,
    v: &mut Violations,
) -> Option<DateTime<Utc>> {
    let Some(ts) = ts else {
        v.add(field, "required");
        return None;
    };
    let at = from_timestamp(ts).filter(|at| (1..=9999).contains(&at.year()));
    if at.is_none() {
        v.add(field, "must be a valid time between years 1 and 9999");
    }
    at
}

/// Postgres keeps microseconds: the rules keep no more, so the time stored
/// with a version and the one inside it never disagree.
fn effective_from_time(
    ts: Option<&prost_types::Timestamp>,
    v: &mut Violations,
) -> Option<DateTime<Utc>> {
    let at = time(ts, "rules.effective_from", v)?;
    at.with_nanosecond(at.nanosecond() / 1_000 * 1_000)
}

fn rounding_rule(raw: i32, v: &mut Violations) -> RoundingRule {
    match pb::Rounding::try_from(raw) {
        Ok(pb::Rounding::Unspecified | pb::Rounding::Down) => RoundingRule::Down,
        Ok(pb::Rounding::HalfUp) => RoundingRule::HalfUp,
        Ok(pb::Rounding::Up) => RoundingRule::Up,
        Err(_) => {
            v.add("rules.rounding", "unknown rounding");
            RoundingRule::Down
        }
    }
}

fn not_too_many(len: usize, field: &str, v: &mut Violations) {
    v.check(
        len > MAX_ENTRIES,
        field,
        format!("at most {MAX_ENTRIES} entries"),
    );
}

/// A category, SKU or tier key in lower case, if it is one.
fn key(raw: &str, field: &str, v: &mut Violations) -> Option<String> {
    if raw.trim().is_empty() {
        v.add(field, "required");
        return None;
    }
    if raw.chars().count() > MAX_KEY_CHARS {
        v.add(field, format!("at most {MAX_KEY_CHARS} characters"));
        return None;
    }
    Some(raw.to_lowercase())
}

/// Adds `key` to `seen` unless it is there already (a violation at `field`).
fn unique(seen: &mut BTreeSet<String>, key: &str, field: &str, v: &mut Violations) -> bool {
    let fresh = seen.insert(key.to_owned());
    v.check(!fresh, field, "duplicate (keys ignore case)");
    fresh
}

fn multiplier_bp(bp: i64, field: &str, v: &mut Violations) {
    bounded(bp, 0, MAX_MULTIPLIER_BP, field, v);
}

fn multipliers(list: &[pb::Multiplier], field: &str, v: &mut Violations) -> BTreeMap<String, i64> {
    not_too_many(list.len(), field, v);
    let mut seen = BTreeSet::new();
    let mut map = BTreeMap::new();
    for (
        i,
        pb::Multiplier {
            key: raw,
            multiplier_bp: bp,
        },
    ) in list.iter().enumerate()
    {
        let key_field = format!("{field}[{i}].key");
        multiplier_bp(*bp, &format!("{field}[{i}].multiplier_bp"), v);
        if let Some(key) = key(raw, &key_field, v)
            && unique(&mut seen, &key, &key_field, v)
        {
            map.insert(key, *bp);
        }
    }
    map
}

fn key_set(list: &[String], field: &str, v: &mut Violations) -> BTreeSet<String> {
    not_too_many(list.len(), field, v);
    let mut set = BTreeSet::new();
    for (i, raw) in list.iter().enumerate() {
        let item_field = format!("{field}[{i}]");
        if let Some(key) = key(raw, &item_field, v) {
            unique(&mut set, &key, &item_field, v);
        }
    }
    set
}

/// A cap: 0 means none.
fn cap(value: i64, field: &str, v: &mut Violations) -> Option<i64> {
    bounded(value, 0, MAX_CAP, field, v);
    (value > 0).then_some(value)
}

fn event_kind(raw: i32, field: &str, v: &mut Violations) -> Option<pb::EarnKind> {
    match pb::EarnKind::try_from(raw) {
        Ok(
            kind @ (pb::EarnKind::Review
            | pb::EarnKind::Share
            | pb::EarnKind::CheckIn
            | pb::EarnKind::Referral),
        ) => Some(kind),
        _ => {
            v.add(field, "must be review, share, check-in or referral");
            None
        }
    }
}

fn event_rule_list(list: &[pb::EventRule], v: &mut Violations) -> Vec<EventRule> {
    let field = "rules.event_rules";
    not_too_many(list.len(), field, v);
    let mut rules: Vec<EventRule> = Vec::new();
    for (
        i,
        pb::EventRule {
            kind,
            points,
            max_per_day,
        },
    ) in list.iter().enumerate()
    {
        let kind_field = format!("{field}[{i}].kind");
        bounded(
            *points,
            1,
            MAX_EVENT_POINTS,
            &format!("{field}[{i}].points"),
            v,
        );
        v.check(
            *max_per_day < 0,
            format!("{field}[{i}].max_per_day"),
            "must not be negative",
        );
        let Some(kind) = event_kind(*kind, &kind_field, v) else {
            continue;
        };
        if rules.iter().any(|rule| rule.kind == kind) {
            v.add(kind_field, "one rule per kind");
            continue;
        }
        rules.push(EventRule {
            kind,
            points: *points,
            max_per_day: u32::try_from(*max_per_day).ok().filter(|n| *n > 0),
        });
    }
    rules.sort_by_key(|rule| rule.kind as i32);
    rules
}

fn tier_multiplier_map(list: &[pb::TierMultiplier], v: &mut Violations) -> BTreeMap<String, i64> {
    let field = "rules.tier_multipliers";
    not_too_many(list.len(), field, v);
    let mut seen = BTreeSet::new();
    let mut map = BTreeMap::new();
    for (
        i,
        pb::TierMultiplier {
            tier,
            multiplier_bp: bp,
        },
    ) in list.iter().enumerate()
    {
        let tier_field = format!("{field}[{i}].tier");
        multiplier_bp(*bp, &format!("{field}[{i}].multiplier_bp"), v);
        if let Some(tier) = key(tier, &tier_field, v)
            && unique(&mut seen, &tier, &tier_field, v)
        {
            map.insert(tier, *bp);
        }
    }
    map
}

fn promotion_list(list: &[pb::Promotion], v: &mut Violations) -> Vec<Promotion> {
    let field = "rules.promotions";
    not_too_many(list.len(), field, v);
    let mut names = BTreeSet::new();
    let mut promotions = Vec::new();
    for (i, promotion) in list.iter().enumerate() {
        let at = format!("{field}[{i}]");
        if let Some(promotion) = promotion_at(promotion, &at, &mut names, v) {
            promotions.push(promotion);
        }
    }
    promotions
}

fn promotion_at(
    promotion: &pb::Promotion,
    at: &str,
    names: &mut BTreeSet<String>,
    v: &mut Violations,
) -> Option<Promotion> {
    let pb::Promotion {
        name,
        multiplier_bp: bp,
        starts_at,
        ends_at,
        categories,
    } = promotion;
    let name_field = format!("{at}.name");
    // Names are shown as given; they are unique ignoring case so that
    // `promo:<name>` names one promotion.
    let unique_name = key(name, &name_field, v)
        .map(|lower| unique(names, &lower, &name_field, v))
        .unwrap_or(false);
    multiplier_bp(*bp, &format!("{at}.multiplier_bp"), v);
    let starts_at = time(starts_at.as_ref(), &format!("{at}.starts_at"), v);
    let ends_at = time(ends_at.as_ref(), &format!("{at}.ends_at"), v);
    if let (Some(start), Some(end)) = (starts_at, ends_at) {
        v.check(
            end <= start,
            format!("{at}.ends_at"),
            "must be after starts_at",
        );
    }
    let categories = key_set(categories, &format!("{at}.categories"), v);
    Some(Promotion {
        name: name.clone(),
        multiplier_bp: *bp,
        starts_at: starts_at?,
        ends_at: ends_at?,
        categories,
    })
    .filter(|_| unique_name)
}
