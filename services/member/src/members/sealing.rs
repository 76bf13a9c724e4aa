//! Personal data in and out of rows, cards and stored responses, and rows
//! mapped to wire messages.

use chrono::{DateTime, Utc};
use laurel_proto::member::v1 as pb;
use laurel_runtime::{context::ProgramId, idempotency::ResponseCodec};
use prost::Message;
use uuid::Uuid;

use super::{Members, Result};
use crate::{
    domain::{Consent, IdentityKey, Profile},
    error::MemberError,
    pii::Pii,
    repo::{IdentityRow, MemberRow},
    requests::to_timestamp,
};

/// Associated data of a member's sealed field.
fn context(program: &ProgramId, member: Uuid, field: &str) -> String {
    format!("{program}/{member}/{field}")
}

/// Associated data of a sealed identity value.
fn identity_context(program: &ProgramId, kind: i16, namespace: &str) -> String {
    format!("{program}/identity/{kind}/{namespace}")
}

/// Associated data of stored idempotent responses.
fn response_context(program: &ProgramId) -> String {
    format!("{program}/idempotency")
}

impl Members {
    pub(super) fn seal_profile(
        &self,
        program: &ProgramId,
        id: Uuid,
        row: &mut MemberRow,
        p: &Profile,
    ) {
        row.given_name_enc = self
            .pii
            .seal_text(&p.given_name, &context(program, id, "given_name"));
        row.family_name_enc = self
            .pii
            .seal_text(&p.family_name, &context(program, id, "family_name"));
        row.birth_date_enc = self
            .pii
            .seal_text(&p.birth_date, &context(program, id, "birth_date"));
        row.gender = p.gender as i16;
        row.region.clone_from(&p.region);
        row.preferred_language.clone_from(&p.preferred_language);
        row.time_zone.clone_from(&p.time_zone);
    }

    pub(super) fn open_profile(&self, program: &ProgramId, row: &MemberRow) -> Result<Profile> {
        let id = row.member_id;
        let open = |enc: &Option<Vec<u8>>, field: &str| {
            self.pii
                .open_text(enc.as_deref(), &context(program, id, field))
                .map_err(|e| MemberError::Internal(e.into()))
        };
        Ok(Profile {
            given_name: open(&row.given_name_enc, "given_name")?,
            family_name: open(&row.family_name_enc, "family_name")?,
            birth_date: open(&row.birth_date_enc, "birth_date")?,
            gender: i32::from(row.gender),
            region: row.region.clone(),
            preferred_language: row.preferred_language.clone(),
            time_zone: row.time_zone.clone(),
        })
    }

    pub(super) fn identity_row(
        &self,
        program: &ProgramId,
        member: Uuid,
        key: &IdentityKey,
        at: DateTime<Utc>,
    ) -> IdentityRow {
        let kind = key.kind.code();
        IdentityRow {
            member_id: member,
            identity_type: kind,
            namespace: key.namespace.clone(),
            lookup_hash: self.pii.identity_hash(program.as_str(), key),
            value_enc: self.pii.seal(
                key.value.as_bytes(),
                &identity_context(program, kind, &key.namespace),
            ),
            linked_at: at,
        }
    }

    /// Builds the wire member from its rows, decrypting personal data.
    pub(super) fn to_proto(
        &self,
        program: &ProgramId,
        row: &MemberRow,
        identities: &[IdentityRow],
        consents: &[Consent],
    ) -> Result<pb::Member> {
        let p = self.open_profile(program, row)?;
        let identities = identities
            .iter()
            .map(|i| {
                let value = self
                    .pii
                    .open(
                        &i.value_enc,
                        &identity_context(program, i.identity_type, &i.namespace),
                    )
                    .map_err(|e| MemberError::Internal(e.into()))?;
                Ok(pb::Identity {
                    r#type: i32::from(i.identity_type),
                    value: String::from_utf8_lossy(&value).into_owned(),
                    namespace: i.namespace.clone(),
                    linked_at: Some(to_timestamp(i.linked_at)),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(pb::Member {
            member_id: row.member_id.to_string(),
            program_id: program.to_string(),
            status: i32::from(row.status),
            profile: Some(pb::Profile {
                given_name: p.given_name,
                family_name: p.family_name,
                birth_date: p.birth_date,
                gender: p.gender,
                region: p.region,
                preferred_language: p.preferred_language,
                time_zone: p.time_zone,
            }),
            identities,
            consents: consents.iter().map(consent_proto).collect(),
            tags: row.tags.clone(),
            referral_code: row.referral_code.clone(),
            referred_by_member_id: row.referred_by.map(|m| m.to_string()).unwrap_or_default(),
            merged_into_member_id: row.merged_into.map(|m| m.to_string()).unwrap_or_default(),
            enrolled_at: Some(to_timestamp(row.enrolled_at)),
            updated_at: Some(to_timestamp(row.updated_at)),
            version: row.version,
        })
    }

    /// The card as cached in Redis, sealed under the card key and bound to
    /// its cache key.
    pub(super) fn seal_card(&self, key: &str, member: &pb::Member) -> Vec<u8> {
        self.pii.seal_card(&member.encode_to_vec(), key)
    }

    pub(super) fn open_card(&self, key: &str, sealed: &[u8]) -> Option<pb::Member> {
        let plain = self.pii.open_card(sealed, key).ok()?;
        pb::Member::decode(plain.as_slice()).ok()
    }
}

/// Stored idempotent responses hold personal data: sealed, bound to the
/// programme.
pub(crate) struct SealedResponses<'a>(pub(crate) &'a Pii);

impl ResponseCodec<pb::Member> for SealedResponses<'_> {
    fn encode(&self, program: &ProgramId, member: &pb::Member) -> Vec<u8> {
        self.0
            .seal(&member.encode_to_vec(), &response_context(program))
    }

    fn decode(&self, program: &ProgramId, stored: &[u8]) -> Option<pb::Member> {
        let plain = self.0.open(stored, &response_context(program)).ok()?;
        pb::Member::decode(plain.as_slice()).ok()
    }
}

pub(super) fn consent_proto(c: &Consent) -> pb::Consent {
    pb::Consent {
        channel: i32::from(c.channel),
        granted: c.granted,
        source: c.source.clone(),
        updated_at: Some(to_timestamp(c.updated_at)),
    }
}

/// Removes free text (review text, feedback comments, shared URLs and the
/// free `attributes`) that events must not spread and erasure must remove.
pub fn strip_free_text(activity: &mut pb::Activity) {
    use pb::activity::Detail;
    activity.attributes.clear();
    match &mut activity.detail {
        Some(Detail::Review(r)) => r.text.clear(),
        Some(Detail::Feedback(f)) => f.comment.clear(),
        Some(Detail::Share(s)) => s.url.clear(),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_and_attributes_are_stripped() {
        let mut activity = pb::Activity {
            attributes: [("note".to_owned(), "call +4915112345678".to_owned())].into(),
            detail: Some(pb::activity::Detail::Review(pb::Review {
                sku: "SKU-1".into(),
                rating: 4,
                text: "my words".into(),
            })),
            ..Default::default()
        };
        strip_free_text(&mut activity);
        assert!(activity.attributes.is_empty());
        let Some(pb::activity::Detail::Review(review)) = activity.detail else {
            panic!("detail kept");
        };
        assert_eq!((review.sku.as_str(), review.rating), ("SKU-1", 4));
        assert!(review.text.is_empty());
    }
}
