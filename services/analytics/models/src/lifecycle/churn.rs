//! Churn early warning: a 0..=100 risk score that shows its reasons.
//!
//! Six signals, each turned into a component in `[0, 1]` (0 = no sign of
//! churn, 1 = as strong as it gets; defaults of [`ChurnConfig`] in
//! parentheses):
//!
//! | component           | formula                                                                           |
//! |---------------------|-----------------------------------------------------------------------------------|
//! | `p_alive_drop`      | relative fall of the BG/NBD p_alive: `(previous - current) / previous`            |
//! | `overdue`           | recency in rhythms past due: `(recency / rhythm - onset (1)) / (full (4) - onset)` |
//! | `frequency_decline` | orders in the recent window against the prior window of equal length: `(prior - recent) / prior` |
//! | `refunds`           | the larger of refunds / orders and refunded / spent, over `full_refund_rate` (0.5) |
//! | `negative_feedback` | negative ratings over `full_negative_ratings` (3)                                 |
//! | `complaints`        | complaints over `full_complaints` (2)                                             |
//!
//! each clamped to `[0, 1]` (a rise, a member ahead of their rhythm, more
//! recent orders than before all count 0; a signal without data, such as a
//! missing p_alive or an empty prior window, also counts 0). The score is
//! the weighted mean, `round(100 * sum(w_i * c_i) / sum(w_i))` with halves
//! rounded up. Weights are whole numbers; the defaults (25, 25, 20, 10,
//! 10, 10 in the table's order) sum to 100, so each is the most points its
//! component can add: behaviour (p_alive, recency, frequency) carries 70
//! points, the service signals (refunds, feedback, complaints) 30. Dividing
//! by the sum keeps the score on 0..=100 whatever weights are configured.
//! (Integer weights keep the sum exact: 0.25 + 0.25 + 0.2 + 0.1 + 0.1 + 0.1
//! is not 1 in floating point, and a half point would round the wrong way.)
//!
//! Refunds, ratings and complaints are counted over one look-back period
//! the caller chooses (the same as the orders and spend they are compared
//! with).

/// Why churn scoring refused its input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChurnError {
    /// A probability outside `[0, 1]` or not a number.
    #[error("probability alive must be within [0, 1], got {p_alive}")]
    InvalidProbability {
        /// The value given.
        p_alive: f64,
    },
    /// A negative recency, a rhythm that is not a positive number.
    #[error("invalid recency or rhythm: {reason}")]
    InvalidRecency {
        /// What is wrong.
        reason: &'static str,
    },
    /// A negative amount of money where only spend or refunds fit.
    #[error("{field} must not be negative, got {amount_minor}")]
    NegativeAmount {
        /// Which amount.
        field: &'static str,
        /// The amount given, minor units.
        amount_minor: i64,
    },
    /// A risk score above 100.
    #[error("risk score must be within 0..=100, got {score}")]
    ScoreOutOfRange {
        /// The score given.
        score: u8,
    },
    /// A configuration that cannot produce a score.
    #[error("invalid churn configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: &'static str,
    },
}

/// Relative weight of each component in the score (not all zero).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChurnWeights {
    /// Weight of `p_alive_drop`.
    pub p_alive_drop: u32,
    /// Weight of `overdue`.
    pub overdue: u32,
    /// Weight of `frequency_decline`.
    pub frequency_decline: u32,
    /// Weight of `refunds`.
    pub refunds: u32,
    /// Weight of `negative_feedback`.
    pub negative_feedback: u32,
    /// Weight of `complaints`.
    pub complaints: u32,
}

impl Default for ChurnWeights {
    fn default() -> Self {
        Self {
            p_alive_drop: 25,
            overdue: 25,
            frequency_decline: 20,
            refunds: 10,
            negative_feedback: 10,
            complaints: 10,
        }
    }
}

impl ChurnWeights {
    fn as_array(&self) -> [u32; 6] {
        [
            self.p_alive_drop,
            self.overdue,
            self.frequency_decline,
            self.refunds,
            self.negative_feedback,
            self.complaints,
        ]
    }
}

