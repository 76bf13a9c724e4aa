//! Prints the results: a table for people, one JSON line for machines.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::h2load::Shape;
use crate::memory;
use crate::paths::PathKind;
use crate::points;
use crate::run::{CardShare, Mode, OK, PathResult};
use crate::server_bound::Row;
use crate::staleness::Staleness;
use crate::tier;

/// Requests per second of echo in the same mode group, if it ran.
fn echo_rps(results: &[PathResult], mode: Mode) -> Option<f64> {
    results
        .iter()
        .find(|r| r.kind == PathKind::Echo && r.mode.group() == mode.group())
        .map(PathResult::rps)
}

/// rps of `r` over the rps of echo in the same mode.
pub fn vs_echo(results: &[PathResult], r: &PathResult) -> Option<f64> {
    echo_rps(results, r.mode)
        .filter(|e| *e > 0.0)
        .map(|e| r.rps() / e)
}

fn mode_label(mode: Mode) -> String {
    match mode {
        Mode::Closed => "closed".into(),
        Mode::Rate(r) => format!("rate {r:.0}/s"),
        Mode::HalfRate(r) => format!("50% {r:.0}/s"),
    }
}

fn errors_label(r: &PathResult) -> String {
    let errs: Vec<_> = r
        .codes
        .iter()
        .filter(|(code, _)| code.as_str() != OK)
        .map(|(code, n)| format!("{code}={n}"))
        .collect();
    if errs.is_empty() {
        "-".into()
    } else {
        errs.join(" ")
    }
}

/// The human-readable table.
pub fn table(results: &[PathResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<14} {:>10} {:>10} {:>9} {:>9} {:>9} {:>8}  errors",
        "path", "mode", "requests", "rps", "p50 ms", "p99 ms", "max ms", "vs echo"
    );
    for r in results {
        let ratio = vs_echo(results, r).map_or("-".into(), |v| format!("{v:.3}"));
        let _ = writeln!(
            out,
            "{:<16} {:<14} {:>10} {:>10.1} {:>9.3} {:>9.3} {:>9.3} {:>8}  {}",
            r.kind.name(),
            mode_label(r.mode),
            r.requests(),
            r.rps(),
            r.quantile_ms(0.5),
            r.quantile_ms(0.99),
            r.max_ms(),
            ratio,
            errors_label(r),
        );
    }
    out
}

/// The ratios the issue sets targets for: (label, numerator, denominator, target).
const TARGETS: [(&str, PathKind, PathKind, f64); 3] = [
    (
        "laurel echo / bare tonic echo",
        PathKind::Echo,
        PathKind::BareEcho,
        0.9,
    ),
    (
        "get-member / echo",
        PathKind::GetMember,
        PathKind::Echo,
        0.8,
    ),
    (
        "lookup-member / echo",
        PathKind::LookupMember,
        PathKind::Echo,
        0.5,
    ),
];

/// The h2load runs, as a table.
pub fn h2load_table(shape: &Shape, rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "h2load -n {} -c {} -m {} -t {} (after {} warm-up calls each), median of {} interleaved rounds: server-bound\n",
        shape.calls,
        shape.connections,
        shape.streams,
        shape.threads,
        shape.warmup_calls,
        shape.rounds.max(1)
    );
    let _ = writeln!(
        out,
        "{:<16} {:>10} {:>8} {:>9} {:>9} {:>9}  {:<26} grpc codes (server metrics)",
        "path", "calls/s", "vs echo", "mean ms", "max ms", "http fail", "each round (calls/s)"
    );
    let echo = h2load_rps(rows, PathKind::Echo);
    for r in rows {
        let ratio = echo
            .filter(|e| *e > 0.0)
            .map_or("-".into(), |e| format!("{:.3}", r.outcome.rps / e));
        let codes = match &r.grpc_codes {
            None => "-".to_string(),
            Some(c) if c.is_empty() => "none counted".to_string(),
            Some(c) => c
                .iter()
                .map(|(code, n)| format!("{code}={n}"))
                .collect::<Vec<_>>()
                .join(" "),
        };
        let _ = writeln!(
            out,
            "{:<16} {:>10.1} {:>8} {:>9.3} {:>9.3} {:>9}  {:<26} {}",
            r.kind.name(),
            r.outcome.rps,
            ratio,
            r.outcome.mean_ms,
            r.outcome.max_ms,
            r.outcome.http_failures(),
            r.rounds
                .iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(" "),
            codes,
        );
    }
    out
}

fn h2load_rps(rows: &[Row], kind: PathKind) -> Option<f64> {
    rows.iter().find(|r| r.kind == kind).map(|r| r.outcome.rps)
}

/// rps of the first run of `kind` in the first mode (closed or --rate).
fn tonic_rps(results: &[PathResult], kind: PathKind) -> Option<f64> {
    let first_group = results.first()?.mode.group();
    results
        .iter()
        .find(|r| r.kind == kind && r.mode.group() == first_group)
        .map(PathResult::rps)
}

