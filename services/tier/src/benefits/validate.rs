//! Checking benefits and benefit requests, each violation named by field.
//! The small field checks here serve the plans too.

use std::collections::BTreeSet;

use laurel_proto::tier::v1 as pb;
use laurel_runtime::error::Violations;
use uuid::Uuid;

/// Longest code (benefit, plan, tier).
pub const MAX_CODE: usize = 64;
/// Longest display name.
pub const MAX_NAME: usize = 200;
/// Longest reference, payment reference or parameter value.
pub const MAX_REFERENCE: usize = 500;
/// Most parameters a benefit has.
pub const MAX_PARAMETERS: usize = 32;
/// Largest quota per period.
pub const MAX_QUOTA: i32 = 1_000_000;
/// Most uses one ConsumeBenefit takes.
pub const MAX_QUANTITY: i32 = 1_000;

/// A code: 1 to 64 lower case letters, digits, '_' and '-'.
pub fn code(value: &str, field: &str, v: &mut Violations) {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
    if value.is_empty() {
        v.add(field, "required");
    } else if value.len() > MAX_CODE || !value.chars().all(ok) {
        v.add(field, "1 to 64 lower case letters, digits, '_' and '-'");
    }
}

/// A required text of at most `max` characters.
pub fn required_text(value: &str, field: &str, max: usize, v: &mut Violations) {
    if value.trim().is_empty() {
        v.add(field, "required");
    } else {
        text(value, field, max, v);
    }
}

/// An optional text of at most `max` characters.
pub fn text(value: &str, field: &str, max: usize, v: &mut Violations) {
    v.check(
        value.chars().count() > max,
        field,
        format!("at most {max} characters"),
    );
}

/// A UUID field naming a `what`.
pub fn uuid(raw: &str, field: &str, what: &str, v: &mut Violations) -> Uuid {
    match Uuid::parse_str(raw.trim()) {
        Ok(id) if !id.is_nil() => id,
        _ => {
            v.add(field, format!("required: a {what} id (UUID)"));
            Uuid::nil()
        }
    }
}

/// A benefit as stored: every field against its kind's bounds.
pub fn benefit(b: &pb::Benefit, v: &mut Violations) {
    code(&b.code, "benefit.code", v);
    required_text(&b.name, "benefit.name", MAX_NAME, v);
    let kind = pb::BenefitKind::try_from(b.kind).unwrap_or(pb::BenefitKind::Unspecified);
    v.check(
        kind == pb::BenefitKind::Unspecified,
        "benefit.kind",
        "required: one of the benefit kinds",
    );
    if kind == pb::BenefitKind::PercentDiscount {
        v.check(
            !(1..=10_000).contains(&b.percent_bp),
            "benefit.percent_bp",
            "1 to 10000 basis points for a percentage discount",
        );
    } else {
        v.check(
            b.percent_bp != 0,
            "benefit.percent_bp",
            "only for percentage discounts",
        );
    }
    if kind == pb::BenefitKind::PointsMultiplier {
        v.check(
            !(10_001..=100_000).contains(&b.multiplier_bp),
            "benefit.multiplier_bp",
            "10001 to 100000 basis points (more than 1x, at most 10x) for a points multiplier",
        );
    } else {
        v.check(
            b.multiplier_bp != 0,
            "benefit.multiplier_bp",
            "only for points multipliers",
        );
    }
    v.check(
        kind == pb::BenefitKind::Custom && b.parameters.is_empty(),
        "benefit.parameters",
        "a custom benefit is described by at least one parameter",
    );
    v.check(
        b.parameters.len() > MAX_PARAMETERS,
        "benefit.parameters",
        format!("at most {MAX_PARAMETERS} parameters"),
    );
    let key_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    for (key, value) in &b.parameters {
        if key.is_empty() || key.len() > MAX_CODE || !key.chars().all(key_ok) {
            v.add(
                format!("benefit.parameters[{key}]"),
                "keys are 1 to 64 letters, digits, '_', '-' or '.'",
            );
        }
        text(
            value,
            &format!("benefit.parameters[{key}]"),
            MAX_REFERENCE,
            v,
        );
    }
}

/// Benefit grants (of a plan) at `field`: quotas and periods in bounds, each
/// benefit once. Whether the codes exist is checked against the catalogue
/// afterwards.
pub fn grants(grants: &[pb::BenefitGrant], field: &str, v: &mut Violations) {
    let mut seen = BTreeSet::new();
    for (i, g) in grants.iter().enumerate() {
        let at = format!("{field}[{i}]");
        code(&g.benefit_code, &format!("{at}.benefit_code"), v);
        v.check(
            !seen.insert(g.benefit_code.as_str()),
            format!("{at}.benefit_code"),
            "granted twice",
        );
        v.check(
            !(0..=MAX_QUOTA).contains(&g.quota),
            format!("{at}.quota"),
            format!("0 (unlimited) to {MAX_QUOTA}"),
        );
        let period = pb::QuotaPeriod::try_from(g.period).ok();
        if g.quota > 0 {
            v.check(
                matches!(period, None | Some(pb::QuotaPeriod::Unspecified)),
                format!("{at}.period"),
                "required with a quota: month, quarter or year",
            );
        } else {
            v.check(
                period.is_none(),
                format!("{at}.period"),
                "not a quota period",
            );
        }
    }
}

