//! laurel-bench: drives Laurel gRPC paths under load and reports each beside
//! EchoService, which goes through the same server stack but does no work.
//! Optionally also with h2load (server-bound), beside a bare tonic echo, with
//! the server's memory and the staleness of a second replica; and the points
//! service's Earn and Redeem (distinct and hot members, replays), purchase to
//! points visible, beside pgbench running the same statements; and the tier
//! service's GetMemberTier, the member card and ConsumeBenefit, and the
//! re-evaluation of many members after a ladder change.
//!
//! Run `laurel-bench --help` for the flags.

mod args;
mod h2load;
mod memory;
mod paths;
mod pgbench;
mod points;
mod report;
mod run;
mod scrape;
mod seed;
mod server_bound;
mod staleness;
mod tier;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tonic::transport::{Channel, Endpoint};

use crate::args::{Args, Parsed};
use crate::paths::{CallMeta, Clients, ECHO_PAYLOAD, Fixture, PathKind};
use crate::run::{Load, Mode, PathResult};

#[tokio::main]
async fn main() -> ExitCode {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Help) => {
            print!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("laurel-bench: {e:#}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    match bench(&args).await {
        Ok(Finished::Done) => ExitCode::SUCCESS,
        Ok(Finished::ReevaluateFailed) => {
            eprintln!("laurel-bench: the re-evaluation step failed (see the report)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("laurel-bench: setup failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// How a benchmark that got through its setup ended.
enum Finished {
    Done,
    /// `--reevaluate` failed; the report says why.
    ReevaluateFailed,
}

/// Connects, seeds, runs every path (h2load first when asked, then the tonic
/// client), measures memory meanwhile and staleness afterwards. Only setup
/// problems are errors; failed calls during the runs are counted instead.
async fn bench(args: &Args) -> Result<Finished> {
    let meta = CallMeta::new(&args.program, args.api_key.as_deref())?;
    let channels = connect(&args.addr, args).await?;
    let bare_channels = match &args.bare_addr {
        Some(addr) => Some(connect(addr, args).await?),
        None => None,
    };
    let points_channels = match &args.points_addr {
        Some(addr) => Some(connect(addr, args).await.context("points service")?),
        None => None,
    };
    let tier_channels = match &args.tier_addr {
        Some(addr) => Some(connect(addr, args).await.context("tier service")?),
        None => None,
    };
    let clients: Vec<Clients> = channels
        .into_iter()
        .enumerate()
        .map(|(i, ch)| {
            let mut c = Clients::new(ch, meta.clone());
            if let Some(bare) = &bare_channels {
                c = c.with_bare(bare[i].clone());
            }
            if let Some(points) = &points_channels {
                c = c.with_points(points[i].clone());
            }
            if let Some(tier) = &tier_channels {
                c = c.with_tier(tier[i].clone());
            }
            c
        })
        .collect();
    probe(&clients).await?;
    let replica = match &args.replica_addr {
        Some(addr) => {
            let ch = connect(
                addr,
                &Args {
                    connections: 1,
                    ..args.clone()
                },
            )
            .await?;
            let c = Clients::new(ch[0].clone(), meta.clone());
            probe(std::slice::from_ref(&c)).await.context("replica")?;
            Some(c)
        }
        None => None,
    };

    let member_paths = args.paths.iter().any(|p| p.needs_members());
    let h2load_members = args.h2load.is_some() && args.paths.iter().any(|p| h2load_kind(*p));
    let points_paths = args.paths.iter().any(|p| p.is_points());
    // The points paths take two more: the hot earner and the hot redeemer.
    let extra = if points_paths { 2 } else { 0 };
    let mut members = if member_paths || h2load_members || replica.is_some() {
        eprintln!("seeding {} members ...", args.members + extra);
        let m = seed::seed(&clients, args.members + extra).await?;
        eprintln!(
            "seeded {} members and warmed them with GetMember (one is {})",
            m.len(),
            m.first().map_or("-", |m| m.member_id.as_str())
        );
        m
    } else {
        Vec::new()
    };
    let points_fixture = if points_paths {
        let hot_redeem = members.pop().context("no member for redeem-hot")?;
        let hot_earn = members.pop().context("no member for earn-hot")?;
        let plan = points::Plan {
            paths: &args.paths,
            members: &members,
            hot_earn: &hot_earn,
            hot_redeem: &hot_redeem,
            hot_points: args.hot_points,
        };
        let f = points::prepare(&clients, &plan)
            .await
            .context("points setup")?;
        eprintln!(
            "points: hot earner {}, hot redeemer {} with {} points",
            f.hot_earn, f.hot_redeem, args.hot_points
        );
        Some(f)
    } else {
        None
    };
    let tier_paths: Vec<PathKind> = args.paths.iter().copied().filter(|p| p.is_tier()).collect();
    if tier_paths.contains(&PathKind::MemberCard) && args.points_addr.is_some() {
        tier::open_points_accounts(&clients, &members)
            .await
            .context("member-card setup")?;
        eprintln!("member-card: every member has a points account");
    }
    if !tier_paths.is_empty() && args.tier_addr.is_some() {
        tier::prepare(&clients, &tier_paths, &members)
            .await
            .context("tier setup")?;
    }
    let fixture = Arc::new(Fixture {
        members,
        points: points_fixture,
    });

    let sampler = server_pid(args).and_then(|pid| {
        memory::Sampler::start(pid, Duration::from_millis(100)).map_err(|e| format!("{e:#}"))
    });

    let mut h2_rows = Vec::new();
    if args.h2load.is_some() {
        settle(args).await;
    }
    if let Some(shape) = &args.h2load {
        let mut kinds = Vec::new();
        if args.bare_addr.is_some() {
            kinds.push(PathKind::BareEcho);
        }
        kinds.extend(args.paths.iter().copied().filter(|p| h2load_kind(*p)));
        let mut headers = vec![("x-laurel-program".to_string(), args.program.clone())];
        if let Some(key) = &args.api_key {
            headers.push(("x-api-key".to_string(), key.clone()));
        }
        let target = server_bound::Target {
            addr: &args.addr,
            bare_addr: args.bare_addr.as_deref(),
            metrics_url: args.metrics_url.as_deref(),
            points_addr: args.points_addr.as_deref(),
            points_metrics_url: args.points_metrics_url.as_deref(),
            tier_addr: args.tier_addr.as_deref(),
            tier_metrics_url: args.tier_metrics_url.as_deref(),
            headers,
        };
        h2_rows = server_bound::run(shape, &target, &clients[0], &kinds, &fixture)
            .await
            .context("h2load")?;
    }

    let load = Load {
        concurrency: args.concurrency,
        warmup: args.warmup,
        duration: args.duration,
    };
    let mut tonic_paths = args.paths.clone();
    if args.bare_addr.is_some() {
        // Right after Laurel's echo, so the two see the same machine.
        tonic_paths.insert(1, PathKind::BareEcho);
    }
    let mut results: Vec<PathResult> = Vec::new();
    let mut points_report = points::Report::default();
    let mut tier_report = tier::Report::default();
    for &kind in &tonic_paths {
        if kind == PathKind::PurchaseVisible {
            continue;
        }
        if matches!(kind, PathKind::TierGet | PathKind::MemberCard) {
            settle(args).await;
            // Right before: the paths before may have changed balances
            // and tiers, which empties their card fields.
            let deadline = tokio::time::Instant::now() + TIER_WARM_GIVE_UP;
            let share = tier::warm(&clients, kind, &fixture.members, deadline)
                .await
                .with_context(|| format!("{} warm-up", kind.name()))?;
            if kind == PathKind::MemberCard {
                eprintln!("  {}", report::card_share_line("warmed", &share));
                tier_report.warm_cards = Some(share);
            }
        }
        let mode = args.rate.map_or(Mode::Closed, Mode::Rate);
        let before = batch_reading(args, kind).await;
        let started = std::time::Instant::now();
        let (r, cards) = phase(kind, mode, load, &clients, &fixture).await;
        if kind == PathKind::MemberCard {
            eprintln!("  {}", report::card_share_line("measured", &cards));
            tier_report.cards = Some(cards);
        }
        if let Some(b) = batches_since(args, kind, before, started).await {
            points_report.batches.push(b);
        }
        if kind == PathKind::RedeemHot {
            points_report.drain = Some(drain_check(args, &clients[0], &fixture, &r).await?);
        }
        let max_rps = r.rps();
        results.push(r);
        if args.half_rate && kind != PathKind::RedeemHot {
            let (r, _) = phase(
                kind,
                Mode::HalfRate(max_rps / 2.0),
                load,
                &clients,
                &fixture,
            )
            .await;
            results.push(r);
        }
    }
    let memory = sampler.and_then(|s| s.finish().map_err(|e| format!("{e:#}")));

    if args.paths.contains(&PathKind::PurchaseVisible) {
        eprintln!(
            "purchase-visible: {} purchases at {}, GetBalance at {} until the points show ...",
            args.visible_samples,
            args.addr,
            args.points_addr.as_deref().unwrap_or_default()
        );
        let v = points::purchase_visible(
            &clients[0],
            &fixture.members,
            args.visible_samples,
            VISIBLE_GIVE_UP,
        )
        .await
        .context("purchase-visible")?;
        eprintln!(
            "  p50 {:.3} ms, p99 {:.3} ms, not shown {}",
            v.quantile_ms(0.5),
            v.quantile_ms(0.99),
            v.never
        );
        points_report.visible = Some(v);
    }

    if let Some((url, schema)) = &args.pgbench {
        let setup = pgbench::Setup {
            url: url.clone(),
            schema: schema.clone(),
            clients: args.concurrency,
            duration: args.duration,
            warmup: args.warmup,
        };
        match run_pgbench(&setup, args).await {
            Ok(runs) => points_report.pgbench = runs,
            Err(e) => {
                eprintln!("pgbench failed: {e:#}");
                points_report.pgbench_error = Some(format!("{e:#}"));
            }
        }
    }

    let staleness = match &replica {
        Some(b) => {
            eprintln!(
                "staleness: {} writes on {}, reads on {} ...",
                args.staleness_writes,
                args.addr,
                args.replica_addr.as_deref().unwrap_or_default()
            );
            let members = &fixture.members;
            let few = &members[..members.len().min(STALENESS_MEMBERS)];
            Some(
                staleness::measure(
                    &clients[0],
                    b,
                    few,
                    args.staleness_writes,
                    STALENESS_GIVE_UP,
                )
                .await
                .context("staleness")?,
            )
        }
        None => None,
    };

    if let (Some(n), Some((url, schema))) = (args.reevaluate, &args.tier_database) {
        let setup = tier::ReevaluateSetup {
            members: n,
            program: &args.program,
            database_url: url,
            schema,
            pid: tier_pid(args),
            grant: args.paths.contains(&PathKind::ConsumeBenefit),
        };
        let r = tier::reevaluate(&clients[0], &setup).await;
        match &r {
            Ok(r) => eprintln!(
                "  {} members re-evaluated in {:.1} s ({:.0}/s), {} changed",
                r.members_done,
                r.elapsed.as_secs_f64(),
                r.rate(),
                r.members_changed
            ),
            Err(e) => eprintln!("reevaluate failed: {e:#}"),
        }
        tier_report.reevaluation = Some(r.map_err(|e| format!("{e:#}")));
    }
    let tier_section = !tier_paths.is_empty() || tier_report.reevaluation.is_some();

    println!("\nlaurel-bench {} program={}", args.addr, args.program);
    if let Some(shape) = &args.h2load {
        println!();
        print!("{}", report::h2load_table(shape, &h2_rows));
    }
    println!(
        "\ntonic client: concurrency={} connections={} duration={:?} warmup={:?}\n",
        args.concurrency, args.connections, args.duration, args.warmup
    );
    print!("{}", report::table(&results));
    println!();
    print!("{}", report::targets(&results, &h2_rows));
    if points_paths || args.pgbench.is_some() {
        println!();
        print!("{}", report::points(&results, &h2_rows, &points_report));
    }
    if tier_section {
        println!();
        print!("{}", report::tier(&results, &h2_rows, &tier_report));
    }
    print!("{}", report::memory_line(&memory));
    if let Some(s) = &staleness {
        print!("{}", report::staleness_line(s));
    }
    if args.json {
        println!(
            "{}",
            report::json_object(
                &results,
                args.concurrency,
                args.connections,
                args.h2load.as_ref().map(|s| (s, &h2_rows[..])),
                &memory,
                report::Sections {
                    staleness: staleness.as_ref(),
                    points: (points_paths || args.pgbench.is_some()).then_some(&points_report),
                    tier: tier_section.then_some(&tier_report),
                },
            )
        );
    }
    if let Some(Err(_)) = &tier_report.reevaluation {
        return Ok(Finished::ReevaluateFailed);
    }
    Ok(Finished::Done)
}

/// Longest the warm-up before tier-get and member-card may take.
const TIER_WARM_GIVE_UP: Duration = Duration::from_secs(60);

/// Members written round-robin by the staleness measurement.
const STALENESS_MEMBERS: usize = 20;
/// A replica that has not shown a write after this long counts as never.
const STALENESS_GIVE_UP: Duration = Duration::from_secs(30);

/// Longest a purchase's points may take to show before counting as never.
const VISIBLE_GIVE_UP: Duration = Duration::from_secs(10);

/// Waits until the services whose metrics are scraped have stopped working
/// through events (what they consumed and relayed unchanged for a second),
/// at most [`SETTLE_GIVE_UP`]: a read path is measured on its own, not
/// beside the backlog the seeding or the write paths before left.
async fn settle(args: &Args) {
    let urls: Vec<&str> = [
        &args.metrics_url,
        &args.points_metrics_url,
        &args.tier_metrics_url,
    ]
    .into_iter()
    .filter_map(|u| u.as_deref())
    .collect();
    if urls.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    let mut last = None;
    while started.elapsed() < SETTLE_GIVE_UP {
        let mut work = 0.0;
        for url in &urls {
            if let Ok(text) = scrape::fetch_text(url).await {
                work += scrape::event_work(&text);
            }
        }
        if last == Some(work) {
            eprintln!(
                "settled: no events consumed or relayed for 1 s ({:.1} s waited)",
                started.elapsed().as_secs_f64()
            );
            return;
        }
        last = Some(work);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!(
        "not settled after {} s: measuring beside the events still being consumed",
        SETTLE_GIVE_UP.as_secs()
    );
}

/// Longest [`settle`] waits.
const SETTLE_GIVE_UP: Duration = Duration::from_secs(180);

/// The paths h2load drives (record-activity, earn and redeem write anew per
/// call, which one fixed body cannot do; an Earn under h2load is a replay).
fn h2load_kind(kind: PathKind) -> bool {
    matches!(
        kind,
        PathKind::Echo
            | PathKind::GetMember
            | PathKind::LookupMember
            | PathKind::EarnReplay
            | PathKind::TierGet
            | PathKind::MemberCard
    )
}

/// The points service's group commit counters before a points path, when
/// its metrics endpoint is known (a failed read only loses the figure).
async fn batch_reading(args: &Args, kind: PathKind) -> Option<(f64, u64)> {
    let url = args
        .points_metrics_url
        .as_deref()
        .filter(|_| kind.is_points())?;
    match scrape::fetch_text(url).await {
        Ok(text) => Some(scrape::batch_sizes(&text)),
        Err(e) => {
            eprintln!("  (points metrics not read: {e:#})");
            None
        }
    }
}

/// The batches the points service committed since `before`.
async fn batches_since(
    args: &Args,
    kind: PathKind,
    before: Option<(f64, u64)>,
    started: std::time::Instant,
) -> Option<points::Batches> {
    let (sum0, count0) = before?;
    let (sum1, count1) = batch_reading(args, kind).await?;
    let b = points::Batches {
        kind,
        count: count1.saturating_sub(count0),
        requests: (sum1 - sum0).max(0.0),
        seconds: started.elapsed().as_secs_f64(),
    };
    eprintln!(
        "  group commit: {} transactions ({:.0}/s), {} requests each on average",
        b.count,
        b.per_second(),
        b.mean().map_or("-".into(), |m| format!("{m:.1}"))
    );
    Some(b)
}

/// Reads the redeem-hot member's balance and checks it against the run.
async fn drain_check(
    args: &Args,
    clients: &Clients,
    fixture: &Fixture,
    r: &PathResult,
) -> Result<points::DrainCheck> {
    let member = &fixture
        .points
        .as_ref()
        .context("redeem-hot without its member")?
        .hot_redeem;
    let balance = clients
        .clone()
        .balance(member)
        .await
        .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))
        .context("GetBalance after redeem-hot")?;
    let d = points::DrainCheck::new(args.hot_points, r, &balance);
    eprintln!(
        "  redeem-hot: {} OK, {} refused, {} unknown; {} of {} points left: {}",
        d.successes,
        d.refused,
        d.unknown,
        d.final_available,
        d.start,
        if d.holds() {
            "no overspend"
        } else {
            "MISMATCH"
        }
    );
    Ok(d)
}

/// pgbench's Earn statements on distinct members (as many as were seeded)
/// and on one hot account, at the Earn run's concurrency.
async fn run_pgbench(setup: &pgbench::Setup, args: &Args) -> Result<Vec<pgbench::Run>> {
    pgbench::check_installed().await?;
    let mut runs = Vec::new();
    for members in [args.members, 1] {
        eprintln!(
            "pgbench earn.sql -c {} -T {} on {} member(s) ...",
            setup.clients,
            setup.duration.as_secs().max(1),
            members
        );
        let r = pgbench::run_earn(setup, members).await?;
        eprintln!(
            "  {:.1} tps, latency {:.3} ms, {} failed",
            r.tps, r.latency_ms, r.failed
        );
        runs.push(r);
    }
    Ok(runs)
}

/// The server process to watch: `--server-pid`, else whoever listens on
/// `--addr`'s port here.
fn server_pid(args: &Args) -> Result<u32, String> {
    pid_of(args.server_pid, &args.addr, "--addr", "--server-pid")
}

/// The tier process: `--tier-pid`, else whoever listens on `--tier-addr`'s
/// port here.
fn tier_pid(args: &Args) -> Result<u32, String> {
    let addr = args.tier_addr.as_deref().unwrap_or_default();
    pid_of(args.tier_pid, addr, "--tier-addr", "--tier-pid")
}

fn pid_of(given: Option<u32>, addr: &str, addr_flag: &str, pid_flag: &str) -> Result<u32, String> {
    if let Some(pid) = given {
        return Ok(pid);
    }
    let port = addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.trim_end_matches('/').parse::<u16>().ok())
        .ok_or_else(|| format!("no port in {addr_flag} {addr:?}; give {pid_flag}"))?;
    memory::pid_listening_on(port).map_err(|e| format!("{e:#}; give {pid_flag}"))
}

async fn phase(
    kind: paths::PathKind,
    mode: Mode,
    load: Load,
    clients: &[Clients],
    fixture: &Arc<Fixture>,
) -> (PathResult, run::CardShare) {
    let target = mode
        .target_rps()
        .map_or(String::new(), |r| format!(" at {r:.0} rps"));
    eprintln!(
        "running {}{target} for {:?} (+{:?} warm-up) ...",
        kind.name(),
        load.duration,
        load.warmup
    );
    let (r, cards) = run::run_path(kind, mode, load, clients, fixture).await;
    eprintln!(
        "  {:.1} rps ({:.1} OK/s), p50 {:.3} ms, p99 {:.3} ms, {} errors",
        r.rps(),
        r.ok_rps(),
        r.quantile_ms(0.5),
        r.quantile_ms(0.99),
        r.errors()
    );
    (r, cards)
}

/// One channel per connection: each `connect` opens its own HTTP/2 connection.
async fn connect(addr: &str, args: &Args) -> Result<Vec<Channel>> {
    let endpoint = Endpoint::from_shared(addr.to_string())
        .with_context(|| format!("bad address {addr:?}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(args.timeout)
        .tcp_nodelay(true);
    let mut channels = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let ch = endpoint
            .connect()
            .await
            .with_context(|| format!("connection {i} to {addr}"))?;
        channels.push(ch);
    }
    Ok(channels)
}

/// One echo per connection (and per bare connection), so a server that is
/// up but broken fails setup.
async fn probe(clients: &[Clients]) -> Result<()> {
    for (i, c) in clients.iter().enumerate() {
        let mut c = c.clone();
        let meta = c.meta.clone();
        let mut targets = vec![("Echo", &mut c.echo)];
        if let Some(bare) = c.bare.as_mut() {
            targets.push(("bare Echo", bare));
        }
        if let Some(p) = c.points_echo.as_mut() {
            targets.push(("points Echo", p));
        }
        if let Some(t) = c.tier_echo.as_mut() {
            targets.push(("tier Echo", t));
        }
        for (what, client) in targets {
            let resp = client
                .echo(meta.request(paths::echo_request()))
                .await
                .map_err(|s| {
                    anyhow::anyhow!("{what} on connection {i}: {:?}: {}", s.code(), s.message())
                })?;
            if resp.get_ref().payload != ECHO_PAYLOAD {
                bail!("{what} on connection {i} returned a different payload");
            }
        }
    }
    Ok(())
}
