//! RFM quantile scores on hand-computed fixtures.

use laurel_analytics_models::rfm::{
    RfmConfig, RfmError, RfmInput, RfmScore, Segment, min_rank_scores, score_rfm,
};

/// Ten members with ties in every column.
///
/// Scores are `1 + floor(5 * min_rank / 10) = 1 + floor(min_rank / 2)`,
/// min_rank being the number of members with a strictly smaller value:
///
/// | member | last day | rank | R | freq | rank | F | spend | rank | M | FM = ceil((F+M)/2) | segment            |
/// |--------|----------|------|---|------|------|---|-------|------|---|--------------------|--------------------|
/// | 1      | 100      | 8    | 5 | 10   | 9    | 5 | 50000 | 9    | 5 | 5                  | Champions          |
/// | 2      | 100      | 8    | 5 | 8    | 8    | 5 | 40000 | 8    | 5 | 5                  | Champions          |
/// | 3      | 95       | 7    | 4 | 1    | 0    | 1 | 2000  | 2    | 2 | 2                  | Potential Loyalist |
/// | 4      | 90       | 4    | 3 | 1    | 0    | 1 | 2000  | 2    | 2 | 2                  | About to Sleep     |
/// | 5      | 90       | 4    | 3 | 1    | 0    | 1 | 3000  | 4    | 3 | 2                  | About to Sleep     |
/// | 6      | 90       | 4    | 3 | 3    | 6    | 4 | 15000 | 6    | 4 | 4                  | Loyal              |
/// | 7      | 80       | 3    | 2 | 3    | 6    | 4 | 15000 | 6    | 4 | 4                  | At Risk            |
/// | 8      | 70       | 2    | 2 | 1    | 0    | 1 | 1000  | 1    | 1 | 1                  | Hibernating        |
/// | 9      | 60       | 1    | 1 | 2    | 5    | 3 | 5000  | 5    | 3 | 3                  | At Risk            |
/// | 10     | 50       | 0    | 1 | 1    | 0    | 1 | 500   | 0    | 1 | 1                  | Lost               |
fn ten_members() -> Vec<RfmInput> {
    let rows: [(u128, i32, u32, i64); 10] = [
        (1, 100, 10, 50_000),
        (2, 100, 8, 40_000),
        (3, 95, 1, 2_000),
        (4, 90, 1, 2_000),
        (5, 90, 1, 3_000),
        (6, 90, 3, 15_000),
        (7, 80, 3, 15_000),
        (8, 70, 1, 1_000),
        (9, 60, 2, 5_000),
        (10, 50, 1, 500),
    ];
    rows.iter()
        .map(
            |&(member_id, last_purchase_day, frequency, monetary_minor)| RfmInput {
                member_id,
                last_purchase_day,
                frequency,
                monetary_minor,
            },
        )
        .collect()
}

fn score(recency: u8, frequency: u8, monetary: u8) -> RfmScore {
    RfmScore {
        recency,
        frequency,
        monetary,
    }
}

#[test]
fn quintiles_of_ten_members_with_ties_match_the_hand_computed_scores() {
    let table = score_rfm(&ten_members(), &RfmConfig::default()).unwrap();
    let scores: Vec<RfmScore> = table.members().iter().map(|m| m.score).collect();
    assert_eq!(
        scores,
        vec![
            score(5, 5, 5),
            score(5, 5, 5),
            score(4, 1, 2),
            score(3, 1, 2),
            score(3, 1, 3),
            score(3, 4, 4),
            score(2, 4, 4),
            score(2, 1, 1),
            score(1, 3, 3),
            score(1, 1, 1),
        ]
    );
}

