//! When a rule breaches: plain functions over a KPI's points.
//!
//! Each evaluation looks at two periods, the last complete one and the
//! current (in-progress) one:
//! - an upper breach (ABOVE, or DEVIATION above the band) counts in both;
//! - a lower breach (BELOW, or DEVIATION below the band) counts in both
//!   for ratios, but only in the complete period for totals (counts and
//!   sums): a total in progress is on its way up to its final value, so
//!   comparing it from below would raise every period at its start;
//! - a ratio with no denominator in a period has no value there and is not
//!   compared.
//!
//! DEVIATION: the band is mean ± deviations x the population standard
//! deviation of the `baseline_periods` periods before the one compared,
//! counting only periods with data (a total's non-zero numerator, a
//! ratio's non-zero denominator), so periods before the programme started
//! do not drag the mean to zero. With fewer than 3 such periods nothing is
//! raised. The comparison is strict: a value on the band's edge (or equal
//! to a perfectly steady baseline) does not breach.
//!
//! A rule raises at most once per period (a unique constraint), so the
//! complete period re-checked every run raises nothing new unless it was
//! missed while in progress.

use chrono::NaiveDate;
use statrs::statistics::Statistics;

use super::rule::{Condition, MIN_BASELINE_PERIODS, Rule};
use crate::kpi::sql::{Point, Shape};

/// A period that breached its rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Breach {
    /// The period's first day.
    pub start: NaiveDate,
    /// Its value.
    pub value: f64,
    /// The threshold, or the baseline mean.
    pub expected: f64,
    /// The baseline's population standard deviation (0 for thresholds).
    pub stddev: f64,
}

/// Periods the points of one evaluation of `rule` must span, ending with
/// the current one.
pub fn periods_needed(rule: &Rule) -> i64 {
    match rule.condition {
        Condition::Above | Condition::Below => 2,
        Condition::Deviation => i64::from(rule.baseline_periods) + 2,
    }
}

fn has_value(shape: Shape, p: &Point) -> bool {
    shape == Shape::Total || p.denominator != 0.0
}

fn has_data(shape: Shape, p: &Point) -> bool {
    match shape {
        Shape::Total => p.numerator != 0.0,
        Shape::Ratio | Shape::Percent => p.denominator != 0.0,
    }
}

/// The baseline mean and population standard deviation of `baseline`'s
/// periods with data; `None` with fewer than [`MIN_BASELINE_PERIODS`].
pub fn band(shape: Shape, baseline: &[Point]) -> Option<(f64, f64)> {
    let values: Vec<f64> = baseline
        .iter()
        .filter(|p| has_data(shape, p))
        .map(|p| p.value)
        .collect();
    if values.len() < MIN_BASELINE_PERIODS as usize {
        return None;
    }
    Some((values.iter().mean(), values.iter().population_std_dev()))
}

