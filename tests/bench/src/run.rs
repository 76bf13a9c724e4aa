//! Runs one path for a while with many workers and gathers what they saw.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::paths::{CardSeen, Clients, Fixture, PathKind, Rng};

/// How a path was driven.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Closed loop: every worker sends its next call when the last returns.
    Closed,
    /// Paced to a total target rate given with --rate.
    Rate(f64),
    /// Paced to half the closed-loop rate just measured (--half-rate).
    HalfRate(f64),
}

impl Mode {
    /// Results compare (vs echo) only within the same group.
    pub fn group(self) -> &'static str {
        match self {
            Mode::Closed => "closed",
            Mode::Rate(_) => "rate",
            Mode::HalfRate(_) => "half-rate",
        }
    }

    pub fn target_rps(self) -> Option<f64> {
        match self {
            Mode::Closed => None,
            Mode::Rate(r) | Mode::HalfRate(r) => Some(r),
        }
    }
}

/// How hard and how long to drive a path.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

/// What one path run measured.
pub struct PathResult {
    pub kind: PathKind,
    pub mode: Mode,
    /// Latency of every measured call, OK or not, in microseconds.
    pub hist: Histogram<u64>,
    /// Outcomes: "OK" or the tonic::Code name, with counts.
    pub codes: BTreeMap<String, u64>,
    /// The measured window (warm-up excluded).
    pub window: Duration,
}

impl PathResult {
    pub fn requests(&self) -> u64 {
        self.codes.values().sum()
    }

    pub fn errors(&self) -> u64 {
        self.requests() - self.codes.get(OK).copied().unwrap_or(0)
    }

    pub fn rps(&self) -> f64 {
        self.requests() as f64 / self.window.as_secs_f64()
    }

    /// Calls answered OK per second.
    pub fn ok_rps(&self) -> f64 {
        self.codes.get(OK).copied().unwrap_or(0) as f64 / self.window.as_secs_f64()
    }

    /// Latency at quantile `q` (0..=1) in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.hist.max() as f64 / 1000.0
    }
}

pub const OK: &str = "OK";

/// Where the measured GetMemberCard answers took their fields from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CardShare {
    /// Answers that carried a card.
    pub answers: u64,
    pub points_from_card: u64,
    pub tier_from_card: u64,
}

impl CardShare {
    pub fn add(&mut self, seen: CardSeen) {
        self.answers += 1;
        self.points_from_card += u64::from(seen.points_from_card);
        self.tier_from_card += u64::from(seen.tier_from_card);
    }

    pub fn merge(&mut self, other: CardShare) {
        self.answers += other.answers;
        self.points_from_card += other.points_from_card;
        self.tier_from_card += other.tier_from_card;
    }

    /// Shares (0..=1) of answers with points and tier from the card.
    pub fn shares(&self) -> Option<(f64, f64)> {
        (self.answers > 0).then(|| {
            let n = self.answers as f64;
            (
                self.points_from_card as f64 / n,
                self.tier_from_card as f64 / n,
            )
        })
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to one hour, three significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Whether workers of `kind` stop at their first FAILED_PRECONDITION: the
/// hot redemption drains one account, and once it is empty every further
/// call would only measure the refusal.
fn drains(kind: PathKind) -> bool {
    kind == PathKind::RedeemHot
}

/// Drives `kind` with `load.concurrency` workers spread round-robin over
/// `clients` (one per connection): `load.warmup` unmeasured, then
/// `load.duration` measured. Calls started inside the window are counted.
///
/// `redeem-hot` has no warm-up (every spend counts against the account) and
/// its workers stop when the account is empty (FAILED_PRECONDITION); its
/// window then ends with the last call, so its rate is that of the drain.
///
/// Also returns where the measured member-card answers took their fields
/// from (zeros for other paths).
pub async fn run_path(
    kind: PathKind,
    mode: Mode,
    load: Load,
    clients: &[Clients],
    fixture: &Arc<Fixture>,
) -> (PathResult, CardShare) {
    let load = if drains(kind) {
        Load {
            warmup: Duration::ZERO,
            ..load
        }
    } else {
        load
    };
    let start = Instant::now();
    let measure_from = start + load.warmup;
    let end = measure_from + load.duration;
    // Each worker gets an equal share of the target rate.
    let interval = mode
        .target_rps()
        .map(|rps| Duration::from_secs_f64(load.concurrency as f64 / rps));
    let mut tasks = JoinSet::new();
    for w in 0..load.concurrency {
        let clients = clients[w % clients.len()].clone();
        let fixture = fixture.clone();
        // Stagger paced workers so they do not fire in lockstep.
        let first = start
            + interval.map_or(Duration::ZERO, |iv| {
                iv.mul_f64(w as f64 / load.concurrency as f64)
            });
        tasks.spawn(worker(
            kind,
            clients,
            fixture,
            first,
            interval,
            measure_from,
            end,
        ));
    }
    let mut hist = new_histogram();
    let mut codes = BTreeMap::new();
    let mut cards = CardShare::default();
    while let Some(joined) = tasks.join_next().await {
        let (h, c, cs) = joined.expect("benchmark worker panicked");
        hist.add(&h).expect("histograms share bounds");
        cards.merge(cs);
        for (code, n) in c {
            *codes.entry(code).or_insert(0) += n;
        }
    }
    let window = if drains(kind) {
        // Until the last call returned (at most the duration and one call).
        Instant::now()
            .saturating_duration_since(measure_from)
            .max(Duration::from_millis(1))
    } else {
        load.duration
    };
    let result = PathResult {
        kind,
        mode,
        hist,
        codes,
        window,
    };
    (result, cards)
}

async fn worker(
    kind: PathKind,
    mut clients: Clients,
    fixture: Arc<Fixture>,
    first: Instant,
    interval: Option<Duration>,
    measure_from: Instant,
    end: Instant,
) -> (Histogram<u64>, BTreeMap<String, u64>, CardShare) {
    let mut hist = new_histogram();
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    let mut cards = CardShare::default();
    let mut rng = Rng::seeded();
    let mut next = first;
    loop {
        if let Some(iv) = interval {
            // Fixed schedule: when behind, calls go out back to back until
            // the worker has caught up (open-loop-ish, bounded by the workers).
            tokio::time::sleep_until(next).await;
            next += iv;
        }
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        let outcome = clients.call(kind, &fixture, &mut rng).await;
        if sent < measure_from {
            continue;
        }
        let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
        hist.saturating_record(micros.max(1));
        let drained = matches!(&outcome, Err(s) if s.code() == tonic::Code::FailedPrecondition);
        let code = match outcome {
            Ok(seen) => {
                if let Some(seen) = seen {
                    cards.add(seen);
                }
                OK.to_string()
            }
            Err(status) => format!("{:?}", status.code()),
        };
        *codes.entry(code).or_insert(0) += 1;
        if drained && drains(kind) {
            break;
        }
    }
    (hist, codes, cards)
}
