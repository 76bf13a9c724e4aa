//! Earn rules by example: validation of published rules, what orders and
//! events earn, and how the explanation adds up.

use chrono::{DateTime, Duration, TimeZone, Utc};
use laurel_points::rules::{
    RoundingRule, RuleError, RuleSet, earn_for_event, earn_for_order, validate,
};
use laurel_proto::{common::v1::Money, points::v1 as pb};

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, day, hour, 0, 0).unwrap()
}

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// One point per 100 minor units, rounded down, nothing else.
fn plain() -> pb::EarnRules {
    pb::EarnRules {
        effective_from: Some(ts(at(1, 0))),
        base_points: 1,
        base_amount_minor: 100,
        ..Default::default()
    }
}

fn multiplier(key: &str, bp: i64) -> pb::Multiplier {
    pb::Multiplier {
        key: key.into(),
        multiplier_bp: bp,
    }
}

fn promotion(
    name: &str,
    bp: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    categories: &[&str],
) -> pb::Promotion {
    pb::Promotion {
        name: name.into(),
        multiplier_bp: bp,
        starts_at: Some(ts(from)),
        ends_at: Some(ts(to)),
        categories: categories.iter().map(|c| c.to_string()).collect(),
    }
}

fn valid(rules: pb::EarnRules) -> RuleSet {
    validate(&rules).unwrap_or_else(|v| panic!("valid rules refused: {:?}", v.fields()))
}

fn violated(rules: pb::EarnRules) -> Vec<String> {
    match validate(&rules) {
        Ok(_) => panic!("invalid rules accepted"),
        Err(v) => v.fields().into_iter().map(str::to_owned).collect(),
    }
}

fn line(sku: &str, category: &str, quantity: i64, unit_price_minor: i64) -> pb::OrderLine {
    pb::OrderLine {
        sku: sku.into(),
        category: category.into(),
        quantity,
        unit_price_minor,
    }
}

fn order_of(lines: Vec<pb::OrderLine>) -> pb::Order {
    pb::Order {
        order_id: "o-1".into(),
        total: Some(Money {
            currency_code: "EUR".into(),
            amount_minor: 999_999,
        }),
        lines,
    }
}

fn order_total(amount_minor: i64) -> pb::Order {
    pb::Order {
        order_id: "o-1".into(),
        total: Some(Money {
            currency_code: "EUR".into(),
            amount_minor,
        }),
        lines: Vec::new(),
    }
}

fn earn(rules: &RuleSet, order: &pb::Order) -> laurel_points::rules::Earned {
    earn_for_order(rules, order, None, at(10, 12)).expect("earns")
}

/// The explanation as (rule, points) pairs.
fn parts(applied: &[pb::AppliedRule]) -> Vec<(&str, i64)> {
    applied
        .iter()
        .map(|a| (a.rule.as_str(), a.points))
        .collect()
}

fn assert_parts_sum(earned: &laurel_points::rules::Earned) {
    let sum: i64 = earned.applied.iter().map(|a| a.points).sum();
    assert_eq!(sum, earned.points, "parts {:?}", parts(&earned.applied));
}

// ---- validation ----

#[test]
fn plain_rules_are_valid_and_round_down_when_rounding_is_unset() {
    let rules = valid(plain());
    assert_eq!(rules.rounding(), RoundingRule::Down);
    assert_eq!(rules.version(), 0);
    assert_eq!(rules.effective_from(), at(1, 0));
    assert_eq!(rules.max_points_per_order(), None);
}

#[test]
fn out_of_bounds_numbers_are_named_by_their_field() {
    let fields = violated(pb::EarnRules {
        base_points: -1,
        base_amount_minor: 0,
        rounding: 99,
        max_points_per_order: -5,
        max_points_per_day: 1_000_000_000_001,
        category_multipliers: vec![multiplier("shoes", 10_000), multiplier("bags", 1_000_001)],
        sku_multipliers: vec![multiplier("sku-1", -1)],
        tier_multipliers: vec![pb::TierMultiplier {
            tier: "gold".into(),
            multiplier_bp: 2_000_000,
        }],
        ..plain()
    });
    assert_eq!(
        fields,
        [
            "rules.base_points",
            "rules.base_amount_minor",
            "rules.rounding",
            "rules.category_multipliers[1].multiplier_bp",
            "rules.sku_multipliers[0].multiplier_bp",
            "rules.max_points_per_order",
            "rules.max_points_per_day",
            "rules.tier_multipliers[0].multiplier_bp",
        ]
    );
}

