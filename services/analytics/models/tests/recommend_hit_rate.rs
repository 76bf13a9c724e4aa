//! Leave-last-day-out hit rate: the model against the popular baseline.

use laurel_analytics_models::recommend::{
    CoPurchaseConfig, HitRates, OrderLine, ServeConfig, evaluate_hit_rate,
};

/// Items 0..=5; every multi-day member buys on day 1 and day 20 (the
/// held-out day), so the 30-day window excludes their day-1 items:
///
/// ```text
/// Q1-Q3: day 1 {0, 1}, day 20 {5}    training {0, 1}, held out 5
/// P1-P3: day 1 {0},    day 20 {1}    training {0},    held out 1
/// R1-R5: day 1 {5},    day 20 {4}    training {5},    held out 4
/// T1-T7: day 5 {4} only              one day: neither trained on nor evaluated
/// ```
///
/// Training popularity: 0 (6 buyers), 5 (5), 1 (3); item 4 has none (the
/// T members are left out; if they leaked in, 4 would lead with 7).
/// Training co-purchases: (0, 1) by Q1-Q3, cos = 3 / sqrt(6 * 3) = 0.707.
///
/// Top 1, as of day 20:
/// - Q: 0 and 1 are excluded, so no neighbour is left; the popular fill
///   skips 0 and gives 5: hit. Baseline: 5, hit.
/// - P: 0 is excluded; its neighbour 1 scores 0.707: hit. Baseline: 0 is
///   excluded, so 5: miss.
/// - R: 5 is excluded and has no neighbours; fill gives 0: miss. Baseline
///   0: miss.
///
/// Model 3 + 3 = 6 hits of 11, baseline 3 of 11.
fn fixture() -> Vec<OrderLine> {
    let mut lines = Vec::new();
    let mut add = |member_id: u128, day: i32, items: &[u32]| {
        for &item in items {
            lines.push(OrderLine {
                member_id,
                day,
                item,
            });
        }
    };
    for q in 0..3 {
        add(100 + q, 1, &[0, 1]);
        add(100 + q, 20, &[5]);
    }
    for p in 0..3 {
        add(200 + p, 1, &[0]);
        add(200 + p, 20, &[1]);
    }
    for r in 0..5 {
        add(300 + r, 1, &[5]);
        add(300 + r, 20, &[4]);
    }
    for t in 0..7 {
        add(400 + t, 5, &[4]);
    }
    lines
}

#[test]
fn the_model_beats_the_popular_baseline_on_the_held_out_last_day() {
    let serve = ServeConfig {
        exclude_recent_days: 30,
        top_n: 1,
    };
    let rates = evaluate_hit_rate(&fixture(), 6, &CoPurchaseConfig::default(), &serve).unwrap();
    assert_eq!(
        rates,
        HitRates {
            members_evaluated: 11,
            model_hits: 6,
            popular_hits: 3,
        }
    );
    assert!((rates.model_hit_rate() - 6.0 / 11.0).abs() < 1e-12);
    assert!((rates.popular_hit_rate() - 3.0 / 11.0).abs() < 1e-12);
}

#[test]
fn a_longer_list_finds_more() {
    // Top 2. The popular list is 0, 5, 1 (item 4 has no training buyer).
    // Model: Q has no neighbour left and the fill gives only [5] (0 and 1
    // excluded): hit; P [1 (0.707), 5 (fill)]: hit; R [0, 1]: miss.
    // Baseline: Q [5] hit; P [5, 1] hit now too; R [0, 1] miss.
    let serve = ServeConfig {
        exclude_recent_days: 30,
        top_n: 2,
    };
    let rates = evaluate_hit_rate(&fixture(), 6, &CoPurchaseConfig::default(), &serve).unwrap();
    assert_eq!(
        rates,
        HitRates {
            members_evaluated: 11,
            model_hits: 6,
            popular_hits: 6,
        }
    );
}

#[test]
fn no_members_with_two_days_means_nothing_to_evaluate() {
    let lines = [OrderLine {
        member_id: 1,
        day: 1,
        item: 0,
    }];
    let rates = evaluate_hit_rate(
        &lines,
        1,
        &CoPurchaseConfig::default(),
        &ServeConfig::default(),
    )
    .unwrap();
    assert_eq!(rates, HitRates::default());
    assert_eq!(rates.model_hit_rate(), 0.0);
    assert!(
        evaluate_hit_rate(
            &lines,
            0,
            &CoPurchaseConfig::default(),
            &ServeConfig::default()
        )
        .is_err()
    );
}
