//! The BG/NBD model of Fader, Hardie and Lee (2005), "Counting Your
//! Customers the Easy Way: An Alternative to the Pareto/NBD Model",
//! Marketing Science 24(2).
//!
//! While alive, a customer buys as a Poisson process with rate
//! λ ~ Gamma(r, α); after each repeat purchase (not the first) they drop
//! out with probability p ~ Beta(a, b). Time is in weeks.

use statrs::function::gamma::{digamma, ln_gamma};

use super::ClvError;
use super::hyp2f1::{Scaled, hyp2f1_scaled};
use super::optimize::{SmoothObjective, chunked_sum, minimize};
use super::summary::{DAYS_PER_WEEK, WeightedTriple};

/// BG/NBD parameters: purchase rate λ ~ Gamma(shape r, rate α) per week,
/// dropout probability after a repeat purchase p ~ Beta(a, b).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BgNbdParams {
    /// r: shape of the purchase-rate distribution.
    pub r: f64,
    /// α: rate (inverse scale, in weeks) of the purchase-rate distribution.
    pub alpha: f64,
    /// a: first shape of the dropout-probability distribution.
    pub a: f64,
    /// b: second shape of the dropout-probability distribution.
    pub b: f64,
}

/// A fitted BG/NBD model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BgNbdFit {
    /// The maximum-likelihood parameters.
    pub params: BgNbdParams,
    /// The weighted log-likelihood at the parameters (sum over customers).
    pub log_likelihood: f64,
    /// Customers the fit covered (sum of the counts).
    pub customers: u64,
    /// L-BFGS iterations taken.
    pub iterations: u64,
}

/// Fits BG/NBD by maximum likelihood over compressed histories.
///
/// Optimises ln r, ln α, ln a, ln b with L-BFGS and the analytic gradient,
/// from r = a = b = 1 and α = the mean age in weeks. Rows with a count of 0
/// are ignored. Fails on an empty population, on one where nobody made a
/// repeat purchase (the dropout process is then not identified), on a
/// history no summary can have (t_x > T, or t_x = 0 with x > 0), and when
/// the optimiser does not converge.
///
/// Where the likelihood's supremum lies at the edge of the parameter space
/// (a tiny or perfectly regular population: say a and b growing together
/// when everyone has the same dropout probability) the fit stops on the
/// flat ridge with very large or very small but finite parameters, whose
/// predictions remain finite.
pub fn fit_bg_nbd(triples: &[WeightedTriple]) -> Result<BgNbdFit, ClvError> {
    let data = FitData::new(triples)?;
    let start = vec![0.0, data.mean_age_weeks.max(1.0).ln(), 0.0, 0.0];
    let customers = data.customers;
    let minimum = minimize(&data, start)?;
    let params = BgNbdParams::from_log(&minimum.theta);
    params.check()?;
    Ok(BgNbdFit {
        params,
        log_likelihood: -minimum.value * customers as f64,
        customers,
        iterations: minimum.iterations,
    })
}

impl BgNbdParams {
    fn from_log(theta: &[f64]) -> Self {
        Self {
            r: theta[0].exp(),
            alpha: theta[1].exp(),
            a: theta[2].exp(),
            b: theta[3].exp(),
        }
    }

    fn check(&self) -> Result<(), ClvError> {
        if [self.r, self.alpha, self.a, self.b]
            .iter()
            .all(|v| v.is_finite() && *v > 0.0)
        {
            Ok(())
        } else {
            Err(ClvError::InvalidParameters(
                "BG/NBD parameters must be finite and positive",
            ))
        }
    }

