//! The points service's paths around the load runs: setting them up (funds
//! for the redeeming members, the two hot members, the replayed request, the
//! earn rules a purchase earns by), the no-overspend check after
//! `redeem-hot`, and the time from a purchase recorded at the member service
//! to its points in GetBalance.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use hdrhistogram::Histogram;
use laurel_proto::member::v1::{RecordActivityRequest, activity};
use laurel_proto::points::v1::{
    EarnRequest, EarnRules, ListEntriesRequest, PublishEarnRulesRequest,
};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::Code;

use crate::paths::{
    self, Clients, PURCHASE_MINOR, PathKind, PointsFixture, REDEEM_POINTS, SeededMember,
};
use crate::run::{OK, PathResult};

/// Points each `redeem` member gets before the run: far more than a run spends.
pub const REDEEM_FUND: i64 = 1_000_000;
/// Earn calls in flight while funding members.
const FUND_PARALLELISM: usize = 16;
/// Earn rules published for `purchase-visible`: 1 point per 100 minor units.
const BASE_POINTS: i64 = 1;
const BASE_AMOUNT_MINOR: i64 = 100;
/// Points the benchmark's purchase earns under those rules (rounded down).
pub const PURCHASE_POINTS: i64 = PURCHASE_MINOR * BASE_POINTS / BASE_AMOUNT_MINOR;

/// Which points paths are about to run, and with what.
pub struct Plan<'a> {
    pub paths: &'a [PathKind],
    /// Members `earn` and `redeem` draw from.
    pub members: &'a [SeededMember],
    pub hot_earn: &'a SeededMember,
    pub hot_redeem: &'a SeededMember,
    /// Points the `redeem-hot` member starts with.
    pub hot_points: i64,
}

/// Funds the members the selected paths spend from, makes the replayed
/// request once, and publishes earn rules for purchases. Every call must
/// answer OK; anything else is a setup failure.
pub async fn prepare(clients: &[Clients], plan: &Plan<'_>) -> Result<PointsFixture> {
    let wants = |k: PathKind| plan.paths.contains(&k);
    let mut c = clients[0].clone();
    if wants(PathKind::Redeem) {
        eprintln!(
            "funding {} members with {REDEEM_FUND} points each ...",
            plan.members.len()
        );
        fund(clients, plan.members, REDEEM_FUND).await?;
    }
    if wants(PathKind::RedeemHot) {
        earn_once(
            &mut c,
            paths::goodwill(&plan.hot_redeem.member_id, plan.hot_points),
        )
        .await
        .context("funding the redeem-hot member")?;
        let b = c
            .balance(&plan.hot_redeem.member_id)
            .await
            .map_err(status_error)
            .context("GetBalance of the redeem-hot member")?;
        if b.available != plan.hot_points {
            bail!(
                "the redeem-hot member has {} points available after earning {}",
                b.available,
                plan.hot_points
            );
        }
    }
    let replay = EarnRequest {
        request_id: format!("laurel-bench-replay-{}", uuid::Uuid::now_v7().simple()),
        ..paths::goodwill(&plan.hot_earn.member_id, 1)
    };
    if wants(PathKind::EarnReplay) {
        // The first call earns; the second must already be a replay.
        let first = earn_once(&mut c, replay.clone()).await?;
        let again = earn_once(&mut c, replay.clone()).await?;
        if first != again {
            bail!("a replayed Earn answered differently from the first");
        }
    }
    if wants(PathKind::PurchaseVisible) {
        publish_rules(&mut c).await?;
    }
    Ok(PointsFixture {
        hot_earn: plan.hot_earn.member_id.clone(),
        hot_redeem: plan.hot_redeem.member_id.clone(),
        replay,
    })
}

fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow!("{:?}: {}", s.code(), s.message())
}

async fn earn_once(
    c: &mut Clients,
    req: EarnRequest,
) -> Result<laurel_proto::points::v1::EarnResponse> {
    let member = req.member_id.clone();
    let req = c.meta.request(req);
    let resp = c
        .points()
        .map_err(status_error)?
        .earn(req)
        .await
        .map_err(status_error)
        .with_context(|| format!("Earn for member {member}"))?;
    Ok(resp.into_inner())
}

