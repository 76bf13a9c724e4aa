//! How the member service reads the card fields other services own (the
//! points balance, the tier): from the shared card first (this replica's
//! copy, else Redis), else by asking the owner over gRPC within what is
//! left of the caller's deadline, with this service's API key and the
//! current trace context.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use laurel_runtime::{
    card::CardReader,
    config::{ConfigError, env_opt, env_or},
    context::{PROGRAM_HEADER, ProgramId},
    trace_context::PropagateTraceContext,
};
use prost::Message;
use tonic::{
    Status,
    metadata::{AsciiMetadataValue, MetadataMap},
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};
use uuid::Uuid;

/// Where the points service listens when `LAUREL_POINTS_ADDR` is unset.
pub const DEFAULT_POINTS_ADDR: &str = "http://127.0.0.1:50052";

/// Where the tier service listens when `LAUREL_TIER_ADDR` is unset.
pub const DEFAULT_TIER_ADDR: &str = "http://127.0.0.1:50053";

/// How long the card waits for an owner when `LAUREL_<OWNER>_TIMEOUT_MS` is
/// unset.
pub const DEFAULT_LINK_TIMEOUT: Duration = Duration::from_millis(500);

/// The metadata entry the services' auth layer reads the API key from.
const API_KEY_HEADER: &str = "x-api-key";

/// At most this much of the caller's remaining time is kept back from the
/// owner's call, to answer the card before the caller gives up.
const MAX_RESERVE: Duration = Duration::from_millis(50);

/// A call with less time than this is not worth starting.
const MIN_BUDGET: Duration = Duration::from_millis(1);

/// How the member service reaches a card field's owner service. Its `Debug`
/// hides the API key.
#[derive(Clone)]
pub struct LinkSettings {
    /// The owner's address (`LAUREL_<OWNER>_ADDR`). The channel connects
    /// lazily, so the member service starts without it.
    pub addr: String,
    /// The API key the member service presents to the owner
    /// (`LAUREL_<OWNER>_API_KEY`); none when the owner runs in development
    /// mode.
    pub api_key: Option<String>,
    /// Longest the card waits for the owner (`LAUREL_<OWNER>_TIMEOUT_MS`,
    /// 500 by default), even when the caller would wait longer.
    pub timeout: Duration,
}

impl std::fmt::Debug for LinkSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSettings")
            .field("addr", &self.addr)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl LinkSettings {
    /// The owner at `addr`, without an API key, with the default timeout.
    pub fn at(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            api_key: None,
            timeout: DEFAULT_LINK_TIMEOUT,
        }
    }

    /// Reads `LAUREL_<owner>_ADDR` (`default` when unset),
    /// `LAUREL_<owner>_API_KEY` and `LAUREL_<owner>_TIMEOUT_MS`; `None` when
    /// the address is `off` (the card then comes without that field).
    pub fn from_env(owner: &str, default: &str) -> Result<Option<Self>, ConfigError> {
        let addr: String = env_or(&format!("LAUREL_{owner}_ADDR"), default.to_owned())?;
        if addr.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let timeout_ms: u64 = env_or(
            &format!("LAUREL_{owner}_TIMEOUT_MS"),
            DEFAULT_LINK_TIMEOUT.as_millis() as u64,
        )?;
        let settings = Self {
            addr,
            api_key: env_opt(&format!("LAUREL_{owner}_API_KEY")).map(|k| k.trim().to_owned()),
            timeout: Duration::from_millis(timeout_ms),
        };
        settings.check(owner)?;
        Ok(Some(settings))
    }

    /// Refuses an address that is not a URI, a key that cannot travel as
    /// metadata, and a zero timeout.
    fn check(&self, owner: &str) -> Result<(), ConfigError> {
        let refuse = |name: &str, value: &str, reason: &str| ConfigError {
            name: format!("LAUREL_{owner}_{name}"),
            value: value.into(),
            reason: reason.into(),
        };
        if Endpoint::from_shared(self.addr.clone()).is_err() {
            return Err(refuse(
                "ADDR",
                &self.addr,
                "must be a URI such as http://points:50052, or off",
            ));
        }
        if let Some(key) = &self.api_key
            && AsciiMetadataValue::try_from(key.as_str()).is_err()
        {
            return Err(refuse("API_KEY", "<redacted>", "must be printable ASCII"));
        }
        if self.timeout.is_zero() {
            return Err(refuse("TIMEOUT_MS", "0", "must be at least 1"));
        }
        Ok(())
    }
}

/// A card field that its owner marks with the time after which time alone
/// changes it (pending points become available, a tier period ends).
pub(crate) trait Expiring {
    /// Until when the value holds, if it says.
    fn valid_until(&self) -> Option<&prost_types::Timestamp>;
}

impl Expiring for laurel_proto::points::v1::Balance {
    fn valid_until(&self) -> Option<&prost_types::Timestamp> {
        self.valid_until.as_ref()
    }
}

impl Expiring for laurel_proto::tier::v1::MemberTier {
    fn valid_until(&self) -> Option<&prost_types::Timestamp> {
        self.valid_until.as_ref()
    }
}

/// Whether `value` still holds at `now`.
fn current(value: &impl Expiring, now: chrono::DateTime<chrono::Utc>) -> bool {
    value
        .valid_until()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .is_none_or(|until| now < until)
}

/// The member service's read-only side of one owner's card field: the field
/// on the card, and a channel to the owner for values missing there.
#[derive(Clone)]
pub(crate) struct Link<T> {
    /// Owner name for logs, for example "points".
    owner: &'static str,
    channel: InterceptedService<Channel, PropagateTraceContext>,
    api_key: Option<AsciiMetadataValue>,
    timeout: Duration,
    cards: CardReader<T>,
}

