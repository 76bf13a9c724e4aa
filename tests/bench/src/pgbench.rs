//! The floor the points service is compared with: Postgres's own pgbench
//! running the statements of one Earn, one request per transaction
//! (deploy/bench/pgbench/earn.sql), at the concurrency of the Earn run,
//! against a scratch schema made by `laurel-points migrate`.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The script, as kept beside the other benchmark scripts.
pub const EARN_SCRIPT: &str = include_str!("../../../deploy/bench/pgbench/earn.sql");

/// Where and how hard pgbench runs.
#[derive(Debug, Clone)]
pub struct Setup {
    /// libpq connection URL.
    pub url: String,
    /// Schema with the points tables (set as search_path through PGOPTIONS).
    pub schema: String,
    pub clients: usize,
    pub duration: Duration,
    pub warmup: Duration,
}

/// One pgbench run.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// Members drawn from (1: one hot account).
    pub members: usize,
    pub clients: usize,
    pub threads: usize,
    pub seconds: u64,
    pub tps: f64,
    pub latency_ms: f64,
    pub transactions: u64,
    pub failed: u64,
}

/// The pgbench command line (without the program name).
pub fn command_line(
    script: &str,
    members: usize,
    clients: usize,
    threads: usize,
    seconds: u64,
    url: &str,
) -> Vec<String> {
    [
        "-n",
        "-M",
        "prepared",
        "-f",
        script,
        "-D",
        &format!("members={members}"),
        "-c",
        &clients.to_string(),
        "-j",
        &threads.to_string(),
        "-T",
        &seconds.to_string(),
        url,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// What pgbench printed, parsed (`seconds` from the caller).
pub fn parse(output: &str) -> Result<(f64, f64, u64, u64)> {
    let (mut tps, mut latency, mut done, mut failed) = (None, None, None, 0);
    for line in output.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("tps = ") {
            // "tps = 327.510805 (without initial connection time)"
            let n = rest.split_whitespace().next().unwrap_or_default();
            tps = Some(n.parse::<f64>().with_context(|| format!("tps {n:?}"))?);
        } else if let Some(rest) = line.strip_prefix("latency average = ") {
            let n = rest.trim_end_matches(" ms");
            latency = Some(n.parse::<f64>().with_context(|| format!("latency {n:?}"))?);
        } else if let Some(rest) = line.strip_prefix("number of transactions actually processed: ")
        {
            let n = rest.split('/').next().unwrap_or_default();
            done = Some(
                n.parse::<u64>()
                    .with_context(|| format!("transactions {n:?}"))?,
            );
        } else if let Some(rest) = line.strip_prefix("number of failed transactions: ") {
            let n = rest.split_whitespace().next().unwrap_or_default();
            failed = n.parse().with_context(|| format!("failed {n:?}"))?;
        }
    }
    match (tps, latency, done) {
        (Some(t), Some(l), Some(d)) => Ok((t, l, d, failed)),
        _ => bail!("pgbench printed no complete summary"),
    }
}

/// Checks that pgbench is installed.
pub async fn check_installed() -> Result<()> {
    let status = tokio::process::Command::new("pgbench")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    match status {
        Ok(s) if s.success() => Ok(()),
        _ => bail!("pgbench not found: apt-get install postgresql-client"),
    }
}

/// Runs the Earn script drawing members from `members` (after an unmeasured
/// run of `setup.warmup`, whole seconds, when at least one).
pub async fn run_earn(setup: &Setup, members: usize) -> Result<Run> {
    let script = std::env::temp_dir().join(format!(
        "laurel-bench-pgbench-{}-{}.sql",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::write(&script, EARN_SCRIPT).with_context(|| format!("write {}", script.display()))?;
    let result = async {
        let warm = setup.warmup.as_secs();
        if warm > 0 {
            once(setup, &script.display().to_string(), members, warm).await?;
        }
        once(
            setup,
            &script.display().to_string(),
            members,
            setup.duration.as_secs().max(1),
        )
        .await
    }
    .await;
    let _ = std::fs::remove_file(&script);
    result
}

async fn once(setup: &Setup, script: &str, members: usize, seconds: u64) -> Result<Run> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = setup.clients.min(cores).max(1);
    let args = command_line(script, members, setup.clients, threads, seconds, &setup.url);
    let output = tokio::process::Command::new("pgbench")
        .args(&args)
        .env("PGOPTIONS", format!("-c search_path={}", setup.schema))
        .stdin(Stdio::null())
        .output()
        .await
        .context("run pgbench")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("too many clients") {
            " (Postgres's max_connections is below the services' pools plus pgbench's \
             clients: lower --concurrency or use a server with more connections)"
        } else {
            ""
        };
        bail!(
            "pgbench exited with {}: {}{hint}",
            output.status,
            stderr.lines().last().unwrap_or_default(),
        );
    }
    let (tps, latency_ms, transactions, failed) =
        parse(&stdout).with_context(|| format!("pgbench output:\n{stdout}"))?;
    Ok(Run {
        members,
        clients: setup.clients,
        threads,
        seconds,
        tps,
        latency_ms,
        transactions,
        failed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
pgbench (15.20 (Debian 15.20-0+deb12u1))
transaction type: /tmp/earn.sql
scaling factor: 1
query mode: prepared
number of clients: 8
number of threads: 2
maximum number of tries: 1
duration: 5 s
number of transactions actually processed: 1600
number of failed transactions: 0 (0.000%)
latency average = 24.427 ms
initial connection time = 141.694 ms
tps = 327.510805 (without initial connection time)
";

    #[test]
    fn parses_the_summary() {
        let (tps, latency, done, failed) = parse(SAMPLE).unwrap();
        assert!((tps - 327.510805).abs() < 1e-9);
        assert!((latency - 24.427).abs() < 1e-9);
        assert_eq!((done, failed), (1600, 0));
        let cut: String = SAMPLE.lines().take(9).collect::<Vec<_>>().join("\n");
        assert!(parse(&cut).is_err());
    }

    #[test]
    fn command_carries_members_and_concurrency() {
        let args = command_line("/tmp/e.sql", 1, 64, 2, 10, "postgres://x/y").join(" ");
        assert_eq!(
            args,
            "-n -M prepared -f /tmp/e.sql -D members=1 -c 64 -j 2 -T 10 postgres://x/y"
        );
    }

    #[test]
    fn the_script_takes_members_from_the_command_line() {
        // A \set of members in the script would override -D members=N.
        assert!(EARN_SCRIPT.contains("random(1, :members)"));
        assert!(!EARN_SCRIPT.contains("\\set members"));
        assert_eq!(EARN_SCRIPT.matches("BEGIN;").count(), 1);
        assert_eq!(EARN_SCRIPT.matches("COMMIT;").count(), 1);
    }
}
