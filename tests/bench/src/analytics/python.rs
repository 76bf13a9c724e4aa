//! The comparison side: deploy/bench/analytics/*.py run with the
//! benchmark's Python (its own virtual environment, made by
//! deploy/bench/analytics.sh), each printing one JSON line on stdout; their
//! progress goes to our stderr.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use chrono::NaiveDate;
use serde_json::Value;

/// Where the Python side is.
#[derive(Debug, Clone)]
pub struct Python {
    pub python: PathBuf,
    pub scripts: PathBuf,
}

/// A figure from the JSON line: the number at `path` (keys joined by '/').
pub fn number(v: &Value, path: &str) -> Result<f64> {
    let mut at = v;
    for key in path.split('/') {
        at = at.get(key).with_context(|| format!("no {path} in {v}"))?;
    }
    at.as_f64()
        .with_context(|| format!("{path} is not a number in {v}"))
}

/// The last line of `stdout` that parses as a JSON object.
pub fn last_json(stdout: &str) -> Result<Value> {
    stdout
        .lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<Value>(l.trim())
                .ok()
                .filter(Value::is_object)
        })
        .context("the script printed no JSON line")
}

impl Python {
    async fn run(&self, script: &str, args: &[String]) -> Result<Value> {
        let path = self.scripts.join(script);
        let output = tokio::process::Command::new(&self.python)
            .arg(&path)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .await
            .with_context(|| format!("run {} {}", self.python.display(), path.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!("{script} exited with {}: {stdout}", output.status);
        }
        last_json(&stdout).with_context(|| format!("{script}: {stdout}"))
    }

    /// DuckDB's RFM over the purchases CSV, as of `as_of`.
    pub async fn duckdb_rfm(
        &self,
        purchases: &Path,
        db: &Path,
        as_of: NaiveDate,
        active_days: i32,
    ) -> Result<Value> {
        self.run(
            "duckdb_rfm.py",
            &[
                "--purchases".into(),
                purchases.display().to_string(),
                "--db".into(),
                db.display().to_string(),
                "--as-of".into(),
                as_of.to_string(),
                "--active-days".into(),
                active_days.to_string(),
            ],
        )
        .await
    }

    /// lifetimes on the benchmark's transactions up to `end`.
    pub async fn lifetimes_fit(&self, transactions: &Path, end: NaiveDate) -> Result<Value> {
        self.run(
            "lifetimes_fit.py",
            &[
                "--transactions".into(),
                transactions.display().to_string(),
                "--end".into(),
                end.to_string(),
            ],
        )
        .await
    }

    /// lifetimes on CDNOW, `rounds` times.
    pub async fn lifetimes_cdnow(
        &self,
        cdnow: &Path,
        end: NaiveDate,
        rounds: u32,
    ) -> Result<Value> {
        self.run(
            "lifetimes_fit.py",
            &[
                "--cdnow".into(),
                cdnow.display().to_string(),
                "--end".into(),
                end.to_string(),
                "--rounds".into(),
                rounds.to_string(),
            ],
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_last_json_line_and_its_numbers() {
        let out = "noise\n{\"a\": {\"b\": 1.5}, \"c\": 2}\n";
        let v = last_json(out).unwrap();
        assert_eq!(number(&v, "a/b").unwrap(), 1.5);
        assert_eq!(number(&v, "c").unwrap(), 2.0);
        assert!(number(&v, "a/x").is_err());
        assert!(last_json("no json\n[1]\n").is_err());
    }
}
