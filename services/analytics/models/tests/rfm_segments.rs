//! The (R, FM) segment grid: complete, one segment per cell, all eleven used.

use laurel_analytics_models::rfm::{
    RfmCell, RfmError, Segment, frequency_monetary_score, segment_for_cell, to_five_scale,
};

#[test]
fn every_cell_of_the_grid_maps_to_exactly_one_segment_and_all_eleven_appear() {
    let mut cells_per_segment = [0usize; 11];
    for r in 1..=5 {
        for fm in 1..=5 {
            let segment = segment_for_cell(RfmCell::new(r, fm).unwrap());
            // Exactly one: the segment's own index finds it in ALL once.
            let matches = Segment::ALL.iter().filter(|&&s| s == segment).count();
            assert_eq!(matches, 1);
            cells_per_segment[segment.index()] += 1;
        }
    }
    assert_eq!(cells_per_segment.iter().sum::<usize>(), 25);
    for segment in Segment::ALL {
        assert!(
            cells_per_segment[segment.index()] > 0,
            "{} has no cell",
            segment.name()
        );
    }
}

#[test]
fn the_grid_is_the_one_in_the_documentation() {
    use Segment::*;
    // Rows from R=5 down to R=1, columns FM=1..=5, as in the doc comment.
    let documented = [
        (
            5,
            [
                New,
                PotentialLoyalist,
                PotentialLoyalist,
                Champions,
                Champions,
            ],
        ),
        (
            4,
            [
                Promising,
                PotentialLoyalist,
                PotentialLoyalist,
                Loyal,
                Loyal,
            ],
        ),
        (3, [AboutToSleep, AboutToSleep, NeedAttention, Loyal, Loyal]),
        (2, [Hibernating, Hibernating, AtRisk, AtRisk, CantLoseThem]),
        (1, [Lost, Lost, AtRisk, AtRisk, CantLoseThem]),
    ];
    for (r, row) in documented {
        for (column, expected) in row.into_iter().enumerate() {
            let fm = column as u8 + 1;
            assert_eq!(
                segment_for_cell(RfmCell::new(r, fm).unwrap()),
                expected,
                "cell R={r} FM={fm}"
            );
        }
    }
}

#[test]
fn segment_indexes_follow_the_all_list() {
    for (position, segment) in Segment::ALL.into_iter().enumerate() {
        assert_eq!(segment.index(), position);
    }
    assert_eq!(Segment::CantLoseThem.name(), "Can't Lose Them");
}

#[test]
fn cells_outside_one_to_five_are_refused() {
    assert_eq!(
        RfmCell::new(0, 3).unwrap_err(),
        RfmError::ScoreOutOfRange { score: 0, bins: 5 }
    );
    assert_eq!(
        RfmCell::new(3, 6).unwrap_err(),
        RfmError::ScoreOutOfRange { score: 6, bins: 5 }
    );
}

#[test]
fn fm_is_the_mean_of_f_and_m_rounded_half_up() {
    assert_eq!(frequency_monetary_score(4, 5).unwrap(), 5);
    assert_eq!(frequency_monetary_score(1, 2).unwrap(), 2);
    assert_eq!(frequency_monetary_score(1, 5).unwrap(), 3);
    assert_eq!(frequency_monetary_score(2, 5).unwrap(), 4);
    assert_eq!(frequency_monetary_score(3, 3).unwrap(), 3);
    assert_eq!(frequency_monetary_score(1, 1).unwrap(), 1);
    assert!(frequency_monetary_score(0, 1).is_err());
}

#[test]
fn five_bins_need_no_mapping() {
    for score in 1..=5 {
        assert_eq!(to_five_scale(score, 5).unwrap(), score);
    }
}

#[test]
fn other_bins_map_to_the_five_point_band_holding_their_middle() {
    // 1 + floor(5 * (2s - 1) / (2 * bins)).
    let ten: Vec<u8> = (1..=10).map(|s| to_five_scale(s, 10).unwrap()).collect();
    assert_eq!(ten, vec![1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
    let three: Vec<u8> = (1..=3).map(|s| to_five_scale(s, 3).unwrap()).collect();
    assert_eq!(three, vec![1, 3, 5]);
    let two: Vec<u8> = (1..=2).map(|s| to_five_scale(s, 2).unwrap()).collect();
    assert_eq!(two, vec![2, 4]);
    let four: Vec<u8> = (1..=4).map(|s| to_five_scale(s, 4).unwrap()).collect();
    assert_eq!(four, vec![1, 2, 4, 5]);
    assert!(to_five_scale(0, 4).is_err());
    assert!(to_five_scale(5, 4).is_err());
    assert!(to_five_scale(1, 11).is_err());
}
