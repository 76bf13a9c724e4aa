//! ExportMember: everything held on a member, for access requests.

use laurel_proto::member::v1 as pb;
use laurel_runtime::{context::ProgramId, error::Violations};
use prost::Message;
use uuid::Uuid;

use super::{Members, Result};
use crate::{error::MemberError, repo, requests};

impl Members {
    /// Everything held on a member.
    pub async fn export(
        &self,
        program: &ProgramId,
        req: &pb::ExportMemberRequest,
    ) -> Result<pb::ExportMemberResponse> {
        let pb::ExportMemberRequest { member_id } = req;
        let mut v = Violations::new();
        let id = requests::member_id(member_id, "member_id", &mut v);
        v.finish()?;
        let id = id.expect("checked");
        let mut conn = self.db.acquire().await?;
        let (_, member) = self
            .load(&mut conn, program, id)
            .await?
            .ok_or(MemberError::MemberNotFound)?;
        let rows = repo::list_activities(&mut conn, program.as_str(), id, None, i64::MAX).await?;
        let activities = rows
            .iter()
            .map(|r| {
                pb::Activity::decode(r.body.as_slice()).map_err(|e| MemberError::Internal(e.into()))
            })
            .collect::<Result<Vec<_>>>()?;
        let (referred, merged) = repo::related_members(&mut conn, program.as_str(), id).await?;
        Ok(pb::ExportMemberResponse {
            member: Some(member),
            activities,
            referred_member_ids: referred.iter().map(Uuid::to_string).collect(),
            merged_member_ids: merged.iter().map(Uuid::to_string).collect(),
        })
    }
}
