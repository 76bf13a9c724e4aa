//! Property tests of the earn rules against a reference model that computes
//! each order the naive way: one numerator per line over the common
//! denominator `base_amount_minor * 10000^k`, in i128 (the generated
//! numbers are small enough for that), rounded once.

use chrono::{DateTime, Duration, TimeZone, Utc};
use laurel_points::rules::{Earned, apply_daily_cap, earn_for_order, validate};
use laurel_proto::{common::v1::Money, points::v1 as pb};
use proptest::prelude::*;

const CATEGORIES: [&str; 4] = ["shoes", "bags", "food", "gift-cards"];
const SKUS: [&str; 5] = ["s1", "s2", "s3", "s4", "s5"];
const ONE_X: i128 = 10_000;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 24, 12, 0, 0).unwrap()
}

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    }
}

/// `key` in upper case when `upper`: keys must match whatever their case.
fn spelled(key: &str, upper: bool) -> String {
    if upper {
        key.to_uppercase()
    } else {
        key.to_owned()
    }
}

fn multipliers(keys: &[&str], bps: Vec<(Option<i64>, bool)>) -> Vec<pb::Multiplier> {
    keys.iter()
        .zip(bps)
        .filter_map(|(key, (bp, upper))| {
            bp.map(|bp| pb::Multiplier {
                key: spelled(key, upper),
                multiplier_bp: bp,
            })
        })
        .collect()
}

fn subset(keys: &[&str], chosen: Vec<bool>) -> Vec<String> {
    keys.iter()
        .zip(chosen)
        .filter(|(_, on)| *on)
        .map(|(key, _)| key.to_string())
        .collect()
}

fn bp() -> impl Strategy<Value = i64> {
    prop_oneof![Just(0i64), Just(10_000i64), 0i64..=50_000]
}

fn optional_bps(n: usize) -> impl Strategy<Value = Vec<(Option<i64>, bool)>> {
    prop::collection::vec((prop::option::of(bp()), any::<bool>()), n)
}

prop_compose! {
    /// A promotion whose window starts a few minutes either side of `now`,
    /// so the inclusive start and the exclusive end are both hit.
    fn promotion(i: usize)(
        bp in bp(),
        start in -3i64..=3,
        length in 1i64..=4,
        categories in prop::collection::vec(any::<bool>(), CATEGORIES.len()),
    ) -> pb::Promotion {
        let starts_at = now() + Duration::minutes(start);
        pb::Promotion {
            name: format!("p{i}"),
            multiplier_bp: bp,
            starts_at: Some(ts(starts_at)),
            ends_at: Some(ts(starts_at + Duration::minutes(length))),
            categories: subset(&CATEGORIES, categories),
        }
    }
}

fn promotions() -> impl Strategy<Value = Vec<pb::Promotion>> {
    (0usize..=3).prop_flat_map(|n| (0..n).map(promotion).collect::<Vec<_>>())
}

prop_compose! {
    fn rules()(
        base_points in 0i64..=1_000,
        base_amount_minor in 1i64..=1_000,
        rounding in 0i32..=3,
        category_bps in optional_bps(CATEGORIES.len()),
        sku_bps in optional_bps(SKUS.len()),
        excluded_categories in prop::collection::vec(any::<bool>(), CATEGORIES.len()),
        excluded_skus in prop::collection::vec(any::<bool>(), SKUS.len()),
        max_points_per_order in prop_oneof![Just(0i64), 1i64..=5_000],
        gold in prop::option::of(bp()),
        silver in prop::option::of(bp()),
        promotions in promotions(),
    ) -> pb::EarnRules {
        let tiers = [("Gold", gold), ("silver", silver)];
        pb::EarnRules {
            effective_from: Some(ts(now() - Duration::days(30))),
            base_points,
            base_amount_minor,
            rounding,
            category_multipliers: multipliers(&CATEGORIES, category_bps),
            sku_multipliers: multipliers(&SKUS, sku_bps),
            excluded_categories: subset(&CATEGORIES, excluded_categories),
            excluded_skus: subset(&SKUS, excluded_skus),
            max_points_per_order,
            tier_multipliers: tiers
                .into_iter()
                .filter_map(|(tier, bp)| {
                    bp.map(|bp| pb::TierMultiplier { tier: tier.into(), multiplier_bp: bp })
                })
                .collect(),
            promotions,
            ..Default::default()
        }
    }
}

