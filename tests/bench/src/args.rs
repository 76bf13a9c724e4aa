//! Command-line flags, parsed by hand (there are only a few).

use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::h2load;
use crate::paths::PathKind;

pub const USAGE: &str = "\
laurel-bench: load benchmark for Laurel gRPC services, reported beside EchoService

USAGE:
  laurel-bench [FLAGS]

FLAGS:
  --addr URL           server address              [default: http://127.0.0.1:50051]
  --duration SECS      measured seconds per path   [default: 10]
  --warmup SECS        unmeasured warm-up per path [default: 1]
  --concurrency N      concurrent workers          [default: 64]
  --connections N      HTTP/2 connections (workers round-robin over them) [default: 8]
  --paths LIST         comma-separated: echo,get-member,lookup-member,record-activity,
                       earn,earn-hot,redeem,redeem-hot,earn-replay,purchase-visible,
                       tier-get,member-card,consume-benefit
                       [default: the member paths, the points paths with
                       --points-addr and the tier paths with --tier-addr;
                       echo is always run first]
  --rate RPS           target total rate, paced across workers (open-loop-ish)
  --half-rate          per path: measure max rps, then rerun at 50% of it
  --members N          members to seed for the member paths [default: 300]
  --program ID         x-laurel-program metadata   [default: default]
  --api-key KEY        x-api-key metadata          [env: LAUREL_API_KEY]
  --timeout SECS       per-call deadline           [default: 10]
  --json               print one JSON line with the results at the end

  Server-bound figures (all optional; see deploy/bench/run-all.sh):
  --h2load             also drive echo, get-member, lookup-member (and earn-replay,
                       tier-get, member-card when they run) with h2load
                       (one seeded member per path; grpc-status checked first)
  --h2load-n N         calls per h2load run           [default: 100000]
  --h2load-c N         h2load connections             [default: 50]
  --h2load-m N         h2load streams per connection  [default: 10]
  --h2load-t N         h2load threads                 [default: 1]
  --h2load-warmup N    unmeasured calls before each path's first run [default: 10000]
  --h2load-rounds N    measured runs per path, interleaved; the median is reported [default: 3]
  --bare-addr URL      a laurel-bare-echo server: its echo is measured too
                       (tonic client, and h2load with --h2load) and Laurel's
                       echo is reported as a ratio of it
  --metrics-url URL    the server's Prometheus endpoint (http://host:port/metrics):
                       gRPC codes of the h2load runs are read from it
  --server-pid PID     server process whose memory (VmRSS, VmHWM) is sampled
                       under load [default: whatever listens on --addr's port here]
  --replica-addr URL   a second replica of the member service (same Postgres and
                       Redis): measures how long it serves a card after a write on
                       --addr
  --staleness-writes N writes for the staleness measurement [default: 200]

  Points service (see deploy/bench/README.md):
  --points-addr URL    the points service; its members are created at --addr
                       (the member service it asks)
  --points-metrics-url URL  its Prometheus endpoint: group commit batch sizes per
                       path, and the gRPC codes of h2load's earn-replay
  --hot-points K       points the redeem-hot member starts with  [default: 20000]
  --visible-samples N  purchases timed by purchase-visible        [default: 200]
  --pgbench-url URL    Postgres for pgbench's run of the Earn statements
                       (deploy/bench/pgbench/earn.sql) at --concurrency
  --pgbench-schema S   schema there with the points tables (laurel-points migrate)

  Tier service (see deploy/bench/README.md):
  --tier-addr URL      the tier service: tier-get and consume-benefit call it (a
                       bench ladder is published unless one is in force, and the
                       seeded members must reach it through MemberCreated)
  --tier-metrics-url URL  its Prometheus endpoint: gRPC codes of h2load's tier-get
  --tier-pid PID       tier process whose memory is sampled during --reevaluate
                       [default: whatever listens on --tier-addr's port here]
  --reevaluate N       after the load paths: seed N members straight into the tier
                       service's tables, publish a new ladder and time the
                       re-evaluation of every member (needs --tier-addr,
                       --tier-database-url, --tier-schema; run-all uses 1000000)
  --tier-database-url URL  Postgres of the tier service (for --reevaluate's seeding)
  --tier-schema S      its schema there (LAUREL_DB_SCHEMA of the tier service)
  -h, --help           this text
";

/// Everything the benchmark needs to know.
#[derive(Debug, Clone)]
pub struct Args {
    pub addr: String,
    pub duration: Duration,
    pub warmup: Duration,
    pub concurrency: usize,
    pub connections: usize,
    /// Always starts with echo, no duplicates.
    pub paths: Vec<PathKind>,
    pub rate: Option<f64>,
    pub half_rate: bool,
    pub members: usize,
    pub program: String,
    pub api_key: Option<String>,
    pub timeout: Duration,
    pub json: bool,
    /// h2load's shape, when `--h2load` was given.
    pub h2load: Option<h2load::Shape>,
    pub bare_addr: Option<String>,
    pub metrics_url: Option<String>,
    pub server_pid: Option<u32>,
    pub replica_addr: Option<String>,
    pub staleness_writes: usize,
    pub points_addr: Option<String>,
    pub points_metrics_url: Option<String>,
    pub hot_points: i64,
    pub visible_samples: usize,
    /// pgbench's database URL and schema, when both were given.
    pub pgbench: Option<(String, String)>,
    pub tier_addr: Option<String>,
    pub tier_metrics_url: Option<String>,
    pub tier_pid: Option<u32>,
    /// Members to seed and re-evaluate, with `--reevaluate`.
    pub reevaluate: Option<u64>,
    /// The tier service's database URL and schema, when both were given.
    pub tier_database: Option<(String, String)>,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            addr: "http://127.0.0.1:50051".into(),
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            concurrency: 64,
            connections: 8,
            paths: PathKind::ALL.to_vec(),
            rate: None,
            half_rate: false,
            members: 300,
            program: "default".into(),
            api_key: None,
            timeout: Duration::from_secs(10),
            json: false,
            h2load: None,
            bare_addr: None,
            metrics_url: None,
            server_pid: None,
            replica_addr: None,
            staleness_writes: 200,
            points_addr: None,
            points_metrics_url: None,
            hot_points: 20_000,
            visible_samples: 200,
            pgbench: None,
            tier_addr: None,
            tier_metrics_url: None,
            tier_pid: None,
            reevaluate: None,
            tier_database: None,
        }
    }
}

/// Most points `--hot-points` may give (the service's limit per Earn).
const MAX_HOT_POINTS: i64 = 1_000_000_000_000;
/// Most members `--reevaluate` may seed.
const MAX_REEVALUATE: u64 = 10_000_000;

/// What the command line asked for.
pub enum Parsed {
    Run(Box<Args>),
    Help,
}

/// Parses `argv` without the program name. `--flag value` and `--flag=value`
/// both work.
pub fn parse(argv: impl IntoIterator<Item = String>) -> Result<Parsed> {
    let mut args = Args {
        api_key: std::env::var("LAUREL_API_KEY")
            .ok()
            .filter(|k| !k.is_empty()),
        ..Args::default()
    };
    let mut use_h2load = false;
    let mut shape = h2load::Shape::default();
    let mut paths_given = false;
    let (mut pgbench_url, mut pgbench_schema) = (None, None);
    let (mut tier_db_url, mut tier_schema) = (None, None);
    let mut it = argv.into_iter();
    while let Some(raw) = it.next() {
        let (flag, inline) = match raw.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (raw.clone(), None),
        };
        let mut value = || -> Result<String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it.next().with_context(|| format!("{flag} needs a value")),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--addr" => args.addr = value()?,
            "--duration" => args.duration = secs(&flag, &value()?)?,
            "--warmup" => args.warmup = secs(&flag, &value()?)?,
            "--concurrency" => args.concurrency = positive(&flag, &value()?)?,
            "--connections" => args.connections = positive(&flag, &value()?)?,
            "--paths" => {
                args.paths = paths(&value()?)?;
                paths_given = true;
            }
            "--rate" => {
                let v = value()?;
                let rate: f64 = v.parse().with_context(|| format!("--rate {v}"))?;
                if !(rate.is_finite() && rate > 0.0) {
                    bail!("--rate must be a positive number, got {v}");
                }
                args.rate = Some(rate);
            }
            "--half-rate" => args.half_rate = true,
            "--members" => args.members = positive(&flag, &value()?)?,
            "--program" => args.program = value()?,
            "--api-key" => args.api_key = Some(value()?).filter(|k| !k.is_empty()),
            "--timeout" => args.timeout = secs(&flag, &value()?)?,
            "--json" => args.json = true,
            "--h2load" => use_h2load = true,
            "--h2load-n" => shape.calls = positive(&flag, &value()?)? as u64,
            "--h2load-c" => shape.connections = small(&flag, &value()?)?,
            "--h2load-m" => shape.streams = small(&flag, &value()?)?,
            "--h2load-t" => shape.threads = small(&flag, &value()?)?,
            "--h2load-rounds" => shape.rounds = small(&flag, &value()?)?,
            "--h2load-warmup" => {
                let v = value()?;
                shape.warmup_calls = v.parse().with_context(|| format!("{flag} {v}"))?;
            }
            "--bare-addr" => args.bare_addr = Some(value()?),
            "--metrics-url" => args.metrics_url = Some(value()?),
            "--server-pid" => args.server_pid = Some(small(&flag, &value()?)?),
            "--replica-addr" => args.replica_addr = Some(value()?),
            "--staleness-writes" => args.staleness_writes = positive(&flag, &value()?)?,
            "--points-addr" => args.points_addr = Some(value()?),
            "--points-metrics-url" => args.points_metrics_url = Some(value()?),
            "--hot-points" => {
                let v = value()?;
                match v.parse::<i64>() {
                    Ok(n) if (1..=MAX_HOT_POINTS).contains(&n) => args.hot_points = n,
                    _ => bail!("--hot-points must be 1 to {MAX_HOT_POINTS}, got {v:?}"),
                }
            }
            "--visible-samples" => args.visible_samples = positive(&flag, &value()?)?,
            "--pgbench-url" => pgbench_url = Some(value()?),
            "--pgbench-schema" => pgbench_schema = Some(schema_name(&flag, value()?)?),
            "--tier-addr" => args.tier_addr = Some(value()?),
            "--tier-metrics-url" => args.tier_metrics_url = Some(value()?),
            "--tier-pid" => args.tier_pid = Some(small(&flag, &value()?)?),
            "--reevaluate" => {
                let v = value()?;
                match v.parse::<u64>() {
                    Ok(n) if (1..=MAX_REEVALUATE).contains(&n) => args.reevaluate = Some(n),
                    _ => bail!("--reevaluate must be 1 to {MAX_REEVALUATE} members, got {v:?}"),
                }
            }
            "--tier-database-url" => tier_db_url = Some(value()?),
            "--tier-schema" => tier_schema = Some(schema_name(&flag, value()?)?),
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if args.rate.is_some() && args.half_rate {
        bail!("--rate and --half-rate exclude each other");
    }
    if args.duration.is_zero() {
        bail!("--duration must be above zero");
    }
    if args.members > 10_000 {
        bail!("--members is at most 10000");
    }
    if args.points_addr.is_some() && !paths_given {
        // The points paths run before RecordActivity: its burst of purchases
        // is earned afterwards by the points consumer, which would share the
        // machine with them (each path is measured on a quiet system).
        let at = args
            .paths
            .iter()
            .position(|p| *p == PathKind::RecordActivity)
            .unwrap_or(args.paths.len());
        args.paths.splice(at..at, PathKind::POINTS);
    }
    if args.tier_addr.is_some() && !paths_given {
        // After the points paths, before RecordActivity (same reason).
        let at = args
            .paths
            .iter()
            .position(|p| *p == PathKind::RecordActivity)
            .unwrap_or(args.paths.len());
        args.paths.splice(at..at, PathKind::TIER);
    }
    if args.points_addr.is_none()
        && let Some(p) = args.paths.iter().find(|p| p.is_points())
    {
        bail!("path {} needs --points-addr", p.name());
    }
    if args.tier_addr.is_none()
        && let Some(p) = args.paths.iter().find(|p| p.needs_tier_addr())
    {
        bail!("path {} needs --tier-addr", p.name());
    }
    args.tier_database = match (tier_db_url, tier_schema) {
        (Some(url), Some(schema)) => Some((url, schema)),
        (None, None) => None,
        _ => bail!("--tier-database-url and --tier-schema go together"),
    };
    if args.reevaluate.is_some() && (args.tier_addr.is_none() || args.tier_database.is_none()) {
        bail!("--reevaluate needs --tier-addr, --tier-database-url and --tier-schema");
    }
    args.pgbench = match (pgbench_url, pgbench_schema) {
        (Some(url), Some(schema)) => Some((url, schema)),
        (None, None) => None,
        _ => bail!("--pgbench-url and --pgbench-schema go together"),
    };
    if use_h2load {
        if shape.threads > shape.connections {
            bail!("--h2load-t must not exceed --h2load-c");
        }
        args.h2load = Some(shape);
    }
    Ok(Parsed::Run(Box::new(args)))
}

/// A Postgres schema name as the services make them.
fn schema_name(flag: &str, v: String) -> Result<String> {
    if v.is_empty()
        || !v
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        bail!("{flag}: lower case letters, digits and underscores, got {v:?}");
    }
    Ok(v)
}

fn secs(flag: &str, v: &str) -> Result<Duration> {
    let s: f64 = v.parse().with_context(|| format!("{flag} {v}"))?;
    Duration::try_from_secs_f64(s).with_context(|| format!("{flag} {v}: not a duration"))
}

fn positive(flag: &str, v: &str) -> Result<usize> {
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => bail!("{flag} must be a positive integer, got {v:?}"),
    }
}

