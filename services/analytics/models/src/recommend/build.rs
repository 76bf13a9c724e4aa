//! Building the item neighbours from all members' order lines.

use std::cmp::Ordering;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

/// Why a recommendation computation refused its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecommendError {
    /// An item index at or beyond the catalogue size.
    #[error("item {item} is outside the catalogue of {item_count} items")]
    ItemOutOfRange {
        /// The item given.
        item: u32,
        /// The catalogue size.
        item_count: u32,
    },
    /// A purchase after the day recommendations are made for.
    #[error("purchase on day {day} is after the as-of day {as_of}")]
    PurchaseAfterAsOf {
        /// The purchase day.
        day: i32,
        /// The as-of day.
        as_of: i32,
    },
    /// More distinct members than `u32` indexes can address.
    #[error("more than {max} distinct members")]
    TooManyMembers {
        /// Largest number of members accepted.
        max: usize,
    },
    /// More order lines than `u32` positions can address.
    #[error("more than {max} distinct (member, item) pairs")]
    TooManyLines {
        /// Largest number accepted.
        max: usize,
    },
    /// A configuration that cannot work.
    #[error("invalid recommendation configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: &'static str,
    },
    /// A negative points cost in the reward catalogue.
    #[error("reward {reward_id} has a negative points cost {points_cost}")]
    NegativeRewardCost {
        /// The reward.
        reward_id: u64,
        /// Its cost.
        points_cost: i64,
    },
}

/// One order line: a member bought an item on a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OrderLine {
    /// The member.
    pub member_id: u128,
    /// Day of the order (days since 1970-01-01).
    pub day: i32,
    /// The item, a dense index below the catalogue size.
    pub item: u32,
}

/// How the neighbours are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoPurchaseConfig {
    /// Neighbours kept per item (K), at least 1.
    pub neighbours_per_item: usize,
    /// Fewest members who bought both items for a pair to count, at least 1.
    pub min_support: u32,
    /// Most recent distinct items per member that enter pair counting (M),
    /// at least 1.
    pub max_items_per_member: usize,
    /// Worker threads for the neighbour computation; 0 = one per available
    /// core (`std::thread::available_parallelism`). The result is the same
    /// for any number.
    pub threads: usize,
}

impl Default for CoPurchaseConfig {
    fn default() -> Self {
        Self {
            neighbours_per_item: 20,
            min_support: 2,
            max_items_per_member: 50,
            threads: 0,
        }
    }
}

impl CoPurchaseConfig {
    /// Checks that every bound is at least 1.
    pub fn validate(&self) -> Result<(), RecommendError> {
        let invalid = |reason| Err(RecommendError::InvalidConfig { reason });
        if self.neighbours_per_item == 0 {
            return invalid("neighbours_per_item must be at least 1");
        }
        if self.min_support == 0 {
            return invalid("min_support must be at least 1");
        }
        if self.max_items_per_member == 0 {
            return invalid("max_items_per_member must be at least 1");
        }
        Ok(())
    }

    fn worker_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            threads => threads,
        }
    }
}

/// A similar item.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    /// The similar item.
    pub item: u32,
    /// Cosine similarity, in `(0, 1]`.
    pub similarity: f64,
    /// Members who bought both (the co-occurrence count).
    pub support: u32,
}

/// The precomputed neighbours of every item, and item popularity.
#[derive(Debug, Clone)]
pub struct CoPurchaseModel {
    pub(super) config: CoPurchaseConfig,
    pub(super) item_count: u32,
    /// Neighbours of item `i` are `neighbours[offsets[i]..offsets[i + 1]]`,
    /// most similar first.
    neighbour_offsets: Vec<usize>,
    neighbours: Vec<Neighbour>,
    /// Distinct buyers per item, over all lines (not only the recent M).
    buyers: Vec<u32>,
    /// Items with at least one buyer, most buyers first, ties by index.
    pub(super) popular_items: Vec<u32>,
}

/// Members grouped with their distinct items, most recent first.
struct MemberItems {
    /// Items of member `m` are `items[offsets[m]..offsets[m + 1]]`.
    offsets: Vec<usize>,
    items: Vec<u32>,
}

