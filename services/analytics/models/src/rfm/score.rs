//! Quantile scores by the min-rank method, and the scored table.

use super::segment::{RfmCell, Segment, frequency_monetary_score, segment_for_cell, to_five_scale};
use super::summary::{RfmGridCounts, SegmentCounts};

/// Default number of quantile bins (quintiles).
pub const DEFAULT_BINS: u8 = 5;
/// Fewest bins accepted.
pub const MIN_BINS: u8 = 2;
/// Most bins accepted.
pub const MAX_BINS: u8 = 10;

/// Why RFM scoring refused its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RfmError {
    /// Quantiles of nothing are undefined.
    #[error("the population to score is empty")]
    EmptyPopulation,
    /// Bins outside `MIN_BINS..=MAX_BINS`.
    #[error("bins must be between {MIN_BINS} and {MAX_BINS}, got {bins}")]
    BinsOutOfRange {
        /// The bins asked for.
        bins: u8,
    },
    /// A score outside `1..=bins`.
    #[error("score {score} is outside 1..={bins}")]
    ScoreOutOfRange {
        /// The score given.
        score: u8,
        /// The scale it was read on.
        bins: u8,
    },
    /// The same member appears twice in the population.
    #[error("member {member_id} appears more than once")]
    DuplicateMember {
        /// The repeated member.
        member_id: u128,
    },
    /// More members than the `u32` row indexes can address.
    #[error("population of {len} members is larger than {max}")]
    PopulationTooLarge {
        /// Members given.
        len: usize,
        /// Largest population accepted.
        max: usize,
    },
}

/// What RFM needs to know about one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RfmInput {
    /// The member (a UUID as `u128`, or any unique surrogate key).
    pub member_id: u128,
    /// Day of the last purchase (days since 1970-01-01).
    pub last_purchase_day: i32,
    /// Orders or distinct purchase days, as the caller decides (same count
    /// for everyone).
    pub frequency: u32,
    /// Total spend in minor units (net of refunds if the caller wants).
    pub monetary_minor: i64,
}

/// Scoring options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RfmConfig {
    /// Quantile bins per score, `MIN_BINS..=MAX_BINS`; scores are `1..=bins`.
    pub bins: u8,
}

impl Default for RfmConfig {
    fn default() -> Self {
        Self { bins: DEFAULT_BINS }
    }
}

/// The three scores of a member on `1..=bins` (higher is better).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RfmScore {
    /// Recency: the later the last purchase, the higher.
    pub recency: u8,
    /// Frequency: the more purchases, the higher.
    pub frequency: u8,
    /// Monetary: the more spend, the higher.
    pub monetary: u8,
}

/// One scored member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoredMember {
    /// The member.
    pub member_id: u128,
    /// Scores on the configured `1..=bins` scale.
    pub score: RfmScore,
    /// The (R, FM) cell on the 5-point scale.
    pub cell: RfmCell,
    /// The segment of that cell.
    pub segment: Segment,
}

/// The scored population, in input order, with lookup by member.
#[derive(Debug, Clone)]
pub struct RfmTable {
    bins: u8,
    members: Vec<ScoredMember>,
    /// `(member_id, row)` sorted by member, for binary-search lookups (a
    /// sorted vector is cheaper to build than a hash map for a million
    /// members, and the sort also finds duplicates).
    by_member: Vec<(u128, u32)>,
}

impl RfmTable {
    /// Bins the scores were computed on.
    pub fn bins(&self) -> u8 {
        self.bins
    }

    /// Scored members in the order they were given.
    pub fn members(&self) -> &[ScoredMember] {
        &self.members
    }

    /// Number of scored members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the table is empty (never, when built by [`score_rfm`]).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The scores of one member, if it was in the population.
    pub fn get(&self, member_id: u128) -> Option<&ScoredMember> {
        let position = self
            .by_member
            .binary_search_by_key(&member_id, |&(id, _)| id)
            .ok()?;
        let row = self.by_member[position].1;
        self.members.get(row as usize)
    }

    /// Members per (R, FM) cell.
    pub fn grid_counts(&self) -> RfmGridCounts {
        RfmGridCounts::from_cells(self.members.iter().map(|member| member.cell))
    }

    /// Members per segment.
    pub fn segment_counts(&self) -> SegmentCounts {
        SegmentCounts::from_segments(self.members.iter().map(|member| member.segment))
    }
}

pub(super) fn check_bins(bins: u8) -> Result<(), RfmError> {
    if (MIN_BINS..=MAX_BINS).contains(&bins) {
        Ok(())
    } else {
        Err(RfmError::BinsOutOfRange { bins })
    }
}

