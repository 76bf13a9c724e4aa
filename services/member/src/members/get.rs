//! GetMember and LookupMember: the member card from this replica's memory,
//! else Redis, else Postgres; identities resolved to members from memory,
//! checked against the card.

use std::sync::Arc;

use laurel_proto::member::v1 as pb;
use laurel_runtime::context::ProgramId;
use moka::sync::Cache;
use uuid::Uuid;

use super::{Members, Result};
use crate::{domain::IdentityKey, error::MemberError, repo};

/// Identity (blind index) to member, in this replica's memory. An entry is
/// trusted only when the member's current card still lists the identity, so
/// it needs no invalidation of its own: unlinking, merging and erasing all
/// change the card, and the card's invalidation covers them.
pub(crate) type IdentityCache = Cache<(ProgramId, Vec<u8>), Uuid>;

/// The identity cache with its bounds.
pub(crate) fn identity_cache() -> IdentityCache {
    Cache::builder()
        .max_capacity(200_000)
        .time_to_live(std::time::Duration::from_secs(300))
        .build()
}

fn lists(member: &pb::Member, key: &IdentityKey) -> bool {
    member.identities.iter().any(|i| {
        i.r#type == i32::from(key.kind.code())
            && i.value == key.value
            && i.namespace == key.namespace
    })
}

impl Members {
    /// A member by id; a merged member answers with its survivor.
    pub async fn get(&self, program: &ProgramId, id: Uuid) -> Result<pb::Member> {
        if let Some(member) = self.cards.local(program, &id) {
            return Ok((*member).clone());
        }
        self.get_uncached(program, id).await
    }

    /// As [`Members::get`], shared: this replica's copy is handed out as it
    /// is, without copying the member (the card reads only a few fields).
    pub async fn get_shared(&self, program: &ProgramId, id: Uuid) -> Result<Arc<pb::Member>> {
        if let Some(member) = self.cards.local(program, &id) {
            return Ok(member);
        }
        self.get_uncached(program, id).await.map(Arc::new)
    }

    /// The member from the shared card or Postgres (this replica's copy
    /// missed).
    async fn get_uncached(&self, program: &ProgramId, id: Uuid) -> Result<pb::Member> {
        if let Some(stored) = self.cards.shared(program, &id).await
            && let Some(member) = self.open_card(&self.cards.key(program, &id), &stored.value)
        {
            self.cards
                .keep(program, &id, stored.version, Arc::new(member.clone()));
            return Ok(member);
        }
        let (row, member) = {
            let mut conn = self.db.acquire().await?;
            self.load(&mut conn, program, id)
                .await?
                .ok_or(MemberError::MemberNotFound)?
        };
        if let Some(survivor) = row.merged_into {
            return Box::pin(self.get(program, survivor)).await;
        }
        let sealed = self.seal_card(&self.cards.key(program, &id), &member);
        let filled = self.cards.fill(program, &id, row.version, &sealed).await;
        // A write may have committed since the read; Redis may also have lost
        // the version field (eviction, fail-over) and taken an old fill. The
        // version kept with the row in Postgres decides.
        let current = {
            let mut conn = self.db.acquire().await?;
            repo::member_version(&mut conn, program.as_str(), id).await?
        };
        match current {
            Some(version) if version == row.version && filled => {
                self.cards
                    .keep(program, &id, row.version, Arc::new(member.clone()));
            }
            Some(version) if version != row.version => {
                self.cards.invalidate(program, &id, version).await;
            }
            _ => {}
        }
        Ok(member)
    }

    /// The member holding an identity.
    pub async fn lookup(&self, program: &ProgramId, key: &IdentityKey) -> Result<pb::Member> {
        let hash = self.pii.identity_hash(program.as_str(), key);
        let cache_key = (program.clone(), hash);
        if let Some(id) = self.identities.get(&cache_key) {
            match self.get(program, id).await {
                Ok(member) if lists(&member, key) => return Ok(member),
                Ok(_) | Err(MemberError::MemberNotFound) => self.identities.invalidate(&cache_key),
                Err(error) => return Err(error),
            }
        }
        let id = {
            let mut conn = self.db.acquire().await?;
            repo::member_by_identity(&mut conn, program.as_str(), &cache_key.1)
                .await?
                .ok_or(MemberError::IdentityNotFound)?
        };
        let member = self.get(program, id).await?;
        if lists(&member, key) {
            self.identities.insert(cache_key, id);
        }
        Ok(member)
    }
}
