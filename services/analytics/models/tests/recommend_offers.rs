//! Next best offer: affordable rewards by affinity, then cost.

use laurel_analytics_models::recommend::{
    Affinity, Offer, RecommendError, Recommendation, RecommendationSource, Reward, next_best_offers,
};

fn reward(reward_id: u64, points_cost: i64, item: Option<u32>, category: Option<u32>) -> Reward {
    Reward {
        reward_id,
        points_cost,
        item,
        category,
    }
}

fn recommended(item: u32, source: RecommendationSource) -> Recommendation {
    Recommendation {
        item,
        score: 1.0,
        source,
    }
}

/// Items 0..=4 in categories 7, 8, 9, 9, 7. The member was recommended
/// item 2 (category 9) then item 4 (category 7) by co-purchase, and item 3
/// as popular fill; they bought item 0 (category 7).
fn offers(balance: i64, rewards: &[Reward], limit: usize) -> Vec<Offer> {
    next_best_offers(
        balance,
        rewards,
        &[
            recommended(2, RecommendationSource::CoPurchase),
            recommended(4, RecommendationSource::CoPurchase),
            recommended(3, RecommendationSource::Popular),
        ],
        &[0, 0],
        &[7, 8, 9, 9, 7],
        limit,
    )
    .unwrap()
}

fn catalogue() -> Vec<Reward> {
    vec![
        reward(1, 500, Some(2), None),  // recommended item, rank 0
        reward(2, 300, Some(0), None),  // bought item
        reward(3, 800, Some(1), None),  // category 8: nothing
        reward(4, 200, None, Some(7)),  // category of item 4: rank 1
        reward(5, 1000, None, None),    // nothing, costliest affordable
        reward(6, 5000, Some(3), None), // unaffordable
        reward(7, 900, None, None),     // nothing
        reward(8, 100, Some(3), None),  // popular fill only; category 9 of item 2: rank 0
    ]
}

#[test]
fn affordable_rewards_rank_by_affinity_then_cost_descending() {
    let ranked = offers(1_000, &catalogue(), 10);
    let expected = vec![
        (1, Affinity::RecommendedItem { rank: 0 }),
        (2, Affinity::BoughtItem),
        (8, Affinity::RecommendedCategory { rank: 0 }),
        (4, Affinity::RecommendedCategory { rank: 1 }),
        (5, Affinity::NoAffinity),
        (7, Affinity::NoAffinity),
        (3, Affinity::NoAffinity),
    ];
    let actual: Vec<(u64, Affinity)> = ranked.iter().map(|o| (o.reward_id, o.affinity)).collect();
    assert_eq!(actual, expected);
}

#[test]
fn the_balance_bounds_the_offers_and_the_limit_cuts_the_list() {
    let ranked = offers(300, &catalogue(), 10);
    let ids: Vec<u64> = ranked.iter().map(|o| o.reward_id).collect();
    assert_eq!(ids, vec![2, 8, 4]);
    assert_eq!(offers(1_000, &catalogue(), 2).len(), 2);
    assert!(offers(50, &catalogue(), 10).is_empty());
    assert!(offers(-10, &catalogue(), 10).is_empty());
}

#[test]
fn a_negative_cost_is_refused() {
    assert_eq!(
        next_best_offers(100, &[reward(9, -1, None, None)], &[], &[], &[], 5).unwrap_err(),
        RecommendError::NegativeRewardCost {
            reward_id: 9,
            points_cost: -1
        }
    );
}
