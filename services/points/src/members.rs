//! Which members exist: an account row, a member seen in the member
//! service's events, or, for a member never seen, the member service itself
//! (GetMember over gRPC, with the caller's trace context).

use std::time::Duration;

use laurel_proto::member::v1::{
    GetMemberRequest, MemberStatus, member_service_client::MemberServiceClient,
};
use sqlx::PgPool;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::{error::PointsError, ledger::book::LedgerError};

/// Members known to exist.
#[derive(Clone)]
pub struct MemberDirectory {
    client: MemberServiceClient<Channel>,
    api_key: Option<String>,
    known: moka::sync::Cache<(String, Uuid), ()>,
    pool: PgPool,
}

impl std::fmt::Debug for MemberDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberDirectory").finish_non_exhaustive()
    }
}

impl MemberDirectory {
    /// A directory asking the member service at `addr` (connected lazily).
    pub fn new(addr: &str, api_key: Option<String>, pool: PgPool) -> anyhow::Result<Self> {
        let channel = Channel::from_shared(addr.to_owned())?
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy();
        Ok(Self {
            client: MemberServiceClient::new(channel),
            api_key,
            known: moka::sync::Cache::builder().max_capacity(1_000_000).build(),
            pool,
        })
    }

    /// Remembers that `member` exists.
    pub fn learn(&self, program: &str, member: Uuid) {
        self.known.insert((program.to_owned(), member), ());
    }

    /// Ok when `member` exists in `program`.
    pub async fn ensure(&self, program: &str, member: Uuid) -> Result<(), PointsError> {
        let key = (program.to_owned(), member);
        if self.known.contains_key(&key) {
            return Ok(());
        }
        let stored: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM accounts WHERE program_id = $1 AND member_id = $2")
                .bind(program)
                .bind(member)
                .fetch_optional(&self.pool)
                .await?;
        if stored.is_none() {
            self.ask(program, member).await?;
        }
        self.known.insert(key, ());
        Ok(())
    }

    async fn ask(&self, program: &str, member: Uuid) -> Result<(), PointsError> {
        let mut request = tonic::Request::new(GetMemberRequest {
            member_id: member.to_string(),
        });
        request.set_timeout(Duration::from_secs(2));
        let md = request.metadata_mut();
        if let Ok(v) = program.parse() {
            md.insert(laurel_runtime::context::PROGRAM_HEADER, v);
        }
        if let Some(key) = &self.api_key
            && let Ok(v) = key.parse()
        {
            md.insert("x-api-key", v);
        }
        for (k, v) in laurel_runtime::trace_context::current_as_map() {
            if let (Ok(k), Ok(v)) = (
                tonic::metadata::MetadataKey::from_bytes(k.as_bytes()),
                v.parse(),
            ) {
                md.insert(k, v);
            }
        }
        match self.client.clone().get_member(request).await {
            Ok(r) => match r.into_inner().member.map(|m| m.status) {
                Some(s) if s == MemberStatus::Erased as i32 => {
                    Err(PointsError::Ledger(LedgerError::MemberInactive("erased")))
                }
                _ => Ok(()),
            },
            Err(s) if s.code() == tonic::Code::NotFound => Err(PointsError::MemberNotFound),
            Err(s) => Err(PointsError::MemberServiceUnavailable(
                s.message().to_owned(),
            )),
        }
    }
}
