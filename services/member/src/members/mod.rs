//! The member service's use cases, one module each: each runs one Postgres
//! transaction that holds the change, its outbox event and its idempotency
//! record, then invalidates the member card in Redis. Sealing personal data
//! and mapping rows to the wire live in `sealing`.

mod card;
pub(crate) use card::{PointsLink, TierLink};
mod links;
pub use links::{
    DEFAULT_LINK_TIMEOUT, DEFAULT_POINTS_ADDR, DEFAULT_TIER_ADDR, LinkSettings, caller_deadline,
    link_budget, parse_grpc_timeout,
};
mod enrol;
mod erase;
mod export;
mod export_activities;
mod get;
pub(crate) use get::identity_cache;
mod identities;
mod list;
mod list_activities;
mod merge;
mod record_activity;
mod sealing;
mod update;

use chrono::{DateTime, Utc};
use laurel_proto::member::v1 as pb;
use laurel_runtime::{
    card::Cards,
    clock::SharedClock,
    context::{ProgramId, RequestContext},
    db::Db,
    events::outbox::{self, NewEvent},
    idempotency::{Begun, Idempotency, RequestKey},
};
use prost::{Message, Name};
use sqlx::PgConnection;
use uuid::Uuid;

use self::sealing::SealedResponses;
pub use self::sealing::strip_free_text;
use crate::{
    error::MemberError,
    pii::Pii,
    repo::{self, MemberRow, status},
    requests::CheckContext,
};

/// Event source and stream name of this service.
pub const SOURCE: &str = "member";

type Result<T> = std::result::Result<T, MemberError>;

/// The member service's state.
#[derive(Clone, Debug)]
pub struct Members {
    pub(crate) db: Db,
    pub(crate) cards: Cards<pb::Member>,
    pub(crate) identities: get::IdentityCache,
    pub(crate) idempotency: Idempotency,
    pub(crate) pii: Pii,
    pub(crate) clock: SharedClock,
    pub(crate) phone_region: Option<phonenumber::country::Id>,
    pub(crate) points: PointsLink,
    /// The tier field's owner; none when no tier service is configured.
    pub(crate) tier: Option<TierLink>,
    /// The server's own limit on a request: no caller's deadline is later.
    pub(crate) request_timeout: std::time::Duration,
}

fn status_name(code: i16) -> &'static str {
    match code {
        status::MERGED => "merged",
        status::ERASED => "erased",
        status::SUSPENDED => "suspended",
        _ => "active",
    }
}

impl Members {
    /// What request checks need.
    pub fn check_context(&self) -> CheckContext {
        CheckContext {
            now: self.clock.now(),
            phone_region: self.phone_region,
        }
    }

    /// Loads a member as stored (no redirect for merged members).
    async fn load(
        &self,
        conn: &mut PgConnection,
        program: &ProgramId,
        id: Uuid,
    ) -> Result<Option<(MemberRow, pb::Member)>> {
        let Some(row) = repo::member(conn, program.as_str(), id, false).await? else {
            return Ok(None);
        };
        let identities = repo::identities(conn, program.as_str(), &[id]).await?;
        let consents: Vec<_> = repo::consents(conn, program.as_str(), &[id])
            .await?
            .into_iter()
            .map(Into::into)
            .collect();
        let member = self.to_proto(program, &row, &identities, &consents)?;
        Ok(Some((row, member)))
    }

    /// Tells Redis and every replica a member's card changed at `version`
    /// (the relay repeats it if Redis is away).
    async fn invalidate(&self, program: &ProgramId, id: Uuid, version: i64) {
        self.cards.invalidate(program, &id, version).await;
    }

    /// Opens the effect's transaction under the request's idempotency key;
    /// the stored response is sealed (it holds personal data).
    async fn begin_idempotent(
        &self,
        ctx: &RequestContext,
        operation: &'static str,
        request_id: &str,
        req: &impl Message,
    ) -> Result<Begun<pb::Member, SealedResponses<'_>>> {
        let key = RequestKey::new(ctx, operation, request_id);
        Ok(self
            .idempotency
            .begin(&self.db, key, req, SealedResponses(&self.pii))
            .await?)
    }

    async fn emit<P: Message + Name>(
        &self,
        tx: &mut PgConnection,
        program: &ProgramId,
        member: Uuid,
        occurred_at: DateTime<Utc>,
        card_version: Option<i64>,
        payload: &P,
    ) -> Result<()> {
        self.emit_about(
            tx,
            program,
            Some(member),
            occurred_at,
            card_version,
            payload,
        )
        .await
    }

    /// Writes an event to the outbox; `member` is `None` for an event about
    /// no member (a guest's purchase), which takes no member sequence.
    async fn emit_about<P: Message + Name>(
        &self,
        tx: &mut PgConnection,
        program: &ProgramId,
        member: Option<Uuid>,
        occurred_at: DateTime<Utc>,
        card_version: Option<i64>,
        payload: &P,
    ) -> Result<()> {
        outbox::enqueue(
            tx,
            SOURCE,
            NewEvent {
                program,
                member_id: member,
                occurred_at,
                recorded_at: self.clock.now(),
                card_version,
                payload,
            },
        )
        .await?;
        Ok(())
    }

    /// Runs a change to one existing member under idempotency: locks the row,
    /// applies `change`, bumps the version, emits, stores the response and
    /// invalidates the card.
    async fn change_member<F>(
        &self,
        ctx: &RequestContext,
        operation: &'static str,
        request_id: &str,
        req: &impl Message,
        id: Uuid,
        change: F,
    ) -> Result<pb::Member>
    where
        F: for<'c> FnOnce(
            &'c Self,
            &'c mut PgConnection,
            &'c mut MemberRow,
        ) -> futures::future::BoxFuture<'c, Result<()>>,
    {
        let program = &ctx.program;
        let mut fresh = match self
            .begin_idempotent(ctx, operation, request_id, req)
            .await?
        {
            Begun::Replay(member) => return Ok(member),
            Begun::Fresh(fresh) => fresh,
        };
        let tx = fresh.tx();
        let mut row = repo::member(tx, program.as_str(), id, true)
            .await?
            .ok_or(MemberError::MemberNotFound)?;
        if row.status == status::MERGED || row.status == status::ERASED {
            return Err(MemberError::NotActive(status_name(row.status)));
        }
        // The change sees the version it produces, for its event.
        row.version += 1;
        row.updated_at = self.clock.now();
        change(self, &mut *tx, &mut row).await?;
        repo::save_member(tx, program.as_str(), &row).await?;
        let (_, member) = self
            .load(tx, program, id)
            .await?
            .ok_or(MemberError::MemberNotFound)?;
        fresh.commit(&member, Some(id)).await?;
        self.invalidate(program, id, row.version).await;
        Ok(member)
    }
}
