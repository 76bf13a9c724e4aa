//! One member's value and outlook from their facts, as plain functions:
//! BG/NBD probability alive and expected purchases, Gamma-Gamma spend and
//! predictive CLV over a horizon (weekly discounting of the programme's
//! annual rate), historical CLV (spend over the active window per year x
//! the expected lifespan), lifecycle stage and churn risk, all from
//! `laurel_analytics_models`.

use laurel_analytics_models::{
    clv::{
        self, CustomerSummary, DiscountedHorizon, HistoricalClvConfig, HistoricalMember, Lifespan,
    },
    lifecycle::{
        self, LifecycleConfig, LifecycleInput, LifecycleStage,
        churn::{self, ChurnConfig, ChurnInput, ChurnRisk},
    },
};
use uuid::Uuid;

use crate::{clv::Model, settings::Settings};

/// Weeks of a predictive CLV unless the caller asks otherwise.
pub const DEFAULT_HORIZON_WEEKS: u32 = 52;
/// Days of each of the two windows churn compares orders in.
pub const FREQUENCY_WINDOW_DAYS: i32 = 90;

/// What the facts say about a member (days since 1970-01-01).
#[derive(Clone, Debug, Default)]
pub struct MemberFacts {
    /// Member.
    pub member: Uuid,
    /// First and last purchase day, when any.
    pub first_day: Option<i32>,
    /// Last purchase day.
    pub last_day: Option<i32>,
    /// Distinct purchase days.
    pub purchase_days: u32,
    /// Orders.
    pub orders: u32,
    /// Spend before refunds.
    pub gross_minor: i64,
    /// Refunded.
    pub refunded_minor: i64,
    /// Refunds.
    pub refunds: u32,
    /// Net spend of the first purchase day.
    pub first_day_spend: i64,
    /// Negative ratings and detractor scores.
    pub negative_feedback: u32,
    /// Complaints.
    pub complaints: u32,
    /// Orders in the last [`FREQUENCY_WINDOW_DAYS`].
    pub recent_orders: u32,
    /// Orders in the window before.
    pub prior_orders: u32,
    /// Orders within the active window.
    pub window_orders: u64,
    /// Net spend within the active window.
    pub window_spend: i64,
    /// Stage at the previous scoring (proto value).
    pub previous_stage: Option<i16>,
    /// Probability alive at the previous scoring.
    pub previous_alive: Option<f64>,
    /// RFM segment in the latest run (proto value).
    pub segment: Option<i16>,
}

/// A member's value and outlook.
#[derive(Clone, Debug)]
pub struct Assessment {
    /// Lifecycle stage.
    pub stage: LifecycleStage,
    /// Rhythm used, days.
    pub rhythm_days: f64,
    /// Days since the last purchase (0 without one).
    pub recency_days: i32,
    /// Probability alive, when a model exists.
    pub alive: Option<f64>,
    /// Expected purchase days over the horizon.
    pub expected_purchases: f64,
    /// Predictive CLV over the horizon, minor units.
    pub predictive_clv: i64,
    /// Historical CLV, minor units.
    pub historical_clv: i64,
    /// Churn risk.
    pub churn: ChurnRisk,
    /// Predictive CLV x risk.
    pub value_at_risk: i64,
}

/// The proto value of a lifecycle stage.
pub fn stage_pb(stage: LifecycleStage) -> i16 {
    match stage {
        LifecycleStage::Prospect => 1,
        LifecycleStage::New => 2,
        LifecycleStage::Active => 3,
        LifecycleStage::AtRisk => 4,
        LifecycleStage::Dormant => 5,
        LifecycleStage::Churned => 6,
    }
}

fn to_minor(x: f64) -> i64 {
    if x.is_finite() {
        x.round().clamp(0.0, 1e15) as i64
    } else {
        0
    }
}