#[test]
fn the_largest_allowed_numbers_are_valid() {
    valid(pb::EarnRules {
        base_points: 1_000_000_000,
        base_amount_minor: 1_000_000_000,
        max_points_per_order: 1_000_000_000_000,
        max_points_per_day: 1_000_000_000_000,
        category_multipliers: vec![multiplier("shoes", 1_000_000), multiplier("bags", 0)],
        ..plain()
    });
}

#[test]
fn effective_from_is_required() {
    let fields = violated(pb::EarnRules {
        effective_from: None,
        ..plain()
    });
    assert_eq!(fields, ["rules.effective_from"]);
}

#[test]
fn effective_from_keeps_microseconds_as_postgres_does() {
    let rules = valid(pb::EarnRules {
        effective_from: Some(prost_types::Timestamp {
            seconds: at(1, 0).timestamp(),
            nanos: 123_456_789,
        }),
        ..plain()
    });
    assert_eq!(rules.effective_from().timestamp_subsec_nanos(), 123_456_000);
}

#[test]
fn keys_ignore_case_so_two_spellings_of_one_key_are_a_duplicate() {
    let fields = violated(pb::EarnRules {
        category_multipliers: vec![multiplier("Shoes", 20_000), multiplier("shoes", 30_000)],
        excluded_skus: vec!["GIFT-1".into(), "gift-1".into()],
        tier_multipliers: vec![
            pb::TierMultiplier {
                tier: "Gold".into(),
                multiplier_bp: 15_000,
            },
            pb::TierMultiplier {
                tier: "GOLD".into(),
                multiplier_bp: 15_000,
            },
        ],
        ..plain()
    });
    assert_eq!(
        fields,
        [
            "rules.category_multipliers[1].key",
            "rules.excluded_skus[1]",
            "rules.tier_multipliers[1].tier",
        ]
    );
}

#[test]
fn keys_are_stored_in_lower_case() {
    let rules = valid(pb::EarnRules {
        category_multipliers: vec![multiplier("Shoes", 20_000)],
        excluded_categories: vec!["Gift-Cards".into()],
        ..plain()
    });
    let stored = rules.to_proto();
    assert_eq!(stored.category_multipliers[0].key, "shoes");
    assert_eq!(stored.excluded_categories, ["gift-cards"]);
}

#[test]
fn keys_must_be_present_and_at_most_128_characters() {
    let longest = "k".repeat(128);
    valid(pb::EarnRules {
        excluded_categories: vec![longest.clone()],
        ..plain()
    });
    let fields = violated(pb::EarnRules {
        excluded_categories: vec![format!("{longest}k"), "  ".into(), String::new()],
        sku_multipliers: vec![multiplier("", 10_000)],
        ..plain()
    });
    assert_eq!(
        fields,
        [
            "rules.sku_multipliers[0].key",
            "rules.excluded_categories[0]",
            "rules.excluded_categories[1]",
            "rules.excluded_categories[2]",
        ]
    );
}

#[test]
fn event_rules_are_for_event_kinds_one_rule_each_with_positive_points() {
    let rule = |kind: pb::EarnKind, points: i64, max_per_day: i32| pb::EventRule {
        kind: kind as i32,
        points,
        max_per_day,
    };
    let fields = violated(pb::EarnRules {
        event_rules: vec![
            rule(pb::EarnKind::Review, 50, 1),
            rule(pb::EarnKind::Review, 60, 1),
            rule(pb::EarnKind::Order, 10, 0),
            rule(pb::EarnKind::Goodwill, 10, 0),
            rule(pb::EarnKind::Unspecified, 10, 0),
            rule(pb::EarnKind::Share, 0, 0),
            rule(pb::EarnKind::CheckIn, 1_000_000_001, -1),
        ],
        ..plain()
    });
    assert_eq!(
        fields,
        [
            "rules.event_rules[1].kind",
            "rules.event_rules[2].kind",
            "rules.event_rules[3].kind",
            "rules.event_rules[4].kind",
            "rules.event_rules[5].points",
            "rules.event_rules[6].points",
            "rules.event_rules[6].max_per_day",
        ]
    );
}

