//! A process-wide concurrency limit that sheds excess calls at once with
//! `RESOURCE_EXHAUSTED` and `RetryInfo`, instead of queueing them.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::future::{BoxFuture, FutureExt};
use http::{Request, Response};
use tokio::sync::Semaphore;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::ErrorBuilder;

/// Tower layer allowing `limit` calls in flight.
#[derive(Clone, Debug)]
pub struct ShedLayer(Arc<Semaphore>);

impl ShedLayer {
    /// A layer allowing `limit` concurrent calls.
    pub fn new(limit: usize) -> Self {
        Self(Arc::new(Semaphore::new(limit)))
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Shed {
            inner,
            permits: self.0.clone(),
        }
    }
}

/// Service built by [`ShedLayer`].
#[derive(Clone, Debug)]
pub struct Shed<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl<S, B, R> Service<Request<B>> for Shed<S>
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

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let future = self.inner.call(request);
                async move {
                    let result = future.await;
                    drop(permit);
                    result
                }
                .boxed()
            }
            Err(_) => {
                metrics::counter!("laurel_grpc_shed_total").increment(1);
                let status = ErrorBuilder::new(
                    tonic::Code::ResourceExhausted,
                    "laurel.common",
                    "OVERLOADED",
                    "server overloaded, retry later",
                )
                .retry_after(Duration::from_millis(100))
                .build();
                futures::future::ready(Ok(status.into_http())).boxed()
            }
        }
    }
}