    /// Log-likelihood of one customer with history (x, t_x, T) in weeks,
    /// the paper's likelihood of (x, t_x, T):
    /// L = B(a, b+x)/B(a, b) · Γ(r+x) α^r / (Γ(r) (α+T)^(r+x))
    ///   + δ(x>0) B(a+1, b+x-1)/B(a, b) · Γ(r+x) α^r / (Γ(r) (α+t_x)^(r+x)).
    pub fn customer_log_likelihood(
        &self,
        frequency: u32,
        recency_weeks: f64,
        age_weeks: f64,
    ) -> Result<f64, ClvError> {
        self.check()?;
        check_history(recency_weeks, age_weeks)?;
        let terms = FrequencyTerms::new(self, frequency);
        finite(terms.log_likelihood(self, recency_weeks, age_weeks))
    }

    /// Sum of the customers' log-likelihoods over compressed histories, each
    /// row counted `count` times.
    pub fn log_likelihood(&self, triples: &[WeightedTriple]) -> Result<f64, ClvError> {
        self.check()?;
        let mut frequencies: Vec<u32> = triples.iter().map(|t| t.frequency).collect();
        frequencies.sort_unstable();
        frequencies.dedup();
        let terms = frequency_terms(self, &frequencies);
        let mut total = 0.0;
        for triple in triples {
            check_triple(triple)?;
            let group = frequencies.partition_point(|f| *f < triple.frequency);
            let one = terms[group].log_likelihood(self, triple.recency_weeks(), triple.age_weeks());
            total += triple.count as f64 * one;
        }
        finite(total)
    }

    /// P(alive | x, t_x, T) (from the paper's derivation of the likelihood):
    /// 1 / (1 + δ(x>0) a/(b+x-1) · ((α+T)/(α+t_x))^(r+x)).
    /// A customer with no repeat purchase is alive with probability 1.
    pub fn probability_alive(
        &self,
        frequency: u32,
        recency_weeks: f64,
        age_weeks: f64,
    ) -> Result<f64, ClvError> {
        self.check()?;
        check_history(recency_weeks, age_weeks)?;
        if frequency == 0 {
            return Ok(1.0);
        }
        let x = f64::from(frequency);
        let log_odds_dead = self.a.ln() - (self.b + x - 1.0).ln()
            + (self.r + x) * ((self.alpha + age_weeks).ln() - (self.alpha + recency_weeks).ln());
        finite(1.0 / (1.0 + log_odds_dead.exp()))
    }

    /// E[Y(t) | x, t_x, T]: expected purchases in the next `horizon_weeks`
    /// of a customer with history (x, t_x, T), equation (10) of the paper:
    ///
    /// (a+b+x-1)/(a-1) · [1 - ((α+T)/(α+T+t))^(r+x) · 2F1(r+x, b+x; a+b+x-1; z)]
    /// / [1 + δ(x>0) a/(b+x-1) · ((α+T)/(α+t_x))^(r+x)],  z = t/(α+T+t).
    ///
    /// The bracket is evaluated as written or through Euler's
    /// transformation, whichever keeps the series small (see
    /// `expectation_bracket`). Undefined at a = 1 exactly (the formula
    /// divides by a - 1): an error there.
    pub fn conditional_expected_purchases(
        &self,
        horizon_weeks: f64,
        frequency: u32,
        recency_weeks: f64,
        age_weeks: f64,
    ) -> Result<f64, ClvError> {
        self.check()?;
        check_history(recency_weeks, age_weeks)?;
        check_horizon(horizon_weeks)?;
        let x = f64::from(frequency);
        let bracket = self.expectation_bracket(horizon_weeks, x, age_weeks)?;
        let Self { r, alpha, a, b } = *self;
        let denominator = if frequency == 0 {
            1.0
        } else {
            1.0 + (a.ln() - (b + x - 1.0).ln()
                + (r + x) * ((alpha + age_weeks).ln() - (alpha + recency_weeks).ln()))
            .exp()
        };
        finite((a + b + x - 1.0) / (a - 1.0) * bracket / denominator)
    }

