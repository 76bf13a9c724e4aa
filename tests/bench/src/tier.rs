//! The tier service's paths around the load runs: setting them up (the
//! benefit consume-benefit uses, a ladder, waiting until the tier service
//! knows the seeded members), warming the tier and card caches right before
//! tier-get and member-card run, and the re-evaluation of many members after
//! a ladder change (`--reevaluate`), seeded straight into the tier service's
//! tables with set-based SQL.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use laurel_proto::tier::v1::{
    Benefit, BenefitGrant, BenefitKind, GetLadderRequest, GetReevaluationRequest, Ladder,
    PublishLadderRequest, PutBenefitRequest, QualificationWindow, QuotaPeriod, Reevaluation,
    ReevaluationState, Threshold, Tier, WindowKind,
};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::Code;

use crate::memory;
use crate::paths::{self, BENEFIT_CODE, CardSeen, Clients, PathKind, SeededMember};
use crate::run::CardShare;

/// Entry thresholds (qualifying spend, minor units) of silver and gold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub silver_minor: i64,
    pub gold_minor: i64,
}

/// The ladder the load paths run under (and the one `--reevaluate` seeds
/// its members as evaluated against).
pub const BENCH_LADDER: Thresholds = Thresholds {
    silver_minor: 50_000,
    gold_minor: 200_000,
};
/// The ladder change `--reevaluate` times: lower thresholds, so about a
/// third of the seeded members move up (see [`expected_changes`]).
pub const CHANGED_LADDER: Thresholds = Thresholds {
    silver_minor: 25_000,
    gold_minor: 120_000,
};

/// Tier codes from the base tier up.
pub const TIER_CODES: [&str; 3] = ["member", "silver", "gold"];
/// The ladder's time zone (days and quota periods).
pub const TIME_ZONE: &str = "Europe/Paris";
/// Qualifying spend of seeded member `i` lies in `0..SPEND_SPREAD_MINOR`.
const SPEND_SPREAD_MINOR: i64 = 300_000;
/// Seeded spend is `i * SPEND_STEP % SPEND_SPREAD_MINOR`: a prime step, so
/// it spreads evenly over the range.
const SPEND_STEP: i64 = 7919;

/// How long the seeded members may take to reach the tier service.
const MEMBERS_KNOWN_GIVE_UP: Duration = Duration::from_secs(60);
/// How often a member not known yet is asked again.
const KNOWN_POLL: Duration = Duration::from_millis(200);
/// Calls in flight while warming.
const WARM_PARALLELISM: usize = 16;
/// How often GetReevaluation is asked.
const REEVALUATION_POLL: Duration = Duration::from_millis(500);
/// Longest a re-evaluation may run before the step gives up.
pub const REEVALUATION_GIVE_UP: Duration = Duration::from_secs(600);
/// GetReevaluation failures in a row that end the wait.
const POLL_FAILURES: u32 = 3;

/// The re-evaluation targets for 1,000,000 members.
pub const REEVALUATION_TARGET_SECS: f64 = 120.0;
pub const REEVALUATION_TARGET_MIB: f64 = 500.0;
/// GetMemberTier and GetMemberCard over echo, like cached GetMember.
pub const CACHED_VS_ECHO_TARGET: f64 = 0.8;

/// The tier figures besides the load runs.
#[derive(Debug, Default)]
pub struct Report {
    /// Where the measured member-card answers took points and tier from.
    pub cards: Option<CardShare>,
    /// The same for the last warm-up pass before member-card ran.
    pub warm_cards: Option<CardShare>,
    /// The `--reevaluate` step, or why it failed.
    pub reevaluation: Option<std::result::Result<Reevaluated, String>>,
}

fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow!("{:?}: {}", s.code(), s.message())
}

/// The currency of the bench ladder and of the seeded spend.
const CURRENCY: &str = "EUR";

