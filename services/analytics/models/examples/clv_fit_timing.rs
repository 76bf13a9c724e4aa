//! Times the CLV fits: CDNOW fitted N times, then a synthetic population of
//! 1,000,000 customers (summaries, compression, BG/NBD and Gamma-Gamma).
//!
//! cargo run --release -p laurel-analytics-models --example clv_fit_timing -- [N] [--dump FILE]
//!
//! `--dump FILE` writes the synthetic summaries as CSV (frequency, recency
//! and age in weeks, monetary in dollars) to time another implementation on
//! the same population.

#[path = "../tests/clv_support/mod.rs"]
mod clv_support;

use std::io::Write;
use std::time::Instant;

use laurel_analytics_models::clv::{
    CustomerSummary, Purchase, compress_spend, compress_triples, fit_bg_nbd, fit_gamma_gamma,
    summarize_customer,
};

/// Synthetic customers.
const POPULATION: usize = 1_000_000;
/// Calibration period of the synthetic population, in days (52 weeks).
const CALIBRATION_DAYS: i32 = 364;
/// Customers are acquired uniformly over the first 12 weeks, as CDNOW's cohort.
const ACQUISITION_DAYS: u64 = 84;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut repetitions: u32 = 100;
    let mut dump: Option<String> = None;
    while let Some(arg) = args.next() {
        if arg == "--dump" {
            dump = args.next();
        } else {
            repetitions = arg.parse().expect("N: repetitions of the CDNOW fit");
        }
    }
    time_cdnow(repetitions);
    time_synthetic(dump.as_deref());
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1_000.0
}

fn time_cdnow(repetitions: u32) {
    let customers = clv_support::load_cdnow();
    let end = clv_support::cdnow_calibration_end();
    let started = Instant::now();
    let mut summaries = Vec::new();
    for _ in 0..repetitions {
        summaries = customers
            .iter()
            .map(|purchases| summarize_customer(purchases, end).expect("summary"))
            .collect::<Vec<_>>();
    }
    let summary_ms = ms(started) / f64::from(repetitions);

    let started = Instant::now();
    let mut triples = Vec::new();
    let mut spends = Vec::new();
    for _ in 0..repetitions {
        triples = compress_triples(&summaries);
        spends = compress_spend(&summaries);
    }
    let compression_ms = ms(started) / f64::from(repetitions);

    let started = Instant::now();
    let mut bg = None;
    for _ in 0..repetitions {
        bg = Some(fit_bg_nbd(&triples).expect("BG/NBD fit"));
    }
    let bg_ms = ms(started) / f64::from(repetitions);
    let started = Instant::now();
    let mut gg = None;
    for _ in 0..repetitions {
        gg = Some(fit_gamma_gamma(&spends).expect("Gamma-Gamma fit"));
    }
    let gg_ms = ms(started) / f64::from(repetitions);
    let (bg, gg) = (bg.expect("ran"), gg.expect("ran"));

    println!(
        "CDNOW: {} customers, {} unique (x, t_x, T), {} fits each",
        summaries.len(),
        triples.len(),
        repetitions
    );
    println!("  summaries      {summary_ms:8.3} ms");
    println!("  compression    {compression_ms:8.3} ms");
    println!(
        "  BG/NBD fit     {bg_ms:8.3} ms  ({} iterations) r={:.4} alpha={:.4} a={:.4} b={:.4} LL={:.2}",
        bg.iterations, bg.params.r, bg.params.alpha, bg.params.a, bg.params.b, bg.log_likelihood
    );
    println!(
        "  Gamma-Gamma    {gg_ms:8.3} ms  ({} iterations) p={:.4} q={:.4} gamma={:.4} dollars",
        gg.iterations,
        gg.params.p,
        gg.params.q,
        gg.params.gamma / 100.0
    );
}

/// SplitMix64: a small deterministic generator, enough for test data.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform on (0, 1).
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        (-2.0 * self.uniform().ln()).sqrt() * (std::f64::consts::TAU * self.uniform()).cos()
    }

    /// Gamma(shape, rate) by Marsaglia and Tsang (2000).
    fn gamma(&mut self, shape: f64, rate: f64) -> f64 {
        if shape < 1.0 {
            let boost = self.uniform().powf(1.0 / shape);
            return self.gamma(shape + 1.0, rate) * boost;
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v > 0.0 && self.uniform().ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v / rate;
            }
        }
    }

    fn beta(&mut self, a: f64, b: f64) -> f64 {
        let x = self.gamma(a, 1.0);
        x / (x + self.gamma(b, 1.0))
    }
}

