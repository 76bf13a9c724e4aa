//! Item neighbours on a tiny basket set, cosine values computed by hand.

use laurel_analytics_models::recommend::{
    CoPurchaseConfig, CoPurchaseModel, OrderLine, RecommendError,
};

fn line(member_id: u128, day: i32, item: u32) -> OrderLine {
    OrderLine {
        member_id,
        day,
        item,
    }
}

/// Seven members over five items (all on day 1; member = letter):
///
/// ```text
/// A: 0 1 2      buyers: item 0: A B C       n0 = 3
/// B: 0 1                item 1: A B C D     n1 = 4
/// C: 0 1 3              item 2: A D F G     n2 = 4
/// D: 1 2                item 3: C E F G     n3 = 4
/// E: 3 4                item 4: E           n4 = 1
/// F: 2 3
/// G: 2 3
/// ```
///
/// Co-buyers: (0,1) = A B C = 3; (1,2) = A D = 2; (2,3) = F G = 2; the
/// pairs (0,2) A, (0,3) C, (1,3) C, (3,4) E have 1 and fall under the
/// default support of 2. Cosines:
/// - cos(0,1) = 3 / sqrt(3 * 4) = 0.866025...
/// - cos(1,2) = 2 / sqrt(4 * 4) = 0.5
/// - cos(2,3) = 2 / sqrt(4 * 4) = 0.5
fn baskets() -> Vec<OrderLine> {
    let members: [(u128, &[u32]); 7] = [
        (0xA, &[0, 1, 2]),
        (0xB, &[0, 1]),
        (0xC, &[0, 1, 3]),
        (0xD, &[1, 2]),
        (0xE, &[3, 4]),
        (0xF, &[2, 3]),
        (0x6, &[2, 3]),
    ];
    members
        .iter()
        .flat_map(|&(member, items)| items.iter().map(move |&item| line(member, 1, item)))
        .collect()
}

fn neighbour_list(model: &CoPurchaseModel, item: u32) -> Vec<(u32, f64, u32)> {
    model
        .neighbours(item)
        .iter()
        .map(|n| (n.item, n.similarity, n.support))
        .collect()
}

fn assert_neighbours(model: &CoPurchaseModel, item: u32, expected: &[(u32, f64, u32)]) {
    let actual = neighbour_list(model, item);
    assert_eq!(
        actual.len(),
        expected.len(),
        "neighbours of {item}: {actual:?}"
    );
    for (got, want) in actual.iter().zip(expected) {
        assert_eq!(got.0, want.0, "neighbours of {item}: {actual:?}");
        assert!(
            (got.1 - want.1).abs() < 1e-12,
            "neighbours of {item}: {actual:?}"
        );
        assert_eq!(got.2, want.2, "neighbours of {item}: {actual:?}");
    }
}

#[test]
fn neighbours_and_cosines_match_the_hand_computation() {
    let model = CoPurchaseModel::build(&baskets(), 5, &CoPurchaseConfig::default()).unwrap();
    let cos01 = 3.0 / 12f64.sqrt();
    assert_neighbours(&model, 0, &[(1, cos01, 3)]);
    assert_neighbours(&model, 1, &[(0, cos01, 3), (2, 0.5, 2)]);
    // A tie at 0.5: the lower item index first.
    assert_neighbours(&model, 2, &[(1, 0.5, 2), (3, 0.5, 2)]);
    assert_neighbours(&model, 3, &[(2, 0.5, 2)]);
    assert_neighbours(&model, 4, &[]);
    assert!(model.neighbours(99).is_empty());
}

#[test]
fn support_of_one_keeps_the_single_co_purchases() {
    let config = CoPurchaseConfig {
        min_support: 1,
        ..CoPurchaseConfig::default()
    };
    let model = CoPurchaseModel::build(&baskets(), 5, &config).unwrap();
    // cos(0,2) = cos(0,3) = 1 / sqrt(3 * 4) = 0.288675...; cos(3,4) =
    // 1 / sqrt(4 * 1) = 0.5; cos(1,3) = 1 / sqrt(4 * 4) = 0.25.
    let low = 1.0 / 12f64.sqrt();
    let cos01 = 3.0 / 12f64.sqrt();
    assert_neighbours(&model, 0, &[(1, cos01, 3), (2, low, 1), (3, low, 1)]);
    assert_neighbours(&model, 4, &[(3, 0.5, 1)]);
    assert_neighbours(
        &model,
        3,
        &[(2, 0.5, 2), (4, 0.5, 1), (0, low, 1), (1, 0.25, 1)],
    );
}

#[test]
fn only_the_k_most_similar_neighbours_are_kept() {
    let config = CoPurchaseConfig {
        neighbours_per_item: 1,
        ..CoPurchaseConfig::default()
    };
    let model = CoPurchaseModel::build(&baskets(), 5, &config).unwrap();
    assert_neighbours(&model, 1, &[(0, 3.0 / 12f64.sqrt(), 3)]);
    assert_neighbours(&model, 2, &[(1, 0.5, 2)]);
}

#[test]
fn a_member_counts_once_per_item_however_often_they_bought_it() {
    let mut lines = baskets();
    // A buys items 0 and 1 again on four more days: nothing changes.
    for day in 2..6 {
        lines.push(line(0xA, day, 0));
        lines.push(line(0xA, day, 1));
    }
    let model = CoPurchaseModel::build(&lines, 5, &CoPurchaseConfig::default()).unwrap();
    assert_neighbours(&model, 0, &[(1, 3.0 / 12f64.sqrt(), 3)]);
    assert_eq!(model.buyers(0), 3);
}

