//! The analytics service's errors and their gRPC mapping.

use laurel_runtime::{
    error::{ErrorKind, ServiceError, Violations},
    idempotency::IdempotencyError,
};
use tonic::Code;

/// ErrorInfo domain of this service.
pub const DOMAIN: &str = "laurel.analytics";

/// Everything that can go wrong in the analytics service.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// The request is malformed.
    #[error("invalid request")]
    Invalid(Violations),
    /// The member is unknown in this programme.
    #[error("member not found")]
    MemberNotFound,
    /// The programme has no analytics settings yet.
    #[error("no settings: call PutSettings first")]
    NoSettings,
    /// Nothing computed yet (no RFM run, no model fit, no neighbours).
    #[error("{code}: {message}")]
    NotComputed {
        /// ErrorInfo reason, for example `NO_RFM_RUN`.
        code: &'static str,
        /// What is missing.
        message: String,
    },
    /// The request cannot be served in the current state.
    #[error("{code}: {message}")]
    Precondition {
        /// ErrorInfo reason.
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

impl From<Violations> for AnalyticsError {
    fn from(v: Violations) -> Self {
        Self::Invalid(v)
    }
}

impl From<IdempotencyError> for AnalyticsError {
    fn from(e: IdempotencyError) -> Self {
        match e {
            IdempotencyError::Mismatch => Self::RequestIdReused,
            IdempotencyError::Db(e) => Self::Db(e),
            IdempotencyError::Unreadable => Self::Internal(anyhow::anyhow!(e)),
        }
    }
}

impl AnalyticsError {
    /// A field violation.
    pub fn field(field: &str, description: impl Into<String>) -> Self {
        let mut v = Violations::new();
        v.add(field, description);
        Self::Invalid(v)
    }

    /// Something not computed yet.
    pub fn not_computed(code: &'static str, message: impl Into<String>) -> Self {
        Self::NotComputed {
            code,
            message: message.into(),
        }
    }
}

impl ServiceError for AnalyticsError {
    const DOMAIN: &'static str = DOMAIN;

    fn kind(&self) -> ErrorKind<'_> {
        use AnalyticsError::*;
        match self {
            Invalid(v) => ErrorKind::Invalid(v),
            MemberNotFound => ErrorKind::Refused(Code::NotFound, "MEMBER_NOT_FOUND"),
            NoSettings => ErrorKind::Refused(Code::FailedPrecondition, "NO_SETTINGS"),
            NotComputed { code, .. } => ErrorKind::Refused(Code::FailedPrecondition, code),
            Precondition { code, .. } => ErrorKind::Refused(Code::FailedPrecondition, code),
            RequestIdReused => ErrorKind::Refused(Code::AlreadyExists, "REQUEST_ID_REUSED"),
            Db(e) => ErrorKind::Db(e),
            Internal(_) => ErrorKind::Internal,
        }
    }
}

laurel_runtime::impl_status!(AnalyticsError);
