//! Logging and tracing: `tracing` to stdout (JSON with
//! `LAUREL_LOG_FORMAT=json`), OpenTelemetry export over OTLP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, W3C trace context propagation
//! always.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{Sampler, SdkTracerProvider},
};
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

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
    let provider = match crate::config::env_opt("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Some(_) => {
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
        None => SdkTracerProvider::builder()
            .with_resource(resource)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)))
            .build(),
    };
    let tracer = provider.tracer(service);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = crate::config::env_opt("LAUREL_LOG_FORMAT").as_deref() == Some("json");
    let fmt = match (log, json) {
        (false, _) => None,
        (true, true) => Some(tracing_subscriber::fmt::layer().json().boxed()),
        (true, false) => Some(tracing_subscriber::fmt::layer().boxed()),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init()?;
    Ok(TelemetryGuard { provider })
}
