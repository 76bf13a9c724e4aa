//! The generated programme: members whose purchases follow the models the
//! service fits, so the fits have something true to find.
//!
//! - Purchase days follow BG/NBD's own story (Fader, Hardie and Lee 2005,
//!   as `services/analytics/models/examples/clv_fit_timing.rs` draws it):
//!   each member's first purchase falls uniformly in the first year of a
//!   two-year period; while alive they buy at a weekly rate drawn from a
//!   gamma (shape r, rate alpha), and after each repeat purchase they drop
//!   out with a probability drawn from a beta (a, b). Alpha is tuned so
//!   that the population makes about the purchases asked for.
//! - Order totals follow Gamma-Gamma: each member's spend rate is drawn
//!   from a gamma (q, gamma), each order from a gamma (p, that rate), in
//!   euros, at least one cent.
//! - Order lines, for recommendations: 1 to 3 per order (50/30/20 %), over
//!   10,000 SKUs in 100 categories of 100; each member has a favourite
//!   category (Zipf-skewed) and buys in it 70 % of the time (Zipf within
//!   it), else a globally popular SKU (Zipf over the catalogue). The
//!   order's total is split over its lines, so lines add up to it.
//!
//! Everything comes from one ChaCha8 stream seeded by the caller, in
//! member order: the same flags give the same programme.

use anyhow::{Result, bail};
use chrono::NaiveDate;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution, Gamma, Zipf};
use uuid::Uuid;

/// First day of the generated period.
pub const FIRST_DAY: NaiveDate = match NaiveDate::from_ymd_opt(2024, 7, 1) {
    Some(day) => day,
    None => panic!("a valid date"),
};
/// Days in the period: two years.
pub const PERIOD_DAYS: i32 = 730;
/// First purchases fall in the first year.
pub const ACQUISITION_DAYS: i32 = 365;
/// Categories in the catalogue.
pub const CATEGORIES: u32 = 100;
/// SKUs per category.
pub const SKUS_PER_CATEGORY: u32 = 100;
/// Share of lines bought in the member's favourite category.
const FAVOURITE_SHARE: f64 = 0.7;
/// A member's orders stop here (a guard; the drawn rates stay far below).
const MAX_ORDERS_PER_MEMBER: usize = 5_000;
/// Members drawn to tune alpha.
const PILOT_MEMBERS: u64 = 20_000;

/// The shapes purchases and spend are drawn from (BG/NBD time in weeks,
/// Gamma-Gamma in euros).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shapes {
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
    pub p: f64,
    pub q: f64,
    pub gamma: f64,
}

impl Shapes {
    /// Alpha still to be tuned; the spend shapes are CDNOW's published ones.
    pub const UNTUNED: Shapes = Shapes {
        r: 0.9,
        alpha: 1.0,
        a: 0.6,
        b: 6.0,
        p: 6.25,
        q: 3.74,
        gamma: 15.44,
    };
}

/// One order of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    /// Days since [`FIRST_DAY`].
    pub day: i32,
    /// Seconds after midnight UTC.
    pub second: u32,
    /// Total, euro cents.
    pub total_minor: i64,
}

/// One order line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    /// Index of its order in the member's orders.
    pub order: u32,
    /// Position in the order.
    pub line: u32,
    /// SKU index; its category is `sku / SKUS_PER_CATEGORY`.
    pub sku: u32,
    pub unit_price_minor: i64,
}

/// A generated member and their purchases, orders in time order.
#[derive(Debug, Clone)]
pub struct Member {
    pub ordinal: u64,
    pub id: Uuid,
    pub orders: Vec<Order>,
    pub lines: Vec<Line>,
}

impl Member {
    /// Distinct purchase days, in order, each with its orders and spend.
    pub fn days(&self) -> Vec<(i32, i64, i64)> {
        let mut out: Vec<(i32, i64, i64)> = Vec::new();
        for o in &self.orders {
            match out.last_mut() {
                Some(last) if last.0 == o.day => {
                    last.1 += 1;
                    last.2 += o.total_minor;
                }
                _ => out.push((o.day, 1, o.total_minor)),
            }
        }
        out
    }
}

/// SKU name.
pub fn sku_name(sku: u32) -> String {
    format!("SKU-{sku:05}")
}

/// Category name of a SKU.
pub fn category_name(sku: u32) -> String {
    format!("CAT-{:03}", sku / SKUS_PER_CATEGORY)
}

/// The drawing machinery for one set of shapes.
pub struct Generator {
    rng: ChaCha8Rng,
    shapes: Shapes,
    line_share: f64,
    /// Gamma(r, 1): a member's rate times alpha.
    rate_unit: Gamma<f64>,
    dropout: Beta<f64>,
    spend_rate: Gamma<f64>,
    order_spend: f64,
    favourite: Zipf<f64>,
    within: Zipf<f64>,
    global: Zipf<f64>,
    next: u64,
}

