//! Co-purchase recommendations (item-to-item, Amazon style), a most-popular
//! baseline, their hit rate, and the next best offer among rewards.
//!
//! Flow: [`CoPurchaseModel::build`] turns every member's order lines into
//! the top-K neighbours of each item (cosine similarity of the member x item
//! incidence, see [`build`](CoPurchaseModel::build)); [`CoPurchaseModel::recommend`]
//! serves one member from their own purchases in microseconds;
//! [`evaluate_hit_rate`] checks the model against the popularity baseline
//! on each member's held-out last purchase day; [`next_best_offers`] ranks
//! the rewards a member can afford.
//!
//! Conventions: items are dense `u32` indexes below the catalogue size
//! given to the build (the caller maps its product ids); members are `u128`
//! (a UUID or any unique key); days are `i32` days since 1970-01-01.
//!
//! The sources: G. Linden, B. Smith, J. York, "Amazon.com recommendations:
//! item-to-item collaborative filtering", IEEE Internet Computing 7(1),
//! 2003 (similar-items table from co-purchases, cosine between item
//! vectors of customers, recommendations by summing the similar items of a
//! customer's purchases); B. Sarwar et al., "Item-based collaborative
//! filtering recommendation algorithms", WWW 2001 (keeping only the k most
//! similar items per item).

mod build;
mod evaluate;
mod offer;
mod serve;

pub use build::{CoPurchaseConfig, CoPurchaseModel, Neighbour, OrderLine, RecommendError};
pub use evaluate::{HitRates, evaluate_hit_rate};
pub use offer::{Affinity, Offer, Reward, next_best_offers};
pub use serve::{MemberPurchase, Recommendation, RecommendationSource, ServeConfig};
