//! CreateMember, and enrolment itself (also used by auto-enrolment when an
//! activity names an unknown identity).

use laurel_proto::member::v1 as pb;
use laurel_runtime::{
    context::{ProgramId, RequestContext},
    error::Violations,
    idempotency::Begun,
};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Members, Result, status_name};
use crate::{
    domain,
    error::MemberError,
    repo::{self, MemberRow, status},
    requests,
};

/// Referral codes drawn before enrolment gives up. With 31^8 codes a
/// programme of ten million members collides once in 85,000 draws, so five
/// failures in a row mean something else is wrong.
const REFERRAL_CODE_ATTEMPTS: usize = 5;

/// Inserts `row`, drawing its referral code from `codes` again while the
/// drawn code belongs to another member of the programme.
pub(crate) async fn insert_with_fresh_code(
    tx: &mut PgConnection,
    program: &str,
    row: &mut MemberRow,
    mut codes: impl FnMut() -> String,
) -> Result<()> {
    for _ in 0..REFERRAL_CODE_ATTEMPTS {
        row.referral_code = codes();
        if repo::insert_member(tx, program, row)
            .await
            .map_err(MemberError::from_db)?
        {
            return Ok(());
        }
        tracing::info!("referral code collision: drawing another");
    }
    Err(MemberError::Internal(anyhow::anyhow!(
        "no free referral code after {REFERRAL_CODE_ATTEMPTS} draws"
    )))
}

impl Members {
    /// Enrols a member.
    pub async fn create(
        &self,
        ctx: &RequestContext,
        req: &pb::CreateMemberRequest,
    ) -> Result<pb::Member> {
        let cmd = requests::new_member(req, self.check_context())?;
        let mut fresh = match self
            .begin_idempotent(ctx, "CreateMember", &req.request_id, req)
            .await?
        {
            Begun::Replay(member) => return Ok(member),
            Begun::Fresh(fresh) => fresh,
        };
        let (row, member) = self.enrol(fresh.tx(), &ctx.program, cmd, false).await?;
        fresh.commit(&member, Some(row.member_id)).await?;
        Ok(member)
    }

    /// The referrer named by a referral code, checked.
    async fn referrer(
        &self,
        tx: &mut PgConnection,
        program: &ProgramId,
        new_member: Uuid,
        code: &str,
        identities: &[domain::IdentityKey],
    ) -> Result<Uuid> {
        let Some(referrer) = repo::member_by_referral_code(tx, program.as_str(), code).await?
        else {
            let mut v = Violations::new();
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
        for identity in identities {
            let hash = self.pii.identity_hash(program.as_str(), identity);
            if repo::member_by_identity(tx, program.as_str(), &hash).await? == Some(referrer) {
                return Err(MemberError::SelfReferral);
            }
        }
        let chain = repo::referrer_chain(tx, program.as_str(), referrer).await?;
        if domain::closes_referral_cycle(new_member, referrer, &chain) {
            return Err(MemberError::ReferralCycle);
        }
        Ok(referrer)
    }

    pub(super) async fn enrol(
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
            Some(code) => Some(
                self.referrer(tx, program, id, code, &cmd.identities)
                    .await?,
            ),
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
            referral_code: String::new(),
            referred_by,
            merged_into: None,
            enrolled_at: cmd.enrolled_at,
            updated_at: now,
            version: 1,
        };
        self.seal_profile(program, id, &mut row, &cmd.profile);
        insert_with_fresh_code(tx, program.as_str(), &mut row, domain::new_referral_code).await?;
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
}

#[cfg(test)]
mod tests {
    use laurel_test_support as support;
    use sqlx::Connection;

    use super::*;

    fn row(id: Uuid) -> MemberRow {
        let now = chrono::Utc::now();
        MemberRow {
            member_id: id,
            status: status::ACTIVE,
            given_name_enc: None,
            family_name_enc: None,
            birth_date_enc: None,
            gender: 0,
            region: String::new(),
            preferred_language: String::new(),
            time_zone: String::new(),
            tags: Vec::new(),
            referral_code: String::new(),
            referred_by: None,
            merged_into: None,
            enrolled_at: now,
            updated_at: now,
            version: 1,
        }
    }

    /// A connection to a fresh schema with this service's tables.
    async fn fresh_db() -> (PgConnection, String) {
        let schema = support::fresh_schema("member");
        let url = support::database_url();
        laurel_runtime::db::migrate(&url, &schema, &crate::MIGRATIONS)
            .await
            .expect("migrates");
        let options = laurel_runtime::db::options(&url, &schema).expect("options");
        let conn = PgConnection::connect_with(&options)
            .await
            .expect("connects");
        (conn, schema)
    }

    async fn drop_schema(mut conn: PgConnection, schema: &str) {
        sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .execute(&mut conn)
            .await
            .expect("drops");
    }

    #[tokio::test]
    async fn a_taken_referral_code_is_drawn_again() {
        let (mut conn, schema) = fresh_db().await;
        let mut first = row(Uuid::now_v7());
        insert_with_fresh_code(&mut conn, "p", &mut first, || "AAAAAAAA".into())
            .await
            .unwrap();
        let mut draws = ["AAAAAAAA", "AAAAAAAA", "BBBBBBBB"].into_iter();
        let mut second = row(Uuid::now_v7());
        let mut tx = conn.begin().await.unwrap();
        insert_with_fresh_code(&mut tx, "p", &mut second, || {
            draws.next().unwrap().to_owned()
        })
        .await
        .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(second.referral_code, "BBBBBBBB");
        assert_eq!(draws.next(), None);
        let stored: String =
            sqlx::query_scalar("SELECT referral_code FROM members WHERE member_id = $1")
                .bind(second.member_id)
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert_eq!(stored, "BBBBBBBB");
        // Another programme may hold the same code.
        let mut elsewhere = row(Uuid::now_v7());
        insert_with_fresh_code(&mut conn, "q", &mut elsewhere, || "AAAAAAAA".into())
            .await
            .unwrap();
        drop_schema(conn, &schema).await;
    }

    #[tokio::test]
    async fn enrolment_gives_up_after_a_few_collisions() {
        let (mut conn, schema) = fresh_db().await;
        let mut first = row(Uuid::now_v7());
        insert_with_fresh_code(&mut conn, "p", &mut first, || "AAAAAAAA".into())
            .await
            .unwrap();
        let mut draws = 0;
        let mut second = row(Uuid::now_v7());
        let result = insert_with_fresh_code(&mut conn, "p", &mut second, || {
            draws += 1;
            "AAAAAAAA".into()
        })
        .await;
        assert!(matches!(result, Err(MemberError::Internal(_))));
        assert_eq!(draws, REFERRAL_CODE_ATTEMPTS);
        drop_schema(conn, &schema).await;
    }
}
