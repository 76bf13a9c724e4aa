//! laurel-analytics-bench: the analytics service on a generated programme
//! (1,000,000 members and 10,000,000 purchases by default) beside DuckDB,
//! lifetimes and echo, as the analytics issue asks:
//!
//! - a full RFM recomputation (RecomputeRfm) against DuckDB's SQL over the
//!   same purchases: at least 2 times faster;
//! - a BG/NBD + Gamma-Gamma fit (FitClvModel) against `lifetimes`: at least
//!   10 times faster on CDNOW and 20 times on the million members;
//! - GetRecommendations under h2load: at least 0.5 of echo's rate;
//!
//! each timed from stored purchases to stored results, with the service's
//! peak memory. deploy/bench/analytics.sh starts the service, the Python
//! environment and this; run `laurel-analytics-bench --help` for the flags.

#[path = "../analytics/mod.rs"]
mod analytics;
#[allow(dead_code)] // laurel-bench's module, shared as is
#[path = "../h2load.rs"]
mod h2load;
#[allow(dead_code)] // laurel-bench's module, shared as is
#[path = "../memory.rs"]
mod memory;
#[allow(dead_code)] // laurel-bench's module, shared as is
#[path = "../scrape.rs"]
mod scrape;

use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::NaiveDate;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use analytics::args::{self, Args, Parsed};
use analytics::breakdown::{self, Parts};
use analytics::load::{self, Files, Plan};
use analytics::many::{self, ClientRun};
use analytics::peak::{self, StepMemory};
use analytics::population::{self, Shapes};
use analytics::python::{self, Python};
use analytics::recommend::{self, Recommendations};
use analytics::report::{self, Row};
use analytics::scorer::{self, Scorer};
use analytics::service::Service;

/// The second programme, CDNOW's customers.
const CDNOW_PROGRAM: &str = "cdnow";
/// RFM's active window in the settings: everyone generated is active.
const ACTIVE_DAYS: i32 = 3650;

#[tokio::main]
async fn main() -> ExitCode {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Help) => {
            print!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("laurel-analytics-bench: {e:#}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    match bench(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("laurel-analytics-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The 1-minute load average, as /proc/loadavg says.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| {
            let v: Vec<&str> = s.split_whitespace().take(3).collect();
            (v.len() == 3).then(|| v.join(" "))
        })
        .unwrap_or_else(|| "?".into())
}

/// The server's pid: given, or whatever listens on the address's port here.
fn server_pid(args: &Args) -> Option<u32> {
    args.server_pid.or_else(|| {
        let port: u16 = args
            .addr
            .rsplit(':')
            .next()?
            .trim_end_matches('/')
            .parse()
            .ok()?;
        memory::pid_listening_on(port).ok()
    })
}

/// One timed call of ours.
struct Timed<T> {
    value: T,
    wall: Duration,
    memory: Option<StepMemory>,
    load: String,
}

async fn timed<T>(pid: Option<u32>, step: impl Future<Output = Result<T>>) -> Result<Timed<T>> {
    let load = load_average();
    let (value, wall, memory) = peak::measure(pid, step).await;
    Ok(Timed {
        value: value?,
        wall,
        memory,
        load,
    })
}

fn memory_line(what: &str, m: Option<StepMemory>) -> String {
    match m {
        Some(m) => format!(
            "{what}: resident {} before, peak {}{}",
            report::mib(m.before_kib),
            report::mib(m.peak_kib()),
            if m.reset {
                ""
            } else {
                " (sampled every 10 ms: VmHWM could not be reset)"
            }
        ),
        None => format!("{what}: not measured (no server pid)"),
    }
}

fn python_memory_line(what: &str, v: &Value, key: &str) -> String {
    let at = |k: &str| {
        let path = if key.is_empty() {
            k.to_string()
        } else {
            format!("{key}/{k}")
        };
        python::number(v, &path).ok()
    };
    match (at("rss_before_kib"), at("peak_kib")) {
        (Some(before), Some(peak)) => format!(
            "{what}: resident {} before, peak {} (the Python process, data loaded)",
            report::mib(before as u64),
            report::mib(peak as u64)
        ),
        _ => format!("{what}: peak not measured"),
    }
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs.get(xs.len() / 2).copied().unwrap_or_default()
}

