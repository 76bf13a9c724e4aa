//! The benchmarked paths and the one call each makes.

use std::sync::Arc;
use std::time::SystemTime;

use laurel_proto::common::v1::echo_service_client::EchoServiceClient;
use laurel_proto::common::v1::{EchoRequest, Money};
use laurel_proto::member::v1::member_service_client::MemberServiceClient;
use laurel_proto::member::v1::{
    Activity, GetMemberCardRequest, GetMemberRequest, Identity, IdentityType, LookupMemberRequest,
    OrderLine, PointsStatus, Purchase, RecordActivityRequest, SalesChannel, TierStatus, activity,
    record_activity_request,
};
use laurel_proto::points::v1::points_service_client::PointsServiceClient;
use laurel_proto::points::v1::{
    EarnKind, EarnRequest, GetBalanceRequest, OrderDiscount, RedeemRequest, redeem_request,
};
use laurel_proto::tier::v1::tier_service_client::TierServiceClient;
use laurel_proto::tier::v1::{ConsumeBenefitRequest, GetMemberTierRequest};
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::transport::Channel;
use tonic::{Request, Status};

/// One benchmarked RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    Echo,
    GetMember,
    LookupMember,
    RecordActivity,
    /// Goodwill Earn of [`EARN_POINTS`] on a random seeded member (points service).
    Earn,
    /// The same, always on one member.
    EarnHot,
    /// One Earn request sent again and again: answered from its stored response.
    EarnReplay,
    /// Redeem of one point on a random seeded member (each funded beforehand).
    Redeem,
    /// Redeem of one point on one member holding `--hot-points` points, until
    /// they are gone (see `run::run_path`).
    RedeemHot,
    /// RecordActivity of a purchase at the member service, then GetBalance at
    /// the points service until its points show (not a load path).
    PurchaseVisible,
    /// GetMemberTier on a random seeded member, served from the tier card
    /// (tier service).
    TierGet,
    /// GetMemberCard on a random seeded member (member service), its points
    /// and tier fields from the shared card.
    MemberCard,
    /// ConsumeBenefit of [`BENEFIT_CODE`] (unlimited, granted by the base
    /// tier) with a new request id, on a random seeded member (tier service).
    ConsumeBenefit,
    /// Echo on the bare tonic server (`--bare-addr`), not selectable by name.
    BareEcho,
}

impl PathKind {
    pub const ALL: [PathKind; 4] = [
        PathKind::Echo,
        PathKind::GetMember,
        PathKind::LookupMember,
        PathKind::RecordActivity,
    ];

    /// The points service's paths, run when `--points-addr` is given.
    pub const POINTS: [PathKind; 6] = [
        PathKind::Earn,
        PathKind::EarnHot,
        PathKind::Redeem,
        PathKind::RedeemHot,
        PathKind::EarnReplay,
        PathKind::PurchaseVisible,
    ];

    /// The tier paths, run when `--tier-addr` is given (member-card is the
    /// member service's and may also be asked for without it).
    pub const TIER: [PathKind; 3] = [
        PathKind::TierGet,
        PathKind::MemberCard,
        PathKind::ConsumeBenefit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PathKind::Echo => "echo",
            PathKind::GetMember => "get-member",
            PathKind::LookupMember => "lookup-member",
            PathKind::RecordActivity => "record-activity",
            PathKind::Earn => "earn",
            PathKind::EarnHot => "earn-hot",
            PathKind::EarnReplay => "earn-replay",
            PathKind::Redeem => "redeem",
            PathKind::RedeemHot => "redeem-hot",
            PathKind::PurchaseVisible => "purchase-visible",
            PathKind::TierGet => "tier-get",
            PathKind::MemberCard => "member-card",
            PathKind::ConsumeBenefit => "consume-benefit",
            PathKind::BareEcho => "bare-echo",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .chain(Self::POINTS)
            .chain(Self::TIER)
            .find(|p| p.name() == name)
    }

    /// Whether the path needs seeded members.
    pub fn needs_members(self) -> bool {
        !matches!(self, PathKind::Echo | PathKind::BareEcho)
    }

    /// Whether the path calls the points service (`--points-addr`).
    pub fn is_points(self) -> bool {
        Self::POINTS.contains(&self)
    }

