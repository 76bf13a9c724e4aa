//! Which members exist: a row from the member service's events, or, for a
//! member never seen (events still on their way, or from before this
//! service ran), the member service itself, asked once over gRPC.

use std::time::Duration;

use chrono::{DateTime, Utc};
use laurel_proto::member::v1::{
    GetMemberRequest, MemberStatus, member_service_client::MemberServiceClient,
};
use tonic::transport::Channel;
use uuid::Uuid;

use crate::error::TierError;

/// What the member service says of a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Known {
    /// Enrolled at this time.
    Enrolled(DateTime<Utc>),
    /// Erased.
    Erased,
}

/// Asks the member service about members.
#[derive(Clone)]
pub struct MemberDirectory {
    client: MemberServiceClient<Channel>,
    api_key: Option<String>,
}

impl std::fmt::Debug for MemberDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberDirectory").finish_non_exhaustive()
    }
}

impl MemberDirectory {
    /// A directory asking the member service at `addr` (connected lazily).
    pub fn new(addr: &str, api_key: Option<String>) -> anyhow::Result<Self> {
        let channel = Channel::from_shared(addr.to_owned())?
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy();
        Ok(Self {
            client: MemberServiceClient::new(channel),
            api_key,
        })
    }

    /// Asks about `member`: `MemberNotFound` when the member service does
    /// not know it.
    pub async fn ask(&self, program: &str, member: Uuid) -> Result<Known, TierError> {
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
            Ok(r) => {
                let Some(m) = r.into_inner().member else {
                    return Err(TierError::MemberNotFound);
                };
                if m.status == MemberStatus::Erased as i32 {
                    return Ok(Known::Erased);
                }
                let at = m
                    .enrolled_at
                    .and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
                    .unwrap_or_else(Utc::now);
                Ok(Known::Enrolled(at))
            }
            Err(s) if s.code() == tonic::Code::NotFound => Err(TierError::MemberNotFound),
            Err(s) => Err(TierError::Internal(anyhow::anyhow!(
                "member service unavailable: {}",
                s.message()
            ))),
        }
    }
}