fn day_of(t: Option<&prost_types::Timestamp>) -> Option<NaiveDate> {
    let t = t?;
    Some(chrono::DateTime::from_timestamp(t.seconds, 0)?.date_naive())
}

async fn bench(args: &Args) -> Result<()> {
    let load_at_start = load_average();
    let service = Service::connect(&args.addr).await?;
    let pid = server_pid(args);
    let options = PgConnectOptions::from_str(&args.database_url)
        .context("--database-url")?
        .options([("search_path", args.schema.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .context("connect to Postgres")?;
    let already: i64 =
        sqlx::query_scalar("SELECT count(*) FROM (SELECT 1 FROM purchases LIMIT 1) p")
            .fetch_one(&pool)
            .await
            .context("the analytics schema (is --schema migrated by the service?)")?;
    if already > 0 {
        bail!(
            "schema {} already has purchases: give the benchmark a fresh one",
            args.schema
        );
    }
    service.put_settings(&args.program, "EUR").await?;
    service.put_settings(CDNOW_PROGRAM, "USD").await?;

    let (work, made_work) = match &args.work {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("laurel-analytics-bench-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    let result = run(args, &service, pid, &pool, &work).await;
    if made_work {
        let _ = std::fs::remove_dir_all(&work);
    }
    let mut out = result?;
    out.push_str(&format!(
        "\nload average (1, 5, 15 min): {load_at_start} at the start, {} at the end; 2 cores shared\n",
        load_average()
    ));
    print!("{out}");
    Ok(())
}

/// Loads, measures both sides and returns the report.
async fn run(
    args: &Args,
    service: &Service,
    pid: Option<u32>,
    pool: &sqlx::PgPool,
    work: &std::path::Path,
) -> Result<String> {
    let files = args.run_python.then(|| Files::in_dir(work));
    eprintln!("loading CDNOW into programme {CDNOW_PROGRAM} ...");
    let cdnow_members = load::cdnow(pool, CDNOW_PROGRAM, &args.cdnow).await?;
    eprintln!(
        "drawing {} members aiming at {} purchases (seed {}) ...",
        args.members, args.purchases, args.seed
    );
    let shapes = population::tune(args.seed, args.members, args.purchases)?;
    let plan = Plan {
        program: args.program.clone(),
        members: args.members,
        seed: args.seed,
        shapes,
        line_share: args.line_share,
    };
    let loaded = load::programme(pool, &plan, files.as_ref()).await?;
    eprintln!(
        "loaded {} members, {} purchases, {} lines, {} member days in {:.1} s (VACUUM ANALYZE {:.1} s)",
        loaded.members,
        loaded.orders,
        loaded.lines,
        loaded.member_days,
        loaded.load_seconds,
        loaded.vacuum_seconds
    );

    eprintln!("RecomputeRfm on {} members ...", loaded.members);
    let rfm = timed(pid, service.recompute_rfm(&args.program)).await?;
    eprintln!("  {:.3} s", rfm.wall.as_secs_f64());
    let our_segments = service.segment_counts(&args.program).await?;
    let as_of = day_of(rfm.value.as_of.as_ref()).context("the RFM run has no as_of")?;

    eprintln!(
        "FitClvModel on {} members, calibration end {} ...",
        loaded.members, loaded.last_day
    );
    let fit = timed(pid, service.fit_clv(&args.program, loaded.last_day)).await?;
    eprintln!("  {:.3} s", fit.wall.as_secs_f64());

    eprintln!(
        "FitClvModel on CDNOW ({cdnow_members} customers) x {} ...",
        args.cdnow_rounds
    );
    let mut cdnow_walls = Vec::new();
    let mut cdnow_model = None;
    let cdnow_load = load_average();
    for _ in 0..args.cdnow_rounds {
        let t = timed(
            None,
            service.fit_clv(CDNOW_PROGRAM, load::CDNOW_CALIBRATION_END),
        )
        .await?;
        cdnow_walls.push(t.wall);
        cdnow_model = Some(t.value);
    }
    let cdnow_model = cdnow_model.context("no CDNOW fit")?;
    let cdnow_wall = median(cdnow_walls.clone());

    let parts = if args.breakdown {
        eprintln!("timing the parts of ours ...");
        Some((
            breakdown::rfm(pool, &args.program, "EUR", as_of, ACTIVE_DAYS).await?,
            breakdown::clv(pool, &args.program, "EUR", loaded.last_day).await?,
        ))
    } else {
        None
    };

    let theirs = match (&files, args.run_python) {
        (Some(files), true) => Some(run_python(args, files, work, as_of, loaded.last_day).await?),
        _ => None,
    };

    let recommendations = if args.run_recommendations {
        Some(recommendations(args, service, pid, pool, work, &loaded).await?)
    } else {
        None
    };

    Ok(render(&Rendered {
        args,
        shapes: &shapes,
        loaded: &loaded,
        rfm: &rfm,
        our_segments: &our_segments,
        as_of,
        fit: &fit,
        cdnow_model: &cdnow_model,
        cdnow_wall,
        cdnow_walls: &cdnow_walls,
        cdnow_load: &cdnow_load,
        parts: parts.as_ref(),
        theirs: theirs.as_ref(),
        recommendations: recommendations.as_ref(),
    }))
}

/// The recommendation phase: the models' build and the h2load runs.
struct RecoPhase {
    built: Option<std::result::Result<scorer::Built, String>>,
    outcome: Recommendations,
    memory: Option<StepMemory>,
    /// Tonic-client runs over many members: echo, then recommendations.
    client: Option<(ClientRun, ClientRun, usize)>,
}

async fn recommendations(
    args: &Args,
    service: &Service,
    pid: Option<u32>,
    pool: &sqlx::PgPool,
    work: &std::path::Path,
    loaded: &load::Loaded,
) -> Result<RecoPhase> {
    let Some(member) = loaded.sample_member else {
        return Ok(RecoPhase {
            built: None,
            outcome: Recommendations::Pending(
                "no member with three orders with lines (raise --line-share)".into(),
            ),
            memory: None,
            client: None,
        });
    };
    let built = match &args.scorer_bin {
        Some(bin) => {
            eprintln!("building the recommendation models with a scoring replica ...");
            let scorer = Scorer::start(bin, &work.join("scorer.log"))?;
            let built = scorer
                .built(pool, &args.program, args.reco_wait)
                .await
                .map_err(|e| format!("{e:#}"));
            if let Err(e) = &built {
                return Ok(RecoPhase {
                    built: None,
                    outcome: Recommendations::Pending(e.clone()),
                    memory: None,
                    client: None,
                });
            }
            Some(built)
        }
        None => None,
    };
    eprintln!("GetRecommendations beside echo (member {member}) ...");
    let (outcome, _, memory) = peak::measure(
        pid,
        recommend::run(
            service,
            &args.addr,
            &args.program,
            member,
            &args.shape,
            args.reco_wait,
            args.metrics_url.as_deref(),
        ),
    )
    .await;
    let outcome = outcome?;
    let client = match &outcome {
        Recommendations::Measured(_) => {
            let mut services = Vec::new();
            for _ in 0..4 {
                services.push(Service::connect(&args.addr).await?);
            }
            let load = many::Load {
                concurrency: args.client_concurrency,
                duration: Duration::from_secs(args.client_seconds),
            };
            let members = &loaded.sample_members;
            eprintln!(
                "tonic client: echo, then GetRecommendations for distinct members of {} ({} s each) ...",
                members.len(),
                args.client_seconds
            );
            let mut first = services[0].clone();
            match many::await_memory(&mut first, &args.program, members, Duration::from_secs(300))
                .await?
            {
                Some(took) => eprintln!("  members in memory after {:.1} s", took.as_secs_f64()),
                None => eprintln!("  members not in memory after 300 s: answers from Postgres"),
            }
            let echo =
                many::drive(&services, &args.program, members, many::Path::Echo, load).await?;
            let recommend = many::drive(
                &services,
                &args.program,
                members,
                many::Path::Recommendations,
                load,
            )
            .await?;
            eprintln!(
                "  echo {:.0}/s, recommendations {:.0}/s, answered from {:?}",
                echo.rate(),
                recommend.rate(),
                recommend.from
            );
            Some((echo, recommend, members.len()))
        }
        Recommendations::Pending(_) => None,
    };
    Ok(RecoPhase {
        built,
        outcome,
        memory,
        client,
    })
}

/// DuckDB's and lifetimes' figures.
struct Theirs {
    duckdb: Value,
    lifetimes: Value,
    lifetimes_cdnow: Value,
    load: [String; 3],
}

async fn run_python(
    args: &Args,
    files: &Files,
    work: &std::path::Path,
    as_of: NaiveDate,
    end: NaiveDate,
) -> Result<Theirs> {
    let py = Python {
        python: args.python.clone(),
        scripts: args.scripts.clone(),
    };
    let l0 = load_average();
    eprintln!("DuckDB RFM as of {as_of} ...");
    let duckdb = py
        .duckdb_rfm(
            &files.purchases_csv,
            &work.join("rfm.duckdb"),
            as_of,
            ACTIVE_DAYS,
        )
        .await?;
    let _ = std::fs::remove_file(work.join("rfm.duckdb"));
    let l1 = load_average();
    eprintln!("lifetimes on the generated transactions ...");
    let lifetimes = py.lifetimes_fit(&files.transactions_csv, end).await?;
    let l2 = load_average();
    eprintln!("lifetimes on CDNOW x {} ...", args.cdnow_rounds);
    let lifetimes_cdnow = py
        .lifetimes_cdnow(&args.cdnow, load::CDNOW_CALIBRATION_END, args.cdnow_rounds)
        .await?;
    Ok(Theirs {
        duckdb,
        lifetimes,
        lifetimes_cdnow,
        load: [l0, l1, l2],
    })
}

/// Everything the report shows.
struct Rendered<'a> {
    args: &'a Args,
    shapes: &'a Shapes,
    loaded: &'a load::Loaded,
    rfm: &'a Timed<laurel_proto::analytics::v1::RfmRun>,
    our_segments: &'a [(i32, i64)],
    as_of: NaiveDate,
    fit: &'a Timed<laurel_proto::analytics::v1::ClvModel>,
    cdnow_model: &'a laurel_proto::analytics::v1::ClvModel,
    cdnow_wall: Duration,
    cdnow_walls: &'a [Duration],
    cdnow_load: &'a str,
    parts: Option<&'a (Parts, Parts)>,
    theirs: Option<&'a Theirs>,
    recommendations: Option<&'a RecoPhase>,
}

fn bg_line(m: &laurel_proto::analytics::v1::ClvModel) -> String {
    let bg = m.bg_nbd.unwrap_or_default();
    let gg = m.gamma_gamma.as_ref().map_or("no Gamma-Gamma".into(), |g| {
        format!("p={:.4} q={:.4} gamma={:.4}", g.p, g.q, g.gamma)
    });
    format!(
        "r={:.4} alpha={:.4} a={:.4} b={:.4}; {gg} ({} customers, {} unique (x, t_x, T))",
        bg.r, bg.alpha, bg.a, bg.b, m.customers, m.likelihood_terms
    )
}

fn lifetimes_line(v: &Value) -> String {
    let n = |k: &str| python::number(v, k).unwrap_or(f64::NAN);
    format!(
        "r={:.4} alpha={:.4} a={:.4} b={:.4}; p={:.4} q={:.4} gamma={:.4} ({} customers)",
        n("bg/r"),
        n("bg/alpha"),
        n("bg/a"),
        n("bg/b"),
        n("gg/p"),
        n("gg/q"),
        n("gg/v"),
        n("customers")
    )
}

fn render(r: &Rendered<'_>) -> String {
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let ours_rfm = r.rfm.wall.as_secs_f64();
    let ours_fit = r.fit.wall.as_secs_f64();
    let ours_cdnow = r.cdnow_wall.as_secs_f64();
    let members = r.loaded.members;
    let theirs_s = |v: &Value, k: &str| python::number(v, k).ok();
    let duck = r.theirs.map(|t| &t.duckdb);
    let duck_purchases = duck.and_then(|d| theirs_s(d, "from_purchases/seconds"));
    let duck_members = duck.and_then(|d| theirs_s(d, "from_members/seconds"));
    rows.push(Row {
        figure: format!("RFM, {members} members: RecomputeRfm / DuckDB SQL over the purchases"),
        ours: report::seconds(ours_rfm),
        theirs: duck_purchases.map_or("-".into(), report::seconds),
        ratio: duck_purchases.map(|d| d / ours_rfm),
        target: Some(2.0),
    });
    rows.push(Row {
        figure: "  the same, DuckDB from per-member aggregates (as the service reads)".into(),
        ours: report::seconds(ours_rfm),
        theirs: duck_members.map_or("-".into(), report::seconds),
        ratio: duck_members.map(|d| d / ours_rfm),
        target: None,
    });
    let lt = r.theirs.map(|t| &t.lifetimes);
    let lt_s = lt.and_then(|v| theirs_s(v, "seconds"));
    rows.push(Row {
        figure: format!("BG/NBD + Gamma-Gamma, {members} members: FitClvModel / lifetimes"),
        ours: report::seconds(ours_fit),
        theirs: lt_s.map_or("-".into(), report::seconds),
        ratio: lt_s.map(|t| t / ours_fit),
        target: Some(20.0),
    });
    let ltc = r.theirs.map(|t| &t.lifetimes_cdnow);
    let ltc_s = ltc.and_then(|v| theirs_s(v, "median_seconds"));
    rows.push(Row {
        figure: format!(
            "BG/NBD + Gamma-Gamma, CDNOW (median of {}): FitClvModel / lifetimes",
            r.args.cdnow_rounds
        ),
        ours: report::seconds(ours_cdnow),
        theirs: ltc_s.map_or("-".into(), report::seconds),
        ratio: ltc_s.map(|t| t / ours_cdnow),
        target: Some(10.0),
    });
    match r.recommendations.map(|p| &p.outcome) {
        Some(Recommendations::Measured(m)) => rows.push(Row {
            figure: "GetRecommendations / echo, h2load calls/s (median)".into(),
            ours: format!("{:.0}/s", m.recommend.rps),
            theirs: format!("{:.0}/s", m.echo.rps),
            ratio: Some(m.ratio()),
            target: Some(0.5),
        }),
        Some(Recommendations::Pending(why)) => {
            let why = why.clone();
            rows.push(Row {
                figure: "GetRecommendations / echo, h2load calls/s".into(),
                ours: "pending".into(),
                theirs: "-".into(),
                ratio: None,
                target: Some(0.5),
            });
            notes.push(format!("recommendations pending: {why}"));
        }
        None => {}
    }
    if let Some((echo, recommend, members)) = r.recommendations.and_then(|p| p.client.as_ref()) {
        rows.push(Row {
            figure: format!(
                "  the same, tonic client, distinct members of {members} (answers from: {})",
                recommend
                    .from
                    .iter()
                    .map(|(source, n)| format!("{source} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ours: format!("{:.0}/s", recommend.rate()),
            theirs: format!("{:.0}/s", echo.rate()),
            ratio: Some(recommend.rate() / echo.rate()),
            target: Some(0.5),
        });
    }

    let mut out = String::new();
    let s = r.shapes;
    let l = r.loaded;
    out.push_str(&format!(
        "\nAnalytics benchmark: {} members, {} purchases ({:.2} per member), {} order lines \
         (share {}), {} member days, {} to {}\n  drawn from BG/NBD r={} alpha={:.4} a={} b={} \
         (weeks) and Gamma-Gamma p={} q={} gamma={} (euros), seed {}\n  loaded by COPY in \
         {:.1} s, VACUUM ANALYZE {:.1} s (untimed)\n\n",
        l.members,
        l.orders,
        l.orders as f64 / l.members as f64,
        l.lines,
        r.args.line_share,
        l.member_days,
        population::FIRST_DAY,
        l.last_day,
        s.r,
        s.alpha,
        s.a,
        s.b,
        s.p,
        s.q,
        s.gamma,
        r.args.seed,
        l.load_seconds,
        l.vacuum_seconds,
    ));
    out.push_str(&report::table(&rows));
    out.push('\n');
    out.push_str("Ours (wall time of the gRPC call; the service's own duration_ms beside):\n");
    out.push_str(&format!(
        "  RecomputeRfm: {} wall, duration_ms {}, {} members scored as of {}; load {}\n",
        report::seconds(ours_rfm),
        r.rfm.value.duration_ms,
        r.rfm.value.members,
        r.as_of,
        r.rfm.load
    ));
    out.push_str(&format!(
        "  FitClvModel {}: {} wall, duration_ms {}; load {}\n    {}\n",
        members,
        report::seconds(ours_fit),
        r.fit.value.duration_ms,
        r.fit.load,
        bg_line(&r.fit.value)
    ));
    out.push_str(&format!(
        "  FitClvModel CDNOW: every round {:?} ms, duration_ms {}; load {}\n    {}\n    published: \
         r=0.243 alpha=4.414 a=0.793 b=2.426; p=6.25 q=3.74 gamma=15.44\n",
        r.cdnow_walls
            .iter()
            .map(|d| (d.as_secs_f64() * 1e4).round() / 10.0)
            .collect::<Vec<_>>(),
        r.cdnow_model.duration_ms,
        r.cdnow_load,
        bg_line(r.cdnow_model)
    ));
    if let Some((rfm_parts, clv_parts)) = r.parts {
        out.push_str(
            "\nWhere ours spends its time (the service's reads run from the bench, the models \
             alone; approximate):\n",
        );
        for (name, parts) in [("RecomputeRfm", rfm_parts), ("FitClvModel", clv_parts)] {
            let sum: f64 = parts.parts.iter().map(|p| p.1).sum();
            out.push_str(&format!(
                "  {name}: the parts add up to {}\n",
                report::seconds(sum)
            ));
            for (what, s) in &parts.parts {
                out.push_str(&format!("    {:<52} {}\n", what, report::seconds(*s)));
            }
            for n in &parts.notes {
                out.push_str(&format!("    ({n})\n"));
            }
        }
    }
    out.push_str("\nPeak memory:\n");
    out.push_str(&format!(
        "  {}\n",
        memory_line("analytics service, RecomputeRfm", r.rfm.memory)
    ));
    out.push_str(&format!(
        "  {}\n",
        memory_line("analytics service, FitClvModel", r.fit.memory)
    ));
    if let Some(t) = r.theirs {
        out.push_str(&format!(
            "  {}\n",
            python_memory_line(
                "DuckDB, RFM over the purchases",
                &t.duckdb,
                "from_purchases"
            )
        ));
        out.push_str(&format!(
            "  {}\n",
            python_memory_line("lifetimes, summary and fits", &t.lifetimes, "")
        ));
        out.push_str("\nTheirs:\n");
        let d = &t.duckdb;
        out.push_str(&format!(
            "  DuckDB {} ({} threads): {} purchases loaded in {:.1} s (untimed); {} members scored; load {}\n",
            d.get("duckdb_version").and_then(Value::as_str).unwrap_or("?"),
            python::number(d, "threads").unwrap_or(f64::NAN),
            python::number(d, "purchases").unwrap_or(f64::NAN),
            python::number(d, "load_seconds").unwrap_or(f64::NAN),
            python::number(d, "members").unwrap_or(f64::NAN),
            t.load[0]
        ));
        let theirs_segments: Vec<(i32, i64)> = d
            .get("segments")
            .and_then(Value::as_object)
            .map(|o| {
                let mut v: Vec<(i32, i64)> = o
                    .iter()
                    .filter_map(|(k, n)| Some((k.parse().ok()?, n.as_i64()?)))
                    .collect();
                v.sort_unstable();
                v
            })
            .unwrap_or_default();
        let ours_nonzero: Vec<(i32, i64)> =
            r.our_segments.iter().copied().filter(|s| s.1 > 0).collect();
        out.push_str(&format!(
            "  RFM segment counts {} DuckDB's: ours {:?}{}\n",
            if ours_nonzero == theirs_segments {
                "equal"
            } else {
                "DIFFER from"
            },
            ours_nonzero,
            if ours_nonzero == theirs_segments {
                String::new()
            } else {
                format!(", DuckDB {theirs_segments:?}")
            }
        ));
        let lt = &t.lifetimes;
        out.push_str(&format!(
            "  lifetimes {} (pandas {}), {}: summary {:.2} s, BG/NBD {:.2} s, Gamma-Gamma {:.2} s; load {}\n    {}\n",
            lt.get("lifetimes_version").and_then(Value::as_str).unwrap_or("?"),
            lt.get("pandas_version").and_then(Value::as_str).unwrap_or("?"),
            members,
            python::number(lt, "summary_seconds").unwrap_or(f64::NAN),
            python::number(lt, "bg_seconds").unwrap_or(f64::NAN),
            python::number(lt, "gg_seconds").unwrap_or(f64::NAN),
            t.load[1],
            lifetimes_line(lt)
        ));
        let lc = &t.lifetimes_cdnow;
        out.push_str(&format!(
            "  lifetimes CDNOW: every round {:?} ms; load {}\n    {}\n",
            lc.get("rounds")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_f64)
                        .map(|x| (x * 1e4).round() / 10.0)
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
            t.load[2],
            lifetimes_line(lc)
        ));
    }
    if let Some(phase) = r.recommendations {
        if let Some(Ok(built)) = &phase.built {
            out.push_str(&format!(
                "\nRecommendation models stored {:.1} s after the scoring replica started \
                 (it scored every member's value first):\n",
                built.seconds
            ));
            for line in &built.lines {
                out.push_str(&format!("  {line}\n"));
            }
        }
        out.push_str(&format!(
            "  {}\n",
            memory_line(
                "analytics service, serving recommendations under h2load",
                phase.memory
            )
        ));
    }
    if let Some(Recommendations::Measured(m)) = r.recommendations.map(|p| &p.outcome) {
        out.push_str(&format!(
            "\nRecommendations: {} items{} for the member after {:.0} s of waiting for the model; \
             h2load -n {} -c {} -m {}: echo rounds {:?}/s, GetRecommendations rounds {:?}/s; \
             mean latency {:.2} ms vs echo {:.2} ms; HTTP failures {} vs {}{}\n",
            m.items,
            if m.popular_fallback {
                " (POPULAR FALLBACK: the member's history was not used)"
            } else {
                ""
            },
            m.waited_seconds,
            r.args.shape.calls,
            r.args.shape.connections,
            r.args.shape.streams,
            m.echo_rounds.iter().map(|x| x.round()).collect::<Vec<_>>(),
            m.recommend_rounds
                .iter()
                .map(|x| x.round())
                .collect::<Vec<_>>(),
            m.recommend.mean_ms,
            m.echo.mean_ms,
            m.recommend.http_failures(),
            m.echo.http_failures(),
            m.codes.as_ref().map_or(String::new(), |c| format!(
                "; gRPC codes counted by the server: {c:?}"
            )),
        ));
    }
    if let Some((echo, recommend, members)) = r.recommendations.and_then(|p| p.client.as_ref()) {
        out.push_str(&format!(
            "Tonic client, {} workers over 4 connections, {} s each: GetRecommendations for distinct \
             members of {members}: {} OK ({:.0}/s), p50 {:.2} ms, p99 {:.2} ms, errors {:?}, \
             answered from {:?}; \
             echo: {} OK ({:.0}/s), p50 {:.2} ms, p99 {:.2} ms, errors {:?}\n",
            r.args.client_concurrency,
            r.args.client_seconds,
            recommend.ok,
            recommend.rate(),
            recommend.p50_us as f64 / 1000.0,
            recommend.p99_us as f64 / 1000.0,
            recommend.errors,
            recommend.from,
            echo.ok,
            echo.rate(),
            echo.p50_us as f64 / 1000.0,
            echo.p99_us as f64 / 1000.0,
            echo.errors,
        ));
    }
    for n in notes {
        out.push_str(&format!("\n{n}\n"));
    }
    out
}
