//! ExportActivities: a programme's whole activity log, members' and guests'
//! activities alike, in activity_id (recorded) order, as a stream of
//! batches, for consumers that bootstrap their own copy (analytics).
//!
//! Memory stays bounded by one batch: each batch is one keyset query over
//! the primary key `(program_id, activity_id)` from the cursor, run only
//! when the transport asks for the next message, that is when the client
//! has read the earlier ones (HTTP/2 flow control). No connection is held
//! between batches, and a client that goes away drops the stream, and with
//! it the query in flight.
//!
//! Activity ids are UUIDv7 drawn before their transaction commits, so an
//! activity committed while an export runs may carry an id below the
//! export's cursor and be missed by it. A consumer that must miss nothing
//! starts reading the event stream before it exports, and keeps each
//! activity once by activity_id.

use futures::{Stream, stream};
use laurel_proto::member::v1 as pb;
use laurel_runtime::context::ProgramId;
use prost::Message;
use uuid::Uuid;

use super::{Members, Result};
use crate::{
    error::MemberError,
    repo::{self, ActivityExport},
    requests,
};

/// Where an export stands between two batches.
struct ExportState {
    members: Members,
    program: ProgramId,
    /// What to read; `after` moves with every batch.
    export: ActivityExport,
    batch_size: i64,
    /// False once a batch came back short: the log is read to its end.
    more: bool,
}

impl Members {
    /// Checks the request and returns the export's stream of batches. A bad
    /// request fails here, before the stream starts; a failure while
    /// streaming ends the stream with that error, and the client resumes
    /// from the last `last_activity_id` it received.
    pub fn export_activities(
        &self,
        program: &ProgramId,
        req: &pb::ExportActivitiesRequest,
    ) -> Result<impl Stream<Item = Result<pb::ExportActivitiesResponse>> + Send + 'static> {
        let (export, batch_size) = requests::activity_export(req)?;
        let state = ExportState {
            members: self.clone(),
            program: program.clone(),
            export,
            batch_size,
            more: true,
        };
        Ok(stream::try_unfold(state, next_batch))
    }

    /// The next batch after `export.after`, decoded as ListActivities
    /// decodes them.
    async fn export_batch(
        &self,
        program: &ProgramId,
        export: &ActivityExport,
        batch_size: i64,
    ) -> Result<Vec<(Uuid, pb::Activity)>> {
        let rows = {
            // Admitted like any request, and given back before the batch is
            // sent.
            let mut conn = self.db.acquire().await?;
            repo::export_activities(&mut conn, program.as_str(), export, batch_size).await?
        };
        rows.into_iter()
            .map(|row| {
                let activity = pb::Activity::decode(row.body.as_slice())
                    .map_err(|e| MemberError::Internal(e.into()))?;
                Ok((row.activity_id, activity))
            })
            .collect()
    }
}

/// One step of the export: the next batch and the state after it, or the
/// end when the previous batch was the last.
async fn next_batch(
    mut state: ExportState,
) -> Result<Option<(pb::ExportActivitiesResponse, ExportState)>> {
    if !state.more {
        return Ok(None);
    }
    let batch = state
        .members
        .export_batch(&state.program, &state.export, state.batch_size)
        .await?;
    let Some(&(last, _)) = batch.last() else {
        return Ok(None);
    };
    state.more = i64::try_from(batch.len()).is_ok_and(|n| n >= state.batch_size);
    state.export.after = last;
    let response = pb::ExportActivitiesResponse {
        activities: batch.into_iter().map(|(_, activity)| activity).collect(),
        last_activity_id: last.to_string(),
    };
    tracing::debug!(
        activities = response.activities.len(),
        last = %last,
        "exported a batch of activities"
    );
    Ok(Some((response, state)))
}
