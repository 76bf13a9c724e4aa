//! Bootstrap: history older than the streams' retention, read from the
//! member service's programme-wide exports (`ListMembers` for enrolment
//! dates, the time-ordered `ExportActivities` stream for every activity)
//! and kept through the same functions as live events, so an activity
//! seen both ways counts once (purchases by order id, the rest by
//! activity id).
//!
//! Run it as `laurel-analytics bootstrap` (a Kubernetes Job) after the
//! service has started consuming, so nothing falls between the export and
//! the stream. Each batch commits with its cursor; a rerun goes on from
//! there. Points movements and tier history are not exported by their
//! owners yet: they come from the streams only.

use std::time::Duration;

use futures::TryStreamExt;
use laurel_proto::member::v1::{
    ExportActivitiesRequest, ListMembersRequest, member_service_client::MemberServiceClient,
};
use sqlx::{PgConnection, PgPool};
use tonic::transport::Channel;
use uuid::Uuid;

use crate::{facts, settings};

/// What a bootstrap read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Members read.
    pub members: u64,
    /// Activities read (kept once whatever was seen before).
    pub activities: u64,
}

/// Where to read from.
#[derive(Clone, Debug)]
pub struct Source {
    /// The member service.
    pub member_addr: String,
    /// Its API key (export needs the admin scope).
    pub api_key: Option<String>,
    /// The programme.
    pub program: String,
}

fn request<T>(source: &Source, message: T) -> anyhow::Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("x-laurel-program", source.program.parse()?);
    if let Some(key) = &source.api_key {
        r.metadata_mut().insert("x-api-key", key.parse()?);
    }
    Ok(r)
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

/// Reads the programme's members and activities into `db` (the analytics
/// schema), from where the last run stopped.
pub async fn run(db: &PgPool, source: &Source) -> anyhow::Result<Report> {
    let channel = Channel::from_shared(source.member_addr.clone())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    let mut client = MemberServiceClient::new(channel);
    let program = source.program.as_str();
    let mut report = Report::default();

    // Enrolment dates, page by page.
    let mut conn = db.acquire().await?;
    let mut token = cursor(&mut conn, program, "members").await?;
    loop {
        let page = client
            .list_members(request(
                source,
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
            report.members += 1;
        }
        if page.next_page_token.is_empty() {
            tx.commit().await?;
            break;
        }
        token = page.next_page_token;
        save(&mut tx, program, "members", &token).await?;
        tx.commit().await?;
    }

    // Every activity, in recorded order, batch by batch.
    let settings = settings::read(&mut conn, program).await?;
    let after = cursor(&mut conn, program, "activities").await?;
    drop(conn);
    let mut stream = client
        .export_activities(request(
            source,
            ExportActivitiesRequest {
                after_activity_id: after,
                batch_size: 1000,
                ..Default::default()
            },
        )?)
        .await?
        .into_inner();
    while let Some(batch) = stream.try_next().await? {
        let mut tx = db.begin().await?;
        for activity in batch.activities {
            let fallback = facts::time(&activity.recorded_at).unwrap_or_else(chrono::Utc::now);
            facts::activities::apply(&mut tx, program, activity, settings.as_ref(), fallback)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            report.activities += 1;
        }
        save(&mut tx, program, "activities", &batch.last_activity_id).await?;
        tx.commit().await?;
    }
    Ok(report)
}
