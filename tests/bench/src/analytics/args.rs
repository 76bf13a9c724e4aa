//! laurel-analytics-bench's flags, parsed by hand like laurel-bench's.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::h2load;

pub const USAGE: &str = "\
laurel-analytics-bench: the analytics service's RFM run, CLV fits and
recommendations on a generated programme, beside DuckDB, lifetimes and echo

USAGE:
  laurel-analytics-bench --schema NAME [FLAGS]      (see deploy/bench/analytics.sh)

FLAGS:
  --addr URL           the analytics service             [default: http://127.0.0.1:50071]
  --database-url URL   its Postgres                      [env: DATABASE_URL]
  --schema NAME        its schema (fresh, migrated: the bench loads it)
  --metrics-url URL    its Prometheus endpoint: gRPC codes of the h2load runs
  --server-pid PID     its process, for memory (VmRSS, VmHWM)
                       [default: whatever listens on --addr's port here]
  --program ID         programme of the generated population [default: bench]
  --members N          members to generate               [default: 1000000]
  --purchases N        purchases (orders) to aim at      [default: 10000000]
  --line-share F       share of orders given 1-3 lines   [default: 1]
  --seed N             generator seed                    [default: 20261122]
  --cdnow PATH         CDNOW_sample.txt   [default: services/analytics/models/data/cdnow/CDNOW_sample.txt]
  --cdnow-rounds N     fits of CDNOW on each side; the median counts [default: 5]
  --python PATH        Python with duckdb, lifetimes and pandas [default: python3]
  --scripts DIR        deploy/bench/analytics            [default: deploy/bench/analytics]
  --work DIR           where the CSV files and DuckDB's database go [default: a temp dir]
  --no-python          skip DuckDB and lifetimes (ours only)
  --no-recommendations skip the recommendation run
  --no-breakdown       skip timing the parts of ours (the service's reads from
                       here, the models alone, the scores' write)
  --reco-wait SECS     how long to wait for the recommendation models [default: 900]
  --client-seconds N   the tonic-client runs of recommendations for distinct members
                       and of echo, each                [default: 10]
  --client-concurrency N  their workers (over 4 connections) [default: 64]
  --scorer-bin PATH    laurel-analytics: started as a second replica (this process's
                       environment, a 1 s job interval) after the timed calls so
                       that its scoring job builds the recommendation models,
                       stopped once they are stored [default: wait for the
                       service's own job]

  Recommendations beside echo (h2load; see deploy/bench/README.md):
  --h2load-n N         calls per h2load run           [default: 100000]
  --h2load-c N         h2load connections             [default: 50]
  --h2load-m N         h2load streams per connection  [default: 10]
  --h2load-t N         h2load threads                 [default: 1]
  --h2load-warmup N    unmeasured calls before each path's first run [default: 10000]
  --h2load-rounds N    measured runs per path, interleaved; the median counts [default: 3]
";

/// What to run.
#[derive(Debug, Clone)]
pub struct Args {
    pub addr: String,
    pub database_url: String,
    pub schema: String,
    pub server_pid: Option<u32>,
    pub metrics_url: Option<String>,
    pub program: String,
    pub members: u64,
    pub purchases: u64,
    pub line_share: f64,
    pub seed: u64,
    pub cdnow: PathBuf,
    pub cdnow_rounds: u32,
    pub python: PathBuf,
    pub scripts: PathBuf,
    pub work: Option<PathBuf>,
    pub run_python: bool,
    pub run_recommendations: bool,
    pub breakdown: bool,
    pub reco_wait: Duration,
    pub scorer_bin: Option<PathBuf>,
    pub client_seconds: u64,
    pub client_concurrency: usize,
    pub shape: h2load::Shape,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            addr: "http://127.0.0.1:50071".into(),
            database_url: String::new(),
            schema: String::new(),
            server_pid: None,
            metrics_url: None,
            program: "bench".into(),
            members: 1_000_000,
            purchases: 10_000_000,
            line_share: 1.0,
            seed: 20_261_122,
            cdnow: "services/analytics/models/data/cdnow/CDNOW_sample.txt".into(),
            cdnow_rounds: 5,
            python: "python3".into(),
            scripts: "deploy/bench/analytics".into(),
            work: None,
            run_python: true,
            run_recommendations: true,
            breakdown: true,
            reco_wait: Duration::from_secs(900),
            scorer_bin: None,
            client_seconds: 10,
            client_concurrency: 64,
            shape: h2load::Shape::default(),
        }
    }
}

/// A parsed command line.
#[derive(Debug)]
pub enum Parsed {
    Run(Box<Args>),
    Help,
}

/// Parses the flags (without the program name).
pub fn parse(argv: impl IntoIterator<Item = String>) -> Result<Parsed> {
    let mut args = Args {
        database_url: std::env::var("DATABASE_URL").unwrap_or_default(),
        ..Args::default()
    };
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
            "--database-url" => args.database_url = value()?,
            "--schema" => args.schema = value()?,
            "--server-pid" => args.server_pid = Some(number(&flag, &value()?)?),
            "--metrics-url" => args.metrics_url = Some(value()?),
            "--program" => args.program = value()?,
            "--members" => args.members = positive(&flag, &value()?)?,
            "--purchases" => args.purchases = positive(&flag, &value()?)?,
            "--line-share" => {
                let v = value()?;
                let share: f64 = v.parse().with_context(|| format!("{flag} {v}"))?;
                if !(0.0..=1.0).contains(&share) {
                    bail!("{flag} must be from 0 to 1, got {v}");
                }
                args.line_share = share;
            }
            "--seed" => args.seed = number(&flag, &value()?)?,
            "--cdnow" => args.cdnow = value()?.into(),
            "--cdnow-rounds" => args.cdnow_rounds = positive(&flag, &value()?)?,
            "--python" => args.python = value()?.into(),
            "--scripts" => args.scripts = value()?.into(),
            "--work" => args.work = Some(value()?.into()),
            "--no-python" => args.run_python = false,
            "--no-recommendations" => args.run_recommendations = false,
            "--no-breakdown" => args.breakdown = false,
            "--reco-wait" => args.reco_wait = Duration::from_secs(number(&flag, &value()?)?),
            "--client-seconds" => args.client_seconds = positive(&flag, &value()?)?,
            "--client-concurrency" => args.client_concurrency = positive(&flag, &value()?)?,
            "--scorer-bin" => args.scorer_bin = Some(value()?.into()),
            "--h2load-n" => args.shape.calls = positive(&flag, &value()?)?,
            "--h2load-c" => args.shape.connections = positive(&flag, &value()?)?,
            "--h2load-m" => args.shape.streams = positive(&flag, &value()?)?,
            "--h2load-t" => args.shape.threads = positive(&flag, &value()?)?,
            "--h2load-warmup" => args.shape.warmup_calls = number(&flag, &value()?)?,
            "--h2load-rounds" => args.shape.rounds = positive(&flag, &value()?)?,
            other => bail!("unknown flag {other}"),
        }
    }
    if args.schema.is_empty() {
        bail!("--schema is required (a fresh schema the service has migrated)");
    }
    if args.database_url.is_empty() {
        bail!("--database-url or DATABASE_URL is required");
    }
    if args.purchases < args.members {
        bail!(
            "--purchases ({}) below --members ({}): every member makes a first purchase",
            args.purchases,
            args.members
        );
    }
    Ok(Parsed::Run(Box::new(args)))
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    v.parse().with_context(|| format!("{flag} {v}"))
}