/// Weights and saturation points of the components.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChurnConfig {
    /// Weight of each component.
    pub weights: ChurnWeights,
    /// Recency, in rhythms, where `overdue` starts rising from 0.
    pub overdue_onset_rhythms: f64,
    /// Recency, in rhythms, where `overdue` reaches 1.
    pub overdue_full_rhythms: f64,
    /// Refund rate (count or amount) where `refunds` reaches 1.
    pub full_refund_rate: f64,
    /// Negative ratings where `negative_feedback` reaches 1.
    pub full_negative_ratings: u32,
    /// Complaints where `complaints` reaches 1.
    pub full_complaints: u32,
}

impl Default for ChurnConfig {
    fn default() -> Self {
        Self {
            weights: ChurnWeights::default(),
            // Due at one rhythm; fully overdue at four, past the at-risk
            // limit (3) of the lifecycle but before churned (6): an early
            // warning should peak before the member is gone.
            overdue_onset_rhythms: 1.0,
            overdue_full_rhythms: 4.0,
            full_refund_rate: 0.5,
            full_negative_ratings: 3,
            full_complaints: 2,
        }
    }
}

impl ChurnConfig {
    /// Checks weights and saturation points.
    pub fn validate(&self) -> Result<(), ChurnError> {
        let invalid = |reason| Err(ChurnError::InvalidConfig { reason });
        let weights = self.weights.as_array();
        if weights.iter().all(|&w| w == 0) {
            return invalid("at least one weight must be positive");
        }
        if weights.iter().map(|&w| u64::from(w)).sum::<u64>() > u64::from(u32::MAX) {
            return invalid("weights must sum to at most u32::MAX");
        }
        if !(self.overdue_onset_rhythms.is_finite()
            && self.overdue_onset_rhythms >= 0.0
            && self.overdue_full_rhythms.is_finite()
            && self.overdue_full_rhythms > self.overdue_onset_rhythms)
        {
            return invalid("overdue onset must be non-negative and below the full point");
        }
        if !(self.full_refund_rate.is_finite() && self.full_refund_rate > 0.0) {
            return invalid("full_refund_rate must be positive");
        }
        if self.full_negative_ratings == 0 || self.full_complaints == 0 {
            return invalid("full_negative_ratings and full_complaints must be positive");
        }
        Ok(())
    }
}

/// What churn scoring needs to know about one member.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ChurnInput {
    /// p_alive at the previous assessment, if any.
    pub p_alive_previous: Option<f64>,
    /// p_alive now, if fitted.
    pub p_alive_current: Option<f64>,
    /// Days since the last purchase (`LifecycleAssessment::recency_days`),
    /// `None` if the member never bought.
    pub recency_days: Option<i32>,
    /// The member's rhythm in days (`LifecycleAssessment::rhythm`).
    pub rhythm_days: Option<f64>,
    /// Orders in the recent window (e.g. the last 90 days).
    pub orders_recent_window: u32,
    /// Orders in the window of the same length just before it.
    pub orders_prior_window: u32,
    /// Orders over the look-back period of refunds and feedback.
    pub orders: u32,
    /// Spend over that period, minor units.
    pub spent_minor: i64,
    /// Refunds over that period.
    pub refunds: u32,
    /// Refunded amount over that period, minor units.
    pub refunded_minor: i64,
    /// Negative ratings over that period.
    pub negative_ratings: u32,
    /// Complaints over that period.
    pub complaints: u32,
}

/// The six components, each in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ChurnComponents {
    /// Relative fall of p_alive.
    pub p_alive_drop: f64,
    /// How far past the personal rhythm.
    pub overdue: f64,
    /// Relative fall of orders, recent against prior window.
    pub frequency_decline: f64,
    /// Refund rate against its saturation point.
    pub refunds: f64,
    /// Negative ratings against their saturation point.
    pub negative_feedback: f64,
    /// Complaints against their saturation point.
    pub complaints: f64,
}

