//! A run's scores packed into chunks of fixed-width records, the form
//! `rfm_score_chunks` stores them in: a million members are 16 rows of
//! about 2.4 MB instead of a million indexed rows.
//!
//! Each chunk holds up to [`CHUNK_MEMBERS`] members, sorted by member id
//! across the whole run (chunk `k + 1` starts after chunk `k` ends), each a
//! [`RECORD`]-byte record, little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 0..16 | member id (the UUID's bytes, so byte order is id order) |
//! | 16 | recency score (`1..=bins`) |
//! | 17 | frequency score |
//! | 18 | monetary score |
//! | 19 | FM on the five-point grid (`1..=5`) |
//! | 20 | segment (`RfmSegment` proto value, `1..=11`) |
//! | 21..25 | days since the last purchase (i32) |
//! | 25..29 | distinct purchase days (u32) |
//! | 29..37 | net spend, minor units (i64) |
//!
//! Decoding checks everything it can (length, count, order, ranges, the
//! chunk sequence): a corrupt or short blob is an error, never a panic.

use uuid::Uuid;

/// Bytes of one member's record.
pub const RECORD: usize = 37;

/// Members a stored chunk holds at most (about 2.4 MB of records).
pub const CHUNK_MEMBERS: usize = 65_536;

/// Highest score level (`laurel_analytics_models::rfm::MAX_BINS`).
const MAX_LEVEL: u8 = laurel_analytics_models::rfm::MAX_BINS;

/// Segments (`RfmSegment` proto values `1..=11`).
const SEGMENTS: u8 = 11;

/// One member's scores in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Score {
    /// The member.
    pub member: u128,
    /// Recency score, `1..=bins`.
    pub recency: u8,
    /// Frequency score, `1..=bins`.
    pub frequency: u8,
    /// Monetary score, `1..=bins`.
    pub monetary: u8,
    /// The combined FM score on the five-point grid.
    pub fm: u8,
    /// The segment's proto value.
    pub segment: u8,
    /// Days since the last purchase, as of the run.
    pub recency_days: i32,
    /// Distinct purchase days.
    pub purchase_days: u32,
    /// Net spend, minor units.
    pub net_spend_minor: i64,
}

impl Score {
    /// The member as a UUID.
    pub fn member_id(&self) -> Uuid {
        Uuid::from_u128(self.member)
    }
}

/// One stored chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Position in the run, from 0.
    pub index: i32,
    /// Its first (smallest) member.
    pub first_member: Uuid,
    /// Members it holds.
    pub members: i32,
    /// `members` records.
    pub data: Vec<u8>,
}

/// Why scores could not be packed or unpacked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackedError {
    /// A chunk must hold at least one member (and fit an `i32`).
    #[error("chunk size {0} is not in 1..=i32::MAX")]
    ChunkSize(usize),
    /// A member appears twice in a run.
    #[error("member {0} appears twice")]
    Duplicate(Uuid),
    /// A blob's length is not a whole number of records.
    #[error("a chunk of {0} bytes is not a whole number of {RECORD}-byte records")]
    Length(usize),
    /// A chunk holds another number of members than its row says.
    #[error("chunk {index} holds {found} members, its row says {expected}")]
    Count {
        /// The chunk.
        index: i32,
        /// What the row says.
        expected: i32,
        /// What the blob holds.
        found: usize,
    },
    /// A chunk starts with another member than its row says.
    #[error("chunk {index} starts with {found}, its row says {expected}")]
    FirstMember {
        /// The chunk.
        index: i32,
        /// What the row says.
        expected: Uuid,
        /// What the blob starts with.
        found: Uuid,
    },
    /// A chunk is missing or out of place.
    #[error("chunk {found} where chunk {expected} was expected")]
    Sequence {
        /// The position expected.
        expected: i32,
        /// The chunk found there.
        found: i32,
    },
    /// Members are not in ascending id order.
    #[error("member {0} is out of order")]
    Order(Uuid),
    /// A field holds a value no run writes.
    #[error("member {member}: {field} {value} is out of range")]
    Range {
        /// The member.
        member: Uuid,
        /// The field.
        field: &'static str,
        /// Its value.
        value: i64,
    },
}

