//! The tier service's errors and their gRPC mapping.

use laurel_runtime::{
    error::{ErrorKind, ServiceError, Violations},
    idempotency::IdempotencyError,
};
use tonic::Code;

/// ErrorInfo domain of this service.
pub const DOMAIN: &str = "laurel.tier";

/// Everything that can go wrong in the tier service.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    /// The request is malformed.
    #[error("invalid request")]
    Invalid(Violations),
    /// The member is unknown in this programme (never enrolled, or erased).
    #[error("member not found")]
    MemberNotFound,
    /// The programme has no ladder yet.
    #[error("no ladder published")]
    NoLadder,
    /// No such ladder version.
    #[error("ladder version not found")]
    LadderNotFound,
    /// No such re-evaluation.
    #[error("re-evaluation not found")]
    ReevaluationNotFound,
    /// No such benefit.
    #[error("benefit not found")]
    BenefitNotFound,
    /// The member does not have the benefit now.
    #[error("benefit not granted")]
    BenefitNotGranted,
    /// The quota of the current period is used up.
    #[error("quota exhausted: {remaining} left")]
    QuotaExhausted {
        /// Uses left in the period.
        remaining: i64,
    },
    /// No such plan.
    #[error("plan not found")]
    PlanNotFound,
    /// No such subscription.
    #[error("subscription not found")]
    SubscriptionNotFound,
    /// The subscription or plan cannot do that now.
    #[error("{code}: {message}")]
    Precondition {
        /// ErrorInfo reason, for example `SUBSCRIPTION_ENDED`.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
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

impl From<Violations> for TierError {
    fn from(v: Violations) -> Self {
        Self::Invalid(v)
    }
}

impl From<IdempotencyError> for TierError {
    fn from(e: IdempotencyError) -> Self {
        match e {
            IdempotencyError::Mismatch => Self::RequestIdReused,
            IdempotencyError::Db(e) => Self::Db(e),
            IdempotencyError::Unreadable => Self::Internal(anyhow::anyhow!(e)),
        }
    }
}

impl TierError {
    /// A field violation.
    pub fn field(field: &str, description: impl Into<String>) -> Self {
        let mut v = Violations::new();
        v.add(field, description);
        Self::Invalid(v)
    }

    /// A refused precondition with its reason code.
    pub fn precondition(code: &'static str, message: impl Into<String>) -> Self {
        Self::Precondition {
            code,
            message: message.into(),
        }
    }
}

impl ServiceError for TierError {
    const DOMAIN: &'static str = DOMAIN;

    fn kind(&self) -> ErrorKind<'_> {
        use TierError::*;
        match self {
            Invalid(v) => ErrorKind::Invalid(v),
            MemberNotFound => ErrorKind::Refused(Code::NotFound, "MEMBER_NOT_FOUND"),
            NoLadder => ErrorKind::Refused(Code::FailedPrecondition, "NO_LADDER"),
            LadderNotFound => ErrorKind::Refused(Code::NotFound, "LADDER_NOT_FOUND"),
            ReevaluationNotFound => ErrorKind::Refused(Code::NotFound, "REEVALUATION_NOT_FOUND"),
            BenefitNotFound => ErrorKind::Refused(Code::NotFound, "BENEFIT_NOT_FOUND"),
            BenefitNotGranted => {
                ErrorKind::Refused(Code::FailedPrecondition, "BENEFIT_NOT_GRANTED")
            }
            QuotaExhausted { .. } => ErrorKind::Refused(Code::ResourceExhausted, "QUOTA_EXHAUSTED"),
            PlanNotFound => ErrorKind::Refused(Code::NotFound, "PLAN_NOT_FOUND"),
            SubscriptionNotFound => ErrorKind::Refused(Code::NotFound, "SUBSCRIPTION_NOT_FOUND"),
            Precondition { code, .. } => ErrorKind::Refused(Code::FailedPrecondition, code),
            RequestIdReused => ErrorKind::Refused(Code::AlreadyExists, "REQUEST_ID_REUSED"),
            Db(e) => ErrorKind::Db(e),
            Internal(_) => ErrorKind::Internal,
        }
    }
}

laurel_runtime::impl_status!(TierError);
