//! google.rpc error model helpers: every error carries one `ErrorInfo`
//! (reason and domain), bad input carries `BadRequest` field violations, and
//! retryable errors carry `RetryInfo`.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// Field violations collected while checking a request.
#[derive(Debug, Default, Clone)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// An empty collection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `field` (a path such as `profile.birth_date`) is wrong.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Records a violation when `bad` holds.
    pub fn check(&mut self, bad: bool, field: impl Into<String>, description: impl Into<String>) {
        if bad {
            self.add(field, description);
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The fields named, in order.
    pub fn fields(&self) -> Vec<&str> {
        self.0.iter().map(|v| v.field.as_str()).collect()
    }

    /// `Ok(())` when empty, otherwise the violations as an error.
    pub fn finish(self) -> Result<(), Violations> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }

    /// Turns the violations into an `INVALID_ARGUMENT` status.
    pub fn into_status(self, domain: &str) -> Status {
        let mut builder = ErrorBuilder::invalid_argument(domain);
        builder.violations = self.0;
        builder.build()
    }
}

/// Builds a `Status` with google.rpc details.
#[derive(Debug)]
pub struct ErrorBuilder {
    code: Code,
    message: String,
    reason: String,
    domain: String,
    violations: Vec<FieldViolation>,
    retry_after: Option<Duration>,
}

impl ErrorBuilder {
    /// A status with `code`, an UPPER_SNAKE `reason` within `domain`, and a
    /// lower case message for people.
    pub fn new(code: Code, domain: &str, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            reason: reason.to_owned(),
            domain: domain.to_owned(),
            violations: Vec::new(),
            retry_after: None,
        }
    }

    /// `INVALID_ARGUMENT` awaiting field violations.
    pub fn invalid_argument(domain: &str) -> Self {
        Self::new(
            Code::InvalidArgument,
            domain,
            "INVALID_ARGUMENT",
            "invalid request",
        )
    }

    /// Adds a field violation.
    pub fn violation(mut self, field: &str, description: &str) -> Self {
        self.violations
            .push(FieldViolation::new(field, description));
        self
    }

    /// Tells the client to retry after `delay`.
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// The status.
    pub fn build(self) -> Status {
        let mut details = ErrorDetails::new();
        details.set_error_info(self.reason, self.domain, std::collections::HashMap::new());
        if !self.violations.is_empty() {
            details.set_bad_request(self.violations);
        }
        if let Some(delay) = self.retry_after {
            details.set_retry_info(Some(delay));
        }
        Status::with_error_details(self.code, self.message, details)
    }
}

