//! The catalogue's types: a reward's terms, the reward as stored, and a
//! redemption with its fulfilment status; and their proto forms.

use chrono::{DateTime, Utc};
use laurel_proto::points::v1 as pb;
use uuid::Uuid;

use super::period::LimitPeriod;
use crate::ledger::book::timestamp;

/// What an operator sets on a reward (everything but its id, creation time
/// and version).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terms {
    /// Name, trimmed.
    pub name: String,
    /// Description.
    pub description: String,
    /// Price of one unit in points.
    pub points_price: i64,
    /// Units left.
    pub stock: i64,
    /// Most units one member may redeem per period; 0: no limit.
    pub per_member_limit: i64,
    /// The period of the limit.
    pub limit_period: LimitPeriod,
    /// Redeemable from (inclusive); always when unset.
    pub valid_from: Option<DateTime<Utc>>,
    /// Redeemable until (exclusive); forever when unset.
    pub valid_until: Option<DateTime<Utc>>,
    /// False hides the reward from redemption.
    pub active: bool,
}

/// A reward as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reward {
    /// UUIDv7.
    pub reward_id: Uuid,
    /// Its terms.
    pub terms: Terms,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Increases with every change, stock changes included.
    pub version: i64,
}

impl Reward {
    /// The proto form.
    pub fn to_proto(&self) -> pb::Reward {
        let t = &self.terms;
        pb::Reward {
            reward_id: self.reward_id.to_string(),
            name: t.name.clone(),
            description: t.description.clone(),
            points_price: t.points_price,
            stock: t.stock,
            per_member_limit: t.per_member_limit,
            limit_period: t.limit_period.to_proto() as i32,
            valid_from: t.valid_from.map(timestamp),
            valid_until: t.valid_until.map(timestamp),
            active: t.active,
            created_at: Some(timestamp(self.created_at)),
            version: self.version,
        }
    }
}

/// Where a redemption's fulfilment stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fulfilment {
    /// Waiting to be fulfilled.
    Pending,
    /// Delivered.
    Fulfilled,
    /// Cancelled: the points and the stock went back.
    Cancelled,
}

impl Fulfilment {
    /// The proto enum.
    pub fn to_proto(self) -> pb::FulfilmentStatus {
        match self {
            Self::Pending => pb::FulfilmentStatus::Pending,
            Self::Fulfilled => pb::FulfilmentStatus::Fulfilled,
            Self::Cancelled => pb::FulfilmentStatus::Cancelled,
        }
    }

    /// The stored number (the proto's).
    pub fn code(self) -> i16 {
        self.to_proto() as i16
    }

    /// The status of a stored number; `None` for one the table's CHECK
    /// forbids.
    pub fn from_code(code: i16) -> Option<Self> {
        match pb::FulfilmentStatus::try_from(i32::from(code)).ok()? {
            pb::FulfilmentStatus::Pending => Some(Self::Pending),
            pb::FulfilmentStatus::Fulfilled => Some(Self::Fulfilled),
            pb::FulfilmentStatus::Cancelled => Some(Self::Cancelled),
            pb::FulfilmentStatus::Unspecified => None,
        }
    }
}

/// One redemption of a reward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redemption {
    /// UUIDv7.
    pub redemption_id: Uuid,
    /// The reward.
    pub reward_id: Uuid,
    /// The member.
    pub member_id: Uuid,
    /// Units.
    pub quantity: i64,
    /// Points spent.
    pub points: i64,
    /// The ledger's redemption movement.
    pub movement_id: Uuid,
    /// Fulfilment.
    pub status: Fulfilment,
    /// When it was redeemed.
    pub created_at: DateTime<Utc>,
    /// Last fulfilment change.
    pub updated_at: DateTime<Utc>,
}

impl Redemption {
    /// The proto form.
    pub fn to_proto(&self) -> pb::RewardRedemption {
        pb::RewardRedemption {
            redemption_id: self.redemption_id.to_string(),
            reward_id: self.reward_id.to_string(),
            member_id: self.member_id.to_string(),
            quantity: self.quantity,
            points: self.points,
            movement_id: self.movement_id.to_string(),
            fulfilment_status: self.status.to_proto() as i32,
            created_at: Some(timestamp(self.created_at)),
            updated_at: Some(timestamp(self.updated_at)),
        }
    }
}
