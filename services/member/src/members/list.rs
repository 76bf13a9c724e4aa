//! ListMembers: keyset pages in enrolment order.

use laurel_proto::member::v1 as pb;
use laurel_runtime::{context::ProgramId, pagination};
use uuid::Uuid;

use super::{Members, Result};
use crate::{
    domain::Consent,
    repo::{self, IdentityRow},
    requests,
};

impl Members {
    /// Pages through members.
    pub async fn list(
        &self,
        program: &ProgramId,
        req: &pb::ListMembersRequest,
    ) -> Result<(Vec<pb::Member>, String)> {
        let (filter, size) = requests::member_listing(req)?;
        let mut conn = self.db.acquire().await?;
        let rows = repo::list_members(&mut conn, program.as_str(), &filter, size + 1).await?;
        let more = rows.len() as i64 > size;
        let rows = &rows[..rows.len().min(size as usize)];
        let ids: Vec<Uuid> = rows.iter().map(|r| r.member_id).collect();
        let identities = repo::identities(&mut conn, program.as_str(), &ids).await?;
        let consents = repo::consents(&mut conn, program.as_str(), &ids).await?;
        let mut members = Vec::with_capacity(rows.len());
        for row in rows {
            let mine: Vec<IdentityRow> = identities
                .iter()
                .filter(|i| i.member_id == row.member_id)
                .cloned()
                .collect();
            let cons: Vec<Consent> = consents
                .iter()
                .filter(|c| c.member_id == row.member_id)
                .cloned()
                .map(Into::into)
                .collect();
            members.push(self.to_proto(program, row, &mine, &cons)?);
        }
        let token = match (more, rows.last()) {
            (true, Some(last)) => pagination::encode_token(&format!(
                "{}|{}",
                last.enrolled_at.to_rfc3339(),
                last.member_id
            )),
            _ => String::new(),
        };
        Ok((members, token))
    }
}
