//! The member service's use cases: each runs one Postgres transaction that
//! holds the change, its outbox event and its idempotency record, then
//! invalidates the member card in Redis.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use laurel_proto::member::v1 as pb;
use laurel_runtime::{
    cache::Redis,
    clock::SharedClock,
    context::ProgramId,
    events::outbox::{self, NewEvent},
    idempotency::{self, Claim},
    pagination,
};
use prost::{Message, Name};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    domain::{self, Consent, IdentityKey, Profile},
    error::MemberError,
    pii::Pii,
    repo::{self, IdentityRow, MemberRow, status},
    requests::{self, Change, CheckContext, MemberRef, to_timestamp},
};

/// Event source and stream name of this service.
pub const SOURCE: &str = "member";
/// The member card field this service owns.
pub const CARD_FIELD: &str = "member";

type Result<T> = std::result::Result<T, MemberError>;

/// The member service's state.
#[derive(Clone, Debug)]
pub struct Members {
    pub(crate) pool: PgPool,
    pub(crate) redis: Redis,
    pub(crate) pii: Pii,
    pub(crate) clock: SharedClock,
    pub(crate) phone_region: Option<phonenumber::country::Id>,
}

fn context(program: &ProgramId, member: Uuid, field: &str) -> String {
    format!("{program}/{member}/{field}")
}

fn identity_context(program: &ProgramId, kind: i16, namespace: &str) -> String {
    format!("{program}/identity/{kind}/{namespace}")
}

fn status_name(code: i16) -> &'static str {
    match code {
        status::MERGED => "merged",
        status::ERASED => "erased",
        status::SUSPENDED => "suspended",
        _ => "active",
    }
}

impl Members {
    /// What request checks need.
    pub fn check_context(&self) -> CheckContext {
        CheckContext {
            now: self.clock.now(),
            phone_region: self.phone_region,
        }
    }

