//! Churn risk: components, their direction, bounds, and value at risk.

use laurel_analytics_models::lifecycle::churn::{
    ChurnConfig, ChurnError, ChurnInput, ChurnWeights, MemberValueRisk, ValueAtRisk, churn_risk,
    rank_value_at_risk, value_at_risk,
};

fn score(input: &ChurnInput) -> u8 {
    churn_risk(input, &ChurnConfig::default()).unwrap().score
}

/// A steady member: p_alive flat, bought on rhythm, as many orders as
/// before, no refunds, no complaints.
fn steady() -> ChurnInput {
    ChurnInput {
        p_alive_previous: Some(0.9),
        p_alive_current: Some(0.9),
        recency_days: Some(10),
        rhythm_days: Some(20.0),
        orders_recent_window: 3,
        orders_prior_window: 3,
        orders: 12,
        spent_minor: 60_000,
        refunds: 0,
        refunded_minor: 0,
        negative_ratings: 0,
        complaints: 0,
    }
}

#[test]
fn a_steady_member_scores_zero() {
    let risk = churn_risk(&steady(), &ChurnConfig::default()).unwrap();
    assert_eq!(risk.score, 0);
    assert_eq!(risk.components, Default::default());
    // No data at all is no sign of churn either.
    assert_eq!(score(&ChurnInput::default()), 0);
}

#[test]
fn each_component_matches_its_hand_computed_value_and_points() {
    // Default weights 25, 25, 20, 10, 10, 10 sum to 100: points = w * c.
    let input = ChurnInput {
        // (0.5 - 0.25) / 0.5 = 0.5 -> 12.5 points
        p_alive_previous: Some(0.5),
        p_alive_current: Some(0.25),
        // 25 / 10 = 2.5 rhythms: (2.5 - 1) / (4 - 1) = 0.5 -> 12.5 points
        recency_days: Some(25),
        rhythm_days: Some(10.0),
        // (4 - 1) / 4 = 0.75 -> 15 points
        orders_recent_window: 1,
        orders_prior_window: 4,
        // max(1 / 10, 2500 / 10000) = 0.25, over 0.5 -> 0.5 -> 5 points
        orders: 10,
        spent_minor: 10_000,
        refunds: 1,
        refunded_minor: 2_500,
        // 1 / 3 -> 3.33 points
        negative_ratings: 1,
        // 1 / 2 -> 5 points
        complaints: 1,
    };
    let risk = churn_risk(&input, &ChurnConfig::default()).unwrap();
    let c = risk.components;
    assert_eq!(c.p_alive_drop, 0.5);
    assert_eq!(c.overdue, 0.5);
    assert_eq!(c.frequency_decline, 0.75);
    assert_eq!(c.refunds, 0.5);
    assert!((c.negative_feedback - 1.0 / 3.0).abs() < 1e-12);
    assert_eq!(c.complaints, 0.5);
    let p = risk.contributions;
    assert_eq!(p.p_alive_drop, 12.5);
    assert_eq!(p.overdue, 12.5);
    assert_eq!(p.frequency_decline, 15.0);
    assert_eq!(p.refunds, 5.0);
    assert_eq!(p.complaints, 5.0);
    // 12.5 + 12.5 + 15 + 5 + 3.33 + 5 = 53.33 -> 53
    assert_eq!(risk.score, 53);
}

#[test]
fn half_points_round_up() {
    // p_alive halves alone: 12.5 points -> 13.
    let input = ChurnInput {
        p_alive_previous: Some(0.5),
        p_alive_current: Some(0.25),
        ..steady()
    };
    assert_eq!(score(&input), 13);
}

#[test]
fn each_signal_moves_the_score_up() {
    let base = score(&steady());
    let worse: [(&str, ChurnInput); 6] = [
        (
            "p_alive falls",
            ChurnInput {
                p_alive_current: Some(0.3),
                ..steady()
            },
        ),
        (
            "recency past rhythm",
            ChurnInput {
                recency_days: Some(50),
                ..steady()
            },
        ),
        (
            "fewer recent orders",
            ChurnInput {
                orders_recent_window: 1,
                ..steady()
            },
        ),
        (
            "refunds",
            ChurnInput {
                refunds: 2,
                refunded_minor: 5_000,
                ..steady()
            },
        ),
        (
            "negative ratings",
            ChurnInput {
                negative_ratings: 2,
                ..steady()
            },
        ),
        (
            "complaints",
            ChurnInput {
                complaints: 1,
                ..steady()
            },
        ),
    ];
    for (signal, input) in worse {
        assert!(score(&input) > base, "{signal} must raise the score");
    }
}

#[test]
fn improvements_count_as_no_risk() {
    let better = ChurnInput {
        p_alive_previous: Some(0.5),
        p_alive_current: Some(0.9),
        recency_days: Some(0),
        orders_recent_window: 9,
        orders_prior_window: 3,
        ..steady()
    };
    assert_eq!(
        churn_risk(&better, &ChurnConfig::default()).unwrap().score,
        0
    );
}

