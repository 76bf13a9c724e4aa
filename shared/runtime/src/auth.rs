//! The one place that establishes who is calling, for which programme, and
//! whether the caller's key may do what the method needs.
//!
//! API keys come from `x-api-key` (or `authorization: Bearer`) and are bound
//! to programmes and scopes (see [`crate::api_key`]). Without keys the
//! service only starts in development mode, where authentication is off.
//! Health and reflection stay open so probes and tools work; the layer in
//! [`crate::layers`] skips them before calling in here.

use std::{collections::HashMap, sync::Arc};

use http::{HeaderMap, HeaderName, header::AUTHORIZATION};
use tonic::{Code, Status};

use crate::{
    api_key::{ApiKey, KeyDigest, Programmes, Scope, Scopes, digest},
    config::RuntimeConfig,
    context::{Caller, PROGRAM_HEADER, ProgramId, RequestContext},
    error::ErrorBuilder,
};

/// ErrorInfo domain of authentication and authorisation errors.
pub const DOMAIN: &str = "laurel.auth";

const API_KEY_HEADER: HeaderName = HeaderName::from_static("x-api-key");
const PROGRAM: HeaderName = HeaderName::from_static(PROGRAM_HEADER);

/// The scope a method needs by default, from its name: `Get*`, `List*`,
/// `Lookup*`, `BatchGet*`, `Search*` and `Echo` read; `Export*`, `Erase*`
/// and `Merge*` are admin; everything else writes. `path` is the gRPC path
/// (`/package.Service/Method`) or the bare method name.
pub fn default_scope(path: &str) -> Scope {
    let method = path.rsplit('/').next().unwrap_or(path);
    let starts = |prefixes: &[&str]| prefixes.iter().any(|p| method.starts_with(p));
    if starts(&["Get", "List", "Lookup", "BatchGet", "Search", "Echo"]) {
        Scope::Read
    } else if starts(&["Export", "Erase", "Merge"]) {
        Scope::Admin
    } else {
        Scope::Write
    }
}

/// Maps a gRPC path to the scope it needs; services declare exceptions to
/// [`default_scope`] with one.
pub type MethodScopes = Arc<dyn Fn(&str) -> Scope + Send + Sync>;

#[derive(Debug)]
struct Grant {
    caller: Caller,
    programmes: Programmes,
    scopes: Scopes,
}

/// Checks calls against the configured keys.
#[derive(Debug)]
pub struct Authenticator {
    keys: HashMap<KeyDigest, Grant>,
    /// Set only in development mode without keys: every call passes.
    anonymous: Option<Grant>,
    default_program: ProgramId,
}

/// The runtime refused to build an authenticator.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// Neither keys nor development mode.
    #[error(
        "no API keys configured and development mode is off: refusing to serve unauthenticated"
    )]
    NoKeys,
    /// `default_program` is not a programme id.
    #[error("default programme {0}")]
    DefaultProgram(&'static str),
}

impl Authenticator {
    /// An authenticator for `keys`. With no keys it needs `dev_mode`, and
    /// then lets every call in (with a loud warning).
    pub fn new(
        keys: &[ApiKey],
        dev_mode: bool,
        default_program: ProgramId,
    ) -> Result<Self, AuthSetupError> {
        let anonymous = match (keys.is_empty(), dev_mode) {
            (false, _) => None,
            (true, true) => {
                tracing::warn!(
                    "LAUREL_DEV_MODE=1 and no LAUREL_API_KEYS: AUTHENTICATION IS OFF, every \
                     caller may act in every programme; never run like this in production"
                );
                Some(Grant {
                    caller: Caller::Anonymous,
                    programmes: Programmes::Any,
                    scopes: Scopes::ALL,
                })
            }
            (true, false) => return Err(AuthSetupError::NoKeys),
        };
        let keys = keys
            .iter()
            .map(|key| {
                let grant = Grant {
                    caller: Caller::ApiKey(key.name.clone()),
                    programmes: key.programmes.clone(),
                    scopes: key.scopes,
                };
                (key.digest, grant)
            })
            .collect();
        Ok(Self {
            keys,
            anonymous,
            default_program,
        })
    }

    /// An authenticator for the keys, development mode and default
    /// programme of `config`.
    pub fn from_config(config: &RuntimeConfig) -> Result<Self, AuthSetupError> {
        let default_program =
            ProgramId::parse(&config.default_program).map_err(AuthSetupError::DefaultProgram)?;
        Self::new(&config.api_keys, config.dev_mode, default_program)
    }

    /// Authenticates a call that needs `scope` and returns its context.
    pub fn authorise(&self, headers: &HeaderMap, scope: Scope) -> Result<RequestContext, Status> {
        let grant = match &self.anonymous {
            Some(grant) => grant,
            None => self.grant(headers)?,
        };
        let program = self.program(headers, &grant.programmes)?;
        if !grant.programmes.allows(&program) {
            return Err(ErrorBuilder::new(
                Code::PermissionDenied,
                DOMAIN,
                "PROGRAM_NOT_ALLOWED",
                format!("this api key may not act in programme {program}"),
            )
            .build());
        }
        if !grant.scopes.contains(scope) {
            return Err(ErrorBuilder::new(
                Code::PermissionDenied,
                DOMAIN,
                "SCOPE_MISSING",
                format!("this api key lacks the {scope} scope this method needs"),
            )
            .build());
        }
        Ok(RequestContext {
            caller: grant.caller.clone(),
            program,
        })
    }

