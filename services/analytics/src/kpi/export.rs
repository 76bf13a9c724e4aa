//! `ExportReport`: a report as CSV (RFC 4180, header first), streamed in
//! chunks of about [`CHUNK`] bytes.
//!
//! The request is checked, the settings read and a pool connection taken
//! before the stream starts, so those failures are the call's status. A
//! task then writes the report into a bounded channel: when the client
//! reads slowly the channel fills, the task waits, and (for the member
//! report) the rows wait in Postgres' socket, so memory stays flat however
//! many members there are. A client that goes away ends the task and frees
//! the connection. A failure half-way ends the stream with its status.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use chrono_tz::Tz;
use futures::StreamExt;
use laurel_proto::analytics::v1 as pb;
use laurel_runtime::{context::RequestContext, db::Conn, error::Violations};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use uuid::Uuid;

use super::{
    cohort::Cohort,
    csv::Csv,
    period::day_start,
    request::{CohortRequest, KpiRequest},
    sql::{self, Point},
};
use crate::{Analytics, error::AnalyticsError, rfm::stored::RunScores, settings::Settings};

/// Bytes a chunk holds before it is sent (a record may take it a little
/// past).
pub const CHUNK: usize = 64 * 1024;

/// Chunks waiting for the client before the writer waits.
const QUEUED_CHUNKS: usize = 4;

/// The chunks of a report, in order.
pub type Chunks = ReceiverStream<Result<pb::ExportReportResponse, Status>>;

/// Header of `REPORT_KPI`.
pub const KPI_HEADER: [&str; 4] = ["period_start", "value", "numerator", "denominator"];
/// Header of `REPORT_COHORTS`.
pub const COHORT_HEADER: [&str; 5] = ["cohort_start", "members", "period", "active", "retention"];
/// Header of `REPORT_MEMBERS`.
pub const MEMBER_HEADER: [&str; 12] = [
    "member_id",
    "enrolled_at",
    "tier_code",
    "orders",
    "purchase_days",
    "net_spend_minor",
    "points_earned",
    "points_redeemed",
    "rfm_segment",
    "lifecycle_stage",
    "historical_clv_minor",
    "churn_score",
];
/// Header of `REPORT_RFM_GRID`.
pub const RFM_GRID_HEADER: [&str; 3] = ["recency", "frequency_monetary", "members"];

/// Writes CSV records into a channel, a chunk at a time.
struct Writer {
    csv: Csv,
    tx: mpsc::Sender<Result<pb::ExportReportResponse, Status>>,
}

impl Writer {
    fn new(tx: mpsc::Sender<Result<pb::ExportReportResponse, Status>>, header: &[&str]) -> Self {
        let mut csv = Csv::with_capacity(CHUNK + 1024);
        csv.record(header);
        Self { csv, tx }
    }

    /// Sends the buffer once it holds a chunk; `false` when the client
    /// went away.
    async fn flush_full(&mut self) -> bool {
        self.csv.len() < CHUNK || self.send().await
    }

    async fn send(&mut self) -> bool {
        let chunk = pb::ExportReportResponse {
            csv: self.csv.take(),
        };
        self.tx.send(Ok(chunk)).await.is_ok()
    }

    /// Sends what is left.
    async fn finish(mut self) {
        if !self.csv.is_empty() {
            self.send().await;
        }
    }

    /// Ends the stream with `error` (what was written before it is sent
    /// first, so the client sees where it stopped).
    async fn fail(mut self, error: AnalyticsError) {
        tracing::warn!(%error, "export failed half-way");
        if !self.csv.is_empty() && !self.send().await {
            return;
        }
        let _ = self.tx.send(Err(error.into())).await;
    }
}

/// A channel and the stream reading it.
fn channel() -> (
    mpsc::Sender<Result<pb::ExportReportResponse, Status>>,
    Chunks,
) {
    let (tx, rx) = mpsc::channel(QUEUED_CHUNKS);
    (tx, ReceiverStream::new(rx))
}

/// Local midnight of `day` with its offset, for example
/// `2026-03-01T00:00:00+01:00`.
fn local_start(tz: Tz, day: NaiveDate) -> String {
    day_start(tz, day)
        .with_timezone(&tz)
        .to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Streams records already computed (KPI points, cohort cells: both
/// bounded by the request checks).
fn stream_records<T: Send + 'static>(
    header: &'static [&'static str],
    records: Vec<T>,
    write: impl Fn(&mut Csv, &T) + Send + 'static,
) -> Chunks {
    let (tx, chunks) = channel();
    tokio::spawn(async move {
        let mut out = Writer::new(tx, header);
        for record in records {
            write(&mut out.csv, &record);
            if !out.flush_full().await {
                return;
            }
        }
        out.finish().await;
    });
    chunks
}

