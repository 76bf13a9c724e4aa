//! A process-wide concurrency limit that sheds excess calls at once with
//! `RESOURCE_EXHAUSTED` and `RetryInfo`, instead of queueing them. Health
//! and reflection calls are never shed (see [`crate::layers`]): a pod under
//! load must still answer its probes.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tonic::Status;

use crate::error::ErrorBuilder;

/// Allows a fixed number of calls in flight.
#[derive(Clone, Debug)]
pub struct ConcurrencyLimit {
    in_flight: Arc<AtomicUsize>,
    limit: usize,
}

/// A call's place under the limit, given back when dropped.
#[derive(Debug)]
pub struct Admitted(Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

impl ConcurrencyLimit {
    /// A limit of `limit` concurrent calls.
    pub fn new(limit: usize) -> Self {
        Self {
            in_flight: Arc::new(AtomicUsize::new(0)),
            limit,
        }
    }

    /// Admits a call, or refuses it with `RESOURCE_EXHAUSTED` when `limit`
    /// calls are already in flight.
    pub fn try_admit(&self) -> Result<Admitted, Status> {
        let before = self.in_flight.fetch_add(1, Ordering::Acquire);
        // The guard undoes the increment on both paths.
        let admitted = Admitted(self.in_flight.clone());
        if before < self.limit {
            return Ok(admitted);
        }
        drop(admitted);
        metrics::counter!("laurel_grpc_shed_total").increment(1);
        Err(overloaded())
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

fn overloaded() -> Status {
    ErrorBuilder::new(
        tonic::Code::ResourceExhausted,
        "laurel.common",
        "OVERLOADED",
        "server overloaded, retry later",
    )
    .retry_after(Duration::from_millis(100))
    .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_past_the_limit_are_refused_until_one_finishes() {
        let limit = ConcurrencyLimit::new(2);
        let first = limit.try_admit().unwrap();
        let _second = limit.try_admit().unwrap();
        let refused = limit.try_admit().unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert_eq!(limit.in_flight(), 2);
        drop(first);
        assert!(limit.try_admit().is_ok());
    }
}
