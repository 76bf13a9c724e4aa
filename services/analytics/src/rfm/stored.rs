//! The stored run's scores, read back: every reader (a member's scores,
//! the value scoring, segment values, members at risk, the exports) looks
//! members up in the decoded run held in memory, one per programme.
//!
//! `rfm_score_chunks` holds one run per programme (a run deletes the
//! previous run's chunks in its transaction), so the stored run is the run
//! of the programme's chunk 0: one indexed query tells whether the run in
//! memory is still current. When it is not, the chunks are read and decoded
//! once (a million members are about 37 MB) while other readers of the
//! programme wait for them instead of reading them too. A run scored on
//! this replica is kept as it is written, so it needs no reading back.
//!
//! Members merged away or erased since the run stay in its chunks (nothing
//! rewrites a run): the readers that list members pass them over, the way
//! they pass over members that are not `active` everywhere else.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use futures::TryStreamExt;
use sqlx::PgConnection;
use tokio::sync::Mutex as AsyncMutex;
use uuid::Uuid;

use super::packed::{self, RunDecoder, Score};
use crate::{Analytics, error::AnalyticsError};

/// A run's scores, sorted by member.
#[derive(Debug)]
pub struct RunScores {
    /// The run.
    pub run_id: Uuid,
    scores: Vec<Score>,
}

impl RunScores {
    /// Scores sorted by member (as [`packed::encode`] leaves them).
    pub fn new(run_id: Uuid, scores: Vec<Score>) -> Self {
        debug_assert!(scores.windows(2).all(|w| w[0].member < w[1].member));
        Self { run_id, scores }
    }

    /// A member's scores, if the member was in the run.
    pub fn get(&self, member: Uuid) -> Option<&Score> {
        packed::find(&self.scores, member.as_u128())
    }

    /// Every member's scores, by member.
    pub fn scores(&self) -> &[Score] {
        &self.scores
    }

    /// Members scored.
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    /// Whether no member was scored (never, for a stored run).
    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }
}

type Slot = Arc<AsyncMutex<Option<Arc<RunScores>>>>;

/// The run of each programme this replica read or scored, decoded.
#[derive(Clone, Default)]
pub struct Runs {
    slots: Arc<Mutex<HashMap<String, Slot>>>,
}

impl Runs {
    fn slot(&self, program: &str) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.entry(program.to_owned()).or_default().clone()
    }

    /// Keeps a run just stored.
    pub async fn keep(&self, program: &str, run: Arc<RunScores>) {
        *self.slot(program).lock().await = Some(run);
    }
}

/// The run whose chunks are stored for `program`, if any.
pub async fn stored_run_id(
    conn: &mut PgConnection,
    program: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT run_id FROM rfm_score_chunks WHERE program_id = $1 AND chunk = 0
         ORDER BY run_id DESC LIMIT 1",
    )
    .bind(program)
    .fetch_optional(conn)
    .await
}

/// Reads and decodes the chunks of `run`; `None` when they are gone (a
/// newer run replaced them meanwhile).
async fn load(
    conn: &mut PgConnection,
    program: &str,
    run: Uuid,
) -> Result<Option<RunScores>, AnalyticsError> {
    let corrupt = |e: packed::PackedError| {
        AnalyticsError::Internal(anyhow::anyhow!("RFM run {run} of {program}: {e}"))
    };
    let mut rows = sqlx::query_as::<_, (i32, Uuid, i32, Vec<u8>)>(
        "SELECT chunk, first_member, members, data FROM rfm_score_chunks
         WHERE program_id = $1 AND run_id = $2 ORDER BY chunk",
    )
    .bind(program)
    .bind(run)
    .fetch(conn);
    let mut decoder = RunDecoder::default();
    let mut chunks = 0usize;
    while let Some((index, first, members, data)) = rows.try_next().await? {
        decoder
            .push(index, first, members, &data)
            .map_err(corrupt)?;
        chunks += 1;
    }
    Ok((chunks > 0).then(|| RunScores::new(run, decoder.finish())))
}

impl Analytics {
    /// The scores of the programme's stored run; `None` before any run.
    pub(crate) async fn rfm_scores(
        &self,
        conn: &mut PgConnection,
        program: &str,
    ) -> Result<Option<Arc<RunScores>>, AnalyticsError> {
        // Each try sees a run stored; it can only fail to read it when a
        // newer run committed in between, which takes a run's time.
        for _ in 0..3 {
            let Some(run) = stored_run_id(conn, program).await? else {
                return Ok(None);
            };
            if let Some(scores) = self.rfm_scores_of(conn, program, run).await? {
                return Ok(Some(scores));
            }
        }
        Err(AnalyticsError::Internal(anyhow::anyhow!(
            "RFM runs of {program} replaced each other while being read"
        )))
    }

    /// The scores of `run`, from memory or read; `None` when its chunks
    /// are gone.
    pub(crate) async fn rfm_scores_of(
        &self,
        conn: &mut PgConnection,
        program: &str,
        run: Uuid,
    ) -> Result<Option<Arc<RunScores>>, AnalyticsError> {
        let slot = self.rfm_runs.slot(program);
        let mut held = slot.lock().await;
        if let Some(scores) = held.as_ref().filter(|s| s.run_id == run) {
            return Ok(Some(scores.clone()));
        }
        let Some(loaded) = load(conn, program, run).await? else {
            return Ok(None);
        };
        let loaded = Arc::new(loaded);
        *held = Some(loaded.clone());
        Ok(Some(loaded))
    }
}