fn ratio(num: Option<f64>, den: Option<f64>) -> Option<f64> {
    match (num, den) {
        (Some(n), Some(d)) if d > 0.0 => Some(n / d),
        _ => None,
    }
}

/// The targeted ratios from h2load and from the tonic client, one per line.
pub fn targets(results: &[PathResult], rows: &[Row]) -> String {
    let mut out = String::new();
    for (label, num, den, target) in TARGETS {
        out.push_str(&target_line(results, rows, label, (num, den), Some(target)));
    }
    out
}

/// One ratio `num / den` from h2load and from the tonic client, judged by
/// h2load when it ran, against `target` when there is one; empty when
/// neither measured both paths.
fn target_line(
    results: &[PathResult],
    rows: &[Row],
    label: &str,
    (num, den): (PathKind, PathKind),
    target: Option<f64>,
) -> String {
    let h2 = ratio(h2load_rps(rows, num), h2load_rps(rows, den));
    let tonic = ratio(tonic_rps(results, num), tonic_rps(results, den));
    if h2.is_none() && tonic.is_none() {
        return String::new();
    }
    let judged = match target {
        Some(target) => {
            let verdict = match h2.or(tonic) {
                Some(v) if v >= target => "meets",
                _ => "BELOW",
            };
            format!(
                "   target >= {target:.2} ({verdict}{})",
                if h2.is_some() {
                    ", judged by h2load"
                } else {
                    ""
                }
            )
        }
        None => String::new(),
    };
    format!(
        "{label:<30} h2load {:>6}   tonic client {:>6}{judged}\n",
        h2.map_or("-".into(), |v| format!("{v:.3}")),
        tonic.map_or("-".into(), |v| format!("{v:.3}")),
    )
}

/// Earn on distinct members over pgbench's one-Earn-per-transaction rate.
pub const EARN_VS_PGBENCH_TARGET: f64 = 2.0;
/// Successful redeems per second on one hot member.
pub const REDEEM_HOT_TARGET: f64 = 1000.0;
/// Purchase to points visible, p99, in milliseconds.
pub const VISIBLE_P99_TARGET_MS: f64 = 100.0;

/// The first closed (or --rate) run of `kind`.
fn first_run(results: &[PathResult], kind: PathKind) -> Option<&PathResult> {
    let first_group = results.first()?.mode.group();
    results
        .iter()
        .find(|r| r.kind == kind && r.mode.group() == first_group)
}

fn verdict(meets: bool) -> &'static str {
    if meets { "meets" } else { "BELOW" }
}

/// Earn's OK/s over pgbench's tps on as many members (1: the hot account).
fn earn_vs_pgbench(results: &[PathResult], p: &points::Report, hot: bool) -> Option<f64> {
    let kind = if hot {
        PathKind::EarnHot
    } else {
        PathKind::Earn
    };
    let earn = first_run(results, kind)?.ok_rps();
    let pg = p.pgbench.iter().find(|r| (r.members == 1) == hot)?;
    ratio(Some(earn), Some(pg.tps))
}

