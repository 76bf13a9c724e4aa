//! Bootstrap: history older than the streams' retention, read from the
//! owners' programme-wide exports and kept through the same functions as
//! live events, so a fact seen both ways counts once:
//!
//! - the member service's `ListMembers` for enrolment dates;
//! - its time-ordered `ExportActivities` stream for every activity
//!   (purchases kept once by order id, the rest by activity id);
//! - the points service's time-ordered `ExportMovements` stream for every
//!   movement (kept once by movement id), when its address is given.
//!
//! Run it as `laurel-analytics bootstrap` (a Kubernetes Job) after the
//! service has started consuming, so nothing falls between the export and
//! the stream. Each batch commits with its cursor (`bootstrap_cursors`:
//! `members`, `activities`, `movements`); a rerun goes on from there. Tier
//! history is not exported by its owner yet: it comes from the stream only.
//!
//! A member's `points_available` (for the next best offer) is taken from
//! the export's account total after each movement, unless a newer movement
//! already set it (`members.points_available_after`). The export does not
//! split that total into available, pending and held, so until the next
//! live movement it counts pending and held points too.

use std::time::Duration;

use futures::TryStreamExt;
use laurel_proto::{
    member::v1::{
        ExportActivitiesRequest, ListMembersRequest, member_service_client::MemberServiceClient,
    },
    points::v1::{ExportMovementsRequest, points_service_client::PointsServiceClient},
};
use sqlx::{PgConnection, PgPool};
use tonic::transport::Channel;
use uuid::Uuid;

use crate::{Analytics, facts, settings};

/// Items per export batch asked of the owners.
const EXPORT_BATCH: i32 = 1000;

/// What a bootstrap read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Members read.
    pub members: u64,
    /// Activities read (kept once whatever was seen before).
    pub activities: u64,
    /// Points movements read (kept once whatever was seen before); 0 when
    /// no points service was given.
    pub movements: u64,
}

/// Where to read from.
#[derive(Clone, Debug)]
pub struct Source {
    /// The member service.
    pub member_addr: String,
    /// Its API key (export needs the admin scope).
    pub api_key: Option<String>,
    /// The points service; `None` skips the movements.
    pub points_addr: Option<String>,
    /// Its API key (export needs the admin scope).
    pub points_api_key: Option<String>,
    /// The programme.
    pub program: String,
}

/// `message` for `program`, under `key` when there is one.
fn request<T>(program: &str, key: Option<&str>, message: T) -> anyhow::Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("x-laurel-program", program.parse()?);
    if let Some(key) = key {
        r.metadata_mut().insert("x-api-key", key.parse()?);
    }
    Ok(r)
}

