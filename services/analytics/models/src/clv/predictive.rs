//! Predictive CLV: discounted expected spend over a horizon, from a fitted
//! BG/NBD (how many purchases) and Gamma-Gamma (how much each).
//!
//! The formula is the one of lifetimes' `customer_lifetime_value`:
//!
//! CLV = Σ_{k=1..K} S · [E(Y(k·P) | x, t_x, T) − E(Y((k−1)·P) | x, t_x, T)] / (1 + d)^k
//!
//! where K is the number of periods, P the period length in weeks, d the
//! discount rate per period, E(Y(t) | ·) BG/NBD's conditional expected
//! purchases in the next t weeks, and S = E[M | x, m] Gamma-Gamma's
//! conditional expected spend per purchase. The increments are the
//! purchases expected within period k, so each period's spend is
//! discounted by its own end. Money comes back in the unit the
//! Gamma-Gamma model was fitted on (minor units when fitted on
//! `CustomerSummary` spends).

use super::ClvError;
use super::bgnbd::BgNbdParams;
use super::gamma_gamma::GammaGammaParams;
use super::summary::CustomerSummary;

/// Weeks per month as lifetimes counts them (its factor for `freq="W"`),
/// kept so results compare with it; the calendar mean is 365.25/84 = 4.348.
pub const WEEKS_PER_MONTH: f64 = 4.345;

/// The horizon of a predictive CLV: `periods` periods of `weeks_per_period`
/// weeks, each discounted at `discount_rate_per_period`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiscountedHorizon {
    /// Number of periods K (12 for a year of months).
    pub periods: u32,
    /// Length of a period in weeks ([`WEEKS_PER_MONTH`] for months, 1 for weeks).
    pub weeks_per_period: f64,
    /// Discount rate per period d (0.01 is 1 % a period; 0 for none).
    pub discount_rate_per_period: f64,
}

impl DiscountedHorizon {
    /// `months` months discounted at `monthly_discount_rate` a month.
    pub fn months(months: u32, monthly_discount_rate: f64) -> Self {
        Self {
            periods: months,
            weeks_per_period: WEEKS_PER_MONTH,
            discount_rate_per_period: monthly_discount_rate,
        }
    }

    /// `weeks` weeks discounted at `weekly_discount_rate` a week.
    pub fn weeks(weeks: u32, weekly_discount_rate: f64) -> Self {
        Self {
            periods: weeks,
            weeks_per_period: 1.0,
            discount_rate_per_period: weekly_discount_rate,
        }
    }

    fn check(&self) -> Result<(), ClvError> {
        if !(self.weeks_per_period.is_finite() && self.weeks_per_period > 0.0) {
            return Err(ClvError::InvalidArgument(
                "period length must be finite and positive",
            ));
        }
        if !(self.discount_rate_per_period.is_finite() && self.discount_rate_per_period >= 0.0) {
            return Err(ClvError::InvalidArgument(
                "discount rate must be finite and not negative",
            ));
        }
        Ok(())
    }
}

/// Expected discounted value of a customer's purchases over `horizon`,
/// in the Gamma-Gamma model's money unit (see the module doc for the
/// formula). A horizon of zero periods is worth 0.
pub fn predictive_clv(
    transactions: &BgNbdParams,
    spend: &GammaGammaParams,
    customer: &CustomerSummary,
    horizon: &DiscountedHorizon,
) -> Result<f64, ClvError> {
    horizon.check()?;
    let (x, recency, age) = (
        customer.frequency,
        customer.recency_weeks(),
        customer.age_weeks(),
    );
    let spend_per_purchase = spend.conditional_expected_spend(x, customer.monetary_minor())?;
    let mut clv = 0.0;
    let mut purchases_before = 0.0;
    let mut discount = 1.0;
    for period in 1..=horizon.periods {
        let end_weeks = f64::from(period) * horizon.weeks_per_period;
        let purchases_by_end =
            transactions.conditional_expected_purchases(end_weeks, x, recency, age)?;
        discount /= 1.0 + horizon.discount_rate_per_period;
        clv += spend_per_purchase * (purchases_by_end - purchases_before) * discount;
        purchases_before = purchases_by_end;
    }
    if clv.is_finite() {
        Ok(clv)
    } else {
        Err(ClvError::NumericalFailure("predictive CLV is not finite"))
    }
}