/// The BG/NBD summary of a member up to `as_of`.
fn summary(f: &MemberFacts, as_of: i32) -> Option<CustomerSummary> {
    let (first, last) = (f.first_day?, f.last_day?);
    let x = f.purchase_days.checked_sub(1)?;
    Some(CustomerSummary {
        frequency: x,
        recency_days: u32::try_from(last - first).ok()?,
        age_days: u32::try_from(as_of.max(last) - first).ok()?,
        repeat_spend_minor: if x == 0 {
            0
        } else {
            (f.gross_minor - f.refunded_minor - f.first_day_spend).max(0)
        },
    })
}

/// Assesses every member (historical CLV needs the batch's window).
pub fn assess_all(
    members: &[MemberFacts],
    s: &Settings,
    model: Option<&Model>,
    as_of: i32,
    horizon_weeks: u32,
) -> anyhow::Result<Vec<Assessment>> {
    let historical = clv::historical_clv(
        &members
            .iter()
            .map(|f| HistoricalMember {
                segment: f.segment.unwrap_or(0),
                orders: f.window_orders,
                spend_minor: f.window_spend.max(0),
                churned: false,
            })
            .collect::<Vec<_>>(),
        &HistoricalClvConfig {
            window_days: s.active_days.max(1) as u32,
            lifespan: Lifespan::Years(s.lifespan_years),
        },
    )?;
    let lifecycle_config = LifecycleConfig {
        default_rhythm_days: f64::from(s.default_rhythm_days),
        ..LifecycleConfig::default()
    };
    let weekly_rate = (1.0 + f64::from(s.annual_discount_bp) / 10_000.0).powf(1.0 / 52.0) - 1.0;
    let horizon = DiscountedHorizon::weeks(horizon_weeks, weekly_rate);
    members
        .iter()
        .zip(historical.members)
        .map(|(f, historical)| {
            assess(
                f,
                model,
                as_of,
                horizon_weeks,
                &horizon,
                &lifecycle_config,
                historical,
            )
        })
        .collect()
}

fn assess(
    f: &MemberFacts,
    model: Option<&Model>,
    as_of: i32,
    horizon_weeks: u32,
    horizon: &DiscountedHorizon,
    lifecycle_config: &LifecycleConfig,
    historical: f64,
) -> anyhow::Result<Assessment> {
    let as_of = f.last_day.map_or(as_of, |l| as_of.max(l));
    let summary = summary(f, as_of);
    let (mut alive, mut expected, mut predictive) = (None, 0.0, 0.0);
    if let (Some(m), Some(c)) = (model, summary) {
        alive = Some(m.bg.probability_alive(c.frequency, c.recency_weeks(), c.age_weeks())?);
        expected = m.bg.conditional_expected_purchases(
            f64::from(horizon_weeks),
            c.frequency,
            c.recency_weeks(),
            c.age_weeks(),
        )?;
        if let Some(gg) = &m.gg {
            predictive = clv::predictive_clv(&m.bg, gg, &c, horizon).unwrap_or(0.0);
        }
    }
    let life = lifecycle::lifecycle_stage(
        &LifecycleInput {
            first_purchase_day: f.first_day,
            last_purchase_day: f.last_day,
            purchases: f.purchase_days,
            p_alive: alive,
        },
        as_of,
        lifecycle_config,
    )?;
    let rhythm_days = life.rhythm.map_or(0.0, |r| r.days);
    let churn = churn::churn_risk(
        &ChurnInput {
            p_alive_previous: f.previous_alive,
            p_alive_current: alive,
            recency_days: life.recency_days,
            rhythm_days: life.rhythm.map(|r| r.days),
            orders_recent_window: f.recent_orders,
            orders_prior_window: f.prior_orders,
            orders: f.orders,
            spent_minor: f.gross_minor.max(0),
            refunds: f.refunds,
            refunded_minor: f.refunded_minor.max(0),
            negative_ratings: f.negative_feedback,
            complaints: f.complaints,
        },
        &ChurnConfig::default(),
    )?;
    let predictive_clv = to_minor(predictive);
    Ok(Assessment {
        stage: life.stage,
        rhythm_days,
        recency_days: life.recency_days.unwrap_or(0),
        alive,
        expected_purchases: expected,
        predictive_clv,
        historical_clv: to_minor(historical),
        value_at_risk: churn::value_at_risk(predictive_clv, churn.score)?,
        churn,
    })
}
