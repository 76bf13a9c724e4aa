//! The eleven RFM segments and the (R, FM) grid that defines them.

use super::score::RfmError;

/// Number of points on the scale the segment grid is read on.
const GRID_SCALE: u8 = 5;

/// A marketer's RFM segment.
///
/// The segment is a lookup in the 5 x 5 grid of the recency score R and the
/// combined frequency-monetary score FM (both on the 5-point scale). Every
/// cell maps to exactly one segment:
///
/// ```text
///            FM=1            FM=2                FM=3                FM=4       FM=5
/// R=5  | New            | Potential Loyalist | Potential Loyalist | Champions | Champions       |
/// R=4  | Promising      | Potential Loyalist | Potential Loyalist | Loyal     | Loyal           |
/// R=3  | About to Sleep | About to Sleep     | Need Attention     | Loyal     | Loyal           |
/// R=2  | Hibernating    | Hibernating        | At Risk            | At Risk   | Can't Lose Them |
/// R=1  | Lost           | Lost               | At Risk            | At Risk   | Can't Lose Them |
/// ```
///
/// This is the segment map that circulates in open RFM notebooks (R against
/// F or FM, e.g. `[1-2][1-2]` hibernating, `[1-2][3-4]` at risk, `[1-2]5`
/// can't lose, `3[1-2]` about to sleep, `33` need attention, `[3-4][4-5]`
/// loyal, `41` promising, `51` new, `[4-5][2-3]` potential loyalists,
/// `5[4-5]` champions), with its hibernating block split so that the least
/// recent row (R=1) is Lost and R=2 stays Hibernating: that gives the eleven
/// names marketers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    /// Bought recently, buy often and spend the most.
    Champions,
    /// Buy regularly and spend well; responsive to promotions.
    Loyal,
    /// Recent buyers with average frequency and spend.
    PotentialLoyalist,
    /// Bought very recently, but not often or much yet.
    New,
    /// Recent buyers with little frequency and spend so far.
    Promising,
    /// Middle of the grid on every score.
    NeedAttention,
    /// Below-average recency with low frequency and spend.
    AboutToSleep,
    /// Used to buy often and spend well, but not for a while.
    AtRisk,
    /// Among the best buyers once, gone for a long time.
    CantLoseThem,
    /// Long ago, few orders, low spend.
    Hibernating,
    /// Least recent, fewest orders, lowest spend.
    Lost,
}

impl Segment {
    /// Every segment, in the order of [`Segment::index`].
    pub const ALL: [Segment; 11] = [
        Segment::Champions,
        Segment::Loyal,
        Segment::PotentialLoyalist,
        Segment::New,
        Segment::Promising,
        Segment::NeedAttention,
        Segment::AboutToSleep,
        Segment::AtRisk,
        Segment::CantLoseThem,
        Segment::Hibernating,
        Segment::Lost,
    ];

    /// Position of this segment in [`Segment::ALL`] (0..11).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The name marketers read ("Can't Lose Them").
    pub fn name(self) -> &'static str {
        match self {
            Segment::Champions => "Champions",
            Segment::Loyal => "Loyal",
            Segment::PotentialLoyalist => "Potential Loyalist",
            Segment::New => "New",
            Segment::Promising => "Promising",
            Segment::NeedAttention => "Need Attention",
            Segment::AboutToSleep => "About to Sleep",
            Segment::AtRisk => "At Risk",
            Segment::CantLoseThem => "Can't Lose Them",
            Segment::Hibernating => "Hibernating",
            Segment::Lost => "Lost",
        }
    }
}

/// The grid of [`Segment`]'s doc comment, indexed `[r - 1][fm - 1]`.
const SEGMENT_GRID: [[Segment; 5]; 5] = {
    use Segment::*;
    [
        // R = 1
        [Lost, Lost, AtRisk, AtRisk, CantLoseThem],
        // R = 2
        [Hibernating, Hibernating, AtRisk, AtRisk, CantLoseThem],
        // R = 3
        [AboutToSleep, AboutToSleep, NeedAttention, Loyal, Loyal],
        // R = 4
        [
            Promising,
            PotentialLoyalist,
            PotentialLoyalist,
            Loyal,
            Loyal,
        ],
        // R = 5
        [
            New,
            PotentialLoyalist,
            PotentialLoyalist,
            Champions,
            Champions,
        ],
    ]
};

/// A cell of the 5 x 5 segment grid: recency and frequency-monetary scores
/// on the 5-point scale, each in `1..=5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RfmCell {
    recency: u8,
    frequency_monetary: u8,
}

impl RfmCell {
    /// The cell (R, FM); both must be in `1..=5`.
    pub fn new(recency: u8, frequency_monetary: u8) -> Result<Self, RfmError> {
        for score in [recency, frequency_monetary] {
            if !(1..=GRID_SCALE).contains(&score) {
                return Err(RfmError::ScoreOutOfRange {
                    score,
                    bins: GRID_SCALE,
                });
            }
        }
        Ok(Self {
            recency,
            frequency_monetary,
        })
    }

    /// Recency score on the 5-point scale (5 = most recent).
    pub fn recency(self) -> u8 {
        self.recency
    }

    /// Combined frequency-monetary score on the 5-point scale.
    pub fn frequency_monetary(self) -> u8 {
        self.frequency_monetary
    }
}

/// The segment of a grid cell (the table in [`Segment`]'s doc comment).
pub fn segment_for_cell(cell: RfmCell) -> Segment {
    SEGMENT_GRID[usize::from(cell.recency - 1)][usize::from(cell.frequency_monetary - 1)]
}

/// Maps a score on `1..=bins` to the 5-point scale the grid is read on.
///
/// Score `s` stands for the quantile band `[(s-1)/bins, s/bins)`; it maps to
/// the 5-point band that holds the middle of that band:
/// `1 + floor(5 * (2s - 1) / (2 * bins))`. With 5 bins this is the identity;
/// with 10 bins, 1-2 map to 1, 3-4 to 2, ..., 9-10 to 5; with 3 bins to
/// 1, 3, 5; with 2 bins to 2 and 4 (two bins cannot tell a champion from a
/// loyal member, so neither extreme is claimed).
pub fn to_five_scale(score: u8, bins: u8) -> Result<u8, RfmError> {
    super::score::check_bins(bins)?;
    if !(1..=bins).contains(&score) {
        return Err(RfmError::ScoreOutOfRange { score, bins });
    }
    let numerator = u16::from(GRID_SCALE) * (2 * u16::from(score) - 1);
    let denominator = 2 * u16::from(bins);
    // numerator / denominator < 5, so the sum is at most 5.
    Ok(1 + (numerator / denominator) as u8)
}

/// The combined FM score: the mean of F and M (5-point scale), rounded half
/// up, so F=4, M=5 gives 5 and F=1, M=2 gives 2: `(f + m + 1) / 2`.
///
/// Half up rather than half to even so that the rounding never depends on
/// the parity of the result, and a member never loses a point for having
/// one strong score.
pub fn frequency_monetary_score(frequency: u8, monetary: u8) -> Result<u8, RfmError> {
    for score in [frequency, monetary] {
        if !(1..=GRID_SCALE).contains(&score) {
            return Err(RfmError::ScoreOutOfRange {
                score,
                bins: GRID_SCALE,
            });
        }
    }
    Ok((frequency + monetary).div_ceil(2))
}
