//! Customer lifetime value: the BG/NBD purchase model, the Gamma-Gamma
//! spend model, predictive CLV from both, and historical CLV.
//!
//! # Public API
//!
//! Summaries (`summary`):
//! - [`summarize_customer`]`(&[Purchase], end_day) -> Result<CustomerSummary>`:
//!   x, t_x, T (whole days) and repeat spend of one customer; purchases per
//!   distinct day, purchases after `end_day` ignored.
//! - [`compress_triples`]`(&[CustomerSummary]) -> Vec<WeightedTriple>`:
//!   unique (x, t_x, T) with counts, for the BG/NBD fit.
//! - [`compress_spend`]`(&[CustomerSummary]) -> Vec<WeightedSpend>`: unique
//!   (x, repeat spend) with counts, for the Gamma-Gamma fit.
//!
//! BG/NBD (`bgnbd`), time in weeks:
//! - [`fit_bg_nbd`]`(&[WeightedTriple]) -> Result<BgNbdFit>`: maximum likelihood.
//! - [`BgNbdParams::log_likelihood`], [`BgNbdParams::customer_log_likelihood`],
//!   [`BgNbdParams::probability_alive`],
//!   [`BgNbdParams::conditional_expected_purchases`] (next t weeks given a
//!   history) and [`BgNbdParams::expected_purchases`] (E[X(t)] of a new customer).
//!
//! Gamma-Gamma (`gamma_gamma`):
//! - [`fit_gamma_gamma`]`(&[WeightedSpend]) -> Result<GammaGammaFit>`: maximum
//!   likelihood on customers with x >= 1 and mean repeat spend > 0; the fit
//!   reports how many it skipped.
//! - [`GammaGammaParams::conditional_expected_spend`] and
//!   [`GammaGammaParams::log_likelihood`].
//!
//! CLV:
//! - [`predictive_clv`]`(&BgNbdParams, &GammaGammaParams, &CustomerSummary,
//!   &DiscountedHorizon) -> Result<f64>`: discounted expected spend over K
//!   periods (lifetimes' `customer_lifetime_value` formula).
//! - [`historical_clv`]`(&[HistoricalMember<K>], &HistoricalClvConfig) ->
//!   Result<HistoricalClv<K>>`: average order value × orders per year ×
//!   lifespan, per member and per segment.
//!
//! # Conventions
//! - Days are `i32` days since 1970-01-01; the calibration end day is
//!   inclusive. Model time is in weeks: days / 7, fractional.
//! - Money goes in as `i64` minor units and comes out as `f64` in the unit
//!   the Gamma-Gamma model was fitted on: minor units when fitted on
//!   summaries. γ scales with that unit (CDNOW: γ = 15.44 in dollars is
//!   1544 in cents); p and q do not.
//! - Fits are deterministic: compressed rows are sorted, the optimiser
//!   (argmin's L-BFGS) starts from fixed points, nothing is random. The
//!   likelihoods are summed over fixed chunks of rows spread over the
//!   machine's cores, so the result does not depend on how many there are.
//! - Errors are [`ClvError`]; no input makes these functions panic or return
//!   NaN.

mod bgnbd;
mod error;
mod gamma_gamma;
mod historical;
mod hyp2f1;
mod optimize;
mod predictive;
mod summary;

pub use bgnbd::{BgNbdFit, BgNbdParams, fit_bg_nbd};
pub use error::ClvError;
pub use gamma_gamma::{GammaGammaFit, GammaGammaParams, fit_gamma_gamma};
pub use historical::{
    DAYS_PER_YEAR, HistoricalClv, HistoricalClvConfig, HistoricalMember, Lifespan,
    SegmentHistoricalClv, historical_clv,
};
pub use predictive::{DiscountedHorizon, WEEKS_PER_MONTH, predictive_clv};
pub use summary::{
    CustomerSummary, DAYS_PER_WEEK, Purchase, WeightedSpend, WeightedTriple, compress_spend,
    compress_triples, summarize_customer,
};
