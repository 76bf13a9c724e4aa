//! Incoming requests checked field by field and turned into commands.
//! Every proto field is destructured, so a new field breaks the build until
//! it is handled here.

use chrono::{DateTime, Utc};
use laurel_proto::member::v1 as pb;
use laurel_runtime::{error::Violations, idempotency::check_request_id, pagination};
use uuid::Uuid;

use crate::{
    activity_kind::ActivityKind,
    codes,
    domain::{self, Consent, IdentityKey, Profile},
    money::{MAX_AMOUNT_MINOR, MAX_LINE_QUANTITY},
    repo::{ActivityExport, MemberFilter, status},
};

/// Activities per ExportActivities response when the request names none.
pub const DEFAULT_EXPORT_BATCH: i64 = 500;
/// The most activities one ExportActivities response carries.
pub const MAX_EXPORT_BATCH: i64 = 5000;

/// What checking needs besides the request.
#[derive(Clone, Copy, Debug)]
pub struct CheckContext {
    /// Server time.
    pub now: DateTime<Utc>,
    /// Region assumed for phone numbers without a country code.
    pub phone_region: Option<phonenumber::country::Id>,
}

/// A checked member id.
pub fn member_id(raw: &str, field: &str, v: &mut Violations) -> Option<Uuid> {
    match Uuid::parse_str(raw) {
        Ok(id) => Some(id),
        Err(_) if raw.is_empty() => {
            v.add(field, "required");
            None
        }
        Err(_) => {
            v.add(field, "must be a UUID");
            None
        }
    }
}

fn timestamp(
    ts: Option<&prost_types::Timestamp>,
    field: &str,
    v: &mut Violations,
) -> Option<DateTime<Utc>> {
    let ts = ts?;
    let at = u32::try_from(ts.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(ts.seconds, nanos));
    if at.is_none() {
        v.add(field, "not a valid timestamp");
    }
    at
}

/// The profile in a request.
pub fn profile(p: Option<&pb::Profile>) -> Profile {
    let Some(pb::Profile {
        given_name,
        family_name,
        birth_date,
        gender,
        region,
        preferred_language,
        time_zone,
    }) = p.cloned()
    else {
        return Profile::default();
    };
    Profile {
        given_name: given_name.trim().to_owned(),
        family_name: family_name.trim().to_owned(),
        birth_date: birth_date.trim().to_owned(),
        gender,
        region: region.trim().to_owned(),
        preferred_language: preferred_language.trim().to_owned(),
        time_zone: time_zone.trim().to_owned(),
    }
}