/// Purchases of a population drawn from BG/NBD (CDNOW's published
/// parameters) with Gamma-Gamma spend (likewise, in dollars), flattened,
/// with each customer's range.
fn synthetic_purchases(rng: &mut SplitMix64) -> (Vec<Purchase>, Vec<std::ops::Range<usize>>) {
    let (r, alpha, a, b) = (0.243, 4.414, 0.793, 2.426);
    let (p, q, gamma) = (6.25, 3.74, 15.44);
    let mut purchases = Vec::with_capacity(POPULATION * 3);
    let mut ranges = Vec::with_capacity(POPULATION);
    for _ in 0..POPULATION {
        let start = purchases.len();
        let first_day = i32::try_from(rng.next_u64() % ACQUISITION_DAYS).expect("small");
        let rate_per_week = rng.gamma(r, alpha);
        let dropout = rng.beta(a, b);
        let spend_rate = rng.gamma(q, gamma);
        let spend = |rng: &mut SplitMix64| (rng.gamma(p, spend_rate) * 100.0).round() as i64;
        purchases.push(Purchase {
            day: first_day,
            amount_minor: spend(rng),
        });
        // BG/NBD: the first purchase opens the account; each repeat
        // purchase may be the last, with probability `dropout`.
        let mut weeks = 0.0;
        loop {
            weeks += -rng.uniform().ln() / rate_per_week;
            let day = f64::from(first_day) + weeks * 7.0;
            if day >= f64::from(CALIBRATION_DAYS) {
                break;
            }
            purchases.push(Purchase {
                day: day as i32,
                amount_minor: spend(rng),
            });
            if rng.uniform() < dropout {
                break;
            }
        }
        ranges.push(start..purchases.len());
    }
    (purchases, ranges)
}

fn time_synthetic(dump: Option<&str>) {
    let started = Instant::now();
    let mut rng = SplitMix64(20_050_101);
    let (purchases, ranges) = synthetic_purchases(&mut rng);
    let generation_ms = ms(started);

    let end = CALIBRATION_DAYS - 1;
    let started = Instant::now();
    let summaries: Vec<CustomerSummary> = ranges
        .iter()
        .map(|range| summarize_customer(&purchases[range.clone()], end).expect("summary"))
        .collect();
    let summary_ms = ms(started);

    let started = Instant::now();
    let triples = compress_triples(&summaries);
    let triples_ms = ms(started);
    let started = Instant::now();
    let spends = compress_spend(&summaries);
    let spends_ms = ms(started);

    let started = Instant::now();
    let bg = fit_bg_nbd(&triples).expect("BG/NBD fit");
    let bg_ms = ms(started);
    let started = Instant::now();
    let gg = fit_gamma_gamma(&spends).expect("Gamma-Gamma fit");
    let gg_ms = ms(started);

    println!(
        "Synthetic: {POPULATION} customers, {} purchases (generated in {generation_ms:.0} ms)",
        purchases.len()
    );
    println!("  summaries      {summary_ms:8.1} ms");
    println!(
        "  compression    {triples_ms:8.1} ms -> {} unique (x, t_x, T); {spends_ms:.1} ms -> {} unique (x, spend)",
        triples.len(),
        spends.len()
    );
    println!(
        "  BG/NBD fit     {bg_ms:8.1} ms  ({} iterations) r={:.4} alpha={:.4} a={:.4} b={:.4}  (drawn from 0.243, 4.414, 0.793, 2.426)",
        bg.iterations, bg.params.r, bg.params.alpha, bg.params.a, bg.params.b
    );
    println!(
        "  Gamma-Gamma    {gg_ms:8.1} ms  ({} iterations, {} customers) p={:.4} q={:.4} gamma={:.4} dollars  (drawn from 6.25, 3.74, 15.44)",
        gg.iterations,
        gg.customers,
        gg.params.p,
        gg.params.q,
        gg.params.gamma / 100.0
    );
    println!(
        "  total          {:8.1} ms (summaries + compression + both fits)",
        summary_ms + triples_ms + spends_ms + bg_ms + gg_ms
    );

    if let Some(path) = dump {
        let file = std::fs::File::create(path).expect("dump file");
        let mut out = std::io::BufWriter::new(file);
        writeln!(out, "frequency,recency,T,monetary_value").expect("write");
        for s in &summaries {
            writeln!(
                out,
                "{},{},{},{}",
                s.frequency,
                s.recency_weeks(),
                s.age_weeks(),
                s.monetary_minor() / 100.0
            )
            .expect("write");
        }
        println!("  wrote {path}");
    }
}
