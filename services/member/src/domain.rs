//! Member rules as plain functions: normalising identities, checking
//! profiles, tags and consents, referral codes and merge rules.

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate, Utc};
use laurel_runtime::error::Violations;
use rand::Rng;
use uuid::Uuid;

use crate::codes;

/// Channel of an identity, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdentityKind {
    /// Phone number in E.164.
    Phone,
    /// Email, case-folded.
    Email,
    /// App user id.
    AppUserId,
    /// Store card number.
    StoreCard,
    /// Social or open id; needs a namespace.
    SocialId,
    /// External CRM id; needs a namespace.
    ExternalId,
}

impl IdentityKind {
    /// The stored code, equal to the proto enum value.
    pub fn code(self) -> i16 {
        match self {
            Self::Phone => 1,
            Self::Email => 2,
            Self::AppUserId => 3,
            Self::StoreCard => 4,
            Self::SocialId => 5,
            Self::ExternalId => 6,
        }
    }

    /// The kind for a stored or wire code.
    pub fn from_code(code: i32) -> Option<Self> {
        Some(match code {
            1 => Self::Phone,
            2 => Self::Email,
            3 => Self::AppUserId,
            4 => Self::StoreCard,
            5 => Self::SocialId,
            6 => Self::ExternalId,
            _ => return None,
        })
    }

    fn needs_namespace(self) -> bool {
        matches!(self, Self::SocialId | Self::ExternalId)
    }
}

/// A normalised identity: the same person typed twice gives equal values.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityKey {
    /// Channel.
    pub kind: IdentityKind,
    /// Platform or system for social and external ids, else empty.
    pub namespace: String,
    /// Normalised value.
    pub value: String,
}

/// Normalises an identity, recording what is wrong under `field`.
pub fn normalise_identity(
    kind: i32,
    value: &str,
    namespace: &str,
    default_phone_region: Option<phonenumber::country::Id>,
    field: &str,
    violations: &mut Violations,
) -> Option<IdentityKey> {
    let Some(kind) = IdentityKind::from_code(kind) else {
        violations.add(format!("{field}.type"), "must be a known identity type");
        return None;
    };
    let namespace = namespace.trim().to_ascii_lowercase();
    if kind.needs_namespace() {
        let ok = !namespace.is_empty()
            && namespace.len() <= 32
            && namespace
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
        if !ok {
            violations.add(
                format!("{field}.namespace"),
                "required for social and external ids: 1 to 32 of a-z, 0-9, '-', '_', '.'",
            );
            return None;
        }
    } else if !namespace.is_empty() {
        violations.add(
            format!("{field}.namespace"),
            "only social and external ids take a namespace",
        );
        return None;
    }
    let value = value.trim();
    let normalised = match kind {
        IdentityKind::Phone => normalise_phone(value, default_phone_region),
        IdentityKind::Email => normalise_email(value),
        _ => normalise_plain_id(value),
    };
    match normalised {
        Ok(value) => Some(IdentityKey {
            kind,
            namespace,
            value,
        }),
        Err(reason) => {
            violations.add(format!("{field}.value"), reason);
            None
        }
    }
}

type PhoneOutcomes =
    moka::sync::Cache<(String, Option<phonenumber::country::Id>), Result<String, &'static str>>;

/// Parsing and validating a number runs the metadata's regular expressions
/// (tens of microseconds, more than the rest of a lookup); the same numbers
/// come again and again at checkouts, and the outcome depends on nothing
/// else, so it is remembered (bounded, per process).
static PHONES: std::sync::LazyLock<PhoneOutcomes> =
    std::sync::LazyLock::new(|| moka::sync::Cache::new(100_000));

/// A phone number in E.164, from any common way of writing it.
pub fn normalise_phone(
    raw: &str,
    default_region: Option<phonenumber::country::Id>,
) -> Result<String, &'static str> {
    if raw.is_empty() {
        return Err("required");
    }
    let region = if raw.starts_with('+') {
        None
    } else {
        default_region
    };
    let key = (raw.to_owned(), region);
    if let Some(outcome) = PHONES.get(&key) {
        return outcome;
    }
    let outcome = parse_phone(raw, region);
    PHONES.insert(key, outcome.clone());
    outcome
}

fn parse_phone(
    raw: &str,
    region: Option<phonenumber::country::Id>,
) -> Result<String, &'static str> {
    let number = phonenumber::parse(region, raw)
        .map_err(|_| "not a phone number: use E.164 such as +4915112345678")?;
    if !phonenumber::is_valid(&number) {
        return Err("not a valid phone number");
    }
    Ok(number.format().mode(phonenumber::Mode::E164).to_string())
}

/// An email address, case-folded.
pub fn normalise_email(raw: &str) -> Result<String, &'static str> {
    let email = raw.to_lowercase();
    let Some((local, domain)) = email.split_once('@') else {
        return Err("not an email address");
    };
    let ok = !local.is_empty()
        && local.len() <= 64
        && email.len() <= 254
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(email)
    } else {
        Err("not an email address")
    }
}

