//! The server's memory under load, read from /proc (Linux, server on this
//! machine): resident set sampled while the load runs, and the kernel's
//! high-water mark.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Memory figures of one process, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    /// VmRSS: resident now.
    pub rss_kib: u64,
    /// VmHWM: the most ever resident.
    pub hwm_kib: u64,
}

/// Parses VmRSS and VmHWM out of /proc/<pid>/status.
pub fn parse_status(text: &str) -> Result<Status> {
    let field = |name: &str| -> Result<u64> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .with_context(|| format!("no {name} in /proc status"))?;
        let kib = line.trim().trim_end_matches("kB").trim();
        kib.parse().with_context(|| format!("{name} {kib:?}"))
    };
    Ok(Status {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// Reads the memory figures of `pid`.
pub fn read(pid: u32) -> Result<Status> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    parse_status(&text)
}

/// The inodes of sockets listening on TCP `port`, from /proc/net/tcp{,6} text.
pub fn listening_inodes(proc_net_tcp: &str, port: u16) -> Vec<u64> {
    const LISTEN: &str = "0A";
    proc_net_tcp
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let local = cols.get(1)?;
            let st = cols.get(3)?;
            let inode = cols.get(9)?;
            let local_port = u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()?;
            (local_port == port && *st == LISTEN)
                .then(|| inode.parse().ok())
                .flatten()
        })
        .collect()
}

/// The process listening on TCP `port` on this machine, if we may see it.
pub fn pid_listening_on(port: u16) -> Result<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            inodes.extend(listening_inodes(&text, port));
        }
    }
    if inodes.is_empty() {
        bail!("nothing listens on port {port} here (is the server on another machine?)");
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in std::fs::read_dir("/proc").context("read /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path())
                && wanted.iter().any(|w| link.as_os_str() == w.as_str())
            {
                return Ok(pid);
            }
        }
    }
    bail!("no visible process owns the socket listening on port {port}")
}

/// Samples a process's resident set in the background and keeps the peak.
pub struct Sampler {
    pid: u32,
    peak_kib: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    /// Starts sampling `pid` every `every`.
    pub fn start(pid: u32, every: Duration) -> Result<Self> {
        let first = read(pid)?;
        let peak_kib = Arc::new(AtomicU64::new(first.rss_kib));
        let peak = peak_kib.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                match read(pid) {
                    Ok(s) => {
                        peak.fetch_max(s.rss_kib, Ordering::Relaxed);
                    }
                    Err(_) => return,
                }
            }
        });
        Ok(Self {
            pid,
            peak_kib,
            task,
        })
    }

    /// Stops sampling: the peak sampled and the status now.
    pub fn finish(self) -> Result<Report> {
        self.task.abort();
        let now = read(self.pid)?;
        Ok(Report {
            pid: self.pid,
            peak_rss_kib: self.peak_kib.load(Ordering::Relaxed).max(now.rss_kib),
            now,
        })
    }
}

/// Memory of the server over the benchmark.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    pub pid: u32,
    /// The highest VmRSS sampled while the load ran.
    pub peak_rss_kib: u64,
    /// VmRSS and VmHWM at the end.
    pub now: Status,
}

/// The target the issue sets for memory under load.
pub const TARGET_MIB: f64 = 200.0;

/// KiB to MiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status() {
        let text = "Name:\tlaurel-member\nVmPeak:\t  900000 kB\nVmHWM:\t   61440 kB\nVmRSS:\t   40960 kB\n";
        let s = parse_status(text).unwrap();
        assert_eq!(s.rss_kib, 40960);
        assert_eq!(s.hwm_kib, 61440);
        assert!(parse_status("Name:\tx\n").is_err());
    }

    #[test]
    fn finds_listening_sockets_by_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:C351 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:C351 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0
";
        // 0xC351 = 50001; the established connection (st 01) is not a listener.
        assert_eq!(listening_inodes(table, 50001), vec![4242]);
        assert_eq!(listening_inodes(table, 8080), vec![4444]);
        assert!(listening_inodes(table, 1).is_empty());
    }

    #[test]
    fn reads_our_own_memory() {
        let s = read(std::process::id()).unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib, "{s:?}");
    }
}