prop_compose! {
    fn order_line()(
        sku in prop::sample::select(vec!["s1", "s2", "s3", "s4", "s5", "other"]),
        category in prop::sample::select(vec!["shoes", "bags", "food", "gift-cards", "toys", ""]),
        upper in any::<bool>(),
        quantity in 1i64..=100,
        unit_price_minor in prop_oneof![Just(0i64), 0i64..=100_000],
    ) -> pb::OrderLine {
        pb::OrderLine {
            sku: spelled(sku, upper),
            category: spelled(category, !upper),
            quantity,
            unit_price_minor,
        }
    }
}

prop_compose! {
    fn order()(
        lines in prop::collection::vec(order_line(), 0..=6),
        total in 0i64..=10_000_000,
    ) -> pb::Order {
        pb::Order {
            order_id: "o-1".into(),
            total: Some(Money { currency_code: "EUR".into(), amount_minor: total }),
            lines,
        }
    }
}

fn tier() -> impl Strategy<Value = Option<String>> {
    prop::option::of(
        prop::sample::select(vec!["gold", "GOLD", "silver", "bronze"]).prop_map(String::from),
    )
}

fn time_of(ts: &Option<prost_types::Timestamp>) -> DateTime<Utc> {
    let ts = ts.as_ref().expect("set");
    DateTime::from_timestamp(ts.seconds, 0).expect("valid")
}

/// The reference: what the order earns, computed naively.
fn reference(
    rules: &pb::EarnRules,
    order: &pb::Order,
    tier: Option<&str>,
    at: DateTime<Utc>,
) -> i64 {
    let lower = |s: &str| s.to_lowercase();
    let multiplier_of = |list: &[pb::Multiplier], key: &str| {
        list.iter()
            .find(|m| lower(&m.key) == key)
            .map(|m| i128::from(m.multiplier_bp))
    };
    let lines: Vec<(String, String, i128)> = if order.lines.is_empty() {
        let total = order.total.as_ref().expect("total").amount_minor;
        vec![(String::new(), String::new(), i128::from(total))]
    } else {
        order
            .lines
            .iter()
            .map(|l| {
                let amount = i128::from(l.quantity) * i128::from(l.unit_price_minor);
                (lower(&l.sku), lower(&l.category), amount)
            })
            .collect()
    };
    let tier_bp = tier
        .and_then(|t| {
            rules
                .tier_multipliers
                .iter()
                .find(|m| lower(&m.tier) == lower(t))
                .map(|m| i128::from(m.multiplier_bp))
        })
        .unwrap_or(ONE_X);
    let mut numerator: i128 = 0;
    for (sku, category, amount) in lines {
        let excluded = rules.excluded_skus.iter().any(|s| lower(s) == sku)
            || rules
                .excluded_categories
                .iter()
                .any(|c| lower(c) == category);
        if excluded {
            continue;
        }
        let line_bp = multiplier_of(&rules.sku_multipliers, &sku)
            .or_else(|| multiplier_of(&rules.category_multipliers, &category))
            .unwrap_or(ONE_X);
        let mut term = i128::from(rules.base_points) * amount * line_bp * tier_bp;
        for promotion in &rules.promotions {
            let active = time_of(&promotion.starts_at) <= at && at < time_of(&promotion.ends_at);
            let covers = promotion.categories.is_empty()
                || promotion.categories.iter().any(|c| lower(c) == category);
            term *= if active && covers {
                i128::from(promotion.multiplier_bp)
            } else {
                ONE_X
            };
        }
        numerator += term;
    }
    let k = 2 + rules.promotions.len() as u32;
    let denominator = i128::from(rules.base_amount_minor) * ONE_X.pow(k);
    let rounded = match rules.rounding {
        2 => (2 * numerator + denominator) / (2 * denominator),
        3 => (numerator + denominator - 1) / denominator,
        _ => numerator / denominator,
    };
    let points = i64::try_from(rounded).expect("fits");
    match rules.max_points_per_order {
        0 => points,
        cap => points.min(cap),
    }
}