impl Generator {
    /// A generator of members drawn from `shapes`, seeded by `seed`; a
    /// share `line_share` of orders get lines.
    pub fn new(seed: u64, shapes: Shapes, line_share: f64) -> Result<Self> {
        let err = |what: &str, e: &dyn std::fmt::Display| anyhow::anyhow!("{what}: {e}");
        Ok(Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            shapes,
            line_share,
            rate_unit: Gamma::new(shapes.r, 1.0).map_err(|e| err("r", &e))?,
            dropout: Beta::new(shapes.a, shapes.b).map_err(|e| err("a, b", &e))?,
            spend_rate: Gamma::new(shapes.q, 1.0 / shapes.gamma).map_err(|e| err("q", &e))?,
            order_spend: shapes.p,
            favourite: Zipf::new(f64::from(CATEGORIES), 0.8).map_err(|e| err("zipf", &e))?,
            within: Zipf::new(f64::from(SKUS_PER_CATEGORY), 1.0).map_err(|e| err("zipf", &e))?,
            global: Zipf::new(f64::from(CATEGORIES * SKUS_PER_CATEGORY), 1.0)
                .map_err(|e| err("zipf", &e))?,
            next: 0,
        })
    }

    /// Purchase days of one member (days since [`FIRST_DAY`], with
    /// repeats when two purchases fall on one day): BG/NBD's process.
    fn purchase_days(&mut self) -> Vec<i32> {
        let first = self.rng.random_range(0..ACQUISITION_DAYS);
        let rate_per_week = self.rate_unit.sample(&mut self.rng) / self.shapes.alpha;
        let dropout = self.dropout.sample(&mut self.rng);
        let mut days = vec![first];
        let mut at = f64::from(first);
        while days.len() < MAX_ORDERS_PER_MEMBER {
            // Exponential gaps: 1 - U is in (0, 1], so the log is finite.
            let gap_weeks = -(1.0 - self.rng.random::<f64>()).ln() / rate_per_week;
            at += gap_weeks * 7.0;
            // A zero rate gives an infinite (or NaN) gap: that ends them too.
            if !at.is_finite() || at >= f64::from(PERIOD_DAYS) {
                break;
            }
            days.push(at as i32);
            if self.rng.random::<f64>() < dropout {
                break;
            }
        }
        days
    }

    /// The next member.
    pub fn member(&mut self) -> Member {
        let ordinal = self.next;
        self.next += 1;
        let id = uuid::Builder::from_random_bytes(self.rng.random()).into_uuid();
        let days = self.purchase_days();
        let spend_rate = self.spend_rate.sample(&mut self.rng);
        // Gamma(p, rate ν) has scale 1/ν; a rate of 0 cannot come out of a
        // gamma with a positive shape, but f64 may underflow: take a cent.
        let order_spend = Gamma::new(self.order_spend, 1.0 / spend_rate).ok();
        let favourite = self.favourite.sample(&mut self.rng) as u32 - 1;
        // Same-day orders in time order, so the first is the earliest and
        // lines can name their order by its index.
        let mut slots: Vec<(i32, u32)> = days
            .into_iter()
            .map(|day| (day, self.rng.random_range(8 * 3600..21 * 3600)))
            .collect();
        slots.sort_unstable();
        let mut orders = Vec::with_capacity(slots.len());
        let mut lines = Vec::new();
        for (index, (day, second)) in slots.into_iter().enumerate() {
            let euros = order_spend.map_or(0.0, |g| g.sample(&mut self.rng));
            let total_minor = ((euros * 100.0).round() as i64).max(1);
            orders.push(Order {
                day,
                second,
                total_minor,
            });
            if self.rng.random::<f64>() < self.line_share {
                self.lines(index as u32, total_minor, favourite, &mut lines);
            }
        }
        Member {
            ordinal,
            id,
            orders,
            lines,
        }
    }

    /// 1 to 3 lines adding up to `total_minor`.
    fn lines(&mut self, order: u32, total_minor: i64, favourite: u32, out: &mut Vec<Line>) {
        let count: u32 = match self.rng.random_range(0..10) {
            0..5 => 1,
            5..8 => 2,
            _ => 3,
        };
        let weights: Vec<f64> = (0..count).map(|_| self.rng.random::<f64>() + 0.1).collect();
        let sum: f64 = weights.iter().sum();
        let mut left = total_minor;
        for (line, w) in weights.iter().enumerate() {
            let sku = if self.rng.random::<f64>() < FAVOURITE_SHARE {
                favourite * SKUS_PER_CATEGORY + self.within.sample(&mut self.rng) as u32 - 1
            } else {
                self.global.sample(&mut self.rng) as u32 - 1
            };
            let price = if line as u32 + 1 == count {
                left
            } else {
                ((total_minor as f64 * w / sum) as i64).min(left)
            };
            left -= price;
            out.push(Line {
                order,
                line: line as u32,
                sku,
                unit_price_minor: price,
            });
        }
    }
}

