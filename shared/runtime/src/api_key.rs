//! API keys and what each may do: the programmes it may act in and its
//! scopes (read, write, admin).
//!
//! `LAUREL_API_KEYS` is a comma-separated list of entries, each
//!
//! ```text
//! name:key:programmes:scopes
//! ```
//!
//! - `name` names the caller in logs and idempotency keys: 1 to 64 letters,
//!   digits, `-`, `_` or `.`;
//! - `key` is the secret: 16 or more characters, none of them `:`, `,` or
//!   white space;
//! - `programmes` is `*` (every programme) or programme ids joined by `|`,
//!   e.g. `brand-a|brand-b`;
//! - `scopes` is `*` (read, write and admin) or scopes joined by `|`, e.g.
//!   `read|write`. Scopes do not imply each other: a key that should read
//!   and write names both.
//!
//! The older two-field form `name:key` still parses and grants every
//! programme and every scope, as it did before keys were bound.
//!
//! Only a SHA-256 digest of each key is kept, and parse errors name the
//! entry by position, never by content, so no key reaches a log.

use std::{fmt, sync::Arc};

use sha2::{Digest, Sha256};

use crate::context::ProgramId;

/// What a call may need a key to grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Reading: Get, List, Lookup.
    Read,
    /// Changing state.
    Write,
    /// Operations on whole members or data sets: export, erase, merge.
    Admin,
}

impl Scope {
    /// The scope as written in `LAUREL_API_KEYS`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Self::Read => 1,
            Self::Write => 2,
            Self::Admin => 4,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// No scope at all.
    pub const NONE: Self = Self(0);
    /// Read, write and admin.
    pub const ALL: Self = Self(7);

    /// The set holding `scopes`.
    pub fn of(scopes: &[Scope]) -> Self {
        Self(scopes.iter().fold(0, |bits, s| bits | s.bit()))
    }

    /// Whether the set holds `scope`.
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Parses `*` or scopes joined by `|`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw == "*" {
            return Ok(Self::ALL);
        }
        let mut bits = 0;
        for part in raw.split('|') {
            bits |= match part {
                "read" => Scope::Read.bit(),
                "write" => Scope::Write.bit(),
                "admin" => Scope::Admin.bit(),
                other => {
                    return Err(format!(
                        "unknown scope {other:?}: use read, write, admin or *"
                    ));
                }
            };
        }
        Ok(Self(bits))
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = [Scope::Read, Scope::Write, Scope::Admin]
            .into_iter()
            .filter(|s| self.contains(*s))
            .map(Scope::as_str)
            .collect();
        write!(f, "{}", names.join("|"))
    }
}

/// The programmes a key may act in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Programmes {
    /// Every programme.
    Any,
    /// Only these.
    Only(Vec<ProgramId>),
}

impl Programmes {
    /// Parses `*` or programme ids joined by `|`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw == "*" {
            return Ok(Self::Any);
        }
        raw.split('|')
            .map(|p| ProgramId::parse(p).map_err(|reason| format!("programme {p:?} {reason}")))
            .collect::<Result<_, _>>()
            .map(Self::Only)
    }

    /// The allowed programme whose id is `raw`, if any; `None` for
    /// [`Programmes::Any`].
    pub fn find(&self, raw: &[u8]) -> Option<&ProgramId> {
        match self {
            Self::Any => None,
            Self::Only(ids) => ids.iter().find(|id| id.as_str().as_bytes() == raw),
        }
    }

    /// Whether the key may act in `program`.
    pub fn allows(&self, program: &ProgramId) -> bool {
        match self {
            Self::Any => true,
            Self::Only(ids) => ids.contains(program),
        }
    }
}

/// SHA-256 of a key: keys are looked up by digest, so comparing them takes
/// no time that depends on how many leading bytes match.
pub type KeyDigest = [u8; 32];

/// Digest of a presented or configured key.
pub fn digest(key: &[u8]) -> KeyDigest {
    Sha256::digest(key).into()
}

/// One configured API key. Its `Debug` output never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Who presents it.
    pub name: Arc<str>,
    /// Digest of the key itself.
    pub digest: KeyDigest,
    /// Where it may act.
    pub programmes: Programmes,
    /// What it may do.
    pub scopes: Scopes,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("key", &crate::secret::REDACTED)
            .field("programmes", &self.programmes)
            .field("scopes", &self.scopes)
            .finish()
    }
}

