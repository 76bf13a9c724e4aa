//! Keeping secrets out of `Debug` output and logs.

use std::fmt;

/// What a redacted secret prints as.
pub const REDACTED: &str = "<redacted>";

/// A connection URL with its password replaced by `***`, both in the user
/// part (`postgres://user:pw@host`) and in a `password` query parameter
/// (`?password=pw`). Text that is not a URL prints as [`REDACTED`], since it
/// may be a key-value connection string holding a password.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return REDACTED.to_owned();
    };
    if url.password().is_some() {
        // Only fails for URLs that cannot have a password, which this has.
        let _ = url.set_password(Some("***"));
    }
    if url
        .query_pairs()
        .any(|(k, _)| k.eq_ignore_ascii_case("password"))
    {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case("password") {
                    "***".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.into()
}

/// Formats a URL through [`redact_url`], for `Debug` impls.
pub struct RedactedUrl<'a>(pub &'a str);

impl fmt::Debug for RedactedUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&redact_url(self.0), f)
    }
}

impl fmt::Display for RedactedUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_user_part_is_replaced() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db.internal:5432/laurel"),
            "postgres://app:***@db.internal:5432/laurel"
        );
    }

    #[test]
    fn a_password_query_parameter_is_replaced() {
        let redacted = redact_url("postgres://app@db/laurel?sslmode=require&password=s3cret");
        assert!(!redacted.contains("s3cret"), "{redacted}");
        assert!(redacted.contains("sslmode=require"), "{redacted}");
    }

    #[test]
    fn a_url_without_password_is_unchanged() {
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:5432/postgres"),
            "postgres://postgres@127.0.0.1:5432/postgres"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379/"),
            "redis://127.0.0.1:6379/"
        );
    }

    #[test]
    fn a_redis_password_without_user_is_replaced() {
        assert_eq!(
            redact_url("redis://:hunter2hunter2@cache:6379/0"),
            "redis://:***@cache:6379/0"
        );
    }

    #[test]
    fn text_that_is_not_a_url_is_hidden_whole() {
        assert_eq!(redact_url("host=db password=s3cret"), REDACTED);
    }
}