    fn seal_profile(&self, program: &ProgramId, id: Uuid, row: &mut MemberRow, p: &Profile) {
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

    fn open_profile(&self, program: &ProgramId, row: &MemberRow) -> Result<Profile> {
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

    fn identity_row(
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
    fn to_proto(
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

    /// Loads a member as stored (no redirect for merged members).
    async fn load(
        &self,
        conn: &mut PgConnection,
        program: &ProgramId,
        id: Uuid,
    ) -> Result<Option<(MemberRow, pb::Member)>> {
        let Some(row) = repo::member(conn, program.as_str(), id, false).await? else {
            return Ok(None);
        };
        let identities = repo::identities(conn, program.as_str(), &[id]).await?;
        let consents: Vec<Consent> = repo::consents(conn, program.as_str(), &[id])
            .await?
            .into_iter()
            .map(Into::into)
            .collect();
        let member = self.to_proto(program, &row, &identities, &consents)?;
        Ok(Some((row, member)))
    }

    fn seal_card(&self, key: &str, member: &pb::Member) -> Vec<u8> {
        self.pii.seal(&member.encode_to_vec(), key)
    }

    fn open_card(&self, key: &str, sealed: &[u8]) -> Option<pb::Member> {
        let plain = self.pii.open(sealed, key).ok()?;
        pb::Member::decode(plain.as_slice()).ok()
    }

    /// Tells Redis a member changed (the relay repeats it if Redis is away).
    async fn invalidate(&self, program: &ProgramId, id: Uuid, version: i64) {
        let key = self.redis.card_key(program, &id.to_string());
        self.redis.card_invalidate(&key, CARD_FIELD, version).await;
    }

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

    /// Enrols a member.
    pub async fn create(
        &self,
        program: &ProgramId,
        req: &pb::CreateMemberRequest,
    ) -> Result<pb::Member> {
        let cmd = requests::new_member(req, self.check_context())?;
        let mut tx = self.pool.begin().await?;
        let key = match idempotency::claim(&mut tx, program, "CreateMember", &req.request_id, req)
            .await?
        {
            Claim::Replay(stored) => return self.replay_member(program, &stored),
            Claim::New(key) => key,
        };
        let (row, member) = self.enrol(&mut tx, program, cmd, false).await?;
        key.complete(
            &mut tx,
            &self.seal_response(program, &member),
            Some(row.member_id),
        )
        .await?;
        tx.commit().await?;
        Ok(member)
    }

    async fn enrol(
        &self,
        tx: &mut PgConnection,
        program: &ProgramId,
        cmd: requests::NewMember,
        auto: bool,
    ) -> Result<(MemberRow, pb::Member)> {
        let now = self.clock.now();
        let id = Uuid::now_v7();
        let referred_by = match &cmd.referral_code {
            None => None,
            Some(code) => {
                let referrer = repo::member_by_referral_code(tx, program.as_str(), code).await?;
                let Some(referrer) = referrer else {
                    let mut v = laurel_runtime::error::Violations::new();
                    v.add("referral_code", "no member has this referral code");
                    return Err(v.into());
                };
                let row = repo::member(tx, program.as_str(), referrer, true)
                    .await?
                    .ok_or(MemberError::MemberNotFound)?;
                if row.status == status::MERGED || row.status == status::ERASED {
                    return Err(MemberError::NotActive(status_name(row.status)));
                }
                // The same person enrolling again with their own code.
                for identity in &cmd.identities {
                    let hash = self.pii.identity_hash(program.as_str(), identity);
                    if repo::member_by_identity(tx, program.as_str(), &hash).await?
                        == Some(referrer)
                    {
                        return Err(MemberError::SelfReferral);
                    }
                }
                let chain = repo::referrer_chain(tx, program.as_str(), referrer).await?;
                if domain::closes_referral_cycle(id, referrer, &chain) {
                    return Err(MemberError::ReferralCycle);
                }
                Some(referrer)
            }
        };
        let mut row = MemberRow {
            member_id: id,
            status: status::ACTIVE,
            given_name_enc: None,
            family_name_enc: None,
            birth_date_enc: None,
            gender: 0,
            region: String::new(),
            preferred_language: String::new(),
            time_zone: String::new(),
            tags: cmd.tags,
            referral_code: domain::new_referral_code(),
            referred_by,
            merged_into: None,
            enrolled_at: cmd.enrolled_at,
            updated_at: now,
            version: 1,
        };
        self.seal_profile(program, id, &mut row, &cmd.profile);
        repo::insert_member(tx, program.as_str(), &row)
            .await
            .map_err(MemberError::from_db)?;
        let mut identities = Vec::new();
        for key in &cmd.identities {
            let identity = self.identity_row(program, id, key, now);
            repo::insert_identity(tx, program.as_str(), &identity)
                .await
                .map_err(MemberError::from_db)?;
            identities.push(identity);
        }
        for consent in &cmd.consents {
            repo::upsert_consent(tx, program.as_str(), id, consent).await?;
        }
        let member = self.to_proto(program, &row, &identities, &cmd.consents)?;
        let event = pb::MemberCreated {
            member_id: id.to_string(),
            referred_by_member_id: member.referred_by_member_id.clone(),
            tags: row.tags.clone(),
            consents: member.consents.clone(),
            region: row.region.clone(),
            identity_types: cmd
                .identities
                .iter()
                .map(|k| i32::from(k.kind.code()))
                .collect(),
            auto_enrolled: auto,
        };
        // A new member has no card yet: nothing to invalidate.
        self.emit(tx, program, id, cmd.enrolled_at, None, &event)
            .await?;
        Ok((row, member))
    }

    async fn emit<P: Message + Name>(
        &self,
        tx: &mut PgConnection,
        program: &ProgramId,
        member: Uuid,
        occurred_at: DateTime<Utc>,
        card_version: Option<i64>,
        payload: &P,
    ) -> Result<()> {
        outbox::enqueue(
            tx,
            SOURCE,
            NewEvent {
                program,
                member_id: Some(member),
                occurred_at,
                recorded_at: self.clock.now(),
                card_version,
                payload,
            },
        )
        .await?;
        Ok(())
    }

    /// Stored responses hold personal data: sealed, bound to the programme.
    fn seal_response(&self, program: &ProgramId, member: &pb::Member) -> Vec<u8> {
        self.pii
            .seal(&member.encode_to_vec(), &format!("{program}/idempotency"))
    }

    fn replay_member(&self, program: &ProgramId, stored: &[u8]) -> Result<pb::Member> {
        let plain = self
            .pii
            .open(stored, &format!("{program}/idempotency"))
            .map_err(|e| MemberError::Internal(e.into()))?;
        pb::Member::decode(plain.as_slice()).map_err(|e| MemberError::Internal(e.into()))
    }

    /// Runs a change to one existing member under idempotency: locks the row,
    /// applies `change`, bumps the version, emits, stores the response and
    /// invalidates the card.
    async fn change_member<F>(
        &self,
        program: &ProgramId,
        operation: &'static str,
        request_id: &str,
        req: &impl Message,
        id: Uuid,
        change: F,
    ) -> Result<pb::Member>
    where
        F: for<'c> FnOnce(
            &'c Self,
            &'c mut PgConnection,
            &'c mut MemberRow,
        ) -> futures::future::BoxFuture<'c, Result<()>>,
    {
        let mut tx = self.pool.begin().await?;
        let key = match idempotency::claim(&mut tx, program, operation, request_id, req).await? {
            Claim::Replay(stored) => return self.replay_member(program, &stored),
            Claim::New(key) => key,
        };
        let mut row = repo::member(&mut tx, program.as_str(), id, true)
            .await?
            .ok_or(MemberError::MemberNotFound)?;
        if row.status == status::MERGED || row.status == status::ERASED {
            return Err(MemberError::NotActive(status_name(row.status)));
        }
        // The change sees the version it produces, for its event.
        row.version += 1;
        row.updated_at = self.clock.now();
        change(self, &mut tx, &mut row).await?;
        repo::save_member(&mut tx, program.as_str(), &row).await?;
        let (_, member) = self
            .load(&mut tx, program, id)
            .await?
            .ok_or(MemberError::MemberNotFound)?;
        key.complete(&mut tx, &self.seal_response(program, &member), Some(id))
            .await?;
        tx.commit().await?;
        self.invalidate(program, id, row.version).await;
        Ok(member)
    }

    /// Changes the fields named by the mask.
    pub async fn update(
        &self,
        program: &ProgramId,
        req: &pb::UpdateMemberRequest,
    ) -> Result<pb::Member> {
        let cmd = requests::member_update(req, self.check_context())?;
        let id = cmd.member_id;
        let program_c = program.clone();
        self.change_member(
            program,
            "UpdateMember",
            &req.request_id,
            req,
            id,
            move |this, tx, row| {
                Box::pin(async move {
                    let mut profile = this.open_profile(&program_c, row)?;
                    let mut changed = Vec::new();
                    let mut consents_now: Vec<Consent> =
                        repo::consents(tx, program_c.as_str(), &[id])
                            .await?
                            .into_iter()
                            .map(Into::into)
                            .collect();
                    for change in &cmd.changes {
                        match change {
                            Change::Status => {
                                row.status = cmd.status;
                                changed.push("status".to_owned());
                            }
                            Change::Tags => {
                                row.tags.clone_from(&cmd.tags);
                                changed.push("tags".to_owned());
                            }
                            Change::Consents => {
                                consents_now = domain::merge_consents(&consents_now, &cmd.consents);
                                for c in &consents_now {
                                    repo::upsert_consent(tx, program_c.as_str(), id, c).await?;
                                }
                                changed.push("consents".to_owned());
                            }
                            Change::Profile(name) => {
                                set_profile_field(&mut profile, &cmd.profile, name);
                                changed.push(format!("profile.{name}"));
                            }
                        }
                    }
                    this.seal_profile(&program_c, id, row, &profile);
                    let event = pb::MemberUpdated {
                        member_id: id.to_string(),
                        changed_fields: changed,
                        status: i32::from(row.status),
                        tags: row.tags.clone(),
                        consents: consents_now.iter().map(consent_proto).collect(),
                    };
                    this.emit(
                        tx,
                        &program_c,
                        id,
                        this.clock.now(),
                        Some(row.version),
                        &event,
                    )
                    .await
                })
            },
        )
        .await
    }

    /// Links an identity.
    pub async fn link(
        &self,
        program: &ProgramId,
        req: &pb::LinkIdentityRequest,
    ) -> Result<pb::Member> {
        let (id, key) =
            self.identity_request(&req.request_id, &req.member_id, req.identity.as_ref())?;
        let program_c = program.clone();
        self.change_member(
            program,
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
        program: &ProgramId,
        req: &pb::UnlinkIdentityRequest,
    ) -> Result<pb::Member> {
        let (id, key) =
            self.identity_request(&req.request_id, &req.member_id, req.identity.as_ref())?;
        let program_c = program.clone();
        self.change_member(
            program,
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
        let mut v = laurel_runtime::error::Violations::new();
        idempotency::check_request_id(request_id, &mut v);
        let id = requests::member_id(member_id, "member_id", &mut v);
        let key = requests::identity(identity, "identity", self.check_context(), &mut v);
        v.finish()?;
        Ok((id.expect("checked"), key.expect("checked")))
    }

    /// Folds one member into another.
    pub async fn merge(
        &self,
        program: &ProgramId,
        req: &pb::MergeMembersRequest,
    ) -> Result<pb::Member> {
        let pb::MergeMembersRequest {
            request_id,
            survivor_member_id,
            merged_member_id,
        } = req;
        let mut v = laurel_runtime::error::Violations::new();
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
        let mut tx = self.pool.begin().await?;
        let key =
            match idempotency::claim(&mut tx, program, "MergeMembers", request_id, req).await? {
                Claim::Replay(stored) => return self.replay_member(program, &stored),
                Claim::New(key) => key,
            };
        // Lock both rows in id order so concurrent merges cannot deadlock.
        let mut rows = HashMap::new();
        let mut ids = [survivor, merged];
        ids.sort();
        for id in ids {
            let row = repo::member(&mut tx, program.as_str(), id, true)
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
        let both: Vec<Consent> = repo::consents(&mut tx, program.as_str(), &[survivor, merged])
            .await?
            .into_iter()
            .map(Into::into)
            .collect();
        let consents = domain::merge_consents(&[], &both);
        repo::move_to_survivor(&mut tx, program.as_str(), merged, survivor).await?;
        for c in &consents {
            repo::upsert_consent(&mut tx, program.as_str(), survivor, c).await?;
        }
        let mut tags = s.tags.clone();
        tags.extend(m.tags.iter().cloned());
        tags.sort();
        tags.dedup();
        // The survivor keeps its own profile, filling gaps from the other.
        let mut sp = self.open_profile(program, &s)?;
        let mp = self.open_profile(program, &m)?;
        for name in domain::PROFILE_FIELDS {
            if profile_field_empty(&sp, name) {
                set_profile_field(&mut sp, &mp, name);
            }
        }
        self.seal_profile(program, survivor, &mut s, &sp);
        s.tags = tags;
        if s.referred_by == Some(merged) {
            s.referred_by = None;
        }
        s.version += 1;
        s.updated_at = now;
        m.status = status::MERGED;
        m.merged_into = Some(survivor);
        m.version += 1;
        m.updated_at = now;
        repo::save_member(&mut tx, program.as_str(), &s).await?;
        repo::save_member(&mut tx, program.as_str(), &m).await?;
        let event = pb::MemberMerged {
            survivor_member_id: survivor.to_string(),
            merged_member_id: merged.to_string(),
        };
        // The merged member's stream ends with its merge; the survivor's
        // card changed too (identities, tags, consents, profile gaps).
        self.emit(&mut tx, program, merged, now, Some(m.version), &event)
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
            &mut tx,
            program,
            survivor,
            now,
            Some(s.version),
            &survivor_changed,
        )
        .await?;
        let (_, member) = self
            .load(&mut tx, program, survivor)
            .await?
            .ok_or(MemberError::MemberNotFound)?;
        key.complete(
            &mut tx,
            &self.seal_response(program, &member),
            Some(survivor),
        )
        .await?;
        tx.commit().await?;
        self.invalidate(program, survivor, s.version).await;
        self.invalidate(program, merged, m.version).await;
        Ok(member)
    }

    /// Removes a member's personal data for good; the id stays.
    pub async fn erase(
        &self,
        program: &ProgramId,
        req: &pb::EraseMemberRequest,
    ) -> Result<pb::Member> {
        let pb::EraseMemberRequest {
            request_id,
            member_id,
        } = req;
        let mut v = laurel_runtime::error::Violations::new();
        idempotency::check_request_id(request_id, &mut v);
        let id = requests::member_id(member_id, "member_id", &mut v);
        v.finish()?;
        let id = id.expect("checked");
        let mut tx = self.pool.begin().await?;
        let key = match idempotency::claim(&mut tx, program, "EraseMember", request_id, req).await?
        {
            Claim::Replay(stored) => return self.replay_member(program, &stored),
            Claim::New(key) => key,
        };
        let mut row = repo::member(&mut tx, program.as_str(), id, true)
            .await?
            .ok_or(MemberError::MemberNotFound)?;
        repo::delete_personal_rows(&mut tx, program.as_str(), id).await?;
        // Free text in the activity log is personal too.
        let activities =
            repo::list_activities(&mut tx, program.as_str(), id, None, i64::MAX).await?;
        for a in activities {
            let mut activity = pb::Activity::decode(a.body.as_slice())
                .map_err(|e| MemberError::Internal(e.into()))?;
            strip_free_text(&mut activity);
            repo::set_activity_body(
                &mut tx,
                program.as_str(),
                a.activity_id,
                &activity.encode_to_vec(),
            )
            .await?;
        }
        let now = self.clock.now();
        row.status = status::ERASED;
        self.seal_profile(program, id, &mut row, &Profile::default());
        row.tags.clear();
        row.version += 1;
        row.updated_at = now;
        repo::save_member(&mut tx, program.as_str(), &row).await?;
        self.emit(
            &mut tx,
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
        key.complete(&mut tx, &self.seal_response(program, &member), None)
            .await?;
        tx.commit().await?;
        self.invalidate(program, id, row.version).await;
        Ok(member)
    }

    /// Pages through members.
    pub async fn list(
        &self,
        program: &ProgramId,
        req: &pb::ListMembersRequest,
    ) -> Result<(Vec<pb::Member>, String)> {
        let (filter, size) = requests::member_listing(req)?;
        let mut conn = self.pool.acquire().await?;
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

    /// Records an activity; returns it, whether it is new, and whether the
    /// member was enrolled by it.
    pub async fn record_activity(
        &self,
        program: &ProgramId,
        req: &pb::RecordActivityRequest,
    ) -> Result<(pb::Activity, bool, bool)> {
        let cmd = requests::new_activity(req, self.check_context())?;
        let hash = idempotency::request_hash(req);
        // Two callers racing to enrol one identity or record one activity:
        // the loser retries and finds the winner's result.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_record(program, &cmd, &hash).await {
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
        hash: &[u8],
    ) -> Result<(pb::Activity, bool, bool)> {
        let activity = &cmd.activity;
        let mut tx = self.pool.begin().await?;
        if let Some(existing) = repo::activity_by_source(
            &mut tx,
            program.as_str(),
            &activity.source,
            &activity.external_id,
        )
        .await?
        {
            if existing.request_hash != hash {
                return Err(MemberError::ActivityConflict);
            }
            let stored = pb::Activity::decode(existing.body.as_slice())
                .map_err(|e| MemberError::Internal(e.into()))?;
            return Ok((stored, false, false));
        }
        let mut enrolled = false;
        let member_id = match &cmd.member {
            MemberRef::Id(id) => *id,
            MemberRef::Identity(key) => {
                let hash = self.pii.identity_hash(program.as_str(), key);
                match repo::member_by_identity(&mut tx, program.as_str(), &hash).await? {
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
                        self.enrol(&mut tx, program, new, true).await?.0.member_id
                    }
                    None => return Err(MemberError::IdentityNotFound),
                }
            }
        };
        // Locking the member orders its activities and events.
        let mut row = repo::member(&mut tx, program.as_str(), member_id, true)
            .await?
            .ok_or(MemberError::MemberNotFound)?;
        if let Some(survivor) = row.merged_into {
            row = repo::member(&mut tx, program.as_str(), survivor, true)
                .await?
                .ok_or(MemberError::MemberNotFound)?;
        }
        if row.status == status::ERASED || row.status == status::MERGED {
            return Err(MemberError::NotActive(status_name(row.status)));
        }
        let member_id = row.member_id;
        if cmd.kind == 2 {
            let (order_id, currency, amount) = cmd.money.clone().expect("refunds carry money");
            let order = repo::lock_purchase(&mut tx, program.as_str(), &order_id)
                .await?
                .ok_or(MemberError::OrderNotFound)?;
            if order.member_id != member_id {
                return Err(MemberError::OrderNotFound);
            }
            if order.currency.as_deref() != Some(currency.as_str()) {
                let mut v = laurel_runtime::error::Violations::new();
                v.add(
                    "activity.refund.amount.currency_code",
                    "must be the order's currency",
                );
                return Err(v.into());
            }
            let refunded = repo::refunded_total(&mut tx, program.as_str(), &order_id).await?;
            if refunded + amount > order.amount_minor.unwrap_or(0) {
                return Err(MemberError::RefundExceedsOrder);
            }
        }
        let now = self.clock.now();
        let mut stored = activity.clone();
        let activity_id = Uuid::now_v7();
        stored.activity_id = activity_id.to_string();
        stored.member_id = member_id.to_string();
        stored.recorded_at = Some(to_timestamp(now));
        let occurred_at = activity
            .occurred_at
            .as_ref()
            .and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos as u32))
            .unwrap_or(now);
        let row = repo::ActivityRow {
            activity_id,
            member_id,
            activity_type: cmd.kind,
            source: stored.source.clone(),
            external_id: stored.external_id.clone(),
            occurred_at,
            recorded_at: now,
            order_id: cmd.money.as_ref().map(|m| m.0.clone()),
            currency: cmd.money.as_ref().map(|m| m.1.clone()),
            amount_minor: cmd.money.as_ref().map(|m| m.2),
            body: stored.encode_to_vec(),
            request_hash: hash.to_vec(),
        };
        repo::insert_activity(&mut tx, program.as_str(), &row)
            .await
            .map_err(MemberError::from_db)?;
        let mut published = stored.clone();
        strip_free_text(&mut published);
        // Activities are not on the card: no invalidation.
        self.emit(
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
        let mut v = laurel_runtime::error::Violations::new();
        let id = requests::member_id(member_id, "member_id", &mut v);
        let size = pagination::page_size(*page_size);
        v.check(size.is_none(), "page_size", "must not be negative");
        let before = requests::page_position(page_token, &mut v);
        v.finish()?;
        let (id, size) = (id.expect("checked"), size.expect("checked"));
        let survivor = self.get(program, id).await?;
        let id =
            Uuid::parse_str(&survivor.member_id).map_err(|e| MemberError::Internal(e.into()))?;
        let mut conn = self.pool.acquire().await?;
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

    /// Everything held on a member.
    pub async fn export(
        &self,
        program: &ProgramId,
        req: &pb::ExportMemberRequest,
    ) -> Result<pb::ExportMemberResponse> {
        let pb::ExportMemberRequest { member_id } = req;
        let mut v = laurel_runtime::error::Violations::new();
        let id = requests::member_id(member_id, "member_id", &mut v);
        v.finish()?;
        let id = id.expect("checked");
        let mut conn = self.pool.acquire().await?;
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

fn consent_proto(c: &Consent) -> pb::Consent {
    pb::Consent {
        channel: i32::from(c.channel),
        granted: c.granted,
        source: c.source.clone(),
        updated_at: Some(to_timestamp(c.updated_at)),
    }
}

fn set_profile_field(to: &mut Profile, from: &Profile, name: &str) {
    match name {
        "given_name" => to.given_name.clone_from(&from.given_name),
        "family_name" => to.family_name.clone_from(&from.family_name),
        "birth_date" => to.birth_date.clone_from(&from.birth_date),
        "gender" => to.gender = from.gender,
        "region" => to.region.clone_from(&from.region),
        "preferred_language" => to.preferred_language.clone_from(&from.preferred_language),
        "time_zone" => to.time_zone.clone_from(&from.time_zone),
        _ => {}
    }
}

fn profile_field_empty(p: &Profile, name: &str) -> bool {
    match name {
        "given_name" => p.given_name.is_empty(),
        "family_name" => p.family_name.is_empty(),
        "birth_date" => p.birth_date.is_empty(),
        "gender" => p.gender == 0,
        "region" => p.region.is_empty(),
        "preferred_language" => p.preferred_language.is_empty(),
        "time_zone" => p.time_zone.is_empty(),
        _ => false,
    }
}

/// Removes free text (review text, feedback comments, shared URLs) that
/// events must not spread and erasure must remove.
pub fn strip_free_text(activity: &mut pb::Activity) {
    use pb::activity::Detail;
    match &mut activity.detail {
        Some(Detail::Review(r)) => r.text.clear(),
        Some(Detail::Feedback(f)) => f.comment.clear(),
        Some(Detail::Share(s)) => s.url.clear(),
        _ => {}
    }
}
