//! EraseMember: removes a member's personal data for good; the id stays.

use laurel_proto::member::v1 as pb;
use laurel_runtime::{
    context::RequestContext,
    error::Violations,
    idempotency::{self, Begun},
};
use prost::Message;

use super::{Members, Result, strip_free_text};
use crate::{
    domain::Profile,
    error::MemberError,
    repo::{self, status},
    requests,
};

impl Members {
    /// Removes a member's personal data and whatever was derived from it:
    /// profile, identities, consents, tags, stored responses, free text and
    /// attributes of activities, and the activities' request digests.
    ///
    /// Without its digest an activity can no longer be compared with a
    /// replayed request, so a replay of an erased member's activity answers
    /// FAILED_PRECONDITION (`MEMBER_NOT_ACTIVE`, "member is erased") and
    /// records nothing.
    pub async fn erase(
        &self,
        ctx: &RequestContext,
        req: &pb::EraseMemberRequest,
    ) -> Result<pb::Member> {
        let pb::EraseMemberRequest {
            request_id,
            member_id,
        } = req;
        let mut v = Violations::new();
        idempotency::check_request_id(request_id, &mut v);
        let id = requests::member_id(member_id, "member_id", &mut v);
        v.finish()?;
        let id = id.expect("checked");
        let program = &ctx.program;
        let mut fresh = match self
            .begin_idempotent(ctx, "EraseMember", request_id, req)
            .await?
        {
            Begun::Replay(member) => return Ok(member),
            Begun::Fresh(fresh) => fresh,
        };
        let tx = fresh.tx();
        let mut row = repo::member(&mut *tx, program.as_str(), id, true)
            .await?
            .ok_or(MemberError::MemberNotFound)?;
        repo::delete_personal_rows(&mut *tx, program.as_str(), id).await?;
        let activities =
            repo::list_activities(&mut *tx, program.as_str(), id, None, i64::MAX).await?;
        for a in activities {
            let mut activity = pb::Activity::decode(a.body.as_slice())
                .map_err(|e| MemberError::Internal(e.into()))?;
            strip_free_text(&mut activity);
            repo::set_activity_body(
                &mut *tx,
                program.as_str(),
                a.activity_id,
                &activity.encode_to_vec(),
            )
            .await?;
        }
        repo::clear_request_digests(&mut *tx, program.as_str(), id).await?;
        let now = self.clock.now();
        row.status = status::ERASED;
        self.seal_profile(program, id, &mut row, &Profile::default());
        row.tags.clear();
        row.version += 1;
        row.updated_at = now;
        repo::save_member(&mut *tx, program.as_str(), &row).await?;
        self.emit(
            &mut *tx,
            program,
            id,
            now,
            Some(row.version),
            &pb::MemberErased {
                member_id: id.to_string(),
            },
        )
        .await?;
        let member = self.to_proto(program, &row, &[], &[])?;
        // The stored response holds no personal data any more; keep it so a
        // retry replays, but not tied to the member.
        fresh.commit(&member, None).await?;
        self.invalidate(program, id, row.version).await;
        Ok(member)
    }
}
