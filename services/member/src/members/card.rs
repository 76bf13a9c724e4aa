//! GetMemberCard: everything a storefront shows about a member in one call.
//! The profile summary comes from this service's own field of the shared
//! card (as GetMember serves it), the balance from the points service's
//! field, which this service only reads. A balance missing from the card is
//! asked of the points service within what is left of the caller's
//! deadline; when that fails the card answers without it and says so.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use laurel_proto::{
    member::v1 as pb,
    points::v1::{Balance, GetBalanceRequest, points_service_client::PointsServiceClient},
};
use laurel_runtime::{
    card::CardReader,
    config::{ConfigError, env_opt, env_or},
    context::{PROGRAM_HEADER, ProgramId},
    trace_context::PropagateTraceContext,
};
use prost::Message;
use tonic::{
    Code, Status,
    metadata::{AsciiMetadataValue, MetadataMap},
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};
use uuid::Uuid;

use super::{Members, Result};
use crate::error::MemberError;

/// Where the points service listens when `LAUREL_POINTS_ADDR` is unset.
pub const DEFAULT_POINTS_ADDR: &str = "http://127.0.0.1:50052";

/// How long the card waits for a balance when `LAUREL_POINTS_TIMEOUT_MS` is
/// unset.
pub const DEFAULT_POINTS_TIMEOUT: Duration = Duration::from_millis(500);

/// The metadata entry the services' auth layer reads the API key from.
const API_KEY_HEADER: &str = "x-api-key";

/// At most this much of the caller's remaining time is kept back from the
/// points call, to answer the card before the caller gives up.
const MAX_RESERVE: Duration = Duration::from_millis(50);

/// A points call with less time than this is not worth starting.
const MIN_BUDGET: Duration = Duration::from_millis(1);

/// How the member service reaches the points service. Its `Debug` hides the
/// API key.
#[derive(Clone)]
pub struct PointsSettings {
    /// The points service's address (`LAUREL_POINTS_ADDR`,
    /// [`DEFAULT_POINTS_ADDR`] by default). The channel connects lazily, so
    /// the member service starts without it.
    pub addr: String,
    /// The API key the member service presents to the points service
    /// (`LAUREL_POINTS_API_KEY`); none when the points service runs in
    /// development mode.
    pub api_key: Option<String>,
    /// Longest the card waits for a balance (`LAUREL_POINTS_TIMEOUT_MS`,
    /// 500 by default), even when the caller would wait longer.
    pub timeout: Duration,
}

