//! LinkIdentity and UnlinkIdentity.

use laurel_proto::member::v1 as pb;
use laurel_runtime::{context::RequestContext, error::Violations, idempotency};
use uuid::Uuid;

use super::{Members, Result};
use crate::{domain::IdentityKey, error::MemberError, repo, requests};

impl Members {
    /// Links an identity.
    pub async fn link(
        &self,
        ctx: &RequestContext,
        req: &pb::LinkIdentityRequest,
    ) -> Result<pb::Member> {
        let (id, key) =
            self.identity_request(&req.request_id, &req.member_id, req.identity.as_ref())?;
        let program_c = ctx.program.clone();
        self.change_member(
            ctx,
            "LinkIdentity",
            &req.request_id,
            req,
            id,
            move |this, tx, member| {
                Box::pin(async move {
                    let identity = this.identity_row(&program_c, id, &key, this.clock.now());
                    match repo::member_by_identity(tx, program_c.as_str(), &identity.lookup_hash)
                        .await?
                    {
                        Some(holder) if holder == id => return Ok(()),
                        Some(_) => return Err(MemberError::IdentityTaken),
                        None => {}
                    }
                    repo::insert_identity(tx, program_c.as_str(), &identity)
                        .await
                        .map_err(MemberError::from_db)?;
                    let event = pb::IdentityLinked {
                        member_id: id.to_string(),
                        identity_type: i32::from(key.kind.code()),
                    };
                    this.emit(
                        tx,
                        &program_c,
                        id,
                        this.clock.now(),
                        Some(member.version),
                        &event,
                    )
                    .await
                })
            },
        )
        .await
    }

    /// Unlinks an identity.
    pub async fn unlink(
        &self,
        ctx: &RequestContext,
        req: &pb::UnlinkIdentityRequest,
    ) -> Result<pb::Member> {
        let (id, key) =
            self.identity_request(&req.request_id, &req.member_id, req.identity.as_ref())?;
        let program_c = ctx.program.clone();
        self.change_member(
            ctx,
            "UnlinkIdentity",
            &req.request_id,
            req,
            id,
            move |this, tx, member| {
                Box::pin(async move {
                    let hash = this.pii.identity_hash(program_c.as_str(), &key);
                    if !repo::delete_identity(tx, program_c.as_str(), id, &hash).await? {
                        return Err(MemberError::IdentityNotFound);
                    }
                    let event = pb::IdentityUnlinked {
                        member_id: id.to_string(),
                        identity_type: i32::from(key.kind.code()),
                    };
                    this.emit(
                        tx,
                        &program_c,
                        id,
                        this.clock.now(),
                        Some(member.version),
                        &event,
                    )
                    .await
                })
            },
        )
        .await
    }

    fn identity_request(
        &self,
        request_id: &str,
        member_id: &str,
        identity: Option<&pb::Identity>,
    ) -> Result<(Uuid, IdentityKey)> {
        let mut v = Violations::new();
        idempotency::check_request_id(request_id, &mut v);
        let id = requests::member_id(member_id, "member_id", &mut v);
        let key = requests::identity(identity, "identity", self.check_context(), &mut v);
        v.finish()?;
        Ok((id.expect("checked"), key.expect("checked")))
    }
}