/// The points service's figures: rates with their group commit batches,
/// Earn beside pgbench, the hot redemption's no-overspend check, replays,
/// and purchase to points visible, each with its target.
pub fn points(results: &[PathResult], rows: &[Row], p: &points::Report) -> String {
    let mut out = String::new();
    let runs: Vec<&PathResult> = PathKind::POINTS
        .iter()
        .filter_map(|k| first_run(results, *k))
        .collect();
    if !runs.is_empty() {
        let _ = writeln!(
            out,
            "points service (tonic client; group commit from the points metrics)\n"
        );
        let _ = writeln!(
            out,
            "{:<16} {:>10} {:>9} {:>9} {:>10} {:>9}",
            "path", "OK/s", "p50 ms", "p99 ms", "txn/s", "req/txn"
        );
        for r in runs {
            let b = p.batches.iter().find(|b| b.kind == r.kind);
            let _ = writeln!(
                out,
                "{:<16} {:>10.1} {:>9.3} {:>9.3} {:>10} {:>9}",
                r.kind.name(),
                r.ok_rps(),
                r.quantile_ms(0.5),
                r.quantile_ms(0.99),
                b.map_or("-".into(), |b| format!("{:.1}", b.per_second())),
                b.and_then(points::Batches::mean)
                    .map_or("-".into(), |m| format!("{m:.1}")),
            );
        }
        out.push('\n');
    }
    if let Some(first) = p.pgbench.first() {
        let _ = writeln!(
            out,
            "pgbench deploy/bench/pgbench/earn.sql (the statements of one Earn, one per transaction, -M prepared -c {} -j {} -T {}):",
            first.clients, first.threads, first.seconds
        );
        for pg in &p.pgbench {
            let hot = pg.members == 1;
            let (label, kind) = if hot {
                ("one hot account", PathKind::EarnHot)
            } else {
                ("distinct members", PathKind::Earn)
            };
            let earn = first_run(results, kind).map(PathResult::ok_rps);
            let r = earn_vs_pgbench(results, p, hot);
            let judged = if hot {
                String::new()
            } else {
                format!(
                    "  target >= {EARN_VS_PGBENCH_TARGET:.1} ({})",
                    verdict(r.is_some_and(|r| r >= EARN_VS_PGBENCH_TARGET))
                )
            };
            let _ = writeln!(
                out,
                "  {label:<17} ({:>4} members) pgbench {:>9.1} tps (mean latency {:.2} ms, {} failed); laurel {:<9} {:>9} OK/s; ratio {}{judged}",
                pg.members,
                pg.tps,
                pg.latency_ms,
                pg.failed,
                kind.name(),
                earn.map_or("-".into(), |e| format!("{e:.1}")),
                r.map_or("-".into(), |r| format!("{r:.2}")),
            );
        }
    } else if let Some(why) = &p.pgbench_error {
        let _ = writeln!(out, "pgbench: not measured ({why})");
    }
    if let Some(d) = &p.drain {
        let rate = first_run(results, PathKind::RedeemHot).map(|r| (r.ok_rps(), r.window));
        let (ok_s, window) = rate.unwrap_or((0.0, std::time::Duration::ZERO));
        let _ = writeln!(
            out,
            "redeem-hot: {} points, 1 point per redeem: {} OK in {:.3} s = {:.1}/s{}; target >= {:.0}/s ({})",
            d.start,
            d.successes,
            window.as_secs_f64(),
            ok_s,
            if d.drained() {
                ", account drained"
            } else {
                ", not drained within the duration"
            },
            REDEEM_HOT_TARGET,
            verdict(ok_s >= REDEEM_HOT_TARGET),
        );
        let _ = writeln!(
            out,
            "  no overspend: {} (available afterwards {}, total {}; points spent {} = {} start - {} left; OK {}, refused {}, unknown outcome {})",
            if d.holds() { "yes" } else { "NO" },
            d.final_available,
            d.final_total,
            d.spent(),
            d.start,
            d.final_available,
            d.successes,
            d.refused,
            d.unknown,
        );
    }
    let replay_h2 = h2load_rps(rows, PathKind::EarnReplay);
    let replay_tonic = first_run(results, PathKind::EarnReplay).map(PathResult::ok_rps);
    if replay_h2.is_some() || replay_tonic.is_some() {
        let fmt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
        let vs = |kind| {
            ratio(replay_h2, h2load_rps(rows, kind)).map_or("-".into(), |v| format!("{v:.3}"))
        };
        // h2load counts every HTTP 200; the server's counters say how many were OK.
        let ok_share = rows
            .iter()
            .find(|r| r.kind == PathKind::EarnReplay)
            .and_then(|r| r.grpc_codes.as_ref())
            .and_then(|c| {
                let all: u64 = c.values().sum();
                (all > 0).then(|| c.get("OK").copied().unwrap_or(0) as f64 / all as f64)
            });
        let _ = writeln!(
            out,
            "earn-replay (one request_id again and again): h2load {} calls/s (vs echo {}, vs get-member {}, vs lookup-member {}; OK share {} = {} OK/s), tonic client {} OK/s",
            fmt(replay_h2),
            vs(PathKind::Echo),
            vs(PathKind::GetMember),
            vs(PathKind::LookupMember),
            ok_share.map_or("-".into(), |s| format!("{:.1}%", s * 100.0)),
            fmt(ok_share.zip(replay_h2).map(|(s, r)| s * r)),
            fmt(replay_tonic),
        );
    }
    if let Some(v) = &p.visible {
        let p99 = v.quantile_ms(0.99);
        let _ = writeln!(
            out,
            "purchase -> points visible (RecordActivity answered -> GetBalance shows the points; {} purchases, one at a time, {} GetBalance polls; the first, unmeasured, showed after {:.3} s): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; not shown within {:?}: {}; target p99 < {:.0} ms ({})",
            v.samples,
            v.polls,
            v.first_wait.as_secs_f64(),
            v.quantile_ms(0.5),
            p99,
            v.max_ms(),
            v.give_up,
            v.never,
            VISIBLE_P99_TARGET_MS,
            verdict(v.never == 0 && p99 < VISIBLE_P99_TARGET_MS),
        );
    }
    out
}

/// Where member-card answers took their fields from, on one line.
pub fn card_share_line(what: &str, c: &CardShare) -> String {
    match c.shares() {
        Some((points, tier)) => format!(
            "member-card {what}: points from the card {:.1}%, tier from the card {:.1}% (of {} answers)",
            points * 100.0,
            tier * 100.0,
            c.answers
        ),
        None => format!("member-card {what}: no answers"),
    }
}

