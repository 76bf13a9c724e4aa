//! GetRecommendations under h2load beside echo on the same server: one
//! member with history, the same body every call, echo and
//! recommendations interleaved round by round, the median rate of each.
//! The grpc-status of the very message is checked with a real client
//! first (h2load counts any HTTP 200), and the server's counters of gRPC
//! codes are read around the runs when its metrics endpoint is given.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use laurel_proto::common::v1::EchoRequest;
use uuid::Uuid;

use super::service::{self, Service};
use crate::h2load::{self, Outcome, Shape};
use crate::scrape::{self, Codes};

/// The echo body, as laurel-bench sends it.
const ECHO_PAYLOAD: &[u8] = b"laurel-bench-ping";

/// How the recommendation run went.
#[derive(Debug)]
pub enum Recommendations {
    /// Not measurable yet (the RPC is not built, or no model was ready).
    Pending(String),
    Measured(Box<Measured>),
}

/// Both paths' runs.
#[derive(Debug)]
pub struct Measured {
    pub echo: Outcome,
    pub echo_rounds: Vec<f64>,
    pub recommend: Outcome,
    pub recommend_rounds: Vec<f64>,
    /// Items the check call returned, and whether they were the popular fallback.
    pub items: usize,
    pub popular_fallback: bool,
    /// gRPC codes counted by the server over the measured runs of both paths.
    pub codes: Option<Codes>,
    /// Seconds waited for the model before the first real answer.
    pub waited_seconds: f64,
}

impl Measured {
    pub fn ratio(&self) -> f64 {
        self.recommend.rps / self.echo.rps
    }
}

/// Waits up to `wait` for recommendations from the member's own history,
/// then drives both paths.
pub async fn run(
    service: &Service,
    addr: &str,
    program: &str,
    member: Uuid,
    shape: &Shape,
    wait: Duration,
    metrics_url: Option<&str>,
) -> Result<Recommendations> {
    let request = service::recommendations_request(member);
    let started = Instant::now();
    let answer = loop {
        let call = service
            .analytics
            .clone()
            .get_recommendations(service::request(program, request.clone())?)
            .await;
        match call {
            Ok(r) => {
                let r = r.into_inner();
                if !r.popular_fallback || started.elapsed() >= wait {
                    break r;
                }
            }
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                return Ok(Recommendations::Pending(format!(
                    "GetRecommendations answers UNIMPLEMENTED ({})",
                    s.message()
                )));
            }
            Err(s) if started.elapsed() >= wait => {
                return Ok(Recommendations::Pending(format!(
                    "no recommendations after {} s: {:?}: {}",
                    wait.as_secs(),
                    s.code(),
                    s.message()
                )));
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let waited_seconds = started.elapsed().as_secs_f64();
    h2load::check_installed().await?;
    let headers = vec![("x-laurel-program".to_string(), program.to_string())];
    let base = addr.trim_end_matches('/');
    let echo_request = EchoRequest {
        payload: ECHO_PAYLOAD.to_vec(),
    };
    let paths = [
        (
            "echo",
            format!("{base}/laurel.common.v1.EchoService/Echo"),
            h2load::grpc_frame(&echo_request),
        ),
        (
            "recommendations",
            format!("{base}/laurel.analytics.v1.AnalyticsService/GetRecommendations"),
            h2load::grpc_frame(&request),
        ),
    ];
    if shape.warmup_calls > 0 {
        let warm = Shape {
            calls: shape.warmup_calls,
            ..*shape
        };
        for (name, url, frame) in &paths {
            h2load::run(&warm, frame, &headers, url)
                .await
                .with_context(|| format!("h2load {name} warm-up"))?;
        }
    }
    let before = match metrics_url {
        Some(m) => Some(scrape::fetch(m).await?),
        None => None,
    };
    let mut runs: [Vec<Outcome>; 2] = [Vec::new(), Vec::new()];
    let rounds = shape.rounds.max(1);
    for round in 1..=rounds {
        for (i, (name, url, frame)) in paths.iter().enumerate() {
            eprintln!(
                "h2load {name} round {round}/{rounds} -n {} -c {} -m {} -t {} ...",
                shape.calls, shape.connections, shape.streams, shape.threads
            );
            let o = h2load::run(shape, frame, &headers, url)
                .await
                .with_context(|| format!("h2load {name}"))?;
            eprintln!(
                "  {:.1} calls/s, mean {:.3} ms, {} HTTP failures",
                o.rps,
                o.mean_ms,
                o.http_failures()
            );
            runs[i].push(o);
        }
    }
    let codes = match (metrics_url, before) {
        (Some(m), Some(before)) => Some(scrape::diff(&before, &scrape::fetch(m).await?)),
        _ => None,
    };
    let [echo_runs, recommend_runs] = runs;
    let (echo, echo_rounds) = median(echo_runs)?;
    let (recommend, recommend_rounds) = median(recommend_runs)?;
    Ok(Recommendations::Measured(Box::new(Measured {
        echo,
        echo_rounds,
        recommend,
        recommend_rounds,
        items: answer.items.len(),
        popular_fallback: answer.popular_fallback,
        codes,
        waited_seconds,
    })))
}

/// The run with the median rate, and every run's rate in order.
fn median(mut runs: Vec<Outcome>) -> Result<(Outcome, Vec<f64>)> {
    let rates = runs.iter().map(|o| o.rps).collect();
    runs.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    let middle = runs.len() / 2;
    let chosen = runs.into_iter().nth(middle).context("no h2load run")?;
    Ok((chosen, rates))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(rps: f64) -> Outcome {
        Outcome {
            seconds: 1.0,
            rps,
            total: 1,
            succeeded: 1,
            failed: 0,
            errored: 0,
            timeout: 0,
            status_2xx: 1,
            mean_ms: 1.0,
            max_ms: 1.0,
        }
    }

    #[test]
    fn the_median_run_counts_and_the_rounds_keep_their_order() {
        let (m, rates) = median(vec![outcome(3.0), outcome(1.0), outcome(2.0)]).unwrap();
        assert_eq!(m.rps, 2.0);
        assert_eq!(rates, [3.0, 1.0, 2.0]);
        assert!(median(Vec::new()).is_err());
    }
}
