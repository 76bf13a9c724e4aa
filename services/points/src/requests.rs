//! Checking requests: every field against its bounds, each violation named,
//! before anything is read or written.

use chrono::{DateTime, Utc};
use laurel_proto::{common::v1::Money, points::v1 as pb};
use laurel_runtime::{error::Violations, idempotency::check_request_id};
use uuid::Uuid;

use crate::ledger::book::MAX_POINTS;

/// Largest money amount accepted, in minor units (10^15).
pub const MAX_MONEY_MINOR: i64 = 1_000_000_000_000_000;
/// Longest statement text.
pub const MAX_TEXT: usize = 500;
/// Longest id or reference.
pub const MAX_ID: usize = 128;

/// A member id field.
pub fn member_id(raw: &str, field: &str, v: &mut Violations) -> Uuid {
    match Uuid::parse_str(raw.trim()) {
        Ok(id) if !id.is_nil() => id,
        _ => {
            v.add(field, "required: a member id (UUID)");
            Uuid::nil()
        }
    }
}

/// Any UUID field.
pub fn uuid(raw: &str, field: &str, what: &str, v: &mut Violations) -> Uuid {
    match Uuid::parse_str(raw.trim()) {
        Ok(id) if !id.is_nil() => id,
        _ => {
            v.add(field, format!("required: a {what} id (UUID)"));
            Uuid::nil()
        }
    }
}

/// A points amount: 1 to 10^12.
pub fn points(value: i64, field: &str, v: &mut Violations) {
    if value <= 0 {
        v.add(field, "must be at least 1 point");
    } else if value > MAX_POINTS {
        v.add(field, "at most 10^12 points");
    }
}

/// A free text of at most `max` characters.
pub fn text(value: &str, field: &str, max: usize, v: &mut Violations) {
    v.check(
        value.chars().count() > max,
        field,
        format!("at most {max} characters"),
    );
}

/// The request id.
pub fn request_id(value: &str, v: &mut Violations) {
    check_request_id(value, v);
}

/// A money amount; `currency` is the programme's (empty: any).
pub fn money(
    m: Option<&Money>,
    field: &str,
    currency: &str,
    allow_zero: bool,
    v: &mut Violations,
) -> Option<(i64, String)> {
    let Some(m) = m else {
        v.add(field, "required");
        return None;
    };
    let code = m.currency_code.trim().to_ascii_uppercase();
    if iso_currency::Currency::from_code(&code).is_none() {
        v.add(
            format!("{field}.currency_code"),
            "an ISO 4217 code such as EUR",
        );
        return None;
    }
    if !currency.is_empty() && code != currency {
        v.add(
            format!("{field}.currency_code"),
            format!("must be the programme's currency {currency}"),
        );
        return None;
    }
    if m.amount_minor < 0 || (!allow_zero && m.amount_minor == 0) {
        v.add(
            format!("{field}.amount_minor"),
            if allow_zero {
                "must not be negative"
            } else {
                "must be positive"
            },
        );
        return None;
    }
    if m.amount_minor > MAX_MONEY_MINOR {
        v.add(format!("{field}.amount_minor"), "at most 10^15 minor units");
        return None;
    }
    Some((m.amount_minor, code))
}

/// An order to earn on.
pub fn order(
    o: Option<&pb::Order>,
    currency: &str,
    v: &mut Violations,
) -> Option<(String, i64, String)> {
    let Some(o) = o else {
        v.add("order", "required for order earns");
        return None;
    };
    let id = o.order_id.trim();
    if id.is_empty() || id.len() > MAX_ID {
        v.add("order.order_id", "required, at most 128 characters");
    }
    let total = money(o.total.as_ref(), "order.total", currency, true, v);
    for (i, line) in o.lines.iter().enumerate() {
        v.check(
            !(1..=1_000_000).contains(&line.quantity),
            format!("order.lines[{i}].quantity"),
            "1 to 10^6",
        );
        v.check(
            !(0..=MAX_MONEY_MINOR).contains(&line.unit_price_minor),
            format!("order.lines[{i}].unit_price_minor"),
            "0 to 10^15",
        );
        text(&line.sku, &format!("order.lines[{i}].sku"), MAX_ID, v);
        text(
            &line.category,
            &format!("order.lines[{i}].category"),
            MAX_ID,
            v,
        );
    }
    total.map(|(amount, code)| (id.to_owned(), amount, code))
}

/// A timestamp field, or `default`.
pub fn time(
    t: Option<&prost_types::Timestamp>,
    field: &str,
    default: DateTime<Utc>,
    v: &mut Violations,
) -> DateTime<Utc> {
    match t {
        None => default,
        Some(t) => match DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32) {
            Some(at) => DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at),
            None => {
                v.add(field, "not a valid time");
                default
            }
        },
    }
}
