//! KPI filters: channel and store narrow purchases, tier narrows members
//! (by their tier now). A filter on a KPI whose facts it cannot narrow is
//! refused rather than ignored, so a report never silently shows an
//! unfiltered figure under a filtered title.

use laurel_proto::{analytics::v1 as pb, member::v1::SalesChannel};
use laurel_runtime::error::Violations;

/// A checked filter; empty fields do not filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Sales channel name without its prefix, for example "ONLINE".
    pub channel: String,
    /// Store id.
    pub store_id: String,
    /// Tier code.
    pub tier_code: String,
}

/// Which filters a KPI's facts can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Narrows {
    /// Its facts are purchases (channel and store apply).
    pub purchases: bool,
    /// Its facts belong to members (tier applies).
    pub members: bool,
}

/// What a KPI is computed from. Guests have no tier; enrolments,
/// renewals, feedback and points have no channel or store.
pub fn narrows(kpi: pb::Kpi) -> Narrows {
    use pb::Kpi as K;
    match kpi {
        K::ActiveRate
        | K::RepurchaseRate
        | K::MemberSpendPerHead
        | K::MemberSpend
        | K::MemberOrders => Narrows {
            purchases: true,
            members: true,
        },
        K::GuestSpendPerHead => Narrows {
            purchases: true,
            members: false,
        },
        K::NewMembers
        | K::RenewalRate
        | K::Nps
        | K::Satisfaction
        | K::PointsIssued
        | K::PointsRedeemed
        | K::PointsExpired
        | K::PointsLiability
        | K::BreakageRate => Narrows {
            purchases: false,
            members: true,
        },
        K::Unspecified => Narrows {
            purchases: false,
            members: false,
        },
    }
}

impl Filter {
    /// Whether nothing is filtered.
    pub fn is_empty(&self) -> bool {
        self.channel.is_empty() && self.store_id.is_empty() && self.tier_code.is_empty()
    }

    /// As sent over gRPC.
    pub fn to_pb(&self) -> pb::KpiFilter {
        pb::KpiFilter {
            channel: self.channel.clone(),
            store_id: self.store_id.clone(),
            tier_code: self.tier_code.clone(),
        }
    }
}

/// Checks `raw` (at field path `field`, for example `filter` or
/// `rule.filter`) against what `narrows` allows.
pub fn check(
    raw: Option<&pb::KpiFilter>,
    narrows: Narrows,
    field: &str,
    v: &mut Violations,
) -> Filter {
    let Some(raw) = raw else {
        return Filter::default();
    };
    let pb::KpiFilter {
        channel,
        store_id,
        tier_code,
    } = raw;
    let channel = channel.trim().to_ascii_uppercase();
    if !channel.is_empty() {
        let known = SalesChannel::from_str_name(&format!("SALES_CHANNEL_{channel}"))
            .is_some_and(|c| c != SalesChannel::Unspecified);
        v.check(
            !known,
            format!("{field}.channel"),
            "a sales channel without its prefix, for example ONLINE or IN_STORE",
        );
    }
    let filter = Filter {
        channel,
        store_id: store_id.trim().to_owned(),
        tier_code: tier_code.trim().to_owned(),
    };
    let purchases_only = "does not apply to this KPI: channel and store filter purchases";
    v.check(
        !filter.channel.is_empty() && !narrows.purchases,
        format!("{field}.channel"),
        purchases_only,
    );
    v.check(
        !filter.store_id.is_empty() && !narrows.purchases,
        format!("{field}.store_id"),
        purchases_only,
    );
    v.check(
        !filter.tier_code.is_empty() && !narrows.members,
        format!("{field}.tier_code"),
        "does not apply to this KPI: guests have no tier",
    );
    for (value, name) in [
        (&filter.store_id, "store_id"),
        (&filter.tier_code, "tier_code"),
    ] {
        v.check(
            value.len() > 128,
            format!("{field}.{name}"),
            "at most 128 bytes",
        );
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(raw: pb::KpiFilter, kpi: pb::Kpi) -> (Filter, Vec<String>) {
        let mut v = Violations::new();
        let f = check(Some(&raw), narrows(kpi), "filter", &mut v);
        (f, v.fields().into_iter().map(str::to_owned).collect())
    }

    #[test]
    fn a_filter_that_cannot_narrow_the_kpi_is_named() {
        let store = pb::KpiFilter {
            store_id: "s-1".into(),
            ..Default::default()
        };
        assert_eq!(fields(store.clone(), pb::Kpi::Nps).1, ["filter.store_id"]);
        assert!(fields(store, pb::Kpi::MemberSpend).1.is_empty());
        let tier = pb::KpiFilter {
            tier_code: "gold".into(),
            ..Default::default()
        };
        assert_eq!(
            fields(tier.clone(), pb::Kpi::GuestSpendPerHead).1,
            ["filter.tier_code"]
        );
        assert!(fields(tier, pb::Kpi::PointsLiability).1.is_empty());
    }

    #[test]
    fn channels_are_sales_channel_names() {
        let raw = |c: &str| pb::KpiFilter {
            channel: c.into(),
            ..Default::default()
        };
        let (f, bad) = fields(raw(" online "), pb::Kpi::MemberOrders);
        assert_eq!((f.channel.as_str(), bad.len()), ("ONLINE", 0));
        assert_eq!(
            fields(raw("TELEPATHY"), pb::Kpi::MemberOrders).1,
            ["filter.channel"]
        );
        assert_eq!(
            fields(raw("UNSPECIFIED"), pb::Kpi::MemberOrders).1,
            ["filter.channel"]
        );
    }
}