/// A checked identity.
pub fn identity(
    i: Option<&pb::Identity>,
    field: &str,
    cx: CheckContext,
    v: &mut Violations,
) -> Option<IdentityKey> {
    let Some(pb::Identity {
        r#type,
        value,
        namespace,
        linked_at: _,
    }) = i
    else {
        v.add(field, "required");
        return None;
    };
    domain::normalise_identity(*r#type, value, namespace, cx.phone_region, field, v)
}

fn consents(
    list: &[pb::Consent],
    field: &str,
    now: DateTime<Utc>,
    v: &mut Violations,
) -> Vec<Consent> {
    let mut out: Vec<Consent> = Vec::new();
    for (i, c) in list.iter().enumerate() {
        let pb::Consent {
            channel,
            granted,
            source,
            updated_at,
        } = c;
        let f = format!("{field}[{i}]");
        let at = timestamp(updated_at.as_ref(), &format!("{f}.updated_at"), v).unwrap_or(now);
        if at > now + chrono::Duration::minutes(5) {
            v.add(format!("{f}.updated_at"), "must not be in the future");
        }
        if let Some(channel) = domain::check_consent(*channel, source, &f, v) {
            if out.iter().any(|c| c.channel == channel) {
                v.add(format!("{f}.channel"), "each channel at most once");
            }
            out.push(Consent {
                channel,
                granted: *granted,
                source: source.trim().to_owned(),
                updated_at: at,
            });
        }
    }
    out
}

/// A checked `CreateMember`.
#[derive(Debug)]
pub struct NewMember {
    pub profile: Profile,
    pub identities: Vec<IdentityKey>,
    pub consents: Vec<Consent>,
    pub tags: Vec<String>,
    pub referral_code: Option<String>,
    pub enrolled_at: DateTime<Utc>,
}

/// Checks a `CreateMemberRequest`.
pub fn new_member(
    req: &pb::CreateMemberRequest,
    cx: CheckContext,
) -> Result<NewMember, Violations> {
    let pb::CreateMemberRequest {
        request_id,
        profile: p,
        identities,
        consents: c,
        tags,
        referral_code,
        enrolled_at,
    } = req;
    let mut v = Violations::new();
    check_request_id(request_id, &mut v);
    let profile = profile(p.as_ref());
    domain::check_profile(&profile, cx.now.date_naive(), &mut v);
    let mut keys: Vec<IdentityKey> = Vec::new();
    if identities.len() > 20 {
        v.add("identities", "at most 20");
    }
    for (i, identity) in identities.iter().enumerate() {
        let field = format!("identities[{i}]");
        if let Some(key) = self::identity(Some(identity), &field, cx, &mut v) {
            if keys.contains(&key) {
                v.add(field, "listed twice");
            } else {
                keys.push(key);
            }
        }
    }
    let consents = consents(c, "consents", cx.now, &mut v);
    let tags = domain::normalise_tags(tags, "tags", &mut v);
    let referral_code = match referral_code.trim() {
        "" => None,
        code => match domain::normalise_referral_code(code) {
            Ok(code) => Some(code),
            Err(reason) => {
                v.add("referral_code", reason);
                None
            }
        },
    };
    let enrolled_at = timestamp(enrolled_at.as_ref(), "enrolled_at", &mut v).unwrap_or(cx.now);
    v.check(
        enrolled_at > cx.now + chrono::Duration::minutes(5),
        "enrolled_at",
        "must not be in the future",
    );
    v.finish()?;
    Ok(NewMember {
        profile,
        identities: keys,
        consents,
        tags,
        referral_code,
        enrolled_at,
    })
}

/// One change named by an update mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Status,
    Tags,
    Consents,
    Profile(&'static str),
}

/// A checked `UpdateMember`.
#[derive(Debug)]
pub struct MemberUpdate {
    pub member_id: Uuid,
    pub changes: Vec<Change>,
    pub profile: Profile,
    pub tags: Vec<String>,
    pub consents: Vec<Consent>,
    pub status: i16,
}

/// Checks an `UpdateMemberRequest`.
pub fn member_update(
    req: &pb::UpdateMemberRequest,
    cx: CheckContext,
) -> Result<MemberUpdate, Violations> {
    let pb::UpdateMemberRequest {
        request_id,
        member,
        update_mask,
    } = req;
    let mut v = Violations::new();
    check_request_id(request_id, &mut v);
    let Some(member) = member else {
        v.add("member", "required");
        return Err(v);
    };
    let member_id = self::member_id(&member.member_id, "member.member_id", &mut v);
    let paths = update_mask
        .as_ref()
        .map(|m| m.paths.clone())
        .unwrap_or_default();
    if paths.is_empty() {
        v.add("update_mask", "name the fields to change");
    }
    let profile = profile(member.profile.as_ref());
    let mut changes = Vec::new();
    for path in &paths {
        let change = match path.as_str() {
            "status" => Some(Change::Status),
            "tags" => Some(Change::Tags),
            "consents" => Some(Change::Consents),
            "profile" => {
                for name in domain::PROFILE_FIELDS {
                    changes.push(Change::Profile(name));
                }
                None
            }
            other => match other
                .strip_prefix("profile.")
                .and_then(|f| domain::PROFILE_FIELDS.iter().find(|n| **n == f))
            {
                Some(name) => Some(Change::Profile(name)),
                None => {
                    v.add(
                        "update_mask",
                        format!("unknown or read-only field {other:?}"),
                    );
                    None
                }
            },
        };
        changes.extend(change);
    }
    changes.dedup();
    for change in &changes {
        if let Change::Profile(name) = change {
            domain::check_profile_field(&profile, name, cx.now.date_naive(), &mut v);
        }
    }
    let status = member.status as i16;
    if changes.contains(&Change::Status) && ![status::ACTIVE, status::SUSPENDED].contains(&status) {
        v.add(
            "member.status",
            "only ACTIVE or SUSPENDED can be set; use MergeMembers or EraseMember",
        );
    }
    let tags = if changes.contains(&Change::Tags) {
        domain::normalise_tags(&member.tags, "member.tags", &mut v)
    } else {
        Vec::new()
    };
    let consents = if changes.contains(&Change::Consents) {
        consents(&member.consents, "member.consents", cx.now, &mut v)
    } else {
        Vec::new()
    };
    v.finish()?;
    Ok(MemberUpdate {
        member_id: member_id.unwrap_or_default(),
        changes,
        profile,
        tags,
        consents,
        status,
    })
}

/// Checks a `ListMembersRequest` into a filter and page size.
pub fn member_listing(req: &pb::ListMembersRequest) -> Result<(MemberFilter, i64), Violations> {
    let pb::ListMembersRequest {
        page_size,
        page_token,
        status,
        tag,
        enrolled_after,
        enrolled_before,
    } = req;
    let mut v = Violations::new();
    let size = pagination::page_size(*page_size);
    v.check(size.is_none(), "page_size", "must not be negative");
    v.check(!(0..=4).contains(status), "status", "unknown status");
    let after = page_position(page_token, &mut v);
    let filter = MemberFilter {
        status: (*status != 0).then_some(*status as i16),
        tag: (!tag.is_empty()).then(|| tag.trim().to_lowercase()),
        enrolled_after: timestamp(enrolled_after.as_ref(), "enrolled_after", &mut v),
        enrolled_before: timestamp(enrolled_before.as_ref(), "enrolled_before", &mut v),
        after,
    };
    v.finish()?;
    Ok((filter, size.unwrap_or(pagination::DEFAULT_PAGE_SIZE)))
}

/// The keyset position (time, id) a page token carries, if any.
pub fn page_position(token: &str, v: &mut Violations) -> Option<(DateTime<Utc>, Uuid)> {
    let parsed = match pagination::decode_token(token) {
        Ok(None) => return None,
        Ok(Some(position)) => position.split_once('|').and_then(|(at, id)| {
            Some((
                DateTime::parse_from_rfc3339(at).ok()?.to_utc(),
                Uuid::parse_str(id).ok()?,
            ))
        }),
        Err(_) => None,
    };
    v.check(
        parsed.is_none(),
        "page_token",
        "not a page token from this service",
    );
    parsed
}

/// Who an activity is about.
#[derive(Clone, Debug)]
pub enum MemberRef {
    Id(Uuid),
    Identity(IdentityKey),
    /// Nobody: a guest's purchase or refund, stored without a member.
    Guest,
}

/// A checked `RecordActivity`.
#[derive(Debug)]
pub struct NewActivity {
    pub member: MemberRef,
    pub auto_enroll: bool,
    /// The activity as it will be stored, ids still empty.
    pub activity: pb::Activity,
    pub kind: ActivityKind,
    /// The order and amount of purchases and refunds.
    pub money: Option<OrderMoney>,
}

/// The order a purchase or refund concerns, and its amount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderMoney {
    /// Order id.
    pub order_id: String,
    /// ISO 4217 currency.
    pub currency: String,
    /// Amount in minor units, within `0..=MAX_AMOUNT_MINOR`.
    pub amount_minor: i64,
}

