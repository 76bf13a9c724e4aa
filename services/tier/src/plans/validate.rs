//! Checking plans and subscription requests, each violation named by field.

use laurel_proto::tier::v1 as pb;
use laurel_runtime::error::Violations;

use crate::benefits::validate::{self as check, MAX_NAME, MAX_REFERENCE};

/// Largest price, in minor units (10^15).
pub const MAX_PRICE_MINOR: i64 = 1_000_000_000_000_000;
/// Longest grace period, in days.
pub const MAX_GRACE_DAYS: i32 = 90;

/// The longest reminder ahead of a period end, in days: less than the
/// shortest period, so a reminder never comes before its period starts.
pub fn max_reminder_days(billing: pb::BillingPeriod) -> i32 {
    match billing {
        pb::BillingPeriod::Annual => 364,
        _ => 27,
    }
}

/// A plan's own fields (whether its benefits and tier floor exist is
/// checked against the catalogue and the ladder afterwards).
pub fn plan(p: &pb::Plan, v: &mut Violations) {
    check::code(&p.code, "plan.code", v);
    check::required_text(&p.name, "plan.name", MAX_NAME, v);
    match &p.price {
        None => v.add("plan.price", "required"),
        Some(m) => {
            v.check(
                m.currency_code.len() != 3
                    || !m.currency_code.chars().all(|c| c.is_ascii_uppercase())
                    || iso_currency::Currency::from_code(&m.currency_code).is_none(),
                "plan.price.currency_code",
                "an ISO 4217 code such as EUR",
            );
            v.check(
                !(0..=MAX_PRICE_MINOR).contains(&m.amount_minor),
                "plan.price.amount_minor",
                "0 to 10^15 minor units",
            );
        }
    }
    let billing = pb::BillingPeriod::try_from(p.billing_period).unwrap_or_default();
    v.check(
        billing == pb::BillingPeriod::Unspecified,
        "plan.billing_period",
        "required: monthly or annual",
    );
    check::grants(&p.benefits, "plan.benefits", v);
    if !p.tier_floor.is_empty() {
        check::code(&p.tier_floor, "plan.tier_floor", v);
    }
    v.check(
        !(0..=MAX_GRACE_DAYS).contains(&p.grace_days),
        "plan.grace_days",
        format!("0 to {MAX_GRACE_DAYS} days"),
    );
    let max_reminder = max_reminder_days(billing);
    v.check(
        !(0..=max_reminder).contains(&p.reminder_days),
        "plan.reminder_days",
        format!("0 (none) to {max_reminder} days for this billing period"),
    );
}

/// A payment reference: required, at most 500 characters.
pub fn payment_reference(value: &str, v: &mut Violations) {
    check::required_text(value, "payment_reference", MAX_REFERENCE, v);
}

#[cfg(test)]
mod tests {
    use laurel_proto::common::v1::Money;

    use super::*;

    fn valid() -> pb::Plan {
        pb::Plan {
            code: "plus".into(),
            name: "Plus".into(),
            price: Some(Money {
                currency_code: "EUR".into(),
                amount_minor: 999,
            }),
            billing_period: pb::BillingPeriod::Monthly as i32,
            benefits: vec![pb::BenefitGrant {
                benefit_code: "ship".into(),
                quota: 2,
                period: pb::QuotaPeriod::Month as i32,
            }],
            tier_floor: "silver".into(),
            grace_days: 7,
            reminder_days: 3,
            active: true,
        }
    }

    fn fields(p: &pb::Plan) -> Vec<String> {
        let mut v = Violations::new();
        plan(p, &mut v);
        v.fields().into_iter().map(str::to_owned).collect()
    }

    #[test]
    fn a_valid_plan_passes_and_a_free_one_too() {
        assert!(fields(&valid()).is_empty());
        let mut free = valid();
        free.price.as_mut().unwrap().amount_minor = 0;
        assert!(fields(&free).is_empty());
    }

    #[test]
    fn every_bad_field_is_named() {
        let p = pb::Plan {
            code: "Plus!".into(),
            price: Some(Money {
                currency_code: "EURO".into(),
                amount_minor: -1,
            }),
            billing_period: 0,
            tier_floor: "Gold Tier".into(),
            grace_days: 91,
            reminder_days: -1,
            ..valid()
        };
        assert_eq!(
            fields(&p),
            [
                "plan.code",
                "plan.price.currency_code",
                "plan.price.amount_minor",
                "plan.billing_period",
                "plan.tier_floor",
                "plan.grace_days",
                "plan.reminder_days"
            ]
        );
    }

    #[test]
    fn reminders_come_within_one_period() {
        let mut p = valid();
        p.reminder_days = 28;
        assert_eq!(fields(&p), ["plan.reminder_days"]);
        p.billing_period = pb::BillingPeriod::Annual as i32;
        assert!(fields(&p).is_empty());
    }

    #[test]
    fn a_missing_price_is_named() {
        let p = pb::Plan {
            price: None,
            ..valid()
        };
        assert_eq!(fields(&p), ["plan.price"]);
    }
}
