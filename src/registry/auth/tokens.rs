//! Token values: scopes, secrets and their hashes, crate globs, lifetimes, and the request
//! for a new token. Nothing here reads or writes a file.
//!
//! Invariants: a secret is `pal_` + 64 hex digits from the OS random source and exists only
//! in the answer to its creation; only its SHA-256 is kept, compared in constant time.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{AuthError, TOKEN_PREFIX};
use crate::registry::names::canonical;
use crate::registry::publish::tarball::hex;

/// Random bytes per token.
pub(super) const TOKEN_BYTES: usize = 32;

/// Longest token lifetime: a hundred years, in seconds.
pub(super) const MAX_LIFETIME: u64 = 36_500 * 86_400;

/// A set of token scopes. crates.io's names (`publish-new`, `publish-update`, `yank`,
/// `change-owners`) plus `read`, which a private registry asks of every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(into = "Vec<String>", try_from = "Vec<String>")]
pub struct Scopes(u8);

impl Scopes {
    pub const NONE: Scopes = Scopes(0);
    pub const READ: Scopes = Scopes(1);
    pub const PUBLISH_NEW: Scopes = Scopes(2);
    pub const PUBLISH_UPDATE: Scopes = Scopes(4);
    pub const YANK: Scopes = Scopes(8);
    pub const CHANGE_OWNERS: Scopes = Scopes(16);
    pub const ALL: Scopes = Scopes(31);
    /// Every scope that changes something (all but `read`).
    pub const WRITE: Scopes = Scopes(30);
    const NAMES: [(Scopes, &'static str); 5] = [
        (Scopes::READ, "read"),
        (Scopes::PUBLISH_NEW, "publish-new"),
        (Scopes::PUBLISH_UPDATE, "publish-update"),
        (Scopes::YANK, "yank"),
        (Scopes::CHANGE_OWNERS, "change-owners"),
    ];

    /// One scope by name.
    pub fn parse(name: &str) -> Result<Scopes, AuthError> {
        Scopes::NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(s, _)| *s)
            .ok_or_else(|| {
                AuthError::Invalid(format!(
                    "unknown scope `{name}`; use read, publish-new, publish-update, yank or change-owners"
                ))
            })
    }

    pub fn contains(self, other: Scopes) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn intersects(self, other: Scopes) -> bool {
        self.0 & other.0 != 0
    }

    pub fn union(self, other: Scopes) -> Scopes {
        Scopes(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The names of the scopes in the set, in a fixed order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Scopes::NAMES
            .into_iter()
            .filter(move |(s, _)| self.contains(*s))
            .map(|(_, n)| n)
    }
}

impl std::fmt::Display for Scopes {
    /// `publish-new or publish-update`: used where one of the set is needed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.names().collect();
        f.write_str(&names.join(" or "))
    }
}

impl From<Scopes> for Vec<String> {
    fn from(s: Scopes) -> Vec<String> {
        s.names().map(str::to_owned).collect()
    }
}

impl TryFrom<Vec<String>> for Scopes {
    type Error = String;

    fn try_from(v: Vec<String>) -> Result<Scopes, String> {
        v.iter().try_fold(Scopes::NONE, |acc, n| {
            Scopes::parse(n)
                .map(|s| acc.union(s))
                .map_err(|e| e.to_string())
        })
    }
}

pub(super) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Compares two hashes in time independent of where they differ.
pub(super) fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Crate globs as crates.io takes them: a crate name, a prefix followed by `*`, or `*`.
pub fn validate_glob(glob: &str) -> Result<(), AuthError> {
    let stem = glob.strip_suffix('*').unwrap_or(glob);
    let ok = glob == "*"
        || (stem.len() <= crate::registry::names::MAX_NAME_LEN
            && stem.starts_with(|c: char| c.is_ascii_alphabetic())
            && stem
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    if !ok {
        return Err(AuthError::Invalid(format!(
            "invalid crate pattern `{glob}`: use a crate name, optionally ending in `*`, or `*`"
        )));
    }
    Ok(())
}

/// Whether `glob` covers `krate`, comparing canonical forms (`foo-*` covers `Foo_bar`).
pub fn glob_matches(glob: &str, krate: &str) -> bool {
    let krate = canonical(krate);
    match glob.strip_suffix('*') {
        Some(prefix) => krate.starts_with(&canonical(prefix)),
        None => krate == canonical(glob),
    }
}

/// A token lifetime: `90d`, `12h`, `30s`, or a bare number of days. In seconds.
pub fn parse_duration(text: &str) -> Result<u64, AuthError> {
    let bad = || {
        AuthError::Invalid(format!(
            "invalid duration `{text}`: use a number of days (`90` or `90d`), hours (`12h`) or \
             seconds (`30s`)"
        ))
    };
    let (digits, unit) = match text.char_indices().last() {
        Some((i, 'd')) => (&text[..i], 86_400),
        Some((i, 'h')) => (&text[..i], 3_600),
        Some((i, 's')) => (&text[..i], 1),
        _ => (text, 86_400),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let secs = n.checked_mul(unit).ok_or_else(bad)?;
    if secs == 0 || secs > MAX_LIFETIME {
        return Err(AuthError::Invalid(format!(
            "duration `{text}` must be longer than zero and at most 36500 days"
        )));
    }
    Ok(secs)
}

/// What a new token is made of besides its user and secret.
pub(super) struct TokenFields {
    pub(super) scopes: Scopes,
    pub(super) crates: Vec<String>,
    pub(super) created: u64,
    pub(super) expires: Option<u64>,
    pub(super) label: Option<String>,
}

/// What a new token may do.
#[derive(Debug, Clone, Default)]
pub struct NewToken {
    pub user: String,
    /// `None`: every scope.
    pub scopes: Option<Scopes>,
    /// Crate globs; empty: every crate.
    pub crates: Vec<String>,
    /// Lifetime in seconds; `None`: no expiry.
    pub expires_in: Option<u64>,
    pub label: Option<String>,
}

pub(super) fn new_secret() -> Result<String, AuthError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::getrandom(&mut bytes).map_err(AuthError::Random)?;
    Ok(format!("{TOKEN_PREFIX}{}", hex(&bytes)))
}
