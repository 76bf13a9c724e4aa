//! GetRecommendations for many different members beside echo, with a tonic
//! client: closed loop, `concurrency` workers over a few connections, for a
//! fixed time each. h2load sends one body, so its member is answered from
//! the service's answer cache after the first call; here each call names
//! another member of a large sample (worker w takes members w, w + workers,
//! ...: none twice until the sample is used up), so answers are
//! computed (from the members the service keeps in memory, or their rows
//! in Postgres), and the service's `laurel-answer-from` header is counted.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use laurel_proto::common::v1::EchoRequest;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::task::JoinSet;
use tokio::time::Instant;
use uuid::Uuid;

use super::service::{self, Service};

/// What one path's run saw.
#[derive(Debug, Clone)]
pub struct ClientRun {
    pub ok: u64,
    /// Failed calls by gRPC code.
    pub errors: BTreeMap<String, u64>,
    pub seconds: f64,
    /// Latency of OK calls, microseconds.
    pub p50_us: u64,
    pub p99_us: u64,
    /// OK recommendations by where the service says the answer came from
    /// (its `laurel-answer-from` header: cache, memory, database).
    pub from: BTreeMap<String, u64>,
}

/// Where the service says a recommendation came from.
fn answer_from<T>(response: &tonic::Response<T>) -> String {
    response
        .metadata()
        .get("laurel-answer-from")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unsaid")
        .to_owned()
}

/// Asks for random members' recommendations until one is answered from
/// the service's members in memory (it loads them on the first call), for
/// at most `wait`; returns how long that took, or `None`.
pub async fn await_memory(
    service: &mut Service,
    program: &str,
    members: &[Uuid],
    wait: Duration,
) -> Result<Option<Duration>> {
    let started = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    while started.elapsed() < wait {
        let member = members[rng.random_range(0..members.len())];
        let response = service
            .analytics
            .get_recommendations(service::request(
                program,
                service::recommendations_request(member),
            )?)
            .await;
        if let Ok(response) = response
            && answer_from(&response) == "memory"
        {
            return Ok(Some(started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(None)
}

impl ClientRun {
    /// OK calls per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.seconds
    }
}

/// Which call a worker makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    Echo,
    Recommendations,
}

/// Workers and their connections.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub concurrency: usize,
    pub duration: Duration,
}

impl Default for Load {
    fn default() -> Self {
        Self {
            concurrency: 64,
            duration: Duration::from_secs(10),
        }
    }
}

/// Runs `path` with `load.concurrency` workers over `services` (one
/// connection each, round-robin) for `load.duration`.
pub async fn drive(
    services: &[Service],
    program: &str,
    members: &[Uuid],
    path: Path,
    load: Load,
) -> Result<ClientRun> {
    let deadline = Instant::now() + load.duration;
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for w in 0..load.concurrency {
        let mut service = services
            .get(w % services.len().max(1))
            .cloned()
            .context("no connection")?;
        let members = members.to_vec();
        let program = program.to_string();
        workers.spawn(async move {
            let mut next = w;
            let mut hist =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut from: BTreeMap<String, u64> = BTreeMap::new();
            let mut ok = 0u64;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let outcome = match path {
                    Path::Echo => service
                        .echo
                        .echo(service::request(
                            &program,
                            EchoRequest {
                                payload: b"laurel-bench-ping".to_vec(),
                            },
                        )?)
                        .await
                        .map(|_| ()),
                    Path::Recommendations => {
                        // Each worker walks its own members from a random
                        // start: no member twice until the sample is used up,
                        // so answers are computed, not cached.
                        let member = members[next % members.len()];
                        next += load.concurrency;
                        service
                            .analytics
                            .get_recommendations(service::request(
                                &program,
                                service::recommendations_request(member),
                            )?)
                            .await
                            .map(|response| {
                                *from.entry(answer_from(&response)).or_default() += 1;
                            })
                    }
                };
                match outcome {
                    Ok(()) => {
                        ok += 1;
                        let us = sent.elapsed().as_micros().max(1) as u64;
                        let _ = hist.record(us.min(60_000_000));
                    }
                    Err(s) => *errors.entry(format!("{:?}", s.code())).or_default() += 1,
                }
            }
            anyhow::Ok((ok, errors, hist, from))
        });
    }
    let mut total_ok = 0;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut from: BTreeMap<String, u64> = BTreeMap::new();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    while let Some(done) = workers.join_next().await {
        let (ok, errs, h, f) = done.context("a worker")??;
        total_ok += ok;
        for (source, n) in f {
            *from.entry(source).or_default() += n;
        }
        for (code, n) in errs {
            *errors.entry(code).or_default() += n;
        }
        hist.add(h).context("merge latencies")?;
    }
    Ok(ClientRun {
        ok: total_ok,
        errors,
        seconds: started.elapsed().as_secs_f64(),
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        from,
    })
}
