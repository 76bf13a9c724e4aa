//! What an order earns under one version of the rules, and which rules made
//! it so. The semantics are in the [module docs](super).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use laurel_proto::points::v1 as pb;

use super::{
    model::{ONE_X_BP, Promotion, RuleSet},
    ratio::Ratio,
};

/// What an order earns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Earned {
    /// Points, after the order cap (0 or more).
    pub points: i64,
    /// How they came about; the parts' points sum to `points`.
    pub applied: Vec<pb::AppliedRule>,
    /// The rules' per-member daily cap on order points, for the ledger to
    /// enforce with [`apply_daily_cap`](super::apply_daily_cap).
    pub daily_cap: Option<i64>,
}

/// Why an order's points could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// An amount or the points do not fit in 64 bits.
    #[error("the order's amounts or points are too large")]
    Overflow,
    /// The order breaks a bound of its own (`field` is a path such as
    /// `order.lines[2].quantity`).
    #[error("{field}: {reason}")]
    InvalidOrder {
        /// Path of the field.
        field: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

fn too_large<T>(value: Option<T>) -> Result<T, RuleError> {
    value.ok_or(RuleError::Overflow)
}

/// What `order`, placed at `occurred_at` by a member of `tier`, earns under
/// `rules`.
pub fn earn_for_order(
    rules: &RuleSet,
    order: &pb::Order,
    tier: Option<&str>,
    occurred_at: DateTime<Utc>,
) -> Result<Earned, RuleError> {
    let lines = earn_lines(order)?;
    let promotions: Vec<&Promotion> = rules
        .promotions
        .iter()
        .filter(|promotion| promotion.is_active_at(occurred_at))
        .collect();
    let mut parts = Parts::new(rules);
    let mut value = Ratio::ZERO;
    for line in &lines {
        let line_value = line_value(rules, line, &promotions, &mut parts)?;
        value = too_large(value.checked_add(line_value))?;
    }
    let value = tier_value(rules, tier, value, &mut parts)?;
    let rounded = too_large(i64::try_from(value.round(rules.rounding)).ok())?;
    let mut applied = parts.explain(rounded)?;
    let points = cap_order(rules.max_points_per_order, rounded, &mut applied);
    Ok(Earned {
        points,
        applied,
        daily_cap: rules.max_points_per_day,
    })
}

/// One line as it earns: lower-case keys and its amount in minor units.
#[derive(Debug)]
struct EarnLine {
    sku: String,
    category: String,
    amount: i64,
}

/// The order's lines, or its total as one line without keys.
fn earn_lines(order: &pb::Order) -> Result<Vec<EarnLine>, RuleError> {
    if order.lines.is_empty() {
        return Ok(vec![total_line(order)?]);
    }
    let mut sum: i64 = 0;
    let mut lines = Vec::with_capacity(order.lines.len());
    for (i, line) in order.lines.iter().enumerate() {
        let line = earn_line(i, line)?;
        sum = too_large(sum.checked_add(line.amount))?;
        lines.push(line);
    }
    Ok(lines)
}

fn total_line(order: &pb::Order) -> Result<EarnLine, RuleError> {
    let Some(total) = &order.total else {
        return Err(invalid(
            "order.total",
            "required when the order has no lines",
        ));
    };
    if total.amount_minor < 0 {
        return Err(invalid("order.total.amount_minor", "must not be negative"));
    }
    Ok(EarnLine {
        sku: String::new(),
        category: String::new(),
        amount: total.amount_minor,
    })
}

fn earn_line(i: usize, line: &pb::OrderLine) -> Result<EarnLine, RuleError> {
    let pb::OrderLine {
        sku,
        category,
        quantity,
        unit_price_minor,
    } = line;
    if *quantity < 1 {
        return Err(invalid(
            format!("order.lines[{i}].quantity"),
            "must be at least 1",
        ));
    }
    if *unit_price_minor < 0 {
        return Err(invalid(
            format!("order.lines[{i}].unit_price_minor"),
            "must not be negative",
        ));
    }
    Ok(EarnLine {
        sku: sku.to_lowercase(),
        category: category.to_lowercase(),
        amount: too_large(quantity.checked_mul(*unit_price_minor))?,
    })
}

fn invalid(field: impl Into<String>, reason: &'static str) -> RuleError {
    RuleError::InvalidOrder {
        field: field.into(),
        reason,
    }
}

/// What a line earns before the tier, recording each rule's share.
fn line_value(
    rules: &RuleSet,
    line: &EarnLine,
    promotions: &[&Promotion],
    parts: &mut Parts,
) -> Result<Ratio, RuleError> {
    if let Some(rule) = exclusion(rules, line) {
        parts.exclude(rule, line.amount)?;
        return Ok(Ratio::ZERO);
    }
    let mut value = too_large(Ratio::new(
        i128::from(line.amount) * i128::from(rules.base_points),
        i128::from(rules.base_amount_minor),
    ))?;
    parts.add_base(value, line.amount)?;
    if let Some((rule, bp)) = line_multiplier(rules, line) {
        value = parts.multiply(rule, Scope::Lines, bp, value, line.amount)?;
    }
    for promotion in promotions.iter().filter(|p| p.covers(&line.category)) {
        let rule = format!("promo:{}", promotion.name);
        let bp = promotion.multiplier_bp;
        value = parts.multiply(rule, Scope::Lines, bp, value, line.amount)?;
    }
    Ok(value)
}

/// The exclusion that makes a line earn nothing: its SKU's, else its
/// category's.
fn exclusion(rules: &RuleSet, line: &EarnLine) -> Option<String> {
    if rules.excluded_skus.contains(&line.sku) {
        return Some(format!("exclude:sku:{}", line.sku));
    }
    rules
        .excluded_categories
        .contains(&line.category)
        .then(|| format!("exclude:category:{}", line.category))
}

/// The line's own multiplier: its SKU's, which replaces its category's.
fn line_multiplier(rules: &RuleSet, line: &EarnLine) -> Option<(String, i64)> {
    if let Some(bp) = rules.sku_multipliers.get(&line.sku) {
        return Some((format!("sku:{}", line.sku), *bp));
    }
    rules
        .category_multipliers
        .get(&line.category)
        .map(|bp| (format!("category:{}", line.category), *bp))
}

/// The order's value after the tier multiplier, if the tier has one.
fn tier_value(
    rules: &RuleSet,
    tier: Option<&str>,
    value: Ratio,
    parts: &mut Parts,
) -> Result<Ratio, RuleError> {
    let Some(tier) = tier.map(str::to_lowercase) else {
        return Ok(value);
    };
    let Some(bp) = rules.tier_multipliers.get(&tier) else {
        return Ok(value);
    };
    parts.multiply(format!("tier:{tier}"), Scope::Order, *bp, value, 0)
}

/// Caps the order's points, explaining the cut.
fn cap_order(cap: Option<i64>, points: i64, applied: &mut Vec<pb::AppliedRule>) -> i64 {
    match cap {
        Some(cap) if points > cap => {
            applied.push(pb::AppliedRule {
                rule: "cap:order".into(),
                points: cap - points,
                detail: format!("at most {cap} points per order"),
            });
            cap
        }
        _ => points,
    }
}

/// How one rule took part.
#[derive(Debug, Clone, Copy)]
enum Share {
    /// The base rate.
    Base,
    /// A multiplier, in basis points.
    Multiplier(i64, Scope),
    /// An exclusion.
    Excluded,
}

/// What a multiplier multiplies.
#[derive(Debug, Clone, Copy)]
enum Scope {
    /// Some lines.
    Lines,
    /// The whole order.
    Order,
}

/// One rule's exact share of the order's points.
#[derive(Debug)]
struct Part {
    rule: String,
    share: Share,
    value: Ratio,
    lines: u64,
    amount: i64,
}

/// Every rule's share, in the order the rules were first met.
#[derive(Debug)]
struct Parts<'r> {
    rules: &'r RuleSet,
    parts: Vec<Part>,
    index: HashMap<String, usize>,
}

