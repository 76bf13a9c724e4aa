//! The one place that establishes who is calling and for which programme.
//!
//! API keys come from `x-api-key` (or `authorization: Bearer`); when no keys
//! are configured authentication is off. Health and reflection stay open so
//! probes and tools work. Scopes and mutual TLS will be added here.

use std::{
    collections::HashMap,
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::{BoxFuture, FutureExt};
use http::{Request, Response};
use tonic::Status;
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    context::{Caller, PROGRAM_HEADER, ProgramId, RequestContext},
    error::ErrorBuilder,
};

/// Settings of the auth layer.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    keys: Arc<HashMap<String, String>>,
    default_program: ProgramId,
}

impl AuthConfig {
    /// Builds the settings from `name:key` pairs and the default programme.
    pub fn new(api_keys: &[(String, String)], default_program: ProgramId) -> Self {
        let keys = api_keys
            .iter()
            .map(|(name, key)| (key.clone(), name.clone()))
            .collect();
        Self {
            keys: Arc::new(keys),
            default_program,
        }
    }

    fn caller<B>(&self, request: &Request<B>) -> Result<Caller, Status> {
        if self.keys.is_empty() {
            return Ok(Caller::Anonymous);
        }
        let headers = request.headers();
        let presented = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
            });
        let Some(presented) = presented else {
            return Err(Status::unauthenticated("missing api key"));
        };
        match self.keys.get(presented) {
            Some(name) => Ok(Caller::ApiKey(name.clone())),
            None => Err(Status::unauthenticated("unknown api key")),
        }
    }

    fn program<B>(&self, request: &Request<B>) -> Result<ProgramId, Status> {
        let Some(raw) = request.headers().get(PROGRAM_HEADER) else {
            return Ok(self.default_program.clone());
        };
        let parsed = raw
            .to_str()
            .map_err(|_| "must be ASCII")
            .and_then(ProgramId::parse);
        parsed.map_err(|reason| {
            ErrorBuilder::invalid_argument("laurel.common")
                .violation(PROGRAM_HEADER, reason)
                .build()
        })
    }

    fn authorise<B>(&self, request: &Request<B>) -> Result<RequestContext, Status> {
        Ok(RequestContext {
            caller: self.caller(request)?,
            program: self.program(request)?,
        })
    }
}

fn is_open(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.")
}

/// Tower layer that authenticates calls and attaches a [`RequestContext`].
#[derive(Clone, Debug)]
pub struct AuthLayer(pub AuthConfig);

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            config: self.0.clone(),
        }
    }
}

/// Service built by [`AuthLayer`].
#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    config: AuthConfig,
}

impl<S, B, R> Service<Request<B>> for AuthService<S>
where
    S: Service<Request<B>, Response = Response<R>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if is_open(request.uri().path()) {
            return self.inner.call(request).boxed();
        }
        match self.config.authorise(&request) {
            Ok(context) => {
                request.extensions_mut().insert(context);
                self.inner.call(request).boxed()
            }
            Err(status) => futures::future::ready(Ok(status.into_http())).boxed(),
        }
    }
}
