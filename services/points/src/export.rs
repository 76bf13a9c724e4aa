//! ExportMovements: a programme's whole ledger history, one movement at a
//! time in movement_id (recorded) order, as a stream of batches, for
//! consumers that bootstrap their own copy (analytics).
//!
//! Each movement is rebuilt from its `movements` row and its `entries` rows
//! exactly as [`Book::record`](crate::ledger::book::Book::record) built it
//! for the PointsMoved event: from its owner's side (`member_id`, `points`
//! and `counterparty_member_id` as recorded), with every balanced entry.
//! Beside it goes the owner's balance after it, which the owner's entry row
//! keeps (`entries.balance_after`, the account total); the split into
//! available, pending and held that PointsMoved's `Balance` carries is not
//! stored per movement, so it is not exported.
//!
//! Memory stays bounded by one batch: each batch is one keyset query over
//! `(program_id, movement_id)` from the cursor (index
//! `movements_export_idx`) and one primary-key lookup of its entries, run
//! only when the transport asks for the next message, that is when the
//! client has read the earlier ones (HTTP/2 flow control). No connection is
//! held between batches, and a client that goes away drops the stream, and
//! with it the query in flight.
//!
//! Movement ids are UUIDv7 drawn before their group commit lands, so a
//! movement committed while an export runs may carry an id below the
//! export's cursor and be missed by it. A consumer that must miss nothing
//! starts reading the event stream before it exports, and keeps each
//! movement once by movement_id.

use chrono::{DateTime, Utc};
use futures::{Stream, stream};
use laurel_proto::points::v1 as pb;
use laurel_runtime::{context::ProgramId, error::Violations};
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use crate::{Points, error::PointsError, ledger::book::timestamp};

/// Movements per ExportMovements response when the request names none.
pub const DEFAULT_EXPORT_BATCH: i64 = 500;
/// The most movements one ExportMovements response carries.
pub const MAX_EXPORT_BATCH: i64 = 5000;

/// The `entries.account` code of a member account.
const MEMBER_ACCOUNT: i16 = pb::Account::Member as i16;

/// Which movements an export reads, and from where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MovementExport {
    /// Only movements with a greater id; the nil UUID (below every UUIDv7)
    /// from the start. Never NULL, so the scan is always a range of
    /// `(program_id, movement_id)`.
    pub after: Uuid,
    /// Only these stored type codes; empty for every type.
    pub types: Vec<i16>,
    /// Only movements that occurred at or after this time.
    pub occurred_from: Option<DateTime<Utc>>,
    /// Only movements that occurred before this time.
    pub occurred_to: Option<DateTime<Utc>>,
    /// Movements per batch, 1 to [`MAX_EXPORT_BATCH`].
    pub batch_size: i64,
}

/// Checks an `ExportMovementsRequest`, naming every bad field.
pub fn movement_export(req: &pb::ExportMovementsRequest) -> Result<MovementExport, Violations> {
    let pb::ExportMovementsRequest {
        after_movement_id,
        movement_types,
        occurred_from,
        occurred_to,
        batch_size,
    } = req;
    let mut v = Violations::new();
    let after = if after_movement_id.is_empty() {
        Uuid::nil()
    } else {
        Uuid::parse_str(after_movement_id).unwrap_or_else(|_| {
            v.add(
                "after_movement_id",
                "must be the last_movement_id of an earlier response, or empty",
            );
            Uuid::nil()
        })
    };
    let mut types = Vec::with_capacity(movement_types.len());
    for (i, raw) in movement_types.iter().enumerate() {
        match pb::MovementType::try_from(*raw) {
            Ok(pb::MovementType::Unspecified) | Err(_) => v.add(
                format!("movement_types[{i}]"),
                format!("unknown movement type {raw}"),
            ),
            Ok(known) => types.push(known as i16),
        }
    }
    let occurred_from = bound(occurred_from.as_ref(), "occurred_from", &mut v);
    let occurred_to = bound(occurred_to.as_ref(), "occurred_to", &mut v);
    if let (Some(from), Some(to)) = (occurred_from, occurred_to) {
        v.check(from >= to, "occurred_to", "must be after occurred_from");
    }
    let batch_size = match i64::from(*batch_size) {
        0 => DEFAULT_EXPORT_BATCH,
        n => n,
    };
    v.check(
        !(1..=MAX_EXPORT_BATCH).contains(&batch_size),
        "batch_size",
        format!("must be 1 to {MAX_EXPORT_BATCH} (0 for {DEFAULT_EXPORT_BATCH})"),
    );
    v.finish()?;
    Ok(MovementExport {
        after,
        types,
        occurred_from,
        occurred_to,
        batch_size,
    })
}

