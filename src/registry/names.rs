//! Crate names, versions and feature names: what the registry accepts, and the canonical form
//! used to detect collisions.
//!
//! The rules follow crates.io, which is stricter than cargo: ASCII only, a letter first,
//! at most 64 characters, and `Foo-Bar`, `foo_bar` and `FOO-BAR` name the same crate.

use std::fmt;

/// Longest crate name accepted (crates.io's limit).
pub const MAX_NAME_LEN: usize = 64;
/// Longest version string accepted (crates.io's limit).
pub const MAX_VERSION_LEN: usize = 150;

/// Names that would shadow toolchain crates or Windows device files. Compared canonically.
const RESERVED: &[&str] = &[
    "alloc",
    "arena",
    "ast",
    "builtins",
    "collections",
    "compiler-builtins",
    "compiler-rt",
    "compiletest",
    "core",
    "coretest",
    "debug",
    "driver",
    "flate",
    "fmt_macros",
    "grammar",
    "graphviz",
    "macro",
    "macros",
    "proc_macro",
    "rbml",
    "rust-installer",
    "rustbook",
    "rustc",
    "rustc_back",
    "rustc_borrowck",
    "rustc_driver",
    "rustc_llvm",
    "rustc_resolve",
    "rustc_trans",
    "rustc_typeck",
    "rustdoc",
    "rustllvm",
    "rustuv",
    "serialize",
    "std",
    "syntax",
    "test",
    "unicode",
];

const WINDOWS_DEVICES: &[&str] = &[
    "nul", "con", "prn", "aux", "com1", "com2", "com3", "com4", "com5", "com6", "com7", "com8",
    "com9", "lpt1", "lpt2", "lpt3", "lpt4", "lpt5", "lpt6", "lpt7", "lpt8", "lpt9",
];

/// Why a name was refused. The name is echoed shortened and escaped: it may come from a URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("crate name must not be empty")]
    Empty,
    #[error("crate name `{}` is longer than {MAX_NAME_LEN} characters", shown(.0))]
    TooLong(String),
    #[error("crate name `{}` must start with an ASCII letter", shown(.0))]
    BadStart(String),
    #[error("crate name `{}` may only contain ASCII letters, digits, `-` and `_`", shown(.0))]
    BadChar(String),
    #[error("crate name `{}` is reserved", shown(.0))]
    Reserved(String),
}

/// How much of a refused name or path an error message repeats.
const SHOWN_CHARS: usize = 80;

/// A client-supplied string made safe to repeat in a message: at most [`SHOWN_CHARS`]
/// characters (then `…`), control and non-ASCII characters escaped.
pub fn shown(text: &str) -> String {
    shown_at_most(text, SHOWN_CHARS)
}

/// [`shown`] with room for `max` characters (messages that quote longer things, such as a
/// path inside an archive). Everything but printable ASCII is escaped: control characters
/// and bidirectional overrides can neither rewrite a terminal nor a log line.
pub fn shown_at_most(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c.is_ascii_graphic() || c == ' ' {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
    }
    out
}

/// A crate name that passed `validate_name`. Every registry function that turns a name into
/// a path takes this type, and the only way to make one is [`CrateName::parse`]: no
/// unvalidated string (from a URL, a command line or a file) reaches the file system.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CrateName(String);

impl CrateName {
    pub fn parse(name: &str) -> Result<CrateName, NameError> {
        validate_name(name)?;
        Ok(CrateName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form collisions are detected in (see [`canonical`]).
    pub fn canonical(&self) -> String {
        canonical(&self.0)
    }
}

impl std::ops::Deref for CrateName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CrateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for CrateName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<CrateName, NameError> {
        CrateName::parse(s)
    }
}

/// The form two names are compared in: lowercase, `-` as `_`.
pub fn canonical(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '-' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Checks a crate name against the registry's rules.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    let first = name.chars().next().ok_or(NameError::Empty)?;
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.to_owned()));
    }
    if !first.is_ascii_alphabetic() {
        return Err(NameError::BadStart(name.to_owned()));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(NameError::BadChar(name.to_owned()));
    }
    let canon = canonical(name);
    let reserved = RESERVED.iter().any(|r| canonical(r) == canon)
        || WINDOWS_DEVICES.iter().any(|d| *d == canon);
    if reserved {
        return Err(NameError::Reserved(name.to_owned()));
    }
    Ok(())
}

/// A dependency's name may also start with `_` (a renamed dependency).
pub fn validate_dep_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    name.len() <= MAX_NAME_LEN && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Feature names: first an alphanumeric or `_`, then alphanumerics, `_`, `-`, `+` or `.`.
pub fn validate_feature_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_alphanumeric() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '+' | '.'))
}

