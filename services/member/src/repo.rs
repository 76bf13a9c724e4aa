//! SQL of the member service. Every query is scoped by programme and binds
//! its parameters.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use crate::{activity_kind::ActivityKind, domain::Consent};

/// Stored member status codes, equal to the proto enum values.
pub mod status {
    /// Active.
    pub const ACTIVE: i16 = 1;
    /// Suspended.
    pub const SUSPENDED: i16 = 2;
    /// Merged into another member.
    pub const MERGED: i16 = 3;
    /// Personal data erased.
    pub const ERASED: i16 = 4;
}

/// A `members` row.
#[derive(Clone, Debug, FromRow)]
pub struct MemberRow {
    pub member_id: Uuid,
    pub status: i16,
    pub given_name_enc: Option<Vec<u8>>,
    pub family_name_enc: Option<Vec<u8>>,
    pub birth_date_enc: Option<Vec<u8>>,
    pub gender: i16,
    pub region: String,
    pub preferred_language: String,
    pub time_zone: String,
    pub tags: Vec<String>,
    pub referral_code: String,
    pub referred_by: Option<Uuid>,
    pub merged_into: Option<Uuid>,
    pub enrolled_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

/// An `identities` row.
#[derive(Clone, Debug, FromRow)]
pub struct IdentityRow {
    pub member_id: Uuid,
    pub identity_type: i16,
    pub namespace: String,
    pub lookup_hash: Vec<u8>,
    pub value_enc: Vec<u8>,
    pub linked_at: DateTime<Utc>,
}

/// A `consents` row.
#[derive(Clone, Debug, FromRow)]
pub struct ConsentRow {
    pub member_id: Uuid,
    pub channel: i16,
    pub granted: bool,
    pub source: String,
    pub updated_at: DateTime<Utc>,
}

impl From<ConsentRow> for Consent {
    fn from(r: ConsentRow) -> Self {
        Consent {
            channel: r.channel,
            granted: r.granted,
            source: r.source,
            updated_at: r.updated_at,
        }
    }
}

const MEMBER_COLUMNS: &str = "member_id, status, given_name_enc, family_name_enc, birth_date_enc, gender, region, preferred_language, time_zone, tags, referral_code, referred_by, merged_into, enrolled_at, updated_at, version";

/// One member, optionally locked for update.
pub async fn member(
    conn: &mut PgConnection,
    program: &str,
    id: Uuid,
    lock: bool,
) -> Result<Option<MemberRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {MEMBER_COLUMNS} FROM members WHERE program_id = $1 AND member_id = $2{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    sqlx::query_as(&sql)
        .bind(program)
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// A member's current version, the order of its card's writes.
pub async fn member_version(
    conn: &mut PgConnection,
    program: &str,
    id: Uuid,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT version FROM members WHERE program_id = $1 AND member_id = $2")
        .bind(program)
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Identities of some members.
pub async fn identities(
    conn: &mut PgConnection,
    program: &str,
    members: &[Uuid],
) -> Result<Vec<IdentityRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT member_id, identity_type, namespace, lookup_hash, value_enc, linked_at FROM identities
         WHERE program_id = $1 AND member_id = ANY($2) ORDER BY linked_at, identity_type",
    )
    .bind(program)
    .bind(members)
    .fetch_all(conn)
    .await
}

/// Consents of some members.
pub async fn consents(
    conn: &mut PgConnection,
    program: &str,
    members: &[Uuid],
) -> Result<Vec<ConsentRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT member_id, channel, granted, source, updated_at FROM consents
         WHERE program_id = $1 AND member_id = ANY($2) ORDER BY channel",
    )
    .bind(program)
    .bind(members)
    .fetch_all(conn)
    .await
}

/// Inserts a member; false, inserting nothing, when its referral code is
/// taken in the programme.
pub async fn insert_member(
    conn: &mut PgConnection,
    program: &str,
    m: &MemberRow,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO members (program_id, member_id, status, given_name_enc, family_name_enc, birth_date_enc,
            gender, region, preferred_language, time_zone, tags, referral_code, referred_by, merged_into,
            enrolled_at, updated_at, version)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17)
         ON CONFLICT ON CONSTRAINT members_referral_code_key DO NOTHING",
    )
    .bind(program)
    .bind(m.member_id)
    .bind(m.status)
    .bind(&m.given_name_enc)
    .bind(&m.family_name_enc)
    .bind(&m.birth_date_enc)
    .bind(m.gender)
    .bind(&m.region)
    .bind(&m.preferred_language)
    .bind(&m.time_zone)
    .bind(&m.tags)
    .bind(&m.referral_code)
    .bind(m.referred_by)
    .bind(m.merged_into)
    .bind(m.enrolled_at)
    .bind(m.updated_at)
    .bind(m.version)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Writes every mutable column of a member.