fn positive<T: std::str::FromStr + PartialOrd + Default>(flag: &str, v: &str) -> Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let n: T = number(flag, v)?;
    if n <= T::default() {
        bail!("{flag} must be positive, got {v}");
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(flags: &[&str]) -> Result<Args> {
        let mut argv = vec![
            "--schema".to_string(),
            "s".into(),
            "--database-url".into(),
            "postgres://x".into(),
        ];
        argv.extend(flags.iter().map(|s| s.to_string()));
        match parse(argv)? {
            Parsed::Run(a) => Ok(*a),
            Parsed::Help => bail!("help"),
        }
    }

    #[test]
    fn defaults_are_the_issue_sizes() {
        let a = run(&[]).unwrap();
        assert_eq!((a.members, a.purchases), (1_000_000, 10_000_000));
        assert_eq!(a.line_share, 1.0);
        assert!(a.run_python && a.run_recommendations);
    }

    #[test]
    fn sizes_shares_and_h2load_shape() {
        let a = run(&[
            "--members=100000",
            "--purchases",
            "1000000",
            "--line-share=0.5",
            "--h2load-n",
            "2000",
            "--no-python",
        ])
        .unwrap();
        assert_eq!(
            (a.members, a.purchases, a.line_share),
            (100_000, 1_000_000, 0.5)
        );
        assert_eq!(a.shape.calls, 2000);
        assert!(!a.run_python);
    }

    #[test]
    fn nonsense_is_refused() {
        assert!(run(&["--members", "0"]).is_err());
        assert!(run(&["--line-share", "1.5"]).is_err());
        assert!(run(&["--members", "10", "--purchases", "5"]).is_err());
        assert!(run(&["--bogus"]).is_err());
        assert!(parse(Vec::<String>::new()).is_err(), "no schema");
    }
}
