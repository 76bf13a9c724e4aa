//! W3C trace context through gRPC metadata (both directions) and through
//! events.
//!
//! A request's remote parent reaches the code serving it in one of two
//! ways: as the parent of the request span when spans are exported, or, when
//! they are not (the request span is then skipped to keep calls cheap), as
//! the OpenTelemetry context made current around every poll of the call
//! ([`WithRemoteParent`]). [`current`] reads whichever is there.

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    task::{Context as TaskContext, Poll},
};

use http::HeaderName;
use opentelemetry::{
    Context,
    propagation::{Extractor, Injector},
    trace::TraceContextExt,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct MapCarrier<'a>(&'a mut BTreeMap<String, String>);

impl Injector for MapCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct MapExtractor<'a>(&'a BTreeMap<String, String>);

impl Extractor for MapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// The remote parent named by incoming request headers.
pub fn extract_from_headers(headers: &http::HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

/// The remote parent of a request, or `None` without a `traceparent`
/// header (which spares the propagator on most calls).
pub fn remote_parent(headers: &http::HeaderMap) -> Option<Context> {
    headers
        .contains_key(TRACEPARENT)
        .then(|| extract_from_headers(headers))
}

/// The trace context of the work running now: the current span's when it
/// has one, otherwise the OpenTelemetry context made current around the
/// call (the request's remote parent).
pub fn current() -> Context {
    let span_context = tracing::Span::current().context();
    if span_context.span().span_context().is_valid() {
        span_context
    } else {
        Context::current()
    }
}

pin_project_lite::pin_project! {
    /// A future polled with a remote parent as the current OpenTelemetry
    /// context, so spans and events created inside it join the caller's
    /// trace.
    #[derive(Debug)]
    pub struct WithRemoteParent<F> {
        #[pin]
        inner: F,
        parent: Option<Context>,
    }
}

impl<F> WithRemoteParent<F> {
    /// Polls `inner` under `parent`, or as it is when `parent` is `None`.
    pub fn new(inner: F, parent: Option<Context>) -> Self {
        Self { inner, parent }
    }
}

impl<F: Future> Future for WithRemoteParent<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _guard = this.parent.as_ref().map(|parent| parent.clone().attach());
        this.inner.poll(cx)
    }
}

/// The current trace context (see [`current`]) as `traceparent`/`tracestate`
/// entries.
pub fn current_as_map() -> BTreeMap<String, String> {
    let context = current();
    let mut map = BTreeMap::new();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut MapCarrier(&mut map))
    });
    map
}

/// Makes the trace context carried by an event the parent of `span`.
pub fn set_parent_from_map(span: &tracing::Span, map: &BTreeMap<String, String>) {
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&MapExtractor(map)));
    let _ = span.set_parent(parent);
}

/// Client interceptor that sends the current trace context with each call.
#[derive(Clone, Copy, Debug, Default)]
pub struct PropagateTraceContext;

impl tonic::service::Interceptor for PropagateTraceContext {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let context = current();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&context, &mut MetadataInjector(request.metadata_mut()))
        });
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_a_request_span_the_callers_trace_still_reaches_events() {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            format!("00-{trace_id}-00f067aa0ba902b7-01")
                .parse()
                .unwrap(),
        );
        let inside = WithRemoteParent::new(async { current_as_map() }, remote_parent(&headers));
        let map = inside.await;
        assert!(map["traceparent"].contains(trace_id), "{map:?}");
        assert!(
            current_as_map().is_empty(),
            "the context leaked out of the call"
        );
    }

    #[test]
    fn without_traceparent_there_is_no_remote_parent() {
        assert!(remote_parent(&http::HeaderMap::new()).is_none());
    }
}