pub async fn save_member(
    conn: &mut PgConnection,
    program: &str,
    m: &MemberRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE members SET status = $3, given_name_enc = $4, family_name_enc = $5, birth_date_enc = $6,
            gender = $7, region = $8, preferred_language = $9, time_zone = $10, tags = $11,
            referred_by = $12, merged_into = $13, updated_at = $14, version = $15
         WHERE program_id = $1 AND member_id = $2",
    )
    .bind(program)
    .bind(m.member_id)
    .bind(m.status)
    .bind(&m.given_name_enc)
    .bind(&m.family_name_enc)
    .bind(&m.birth_date_enc)
    .bind(m.gender)
    .bind(&m.region)
    .bind(&m.preferred_language)
    .bind(&m.time_zone)
    .bind(&m.tags)
    .bind(m.referred_by)
    .bind(m.merged_into)
    .bind(m.updated_at)
    .bind(m.version)
    .execute(conn)
    .await?;
    Ok(())
}

/// Links an identity.
pub async fn insert_identity(
    conn: &mut PgConnection,
    program: &str,
    i: &IdentityRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO identities (program_id, identity_type, namespace, lookup_hash, value_enc, member_id, linked_at)
         VALUES ($1,$2,$3,$4,$5,$6,$7)",
    )
    .bind(program)
    .bind(i.identity_type)
    .bind(&i.namespace)
    .bind(&i.lookup_hash)
    .bind(&i.value_enc)
    .bind(i.member_id)
    .bind(i.linked_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Unlinks an identity from a member; false when the member did not hold it.
pub async fn delete_identity(
    conn: &mut PgConnection,
    program: &str,
    member: Uuid,
    hash: &[u8],
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM identities WHERE program_id = $1 AND member_id = $2 AND lookup_hash = $3",
    )
    .bind(program)
    .bind(member)
    .bind(hash)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The member holding an identity.
pub async fn member_by_identity(
    conn: &mut PgConnection,
    program: &str,
    hash: &[u8],
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT member_id FROM identities WHERE program_id = $1 AND lookup_hash = $2",
    )
    .bind(program)
    .bind(hash)
    .fetch_optional(conn)
    .await
}

/// The member owning a referral code.
pub async fn member_by_referral_code(
    conn: &mut PgConnection,
    program: &str,
    code: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT member_id FROM members WHERE program_id = $1 AND referral_code = $2")
        .bind(program)
        .bind(code)
        .fetch_optional(conn)
        .await
}

/// Referrers above `member`, nearest first (bounded against bad data).
pub async fn referrer_chain(
    conn: &mut PgConnection,
    program: &str,
    member: Uuid,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "WITH RECURSIVE chain(id, depth) AS (
             SELECT referred_by, 1 FROM members WHERE program_id = $1 AND member_id = $2 AND referred_by IS NOT NULL
             UNION ALL
             SELECT m.referred_by, c.depth + 1 FROM members m JOIN chain c ON m.program_id = $1 AND m.member_id = c.id
             WHERE m.referred_by IS NOT NULL AND c.depth < 1000)
         SELECT id FROM chain ORDER BY depth",
    )
    .bind(program)
    .bind(member)
    .fetch_all(conn)
    .await
}

/// Inserts or replaces a consent.
pub async fn upsert_consent(
    conn: &mut PgConnection,
    program: &str,
    member: Uuid,
    c: &Consent,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO consents (program_id, member_id, channel, granted, source, updated_at) VALUES ($1,$2,$3,$4,$5,$6)
         ON CONFLICT (program_id, member_id, channel)
         DO UPDATE SET granted = EXCLUDED.granted, source = EXCLUDED.source, updated_at = EXCLUDED.updated_at",
    )
    .bind(program)
    .bind(member)
    .bind(c.channel)
    .bind(c.granted)
    .bind(&c.source)
    .bind(c.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Filters of a member listing.
#[derive(Debug, Default)]
pub struct MemberFilter {
    pub status: Option<i16>,
    pub tag: Option<String>,
    pub enrolled_after: Option<DateTime<Utc>>,
    pub enrolled_before: Option<DateTime<Utc>>,
    pub after: Option<(DateTime<Utc>, Uuid)>,
}

/// One page of members in enrolment order; `limit` rows at most.
pub async fn list_members(
    conn: &mut PgConnection,
    program: &str,
    f: &MemberFilter,
    limit: i64,
) -> Result<Vec<MemberRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {MEMBER_COLUMNS} FROM members WHERE program_id = $1
           AND ($2::smallint IS NULL OR status = $2)
           AND ($3::text IS NULL OR tags @> ARRAY[$3])
           AND ($4::timestamptz IS NULL OR enrolled_at >= $4)
           AND ($5::timestamptz IS NULL OR enrolled_at < $5)
           AND ($6::timestamptz IS NULL OR (enrolled_at, member_id) > ($6, $7))
         ORDER BY enrolled_at, member_id LIMIT $8"
    );
    sqlx::query_as(&sql)
        .bind(program)
        .bind(f.status)
        .bind(&f.tag)
        .bind(f.enrolled_after)
        .bind(f.enrolled_before)
        .bind(f.after.map(|a| a.0))
        .bind(f.after.map(|a| a.1))
        .bind(limit)
        .fetch_all(conn)
        .await
}

