//! Coded fields checked against their standards: ISO 4217 currencies, IANA
//! time zones, ISO 3166 regions and BCP 47 language tags.

use std::str::FromStr;

/// Whether `code` is an ISO 4217 alphabetic currency code (upper case).
pub fn is_currency(code: &str) -> bool {
    iso_currency::Currency::from_code(code).is_some()
}

/// Whether `name` is a time zone of the IANA database (as bundled by
/// chrono-tz), such as `Europe/Berlin` or `UTC`.
pub fn is_time_zone(name: &str) -> bool {
    chrono_tz::Tz::from_str(name).is_ok()
}

/// Whether `code` is an ISO 3166-1 alpha-2 country (`DE`) or an ISO 3166-2
/// subdivision (`DE-BE`, `CN-SH`), upper case, in the current edition of
/// the standard.
pub fn is_region(code: &str) -> bool {
    if code.contains('-') {
        rust_iso3166::iso3166_2::from_code(code).is_some()
    } else {
        code.len() == 2 && rust_iso3166::from_alpha2(code).is_some()
    }
}

/// Whether `tag` is a well-formed BCP 47 (RFC 5646) language tag such as
/// `en-GB` or `zh-Hant-TW` whose language is an ISO 639 code of two or three
/// letters. The grammar also allows 4 to 8 letters, but the IANA registry
/// holds no such language, so a word such as `english` is refused. Subtags
/// are checked for form, not looked up in the registry.
pub fn is_language_tag(tag: &str) -> bool {
    oxilangtag::LanguageTag::parse(tag).is_ok_and(|t| (2..=3).contains(&t.primary_language().len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies_come_from_iso_4217() {
        assert!(is_currency("EUR") && is_currency("CNY") && is_currency("JPY"));
        assert!(!is_currency("ABC") && !is_currency("eur") && !is_currency("EURO"));
    }

    #[test]
    fn time_zones_come_from_the_iana_database() {
        assert!(is_time_zone("Europe/Berlin") && is_time_zone("Asia/Shanghai"));
        assert!(is_time_zone("UTC"));
        assert!(!is_time_zone("Mars/Olympus") && !is_time_zone("europe/berlin"));
    }

    #[test]
    fn regions_are_countries_or_their_subdivisions() {
        assert!(is_region("DE") && is_region("CN") && is_region("US-CA"));
        assert!(is_region("CN-SH") && is_region("DE-BE"));
        assert!(!is_region("XX") && !is_region("DE-XX") && !is_region("de"));
        assert!(!is_region("DEU") && !is_region("") && !is_region("-"));
    }

    #[test]
    fn language_tags_follow_bcp_47() {
        for ok in ["en", "en-GB", "zh-Hant-TW", "de-DE-1996", "es-419"] {
            assert!(is_language_tag(ok), "{ok}");
        }
        for bad in ["english", "en_GB", "en--GB", "", "e", "x-private"] {
            assert!(!is_language_tag(bad), "{bad}");
        }
    }
}
