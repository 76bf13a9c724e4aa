//! From a customer's purchases to the (frequency, recency, age, spend)
//! summary the BG/NBD and Gamma-Gamma models take, and the compression of a
//! population's summaries into unique rows with a count.
//!
//! Repeat purchases are counted per distinct purchase day, as in Fader,
//! Hardie and Lee (2005) and the CDNOW summaries published with them: the
//! purchases of one day are one transaction whose value is their sum.

use super::ClvError;

/// Days in a week: the models' unit of time is the week.
pub const DAYS_PER_WEEK: f64 = 7.0;

/// One purchase of a customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purchase {
    /// Day of the purchase, days since 1970-01-01.
    pub day: i32,
    /// Amount paid, in minor units of the currency (cents); never negative.
    pub amount_minor: i64,
}

/// A customer's purchase history over the calibration period, in whole days.
///
/// Weeks are derived on demand (`days / 7`, fractional), so that equal
/// histories compare equal exactly and compress into one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CustomerSummary {
    /// x: the number of distinct purchase days after the first one.
    pub frequency: u32,
    /// Days from the first to the last purchase day (t_x in days).
    pub recency_days: u32,
    /// Days from the first purchase day to the calibration end day (T in days).
    pub age_days: u32,
    /// Total spend of the repeat days (every day but the first), minor units.
    pub repeat_spend_minor: i64,
}

impl CustomerSummary {
    /// t_x: time of the last purchase since the first, in weeks.
    pub fn recency_weeks(&self) -> f64 {
        f64::from(self.recency_days) / DAYS_PER_WEEK
    }

    /// T: time from the first purchase to the calibration end, in weeks.
    pub fn age_weeks(&self) -> f64 {
        f64::from(self.age_days) / DAYS_PER_WEEK
    }

    /// m: mean spend of a repeat purchase day in minor units; 0 when x = 0.
    pub fn monetary_minor(&self) -> f64 {
        if self.frequency == 0 {
            0.0
        } else {
            self.repeat_spend_minor as f64 / f64::from(self.frequency)
        }
    }
}

/// Summarises one customer's purchases, given in any order, up to and
/// including `end_day` (the last day of the calibration period).
///
/// Purchases after `end_day` are ignored. Purchases of one day are summed
/// into one transaction; zero-value purchases still make their day a
/// purchase day. Fails on a negative amount among the counted purchases, on
/// a customer with no purchase by `end_day`, and on spend overflow.
pub fn summarize_customer(
    purchases: &[Purchase],
    end_day: i32,
) -> Result<CustomerSummary, ClvError> {
    let mut counted: Vec<Purchase> = Vec::with_capacity(purchases.len());
    for purchase in purchases.iter().filter(|p| p.day <= end_day) {
        if purchase.amount_minor < 0 {
            return Err(ClvError::NegativeAmount {
                day: purchase.day,
                amount_minor: purchase.amount_minor,
            });
        }
        counted.push(*purchase);
    }
    counted.sort_unstable_by_key(|p| p.day);
    let (Some(first), Some(last)) = (counted.first(), counted.last()) else {
        return Err(ClvError::NoPurchaseInCalibration);
    };
    let (first_day, last_day) = (first.day, last.day);

    let mut distinct_days: u32 = 1;
    let mut repeat_spend_minor: i64 = 0;
    let mut previous_day = first_day;
    for purchase in counted.iter().skip_while(|p| p.day == first_day) {
        if purchase.day != previous_day {
            distinct_days = distinct_days.checked_add(1).ok_or(ClvError::Overflow)?;
            previous_day = purchase.day;
        }
        repeat_spend_minor = repeat_spend_minor
            .checked_add(purchase.amount_minor)
            .ok_or(ClvError::Overflow)?;
    }

    Ok(CustomerSummary {
        frequency: distinct_days - 1,
        recency_days: day_span(first_day, last_day)?,
        age_days: day_span(first_day, end_day)?,
        repeat_spend_minor,
    })
}

/// Days from `from` to `to` (`to >= from`), as u32.
fn day_span(from: i32, to: i32) -> Result<u32, ClvError> {
    u32::try_from(i64::from(to) - i64::from(from)).map_err(|_| ClvError::Overflow)
}

/// One unique (x, t_x, T) history and how many customers share it: they
/// need one BG/NBD likelihood term between them, weighted by `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WeightedTriple {
    /// x: repeat purchase days.
    pub frequency: u32,
    /// t_x in days.
    pub recency_days: u32,
    /// T in days.
    pub age_days: u32,
    /// Customers with exactly this history.
    pub count: u64,
}

impl WeightedTriple {
    /// t_x in weeks.
    pub fn recency_weeks(&self) -> f64 {
        f64::from(self.recency_days) / DAYS_PER_WEEK
    }

    /// T in weeks.
    pub fn age_weeks(&self) -> f64 {
        f64::from(self.age_days) / DAYS_PER_WEEK
    }
}

/// Compresses summaries into their unique (x, t_x, T) triples with counts,
/// sorted by (x, t_x, T) so that fits over them are deterministic.
pub fn compress_triples(summaries: &[CustomerSummary]) -> Vec<WeightedTriple> {
    let mut keys: Vec<(u32, u32, u32)> = summaries
        .iter()
        .map(|s| (s.frequency, s.recency_days, s.age_days))
        .collect();
    keys.sort_unstable();
    run_lengths(&keys)
        .map(
            |((frequency, recency_days, age_days), count)| WeightedTriple {
                frequency,
                recency_days,
                age_days,
                count,
            },
        )
        .collect()
}

/// One unique (x, repeat spend) pair and how many customers share it: one
/// Gamma-Gamma likelihood term between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WeightedSpend {
    /// x: repeat purchase days.
    pub frequency: u32,
    /// Total spend of the repeat days, minor units.
    pub repeat_spend_minor: i64,
    /// Customers with exactly this pair.
    pub count: u64,
}

impl WeightedSpend {
    /// m: mean spend per repeat day in minor units; 0 when x = 0.
    pub fn monetary_minor(&self) -> f64 {
        if self.frequency == 0 {
            0.0
        } else {
            self.repeat_spend_minor as f64 / f64::from(self.frequency)
        }
    }
}

/// Compresses summaries into unique (x, repeat spend) pairs with counts,
/// sorted. Customers with x = 0 or no repeat spend are kept: the
/// Gamma-Gamma fit skips them and reports how many it skipped.
pub fn compress_spend(summaries: &[CustomerSummary]) -> Vec<WeightedSpend> {
    let mut keys: Vec<(u32, i64)> = summaries
        .iter()
        .map(|s| (s.frequency, s.repeat_spend_minor))
        .collect();
    keys.sort_unstable();
    run_lengths(&keys)
        .map(|((frequency, repeat_spend_minor), count)| WeightedSpend {
            frequency,
            repeat_spend_minor,
            count,
        })
        .collect()
}

/// Runs of equal values in a sorted slice, as (value, run length).
fn run_lengths<K: Copy + PartialEq>(sorted: &[K]) -> impl Iterator<Item = (K, u64)> + '_ {
    sorted
        .chunk_by(|left, right| left == right)
        .map(|run| (run[0], run.len() as u64))
}
