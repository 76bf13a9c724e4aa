//! ListActivities: a member's activities, newest business time first.

use laurel_proto::member::v1 as pb;
use laurel_runtime::{context::ProgramId, error::Violations, pagination};
use prost::Message;
use uuid::Uuid;

use super::{Members, Result};
use crate::{error::MemberError, repo, requests};

impl Members {
    /// A member's activities, newest first.
    pub async fn list_activities(
        &self,
        program: &ProgramId,
        req: &pb::ListActivitiesRequest,
    ) -> Result<(Vec<pb::Activity>, String)> {
        let pb::ListActivitiesRequest {
            member_id,
            page_size,
            page_token,
        } = req;
        let mut v = Violations::new();
        let id = requests::member_id(member_id, "member_id", &mut v);
        let size = pagination::page_size(*page_size);
        v.check(size.is_none(), "page_size", "must not be negative");
        let before = requests::page_position(page_token, &mut v);
        v.finish()?;
        let (id, size) = (id.expect("checked"), size.expect("checked"));
        let survivor = self.get(program, id).await?;
        let id =
            Uuid::parse_str(&survivor.member_id).map_err(|e| MemberError::Internal(e.into()))?;
        let mut conn = self.db.acquire().await?;
        let rows = repo::list_activities(&mut conn, program.as_str(), id, before, size + 1).await?;
        let more = rows.len() as i64 > size;
        let rows = &rows[..rows.len().min(size as usize)];
        let activities = rows
            .iter()
            .map(|r| {
                pb::Activity::decode(r.body.as_slice()).map_err(|e| MemberError::Internal(e.into()))
            })
            .collect::<Result<Vec<_>>>()?;
        let token = match (more, rows.last()) {
            (true, Some(last)) => pagination::encode_token(&format!(
                "{}|{}",
                last.occurred_at.to_rfc3339(),
                last.activity_id
            )),
            _ => String::new(),
        };
        Ok((activities, token))
    }
}
