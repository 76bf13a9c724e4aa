//! The rewards catalogue: rewards with a points price, stock, a per-member
//! limit per period and a validity window, redeemed for points, with the
//! fulfilment of each redemption recorded.
//!
//! # Redeeming ([`Points::redeem_reward`])
//!
//! One transaction, opened with the request's idempotency key, does it all
//! or nothing: it takes the units from stock with a conditional `UPDATE`
//! (active, in its window, `stock >= quantity`), whose row lock serialises
//! redemptions of the reward until the commit; counts the member's units in
//! the limit's period (exact, under that lock); spends `price * quantity`
//! points through the ledger in the same transaction; records the
//! redemption (pending) and a `RewardRedeemed` event; and stores the
//! response with the key. Any refusal (out of stock, limit reached, too few
//! points) rolls everything back, the stock included; a retry with the same
//! `request_id` returns the first answer.
//!
//! # Fulfilment ([`Points::update_fulfilment`])
//!
//! A pending redemption becomes fulfilled or cancelled, once. Cancelling
//! puts the units back in stock and reverses the ledger movement, so the
//! points return to the lots they came from, with their original expiry.
//!
//! Locks are always taken in one order, reward before member account, so a
//! redemption and a cancellation never deadlock each other.

mod catalogue;
mod fulfilment;
mod model;
mod period;
mod redeem;
mod rules;
mod store;
mod validate;

pub use model::{Fulfilment, Redemption, Reward, Terms};
pub use period::LimitPeriod;
pub use validate::{MAX_DESCRIPTION, MAX_NAME, MAX_QUANTITY};

use crate::{
    Points,
    error::PointsError,
    writer::{Command, Reply, Request},
};

impl Points {
    /// Applies one ledger command inside `tx` (a catalogue transaction): its
    /// reply, or the ledger's refusal, after which the caller must drop the
    /// transaction.
    async fn apply_in(
        &self,
        tx: &mut sqlx::PgConnection,
        command: Command,
    ) -> Result<Reply, PointsError> {
        let mut outcomes = self
            .direct
            .apply_batch(tx, &[Request { key: None, command }])
            .await?;
        match outcomes.pop() {
            Some(outcome) if outcomes.is_empty() => outcome,
            _ => Err(PointsError::Internal(anyhow::anyhow!(
                "the ledger answered a command with other than one outcome"
            ))),
        }
    }
}