/// The benchmark's 3-tier ladder: EUR, rolling 12 months, silver and gold
/// on spend alone; the base tier grants [`BENEFIT_CODE`] without quota when
/// `grant` (the benefit must exist first).
pub fn ladder(t: Thresholds, grant: bool) -> Ladder {
    let tier = |i: usize, name: &str, spend: Option<i64>| Tier {
        code: TIER_CODES[i].into(),
        name: name.into(),
        qualify_any: spend
            .map(|s| Threshold {
                spend_minor: s,
                ..Threshold::default()
            })
            .into_iter()
            .collect(),
        benefits: Vec::new(),
    };
    let mut base = tier(0, "Member", None);
    if grant {
        base.benefits.push(BenefitGrant {
            benefit_code: BENEFIT_CODE.into(),
            quota: 0,
            period: QuotaPeriod::Unspecified as i32,
        });
    }
    Ladder {
        tiers: vec![
            base,
            tier(1, "Silver", Some(t.silver_minor)),
            tier(2, "Gold", Some(t.gold_minor)),
        ],
        window: Some(QualificationWindow {
            kind: WindowKind::RollingMonths as i32,
            months: 12,
        }),
        currency_code: CURRENCY.into(),
        time_zone: TIME_ZONE.into(),
        max_downgrade_levels: 1,
        grace_days: 0,
        warning_days: 0,
        ..Ladder::default()
    }
}

/// Whether a ladder in force serves the benchmark: it has tiers and, when
/// `grant`, its base tier grants [`BENEFIT_CODE`].
pub fn ladder_serves(l: &Ladder, grant: bool) -> bool {
    let Some(base) = l.tiers.first() else {
        return false;
    };
    !grant || base.benefits.iter().any(|b| b.benefit_code == BENEFIT_CODE)
}

/// The tier code `spend` earns under `t`.
pub fn tier_for(spend_minor: i64, t: Thresholds) -> &'static str {
    if spend_minor >= t.gold_minor {
        TIER_CODES[2]
    } else if spend_minor >= t.silver_minor {
        TIER_CODES[1]
    } else {
        TIER_CODES[0]
    }
}

/// Qualifying spend of seeded member `i` (1-based), as [`seed_sql`] writes it.
pub fn seeded_spend(i: u64) -> i64 {
    (i as i64 * SPEND_STEP) % SPEND_SPREAD_MINOR
}

/// How many of `n` seeded members the change from `from` to `to` moves.
pub fn expected_changes(n: u64, from: Thresholds, to: Thresholds) -> u64 {
    (1..=n)
        .filter(|i| tier_for(seeded_spend(*i), from) != tier_for(seeded_spend(*i), to))
        .count() as u64
}

/// PutBenefit of [`BENEFIT_CODE`], free shipping.
async fn put_benefit(c: &mut Clients) -> Result<()> {
    let req = c.meta.request(PutBenefitRequest {
        request_id: uuid::Uuid::now_v7().to_string(),
        benefit: Some(Benefit {
            code: BENEFIT_CODE.into(),
            name: "Bench free shipping".into(),
            kind: BenefitKind::FreeShipping as i32,
            active: true,
            ..Benefit::default()
        }),
    });
    c.tier()
        .map_err(status_error)?
        .put_benefit(req)
        .await
        .map_err(status_error)
        .context("PutBenefit")?;
    Ok(())
}

/// The ladder in force, if any.
async fn ladder_in_force(c: &mut Clients) -> Result<Option<Ladder>> {
    let req = c.meta.request(GetLadderRequest { version: 0 });
    match c.tier().map_err(status_error)?.get_ladder(req).await {
        Ok(resp) => Ok(resp.into_inner().ladder.filter(|l| !l.tiers.is_empty())),
        // No ladder yet: FAILED_PRECONDITION NO_LADDER (NOT_FOUND is a
        // version that does not exist).
        Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => Ok(None),
        Err(s) => Err(status_error(s)).context("GetLadder"),
    }
}

