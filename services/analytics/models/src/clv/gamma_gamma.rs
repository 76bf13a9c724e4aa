//! The Gamma-Gamma model of spend per transaction: Fader, Hardie and Lee
//! (2005), "RFM and CLV: Using Iso-Value Curves for Customer Base
//! Analysis", Journal of Marketing Research 42(4), and Hardie's note "The
//! Gamma-Gamma Model of Monetary Value" (2013).
//!
//! A transaction's value is Gamma(p, ν) with ν ~ Gamma(q, γ) across
//! customers; a customer's mean over x transactions, m, has the likelihood
//! Γ(px+q) / (Γ(px) Γ(q)) · γ^q m^(px-1) x^(px) / (γ + m x)^(px+q).
//!
//! Money scale: γ is in the unit of the spend fitted on (p and q are
//! unitless). Fitted on minor units (cents) it is 100 times its value in
//! dollars; expected spends come back in the unit fitted on.

use statrs::function::gamma::{digamma, ln_gamma};

use super::ClvError;
use super::optimize::{SmoothObjective, chunked_sum, minimize};
use super::summary::WeightedSpend;

/// Gamma-Gamma parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GammaGammaParams {
    /// p: shape of a transaction's value given the customer.
    pub p: f64,
    /// q: shape of the customers' rate ν.
    pub q: f64,
    /// γ: rate of the customers' ν, in the money unit fitted on.
    pub gamma: f64,
}

/// A fitted Gamma-Gamma model and who it left out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GammaGammaFit {
    /// The maximum-likelihood parameters.
    pub params: GammaGammaParams,
    /// The weighted log-likelihood at the parameters.
    pub log_likelihood: f64,
    /// Customers fitted on: x >= 1 and mean repeat spend > 0.
    pub customers: u64,
    /// Customers left out for having no repeat purchase day.
    pub skipped_no_repeat: u64,
    /// Customers left out for having repeat days but a mean spend of 0
    /// (the model's likelihood needs m > 0).
    pub skipped_zero_spend: u64,
    /// L-BFGS iterations taken.
    pub iterations: u64,
}

/// Fits Gamma-Gamma by maximum likelihood on the customers with x >= 1 and
/// mean repeat spend m > 0, over compressed (x, spend) pairs; the others
/// are skipped and counted in the result.
///
/// Optimises ln p, ln q, ln γ with L-BFGS and the analytic gradient, from
/// p = 1, q = 2, γ = the mean of m (which makes the starting `E[M]` the
/// sample mean, whatever the money unit). Fails when nobody is left to fit
/// on and when the optimiser does not converge.
pub fn fit_gamma_gamma(spends: &[WeightedSpend]) -> Result<GammaGammaFit, ClvError> {
    let mut skipped_no_repeat: u64 = 0;
    let mut skipped_zero_spend: u64 = 0;
    let mut used: Vec<WeightedSpend> = Vec::with_capacity(spends.len());
    for spend in spends.iter().filter(|s| s.count > 0) {
        if spend.repeat_spend_minor < 0 {
            return Err(ClvError::InvalidArgument("negative repeat spend"));
        }
        let skipped = if spend.frequency == 0 {
            &mut skipped_no_repeat
        } else if spend.repeat_spend_minor == 0 {
            &mut skipped_zero_spend
        } else {
            used.push(*spend);
            continue;
        };
        *skipped = skipped.checked_add(spend.count).ok_or(ClvError::Overflow)?;
    }
    if used.is_empty() {
        return Err(if skipped_zero_spend > 0 {
            ClvError::NoPositiveRepeatSpend { skipped_zero_spend }
        } else if skipped_no_repeat > 0 {
            ClvError::NoRepeatPurchases
        } else {
            ClvError::EmptyPopulation
        });
    }
    let data = FitData::new(&used)?;
    let start = vec![0.0, 2.0_f64.ln(), data.mean_monetary.ln()];
    let customers = data.customers;
    let minimum = minimize(&data, start)?;
    let params = GammaGammaParams {
        p: minimum.theta[0].exp(),
        q: minimum.theta[1].exp(),
        gamma: minimum.theta[2].exp(),
    };
    params.check()?;
    Ok(GammaGammaFit {
        params,
        log_likelihood: -minimum.value * customers as f64,
        customers,
        skipped_no_repeat,
        skipped_zero_spend,
        iterations: minimum.iterations,
    })
}