/// The tier service's figures: GetMemberTier and GetMemberCard from cache
/// as ratios of echo beside cached GetMember's, where member-card's fields
/// came from, ConsumeBenefit's throughput, and the re-evaluation after a
/// ladder change, each with its target.
pub fn tier(results: &[PathResult], rows: &[Row], t: &tier::Report) -> String {
    let mut out = String::new();
    let target = tier::CACHED_VS_ECHO_TARGET;
    let ratios: String = [
        ("get-member / echo (cached)", PathKind::GetMember, None),
        ("tier-get / echo", PathKind::TierGet, Some(target)),
        ("member-card / echo", PathKind::MemberCard, Some(target)),
    ]
    .into_iter()
    .map(|(label, kind, target)| target_line(results, rows, label, (kind, PathKind::Echo), target))
    .collect();
    if !ratios.is_empty() {
        let _ = writeln!(
            out,
            "tier service (served from cache, as ratios of echo in the same run; target: as cached get-member, at least {target:.2})\n"
        );
        out.push_str(&ratios);
    }
    if let Some(c) = &t.cards {
        let _ = writeln!(out, "{}", card_share_line("answers (measured)", c));
    }
    if let Some(r) = first_run(results, PathKind::ConsumeBenefit) {
        let _ = writeln!(
            out,
            "consume-benefit (unlimited {}, a new request_id each): {:.1} OK/s, p50 {:.3} ms, p99 {:.3} ms, errors {}",
            crate::paths::BENEFIT_CODE,
            r.ok_rps(),
            r.quantile_ms(0.5),
            r.quantile_ms(0.99),
            errors_label(r),
        );
    }
    match &t.reevaluation {
        None => {}
        Some(Err(why)) => {
            let _ = writeln!(out, "re-evaluation after a ladder change: FAILED ({why})");
        }
        Some(Ok(r)) => out.push_str(&reevaluation_lines(r)),
    }
    out
}

/// The re-evaluation step's figures and its verdict against the targets
/// for 1,000,000 members (under 120 s, under 500 MiB).
fn reevaluation_lines(r: &tier::Reevaluated) -> String {
    let secs = r.elapsed.as_secs_f64();
    let peak = r.peak_mib();
    let memory = match &r.memory {
        Ok(m) => format!(
            "peak memory of the tier service {:.1} MiB (pid {}; sampled RSS {:.1} MiB, VmHWM {:.1} MiB)",
            peak.unwrap_or_default(),
            m.pid,
            memory::mib(m.peak_rss_kib),
            memory::mib(m.now.hwm_kib)
        ),
        Err(why) => format!("memory of the tier service not measured ({why})"),
    };
    let server = r.server_elapsed.map_or(String::new(), |d| {
        format!(", {:.1} s by its own clock", d.as_secs_f64())
    });
    let mut out = format!(
        "re-evaluation after a ladder change (version {}, {}): {} members ({} seeded in {:.1} s, untimed) in {secs:.1} s{server} = {:.0} members/s; {} changed (expected about {}); {memory}\n",
        r.ladder_version,
        r.reevaluation_id,
        r.members_done,
        r.seeded,
        r.seed_seconds,
        r.rate(),
        r.members_changed,
        r.expected_changed,
    );
    let _ = writeln!(
        out,
        "  target for 1,000,000 members: < {:.0} s ({}) and < {:.0} MiB ({}){}",
        tier::REEVALUATION_TARGET_SECS,
        verdict(secs < tier::REEVALUATION_TARGET_SECS),
        tier::REEVALUATION_TARGET_MIB,
        peak.map_or("not measured", |p| verdict(
            p < tier::REEVALUATION_TARGET_MIB
        )),
        if r.seeded < 1_000_000 {
            "; fewer members were seeded, so this is no verdict on the target"
        } else {
            ""
        },
    );
    out
}

/// The tier figures as JSON.
fn tier_json(results: &[PathResult], rows: &[Row], t: &tier::Report) -> Value {
    let vs_echo = |kind| {
        json!({
            "h2load": ratio(h2load_rps(rows, kind), h2load_rps(rows, PathKind::Echo)),
            "tonic": ratio(tonic_rps(results, kind), tonic_rps(results, PathKind::Echo)),
        })
    };
    let cards = |c: &Option<CardShare>| {
        c.map(|c| {
            json!({
                "answers": c.answers,
                "points_from_card": c.points_from_card,
                "tier_from_card": c.tier_from_card,
            })
        })
    };
    let reevaluation = match &t.reevaluation {
        None => Value::Null,
        Some(Err(why)) => json!({ "error": why }),
        Some(Ok(r)) => json!({
            "seeded": r.seeded,
            "seed_s": r.seed_seconds,
            "ladder_version": r.ladder_version,
            "reevaluation_id": r.reevaluation_id,
            "members_total": r.members_total,
            "members_done": r.members_done,
            "members_changed": r.members_changed,
            "expected_changed": r.expected_changed,
            "elapsed_s": r.elapsed.as_secs_f64(),
            "server_elapsed_s": r.server_elapsed.map(|d| d.as_secs_f64()),
            "members_per_s": r.rate(),
            "peak_mib": r.peak_mib(),
            "memory_error": r.memory.as_ref().err(),
            "target_s": tier::REEVALUATION_TARGET_SECS,
            "target_mib": tier::REEVALUATION_TARGET_MIB,
        }),
    };
    json!({
        "get_member_vs_echo": vs_echo(PathKind::GetMember),
        "tier_get_vs_echo": vs_echo(PathKind::TierGet),
        "member_card_vs_echo": vs_echo(PathKind::MemberCard),
        "vs_echo_target": tier::CACHED_VS_ECHO_TARGET,
        "member_card_sources": cards(&t.cards),
        "member_card_sources_warmed": cards(&t.warm_cards),
        "consume_benefit_ok_per_s": first_run(results, PathKind::ConsumeBenefit).map(PathResult::ok_rps),
        "reevaluation": reevaluation,
    })
}

