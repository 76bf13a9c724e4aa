//! Group commit: many concurrent requests, one transaction.
//!
//! A request is queued with [`GroupCommit::submit`]. A writer (or a few)
//! takes what is queued (at most `max_batch` requests; under load, when the
//! previous batch had company, it waits at most `max_wait` for more), applies
//! the whole batch in one transaction through the service's [`BatchApply`],
//! commits once, and only then answers every request of the batch. Under
//! load the queue fills while the previous batch commits, so batches grow by
//! themselves; a lone request waits for nothing but its own commit.
//!
//! A request that fails must leave nothing behind in the transaction and
//! gets its own error; its neighbours commit. A handler either decides
//! every outcome before it writes (as the points ledger does: load, apply
//! in memory, write the survivors) or applies each request in a savepoint
//! (`Connection::begin` on the transaction opens one with sqlx). When the
//! batch as a whole fails (a deadlock with another replica, a constraint
//! the handler did not foresee, a lost connection), nothing of it commits
//! and every request is tried again alone, so one bad request never fails
//! the others. Requests that must not share a batch (two with one
//! idempotency key) are the handler's to tell apart: it may answer the
//! later one from the earlier one.
//!
//! Several replicas may run writers against one database at once: row
//! locks between their transactions keep every row correct; batching only
//! makes them meet less often.

use std::{sync::Arc, time::Duration};

use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Mutex, mpsc, oneshot};

/// One outcome per request of a batch, or the batch's own failure.
pub type BatchOutcome<B> = Result<
    Vec<Result<<B as BatchApply>::Response, <B as BatchApply>::Error>>,
    <B as BatchApply>::Error,
>;

/// How a service applies a batch of its requests.
pub trait BatchApply: Send + Sync + 'static {
    /// One queued request.
    type Request: Send + Sync + 'static;
    /// Its answer.
    type Response: Send + 'static;
    /// Its error.
    type Error: Send + 'static;

    /// Applies `requests` in order within `tx`, one outcome per request.
    /// A failed request leaves no trace in `tx`. `Err` fails the whole batch:
    /// it rolls back and each request is tried again alone.
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        requests: &'a [Self::Request],
    ) -> BoxFuture<'a, BatchOutcome<Self>>;

    /// The error answered when the transaction cannot begin or commit.
    fn storage_error(&self, error: sqlx::Error) -> Self::Error;
}

/// Batch sizes and writers.
#[derive(Clone, Copy, Debug)]
pub struct GroupConfig {
    /// Most requests in one transaction.
    pub max_batch: usize,
    /// Longest wait for more requests once one is taken, used only while
    /// the previous batch held more than one request (zero: never wait).
    pub max_wait: Duration,
    /// Writers, each with at most one open transaction.
    pub writers: usize,
    /// Requests queued before `submit` waits for room.
    pub queue: usize,
}

/// The defaults were measured (deploy/bench, 2 cores, fsync on): one writer
/// that, under load, waits 2 ms for the answered callers to come back fills
/// batches of ~30 and doubles Earn's rate against two writers that take
/// only what is queued; a lone request still goes at once.
impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            max_batch: 128,
            max_wait: Duration::from_millis(2),
            writers: 1,
            queue: 4096,
        }
    }
}

impl GroupConfig {
    /// The defaults, changed by `LAUREL_GROUP_COMMIT_MAX_BATCH`,
    /// `LAUREL_GROUP_COMMIT_MAX_WAIT_US` and `LAUREL_GROUP_COMMIT_WRITERS`.
    pub fn from_env() -> Result<Self, crate::config::ConfigError> {
        use crate::config::env_or;
        let d = Self::default();
        let config = Self {
            max_batch: env_or("LAUREL_GROUP_COMMIT_MAX_BATCH", d.max_batch)?.max(1),
            max_wait: Duration::from_micros(env_or(
                "LAUREL_GROUP_COMMIT_MAX_WAIT_US",
                d.max_wait.as_micros() as u64,
            )?),
            writers: env_or("LAUREL_GROUP_COMMIT_WRITERS", d.writers)?.max(1),
            queue: d.queue,
        };
        Ok(config)
    }
}

struct Job<B: BatchApply> {
    request: B::Request,
    answer: oneshot::Sender<Result<B::Response, B::Error>>,
}

/// The queue in front of a service's writers. Cloning shares the queue;
/// the writers stop once every clone is dropped and the queue is drained.
pub struct GroupCommit<B: BatchApply> {
    queue: mpsc::Sender<Job<B>>,
}