/// Publishes `ladder`; returns its version and re-evaluation.
async fn publish(c: &mut Clients, ladder: Ladder) -> Result<(i64, Reevaluation)> {
    let req = c.meta.request(PublishLadderRequest {
        request_id: uuid::Uuid::now_v7().to_string(),
        ladder: Some(ladder),
    });
    let resp = c
        .tier()
        .map_err(status_error)?
        .publish_ladder(req)
        .await
        .map_err(status_error)
        .context("PublishLadder")?
        .into_inner();
    let version = resp
        .ladder
        .context("PublishLadder answered without the ladder")?
        .version;
    let r = resp
        .reevaluation
        .context("PublishLadder answered without its re-evaluation")?;
    Ok((version, r))
}

/// Makes the tier service ready for the tier paths in `paths`: the benefit
/// (for consume-benefit) before a ladder granting it, the bench ladder
/// unless one that serves is in force, then waits until it knows every
/// seeded member (it learns them from MemberCreated), and checks one
/// ConsumeBenefit. Any error is a setup failure.
pub async fn prepare(
    clients: &[Clients],
    paths: &[PathKind],
    members: &[SeededMember],
) -> Result<()> {
    let mut c = clients[0].clone();
    let grant = paths.contains(&PathKind::ConsumeBenefit);
    if grant {
        put_benefit(&mut c).await?;
    }
    match ladder_in_force(&mut c).await? {
        Some(l) if ladder_serves(&l, grant) => {
            eprintln!("tier: ladder version {} in force, kept", l.version);
        }
        _ => {
            let (version, _) = publish(&mut c, ladder(BENCH_LADDER, grant)).await?;
            eprintln!("tier: published the bench ladder, version {version}");
        }
    }
    let last = members.last().context("no seeded member")?;
    let deadline = Instant::now() + MEMBERS_KNOWN_GIVE_UP;
    tier_ok(&mut c, last, deadline)
        .await
        .context("waiting for the tier service to learn the seeded members (from MemberCreated: same Redis prefix as the member service?)")?;
    warm(clients, PathKind::TierGet, members, deadline).await?;
    eprintln!(
        "tier: the tier service knows all {} seeded members",
        members.len()
    );
    if grant {
        let req = c
            .meta
            .request(paths::consume_benefit(&members[0].member_id));
        c.tier()
            .map_err(status_error)?
            .consume_benefit(req)
            .await
            .map_err(status_error)
            .context("ConsumeBenefit check call")?;
    }
    Ok(())
}

/// GetMemberTier of `m` until it answers OK with a tier (a member enrolled
/// before the ladder gets one when the ladder's background re-evaluation
/// reaches it); NOT_FOUND (not known yet) is asked again until `deadline`,
/// any other failure ends at once.
async fn tier_ok(c: &mut Clients, m: &SeededMember, deadline: Instant) -> Result<()> {
    loop {
        let req = c.meta.request(paths::member_tier_request(m));
        match c.tier().map_err(status_error)?.get_member_tier(req).await {
            Ok(r)
                if r.get_ref()
                    .tier
                    .as_ref()
                    .is_some_and(|t| !t.tier_code.is_empty()) =>
            {
                return Ok(());
            }
            Ok(_) if Instant::now() < deadline => tokio::time::sleep(KNOWN_POLL).await,
            Ok(_) => bail!("member {} still has no tier", m.member_id),
            Err(s) if s.code() == Code::NotFound && Instant::now() < deadline => {
                tokio::time::sleep(KNOWN_POLL).await;
            }
            Err(s) => {
                return Err(status_error(s))
                    .with_context(|| format!("GetMemberTier of member {}", m.member_id));
            }
        }
    }
}