    /// Whether the path belongs to the tier figures (see [`PathKind::TIER`]).
    pub fn is_tier(self) -> bool {
        Self::TIER.contains(&self)
    }

    /// Whether the path calls the tier service itself (`--tier-addr`).
    pub fn needs_tier_addr(self) -> bool {
        matches!(self, PathKind::TierGet | PathKind::ConsumeBenefit)
    }
}

/// The benefit `consume-benefit` consumes (free shipping, no quota).
pub const BENEFIT_CODE: &str = "bench-shipping";

/// Where a GetMemberCard answer took its points and tier fields from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardSeen {
    pub points_from_card: bool,
    pub tier_from_card: bool,
}

impl CardSeen {
    pub fn of(card: &laurel_proto::member::v1::MemberCard) -> Self {
        Self {
            points_from_card: card.points_status == PointsStatus::FromCard as i32,
            tier_from_card: card.tier_status == TierStatus::FromCard as i32,
        }
    }
}

/// Points each `earn` and `earn-hot` call earns.
pub const EARN_POINTS: i64 = 10;
/// Points each `redeem` and `redeem-hot` call spends.
pub const REDEEM_POINTS: i64 = 1;

/// A member created by the seeding step.
#[derive(Debug, Clone)]
pub struct SeededMember {
    pub member_id: String,
    /// E.164 phone identity.
    pub phone: String,
}

/// Metadata every call carries.
#[derive(Clone)]
pub struct CallMeta {
    program: AsciiMetadataValue,
    api_key: Option<AsciiMetadataValue>,
}

impl CallMeta {
    pub fn new(program: &str, api_key: Option<&str>) -> anyhow::Result<Self> {
        use anyhow::Context;
        Ok(Self {
            program: program
                .parse()
                .context("--program is not a valid metadata value")?,
            api_key: api_key
                .map(|k| k.parse().context("API key is not a valid metadata value"))
                .transpose()?,
        })
    }

    /// Wraps a message into a request with the metadata set.
    pub fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        let md: &mut MetadataMap = req.metadata_mut();
        md.insert("x-laurel-program", self.program.clone());
        if let Some(key) = &self.api_key {
            md.insert("x-api-key", key.clone());
        }
        req
    }
}

/// What the paths draw on: the seeded members and, with `--points-addr`,
/// the points service's special members and the replayed request.
#[derive(Debug, Default)]
pub struct Fixture {
    pub members: Vec<SeededMember>,
    pub points: Option<PointsFixture>,
}

/// The members and the request the points paths use besides `members`.
#[derive(Debug, Clone)]
pub struct PointsFixture {
    /// The one member of `earn-hot` (and of `earn-replay`).
    pub hot_earn: String,
    /// The one member of `redeem-hot`, funded with exactly `--hot-points`.
    pub hot_redeem: String,
    /// The request `earn-replay` sends every time.
    pub replay: EarnRequest,
}

/// The clients of one worker, over one shared channel (connection), and
/// one to the bare echo server and to the points service when there are.
#[derive(Clone)]
pub struct Clients {
    pub echo: EchoServiceClient<Channel>,
    pub member: MemberServiceClient<Channel>,
    pub bare: Option<EchoServiceClient<Channel>>,
    pub points: Option<PointsServiceClient<Channel>>,
    /// Echo on the points service, to probe it.
    pub points_echo: Option<EchoServiceClient<Channel>>,
    pub tier: Option<TierServiceClient<Channel>>,
    /// Echo on the tier service, to probe it.
    pub tier_echo: Option<EchoServiceClient<Channel>>,
    pub meta: CallMeta,
}

impl Clients {
    pub fn new(channel: Channel, meta: CallMeta) -> Self {
        Self {
            echo: EchoServiceClient::new(channel.clone()),
            member: MemberServiceClient::new(channel),
            bare: None,
            points: None,
            points_echo: None,
            tier: None,
            tier_echo: None,
            meta,
        }
    }

    /// Adds a channel to the bare echo server.
    pub fn with_bare(mut self, channel: Channel) -> Self {
        self.bare = Some(EchoServiceClient::new(channel));
        self
    }

    /// Adds a channel to the points service.
    pub fn with_points(mut self, channel: Channel) -> Self {
        self.points = Some(PointsServiceClient::new(channel.clone()));
        self.points_echo = Some(EchoServiceClient::new(channel));
        self
    }