#[test]
fn promotions_need_a_unique_name_and_a_window_that_ends_after_it_starts() {
    let fields = violated(pb::EarnRules {
        promotions: vec![
            promotion("xmas", 20_000, at(24, 0), at(27, 0), &[]),
            promotion("XMAS", 20_000, at(24, 0), at(27, 0), &[]),
            promotion("", 20_000, at(24, 0), at(27, 0), &[]),
            promotion("backwards", 20_000, at(27, 0), at(24, 0), &[]),
            promotion("empty", 20_000, at(24, 0), at(24, 0), &[]),
            pb::Promotion {
                starts_at: None,
                ..promotion("open", 20_000, at(24, 0), at(27, 0), &["shoes", "Shoes"])
            },
        ],
        ..plain()
    });
    assert_eq!(
        fields,
        [
            "rules.promotions[1].name",
            "rules.promotions[2].name",
            "rules.promotions[3].ends_at",
            "rules.promotions[4].ends_at",
            "rules.promotions[5].starts_at",
            "rules.promotions[5].categories[1]",
        ]
    );
}

#[test]
fn the_wire_form_validates_back_to_the_same_rules() {
    let rules = valid(pb::EarnRules {
        rounding: pb::Rounding::HalfUp as i32,
        category_multipliers: vec![multiplier("Shoes", 20_000)],
        sku_multipliers: vec![multiplier("SKU-1", 30_000)],
        excluded_categories: vec!["gift-cards".into()],
        excluded_skus: vec!["sku-9".into()],
        max_points_per_order: 500,
        max_points_per_day: 1_000,
        event_rules: vec![pb::EventRule {
            kind: pb::EarnKind::Review as i32,
            points: 50,
            max_per_day: 2,
        }],
        tier_multipliers: vec![pb::TierMultiplier {
            tier: "gold".into(),
            multiplier_bp: 15_000,
        }],
        promotions: vec![promotion("xmas", 20_000, at(24, 0), at(27, 0), &["shoes"])],
        ..plain()
    });
    assert_eq!(validate(&rules.to_proto()).expect("valid"), rules);
}

// ---- orders ----

#[test]
fn the_base_rate_earns_on_the_lines_and_ignores_the_total() {
    let rules = valid(plain());
    let earned = earn(&rules, &order_of(vec![line("a", "shoes", 2, 2_500)]));
    assert_eq!(earned.points, 50);
    assert_eq!(parts(&earned.applied), [("base", 50)]);
    assert_eq!(
        earned.applied[0].detail,
        "1 point per 100 minor units on 5000 minor units"
    );
}

#[test]
fn an_order_without_lines_earns_on_its_total() {
    let rules = valid(plain());
    assert_eq!(earn(&rules, &order_total(12_345)).points, 123);
}

#[test]
fn rounding_follows_the_rule() {
    let earned = |rounding: pb::Rounding, amount: i64| {
        let rules = valid(pb::EarnRules {
            rounding: rounding as i32,
            ..plain()
        });
        earn(&rules, &order_total(amount)).points
    };
    assert_eq!(earned(pb::Rounding::Down, 12_399), 123);
    assert_eq!(earned(pb::Rounding::HalfUp, 12_349), 123);
    assert_eq!(earned(pb::Rounding::HalfUp, 12_350), 124);
    assert_eq!(earned(pb::Rounding::Up, 12_301), 124);
    assert_eq!(earned(pb::Rounding::Up, 12_300), 123);
}

#[test]
fn an_order_is_rounded_once_not_line_by_line() {
    let rules = valid(plain());
    // Three lines of 1.5 points each: 4 points, not 1 + 1 + 1.
    let earned = earn(
        &rules,
        &order_of(vec![
            line("a", "x", 1, 150),
            line("b", "x", 1, 150),
            line("c", "x", 1, 150),
        ]),
    );
    assert_eq!(earned.points, 4);
}

#[test]
fn excluded_categories_and_skus_earn_nothing_and_say_so() {
    let rules = valid(pb::EarnRules {
        excluded_categories: vec!["gift-cards".into()],
        excluded_skus: vec!["tobacco-1".into()],
        category_multipliers: vec![multiplier("gift-cards", 50_000)],
        ..plain()
    });
    let earned = earn(
        &rules,
        &order_of(vec![
            line("gc-50", "Gift-Cards", 1, 5_000),
            line("TOBACCO-1", "other", 2, 1_000),
            line("shirt", "clothes", 1, 3_000),
        ]),
    );
    assert_eq!(earned.points, 30);
    assert_eq!(
        parts(&earned.applied),
        [
            ("base", 30),
            ("exclude:category:gift-cards", 0),
            ("exclude:sku:tobacco-1", 0),
        ]
    );
    assert_eq!(
        earned.applied[1].detail,
        "5000 minor units on 1 line earn nothing"
    );
}