/// Shapes whose alpha makes `members` members buy about `purchases`
/// times: alpha scales every member's rate (rate = Gamma(r, 1) / alpha),
/// so the mean purchases of a fixed pilot draw fall as alpha grows and a
/// bisection on log(alpha) finds it.
pub fn tune(seed: u64, members: u64, purchases: u64) -> Result<Shapes> {
    let target = purchases as f64 / members as f64;
    let mean = |alpha: f64| -> Result<f64> {
        let shapes = Shapes {
            alpha,
            ..Shapes::UNTUNED
        };
        let mut g = Generator::new(seed ^ 0x9e37_79b9, shapes, 0.0)?;
        let total: usize = (0..PILOT_MEMBERS).map(|_| g.purchase_days().len()).sum();
        Ok(total as f64 / PILOT_MEMBERS as f64)
    };
    let (mut low, mut high) = (1e-3f64.ln(), 1e3f64.ln());
    if mean(low.exp())? < target {
        bail!("{target:.1} purchases per member is more than the generator can draw");
    }
    if mean(high.exp())? > target {
        bail!("{target:.2} purchases per member is fewer than the generator draws");
    }
    for _ in 0..40 {
        let mid = (low + high) / 2.0;
        if mean(mid.exp())? > target {
            low = mid;
        } else {
            high = mid;
        }
    }
    Ok(Shapes {
        alpha: ((low + high) / 2.0).exp(),
        ..Shapes::UNTUNED
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw(seed: u64, n: usize, share: f64) -> Vec<Member> {
        let shapes = Shapes {
            alpha: 2.0,
            ..Shapes::UNTUNED
        };
        let mut g = Generator::new(seed, shapes, share).unwrap();
        (0..n).map(|_| g.member()).collect()
    }

    #[test]
    fn the_same_seed_draws_the_same_programme() {
        let (a, b) = (draw(7, 200, 1.0), draw(7, 200, 1.0));
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((x.id, &x.orders, &x.lines), (y.id, &y.orders, &y.lines));
        }
        assert_ne!(draw(8, 1, 1.0)[0].id, a[0].id);
    }

    #[test]
    fn orders_lie_in_the_period_in_time_order_and_start_in_the_first_year() {
        for m in draw(1, 2_000, 0.0) {
            assert!(!m.orders.is_empty(), "everyone makes a first purchase");
            assert!(m.orders[0].day < ACQUISITION_DAYS);
            assert!(m.orders.iter().all(|o| (0..PERIOD_DAYS).contains(&o.day)));
            assert!(
                m.orders
                    .windows(2)
                    .all(|w| (w[0].day, w[0].second) <= (w[1].day, w[1].second))
            );
            assert!(m.orders.iter().all(|o| o.total_minor >= 1));
            assert!(m.lines.is_empty(), "share 0: no lines");
        }
    }

    #[test]
    fn lines_add_up_to_their_order_and_stay_in_the_catalogue() {
        let members = draw(3, 500, 1.0);
        let mut per_order = 0usize;
        for m in &members {
            for (i, o) in m.orders.iter().enumerate() {
                let lines: Vec<&Line> = m.lines.iter().filter(|l| l.order == i as u32).collect();
                assert!((1..=3).contains(&lines.len()));
                let sum: i64 = lines.iter().map(|l| l.unit_price_minor).sum();
                assert_eq!(sum, o.total_minor);
                assert!(lines.iter().all(|l| l.unit_price_minor >= 0));
                assert!(lines.iter().all(|l| l.sku < CATEGORIES * SKUS_PER_CATEGORY));
                per_order += 1;
            }
        }
        assert!(per_order > 500);
    }

    #[test]
    fn days_group_same_day_orders() {
        let m = Member {
            ordinal: 0,
            id: Uuid::nil(),
            orders: vec![
                Order {
                    day: 3,
                    second: 1,
                    total_minor: 100,
                },
                Order {
                    day: 3,
                    second: 2,
                    total_minor: 50,
                },
                Order {
                    day: 9,
                    second: 1,
                    total_minor: 7,
                },
            ],
            lines: vec![],
        };
        assert_eq!(m.days(), [(3, 2, 150), (9, 1, 7)]);
    }

    #[test]
    fn tuning_hits_the_purchases_asked_for() {
        let shapes = tune(5, 1, 10).unwrap();
        let mut g = Generator::new(11, shapes, 0.0).unwrap();
        let n = 20_000;
        let orders: usize = (0..n).map(|_| g.member().orders.len()).sum();
        let mean = orders as f64 / n as f64;
        assert!(
            (mean - 10.0).abs() < 0.5,
            "mean {mean} with alpha {}",
            shapes.alpha
        );
        assert!(
            tune(5, 1, 100_000).is_err(),
            "far beyond what the shapes draw"
        );
    }

    #[test]
    fn names_carry_the_category() {
        assert_eq!(sku_name(4_217), "SKU-04217");
        assert_eq!(category_name(4_217), "CAT-042");
    }
}
