//! Lifecycle stages at each boundary of the default configuration.

use laurel_analytics_models::lifecycle::{
    LifecycleChange, LifecycleConfig, LifecycleError, LifecycleInput, LifecycleStage, RhythmSource,
    StageReason, lifecycle_change_event, lifecycle_stage, lifecycle_stages, median_rhythm_days,
    purchase_rhythm,
};

/// Eleven purchase days from day 0 to day 100: a rhythm of exactly 10 days.
fn every_ten_days(p_alive: Option<f64>) -> LifecycleInput {
    LifecycleInput {
        first_purchase_day: Some(0),
        last_purchase_day: Some(100),
        purchases: 11,
        p_alive,
    }
}

fn stage_on(member: &LifecycleInput, as_of: i32) -> LifecycleStage {
    lifecycle_stage(member, as_of, &LifecycleConfig::default())
        .unwrap()
        .stage
}

#[test]
fn recency_boundaries_at_one_and_a_half_three_and_six_rhythms() {
    let member = every_ten_days(None);
    // Rhythm 10: active up to 15 days, at risk up to 30, dormant up to 60.
    let expected = [
        (100, LifecycleStage::Active),
        (115, LifecycleStage::Active),
        (116, LifecycleStage::AtRisk),
        (130, LifecycleStage::AtRisk),
        (131, LifecycleStage::Dormant),
        (160, LifecycleStage::Dormant),
        (161, LifecycleStage::Churned),
        (1_000, LifecycleStage::Churned),
    ];
    for (as_of, stage) in expected {
        assert_eq!(stage_on(&member, as_of), stage, "as of day {as_of}");
    }
}

#[test]
fn p_alive_boundaries_at_one_half_three_tenths_and_one_tenth() {
    // Bought on the as-of day: recency alone says active.
    let expected = [
        (1.0, LifecycleStage::Active),
        (0.5, LifecycleStage::Active),
        (0.49, LifecycleStage::AtRisk),
        (0.3, LifecycleStage::AtRisk),
        (0.29, LifecycleStage::Dormant),
        (0.1, LifecycleStage::Dormant),
        (0.09, LifecycleStage::Churned),
        (0.0, LifecycleStage::Churned),
    ];
    for (p_alive, stage) in expected {
        let assessment = lifecycle_stage(
            &every_ten_days(Some(p_alive)),
            100,
            &LifecycleConfig::default(),
        )
        .unwrap();
        assert_eq!(assessment.stage, stage, "p_alive {p_alive}");
        let reason = if stage == LifecycleStage::Active {
            StageReason::Recency
        } else {
            StageReason::ProbabilityAlive
        };
        assert_eq!(assessment.reason, reason, "p_alive {p_alive}");
    }
}

#[test]
fn the_worse_of_recency_and_p_alive_decides() {
    // 40 days = 4 rhythms: dormant by recency; p_alive 0.4 says at risk.
    let assessment =
        lifecycle_stage(&every_ten_days(Some(0.4)), 140, &LifecycleConfig::default()).unwrap();
    assert_eq!(assessment.stage, LifecycleStage::Dormant);
    assert_eq!(assessment.reason, StageReason::Recency);
    assert_eq!(assessment.recency_days, Some(40));
    assert_eq!(assessment.recency_in_rhythms, Some(4.0));
    // 20 days = 2 rhythms: at risk; p_alive 0.05 says churned.
    let assessment = lifecycle_stage(
        &every_ten_days(Some(0.05)),
        120,
        &LifecycleConfig::default(),
    )
    .unwrap();
    assert_eq!(assessment.stage, LifecycleStage::Churned);
    assert_eq!(assessment.reason, StageReason::ProbabilityAlive);
}

#[test]
fn a_member_who_never_bought_is_a_prospect() {
    let member = LifecycleInput {
        first_purchase_day: None,
        last_purchase_day: None,
        purchases: 0,
        p_alive: None,
    };
    let assessment = lifecycle_stage(&member, 500, &LifecycleConfig::default()).unwrap();
    assert_eq!(assessment.stage, LifecycleStage::Prospect);
    assert_eq!(assessment.reason, StageReason::NoPurchase);
    assert_eq!(assessment.rhythm, None);
}

#[test]
fn new_lasts_thirty_days_from_the_first_purchase_and_one_repeat() {
    let one_purchase = LifecycleInput {
        first_purchase_day: Some(100),
        last_purchase_day: Some(100),
        purchases: 1,
        p_alive: None,
    };
    assert_eq!(stage_on(&one_purchase, 100), LifecycleStage::New);
    assert_eq!(stage_on(&one_purchase, 130), LifecycleStage::New);
    // Day 31: by recency against the default rhythm (31 / 90 rhythms).
    assert_eq!(stage_on(&one_purchase, 131), LifecycleStage::Active);

    let one_repeat = LifecycleInput {
        first_purchase_day: Some(100),
        last_purchase_day: Some(110),
        purchases: 2,
        p_alive: Some(0.05),
    };
    assert_eq!(stage_on(&one_repeat, 130), LifecycleStage::New);

    // Two repeats within the window: no longer new. Rhythm (110 - 100) / 2
    // = 5 days, raised to the 7-day floor: 10 days = 1.43 rhythms, active;
    // 11 days = 1.57 rhythms, at risk.
    let two_repeats = LifecycleInput {
        first_purchase_day: Some(100),
        last_purchase_day: Some(110),
        purchases: 3,
        p_alive: None,
    };
    assert_eq!(stage_on(&two_repeats, 120), LifecycleStage::Active);
    assert_eq!(stage_on(&two_repeats, 121), LifecycleStage::AtRisk);
}

