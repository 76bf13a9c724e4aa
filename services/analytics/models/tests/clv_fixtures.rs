//! Hand-computed fixtures for the CLV models: summaries, compression,
//! likelihoods, predictions, degenerate populations and historical CLV.

use laurel_analytics_models::clv::{
    BgNbdParams, ClvError, CustomerSummary, DiscountedHorizon, GammaGammaParams,
    HistoricalClvConfig, HistoricalMember, Lifespan, Purchase, WeightedSpend, WeightedTriple,
    compress_spend, compress_triples, fit_bg_nbd, fit_gamma_gamma, historical_clv, predictive_clv,
    summarize_customer,
};

fn purchase(day: i32, amount_minor: i64) -> Purchase {
    Purchase { day, amount_minor }
}

fn summary(
    frequency: u32,
    recency_days: u32,
    age_days: u32,
    repeat_spend_minor: i64,
) -> CustomerSummary {
    CustomerSummary {
        frequency,
        recency_days,
        age_days,
        repeat_spend_minor,
    }
}

fn unit_params() -> BgNbdParams {
    BgNbdParams {
        r: 1.0,
        alpha: 1.0,
        a: 1.0,
        b: 1.0,
    }
}

fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() <= 1e-12 * expected.abs().max(1.0)
}

#[test]
fn summary_counts_distinct_days_and_sums_each_days_spend() {
    // Unsorted. Day 100: two purchases (the first day, left out of m).
    // Day 114: two purchases (one day, 30 + 20). Day 128: one purchase.
    let purchases = [
        purchase(114, 3_000),
        purchase(100, 1_000),
        purchase(128, 7_000),
        purchase(100, 500),
        purchase(114, 2_000),
    ];
    let s = summarize_customer(&purchases, 135).unwrap();
    assert_eq!(s, summary(2, 28, 35, 12_000));
    assert_eq!(s.recency_weeks(), 4.0);
    assert_eq!(s.age_weeks(), 5.0);
    // m = (5,000 + 7,000) / 2 days
    assert_eq!(s.monetary_minor(), 6_000.0);
}

#[test]
fn summary_ignores_purchases_after_the_end_day_and_counts_the_end_day() {
    let purchases = [
        purchase(10, 100),
        purchase(20, 200),
        purchase(21, 999),
        purchase(40, 999),
    ];
    let s = summarize_customer(&purchases, 20).unwrap();
    assert_eq!(s, summary(1, 10, 10, 200));
}

#[test]
fn zero_value_purchases_still_make_purchase_days() {
    let purchases = [purchase(0, 0), purchase(7, 0), purchase(14, 500)];
    let s = summarize_customer(&purchases, 21).unwrap();
    assert_eq!(s, summary(2, 14, 21, 500));
    assert_eq!(s.monetary_minor(), 250.0);
    let only_zero = summarize_customer(&[purchase(0, 0), purchase(3, 0)], 21).unwrap();
    assert_eq!(only_zero, summary(1, 3, 21, 0));
    assert_eq!(only_zero.monetary_minor(), 0.0);
}

#[test]
fn a_single_purchase_day_has_no_repeat_and_no_monetary_value() {
    let s = summarize_customer(&[purchase(5, 100), purchase(5, 200)], 12).unwrap();
    assert_eq!(s, summary(0, 0, 7, 0));
    assert_eq!(s.monetary_minor(), 0.0);
}

#[test]
fn summary_refuses_no_purchase_in_calibration_negative_amounts_and_overflow() {
    assert_eq!(
        summarize_customer(&[], 10),
        Err(ClvError::NoPurchaseInCalibration)
    );
    assert_eq!(
        summarize_customer(&[purchase(11, 100)], 10),
        Err(ClvError::NoPurchaseInCalibration)
    );
    assert_eq!(
        summarize_customer(&[purchase(1, 100), purchase(2, -5)], 10),
        Err(ClvError::NegativeAmount {
            day: 2,
            amount_minor: -5
        })
    );
    assert_eq!(
        summarize_customer(&[purchase(1, 0), purchase(2, i64::MAX), purchase(3, 1)], 10),
        Err(ClvError::Overflow)
    );
    // A negative amount after the end day is ignored like the rest.
    assert!(summarize_customer(&[purchase(1, 100), purchase(12, -5)], 10).is_ok());
}