impl<B: BatchApply> Clone for GroupCommit<B> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<B: BatchApply> std::fmt::Debug for GroupCommit<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

/// Why a submitted request got no answer from the writers.
#[derive(Debug, thiserror::Error)]
#[error("the group commit writers have stopped")]
pub struct Stopped;

impl<B: BatchApply> GroupCommit<B> {
    /// Starts `config.writers` writers on `pool` applying with `handler`.
    pub fn start(pool: PgPool, handler: B, config: GroupConfig) -> Self {
        let (queue, receiver) = mpsc::channel(config.queue.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        let writer = Arc::new(Writer {
            pool,
            handler,
            config,
            last_batch: std::sync::atomic::AtomicUsize::new(0),
        });
        for _ in 0..config.writers.max(1) {
            tokio::spawn(writer.clone().run(receiver.clone()));
        }
        Self { queue }
    }

    /// Queues `request` and waits until its batch has committed (or it
    /// failed alone). Dropping the future does not withdraw the request: it
    /// is applied, and a retry with the same idempotency key replays it.
    pub async fn submit(
        &self,
        request: B::Request,
    ) -> Result<Result<B::Response, B::Error>, Stopped> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send(Job { request, answer })
            .await
            .map_err(|_| Stopped)?;
        answered.await.map_err(|_| Stopped)
    }
}

struct Writer<B: BatchApply> {
    pool: PgPool,
    handler: B,
    config: GroupConfig,
    /// Size of the batch taken last.
    last_batch: std::sync::atomic::AtomicUsize,
}

impl<B: BatchApply> Writer<B> {
    async fn run(self: Arc<Self>, receiver: Arc<Mutex<mpsc::Receiver<Job<B>>>>) {
        while let Some(batch) = self.take(&receiver).await {
            self.commit(batch).await;
        }
    }

    /// The next batch: the first queued job, whatever else is queued, and
    /// what arrives within `max_wait`.
    async fn take(&self, receiver: &Mutex<mpsc::Receiver<Job<B>>>) -> Option<Vec<Job<B>>> {
        let mut receiver = receiver.lock().await;
        let first = receiver.recv().await?;
        let mut batch = Vec::with_capacity(self.config.max_batch.min(64));
        batch.push(first);
        while batch.len() < self.config.max_batch {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Wait for more only under load (the last batch had company): a lone
        // request is never delayed.
        let busy = self.last_batch.load(std::sync::atomic::Ordering::Relaxed) > 1;
        if busy && !self.config.max_wait.is_zero() && batch.len() < self.config.max_batch {
            let deadline = tokio::time::Instant::now() + self.config.max_wait;
            while batch.len() < self.config.max_batch {
                match tokio::time::timeout_at(deadline, receiver.recv()).await {
                    Ok(Some(job)) => batch.push(job),
                    _ => break,
                }
            }
        }
        self.last_batch
            .store(batch.len(), std::sync::atomic::Ordering::Relaxed);
        Some(batch)
    }

    async fn commit(&self, batch: Vec<Job<B>>) {
        metrics::histogram!("laurel_group_commit_batch_size").record(batch.len() as f64);
        let (requests, answers): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|j| (j.request, j.answer)).unzip();
        match self.attempt(&requests).await {
            Ok(outcomes) => {
                for (answer, outcome) in answers.into_iter().zip(outcomes) {
                    let _ = answer.send(outcome);
                }
            }
            Err(error) if requests.len() == 1 => {
                let _ = answers.into_iter().next().map(|a| a.send(Err(error)));
            }
            Err(_) => {
                metrics::counter!("laurel_group_commit_split_total").increment(1);
                for (request, answer) in requests.iter().zip(answers) {
                    let outcome = match self.attempt(std::slice::from_ref(request)).await {
                        Ok(mut outcomes) => outcomes.pop().expect("one outcome per request"),
                        Err(error) => Err(error),
                    };
                    let _ = answer.send(outcome);
                }
            }
        }
    }

    async fn attempt(&self, requests: &[B::Request]) -> BatchOutcome<B> {
        let storage = |e| self.handler.storage_error(e);
        let mut tx = self.pool.begin().await.map_err(storage)?;
        let outcomes = self.handler.apply(&mut tx, requests).await?;
        assert_eq!(outcomes.len(), requests.len(), "one outcome per request");
        tx.commit().await.map_err(storage)?;
        Ok(outcomes)
    }
}