impl CoPurchaseModel {
    /// Builds the neighbours of every item from all members' order lines.
    ///
    /// - Incidence: a member counts once per item, however often they
    ///   bought it. Only each member's `max_items_per_member` (M) most
    ///   recently bought distinct items enter pair counting (an item's
    ///   recency is its latest purchase; equal days in ascending item
    ///   order): a heavy buyer with d items adds d^2 pairs, so M bounds
    ///   the cost at M^2 per member and lets current tastes speak.
    /// - Similarity of items a and b: cosine of their member vectors in
    ///   that (truncated) incidence, `co(a, b) / sqrt(n(a) * n(b))`, with
    ///   `co` the members whose recent items hold both and `n` the members
    ///   whose recent items hold each.
    /// - Pairs bought together by fewer than `min_support` members are
    ///   dropped (cosine of 1 from a single shared buyer is noise); each
    ///   item keeps its `neighbours_per_item` (K) most similar, ties by
    ///   item index.
    /// - Popularity counts the distinct buyers of each item over all lines.
    ///
    /// Cost: a sort of the lines (nearly free when they come ordered by
    /// member, as from an `ORDER BY`), then for each item a pass over its
    /// buyers' item lists into one dense counter of the catalogue's size,
    /// items shared among `threads` workers: O(L log L + sum over members
    /// of min(d, M)^2) time, O(L + items) memory per worker, no items x
    /// items matrix.
    pub fn build(
        lines: &[OrderLine],
        item_count: u32,
        config: &CoPurchaseConfig,
    ) -> Result<Self, RecommendError> {
        config.validate()?;
        if let Some(line) = lines.iter().find(|line| line.item >= item_count) {
            return Err(RecommendError::ItemOutOfRange {
                item: line.item,
                item_count,
            });
        }
        let items = item_count as usize;
        let (members, buyers) = group_by_member(lines, items, config.max_items_per_member)?;
        let popular_items = rank_by_buyers(&buyers);
        let (neighbour_offsets, neighbours) = nearest_neighbours(&members, items, config)?;
        Ok(Self {
            config: *config,
            item_count,
            neighbour_offsets,
            neighbours,
            buyers,
            popular_items,
        })
    }

    /// The catalogue size the model was built for.
    pub fn item_count(&self) -> u32 {
        self.item_count
    }

    /// The configuration the model was built with.
    pub fn config(&self) -> &CoPurchaseConfig {
        &self.config
    }

    /// Neighbours of an item, most similar first (empty outside the
    /// catalogue).
    pub fn neighbours(&self, item: u32) -> &[Neighbour] {
        let item = item as usize;
        match (
            self.neighbour_offsets.get(item),
            self.neighbour_offsets.get(item + 1),
        ) {
            (Some(&start), Some(&end)) => &self.neighbours[start..end],
            _ => &[],
        }
    }

    /// Distinct buyers of an item (0 outside the catalogue).
    pub fn buyers(&self, item: u32) -> u32 {
        self.buyers.get(item as usize).copied().unwrap_or(0)
    }

    /// Items with at least one buyer, most buyers first, ties by index.
    pub fn popular_items(&self) -> &[u32] {
        &self.popular_items
    }

    /// Rebuilds a model from what [`neighbours`](Self::neighbours) and
    /// [`buyers`](Self::buyers) gave for every item (a stored model read
    /// back): `neighbours[i]` and `buyers[i]` belong to item `i`. The
    /// popularity ranking is derived again from the buyers.
    pub fn from_parts(
        config: CoPurchaseConfig,
        neighbours: Vec<Vec<Neighbour>>,
        buyers: Vec<u32>,
    ) -> Result<Self, RecommendError> {
        config.validate()?;
        let item_count =
            u32::try_from(buyers.len()).map_err(|_| RecommendError::ItemOutOfRange {
                item: u32::MAX,
                item_count: u32::MAX,
            })?;
        if neighbours.len() != buyers.len() {
            return Err(RecommendError::ItemOutOfRange {
                item: neighbours.len() as u32,
                item_count,
            });
        }
        if let Some(n) = neighbours.iter().flatten().find(|n| n.item >= item_count) {
            return Err(RecommendError::ItemOutOfRange {
                item: n.item,
                item_count,
            });
        }
        let mut neighbour_offsets = Vec::with_capacity(neighbours.len() + 1);
        neighbour_offsets.push(0);
        let mut flat = Vec::with_capacity(neighbours.iter().map(Vec::len).sum());
        for list in neighbours {
            flat.extend(list);
            neighbour_offsets.push(flat.len());
        }
        let popular_items = rank_by_buyers(&buyers);
        Ok(Self {
            config,
            item_count,
            neighbour_offsets,
            neighbours: flat,
            buyers,
            popular_items,
        })
    }
}