impl std::fmt::Debug for PointsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PointsSettings")
            .field("addr", &self.addr)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl PointsSettings {
    /// The points service at `addr`, without an API key, with the default
    /// timeout.
    pub fn at(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            api_key: None,
            timeout: DEFAULT_POINTS_TIMEOUT,
        }
    }

    /// Reads `LAUREL_POINTS_ADDR`, `LAUREL_POINTS_API_KEY` and
    /// `LAUREL_POINTS_TIMEOUT_MS`.
    pub fn from_env() -> std::result::Result<Self, ConfigError> {
        let addr: String = env_or("LAUREL_POINTS_ADDR", DEFAULT_POINTS_ADDR.to_owned())?;
        let timeout_ms: u64 = env_or(
            "LAUREL_POINTS_TIMEOUT_MS",
            DEFAULT_POINTS_TIMEOUT.as_millis() as u64,
        )?;
        let settings = Self {
            addr,
            api_key: env_opt("LAUREL_POINTS_API_KEY").map(|k| k.trim().to_owned()),
            timeout: Duration::from_millis(timeout_ms),
        };
        settings.check()?;
        Ok(settings)
    }

    /// Refuses an address that is not a URI, a key that cannot travel as
    /// metadata, and a zero timeout.
    fn check(&self) -> std::result::Result<(), ConfigError> {
        if Endpoint::from_shared(self.addr.clone()).is_err() {
            return Err(ConfigError {
                name: "LAUREL_POINTS_ADDR".into(),
                value: self.addr.clone(),
                reason: "must be a URI such as http://points:50052".into(),
            });
        }
        if let Some(key) = &self.api_key
            && AsciiMetadataValue::try_from(key.as_str()).is_err()
        {
            return Err(ConfigError {
                name: "LAUREL_POINTS_API_KEY".into(),
                value: "<redacted>".into(),
                reason: "must be printable ASCII".into(),
            });
        }
        if self.timeout.is_zero() {
            return Err(ConfigError {
                name: "LAUREL_POINTS_TIMEOUT_MS".into(),
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

type Client = PointsServiceClient<InterceptedService<Channel, PropagateTraceContext>>;

/// The member service's read-only side of the points service: its field of
/// the card, and a client for the balances missing there.
#[derive(Clone)]
pub(crate) struct PointsLink {
    client: Client,
    api_key: Option<AsciiMetadataValue>,
    timeout: Duration,
    cards: CardReader<Balance>,
}

impl std::fmt::Debug for PointsLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PointsLink")
            .field("timeout", &self.timeout)
            .field("cards", &self.cards)
            .finish_non_exhaustive()
    }
}

impl PointsLink {
    /// A link over a channel that connects on first use.
    pub(crate) fn new(
        settings: &PointsSettings,
        cards: CardReader<Balance>,
    ) -> anyhow::Result<Self> {
        settings.check()?;
        let channel = Endpoint::from_shared(settings.addr.clone())?
            .connect_timeout(settings.timeout)
            .connect_lazy();
        let api_key = match &settings.api_key {
            Some(key) => Some(AsciiMetadataValue::try_from(key.as_str())?),
            None => None,
        };
        Ok(Self {
            client: PointsServiceClient::with_interceptor(channel, PropagateTraceContext),
            api_key,
            timeout: settings.timeout,
            cards,
        })
    }

    /// The member's balance and where it came from: the card (this
    /// replica's copy, else Redis, unless points said the balance changes by
    /// itself before now: points became available or expired), else the
    /// points service within `deadline`, else none.
    async fn balance(
        &self,
        program: &ProgramId,
        member: Uuid,
        deadline: Option<Instant>,
    ) -> (Option<Balance>, pb::PointsStatus) {
        let now = chrono::Utc::now();
        if let Some(balance) = self.cards.local(program, &member)
            && current(&balance, now)
        {
            return (Some((*balance).clone()), pb::PointsStatus::FromCard);
        }
        if let Some(stored) = self.cards.shared(program, &member).await {
            match Balance::decode(stored.value.as_slice()) {
                Ok(balance) if !current(&balance, now) => {}
                Ok(balance) => {
                    self.cards
                        .keep(program, &member, stored.version, Arc::new(balance.clone()));
                    return (Some(balance), pb::PointsStatus::FromCard);
                }
                Err(error) => {
                    tracing::warn!(%error, %member, "unreadable points field on the card, asking the points service");
                }
            }
        }
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let Some(budget) = points_budget(remaining, self.timeout) else {
            tracing::warn!(%member, "no time left to ask the points service for a balance");
            return (None, pb::PointsStatus::Unavailable);
        };
        match self.ask(program, member, budget).await {
            Ok(balance) => (Some(balance), pb::PointsStatus::FromPointsService),
            Err(status) => {
                tracing::warn!(
                    code = ?status.code(),
                    message = status.message(),
                    %member,
                    budget_ms = budget.as_millis() as u64,
                    "points service unavailable, card served without a balance"
                );
                (None, pb::PointsStatus::Unavailable)
            }
        }
    }

    /// GetBalance with `budget` as its deadline (sent, and kept here too,
    /// in case the far end does not keep it), the programme, this
    /// service's API key and the current trace context.
    async fn ask(
        &self,
        program: &ProgramId,
        member: Uuid,
        budget: Duration,
    ) -> std::result::Result<Balance, Status> {
        let mut request = tonic::Request::new(GetBalanceRequest {
            member_id: member.to_string(),
        });
        request.set_timeout(budget);
        let metadata = request.metadata_mut();
        let program = AsciiMetadataValue::try_from(program.as_str())
            .map_err(|_| Status::internal("programme id is not metadata"))?;
        metadata.insert(PROGRAM_HEADER, program);
        if let Some(key) = &self.api_key {
            metadata.insert(API_KEY_HEADER, key.clone());
        }
        let mut client = self.client.clone();
        let response = tokio::time::timeout(budget, client.get_balance(request))
            .await
            .map_err(|_| Status::new(Code::DeadlineExceeded, "no balance within the deadline"))??;
        response
            .into_inner()
            .balance
            .ok_or_else(|| Status::internal("GetBalance answered without a balance"))
    }
}

/// The time the points call may take: what is left of the caller's
/// deadline (`remaining`, `None` when the caller set none) less a reserve
/// for answering the card, at most `cap`; `None` when too little is left
/// to try.
pub fn points_budget(remaining: Option<Duration>, cap: Duration) -> Option<Duration> {
    let budget = match remaining {
        None => cap,
        Some(remaining) => {
            let reserve = (remaining / 5).min(MAX_RESERVE);
            remaining.saturating_sub(reserve).min(cap)
        }
    };
    (budget >= MIN_BUDGET).then_some(budget)
}

/// The caller's deadline from the `grpc-timeout` metadata entry, counted
/// from `received`, and never later than the server's own request timeout.
/// A malformed entry counts as none (tonic refuses those before the
/// handler runs).
pub fn caller_deadline(
    metadata: &MetadataMap,
    received: Instant,
    server_timeout: Option<Duration>,
) -> Option<Instant> {
    let asked = metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout);
    let timeout = match (asked, server_timeout) {
        (Some(a), Some(s)) => a.min(s),
        (a, s) => a.or(s)?,
    };
    received.checked_add(timeout)
}

/// Reads a gRPC `TimeoutValue TimeoutUnit`: at most 8 digits, then one of
/// `H M S m u n`.
pub fn parse_grpc_timeout(raw: &str) -> Option<Duration> {
    let unit = raw.chars().last()?;
    let digits = &raw[..raw.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(value * 3600),
        'M' => Duration::from_secs(value * 60),
        'S' => Duration::from_secs(value),
        'm' => Duration::from_millis(value),
        'u' => Duration::from_micros(value),
        'n' => Duration::from_nanos(value),
        _ => return None,
    })
}