impl GammaGammaParams {
    fn check(&self) -> Result<(), ClvError> {
        if [self.p, self.q, self.gamma]
            .iter()
            .all(|v| v.is_finite() && *v > 0.0)
        {
            Ok(())
        } else {
            Err(ClvError::InvalidParameters(
                "Gamma-Gamma parameters must be finite and positive",
            ))
        }
    }

    /// Sum of the log-likelihoods of the customers with x >= 1 and m > 0,
    /// each pair counted `count` times; others are left out as in the fit.
    pub fn log_likelihood(&self, spends: &[WeightedSpend]) -> Result<f64, ClvError> {
        self.check()?;
        let mut total = 0.0;
        for spend in spends
            .iter()
            .filter(|s| s.frequency > 0 && s.repeat_spend_minor > 0)
        {
            let x = f64::from(spend.frequency);
            let m = spend.monetary_minor();
            let (p, q, gamma) = (self.p, self.q, self.gamma);
            let one = ln_gamma(p * x + q) - ln_gamma(p * x) - ln_gamma(q)
                + q * gamma.ln()
                + (p * x - 1.0) * m.ln()
                + p * x * x.ln()
                - (p * x + q) * (gamma + m * x).ln();
            total += spend.count as f64 * one;
        }
        if total.is_finite() {
            Ok(total)
        } else {
            Err(ClvError::NumericalFailure(
                "Gamma-Gamma log-likelihood is not finite",
            ))
        }
    }

    /// `E[M | x, m]`: expected mean spend per future transaction of a customer
    /// with x repeat days of mean spend m (Hardie's note, and lifetimes'
    /// `conditional_expected_average_profit`):
    /// (γ + m x) p / (p x + q - 1), a weighted mean of the population mean
    /// γp/(q-1) and the customer's m. With x = 0 it is the population mean
    /// (m is then irrelevant). Needs p x + q > 1 (q > 1 when x = 0).
    pub fn conditional_expected_spend(
        &self,
        frequency: u32,
        monetary: f64,
    ) -> Result<f64, ClvError> {
        self.check()?;
        if !(monetary.is_finite() && monetary >= 0.0) {
            return Err(ClvError::InvalidArgument(
                "monetary value must be finite and not negative",
            ));
        }
        let x = f64::from(frequency);
        let denominator = self.p * x + self.q - 1.0;
        if denominator <= 0.0 {
            return Err(ClvError::InvalidParameters(
                "expected spend needs p x + q > 1",
            ));
        }
        let value = (self.gamma + monetary * x) * self.p / denominator;
        if value.is_finite() {
            Ok(value)
        } else {
            Err(ClvError::NumericalFailure("expected spend is not finite"))
        }
    }
}

/// The fit's data: per distinct x, the terms that depend on x only; per
/// row, x, m and the weight.
struct FitData {
    groups: Vec<FrequencyGroup>,
    rows: Vec<SpendRow>,
    customers: u64,
    mean_monetary: f64,
}

struct FrequencyGroup {
    x: f64,
    weight: f64,
    /// Σ weight · ln m over the group's rows.
    weighted_log_monetary: f64,
}

struct SpendRow {
    x: f64,
    /// m: mean spend per repeat day.
    monetary: f64,
    weight: f64,
}

impl FitData {
    /// `used` holds only rows with x >= 1, m > 0 and count > 0.
    fn new(used: &[WeightedSpend]) -> Result<Self, ClvError> {
        let mut sorted = used.to_vec();
        sorted.sort_unstable();
        let mut groups: Vec<FrequencyGroup> = Vec::new();
        let mut rows: Vec<SpendRow> = Vec::with_capacity(sorted.len());
        let mut customers: u64 = 0;
        let mut monetary_sum = 0.0;
        for run in sorted.chunk_by(|left, right| left.frequency == right.frequency) {
            let x = f64::from(run[0].frequency);
            let first = rows.len();
            rows.extend(run.iter().map(|s| SpendRow {
                x,
                monetary: s.monetary_minor(),
                weight: s.count as f64,
            }));
            for spend in run {
                customers = customers
                    .checked_add(spend.count)
                    .ok_or(ClvError::Overflow)?;
            }
            let group = &rows[first..];
            monetary_sum += group.iter().map(|r| r.monetary * r.weight).sum::<f64>();
            groups.push(FrequencyGroup {
                x,
                weight: group.iter().map(|r| r.weight).sum(),
                weighted_log_monetary: group.iter().map(|r| r.weight * r.monetary.ln()).sum(),
            });
        }
        Ok(Self {
            groups,
            rows,
            customers,
            mean_monetary: monetary_sum / customers as f64,
        })
    }
}