fn check_text(value: &str, field: &str, max: usize, required: bool, v: &mut Violations) {
    if required && value.trim().is_empty() {
        v.add(field, "required");
    } else if value.chars().count() > max {
        v.add(field, format!("at most {max} characters"));
    }
}

fn check_money(
    m: Option<&laurel_proto::common::v1::Money>,
    field: &str,
    positive: bool,
    v: &mut Violations,
) -> Option<(String, i64)> {
    let Some(laurel_proto::common::v1::Money {
        currency_code,
        amount_minor,
    }) = m
    else {
        v.add(field, "required");
        return None;
    };
    v.check(
        !codes::is_currency(currency_code),
        format!("{field}.currency_code"),
        "must be an ISO 4217 currency code such as EUR",
    );
    let low = if positive { 1 } else { 0 };
    if *amount_minor < low {
        v.add(
            format!("{field}.amount_minor"),
            if positive {
                "must be positive"
            } else {
                "must not be negative"
            },
        );
    } else if *amount_minor > MAX_AMOUNT_MINOR {
        v.add(
            format!("{field}.amount_minor"),
            format!("at most {MAX_AMOUNT_MINOR} minor units"),
        );
    }
    Some((currency_code.clone(), *amount_minor))
}

fn check_lines(lines: &[pb::OrderLine], field: &str, v: &mut Violations) {
    v.check(lines.len() > 500, field, "at most 500 lines");
    for (i, line) in lines.iter().enumerate() {
        let pb::OrderLine {
            sku,
            category,
            quantity,
            unit_price_minor,
        } = line;
        let f = format!("{field}[{i}]");
        check_text(sku, &format!("{f}.sku"), 64, true, v);
        check_text(category, &format!("{f}.category"), 64, false, v);
        v.check(
            !(1..=MAX_LINE_QUANTITY).contains(quantity),
            format!("{f}.quantity"),
            format!("must be 1 to {MAX_LINE_QUANTITY}"),
        );
        v.check(
            !(0..=MAX_AMOUNT_MINOR).contains(unit_price_minor),
            format!("{f}.unit_price_minor"),
            format!("must be 0 to {MAX_AMOUNT_MINOR} minor units"),
        );
    }
}

