//! Next best offer: the rewards a member can afford, by affinity.

use std::collections::HashMap;

use super::build::RecommendError;
use super::serve::{Recommendation, RecommendationSource};

/// A reward of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reward {
    /// The reward.
    pub reward_id: u64,
    /// Points it costs, not negative.
    pub points_cost: i64,
    /// The item it gives, if it is an item.
    pub item: Option<u32>,
    /// Its category; when absent, the category of its item (if any).
    pub category: Option<u32>,
}

/// How close a reward is to what the member buys, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Affinity {
    /// The reward's item is among the member's co-purchase
    /// recommendations, at this position (0 = first).
    RecommendedItem {
        /// Position in the recommendations.
        rank: usize,
    },
    /// The member bought the reward's item.
    BoughtItem,
    /// A recommended item is in the reward's category; position of the
    /// best one.
    RecommendedCategory {
        /// Position of the best recommended item of the category.
        rank: usize,
    },
    /// The member bought an item of the reward's category.
    BoughtCategory,
    /// None of the above.
    NoAffinity,
}

/// A reward the member can afford, with why it ranks where it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    /// The reward.
    pub reward_id: u64,
    /// Its points cost.
    pub points_cost: i64,
    /// The member's affinity with it.
    pub affinity: Affinity,
}

/// The rewards a member can afford (`points_cost <= points_balance`), best
/// first, at most `limit` of them.
///
/// Order: by [`Affinity`] (recommended item, by its position in the
/// recommendations; bought item; recommended category; bought category;
/// none), then by points cost, highest first (among equally relevant
/// rewards the most valuable one the balance allows is the better
/// offer), then by reward id. Recommendations are the member's list from
/// [`CoPurchaseModel::recommend`](super::CoPurchaseModel::recommend):
/// only its co-purchase items count, not the popular fill, which says
/// nothing about this member. `item_categories[item]` is the category of
/// an item (an empty slice: no categories; items beyond it have none).
pub fn next_best_offers(
    points_balance: i64,
    rewards: &[Reward],
    recommended: &[Recommendation],
    bought_items: &[u32],
    item_categories: &[u32],
    limit: usize,
) -> Result<Vec<Offer>, RecommendError> {
    if let Some(reward) = rewards.iter().find(|reward| reward.points_cost < 0) {
        return Err(RecommendError::NegativeRewardCost {
            reward_id: reward.reward_id,
            points_cost: reward.points_cost,
        });
    }
    let category_of = |item: u32| item_categories.get(item as usize).copied();

    // Best (lowest) recommendation position per item and per category.
    let mut recommended_items: HashMap<u32, usize> = HashMap::new();
    let mut recommended_categories: HashMap<u32, usize> = HashMap::new();
    let personal = recommended
        .iter()
        .filter(|r| r.source == RecommendationSource::CoPurchase);
    for (rank, recommendation) in personal.enumerate() {
        recommended_items.entry(recommendation.item).or_insert(rank);
        if let Some(category) = category_of(recommendation.item) {
            recommended_categories.entry(category).or_insert(rank);
        }
    }
    let mut bought: Vec<u32> = bought_items.to_vec();
    bought.sort_unstable();
    bought.dedup();
    let mut bought_categories: Vec<u32> = bought.iter().filter_map(|&i| category_of(i)).collect();
    bought_categories.sort_unstable();
    bought_categories.dedup();

    let affinity = |reward: &Reward| {
        if let Some(item) = reward.item {
            if let Some(&rank) = recommended_items.get(&item) {
                return Affinity::RecommendedItem { rank };
            }
            if bought.binary_search(&item).is_ok() {
                return Affinity::BoughtItem;
            }
        }
        let category = reward
            .category
            .or_else(|| reward.item.and_then(category_of));
        if let Some(category) = category {
            if let Some(&rank) = recommended_categories.get(&category) {
                return Affinity::RecommendedCategory { rank };
            }
            if bought_categories.binary_search(&category).is_ok() {
                return Affinity::BoughtCategory;
            }
        }
        Affinity::NoAffinity
    };

    let mut offers: Vec<Offer> = rewards
        .iter()
        .filter(|reward| reward.points_cost <= points_balance)
        .map(|reward| Offer {
            reward_id: reward.reward_id,
            points_cost: reward.points_cost,
            affinity: affinity(reward),
        })
        .collect();
    offers.sort_unstable_by(|a, b| {
        a.affinity
            .cmp(&b.affinity)
            .then(b.points_cost.cmp(&a.points_cost))
            .then(a.reward_id.cmp(&b.reward_id))
    });
    offers.truncate(limit);
    Ok(offers)
}