/// Gives every member a points account (a goodwill Earn of 1 point), so
/// member-card's balance can come from the card: the points service fills
/// the card only for members it has an account for, and answers an empty
/// balance (not cached) for the others.
pub async fn open_points_accounts(clients: &[Clients], members: &[SeededMember]) -> Result<()> {
    let members: Arc<Vec<SeededMember>> = Arc::new(members.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for w in 0..WARM_PARALLELISM.min(members.len()) {
        let mut c = clients[w % clients.len()].clone();
        let (members, next) = (members.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(m) = members.get(i) else {
                    return Ok::<_, anyhow::Error>(());
                };
                let req = c.meta.request(paths::goodwill(&m.member_id, 1));
                c.points()
                    .map_err(status_error)?
                    .earn(req)
                    .await
                    .map_err(status_error)
                    .with_context(|| format!("Earn of 1 point for {}", m.member_id))?;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("Earn task panicked")??;
    }
    Ok(())
}

/// Calls `kind` (tier-get or member-card) once on every member, a few at a
/// time, so the answers come from the caches; member-card goes twice (the
/// first call fills the card's points and tier fields through their owners)
/// and returns where the second pass took them from.
pub async fn warm(
    clients: &[Clients],
    kind: PathKind,
    members: &[SeededMember],
    deadline: Instant,
) -> Result<CardShare> {
    let passes = if kind == PathKind::MemberCard { 2 } else { 1 };
    let members: Arc<Vec<SeededMember>> = Arc::new(members.to_vec());
    let mut share = CardShare::default();
    for pass in 1..=passes {
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = JoinSet::new();
        for w in 0..WARM_PARALLELISM.min(members.len()) {
            let mut c = clients[w % clients.len()].clone();
            let (members, next) = (members.clone(), next.clone());
            tasks.spawn(async move {
                let mut share = CardShare::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(m) = members.get(i) else {
                        return Ok::<_, anyhow::Error>(share);
                    };
                    match kind {
                        PathKind::MemberCard => {
                            let req = c.meta.request(paths::member_card_request(m));
                            let card = c
                                .member
                                .get_member_card(req)
                                .await
                                .map_err(status_error)
                                .with_context(|| format!("GetMemberCard of {}", m.member_id))?
                                .into_inner()
                                .card
                                .context("GetMemberCard answered without a card")?;
                            share.add(CardSeen::of(&card));
                        }
                        _ => tier_ok(&mut c, m, deadline).await?,
                    }
                }
            });
        }
        let mut this_pass = CardShare::default();
        while let Some(joined) = tasks.join_next().await {
            this_pass.merge(joined.context("warm-up task panicked")??);
        }
        if pass == passes {
            share = this_pass;
        }
    }
    Ok(share)
}

/// What the re-evaluation step measured.
#[derive(Debug, Clone)]
pub struct Reevaluated {
    /// Members seeded into the tier service's tables.
    pub seeded: u64,
    pub seed_seconds: f64,
    pub ladder_version: i64,
    pub reevaluation_id: String,
    /// As the tier service reported it when done.
    pub members_total: i64,
    pub members_done: i64,
    pub members_changed: i64,
    /// Seeded members the change should move (the load paths' few aside).
    pub expected_changed: u64,
    /// PublishLadder sent to DONE seen (polled every 500 ms).
    pub elapsed: Duration,
    /// finished_at - started_at as the tier service recorded them.
    pub server_elapsed: Option<Duration>,
    /// The tier process's memory over the timed part.
    pub memory: std::result::Result<memory::Report, String>,
}

impl Reevaluated {
    /// Members evaluated per second of `elapsed`.
    pub fn rate(&self) -> f64 {
        self.members_done as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Peak resident memory sampled (or the high-water mark), in MiB.
    pub fn peak_mib(&self) -> Option<f64> {
        self.memory
            .as_ref()
            .ok()
            .map(|r| memory::mib(r.peak_rss_kib.max(r.now.hwm_kib)))
    }
}

/// Where `--reevaluate` seeds and whom it watches.
pub struct ReevaluateSetup<'a> {
    pub members: u64,
    pub program: &'a str,
    pub database_url: &'a str,
    pub schema: &'a str,
    /// The tier process, or why it cannot be watched.
    pub pid: std::result::Result<u32, String>,
    /// Whether the benefit exists (consume-benefit ran): the ladders then
    /// keep granting it.
    pub grant: bool,
}

/// Publishes the bench ladder and waits for its re-evaluation (untimed),
/// seeds `members` members evaluated against it straight into the tier
/// service's tables, then publishes [`CHANGED_LADDER`] and times its
/// re-evaluation of everyone until DONE, sampling the tier process's memory.
pub async fn reevaluate(c: &Clients, s: &ReevaluateSetup<'_>) -> Result<Reevaluated> {
    let mut c = c.clone();
    check_psql().await?;
    let (version, r) = publish(&mut c, ladder(BENCH_LADDER, s.grant)).await?;
    eprintln!(
        "reevaluate: bench ladder version {version}; waiting for its re-evaluation of the members so far ..."
    );
    wait_done(&mut c, &r.reevaluation_id, REEVALUATION_GIVE_UP).await?;

    // Random, so members seeded by an earlier run in the schema stay apart.
    let run = paths::Rng::seeded().next_u64() as u32;
    eprintln!(
        "reevaluate: seeding {} members into {}.members and {}.qualifying_days ...",
        s.members, s.schema, s.schema
    );
    let started = Instant::now();
    let sql = seed_sql(s.program, run, s.members, version, BENCH_LADDER);
    psql(s.database_url, s.schema, &sql)
        .await
        .context("seeding the tier service's tables")?;
    let seed_seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "  seeded in {seed_seconds:.1} s (ids {} to {})",
        seeded_member_id(run, 1),
        seeded_member_id(run, s.members)
    );

    let sampler = s.pid.clone().and_then(|pid| {
        memory::Sampler::start(pid, Duration::from_millis(100)).map_err(|e| format!("{e:#}"))
    });
    let started = Instant::now();
    let (changed_version, r) = publish(&mut c, ladder(CHANGED_LADDER, s.grant)).await?;
    eprintln!(
        "reevaluate: published version {changed_version} (lower thresholds), re-evaluation {} ...",
        r.reevaluation_id
    );
    let done = wait_done(&mut c, &r.reevaluation_id, REEVALUATION_GIVE_UP).await;
    let elapsed = started.elapsed();
    let memory = sampler.and_then(|s| s.finish().map_err(|e| format!("{e:#}")));
    let done = done?;
    let server_elapsed = match (done.started_at, done.finished_at) {
        (Some(a), Some(b)) => {
            let (a, b) = (SystemTime::try_from(a).ok(), SystemTime::try_from(b).ok());
            a.zip(b).and_then(|(a, b)| b.duration_since(a).ok())
        }
        _ => None,
    };
    Ok(Reevaluated {
        seeded: s.members,
        seed_seconds,
        ladder_version: changed_version,
        reevaluation_id: done.reevaluation_id,
        members_total: done.members_total,
        members_done: done.members_done,
        members_changed: done.members_changed,
        expected_changed: expected_changes(s.members, BENCH_LADDER, CHANGED_LADDER),
        elapsed,
        server_elapsed,
        memory,
    })
}

