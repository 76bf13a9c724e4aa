//! Use cases of the gRPC API: a member's tier (from the member card when
//! it is current), manual assignments, the tier history.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use laurel_proto::tier::v1 as pb;
use laurel_runtime::{
    context::{ProgramId, RequestContext},
    error::Violations,
    idempotency::{Begun, Plain, RequestKey, check_request_id},
    pagination,
};
use prost::Message;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{members::Known, store};
use crate::{
    Tiers,
    error::TierError,
    qualification::step::{ranges, view},
};

/// Longest operator's reason.
const MAX_REASON: usize = 500;

fn member_id(raw: &str, v: &mut Violations) -> Uuid {
    match Uuid::parse_str(raw.trim()) {
        Ok(id) if !id.is_nil() => id,
        _ => {
            v.add("member_id", "required: a member id (UUID)");
            Uuid::nil()
        }
    }
}

fn time(t: &Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.as_ref()
        .and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .and_then(|at| DateTime::from_timestamp_micros(at.timestamp_micros()))
}

/// Whether a cached answer still holds at `now` under ladder `version`.
fn current(tier: &pb::MemberTier, now: DateTime<Utc>, version: i64) -> bool {
    tier.ladder_version == version && time(&tier.valid_until).is_some_and(|until| now < until)
}

impl Tiers {
    /// `GetMemberTier`.
    pub(crate) async fn get_member_tier(
        &self,
        ctx: &RequestContext,
        request: &pb::GetMemberTierRequest,
    ) -> Result<pb::GetMemberTierResponse, TierError> {
        let mut v = Violations::new();
        let member = member_id(&request.member_id, &mut v);
        v.finish()?;
        Ok(pb::GetMemberTierResponse {
            tier: Some(self.member_tier(&ctx.program, member).await?),
        })
    }

    /// The version of the ladder in force, from memory when known.
    async fn ladder_version(&self, program: &ProgramId) -> Result<i64, TierError> {
        if let Some(cached) = self.local.recent_ladder(program.as_str()) {
            return Ok(cached.map_or(0, |l| l.rules.version));
        }
        let mut conn = self.db.acquire().await?;
        Ok(self
            .ladder(&mut conn, program.as_str(), None)
            .await?
            .map_or(0, |l| l.rules.version))
    }