/// What an error means to a client; see [`ServiceError`].
#[derive(Debug)]
pub enum ErrorKind<'a> {
    /// Bad input: `INVALID_ARGUMENT` with these field violations.
    Invalid(&'a Violations),
    /// A refusal the client can act on: the code and an UPPER_SNAKE reason;
    /// the message is the error's `Display`.
    Refused(Code, &'static str),
    /// A storage fault: mapped by [`from_db`] (retryable where that helps).
    Db(&'a sqlx::Error),
    /// A fault that is not the caller's: logged, opaque to the client.
    Internal,
}

/// One error trait for every service: each service's error enum says what
/// each variant means, and [`impl_status!`](crate::impl_status) derives the
/// `tonic::Status` with ErrorInfo, BadRequest and RetryInfo details.
pub trait ServiceError: std::fmt::Display {
    /// The ErrorInfo domain, for example `laurel.member`.
    const DOMAIN: &'static str;
    /// What this error means to a client.
    fn kind(&self) -> ErrorKind<'_>;
}

/// The status of a service error.
pub fn to_status<E: ServiceError>(error: &E) -> Status {
    match error.kind() {
        ErrorKind::Invalid(violations) => violations.clone().into_status(E::DOMAIN),
        ErrorKind::Refused(code, reason) => {
            ErrorBuilder::new(code, E::DOMAIN, reason, error.to_string()).build()
        }
        ErrorKind::Db(db) => from_db(E::DOMAIN, db),
        ErrorKind::Internal => internal(E::DOMAIN, error),
    }
}

/// Implements `From<$error> for tonic::Status` through [`to_status`], so
/// handlers can use `?` on a service's error type.
#[macro_export]
macro_rules! impl_status {
    ($error:ty) => {
        impl From<$error> for ::tonic::Status {
            fn from(error: $error) -> Self {
                $crate::error::to_status(&error)
            }
        }
    };
}

/// What a database error means to a service.
#[derive(Debug, PartialEq, Eq)]
pub enum DbErrorKind {
    /// A unique constraint, by name.
    UniqueViolation(String),
    /// A foreign key constraint, by name.
    ForeignKeyViolation(String),
    /// A check constraint, by name.
    CheckViolation(String),
    /// Serialization failure or deadlock: retry the transaction.
    Conflict,
    /// Too many requests wait for the pool already: refused at once.
    Overloaded,
    /// The database could not be reached or the pool is exhausted.
    Unavailable,
    /// Anything else: a bug or an operational fault.
    Other,
}

/// Classifies a sqlx error by Postgres SQLSTATE and constraint name.
pub fn db_error_kind(error: &sqlx::Error) -> DbErrorKind {
    match error {
        sqlx::Error::Database(db) => {
            let constraint = db.constraint().unwrap_or_default().to_owned();
            match db.code().as_deref() {
                Some("23505") => DbErrorKind::UniqueViolation(constraint),
                Some("23503") => DbErrorKind::ForeignKeyViolation(constraint),
                Some("23514") => DbErrorKind::CheckViolation(constraint),
                Some("40001") | Some("40P01") => DbErrorKind::Conflict,
                // Connection exceptions and shutdowns; 08P01 (protocol
                // violation) is a bug, not an outage.
                Some(code)
                    if (code.starts_with("08") && code != "08P01") || code.starts_with("57P") =>
                {
                    DbErrorKind::Unavailable
                }
                _ => DbErrorKind::Other,
            }
        }
        sqlx::Error::Io(io)
            if io
                .get_ref()
                .is_some_and(|e| e.is::<crate::db::Overloaded>()) =>
        {
            DbErrorKind::Overloaded
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            DbErrorKind::Unavailable
        }
        _ => DbErrorKind::Other,
    }
}

/// The status for an unexpected fault: logged with its cause, opaque to the
/// client.
pub fn internal(domain: &str, cause: &dyn std::fmt::Display) -> Status {
    tracing::error!(error = %cause, "internal error");
    ErrorBuilder::new(Code::Internal, domain, "INTERNAL", "internal error").build()
}

/// The status for a database fault, retryable where that helps.
pub fn from_db(domain: &str, error: &sqlx::Error) -> Status {
    match db_error_kind(error) {
        DbErrorKind::Conflict => ErrorBuilder::new(
            Code::Aborted,
            domain,
            "CONFLICT",
            "concurrent change, retry",
        )
        .retry_after(Duration::from_millis(50))
        .build(),
        DbErrorKind::Overloaded => ErrorBuilder::new(
            Code::ResourceExhausted,
            domain,
            "OVERLOADED",
            "server overloaded, retry later",
        )
        .retry_after(Duration::from_millis(100))
        .build(),
        DbErrorKind::Unavailable => {
            tracing::warn!(error = %error, "database unavailable");
            ErrorBuilder::new(
                Code::Unavailable,
                domain,
                "DATABASE_UNAVAILABLE",
                "storage unavailable",
            )
            .retry_after(Duration::from_secs(1))
            .build()
        }
        _ => internal(domain, error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_become_bad_request_details() {
        let mut v = Violations::new();
        v.add("profile.birth_date", "must be YYYY-MM-DD");
        let status = v.into_status("laurel.member");
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let fields: Vec<_> = details
            .bad_request()
            .unwrap()
            .field_violations
            .iter()
            .map(|f| f.field.clone())
            .collect();
        assert_eq!(fields, ["profile.birth_date"]);
        assert_eq!(details.error_info().unwrap().domain, "laurel.member");
    }
}
