//! Counts over a scored population: the (R, FM) grid and the segments.

use super::segment::{RfmCell, Segment};

/// Members per cell of the 5 x 5 (R, FM) grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RfmGridCounts {
    /// `counts[r - 1][fm - 1]`: members with recency `r` and FM `fm`.
    pub counts: [[u64; 5]; 5],
}

impl RfmGridCounts {
    /// Counts the given cells.
    pub fn from_cells(cells: impl IntoIterator<Item = RfmCell>) -> Self {
        let mut counts = [[0u64; 5]; 5];
        for cell in cells {
            counts[usize::from(cell.recency() - 1)][usize::from(cell.frequency_monetary() - 1)] +=
                1;
        }
        Self { counts }
    }

    /// Members in one cell.
    pub fn get(&self, cell: RfmCell) -> u64 {
        self.counts[usize::from(cell.recency() - 1)][usize::from(cell.frequency_monetary() - 1)]
    }

    /// Members in all cells.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }
}

/// Members per segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegmentCounts {
    /// `counts[segment.index()]`, in the order of [`Segment::ALL`].
    pub counts: [u64; 11],
}

impl SegmentCounts {
    /// Counts the given segments.
    pub fn from_segments(segments: impl IntoIterator<Item = Segment>) -> Self {
        let mut counts = [0u64; 11];
        for segment in segments {
            counts[segment.index()] += 1;
        }
        Self { counts }
    }

    /// Members in one segment.
    pub fn get(&self, segment: Segment) -> u64 {
        self.counts[segment.index()]
    }

    /// `(segment, members)` for every segment, in [`Segment::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Segment, u64)> + '_ {
        Segment::ALL
            .iter()
            .map(|&segment| (segment, self.counts[segment.index()]))
    }

    /// Members in all segments.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}