/// Polls GetReevaluation every 500 ms until DONE; SUPERSEDED, a few failed
/// polls in a row, or `give_up` end it with an error.
async fn wait_done(c: &mut Clients, id: &str, give_up: Duration) -> Result<Reevaluation> {
    let started = Instant::now();
    let mut failures = 0;
    let mut last_said = Instant::now();
    let mut last: Option<Reevaluation> = None;
    loop {
        let req = c.meta.request(GetReevaluationRequest {
            reevaluation_id: id.to_string(),
        });
        match c.tier().map_err(status_error)?.get_reevaluation(req).await {
            Ok(resp) => {
                failures = 0;
                let r = resp
                    .into_inner()
                    .reevaluation
                    .context("GetReevaluation answered without a re-evaluation")?;
                match ReevaluationState::try_from(r.state) {
                    Ok(ReevaluationState::Done) => return Ok(r),
                    Ok(ReevaluationState::Running) => {}
                    Ok(other) => bail!(
                        "re-evaluation {id} is {} after {}/{} members",
                        other.as_str_name(),
                        r.members_done,
                        r.members_total
                    ),
                    Err(_) => bail!("re-evaluation {id} has unknown state {}", r.state),
                }
                if last_said.elapsed() >= Duration::from_secs(5) {
                    eprintln!(
                        "  {}/{} members evaluated, {} changed ({:.0} s)",
                        r.members_done,
                        r.members_total,
                        r.members_changed,
                        started.elapsed().as_secs_f64()
                    );
                    last_said = Instant::now();
                }
                last = Some(r);
            }
            Err(s) => {
                failures += 1;
                if failures >= POLL_FAILURES {
                    return Err(status_error(s)).with_context(|| {
                        format!("GetReevaluation {id}, {failures} times in a row")
                    });
                }
            }
        }
        if started.elapsed() >= give_up {
            let progress = last.map_or("no progress read".into(), |r| {
                format!("{}/{} members", r.members_done, r.members_total)
            });
            bail!("re-evaluation {id} not done after {give_up:?} ({progress})");
        }
        tokio::time::sleep(REEVALUATION_POLL).await;
    }
}