/// The points figures as JSON.
fn points_json(results: &[PathResult], rows: &[Row], p: &points::Report) -> Value {
    json!({
        "batches": p.batches.iter().map(|b| json!({
            "path": b.kind.name(),
            "transactions": b.count,
            "requests": b.requests,
            "transactions_per_s": b.per_second(),
            "requests_per_transaction": b.mean(),
        })).collect::<Vec<_>>(),
        "pgbench": p.pgbench.iter().map(|r| json!({
            "members": r.members,
            "clients": r.clients,
            "threads": r.threads,
            "seconds": r.seconds,
            "tps": r.tps,
            "latency_ms": r.latency_ms,
            "transactions": r.transactions,
            "failed": r.failed,
        })).collect::<Vec<_>>(),
        "pgbench_error": p.pgbench_error,
        "earn_vs_pgbench": earn_vs_pgbench(results, p, false),
        "earn_hot_vs_pgbench_hot": earn_vs_pgbench(results, p, true),
        "earn_vs_pgbench_target": EARN_VS_PGBENCH_TARGET,
        "redeem_hot": p.drain.as_ref().map(|d| json!({
            "start": d.start,
            "ok": d.successes,
            "refused": d.refused,
            "unknown": d.unknown,
            "final_available": d.final_available,
            "final_total": d.final_total,
            "ok_per_s": first_run(results, PathKind::RedeemHot).map(PathResult::ok_rps),
            "no_overspend": d.holds(),
            "drained": d.drained(),
            "target_per_s": REDEEM_HOT_TARGET,
        })),
        "earn_replay_h2load_rps": h2load_rps(rows, PathKind::EarnReplay),
        "purchase_visible": p.visible.as_ref().map(|v| json!({
            "samples": v.samples,
            "p50_ms": v.quantile_ms(0.5),
            "p99_ms": v.quantile_ms(0.99),
            "max_ms": v.max_ms(),
            "never": v.never,
            "first_wait_s": v.first_wait.as_secs_f64(),
            "target_p99_ms": VISIBLE_P99_TARGET_MS,
        })),
    })
}

/// The server's memory over the load runs, or why it was not measured.
pub fn memory_line(m: &Result<memory::Report, String>) -> String {
    match m {
        Ok(r) => {
            let peak = memory::mib(r.peak_rss_kib.max(r.now.hwm_kib));
            format!(
                "server memory (pid {}): peak RSS sampled under load {:.1} MiB, VmHWM {:.1} MiB, VmRSS now {:.1} MiB; target < {:.0} MiB ({})\n",
                r.pid,
                memory::mib(r.peak_rss_kib),
                memory::mib(r.now.hwm_kib),
                memory::mib(r.now.rss_kib),
                memory::TARGET_MIB,
                if peak < memory::TARGET_MIB {
                    "meets"
                } else {
                    "ABOVE"
                },
            )
        }
        Err(why) => format!("server memory: not measured ({why})\n"),
    }
}

/// The replica staleness figure.
pub fn staleness_line(s: &Staleness) -> String {
    format!(
        "replica staleness (write on --addr, read on --replica-addr; {} writes): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; fresh at the first read {}/{}, not shown within {:?}: {}\n",
        s.writes,
        s.quantile_ms(0.5),
        s.quantile_ms(0.99),
        s.max_ms(),
        s.fresh_at_once,
        s.writes,
        s.give_up,
        s.never,
    )
}

/// The optional sections of the JSON object, when they were measured.
#[derive(Default, Clone, Copy)]
pub struct Sections<'a> {
    pub staleness: Option<&'a Staleness>,
    pub points: Option<&'a points::Report>,
    pub tier: Option<&'a tier::Report>,
}

