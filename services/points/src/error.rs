//! The points service's errors and their gRPC mapping.

use laurel_runtime::{
    error::{ErrorKind, ServiceError, Violations},
    idempotency::IdempotencyError,
};
use tonic::Code;

use crate::ledger::book::LedgerError;

/// ErrorInfo domain of this service.
pub const DOMAIN: &str = "laurel.points";

/// Everything that can go wrong in the points service.
#[derive(Debug, thiserror::Error)]
pub enum PointsError {
    /// The request is malformed.
    #[error("invalid request")]
    Invalid(Violations),
    /// The member is unknown in this programme.
    #[error("member not found")]
    MemberNotFound,
    /// The member service could not say whether the member exists.
    #[error("member service unavailable: {0}")]
    MemberServiceUnavailable(String),
    /// The ledger refused the movement.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// No such reward.
    #[error("reward not found")]
    RewardNotFound,
    /// A reward cannot be redeemed now.
    #[error("reward not redeemable: {0}")]
    RewardUnavailable(&'static str),
    /// The member reached a reward's per-member limit for the period.
    #[error("reward limit reached: {0}")]
    RewardLimitReached(String),
    /// No such reward redemption.
    #[error("redemption not found")]
    RedemptionNotFound,
    /// A reward redemption's fulfilment can no longer change.
    #[error("redemption not pending: {0}")]
    RedemptionNotPending(&'static str),
    /// The request_id was used with a different request.
    #[error("request_id was used with a different request")]
    RequestIdReused,
    /// Storage failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// A fault that is not the caller's.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<Violations> for PointsError {
    fn from(v: Violations) -> Self {
        Self::Invalid(v)
    }
}

impl From<IdempotencyError> for PointsError {
    fn from(e: IdempotencyError) -> Self {
        match e {
            IdempotencyError::Mismatch => Self::RequestIdReused,
            IdempotencyError::Db(e) => Self::Db(e),
            IdempotencyError::Unreadable => Self::Internal(anyhow::anyhow!(e)),
        }
    }
}

impl PointsError {
    /// A field violation.
    pub fn field(field: &str, description: impl Into<String>) -> Self {
        let mut v = Violations::new();
        v.add(field, description);
        Self::Invalid(v)
    }

    /// A ledger refusal that names a field of the request when the input
    /// itself was wrong.
    pub fn from_ledger(error: LedgerError, points_field: &str) -> Self {
        match error {
            LedgerError::CaptureExceedsHold { held, .. } => {
                Self::field(points_field, format!("at most the {held} points held"))
            }
            LedgerError::Overflow => Self::field(
                points_field,
                "out of bounds: 1 to 10^12 points, and balances stay within their bounds",
            ),
            LedgerError::CurrencyMismatch => Self::field(
                "order_refund.refunded.currency_code",
                "must be the order's currency",
            ),
            LedgerError::RefundExceedsOrder => Self::field(
                "order_refund.refunded.amount_minor",
                "refunds would exceed the order total",
            ),
            LedgerError::SameMember => {
                Self::field("to_member_id", "must differ from from_member_id")
            }
            other => Self::Ledger(other),
        }
    }
}

impl ServiceError for PointsError {
    const DOMAIN: &'static str = DOMAIN;

    fn kind(&self) -> ErrorKind<'_> {
        use PointsError::*;
        match self {
            Invalid(v) => ErrorKind::Invalid(v),
            MemberNotFound => ErrorKind::Refused(Code::NotFound, "MEMBER_NOT_FOUND"),
            MemberServiceUnavailable(_) => {
                ErrorKind::Refused(Code::Unavailable, "MEMBER_SERVICE_UNAVAILABLE")
            }
            Ledger(e) => ledger_kind(e),
            RewardNotFound => ErrorKind::Refused(Code::NotFound, "REWARD_NOT_FOUND"),
            RewardUnavailable(_) => {
                ErrorKind::Refused(Code::FailedPrecondition, "REWARD_UNAVAILABLE")
            }
            RewardLimitReached(_) => {
                ErrorKind::Refused(Code::FailedPrecondition, "REWARD_LIMIT_REACHED")
            }
            RedemptionNotFound => ErrorKind::Refused(Code::NotFound, "REDEMPTION_NOT_FOUND"),
            RedemptionNotPending(_) => {
                ErrorKind::Refused(Code::FailedPrecondition, "REDEMPTION_NOT_PENDING")
            }
            RequestIdReused => ErrorKind::Refused(Code::AlreadyExists, "REQUEST_ID_REUSED"),
            Db(e) => ErrorKind::Db(e),
            Internal(_) => ErrorKind::Internal,
        }
    }
}

fn ledger_kind(e: &LedgerError) -> ErrorKind<'_> {
    use LedgerError::*;
    match e {
        InsufficientPoints { .. } => {
            ErrorKind::Refused(Code::FailedPrecondition, "INSUFFICIENT_POINTS")
        }
        MemberInactive(_) => ErrorKind::Refused(Code::FailedPrecondition, "MEMBER_NOT_ACTIVE"),
        HoldNotFound => ErrorKind::Refused(Code::NotFound, "HOLD_NOT_FOUND"),
        HoldNotActive(_) => ErrorKind::Refused(Code::FailedPrecondition, "HOLD_NOT_ACTIVE"),
        HoldExpired => ErrorKind::Refused(Code::FailedPrecondition, "HOLD_EXPIRED"),
        CaptureExceedsHold { .. } => {
            ErrorKind::Refused(Code::InvalidArgument, "CAPTURE_EXCEEDS_HOLD")
        }
        OrderNotEarned => ErrorKind::Refused(Code::NotFound, "ORDER_NOT_EARNED"),
        OrderAlreadyEarned => ErrorKind::Refused(Code::AlreadyExists, "ORDER_ALREADY_EARNED"),
        RefundExceedsOrder => ErrorKind::Refused(Code::FailedPrecondition, "REFUND_EXCEEDS_ORDER"),
        CurrencyMismatch => ErrorKind::Refused(Code::InvalidArgument, "CURRENCY_MISMATCH"),
        RedemptionNotFound => ErrorKind::Refused(Code::NotFound, "REDEMPTION_NOT_FOUND"),
        AlreadyReversed => ErrorKind::Refused(Code::FailedPrecondition, "ALREADY_REVERSED"),
        SameMember => ErrorKind::Refused(Code::InvalidArgument, "SAME_MEMBER"),
        Overflow => ErrorKind::Refused(Code::InvalidArgument, "OUT_OF_BOUNDS"),
        Internal(_) => ErrorKind::Internal,
    }
}

laurel_runtime::impl_status!(PointsError);