fn normalise_plain_id(raw: &str) -> Result<String, &'static str> {
    if raw.is_empty() {
        return Err("required");
    }
    if raw.len() > 128 || raw.chars().any(char::is_control) {
        return Err("at most 128 printable characters");
    }
    Ok(raw.to_owned())
}

/// Profile fields as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    /// Given name.
    pub given_name: String,
    /// Family name.
    pub family_name: String,
    /// Birth date, YYYY-MM-DD or empty.
    pub birth_date: String,
    /// Gender code (proto enum value).
    pub gender: i32,
    /// Region.
    pub region: String,
    /// BCP 47 language tag.
    pub preferred_language: String,
    /// IANA time zone.
    pub time_zone: String,
}

/// Checks one profile field by its name within `Profile`.
pub fn check_profile_field(profile: &Profile, name: &str, today: NaiveDate, v: &mut Violations) {
    let field = format!("profile.{name}");
    match name {
        "given_name" => check_name(&profile.given_name, &field, v),
        "family_name" => check_name(&profile.family_name, &field, v),
        "birth_date" => {
            if !profile.birth_date.is_empty() {
                match NaiveDate::parse_from_str(&profile.birth_date, "%Y-%m-%d") {
                    Ok(date) if date > today => v.add(field, "must not be in the future"),
                    Ok(date) if date < NaiveDate::from_ymd_opt(1900, 1, 1).unwrap_or(date) => {
                        v.add(field, "must be after 1900-01-01")
                    }
                    Ok(_) => {}
                    Err(_) => v.add(field, "must be a date as YYYY-MM-DD"),
                }
            }
        }
        "gender" => v.check(!(0..=4).contains(&profile.gender), field, "unknown gender"),
        "region" => v.check(
            !profile.region.is_empty() && !codes::is_region(&profile.region),
            field,
            "must be an ISO 3166-1 alpha-2 country or ISO 3166-2 subdivision such as DE or CN-SH",
        ),
        "preferred_language" => v.check(
            !profile.preferred_language.is_empty()
                && !codes::is_language_tag(&profile.preferred_language),
            field,
            "must be a BCP 47 tag such as en-GB",
        ),
        "time_zone" => v.check(
            !profile.time_zone.is_empty() && !codes::is_time_zone(&profile.time_zone),
            field,
            "must be an IANA time zone such as Europe/Berlin",
        ),
        _ => v.add("update_mask", format!("unknown field {field}")),
    }
}

/// Every profile field name.
pub const PROFILE_FIELDS: [&str; 7] = [
    "given_name",
    "family_name",
    "birth_date",
    "gender",
    "region",
    "preferred_language",
    "time_zone",
];

/// Checks every profile field.
pub fn check_profile(profile: &Profile, today: NaiveDate, v: &mut Violations) {
    for name in PROFILE_FIELDS {
        check_profile_field(profile, name, today, v);
    }
}

fn check_name(name: &str, field: &str, v: &mut Violations) {
    if name.chars().count() > 100 || name.chars().any(char::is_control) {
        v.add(field, "at most 100 printable characters");
    }
}

/// Copies one profile field, by its name within `Profile`, from `from`.
pub fn set_profile_field(to: &mut Profile, from: &Profile, name: &str) {
    match name {
        "given_name" => to.given_name.clone_from(&from.given_name),
        "family_name" => to.family_name.clone_from(&from.family_name),
        "birth_date" => to.birth_date.clone_from(&from.birth_date),
        "gender" => to.gender = from.gender,
        "region" => to.region.clone_from(&from.region),
        "preferred_language" => to.preferred_language.clone_from(&from.preferred_language),
        "time_zone" => to.time_zone.clone_from(&from.time_zone),
        _ => {}
    }
}

/// Normalises tags: trimmed, lower case, unique, sorted.
pub fn normalise_tags(tags: &[String], field: &str, v: &mut Violations) -> Vec<String> {
    if tags.len() > 50 {
        v.add(field, "at most 50 tags");
    }
    let mut out = BTreeSet::new();
    for (i, tag) in tags.iter().enumerate() {
        let tag = tag.trim().to_lowercase();
        let ok = !tag.is_empty()
            && tag.len() <= 64
            && tag
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ":_-.".contains(c));
        if ok {
            out.insert(tag);
        } else {
            v.add(
                format!("{field}[{i}]"),
                "1 to 64 of a-z, 0-9, ':', '_', '-', '.'",
            );
        }
    }
    out.into_iter().collect()
}

/// A consent as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consent {
    /// Channel code (proto enum value).
    pub channel: i16,
    /// Granted or withdrawn.
    pub granted: bool,
    /// Where it was given.
    pub source: String,
    /// When.
    pub updated_at: DateTime<Utc>,
}