    /// E[X(t)]: expected purchases of a newly acquired customer in their
    /// first `horizon_weeks` (the paper's E[X(t)]):
    /// (a+b-1)/(a-1) · [1 - (α/(α+t))^r · 2F1(r, b; a+b-1; t/(α+t))].
    pub fn expected_purchases(&self, horizon_weeks: f64) -> Result<f64, ClvError> {
        self.check()?;
        check_horizon(horizon_weeks)?;
        let bracket = self.expectation_bracket(horizon_weeks, 0.0, 0.0)?;
        finite((self.a + self.b - 1.0) / (self.a - 1.0) * bracket)
    }

    /// 1 - ((α+T)/(α+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; t/(α+T+t)).
    ///
    /// Evaluated either as written or through Euler's transformation
    /// 2F1(A, B; C; z) = (1-z)^(C-A-B) 2F1(C-A, C-B; C; z), which turns the
    /// product into (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z). The series'
    /// terms grow to about (1-z)^-(r+x) as written and (1-z)^-(a-1)
    /// transformed, so the smaller exponent wins: Euler for frequent buyers
    /// (large x), the paper's form when a is large (a dropout probability
    /// that barely varies across customers). Both are summed scaled, so
    /// neither overflows.
    fn expectation_bracket(&self, t: f64, x: f64, age_weeks: f64) -> Result<f64, ClvError> {
        let (power, series) = if self.r + x <= self.a - 1.0 {
            self.bracket_series_as_written(t, x, age_weeks)?
        } else {
            self.bracket_series_euler(t, x, age_weeks)?
        };
        let ln_one_minus_z = ((self.alpha + age_weeks) / (self.alpha + age_weeks + t)).ln();
        let product = if series.mantissa == 0.0 {
            0.0
        } else {
            series.mantissa.signum()
                * (power * ln_one_minus_z + series.log_scale + series.mantissa.abs().ln()).exp()
        };
        Ok(1.0 - product)
    }

    /// (r+x, 2F1(r+x, b+x; a+b+x-1; z)): the power of (1-z) and the series.
    fn bracket_series_as_written(
        &self,
        t: f64,
        x: f64,
        age_weeks: f64,
    ) -> Result<(f64, Scaled), ClvError> {
        let Self { r, alpha, a, b } = *self;
        let z = t / (alpha + age_weeks + t);
        Ok((r + x, hyp2f1_scaled(r + x, b + x, a + b + x - 1.0, z)?))
    }

    /// (a-1, 2F1(a+b-1-r, a-1; a+b+x-1; z)): the same product, transformed.
    fn bracket_series_euler(
        &self,
        t: f64,
        x: f64,
        age_weeks: f64,
    ) -> Result<(f64, Scaled), ClvError> {
        let Self { r, alpha, a, b } = *self;
        let z = t / (alpha + age_weeks + t);
        Ok((
            a - 1.0,
            hyp2f1_scaled(a + b - 1.0 - r, a - 1.0, a + b + x - 1.0, z)?,
        ))
    }
}

fn check_history(recency_weeks: f64, age_weeks: f64) -> Result<(), ClvError> {
    if recency_weeks.is_finite()
        && age_weeks.is_finite()
        && 0.0 <= recency_weeks
        && recency_weeks <= age_weeks
    {
        Ok(())
    } else {
        Err(ClvError::InvalidArgument(
            "need 0 <= recency <= age, both finite",
        ))
    }
}

/// A history `summarize_customer` can produce: t_x <= T, t_x > 0 exactly
/// when x > 0 (a repeat day comes after the first). Without it the
/// likelihood is unbounded: x purchases at t_x = 0 have infinite density as
/// α goes to 0.
fn check_triple(triple: &WeightedTriple) -> Result<(), ClvError> {
    if triple.recency_days > triple.age_days {
        return Err(ClvError::InvalidArgument(
            "recency after the calibration end",
        ));
    }
    if (triple.frequency > 0) != (triple.recency_days > 0) {
        return Err(ClvError::InvalidArgument(
            "recency must be positive exactly when there are repeat purchases",
        ));
    }
    Ok(())
}

fn check_horizon(horizon_weeks: f64) -> Result<(), ClvError> {
    if horizon_weeks.is_finite() && horizon_weeks >= 0.0 {
        Ok(())
    } else {
        Err(ClvError::InvalidArgument(
            "horizon must be finite and not negative",
        ))
    }
}