impl ApiKey {
    /// Checks and builds a key. Errors never quote `key`.
    pub fn new(
        name: &str,
        key: &str,
        programmes: Programmes,
        scopes: Scopes,
    ) -> Result<Self, String> {
        let name_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if name.is_empty() || name.len() > 64 || !name.chars().all(name_ok) {
            return Err("the name must be 1 to 64 letters, digits, '-', '_' or '.'".into());
        }
        if key.chars().count() < 16 {
            return Err("the key must have 16 or more characters".into());
        }
        if key
            .chars()
            .any(|c| c == ':' || c == ',' || c.is_whitespace())
        {
            return Err("the key must not hold ':', ',' or white space".into());
        }
        if scopes == Scopes::NONE {
            return Err("grant at least one scope".into());
        }
        Ok(Self {
            name: name.into(),
            digest: digest(key.as_bytes()),
            programmes,
            scopes,
        })
    }

    /// Parses one `name:key:programmes:scopes` (or legacy `name:key`) entry.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let fields: Vec<&str> = entry.split(':').collect();
        match fields[..] {
            [name, key] => Self::new(name, key, Programmes::Any, Scopes::ALL),
            [name, key, programmes, scopes] => Self::new(
                name,
                key,
                Programmes::parse(programmes)?,
                Scopes::parse(scopes)?,
            ),
            _ => Err("expected name:key:programmes:scopes".into()),
        }
    }

    /// Parses the whole `LAUREL_API_KEYS` value; an error names the entry by
    /// its position only.
    pub fn parse_list(raw: &str) -> Result<Vec<Self>, String> {
        let mut keys: Vec<Self> = Vec::new();
        for (index, entry) in raw
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let position = index + 1;
            let key = Self::parse(entry).map_err(|reason| format!("entry {position}: {reason}"))?;
            if keys.iter().any(|k| k.name == key.name) {
                return Err(format!("entry {position}: the name is used twice"));
            }
            if keys.iter().any(|k| k.digest == key.digest) {
                return Err(format!("entry {position}: the key is used twice"));
            }
            keys.push(key);
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef";

    #[test]
    fn a_bound_entry_names_its_programmes_and_scopes() {
        let key = ApiKey::parse(&format!("pos:{KEY}:brand-a|brand-b:read|write")).unwrap();
        assert_eq!(&*key.name, "pos");
        assert_eq!(key.digest, digest(KEY.as_bytes()));
        assert!(key.programmes.allows(&ProgramId::parse("brand-b").unwrap()));
        assert!(!key.programmes.allows(&ProgramId::parse("brand-c").unwrap()));
        assert!(key.scopes.contains(Scope::Write));
        assert!(!key.scopes.contains(Scope::Admin));
    }

    #[test]
    fn stars_grant_every_programme_and_scope() {
        let key = ApiKey::parse(&format!("ops:{KEY}:*:*")).unwrap();
        assert_eq!(key.programmes, Programmes::Any);
        assert_eq!(key.scopes, Scopes::ALL);
    }

    #[test]
    fn the_legacy_two_field_form_grants_everything() {
        let key = ApiKey::parse(&format!("pos:{KEY}")).unwrap();
        assert_eq!(key.programmes, Programmes::Any);
        assert_eq!(key.scopes, Scopes::ALL);
    }

    #[test]
    fn scopes_do_not_imply_each_other() {
        let admin = Scopes::parse("admin").unwrap();
        assert!(!admin.contains(Scope::Read));
    }

    #[test]
    fn entries_are_refused_with_their_position_and_without_the_key() {
        for (raw, why) in [
            ("pos:short", "16 or more"),
            (&format!("pos:{KEY}:brand-a"), "expected name:key"),
            (&format!("pos:{KEY}:Brand A:read"), "programme"),
            (&format!("pos:{KEY}:*:delete"), "unknown scope"),
            (&format!(":{KEY}:*:read"), "name"),
        ] {
            let list = format!("crm:fedcba9876543210, {raw}");
            let error = ApiKey::parse_list(&list).unwrap_err();
            assert!(error.starts_with("entry 2: "), "{error}");
            assert!(error.contains(why), "{error}");
            assert!(!error.contains(KEY), "{error}");
        }
    }

    #[test]
    fn a_key_or_name_used_twice_is_refused() {
        assert!(ApiKey::parse_list(&format!("a:{KEY}, b:{KEY}")).is_err());
        assert!(ApiKey::parse_list(&format!("a:{KEY}, a:fedcba9876543210")).is_err());
    }

    #[test]
    fn debug_output_hides_the_key() {
        let keys = ApiKey::parse_list(&format!("pos:{KEY}:brand-a:read")).unwrap();
        let shown = format!("{keys:?}");
        assert!(!shown.contains(KEY), "{shown}");
        assert!(shown.contains("pos") && shown.contains("read"), "{shown}");
    }
}