impl<'r> Parts<'r> {
    fn new(rules: &'r RuleSet) -> Self {
        let mut parts = Self {
            rules,
            parts: Vec::new(),
            index: HashMap::new(),
        };
        parts.part("base".into(), Share::Base);
        parts
    }

    fn part(&mut self, rule: String, share: Share) -> &mut Part {
        let next = self.parts.len();
        let i = *self.index.entry(rule.clone()).or_insert(next);
        if i == next {
            self.parts.push(Part {
                rule,
                share,
                value: Ratio::ZERO,
                lines: 0,
                amount: 0,
            });
        }
        &mut self.parts[i]
    }

    fn record(
        &mut self,
        rule: String,
        share: Share,
        value: Ratio,
        amount: i64,
    ) -> Result<(), RuleError> {
        let part = self.part(rule, share);
        part.value = too_large(part.value.checked_add(value))?;
        part.lines += 1;
        part.amount = too_large(part.amount.checked_add(amount))?;
        Ok(())
    }

    fn add_base(&mut self, value: Ratio, amount: i64) -> Result<(), RuleError> {
        self.record("base".into(), Share::Base, value, amount)
    }

    fn exclude(&mut self, rule: String, amount: i64) -> Result<(), RuleError> {
        self.record(rule, Share::Excluded, Ratio::ZERO, amount)
    }