#[test]
fn only_the_most_recent_items_of_a_member_enter_pair_counting() {
    // Two members each buy item 0 on day 1, item 1 on day 2, item 2 on day 3.
    let lines: Vec<OrderLine> = [1u128, 2]
        .iter()
        .flat_map(|&m| [line(m, 1, 0), line(m, 2, 1), line(m, 3, 2)])
        .collect();
    let all = CoPurchaseModel::build(&lines, 3, &CoPurchaseConfig::default()).unwrap();
    // Every pair has support 2 and n = 2 everywhere: cosine 2 / 2 = 1.
    assert_neighbours(&all, 0, &[(1, 1.0, 2), (2, 1.0, 2)]);

    let two_recent = CoPurchaseConfig {
        max_items_per_member: 2,
        ..CoPurchaseConfig::default()
    };
    let model = CoPurchaseModel::build(&lines, 3, &two_recent).unwrap();
    // With M = 2 only items 2 and 1 (days 3 and 2) count.
    assert_neighbours(&model, 0, &[]);
    assert_neighbours(&model, 1, &[(2, 1.0, 2)]);
    assert_neighbours(&model, 2, &[(1, 1.0, 2)]);
    // Popularity still counts every line.
    assert_eq!(model.buyers(0), 2);
}

#[test]
fn popularity_ranks_items_by_distinct_buyers_then_index() {
    let model = CoPurchaseModel::build(&baskets(), 6, &CoPurchaseConfig::default()).unwrap();
    // Buyers: 1, 2, 3 have 4; 0 has 3; 4 has 1; 5 none (not listed).
    assert_eq!(model.popular_items(), &[1, 2, 3, 0, 4]);
    assert_eq!(model.buyers(5), 0);
    assert_eq!(model.item_count(), 6);
}

#[test]
fn items_outside_the_catalogue_and_zero_bounds_are_refused() {
    assert_eq!(
        CoPurchaseModel::build(&baskets(), 4, &CoPurchaseConfig::default()).unwrap_err(),
        RecommendError::ItemOutOfRange {
            item: 4,
            item_count: 4
        }
    );
    for config in [
        CoPurchaseConfig {
            neighbours_per_item: 0,
            ..CoPurchaseConfig::default()
        },
        CoPurchaseConfig {
            min_support: 0,
            ..CoPurchaseConfig::default()
        },
        CoPurchaseConfig {
            max_items_per_member: 0,
            ..CoPurchaseConfig::default()
        },
    ] {
        assert!(matches!(
            CoPurchaseModel::build(&baskets(), 5, &config),
            Err(RecommendError::InvalidConfig { .. })
        ));
    }
}

#[test]
fn no_lines_build_an_empty_model() {
    let model = CoPurchaseModel::build(&[], 3, &CoPurchaseConfig::default()).unwrap();
    assert!(model.popular_items().is_empty());
    assert!(model.neighbours(0).is_empty());
}

#[test]
fn the_neighbours_do_not_depend_on_the_number_of_threads() {
    // 300 members over 200 items from a seeded LCG: enough items for
    // several worker tasks of 64 items.
    let mut state: u64 = 11;
    let mut next = move |modulus: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % modulus
    };
    let lines: Vec<OrderLine> = (0..3_000)
        .map(|_| {
            let member = next(300);
            // Members lean towards one of four blocks of 50 items.
            let item = if next(4) > 0 {
                (member % 4) * 50 + next(50)
            } else {
                next(200)
            };
            line(u128::from(member), next(100) as i32, item as u32)
        })
        .collect();
    let build = |threads| {
        let config = CoPurchaseConfig {
            threads,
            neighbours_per_item: 5,
            ..CoPurchaseConfig::default()
        };
        CoPurchaseModel::build(&lines, 200, &config).unwrap()
    };
    let one = build(1);
    for threads in [0, 2, 3] {
        let many = build(threads);
        for item in 0..200 {
            assert_eq!(one.neighbours(item), many.neighbours(item), "item {item}");
        }
        assert_eq!(one.popular_items(), many.popular_items());
    }
    // Not a vacuous comparison: most items have neighbours.
    let listed: usize = (0..200).map(|item| one.neighbours(item).len()).sum();
    assert!(listed > 500, "only {listed} neighbours");
}

#[test]
fn a_model_rebuilt_from_its_parts_serves_the_same() {
    use laurel_analytics_models::recommend::{
        CoPurchaseConfig, CoPurchaseModel, MemberPurchase, OrderLine, ServeConfig,
    };
    let line = |member: u128, day: i32, item: u32| OrderLine {
        member_id: member,
        day,
        item,
    };
    let lines = vec![
        line(1, 1, 0),
        line(1, 1, 1),
        line(2, 1, 0),
        line(2, 2, 1),
        line(2, 2, 2),
        line(3, 1, 1),
        line(3, 1, 2),
        line(4, 1, 0),
        line(4, 1, 2),
        line(5, 3, 3),
    ];
    let config = CoPurchaseConfig {
        min_support: 1,
        ..CoPurchaseConfig::default()
    };
    let model = CoPurchaseModel::build(&lines, 5, &config).unwrap();
    let parts: Vec<_> = (0..5).map(|i| model.neighbours(i).to_vec()).collect();
    let buyers: Vec<u32> = (0..5).map(|i| model.buyers(i)).collect();
    let back = CoPurchaseModel::from_parts(config, parts, buyers).unwrap();
    assert_eq!(back.popular_items(), model.popular_items());
    let purchases = [MemberPurchase { day: 1, item: 0 }];
    let serve = ServeConfig {
        exclude_recent_days: 0,
        ..ServeConfig::default()
    };
    assert_eq!(
        back.recommend(&purchases, 100, &serve).unwrap(),
        model.recommend(&purchases, 100, &serve).unwrap()
    );
    assert!(CoPurchaseModel::from_parts(config, vec![vec![]], vec![1, 2]).is_err());
}