#[test]
fn a_sku_multiplier_replaces_its_category_multiplier() {
    let rules = valid(pb::EarnRules {
        category_multipliers: vec![multiplier("shoes", 20_000)],
        sku_multipliers: vec![multiplier("runner-1", 30_000)],
        ..plain()
    });
    let earned = earn(
        &rules,
        &order_of(vec![
            line("Runner-1", "shoes", 1, 1_000),
            line("boot-2", "SHOES", 1, 1_000),
        ]),
    );
    // 10 * 3 + 10 * 2.
    assert_eq!(earned.points, 50);
    assert_eq!(
        parts(&earned.applied),
        [("base", 20), ("sku:runner-1", 20), ("category:shoes", 10)]
    );
    assert_eq!(earned.applied[1].detail, "3x on 1 line");
}

#[test]
fn promotions_run_from_their_start_until_just_before_their_end() {
    let rules = valid(pb::EarnRules {
        promotions: vec![promotion("xmas", 20_000, at(24, 0), at(27, 0), &[])],
        ..plain()
    });
    let order = order_total(10_000);
    let points = |t| earn_for_order(&rules, &order, None, t).unwrap().points;
    assert_eq!(points(at(24, 0) - Duration::nanoseconds(1)), 100);
    assert_eq!(points(at(24, 0)), 200);
    assert_eq!(points(at(27, 0) - Duration::nanoseconds(1)), 200);
    assert_eq!(points(at(27, 0)), 100);
}

#[test]
fn a_promotion_with_categories_multiplies_only_their_lines() {
    let rules = valid(pb::EarnRules {
        promotions: vec![promotion(
            "shoe-week",
            30_000,
            at(1, 0),
            at(31, 0),
            &["Shoes"],
        )],
        ..plain()
    });
    let earned = earn(
        &rules,
        &order_of(vec![
            line("a", "shoes", 1, 1_000),
            line("b", "bags", 1, 1_000),
        ]),
    );
    assert_eq!(earned.points, 40);
    assert_eq!(
        parts(&earned.applied),
        [("base", 20), ("promo:shoe-week", 20)]
    );
}

#[test]
fn the_tier_multiplier_applies_to_the_whole_order_whatever_its_case() {
    let rules = valid(pb::EarnRules {
        tier_multipliers: vec![pb::TierMultiplier {
            tier: "Gold".into(),
            multiplier_bp: 15_000,
        }],
        ..plain()
    });
    let order = order_total(10_000);
    let gold = earn_for_order(&rules, &order, Some("GOLD"), at(10, 12)).unwrap();
    assert_eq!(gold.points, 150);
    assert_eq!(parts(&gold.applied), [("base", 100), ("tier:gold", 50)]);
    assert_eq!(gold.applied[1].detail, "1.5x on the order");
    let silver = earn_for_order(&rules, &order, Some("silver"), at(10, 12)).unwrap();
    assert_eq!(silver.points, 100);
}

#[test]
fn multipliers_compound() {
    let rules = valid(pb::EarnRules {
        category_multipliers: vec![multiplier("shoes", 20_000)],
        promotions: vec![
            promotion("xmas", 20_000, at(1, 0), at(31, 0), &[]),
            promotion("shoe-week", 15_000, at(1, 0), at(31, 0), &["shoes"]),
        ],
        tier_multipliers: vec![pb::TierMultiplier {
            tier: "gold".into(),
            multiplier_bp: 12_500,
        }],
        ..plain()
    });
    let earned = earn_for_order(
        &rules,
        &order_of(vec![line("a", "shoes", 1, 10_000)]),
        Some("gold"),
        at(10, 12),
    )
    .unwrap();
    // 100 * 2 * 2 * 1.5 * 1.25.
    assert_eq!(earned.points, 750);
    assert_eq!(
        parts(&earned.applied),
        [
            ("base", 100),
            ("category:shoes", 100),
            ("promo:xmas", 200),
            ("promo:shoe-week", 200),
            ("tier:gold", 150),
        ]
    );
}

#[test]
fn a_multiplier_below_one_takes_points_away_and_zero_earns_nothing() {
    let rules = valid(pb::EarnRules {
        category_multipliers: vec![multiplier("sale", 5_000), multiplier("clearance", 0)],
        ..plain()
    });
    let earned = earn(
        &rules,
        &order_of(vec![
            line("a", "sale", 1, 10_000),
            line("b", "clearance", 1, 10_000),
        ]),
    );
    assert_eq!(earned.points, 50);
    assert_eq!(
        parts(&earned.applied),
        [
            ("base", 200),
            ("category:sale", -50),
            ("category:clearance", -100)
        ]
    );
}

