//! Recommendations: co-purchase neighbours built from every member's
//! order lines (`laurel_analytics_models::recommend`, item-to-item cosine
//! similarity, top-K per item), stored per level (SKU or category) with
//! their hit rate on each member's held-out last purchase day beside a
//! most-popular baseline; served from memory.
//!
//! - Built by the scoring job when the order lines changed and the last
//!   build is older than `LAUREL_ANALYTICS_RECOMMEND_INTERVAL_S` (default
//!   3600).
//! - A replica keeps the newest build of each programme and level in
//!   memory, and an answer that read Postgres for
//!   `LAUREL_ANALYTICS_RECOMMEND_CACHE_MS` (default 30000), so a purchase
//!   shows in that member's recommendations within that time at most.
//! - Members' balances and recent items are kept in memory too (see
//!   [`memory`]), so an answer for a member not asked about lately reads
//!   no database; `LAUREL_ANALYTICS_RECOMMEND_MEMORY=off` turns that off.
//!   The response header `laurel-answer-from` says `cache`, `memory` or
//!   `database`.
//! - The next best offer: the rewards of the points service the member
//!   can afford with the balance of their latest points movement, the most
//!   valuable first (rewards carry no product, so no affinity applies).

mod build;
pub mod memory;
mod rewards;
mod serve;

pub use build::Level;
pub(crate) use rewards::Rewards;
pub(crate) use serve::Models;