/// An optional time bound, in whole microseconds (what Postgres compares);
/// a timestamp outside the protobuf range or with nanos outside
/// `0..1_000_000_000` is a violation of `field`.
fn bound(
    t: Option<&prost_types::Timestamp>,
    field: &str,
    v: &mut Violations,
) -> Option<DateTime<Utc>> {
    let t = t?;
    let at = u32::try_from(t.nanos)
        .ok()
        .filter(|nanos| *nanos < 1_000_000_000)
        .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos))
        .and_then(|at| DateTime::from_timestamp_micros(at.timestamp_micros()));
    if at.is_none() {
        v.add(field, "not a valid time");
    }
    at
}

/// One `movements` row.
#[derive(Debug, FromRow)]
struct MovementRow {
    movement_id: Uuid,
    member_id: Uuid,
    r#type: i16,
    points: i64,
    earn_kind: i16,
    reason: String,
    reference: String,
    order_id: String,
    related_movement_id: Option<Uuid>,
    counterparty: Option<Uuid>,
    occurred_at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
}

/// One `entries` row of an exported movement.
#[derive(Debug, FromRow)]
struct EntryRow {
    movement_id: Uuid,
    account: i16,
    member_id: Option<Uuid>,
    points: i64,
    balance_after: Option<i64>,
}

/// The next `export.batch_size` movements of a programme after
/// `export.after` in movement_id order: one range scan of
/// `movements_export_idx`, the filters applied to the rows it walks.
async fn movement_rows(
    conn: &mut PgConnection,
    program: &str,
    export: &MovementExport,
) -> Result<Vec<MovementRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT movement_id, member_id, type, points, earn_kind, reason, reference, order_id,
                related_movement_id, counterparty, occurred_at, recorded_at
         FROM movements
         WHERE program_id = $1 AND movement_id > $2
           AND (cardinality($3::smallint[]) = 0 OR type = ANY($3))
           AND ($4::timestamptz IS NULL OR occurred_at >= $4)
           AND ($5::timestamptz IS NULL OR occurred_at < $5)
         ORDER BY movement_id LIMIT $6",
    )
    .bind(program)
    .bind(export.after)
    .bind(&export.types)
    .bind(export.occurred_from)
    .bind(export.occurred_to)
    .bind(export.batch_size)
    .fetch_all(conn)
    .await
}

/// The entries of `movements`, in movement and line order.
async fn entry_rows(
    conn: &mut PgConnection,
    movements: &[Uuid],
) -> Result<Vec<EntryRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT movement_id, account, member_id, points, balance_after FROM entries
         WHERE movement_id = ANY($1) ORDER BY movement_id, line",
    )
    .bind(movements)
    .fetch_all(conn)
    .await
}

/// A movement as PointsMoved carries it, and its owner's balance after it.
/// `entries` are this movement's, in line order.
fn exported(row: MovementRow, entries: &[EntryRow]) -> Result<(pb::Movement, i64), PointsError> {
    let balance_after = entries
        .iter()
        .rev()
        .find(|e| e.account == MEMBER_ACCOUNT && e.member_id == Some(row.member_id))
        .and_then(|e| e.balance_after)
        .ok_or_else(|| {
            // Every movement debits or credits its owner's account, and
            // the ledger writes that entry with the balance after it.
            PointsError::Internal(anyhow::anyhow!(
                "movement {} has no balance for its member's entry",
                row.movement_id
            ))
        })?;
    let movement = pb::Movement {
        movement_id: row.movement_id.to_string(),
        r#type: i32::from(row.r#type),
        member_id: row.member_id.to_string(),
        points: row.points,
        reason: row.reason,
        reference: row.reference,
        order_id: row.order_id,
        occurred_at: Some(timestamp(row.occurred_at)),
        recorded_at: Some(timestamp(row.recorded_at)),
        entries: entries
            .iter()
            .map(|e| pb::Entry {
                account: i32::from(e.account),
                member_id: e.member_id.map(|m| m.to_string()).unwrap_or_default(),
                points: e.points,
            })
            .collect(),
        related_movement_id: row
            .related_movement_id
            .map(|m| m.to_string())
            .unwrap_or_default(),
        earn_kind: i32::from(row.earn_kind),
        counterparty_member_id: row.counterparty.map(|m| m.to_string()).unwrap_or_default(),
    };
    Ok((movement, balance_after))
}

/// Where an export stands between two batches.
struct ExportState {
    points: Points,
    program: ProgramId,
    /// What to read; `after` moves with every batch.
    export: MovementExport,
    /// False once a batch came back short: the ledger is read to its end.
    more: bool,
}

impl Points {
    /// Checks the request and returns the export's stream of batches. A bad
    /// request fails here, before the stream starts; a failure while
    /// streaming ends the stream with that error, and the client resumes
    /// from the last `last_movement_id` it received.
    pub fn export_movements(
        &self,
        program: &ProgramId,
        req: &pb::ExportMovementsRequest,
    ) -> Result<
        impl Stream<Item = Result<pb::ExportMovementsResponse, PointsError>> + Send + 'static,
        PointsError,
    > {
        let export = movement_export(req)?;
        let state = ExportState {
            points: self.clone(),
            program: program.clone(),
            export,
            more: true,
        };
        Ok(stream::try_unfold(state, next_batch))
    }