impl ChurnComponents {
    fn as_array(&self) -> [f64; 6] {
        [
            self.p_alive_drop,
            self.overdue,
            self.frequency_decline,
            self.refunds,
            self.negative_feedback,
            self.complaints,
        ]
    }
}

/// A member's churn risk and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChurnRisk {
    /// The score, 0..=100.
    pub score: u8,
    /// Each component, in `[0, 1]`.
    pub components: ChurnComponents,
    /// Points each component adds to the score before rounding
    /// (`100 * w_i * c_i / sum(w)`; they sum to the unrounded score).
    pub contributions: ChurnComponents,
}

fn check_probability(p: Option<f64>) -> Result<(), ChurnError> {
    match p {
        Some(p_alive) if !(0.0..=1.0).contains(&p_alive) => {
            Err(ChurnError::InvalidProbability { p_alive })
        }
        _ => Ok(()),
    }
}

fn check_non_negative(field: &'static str, amount_minor: i64) -> Result<(), ChurnError> {
    if amount_minor < 0 {
        Err(ChurnError::NegativeAmount {
            field,
            amount_minor,
        })
    } else {
        Ok(())
    }
}

/// The churn risk of one member (formula in the module documentation).
pub fn churn_risk(input: &ChurnInput, config: &ChurnConfig) -> Result<ChurnRisk, ChurnError> {
    config.validate()?;
    check_probability(input.p_alive_previous)?;
    check_probability(input.p_alive_current)?;
    check_non_negative("spent_minor", input.spent_minor)?;
    check_non_negative("refunded_minor", input.refunded_minor)?;

    let components = ChurnComponents {
        p_alive_drop: p_alive_drop(input.p_alive_previous, input.p_alive_current),
        overdue: overdue(input.recency_days, input.rhythm_days, config)?,
        frequency_decline: relative_fall(input.orders_prior_window, input.orders_recent_window),
        refunds: refunds(input, config),
        negative_feedback: saturating_share(input.negative_ratings, config.full_negative_ratings),
        complaints: saturating_share(input.complaints, config.full_complaints),
    };

    let weights = config.weights.as_array();
    let weight_sum: f64 = weights.iter().map(|&w| f64::from(w)).sum();
    let points: Vec<f64> = components
        .as_array()
        .iter()
        .zip(weights)
        .map(|(component, weight)| 100.0 * f64::from(weight) * component / weight_sum)
        .collect();
    let total: f64 = points.iter().sum();
    // Components are in [0, 1] and the weights normalised, so the total is
    // in [0, 100] up to rounding error; the clamp absorbs that error.
    let score = (total + 0.5).floor().clamp(0.0, 100.0) as u8;
    Ok(ChurnRisk {
        score,
        components,
        contributions: ChurnComponents {
            p_alive_drop: points[0],
            overdue: points[1],
            frequency_decline: points[2],
            refunds: points[3],
            negative_feedback: points[4],
            complaints: points[5],
        },
    })
}

fn p_alive_drop(previous: Option<f64>, current: Option<f64>) -> f64 {
    match (previous, current) {
        (Some(previous), Some(current)) if previous > 0.0 => {
            ((previous - current) / previous).clamp(0.0, 1.0)
        }
        _ => 0.0,
    }
}

fn overdue(
    recency_days: Option<i32>,
    rhythm_days: Option<f64>,
    config: &ChurnConfig,
) -> Result<f64, ChurnError> {
    let (recency, rhythm) = match (recency_days, rhythm_days) {
        (Some(recency), Some(rhythm)) => (recency, rhythm),
        (None, None) => return Ok(0.0),
        _ => {
            return Err(ChurnError::InvalidRecency {
                reason: "recency and rhythm must be given together",
            });
        }
    };
    if recency < 0 {
        return Err(ChurnError::InvalidRecency {
            reason: "recency must not be negative",
        });
    }
    if !(rhythm.is_finite() && rhythm > 0.0) {
        return Err(ChurnError::InvalidRecency {
            reason: "rhythm must be a positive number of days",
        });
    }
    let in_rhythms = f64::from(recency) / rhythm;
    let span = config.overdue_full_rhythms - config.overdue_onset_rhythms;
    Ok(((in_rhythms - config.overdue_onset_rhythms) / span).clamp(0.0, 1.0))
}