/// Everything measured, as one JSON object on one line.
pub fn json_object(
    results: &[PathResult],
    concurrency: usize,
    connections: usize,
    h2load: Option<(&Shape, &[Row])>,
    memory: &Result<memory::Report, String>,
    sections: Sections<'_>,
) -> String {
    let Sections {
        staleness,
        points,
        tier,
    } = sections;
    let h2 = h2load.map(|(shape, rows)| {
        let echo = h2load_rps(rows, PathKind::Echo);
        json!({
            "calls": shape.calls,
            "connections": shape.connections,
            "streams": shape.streams,
            "threads": shape.threads,
            "warmup_calls": shape.warmup_calls,
            "paths": rows.iter().map(|r| json!({
                "path": r.kind.name(),
                "rps": r.outcome.rps,
                "vs_echo": ratio(Some(r.outcome.rps), echo),
                "mean_ms": r.outcome.mean_ms,
                "max_ms": r.outcome.max_ms,
                "http_failures": r.outcome.http_failures(),
                "grpc_codes": r.grpc_codes,
            })).collect::<Vec<_>>(),
        })
    });
    let rows = h2load.map_or(&[][..], |(_, rows)| rows);
    let targets: Vec<Value> = TARGETS
        .iter()
        .map(|(label, num, den, target)| {
            json!({
                "ratio": label,
                "target": target,
                "h2load": ratio(h2load_rps(rows, *num), h2load_rps(rows, *den)),
                "tonic": ratio(tonic_rps(results, *num), tonic_rps(results, *den)),
            })
        })
        .collect();
    let memory = match memory {
        Ok(r) => json!({
            "pid": r.pid,
            "peak_rss_mib": memory::mib(r.peak_rss_kib),
            "hwm_mib": memory::mib(r.now.hwm_kib),
            "rss_mib": memory::mib(r.now.rss_kib),
            "target_mib": memory::TARGET_MIB,
        }),
        Err(why) => json!({ "error": why }),
    };
    let staleness = staleness.map(|s| {
        json!({
            "writes": s.writes,
            "p50_ms": s.quantile_ms(0.5),
            "p99_ms": s.quantile_ms(0.99),
            "max_ms": s.max_ms(),
            "fresh_at_first_read": s.fresh_at_once,
            "never": s.never,
        })
    });
    json!({
        "tonic": json_rows(results, concurrency, connections),
        "h2load": h2,
        "targets": targets,
        "memory": memory,
        "staleness": staleness,
        "points": points.map(|p| points_json(results, rows, p)),
        "tier": tier.map(|t| tier_json(results, rows, t)),
    })
    .to_string()
}

