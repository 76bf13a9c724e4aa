//! The one tower layer in front of every call: metrics, the request span or
//! the caller's trace context, load shedding, authentication and the
//! programme context, in that order.
//!
//! Everything that can be decided once is decided when the layer is built:
//! the known methods (from the descriptor sets, see [`crate::methods`]),
//! the scope each needs and its metric handles. A call then costs one map
//! lookup, no allocation for its method, and no boxed future. Health and
//! reflection calls skip shedding and authentication.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;
use tracing::{Instrument, instrument::Instrumented};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{
    api_key::Scope,
    auth::{AuthSetupError, Authenticator, MethodScopes, default_scope},
    config::RuntimeConfig,
    methods,
    metrics::{MethodMetrics, UNKNOWN_METHOD, code_of},
    shed::{Admitted, ConcurrencyLimit},
    trace_context::{self, WithRemoteParent},
};

struct Method {
    open: bool,
    scope: Scope,
    metrics: MethodMetrics,
}

struct Shared {
    /// Index into `methods` by gRPC path.
    index: HashMap<Box<str>, usize>,
    /// The known methods, then the one entry for unknown paths.
    methods: Vec<Method>,
    scopes: MethodScopes,
    auth: Authenticator,
    limit: ConcurrencyLimit,
}

impl Shared {
    fn unknown(&self) -> usize {
        self.methods.len() - 1
    }
}

/// The runtime's tower layer; see the module documentation.
#[derive(Clone)]
pub struct RuntimeLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for RuntimeLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeLayer")
            .field("methods", &self.shared.index.len())
            .finish_non_exhaustive()
    }
}

impl RuntimeLayer {
    /// The layer for `config`, with scopes by [`default_scope`].
    pub fn new(config: &RuntimeConfig) -> Result<Self, AuthSetupError> {
        Self::with_scopes(config, default_scope)
    }

    /// The layer for `config`, where `scopes` says which scope each gRPC
    /// path needs (fall back to [`default_scope`] inside it for the rest).
    pub fn with_scopes(
        config: &RuntimeConfig,
        scopes: impl Fn(&str) -> Scope + Send + Sync + 'static,
    ) -> Result<Self, AuthSetupError> {
        let auth = Authenticator::from_config(config)?;
        let paths = methods::known();
        let mut index = HashMap::with_capacity(paths.len());
        let mut table = Vec::with_capacity(paths.len() + 1);
        for path in paths {
            index.insert(path.as_str().into(), table.len());
            table.push(Method {
                open: methods::is_open(&path),
                scope: scopes(&path),
                metrics: MethodMetrics::new(config.service, path),
            });
        }
        // Unknown paths get their scope per call from `scopes`; this one is
        // never read.
        table.push(Method {
            open: false,
            scope: Scope::Admin,
            metrics: MethodMetrics::new(config.service, UNKNOWN_METHOD),
        });
        Ok(Self {
            shared: Arc::new(Shared {
                index,
                methods: table,
                scopes: Arc::new(scopes),
                auth,
                limit: ConcurrencyLimit::new(config.max_concurrent_requests),
            }),
        })
    }
}

impl<S> Layer<S> for RuntimeLayer {
    type Service = RuntimeService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RuntimeService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// Service built by [`RuntimeLayer`].
#[derive(Clone)]
pub struct RuntimeService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for RuntimeService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, B, R> Service<Request<B>> for RuntimeService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<WithRemoteParent<Instrumented<S::Future>>, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let started = Instant::now();
        let shared = &self.shared;
        let path = request.uri().path();
        let (index, open, scope) = match shared.index.get(path) {
            Some(&index) => {
                let method = &shared.methods[index];
                (index, method.open, method.scope)
            }
            // Unknown paths are rare (tonic answers UNIMPLEMENTED): look
            // their scope up per call rather than keeping them.
            None => (
                shared.unknown(),
                methods::is_open(path),
                (shared.scopes)(path),
            ),
        };
        let span = if crate::telemetry::request_spans() {
            tracing::info_span!("grpc", rpc = path, otel.kind = "server")
        } else {
            tracing::Span::none()
        };
        let admitted = if open {
            None
        } else {
            let admitted = match shared.limit.try_admit() {
                Ok(admitted) => admitted,
                Err(status) => return ResponseFuture::rejected(shared, index, started, status),
            };
            match shared.auth.authorise(request.headers(), scope) {
                Ok(context) => {
                    request.extensions_mut().insert(context);
                }
                Err(status) => return ResponseFuture::rejected(shared, index, started, status),
            }
            Some(admitted)
        };
        let mut remote = trace_context::remote_parent(request.headers());
        if !span.is_none()
            && let Some(parent) = remote.take()
        {
            let _ = span.set_parent(parent);
        }
        let future = WithRemoteParent::new(self.inner.call(request).instrument(span), remote);
        ResponseFuture {
            state: State::Called {
                future,
                shared: self.shared.clone(),
                index,
                started,
                admitted,
            },
        }
    }
}

pin_project_lite::pin_project! {
    #[project = StateProjection]
    enum State<F, R> {
        Called {
            #[pin]
            future: F,
            shared: Arc<Shared>,
            index: usize,
            started: Instant,
            admitted: Option<Admitted>,
        },
        Rejected {
            response: Option<Response<R>>,
        },
    }
}

pin_project_lite::pin_project! {
    /// Response future of [`RuntimeService`].
    pub struct ResponseFuture<F, R> {
        #[pin]
        state: State<F, R>,
    }
}

impl<F, R: Default> ResponseFuture<F, R> {
    fn rejected(shared: &Shared, index: usize, started: Instant, status: tonic::Status) -> Self {
        shared.methods[index]
            .metrics
            .record(status.code(), started.elapsed());
        Self {
            state: State::Rejected {
                response: Some(status.into_http()),
            },
        }
    }
}

impl<F, R, E> Future for ResponseFuture<F, R>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProjection::Called {
                future,
                shared,
                index,
                started,
                admitted,
            } => {
                let result = std::task::ready!(future.poll(cx));
                admitted.take();
                let code = match &result {
                    Ok(response) => code_of(
                        response
                            .headers()
                            .get("grpc-status")
                            .map(|value| value.as_bytes()),
                    ),
                    Err(_) => tonic::Code::Unknown,
                };
                shared.methods[*index]
                    .metrics
                    .record(code, started.elapsed());
                Poll::Ready(result)
            }
            StateProjection::Rejected { response } => Poll::Ready(Ok(response
                .take()
                .expect("a rejected call's future is polled once after it is ready"))),
        }
    }
}