    /// Adds a channel to the tier service.
    pub fn with_tier(mut self, channel: Channel) -> Self {
        self.tier = Some(TierServiceClient::new(channel.clone()));
        self.tier_echo = Some(EchoServiceClient::new(channel));
        self
    }

    /// The tier client, or FAILED_PRECONDITION without `--tier-addr`.
    pub fn tier(&mut self) -> Result<&mut TierServiceClient<Channel>, Status> {
        self.tier
            .as_mut()
            .ok_or_else(|| Status::failed_precondition("no --tier-addr"))
    }

    /// The points client, or FAILED_PRECONDITION without `--points-addr`.
    pub fn points(&mut self) -> Result<&mut PointsServiceClient<Channel>, Status> {
        self.points
            .as_mut()
            .ok_or_else(|| Status::failed_precondition("no --points-addr"))
    }

    /// Makes one call of `kind`; only the status matters, and for
    /// member-card where its fields came from.
    pub async fn call(
        &mut self,
        kind: PathKind,
        fixture: &Arc<Fixture>,
        rng: &mut Rng,
    ) -> Result<Option<CardSeen>, Status> {
        let members = &fixture.members;
        let special = || {
            fixture
                .points
                .as_ref()
                .ok_or_else(|| Status::failed_precondition("points paths were not set up"))
        };
        match kind {
            PathKind::Echo => {
                self.echo.echo(self.meta.request(echo_request())).await?;
            }
            PathKind::BareEcho => {
                let Some(bare) = self.bare.as_mut() else {
                    return Err(Status::failed_precondition("no --bare-addr"));
                };
                bare.echo(self.meta.request(echo_request())).await?;
            }
            PathKind::GetMember => {
                let m = pick(members, rng);
                let req = GetMemberRequest {
                    member_id: m.member_id.clone(),
                };
                self.member.get_member(self.meta.request(req)).await?;
            }
            PathKind::LookupMember => {
                let m = pick(members, rng);
                self.member
                    .lookup_member(self.meta.request(lookup_request(m)))
                    .await?;
            }
            PathKind::RecordActivity => {
                let m = pick(members, rng);
                let req = purchase(&m.member_id);
                self.member.record_activity(self.meta.request(req)).await?;
            }
            PathKind::Earn => {
                let req = goodwill(&pick(members, rng).member_id, EARN_POINTS);
                let req = self.meta.request(req);
                self.points()?.earn(req).await?;
            }
            PathKind::EarnHot => {
                let req = self
                    .meta
                    .request(goodwill(&special()?.hot_earn, EARN_POINTS));
                self.points()?.earn(req).await?;
            }
            PathKind::EarnReplay => {
                let req = self.meta.request(special()?.replay.clone());
                self.points()?.earn(req).await?;
            }
            PathKind::Redeem => {
                let req = redeem(&pick(members, rng).member_id, REDEEM_POINTS);
                let req = self.meta.request(req);
                self.points()?.redeem(req).await?;
            }
            PathKind::RedeemHot => {
                let req = self
                    .meta
                    .request(redeem(&special()?.hot_redeem, REDEEM_POINTS));
                self.points()?.redeem(req).await?;
            }
            PathKind::PurchaseVisible => {
                return Err(Status::failed_precondition(
                    "purchase-visible is measured on its own, not as a load path",
                ));
            }
            PathKind::TierGet => {
                let req = self.meta.request(member_tier_request(pick(members, rng)));
                self.tier()?.get_member_tier(req).await?;
            }
            PathKind::MemberCard => {
                let req = member_card_request(pick(members, rng));
                let card = self
                    .member
                    .get_member_card(self.meta.request(req))
                    .await?
                    .into_inner()
                    .card
                    .ok_or_else(|| Status::internal("GetMemberCard answered without a card"))?;
                return Ok(Some(CardSeen::of(&card)));
            }
            PathKind::ConsumeBenefit => {
                let req = self
                    .meta
                    .request(consume_benefit(&pick(members, rng).member_id));
                self.tier()?.consume_benefit(req).await?;
            }
        }
        Ok(None)
    }

