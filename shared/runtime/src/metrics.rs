//! Prometheus metrics: per-RPC request count by code and latency, served on
//! an HTTP port. Handles are resolved once per method and code rather than
//! per call, and every path no service registered shares the label
//! `method="unknown"`, so a client cannot grow the series without bound.

use std::{sync::OnceLock, time::Duration};

use metrics::{Counter, Histogram, SharedString};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Starts the Prometheus endpoint on `addr`. A second call in one process
/// (tests run several servers) keeps the first recorder.
pub fn install_exporter(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let result = PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Suffix("seconds".into()),
            &[
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ],
        )?
        .install();
    match result {
        Ok(()) => Ok(()),
        Err(metrics_exporter_prometheus::BuildError::FailedToSetGlobalRecorder(_)) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// The label of every method path no service registered.
pub const UNKNOWN_METHOD: &str = "unknown";

/// gRPC code names by number (0 to 16), as Prometheus labels.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The code of a `grpc-status` value: absent means OK (the status then
/// follows in trailers), anything unreadable means UNKNOWN.
pub fn code_of(grpc_status: Option<&[u8]>) -> tonic::Code {
    let Some(raw) = grpc_status else {
        return tonic::Code::Ok;
    };
    let number = match raw {
        [d] if d.is_ascii_digit() => i32::from(d - b'0'),
        [a, b] if a.is_ascii_digit() && b.is_ascii_digit() => {
            i32::from(a - b'0') * 10 + i32::from(b - b'0')
        }
        _ => 2,
    };
    tonic::Code::from_i32(number)
}

/// The request metrics of one method, registered on first use.
#[derive(Debug)]
pub struct MethodMetrics {
    service: &'static str,
    method: SharedString,
    requests: [OnceLock<Counter>; 17],
    duration: OnceLock<Histogram>,
}

impl MethodMetrics {
    /// Metrics of `method` (a gRPC path or [`UNKNOWN_METHOD`]) in `service`.
    pub fn new(service: &'static str, method: impl Into<SharedString>) -> Self {
        Self {
            service,
            method: method.into(),
            requests: Default::default(),
            duration: OnceLock::new(),
        }
    }

    /// Counts one call that ended with `code` after `elapsed`.
    pub fn record(&self, code: tonic::Code, elapsed: Duration) {
        let index = code as usize;
        self.requests[index]
            .get_or_init(|| {
                metrics::counter!(
                    "laurel_grpc_requests_total",
                    "service" => self.service,
                    "method" => self.method.clone(),
                    "code" => CODE_NAMES[index],
                )
            })
            .increment(1);
        self.duration
            .get_or_init(|| {
                metrics::histogram!(
                    "laurel_grpc_request_duration_seconds",
                    "service" => self.service,
                    "method" => self.method.clone(),
                )
            })
            .record(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_status_values_map_to_codes() {
        assert_eq!(code_of(None), tonic::Code::Ok);
        assert_eq!(code_of(Some(b"5")), tonic::Code::NotFound);
        assert_eq!(code_of(Some(b"16")), tonic::Code::Unauthenticated);
        assert_eq!(code_of(Some(b"99")), tonic::Code::Unknown);
        assert_eq!(code_of(Some(b"x")), tonic::Code::Unknown);
    }

    #[test]
    fn code_names_follow_the_code_numbers() {
        assert_eq!(
            CODE_NAMES[tonic::Code::PermissionDenied as usize],
            "PERMISSION_DENIED"
        );
        assert_eq!(
            CODE_NAMES[tonic::Code::Unauthenticated as usize],
            "UNAUTHENTICATED"
        );
    }

    #[test]
    fn handles_are_registered_once_with_their_labels() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let metrics = MethodMetrics::new("member", "/laurel.common.v1.EchoService/Echo");
            metrics.record(tonic::Code::Ok, Duration::from_millis(1));
            metrics.record(tonic::Code::Ok, Duration::from_millis(1));
            metrics.record(tonic::Code::NotFound, Duration::from_millis(1));
        });
        let text = handle.render();
        assert!(
            text.contains(r#"laurel_grpc_requests_total{service="member",method="/laurel.common.v1.EchoService/Echo",code="OK"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"code="NOT_FOUND"} 1"#), "{text}");
    }
}