fn finite(value: f64) -> Result<f64, ClvError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(ClvError::NumericalFailure("BG/NBD quantity is not finite"))
    }
}

/// ln(e^u + e^v) without overflow.
fn log_add_exp(u: f64, v: f64) -> f64 {
    let (high, low) = if u >= v { (u, v) } else { (v, u) };
    high + (low - high).exp().ln_1p()
}

/// The parts of a customer's log-likelihood that depend on x only (and on
/// the parameters), with their derivatives: computed once per distinct x.
struct FrequencyTerms {
    x: f64,
    /// ln Γ(r+x) - ln Γ(r) + r ln α + ln B(a, b+x) - ln B(a, b)
    shared: f64,
    /// ln a - ln(b+x-1), the log ratio B(a+1, b+x-1)/B(a, b+x); None at x = 0.
    dropout_log_ratio: Option<f64>,
    d_shared_dr: f64,
    d_shared_da: f64,
    d_shared_db: f64,
}

/// Up to this x the x-only terms are sums over k < x (see
/// `frequency_terms`); above it, differences of log-gamma functions.
const SUMMED_FREQUENCY_LIMIT: u32 = 10_000;

/// The x-only terms for each x of `sorted_frequencies` (ascending).
///
/// For integer x, ln Γ(y+x) - ln Γ(y) = Σ_{k<x} ln(y+k) and
/// ln B(a, b+x) - ln B(a, b) = Σ_{k<x} ln((b+k)/(a+b+k)), and likewise for
/// the digamma differences. The sums are exact where differencing log-gamma
/// values of large arguments loses digits (a and b grow large together when
/// the dropout probability barely varies across customers, and the
/// optimiser needs a smooth objective there); they are accumulated once
/// across the sorted x values.
fn frequency_terms(params: &BgNbdParams, sorted_frequencies: &[u32]) -> Vec<FrequencyTerms> {
    let BgNbdParams { r, alpha, a, b } = *params;
    let ln_alpha = alpha.ln();
    let mut terms = Vec::with_capacity(sorted_frequencies.len());
    let (mut k, mut ln_rate, mut d_rate, mut ln_dropout, mut d_a, mut d_b) =
        (0u32, 0.0, 0.0, 0.0, 0.0, 0.0);
    for &frequency in sorted_frequencies {
        let x = f64::from(frequency);
        let (ln_rate_x, d_rate_x, ln_dropout_x, d_a_x, d_b_x) =
            if frequency <= SUMMED_FREQUENCY_LIMIT {
                while k < frequency {
                    let kf = f64::from(k);
                    ln_rate += (r + kf).ln();
                    d_rate += 1.0 / (r + kf);
                    ln_dropout += (-a / (a + b + kf)).ln_1p();
                    d_a -= 1.0 / (a + b + kf);
                    d_b += a / ((b + kf) * (a + b + kf));
                    k += 1;
                }
                (ln_rate, d_rate, ln_dropout, d_a, d_b)
            } else {
                (
                    ln_gamma(r + x) - ln_gamma(r),
                    digamma(r + x) - digamma(r),
                    ln_gamma(a + b) + ln_gamma(b + x) - ln_gamma(b) - ln_gamma(a + b + x),
                    digamma(a + b) - digamma(a + b + x),
                    digamma(a + b) + digamma(b + x) - digamma(b) - digamma(a + b + x),
                )
            };
        terms.push(FrequencyTerms {
            x,
            shared: ln_rate_x + r * ln_alpha + ln_dropout_x,
            dropout_log_ratio: (frequency > 0).then(|| a.ln() - (b + x - 1.0).ln()),
            d_shared_dr: d_rate_x + ln_alpha,
            d_shared_da: d_a_x,
            d_shared_db: d_b_x,
        });
    }
    terms
}

