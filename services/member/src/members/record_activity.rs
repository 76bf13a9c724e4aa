//! RecordActivity: stores an activity once per (source, external_id),
//! resolving or enrolling its member, and publishes it without free text.

use chrono::DateTime;
use laurel_proto::member::v1 as pb;
use laurel_runtime::{context::ProgramId, error::Violations};
use prost::Message;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Members, Result, status_name, strip_free_text};
use crate::{
    activity_kind::ActivityKind,
    domain::Profile,
    error::MemberError,
    money::{self, RefundRefused},
    repo::{self, status},
    requests::{self, MemberRef, OrderMoney, to_timestamp},
};

/// What a replayed request is compared by.
struct RequestDigest {
    /// Keyed digest, as stored.
    keyed: Vec<u8>,
    /// The request, for rows stored before digests were keyed.
    encoded: Vec<u8>,
}

impl RequestDigest {
    fn matches(&self, stored: &[u8]) -> bool {
        // Rows recorded before digests were keyed hold a plain SHA-256; they
        // still replay, and erasure forgets them like the keyed ones.
        stored == self.keyed || stored == Sha256::digest(&self.encoded).as_slice()
    }
}

impl Members {
    /// Records an activity; returns it, whether it is new, and whether the
    /// member was enrolled by it.
    pub async fn record_activity(
        &self,
        program: &ProgramId,
        req: &pb::RecordActivityRequest,
    ) -> Result<(pb::Activity, bool, bool)> {
        let cmd = requests::new_activity(req, self.check_context())?;
        let encoded = req.encode_to_vec();
        let digest = RequestDigest {
            keyed: self.pii.request_digest(program.as_str(), &encoded),
            encoded,
        };
        // Two callers racing to enrol one identity or record one activity:
        // the loser retries and finds the winner's result.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_record(program, &cmd, &digest).await {
                Err(MemberError::IdentityTaken | MemberError::ActivityConflict) if attempt < 3 => {
                    continue;
                }
                other => return other,
            }
        }
    }

    async fn try_record(
        &self,
        program: &ProgramId,
        cmd: &requests::NewActivity,
        digest: &RequestDigest,
    ) -> Result<(pb::Activity, bool, bool)> {
        let activity = &cmd.activity;
        let mut tx = self.db.begin().await?;
        if let Some(existing) = repo::activity_by_source(
            &mut tx,
            program.as_str(),
            &activity.source,
            &activity.external_id,
        )
        .await?
        {
            // Erasure forgot the digest: the request cannot be compared, and
            // the member it named is gone.
            let Some(stored_digest) = existing.request_hash else {
                return Err(MemberError::NotActive(status_name(status::ERASED)));
            };
            if !digest.matches(&stored_digest) {
                return Err(MemberError::ActivityConflict);
            }
            let stored = pb::Activity::decode(existing.body.as_slice())
                .map_err(|e| MemberError::Internal(e.into()))?;
            return Ok((stored, false, false));
        }
        let (member_id, enrolled) = self.activity_member(&mut tx, program, cmd).await?;
        if cmd.kind == ActivityKind::Refund {
            let refund = cmd.money.as_ref().expect("refunds carry money");
            self.check_refund(&mut tx, program, member_id, refund)
                .await?;
        }
        let now = self.clock.now();
        let mut stored = activity.clone();
        let activity_id = Uuid::now_v7();
        stored.activity_id = activity_id.to_string();
        stored.member_id = member_id.map(|m| m.to_string()).unwrap_or_default();
        stored.recorded_at = Some(to_timestamp(now));
        let occurred_at = activity
            .occurred_at
            .as_ref()
            .and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos as u32))
            .unwrap_or(now);
        let row = repo::ActivityRow {
            activity_id,
            member_id,
            activity_type: cmd.kind.code(),
            source: stored.source.clone(),
            external_id: stored.external_id.clone(),
            occurred_at,
            recorded_at: now,
            order_id: cmd.money.as_ref().map(|m| m.order_id.clone()),
            currency: cmd.money.as_ref().map(|m| m.currency.clone()),
            amount_minor: cmd.money.as_ref().map(|m| m.amount_minor),
            body: stored.encode_to_vec(),
            request_hash: Some(digest.keyed.clone()),
        };
        repo::insert_activity(&mut tx, program.as_str(), &row)
            .await
            .map_err(MemberError::from_db)?;
        let mut published = stored.clone();
        strip_free_text(&mut published);
        // Activities are not on the card: no invalidation. A guest's has no
        // member: its envelope names none and takes no member sequence.
        self.emit_about(
            &mut tx,
            program,
            member_id,
            occurred_at,
            None,
            &pb::ActivityRecorded {
                activity: Some(published),
            },
        )
        .await?;
        tx.commit().await?;
        Ok((stored, true, enrolled))
    }

    /// The member an activity is recorded for, locked, and whether this
    /// call enrolled it; `None` for a guest, whose purchase or refund
    /// touches no member row.
    async fn activity_member(
        &self,
        tx: &mut sqlx::PgConnection,
        program: &ProgramId,
        cmd: &requests::NewActivity,
    ) -> Result<(Option<Uuid>, bool)> {
        let mut enrolled = false;
        let member_id = match &cmd.member {
            MemberRef::Guest => return Ok((None, false)),
            MemberRef::Id(id) => *id,
            MemberRef::Identity(key) => {
                let hash = self.pii.identity_hash(program.as_str(), key);
                match repo::member_by_identity(&mut *tx, program.as_str(), &hash).await? {
                    Some(id) => id,
                    None if cmd.auto_enroll => {
                        let new = requests::NewMember {
                            profile: Profile::default(),
                            identities: vec![key.clone()],
                            consents: Vec::new(),
                            tags: Vec::new(),
                            referral_code: None,
                            enrolled_at: self.clock.now(),
                        };
                        enrolled = true;
                        self.enrol(&mut *tx, program, new, true).await?.0.member_id
                    }
                    None => return Err(MemberError::IdentityNotFound),
                }
            }
        };
        // Locking the member orders its activities and events.
        let mut row = repo::member(&mut *tx, program.as_str(), member_id, true)
            .await?
            .ok_or(MemberError::MemberNotFound)?;
        if let Some(survivor) = row.merged_into {
            row = repo::member(&mut *tx, program.as_str(), survivor, true)
                .await?
                .ok_or(MemberError::MemberNotFound)?;
        }
        if row.status == status::ERASED || row.status == status::MERGED {
            return Err(MemberError::NotActive(status_name(row.status)));
        }
        Ok((Some(row.member_id), enrolled))
    }

    /// A refund must name this member's order (a guest's refund a guest's
    /// order), in its currency, and stay within what is left of it.
    async fn check_refund(
        &self,
        tx: &mut sqlx::PgConnection,
        program: &ProgramId,
        member_id: Option<Uuid>,
        refund: &OrderMoney,
    ) -> Result<()> {
        let order = repo::lock_purchase(tx, program.as_str(), &refund.order_id)
            .await?
            .ok_or(MemberError::OrderNotFound)?;
        if order.member_id != member_id {
            return Err(MemberError::OrderNotFound);
        }
        if order.currency.as_deref() != Some(refund.currency.as_str()) {
            let mut v = Violations::new();
            v.add(
                "activity.refund.amount.currency_code",
                "must be the order's currency",
            );
            return Err(v.into());
        }
        let earlier = repo::refund_amounts(tx, program.as_str(), &refund.order_id).await?;
        money::check_refund(
            order.amount_minor.unwrap_or(0),
            &earlier,
            refund.amount_minor,
        )
        .map_err(|RefundRefused::ExceedsOrder| MemberError::RefundExceedsOrder)
    }
}