#[test]
fn fm_cells_and_segments_of_ten_members_match_the_hand_computed_table() {
    let table = score_rfm(&ten_members(), &RfmConfig::default()).unwrap();
    let cells: Vec<(u8, u8)> = table
        .members()
        .iter()
        .map(|m| (m.cell.recency(), m.cell.frequency_monetary()))
        .collect();
    assert_eq!(
        cells,
        vec![
            (5, 5),
            (5, 5),
            (4, 2),
            (3, 2),
            (3, 2),
            (3, 4),
            (2, 4),
            (2, 1),
            (1, 3),
            (1, 1)
        ]
    );
    let segments: Vec<Segment> = table.members().iter().map(|m| m.segment).collect();
    assert_eq!(
        segments,
        vec![
            Segment::Champions,
            Segment::Champions,
            Segment::PotentialLoyalist,
            Segment::AboutToSleep,
            Segment::AboutToSleep,
            Segment::Loyal,
            Segment::AtRisk,
            Segment::Hibernating,
            Segment::AtRisk,
            Segment::Lost,
        ]
    );
}

#[test]
fn equal_values_always_get_equal_scores() {
    let table = score_rfm(&ten_members(), &RfmConfig::default()).unwrap();
    let inputs = ten_members();
    let members = table.members();
    for (a, input_a) in inputs.iter().enumerate() {
        for (b, input_b) in inputs.iter().enumerate() {
            if input_a.last_purchase_day == input_b.last_purchase_day {
                assert_eq!(members[a].score.recency, members[b].score.recency);
            }
            if input_a.frequency == input_b.frequency {
                assert_eq!(members[a].score.frequency, members[b].score.frequency);
            }
            if input_a.monetary_minor == input_b.monetary_minor {
                assert_eq!(members[a].score.monetary, members[b].score.monetary);
            }
        }
    }
}

#[test]
fn lookup_finds_each_member_and_nothing_else() {
    let table = score_rfm(&ten_members(), &RfmConfig::default()).unwrap();
    assert_eq!(table.len(), 10);
    assert_eq!(table.get(6).unwrap().score, score(3, 4, 4));
    assert_eq!(table.get(10).unwrap().segment, Segment::Lost);
    assert!(table.get(11).is_none());
    assert!(table.get(0).is_none());
}

#[test]
fn grid_and_segment_counts_of_ten_members() {
    let table = score_rfm(&ten_members(), &RfmConfig::default()).unwrap();
    let grid = table.grid_counts();
    let mut expected = [[0u64; 5]; 5];
    for (r, fm) in [
        (5, 5),
        (5, 5),
        (4, 2),
        (3, 2),
        (3, 2),
        (3, 4),
        (2, 4),
        (2, 1),
        (1, 3),
        (1, 1),
    ] {
        expected[r - 1][fm - 1] += 1;
    }
    assert_eq!(grid.counts, expected);
    assert_eq!(grid.total(), 10);

    let segments = table.segment_counts();
    assert_eq!(segments.get(Segment::Champions), 2);
    assert_eq!(segments.get(Segment::AboutToSleep), 2);
    assert_eq!(segments.get(Segment::AtRisk), 2);
    assert_eq!(segments.get(Segment::PotentialLoyalist), 1);
    assert_eq!(segments.get(Segment::Loyal), 1);
    assert_eq!(segments.get(Segment::Hibernating), 1);
    assert_eq!(segments.get(Segment::Lost), 1);
    assert_eq!(segments.get(Segment::New), 0);
    assert_eq!(segments.get(Segment::CantLoseThem), 0);
    assert_eq!(segments.total(), 10);
}

#[test]
fn empty_population_is_a_typed_error() {
    assert_eq!(
        score_rfm(&[], &RfmConfig::default()).unwrap_err(),
        RfmError::EmptyPopulation
    );
    assert_eq!(
        min_rank_scores::<i64>(&[], 5).unwrap_err(),
        RfmError::EmptyPopulation
    );
}

#[test]
fn bins_outside_two_to_ten_are_refused() {
    for bins in [0, 1, 11, 255] {
        assert_eq!(
            score_rfm(&ten_members(), &RfmConfig { bins }).unwrap_err(),
            RfmError::BinsOutOfRange { bins }
        );
    }
    for bins in 2..=10 {
        assert!(score_rfm(&ten_members(), &RfmConfig { bins }).is_ok());
    }
}