#[test]
fn compression_counts_equal_histories_once() {
    let summaries = [
        summary(1, 7, 14, 100),
        summary(0, 0, 14, 0),
        summary(1, 7, 14, 300),
        summary(0, 0, 14, 0),
        summary(1, 7, 21, 100),
    ];
    let triples = compress_triples(&summaries);
    let expected = [(0, 0, 14, 2), (1, 7, 14, 2), (1, 7, 21, 1)].map(
        |(frequency, recency_days, age_days, count)| WeightedTriple {
            frequency,
            recency_days,
            age_days,
            count,
        },
    );
    assert_eq!(triples, expected);
    let spends = compress_spend(&summaries);
    let expected =
        [(0, 0, 2), (1, 100, 2), (1, 300, 1)].map(|(frequency, repeat_spend_minor, count)| {
            WeightedSpend {
                frequency,
                repeat_spend_minor,
                count,
            }
        });
    assert_eq!(spends, expected);
}

#[test]
fn bg_nbd_likelihood_and_probability_alive_match_hand_computation() {
    let params = unit_params();
    // x = 0, T = 1 week: L = (α/(α+T))^r = 1/2.
    assert!(close(
        params.customer_log_likelihood(0, 0.0, 1.0).unwrap(),
        0.5f64.ln()
    ));
    // x = 1, t_x = 0, T = 1 with r = α = a = b = 1:
    // L = B(1,2)/B(1,1) · 1/(1+T)^2 + B(2,1)/B(1,1) · 1/(1+t_x)^2 = 1/8 + 1/2.
    assert!(close(
        params.customer_log_likelihood(1, 0.0, 1.0).unwrap(),
        0.625f64.ln()
    ));
    // P(alive) = 1 / (1 + a/(b+x-1) ((α+T)/(α+t_x))^(r+x)) = 1 / (1 + 4).
    assert!(close(params.probability_alive(1, 0.0, 1.0).unwrap(), 0.2));
}

#[test]
fn probability_alive_is_one_without_repeat_purchases() {
    for params in [
        unit_params(),
        BgNbdParams {
            r: 0.243,
            alpha: 4.414,
            a: 0.793,
            b: 2.426,
        },
        BgNbdParams {
            r: 3.0,
            alpha: 0.1,
            a: 20.0,
            b: 0.05,
        },
    ] {
        for age in [0.0, 1.0, 38.86, 500.0] {
            assert_eq!(params.probability_alive(0, 0.0, age).unwrap(), 1.0);
        }
        // and a repeat buyer whose last purchase is at T is likelier alive
        // than one who has been silent since.
        let recent = params.probability_alive(3, 30.0, 30.0).unwrap();
        let silent = params.probability_alive(3, 5.0, 30.0).unwrap();
        assert!(recent > silent && silent > 0.0 && recent < 1.0);
    }
}

#[test]
fn compressed_triples_give_the_log_likelihood_of_the_expanded_list() {
    let summaries: Vec<CustomerSummary> = (0u32..300)
        .map(|i| {
            let frequency = i % 4;
            let recency = if frequency == 0 { 0 } else { 7 * (1 + i % 5) };
            summary(frequency, recency, 35 + 7 * (i % 3), 0)
        })
        .collect();
    let compressed = compress_triples(&summaries);
    assert_eq!(compressed.iter().map(|t| t.count).sum::<u64>(), 300);
    assert!(compressed.len() < 60);
    let expanded: Vec<WeightedTriple> = summaries
        .iter()
        .map(|s| WeightedTriple {
            frequency: s.frequency,
            recency_days: s.recency_days,
            age_days: s.age_days,
            count: 1,
        })
        .collect();
    let params = BgNbdParams {
        r: 0.5,
        alpha: 3.0,
        a: 0.8,
        b: 2.5,
    };
    let weighted = params.log_likelihood(&compressed).unwrap();
    let unweighted = params.log_likelihood(&expanded).unwrap();
    assert!(
        (weighted - unweighted).abs() < 1e-9 * unweighted.abs(),
        "{weighted} vs {unweighted}"
    );
    let by_customer: f64 = summaries
        .iter()
        .map(|s| {
            params
                .customer_log_likelihood(s.frequency, s.recency_weeks(), s.age_weeks())
                .unwrap()
        })
        .sum();
    assert!((weighted - by_customer).abs() < 1e-9 * by_customer.abs());
    // This population has no heterogeneity in dropout: the maximum lies
    // where a and b grow together without bound. The fit stops there with
    // finite parameters whose predictions stay finite.
    let fit = fit_bg_nbd(&compressed).unwrap();
    assert!(fit.params.a > 1e3 && fit.params.b > 1e3, "{fit:?}");
    let expected = fit
        .params
        .conditional_expected_purchases(52.0, 3, 5.0, 7.0)
        .unwrap();
    assert!(expected.is_finite() && expected > 0.0);
}