fn kpi_records(tz: Tz, points: Vec<Point>) -> Chunks {
    stream_records(&KPI_HEADER, points, move |csv, p| {
        csv.plain(local_start(tz, p.start))
            .plain(p.value)
            .plain(p.numerator)
            .plain(p.denominator)
            .end();
    })
}

fn cohort_records(tz: Tz, cohorts: Vec<Cohort>) -> Chunks {
    stream_records(&COHORT_HEADER, cohorts, move |csv, c| {
        let start = local_start(tz, c.start);
        for (k, (active, retention)) in c.active.iter().zip(c.retention()).enumerate() {
            csv.plain(&start)
                .plain(c.members)
                .plain(k)
                .plain(active)
                .plain(retention)
                .end();
        }
    })
}

/// A member's row: id, enrolment, tier, spend figures in the programme's
/// currency, points, and the computed figures when they exist (the RFM
/// segment is looked up in the stored run as the row is written).
type MemberRow = (
    Uuid,
    DateTime<Utc>,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    Option<i16>,
    Option<i64>,
    Option<i16>,
);

/// Every member not merged or erased, by id.
const MEMBERS_SQL: &str = "
    SELECT m.member_id, m.enrolled_at, m.tier_code,
           COALESCE(s.orders, 0), COALESCE(s.purchase_days, 0),
           COALESCE(s.gross_minor - s.refunded_minor, 0),
           m.points_earned, m.points_redeemed,
           v.stage, v.historical_clv_minor, v.churn_score
    FROM members m
    LEFT JOIN member_spend s ON s.program_id = m.program_id AND s.member_id = m.member_id
                            AND s.currency_code = $2
    LEFT JOIN member_values v ON v.program_id = m.program_id AND v.member_id = m.member_id
    WHERE m.program_id = $1 AND m.status = 'active'
    ORDER BY m.member_id";