/// Sorts the lines by member and latest day first, and keeps per member
/// the distinct items (at most `max_items` of them, most recent first);
/// counts distinct buyers per item over all lines on the way.
fn group_by_member(
    lines: &[OrderLine],
    items: usize,
    max_items: usize,
) -> Result<(MemberItems, Vec<u32>), RecommendError> {
    let mut sorted = lines.to_vec();
    sorted.sort_unstable_by(|a, b| {
        a.member_id
            .cmp(&b.member_id)
            .then(b.day.cmp(&a.day))
            .then(a.item.cmp(&b.item))
    });

    let mut buyers = vec![0u32; items];
    // seen[item] = 1 + ordinal of the last member who had it: a reset-free
    // "already counted for this member" mark.
    let mut seen = vec![0u32; items];
    let mut offsets = vec![0usize];
    let mut member_items = Vec::with_capacity(sorted.len());
    let mut start = 0;
    while start < sorted.len() {
        let member_id = sorted[start].member_id;
        let mark = u32::try_from(offsets.len()).map_err(|_| RecommendError::TooManyMembers {
            max: u32::MAX as usize - 1,
        })?;
        let mut kept = 0;
        let mut end = start;
        while end < sorted.len() && sorted[end].member_id == member_id {
            let item = sorted[end].item as usize;
            if seen[item] != mark {
                seen[item] = mark;
                buyers[item] += 1;
                if kept < max_items {
                    member_items.push(sorted[end].item);
                    kept += 1;
                }
            }
            end += 1;
        }
        offsets.push(member_items.len());
        start = end;
    }
    Ok((
        MemberItems {
            offsets,
            items: member_items,
        },
        buyers,
    ))
}

fn rank_by_buyers(buyers: &[u32]) -> Vec<u32> {
    let mut popular: Vec<u32> = (0u32..)
        .zip(buyers)
        .filter(|&(_, &count)| count > 0)
        .map(|(item, _)| item)
        .collect();
    popular.sort_unstable_by(|&a, &b| buyers[b as usize].cmp(&buyers[a as usize]).then(a.cmp(&b)));
    popular
}

/// Most similar first, then ascending item: a total order for selection.
fn by_similarity(a: &Neighbour, b: &Neighbour) -> Ordering {
    b.similarity
        .total_cmp(&a.similarity)
        .then(a.item.cmp(&b.item))
}

/// Items handed to a worker at a time: small enough to balance popular
/// (expensive) and rare items across workers.
const ITEMS_PER_TASK: usize = 64;

