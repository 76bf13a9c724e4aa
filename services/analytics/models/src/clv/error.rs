//! The one error type of the CLV models.

/// Why a CLV computation could not give a number.
///
/// Every user-reachable failure is one of these: the models never panic on
/// input and never hand back NaN or an infinity.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClvError {
    /// The customer has no purchase on or before the calibration end day.
    #[error("no purchase on or before the calibration end day")]
    NoPurchaseInCalibration,
    /// A purchase amount was negative: the models take gross spend, refunds
    /// are the caller's to net out before.
    #[error("negative purchase amount {amount_minor} on day {day}")]
    NegativeAmount {
        /// Day of the purchase, days since 1970-01-01.
        day: i32,
        /// The amount, in minor units.
        amount_minor: i64,
    },
    /// A sum of money or a count overflowed its integer type.
    #[error("spend or count overflow")]
    Overflow,
    /// There is nobody to fit on.
    #[error("empty population")]
    EmptyPopulation,
    /// Nobody in the population made a repeat purchase, so the repeat
    /// process (BG/NBD) or the spend per repeat day (Gamma-Gamma) cannot be
    /// identified.
    #[error("no customer with a repeat purchase")]
    NoRepeatPurchases,
    /// Every customer with repeat purchases spent nothing on them, so the
    /// Gamma-Gamma model has no positive spend to fit.
    #[error(
        "no customer with positive repeat spend ({skipped_zero_spend} skipped with zero spend)"
    )]
    NoPositiveRepeatSpend {
        /// Customers left out because their mean repeat spend is 0.
        skipped_zero_spend: u64,
    },
    /// A model parameter passed in is not a finite positive number, or the
    /// combination makes a formula undefined (say q <= 1 for the mean spend).
    #[error("invalid model parameters: {0}")]
    InvalidParameters(&'static str),
    /// An argument other than a parameter is out of range (negative time,
    /// negative discount rate, empty horizon, window of zero days).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// The optimiser failed or did not converge; also how a population whose
    /// likelihood has no maximum ends (every Gamma-Gamma mean equal, say).
    #[error("fit failed: {0}")]
    FitFailed(String),
    /// A special function or expectation did not give a finite number.
    #[error("numerical failure: {0}")]
    NumericalFailure(&'static str),
}