impl FrequencyTerms {
    fn new(params: &BgNbdParams, frequency: u32) -> Self {
        let mut terms = frequency_terms(params, &[frequency]);
        terms.swap_remove(0)
    }

    fn log_likelihood(&self, params: &BgNbdParams, recency_weeks: f64, age_weeks: f64) -> f64 {
        let rx = params.r + self.x;
        let still_alive = -rx * (params.alpha + age_weeks).ln();
        match self.dropout_log_ratio {
            None => self.shared + still_alive,
            Some(ratio) => {
                let dropped_after_last = ratio - rx * (params.alpha + recency_weeks).ln();
                self.shared + log_add_exp(still_alive, dropped_after_last)
            }
        }
    }
}

/// The fit's data: histories grouped by x, times as indices into the
/// distinct day counts that occur, weights as f64.
///
/// Each evaluation computes ln(α + d/7) and 1/(α + d/7) once per distinct
/// day count d, and the x-only terms once per distinct x, which leaves one
/// exp and one ln_1p per row: a million customers compress to about 10^5
/// rows over a few hundred day counts.
struct FitData {
    /// Distinct x values, ascending.
    frequencies: Vec<u32>,
    /// Customers per distinct x, as f64.
    frequency_weights: Vec<f64>,
    /// Distinct day counts (t_x and T) in weeks, ascending.
    weeks: Vec<f64>,
    /// Rows with x = 0: index of T into `weeks`, weight.
    first_only: Vec<(u32, f64)>,
    /// Rows with x > 0.
    repeat: Vec<RepeatRow>,
    customers: u64,
    mean_age_weeks: f64,
}

/// A history with repeat purchases, by indices.
struct RepeatRow {
    /// Index into `frequencies`.
    group: u32,
    /// Index of t_x into `weeks`.
    recency: u32,
    /// Index of T into `weeks`.
    age: u32,
    weight: f64,
}

impl FitData {
    fn new(triples: &[WeightedTriple]) -> Result<Self, ClvError> {
        let counted = || triples.iter().filter(|t| t.count > 0);
        let mut frequencies: Vec<u32> = counted().map(|t| t.frequency).collect();
        frequencies.sort_unstable();
        frequencies.dedup();
        let mut days: Vec<u32> = counted()
            .flat_map(|t| [t.recency_days, t.age_days])
            .collect();
        days.sort_unstable();
        days.dedup();
        let index = |sorted: &[u32], value: u32| -> Result<u32, ClvError> {
            u32::try_from(sorted.partition_point(|v| *v < value)).map_err(|_| ClvError::Overflow)
        };

        let mut frequency_weights = vec![0.0; frequencies.len()];
        let mut first_only = Vec::new();
        let mut repeat = Vec::with_capacity(triples.len());
        let mut customers: u64 = 0;
        let mut repeaters: u64 = 0;
        let mut age_sum = 0.0;
        for triple in counted() {
            check_triple(triple)?;
            let group = index(&frequencies, triple.frequency)?;
            let weight = triple.count as f64;
            frequency_weights[group as usize] += weight;
            let age = index(&days, triple.age_days)?;
            customers = customers
                .checked_add(triple.count)
                .ok_or(ClvError::Overflow)?;
            if triple.frequency == 0 {
                first_only.push((age, weight));
            } else {
                repeaters = repeaters
                    .checked_add(triple.count)
                    .ok_or(ClvError::Overflow)?;
                repeat.push(RepeatRow {
                    group,
                    recency: index(&days, triple.recency_days)?,
                    age,
                    weight,
                });
            }
            age_sum += weight * triple.age_weeks();
        }
        if customers == 0 {
            return Err(ClvError::EmptyPopulation);
        }
        if repeaters == 0 {
            return Err(ClvError::NoRepeatPurchases);
        }
        Ok(Self {
            frequencies,
            frequency_weights,
            weeks: days.iter().map(|d| f64::from(*d) / DAYS_PER_WEEK).collect(),
            first_only,
            repeat,
            customers,
            mean_age_weeks: age_sum / customers as f64,
        })
    }
}