/// One object per tonic-client path and mode.
fn json_rows(results: &[PathResult], concurrency: usize, connections: usize) -> Value {
    let rows: Vec<Value> = results
        .iter()
        .map(|r| {
            json!({
                "path": r.kind.name(),
                "mode": r.mode.group(),
                "target_rps": r.mode.target_rps(),
                "concurrency": concurrency,
                "connections": connections,
                "duration_s": r.window.as_secs_f64(),
                "requests": r.requests(),
                "errors": r.errors(),
                "rps": r.rps(),
                "ok_rps": r.ok_rps(),
                "p50_ms": r.quantile_ms(0.5),
                "p99_ms": r.quantile_ms(0.99),
                "max_ms": r.max_ms(),
                "vs_echo": vs_echo(results, r),
                "codes": r.codes,
            })
        })
        .collect();
    Value::Array(rows)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use hdrhistogram::Histogram;

    use super::*;

    fn result(kind: PathKind, mode: Mode, ok: u64, errs: u64) -> PathResult {
        let mut hist = Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for i in 1..=100 {
            hist.record(i * 100).unwrap();
        }
        let mut codes = BTreeMap::new();
        codes.insert(OK.to_string(), ok);
        if errs > 0 {
            codes.insert("Unavailable".to_string(), errs);
        }
        PathResult {
            kind,
            mode,
            hist,
            codes,
            window: Duration::from_secs(10),
        }
    }

    #[test]
    fn ratio_within_mode() {
        let rs = vec![
            result(PathKind::Echo, Mode::Closed, 1000, 0),
            result(PathKind::Echo, Mode::HalfRate(50.0), 500, 0),
            result(PathKind::GetMember, Mode::Closed, 250, 0),
            result(PathKind::GetMember, Mode::HalfRate(12.5), 125, 0),
        ];
        assert_eq!(vs_echo(&rs, &rs[2]), Some(0.25));
        assert_eq!(vs_echo(&rs, &rs[3]), Some(0.25));
        let t = table(&rs);
        assert!(t.contains("get-member"), "{t}");
        let none = Err("not asked".to_string());
        let j: Value =
            serde_json::from_str(&json_object(&rs, 64, 8, None, &none, Sections::default()))
                .unwrap();
        let j = &j["tonic"];
        assert_eq!(j.as_array().unwrap().len(), 4);
        assert_eq!(j[2]["vs_echo"], 0.25);
        let p50 = j[0]["p50_ms"].as_f64().unwrap();
        assert!((p50 - 5.0).abs() < 0.01, "{p50}");
    }

    fn h2_row(kind: PathKind, rps: f64) -> Row {
        Row {
            kind,
            outcome: crate::h2load::Outcome {
                seconds: 1.0,
                rps,
                total: 100,
                succeeded: 100,
                failed: 0,
                errored: 0,
                timeout: 0,
                status_2xx: 100,
                mean_ms: 1.0,
                max_ms: 2.0,
            },
            rounds: vec![rps],
            grpc_codes: None,
        }
    }

    #[test]
    fn targets_are_judged_by_h2load() {
        let rows = vec![
            h2_row(PathKind::BareEcho, 1000.0),
            h2_row(PathKind::Echo, 800.0),
            h2_row(PathKind::GetMember, 720.0),
            h2_row(PathKind::LookupMember, 200.0),
        ];
        // The tonic client says get-member beats echo; h2load decides.
        let rs = vec![
            result(PathKind::Echo, Mode::Closed, 1000, 0),
            result(PathKind::GetMember, Mode::Closed, 1100, 0),
        ];
        let t = targets(&rs, &rows);
        let line = |label: &str| {
            t.lines()
                .find(|l| l.starts_with(label))
                .unwrap()
                .to_string()
        };
        assert!(line("laurel echo / bare").contains("0.800"), "{t}");
        assert!(line("laurel echo / bare").contains("BELOW"), "{t}");
        assert!(line("get-member / echo").contains("0.900"), "{t}");
        assert!(line("get-member / echo").contains("1.100"), "{t}");
        assert!(line("get-member / echo").contains("meets"), "{t}");
        assert!(line("lookup-member / echo").contains("BELOW"), "{t}");
        let table = h2load_table(&Shape::default(), &rows);
        assert!(table.contains("bare-echo"), "{table}");
        assert!(table.contains("1.250"), "{table}");
    }

    #[test]
    fn memory_over_target_is_flagged() {
        let r = memory::Report {
            pid: 7,
            peak_rss_kib: 300 * 1024,
            now: memory::Status {
                rss_kib: 100 * 1024,
                hwm_kib: 300 * 1024,
            },
        };
        let line = memory_line(&Ok(r));
        assert!(
            line.contains("300.0 MiB") && line.contains("ABOVE"),
            "{line}"
        );
        assert!(memory_line(&Err("remote".into())).contains("not measured (remote)"));
    }

    fn pg(members: usize, tps: f64) -> crate::pgbench::Run {
        crate::pgbench::Run {
            members,
            clients: 32,
            threads: 2,
            seconds: 10,
            tps,
            latency_ms: 5.0,
            transactions: (tps * 10.0) as u64,
            failed: 0,
        }
    }

    #[test]
    fn points_figures_are_judged_against_their_targets() {
        // 1000 OK in 10 s each: 100 OK/s.
        let rs = vec![
            result(PathKind::Echo, Mode::Closed, 100_000, 0),
            result(PathKind::Earn, Mode::Closed, 1000, 0),
            result(PathKind::EarnHot, Mode::Closed, 1000, 0),
            result(PathKind::RedeemHot, Mode::Closed, 1000, 0),
        ];
        let drained = crate::points::DrainCheck {
            start: 1000,
            successes: 1000,
            refused: 0,
            unknown: 0,
            final_available: 0,
            final_total: 0,
        };
        let mut p = points::Report {
            pgbench: vec![pg(300, 40.0), pg(1, 10.0)],
            drain: Some(drained.clone()),
            ..points::Report::default()
        };
        let text = points(&rs, &[], &p);
        let line = |start: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(start))
                .unwrap_or_else(|| panic!("no line {start:?} in\n{text}"))
                .to_string()
        };
        assert!(line("distinct members").contains("ratio 2.50"), "{text}");
        assert!(line("distinct members").contains("(meets)"), "{text}");
        assert!(line("one hot account").contains("ratio 10.00"), "{text}");
        assert!(line("redeem-hot:").contains("100.0/s"), "{text}");
        assert!(line("redeem-hot:").contains("(BELOW)"), "{text}");
        assert!(line("no overspend: yes").contains("OK 1000"), "{text}");
        p.pgbench = vec![pg(300, 60.0)];
        let text = points(&rs, &[], &p);
        assert!(text.contains("ratio 1.67  target >= 2.0 (BELOW)"), "{text}");
        p.drain = Some(crate::points::DrainCheck {
            final_available: 1,
            ..drained
        });
        assert!(points(&rs, &[], &p).contains("no overspend: NO"));
        let j: Value = serde_json::from_str(&json_object(
            &rs,
            32,
            8,
            None,
            &Err("x".into()),
            Sections {
                points: Some(&p),
                ..Sections::default()
            },
        ))
        .unwrap();
        assert_eq!(j["points"]["redeem_hot"]["no_overspend"], false);
        assert!((j["points"]["earn_vs_pgbench"].as_f64().unwrap() - 100.0 / 60.0).abs() < 1e-9);
    }

    fn reevaluated(seeded: u64, secs: u64, peak_mib: u64) -> tier::Reevaluated {
        tier::Reevaluated {
            seeded,
            seed_seconds: 12.5,
            ladder_version: 3,
            reevaluation_id: "r-1".into(),
            members_total: seeded as i64 + 300,
            members_done: seeded as i64 + 300,
            members_changed: 350_000,
            expected_changed: 350_000,
            elapsed: Duration::from_secs(secs),
            server_elapsed: Some(Duration::from_secs(secs - 1)),
            memory: Ok(memory::Report {
                pid: 9,
                peak_rss_kib: peak_mib * 1024,
                now: memory::Status {
                    rss_kib: 100 * 1024,
                    hwm_kib: 100 * 1024,
                },
            }),
        }
    }

    #[test]
    fn tier_figures_are_judged_against_their_targets() {
        let rs = vec![
            result(PathKind::Echo, Mode::Closed, 10_000, 0),
            result(PathKind::GetMember, Mode::Closed, 9_000, 0),
            result(PathKind::TierGet, Mode::Closed, 8_500, 0),
            result(PathKind::MemberCard, Mode::Closed, 7_000, 0),
            result(PathKind::ConsumeBenefit, Mode::Closed, 5_000, 20),
        ];
        let rows = vec![
            h2_row(PathKind::Echo, 1000.0),
            h2_row(PathKind::GetMember, 900.0),
            h2_row(PathKind::TierGet, 850.0),
            h2_row(PathKind::MemberCard, 790.0),
        ];
        let mut t = tier::Report {
            cards: Some(CardShare {
                answers: 200,
                points_from_card: 200,
                tier_from_card: 150,
            }),
            reevaluation: Some(Ok(reevaluated(1_000_000, 90, 300))),
            ..tier::Report::default()
        };
        let text = tier(&rs, &rows, &t);
        let line = |start: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(start))
                .unwrap_or_else(|| panic!("no line {start:?} in\n{text}"))
                .to_string()
        };
        let get = line("get-member / echo");
        assert!(get.contains("0.900") && !get.contains("target"), "{text}");
        let tg = line("tier-get / echo");
        assert!(
            tg.contains("0.850") && tg.contains("(meets, judged by h2load)"),
            "{text}"
        );
        let mc = line("member-card / echo");
        assert!(
            mc.contains("0.790") && mc.contains("0.700") && mc.contains("BELOW"),
            "{text}"
        );
        let cards = line("member-card answers");
        assert!(cards.contains("points from the card 100.0%"), "{text}");
        assert!(cards.contains("tier from the card 75.0%"), "{text}");
        assert!(line("consume-benefit").contains("500.0 OK/s"), "{text}");
        assert!(line("consume-benefit").contains("Unavailable=20"), "{text}");
        let re = line("re-evaluation after a ladder change");
        assert!(re.contains("1000300 members"), "{text}");
        assert!(re.contains("in 90.0 s, 89.0 s by its own clock"), "{text}");
        assert!(re.contains("11114 members/s"), "{text}");
        assert!(
            re.contains("peak memory of the tier service 300.0 MiB"),
            "{text}"
        );
        let verdict = line("target for 1,000,000 members");
        assert!(
            verdict.contains("< 120 s (meets) and < 500 MiB (meets)"),
            "{text}"
        );
        assert!(!verdict.contains("no verdict"), "{text}");

        t.reevaluation = Some(Ok(reevaluated(1_000_000, 130, 600)));
        let text = tier(&rs, &rows, &t);
        assert!(
            text.contains("< 120 s (BELOW) and < 500 MiB (BELOW)"),
            "{text}"
        );
        t.reevaluation = Some(Ok(reevaluated(1_000, 1, 50)));
        assert!(tier(&rs, &rows, &t).contains("no verdict on the target"));
        t.reevaluation = Some(Err("PublishLadder: FailedPrecondition: NOT_BUILT".into()));
        let text = tier(&rs, &rows, &t);
        assert!(
            text.contains("re-evaluation after a ladder change: FAILED (PublishLadder: FailedPrecondition: NOT_BUILT)"),
            "{text}"
        );
        let j: Value = serde_json::from_str(&json_object(
            &rs,
            64,
            8,
            None,
            &Err("x".into()),
            Sections {
                tier: Some(&t),
                ..Sections::default()
            },
        ))
        .unwrap();
        assert_eq!(j["tier"]["tier_get_vs_echo"]["tonic"], 0.85);
        assert_eq!(j["tier"]["member_card_sources"]["tier_from_card"], 150);
        assert!(
            j["tier"]["reevaluation"]["error"]
                .as_str()
                .unwrap()
                .contains("NOT_BUILT")
        );
        // Without tier runs the section is empty of ratios.
        let only_echo = vec![result(PathKind::Echo, Mode::Closed, 10, 0)];
        assert!(!tier(&only_echo, &[], &tier::Report::default()).contains("tier-get"));
    }

    #[test]
    fn card_share_reads_as_percentages() {
        let c = CardShare {
            answers: 4,
            points_from_card: 1,
            tier_from_card: 0,
        };
        let l = card_share_line("warmed", &c);
        assert!(l.contains("points from the card 25.0%"), "{l}");
        assert!(l.contains("tier from the card 0.0% (of 4 answers)"), "{l}");
        assert!(card_share_line("warmed", &CardShare::default()).contains("no answers"));
    }

    #[test]
    fn errors_are_listed() {
        let r = result(PathKind::RecordActivity, Mode::Closed, 10, 3);
        assert_eq!(r.requests(), 13);
        assert_eq!(r.errors(), 3);
        assert_eq!(errors_label(&r), "Unavailable=3");
    }
}