/// `(before - now) / before` in `[0, 1]`; 0 when there was nothing before.
fn relative_fall(before: u32, now: u32) -> f64 {
    if before == 0 {
        return 0.0;
    }
    ((f64::from(before) - f64::from(now)) / f64::from(before)).clamp(0.0, 1.0)
}

fn saturating_share(count: u32, full: u32) -> f64 {
    (f64::from(count) / f64::from(full)).min(1.0)
}

fn refunds(input: &ChurnInput, config: &ChurnConfig) -> f64 {
    // Refunds with no orders or no spend in the period (refunds of older
    // orders) are the worst case of a rate, not a division by zero.
    let rate = |part: f64, whole: f64| {
        if part <= 0.0 {
            0.0
        } else if whole <= 0.0 {
            1.0
        } else {
            part / whole
        }
    };
    let by_count = rate(f64::from(input.refunds), f64::from(input.orders));
    let by_amount = rate(input.refunded_minor as f64, input.spent_minor as f64);
    (by_count.max(by_amount) / config.full_refund_rate).clamp(0.0, 1.0)
}

/// The value at risk: `value * score / 100` in minor units, rounded toward
/// zero. The value is any non-negative value figure of the caller's choice
/// (predictive CLV over a horizon, usually).
pub fn value_at_risk(value_minor: i64, risk_score: u8) -> Result<i64, ChurnError> {
    check_non_negative("value_minor", value_minor)?;
    if risk_score > 100 {
        return Err(ChurnError::ScoreOutOfRange { score: risk_score });
    }
    let at_risk = i128::from(value_minor) * i128::from(risk_score) / 100;
    // At most value_minor, which is an i64.
    Ok(i64::try_from(at_risk).unwrap_or(i64::MAX))
}

/// A member's value and churn risk, for ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberValueRisk {
    /// The member.
    pub member_id: u128,
    /// The value figure, minor units (predictive CLV, usually).
    pub value_minor: i64,
    /// The churn risk score, 0..=100.
    pub risk_score: u8,
}

/// One row of the value-at-risk ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueAtRisk {
    /// The member.
    pub member_id: u128,
    /// The value figure, minor units.
    pub value_minor: i64,
    /// The churn risk score.
    pub risk_score: u8,
    /// `value * risk / 100`, minor units.
    pub value_at_risk_minor: i64,
}

/// The `top_n` members with a risk score of at least `min_risk_score`,
/// by value at risk, largest first; equal values at risk in ascending
/// member id, so the ranking is the same on every run.
pub fn rank_value_at_risk(
    members: &[MemberValueRisk],
    min_risk_score: u8,
    top_n: usize,
) -> Result<Vec<ValueAtRisk>, ChurnError> {
    let mut rows = Vec::new();
    for member in members {
        let value_at_risk_minor = value_at_risk(member.value_minor, member.risk_score)?;
        if member.risk_score >= min_risk_score {
            rows.push(ValueAtRisk {
                member_id: member.member_id,
                value_minor: member.value_minor,
                risk_score: member.risk_score,
                value_at_risk_minor,
            });
        }
    }
    let order = |a: &ValueAtRisk, b: &ValueAtRisk| {
        b.value_at_risk_minor
            .cmp(&a.value_at_risk_minor)
            .then(a.member_id.cmp(&b.member_id))
    };
    if top_n < rows.len() {
        if top_n == 0 {
            return Ok(Vec::new());
        }
        rows.select_nth_unstable_by(top_n - 1, order);
        rows.truncate(top_n);
    }
    rows.sort_unstable_by(order);
    Ok(rows)
}