#[test]
fn rounding_leftovers_go_to_base_so_the_parts_sum_to_the_points() {
    let rules = valid(pb::EarnRules {
        rounding: pb::Rounding::Up as i32,
        category_multipliers: vec![multiplier("shoes", 13_333)],
        tier_multipliers: vec![pb::TierMultiplier {
            tier: "gold".into(),
            multiplier_bp: 11_111,
        }],
        ..plain()
    });
    let earned = earn_for_order(
        &rules,
        &order_of(vec![line("a", "shoes", 3, 333), line("b", "bags", 7, 77)]),
        Some("gold"),
        at(10, 12),
    )
    .unwrap();
    assert_parts_sum(&earned);
    assert_eq!(earned.applied[0].rule, "base");
}

#[test]
fn the_order_cap_cuts_and_explains_the_cut() {
    let rules = valid(pb::EarnRules {
        max_points_per_order: 120,
        max_points_per_day: 300,
        ..plain()
    });
    let earned = earn(&rules, &order_total(50_000));
    assert_eq!(earned.points, 120);
    assert_eq!(parts(&earned.applied), [("base", 500), ("cap:order", -380)]);
    assert_eq!(earned.daily_cap, Some(300));
    assert_eq!(earn(&rules, &order_total(12_000)).points, 120);
    assert_eq!(earn(&rules, &order_total(11_900)).applied.len(), 1);
}

#[test]
fn amounts_too_large_for_64_bits_are_an_error_not_a_panic() {
    let rules = valid(plain());
    let overflowing_line = order_of(vec![line("a", "x", i64::MAX, 2)]);
    assert_eq!(
        earn_for_order(&rules, &overflowing_line, None, at(10, 12)),
        Err(RuleError::Overflow)
    );
    let overflowing_sum = order_of(vec![line("a", "x", 1, i64::MAX), line("b", "x", 1, 1)]);
    assert_eq!(
        earn_for_order(&rules, &overflowing_sum, None, at(10, 12)),
        Err(RuleError::Overflow)
    );
    // 1e9 points per minor unit on i64::MAX minor units: far past i64.
    let generous = valid(pb::EarnRules {
        base_points: 1_000_000_000,
        base_amount_minor: 1,
        category_multipliers: vec![multiplier("x", 1_000_000)],
        ..plain()
    });
    let big = order_of(vec![line("a", "x", 1, i64::MAX)]);
    assert_eq!(
        earn_for_order(&generous, &big, None, at(10, 12)),
        Err(RuleError::Overflow)
    );
}

#[test]
fn the_largest_order_that_fits_earns_exactly() {
    let rules = valid(pb::EarnRules {
        base_amount_minor: 1,
        ..plain()
    });
    assert_eq!(earn(&rules, &order_total(i64::MAX)).points, i64::MAX);
}

#[test]
fn impossible_orders_name_the_field() {
    let rules = valid(plain());
    let error = |order: pb::Order| match earn_for_order(&rules, &order, None, at(10, 12)) {
        Err(RuleError::InvalidOrder { field, .. }) => field,
        other => panic!("expected an invalid order, got {other:?}"),
    };
    assert_eq!(
        error(order_of(vec![line("a", "x", 1, 1), line("b", "x", 0, 1)])),
        "order.lines[1].quantity"
    );
    assert_eq!(
        error(order_of(vec![line("a", "x", 1, -1)])),
        "order.lines[0].unit_price_minor"
    );
    assert_eq!(error(order_total(-1)), "order.total.amount_minor");
    assert_eq!(
        error(pb::Order {
            total: None,
            ..order_total(0)
        }),
        "order.total"
    );
}

// ---- events ----

#[test]
fn events_earn_their_fixed_points_and_other_kinds_nothing() {
    let rules = valid(pb::EarnRules {
        event_rules: vec![
            pb::EventRule {
                kind: pb::EarnKind::Review as i32,
                points: 50,
                max_per_day: 2,
            },
            pb::EventRule {
                kind: pb::EarnKind::CheckIn as i32,
                points: 5,
                max_per_day: 0,
            },
        ],
        ..plain()
    });
    let review = earn_for_event(&rules, pb::EarnKind::Review).expect("a review earns");
    assert_eq!((review.points, review.max_per_day), (50, Some(2)));
    let check_in = earn_for_event(&rules, pb::EarnKind::CheckIn).expect("a check-in earns");
    assert_eq!((check_in.points, check_in.max_per_day), (5, None));
    assert_eq!(earn_for_event(&rules, pb::EarnKind::Share), None);
    assert_eq!(earn_for_event(&rules, pb::EarnKind::Order), None);
}
