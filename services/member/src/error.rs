//! The member service's errors and their gRPC mapping.

use laurel_runtime::{
    error::{DbErrorKind, ErrorKind, ServiceError, Violations, db_error_kind},
    idempotency::IdempotencyError,
};
use tonic::Code;

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
    #[error("request_id was used with a different request")]
    RequestIdReused,
    /// (source, external_id) was recorded with different content.
    #[error("source and external_id were recorded with different content")]
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
    #[error("refunded order is not recorded for this member")]
    OrderNotFound,
    /// A refund exceeds what is left of its order.
    #[error("refunds would exceed the order total")]
    RefundExceedsOrder,
    /// An order id was recorded before as another purchase.
    #[error("a purchase with this order id was recorded before")]
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

impl ServiceError for MemberError {
    const DOMAIN: &'static str = DOMAIN;

    fn kind(&self) -> ErrorKind<'_> {
        use MemberError::*;
        match self {
            Invalid(v) => ErrorKind::Invalid(v),
            MemberNotFound => ErrorKind::Refused(Code::NotFound, "MEMBER_NOT_FOUND"),
            IdentityNotFound => ErrorKind::Refused(Code::NotFound, "IDENTITY_NOT_FOUND"),
            IdentityTaken => ErrorKind::Refused(Code::AlreadyExists, "IDENTITY_TAKEN"),
            RequestIdReused => ErrorKind::Refused(Code::AlreadyExists, "REQUEST_ID_REUSED"),
            ActivityConflict => ErrorKind::Refused(Code::AlreadyExists, "ACTIVITY_CONFLICT"),
            NotActive(_) => ErrorKind::Refused(Code::FailedPrecondition, "MEMBER_NOT_ACTIVE"),
            SelfReferral => ErrorKind::Refused(Code::FailedPrecondition, "SELF_REFERRAL"),
            ReferralCycle => ErrorKind::Refused(Code::FailedPrecondition, "REFERRAL_CYCLE"),
            OrderNotFound => ErrorKind::Refused(Code::FailedPrecondition, "ORDER_NOT_FOUND"),
            RefundExceedsOrder => {
                ErrorKind::Refused(Code::FailedPrecondition, "REFUND_EXCEEDS_ORDER")
            }
            OrderAlreadyRecorded => {
                ErrorKind::Refused(Code::AlreadyExists, "ORDER_ALREADY_RECORDED")
            }
            MergeRefused(_) => ErrorKind::Refused(Code::FailedPrecondition, "MERGE_REFUSED"),
            Db(e) => ErrorKind::Db(e),
            Internal(_) => ErrorKind::Internal,
        }
    }
}

laurel_runtime::impl_status!(MemberError);