#[test]
fn a_member_given_twice_is_refused() {
    let mut population = ten_members();
    population[9].member_id = 3;
    assert_eq!(
        score_rfm(&population, &RfmConfig::default()).unwrap_err(),
        RfmError::DuplicateMember { member_id: 3 }
    );
}

#[test]
fn a_large_tie_pushes_the_next_value_to_a_high_score() {
    // Ten members with 1 order, one with 2, one with 5: min ranks 0, 10, 11
    // of 12 give 1, 1 + floor(50 / 12) = 5 and 1 + floor(55 / 12) = 5.
    let mut frequencies = vec![1u32; 10];
    frequencies.extend([2, 5]);
    let scores = min_rank_scores(&frequencies, 5).unwrap();
    assert_eq!(scores[..10], [1; 10]);
    assert_eq!(scores[10..], [5, 5]);
}

#[test]
fn ten_bins_over_ten_distinct_values_give_each_its_own_decile() {
    let spends: Vec<i64> = vec![700, -50, 30, 10, 20, 90, 400, 60, 80, 0];
    let scores = min_rank_scores(&spends, 10).unwrap();
    // Sorted: -50, 0, 10, 20, 30, 60, 80, 90, 400, 700 -> deciles 1..=10.
    assert_eq!(scores, vec![10, 1, 5, 3, 4, 8, 9, 6, 7, 2]);
}

#[test]
fn ten_bins_are_read_on_the_five_point_grid() {
    // Twenty distinct members on 10 bins: deciles 1, 1, 2, 2, ..., 10, 10.
    // Member i (0-based) has recency, frequency and monetary decile
    // 1 + i / 2, so its 5-point scores are 1 + i / 4.
    let population: Vec<RfmInput> = (0..20u32)
        .map(|i| RfmInput {
            member_id: u128::from(i),
            last_purchase_day: 1000 + i as i32,
            frequency: i + 1,
            monetary_minor: i64::from(i) * 100,
        })
        .collect();
    let table = score_rfm(&population, &RfmConfig { bins: 10 }).unwrap();
    for (i, member) in table.members().iter().enumerate() {
        let decile = 1 + (i / 2) as u8;
        assert_eq!(member.score, score(decile, decile, decile));
        let five = 1 + (i / 4) as u8;
        assert_eq!(member.cell.recency(), five);
        assert_eq!(member.cell.frequency_monetary(), five);
    }
    assert_eq!(table.members()[0].segment, Segment::Lost);
    assert_eq!(table.members()[19].segment, Segment::Champions);
}

/// A quadratic reference: count the strictly smaller values directly.
fn reference_scores(values: &[i64], bins: u8) -> Vec<u8> {
    let n = values.len() as u64;
    values
        .iter()
        .map(|v| {
            let smaller = values.iter().filter(|w| *w < v).count() as u64;
            1 + (u64::from(bins) * smaller / n) as u8
        })
        .collect()
}

#[test]
fn min_rank_scores_agree_with_a_quadratic_reference_on_random_populations() {
    // A seeded LCG (Knuth's MMIX constants): no rand dependency needed.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    for round in 0..200 {
        let len = 1 + (next() % 60) as usize;
        // Few distinct values in half the rounds, so ties are common.
        let spread = if round % 2 == 0 { 5 } else { 1_000_000 };
        let values: Vec<i64> = (0..len)
            .map(|_| (next() % spread) as i64 - (spread as i64) / 2)
            .collect();
        let bins = 2 + (next() % 9) as u8;
        let scores = min_rank_scores(&values, bins).unwrap();
        assert_eq!(scores, reference_scores(&values, bins));
        for (a, &va) in values.iter().enumerate() {
            assert!((1..=bins).contains(&scores[a]));
            for (b, &vb) in values.iter().enumerate() {
                if va < vb {
                    assert!(scores[a] <= scores[b]);
                }
            }
        }
    }
}