/// An `activities` row without its keys.
#[derive(Clone, Debug, FromRow)]
pub struct ActivityRow {
    pub activity_id: Uuid,
    /// `None` for a guest's purchase or refund.
    pub member_id: Option<Uuid>,
    pub activity_type: i16,
    pub source: String,
    pub external_id: String,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub order_id: Option<String>,
    pub currency: Option<String>,
    pub amount_minor: Option<i64>,
    pub body: Vec<u8>,
    /// Keyed digest of the recording request; `None` once the member was
    /// erased.
    pub request_hash: Option<Vec<u8>>,
}

const ACTIVITY_COLUMNS: &str = "activity_id, member_id, activity_type, source, external_id, occurred_at, recorded_at, order_id, currency, amount_minor, body, request_hash";

/// The activity recorded under (source, external_id).
pub async fn activity_by_source(
    conn: &mut PgConnection,
    program: &str,
    source: &str,
    external_id: &str,
) -> Result<Option<ActivityRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ACTIVITY_COLUMNS} FROM activities WHERE program_id = $1 AND source = $2 AND external_id = $3"
    ))
    .bind(program)
    .bind(source)
    .bind(external_id)
    .fetch_optional(conn)
    .await
}

/// Records an activity.
pub async fn insert_activity(
    conn: &mut PgConnection,
    program: &str,
    a: &ActivityRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO activities (program_id, activity_id, member_id, activity_type, source, external_id,
            occurred_at, recorded_at, order_id, currency, amount_minor, body, request_hash)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)",
    )
    .bind(program)
    .bind(a.activity_id)
    .bind(a.member_id)
    .bind(a.activity_type)
    .bind(&a.source)
    .bind(&a.external_id)
    .bind(a.occurred_at)
    .bind(a.recorded_at)
    .bind(&a.order_id)
    .bind(&a.currency)
    .bind(a.amount_minor)
    .bind(&a.body)
    .bind(&a.request_hash)
    .execute(conn)
    .await?;
    Ok(())
}

/// The purchase of an order, locked so refunds of it serialise.
pub async fn lock_purchase(
    conn: &mut PgConnection,
    program: &str,
    order_id: &str,
) -> Result<Option<ActivityRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ACTIVITY_COLUMNS} FROM activities WHERE program_id = $1 AND order_id = $2 AND activity_type = $3 FOR UPDATE"
    ))
    .bind(program)
    .bind(order_id)
    .bind(ActivityKind::Purchase.code())
    .fetch_optional(conn)
    .await
}

/// The amounts refunded of an order so far; the caller sums them with
/// checked arithmetic.
pub async fn refund_amounts(
    conn: &mut PgConnection,
    program: &str,
    order_id: &str,
) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE(amount_minor, 0) FROM activities WHERE program_id = $1 AND order_id = $2 AND activity_type = $3",
    )
    .bind(program)
    .bind(order_id)
    .bind(ActivityKind::Refund.code())
    .fetch_all(conn)
    .await
}

/// A member's activities, newest business time first.
pub async fn list_activities(
    conn: &mut PgConnection,
    program: &str,
    member: Uuid,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<ActivityRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ACTIVITY_COLUMNS} FROM activities WHERE program_id = $1 AND member_id = $2
           AND ($3::timestamptz IS NULL OR (occurred_at, activity_id) < ($3, $4))
         ORDER BY occurred_at DESC, activity_id DESC LIMIT $5"
    ))
    .bind(program)
    .bind(member)
    .bind(before.map(|b| b.0))
    .bind(before.map(|b| b.1))
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Which activities an export reads, and from where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivityExport {
    /// Only activities with a greater id; the nil UUID (below every UUIDv7)
    /// from the start. Never NULL, so the scan is always a range of the
    /// primary key `(program_id, activity_id)`.
    pub after: Uuid,
    /// Only these stored type codes; empty for every type.
    pub types: Vec<i16>,
    /// Only activities that occurred at or after this time.
    pub occurred_from: Option<DateTime<Utc>>,
    /// Only activities that occurred before this time.
    pub occurred_to: Option<DateTime<Utc>>,
}

