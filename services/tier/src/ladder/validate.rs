//! Checking a ladder before it is published: every problem named by its
//! field path (`ladder.tiers[2].qualify_any[0]`), so an operator sees what
//! to fix.

use laurel_proto::tier::v1 as pb;
use laurel_runtime::error::Violations;

use crate::qualification::Way;

/// Most tiers a ladder has.
pub const MAX_TIERS: usize = 20;
/// Longest tier name.
pub const MAX_NAME: usize = 100;

/// Whether a code is 1 to 64 lower case letters, digits, '_' or '-'.
pub fn code_ok(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// The ladder as it will be stored (codes trimmed, currency upper case,
/// names defaulting to codes, time zone defaulting to UTC), or every
/// violation found.
pub fn validate(ladder: &pb::Ladder) -> Result<pb::Ladder, Violations> {
    let mut v = Violations::new();
    let mut l = ladder.clone();
    l.version = 0;
    l.published_at = None;
    l.currency_code = l.currency_code.trim().to_ascii_uppercase();
    l.time_zone = l.time_zone.trim().to_owned();
    if l.time_zone.is_empty() {
        l.time_zone = "UTC".into();
    }
    if l.tiers.len() < 2 {
        v.add(
            "ladder.tiers",
            "at least two tiers: a base tier and one above it",
        );
    } else if l.tiers.len() > MAX_TIERS {
        v.add("ladder.tiers", format!("at most {MAX_TIERS} tiers"));
    }
    let mut codes: Vec<String> = Vec::new();
    let mut well_formed = vec![true; l.tiers.len()];
    for (i, tier) in l.tiers.iter_mut().enumerate() {
        let at = format!("ladder.tiers[{i}]");
        tier.code = tier.code.trim().to_owned();
        if !code_ok(&tier.code) {
            v.add(
                format!("{at}.code"),
                "1 to 64 lower case letters, digits, '_' or '-'",
            );
        } else if codes.contains(&tier.code) {
            v.add(
                format!("{at}.code"),
                format!("{:?} appears twice", tier.code),
            );
        }
        codes.push(tier.code.clone());
        if tier.name.trim().is_empty() {
            tier.name = tier.code.clone();
        }
        v.check(
            tier.name.chars().count() > MAX_NAME,
            format!("{at}.name"),
            format!("at most {MAX_NAME} characters"),
        );
        if i == 0 {
            v.check(
                !tier.qualify_any.is_empty(),
                format!("{at}.qualify_any"),
                "the first tier is the base tier every member has: it has no thresholds",
            );
        } else if tier.qualify_any.is_empty() {
            v.add(
                format!("{at}.qualify_any"),
                "at least one way to qualify above the base tier",
            );
        }
        for (j, way) in tier.qualify_any.iter().enumerate() {
            let at = format!("{at}.qualify_any[{j}]");
            for (name, value) in [
                ("spend_minor", way.spend_minor),
                ("orders", way.orders),
                ("points", way.points),
            ] {
                if value < 0 {
                    v.add(format!("{at}.{name}"), "must not be negative");
                    well_formed[i] = false;
                }
            }
            if way.spend_minor <= 0 && way.orders <= 0 && way.points <= 0 {
                v.add(
                    at,
                    "sets no measure: at least one of spend_minor, orders, points must be positive",
                );
                well_formed[i] = false;
            }
        }
        let mut seen: Vec<&str> = Vec::new();
        for (j, grant) in tier.benefits.iter().enumerate() {
            let at = format!("{at}.benefits[{j}]");
            if !code_ok(&grant.benefit_code) {
                v.add(
                    format!("{at}.benefit_code"),
                    "1 to 64 lower case letters, digits, '_' or '-'",
                );
            } else if seen.contains(&grant.benefit_code.as_str()) {
                v.add(format!("{at}.benefit_code"), "granted twice by this tier");
            }
            seen.push(&grant.benefit_code);
            v.check(
                grant.quota < 0,
                format!("{at}.quota"),
                "must not be negative",
            );
            let period = pb::QuotaPeriod::try_from(grant.period);
            if grant.quota > 0 && !matches!(period, Ok(p) if p != pb::QuotaPeriod::Unspecified) {
                v.add(
                    format!("{at}.period"),
                    "a quota needs its period (month, quarter or year)",
                );
            } else if period.is_err() {
                v.add(format!("{at}.period"), "unknown value");
            }
        }
    }
    // Thresholds must climb: whoever meets a way to tier k+1 meets a way to
    // tier k, and no way of tier k+1 is one of tier k's.
    for k in 1..l.tiers.len().saturating_sub(1) {
        if !well_formed[k] || !well_formed[k + 1] {
            continue;
        }
        let lower: Vec<Way> = l.tiers[k].qualify_any.iter().map(way).collect();
        for (j, w) in l.tiers[k + 1].qualify_any.iter().enumerate() {
            let w = way(w);
            let at = format!("ladder.tiers[{}].qualify_any[{j}]", k + 1);
            if lower.contains(&w) {
                v.add(
                    at,
                    format!(
                        "overlaps tier {:?}: the same threshold qualifies for both",
                        l.tiers[k].code
                    ),
                );
            } else if !lower.iter().any(|u| w.implies(u)) {
                v.add(
                    at,
                    format!(
                        "overlaps tier {:?}: a member meeting it would meet no way to qualify for that lower tier",
                        l.tiers[k].code
                    ),
                );
            }
        }
    }
    match l.window {
        None => v.add("ladder.window", "required"),
        Some(w) => match pb::WindowKind::try_from(w.kind) {
            Ok(pb::WindowKind::RollingMonths) => v.check(
                !(1..=36).contains(&w.months),
                "ladder.window.months",
                "1 to 36 months for a rolling window",
            ),
            Ok(pb::WindowKind::CalendarYear | pb::WindowKind::Anniversary) => {}
            _ => v.add(
                "ladder.window.kind",
                "rolling months, calendar year or anniversary",
            ),
        },
    }
    v.check(
        iso_currency::Currency::from_code(&l.currency_code).is_none(),
        "ladder.currency_code",
        "an ISO 4217 code such as EUR",
    );
    v.check(
        l.time_zone.parse::<chrono_tz::Tz>().is_err(),
        "ladder.time_zone",
        "an IANA time zone such as Europe/Paris",
    );
    v.check(
        l.max_downgrade_levels < 1 || l.max_downgrade_levels as usize > MAX_TIERS,
        "ladder.max_downgrade_levels",
        "at least 1",
    );
    v.check(
        !(0..=365).contains(&l.grace_days),
        "ladder.grace_days",
        "0 to 365 days",
    );
    v.check(
        !(0..=365).contains(&l.warning_days),
        "ladder.warning_days",
        "0 to 365 days",
    );
    v.finish().map(|()| l)
}

fn way(t: &pb::Threshold) -> Way {
    Way {
        spend: t.spend_minor,
        orders: t.orders,
        points: t.points,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn threshold(spend_minor: i64, orders: i64) -> pb::Threshold {
        pb::Threshold {
            spend_minor,
            orders,
            points: 0,
        }
    }

    fn ladder(tiers: Vec<(&str, Vec<pb::Threshold>)>) -> pb::Ladder {
        pb::Ladder {
            tiers: tiers
                .into_iter()
                .map(|(code, qualify_any)| pb::Tier {
                    code: code.into(),
                    qualify_any,
                    ..Default::default()
                })
                .collect(),
            window: Some(pb::QualificationWindow {
                kind: pb::WindowKind::RollingMonths as i32,
                months: 12,
            }),
            currency_code: "eur".into(),
            max_downgrade_levels: 1,
            ..Default::default()
        }
    }

    fn fields(l: &pb::Ladder) -> Vec<String> {
        validate(l)
            .err()
            .map(|v| v.fields().into_iter().map(String::from).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_climbing_ladder_is_accepted_and_normalised() {
        let l = ladder(vec![
            ("member", vec![]),
            ("silver", vec![threshold(10_000, 0), threshold(0, 3)]),
            ("gold", vec![threshold(50_000, 0), threshold(0, 10)]),
        ]);
        let stored = validate(&l).unwrap();
        assert_eq!(stored.currency_code, "EUR");
        assert_eq!(stored.time_zone, "UTC");
        assert_eq!(stored.tiers[1].name, "silver");
    }

    #[test]
    fn overlapping_thresholds_are_named() {
        // Gold by 2 orders is easier than silver (3 orders or 100 EUR).
        let l = ladder(vec![
            ("member", vec![]),
            ("silver", vec![threshold(10_000, 0), threshold(0, 3)]),
            ("gold", vec![threshold(50_000, 0), threshold(0, 2)]),
        ]);
        assert_eq!(fields(&l), vec!["ladder.tiers[2].qualify_any[1]"]);
        let same = ladder(vec![
            ("member", vec![]),
            ("silver", vec![threshold(10_000, 0)]),
            ("gold", vec![threshold(10_000, 0)]),
        ]);
        assert_eq!(fields(&same), vec!["ladder.tiers[2].qualify_any[0]"]);
    }

    #[test]
    fn a_ladder_without_a_base_tier_is_refused() {
        let l = ladder(vec![
            ("silver", vec![threshold(10_000, 0)]),
            ("gold", vec![threshold(50_000, 0)]),
        ]);
        assert_eq!(fields(&l), vec!["ladder.tiers[0].qualify_any"]);
    }

    #[test]
    fn every_setting_is_checked() {
        let mut l = ladder(vec![
            ("Member", vec![]),
            ("silver", vec![threshold(0, 0)]),
            ("silver", vec![]),
        ]);
        l.currency_code = "EURO".into();
        l.time_zone = "Mars/Olympus".into();
        l.max_downgrade_levels = 0;
        l.grace_days = 400;
        l.window = Some(pb::QualificationWindow {
            kind: pb::WindowKind::RollingMonths as i32,
            months: 0,
        });
        assert_eq!(
            fields(&l),
            vec![
                "ladder.tiers[0].code",
                "ladder.tiers[1].qualify_any[0]",
                "ladder.tiers[2].code",
                "ladder.tiers[2].qualify_any",
                "ladder.window.months",
                "ladder.currency_code",
                "ladder.time_zone",
                "ladder.max_downgrade_levels",
                "ladder.grace_days",
            ]
        );
    }
}