#[test]
fn a_single_purchase_uses_the_population_rhythm() {
    let member = LifecycleInput {
        first_purchase_day: Some(0),
        last_purchase_day: Some(0),
        purchases: 1,
        p_alive: None,
    };
    // Default rhythm 90: active up to 135 days, at risk from 136.
    assert_eq!(stage_on(&member, 135), LifecycleStage::Active);
    assert_eq!(stage_on(&member, 136), LifecycleStage::AtRisk);
    let config = LifecycleConfig {
        default_rhythm_days: 30.0,
        ..LifecycleConfig::default()
    };
    let assessment = lifecycle_stage(&member, 136, &config).unwrap();
    assert_eq!(assessment.stage, LifecycleStage::Dormant);
    assert_eq!(
        assessment.rhythm.unwrap().source,
        RhythmSource::PopulationDefault
    );
}

#[test]
fn rhythm_is_the_mean_interval_with_a_floor() {
    let config = LifecycleConfig::default();
    let rhythm = purchase_rhythm(0, 100, 5, &config).unwrap().unwrap();
    assert_eq!(rhythm.days, 25.0);
    assert_eq!(rhythm.source, RhythmSource::Personal);
    let rhythm = purchase_rhythm(0, 0, 3, &config).unwrap().unwrap();
    assert_eq!(rhythm.days, 7.0);
    assert_eq!(rhythm.source, RhythmSource::Floor);
    assert_eq!(purchase_rhythm(0, 0, 0, &config).unwrap(), None);
    assert!(purchase_rhythm(10, 0, 3, &config).is_err());
    assert!(purchase_rhythm(0, 10, 1, &config).is_err());
}

#[test]
fn median_rhythm_of_the_repeat_buyers() {
    let member = |first, last, purchases| LifecycleInput {
        first_purchase_day: Some(first),
        last_purchase_day: Some(last),
        purchases,
        p_alive: None,
    };
    // Rhythms 10, 30, 50 (the single purchase does not count): median 30.
    let members = [
        member(0, 20, 3),
        member(0, 30, 2),
        member(5, 5, 1),
        member(0, 100, 3),
    ];
    assert_eq!(median_rhythm_days(&members), Some(30.0));
    // Add 70: median of 10, 30, 50, 70 is 40.
    let mut more = members.to_vec();
    more.push(member(0, 70, 2));
    assert_eq!(median_rhythm_days(&more), Some(40.0));
    assert_eq!(median_rhythm_days(&[member(5, 5, 1)]), None);
}

#[test]
fn inconsistent_or_future_purchases_are_refused() {
    let config = LifecycleConfig::default();
    let count_without_days = LifecycleInput {
        first_purchase_day: None,
        last_purchase_day: None,
        purchases: 2,
        p_alive: None,
    };
    assert!(matches!(
        lifecycle_stage(&count_without_days, 10, &config),
        Err(LifecycleError::InconsistentHistory { .. })
    ));
    assert_eq!(
        lifecycle_stage(&every_ten_days(None), 99, &config).unwrap_err(),
        LifecycleError::PurchaseAfterAsOf {
            last_purchase_day: 100,
            as_of: 99
        }
    );
    for p_alive in [-0.1, 1.1, f64::NAN] {
        assert!(matches!(
            lifecycle_stage(&every_ten_days(Some(p_alive)), 100, &config),
            Err(LifecycleError::InvalidProbability { .. })
        ));
    }
    let error = lifecycle_stages(
        &[every_ten_days(None), every_ten_days(Some(2.0))],
        100,
        &config,
    )
    .unwrap_err();
    assert_eq!(
        error,
        LifecycleError::MemberRejected {
            index: 1,
            error: Box::new(LifecycleError::InvalidProbability { p_alive: 2.0 })
        }
    );
    let stages = lifecycle_stages(&[every_ten_days(None)], 131, &config).unwrap();
    assert_eq!(stages[0].stage, LifecycleStage::Dormant);
}

#[test]
fn thresholds_out_of_order_are_refused() {
    let config = LifecycleConfig {
        at_risk_max_rhythms: 1.0,
        ..LifecycleConfig::default()
    };
    assert!(matches!(
        config.validate(),
        Err(LifecycleError::InvalidConfig { .. })
    ));
    let config = LifecycleConfig {
        dormant_min_p_alive: 0.6,
        ..LifecycleConfig::default()
    };
    assert!(config.validate().is_err());
    assert!(LifecycleConfig::default().validate().is_ok());
}

#[test]
fn a_changed_event_is_due_only_when_the_stage_changes() {
    assert_eq!(
        lifecycle_change_event(Some(LifecycleStage::Active), LifecycleStage::Active),
        None
    );
    assert_eq!(
        lifecycle_change_event(Some(LifecycleStage::Active), LifecycleStage::AtRisk),
        Some(LifecycleChange {
            from: Some(LifecycleStage::Active),
            to: LifecycleStage::AtRisk
        })
    );
    assert_eq!(
        lifecycle_change_event(None, LifecycleStage::Prospect),
        Some(LifecycleChange {
            from: None,
            to: LifecycleStage::Prospect
        })
    );
}

#[test]
fn stage_names_are_stable_snake_case() {
    let names: Vec<&str> = LifecycleStage::ALL.iter().map(|s| s.name()).collect();
    assert_eq!(
        names,
        ["prospect", "new", "active", "at_risk", "dormant", "churned"]
    );
}
