//! Runs h2load, the server-bound judge: a C HTTP/2 load generator that
//! outruns a tonic client on the same box. It sends one gRPC frame for every
//! call and counts any HTTP 200 as a success, so the caller checks the
//! grpc-status of the same message with a real client first.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail};

/// h2load's load shape (`-n -c -m -t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub calls: u64,
    pub connections: u32,
    pub streams: u32,
    pub threads: u32,
    /// Calls sent unmeasured first, with the same shape.
    pub warmup_calls: u64,
    /// Measured runs per path, interleaved across paths; the median counts.
    pub rounds: u32,
}

impl Default for Shape {
    /// The setting: 100,000 calls over 50 connections of 10 streams.
    fn default() -> Self {
        Self {
            calls: 100_000,
            connections: 50,
            streams: 10,
            threads: 1,
            warmup_calls: 10_000,
            rounds: 3,
        }
    }
}

/// One gRPC request frame: flag byte 0 (uncompressed), 4-byte big-endian
/// length, the encoded message.
pub fn grpc_frame(message: &impl prost::Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let len = u32::try_from(body.len()).expect("a benchmark message fits in 4 GiB");
    let mut frame = Vec::with_capacity(5 + body.len());
    frame.push(0);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// What h2load printed about one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub seconds: f64,
    pub rps: f64,
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub errored: u64,
    pub timeout: u64,
    pub status_2xx: u64,
    /// "time for request" mean and max, in milliseconds.
    pub mean_ms: f64,
    pub max_ms: f64,
}

impl Outcome {
    /// Calls h2load itself saw fail (not gRPC failures inside HTTP 200s):
    /// its failed, errored and timed-out calls.
    pub fn http_failures(&self) -> u64 {
        self.total.saturating_sub(self.succeeded)
    }
}

/// Parses h2load's summary.
pub fn parse(output: &str) -> Result<Outcome> {
    let mut out = Outcome {
        seconds: f64::NAN,
        rps: f64::NAN,
        total: 0,
        succeeded: 0,
        failed: 0,
        errored: 0,
        timeout: 0,
        status_2xx: 0,
        mean_ms: f64::NAN,
        max_ms: f64::NAN,
    };
    let mut seen = (false, false, false);
    for line in output.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            // "finished in 1.55s, 64516.13 req/s, 3.08MB/s"
            let mut parts = rest.split(", ");
            out.seconds = duration_ms(parts.next().unwrap_or_default())? / 1000.0;
            out.rps = parts
                .next()
                .and_then(|p| p.strip_suffix(" req/s"))
                .context("no req/s after finished in")?
                .parse()
                .context("req/s")?;
            seen.0 = true;
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            // "2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored, 0 timeout"
            for part in rest.split(", ") {
                let (n, what) = part.split_once(' ').context("requests line")?;
                let n: u64 = n.parse().with_context(|| format!("requests: {part}"))?;
                match what {
                    "total" => out.total = n,
                    "succeeded" => out.succeeded = n,
                    "failed" => out.failed = n,
                    "errored" => out.errored = n,
                    "timeout" => out.timeout = n,
                    _ => {}
                }
            }
            seen.1 = true;
        } else if let Some(rest) = line.strip_prefix("status codes: ") {
            let first = rest.split(", ").next().unwrap_or_default();
            if let Some(n) = first.strip_suffix(" 2xx") {
                out.status_2xx = n.parse().context("2xx count")?;
            }
        } else if let Some(rest) = line.strip_prefix("time for request:") {
            // min max mean sd +/-sd
            let cols: Vec<&str> = rest.split_whitespace().collect();
            if cols.len() < 3 {
                bail!("time for request line: {line:?}");
            }
            out.max_ms = duration_ms(cols[1])?;
            out.mean_ms = duration_ms(cols[2])?;
            seen.2 = true;
        }
    }
    if !(seen.0 && seen.1 && seen.2) {
        bail!("h2load printed no complete summary");
    }
    Ok(out)
}

/// "218us", "48.01ms", "1.55s" in milliseconds.
fn duration_ms(s: &str) -> Result<f64> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else {
        bail!("not a duration: {s:?}")
    };
    Ok(num
        .parse::<f64>()
        .with_context(|| format!("duration {s:?}"))?
        * scale)
}

/// The h2load command line for one run against `url` (base URL plus the
/// gRPC method path) with the request body in `body`.
pub fn command_line(
    shape: &Shape,
    body: &Path,
    headers: &[(String, String)],
    url: &str,
) -> Vec<String> {
    let mut args = vec![
        "-n".to_string(),
        shape.calls.to_string(),
        "-c".into(),
        shape.connections.to_string(),
        "-m".into(),
        shape.streams.to_string(),
        "-t".into(),
        shape.threads.to_string(),
        "-d".into(),
        body.display().to_string(),
        "-H".into(),
        "content-type: application/grpc".into(),
        "-H".into(),
        "te: trailers".into(),
    ];
    for (name, value) in headers {
        args.push("-H".into());
        args.push(format!("{name}: {value}"));
    }
    args.push(url.to_string());
    args
}