#[test]
fn every_signal_at_its_worst_scores_one_hundred() {
    let worst = ChurnInput {
        p_alive_previous: Some(0.8),
        p_alive_current: Some(0.0),
        recency_days: Some(1_000),
        rhythm_days: Some(10.0),
        orders_recent_window: 0,
        orders_prior_window: 5,
        orders: 0,
        spent_minor: 0,
        refunds: 3,
        refunded_minor: 9_000,
        negative_ratings: 50,
        complaints: 9,
    };
    let risk = churn_risk(&worst, &ChurnConfig::default()).unwrap();
    assert_eq!(risk.score, 100);
    for component in [
        risk.components.p_alive_drop,
        risk.components.overdue,
        risk.components.frequency_decline,
        risk.components.refunds,
        risk.components.negative_feedback,
        risk.components.complaints,
    ] {
        assert_eq!(component, 1.0);
    }
}

#[test]
fn scores_stay_within_bounds_and_only_rise_with_worse_signals_on_random_members() {
    let mut state: u64 = 7;
    let mut next = move |modulus: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % modulus
    };
    let config = ChurnConfig::default();
    for _ in 0..2_000 {
        let input = ChurnInput {
            p_alive_previous: Some(next(101) as f64 / 100.0),
            p_alive_current: Some(next(101) as f64 / 100.0),
            recency_days: Some(next(400) as i32),
            rhythm_days: Some(1.0 + next(100) as f64),
            orders_recent_window: next(10) as u32,
            orders_prior_window: next(10) as u32,
            orders: next(20) as u32,
            spent_minor: next(100_000) as i64,
            refunds: next(5) as u32,
            refunded_minor: next(50_000) as i64,
            negative_ratings: next(6) as u32,
            complaints: next(4) as u32,
        };
        let risk = churn_risk(&input, &config).unwrap();
        assert!(risk.score <= 100);
        let worse = ChurnInput {
            recency_days: input.recency_days.map(|r| r + 30),
            complaints: input.complaints + 1,
            ..input
        };
        assert!(churn_risk(&worse, &config).unwrap().score >= risk.score);
    }
}

#[test]
fn weights_are_configurable() {
    // Only complaints count: one complaint of two = 50.
    let config = ChurnConfig {
        weights: ChurnWeights {
            p_alive_drop: 0,
            overdue: 0,
            frequency_decline: 0,
            refunds: 0,
            negative_feedback: 0,
            complaints: 3,
        },
        ..ChurnConfig::default()
    };
    let input = ChurnInput {
        complaints: 1,
        recency_days: Some(1_000),
        ..steady()
    };
    assert_eq!(churn_risk(&input, &config).unwrap().score, 50);
    let no_weight = ChurnConfig {
        weights: ChurnWeights {
            complaints: 0,
            ..config.weights
        },
        ..config
    };
    assert!(matches!(
        churn_risk(&input, &no_weight),
        Err(ChurnError::InvalidConfig { .. })
    ));
}

#[test]
fn invalid_inputs_are_refused() {
    let config = ChurnConfig::default();
    let bad_p = ChurnInput {
        p_alive_current: Some(1.5),
        ..steady()
    };
    assert!(matches!(
        churn_risk(&bad_p, &config),
        Err(ChurnError::InvalidProbability { .. })
    ));
    let zero_rhythm = ChurnInput {
        rhythm_days: Some(0.0),
        ..steady()
    };
    assert!(matches!(
        churn_risk(&zero_rhythm, &config),
        Err(ChurnError::InvalidRecency { .. })
    ));
    let negative_refund = ChurnInput {
        refunded_minor: -1,
        ..steady()
    };
    assert!(matches!(
        churn_risk(&negative_refund, &config),
        Err(ChurnError::NegativeAmount { .. })
    ));
}

#[test]
fn value_at_risk_is_value_times_score_over_one_hundred_rounded_down() {
    assert_eq!(value_at_risk(12_345, 53).unwrap(), 6_542);
    assert_eq!(value_at_risk(12_345, 0).unwrap(), 0);
    assert_eq!(value_at_risk(12_345, 100).unwrap(), 12_345);
    assert_eq!(value_at_risk(i64::MAX, 100).unwrap(), i64::MAX);
    assert!(value_at_risk(-1, 50).is_err());
    assert!(value_at_risk(100, 101).is_err());
}

#[test]
fn ranking_keeps_the_top_members_at_risk_by_value_with_ties_by_member_id() {
    let member = |member_id, value_minor, risk_score| MemberValueRisk {
        member_id,
        value_minor,
        risk_score,
    };
    let members = [
        member(1, 10_000, 80), // 8000
        member(2, 50_000, 20), // below the 50 threshold
        member(3, 16_000, 50), // 8000, tie with 1
        member(4, 30_000, 60), // 18000
        member(5, 4_000, 90),  // 3600
        member(6, 9_000, 50),  // 4500
    ];
    let ranked = rank_value_at_risk(&members, 50, 3).unwrap();
    let row = |member_id, value_minor, risk_score, value_at_risk_minor| ValueAtRisk {
        member_id,
        value_minor,
        risk_score,
        value_at_risk_minor,
    };
    assert_eq!(
        ranked,
        vec![
            row(4, 30_000, 60, 18_000),
            row(1, 10_000, 80, 8_000),
            row(3, 16_000, 50, 8_000),
        ]
    );
    let all = rank_value_at_risk(&members, 50, 100).unwrap();
    let ids: Vec<u128> = all.iter().map(|r| r.member_id).collect();
    assert_eq!(ids, vec![4, 1, 3, 6, 5]);
    assert!(rank_value_at_risk(&members, 50, 0).unwrap().is_empty());
}
