//! Hit rate of the model and of the popularity baseline on each member's
//! held-out last purchase day.

use super::build::{CoPurchaseConfig, CoPurchaseModel, OrderLine, RecommendError};
use super::serve::{MemberPurchase, Recommendation, ServeConfig};

/// Hits of the model and of the most-popular baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HitRates {
    /// Members with at least two purchase days (the ones evaluated).
    pub members_evaluated: u64,
    /// Members whose held-out day had an item in the model's top N.
    pub model_hits: u64,
    /// Members whose held-out day had an item in the popular top N.
    pub popular_hits: u64,
}

impl HitRates {
    /// Share of evaluated members with a model hit (0 when none evaluated).
    pub fn model_hit_rate(&self) -> f64 {
        share(self.model_hits, self.members_evaluated)
    }

    /// Share of evaluated members with a baseline hit (0 when none).
    pub fn popular_hit_rate(&self) -> f64 {
        share(self.popular_hits, self.members_evaluated)
    }
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// A member to evaluate: their training purchases and held-out items.
struct HeldOut {
    training: std::ops::Range<usize>,
    day: i32,
    items: Vec<u32>,
}

/// Leave-last-day-out hit rate at `serve.top_n`.
///
/// Each member's last purchase day is held out; the model and the
/// popularity counts are built from every other line (so lines of members
/// with a single purchase day are left out entirely). Each member with at
/// least two purchase days is then served as of their held-out day from
/// their training purchases ([`CoPurchaseModel::recommend`], with its
/// popular fill, against [`CoPurchaseModel::most_popular`]); a hit is any
/// item of the held-out day among the top N. Items the member bought in
/// the exclusion window before that day cannot be hits for either list.
pub fn evaluate_hit_rate(
    lines: &[OrderLine],
    item_count: u32,
    build: &CoPurchaseConfig,
    serve: &ServeConfig,
) -> Result<HitRates, RecommendError> {
    if let Some(line) = lines.iter().find(|line| line.item >= item_count) {
        return Err(RecommendError::ItemOutOfRange {
            item: line.item,
            item_count,
        });
    }
    let mut sorted = lines.to_vec();
    sorted.sort_unstable_by(|a, b| {
        a.member_id
            .cmp(&b.member_id)
            .then(a.day.cmp(&b.day))
            .then(a.item.cmp(&b.item))
    });

    let mut training: Vec<OrderLine> = Vec::with_capacity(sorted.len());
    let mut held_out: Vec<HeldOut> = Vec::new();
    for member_lines in sorted.chunk_by(|a, b| a.member_id == b.member_id) {
        let (first, last) = match (member_lines.first(), member_lines.last()) {
            (Some(first), Some(last)) => (first.day, last.day),
            _ => continue,
        };
        if first == last {
            continue;
        }
        let split = member_lines.partition_point(|line| line.day < last);
        let start = training.len();
        training.extend_from_slice(&member_lines[..split]);
        let mut items: Vec<u32> = member_lines[split..].iter().map(|line| line.item).collect();
        items.dedup();
        held_out.push(HeldOut {
            training: start..training.len(),
            day: last,
            items,
        });
    }

    let model = CoPurchaseModel::build(&training, item_count, build)?;
    let mut rates = HitRates::default();
    let mut purchases: Vec<MemberPurchase> = Vec::new();
    for member in &held_out {
        purchases.clear();
        purchases.extend(
            training[member.training.clone()]
                .iter()
                .map(|line| MemberPurchase {
                    day: line.day,
                    item: line.item,
                }),
        );
        let hit = |recommended: &[Recommendation]| {
            recommended
                .iter()
                .any(|r| member.items.binary_search(&r.item).is_ok())
        };
        rates.members_evaluated += 1;
        if hit(&model.recommend(&purchases, member.day, serve)?) {
            rates.model_hits += 1;
        }
        if hit(&model.most_popular(&purchases, member.day, serve)?) {
            rates.popular_hits += 1;
        }
    }
    Ok(rates)
}
