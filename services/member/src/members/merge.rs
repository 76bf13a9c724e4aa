//! MergeMembers: folds a duplicate member into a survivor.

use std::collections::HashMap;

use laurel_proto::member::v1 as pb;
use laurel_runtime::{
    context::RequestContext,
    error::Violations,
    idempotency::{self, Begun},
};

use super::{Members, Result, sealing::consent_proto};
use crate::{
    domain::{self, Consent},
    error::MemberError,
    merging,
    repo::{self, status},
    requests,
};

impl Members {
    /// Folds one member into another.
    pub async fn merge(
        &self,
        ctx: &RequestContext,
        req: &pb::MergeMembersRequest,
    ) -> Result<pb::Member> {
        let pb::MergeMembersRequest {
            request_id,
            survivor_member_id,
            merged_member_id,
        } = req;
        let mut v = Violations::new();
        idempotency::check_request_id(request_id, &mut v);
        let survivor = requests::member_id(survivor_member_id, "survivor_member_id", &mut v);
        let merged = requests::member_id(merged_member_id, "merged_member_id", &mut v);
        v.check(
            survivor.is_some() && survivor == merged,
            "merged_member_id",
            "must differ from survivor_member_id",
        );
        v.finish()?;
        let (survivor, merged) = (survivor.expect("checked"), merged.expect("checked"));
        let program = &ctx.program;
        let mut fresh = match self
            .begin_idempotent(ctx, "MergeMembers", request_id, req)
            .await?
        {
            Begun::Replay(member) => return Ok(member),
            Begun::Fresh(fresh) => fresh,
        };
        let tx = fresh.tx();
        // Lock both rows in id order so concurrent merges cannot deadlock.
        let mut rows = HashMap::new();
        let mut ids = [survivor, merged];
        ids.sort();
        for id in ids {
            let row = repo::member(&mut *tx, program.as_str(), id, true)
                .await?
                .ok_or(MemberError::MemberNotFound)?;
            if row.status == status::MERGED || row.status == status::ERASED {
                return Err(MemberError::MergeRefused(
                    "a member is already merged or erased",
                ));
            }
            rows.insert(id, row);
        }
        let now = self.clock.now();
        let mut s = rows.remove(&survivor).expect("locked");
        let mut m = rows.remove(&merged).expect("locked");
        let both: Vec<Consent> = repo::consents(&mut *tx, program.as_str(), &[survivor, merged])
            .await?
            .into_iter()
            .map(Into::into)
            .collect();
        let consents = domain::merge_consents(&[], &both);
        // Read before the merged member's referrals move to the survivor.
        let chain_above_survivor =
            repo::referrer_chain(&mut *tx, program.as_str(), survivor).await?;
        let repointed =
            repo::move_to_survivor(&mut *tx, program.as_str(), merged, survivor).await?;
        for c in &consents {
            repo::upsert_consent(&mut *tx, program.as_str(), survivor, c).await?;
        }
        let profile = merging::fill_profile_gaps(
            &self.open_profile(program, &s)?,
            &self.open_profile(program, &m)?,
        );
        self.seal_profile(program, survivor, &mut s, &profile);
        s.tags = merging::merge_tags(&s.tags, &m.tags);
        s.referred_by =
            merging::survivor_referrer_after_merge(s.referred_by, merged, &chain_above_survivor);
        s.version += 1;
        s.updated_at = now;
        m.status = status::MERGED;
        m.merged_into = Some(survivor);
        m.version += 1;
        m.updated_at = now;
        repo::save_member(&mut *tx, program.as_str(), &s).await?;
        repo::save_member(&mut *tx, program.as_str(), &m).await?;
        let event = pb::MemberMerged {
            survivor_member_id: survivor.to_string(),
            merged_member_id: merged.to_string(),
        };
        // The merged member's stream ends with its merge; the survivor's
        // card changed too (identities, tags, consents, profile gaps).
        self.emit(&mut *tx, program, merged, now, Some(m.version), &event)
            .await?;
        let survivor_changed = pb::MemberUpdated {
            member_id: survivor.to_string(),
            changed_fields: vec![
                "identities".into(),
                "tags".into(),
                "consents".into(),
                "profile".into(),
            ],
            status: i32::from(s.status),
            tags: s.tags.clone(),
            consents: consents.iter().map(consent_proto).collect(),
        };
        self.emit(
            &mut *tx,
            program,
            survivor,
            now,
            Some(s.version),
            &survivor_changed,
        )
        .await?;
        let (_, member) = self
            .load(&mut *tx, program, survivor)
            .await?
            .ok_or(MemberError::MemberNotFound)?;
        fresh.commit(&member, Some(survivor)).await?;
        self.invalidate(program, survivor, s.version).await;
        self.invalidate(program, merged, m.version).await;
        // Members the merged one had referred now name the survivor.
        for (referred, version) in repointed {
            self.invalidate(program, referred, version).await;
        }
        Ok(member)
    }
}