/// Checks a consent's channel and source.
pub fn check_consent(channel: i32, source: &str, field: &str, v: &mut Violations) -> Option<i16> {
    let ok_source = source.len() <= 128 && !source.chars().any(char::is_control);
    v.check(
        !ok_source,
        format!("{field}.source"),
        "at most 128 printable characters",
    );
    if (1..=4).contains(&channel) {
        Some(channel as i16)
    } else {
        v.add(
            format!("{field}.channel"),
            "must be EMAIL, SMS, PUSH or SOCIAL",
        );
        None
    }
}

/// Folds consent updates into the current set: the newer decision per
/// channel wins.
pub fn merge_consents(current: &[Consent], updates: &[Consent]) -> Vec<Consent> {
    let mut out: Vec<Consent> = current.to_vec();
    for update in updates {
        match out.iter_mut().find(|c| c.channel == update.channel) {
            Some(existing) if existing.updated_at <= update.updated_at => {
                *existing = update.clone()
            }
            Some(_) => {}
            None => out.push(update.clone()),
        }
    }
    out.sort_by_key(|c| c.channel);
    out
}

/// Alphabet of referral codes: no 0/O or 1/I/L to misread.
const REFERRAL_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";

/// A fresh random referral code.
pub fn new_referral_code() -> String {
    let mut rng = rand::rng();
    (0..8)
        .map(|_| REFERRAL_ALPHABET[rng.random_range(0..REFERRAL_ALPHABET.len())] as char)
        .collect()
}

/// Normalises a referral code as typed by a person.
pub fn normalise_referral_code(raw: &str) -> Result<String, &'static str> {
    let code: String = raw.trim().to_ascii_uppercase().replace(['-', ' '], "");
    if code.len() == 8 && code.bytes().all(|b| REFERRAL_ALPHABET.contains(&b)) {
        Ok(code)
    } else {
        Err("not a referral code")
    }
}

/// Whether making `referrer` the referrer of `member` closes a cycle, given
/// the referrer chain above `referrer` (nearest first).
pub fn closes_referral_cycle(member: Uuid, referrer: Uuid, chain_above_referrer: &[Uuid]) -> bool {
    referrer == member || chain_above_referrer.contains(&member)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_become_e164() {
        let de = Some(phonenumber::country::Id::DE);
        assert_eq!(
            normalise_phone("+49 151 1234 5678", None).unwrap(),
            "+4915112345678"
        );
        assert_eq!(
            normalise_phone("0151 12345678", de).unwrap(),
            "+4915112345678"
        );
        assert!(normalise_phone("12", None).is_err());
    }

    #[test]
    fn a_remembered_phone_outcome_equals_a_fresh_parse() {
        let de = Some(phonenumber::country::Id::DE);
        for raw in ["0151 12345678", "+49 151 1234 5678", "12", "+999"] {
            let first = normalise_phone(raw, de);
            assert_eq!(normalise_phone(raw, de), first, "{raw}");
            let region = if raw.starts_with('+') { None } else { de };
            assert_eq!(parse_phone(raw, region), first, "{raw}");
        }
    }

    #[test]
    fn emails_are_case_folded() {
        assert_eq!(
            normalise_email("Ada@Example.COM").unwrap(),
            "ada@example.com"
        );
        assert!(normalise_email("ada.example.com").is_err());
    }

    #[test]
    fn newer_consent_wins() {
        let t0 = DateTime::from_timestamp(0, 0).unwrap();
        let t1 = DateTime::from_timestamp(10, 0).unwrap();
        let c = |granted, at| Consent {
            channel: 1,
            granted,
            source: String::new(),
            updated_at: at,
        };
        assert!(!merge_consents(&[c(true, t0)], &[c(false, t1)])[0].granted);
        assert!(merge_consents(&[c(true, t1)], &[c(false, t0)])[0].granted);
    }

    #[test]
    fn an_update_at_the_same_time_wins_and_new_channels_are_added() {
        let t0 = DateTime::from_timestamp(0, 0).unwrap();
        let c = |channel, granted| Consent {
            channel,
            granted,
            source: String::new(),
            updated_at: t0,
        };
        let out = merge_consents(&[c(2, true)], &[c(2, false), c(1, true)]);
        assert_eq!(out, [c(1, true), c(2, false)]);
    }

    #[test]
    fn referral_codes_round_trip() {
        let code = new_referral_code();
        assert_eq!(normalise_referral_code(&code.to_lowercase()).unwrap(), code);
    }

    #[test]
    fn referral_cycles_are_detected() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        assert!(closes_referral_cycle(a, a, &[]));
        assert!(closes_referral_cycle(a, b, &[c, a]));
        assert!(!closes_referral_cycle(a, b, &[c]));
    }

    #[test]
    fn profile_checks_name_each_bad_field() {
        let profile = Profile {
            birth_date: "1990-13-01".into(),
            region: "germany".into(),
            preferred_language: "english_GB".into(),
            time_zone: "Mars/Olympus".into(),
            ..Profile::default()
        };
        let mut v = Violations::new();
        check_profile(
            &profile,
            NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
            &mut v,
        );
        assert_eq!(
            v.fields(),
            [
                "profile.birth_date",
                "profile.region",
                "profile.preferred_language",
                "profile.time_zone"
            ]
        );
    }
}
