//! What a member is entitled to: the grants of the member's tier and of the
//! plans of their live subscriptions, the most generous grant winning when
//! several give one benefit.

use std::collections::BTreeMap;

use laurel_proto::tier::v1 as pb;

use super::catalogue::Catalogue;

/// One benefit a member has, with the grant that gives it.
#[derive(Clone, Debug, PartialEq)]
pub struct Entitlement {
    /// The benefit, from the catalogue (possibly inactive).
    pub benefit: pb::Benefit,
    /// Tier or paid plan.
    pub source: pb::BenefitSource,
    /// The tier or plan code.
    pub source_code: String,
    /// Uses per period; 0 for unlimited.
    pub quota: i32,
    /// The period the quota renews in (a month when a limited grant names
    /// none); unspecified for unlimited grants.
    pub period: pb::QuotaPeriod,
}

impl Entitlement {
    /// True when there is no quota.
    pub fn unlimited(&self) -> bool {
        self.quota <= 0
    }

    /// How generous the grant is: unlimited beats any quota, and quotas
    /// compare by their uses per year (2 a month beats 20 a year).
    fn generosity(&self) -> (bool, i64) {
        if self.unlimited() {
            return (true, 0);
        }
        let per_year = match self.period {
            pb::QuotaPeriod::Unspecified | pb::QuotaPeriod::Month => 12,
            pb::QuotaPeriod::Quarter => 4,
            pb::QuotaPeriod::Year => 1,
        };
        (false, i64::from(self.quota) * per_year)
    }
}

/// The member's benefits by code, from the tier `tier` of `ladder` and the
/// plans `plans`; grants naming a benefit the catalogue lacks are ignored.
/// On a tie the tier's grant, then the first plan's (by code), stays.
pub fn entitlements(
    catalogue: &Catalogue,
    ladder: Option<&pb::Ladder>,
    tier: Option<&str>,
    plans: &[String],
) -> BTreeMap<String, Entitlement> {
    let mut sources: Vec<(pb::BenefitSource, &str, &[pb::BenefitGrant])> = Vec::new();
    if let (Some(ladder), Some(tier)) = (ladder, tier)
        && let Some(t) = ladder.tiers.iter().find(|t| t.code == tier)
    {
        sources.push((pb::BenefitSource::Tier, &t.code, &t.benefits));
    }
    let mut plan_codes: Vec<&String> = plans.iter().collect();
    plan_codes.sort();
    plan_codes.dedup();
    for code in plan_codes {
        if let Some(plan) = catalogue.plans.get(code) {
            sources.push((pb::BenefitSource::PaidPlan, &plan.code, &plan.benefits));
        }
    }
    let mut out: BTreeMap<String, Entitlement> = BTreeMap::new();
    for (source, source_code, grants) in sources {
        for grant in grants {
            let Some(benefit) = catalogue.benefits.get(&grant.benefit_code) else {
                continue;
            };
            let quota = grant.quota.max(0);
            let period = match pb::QuotaPeriod::try_from(grant.period) {
                _ if quota == 0 => pb::QuotaPeriod::Unspecified,
                Ok(pb::QuotaPeriod::Unspecified) | Err(_) => pb::QuotaPeriod::Month,
                Ok(p) => p,
            };
            let candidate = Entitlement {
                benefit: benefit.clone(),
                source,
                source_code: source_code.to_owned(),
                quota,
                period,
            };
            match out.get(&benefit.code) {
                Some(held) if held.generosity() >= candidate.generosity() => {}
                _ => {
                    out.insert(benefit.code.clone(), candidate);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn benefit(code: &str) -> pb::Benefit {
        pb::Benefit {
            code: code.into(),
            name: code.into(),
            kind: pb::BenefitKind::FreeShipping as i32,
            active: true,
            ..Default::default()
        }
    }

    fn grant(code: &str, quota: i32, period: pb::QuotaPeriod) -> pb::BenefitGrant {
        pb::BenefitGrant {
            benefit_code: code.into(),
            quota,
            period: period as i32,
        }
    }

    fn catalogue(plans: Vec<pb::Plan>) -> Catalogue {
        Catalogue {
            revision: 1,
            benefits: ["ship", "lounge", "gift"]
                .into_iter()
                .map(|c| (c.to_owned(), benefit(c)))
                .collect(),
            plans: plans.into_iter().map(|p| (p.code.clone(), p)).collect(),
        }
    }

    fn ladder() -> pb::Ladder {
        pb::Ladder {
            tiers: vec![
                pb::Tier {
                    code: "member".into(),
                    ..Default::default()
                },
                pb::Tier {
                    code: "gold".into(),
                    benefits: vec![
                        grant("ship", 2, pb::QuotaPeriod::Month),
                        grant("gift", 1, pb::QuotaPeriod::Year),
                        grant("missing", 1, pb::QuotaPeriod::Year),
                    ],
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    fn plan(code: &str, benefits: Vec<pb::BenefitGrant>) -> pb::Plan {
        pb::Plan {
            code: code.into(),
            benefits,
            ..Default::default()
        }
    }

    #[test]
    fn the_tier_grants_its_benefits_and_ignores_unknown_ones() {
        let got = entitlements(&catalogue(vec![]), Some(&ladder()), Some("gold"), &[]);
        assert_eq!(got.keys().collect::<Vec<_>>(), ["gift", "ship"]);
        assert_eq!(got["ship"].quota, 2);
        assert_eq!(got["ship"].source, pb::BenefitSource::Tier);
        assert_eq!(got["ship"].source_code, "gold");
    }

    #[test]
    fn no_tier_and_no_plan_gives_nothing() {
        assert!(entitlements(&catalogue(vec![]), Some(&ladder()), Some("member"), &[]).is_empty());
        assert!(entitlements(&catalogue(vec![]), None, Some("gold"), &[]).is_empty());
    }

    #[test]
    fn the_most_generous_grant_wins() {
        let plans = vec![
            plan("plus", vec![grant("ship", 20, pb::QuotaPeriod::Year)]),
            plan(
                "max",
                vec![
                    grant("ship", 3, pb::QuotaPeriod::Month),
                    grant("gift", 0, pb::QuotaPeriod::Unspecified),
                ],
            ),
        ];
        let got = entitlements(
            &catalogue(plans),
            Some(&ladder()),
            Some("gold"),
            &["plus".into(), "max".into()],
        );
        assert_eq!(
            (got["ship"].source_code.as_str(), got["ship"].quota),
            ("max", 3)
        );
        assert_eq!(got["ship"].source, pb::BenefitSource::PaidPlan);
        assert!(got["gift"].unlimited(), "unlimited beats one a year");
        assert_eq!(got["gift"].period, pb::QuotaPeriod::Unspecified);
    }

    #[test]
    fn a_less_generous_plan_leaves_the_tier_grant() {
        let plans = vec![plan("plus", vec![grant("ship", 20, pb::QuotaPeriod::Year)])];
        let got = entitlements(
            &catalogue(plans),
            Some(&ladder()),
            Some("gold"),
            &["plus".into()],
        );
        assert_eq!(got["ship"].source, pb::BenefitSource::Tier);
        assert_eq!(got["ship"].quota, 2);
    }

    #[test]
    fn a_limited_grant_without_period_counts_per_month() {
        let plans = vec![plan(
            "plus",
            vec![grant("lounge", 1, pb::QuotaPeriod::Unspecified)],
        )];
        let got = entitlements(
            &catalogue(plans),
            None,
            None,
            &["plus".into(), "gone".into()],
        );
        assert_eq!(got["lounge"].period, pb::QuotaPeriod::Month);
        assert_eq!(got.len(), 1);
    }
}