    /// A member's tier: this replica's copy of the card, else the card in
    /// Redis, else computed from Postgres (then the card is filled at the
    /// version read, and that version checked again). A cached answer is
    /// served only while its `valid_until` has not passed and the ladder in
    /// force is the one it was computed with.
    pub async fn member_tier(
        &self,
        program: &ProgramId,
        member: Uuid,
    ) -> Result<pb::MemberTier, TierError> {
        let now = self.now();
        let version = self.ladder_version(program).await?;
        if let Some(t) = self.cards.local(program, &member)
            && current(&t, now, version)
        {
            return Ok((*t).clone());
        }
        if let Some(stored) = self.cards.shared(program, &member).await
            && let Ok(t) = pb::MemberTier::decode(stored.value.as_slice())
            && current(&t, now, version)
        {
            self.cards
                .keep(program, &member, stored.version, Arc::new(t.clone()));
            return Ok(t);
        }
        let mut conn = self.db.acquire().await?;
        let mut row = store::read(&mut conn, program.as_str(), member).await?;
        if row.is_none() {
            drop(conn);
            self.first_seen(program.as_str(), member).await?;
            conn = self.db.acquire().await?;
            row = store::read(&mut conn, program.as_str(), member).await?;
        }
        // A merged member answers with the survivor's tier.
        for _ in 0..8 {
            match &row {
                Some(r) if r.status == "merged" && r.merged_into.is_some() => {
                    row = store::read(&mut conn, program.as_str(), r.merged_into.unwrap_or(member))
                        .await?;
                }
                _ => break,
            }
        }
        let Some(row) = row.filter(|r| r.status == "active") else {
            return Err(TierError::MemberNotFound);
        };
        let answer = self.view_of(&mut conn, program.as_str(), &row).await?;
        if row.member != member {
            return Ok(answer);
        }
        let filled = self
            .cards
            .fill(program, &member, row.version, &answer.encode_to_vec())
            .await;
        let again: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM members WHERE program_id = $1 AND member_id = $2",
        )
        .bind(program.as_str())
        .bind(member)
        .fetch_optional(&mut *conn)
        .await?;
        match again {
            Some(v) if v == row.version && filled => {
                self.cards
                    .keep(program, &member, row.version, Arc::new(answer.clone()));
            }
            Some(v) if v != row.version => {
                self.cards.invalidate(program, &member, v).await;
            }
            _ => {}
        }
        Ok(answer)
    }

    /// The answer for a stored member at now.
    pub(crate) async fn view_of(
        &self,
        conn: &mut PgConnection,
        program: &str,
        row: &store::Stored,
    ) -> Result<pb::MemberTier, TierError> {
        let now = self.now();
        let Some(ladder) = self.ladder(conn, program, row.state.ladder_version).await? else {
            return Ok(pb::MemberTier {
                member_id: row.member.to_string(),
                ..Default::default()
            });
        };
        let rules = &ladder.rules;
        let r = ranges(rules, &row.state, now);
        let sums = store::sums(conn, program, &rules.currency, &[(row.member, r)])
            .await?
            .remove(&row.member)
            .unwrap_or_default();
        Ok(view(rules, &row.member.to_string(), &row.state, &sums, now))
    }

    /// A member this service has not heard of: asks the member service
    /// once, then adds the member and evaluates it.
    async fn first_seen(&self, program: &str, member: Uuid) -> Result<(), TierError> {
        let enrolled_at = match self.directory()?.ask(program, member).await? {
            Known::Enrolled(at) => at,
            Known::Erased => return Err(TierError::MemberNotFound),
        };
        let mut tx = self.db.begin().await?;
        store::insert(&mut tx, program, member, enrolled_at).await?;
        let version = self
            .advance(
                &mut tx,
                program,
                member,
                pb::TierChangeReason::Qualified,
                false,
            )
            .await?;
        tx.commit().await?;
        self.invalidate(program, member, version).await;
        Ok(())
    }

    /// `AssignTier`.
    pub(crate) async fn assign_tier(
        &self,
        ctx: &RequestContext,
        request: &pb::AssignTierRequest,
    ) -> Result<pb::AssignTierResponse, TierError> {
        let now = self.now();
        let mut v = Violations::new();
        check_request_id(&request.request_id, &mut v);
        let member = member_id(&request.member_id, &mut v);
        let code = request.tier_code.trim();
        v.check(code.is_empty(), "tier_code", "required");
        let reason = request.reason.trim();
        if reason.is_empty() {
            v.add("reason", "required: why the tier is assigned");
        } else {
            v.check(
                reason.chars().count() > MAX_REASON,
                "reason",
                format!("at most {MAX_REASON} characters"),
            );
        }
        match time(&request.until) {
            None => v.add("until", "required: when the assignment ends"),
            Some(until) => v.check(until <= now, "until", "must be in the future"),
        }
        v.finish()?;
        let until = time(&request.until).expect("checked");
        let program = ctx.program.as_str();
        let known = store::read(&mut *self.db.acquire().await?, program, member).await?;
        if known.is_none() {
            self.first_seen(program, member).await?;
        }
        let key = RequestKey::new(ctx, "AssignTier", &request.request_id);
        match self
            .idempotency
            .begin(&self.db, key, request, Plain)
            .await?
        {
            Begun::Replay(r) => Ok(r),
            Begun::Fresh(mut fresh) => {
                let tx = fresh.tx();
                let Some(ladder) = self.ladder(tx, program, None).await? else {
                    return Err(TierError::NoLadder);
                };
                if ladder.rules.rank(code).is_none() {
                    return Err(TierError::field(
                        "tier_code",
                        "not a tier of the ladder in force",
                    ));
                }
                match store::lock(tx, program, member).await? {
                    Some(r) if r.status == "active" => {}
                    _ => return Err(TierError::MemberNotFound),
                }
                sqlx::query(
                    "UPDATE members SET manual_tier = $3, manual_until = $4, manual_note = $5
                     WHERE program_id = $1 AND member_id = $2",
                )
                .bind(program)
                .bind(member)
                .bind(code)
                .bind(until)
                .bind(reason)
                .execute(&mut *tx)
                .await?;
                let version = self
                    .advance(tx, program, member, pb::TierChangeReason::Manual, false)
                    .await?;
                let row = store::read(tx, program, member)
                    .await?
                    .ok_or(TierError::MemberNotFound)?;
                let tier = self.view_of(tx, program, &row).await?;
                let response = pb::AssignTierResponse { tier: Some(tier) };
                fresh.commit(&response, Some(member)).await?;
                self.invalidate(program, member, version).await;
                Ok(response)
            }
        }
    }

    /// `ListTierHistory`.
    pub(crate) async fn list_tier_history(
        &self,
        ctx: &RequestContext,
        request: &pb::ListTierHistoryRequest,
    ) -> Result<pb::ListTierHistoryResponse, TierError> {
        let mut v = Violations::new();
        let member = member_id(&request.member_id, &mut v);
        let (limit, after) = pagination::page(
            request.page_size,
            &request.page_token,
            |p| {
                let (micros, id) = p.split_once('|')?;
                Some((
                    DateTime::from_timestamp_micros(micros.parse().ok()?)?,
                    Uuid::parse_str(id).ok()?,
                ))
            },
            &mut v,
        );
        v.finish()?;
        let limit = limit.min(100);
        let mut conn = self.db.acquire().await?;
        #[allow(clippy::type_complexity)]
        let rows: Vec<(
            Uuid,
            Option<String>,
            String,
            String,
            Option<String>,
            DateTime<Utc>,
            Option<i64>,
        )> = sqlx::query_as(
            "SELECT id, previous_tier, tier_code, reason, note, effective_at, ladder_version
                 FROM tier_history
                 WHERE program_id = $1 AND member_id = $2
                   AND ($3::timestamptz IS NULL OR (effective_at, id) < ($3, $4))
                 ORDER BY effective_at DESC, id DESC LIMIT $5",
        )
        .bind(ctx.program.as_str())
        .bind(member)
        .bind(after.map(|a| a.0))
        .bind(after.map(|a| a.1))
        .bind(limit + 1)
        .fetch_all(&mut *conn)
        .await?;
        let more = rows.len() as i64 > limit;
        let rows = &rows[..rows.len().min(limit as usize)];
        let next = match rows.last() {
            Some(last) if more => {
                pagination::encode_token(&format!("{}|{}", last.5.timestamp_micros(), last.0))
            }
            _ => String::new(),
        };
        use pb::TierChangeReason as R;
        let reason = |word: &str| match word {
            "qualified" => R::Qualified,
            "downgraded" => R::Downgraded,
            "manual" => R::Manual,
            "manual_ended" => R::ManualEnded,
            "paid_plan" => R::PaidPlan,
            "merge" => R::Merge,
            "ladder_changed" => R::LadderChanged,
            _ => R::Unspecified,
        };
        Ok(pb::ListTierHistoryResponse {
            entries: rows
                .iter()
                .map(|r| pb::TierHistoryEntry {
                    previous_tier_code: r.1.clone().unwrap_or_default(),
                    tier_code: r.2.clone(),
                    reason: reason(&r.3) as i32,
                    note: r.4.clone().unwrap_or_default(),
                    effective_at: Some(super::ts(r.5)),
                    ladder_version: r.6.unwrap_or_default(),
                })
                .collect(),
            next_page_token: next,
        })
    }
}
