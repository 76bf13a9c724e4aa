//! GetMember and LookupMember: the card from Redis, else Postgres.

use laurel_proto::member::v1 as pb;
use laurel_runtime::context::ProgramId;
use uuid::Uuid;

use super::{CARD_FIELD, Members, Result};
use crate::{domain::IdentityKey, error::MemberError, repo};

impl Members {
    /// A member by id from the card cache, else Postgres; a merged member
    /// answers with its survivor.
    pub async fn get(&self, program: &ProgramId, id: Uuid) -> Result<pb::Member> {
        let key = self.redis.card_key(program, &id.to_string());
        if let Some(sealed) = self.redis.card_get(&key, CARD_FIELD).await
            && let Some(member) = self.open_card(&key, &sealed)
        {
            return Ok(member);
        }
        let mut conn = self.pool.acquire().await?;
        let (row, member) = self
            .load(&mut conn, program, id)
            .await?
            .ok_or(MemberError::MemberNotFound)?;
        if let Some(survivor) = row.merged_into {
            drop(conn);
            return Box::pin(self.get(program, survivor)).await;
        }
        self.redis
            .card_fill(
                &key,
                CARD_FIELD,
                row.version,
                &self.seal_card(&key, &member),
            )
            .await;
        Ok(member)
    }

    /// The member holding an identity.
    pub async fn lookup(&self, program: &ProgramId, key: &IdentityKey) -> Result<pb::Member> {
        let hash = self.pii.identity_hash(program.as_str(), key);
        let mut conn = self.pool.acquire().await?;
        let id = repo::member_by_identity(&mut conn, program.as_str(), &hash)
            .await?
            .ok_or(MemberError::IdentityNotFound)?;
        drop(conn);
        self.get(program, id).await
    }
}