/// Sorts the scores by member (in place: they stay sorted for lookups)
/// and packs them into chunks of at most `chunk_members` members
/// ([`CHUNK_MEMBERS`] when stored).
pub fn encode(scores: &mut [Score], chunk_members: usize) -> Result<Vec<Chunk>, PackedError> {
    if chunk_members == 0 || i32::try_from(chunk_members).is_err() {
        return Err(PackedError::ChunkSize(chunk_members));
    }
    scores.sort_unstable_by_key(|s| s.member);
    if let Some(pair) = scores.windows(2).find(|p| p[0].member == p[1].member) {
        return Err(PackedError::Duplicate(pair[0].member_id()));
    }
    let mut chunks = Vec::with_capacity(scores.len().div_ceil(chunk_members));
    for (index, part) in (0i32..).zip(scores.chunks(chunk_members)) {
        let mut data = Vec::with_capacity(part.len() * RECORD);
        for s in part {
            data.extend_from_slice(&s.member.to_be_bytes());
            data.extend_from_slice(&[s.recency, s.frequency, s.monetary, s.fm, s.segment]);
            data.extend_from_slice(&s.recency_days.to_le_bytes());
            data.extend_from_slice(&s.purchase_days.to_le_bytes());
            data.extend_from_slice(&s.net_spend_minor.to_le_bytes());
        }
        chunks.push(Chunk {
            index,
            // `part` is never empty: `chunks` yields non-empty slices.
            first_member: part.first().map(Score::member_id).unwrap_or_default(),
            members: part.len() as i32,
            data,
        });
    }
    Ok(chunks)
}

fn array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

fn check(s: &Score) -> Result<(), PackedError> {
    let range = |field, value: u8, max: u8| {
        if (1..=max).contains(&value) {
            Ok(())
        } else {
            Err(PackedError::Range {
                member: s.member_id(),
                field,
                value: i64::from(value),
            })
        }
    };
    range("recency", s.recency, MAX_LEVEL)?;
    range("frequency", s.frequency, MAX_LEVEL)?;
    range("monetary", s.monetary, MAX_LEVEL)?;
    range("fm", s.fm, 5)?;
    range("segment", s.segment, SEGMENTS)?;
    if s.recency_days < 0 {
        return Err(PackedError::Range {
            member: s.member_id(),
            field: "recency_days",
            value: i64::from(s.recency_days),
        });
    }
    Ok(())
}

/// Unpacks one blob's records onto `out`, checking that they are whole,
/// in range and ascending (also after what `out` already ends with).
pub fn decode_into(data: &[u8], out: &mut Vec<Score>) -> Result<(), PackedError> {
    if !data.len().is_multiple_of(RECORD) {
        return Err(PackedError::Length(data.len()));
    }
    out.reserve(data.len() / RECORD);
    let mut previous = out.last().map(|s| s.member);
    for r in data.chunks_exact(RECORD) {
        let s = Score {
            member: u128::from_be_bytes(array(r, 0)),
            recency: r[16],
            frequency: r[17],
            monetary: r[18],
            fm: r[19],
            segment: r[20],
            recency_days: i32::from_le_bytes(array(r, 21)),
            purchase_days: u32::from_le_bytes(array(r, 25)),
            net_spend_minor: i64::from_le_bytes(array(r, 29)),
        };
        if previous.is_some_and(|p| p >= s.member) {
            return Err(PackedError::Order(s.member_id()));
        }
        check(&s)?;
        previous = Some(s.member);
        out.push(s);
    }
    Ok(())
}

/// Unpacks one blob.
pub fn decode(data: &[u8]) -> Result<Vec<Score>, PackedError> {
    let mut out = Vec::new();
    decode_into(data, &mut out)?;
    Ok(out)
}

/// Unpacks a run chunk by chunk, checking each against its row and the
/// sequence (0, 1, 2, ...).
#[derive(Debug, Default)]
pub struct RunDecoder {
    scores: Vec<Score>,
    next: i32,
}