/// One goodwill Earn of `points` per member, a few at a time.
async fn fund(clients: &[Clients], members: &[SeededMember], points: i64) -> Result<()> {
    let members: Arc<Vec<SeededMember>> = Arc::new(members.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for w in 0..FUND_PARALLELISM.min(members.len()) {
        let mut c = clients[w % clients.len()].clone();
        let (members, next) = (members.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(m) = members.get(i) else {
                    return Ok::<_, anyhow::Error>(());
                };
                earn_once(&mut c, paths::goodwill(&m.member_id, points)).await?;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("funding task panicked")??;
    }
    Ok(())
}

/// Earn rules in force since an hour ago: 1 point per 100 minor units.
async fn publish_rules(c: &mut Clients) -> Result<()> {
    let from = SystemTime::now() - Duration::from_secs(3600);
    let req = c.meta.request(PublishEarnRulesRequest {
        request_id: uuid::Uuid::now_v7().to_string(),
        rules: Some(EarnRules {
            effective_from: Some(from.into()),
            base_points: BASE_POINTS,
            base_amount_minor: BASE_AMOUNT_MINOR,
            ..EarnRules::default()
        }),
    });
    c.points()
        .map_err(status_error)?
        .publish_earn_rules(req)
        .await
        .map_err(status_error)
        .context("PublishEarnRules")?;
    Ok(())
}

/// What `redeem-hot` did to its account.
#[derive(Debug, Clone, PartialEq)]
pub struct DrainCheck {
    /// Points the account started with.
    pub start: i64,
    /// Redeems answered OK.
    pub successes: u64,
    /// Redeems refused for want of points (FAILED_PRECONDITION).
    pub refused: u64,
    /// Redeems whose outcome the client cannot know (deadline, transport,
    /// internal errors): each may or may not have spent.
    pub unknown: u64,
    /// Available and total balance afterwards, from GetBalance.
    pub final_available: i64,
    pub final_total: i64,
}

impl DrainCheck {
    /// From the run's outcomes and the balance read afterwards.
    pub fn new(
        start: i64,
        result: &PathResult,
        balance: &laurel_proto::points::v1::Balance,
    ) -> Self {
        let count = |code: &str| result.codes.get(code).copied().unwrap_or(0);
        let refused = count(&format!("{:?}", Code::FailedPrecondition));
        // Shed or refused before any work: certainly not spent.
        let not_spent = refused
            + count(&format!("{:?}", Code::ResourceExhausted))
            + count(&format!("{:?}", Code::InvalidArgument));
        let successes = count(OK);
        Self {
            start,
            successes,
            refused,
            unknown: result.requests() - successes - not_spent,
            final_available: balance.available,
            final_total: balance.total,
        }
    }

    /// Points that left the account.
    pub fn spent(&self) -> i64 {
        self.start - self.final_available
    }

    /// No overspend: the balance never went below zero and the points that
    /// left are exactly those of the successful redeems (give or take the
    /// calls of unknown outcome).
    pub fn holds(&self) -> bool {
        let ok = self.successes as i64 * REDEEM_POINTS;
        let maybe = self.unknown as i64 * REDEEM_POINTS;
        self.final_available >= 0
            && self.final_total >= 0
            && ok <= self.spent()
            && self.spent() <= ok + maybe
    }

    /// Whether the account was emptied (the run ended by draining it).
    pub fn drained(&self) -> bool {
        self.final_available < REDEEM_POINTS
    }
}

/// Time from RecordActivity answered to the points in GetBalance.
pub struct Visibility {
    pub samples: u64,
    /// Microseconds; a purchase visible at the first read counts that read.
    pub hist: Histogram<u64>,
    /// Purchases whose points did not show within `give_up`.
    pub never: u64,
    pub give_up: Duration,
    /// GetBalance calls made while waiting, over all samples.
    pub polls: u64,
    /// How long the unmeasured first purchase took to show (with the
    /// backlog of events the load runs left).
    pub first_wait: Duration,
}

/// Pause between two GetBalance reads while waiting: short against the
/// target, long enough not to take the CPU from the consumer being timed.
const POLL_EVERY: Duration = Duration::from_millis(1);
/// Longest wait for the first, unmeasured purchase.
const FIRST_GIVE_UP: Duration = Duration::from_secs(120);
/// Pause between two statement reads while the consumer catches up: the
/// catch-up is measured in seconds, and the reads must not slow it.
const CATCH_UP_POLL_EVERY: Duration = Duration::from_millis(20);
/// Statement lines searched for a purchase's earn: newest first, and the
/// earn is among the member's latest movements.
const STATEMENT_LINES: i32 = 20;

/// The order id of a purchase request.
fn order_of(purchase: &RecordActivityRequest) -> String {
    match purchase.activity.as_ref().and_then(|a| a.detail.as_ref()) {
        Some(activity::Detail::Purchase(p)) => p.order_id.clone(),
        _ => String::new(),
    }
}

/// Whether the member's statement holds the earn of `order_id`.
async fn earned_order(c: &mut Clients, member_id: &str, order_id: &str) -> Result<bool> {
    let req = c.meta.request(ListEntriesRequest {
        member_id: member_id.to_owned(),
        page_size: STATEMENT_LINES,
        ..ListEntriesRequest::default()
    });
    let lines = c
        .points()
        .map_err(status_error)?
        .list_entries(req)
        .await
        .map_err(status_error)
        .context("ListEntries after a purchase")?
        .into_inner()
        .lines;
    Ok(lines
        .iter()
        .filter_map(|l| l.movement.as_ref())
        .any(|m| m.order_id == order_id))
}

impl Visibility {
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.hist.max() as f64 / 1000.0
    }
}

/// Records `samples` purchases one at a time, round-robin over `members`,
/// and after each reads GetBalance every millisecond until the member's
/// lifetime earnings have grown by the purchase's points, giving up after
/// `give_up`. One unmeasured purchase goes first and is waited for until its
/// own order is in the member's statement: the load runs bought for the same
/// members, so a rise in GetBalance alone may be an earlier purchase the
/// consumer is still catching up on. A measured rise is checked the same way
/// (outside the timing); one that was another event's does not count, and
/// the wait goes on from the balance seen.
pub async fn purchase_visible(
    clients: &Clients,
    members: &[SeededMember],
    samples: usize,
    give_up: Duration,
) -> Result<Visibility> {
    if members.is_empty() {
        bail!("no seeded members to buy with");
    }
    let mut c = clients.clone();
    let mut hist = Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
    let (mut never, mut polls, mut foreign) = (0, 0, 0u64);
    let mut first_wait = Duration::ZERO;
    for i in 0..=samples {
        let member = &members[i % members.len()].member_id;
        let mut before = c
            .balance(member)
            .await
            .map_err(status_error)
            .context("GetBalance before a purchase")?
            .lifetime_earned;
        let purchase = paths::purchase(member);
        let order_id = order_of(&purchase);
        let req = c.meta.request(purchase);
        c.member
            .record_activity(req)
            .await
            .map_err(status_error)
            .context("RecordActivity of a purchase")?;
        let acked = Instant::now();
        if i == 0 {
            // The catch-up: whatever backlog of events the load runs left
            // the points consumer (record-activity's purchases earn too) is
            // applied before this purchase, which is last in the stream.
            loop {
                if earned_order(&mut c, member, &order_id).await? {
                    first_wait = acked.elapsed();
                    break;
                }
                if acked.elapsed() > FIRST_GIVE_UP {
                    bail!(
                        "the first purchase's points did not show in the statement within {FIRST_GIVE_UP:?}: \
                         is the points service consuming the member service's events (same Redis prefix)?"
                    );
                }
                tokio::time::sleep(CATCH_UP_POLL_EVERY).await;
            }
            eprintln!(
                "  catch-up: the first purchase (behind the load runs' backlog) showed after {:.3} s",
                first_wait.as_secs_f64()
            );
            continue;
        }
        let seen = loop {
            let b = c
                .balance(member)
                .await
                .map_err(status_error)
                .context("GetBalance after a purchase")?;
            let elapsed = acked.elapsed();
            polls += 1;
            if b.lifetime_earned >= before + PURCHASE_POINTS {
                if earned_order(&mut c, member, &order_id).await? {
                    break Some(elapsed);
                }
                // Another event of the member raised the balance.
                foreign += 1;
                before = b.lifetime_earned;
            }
            if elapsed > give_up {
                break None;
            }
            tokio::time::sleep(POLL_EVERY).await;
        };
        match seen {
            Some(t) => {
                let micros = u64::try_from(t.as_micros()).unwrap_or(u64::MAX);
                hist.saturating_record(micros.max(1));
            }
            None => never += 1,
        }
    }
    if foreign > 0 {
        eprintln!(
            "  {foreign} rise(s) in GetBalance came from other events of the member, not the purchase measured"
        );
    }
    Ok(Visibility {
        samples: samples as u64,
        hist,
        never,
        give_up,
        polls,
        first_wait,
    })
}

/// Group commit batches the points service made during one path, from its
/// `laurel_group_commit_batch_size` summary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Batches {
    pub kind: PathKind,
    /// Transactions (batches) committed.
    pub count: u64,
    /// Requests over all of them.
    pub requests: f64,
    /// Seconds the path ran (warm-up included, as the counters are).
    pub seconds: f64,
}

