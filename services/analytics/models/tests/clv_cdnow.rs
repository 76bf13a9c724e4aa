//! The BG/NBD and Gamma-Gamma fits on the CDNOW sample against the
//! parameters published by Fader, Hardie and Lee (2005).

mod clv_support;

use laurel_analytics_models::clv::{
    BgNbdParams, CustomerSummary, DiscountedHorizon, GammaGammaParams, WeightedSpend,
    WeightedTriple, compress_spend, compress_triples, fit_bg_nbd, fit_gamma_gamma, predictive_clv,
    summarize_customer,
};

fn cdnow_summaries() -> Vec<CustomerSummary> {
    let end = clv_support::cdnow_calibration_end();
    clv_support::load_cdnow()
        .iter()
        .map(|purchases| {
            summarize_customer(purchases, end).expect("every CDNOW customer bought in calibration")
        })
        .collect()
}

/// Equal to `expected` to three significant figures: |a - e| < 0.5 in the
/// third significant digit of `expected`.
fn assert_three_significant_figures(name: &str, actual: f64, expected: f64) {
    let unit = 10f64.powf(expected.abs().log10().floor() - 2.0);
    assert!(
        (actual - expected).abs() < 0.5 * unit,
        "{name}: fitted {actual}, published {expected}"
    );
}

#[test]
fn cdnow_summary_matches_the_published_calibration_totals() {
    let summaries = cdnow_summaries();
    assert_eq!(summaries.len(), 2357);
    // Repeat purchase days in the calibration period, as in the BG/NBD paper.
    let repeat_days: u64 = summaries.iter().map(|s| u64::from(s.frequency)).sum();
    assert_eq!(repeat_days, 2457);
    let with_repeat = summaries.iter().filter(|s| s.frequency > 0).count();
    assert_eq!(with_repeat, 946);
    // Everyone's first purchase is in the first quarter of 1997: T is at most
    // 272 days (1997-01-01 to 1997-09-30) and at least 182 (from 1997-03-31).
    assert!(summaries.iter().all(|s| (182..=272).contains(&s.age_days)));
}

#[test]
fn bg_nbd_fit_on_cdnow_matches_the_published_parameters() {
    let summaries = cdnow_summaries();
    let triples = compress_triples(&summaries);
    assert!(triples.len() < summaries.len());
    let fit = fit_bg_nbd(&triples).expect("fit");
    assert_eq!(fit.customers, 2357);
    assert_three_significant_figures("r", fit.params.r, 0.243);
    assert_three_significant_figures("alpha", fit.params.alpha, 4.414);
    assert_three_significant_figures("a", fit.params.a, 0.793);
    assert_three_significant_figures("b", fit.params.b, 2.426);
    // The paper reports a log-likelihood of -9582.4 at its estimates.
    assert!(
        (fit.log_likelihood - (-9582.4)).abs() < 0.1,
        "{}",
        fit.log_likelihood
    );
}

#[test]
fn bg_nbd_fit_on_compressed_cdnow_equals_the_fit_on_every_customer() {
    let summaries = cdnow_summaries();
    let compressed = fit_bg_nbd(&compress_triples(&summaries)).expect("compressed fit");
    let one_row_each: Vec<WeightedTriple> = summaries
        .iter()
        .map(|s| WeightedTriple {
            frequency: s.frequency,
            recency_days: s.recency_days,
            age_days: s.age_days,
            count: 1,
        })
        .collect();
    let expanded = fit_bg_nbd(&one_row_each).expect("expanded fit");
    assert!((compressed.log_likelihood - expanded.log_likelihood).abs() < 1e-6);
    let (c, e) = (compressed.params, expanded.params);
    for (name, left, right) in [
        ("r", c.r, e.r),
        ("alpha", c.alpha, e.alpha),
        ("a", c.a, e.a),
        ("b", c.b, e.b),
    ] {
        assert!(
            (left / right - 1.0).abs() < 1e-6,
            "{name}: {left} vs {right}"
        );
    }
}

#[test]
fn gamma_gamma_fit_on_cdnow_matches_the_published_parameters_in_dollars() {
    let summaries = cdnow_summaries();
    let fit = fit_gamma_gamma(&compress_spend(&summaries)).expect("fit");
    assert_eq!(fit.customers, 946);
    assert_eq!(fit.skipped_no_repeat, 2357 - 946);
    assert_eq!(fit.skipped_zero_spend, 0);
    assert_three_significant_figures("p", fit.params.p, 6.25);
    assert_three_significant_figures("q", fit.params.q, 3.74);
    // Fitted in cents: gamma is 100 times the published 15.44 dollars.
    assert_three_significant_figures("gamma (dollars)", fit.params.gamma / 100.0, 15.44);
}

#[test]
fn gamma_gamma_in_cents_and_in_dollars_differ_only_by_the_scale_of_gamma() {
    let summaries = cdnow_summaries();
    let cents = fit_gamma_gamma(&compress_spend(&summaries)).expect("fit in cents");
    // The same spends in a unit 100 times smaller (hundredths of a cent).
    let scaled: Vec<WeightedSpend> = compress_spend(&summaries)
        .into_iter()
        .map(|s| WeightedSpend {
            repeat_spend_minor: s.repeat_spend_minor * 100,
            ..s
        })
        .collect();
    let hundredths = fit_gamma_gamma(&scaled).expect("fit in hundredths of cents");
    assert!((hundredths.params.p / cents.params.p - 1.0).abs() < 1e-5);
    assert!((hundredths.params.q / cents.params.q - 1.0).abs() < 1e-5);
    assert!((hundredths.params.gamma / cents.params.gamma / 100.0 - 1.0).abs() < 1e-5);
}