#[test]
fn compressed_spends_give_the_log_likelihood_of_the_expanded_list() {
    let summaries: Vec<CustomerSummary> = (0i64..200)
        .map(|i| {
            let frequency = (i % 3) as u32 + 1;
            summary(
                frequency,
                7,
                14,
                i64::from(frequency) * (1_000 + 250 * (i % 4)),
            )
        })
        .collect();
    let compressed = compress_spend(&summaries);
    assert_eq!(compressed.len(), 12);
    let expanded: Vec<WeightedSpend> = summaries
        .iter()
        .map(|s| WeightedSpend {
            frequency: s.frequency,
            repeat_spend_minor: s.repeat_spend_minor,
            count: 1,
        })
        .collect();
    let params = GammaGammaParams {
        p: 4.0,
        q: 3.0,
        gamma: 900.0,
    };
    let weighted = params.log_likelihood(&compressed).unwrap();
    let unweighted = params.log_likelihood(&expanded).unwrap();
    assert!(
        (weighted - unweighted).abs() < 1e-9 * unweighted.abs(),
        "{weighted} vs {unweighted}"
    );
}

#[test]
fn expectations_are_zero_over_no_time_and_grow_with_it() {
    let params = BgNbdParams {
        r: 0.243,
        alpha: 4.414,
        a: 0.793,
        b: 2.426,
    };
    assert_eq!(params.expected_purchases(0.0).unwrap(), 0.0);
    assert_eq!(
        params
            .conditional_expected_purchases(0.0, 3, 10.0, 20.0)
            .unwrap(),
        0.0
    );
    let mut previous = 0.0;
    for weeks in [1.0, 10.0, 100.0, 1_000.0, 10_000.0] {
        let next = params
            .conditional_expected_purchases(weeks, 3, 10.0, 20.0)
            .unwrap();
        assert!(next > previous);
        previous = next;
    }
}

#[test]
fn conditional_expected_spend_matches_hand_computation() {
    let params = GammaGammaParams {
        p: 2.0,
        q: 3.0,
        gamma: 10.0,
    };
    // (γ + m x) p / (p x + q - 1) = (10 + 10) 2 / 6
    assert!(close(
        params.conditional_expected_spend(2, 5.0).unwrap(),
        40.0 / 6.0
    ));
    // x = 0: the population mean γ p / (q - 1) = 10.
    assert!(close(
        params.conditional_expected_spend(0, 0.0).unwrap(),
        10.0
    ));
    let heavy_tailed = GammaGammaParams { q: 0.5, ..params };
    assert!(matches!(
        heavy_tailed.conditional_expected_spend(0, 0.0),
        Err(ClvError::InvalidParameters(_))
    ));
}

#[test]
fn predictive_clv_is_monotone_in_the_horizon_and_zero_without_one() {
    let bg = BgNbdParams {
        r: 0.243,
        alpha: 4.414,
        a: 0.793,
        b: 2.426,
    };
    let gg = GammaGammaParams {
        p: 6.25,
        q: 3.74,
        gamma: 1544.0,
    };
    for customer in [
        summary(0, 0, 200, 0),
        summary(4, 150, 210, 20_000),
        summary(12, 70, 270, 5_000),
    ] {
        assert_eq!(
            predictive_clv(&bg, &gg, &customer, &DiscountedHorizon::months(0, 0.01)).unwrap(),
            0.0
        );
        let mut previous = 0.0;
        for weeks in 1..=104 {
            let horizon = DiscountedHorizon::weeks(weeks, 0.002);
            let clv = predictive_clv(&bg, &gg, &customer, &horizon).unwrap();
            assert!(clv > previous, "{customer:?} at {weeks} weeks");
            previous = clv;
        }
    }
}