impl RunDecoder {
    /// Adds the next chunk.
    pub fn push(
        &mut self,
        index: i32,
        first_member: Uuid,
        members: i32,
        data: &[u8],
    ) -> Result<(), PackedError> {
        if index != self.next {
            return Err(PackedError::Sequence {
                expected: self.next,
                found: index,
            });
        }
        let before = self.scores.len();
        decode_into(data, &mut self.scores)?;
        let found = self.scores.len() - before;
        if found == 0 || i32::try_from(found).ok() != Some(members) {
            return Err(PackedError::Count {
                index,
                expected: members,
                found,
            });
        }
        let first = self.scores[before].member_id();
        if first != first_member {
            return Err(PackedError::FirstMember {
                index,
                expected: first_member,
                found: first,
            });
        }
        self.next += 1;
        Ok(())
    }

    /// The run's scores, sorted by member.
    pub fn finish(self) -> Vec<Score> {
        self.scores
    }
}

/// Unpacks a whole run from its chunks in index order ([`RunDecoder`]):
/// the scores sorted by member.
pub fn decode_run<'a>(
    chunks: impl IntoIterator<Item = (i32, Uuid, i32, &'a [u8])>,
) -> Result<Vec<Score>, PackedError> {
    let mut run = RunDecoder::default();
    for (index, first_member, members, data) in chunks {
        run.push(index, first_member, members, data)?;
    }
    Ok(run.finish())
}