async fn connect(addr: &str) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(addr.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

/// The programme's settings and where the export `of` stopped, to resume it.
async fn resume(
    db: &PgPool,
    program: &str,
    of: &str,
) -> anyhow::Result<(Option<settings::Settings>, String)> {
    let mut conn = db.acquire().await?;
    Ok((
        settings::read(&mut conn, program).await?,
        cursor(&mut conn, program, of).await?,
    ))
}

async fn cursor(conn: &mut PgConnection, program: &str, of: &str) -> sqlx::Result<String> {
    Ok(sqlx::query_scalar(
        "SELECT cursor FROM bootstrap_cursors WHERE program_id = $1 AND source = $2",
    )
    .bind(program)
    .bind(of)
    .fetch_optional(conn)
    .await?
    .unwrap_or_default())
}

async fn save(conn: &mut PgConnection, program: &str, of: &str, at: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO bootstrap_cursors (program_id, source, cursor, updated_at)
         VALUES ($1, $2, $3, now())
         ON CONFLICT (program_id, source) DO UPDATE SET cursor = EXCLUDED.cursor, updated_at = now()",
    )
    .bind(program)
    .bind(of)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Reads the programme's members, activities and (with a points service)
/// points movements into `db` (the analytics schema), each from where the
/// last run stopped.
pub async fn run(db: &PgPool, source: &Source) -> anyhow::Result<Report> {
    let mut client = MemberServiceClient::new(connect(&source.member_addr).await?);
    let mut report = Report {
        members: members(db, source, &mut client).await?,
        activities: activities(db, source, &mut client).await?,
        ..Report::default()
    };
    if let Some(addr) = &source.points_addr {
        let mut points = PointsServiceClient::new(connect(addr).await?);
        report.movements = movements(db, source, &mut points).await?;
    }
    Ok(report)
}

/// Enrolment dates, page by page; returns the members read.
async fn members(
    db: &PgPool,
    source: &Source,
    client: &mut MemberServiceClient<Channel>,
) -> anyhow::Result<u64> {
    let program = source.program.as_str();
    let mut read = 0;
    let mut token = cursor(&mut *db.acquire().await?, program, "members").await?;
    loop {
        let page = client
            .list_members(request(
                program,
                source.api_key.as_deref(),
                ListMembersRequest {
                    page_size: 500,
                    page_token: token.clone(),
                    ..Default::default()
                },
            )?)
            .await?
            .into_inner();
        let mut tx = db.begin().await?;
        for m in &page.members {
            let (Ok(id), Some(at)) = (Uuid::parse_str(&m.member_id), facts::time(&m.enrolled_at))
            else {
                continue;
            };
            sqlx::query(
                "INSERT INTO members (program_id, member_id, enrolled_at) VALUES ($1, $2, $3)
                 ON CONFLICT (program_id, member_id) DO UPDATE SET enrolled_at = EXCLUDED.enrolled_at",
            )
            .bind(program)
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            read += 1;
        }
        if page.next_page_token.is_empty() {
            tx.commit().await?;
            return Ok(read);
        }
        token = page.next_page_token;
        save(&mut tx, program, "members", &token).await?;
        tx.commit().await?;
    }
}

/// Every activity, in recorded order, batch by batch; returns the
/// activities read.
async fn activities(
    db: &PgPool,
    source: &Source,
    client: &mut MemberServiceClient<Channel>,
) -> anyhow::Result<u64> {
    let program = source.program.as_str();
    let (settings, after) = resume(db, program, "activities").await?;
    let mut stream = client
        .export_activities(request(
            program,
            source.api_key.as_deref(),
            ExportActivitiesRequest {
                after_activity_id: after,
                batch_size: EXPORT_BATCH,
                ..Default::default()
            },
        )?)
        .await?
        .into_inner();
    let mut read = 0;
    while let Some(batch) = stream.try_next().await? {
        let mut tx = db.begin().await?;
        for activity in batch.activities {
            let fallback = facts::time(&activity.recorded_at).unwrap_or_else(chrono::Utc::now);
            facts::activities::apply(&mut tx, program, activity, settings.as_ref(), fallback)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            read += 1;
        }
        save(&mut tx, program, "activities", &batch.last_activity_id).await?;
        tx.commit().await?;
    }
    Ok(read)
}

/// Every points movement, in recorded order, batch by batch, kept as a
/// PointsMoved event keeps it; returns the movements read.
async fn movements(
    db: &PgPool,
    source: &Source,
    client: &mut PointsServiceClient<Channel>,
) -> anyhow::Result<u64> {
    let program = source.program.as_str();
    let (settings, after) = resume(db, program, "movements").await?;
    let mut stream = client
        .export_movements(request(
            program,
            source.points_api_key.as_deref(),
            ExportMovementsRequest {
                after_movement_id: after,
                batch_size: EXPORT_BATCH,
                ..Default::default()
            },
        )?)
        .await?
        .into_inner();
    let mut read = 0;
    while let Some(batch) = stream.try_next().await? {
        let mut tx = db.begin().await?;
        let balances = batch.balances_after;
        for (i, movement) in batch.movements.into_iter().enumerate() {
            let fallback = facts::time(&movement.recorded_at).unwrap_or_else(chrono::Utc::now);
            // The account's total, as the module's documentation says.
            Analytics::keep_movement(
                &mut tx,
                program,
                movement,
                balances.get(i).copied(),
                settings.as_ref(),
                fallback,
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            read += 1;
        }
        save(&mut tx, program, "movements", &batch.last_movement_id).await?;
        tx.commit().await?;
    }
    Ok(read)
}