/// The breaches of `rule` among the last two of `points` (oldest first,
/// ending with the current period; see [`periods_needed`]).
pub fn breaches(rule: &Rule, shape: Shape, points: &[Point]) -> Vec<Breach> {
    let n = points.len();
    let mut found = Vec::new();
    for (index, in_progress) in [(n.wrapping_sub(2), false), (n.wrapping_sub(1), true)] {
        let Some(p) = points.get(index) else {
            continue;
        };
        if !has_value(shape, p) {
            continue;
        }
        let lower_counts = !(in_progress && shape == Shape::Total);
        let breach = match rule.condition {
            Condition::Above => (p.value > rule.threshold).then_some((rule.threshold, 0.0)),
            Condition::Below => {
                (lower_counts && p.value < rule.threshold).then_some((rule.threshold, 0.0))
            }
            Condition::Deviation => {
                let wanted = usize::try_from(rule.baseline_periods).unwrap_or(usize::MAX);
                let baseline = &points[index.saturating_sub(wanted)..index];
                band(shape, baseline).filter(|(mean, sd)| {
                    let reach = rule.deviations * sd;
                    p.value > mean + reach || (lower_counts && p.value < mean - reach)
                })
            }
        };
        if let Some((expected, stddev)) = breach {
            found.push(Breach {
                start: p.start,
                value: p.value,
                expected,
                stddev,
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kpi::{filter::Filter, period::Period};
    use laurel_proto::analytics::v1 as pb;

    fn rule(condition: Condition) -> Rule {
        Rule {
            rule_id: "r".into(),
            kpi: pb::Kpi::PointsIssued,
            period: Period::Day,
            filter: Filter::default(),
            condition,
            threshold: 100.0,
            deviations: 3.0,
            baseline_periods: 7,
            enabled: true,
        }
    }

    fn totals(values: &[f64]) -> Vec<Point> {
        let first = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| Point::new(Shape::Total, first + chrono::Days::new(i as u64), v, 1.0))
            .collect()
    }

    #[test]
    fn a_spike_over_a_steady_baseline_breaches_with_its_band() {
        // Baseline 1000, 1100, 900, 1000, 1100, 900, 1000: mean 1000,
        // population variance 4 x 100² / 7 = 40,000 / 7 (sd 75.59).
        let mut values = vec![0.0, 1000.0, 1100.0, 900.0, 1000.0, 1100.0, 900.0, 1000.0];
        values.push(1300.0);
        let points = totals(&values);
        let found = breaches(&rule(Condition::Deviation), Shape::Total, &points);
        assert_eq!(found.len(), 1);
        let b = found[0];
        assert_eq!(b.value, 1300.0);
        assert!((b.expected - 1000.0).abs() < 1e-9);
        let sd = (40_000.0f64 / 7.0).sqrt();
        assert!((b.stddev - sd).abs() < 1e-9, "{} vs {sd}", b.stddev);
        // 1000 + 3 x 75.59 = 1226.8 < 1300; 1220 stays inside.
        let mut inside = values.clone();
        *inside.last_mut().unwrap() = 1220.0;
        assert!(breaches(&rule(Condition::Deviation), Shape::Total, &totals(&inside)).is_empty());
    }

    #[test]
    fn a_total_in_progress_is_not_compared_from_below() {
        let mut values = vec![1000.0, 1100.0, 900.0, 1000.0, 1100.0, 900.0, 1000.0, 1000.0];
        values.push(10.0);
        assert!(breaches(&rule(Condition::Deviation), Shape::Total, &totals(&values)).is_empty());
        assert!(
            breaches(
                &rule(Condition::Below),
                Shape::Total,
                &totals(&[500.0, 10.0])
            )
            .is_empty()
        );
        // The complete period is.
        let found = breaches(
            &rule(Condition::Below),
            Shape::Total,
            &totals(&[10.0, 500.0]),
        );
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].value, found[0].expected), (10.0, 100.0));
    }

    #[test]
    fn fewer_than_three_baseline_periods_with_data_raise_nothing() {
        let values = [0.0, 0.0, 0.0, 0.0, 0.0, 1000.0, 1000.0, 0.0, 9000.0];
        assert!(breaches(&rule(Condition::Deviation), Shape::Total, &totals(&values)).is_empty());
    }

    #[test]
    fn a_ratio_without_denominator_is_not_compared() {
        let day = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let empty = Point::new(Shape::Ratio, day, 0.0, 0.0);
        let mut r = rule(Condition::Below);
        r.threshold = 0.5;
        assert!(breaches(&r, Shape::Ratio, &[empty, empty]).is_empty());
        let low = Point::new(Shape::Ratio, day, 1.0, 4.0);
        assert_eq!(
            breaches(&r, Shape::Ratio, &[empty, low]).len(),
            1,
            "a ratio in progress counts from below"
        );
    }

    #[test]
    fn above_counts_in_both_periods() {
        let found = breaches(
            &rule(Condition::Above),
            Shape::Total,
            &totals(&[150.0, 120.0]),
        );
        assert_eq!(
            found.iter().map(|b| b.value).collect::<Vec<_>>(),
            [150.0, 120.0]
        );
    }
}