#[test]
fn cdnow_customer_1516_expects_the_papers_purchases_in_the_next_39_weeks() {
    // Section 5 of the BG/NBD paper: x = 2, t_x = 30.43, T = 38.86 weeks
    // gives 1.226 expected purchases in the following 39 weeks.
    let expected = published_bg_nbd()
        .conditional_expected_purchases(39.0, 2, 30.43, 38.86)
        .unwrap();
    assert!((expected - 1.226).abs() < 0.0005, "{expected}");
}

fn published_bg_nbd() -> BgNbdParams {
    BgNbdParams {
        r: 0.243,
        alpha: 4.414,
        a: 0.793,
        b: 2.426,
    }
}

fn assert_relative(name: &str, actual: f64, expected: f64, tolerance: f64) {
    let relative = ((actual - expected) / expected).abs();
    assert!(
        relative < tolerance,
        "{name}: {actual} vs {expected} (relative {relative:e})"
    );
}

// The reference values below were computed with Python lifetimes 0.11.3
// (BetaGeoFitter, GammaGammaFitter; scipy's hyp2f1) with its parameters set
// to the published ones: an independent implementation of the same formulas.

#[test]
fn bg_nbd_predictions_match_lifetimes() {
    let params = published_bg_nbd();
    // (x, t_x, T, P(alive), E[Y(39)], E[Y(260)])
    let cases = [
        (0, 0.0, 38.86, 1.0, 0.195098052011254, 0.91554908245616),
        (
            2,
            30.43,
            38.86,
            0.726578570080673,
            1.22602817476714,
            4.93505696949234,
        ),
        (
            7,
            35.0,
            37.0,
            0.881293943776357,
            4.74938936813525,
            17.3965577293128,
        ),
        (
            25,
            38.0,
            38.5,
            0.961225348328126,
            17.0427330059321,
            60.482205037134,
        ),
        (
            3,
            5.0,
            38.0,
            0.0406133814792747,
            0.0991779879241262,
            0.385228950064504,
        ),
    ];
    for (x, recency, age, alive, next_39, next_260) in cases {
        let label = format!("x={x} t_x={recency} T={age}");
        assert_relative(
            &label,
            params.probability_alive(x, recency, age).unwrap(),
            alive,
            1e-12,
        );
        let e39 = params
            .conditional_expected_purchases(39.0, x, recency, age)
            .unwrap();
        assert_relative(&label, e39, next_39, 1e-10);
        let e260 = params
            .conditional_expected_purchases(260.0, x, recency, age)
            .unwrap();
        assert_relative(&label, e260, next_260, 1e-10);
    }
    for (weeks, expected) in [
        (1.0, 0.0532678911716563),
        (39.0, 1.1967231933208),
        (78.0, 1.86051905794275),
        (520.0, 4.97461786184956),
    ] {
        assert_relative(
            "E[X(t)]",
            params.expected_purchases(weeks).unwrap(),
            expected,
            1e-10,
        );
    }
}

#[test]
fn predictive_clv_matches_lifetimes_customer_lifetime_value() {
    let bg = published_bg_nbd();
    // Gamma-Gamma in cents: gamma 15.44 dollars = 1544 cents, so CLVs in
    // cents are 100 times lifetimes' dollar figures.
    let gg = GammaGammaParams {
        p: 6.25,
        q: 3.74,
        gamma: 1544.0,
    };
    let customers = [
        (0, 0, 272, 0),
        (2, 213, 272, 9_100),
        (7, 245, 259, 14_000),
        (25, 266, 270, 83_125),
    ];
    // (months, monthly discount rate, lifetimes' CLV in dollars per customer)
    let references = [
        (
            12,
            0.01,
            [8.36949126349, 64.2316659484, 117.818593963, 668.741305887],
        ),
        (
            36,
            0.0,
            [22.0968284498, 155.340548787, 269.313348257, 1499.84674489],
        ),
        (
            1,
            0.05,
            [0.806239024784, 6.64156246779, 12.9028704503, 74.8772828929],
        ),
    ];
    for (months, rate, dollars) in references {
        for ((frequency, recency_days, age_days, repeat_spend_minor), expected) in
            customers.iter().zip(dollars)
        {
            let customer = CustomerSummary {
                frequency: *frequency,
                recency_days: *recency_days,
                age_days: *age_days,
                repeat_spend_minor: *repeat_spend_minor,
            };
            let clv = predictive_clv(
                &bg,
                &gg,
                &customer,
                &DiscountedHorizon::months(months, rate),
            )
            .unwrap();
            assert_relative(
                &format!("{customer:?} {months} months"),
                clv,
                expected * 100.0,
                1e-9,
            );
        }
    }
}

#[test]
fn cdnow_clv_grows_with_the_horizon() {
    let summaries = cdnow_summaries();
    let bg = fit_bg_nbd(&compress_triples(&summaries))
        .expect("bg/nbd")
        .params;
    let gg = fit_gamma_gamma(&compress_spend(&summaries))
        .expect("gamma-gamma")
        .params;
    for customer in summaries.iter().take(200) {
        let mut previous = 0.0;
        for months in [0, 1, 3, 6, 12, 24, 60] {
            let clv = predictive_clv(&bg, &gg, customer, &DiscountedHorizon::months(months, 0.01))
                .unwrap();
            assert!(
                clv >= previous,
                "{customer:?}: {months} months {clv} < {previous}"
            );
            previous = clv;
        }
        assert!(previous > 0.0);
    }
}