/// The member of a guest activity: none may be named and none enrolled.
fn guest_member(
    member: Option<&pb::record_activity_request::Member>,
    auto_enroll: bool,
    v: &mut Violations,
) -> Option<MemberRef> {
    match member {
        Some(pb::record_activity_request::Member::MemberId(_)) => {
            v.add("member_id", "must be empty for a guest activity");
        }
        Some(pb::record_activity_request::Member::Identity(_)) => {
            v.add("identity", "must be empty for a guest activity");
        }
        None => {}
    }
    v.check(
        auto_enroll,
        "auto_enroll",
        "must be false for a guest activity: a guest is not enrolled",
    );
    Some(MemberRef::Guest)
}

/// Checks a `RecordActivityRequest`.
pub fn new_activity(
    req: &pb::RecordActivityRequest,
    cx: CheckContext,
) -> Result<NewActivity, Violations> {
    use pb::activity::Detail;
    let pb::RecordActivityRequest {
        member,
        auto_enroll,
        activity,
        guest,
    } = req;
    let mut v = Violations::new();
    let member = if *guest {
        guest_member(member.as_ref(), *auto_enroll, &mut v)
    } else {
        let member = match member {
            Some(pb::record_activity_request::Member::MemberId(id)) => {
                member_id(id, "member_id", &mut v).map(MemberRef::Id)
            }
            Some(pb::record_activity_request::Member::Identity(i)) => {
                identity(Some(i), "identity", cx, &mut v).map(MemberRef::Identity)
            }
            None => {
                v.add(
                    "member_id",
                    "name the member by member_id or identity, or set guest",
                );
                None
            }
        };
        if *auto_enroll && !matches!(member, Some(MemberRef::Identity(_))) && v.is_empty() {
            v.add("auto_enroll", "needs an identity");
        }
        member
    };
    let Some(activity) = activity else {
        v.add("activity", "required");
        return Err(v);
    };
    if *guest {
        v.check(
            !matches!(
                activity.detail,
                Some(Detail::Purchase(_) | Detail::Refund(_))
            ),
            "activity",
            "a guest activity is a purchase or a refund",
        );
    }
    let pb::Activity {
        activity_id: _,
        member_id: _,
        r#type: _,
        source,
        external_id,
        occurred_at,
        recorded_at: _,
        attributes,
        detail,
    } = activity;
    check_text(source, "activity.source", 64, true, &mut v);
    check_text(external_id, "activity.external_id", 128, true, &mut v);
    let occurred =
        timestamp(occurred_at.as_ref(), "activity.occurred_at", &mut v).unwrap_or(cx.now);
    v.check(
        occurred > cx.now + chrono::Duration::minutes(5),
        "activity.occurred_at",
        "must not be in the future",
    );
    v.check(
        attributes.len() > 50,
        "activity.attributes",
        "at most 50 attributes",
    );
    for (key, value) in attributes {
        v.check(
            key.is_empty() || key.len() > 64,
            "activity.attributes",
            "keys are 1 to 64 characters",
        );
        v.check(
            value.len() > 1024,
            format!("activity.attributes[{key}]"),
            "at most 1024 characters",
        );
    }
    let mut money = None;
    let kind = detail.as_ref().map(ActivityKind::of);
    match detail {
        None => {
            v.add(
                "activity.detail",
                "say what happened: purchase, refund, review, share, check_in, feedback or custom",
            );
        }
        Some(Detail::Purchase(pb::Purchase {
            order_id,
            total,
            lines,
            store_id,
            channel,
        })) => {
            check_text(order_id, "activity.purchase.order_id", 128, true, &mut v);
            let total = check_money(total.as_ref(), "activity.purchase.total", false, &mut v);
            check_lines(lines, "activity.purchase.lines", &mut v);
            check_text(store_id, "activity.purchase.store_id", 64, false, &mut v);
            v.check(
                !(0..=4).contains(channel),
                "activity.purchase.channel",
                "unknown sales channel",
            );
            money = total.map(|(currency, amount_minor)| OrderMoney {
                order_id: order_id.clone(),
                currency,
                amount_minor,
            });
        }
        Some(Detail::Refund(pb::Refund {
            order_id,
            amount,
            lines,
        })) => {
            check_text(order_id, "activity.refund.order_id", 128, true, &mut v);
            let amount = check_money(amount.as_ref(), "activity.refund.amount", true, &mut v);
            check_lines(lines, "activity.refund.lines", &mut v);
            money = amount.map(|(currency, amount_minor)| OrderMoney {
                order_id: order_id.clone(),
                currency,
                amount_minor,
            });
        }
        Some(Detail::Review(pb::Review { sku, rating, text })) => {
            check_text(sku, "activity.review.sku", 64, true, &mut v);
            v.check(
                !(1..=5).contains(rating),
                "activity.review.rating",
                "must be 1 to 5",
            );
            check_text(text, "activity.review.text", 5000, false, &mut v);
        }
        Some(Detail::Share(pb::Share { platform, url })) => {
            check_text(platform, "activity.share.platform", 32, true, &mut v);
            check_text(url, "activity.share.url", 2048, false, &mut v);
        }
        Some(Detail::CheckIn(pb::CheckIn { location_id })) => {
            check_text(
                location_id,
                "activity.check_in.location_id",
                64,
                true,
                &mut v,
            );
        }
        Some(Detail::Feedback(pb::Feedback { nps_score, comment })) => {
            v.check(
                !(0..=10).contains(nps_score),
                "activity.feedback.nps_score",
                "must be 0 to 10",
            );
            check_text(comment, "activity.feedback.comment", 5000, false, &mut v);
        }
        Some(Detail::Custom(pb::Custom { name })) => {
            let ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c));
            v.check(
                !ok,
                "activity.custom.name",
                "1 to 64 of a-z, 0-9, '_', '.', '-'",
            );
        }
    }
    v.finish()?;
    let kind = kind.expect("checked above");
    let mut activity = activity.clone();
    activity.r#type = kind.proto() as i32;
    activity.occurred_at = Some(to_timestamp(occurred));
    Ok(NewActivity {
        member: member.expect("checked above"),
        auto_enroll: *auto_enroll,
        activity,
        kind,
        money,
    })
}