impl SmoothObjective for FitData {
    /// Minus the mean log-likelihood per customer, and its gradient in
    /// (ln p, ln q, ln γ).
    fn value_and_gradient(&self, theta: &[f64], gradient: &mut [f64]) -> Option<f64> {
        let (p, q, gamma) = (theta[0].exp(), theta[1].exp(), theta[2].exp());
        if ![p, q, gamma].iter().all(|v| v.is_finite() && *v > 0.0) {
            return None;
        }
        let (ln_gamma_q, digamma_q, ln_rate) = (ln_gamma(q), digamma(q), gamma.ln());
        let (mut ll, mut d_p, mut d_q, mut d_gamma) = (0.0, 0.0, 0.0, 0.0);
        for group in &self.groups {
            let (x, w) = (group.x, group.weight);
            let px = p * x;
            let (digamma_pxq, digamma_px) = (digamma(px + q), digamma(px));
            ll += w * (ln_gamma(px + q) - ln_gamma(px) - ln_gamma_q + q * ln_rate + px * x.ln())
                + (px - 1.0) * group.weighted_log_monetary;
            d_p += w * x * (digamma_pxq - digamma_px + x.ln()) + x * group.weighted_log_monetary;
            d_q += w * (digamma_pxq - digamma_q + ln_rate);
            d_gamma += w * q / gamma;
        }
        // Per row, -(px + q) ln(γ + m x): Σ w ln(γ + m x), Σ w x ln(γ + m x),
        // Σ w / (γ + m x) and Σ w x / (γ + m x), in chunks on every core.
        let [ln_sum, x_ln_sum, inv_sum, x_inv_sum] = chunked_sum(&self.rows, |rows| {
            let (mut ln_sum, mut x_ln_sum, mut inv_sum, mut x_inv_sum) = (0.0, 0.0, 0.0, 0.0);
            for row in rows {
                let total = gamma + row.monetary * row.x;
                let (weighted_ln, weighted_inv) = (row.weight * total.ln(), row.weight / total);
                ln_sum += weighted_ln;
                x_ln_sum += row.x * weighted_ln;
                inv_sum += weighted_inv;
                x_inv_sum += row.x * weighted_inv;
            }
            [ln_sum, x_ln_sum, inv_sum, x_inv_sum]
        });
        ll -= p * x_ln_sum + q * ln_sum;
        d_p -= x_ln_sum;
        d_q -= ln_sum;
        d_gamma -= p * x_inv_sum + q * inv_sum;
        let scale = -1.0 / self.customers as f64;
        gradient[0] = scale * d_p * p;
        gradient[1] = scale * d_q * q;
        gradient[2] = scale * d_gamma * gamma;
        Some(scale * ll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spends() -> Vec<WeightedSpend> {
        [
            (1, 2_500, 4),
            (2, 7_000, 1),
            (3, 9_000, 2),
            (1, 1_200, 3),
            (5, 40_000, 1),
        ]
        .into_iter()
        .map(|(frequency, repeat_spend_minor, count)| WeightedSpend {
            frequency,
            repeat_spend_minor,
            count,
        })
        .collect()
    }

    #[test]
    fn analytic_gradient_matches_finite_differences() {
        let data = FitData::new(&spends()).unwrap();
        let theta = [0.8_f64, 1.1, 7.0];
        let mut gradient = [0.0; 3];
        data.value_and_gradient(&theta, &mut gradient).unwrap();
        for i in 0..3 {
            let h = 1e-6;
            let (mut up, mut down) = (theta, theta);
            up[i] += h;
            down[i] -= h;
            let mut scratch = [0.0; 3];
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
        let rows = spends();
        let data = FitData::new(&rows).unwrap();
        let theta = [0.8_f64, 1.1, 7.0];
        let mut gradient = [0.0; 3];
        let value = data.value_and_gradient(&theta, &mut gradient).unwrap();
        let params = GammaGammaParams {
            p: theta[0].exp(),
            q: theta[1].exp(),
            gamma: theta[2].exp(),
        };
        let ll = params.log_likelihood(&rows).unwrap();
        assert!((value + ll / 11.0).abs() < 1e-12);
    }
}