impl<T> std::fmt::Debug for Link<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("owner", &self.owner)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Where a card field came from.
pub(crate) enum Found<T> {
    /// From the shared card (this replica's copy, not cloned).
    Card(Arc<T>),
    /// From the owner service.
    Owner(T),
    /// Neither answered in time.
    Unavailable,
}

impl<T: Message + Default + Clone + Expiring + Send + Sync + 'static> Link<T> {
    /// A link over a channel that connects on first use.
    pub(crate) fn new(
        owner: &'static str,
        settings: &LinkSettings,
        cards: CardReader<T>,
    ) -> anyhow::Result<Self> {
        settings.check(&owner.to_ascii_uppercase())?;
        let channel = Endpoint::from_shared(settings.addr.clone())?
            .connect_timeout(settings.timeout)
            .connect_lazy();
        let api_key = match &settings.api_key {
            Some(key) => Some(AsciiMetadataValue::try_from(key.as_str())?),
            None => None,
        };
        Ok(Self {
            owner,
            channel: InterceptedService::new(channel, PropagateTraceContext),
            api_key,
            timeout: settings.timeout,
            cards,
        })
    }

    /// The field: from the card (this replica's copy, else Redis, unless
    /// the owner said time alone changes it before now), else from `ask`
    /// (the owner's RPC, given the channel and a request template) within
    /// `deadline`, else none.
    pub(crate) async fn get<F, Fut>(
        &self,
        program: &ProgramId,
        member: Uuid,
        deadline: Option<Instant>,
        ask: F,
    ) -> Found<T>
    where
        F: FnOnce(InterceptedService<Channel, PropagateTraceContext>, Metadata) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let now = chrono::Utc::now();
        if let Some(value) = self.cards.local(program, &member)
            && current(&*value, now)
        {
            return Found::Card(value);
        }
        if let Some(stored) = self.cards.shared(program, &member).await {
            match T::decode(stored.value.as_slice()) {
                Ok(value) if !current(&value, now) => {}
                Ok(value) => {
                    let value = Arc::new(value);
                    self.cards
                        .keep(program, &member, stored.version, value.clone());
                    return Found::Card(value);
                }
                Err(error) => {
                    tracing::warn!(%error, %member, owner = self.owner, "unreadable field on the card, asking its owner");
                }
            }
        }
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let Some(budget) = link_budget(remaining, self.timeout) else {
            tracing::warn!(%member, owner = self.owner, "no time left to ask the owner of a card field");
            return Found::Unavailable;
        };
        let metadata = match self.metadata(program, budget) {
            Ok(metadata) => metadata,
            Err(status) => {
                tracing::warn!(%status, "card field request not built");
                return Found::Unavailable;
            }
        };
        let call = ask(self.channel.clone(), metadata);
        let answer = match tokio::time::timeout(budget, call).await {
            Ok(answer) => answer,
            Err(_) => Err(Status::deadline_exceeded("no answer within the deadline")),
        };
        match answer {
            Ok(value) => Found::Owner(value),
            Err(status) => {
                tracing::warn!(
                    code = ?status.code(),
                    message = status.message(),
                    %member,
                    owner = self.owner,
                    budget_ms = budget.as_millis() as u64,
                    "card field owner unavailable, card served without it"
                );
                Found::Unavailable
            }
        }
    }

    /// What every call to the owner carries: the programme, this service's
    /// API key and the deadline (`budget`).
    fn metadata(&self, program: &ProgramId, budget: Duration) -> Result<Metadata, Status> {
        let mut map = MetadataMap::new();
        let program = AsciiMetadataValue::try_from(program.as_str())
            .map_err(|_| Status::internal("programme id is not metadata"))?;
        map.insert(PROGRAM_HEADER, program);
        if let Some(key) = &self.api_key {
            map.insert(API_KEY_HEADER, key.clone());
        }
        Ok(Metadata { map, budget })
    }
}

/// The metadata and deadline of a call to a card field's owner.
pub(crate) struct Metadata {
    map: MetadataMap,
    budget: Duration,
}

impl Metadata {
    /// `message` as a request carrying the metadata and the deadline (sent,
    /// and kept by the link too, in case the far end does not keep it).
    pub(crate) fn request<R>(self, message: R) -> tonic::Request<R> {
        let mut request = tonic::Request::new(message);
        *request.metadata_mut() = self.map;
        request.set_timeout(self.budget);
        request
    }
}

/// The time a call to an owner may take: what is left of the caller's
/// deadline (`remaining`, `None` when the caller set none) less a reserve
/// for answering the card, at most `cap`; `None` when too little is left
/// to try.
pub fn link_budget(remaining: Option<Duration>, cap: Duration) -> Option<Duration> {
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
        assert_eq!(link_budget(Some(ms(100)), ms(500)), Some(ms(80)));
        // The reserve is a fifth, at most 50 ms.
        assert_eq!(link_budget(Some(ms(400)), ms(500)), Some(ms(350)));
    }

    #[test]
    fn the_budget_never_exceeds_the_cap() {
        assert_eq!(
            link_budget(Some(Duration::from_secs(30)), ms(500)),
            Some(ms(500))
        );
        assert_eq!(link_budget(None, ms(500)), Some(ms(500)));
    }

    #[test]
    fn no_budget_when_the_caller_has_no_time_left() {
        assert_eq!(link_budget(Some(Duration::ZERO), ms(500)), None);
        assert_eq!(link_budget(Some(Duration::from_micros(900)), ms(500)), None);
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