/// Checks an `ExportActivitiesRequest` into what to read and the batch
/// size.
pub fn activity_export(
    req: &pb::ExportActivitiesRequest,
) -> Result<(ActivityExport, i64), Violations> {
    let pb::ExportActivitiesRequest {
        after_activity_id,
        activity_types,
        occurred_from,
        occurred_to,
        batch_size,
    } = req;
    let mut v = Violations::new();
    let after = if after_activity_id.is_empty() {
        Uuid::nil()
    } else {
        Uuid::parse_str(after_activity_id).unwrap_or_else(|_| {
            v.add(
                "after_activity_id",
                "must be the last_activity_id of an earlier response, or empty",
            );
            Uuid::nil()
        })
    };
    let mut types = Vec::with_capacity(activity_types.len());
    for raw in activity_types {
        match ActivityKind::ALL
            .into_iter()
            .find(|k| k.proto() as i32 == *raw)
        {
            Some(kind) => types.push(kind.code()),
            None => v.add("activity_types", format!("unknown activity type {raw}")),
        }
    }
    let occurred_from = timestamp(occurred_from.as_ref(), "occurred_from", &mut v);
    let occurred_to = timestamp(occurred_to.as_ref(), "occurred_to", &mut v);
    if let (Some(from), Some(to)) = (occurred_from, occurred_to) {
        v.check(from >= to, "occurred_to", "must be after occurred_from");
    }
    let batch_size = match i64::from(*batch_size) {
        0 => DEFAULT_EXPORT_BATCH,
        n => n,
    };
    v.check(
        !(1..=MAX_EXPORT_BATCH).contains(&batch_size),
        "batch_size",
        format!("must be 1 to {MAX_EXPORT_BATCH} (0 for {DEFAULT_EXPORT_BATCH})"),
    );
    v.finish()?;
    Ok((
        ActivityExport {
            after,
            types,
            occurred_from,
            occurred_to,
        },
        batch_size,
    ))
}