fn earned(rules: &pb::EarnRules, order: &pb::Order, tier: Option<&str>) -> Earned {
    let rule_set = validate(rules).expect("generated rules are valid");
    earn_for_order(&rule_set, order, tier, now()).expect("generated orders fit")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn orders_earn_what_the_reference_model_says(
        rules in rules(), order in order(), tier in tier(),
    ) {
        let got = earned(&rules, &order, tier.as_deref());
        prop_assert_eq!(got.points, reference(&rules, &order, tier.as_deref(), now()));
        prop_assert!(got.points >= 0);
        if rules.max_points_per_order > 0 {
            prop_assert!(got.points <= rules.max_points_per_order);
        }
    }

    #[test]
    fn the_explanation_sums_to_the_points_and_names_each_rule_once(
        rules in rules(), order in order(), tier in tier(),
    ) {
        let got = earned(&rules, &order, tier.as_deref());
        let sum: i64 = got.applied.iter().map(|a| a.points).sum();
        prop_assert_eq!(sum, got.points);
        prop_assert_eq!(got.applied[0].rule.as_str(), "base");
        let mut names: Vec<&str> = got.applied.iter().map(|a| a.rule.as_str()).collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        prop_assert_eq!(names.len(), count, "a rule named twice: {:?}", got.applied);
        for part in &got.applied {
            if part.rule.starts_with("exclude:") {
                prop_assert_eq!(part.points, 0);
            }
            if part.rule == "cap:order" {
                prop_assert!(part.points < 0);
            }
        }
    }

    #[test]
    fn an_excluded_line_changes_no_points(
        rules in rules(), order in order(), tier in tier(),
        quantity in 1i64..=100, unit_price_minor in 0i64..=100_000,
    ) {
        let mut rules = rules;
        if !rules.excluded_categories.iter().any(|c| c == "gift-cards") {
            rules.excluded_categories.push("gift-cards".into());
        }
        let before = earned(&rules, &order, tier.as_deref());
        let mut with_gift_card = order.clone();
        if with_gift_card.lines.is_empty() {
            // An order without lines earns on its total: keep it comparable.
            with_gift_card.lines.push(pb::OrderLine {
                sku: "total".into(),
                category: String::new(),
                quantity: 1,
                unit_price_minor: order.total.as_ref().expect("total").amount_minor,
            });
        }
        with_gift_card.lines.push(pb::OrderLine {
            sku: "gc".into(),
            category: "Gift-Cards".into(),
            quantity,
            unit_price_minor,
        });
        let after = earned(&rules, &with_gift_card, tier.as_deref());
        prop_assert_eq!(after.points, before.points);
        prop_assert!(after.applied.iter().any(|a| a.rule == "exclude:category:gift-cards"));
    }

    #[test]
    fn rounding_brackets_the_exact_value(
        rules in rules(), order in order(), tier in tier(),
    ) {
        let by = |rounding: pb::Rounding| {
            let rules = pb::EarnRules {
                rounding: rounding as i32,
                max_points_per_order: 0,
                ..rules.clone()
            };
            earned(&rules, &order, tier.as_deref()).points
        };
        let (down, half_up, up) = (by(pb::Rounding::Down), by(pb::Rounding::HalfUp), by(pb::Rounding::Up));
        prop_assert!(down <= half_up && half_up <= up && up <= down + 1, "{down} {half_up} {up}");
    }

    #[test]
    fn a_higher_multiplier_never_earns_less(
        rules in rules(), order in order(), tier in tier(), extra in 0i64..=50_000,
    ) {
        let lifted = pb::EarnRules {
            category_multipliers: rules
                .category_multipliers
                .iter()
                .map(|m| pb::Multiplier { key: m.key.clone(), multiplier_bp: m.multiplier_bp + extra })
                .collect(),
            ..rules.clone()
        };
        let before = earned(&rules, &order, tier.as_deref()).points;
        prop_assert!(earned(&lifted, &order, tier.as_deref()).points >= before);
    }

    #[test]
    fn the_wire_form_validates_back_to_the_same_rules(rules in rules()) {
        let rule_set = validate(&rules).expect("valid");
        prop_assert_eq!(validate(&rule_set.to_proto()).expect("valid"), rule_set);
    }

    #[test]
    fn the_daily_cap_keeps_within_the_room_left(
        points in -10i64..=10_000, earned_today in -10i64..=10_000, cap in 0i64..=10_000,
    ) {
        let (granted, cut) = apply_daily_cap(points, earned_today, cap);
        let room = (cap - earned_today.max(0)).max(0);
        prop_assert_eq!(granted, points.max(0).min(room));
        prop_assert!(granted >= 0);
        match cut {
            Some(cut) => {
                prop_assert_eq!(cut.rule.as_str(), "cap:day");
                prop_assert_eq!(cut.points, granted - points);
                prop_assert!(cut.points < 0);
            }
            None => prop_assert_eq!(granted, points.max(0)),
        }
    }
}
