//! Logging and tracing: `tracing` to stdout (JSON with
//! `LAUREL_LOG_FORMAT=json`), OpenTelemetry export over OTLP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, W3C trace context propagation
//! always.
//!
//! Logs and traces are filtered apart: `RUST_LOG` (default `info`) chooses
//! what is logged, `LAUREL_TRACE_FILTER` (same syntax, default `info`) what
//! becomes a span, so `RUST_LOG=warn` still exports request spans.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{Sampler, SdkTracer, SdkTracerProvider},
};
use tracing::Subscriber;
use tracing_subscriber::{
    EnvFilter, Layer, Registry, layer::SubscriberExt, util::SubscriberInitExt,
};

static REQUEST_SPANS: AtomicBool = AtomicBool::new(false);

/// Whether each gRPC call gets its own span. On when spans are exported;
/// off otherwise, since an unexported span only costs (the caller's trace
/// context still reaches events through [`crate::trace_context`]).
pub fn request_spans() -> bool {
    REQUEST_SPANS.load(Ordering::Relaxed)
}

/// Turns request spans on or off for the whole process.
pub fn set_request_spans(on: bool) {
    REQUEST_SPANS.store(on, Ordering::Relaxed);
}

/// A log layer boxed for the registry.
type LogLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// The registry with the log layer filtered by `log_filter` and the
/// OpenTelemetry layer filtered by `trace_filter`, each seeing only what its
/// own filter lets through.
fn subscriber(
    log: Option<LogLayer>,
    log_filter: EnvFilter,
    tracer: SdkTracer,
    trace_filter: EnvFilter,
) -> impl Subscriber + Send + Sync {
    Registry::default()
        .with(log.map(|layer| layer.with_filter(log_filter)))
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(trace_filter),
        )
}

fn env_filter(variable: &str) -> anyhow::Result<EnvFilter> {
    match crate::config::env_opt(variable) {
        None => Ok(EnvFilter::new("info")),
        Some(directives) => EnvFilter::try_new(&directives)
            .map_err(|error| anyhow::anyhow!("invalid {variable} {directives:?}: {error}")),
    }
}

/// Flushes pending spans when dropped; keep it alive for the life of `main`.
#[must_use = "dropping the guard stops span export"]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("span export shutdown failed: {error}");
        }
    }
}

/// Installs the global subscriber and propagator for `service`.
pub fn init(service: &'static str) -> anyhow::Result<TelemetryGuard> {
    install(service, true)
}

/// Like [`init`], for tests: logs only when `TEST_LOG` is set.
pub fn init_for_tests(service: &'static str) -> anyhow::Result<TelemetryGuard> {
    install(service, crate::config::env_opt("TEST_LOG").is_some())
}

fn install(service: &'static str, log: bool) -> anyhow::Result<TelemetryGuard> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let resource = Resource::builder().with_service_name(service).build();
    let exporting = crate::config::env_opt("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
    let provider = match exporting {
        true => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()?;
            SdkTracerProvider::builder()
                .with_resource(resource)
                .with_batch_exporter(exporter)
                .build()
        }
        // Without an exporter spans are not recorded, but trace ids still
        // flow from requests into events and logs.
        false => SdkTracerProvider::builder()
            .with_resource(resource)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)))
            .build(),
    };
    let tracer = provider.tracer(service);
    let json = crate::config::env_opt("LAUREL_LOG_FORMAT").as_deref() == Some("json");
    let fmt = match (log, json) {
        (false, _) => None,
        (true, true) => Some(tracing_subscriber::fmt::layer().json().boxed()),
        (true, false) => Some(tracing_subscriber::fmt::layer().boxed()),
    };
    subscriber(
        fmt,
        env_filter("RUST_LOG")?,
        tracer,
        env_filter("LAUREL_TRACE_FILTER")?,
    )
    .try_init()?;
    set_request_spans(exporting);
    Ok(TelemetryGuard { provider })
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        sync::{Arc, Mutex},
    };

    use super::*;
    use opentelemetry_sdk::{
        error::OTelSdkResult,
        trace::{SpanData, SpanExporter},
    };

    /// Collects exported spans in memory.
    #[derive(Clone, Debug, Default)]
    struct Collect(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Collect {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    /// Collects log output in memory.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Runs `work` under the production layers with the given filters and
    /// returns the names of the exported spans and the log output.
    fn run(log_filter: &str, trace_filter: &str, work: impl FnOnce()) -> (Vec<String>, String) {
        let spans = Collect::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let lines = Lines::default();
        let writer = lines.clone();
        let fmt = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .boxed();
        let subscriber = subscriber(
            Some(fmt),
            EnvFilter::new(log_filter),
            provider.tracer("test"),
            EnvFilter::new(trace_filter),
        );
        tracing::subscriber::with_default(subscriber, work);
        provider.force_flush().unwrap();
        let names = spans
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.name.to_string())
            .collect();
        let log = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        (names, log)
    }

    fn work() {
        let span = tracing::info_span!("grpc");
        span.in_scope(|| {
            tracing::info!("info event");
            tracing::warn!("warn event");
        });
    }

    #[test]
    fn with_a_warn_log_filter_info_spans_are_still_exported() {
        let (spans, log) = run("warn", "info", work);
        assert_eq!(spans, ["grpc"]);
        assert!(log.contains("warn event"), "{log}");
        assert!(!log.contains("info event"), "{log}");
    }

    #[test]
    fn the_trace_filter_alone_decides_which_spans_are_exported() {
        let (spans, log) = run("info", "warn", work);
        assert!(spans.is_empty(), "{spans:?}");
        assert!(log.contains("info event"), "{log}");
    }
}