#[test]
fn predictive_clv_without_discount_is_expected_purchases_times_expected_spend() {
    let bg = unit_params();
    let bg = BgNbdParams { a: 0.5, ..bg };
    let gg = GammaGammaParams {
        p: 2.0,
        q: 3.0,
        gamma: 10.0,
    };
    let customer = summary(2, 7, 14, 10);
    let horizon = DiscountedHorizon {
        periods: 5,
        weeks_per_period: 2.0,
        discount_rate_per_period: 0.0,
    };
    let clv = predictive_clv(&bg, &gg, &customer, &horizon).unwrap();
    let purchases = bg
        .conditional_expected_purchases(10.0, 2, 1.0, 2.0)
        .unwrap();
    let spend = gg.conditional_expected_spend(2, 5.0).unwrap();
    assert!(close(clv, purchases * spend));
}

#[test]
fn degenerate_populations_are_typed_errors() {
    assert_eq!(fit_bg_nbd(&[]), Err(ClvError::EmptyPopulation));
    let nobody = [WeightedTriple {
        frequency: 3,
        recency_days: 7,
        age_days: 14,
        count: 0,
    }];
    assert_eq!(fit_bg_nbd(&nobody), Err(ClvError::EmptyPopulation));
    let no_repeat = compress_triples(&[summary(0, 0, 14, 0), summary(0, 0, 30, 0)]);
    assert_eq!(fit_bg_nbd(&no_repeat), Err(ClvError::NoRepeatPurchases));
    // Repeat purchases at the first day's time cannot come from a summary
    // and would make the likelihood unbounded.
    let impossible = [WeightedTriple {
        frequency: 2,
        recency_days: 0,
        age_days: 14,
        count: 1,
    }];
    assert!(matches!(
        fit_bg_nbd(&impossible),
        Err(ClvError::InvalidArgument(_))
    ));

    assert_eq!(fit_gamma_gamma(&[]), Err(ClvError::EmptyPopulation));
    let no_repeat = compress_spend(&[summary(0, 0, 14, 0)]);
    assert_eq!(
        fit_gamma_gamma(&no_repeat),
        Err(ClvError::NoRepeatPurchases)
    );
    let zero_spend = compress_spend(&[
        summary(0, 0, 14, 0),
        summary(2, 7, 14, 0),
        summary(1, 7, 14, 0),
    ]);
    assert_eq!(
        fit_gamma_gamma(&zero_spend),
        Err(ClvError::NoPositiveRepeatSpend {
            skipped_zero_spend: 2
        })
    );
}

#[test]
fn identical_spends_have_no_maximum_and_give_a_typed_error() {
    // Every customer's mean is 1,000: the Gamma-Gamma likelihood grows
    // without bound as the spend distribution concentrates on it.
    let summaries: Vec<CustomerSummary> = (0u32..50)
        .map(|i| summary(1 + i % 3, 7, 14, i64::from(1 + i % 3) * 1_000))
        .collect();
    assert!(matches!(
        fit_gamma_gamma(&compress_spend(&summaries)),
        Err(ClvError::FitFailed(_))
    ));
}

#[test]
fn gamma_gamma_skips_zero_spend_customers_and_says_so() {
    let mut summaries: Vec<CustomerSummary> = (0i64..60)
        .map(|i| summary(1 + (i % 3) as u32, 7, 14, (1 + i % 3) * (900 + 37 * i)))
        .collect();
    let with_spend = fit_gamma_gamma(&compress_spend(&summaries)).unwrap();
    summaries.push(summary(2, 7, 14, 0));
    summaries.push(summary(0, 0, 14, 0));
    summaries.push(summary(0, 0, 21, 0));
    let fit = fit_gamma_gamma(&compress_spend(&summaries)).unwrap();
    assert_eq!(
        (fit.customers, fit.skipped_zero_spend, fit.skipped_no_repeat),
        (60, 1, 2)
    );
    assert_eq!(fit.params, with_spend.params);
}

#[test]
fn invalid_parameters_and_arguments_are_errors_not_nan() {
    let bad = BgNbdParams {
        r: -1.0,
        ..unit_params()
    };
    assert!(matches!(
        bad.probability_alive(1, 0.0, 1.0),
        Err(ClvError::InvalidParameters(_))
    ));
    let nan = BgNbdParams {
        alpha: f64::NAN,
        ..unit_params()
    };
    assert!(nan.expected_purchases(1.0).is_err());
    let params = unit_params();
    assert!(params.probability_alive(1, 2.0, 1.0).is_err());
    assert!(
        params
            .conditional_expected_purchases(-1.0, 1, 0.0, 1.0)
            .is_err()
    );
    // a = 1 makes the paper's expectation 0/0: an error, not NaN.
    assert!(params.expected_purchases(4.0).is_err());
    let gg = GammaGammaParams {
        p: 1.0,
        q: 2.0,
        gamma: 1.0,
    };
    let customer = summary(1, 7, 14, 100);
    let bg = BgNbdParams { a: 0.5, ..params };
    let negative_rate = DiscountedHorizon {
        periods: 3,
        weeks_per_period: 1.0,
        discount_rate_per_period: -0.5,
    };
    assert!(predictive_clv(&bg, &gg, &customer, &negative_rate).is_err());
}

