//! AIP-158 pagination: a page size with a default and a cap, and opaque page
//! tokens that carry a keyset position.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

/// Default page size.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// Largest page size; larger requests are clamped.
pub const MAX_PAGE_SIZE: i64 = 500;

/// The page size to use, or `None` when negative.
pub fn page_size(requested: i32) -> Option<i64> {
    match requested {
        n if n < 0 => None,
        0 => Some(DEFAULT_PAGE_SIZE),
        n => Some(i64::from(n).min(MAX_PAGE_SIZE)),
    }
}

/// Encodes a keyset position as an opaque token.
pub fn encode_token(position: &str) -> String {
    URL_SAFE_NO_PAD.encode(position.as_bytes())
}

/// Decodes a token made by [`encode_token`]; `Ok(None)` for an empty token.
pub fn decode_token(token: &str) -> Result<Option<String>, &'static str> {
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| "not a page token from this service")?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| "not a page token from this service")
}

/// Checks a request's `page_size` and `page_token` fields, naming them in
/// `violations`: the page size to use and the position the token carries,
/// parsed by `parse` (`None` for the first page).
pub fn page<T>(
    page_size: i32,
    page_token: &str,
    parse: impl FnOnce(&str) -> Option<T>,
    violations: &mut crate::error::Violations,
) -> (i64, Option<T>) {
    let size = page_size_or_default(page_size, violations);
    let position = match decode_token(page_token) {
        Ok(None) => None,
        Ok(Some(raw)) => {
            let position = parse(&raw);
            violations.check(
                position.is_none(),
                "page_token",
                "not a page token from this service",
            );
            position
        }
        Err(reason) => {
            violations.add("page_token", reason);
            None
        }
    };
    (size, position)
}

fn page_size_or_default(requested: i32, violations: &mut crate::error::Violations) -> i64 {
    page_size(requested).unwrap_or_else(|| {
        violations.add("page_size", "must not be negative");
        DEFAULT_PAGE_SIZE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let token = encode_token("2026-01-01T00:00:00Z|0190");
        assert_eq!(
            decode_token(&token).unwrap().unwrap(),
            "2026-01-01T00:00:00Z|0190"
        );
    }

    #[test]
    fn page_size_defaults_and_caps() {
        assert_eq!(page_size(0), Some(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(10_000), Some(MAX_PAGE_SIZE));
        assert_eq!(page_size(-1), None);
    }
}
