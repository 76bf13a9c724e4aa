//! Earn rules: how orders and events turn into points, and the versions of
//! a programme's rules over time.
//!
//! A programme publishes versions of its rules ([`store::publish`]); each
//! takes effect at its `effective_from`, and an order is earned by the
//! version in force when it happened ([`store::in_force`]: the greatest
//! `effective_from` at or before that time, the highest version among
//! equals), also when it is imported later. Published rules are checked once
//! by [`validate`] into a [`RuleSet`]; everything after that is plain integer
//! arithmetic.
//!
//! # What an order earns ([`earn_for_order`])
//!
//! - **Earn base.** With lines, every line earns on `quantity *
//!   unit_price_minor`; the order total (which may include shipping or
//!   discounts) is then ignored. Without lines, the order total is the
//!   single earn base, and only promotions for all categories and the tier
//!   apply to it.
//! - **Exclusions.** A line whose SKU or category is excluded earns nothing,
//!   whatever multiplier it would otherwise have (gift cards earn nothing).
//!   It is reported as `exclude:sku:<sku>` (or `exclude:category:<c>` when
//!   only its category is excluded) with 0 points.
//! - **Line multiplier.** A SKU multiplier replaces the category's: a line
//!   gets `sku:<sku>` when its SKU has one, otherwise `category:<c>` when its
//!   category has one, otherwise none.
//! - **Promotions.** Every promotion active when the order happened
//!   (`starts_at <= occurred_at < ends_at`) multiplies the lines of its
//!   categories, or all lines when it lists none (`promo:<name>`).
//! - **Tier.** The member's tier multiplier multiplies the whole order
//!   (`tier:<tier>`).
//! - **Compounding.** Multipliers compound multiplicatively: a 2x category
//!   in a 2x promotion for a 1.5x tier earns 6x. Multipliers are in basis
//!   points (10,000 = 1x) and may be below 1x (0 earns nothing).
//! - **Exactness.** The order's points are `base_points * amount * m1 * ... *
//!   mk / (base_amount_minor * 10000^k)` summed over the lines, computed as
//!   an exact fraction, and rounded **once per order** by the rounding rule
//!   (down, half up, or up). Nothing is rounded per line.
//! - **Order cap.** `max_points_per_order` then caps the order (`cap:order`,
//!   with negative points).
//! - **Daily cap.** `max_points_per_day` is not applied here, since it
//!   depends on what the member already earned that day: [`Earned`] carries
//!   it for the ledger, which calls [`apply_daily_cap`] (`cap:day`).
//! - **Keys** (categories, SKUs, tiers) compare case-insensitively: the
//!   rules keep them in lower case and order lines are lowered before
//!   matching.
//! - **Explanation.** `applied` lists `base` first, then every rule that
//!   matched a line (in the order the lines first met it), the tier, and the
//!   cap. Each rule's points are its exact contribution, rounded toward
//!   zero: a multiplier's contribution is what it added to (or, below 1x,
//!   took from) the value it multiplied, taking the line multiplier first,
//!   then the promotions in the order of the rules, then the tier. `base`
//!   carries its own exact share plus whatever rounding left over, so the
//!   parts always sum exactly to the points earned.
//!
//! Amounts that do not fit are an error ([`RuleError::Overflow`]), never a
//! panic or a wrapped number.
//!
//! # Events ([`earn_for_event`])
//!
//! Reviews, shares, check-ins and referrals earn the fixed points of their
//! event rule, at most `max_per_day` events per member and day (enforced by
//! the ledger, which counts them).
//!
//! # Caching ([`RulesCache`])
//!
//! Each replica keeps every version of a programme's rules in memory for a
//! few seconds. A publish on one replica invalidates that replica's copy at
//! once; other replicas see it when their copy expires. So an order that
//! arrives at another replica within that time after a publish of a version
//! whose `effective_from` is already past may still be earned by the
//! previous version. Publish versions ahead of their `effective_from` to
//! avoid that.

mod cache;
mod compute;
mod daily_cap;
mod event;
mod model;
mod ratio;
pub mod store;
mod validate;

pub use cache::RulesCache;
pub use compute::{Earned, RuleError, earn_for_order};
pub use daily_cap::apply_daily_cap;
pub use event::{EventEarned, earn_for_event};
pub use model::{
    MAX_BASE, MAX_CAP, MAX_ENTRIES, MAX_EVENT_POINTS, MAX_KEY_CHARS, MAX_MULTIPLIER_BP, ONE_X_BP,
    RoundingRule, RuleSet,
};
pub use validate::validate;