/// Checks one value of a feature's list: `feat`, `dep:name`, `name/feat` or `name?/feat`.
pub fn validate_feature_value(value: &str) -> bool {
    if let Some(dep) = value.strip_prefix("dep:") {
        return validate_dep_name(dep);
    }
    match value.split_once('/') {
        Some((dep, feat)) => {
            let dep = dep.strip_suffix('?').unwrap_or(dep);
            validate_dep_name(dep) && validate_feature_name(feat)
        }
        None => validate_feature_name(value),
    }
}

/// A parsed version: its canonical text and the key that ignores build metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(pub semver::Version);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("version `{}` is longer than {MAX_VERSION_LEN} characters", shown(.0))]
    TooLong(String),
    #[error("version `{}` is not valid SemVer: {}", shown(.0), .1)]
    Invalid(String, String),
}

impl Version {
    pub fn parse(text: &str) -> Result<Version, VersionError> {
        if text.len() > MAX_VERSION_LEN {
            return Err(VersionError::TooLong(text.to_owned()));
        }
        semver::Version::parse(text)
            .map(Version)
            .map_err(|e| VersionError::Invalid(text.to_owned(), e.to_string()))
    }

    /// Two versions collide when they differ only in build metadata (`1.0.0+a` vs `1.0.0`).
    pub fn same_release(&self, other: &Version) -> bool {
        let (a, b) = (&self.0, &other.0);
        a.major == b.major && a.minor == b.minor && a.patch == b.patch && a.pre == b.pre
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        for n in ["a", "ab", "foo", "Foo-Bar", "foo_bar9", &"x".repeat(64)] {
            assert_eq!(validate_name(n), Ok(()), "{n}");
        }
    }

    #[test]
    fn invalid_names() {
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert!(matches!(
            validate_name(&"x".repeat(65)),
            Err(NameError::TooLong(_))
        ));
        assert!(matches!(
            validate_name("9lives"),
            Err(NameError::BadStart(_))
        ));
        assert!(matches!(validate_name("_foo"), Err(NameError::BadStart(_))));
        assert!(matches!(validate_name("-foo"), Err(NameError::BadStart(_))));
        assert!(matches!(validate_name("föö"), Err(NameError::BadChar(_))));
        assert!(matches!(
            validate_name("foo.bar"),
            Err(NameError::BadChar(_))
        ));
        assert!(matches!(
            validate_name("foo/bar"),
            Err(NameError::BadChar(_))
        ));
        assert!(matches!(
            validate_name("foo bar"),
            Err(NameError::BadChar(_))
        ));
    }

    #[test]
    fn reserved_names_are_canonical() {
        for n in [
            "std",
            "STD",
            "proc-macro",
            "Proc_Macro",
            "compiler_builtins",
            "nul",
            "COM1",
            "lpt9",
        ] {
            assert!(
                matches!(validate_name(n), Err(NameError::Reserved(_))),
                "{n}"
            );
        }
        assert_eq!(validate_name("stdx"), Ok(()));
        assert_eq!(validate_name("com10"), Ok(()));
    }

    #[test]
    fn crate_names_come_only_from_validation() {
        assert_eq!(CrateName::parse("Foo-Bar").unwrap().as_str(), "Foo-Bar");
        for bad in ["", "..", "../../etc", "a/b", "aéb", "a\0b", "std", "9x"] {
            assert!(CrateName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refused_names_are_echoed_bounded_and_escaped() {
        let long = format!("{}\n\x1b[31m", "x".repeat(10_000));
        let msg = validate_name(&long).unwrap_err().to_string();
        assert!(msg.len() < 200, "{msg}");
        let msg = validate_name("a\nb\u{1b}").unwrap_err().to_string();
        assert!(!msg.chars().any(char::is_control), "{msg:?}");
        assert!(msg.contains("a\\nb"), "{msg}");
    }

    #[test]
    fn canonical_collisions() {
        assert_eq!(canonical("Foo-Bar"), canonical("foo_bar"));
        assert_eq!(canonical("FOO-BAR"), canonical("foo-bar"));
        assert_ne!(canonical("foobar"), canonical("foo-bar"));
    }

    #[test]
    fn versions_collide_ignoring_build_metadata() {
        let v = |s| Version::parse(s).unwrap();
        assert!(v("1.0.0+meta").same_release(&v("1.0.0")));
        assert!(v("1.0.0+a").same_release(&v("1.0.0+b")));
        assert!(!v("1.0.0-alpha").same_release(&v("1.0.0")));
        assert!(!v("1.0.1").same_release(&v("1.0.0")));
        assert!(Version::parse("1.0").is_err());
        assert!(Version::parse(&format!("1.0.0-{}", "a".repeat(150))).is_err());
    }

    #[test]
    fn feature_values() {
        assert!(validate_feature_value("dep:abdep"));
        assert!(validate_feature_value("abdep?/x"));
        assert!(validate_feature_value("foo/fast"));
        assert!(validate_feature_value("std"));
        assert!(!validate_feature_value("dep:"));
        assert!(!validate_feature_value("a b"));
        assert!(!validate_feature_value("/x"));
    }
}
