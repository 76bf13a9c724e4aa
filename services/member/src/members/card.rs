//! GetMemberCard: everything a storefront shows about a member in one call.
//! The profile summary comes from this service's own field of the shared
//! card (as GetMember serves it), the balance and the tier from the fields
//! the points and tier services write, which this service only reads. A
//! field missing from the card is asked of its owner within what is left of
//! the caller's deadline (both owners at once); when that fails the card
//! answers without it and says so.

use std::time::Instant;

use laurel_proto::{
    member::v1 as pb,
    points::v1::{Balance, GetBalanceRequest, points_service_client::PointsServiceClient},
    tier::v1::{GetMemberTierRequest, MemberTier, tier_service_client::TierServiceClient},
};
use laurel_runtime::context::ProgramId;
use tonic::Status;
use uuid::Uuid;

use super::{
    Members, Result,
    links::{Found, Link},
};
use crate::error::MemberError;

/// The points service's field of the card.
pub(crate) type PointsLink = Link<Balance>;

/// The tier service's field of the card.
pub(crate) type TierLink = Link<MemberTier>;

impl PointsLink {
    /// The member's balance and where it came from.
    async fn balance(
        &self,
        program: &ProgramId,
        member: Uuid,
        deadline: Option<Instant>,
    ) -> (Option<Balance>, pb::PointsStatus) {
        let found = self
            .get(program, member, deadline, |channel, metadata| async move {
                let request = metadata.request(GetBalanceRequest {
                    member_id: member.to_string(),
                });
                PointsServiceClient::new(channel)
                    .get_balance(request)
                    .await?
                    .into_inner()
                    .balance
                    .ok_or_else(|| Status::internal("GetBalance answered without a balance"))
            })
            .await;
        match found {
            Found::Card(b) => (Some(Balance::clone(&b)), pb::PointsStatus::FromCard),
            Found::Owner(b) => (Some(b), pb::PointsStatus::FromPointsService),
            Found::Unavailable => (None, pb::PointsStatus::Unavailable),
        }
    }
}

impl TierLink {
    /// The member's tier and where it came from.
    async fn tier(
        &self,
        program: &ProgramId,
        member: Uuid,
        deadline: Option<Instant>,
    ) -> (Option<Shown>, pb::TierStatus) {
        let found = self
            .get(program, member, deadline, |channel, metadata| async move {
                let request = metadata.request(GetMemberTierRequest {
                    member_id: member.to_string(),
                });
                TierServiceClient::new(channel)
                    .get_member_tier(request)
                    .await?
                    .into_inner()
                    .tier
                    .ok_or_else(|| Status::internal("GetMemberTier answered without a tier"))
            })
            .await;
        match found {
            Found::Card(t) => (Some(Shown::of(&t)), pb::TierStatus::FromCard),
            Found::Owner(t) => (Some(Shown::of(&t)), pb::TierStatus::FromTierService),
            Found::Unavailable => (None, pb::TierStatus::Unavailable),
        }
    }
}

/// The part of a member's tier the card shows, copied out of the cached
/// answer rather than copying all of it (measures, what is missing...).
#[derive(Default)]
struct Shown {
    code: String,
    name: String,
    secured_until: Option<prost_types::Timestamp>,
}

impl Shown {
    fn of(tier: &MemberTier) -> Self {
        Self {
            code: tier.tier_code.clone(),
            name: tier.tier_name.clone(),
            secured_until: tier.secured_until,
        }
    }
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
    /// missing or unknown member fails: the balance or the tier is left out,
    /// and the card says so, when its owner cannot give it by `deadline`.
    pub async fn card(
        &self,
        program: &ProgramId,
        id: Uuid,
        deadline: Option<Instant>,
    ) -> Result<pb::MemberCard> {
        let member = self.get_shared(program, id).await?;
        // The survivor's id when `id` was merged: its lots moved there too.
        let holder = Uuid::parse_str(&member.member_id).map_err(|e| {
            MemberError::Internal(anyhow::anyhow!("member card with a bad id: {e}"))
        })?;
        let tier = async {
            match &self.tier {
                Some(link) => link.tier(program, holder, deadline).await,
                None => (None, pb::TierStatus::NotProvided),
            }
        };
        let ((points, points_status), (tier, tier_status)) =
            tokio::join!(self.points.balance(program, holder, deadline), tier);
        let tier = tier.unwrap_or_default();
        Ok(pb::MemberCard {
            member: Some(summary(&member)),
            points,
            points_status: points_status.into(),
            tier_code: tier.code,
            tier_status: tier_status.into(),
            tier_name: tier.name,
            tier_secured_until: tier.secured_until,
        })
    }
}
