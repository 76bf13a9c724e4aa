//! The member service's errors and their gRPC mapping.

use laurel_runtime::{
    error::{DbErrorKind, ErrorBuilder, Violations, db_error_kind, from_db, internal},
    idempotency::IdempotencyError,
};
use tonic::{Code, Status};

/// ErrorInfo domain of this service.
pub const DOMAIN: &str = "laurel.member";

/// Everything that can go wrong in the member service.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    /// The request is malformed.
    #[error("invalid request")]
    Invalid(Violations),
    /// No such member in this programme.
    #[error("member not found")]
    MemberNotFound,
    /// No member holds the identity.
    #[error("identity not found")]
    IdentityNotFound,
    /// Another member holds the identity.
    #[error("identity belongs to another member")]
    IdentityTaken,
    /// The request_id was used with a different request.
    #[error("request_id reused with a different request")]
    RequestIdReused,
    /// (source, external_id) was recorded with different content.
    #[error("activity already recorded with different content")]
    ActivityConflict,
    /// The member is merged or erased.
    #[error("member is {0}")]
    NotActive(&'static str),
    /// A member would refer themselves.
    #[error("a member cannot refer themselves")]
    SelfReferral,
    /// A referral would close a cycle.
    #[error("referral would close a cycle")]
    ReferralCycle,
    /// A refund names an order not recorded for this member.
    #[error("refunded order not found")]
    OrderNotFound,
    /// A refund exceeds what is left of its order.
    #[error("refund exceeds the order")]
    RefundExceedsOrder,
    /// An order id was recorded before as another purchase.
    #[error("order already recorded")]
    OrderAlreadyRecorded,
    /// Merging a member with itself or a merged/erased member.
    #[error("members cannot be merged: {0}")]
    MergeRefused(&'static str),
    /// Storage failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// A fault that is not the caller's.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<Violations> for MemberError {
    fn from(v: Violations) -> Self {
        Self::Invalid(v)
    }
}

impl From<IdempotencyError> for MemberError {
    fn from(e: IdempotencyError) -> Self {
        match e {
            IdempotencyError::Mismatch => Self::RequestIdReused,
            IdempotencyError::Db(e) => Self::Db(e),
            IdempotencyError::Unreadable => Self::Internal(anyhow::anyhow!(e)),
        }
    }
}

impl MemberError {
    /// Maps a database error, turning named constraints into domain errors.
    pub fn from_db(error: sqlx::Error) -> Self {
        match db_error_kind(&error) {
            DbErrorKind::UniqueViolation(c) if c == "identities_pkey" => Self::IdentityTaken,
            DbErrorKind::UniqueViolation(c) if c == "activities_purchase_order_key" => {
                Self::OrderAlreadyRecorded
            }
            DbErrorKind::UniqueViolation(c) if c == "activities_source_external_id_key" => {
                Self::ActivityConflict
            }
            _ => Self::Db(error),
        }
    }
}

fn status(code: Code, reason: &str, message: &str) -> Status {
    ErrorBuilder::new(code, DOMAIN, reason, message).build()
}

impl From<MemberError> for Status {
    fn from(error: MemberError) -> Self {
        use MemberError::*;
        match error {
            Invalid(v) => v.into_status(DOMAIN),
            MemberNotFound => status(Code::NotFound, "MEMBER_NOT_FOUND", "member not found"),
            IdentityNotFound => status(Code::NotFound, "IDENTITY_NOT_FOUND", "identity not found"),
            IdentityTaken => status(
                Code::AlreadyExists,
                "IDENTITY_TAKEN",
                "identity belongs to another member",
            ),
            RequestIdReused => status(
                Code::AlreadyExists,
                "REQUEST_ID_REUSED",
                "request_id was used with a different request",
            ),
            ActivityConflict => status(
                Code::AlreadyExists,
                "ACTIVITY_CONFLICT",
                "source and external_id were recorded with different content",
            ),
            NotActive(state) => status(
                Code::FailedPrecondition,
                "MEMBER_NOT_ACTIVE",
                &format!("member is {state}"),
            ),
            SelfReferral => status(
                Code::FailedPrecondition,
                "SELF_REFERRAL",
                "a member cannot refer themselves",
            ),
            ReferralCycle => status(
                Code::FailedPrecondition,
                "REFERRAL_CYCLE",
                "referral would close a cycle",
            ),
            OrderNotFound => status(
                Code::FailedPrecondition,
                "ORDER_NOT_FOUND",
                "refunded order is not recorded for this member",
            ),
            RefundExceedsOrder => status(
                Code::FailedPrecondition,
                "REFUND_EXCEEDS_ORDER",
                "refunds would exceed the order total",
            ),
            OrderAlreadyRecorded => status(
                Code::AlreadyExists,
                "ORDER_ALREADY_RECORDED",
                "a purchase with this order id was recorded before",
            ),
            MergeRefused(why) => status(
                Code::FailedPrecondition,
                "MERGE_REFUSED",
                &format!("members cannot be merged: {why}"),
            ),
            Db(e) => from_db(DOMAIN, &e),
            Internal(e) => internal(DOMAIN, &e),
        }
    }
}