/// The id [`seed_sql`] gives member `i` of run `run`.
pub fn seeded_member_id(run: u32, i: u64) -> String {
    format!("{run:08x}-0000-4000-8000-{i:012x}")
}

/// A string as an SQL literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The set-based seeding of `n` members, all as evaluated against ladder
/// `version` with thresholds `t`: one INSERT ... SELECT generate_series per
/// table, in one transaction, then ANALYZE.
///
/// It assumes these tables of the tier service (as of
/// services/tier/migrations/20261220000000_tiers.sql); keep it in step with
/// them:
/// - `members (program_id, member_id, enrolled_at, earned_tier,
///   earned_since, tier_code, tier_source, tier_since, period_start,
///   period_end, ladder_version)`, the others left to their defaults;
/// - `qualifying_days (program_id, member_id, day, currency_code, spend_minor, orders,
///   points)`, days in the ladder's time zone.
///
/// Member `i` (1..=n) has id [`seeded_member_id`]`(run, i)`, ascending
/// with `i` so both primary keys grow at their end (random ids make the
/// inserts several times slower), enrolled 400
/// days ago, a spend of [`seeded_spend`]`(i)` over two days of the last 12
/// months (two orders) and the tier that spend earns under `t`, reached 30
/// days ago with a 12-month period from then.
pub fn seed_sql(program: &str, run: u32, n: u64, version: i64, t: Thresholds) -> String {
    let (prog, tz, cur) = (literal(program), literal(TIME_ZONE), literal(CURRENCY));
    let id = format!("('{run:08x}-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid");
    let spend = format!("(i::bigint * {SPEND_STEP}) % {SPEND_SPREAD_MINOR}");
    let (silver, gold) = (t.silver_minor, t.gold_minor);
    let [base, mid, top] = TIER_CODES.map(literal);
    format!(
        "\
INSERT INTO members (program_id, member_id, enrolled_at, earned_tier, earned_since,
                     tier_code, tier_source, tier_since, period_start, period_end,
                     ladder_version)
SELECT {prog}, {id}, now() - interval '400 days', x.tier, x.since,
       x.tier, 'earned', x.since, x.since, x.since + interval '12 months', {version}
FROM generate_series(1, {n}) AS i,
     LATERAL (SELECT CASE WHEN {spend} >= {gold} THEN {top}
                          WHEN {spend} >= {silver} THEN {mid}
                          ELSE {base} END AS tier,
                     now() - interval '30 days' AS since) AS x;
INSERT INTO qualifying_days (program_id, member_id, day, currency_code, spend_minor, orders, points)
SELECT {prog}, {id}, (now() AT TIME ZONE {tz})::date - ((i % 250) + 1 + 60 * k)::int, {cur},
       CASE k WHEN 0 THEN ({spend}) / 2 ELSE ({spend}) - ({spend}) / 2 END, 1, 0
FROM generate_series(1, {n}) AS i, generate_series(0, 1) AS k;
ANALYZE members;
ANALYZE qualifying_days;
"
    )
}