/// For each item, counts co-buyers of every other item in a dense counter
/// (the transposed incidence gives each item's buyers), then keeps the K
/// most similar pairs with enough support. Items are independent, so they
/// are shared among `threads` workers; the result does not depend on the
/// number of workers.
fn nearest_neighbours(
    members: &MemberItems,
    items: usize,
    config: &CoPurchaseConfig,
) -> Result<(Vec<usize>, Vec<Neighbour>), RecommendError> {
    let holders = Holders::new(members, items)?;
    let tasks = items.div_ceil(ITEMS_PER_TASK);
    let workers = config.worker_threads().min(tasks.max(1));
    let next_task = AtomicUsize::new(0);
    let work = || {
        let mut co_buyers = vec![0u32; items];
        let mut done: Vec<(usize, Vec<Vec<Neighbour>>)> = Vec::new();
        loop {
            let task = next_task.fetch_add(1, AtomicOrdering::Relaxed);
            if task >= tasks {
                return done;
            }
            let first = task * ITEMS_PER_TASK;
            let last = (first + ITEMS_PER_TASK).min(items);
            let lists = (first..last)
                .map(|item| item_neighbours(item, members, &holders, &mut co_buyers, config))
                .collect();
            done.push((task, lists));
        }
    };
    let mut done: Vec<(usize, Vec<Vec<Neighbour>>)> = if workers <= 1 {
        work()
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers).map(|_| scope.spawn(work)).collect();
            handles
                .into_iter()
                .flat_map(|handle| match handle.join() {
                    Ok(done) => done,
                    // The work has no panicking path on valid input; if a
                    // worker panicked anyway, rethrow it here.
                    Err(panic) => std::panic::resume_unwind(panic),
                })
                .collect()
        })
    };
    done.sort_unstable_by_key(|&(task, _)| task);

    let mut offsets = Vec::with_capacity(items + 1);
    offsets.push(0);
    let mut neighbours = Vec::new();
    for list in done.into_iter().flat_map(|(_, lists)| lists) {
        neighbours.extend(list);
        offsets.push(neighbours.len());
    }
    Ok((offsets, neighbours))
}

/// The transposed incidence: for each item, the item lists of the members
/// who hold it, as `(start, end)` ranges into `MemberItems::items` (the
/// range itself rather than the member index saves a lookup per visit).
struct Holders {
    /// Holders of item `i` are `ranges[offsets[i]..offsets[i + 1]]`.
    offsets: Vec<usize>,
    ranges: Vec<(u32, u32)>,
}

impl Holders {
    fn new(members: &MemberItems, items: usize) -> Result<Self, RecommendError> {
        let total = members.items.len();
        if u32::try_from(total).is_err() {
            return Err(RecommendError::TooManyLines {
                max: u32::MAX as usize,
            });
        }
        let mut offsets = vec![0usize; items + 1];
        for &item in &members.items {
            offsets[item as usize + 1] += 1;
        }
        for item in 0..items {
            offsets[item + 1] += offsets[item];
        }
        let mut fill = offsets.clone();
        let mut ranges = vec![(0u32, 0u32); total];
        for bounds in members.offsets.windows(2) {
            // Both bounds are at most `total`, checked above to fit a u32.
            let range = (bounds[0] as u32, bounds[1] as u32);
            for &item in &members.items[bounds[0]..bounds[1]] {
                let slot = &mut fill[item as usize];
                ranges[*slot] = range;
                *slot += 1;
            }
        }
        Ok(Self { offsets, ranges })
    }

    fn of(&self, item: usize) -> &[(u32, u32)] {
        &self.ranges[self.offsets[item]..self.offsets[item + 1]]
    }

    fn count(&self, item: usize) -> usize {
        self.offsets[item + 1] - self.offsets[item]
    }
}

/// The K nearest neighbours of one item; `co_buyers` is all zeros on entry
/// and on return.
fn item_neighbours(
    item: usize,
    members: &MemberItems,
    holders: &Holders,
    co_buyers: &mut [u32],
    config: &CoPurchaseConfig,
) -> Vec<Neighbour> {
    for &(start, end) in holders.of(item) {
        for &other in &members.items[start as usize..end as usize] {
            co_buyers[other as usize] += 1;
        }
    }
    // A dense scan of the counters, resetting them on the way, costs less
    // than tracking which ones were touched (a branch per increment).
    let own = holders.count(item) as f64;
    let mut candidates = Vec::new();
    for (other, count) in (0u32..).zip(co_buyers.iter_mut()) {
        let support = std::mem::take(count);
        if support < config.min_support || other as usize == item {
            continue;
        }
        let similarity = f64::from(support) / (own * holders.count(other as usize) as f64).sqrt();
        candidates.push(Neighbour {
            item: other,
            similarity,
            support,
        });
    }
    let keep = config.neighbours_per_item;
    if candidates.len() > keep {
        candidates.select_nth_unstable_by(keep - 1, by_similarity);
        candidates.truncate(keep);
    }
    candidates.sort_unstable_by(by_similarity);
    candidates
}
