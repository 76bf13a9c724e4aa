//! Historical CLV: what members have been worth, projected over an expected
//! lifespan, per member and per segment.
//!
//! CLV = average order value × purchase frequency × expected lifespan, with
//! - average order value = spend / orders over the observation window,
//! - purchase frequency = orders per year: orders / (window days / 365.25),
//! - expected lifespan in years: a configured default, or 1 / annual churn
//!   rate of the member's segment, where the annual churn rate is the share
//!   of the segment's members who churned during the window divided by the
//!   window in years (falling back to the default when nobody churned).
//!
//! A member's CLV is therefore their spend per year × the lifespan, and a
//! segment's (its average order value × its orders per member-year × its
//! lifespan) is the mean of its members'. Money is in minor units.

use std::collections::BTreeMap;

use super::ClvError;

/// Days in a year, for annualising a window.
pub const DAYS_PER_YEAR: f64 = 365.25;

/// How the expected lifespan is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Lifespan {
    /// The same configured lifespan for everyone, in years.
    Years(f64),
    /// 1 / the segment's observed annual churn rate; `default_years` for a
    /// segment where nobody churned.
    FromChurn {
        /// Lifespan of a segment without churn, in years.
        default_years: f64,
    },
}

/// The rules of a historical CLV computation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HistoricalClvConfig {
    /// Length of the observation window the orders and spend cover, in days.
    pub window_days: u32,
    /// How the expected lifespan is chosen.
    pub lifespan: Lifespan,
}

/// One member's history over the observation window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoricalMember<K> {
    /// The segment the member belongs to.
    pub segment: K,
    /// Orders in the window.
    pub orders: u64,
    /// Spend in the window, minor units; never negative.
    pub spend_minor: i64,
    /// Whether the member churned during the window (the caller's rule).
    pub churned: bool,
}

/// A segment's historical CLV and the figures it is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentHistoricalClv<K> {
    /// The segment.
    pub segment: K,
    /// Members in the segment.
    pub members: u64,
    /// Their orders.
    pub orders: u64,
    /// Their spend, minor units.
    pub spend_minor: i64,
    /// Spend per order, minor units; 0 without orders.
    pub average_order_value_minor: f64,
    /// Orders per member per year.
    pub orders_per_member_year: f64,
    /// Members churned per member per year; None unless the lifespan comes
    /// from churn.
    pub annual_churn_rate: Option<f64>,
    /// Expected lifespan used, in years.
    pub lifespan_years: f64,
    /// Average order value × orders per member-year × lifespan, minor units.
    pub clv_minor: f64,
}

/// Historical CLV of every member (in input order) and of every segment
/// (sorted by segment key).
#[derive(Debug, Clone, PartialEq)]
pub struct HistoricalClv<K> {
    /// Per member, aligned with the input: minor units.
    pub members: Vec<f64>,
    /// Per segment, sorted by key.
    pub segments: Vec<SegmentHistoricalClv<K>>,
}

#[derive(Default)]
struct SegmentTotals {
    members: u64,
    orders: u64,
    spend_minor: i64,
    churned: u64,
}

/// Computes historical CLV per member and per segment (see the module doc
/// for the definition). Fails on a zero-day window, a lifespan that is not
/// finite and positive, a negative spend, or overflowing totals.
pub fn historical_clv<K: Ord + Clone>(
    members: &[HistoricalMember<K>],
    config: &HistoricalClvConfig,
) -> Result<HistoricalClv<K>, ClvError> {
    if config.window_days == 0 {
        return Err(ClvError::InvalidArgument(
            "observation window must have at least one day",
        ));
    }
    let configured_years = match config.lifespan {
        Lifespan::Years(years) => years,
        Lifespan::FromChurn { default_years } => default_years,
    };
    if !(configured_years.is_finite() && configured_years > 0.0) {
        return Err(ClvError::InvalidArgument(
            "lifespan must be finite and positive",
        ));
    }
    let window_years = f64::from(config.window_days) / DAYS_PER_YEAR;

    let mut totals: BTreeMap<&K, SegmentTotals> = BTreeMap::new();
    for member in members {
        if member.spend_minor < 0 {
            return Err(ClvError::InvalidArgument("negative member spend"));
        }
        let segment = totals.entry(&member.segment).or_default();
        segment.members = segment.members.checked_add(1).ok_or(ClvError::Overflow)?;
        segment.orders = segment
            .orders
            .checked_add(member.orders)
            .ok_or(ClvError::Overflow)?;
        segment.spend_minor = segment
            .spend_minor
            .checked_add(member.spend_minor)
            .ok_or(ClvError::Overflow)?;
        segment.churned += u64::from(member.churned);
    }

    let segments: Vec<SegmentHistoricalClv<K>> = totals
        .into_iter()
        .map(|(segment, t)| {
            segment_clv(
                segment.clone(),
                &t,
                config.lifespan,
                configured_years,
                window_years,
            )
        })
        .collect();
    let member_clv = members
        .iter()
        .map(|member| {
            let lifespan_years = segments
                .binary_search_by(|s| s.segment.cmp(&member.segment))
                .map(|index| segments[index].lifespan_years)
                .unwrap_or(configured_years);
            member.spend_minor as f64 / window_years * lifespan_years
        })
        .collect();
    Ok(HistoricalClv {
        members: member_clv,
        segments,
    })
}

fn segment_clv<K>(
    segment: K,
    totals: &SegmentTotals,
    lifespan: Lifespan,
    configured_years: f64,
    window_years: f64,
) -> SegmentHistoricalClv<K> {
    let members = totals.members as f64;
    let average_order_value_minor = if totals.orders == 0 {
        0.0
    } else {
        totals.spend_minor as f64 / totals.orders as f64
    };
    let orders_per_member_year = totals.orders as f64 / (members * window_years);
    let annual_churn_rate = match lifespan {
        Lifespan::Years(_) => None,
        Lifespan::FromChurn { .. } => Some(totals.churned as f64 / members / window_years),
    };
    let lifespan_years = match annual_churn_rate {
        Some(rate) if rate > 0.0 => 1.0 / rate,
        _ => configured_years,
    };
    SegmentHistoricalClv {
        segment,
        members: totals.members,
        orders: totals.orders,
        spend_minor: totals.spend_minor,
        average_order_value_minor,
        orders_per_member_year,
        annual_churn_rate,
        lifespan_years,
        clv_minor: average_order_value_minor * orders_per_member_year * lifespan_years,
    }
}
