//! RFM (recency, frequency, monetary) scoring and the marketers' segments.
//!
//! The caller gives one [`RfmInput`] per member of the population to score
//! (usually the *active* members: it filters them itself) and gets back an
//! [`RfmTable`]: per member the three scores on `1..=bins`, the cell of the
//! 5 x 5 (R, FM) grid and the [`Segment`] of that cell, plus lookups by
//! member and the grid and segment counts.
//!
//! Conventions the caller must know:
//! - Days are `i32` days since 1970-01-01; money is `i64` minor units of one
//!   currency. Scores only depend on the ordering of the values, so no "as
//!   of" day is needed: a later last purchase day scores a higher recency.
//! - Frequency is whatever count the caller decides (orders, or distinct
//!   purchase days; the latter is what BG/NBD uses and is less sensitive to
//!   split baskets). It must be the same count for the whole population.
//! - Scores are quantiles by the "min rank" method, so equal values always
//!   get equal scores (see [`min_rank_scores`]).
//! - Segments are read on the 5-point scale: with `bins != 5` each score is
//!   first mapped to the 5-point scale ([`to_five_scale`]); FM is the mean of
//!   F and M rounded half up ([`frequency_monetary_score`]).

mod score;
mod segment;
mod summary;

pub use score::{
    DEFAULT_BINS, MAX_BINS, MIN_BINS, RfmConfig, RfmError, RfmInput, RfmScore, RfmTable,
    ScoredMember, min_rank_scores, score_rfm,
};
pub use segment::{RfmCell, Segment, frequency_monetary_score, segment_for_cell, to_five_scale};
pub use summary::{RfmGridCounts, SegmentCounts};