    /// The next batch after `export.after`: movements with their entries,
    /// and each owner's balance after.
    async fn export_batch(
        &self,
        program: &ProgramId,
        export: &MovementExport,
    ) -> Result<Vec<(pb::Movement, i64)>, PointsError> {
        let (rows, entries) = {
            // Admitted like any request, and given back before the batch is
            // sent.
            let mut conn = self.db.acquire().await?;
            let rows = movement_rows(&mut conn, program.as_str(), export).await?;
            let ids: Vec<Uuid> = rows.iter().map(|r| r.movement_id).collect();
            let entries = if ids.is_empty() {
                Vec::new()
            } else {
                entry_rows(&mut conn, &ids).await?
            };
            (rows, entries)
        };
        rows.into_iter()
            .map(|row| {
                // Entries come sorted by movement id, as the rows do.
                let start = entries.partition_point(|e| e.movement_id < row.movement_id);
                let end = entries.partition_point(|e| e.movement_id <= row.movement_id);
                exported(row, &entries[start..end])
            })
            .collect()
    }
}

/// One step of the export: the next batch and the state after it, or the
/// end when the previous batch was the last.
async fn next_batch(
    mut state: ExportState,
) -> Result<Option<(pb::ExportMovementsResponse, ExportState)>, PointsError> {
    if !state.more {
        return Ok(None);
    }
    let batch = state
        .points
        .export_batch(&state.program, &state.export)
        .await?;
    let Some(last) = batch
        .last()
        .and_then(|(m, _)| Uuid::parse_str(&m.movement_id).ok())
    else {
        return Ok(None);
    };
    state.more = i64::try_from(batch.len()).is_ok_and(|n| n >= state.export.batch_size);
    state.export.after = last;
    let (movements, balances_after): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    let response = pb::ExportMovementsResponse {
        movements,
        last_movement_id: last.to_string(),
        balances_after,
    };
    tracing::debug!(
        movements = response.movements.len(),
        last = %last,
        "exported a batch of movements"
    );
    Ok(Some((response, state)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64, nanos: i32) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos })
    }

    fn fields(request: pb::ExportMovementsRequest) -> Vec<String> {
        movement_export(&request)
            .expect_err("refused")
            .fields()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn an_empty_request_exports_everything_from_the_start_in_batches_of_500() {
        let export = movement_export(&pb::ExportMovementsRequest::default()).unwrap();
        assert_eq!(
            export,
            MovementExport {
                after: Uuid::nil(),
                types: vec![],
                occurred_from: None,
                occurred_to: None,
                batch_size: 500,
            }
        );
    }

    #[test]
    fn a_full_request_is_read_field_by_field() {
        let after = Uuid::now_v7();
        let export = movement_export(&pb::ExportMovementsRequest {
            after_movement_id: after.to_string(),
            movement_types: vec![
                pb::MovementType::Redeem as i32,
                pb::MovementType::Earn as i32,
            ],
            occurred_from: ts(1_700_000_000, 1_500),
            occurred_to: ts(1_700_086_400, 0),
            batch_size: 5000,
        })
        .unwrap();
        assert_eq!(export.after, after);
        assert_eq!(export.types, [2, 1]);
        // Nanoseconds below a microsecond are dropped, as Postgres would.
        assert_eq!(
            export.occurred_from,
            DateTime::from_timestamp(1_700_000_000, 1_000)
        );
        assert_eq!(
            export.occurred_to,
            DateTime::from_timestamp(1_700_086_400, 0)
        );
        assert_eq!(export.batch_size, 5000);
    }

    #[test]
    fn every_bad_field_is_named() {
        let named = fields(pb::ExportMovementsRequest {
            after_movement_id: "nope".into(),
            movement_types: vec![1, 0, 42],
            occurred_from: ts(10, 0),
            occurred_to: ts(10, 0),
            batch_size: 5001,
        });
        assert_eq!(
            named,
            [
                "after_movement_id",
                "movement_types[1]",
                "movement_types[2]",
                "occurred_to",
                "batch_size",
            ]
        );
        assert_eq!(
            fields(pb::ExportMovementsRequest {
                batch_size: -1,
                ..Default::default()
            }),
            ["batch_size"]
        );
    }

    #[test]
    fn a_time_with_nanos_out_of_range_is_not_a_time() {
        for nanos in [-1, 1_000_000_000] {
            let mut v = Violations::new();
            assert_eq!(bound(ts(0, nanos).as_ref(), "occurred_from", &mut v), None);
            assert!(!v.is_empty(), "nanos {nanos}");
        }
        let mut v = Violations::new();
        assert_eq!(bound(None, "occurred_from", &mut v), None);
        assert!(v.is_empty());
    }
}
