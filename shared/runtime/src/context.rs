//! Who is calling and for which loyalty programme: established once per
//! request by the [`crate::auth`] layer and read by handlers.

use std::{fmt, sync::Arc};

/// Metadata key naming the programme of a request.
pub const PROGRAM_HEADER: &str = "x-laurel-program";

/// A loyalty programme id: 1 to 64 lower case letters, digits, `-` or `_`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProgramId(Arc<str>);

impl ProgramId {
    /// Checks and wraps a programme id.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let ok_char =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
        if raw.is_empty() || raw.len() > 64 || !raw.chars().all(ok_char) {
            return Err("must be 1 to 64 lower case letters, digits, '-' or '_'");
        }
        Ok(Self(raw.into()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProgramId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// Authentication is off (development mode): every caller is trusted.
    Anonymous,
    /// A caller that presented the API key with this name.
    ApiKey(Arc<str>),
}

impl Caller {
    /// A stable name for the caller, e.g. to scope idempotency keys:
    /// the key's name, or `anonymous`.
    pub fn name(&self) -> &str {
        match self {
            Self::Anonymous => "anonymous",
            Self::ApiKey(name) => name,
        }
    }
}

/// Context of one request, put in the request's extensions.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// Programme the request acts in.
    pub program: ProgramId,
    /// Who is calling.
    pub caller: Caller,
}

/// Reads the context the auth layer attached to a request.
pub fn request_context<T>(request: &tonic::Request<T>) -> Result<RequestContext, tonic::Status> {
    request
        .extensions()
        .get::<RequestContext>()
        .cloned()
        .ok_or_else(|| tonic::Status::internal("request context missing"))
}