impl SmoothObjective for FitData {
    /// Minus the mean log-likelihood per customer, and its gradient in
    /// (ln r, ln α, ln a, ln b).
    fn value_and_gradient(&self, theta: &[f64], gradient: &mut [f64]) -> Option<f64> {
        let params = BgNbdParams::from_log(theta);
        params.check().ok()?;
        let BgNbdParams { r, alpha, a, b } = params;
        let terms = frequency_terms(&params, &self.frequencies);
        let ln_alpha_plus: Vec<f64> = self.weeks.iter().map(|w| (alpha + w).ln()).collect();
        let inv_alpha_plus: Vec<f64> = self.weeks.iter().map(|w| 1.0 / (alpha + w)).collect();

        let (mut ll, mut d_r, mut d_alpha, mut d_a, mut d_b) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (term, weight) in terms.iter().zip(&self.frequency_weights) {
            ll += weight * term.shared;
            d_r += weight * term.d_shared_dr;
            d_alpha += weight * r / alpha;
            d_a += weight * term.d_shared_da;
            d_b += weight * term.d_shared_db;
        }
        // x = 0: L = ... (α+T)^-r only.
        for &(age, weight) in &self.first_only {
            let age = age as usize;
            ll -= weight * r * ln_alpha_plus[age];
            d_r -= weight * ln_alpha_plus[age];
            d_alpha -= weight * r * inv_alpha_plus[age];
        }
        // The rows with repeat purchases, the bulk of the work: in chunks,
        // on every core.
        let [rows_ll, rows_d_r, rows_d_alpha, rows_d_a, rows_d_b] =
            chunked_sum(&self.repeat, |rows| {
                let (mut ll, mut d_r, mut d_alpha, mut d_a, mut d_b) = (0.0, 0.0, 0.0, 0.0, 0.0);
                for row in rows {
                    let term = &terms[row.group as usize];
                    let (age, recency, weight) =
                        (row.age as usize, row.recency as usize, row.weight);
                    let rx = r + term.x;
                    let still_alive = -rx * ln_alpha_plus[age];
                    let dropped = term.dropout_log_ratio.unwrap_or(f64::NEG_INFINITY)
                        - rx * ln_alpha_plus[recency];
                    // ln(e^still_alive + e^dropped) and the two terms' shares
                    // of the sum.
                    let difference = dropped - still_alive;
                    let smaller_over_larger = (-difference.abs()).exp();
                    let both = still_alive.max(dropped) + smaller_over_larger.ln_1p();
                    let share_larger = 1.0 / (1.0 + smaller_over_larger);
                    let share_smaller = smaller_over_larger * share_larger;
                    let (share_alive, share_dropped) = if difference > 0.0 {
                        (share_smaller, share_larger)
                    } else {
                        (share_larger, share_smaller)
                    };
                    ll += weight * both;
                    d_r -= weight
                        * (share_alive * ln_alpha_plus[age]
                            + share_dropped * ln_alpha_plus[recency]);
                    d_alpha -= weight
                        * rx
                        * (share_alive * inv_alpha_plus[age]
                            + share_dropped * inv_alpha_plus[recency]);
                    d_a += weight * share_dropped / a;
                    d_b -= weight * share_dropped / (b + term.x - 1.0);
                }
                [ll, d_r, d_alpha, d_a, d_b]
            });
        ll += rows_ll;
        d_r += rows_d_r;
        d_alpha += rows_d_alpha;
        d_a += rows_d_a;
        d_b += rows_d_b;
        // Chain rule to log parameters, sign for minimisation, per customer.
        let scale = -1.0 / self.customers as f64;
        gradient[0] = scale * d_r * r;
        gradient[1] = scale * d_alpha * alpha;
        gradient[2] = scale * d_a * a;
        gradient[3] = scale * d_b * b;
        Some(scale * ll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn triples() -> Vec<WeightedTriple> {
        [
            (0, 0, 200, 3),
            (1, 70, 210, 2),
            (4, 150, 260, 1),
            (2, 14, 100, 5),
            (7, 250, 270, 1),
        ]
        .into_iter()
        .map(
            |(frequency, recency_days, age_days, count)| WeightedTriple {
                frequency,
                recency_days,
                age_days,
                count,
            },
        )
        .collect()
    }

    #[test]
    fn analytic_gradient_matches_finite_differences() {
        let data = FitData::new(&triples()).unwrap();
        let theta = [(-0.7_f64), 1.2, 0.3, -0.2];
        let mut gradient = [0.0; 4];
        data.value_and_gradient(&theta, &mut gradient).unwrap();
        for i in 0..4 {
            let h = 1e-6;
            let (mut up, mut down) = (theta, theta);
            up[i] += h;
            down[i] -= h;
            let mut scratch = [0.0; 4];
            let numeric = (data.value_and_gradient(&up, &mut scratch).unwrap()
                - data.value_and_gradient(&down, &mut scratch).unwrap())
                / (2.0 * h);
            assert!(
                (numeric - gradient[i]).abs() < 1e-7,
                "d{i}: {numeric} vs {}",
                gradient[i]
            );
        }
    }

    #[test]
    fn objective_is_minus_the_mean_log_likelihood() {
        let rows = triples();
        let data = FitData::new(&rows).unwrap();
        let theta = [0.1, 1.0, -0.3, 0.4];
        let mut gradient = [0.0; 4];
        let value = data.value_and_gradient(&theta, &mut gradient).unwrap();
        let ll = BgNbdParams::from_log(&theta).log_likelihood(&rows).unwrap();
        assert!((value + ll / 12.0).abs() < 1e-12);
    }

    #[test]
    fn euler_form_equals_the_papers_form() {
        let cases = [
            (39.0, 2.0, 38.86),
            (52.0, 0.0, 30.0),
            (10.0, 9.0, 20.0),
            (200.0, 4.0, 35.0),
        ];
        for params in [
            BgNbdParams {
                r: 0.243,
                alpha: 4.414,
                a: 0.793,
                b: 2.426,
            },
            BgNbdParams {
                r: 0.5,
                alpha: 2.0,
                a: 40.0,
                b: 90.0,
            },
        ] {
            for (t, x, age) in cases {
                let ln_one_minus_z = ((params.alpha + age) / (params.alpha + age + t)).ln();
                let product = |(power, series): (f64, Scaled)| {
                    series.mantissa * (power * ln_one_minus_z + series.log_scale).exp()
                };
                let written = product(params.bracket_series_as_written(t, x, age).unwrap());
                let euler = product(params.bracket_series_euler(t, x, age).unwrap());
                assert!(
                    (written - euler).abs() < 1e-12 * written.abs(),
                    "{written} vs {euler}"
                );
                let bracket = params.expectation_bracket(t, x, age).unwrap();
                assert!(
                    (bracket - (1.0 - written)).abs() < 1e-12,
                    "{bracket} vs {written}"
                );
            }
        }
    }

    #[test]
    fn expectations_stay_finite_when_a_and_b_are_huge() {
        // a, b -> infinity with a/(a+b) = p is BG/NBD with one dropout
        // probability p for everyone; a fit can end there.
        let params = BgNbdParams {
            r: 0.3,
            alpha: 3.0,
            a: 2e10,
            b: 6e10,
        };
        for x in [0, 1, 5, 50] {
            let expected = params
                .conditional_expected_purchases(52.0, x, 20.0, 30.0)
                .unwrap();
            assert!(expected.is_finite() && expected > 0.0);
        }
        // and a frequent buyer with a small a goes through the Euler form
        let params = BgNbdParams {
            r: 0.3,
            alpha: 3.0,
            a: 0.8,
            b: 2.0,
        };
        let frequent = params
            .conditional_expected_purchases(520.0, 2_000, 260.0, 261.0)
            .unwrap();
        assert!(frequent.is_finite() && frequent > 100.0);
    }
}