/// Scores a population: R, F and M quantiles, the (R, FM) cell and segment.
///
/// The population is taken as given (the caller filters the active
/// members); its quantiles are the reference, so the same member can score
/// differently in another population. Cost: three sorts of the population
/// and one for the lookup, O(n log n).
pub fn score_rfm(population: &[RfmInput], config: &RfmConfig) -> Result<RfmTable, RfmError> {
    check_bins(config.bins)?;
    if population.is_empty() {
        return Err(RfmError::EmptyPopulation);
    }
    let max = u32::MAX as usize;
    if population.len() > max {
        return Err(RfmError::PopulationTooLarge {
            len: population.len(),
            max,
        });
    }

    // The members by id (for lookups and the duplicate check) and the three
    // rankings are four independent sorts: each runs on its own thread (the
    // same result on any number of cores).
    let bins = config.bins;
    let (by_member, recency, frequency, monetary) = std::thread::scope(|scope| {
        let recency = scope.spawn(|| {
            let last_days: Vec<i32> = population.iter().map(|m| m.last_purchase_day).collect();
            min_rank_scores(&last_days, bins)
        });
        let frequency = scope.spawn(|| {
            let frequencies: Vec<u32> = population.iter().map(|m| m.frequency).collect();
            min_rank_scores(&frequencies, bins)
        });
        let monetary = scope.spawn(|| {
            let spends: Vec<i64> = population.iter().map(|m| m.monetary_minor).collect();
            min_rank_scores(&spends, bins)
        });
        let mut by_member: Vec<(u128, u32)> = population
            .iter()
            .zip(0u32..)
            .map(|(input, row)| (input.member_id, row))
            .collect();
        by_member.sort_unstable_by_key(|&(id, _)| id);
        let joined = |h: std::thread::ScopedJoinHandle<'_, Result<Vec<u8>, RfmError>>| {
            h.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        };
        (
            by_member,
            joined(recency),
            joined(frequency),
            joined(monetary),
        )
    });
    if let Some(pair) = by_member.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        return Err(RfmError::DuplicateMember {
            member_id: pair[0].0,
        });
    }
    let (recency, frequency, monetary) = (recency?, frequency?, monetary?);

    // The cell only depends on the three scores: compute each of the
    // bins^3 combinations once instead of once per member.
    let cells = CellTable::new(bins)?;
    let members = population
        .iter()
        .enumerate()
        .map(|(row, input)| {
            let score = RfmScore {
                recency: recency[row],
                frequency: frequency[row],
                monetary: monetary[row],
            };
            let (cell, segment) = cells.get(score);
            ScoredMember {
                member_id: input.member_id,
                score,
                cell,
                segment,
            }
        })
        .collect();

    Ok(RfmTable {
        bins,
        members,
        by_member,
    })
}

/// Quantile scores `1..=bins` of `values` by the min-rank method.
///
/// With `n` values, a value's min rank is the number of values strictly
/// smaller than it (0-based; `pandas.rank(method="min") - 1`), and its
/// score is `1 + floor(bins * min_rank / n)`. Equal values share a min rank,
/// so they always share a score; larger values never score lower. A large
/// tie pushes the next distinct value up (ten members with 1 order out of
/// twelve: the 1-order members score 1, the next value has min rank 10 and
/// scores `1 + floor(5 * 10 / 12) = 5`), and a tie at the top may leave the
/// top score unused: that is the honest reading of the data, where cutting
/// a tie in two would give equal members different scores.
///
/// Higher values get higher scores, so recency is scored on the last
/// purchase day (a later day is more recent), not on days since.
pub fn min_rank_scores<T: Ord + Copy>(values: &[T], bins: u8) -> Result<Vec<u8>, RfmError> {
    check_bins(bins)?;
    let n = values.len();
    if n == 0 {
        return Err(RfmError::EmptyPopulation);
    }
    if n > u32::MAX as usize {
        return Err(RfmError::PopulationTooLarge {
            len: n,
            max: u32::MAX as usize,
        });
    }
    let mut sorted: Vec<(T, u32)> = values.iter().copied().zip(0u32..).collect();
    sorted.sort_unstable_by_key(|&(value, _)| value);

    let mut scores = vec![0u8; n];
    let mut start = 0;
    while start < n {
        let value = sorted[start].0;
        // start < n, so bins * start / n < bins <= MAX_BINS.
        let score = 1 + (u64::from(bins) * start as u64 / n as u64) as u8;
        let mut end = start;
        while end < n && sorted[end].0 == value {
            scores[sorted[end].1 as usize] = score;
            end += 1;
        }
        start = end;
    }
    Ok(scores)
}

/// (cell, segment) for every combination of scores on `1..=bins`.
struct CellTable {
    bins: u8,
    entries: Vec<(RfmCell, Segment)>,
}

impl CellTable {
    fn new(bins: u8) -> Result<Self, RfmError> {
        let mut entries = Vec::with_capacity(usize::from(bins).pow(3));
        for recency in 1..=bins {
            for frequency in 1..=bins {
                for monetary in 1..=bins {
                    let fm = frequency_monetary_score(
                        to_five_scale(frequency, bins)?,
                        to_five_scale(monetary, bins)?,
                    )?;
                    let cell = RfmCell::new(to_five_scale(recency, bins)?, fm)?;
                    entries.push((cell, segment_for_cell(cell)));
                }
            }
        }
        Ok(Self { bins, entries })
    }

    fn get(&self, score: RfmScore) -> (RfmCell, Segment) {
        let bins = usize::from(self.bins);
        let index = (usize::from(score.recency) - 1) * bins * bins
            + (usize::from(score.frequency) - 1) * bins
            + (usize::from(score.monetary) - 1);
        self.entries[index]
    }
}