/// The part of a member the card shows.
fn summary(member: &pb::Member) -> pb::MemberSummary {
    let profile = member.profile.as_ref();
    pb::MemberSummary {
        member_id: member.member_id.clone(),
        program_id: member.program_id.clone(),
        status: member.status,
        given_name: profile.map(|p| p.given_name.clone()).unwrap_or_default(),
        family_name: profile.map(|p| p.family_name.clone()).unwrap_or_default(),
        tags: member.tags.clone(),
        enrolled_at: member.enrolled_at,
        version: member.version,
    }
}

impl Members {
    /// A member's card; a merged member answers with its survivor's. Only a
    /// missing or unknown member fails: the balance is left out, and the
    /// card says so, when the points service cannot give it by `deadline`.
    pub async fn card(
        &self,
        program: &ProgramId,
        id: Uuid,
        deadline: Option<Instant>,
    ) -> Result<pb::MemberCard> {
        let member = self.get(program, id).await?;
        // The survivor's id when `id` was merged: its lots moved there too.
        let holder = Uuid::parse_str(&member.member_id).map_err(|e| {
            MemberError::Internal(anyhow::anyhow!("member card with a bad id: {e}"))
        })?;
        let (points, points_status) = self.points.balance(program, holder, deadline).await;
        Ok(pb::MemberCard {
            member: Some(summary(&member)),
            points,
            points_status: points_status.into(),
            tier_code: String::new(),
            tier_status: pb::TierStatus::NotProvided.into(),
            ..Default::default()
        })
    }
}

/// Whether a balance read from the card still holds at `now`: points marks
/// when it changes by itself (pending points become available, lots expire).
fn current(balance: &Balance, now: chrono::DateTime<chrono::Utc>) -> bool {
    balance
        .valid_until
        .as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .is_none_or(|until| now < until)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn grpc_timeouts_read_every_unit() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("4S"), Some(Duration::from_secs(4)));
        assert_eq!(parse_grpc_timeout("250m"), Some(ms(250)));
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
    }

    #[test]
    fn malformed_grpc_timeouts_count_as_none() {
        for raw in ["", "m", "100", "100x", "123456789m", "-5m", "1.5S", "5é"] {
            assert_eq!(parse_grpc_timeout(raw), None, "{raw:?}");
        }
    }

    #[test]
    fn the_budget_keeps_a_reserve_for_answering_the_card() {
        assert_eq!(points_budget(Some(ms(100)), ms(500)), Some(ms(80)));
        // The reserve is a fifth, at most 50 ms.
        assert_eq!(points_budget(Some(ms(400)), ms(500)), Some(ms(350)));
    }

    #[test]
    fn the_budget_never_exceeds_the_cap() {
        assert_eq!(
            points_budget(Some(Duration::from_secs(30)), ms(500)),
            Some(ms(500))
        );
        assert_eq!(points_budget(None, ms(500)), Some(ms(500)));
    }

    #[test]
    fn no_budget_when_the_caller_has_no_time_left() {
        assert_eq!(points_budget(Some(Duration::ZERO), ms(500)), None);
        assert_eq!(
            points_budget(Some(Duration::from_micros(900)), ms(500)),
            None
        );
    }

    #[test]
    fn the_callers_deadline_is_bounded_by_the_server_timeout() {
        let received = Instant::now();
        let mut metadata = MetadataMap::new();
        metadata.insert("grpc-timeout", "300m".parse().unwrap());
        assert_eq!(
            caller_deadline(&metadata, received, Some(Duration::from_secs(10))),
            Some(received + ms(300))
        );
        assert_eq!(
            caller_deadline(&metadata, received, Some(ms(100))),
            Some(received + ms(100))
        );
        assert_eq!(
            caller_deadline(&MetadataMap::new(), received, Some(ms(100))),
            Some(received + ms(100))
        );
        assert_eq!(caller_deadline(&MetadataMap::new(), received, None), None);
    }
}