    /// The member's balance at the points service.
    pub async fn balance(
        &mut self,
        member_id: &str,
    ) -> Result<laurel_proto::points::v1::Balance, Status> {
        let req = self.meta.request(GetBalanceRequest {
            member_id: member_id.to_string(),
        });
        self.points()?
            .get_balance(req)
            .await?
            .into_inner()
            .balance
            .ok_or_else(|| Status::internal("GetBalance answered without a balance"))
    }
}

/// A goodwill Earn of `points` with a new request id.
pub fn goodwill(member_id: &str, points: i64) -> EarnRequest {
    EarnRequest {
        request_id: uuid::Uuid::now_v7().to_string(),
        member_id: member_id.to_string(),
        kind: EarnKind::Goodwill as i32,
        points,
        reason: "laurel-bench goodwill".into(),
        ..EarnRequest::default()
    }
}

/// Order total of every redemption: large enough for any benchmark discount.
const REDEEM_ORDER_MINOR: i64 = 1_000_000;

/// A Redeem of `points` as a discount on a new order, with a new request id.
pub fn redeem(member_id: &str, points: i64) -> RedeemRequest {
    let order_id = uuid::Uuid::now_v7().to_string();
    RedeemRequest {
        request_id: order_id.clone(),
        member_id: member_id.to_string(),
        target: Some(redeem_request::Target::Order(OrderDiscount {
            order_id,
            order_total: Some(Money {
                currency_code: "EUR".into(),
                amount_minor: REDEEM_ORDER_MINOR,
            }),
        })),
        points,
        reason: String::new(),
    }
}

/// GetMemberTier of a seeded member.
pub fn member_tier_request(m: &SeededMember) -> GetMemberTierRequest {
    GetMemberTierRequest {
        member_id: m.member_id.clone(),
    }
}

/// GetMemberCard of a seeded member.
pub fn member_card_request(m: &SeededMember) -> GetMemberCardRequest {
    GetMemberCardRequest {
        member_id: m.member_id.clone(),
    }
}

/// One use of [`BENEFIT_CODE`] with a new request id.
pub fn consume_benefit(member_id: &str) -> ConsumeBenefitRequest {
    let request_id = uuid::Uuid::now_v7().to_string();
    ConsumeBenefitRequest {
        reference: format!("laurel-bench-{request_id}"),
        request_id,
        member_id: member_id.to_string(),
        benefit_code: BENEFIT_CODE.into(),
        quantity: 1,
    }
}

/// Echo payload: small, like a ping.
pub const ECHO_PAYLOAD: &[u8] = b"laurel-bench-ping";

/// The echo call every path is compared with.
pub fn echo_request() -> EchoRequest {
    EchoRequest {
        payload: ECHO_PAYLOAD.to_vec(),
    }
}

/// LookupMember by the member's phone.
pub fn lookup_request(m: &SeededMember) -> LookupMemberRequest {
    LookupMemberRequest {
        identity: Some(phone_identity(&m.phone)),
    }
}

pub fn phone_identity(phone: &str) -> Identity {
    Identity {
        r#type: IdentityType::Phone as i32,
        value: phone.to_string(),
        ..Identity::default()
    }
}

/// Price of the purchase every record-activity call records, in minor units.
pub const PURCHASE_MINOR: i64 = 1999;

/// A purchase of 19.99 EUR, unique on (source, external_id) per call.
pub fn purchase(member_id: &str) -> RecordActivityRequest {
    let external_id = uuid::Uuid::now_v7().to_string();
    let price = PURCHASE_MINOR;
    RecordActivityRequest {
        member: Some(record_activity_request::Member::MemberId(
            member_id.to_string(),
        )),
        auto_enroll: false,
        guest: false,
        activity: Some(Activity {
            source: "bench".into(),
            external_id: external_id.clone(),
            occurred_at: Some(SystemTime::now().into()),
            detail: Some(activity::Detail::Purchase(Purchase {
                order_id: external_id,
                total: Some(Money {
                    currency_code: "EUR".into(),
                    amount_minor: price,
                }),
                lines: vec![OrderLine {
                    sku: "BENCH-SKU-1".into(),
                    category: "bench".into(),
                    quantity: 1,
                    unit_price_minor: price,
                }],
                store_id: String::new(),
                channel: SalesChannel::Online as i32,
            })),
            ..Activity::default()
        }),
    }
}