/// The scores of `member`, found by binary search in sorted scores.
pub fn find(scores: &[Score], member: u128) -> Option<&Score> {
    scores
        .binary_search_by_key(&member, |s| s.member)
        .ok()
        .map(|i| &scores[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(member: u128, k: u8) -> Score {
        let k = k % 100;
        Score {
            member,
            recency: 1 + k % 10,
            frequency: 1 + (k + 3) % 10,
            monetary: 1 + (k + 7) % 10,
            fm: 1 + k % 5,
            segment: 1 + k % 11,
            recency_days: i32::from(k) * 3,
            purchase_days: u32::MAX - u32::from(k),
            net_spend_minor: i64::from(k) * -1_000_003 + i64::MAX / 3,
        }
    }

    fn run(chunks: &[Chunk]) -> Result<Vec<Score>, PackedError> {
        decode_run(
            chunks
                .iter()
                .map(|c| (c.index, c.first_member, c.members, c.data.as_slice())),
        )
    }

    /// Scattered ids, in an order unrelated to theirs.
    fn population(n: u128) -> Vec<Score> {
        (0..n)
            .map(|i| {
                score(
                    i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835) ^ i,
                    i as u8,
                )
            })
            .collect()
    }

    #[test]
    fn a_run_round_trips_sorted_by_member() {
        let scores = population(1_000);
        let chunks = encode(&mut scores.clone(), CHUNK_MEMBERS).unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].data.len(), 1_000 * RECORD);
        let mut sorted = scores;
        sorted.sort_by_key(|s| s.member);
        assert_eq!(run(&chunks).unwrap(), sorted);
        assert_eq!(decode(&chunks[0].data).unwrap(), sorted);
        assert_eq!(chunks[0].first_member, sorted[0].member_id());
        for s in &sorted {
            assert_eq!(find(&sorted, s.member), Some(s));
        }
        assert_eq!(find(&sorted, sorted[0].member.wrapping_sub(1)), None);
    }

    #[test]
    fn the_record_layout_is_the_documented_one() {
        let member = Uuid::parse_str("0193a2b4-c5d6-7e8f-9a0b-1c2d3e4f5a6b").unwrap();
        let s = Score {
            member: member.as_u128(),
            recency: 5,
            frequency: 4,
            monetary: 3,
            fm: 4,
            segment: 2,
            recency_days: 9,
            purchase_days: 15,
            net_spend_minor: -2,
        };
        let data = encode(&mut [s], 1).unwrap().remove(0).data;
        assert_eq!(&data[..16], member.as_bytes());
        assert_eq!(&data[16..21], [5, 4, 3, 4, 2]);
        assert_eq!(&data[21..25], [9, 0, 0, 0]);
        assert_eq!(&data[25..29], [15, 0, 0, 0]);
        assert_eq!(
            &data[29..],
            [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
    }

    #[test]
    fn chunks_split_at_the_size_and_keep_the_order_across_them() {
        for (n, size, expect) in [
            (10u128, 3usize, vec![3, 3, 3, 1]),
            (9, 3, vec![3, 3, 3]),
            (1, 3, vec![1]),
            (4, 1, vec![1, 1, 1, 1]),
        ] {
            let scores = population(n);
            let chunks = encode(&mut scores.clone(), size).unwrap();
            let members: Vec<i32> = chunks.iter().map(|c| c.members).collect();
            assert_eq!(members, expect, "{n} members by {size}");
            assert_eq!(
                chunks.iter().map(|c| c.index).collect::<Vec<_>>(),
                (0..expect.len() as i32).collect::<Vec<_>>()
            );
            let decoded = run(&chunks).unwrap();
            assert!(decoded.windows(2).all(|w| w[0].member < w[1].member));
            for c in &chunks {
                assert_eq!(c.data.len(), c.members as usize * RECORD);
                assert_eq!(decode(&c.data).unwrap()[0].member_id(), c.first_member);
            }
            // The last chunk's last member: the largest id.
            let last = decoded.last().unwrap();
            assert_eq!(last.member, scores.iter().map(|s| s.member).max().unwrap());
            assert_eq!(find(&decoded, last.member), Some(last));
        }
        assert_eq!(encode(&mut [], 3).unwrap(), Vec::new());
    }

    #[test]
    fn bad_input_to_encode_is_an_error() {
        assert_eq!(
            encode(&mut population(2), 0),
            Err(PackedError::ChunkSize(0))
        );
        let mut twice = [score(7, 1), score(3, 2), score(7, 3)];
        assert_eq!(
            encode(&mut twice, 10),
            Err(PackedError::Duplicate(Uuid::from_u128(7)))
        );
    }

    #[test]
    fn a_short_or_corrupt_blob_is_an_error_not_a_panic() {
        let chunks = encode(&mut population(5), 2).unwrap();
        let data = &chunks[0].data;
        assert_eq!(
            decode(&data[..RECORD + 5]),
            Err(PackedError::Length(RECORD + 5))
        );
        assert_eq!(decode(&data[..3]), Err(PackedError::Length(3)));
        assert_eq!(decode(&[]), Ok(Vec::new()));
        // Records swapped: out of order.
        let mut swapped = data[RECORD..].to_vec();
        swapped.extend_from_slice(&data[..RECORD]);
        assert!(matches!(decode(&swapped), Err(PackedError::Order(_))));
        // A score no run writes.
        for (at, value, field) in [
            (16, 0u8, "recency"),
            (17, 11, "frequency"),
            (18, 0, "monetary"),
            (19, 6, "fm"),
            (20, 12, "segment"),
            (24, 0x80, "recency_days"),
        ] {
            let mut bad = data.clone();
            bad[at] = value;
            assert!(
                matches!(decode(&bad), Err(PackedError::Range { field: f, .. }) if f == field),
                "{field}"
            );
        }
        // Whatever the bytes, decoding returns.
        for len in 0..(3 * RECORD) {
            let noise: Vec<u8> = (0..len).map(|i| (i * 131 % 256) as u8).collect();
            let _ = decode(&noise);
        }
    }

    #[test]
    fn a_run_whose_chunks_disagree_with_their_rows_is_an_error() {
        let chunks = encode(&mut population(7), 3).unwrap();
        let mut missing = chunks.clone();
        missing.remove(1);
        assert_eq!(
            run(&missing),
            Err(PackedError::Sequence {
                expected: 1,
                found: 2
            })
        );
        let mut count = chunks.clone();
        count[2].members = 2;
        assert_eq!(
            run(&count),
            Err(PackedError::Count {
                index: 2,
                expected: 2,
                found: 1
            })
        );
        let mut first = chunks.clone();
        first[1].first_member = Uuid::from_u128(1);
        assert!(matches!(
            run(&first),
            Err(PackedError::FirstMember { index: 1, .. })
        ));
        let mut empty = chunks.clone();
        empty[2].data.clear();
        assert!(matches!(run(&empty), Err(PackedError::Count { .. })));
        // Chunks swapped (renumbered): ids go backwards between them.
        let mut swapped = chunks;
        swapped.swap(0, 1);
        swapped[0].index = 0;
        swapped[1].index = 1;
        assert!(matches!(run(&swapped), Err(PackedError::Order(_))));
    }
}