impl Batches {
    /// Requests per transaction.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.requests / self.count as f64)
    }

    /// Transactions per second.
    pub fn per_second(&self) -> f64 {
        self.count as f64 / self.seconds.max(1e-9)
    }
}

/// Everything the points paths measured besides the load table.
#[derive(Default)]
pub struct Report {
    pub drain: Option<DrainCheck>,
    pub visible: Option<Visibility>,
    pub pgbench: Vec<crate::pgbench::Run>,
    pub batches: Vec<Batches>,
    /// Why pgbench did not run, when it was asked for and failed.
    pub pgbench_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use laurel_proto::points::v1::Balance;

    use super::*;
    use crate::run::Mode;

    fn result(codes: &[(&str, u64)]) -> PathResult {
        PathResult {
            kind: PathKind::RedeemHot,
            mode: Mode::Closed,
            hist: Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap(),
            codes: codes
                .iter()
                .map(|(c, n)| (c.to_string(), *n))
                .collect::<BTreeMap<_, _>>(),
            window: Duration::from_secs(1),
        }
    }

    fn balance(available: i64) -> Balance {
        Balance {
            available,
            total: available,
            ..Balance::default()
        }
    }

    #[test]
    fn an_exact_drain_holds() {
        let r = result(&[("OK", 1000), ("FailedPrecondition", 64)]);
        let d = DrainCheck::new(1000, &r, &balance(0));
        assert_eq!((d.successes, d.refused, d.unknown), (1000, 64, 0));
        assert!(d.holds() && d.drained());
    }