    fn grant(&self, headers: &HeaderMap) -> Result<&Grant, Status> {
        let presented = headers
            .get(API_KEY_HEADER)
            .map(|v| v.as_bytes())
            .or_else(|| {
                headers
                    .get(AUTHORIZATION)
                    .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            });
        let Some(presented) = presented else {
            return Err(ErrorBuilder::new(
                Code::Unauthenticated,
                DOMAIN,
                "API_KEY_MISSING",
                "missing api key: send it in x-api-key",
            )
            .build());
        };
        self.keys.get(&digest(presented)).ok_or_else(|| {
            ErrorBuilder::new(
                Code::Unauthenticated,
                DOMAIN,
                "API_KEY_UNKNOWN",
                "unknown api key",
            )
            .build()
        })
    }

    fn program(&self, headers: &HeaderMap, allowed: &Programmes) -> Result<ProgramId, Status> {
        let Some(raw) = headers.get(PROGRAM) else {
            return Ok(self.default_program.clone());
        };
        // The common cases reuse an id already held instead of allocating.
        if let Some(id) = allowed.find(raw.as_bytes()) {
            return Ok(id.clone());
        }
        if raw.as_bytes() == self.default_program.as_str().as_bytes() {
            return Ok(self.default_program.clone());
        }
        raw.to_str()
            .map_err(|_| "must be ASCII")
            .and_then(ProgramId::parse)
            .map_err(|reason| {
                ErrorBuilder::new(
                    Code::InvalidArgument,
                    "laurel.common",
                    "PROGRAM_INVALID",
                    "invalid programme",
                )
                .violation(PROGRAM_HEADER, reason)
                .build()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_admin_and_writes_follow_the_method_name() {
        for (path, scope) in [
            ("/laurel.member.v1.MemberService/GetMember", Scope::Read),
            (
                "/laurel.member.v1.MemberService/ListActivities",
                Scope::Read,
            ),
            ("/laurel.member.v1.MemberService/LookupMember", Scope::Read),
            ("/laurel.common.v1.EchoService/Echo", Scope::Read),
            ("/laurel.member.v1.MemberService/ExportMember", Scope::Admin),
            ("/laurel.member.v1.MemberService/EraseMember", Scope::Admin),
            ("/laurel.member.v1.MemberService/MergeMembers", Scope::Admin),
            ("/laurel.member.v1.MemberService/CreateMember", Scope::Write),
            (
                "/laurel.member.v1.MemberService/RecordActivity",
                Scope::Write,
            ),
            ("RecordActivity", Scope::Write),
        ] {
            assert_eq!(default_scope(path), scope, "{path}");
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    fn reason(status: &Status) -> String {
        use tonic_types::StatusExt;
        status
            .get_error_details()
            .error_info()
            .unwrap()
            .reason
            .clone()
    }

    #[test]
    fn a_bearer_token_works_like_x_api_key() {
        let keys = ApiKey::parse_list("pos:0123456789abcdef:*:read").unwrap();
        let auth = Authenticator::new(&keys, false, ProgramId::parse("default").unwrap()).unwrap();
        let context = auth
            .authorise(
                &headers(&[("authorization", "Bearer 0123456789abcdef")]),
                Scope::Read,
            )
            .unwrap();
        assert_eq!(context.caller.name(), "pos");
        assert_eq!(context.program.as_str(), "default");
    }

    #[test]
    fn a_malformed_programme_is_invalid_with_error_info() {
        let keys = ApiKey::parse_list("pos:0123456789abcdef").unwrap();
        let auth = Authenticator::new(&keys, false, ProgramId::parse("default").unwrap()).unwrap();
        let error = auth
            .authorise(
                &headers(&[
                    ("x-api-key", "0123456789abcdef"),
                    (PROGRAM_HEADER, "Brand A"),
                ]),
                Scope::Read,
            )
            .unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument);
        assert_eq!(reason(&error), "PROGRAM_INVALID");
    }

    #[test]
    fn a_key_bound_to_a_programme_may_not_use_the_default_one() {
        let keys = ApiKey::parse_list("pos:0123456789abcdef:brand-a:*").unwrap();
        let auth = Authenticator::new(&keys, false, ProgramId::parse("default").unwrap()).unwrap();
        let error = auth
            .authorise(&headers(&[("x-api-key", "0123456789abcdef")]), Scope::Read)
            .unwrap_err();
        assert_eq!(reason(&error), "PROGRAM_NOT_ALLOWED");
    }

    #[test]
    fn without_keys_only_dev_mode_builds() {
        let default = ProgramId::parse("default").unwrap();
        assert!(Authenticator::new(&[], false, default.clone()).is_err());
        let auth = Authenticator::new(&[], true, default).unwrap();
        let context = auth.authorise(&HeaderMap::new(), Scope::Admin).unwrap();
        assert_eq!(context.caller, Caller::Anonymous);
    }
}
