//! The scoring replica: a second `laurel-analytics serve` on the same
//! schema, started after the timed calls with a short job interval, so
//! that its scoring job builds the recommendation models (the measured
//! service runs with its job parked, so that nothing scheduled competes
//! with the timed calls). It inherits the benchmark's environment
//! (deploy/bench/analytics.sh sets the service's database, schema, Redis
//! prefix and dev mode there) and is stopped once both levels are stored.
//!
//! Its job also scores every member's value first (no value run exists
//! yet), so the time to the models is more than the builds; the builds'
//! own times are read from its log ("recommendations built ... ms=").

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sqlx::PgPool;

/// A running scoring replica.
pub struct Scorer {
    child: tokio::process::Child,
    log: PathBuf,
    started: Instant,
}

/// What the replica did.
#[derive(Debug, Clone)]
pub struct Built {
    /// From its start to both levels stored.
    pub seconds: f64,
    /// Its "recommendations built" log lines (level, items, ms, hit rates).
    pub lines: Vec<String>,
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("find a free port")?;
    Ok(l.local_addr()?.port())
}

/// Drops ANSI colour sequences (ESC [ ... m) from a log line.
pub fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The build lines of a replica's log, without colours and timestamps.
pub fn build_lines(log: &str) -> Vec<String> {
    log.lines()
        .map(plain)
        .filter(|l| l.contains("recommendations built"))
        .map(|l| match l.find("recommendations built") {
            Some(at) => l[at..].trim().to_string(),
            None => l,
        })
        .collect()
}

impl Scorer {
    /// Starts `bin serve` with its log in `log`.
    pub fn start(bin: &Path, log: &Path) -> Result<Self> {
        let file =
            std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let child = tokio::process::Command::new(bin)
            .arg("serve")
            .env("LAUREL_GRPC_ADDR", format!("127.0.0.1:{}", free_port()?))
            .env("LAUREL_METRICS_ADDR", "off")
            .env("LAUREL_ANALYTICS_JOB_INTERVAL_MS", "1000")
            .env("RUST_LOG", "warn,laurel_analytics=info")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {} serve", bin.display()))?;
        Ok(Self {
            child,
            log: log.to_path_buf(),
            started: Instant::now(),
        })
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<String> = log.lines().map(plain).collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// Waits until `program` has models of both levels (at most `wait`),
    /// then stops the replica.
    pub async fn built(mut self, pool: &PgPool, program: &str, wait: Duration) -> Result<Built> {
        loop {
            let levels: i64 = sqlx::query_scalar(
                "SELECT count(DISTINCT level) FROM recommendation_models WHERE program_id = $1",
            )
            .bind(program)
            .fetch_one(pool)
            .await
            .context("read recommendation_models")?;
            if levels >= 2 {
                break;
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the scoring replica exited ({status}) before building; its log ends with:\n{}",
                    self.log_tail()
                );
            }
            if self.started.elapsed() >= wait {
                bail!(
                    "no recommendation models after {} s; the scoring replica's log ends with:\n{}",
                    wait.as_secs(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let seconds = self.started.elapsed().as_secs_f64();
        self.child
            .start_kill()
            .context("stop the scoring replica")?;
        let _ = self.child.wait().await;
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        Ok(Built {
            seconds,
            lines: build_lines(&log),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_lines_lose_colours_and_timestamps() {
        let log = "\u{1b}[2m2026-11-23T00:13:28Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m laurel_analytics: \
                   recommendations built program=\"bench\" level=\"sku\" items=10000 ms=5123\n\
                   other line\n";
        assert_eq!(
            build_lines(log),
            ["recommendations built program=\"bench\" level=\"sku\" items=10000 ms=5123"]
        );
        assert_eq!(plain("\u{1b}[1mx\u{1b}[0my"), "xy");
    }

    #[test]
    fn a_free_port_is_free() {
        let port = free_port().unwrap();
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    }
}