    #[test]
    fn a_spend_without_a_success_is_caught() {
        // 1000 points left the account but only 999 redeems said OK.
        let r = result(&[("OK", 999), ("FailedPrecondition", 3)]);
        assert!(!DrainCheck::new(1000, &r, &balance(0)).holds());
        // More successes than points left: an overspend.
        let r = result(&[("OK", 1001)]);
        assert!(!DrainCheck::new(1000, &r, &balance(0)).holds());
        assert!(!DrainCheck::new(1000, &r, &balance(-1)).holds());
    }

    #[test]
    fn unknown_outcomes_widen_the_check_only_by_themselves() {
        let r = result(&[
            ("OK", 990),
            ("DeadlineExceeded", 5),
            ("ResourceExhausted", 7),
        ]);
        let d = DrainCheck::new(1000, &r, &balance(7));
        assert_eq!(d.unknown, 5);
        assert!(d.holds(), "{d:?}");
        assert!(!d.drained());
        assert!(!DrainCheck::new(1000, &r, &balance(4)).holds());
    }

    #[test]
    fn batch_means() {
        let b = Batches {
            kind: PathKind::Earn,
            count: 10,
            requests: 250.0,
            seconds: 2.0,
        };
        assert_eq!(b.mean(), Some(25.0));
        assert_eq!(b.per_second(), 5.0);
        assert_eq!(Batches { count: 0, ..b }.mean(), None);
    }

    #[test]
    fn purchase_points_follow_the_published_rate() {
        assert_eq!(PURCHASE_POINTS, 19);
    }
}