    /// Multiplies `value` by the rule's multiplier and records what that
    /// added (or took away).
    fn multiply(
        &mut self,
        rule: String,
        scope: Scope,
        bp: i64,
        value: Ratio,
        amount: i64,
    ) -> Result<Ratio, RuleError> {
        let multiplied = too_large(value.checked_scale(i128::from(bp), i128::from(ONE_X_BP)))?;
        let added = too_large(multiplied.checked_sub(value))?;
        self.record(rule, Share::Multiplier(bp, scope), added, amount)?;
        Ok(multiplied)
    }

    /// The explanation of `points`: every rule's share rounded toward zero,
    /// and `base` taking what rounding left over.
    fn explain(self, points: i64) -> Result<Vec<pb::AppliedRule>, RuleError> {
        let mut applied: Vec<pb::AppliedRule> = Vec::with_capacity(self.parts.len());
        let mut others: i128 = 0;
        for part in &self.parts[1..] {
            let share = too_large(i64::try_from(part.value.trunc()).ok())?;
            others += i128::from(share);
            applied.push(self.applied(part, share));
        }
        let base = too_large(i64::try_from(i128::from(points) - others).ok())?;
        applied.insert(0, self.applied(&self.parts[0], base));
        Ok(applied)
    }

    fn applied(&self, part: &Part, points: i64) -> pb::AppliedRule {
        let lines = count(part.lines, "line");
        let detail = match part.share {
            Share::Base => format!(
                "{} per {} minor units on {} minor units",
                count(self.rules.base_points, "point"),
                self.rules.base_amount_minor,
                part.amount
            ),
            Share::Multiplier(bp, Scope::Lines) => format!("{} on {lines}", times(bp)),
            Share::Multiplier(bp, Scope::Order) => format!("{} on the order", times(bp)),
            Share::Excluded => format!("{} minor units on {lines} earn nothing", part.amount),
        };
        pb::AppliedRule {
            rule: part.rule.clone(),
            points,
            detail,
        }
    }
}

/// `1 line`, `2 lines`.
fn count(n: impl Into<i128>, noun: &str) -> String {
    match n.into() {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

/// A multiplier in basis points as people write it: `2x`, `1.25x`.
fn times(bp: i64) -> String {
    let whole = bp / ONE_X_BP;
    let fraction = bp % ONE_X_BP;
    if fraction == 0 {
        return format!("{whole}x");
    }
    let digits = format!("{fraction:04}");
    format!("{whole}.{}x", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipliers_read_as_people_write_them() {
        assert_eq!(times(10_000), "1x");
        assert_eq!(times(20_000), "2x");
        assert_eq!(times(15_000), "1.5x");
        assert_eq!(times(12_345), "1.2345x");
        assert_eq!(times(500), "0.05x");
        assert_eq!(times(0), "0x");
    }
}