/// A request body file, removed on drop.
pub struct BodyFile(PathBuf);

impl BodyFile {
    pub fn write(frame: &[u8]) -> Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "laurel-bench-{}-{}.bin",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::write(&path, frame).with_context(|| format!("write {}", path.display()))?;
        Ok(Self(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for BodyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Checks that h2load is installed.
pub async fn check_installed() -> Result<()> {
    let status = tokio::process::Command::new("h2load")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    match status {
        Ok(s) if s.success() => Ok(()),
        _ => bail!("h2load not found: apt-get install nghttp2-client"),
    }
}

/// Runs h2load once with `shape.calls` calls (the warm-up is the caller's).
pub async fn run(
    shape: &Shape,
    frame: &[u8],
    headers: &[(String, String)],
    url: &str,
) -> Result<Outcome> {
    let body = BodyFile::write(frame)?;
    let args = command_line(shape, body.path(), headers, url);
    let output = tokio::process::Command::new("h2load")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .await
        .context("run h2load")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "h2load exited with {}: {}{}",
            output.status,
            stdout.lines().last().unwrap_or_default(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse(&stdout).with_context(|| format!("h2load output:\n{stdout}"))
}

#[cfg(test)]
mod tests {
    use laurel_proto::common::v1::EchoRequest;

    use super::*;

    const SAMPLE: &str = "\
starting benchmark...
spawning thread #0: 4 total client(s). 2000 total requests
Application protocol: h2c
progress: 100% done

finished in 959.02ms, 2085.47 req/s, 86.02KB/s
requests: 2000 total, 2000 started, 2000 done, 1990 succeeded, 4 failed, 3 errored, 3 timeout
status codes: 1996 2xx, 0 3xx, 0 4xx, 4 5xx
traffic: 82.49KB (84472) total, 6.09KB (6232) headers (space savings 95.61%), 21.48KB (22000) data
                     min         max         mean         sd        +/- sd
time for request:      218us     48.01ms      3.68ms      4.93ms    91.55%
time for connect:      218us      1.21ms       572us       441us    75.00%
time to 1st byte:    47.80ms     48.78ms     48.15ms       436us    75.00%
req/s           :     522.57      534.05      527.86        4.72    50.00%
";

    #[test]
    fn parses_the_summary() {
        let o = parse(SAMPLE).unwrap();
        assert!((o.seconds - 0.95902).abs() < 1e-9, "{}", o.seconds);
        assert!((o.rps - 2085.47).abs() < 1e-9);
        assert_eq!(
            (o.total, o.succeeded, o.failed, o.errored, o.timeout),
            (2000, 1990, 4, 3, 3)
        );
        assert_eq!(o.status_2xx, 1996);
        assert!((o.mean_ms - 3.68).abs() < 1e-9);
        assert!((o.max_ms - 48.01).abs() < 1e-9);
        assert_eq!(o.http_failures(), 10);
    }

    #[test]
    fn seconds_and_microseconds() {
        assert_eq!(duration_ms("1.5s").unwrap(), 1500.0);
        assert_eq!(duration_ms("250us").unwrap(), 0.25);
        assert!(duration_ms("12 parsecs").is_err());
    }

    #[test]
    fn a_truncated_summary_is_an_error() {
        let cut: String = SAMPLE.lines().take(6).collect::<Vec<_>>().join("\n");
        assert!(parse(&cut).is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn frame_matches_the_shell_helper() {
        // deploy/bench/grpc-frame.sh: 00 00000006 0a 04 "ping"
        let frame = grpc_frame(&EchoRequest {
            payload: b"ping".to_vec(),
        });
        assert_eq!(frame, b"\x00\x00\x00\x00\x06\x0a\x04ping");
    }

    #[test]
    fn command_carries_shape_and_headers() {
        let shape = Shape::default();
        let args = command_line(
            &shape,
            Path::new("/tmp/x.bin"),
            &[("x-laurel-program".into(), "default".into())],
            "http://h:1/laurel.common.v1.EchoService/Echo",
        );
        let joined = args.join(" ");
        assert!(
            joined.starts_with("-n 100000 -c 50 -m 10 -t 1 -d /tmp/x.bin"),
            "{joined}"
        );
        assert!(joined.contains("-H x-laurel-program: default"), "{joined}");
        assert!(joined.ends_with("http://h:1/laurel.common.v1.EchoService/Echo"));
    }
}