fn small(flag: &str, v: &str) -> Result<u32> {
    match v.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => bail!("{flag} must be a positive integer, got {v:?}"),
    }
}

/// Echo first, then the listed paths in order, without duplicates.
fn paths(list: &str) -> Result<Vec<PathKind>> {
    let mut out = vec![PathKind::Echo];
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let kind = PathKind::from_name(name).with_context(|| {
            let known: Vec<_> = PathKind::ALL
                .iter()
                .chain(&PathKind::POINTS)
                .chain(&PathKind::TIER)
                .map(|p| p.name())
                .collect();
            format!("unknown path {name:?}; known: {}", known.join(","))
        })?;
        if !out.contains(&kind) {
            out.push(kind);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(argv: &[&str]) -> Result<Args> {
        match parse(argv.iter().map(|s| s.to_string()))? {
            Parsed::Run(a) => Ok(*a),
            Parsed::Help => bail!("help"),
        }
    }

    #[test]
    fn echo_always_first() {
        let a = run(&["--paths", "get-member,echo,get-member"]).unwrap();
        assert_eq!(a.paths, vec![PathKind::Echo, PathKind::GetMember]);
    }

    #[test]
    fn inline_values_and_defaults() {
        let a = run(&["--duration=2.5", "--concurrency", "4", "--json"]).unwrap();
        assert_eq!(a.duration, Duration::from_millis(2500));
        assert_eq!(a.concurrency, 4);
        assert_eq!(a.connections, 8);
        assert!(a.json);
        assert_eq!(a.paths.len(), 4);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(run(&["--paths", "nope"]).is_err());
        assert!(run(&["--concurrency", "0"]).is_err());
        assert!(run(&["--rate", "10", "--half-rate"]).is_err());
        assert!(run(&["--bogus"]).is_err());
        assert!(run(&["--addr"]).is_err());
        assert!(run(&["--h2load", "--h2load-c", "2", "--h2load-t", "3"]).is_err());
        assert!(run(&["--server-pid", "x"]).is_err());
    }

    #[test]
    fn h2load_defaults_to_the_issue_setting() {
        let a = run(&[
            "--h2load",
            "--bare-addr",
            "http://b:1",
            "--replica-addr=http://r:2",
        ])
        .unwrap();
        let shape = a.h2load.unwrap();
        assert_eq!(
            (shape.calls, shape.connections, shape.streams, shape.threads),
            (100_000, 50, 10, 1)
        );
        assert_eq!(a.bare_addr.as_deref(), Some("http://b:1"));
        assert_eq!(a.replica_addr.as_deref(), Some("http://r:2"));
        assert_eq!(a.staleness_writes, 200);
        assert!(run(&[]).unwrap().h2load.is_none());
        let a = run(&["--h2load", "--h2load-n", "500", "--h2load-t", "2"]).unwrap();
        assert_eq!(a.h2load.unwrap().calls, 500);
        assert_eq!(a.h2load.unwrap().threads, 2);
    }

    #[test]
    fn points_paths_come_with_the_points_address() {
        let a = run(&["--points-addr", "http://p:1"]).unwrap();
        assert_eq!(a.paths.len(), 4 + PathKind::POINTS.len());
        assert!(a.paths.contains(&PathKind::RedeemHot));
        assert_eq!(a.hot_points, 20_000);
        let a = run(&["--points-addr=http://p:1", "--paths", "earn,redeem-hot"]).unwrap();
        assert_eq!(
            a.paths,
            vec![PathKind::Echo, PathKind::Earn, PathKind::RedeemHot]
        );
        assert!(run(&["--paths", "earn"]).is_err());
        assert!(run(&[]).unwrap().paths.iter().all(|p| !p.is_points()));
    }

    #[test]
    fn tier_paths_come_with_the_tier_address() {
        let a = run(&["--points-addr", "http://p:1", "--tier-addr", "http://t:3"]).unwrap();
        let names: Vec<_> = a.paths.iter().map(|p| p.name()).collect();
        assert_eq!(
            names,
            vec![
                "echo",
                "get-member",
                "lookup-member",
                "earn",
                "earn-hot",
                "redeem",
                "redeem-hot",
                "earn-replay",
                "purchase-visible",
                "tier-get",
                "member-card",
                "consume-benefit",
                "record-activity"
            ]
        );
        assert_eq!(a.tier_addr.as_deref(), Some("http://t:3"));
        assert!(a.reevaluate.is_none());
        // Without --tier-addr: no tier path by default, and only
        // member-card (the member service's) may be asked for.
        assert!(run(&[]).unwrap().paths.iter().all(|p| !p.is_tier()));
        let a = run(&["--paths", "member-card"]).unwrap();
        assert_eq!(a.paths, vec![PathKind::Echo, PathKind::MemberCard]);
        let e = run(&["--paths", "tier-get"]).unwrap_err().to_string();
        assert!(e.contains("tier-get needs --tier-addr"), "{e}");
        assert!(run(&["--paths", "consume-benefit"]).is_err());
        let a = run(&["--tier-addr=http://t:3", "--paths", "consume-benefit"]).unwrap();
        assert_eq!(a.paths, vec![PathKind::Echo, PathKind::ConsumeBenefit]);
    }

    #[test]
    fn reevaluate_needs_the_tier_service_and_its_database() {
        let full = [
            "--tier-addr",
            "http://t:3",
            "--tier-database-url",
            "postgres://x/y",
            "--tier-schema",
            "bench_1_tier",
            "--reevaluate",
            "1000000",
        ];
        let a = run(&full).unwrap();
        assert_eq!(a.reevaluate, Some(1_000_000));
        assert_eq!(
            a.tier_database,
            Some(("postgres://x/y".to_string(), "bench_1_tier".to_string()))
        );
        // Any one of the three missing is refused.
        for skip in [0, 2, 4] {
            let argv: Vec<&str> = full
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip && *i != skip + 1)
                .map(|(_, s)| *s)
                .collect();
            assert!(run(&argv).is_err(), "{argv:?}");
        }
        assert!(run(&["--reevaluate"]).is_err());
        assert!(run(&["--reevaluate", "0"]).is_err());
        assert!(run(&["--reevaluate", "lots"]).is_err());
        assert!(run(&["--tier-schema", "Bad-Name"]).is_err());
        let a = run(&["--tier-addr", "http://t:3", "--tier-pid", "42"]).unwrap();
        assert_eq!(a.tier_pid, Some(42));
    }

    #[test]
    fn pgbench_needs_url_and_schema() {
        let a = run(&["--pgbench-url", "postgres://x/y", "--pgbench-schema", "s_1"]).unwrap();
        assert_eq!(
            a.pgbench,
            Some(("postgres://x/y".to_string(), "s_1".to_string()))
        );
        assert!(run(&["--pgbench-url", "postgres://x/y"]).is_err());
        assert!(run(&["--pgbench-url", "u", "--pgbench-schema", "Bad-Name"]).is_err());
        assert!(run(&["--hot-points", "0"]).is_err());
    }
}