/// A ConsumeBenefit request: the member, the benefit code and the quantity
/// (0 meaning 1).
pub fn consume(req: &pb::ConsumeBenefitRequest, v: &mut Violations) -> (Uuid, i32) {
    laurel_runtime::idempotency::check_request_id(&req.request_id, v);
    let member = uuid(&req.member_id, "member_id", "member", v);
    code(&req.benefit_code, "benefit_code", v);
    let quantity = if req.quantity == 0 { 1 } else { req.quantity };
    v.check(
        !(1..=MAX_QUANTITY).contains(&quantity),
        "quantity",
        format!("1 to {MAX_QUANTITY} (0 means 1)"),
    );
    text(&req.reference, "reference", MAX_REFERENCE, v);
    (member, quantity)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(f: impl FnOnce(&mut Violations)) -> Vec<String> {
        let mut v = Violations::new();
        f(&mut v);
        v.fields().into_iter().map(str::to_owned).collect()
    }

    fn discount(bp: i32) -> pb::Benefit {
        pb::Benefit {
            code: "ten-off".into(),
            name: "10% off".into(),
            kind: pb::BenefitKind::PercentDiscount as i32,
            percent_bp: bp,
            active: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_valid_discount_passes() {
        assert!(fields(|v| benefit(&discount(1_000), v)).is_empty());
        assert!(fields(|v| benefit(&discount(10_000), v)).is_empty());
    }

    #[test]
    fn a_discount_needs_its_percentage_in_bounds() {
        assert_eq!(fields(|v| benefit(&discount(0), v)), ["benefit.percent_bp"]);
        assert_eq!(
            fields(|v| benefit(&discount(10_001), v)),
            ["benefit.percent_bp"]
        );
    }

    #[test]
    fn a_multiplier_needs_more_than_one_and_at_most_ten() {
        let m = |bp| pb::Benefit {
            code: "double".into(),
            name: "Double points".into(),
            kind: pb::BenefitKind::PointsMultiplier as i32,
            multiplier_bp: bp,
            ..Default::default()
        };
        assert!(fields(|v| benefit(&m(20_000), v)).is_empty());
        assert_eq!(
            fields(|v| benefit(&m(10_000), v)),
            ["benefit.multiplier_bp"]
        );
        assert_eq!(
            fields(|v| benefit(&m(100_001), v)),
            ["benefit.multiplier_bp"]
        );
    }

    #[test]
    fn fields_of_other_kinds_are_refused() {
        let b = pb::Benefit {
            code: "ship".into(),
            name: "Free shipping".into(),
            kind: pb::BenefitKind::FreeShipping as i32,
            percent_bp: 5,
            multiplier_bp: 20_000,
            ..Default::default()
        };
        assert_eq!(
            fields(|v| benefit(&b, v)),
            ["benefit.percent_bp", "benefit.multiplier_bp"]
        );
    }

    #[test]
    fn codes_kinds_and_parameters_are_checked() {
        let b = pb::Benefit {
            code: "Bad Code".into(),
            name: String::new(),
            kind: 99,
            parameters: [("bad key!".to_owned(), "x".to_owned())].into(),
            ..Default::default()
        };
        assert_eq!(
            fields(|v| benefit(&b, v)),
            [
                "benefit.code",
                "benefit.name",
                "benefit.kind",
                "benefit.parameters[bad key!]"
            ]
        );
        let custom = pb::Benefit {
            code: "concierge".into(),
            name: "Concierge".into(),
            kind: pb::BenefitKind::Custom as i32,
            ..Default::default()
        };
        assert_eq!(fields(|v| benefit(&custom, v)), ["benefit.parameters"]);
    }

    #[test]
    fn grants_need_a_period_with_a_quota_and_each_benefit_once() {
        let g = |code: &str, quota, period: i32| pb::BenefitGrant {
            benefit_code: code.into(),
            quota,
            period,
        };
        let list = [
            g("ship", 2, pb::QuotaPeriod::Month as i32),
            g("lounge", 0, 0),
            g("gift", 1, 0),
            g("ship", -1, 9),
        ];
        assert_eq!(
            fields(|v| grants(&list, "plan.benefits", v)),
            [
                "plan.benefits[2].period",
                "plan.benefits[3].benefit_code",
                "plan.benefits[3].quota",
                "plan.benefits[3].period"
            ]
        );
    }

    #[test]
    fn consume_defaults_to_one_use_and_bounds_the_quantity() {
        let mut req = pb::ConsumeBenefitRequest {
            request_id: "r1".into(),
            member_id: Uuid::now_v7().to_string(),
            benefit_code: "ship".into(),
            ..Default::default()
        };
        let mut v = Violations::new();
        assert_eq!(consume(&req, &mut v).1, 1);
        assert!(v.is_empty());
        req.quantity = 1_001;
        req.member_id = "x".into();
        assert_eq!(
            fields(|v| {
                consume(&req, v);
            }),
            ["member_id", "quantity"]
        );
    }
}