fn pick<'a>(members: &'a [SeededMember], rng: &mut Rng) -> &'a SeededMember {
    &members[rng.below(members.len())]
}

/// A tiny per-worker PRNG (splitmix64); good enough to pick members.
pub struct Rng(u64);

impl Rng {
    /// Seeded from the OS-randomised std hasher, different every time.
    pub fn seeded() -> Self {
        use std::hash::{BuildHasher, RandomState};
        Self(RandomState::new().hash_one(std::time::Instant::now()))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n`; `n` must be above zero.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in PathKind::ALL
            .into_iter()
            .chain(PathKind::POINTS)
            .chain(PathKind::TIER)
        {
            assert_eq!(PathKind::from_name(p.name()), Some(p));
        }
        assert_eq!(PathKind::from_name("bare-echo"), None);
        assert!(
            PathKind::POINTS
                .iter()
                .all(|p| p.is_points() && !p.is_tier())
        );
        assert!(
            PathKind::TIER
                .iter()
                .all(|p| p.is_tier() && p.needs_members())
        );
        assert!(!PathKind::ALL.iter().any(|p| p.is_points() || p.is_tier()));
        // member-card is the member service's: it needs no --tier-addr.
        assert!(!PathKind::MemberCard.needs_tier_addr());
        assert!(PathKind::TierGet.needs_tier_addr() && PathKind::ConsumeBenefit.needs_tier_addr());
    }

    #[test]
    fn points_requests_are_new_each_time() {
        let (a, b) = (goodwill("m1", 10), goodwill("m1", 10));
        assert_ne!(a.request_id, b.request_id);
        assert_eq!((a.kind, a.points), (EarnKind::Goodwill as i32, 10));
        let (a, b) = (redeem("m1", 1), redeem("m1", 1));
        assert_ne!(a.request_id, b.request_id);
        let Some(redeem_request::Target::Order(o)) = a.target else {
            panic!("not an order discount")
        };
        assert_eq!(o.order_id, a.request_id);
        assert!(o.order_total.unwrap().amount_minor >= a.points);
    }

    #[test]
    fn benefit_uses_are_new_each_time() {
        let (a, b) = (consume_benefit("m1"), consume_benefit("m1"));
        assert_ne!(a.request_id, b.request_id);
        assert_eq!((a.benefit_code.as_str(), a.quantity), (BENEFIT_CODE, 1));
        assert_eq!(a.member_id, "m1");
    }

    #[test]
    fn card_sources_are_read_from_the_statuses() {
        use laurel_proto::member::v1::MemberCard;
        let card = MemberCard {
            points_status: PointsStatus::FromCard as i32,
            tier_status: TierStatus::FromTierService as i32,
            ..MemberCard::default()
        };
        assert_eq!(
            CardSeen::of(&card),
            CardSeen {
                points_from_card: true,
                tier_from_card: false
            }
        );
        let card = MemberCard {
            points_status: PointsStatus::FromPointsService as i32,
            tier_status: TierStatus::FromCard as i32,
            ..MemberCard::default()
        };
        assert_eq!(
            CardSeen::of(&card),
            CardSeen {
                points_from_card: false,
                tier_from_card: true
            }
        );
    }

    #[test]
    fn purchase_ids_are_unique_and_consistent() {
        let a = purchase("m1");
        let b = purchase("m1");
        let (aa, ba) = (a.activity.unwrap(), b.activity.unwrap());
        assert_ne!(aa.external_id, ba.external_id);
        let Some(activity::Detail::Purchase(p)) = aa.detail else {
            panic!("not a purchase")
        };
        assert_eq!(p.order_id, aa.external_id);
        assert_eq!(p.total.unwrap().amount_minor, 1999);
    }

    #[test]
    fn metadata_is_set() {
        let meta = CallMeta::new("prog-1", Some("k")).unwrap();
        let req = meta.request(());
        assert_eq!(req.metadata().get("x-laurel-program").unwrap(), "prog-1");
        assert_eq!(req.metadata().get("x-api-key").unwrap(), "k");
        let req = CallMeta::new("default", None).unwrap().request(());
        assert!(req.metadata().get("x-api-key").is_none());
    }
}
