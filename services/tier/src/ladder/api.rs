//! Use cases of the gRPC API: publishing a ladder version (which starts a
//! re-evaluation of every member), reading versions and re-evaluations.

use chrono::{DateTime, Utc};
use laurel_proto::tier::v1 as pb;
use laurel_runtime::{
    context::RequestContext,
    error::Violations,
    idempotency::{Begun, Plain, RequestKey, check_request_id},
};
use prost::Message;
use sqlx::Row;
use uuid::Uuid;

use super::validate::validate;
use crate::{Tiers, error::TierError, tiers::ts};

fn reevaluation(r: &sqlx::postgres::PgRow) -> pb::Reevaluation {
    let state = match r.get::<String, _>("state").as_str() {
        "running" => pb::ReevaluationState::Running,
        "done" => pb::ReevaluationState::Done,
        _ => pb::ReevaluationState::Superseded,
    };
    pb::Reevaluation {
        reevaluation_id: r.get::<Uuid, _>("id").to_string(),
        ladder_version: r.get("ladder_version"),
        state: state as i32,
        members_total: r.get("members_total"),
        members_done: r.get("members_done"),
        members_changed: r.get("members_changed"),
        started_at: Some(ts(r.get("started_at"))),
        finished_at: r.get::<Option<DateTime<Utc>>, _>("finished_at").map(ts),
    }
}

const REEVALUATION: &str = "SELECT id, ladder_version, state, members_total, members_done,
    members_changed, started_at, finished_at FROM reevaluations";

impl Tiers {
    /// `PublishLadder`.
    pub(crate) async fn publish_ladder(
        &self,
        ctx: &RequestContext,
        request: &pb::PublishLadderRequest,
    ) -> Result<pb::PublishLadderResponse, TierError> {
        let mut v = Violations::new();
        check_request_id(&request.request_id, &mut v);
        let Some(ladder) = &request.ladder else {
            v.add("ladder", "required");
            return Err(v.into());
        };
        let checked = validate(ladder);
        let mut ladder = match checked {
            Ok(l) => {
                v.finish()?;
                l
            }
            Err(more) => {
                v.finish()?;
                return Err(more.into());
            }
        };
        let program = ctx.program.as_str();
        let key = RequestKey::new(ctx, "PublishLadder", &request.request_id);
        match self
            .idempotency
            .begin(&self.db, key, request, Plain)
            .await?
        {
            Begun::Replay(r) => Ok(r),
            Begun::Fresh(mut fresh) => {
                let tx = fresh.tx();
                let codes: Vec<String> = ladder
                    .tiers
                    .iter()
                    .flat_map(|t| t.benefits.iter().map(|b| b.benefit_code.clone()))
                    .collect();
                if !codes.is_empty() {
                    let unknown = crate::benefits::unknown_codes(tx, program, &codes).await?;
                    if !unknown.is_empty() {
                        let mut v = Violations::new();
                        for (i, tier) in ladder.tiers.iter().enumerate() {
                            for (j, grant) in tier.benefits.iter().enumerate() {
                                v.check(
                                    unknown.contains(&grant.benefit_code),
                                    format!("ladder.tiers[{i}].benefits[{j}].benefit_code"),
                                    "not in the benefits catalogue",
                                );
                            }
                        }
                        return Err(v.into());
                    }
                }
                let now = self.now();
                // One publisher per programme at a time: versions never clash.
                sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('laurel-tier-ladder:' || $1, 0))")
                    .bind(program)
                    .execute(&mut *tx)
                    .await?;
                let version: i64 = sqlx::query_scalar(
                    "SELECT COALESCE(max(version), 0) + 1 FROM ladders WHERE program_id = $1",
                )
                .bind(program)
                .fetch_one(&mut *tx)
                .await?;
                ladder.version = version;
                ladder.published_at = Some(ts(now));
                sqlx::query(
                    "INSERT INTO ladders (program_id, version, ladder, published_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(program)
                .bind(version)
                .bind(ladder.encode_to_vec())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE reevaluations SET state = 'superseded', updated_at = $2
                     WHERE program_id = $1 AND state = 'running'",
                )
                .bind(program)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let row = sqlx::query(
                    "INSERT INTO reevaluations (id, program_id, ladder_version, state, members_total, started_at, updated_at)
                     SELECT $1, $2, $3, 'running', count(*), $4, $4 FROM members
                     WHERE program_id = $2 AND status = 'active'
                     RETURNING id, ladder_version, state, members_total, members_done, members_changed, started_at, finished_at",
                )
                .bind(Uuid::now_v7())
                .bind(program)
                .bind(version)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                let response = pb::PublishLadderResponse {
                    ladder: Some(ladder),
                    reevaluation: Some(reevaluation(&row)),
                };
                fresh.commit(&response, None).await?;
                self.local.forget_ladder(program);
                Ok(response)
            }
        }
    }

    /// `GetLadder`.
    pub(crate) async fn get_ladder(
        &self,
        ctx: &RequestContext,
        request: &pb::GetLadderRequest,
    ) -> Result<pb::GetLadderResponse, TierError> {
        if request.version < 0 {
            return Err(TierError::field(
                "version",
                "0 for the ladder in force, or a version",
            ));
        }
        let stored: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT ladder FROM ladders WHERE program_id = $1 AND ($2 = 0 OR version = $2)
             ORDER BY version DESC LIMIT 1",
        )
        .bind(ctx.program.as_str())
        .bind(request.version)
        .fetch_optional(self.db.pool())
        .await?;
        let Some(bytes) = stored else {
            return Err(if request.version == 0 {
                TierError::NoLadder
            } else {
                TierError::LadderNotFound
            });
        };
        let ladder = pb::Ladder::decode(bytes.as_slice())
            .map_err(|e| TierError::Internal(anyhow::anyhow!("stored ladder unreadable: {e}")))?;
        Ok(pb::GetLadderResponse {
            ladder: Some(ladder),
        })
    }

    /// `GetReevaluation`.
    pub(crate) async fn get_reevaluation(
        &self,
        ctx: &RequestContext,
        request: &pb::GetReevaluationRequest,
    ) -> Result<pb::GetReevaluationResponse, TierError> {
        let id = if request.reevaluation_id.trim().is_empty() {
            None
        } else {
            match Uuid::parse_str(request.reevaluation_id.trim()) {
                Ok(id) => Some(id),
                Err(_) => {
                    return Err(TierError::field(
                        "reevaluation_id",
                        "a re-evaluation id (UUID), or empty for the latest",
                    ));
                }
            }
        };
        let row = sqlx::query(&format!(
            "{REEVALUATION} WHERE program_id = $1 AND ($2::uuid IS NULL OR id = $2)
             ORDER BY started_at DESC, id DESC LIMIT 1"
        ))
        .bind(ctx.program.as_str())
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?;
        let row = row.ok_or(TierError::ReevaluationNotFound)?;
        Ok(pb::GetReevaluationResponse {
            reevaluation: Some(reevaluation(&row)),
        })
    }
}