/// Checks that psql is installed.
async fn check_psql() -> Result<()> {
    let status = tokio::process::Command::new("psql")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    match status {
        Ok(s) if s.success() => Ok(()),
        _ => bail!("psql not found: apt-get install postgresql-client"),
    }
}

/// Runs `sql` with psql in one transaction, `schema` first on the search path.
async fn psql(url: &str, schema: &str, sql: &str) -> Result<()> {
    let mut child = tokio::process::Command::new("psql")
        .args([
            "-X",
            "-q",
            "-1",
            "-v",
            "ON_ERROR_STOP=1",
            "-f",
            "-",
            "-d",
            url,
        ])
        .env("PGOPTIONS", format!("-c search_path={schema}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("run psql")?;
    let mut stdin = child.stdin.take().context("psql stdin")?;
    stdin
        .write_all(sql.as_bytes())
        .await
        .context("write to psql")?;
    drop(stdin);
    let output = child.wait_with_output().await.context("wait for psql")?;
    if !output.status.success() {
        bail!(
            "psql exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_ladder_is_valid_in_shape() {
        let l = ladder(BENCH_LADDER, true);
        let codes: Vec<_> = l.tiers.iter().map(|t| t.code.as_str()).collect();
        assert_eq!(codes, TIER_CODES);
        assert!(
            l.tiers[0].qualify_any.is_empty(),
            "the base tier has no threshold"
        );
        assert_eq!(l.tiers[1].qualify_any[0].spend_minor, 50_000);
        assert_eq!(l.tiers[2].qualify_any[0].spend_minor, 200_000);
        assert_eq!(l.tiers[0].benefits[0].benefit_code, BENEFIT_CODE);
        assert_eq!(l.tiers[0].benefits[0].quota, 0, "unlimited");
        let w = l.window.unwrap();
        assert_eq!((w.kind, w.months), (WindowKind::RollingMonths as i32, 12));
        assert_eq!(l.currency_code, "EUR");
        assert!(ladder(BENCH_LADDER, false).tiers[0].benefits.is_empty());
    }

    #[test]
    fn a_ladder_in_force_serves_when_it_grants_what_is_needed() {
        assert!(ladder_serves(&ladder(CHANGED_LADDER, true), true));
        assert!(ladder_serves(&ladder(BENCH_LADDER, false), false));
        assert!(!ladder_serves(&ladder(BENCH_LADDER, false), true));
        assert!(!ladder_serves(&Ladder::default(), false));
    }

    #[test]
    fn tiers_follow_the_thresholds() {
        assert_eq!(tier_for(0, BENCH_LADDER), "member");
        assert_eq!(tier_for(49_999, BENCH_LADDER), "member");
        assert_eq!(tier_for(50_000, BENCH_LADDER), "silver");
        assert_eq!(tier_for(200_000, BENCH_LADDER), "gold");
        assert_eq!(tier_for(30_000, CHANGED_LADDER), "silver");
    }

    #[test]
    fn the_change_moves_about_a_third() {
        // Spends spread evenly over 0..300000: [25000, 50000) and
        // [120000, 200000) move up, 105000 of 300000.
        assert_eq!(
            expected_changes(300_000, BENCH_LADDER, CHANGED_LADDER),
            105_000
        );
        assert_eq!(expected_changes(1000, BENCH_LADDER, BENCH_LADDER), 0);
        assert_eq!(seeded_spend(1), 7919);
        assert!((1..1000).all(|i| (0..SPEND_SPREAD_MINOR).contains(&seeded_spend(i))));
    }

    #[test]
    fn seeding_is_two_set_based_inserts() {
        let sql = seed_sql("o'brien", 0xabc, 1_000_000, 7, BENCH_LADDER);
        assert_eq!(sql.matches("INSERT INTO").count(), 2, "{sql}");
        assert_eq!(
            sql.matches("generate_series(1, 1000000)").count(),
            2,
            "{sql}"
        );
        assert!(sql.contains("INSERT INTO members ("), "{sql}");
        assert!(sql.contains("INSERT INTO qualifying_days ("), "{sql}");
        assert!(sql.contains("'o''brien'"), "the programme is quoted: {sql}");
        assert!(
            sql.contains("('00000abc-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid"),
            "{sql}"
        );
        assert_eq!(
            seeded_member_id(0xabc, 255),
            "00000abc-0000-4000-8000-0000000000ff"
        );
        assert!(uuid::Uuid::parse_str(&seeded_member_id(u32::MAX, 10_000_000)).is_ok());
        assert!(sql.contains(", 7\nFROM"), "ladder version: {sql}");
        assert!(sql.contains(">= 200000 THEN 'gold'"), "{sql}");
        assert!(!sql.contains("UNLOGGED"));
    }

    /// psql's unaligned answer to `sql` in `schema`.
    fn query(url: &str, schema: &str, sql: &str) -> String {
        let out = std::process::Command::new("psql")
            .args([
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
                "-d",
                url,
            ])
            .env("PGOPTIONS", format!("-c search_path={schema}"))
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The seeding SQL against the tier service's real migrations (every
    /// file in services/tier/migrations, in order) on the test Postgres:
    /// fails when their tables drift from what [`seed_sql`] assumes.
    #[tokio::test]
    async fn seeding_fills_the_tier_tables() {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let schema = format!("t_bench_tier_{}", uuid::Uuid::now_v7().simple());
        query(&url, "public", &format!("CREATE SCHEMA {schema}"));
        let _drop = DropSchema(url.clone(), schema.clone());
        {
            let dir = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../services/tier/migrations"
            );
            let mut files: Vec<_> = std::fs::read_dir(dir)
                .expect("the tier migrations")
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "sql"))
                .collect();
            files.sort();
            assert!(!files.is_empty());
            for f in files {
                psql(&url, &schema, &std::fs::read_to_string(&f).unwrap())
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e:#}", f.display()));
            }
            let n = 3000;
            psql(
                &url,
                &schema,
                &seed_sql("default", 0x7e57, n, 4, BENCH_LADDER),
            )
            .await
            .expect("seeding");
            let by_tier = query(
                &url,
                &schema,
                "SELECT string_agg(tier_code || '=' || c, ',' ORDER BY tier_code)
                 FROM (SELECT tier_code, count(*) c FROM members
                       WHERE program_id = 'default' AND ladder_version = 4
                         AND tier_source = 'earned' AND earned_tier = tier_code
                       GROUP BY tier_code) x",
            );
            let count = |code| {
                (1..=n)
                    .filter(|i| tier_for(seeded_spend(*i), BENCH_LADDER) == code)
                    .count()
            };
            assert_eq!(
                by_tier,
                format!(
                    "gold={},member={},silver={}",
                    count("gold"),
                    count("member"),
                    count("silver")
                )
            );
            // Two days each, inside the last 12 months, summing to the spend.
            let days = query(
                &url,
                &schema,
                "SELECT count(*), count(DISTINCT member_id), sum(spend_minor),
                        bool_and(day > current_date - 365 AND day <= current_date)
                 FROM qualifying_days",
            );
            let total: i64 = (1..=n).map(seeded_spend).sum();
            assert_eq!(days, format!("{}|{n}|{total}|t", 2 * n));
            let spend_of_7 = query(
                &url,
                &schema,
                &format!(
                    "SELECT sum(spend_minor) FROM qualifying_days WHERE member_id = '{}'",
                    seeded_member_id(0x7e57, 7)
                ),
            );
            assert_eq!(spend_of_7, seeded_spend(7).to_string());
        }
    }

    /// Drops the test's schema, also when an assertion failed.
    struct DropSchema(String, String);

    impl Drop for DropSchema {
        fn drop(&mut self) {
            let _ = std::process::Command::new("psql")
                .args(["-X", "-q", "-c", &format!("DROP SCHEMA {} CASCADE", self.1)])
                .args(["-d", &self.0])
                .output();
        }
    }
}
