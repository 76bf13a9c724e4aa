//! Serving one member: summed similarities, exclusion of recent purchases,
//! the popular fallback. Uses the basket set of `recommend_neighbours.rs`:
//! neighbours 0: [1 (0.866)], 1: [0 (0.866), 2 (0.5)], 2: [1 (0.5), 3
//! (0.5)], 3: [2 (0.5)], 4: none; popularity 1, 2, 3 (4 buyers), 0 (3), 4
//! (1).

use laurel_analytics_models::recommend::{
    CoPurchaseConfig, CoPurchaseModel, MemberPurchase, OrderLine, RecommendError, Recommendation,
    RecommendationSource, ServeConfig,
};

fn model() -> CoPurchaseModel {
    let members: [(u128, &[u32]); 7] = [
        (0xA, &[0, 1, 2]),
        (0xB, &[0, 1]),
        (0xC, &[0, 1, 3]),
        (0xD, &[1, 2]),
        (0xE, &[3, 4]),
        (0xF, &[2, 3]),
        (0x6, &[2, 3]),
    ];
    let lines: Vec<OrderLine> = members
        .iter()
        .flat_map(|&(member_id, items)| {
            items.iter().map(move |&item| OrderLine {
                member_id,
                day: 1,
                item,
            })
        })
        .collect();
    CoPurchaseModel::build(&lines, 5, &CoPurchaseConfig::default()).unwrap()
}

fn bought(day: i32, item: u32) -> MemberPurchase {
    MemberPurchase { day, item }
}

fn serve(top_n: usize) -> ServeConfig {
    ServeConfig {
        top_n,
        ..ServeConfig::default()
    }
}

fn items_and_sources(recommendations: &[Recommendation]) -> Vec<(u32, RecommendationSource)> {
    recommendations.iter().map(|r| (r.item, r.source)).collect()
}

const AS_OF: i32 = 200;
const COS01: f64 = 0.866_025_403_784_438_6; // 3 / sqrt(12)

#[test]
fn scores_sum_the_similarities_of_the_member_items() {
    // Items 1 and 3, long ago. 1 -> 0 (0.866), 2 (0.5); 3 -> 2 (0.5).
    // Scores: 2 = 0.5 + 0.5 = 1.0, 0 = 0.866.
    let recommendations = model()
        .recommend(&[bought(100, 1), bought(90, 3)], AS_OF, &serve(2))
        .unwrap();
    assert_eq!(recommendations.len(), 2);
    assert_eq!(recommendations[0].item, 2);
    assert!((recommendations[0].score - 1.0).abs() < 1e-12);
    assert_eq!(recommendations[1].item, 0);
    assert!((recommendations[1].score - COS01).abs() < 1e-12);
    assert!(
        recommendations
            .iter()
            .all(|r| r.source == RecommendationSource::CoPurchase)
    );
}

#[test]
fn items_bought_in_the_last_thirty_days_are_never_recommended() {
    // 0 bought 5 days ago, 1 long ago. Sources 0 -> 1 (0.866); 1 -> 0
    // (0.866), 2 (0.5). Item 0 is excluded, from the neighbours and from
    // the popular fill; item 1 (bought long ago) may come back.
    let recommendations = model()
        .recommend(&[bought(195, 0), bought(100, 1)], AS_OF, &serve(5))
        .unwrap();
    assert_eq!(
        items_and_sources(&recommendations),
        vec![
            (1, RecommendationSource::CoPurchase),
            (2, RecommendationSource::CoPurchase),
            (3, RecommendationSource::Popular),
            (4, RecommendationSource::Popular),
        ]
    );
    assert!((recommendations[0].score - COS01).abs() < 1e-12);
    assert!((recommendations[1].score - 0.5).abs() < 1e-12);
}

#[test]
fn the_window_is_the_as_of_day_and_the_twenty_nine_before_it() {
    let model = model();
    // Day 171 = as of - 29: inside the window, item 2 is not recommended.
    let inside = model
        .recommend(&[bought(171, 2)], AS_OF, &serve(5))
        .unwrap();
    assert!(inside.iter().all(|r| r.item != 2));
    // Day 170 = as of - 30: outside, item 2 may come back (as popular fill).
    let outside = model
        .recommend(&[bought(170, 2)], AS_OF, &serve(5))
        .unwrap();
    assert!(outside.iter().any(|r| r.item == 2));
    // No window at all.
    let none = ServeConfig {
        exclude_recent_days: 0,
        top_n: 5,
    };
    let today = model.recommend(&[bought(AS_OF, 2)], AS_OF, &none).unwrap();
    assert!(today.iter().any(|r| r.item == 2));
}

#[test]
fn a_member_without_history_gets_the_most_popular_items() {
    let recommendations = model().recommend(&[], AS_OF, &serve(3)).unwrap();
    assert_eq!(
        items_and_sources(&recommendations),
        vec![
            (1, RecommendationSource::Popular),
            (2, RecommendationSource::Popular),
            (3, RecommendationSource::Popular),
        ]
    );
    assert_eq!(recommendations[0].score, 4.0);
}

#[test]
fn short_neighbour_lists_are_filled_from_the_popular_items() {
    // Item 0 long ago: 0 -> 1 only; then popular 2, 3 (1 already chosen).
    let recommendations = model()
        .recommend(&[bought(10, 0)], AS_OF, &serve(3))
        .unwrap();
    assert_eq!(
        items_and_sources(&recommendations),
        vec![
            (1, RecommendationSource::CoPurchase),
            (2, RecommendationSource::Popular),
            (3, RecommendationSource::Popular),
        ]
    );
}

#[test]
fn the_popular_baseline_leaves_out_recent_purchases() {
    let model = model();
    let baseline = model
        .most_popular(&[bought(195, 1)], AS_OF, &serve(3))
        .unwrap();
    let items: Vec<u32> = baseline.iter().map(|r| r.item).collect();
    assert_eq!(items, vec![2, 3, 0]);
    assert!(
        baseline
            .iter()
            .all(|r| r.source == RecommendationSource::Popular)
    );
}

#[test]
fn bad_purchases_are_refused() {
    let model = model();
    assert_eq!(
        model
            .recommend(&[bought(AS_OF + 1, 0)], AS_OF, &serve(3))
            .unwrap_err(),
        RecommendError::PurchaseAfterAsOf {
            day: AS_OF + 1,
            as_of: AS_OF
        }
    );
    assert!(matches!(
        model.recommend(&[bought(1, 5)], AS_OF, &serve(3)),
        Err(RecommendError::ItemOutOfRange { .. })
    ));
    let negative = ServeConfig {
        exclude_recent_days: -1,
        top_n: 3,
    };
    assert!(matches!(
        model.recommend(&[], AS_OF, &negative),
        Err(RecommendError::InvalidConfig { .. })
    ));
}