/// One exported activity: its id (the cursor) and its stored body.
#[derive(Clone, Debug, FromRow)]
pub struct ExportedActivity {
    pub activity_id: Uuid,
    pub body: Vec<u8>,
}

/// The next `limit` activities of a programme after `f.after` in
/// activity_id order, members' and guests' alike: one range scan of the
/// primary key, the filters applied to the rows it walks.
pub async fn export_activities(
    conn: &mut PgConnection,
    program: &str,
    f: &ActivityExport,
    limit: i64,
) -> Result<Vec<ExportedActivity>, sqlx::Error> {
    sqlx::query_as(
        "SELECT activity_id, body FROM activities
         WHERE program_id = $1 AND activity_id > $2
           AND (cardinality($3::smallint[]) = 0 OR activity_type = ANY($3))
           AND ($4::timestamptz IS NULL OR occurred_at >= $4)
           AND ($5::timestamptz IS NULL OR occurred_at < $5)
         ORDER BY activity_id LIMIT $6",
    )
    .bind(program)
    .bind(f.after)
    .bind(&f.types)
    .bind(f.occurred_from)
    .bind(f.occurred_to)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Replaces an activity's body (erasure strips free text).
pub async fn set_activity_body(
    conn: &mut PgConnection,
    program: &str,
    id: Uuid,
    body: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE activities SET body = $3 WHERE program_id = $1 AND activity_id = $2")
        .bind(program)
        .bind(id)
        .bind(body)
        .execute(conn)
        .await?;
    Ok(())
}

/// Forgets the request digests of a member's activities: they were derived
/// from requests that may have held an identity.
pub async fn clear_request_digests(
    conn: &mut PgConnection,
    program: &str,
    member: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE activities SET request_hash = NULL WHERE program_id = $1 AND member_id = $2",
    )
    .bind(program)
    .bind(member)
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves identities, activities, merged members and referrals of `from` to
/// `to`. Returns the members whose referrer moved, with the version their
/// change produced: their cards changed too.
pub async fn move_to_survivor(
    conn: &mut PgConnection,
    program: &str,
    from: Uuid,
    to: Uuid,
) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
    let repointed: Vec<(Uuid, i64)> = sqlx::query_as(
        "UPDATE members SET referred_by = $3, version = version + 1
         WHERE program_id = $1 AND referred_by = $2 AND member_id <> $3
         RETURNING member_id, version",
    )
    .bind(program)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *conn)
    .await?;
    for sql in [
        "UPDATE identities SET member_id = $3 WHERE program_id = $1 AND member_id = $2",
        "UPDATE activities SET member_id = $3 WHERE program_id = $1 AND member_id = $2",
        "UPDATE members SET merged_into = $3 WHERE program_id = $1 AND merged_into = $2",
        "UPDATE members SET referred_by = NULL WHERE program_id = $1 AND member_id = $3 AND referred_by = $2",
    ] {
        sqlx::query(sql)
            .bind(program)
            .bind(from)
            .bind(to)
            .execute(&mut *conn)
            .await?;
    }
    // Bound with exactly its own parameters: a statement prepared with an
    // extra one would be cached that way and break its next use.
    sqlx::query("DELETE FROM consents WHERE program_id = $1 AND member_id = $2")
        .bind(program)
        .bind(from)
        .execute(&mut *conn)
        .await?;
    Ok(repointed)
}

/// Members referred by, or merged into, `member`.
pub async fn related_members(
    conn: &mut PgConnection,
    program: &str,
    member: Uuid,
) -> Result<(Vec<Uuid>, Vec<Uuid>), sqlx::Error> {
    let referred = sqlx::query_scalar("SELECT member_id FROM members WHERE program_id = $1 AND referred_by = $2 ORDER BY member_id")
        .bind(program)
        .bind(member)
        .fetch_all(&mut *conn)
        .await?;
    let merged = sqlx::query_scalar("SELECT member_id FROM members WHERE program_id = $1 AND merged_into = $2 ORDER BY member_id")
        .bind(program)
        .bind(member)
        .fetch_all(&mut *conn)
        .await?;
    Ok((referred, merged))
}

/// Deletes a member's identities, consents and stored idempotent responses.
pub async fn delete_personal_rows(
    conn: &mut PgConnection,
    program: &str,
    member: Uuid,
) -> Result<(), sqlx::Error> {
    for sql in [
        "DELETE FROM identities WHERE program_id = $1 AND member_id = $2",
        "DELETE FROM consents WHERE program_id = $1 AND member_id = $2",
        "DELETE FROM idempotency_keys WHERE program_id = $1 AND subject = $2",
    ] {
        sqlx::query(sql)
            .bind(program)
            .bind(member)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
