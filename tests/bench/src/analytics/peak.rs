//! A process's peak memory over one step: its high-water mark reset before
//! the step (`echo 5 > /proc/PID/clear_refs`, Linux 4.0 and later, our own
//! processes or root) and read after it, with the resident set sampled
//! meanwhile in case the reset is refused.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::memory::{self, Sampler};

/// Memory of one step, KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepMemory {
    /// Resident before the step.
    pub before_kib: u64,
    /// VmHWM after it: the step's peak when `reset`, else the process's.
    pub hwm_kib: u64,
    /// Whether the high-water mark was reset before the step.
    pub reset: bool,
    /// The highest resident set sampled every 10 ms.
    pub sampled_kib: u64,
}

impl StepMemory {
    /// The step's peak: the reset high-water mark, else the sampled peak.
    pub fn peak_kib(&self) -> u64 {
        if self.reset {
            self.hwm_kib.max(self.sampled_kib)
        } else {
            self.sampled_kib
        }
    }
}

/// Resets `pid`'s VmHWM to its VmRSS.
pub fn reset_high_water_mark(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Runs `step`, timing it and, when `pid` is given, measuring its memory.
pub async fn measure<T>(
    pid: Option<u32>,
    step: impl Future<Output = T>,
) -> (T, Duration, Option<StepMemory>) {
    let Some(pid) = pid else {
        let started = Instant::now();
        let out = step.await;
        return (out, started.elapsed(), None);
    };
    let before = memory::read(pid).ok();
    let reset = reset_high_water_mark(pid);
    let sampler = Sampler::start(pid, Duration::from_millis(10)).ok();
    let started = Instant::now();
    let out = step.await;
    let elapsed = started.elapsed();
    let sampled = sampler.and_then(|s| s.finish().ok());
    let after = memory::read(pid).ok();
    let mem = match (before, after) {
        (Some(before), Some(after)) => Some(StepMemory {
            before_kib: before.rss_kib,
            hwm_kib: after.hwm_kib,
            reset,
            sampled_kib: sampled.map_or(after.rss_kib, |s| s.peak_rss_kib),
        }),
        _ => None,
    };
    (out, elapsed, mem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_step_that_allocates_shows_in_its_peak() {
        let pid = std::process::id();
        let (len, elapsed, mem) = measure(Some(pid), async {
            // 64 MiB touched, then freed before the step ends.
            let v = vec![1u8; 64 << 20];
            tokio::time::sleep(Duration::from_millis(30)).await;
            v.iter().map(|&b| b as usize).sum::<usize>()
        })
        .await;
        assert_eq!(len, 64 << 20);
        assert!(elapsed >= Duration::from_millis(30));
        let mem = mem.expect("our own /proc is readable");
        assert!(
            mem.peak_kib() >= mem.before_kib + 60 * 1024,
            "{mem:?} should show the 64 MiB"
        );
    }

    #[tokio::test]
    async fn without_a_pid_it_only_times() {
        let ((), _, mem) = measure(None, async {}).await;
        assert!(mem.is_none());
    }
}