/// An enum's proto name without its prefix ("" for UNSPECIFIED).
fn name_without(prefix: &str, name: &'static str) -> &'static str {
    match name.strip_prefix(prefix) {
        Some("UNSPECIFIED") | None => "",
        Some(rest) => rest,
    }
}

fn write_member(csv: &mut Csv, row: MemberRow, scores: Option<&RunScores>) {
    let (id, enrolled_at, tier, orders, days, net, earned, redeemed, stage, clv, churn) = row;
    let segment = scores
        .and_then(|r| r.get(id))
        .and_then(|s| pb::RfmSegment::try_from(i32::from(s.segment)).ok())
        .map_or("", |s| name_without("RFM_SEGMENT_", s.as_str_name()));
    let stage = stage
        .and_then(|s| pb::LifecycleStage::try_from(i32::from(s)).ok())
        .map_or("", |s| name_without("LIFECYCLE_STAGE_", s.as_str_name()));
    csv.plain(id)
        .plain(enrolled_at.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .text(&tier)
        .plain(orders)
        .plain(days)
        .plain(net)
        .plain(earned)
        .plain(redeemed)
        .plain(segment)
        .plain(stage)
        .optional(clv)
        .optional(churn)
        .end();
}

/// Analyzes the tables of the member report when `members` or
/// `member_spend` has no statistics yet. Right after a bulk load (a
/// bootstrap from exports, a test seed) and before autovacuum gets to
/// them, Postgres takes both for one-row tables and joins them by a nested
/// loop reading every spend row for each member: 20,000 members took 20 s
/// that way, against 30 ms with statistics (a hash join).
async fn analyze_if_never(conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    let analyzed: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT tablename) FROM pg_stats
         WHERE schemaname = current_schema() AND tablename IN ('members', 'member_spend')",
    )
    .fetch_one(&mut *conn)
    .await?;
    if analyzed < 2 {
        sqlx::query("ANALYZE members, member_spend, member_values")
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Streams every member's row from Postgres through `conn`, with their
/// segment in `scores` (the stored RFM run, held while the report runs).
fn member_records(
    mut conn: Conn,
    program: String,
    currency: String,
    scores: Option<Arc<RunScores>>,
) -> Chunks {
    let (tx, chunks) = channel();
    tokio::spawn(async move {
        let mut out = Writer::new(tx, &MEMBER_HEADER);
        let mut rows = sqlx::query_as::<_, MemberRow>(MEMBERS_SQL)
            .bind(&program)
            .bind(&currency)
            .fetch(&mut *conn);
        while let Some(row) = rows.next().await {
            match row {
                Ok(row) => write_member(&mut out.csv, row, scores.as_deref()),
                Err(e) => return out.fail(e.into()).await,
            }
            if !out.flush_full().await {
                return;
            }
        }
        drop(rows);
        out.finish().await;
    });
    chunks
}

/// The latest RFM run's grid: every (recency, FM) cell of its levels, by
/// recency then FM, with the members of the stored run in it (members
/// merged away or erased since the run left out).
fn rfm_grid(
    bins: i32,
    scores: Option<&RunScores>,
    gone: &[Uuid],
) -> Result<Vec<(i32, i32, i64)>, AnalyticsError> {
    let levels = usize::try_from(bins)
        .ok()
        .filter(|b| (1..=usize::from(u8::MAX)).contains(b))
        .ok_or_else(|| AnalyticsError::Internal(anyhow::anyhow!("an RFM run of {bins} bins")))?;
    let cell = |recency: u8, fm: u8| {
        let (r, f) = (usize::from(recency), usize::from(fm));
        (r <= levels && f <= levels).then(|| (r - 1) * levels + f - 1)
    };
    let mut counts = vec![0i64; levels * levels];
    if let Some(scores) = scores {
        for s in scores.scores() {
            if let Some(at) = cell(s.recency, s.fm) {
                counts[at] += 1;
            }
        }
        for s in gone.iter().filter_map(|&m| scores.get(m)) {
            if let Some(at) = cell(s.recency, s.fm) {
                counts[at] -= 1;
            }
        }
    }
    let mut grid = Vec::with_capacity(counts.len());
    for r in 1..=bins {
        for f in 1..=bins {
            grid.push((r, f, counts[grid.len()]));
        }
    }
    Ok(grid)
}

impl Analytics {
    /// `ExportReport`.
    pub(crate) async fn export_report(
        &self,
        ctx: &RequestContext,
        request: &pb::ExportReportRequest,
    ) -> Result<Chunks, AnalyticsError> {
        let pb::ExportReportRequest {
            report,
            kpi,
            cohorts,
        } = request;
        let mut v = Violations::new();
        let report = pb::Report::try_from(*report).unwrap_or(pb::Report::Unspecified);
        let (mut kpi_request, mut cohort_request) = (None, None);
        match report {
            pb::Report::Unspecified => v.add("report", "required: a report"),
            pb::Report::Kpi => match kpi {
                Some(k) => kpi_request = KpiRequest::check(k, "kpi.", &mut v),
                None => v.add("kpi", "required for REPORT_KPI"),
            },
            pb::Report::Cohorts => match cohorts {
                Some(c) => cohort_request = CohortRequest::check(c, "cohorts.", &mut v),
                None => v.add("cohorts", "required for REPORT_COHORTS"),
            },
            pb::Report::Members | pb::Report::RfmGrid => {}
        }
        v.finish()?;
        let program = ctx.program.as_str();
        let mut conn = self.db.acquire().await?;
        let settings: Settings = self.required_settings(&mut conn, program).await?;
        let tz = settings.tz;
        match (report, kpi_request, cohort_request) {
            (pb::Report::Kpi, Some(r), _) => {
                let window = r.window(tz)?;
                let points =
                    sql::series(&mut conn, program, &settings, r.kpi, window, &r.filter).await?;
                Ok(kpi_records(tz, points))
            }
            (pb::Report::Cohorts, _, Some(r)) => {
                let cohorts = self.cohorts(&mut conn, program, &settings, &r).await?;
                Ok(cohort_records(tz, cohorts))
            }
            (pb::Report::Members, _, _) => {
                analyze_if_never(&mut conn).await?;
                let scores = self.rfm_scores(&mut conn, program).await?;
                Ok(member_records(
                    conn,
                    program.to_owned(),
                    settings.currency.clone(),
                    scores,
                ))
            }
            (pb::Report::RfmGrid, _, _) => {
                let bins: Option<i32> = sqlx::query_scalar(
                    "SELECT bins FROM rfm_runs WHERE program_id = $1
                     ORDER BY created_at DESC LIMIT 1",
                )
                .bind(program)
                .fetch_optional(&mut *conn)
                .await?;
                let bins = bins.ok_or_else(|| {
                    AnalyticsError::not_computed("NO_RFM_RUN", "no RFM run yet: call RecomputeRfm")
                })?;
                let scores = self.rfm_scores(&mut conn, program).await?;
                let gone: Vec<Uuid> = match &scores {
                    Some(_) => {
                        sqlx::query_scalar(
                            "SELECT member_id FROM members WHERE program_id = $1 AND status <> 'active'",
                        )
                        .bind(program)
                        .fetch_all(&mut *conn)
                        .await?
                    }
                    None => Vec::new(),
                };
                let grid = rfm_grid(bins, scores.as_deref(), &gone)?;
                Ok(stream_records(&RFM_GRID_HEADER, grid, |csv, (r, fm, n)| {
                    csv.plain(r).plain(fm).plain(n).end();
                }))
            }
            _ => Err(AnalyticsError::field("report", "required: a report")),
        }
    }
}
