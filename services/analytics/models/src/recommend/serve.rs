//! Serving one member: neighbour scores, recent-purchase exclusion and the
//! most-popular fallback.

use super::build::{CoPurchaseModel, RecommendError};

/// One purchase of the member being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemberPurchase {
    /// Day of the purchase (days since 1970-01-01).
    pub day: i32,
    /// The item.
    pub item: u32,
}

/// How recommendations are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeConfig {
    /// Items bought within this many days up to the as-of day (as-of day
    /// included: 30 means days `as_of - 29 ..= as_of`) are never
    /// recommended; 0 excludes nothing. Must not be negative.
    pub exclude_recent_days: i32,
    /// Recommendations returned.
    pub top_n: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            exclude_recent_days: 30,
            top_n: 10,
        }
    }
}

/// Where a recommendation came from, and so what its score means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecommendationSource {
    /// Neighbours of the member's items; the score is the summed cosine.
    CoPurchase,
    /// The most-popular list; the score is the item's distinct buyers.
    Popular,
}

/// One recommended item.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recommendation {
    /// The item.
    pub item: u32,
    /// Summed similarity, or distinct buyers for popular items.
    pub score: f64,
    /// Which of the two.
    pub source: RecommendationSource,
}

impl CoPurchaseModel {
    /// Recommendations for one member from their own purchases.
    ///
    /// Each of the member's most recent distinct items (at most the
    /// model's M, as in the build) adds the similarity of each of its
    /// neighbours to that neighbour's score; candidates are ranked by
    /// summed similarity, ties by item index. Items bought within the last
    /// `exclude_recent_days` are never recommended (they still count as
    /// sources); items bought before that window can come back (refills).
    /// When the neighbours give fewer than `top_n` items, including a
    /// member with no history, the list is filled from the most popular
    /// items, with the same exclusion. Cost: O(M K log(M K)), no
    /// allocation proportional to the catalogue.
    pub fn recommend(
        &self,
        purchases: &[MemberPurchase],
        as_of: i32,
        config: &ServeConfig,
    ) -> Result<Vec<Recommendation>, RecommendError> {
        let history = MemberHistory::new(self, purchases, as_of, config)?;
        // Keyed by item, then by position: the keys are distinct, so an
        // unstable sort orders each item's similarities by source and the
        // sum is the same on every call. Excluded items are never summed.
        let mut scored: Vec<(u64, f64)> =
            Vec::with_capacity(history.recent_items.len() * self.config.neighbours_per_item);
        for &source in &history.recent_items {
            for neighbour in self.neighbours(source) {
                if history.is_excluded(neighbour.item) {
                    continue;
                }
                let key = (u64::from(neighbour.item) << 32) | scored.len() as u64;
                scored.push((key, neighbour.similarity));
            }
        }
        scored.sort_unstable_by_key(|&(key, _)| key);
        let mut merged: Vec<(u32, f64)> = Vec::with_capacity(scored.len());
        for (key, similarity) in scored {
            let item = (key >> 32) as u32;
            match merged.last_mut() {
                Some((last, sum)) if *last == item => *sum += similarity,
                _ => merged.push((item, similarity)),
            }
        }
        let by_score = |a: &(u32, f64), b: &(u32, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if config.top_n == 0 {
            merged.clear();
        } else if merged.len() > config.top_n {
            merged.select_nth_unstable_by(config.top_n - 1, by_score);
            merged.truncate(config.top_n);
        }
        merged.sort_unstable_by(by_score);

        let mut recommendations: Vec<Recommendation> = merged
            .into_iter()
            .map(|(item, score)| Recommendation {
                item,
                score,
                source: RecommendationSource::CoPurchase,
            })
            .collect();
        if recommendations.len() < config.top_n {
            let mut chosen: Vec<u32> = recommendations.iter().map(|r| r.item).collect();
            chosen.sort_unstable();
            let fill = self.popular_for(&history, config.top_n - recommendations.len(), &chosen);
            recommendations.extend(fill);
        }
        Ok(recommendations)
    }

    /// The most-popular baseline for one member: the `top_n` items with
    /// the most distinct buyers, ties by item index, leaving out what the
    /// member bought within `exclude_recent_days` (as [`recommend`]
    /// does, so the two compare fairly).
    ///
    /// [`recommend`]: CoPurchaseModel::recommend
    pub fn most_popular(
        &self,
        purchases: &[MemberPurchase],
        as_of: i32,
        config: &ServeConfig,
    ) -> Result<Vec<Recommendation>, RecommendError> {
        let history = MemberHistory::new(self, purchases, as_of, config)?;
        Ok(self.popular_for(&history, config.top_n, &[]))
    }

    /// Up to `count` popular items, skipping the excluded and the already
    /// `chosen` (sorted) ones.
    fn popular_for(
        &self,
        history: &MemberHistory,
        count: usize,
        chosen: &[u32],
    ) -> Vec<Recommendation> {
        self.popular_items
            .iter()
            .copied()
            .filter(|&item| !history.is_excluded(item) && chosen.binary_search(&item).is_err())
            .take(count)
            .map(|item| Recommendation {
                item,
                score: f64::from(self.buyers(item)),
                source: RecommendationSource::Popular,
            })
            .collect()
    }
}

/// The member's purchases as the serving rules need them.
struct MemberHistory {
    /// Distinct items, most recently bought first (ties by item), at most M.
    recent_items: Vec<u32>,
    /// Items bought within the exclusion window, sorted.
    excluded: Vec<u32>,
}

impl MemberHistory {
    fn new(
        model: &CoPurchaseModel,
        purchases: &[MemberPurchase],
        as_of: i32,
        config: &ServeConfig,
    ) -> Result<Self, RecommendError> {
        if config.exclude_recent_days < 0 {
            return Err(RecommendError::InvalidConfig {
                reason: "exclude_recent_days must not be negative",
            });
        }
        for purchase in purchases {
            if purchase.item >= model.item_count {
                return Err(RecommendError::ItemOutOfRange {
                    item: purchase.item,
                    item_count: model.item_count,
                });
            }
            if purchase.day > as_of {
                return Err(RecommendError::PurchaseAfterAsOf {
                    day: purchase.day,
                    as_of,
                });
            }
        }
        // Latest purchase day per item.
        let mut latest: Vec<MemberPurchase> = purchases.to_vec();
        latest.sort_unstable_by(|a, b| a.item.cmp(&b.item).then(b.day.cmp(&a.day)));
        latest.dedup_by_key(|purchase| purchase.item);

        let window = i64::from(config.exclude_recent_days);
        let mut excluded: Vec<u32> = latest
            .iter()
            .filter(|purchase| i64::from(as_of) - i64::from(purchase.day) < window)
            .map(|purchase| purchase.item)
            .collect();
        excluded.sort_unstable();

        latest.sort_unstable_by(|a, b| b.day.cmp(&a.day).then(a.item.cmp(&b.item)));
        latest.truncate(model.config.max_items_per_member);
        Ok(Self {
            recent_items: latest.into_iter().map(|purchase| purchase.item).collect(),
            excluded,
        })
    }

    fn is_excluded(&self, item: u32) -> bool {
        self.excluded.binary_search(&item).is_ok()
    }
}
