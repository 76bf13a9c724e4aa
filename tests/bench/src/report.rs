//! Prints the results: a table for people, one JSON line for machines.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::paths::PathKind;
use crate::run::{Mode, OK, PathResult};

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

/// One JSON array on one line, one object per path and mode.
pub fn json_line(results: &[PathResult], concurrency: usize, connections: usize) -> String {
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
                "p50_ms": r.quantile_ms(0.5),
                "p99_ms": r.quantile_ms(0.99),
                "max_ms": r.max_ms(),
                "vs_echo": vs_echo(results, r),
                "codes": r.codes,
            })
        })
        .collect();
    Value::Array(rows).to_string()
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
        let j: Value = serde_json::from_str(&json_line(&rs, 64, 8)).unwrap();
        assert_eq!(j.as_array().unwrap().len(), 4);
        assert_eq!(j[2]["vs_echo"], 0.25);
        let p50 = j[0]["p50_ms"].as_f64().unwrap();
        assert!((p50 - 5.0).abs() < 0.01, "{p50}");
    }

    #[test]
    fn errors_are_listed() {
        let r = result(PathKind::RecordActivity, Mode::Closed, 10, 3);
        assert_eq!(r.requests(), 13);
        assert_eq!(r.errors(), 3);
        assert_eq!(errors_label(&r), "Unavailable=3");
    }
}