#[test]
fn historical_clv_per_member_and_segment_match_hand_computation() {
    let members = [
        HistoricalMember {
            segment: "gold",
            orders: 4,
            spend_minor: 40_000,
            churned: false,
        },
        HistoricalMember {
            segment: "gold",
            orders: 2,
            spend_minor: 10_000,
            churned: true,
        },
        HistoricalMember {
            segment: "basic",
            orders: 0,
            spend_minor: 0,
            churned: false,
        },
        HistoricalMember {
            segment: "basic",
            orders: 1,
            spend_minor: 3_000,
            churned: false,
        },
    ];
    // A window of half a year.
    let window_days = 183;
    let window_years = 183.0 / 365.25;
    let fixed = historical_clv(
        &members,
        &HistoricalClvConfig {
            window_days,
            lifespan: Lifespan::Years(3.0),
        },
    )
    .unwrap();
    let expected_members =
        [40_000.0, 10_000.0, 0.0, 3_000.0].map(|spend| spend / window_years * 3.0);
    for (actual, expected) in fixed.members.iter().zip(expected_members) {
        assert!(close(*actual, expected));
    }
    assert_eq!(
        fixed.segments.iter().map(|s| s.segment).collect::<Vec<_>>(),
        ["basic", "gold"]
    );
    let gold = &fixed.segments[1];
    // AOV 50,000 / 6; frequency 6 orders / 2 members / window years.
    assert!(close(gold.average_order_value_minor, 50_000.0 / 6.0));
    assert!(close(gold.orders_per_member_year, 3.0 / window_years));
    assert!(close(gold.clv_minor, 25_000.0 / window_years * 3.0));
    assert_eq!(gold.annual_churn_rate, None);

    let churn = historical_clv(
        &members,
        &HistoricalClvConfig {
            window_days,
            lifespan: Lifespan::FromChurn { default_years: 5.0 },
        },
    )
    .unwrap();
    let (basic, gold) = (&churn.segments[0], &churn.segments[1]);
    // Gold: half the members churned in half a year, about one a year:
    // churn rate 0.5 / window years, lifespan its inverse.
    let gold_rate = 0.5 / window_years;
    assert!(close(gold.annual_churn_rate.unwrap(), gold_rate));
    assert!(close(gold.lifespan_years, 1.0 / gold_rate));
    assert!(close(churn.members[0], 40_000.0 / window_years / gold_rate));
    // Basic: nobody churned, the default lifespan applies.
    assert_eq!(basic.annual_churn_rate, Some(0.0));
    assert_eq!(basic.lifespan_years, 5.0);
    assert!(close(basic.clv_minor, 1_500.0 / window_years * 5.0));
}

#[test]
fn historical_clv_refuses_bad_configuration_and_input() {
    let member = HistoricalMember {
        segment: 1u8,
        orders: 1,
        spend_minor: 100,
        churned: false,
    };
    let config = HistoricalClvConfig {
        window_days: 0,
        lifespan: Lifespan::Years(1.0),
    };
    assert!(historical_clv(std::slice::from_ref(&member), &config).is_err());
    let config = HistoricalClvConfig {
        window_days: 30,
        lifespan: Lifespan::Years(f64::INFINITY),
    };
    assert!(historical_clv(std::slice::from_ref(&member), &config).is_err());
    let config = HistoricalClvConfig {
        window_days: 30,
        lifespan: Lifespan::Years(1.0),
    };
    let refund = HistoricalMember {
        spend_minor: -1,
        ..member.clone()
    };
    assert!(historical_clv(&[refund], &config).is_err());
    let huge = HistoricalMember {
        spend_minor: i64::MAX,
        ..member
    };
    assert_eq!(
        historical_clv(&[huge.clone(), huge], &config),
        Err(ClvError::Overflow)
    );
    assert!(
        historical_clv::<u8>(&[], &config)
            .unwrap()
            .segments
            .is_empty()
    );
}