/// A protobuf timestamp.
pub fn to_timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    #[test]
    fn an_empty_export_request_reads_everything_from_the_start_in_default_batches() {
        let (export, batch) = activity_export(&pb::ExportActivitiesRequest::default()).unwrap();
        assert_eq!(
            export,
            ActivityExport {
                after: Uuid::nil(),
                types: vec![],
                occurred_from: None,
                occurred_to: None,
            }
        );
        assert_eq!(batch, 500);
    }

    #[test]
    fn export_types_become_stored_codes_and_bounds_are_kept() {
        let after = Uuid::now_v7();
        let (export, batch) = activity_export(&pb::ExportActivitiesRequest {
            after_activity_id: after.to_string(),
            activity_types: vec![
                pb::ActivityType::Refund as i32,
                pb::ActivityType::Custom as i32,
            ],
            occurred_from: ts(100),
            occurred_to: ts(101),
            batch_size: 5000,
        })
        .unwrap();
        assert_eq!(export.after, after);
        assert_eq!(export.types, [2, 7]);
        assert_eq!(export.occurred_from.map(|t| t.timestamp()), Some(100));
        assert_eq!(export.occurred_to.map(|t| t.timestamp()), Some(101));
        assert_eq!(batch, 5000);
    }

    #[test]
    fn a_bad_export_request_names_every_bad_field() {
        let violations = activity_export(&pb::ExportActivitiesRequest {
            after_activity_id: "42".into(),
            activity_types: vec![0, 8],
            occurred_from: ts(100),
            occurred_to: ts(100),
            batch_size: 5001,
        })
        .unwrap_err();
        assert_eq!(
            violations.fields(),
            [
                "after_activity_id",
                "activity_types",
                "activity_types",
                "occurred_to",
                "batch_size"
            ]
        );
        let negative = activity_export(&pb::ExportActivitiesRequest {
            batch_size: -1,
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(negative.fields(), ["batch_size"]);
    }
}
