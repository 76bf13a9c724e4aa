//! Reads the server's gRPC outcome counters from its Prometheus endpoint, so
//! the grpc-status of calls made by h2load (which sees only HTTP 200) is
//! known: counts are taken before and after a run and subtracted.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The counter every Laurel server keeps per call (laurel-runtime's metrics layer).
const REQUESTS: &str = "laurel_grpc_requests_total{";

/// Calls by gRPC code name ("OK", "Unavailable", ...), summed over methods.
pub type Codes = BTreeMap<String, u64>;

/// Sums `laurel_grpc_requests_total` by its `code` label.
pub fn codes(exposition: &str) -> Codes {
    let mut out = Codes::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix(REQUESTS) else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let Some(code) = labels
            .split(',')
            .find_map(|l| l.trim().strip_prefix("code=\""))
            .and_then(|v| v.strip_suffix('"'))
        else {
            continue;
        };
        let Ok(n) = value.trim().parse::<f64>() else {
            continue;
        };
        *out.entry(code.to_string()).or_insert(0) += n as u64;
    }
    out
}

/// What changed between two readings.
pub fn diff(before: &Codes, after: &Codes) -> Codes {
    after
        .iter()
        .map(|(code, n)| {
            (
                code.clone(),
                n.saturating_sub(before.get(code).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// The group commit's batch-size summary (laurel-runtime's group_commit).
const BATCH_SIZE: &str = "laurel_group_commit_batch_size";

/// Sum and count of `laurel_group_commit_batch_size`: requests and
/// transactions the group commit has made; zeros before its first batch.
pub fn batch_sizes(exposition: &str) -> (f64, u64) {
    let value = |suffix: &str| {
        let name = format!("{BATCH_SIZE}_{suffix}");
        exposition
            .lines()
            .filter_map(|l| {
                let (metric, v) = l.rsplit_once(' ')?;
                let bare = metric.split('{').next()?;
                (bare == name).then(|| v.trim().parse::<f64>().ok())?
            })
            .sum::<f64>()
    };
    (value("sum"), value("count") as u64)
}

/// Events a service has consumed and published so far (the runtime's
/// `laurel_events_consumed_total` and `laurel_relay_published_total`, all
/// labels): while it moves, the service is still working through events.
pub fn event_work(exposition: &str) -> f64 {
    exposition
        .lines()
        .filter_map(|l| {
            let (metric, v) = l.rsplit_once(' ')?;
            let bare = metric.split('{').next()?;
            matches!(
                bare,
                "laurel_events_consumed_total" | "laurel_relay_published_total"
            )
            .then(|| v.trim().parse::<f64>().ok())?
        })
        .sum()
}

/// Fetches `url` (plain http://host:port/path) and returns the codes.
pub async fn fetch(url: &str) -> Result<Codes> {
    Ok(codes(&fetch_text(url).await?))
}

/// Fetches `url` (plain http://host:port/path) and returns the exposition.
pub async fn fetch_text(url: &str) -> Result<String> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("--metrics-url must be http://host:port/path, got {url:?}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    let body = tokio::time::timeout(Duration::from_secs(5), async {
        let mut stream = tokio::net::TcpStream::connect(authority).await?;
        // HTTP/1.0, so the answer is not chunked and ends with the connection.
        let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    })
    .await
    .with_context(|| format!("{url} did not answer in 5 s"))?
    .with_context(|| format!("GET {url}"))?;
    let text = String::from_utf8_lossy(&body);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("{url}: not an HTTP answer");
    };
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("{url}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE laurel_grpc_requests_total counter
laurel_grpc_requests_total{service="member",method="/laurel.common.v1.EchoService/Echo",code="OK"} 120
laurel_grpc_requests_total{service="member",method="/laurel.member.v1.MemberService/GetMember",code="OK"} 30
laurel_grpc_requests_total{service="member",method="/laurel.member.v1.MemberService/GetMember",code="ResourceExhausted"} 4
laurel_grpc_request_duration_seconds_count{service="member",method="x"} 154
"#;

    #[test]
    fn sums_by_code() {
        let c = codes(TEXT);
        assert_eq!(c.get("OK"), Some(&150));
        assert_eq!(c.get("ResourceExhausted"), Some(&4));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn reads_the_batch_size_summary() {
        let text = "# TYPE laurel_group_commit_batch_size summary
laurel_group_commit_batch_size{quantile=\"0.5\"} 31
laurel_group_commit_batch_size_sum 1234
laurel_group_commit_batch_size_count 40
laurel_group_commit_split_total 2
";
        assert_eq!(batch_sizes(text), (1234.0, 40));
        assert_eq!(batch_sizes(TEXT), (0.0, 0));
    }

    #[test]
    fn diff_keeps_what_grew() {
        let before = codes(TEXT);
        let mut after = before.clone();
        *after.get_mut("OK").unwrap() += 10;
        after.insert("Unavailable".into(), 2);
        let d = diff(&before, &after);
        assert_eq!(d.get("OK"), Some(&10));
        assert_eq!(d.get("Unavailable"), Some(&2));
        assert!(!d.contains_key("ResourceExhausted"));
    }
}
