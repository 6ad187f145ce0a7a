//! Access control data: users, API tokens and crate owners, kept in one file, `auth.json`,
//! at the registry root beside `palletizer.toml`: never inside the index repository, never
//! committed, readable only by the registry's owner.
//!
//! Invariants:
//! - a token's secret (`pal_` + 64 hex digits, 32 bytes from the OS random source) exists only
//!   in the answer to its creation; the file keeps its SHA-256;
//! - every change is a [`super::Command`]: it takes the registry lock, re-reads the file,
//!   changes it and writes it whole (temp file, fsync, rename), so the CLI and a running
//!   server never lose each other's edits;
//! - owners are recorded per canonical crate name (`Foo-Bar` = `foo_bar`); a crate with no
//!   recorded owners belongs to the admins; removing a user revokes their tokens and drops
//!   them from every owner list; deleting a crate keeps its owners (its name stays theirs)
//!   until an admin gives the name up.
//!
//! Two ways to read it: [`AuthFile`] is the whole file, read fresh by the CLI and by every
//! write (owner checks happen there, against current data); [`AuthView`] is the compact,
//! immutable token index the server checks each request against without a system call, and
//! reloads when [`Stamp`] says `auth.json` or `palletizer.toml` changed.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::command::{Actor, Command, Outcome};
use super::names::canonical;
use super::settings::{Access, Settings};
use super::tarball::hex;
use super::{git, write_atomic, Previous, Registry, SETTINGS_FILE};

/// The access control file, at the registry root.
pub const AUTH_FILE: &str = "auth.json";
/// What every token starts with, so a leaked one is recognizable (secret scanners, logs).
pub const TOKEN_PREFIX: &str = "pal_";
/// Random bytes per token.
const TOKEN_BYTES: usize = 32;
/// Longest user name.
pub const MAX_USER_LEN: usize = 64;
/// Longest token label.
pub const MAX_LABEL_LEN: usize = 200;
/// Most crate globs on one token.
pub const MAX_GLOBS: usize = 32;
/// Longest token lifetime: a hundred years, in seconds.
const MAX_LIFETIME: u64 = 36_500 * 86_400;
/// The file format this code writes; a newer one is refused rather than half understood.
const FORMAT: u32 = 1;
/// The largest `auth.json` read (and written): about 10,000 tokens. The server parses it on
/// its event loop when it changes, so its size bounds that pause.
pub const MAX_AUTH_FILE: u64 = 4 << 20;
/// The name the README gives this registry in cargo's configuration
/// (`[registries.palletizer]`), for the commands a refusal suggests: the server cannot know the
/// name each client chose.
pub const REGISTRY_NAME: &str = "palletizer";
/// The admin user zero-config start creates.
pub const FIRST_ADMIN: &str = "admin";

/// Everything that can go wrong reading or changing access control data.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Registry(#[from] super::Error),
    #[error("{path}: {msg}")]
    Corrupt { path: String, msg: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the OS random source failed: {0}")]
    Random(getrandom::Error),
    #[error(transparent)]
    Refused(#[from] Refusal),
}

/// Seconds since the Unix epoch, the clock every time in the file is on.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

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

/// A user: a name tokens and owner lists refer to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Stable number for cargo's owner list (`{"id":..,"login":..}`).
    pub id: u32,
    pub name: String,
    #[serde(default)]
    pub admin: bool,
    pub created: u64,
}

/// A token as stored: never the secret, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub id: u64,
    pub user: String,
    #[serde(with = "hex32")]
    pub sha256: [u8; 32],
    pub scopes: Scopes,
    /// crates.io-style crate globs (`foo`, `foo*`, `*`); empty: every crate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crates: Vec<String>,
    pub created: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<u64>,
    /// When it was revoked. Revoked tokens stay listed so a refusal can say why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<u64>,
}

/// Lowercase hex for the 32-byte hashes in the file.
mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::hex(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let bad = || serde::de::Error::custom("expected 64 hex digits");
        if s.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(s.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
                .map_err(|_| bad())?;
        }
        Ok(out)
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Compares two hashes in time independent of where they differ.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The whole access control file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthFile {
    format: u32,
    next_user_id: u32,
    next_token_id: u64,
    #[serde(default)]
    users: Vec<User>,
    #[serde(default)]
    tokens: Vec<Token>,
    /// Canonical crate name -> user names.
    #[serde(default)]
    owners: BTreeMap<String, Vec<String>>,
}

impl Default for AuthFile {
    fn default() -> AuthFile {
        AuthFile {
            format: FORMAT,
            next_user_id: 1,
            next_token_id: 1,
            users: Vec::new(),
            tokens: Vec::new(),
            owners: BTreeMap::new(),
        }
    }
}

/// Where the file lives for the registry whose settings are `settings`. Refused when the
/// index repository would contain it: recovery commits whatever is in the index's tree.
fn auth_path(root: &Path, settings: &Settings) -> Result<PathBuf, AuthError> {
    let index = root.join(&settings.index_dir);
    if let (Ok(index), Ok(root)) = (index.canonicalize(), root.canonicalize()) {
        if root.starts_with(&index) {
            return Err(AuthError::Invalid(format!(
                "the index repository {} contains the registry root; access control needs its \
                 file outside the index (set index-dir to a subdirectory)",
                index.display()
            )));
        }
    }
    Ok(root.join(AUTH_FILE))
}

/// Reads a file with the stamp of exactly the bytes read (`None` when it does not exist).
fn read_stamped(path: &Path) -> Result<Option<(String, FileStamp)>, AuthError> {
    let io_err = |source: io::Error| {
        AuthError::Registry(super::Error::Io {
            context: format!("reading {}", path.display()),
            source,
        })
    };
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    let meta = f.metadata().map_err(io_err)?;
    // The server parses this on its event loop: a file past the cap is refused, not read.
    if meta.len() > MAX_AUTH_FILE {
        return Err(AuthError::Corrupt {
            path: path.display().to_string(),
            msg: format!("larger than {MAX_AUTH_FILE} bytes"),
        });
    }
    let mut text = String::new();
    (&mut f)
        .take(MAX_AUTH_FILE + 1)
        .read_to_string(&mut text)
        .map_err(io_err)?;
    Ok(Some((text, FileStamp::of(&meta))))
}

fn parse_auth(path: &Path, text: &str) -> Result<AuthFile, AuthError> {
    let corrupt = |msg: String| AuthError::Corrupt {
        path: path.display().to_string(),
        msg,
    };
    let data: AuthFile = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
    if data.format > FORMAT {
        return Err(corrupt(format!(
            "written in format {} by a newer palletizer (this one knows format {FORMAT})",
            data.format
        )));
    }
    Ok(data)
}

impl AuthFile {
    /// Reads the registry's file as it is now (empty when there is none yet).
    pub fn load(reg: &Registry) -> Result<AuthFile, AuthError> {
        AuthFile::read(&auth_path(&reg.root, &reg.settings)?)
    }

    fn read(path: &Path) -> Result<AuthFile, AuthError> {
        match read_stamped(path)? {
            Some((text, _)) => parse_auth(path, &text),
            None => Ok(AuthFile::default()),
        }
    }

    fn write(&self, path: &Path) -> Result<(), AuthError> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("auth data serializes");
        bytes.push(b'\n');
        if bytes.len() as u64 > MAX_AUTH_FILE {
            return Err(AuthError::Invalid(format!(
                "access control data would pass {MAX_AUTH_FILE} bytes: revoke or remove \
                 old tokens first"
            )));
        }
        // Created 0600 before a byte is written, so no reader ever sees it otherwise: hashes
        // of 32 random bytes reveal nothing usable, but user names and owner lists are
        // nobody else's business, and nobody else may add a token hash.
        super::write_atomic_mode(path, &bytes, 0o600)?;
        Ok(())
    }

    pub fn users(&self) -> &[User] {
        &self.users
    }

    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// A user by name; names compare without regard to ASCII case.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users
            .iter()
            .find(|u| u.name.eq_ignore_ascii_case(name))
    }

    fn user_or_err(&self, name: &str) -> Result<&User, AuthError> {
        self.user(name).ok_or_else(|| {
            AuthError::NotFound(format!(
                "user `{}` does not exist",
                super::names::shown(name)
            ))
        })
    }

    /// The owners recorded for a crate (empty: the crate belongs to the admins).
    pub fn recorded_owners(&self, krate: &str) -> &[String] {
        self.owners
            .get(&canonical(krate))
            .map_or(&[], Vec::as_slice)
    }

    /// Who may manage a crate: its recorded owners, or the admins when none are recorded.
    pub fn effective_owners(&self, krate: &str) -> Vec<&User> {
        let recorded = self.recorded_owners(krate);
        if recorded.is_empty() {
            self.users.iter().filter(|u| u.admin).collect()
        } else {
            recorded.iter().filter_map(|n| self.user(n)).collect()
        }
    }

    fn is_owner(&self, user: &str, krate: &str) -> bool {
        self.recorded_owners(krate)
            .iter()
            .any(|o| o.eq_ignore_ascii_case(user))
    }
}

/// `auth.json` as read under the registry lock, to be changed and written back whole.
pub(crate) struct Edit {
    path: PathBuf,
    pub(crate) data: AuthFile,
    before: AuthFile,
}

impl Edit {
    /// Reads the current file (lock held).
    pub(crate) fn open(reg: &Registry) -> Result<Edit, AuthError> {
        let path = auth_path(&reg.root, &reg.settings)?;
        let data = AuthFile::read(&path)?;
        Ok(Edit {
            path,
            before: data.clone(),
            data,
        })
    }

    /// Writes the file if it changed (an unchanged file is not rewritten: every rewrite makes
    /// the server reload it).
    pub(crate) fn save(self) -> Result<(), AuthError> {
        if self.data != self.before {
            self.data.write(&self.path)?;
        }
        Ok(())
    }

    /// [`Edit::save`], keeping the previous file for a later step of the same command that
    /// may fail and must put it back (see [`Previous`]).
    pub(crate) fn save_keeping(self) -> Result<Option<Previous>, AuthError> {
        if self.data == self.before {
            return Ok(None);
        }
        let previous = Previous::keep(&self.path)?;
        match self.data.write(&self.path) {
            Ok(()) => Ok(Some(previous)),
            Err(e) => {
                let _ = previous.put_back();
                Err(e)
            }
        }
    }
}

/// Runs `f` on the current file and writes the result (lock held: see [`super::command`]).
pub(crate) fn edit<T>(
    reg: &Registry,
    f: impl FnOnce(&mut AuthFile) -> Result<T, AuthError>,
) -> Result<T, AuthError> {
    let mut e = Edit::open(reg)?;
    let out = f(&mut e.data)?;
    e.save()?;
    Ok(out)
}

/// Runs `cmd` as the administrator at the command line (the shorthands below).
fn as_admin(reg: &Registry, cmd: Command, now: u64) -> Result<Outcome, AuthError> {
    as_actor(reg, cmd, &Actor::cli(), now)
}

fn as_actor(reg: &Registry, cmd: Command, actor: &Actor, now: u64) -> Result<Outcome, AuthError> {
    reg.apply_at(cmd, actor, now).map(|a| a.outcome)
}

/// A shorthand met an outcome of another command: a bug in the shorthand.
fn unexpected(o: Outcome) -> ! {
    unreachable!("a command answered with the outcome of another: {o:?}")
}

/// User names: 1 to 64 ASCII letters, digits, `-` and `_`, starting with a letter or digit.
pub fn validate_user_name(name: &str) -> Result<(), AuthError> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let ok_start = name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > MAX_USER_LEN || !ok_chars || !ok_start {
        return Err(AuthError::Invalid(format!(
            "invalid user name `{}`: use 1 to {MAX_USER_LEN} ASCII letters, digits, `-` and \
             `_`, starting with a letter or digit",
            super::names::shown(name)
        )));
    }
    Ok(())
}

/// Crate globs as crates.io takes them: a crate name, a prefix followed by `*`, or `*`.
pub fn validate_glob(glob: &str) -> Result<(), AuthError> {
    let stem = glob.strip_suffix('*').unwrap_or(glob);
    let ok = glob == "*"
        || (stem.len() <= super::names::MAX_NAME_LEN
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

/// Adds a user ([`Command::AddUser`] as the administrator).
pub fn add_user(reg: &Registry, name: &str, admin: bool, now: u64) -> Result<User, AuthError> {
    let cmd = Command::AddUser {
        name: name.to_owned(),
        admin,
    };
    match as_admin(reg, cmd, now)? {
        Outcome::UserAdded(u) => Ok(u),
        o => unexpected(o),
    }
}

/// Removes a user ([`Command::RemoveUser`] as the administrator). Returns how many tokens
/// were revoked.
pub fn remove_user(reg: &Registry, name: &str, now: u64) -> Result<usize, AuthError> {
    let cmd = Command::RemoveUser {
        name: name.to_owned(),
    };
    match as_admin(reg, cmd, now)? {
        Outcome::UserRemoved { revoked } => Ok(revoked),
        o => unexpected(o),
    }
}

impl AuthFile {
    pub(crate) fn add_user(
        &mut self,
        name: &str,
        admin: bool,
        now: u64,
    ) -> Result<User, AuthError> {
        if let Some(u) = self.user(name) {
            return Err(AuthError::Conflict(format!(
                "user `{}` already exists",
                u.name
            )));
        }
        let user = User {
            id: self.next_user_id,
            name: name.to_owned(),
            admin,
            created: now,
        };
        self.next_user_id += 1;
        self.users.push(user.clone());
        Ok(user)
    }

    /// Removes a user: their tokens are revoked and they leave every owner list (a crate
    /// left with no owner belongs to the admins). Returns their name as stored and how many
    /// tokens were revoked.
    pub(crate) fn remove_user(
        &mut self,
        name: &str,
        now: u64,
    ) -> Result<(String, usize), AuthError> {
        let user = self.user_or_err(name)?.name.clone();
        self.users.retain(|u| u.name != user);
        let mut revoked = 0;
        for t in self.tokens.iter_mut().filter(|t| t.user == user) {
            if t.revoked.is_none() {
                t.revoked = Some(now);
                revoked += 1;
            }
        }
        for owners in self.owners.values_mut() {
            owners.retain(|o| *o != user);
        }
        self.owners.retain(|_, owners| !owners.is_empty());
        Ok((user, revoked))
    }

    /// Revokes a token. Returns it, and false when it already was revoked.
    pub(crate) fn revoke_token(&mut self, id: u64, now: u64) -> Result<(Token, bool), AuthError> {
        let t = self
            .tokens
            .iter_mut()
            .find(|t| t.id == id)
            .ok_or_else(|| AuthError::NotFound(format!("no token with id {id}")))?;
        let fresh = t.revoked.is_none();
        if fresh {
            t.revoked = Some(now);
        }
        Ok((t.clone(), fresh))
    }

    /// Records when tokens were last used; ids gone meanwhile are ignored.
    pub(crate) fn record_use(&mut self, uses: &[(u64, u64)]) {
        for &(id, at) in uses {
            if let Some(t) = self.tokens.iter_mut().find(|t| t.id == id) {
                t.last_used = Some(t.last_used.map_or(at, |old| old.max(at)));
            }
        }
    }

    /// Stores a new token for `user` (who must exist) with the hash of `secret`.
    fn add_token(
        &mut self,
        user: &str,
        secret: &str,
        fields: TokenFields,
    ) -> Result<Token, AuthError> {
        let user = self.user_or_err(user)?.name.clone();
        let token = Token {
            id: self.next_token_id,
            user,
            sha256: sha256(secret.as_bytes()),
            scopes: fields.scopes,
            crates: fields.crates,
            created: fields.created,
            expires: fields.expires,
            label: fields.label,
            last_used: None,
            revoked: None,
        };
        self.next_token_id += 1;
        self.tokens.push(token.clone());
        Ok(token)
    }
}

/// What a new token is made of besides its user and secret.
struct TokenFields {
    scopes: Scopes,
    crates: Vec<String>,
    created: u64,
    expires: Option<u64>,
    label: Option<String>,
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

fn new_secret() -> Result<String, AuthError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::getrandom(&mut bytes).map_err(AuthError::Random)?;
    Ok(format!("{TOKEN_PREFIX}{}", hex(&bytes)))
}

/// Creates a token ([`Command::CreateToken`] as the administrator). Returns what is stored
/// and the secret, which is never stored and must be shown to the user now.
pub fn create_token(reg: &Registry, req: NewToken, now: u64) -> Result<(Token, String), AuthError> {
    match as_admin(reg, Command::CreateToken(req), now)? {
        Outcome::TokenCreated { token, secret } => Ok((token, secret)),
        o => unexpected(o),
    }
}

/// [`Command::CreateToken`], lock held.
pub(crate) fn create_token_in(
    reg: &Registry,
    req: NewToken,
    now: u64,
) -> Result<(Token, String), AuthError> {
    let scopes = req.scopes.unwrap_or(Scopes::ALL);
    if scopes.is_empty() {
        return Err(AuthError::Invalid(
            "a token needs at least one scope".into(),
        ));
    }
    if req.crates.len() > MAX_GLOBS {
        return Err(AuthError::Invalid(format!(
            "a token takes at most {MAX_GLOBS} crate patterns"
        )));
    }
    for g in &req.crates {
        validate_glob(g)?;
    }
    if let Some(label) = &req.label {
        if label.len() > MAX_LABEL_LEN || label.chars().any(char::is_control) {
            return Err(AuthError::Invalid(format!(
                "a label is at most {MAX_LABEL_LEN} bytes of printable text"
            )));
        }
    }
    let expires = match req.expires_in {
        Some(0) => return Err(AuthError::Invalid("a token cannot expire at once".into())),
        Some(secs) => Some(now.saturating_add(secs)),
        None => None,
    };
    let secret = new_secret()?;
    let fields = TokenFields {
        scopes,
        crates: req.crates,
        created: now,
        expires,
        label: req.label,
    };
    let token = edit(reg, |data| data.add_token(&req.user, &secret, fields))?;
    Ok((token, secret))
}

/// Revokes a token ([`Command::RevokeToken`] as the administrator). Returns it, and false
/// when it already was revoked.
pub fn revoke_token(reg: &Registry, id: u64, now: u64) -> Result<(Token, bool), AuthError> {
    match as_admin(reg, Command::RevokeToken { id }, now)? {
        Outcome::TokenRevoked { token, fresh } => Ok((token, fresh)),
        o => unexpected(o),
    }
}

/// Records when tokens were last used: `(token id, unix seconds)`. The server gathers these
/// in memory and hands them over now and then ([`Command::RecordTokenUse`]).
pub fn record_last_used(reg: &Registry, uses: &[(u64, u64)]) -> Result<(), AuthError> {
    if uses.is_empty() {
        return Ok(());
    }
    as_actor(
        reg,
        Command::RecordTokenUse(uses.to_vec()),
        &Actor::Server,
        now(),
    )
    .map(drop)
}

/// Zero-config start: when the registry has no user yet, creates the admin user `admin` and
/// one token with every scope, and returns its secret (to print once). `None` when users
/// exist already ([`Command::FirstAdmin`]).
pub fn bootstrap_admin(reg: &Registry, now: u64) -> Result<Option<String>, AuthError> {
    match as_actor(reg, Command::FirstAdmin, &Actor::Server, now)? {
        Outcome::FirstAdmin { secret } => Ok(secret),
        o => unexpected(o),
    }
}

/// [`Command::FirstAdmin`], lock held: the user, the token and its secret.
pub(crate) fn first_admin_in(
    reg: &Registry,
    now: u64,
) -> Result<Option<(User, Token, String)>, AuthError> {
    let secret = new_secret()?;
    edit(reg, |data| {
        if !data.users.is_empty() {
            return Ok(None);
        }
        let user = data.add_user(FIRST_ADMIN, true, now)?;
        let fields = TokenFields {
            scopes: Scopes::ALL,
            crates: Vec::new(),
            created: now,
            expires: None,
            label: Some("created at first start".into()),
        };
        let token = data.add_token(FIRST_ADMIN, &secret, fields)?;
        Ok(Some((user, token, secret)))
    })
}

/// The spelling of a published crate, or NotFound.
fn existing_crate(reg: &Registry, krate: &str) -> Result<String, AuthError> {
    let name =
        crate::registry::CrateName::parse(krate).map_err(|e| AuthError::NotFound(e.to_string()))?;
    reg.find_canonical(&name)?
        .ok_or_else(|| AuthError::NotFound(format!("crate `{krate}` does not exist")))
}

/// The users who manage a published crate (its owners, or the admins when none are recorded).
pub fn list_owners(reg: &Registry, krate: &str) -> Result<Vec<User>, AuthError> {
    existing_crate(reg, krate)?;
    owners_of_published(reg, krate)
}

/// [`list_owners`] for a crate the caller has just read from the index (a crate page), so
/// without looking for its spelling in the index directories again.
pub fn owners_of_published(reg: &Registry, krate: &str) -> Result<Vec<User>, AuthError> {
    let data = AuthFile::load(reg)?;
    Ok(data.effective_owners(krate).into_iter().cloned().collect())
}

/// Checks that `by` (a token holder; `None`: an actor the checks do not apply to) may
/// change the owners of `krate`.
fn may_change_owners(data: &AuthFile, by: Option<&Principal>, krate: &str) -> Result<(), Refusal> {
    let Some(p) = by else { return Ok(()) };
    p.check_scope(Scopes::CHANGE_OWNERS, Some(krate))?;
    authorize_owner(data, p, krate)
}

/// [`Command::AddOwners`] (`add`) or [`Command::RemoveOwners`] on a published crate, lock
/// held, once `by` is allowed to. Returns the crate's spelling, the message cargo prints and
/// the users added or removed.
pub(crate) fn change_owners(
    reg: &Registry,
    krate: &str,
    users: &[String],
    by: Option<&Principal>,
    add: bool,
) -> Result<(String, String, Vec<String>), AuthError> {
    let real = existing_crate(reg, krate)?;
    if users.is_empty() {
        return Err(AuthError::Invalid("name at least one user".into()));
    }
    edit(reg, |data| {
        may_change_owners(data, by, &real)?;
        let (msg, changed) = if add {
            data.add_owners(&real, users)?
        } else {
            data.remove_owners(&real, users)?
        };
        Ok((real, msg, changed))
    })
}

impl AuthFile {
    fn add_owners(
        &mut self,
        real: &str,
        users: &[String],
    ) -> Result<(String, Vec<String>), AuthError> {
        let mut added = Vec::new();
        for name in users {
            let user = self.user_or_err(name)?.name.clone();
            if added.contains(&user) {
                return Err(AuthError::Invalid(format!("`{user}` is named twice")));
            }
            if self.is_owner(&user, real) {
                return Err(AuthError::Conflict(format!(
                    "`{user}` is already an owner of `{real}`"
                )));
            }
            added.push(user);
        }
        let msg = format!(
            "user {} has been added as an owner of crate {real}",
            added.join(", ")
        );
        self.owners
            .entry(canonical(real))
            .or_default()
            .extend(added.iter().cloned());
        Ok((msg, added))
    }

    /// At least one recorded owner must remain.
    fn remove_owners(
        &mut self,
        real: &str,
        users: &[String],
    ) -> Result<(String, Vec<String>), AuthError> {
        let key = canonical(real);
        let mut owners = self.owners.get(&key).cloned().unwrap_or_default();
        let mut removed = Vec::new();
        for name in users {
            let before = owners.len();
            owners.retain(|o| {
                let gone = o.eq_ignore_ascii_case(name);
                if gone {
                    removed.push(o.clone());
                }
                !gone
            });
            if owners.len() == before {
                return Err(AuthError::NotFound(format!(
                    "`{}` is not an owner of `{real}`",
                    super::names::shown(name)
                )));
            }
        }
        if owners.is_empty() {
            return Err(AuthError::Invalid(format!(
                "cannot remove every owner of `{real}`; add another owner first"
            )));
        }
        self.owners.insert(key, owners);
        Ok((
            format!("owners successfully removed from crate {real}"),
            removed,
        ))
    }

    /// A new crate's publisher becomes its only owner.
    pub(crate) fn set_first_owner(&mut self, krate: &str, user: &str) -> Result<String, AuthError> {
        let user = self.user_or_err(user)?.name.clone();
        self.owners.insert(canonical(krate), vec![user.clone()]);
        Ok(user)
    }

    /// Forgets a crate's recorded owners (a name given up). Returns them.
    pub(crate) fn forget_owners(&mut self, krate: &str) -> Vec<String> {
        self.owners.remove(&canonical(krate)).unwrap_or_default()
    }
}

/// Adds owners to a published crate ([`Command::AddOwners`]; `by: None` as the
/// administrator). Returns the message cargo prints.
pub fn add_owners(
    reg: &Registry,
    krate: &str,
    users: &[String],
    by: Option<&Principal>,
) -> Result<String, AuthError> {
    let cmd = Command::AddOwners {
        krate: krate.to_owned(),
        users: users.to_vec(),
    };
    owners_shorthand(reg, cmd, by)
}

/// Removes owners from a published crate ([`Command::RemoveOwners`]); at least one recorded
/// owner must remain. Returns the message for cargo.
pub fn remove_owners(
    reg: &Registry,
    krate: &str,
    users: &[String],
    by: Option<&Principal>,
) -> Result<String, AuthError> {
    let cmd = Command::RemoveOwners {
        krate: krate.to_owned(),
        users: users.to_vec(),
    };
    owners_shorthand(reg, cmd, by)
}

fn owners_shorthand(
    reg: &Registry,
    cmd: Command,
    by: Option<&Principal>,
) -> Result<String, AuthError> {
    let actor = by.map_or_else(Actor::cli, |p| Actor::Token(p.clone()));
    match as_actor(reg, cmd, &actor, now())? {
        Outcome::OwnersChanged { msg } => Ok(msg),
        o => unexpected(o),
    }
}

/// Checks that `p` may act as an owner of `krate` (yank, unyank, change owners, publish a
/// new version), against current data: a recorded owner, or an admin.
pub fn authorize_owner(data: &AuthFile, p: &Principal, krate: &str) -> Result<(), Refusal> {
    let user = still_valid(data, p, now())?;
    if user.admin || data.is_owner(&user.name, krate) {
        return Ok(());
    }
    Err(Refusal::NotOwner {
        user: user.name.clone(),
        krate: krate.to_owned(),
    })
}

/// What a crate name is, for a publish under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameState {
    /// Never published, or given up: the publisher becomes its owner.
    Free,
    /// Has versions in the index.
    Published,
    /// Every version was deleted, and the name stays with the crate's owners (or with the
    /// admins, when none are recorded).
    Kept,
}

/// The publish check, once the crate's name is known: a new crate needs `publish-new`; a
/// new version of an existing one needs `publish-update` and ownership; a deleted crate's
/// kept name either scope, and ownership.
pub fn authorize_publish(
    data: &AuthFile,
    p: &Principal,
    krate: &str,
    state: NameState,
) -> Result<(), Refusal> {
    match state {
        NameState::Published => {
            p.check_scope(Scopes::PUBLISH_UPDATE, Some(krate))?;
            authorize_owner(data, p, krate)
        }
        NameState::Kept => {
            p.check_scope(
                Scopes::PUBLISH_NEW.union(Scopes::PUBLISH_UPDATE),
                Some(krate),
            )?;
            authorize_owner(data, p, krate).map_err(|r| match r {
                Refusal::NotOwner { user, krate } => Refusal::NameKept { user, krate },
                r => r,
            })
        }
        NameState::Free => {
            p.check_scope(Scopes::PUBLISH_NEW, Some(krate))?;
            still_valid(data, p, now()).map(drop)
        }
    }
}

/// Checks that `p` is an admin, against current data.
pub fn authorize_admin(data: &AuthFile, p: &Principal) -> Result<(), Refusal> {
    let user = still_valid(data, p, now())?;
    if user.admin {
        return Ok(());
    }
    Err(Refusal::NotAdmin {
        user: user.name.clone(),
    })
}

/// Checks again, against the current file, what the server's view checked when the request
/// arrived: an upload can take longer than a revocation takes to reach the view, and a job
/// can wait behind others. The token must still exist, unrevoked and unexpired, and its user
/// too (removing a user revokes their tokens). Returns the user.
fn still_valid<'a>(data: &'a AuthFile, p: &Principal, now: u64) -> Result<&'a User, Refusal> {
    let token = data.tokens.iter().find(|t| t.id == p.token);
    match token {
        None => return Err(Refusal::Revoked { token: p.token }),
        Some(t) if t.revoked.is_some() => return Err(Refusal::Revoked { token: p.token }),
        Some(t) if t.expires.is_some_and(|e| e <= now) => {
            return Err(Refusal::Expired { token: p.token })
        }
        Some(_) => {}
    }
    data.user(&p.user)
        .ok_or(Refusal::Revoked { token: p.token })
}

/// Sets the access mode ([`Command::SetAccess`] as the administrator). Returns the new
/// settings.
pub fn set_access(reg: &Registry, access: Access) -> Result<Settings, AuthError> {
    match as_admin(reg, Command::SetAccess(access), now())? {
        Outcome::AccessSet(settings) => Ok(settings),
        o => unexpected(o),
    }
}

/// `palletizer.toml` as it is on disk now (the registry's copy is that of its opening).
fn current_settings(reg: &Registry) -> Result<Settings, AuthError> {
    let path = reg.root.join(SETTINGS_FILE);
    let text = fs::read_to_string(&path).map_err(|source| super::Error::Io {
        context: format!("reading {}", path.display()),
        source,
    })?;
    Ok(Settings::parse(&text)
        .map_err(|e| super::Error::Settings(format!("{}: {e}", path.display())))?)
}

/// [`Command::SetAccess`], lock held: `palletizer.toml` first (it is the truth), then
/// `config.json`, committed. Returns the new settings and whether anything changed.
pub(crate) fn set_access_locked(
    reg: &Registry,
    access: Access,
) -> Result<(Settings, bool), AuthError> {
    let mut settings = current_settings(reg)?;
    if access != Access::Open {
        auth_path(&reg.root, &settings)?;
    }
    let changed = settings.access != access;
    if changed {
        settings.access = access;
        write_atomic(&reg.root.join(SETTINGS_FILE), settings.to_toml().as_bytes())?;
    }
    let config = write_config_json(reg, &settings)?;
    Ok((settings, changed || config))
}

/// Rewrites and commits `config.json` when it disagrees with `palletizer.toml` (after a crash
/// between the two writes of [`set_access`], or a hand edit; [`Command::SyncAccess`]).
/// Returns whether it changed.
pub fn sync_config_json(reg: &Registry) -> Result<bool, AuthError> {
    match as_actor(reg, Command::SyncAccess, &Actor::Server, now())? {
        Outcome::AccessSynced { changed } => Ok(changed),
        o => unexpected(o),
    }
}

/// [`Command::SyncAccess`], lock held: the settings, and whether `config.json` changed.
pub(crate) fn sync_config_json_locked(reg: &Registry) -> Result<(Settings, bool), AuthError> {
    let settings = current_settings(reg)?;
    let changed = write_config_json(reg, &settings)?;
    Ok((settings, changed))
}

/// Lock held. Writes `config.json` from `settings` if it differs, and commits it.
fn write_config_json(reg: &Registry, settings: &Settings) -> Result<bool, AuthError> {
    let path = reg.index_dir.join("config.json");
    let want = settings.config_json();
    let changed = fs::read(&path).ok().as_deref() != Some(want.as_bytes());
    if changed {
        write_atomic(&path, want.as_bytes())?;
    }
    let message = format!("Set access to {}", settings.access);
    let committed = git::commit_paths(&reg.index_dir, &["config.json"], &message)
        .map_err(super::Error::from)?;
    Ok(changed || committed)
}

/// Why a request was refused. The server logs it (never the token) and answers 401 for the
/// first four, 403 for the rest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no token")]
    NoToken,
    #[error("unknown token")]
    Unknown,
    #[error("token {token} expired")]
    Expired { token: u64 },
    #[error("token {token} was revoked")]
    Revoked { token: u64 },
    #[error("token {token} lacks the {needed} scope")]
    Scope { token: u64, needed: Scopes },
    #[error("token {token} is not valid for crate `{krate}`")]
    CrateScope { token: u64, krate: String },
    #[error("user `{user}` is not an owner of `{krate}`")]
    NotOwner { user: String, krate: String },
    #[error("user `{user}` is not an owner of the deleted crate `{krate}`, whose name is kept")]
    NameKept { user: String, krate: String },
    #[error("user `{user}` is not an admin")]
    NotAdmin { user: String },
}

impl Refusal {
    /// A short fixed word for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NoToken => "no token",
            Refusal::Unknown => "unknown",
            Refusal::Expired { .. } => "expired",
            Refusal::Revoked { .. } => "revoked",
            Refusal::Scope { .. } => "scope",
            Refusal::CrateScope { .. } => "crate scope",
            Refusal::NotOwner { .. } => "not an owner",
            Refusal::NameKept { .. } => "name kept",
            Refusal::NotAdmin { .. } => "not an admin",
        }
    }

    /// True when the credentials are missing or no good (401), false when they are good but
    /// not enough (403).
    pub fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            Refusal::NoToken | Refusal::Unknown | Refusal::Expired { .. } | Refusal::Revoked { .. }
        )
    }

    /// What the client is told. Unknown and revoked tokens read the same.
    pub fn detail(&self) -> String {
        match self {
            Refusal::NoToken => "this request needs a token: create one with `palletizer token \
                                 create` and run `cargo login`"
                .into(),
            Refusal::Unknown | Refusal::Revoked { .. } => {
                "the token is not valid: it is unknown to this registry or was revoked".into()
            }
            Refusal::Expired { .. } => "the token has expired; ask for a new one".into(),
            Refusal::Scope { needed, .. } => {
                format!("this token does not have the `{needed}` scope needed here")
            }
            Refusal::CrateScope { krate, .. } => {
                format!("this token is not valid for crate `{krate}`")
            }
            Refusal::NotOwner { user, krate } => format!(
                "user `{user}` is not an owner of crate `{krate}`; an owner can add them with \
                 `cargo owner --registry {REGISTRY_NAME} --add {user} {krate}` (`{REGISTRY_NAME}` \
                 being this registry's name in their cargo config)"
            ),
            Refusal::NameKept { user, krate } => format!(
                "crate `{krate}` was deleted and its name stays with its owners: user `{user}` \
                 is not one of them, so only they or an admin may publish it again (an admin \
                 can give the name up with `palletizer delete {krate} --release-name`)"
            ),
            Refusal::NotAdmin { user } => format!("user `{user}` is not an admin"),
        }
    }
}

/// What a request needs besides a valid token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The `read` scope (private registries).
    Read,
    /// `publish-new` or `publish-update`; which one is decided with [`authorize_publish`]
    /// once the crate's name and existence are known.
    Publish,
    Yank,
    ChangeOwners,
    /// An admin user, whatever the scopes.
    Admin,
}

impl Need {
    /// The scopes of which the token needs at least one.
    pub fn scopes(self) -> Scopes {
        match self {
            Need::Read => Scopes::READ,
            Need::Publish => Scopes::PUBLISH_NEW.union(Scopes::PUBLISH_UPDATE),
            Need::Yank => Scopes::YANK,
            Need::ChangeOwners => Scopes::CHANGE_OWNERS,
            Need::Admin => Scopes::NONE,
        }
    }
}

/// Who a token belongs to and what it may do, as the server's view saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token: u64,
    pub user: Arc<str>,
    pub admin: bool,
    pub scopes: Scopes,
    /// `None`: every crate.
    pub crates: Option<Arc<[Box<str>]>>,
}

impl Principal {
    /// Checks that the token has one of `needed` and, for a crate, covers it.
    pub fn check_scope(&self, needed: Scopes, krate: Option<&str>) -> Result<(), Refusal> {
        if !needed.is_empty() && !self.scopes.intersects(needed) {
            return Err(Refusal::Scope {
                token: self.token,
                needed,
            });
        }
        if let (Some(globs), Some(krate)) = (&self.crates, krate) {
            if !globs.iter().any(|g| glob_matches(g, krate)) {
                return Err(Refusal::CrateScope {
                    token: self.token,
                    krate: krate.to_owned(),
                });
            }
        }
        Ok(())
    }
}

/// The identity of one file's contents as `stat` tells it. Writers replace files by rename,
/// so the inode changes with every write; length and times catch the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(m: &fs::Metadata) -> FileStamp {
        FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    fn read(path: &Path) -> Option<FileStamp> {
        fs::metadata(path).ok().map(|m| FileStamp::of(&m))
    }
}

/// What the server compares, at most once a second, to know whether to reload its view:
/// `auth.json` (users, tokens) and `palletizer.toml` (the access mode). Two `stat` calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    auth: Option<FileStamp>,
    settings: Option<FileStamp>,
}

impl Stamp {
    /// The stamp of the files in `root` now.
    pub fn current(root: &Path) -> Stamp {
        Stamp {
            auth: FileStamp::read(&root.join(AUTH_FILE)),
            settings: FileStamp::read(&root.join(SETTINGS_FILE)),
        }
    }
}

/// Hashes a SHA-256 output by its first 8 bytes: the keys are already uniformly random, and
/// only stored tokens (random, never chosen by a client) are inserted.
#[derive(Default)]
struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().take(8) {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Debug)]
struct ViewUser {
    name: Arc<str>,
    admin: bool,
}

#[derive(Debug)]
struct ViewToken {
    sha256: [u8; 32],
    id: u64,
    /// 0: never.
    expires: u64,
    user: u32,
    scopes: Scopes,
    revoked: bool,
    crates: Option<Arc<[Box<str>]>>,
}

/// The server's immutable token index: what [`AuthView::authorize`] needs and nothing more
/// (no labels, no times but expiry, no owners: owner checks read [`AuthFile`] on the worker).
/// Built from the files; replaced whole when [`Stamp::current`] differs from [`Self::stamp`].
#[derive(Debug)]
pub struct AuthView {
    access: Access,
    stamp: Stamp,
    users: Vec<ViewUser>,
    tokens: Vec<ViewToken>,
    /// First 8 bytes of a token hash -> index in `tokens`.
    by_prefix: HashMap<u64, u32, BuildHasherDefault<PrefixHasher>>,
    /// Tokens whose prefix another token took first (practically never).
    collided: Vec<u32>,
}

fn prefix(hash: &[u8; 32]) -> u64 {
    u64::from_be_bytes(hash[..8].try_into().expect("8 bytes"))
}

impl AuthView {
    /// Reads `palletizer.toml` and `auth.json` in `root`. The stamp is that of the bytes read,
    /// so a write racing the load shows up as a changed stamp at the next poll.
    pub fn load(root: &Path) -> Result<AuthView, AuthError> {
        let settings_path = root.join(SETTINGS_FILE);
        let Some((text, settings_stamp)) = read_stamped(&settings_path)? else {
            return Err(super::Error::NotFound(format!(
                "no registry in {} (no {SETTINGS_FILE})",
                root.display()
            ))
            .into());
        };
        let settings = Settings::parse(&text)
            .map_err(|e| super::Error::Settings(format!("{}: {e}", settings_path.display())))?;
        let path = auth_path(root, &settings)?;
        let (data, auth_stamp) = match read_stamped(&path)? {
            Some((text, stamp)) => (parse_auth(&path, &text)?, Some(stamp)),
            None => (AuthFile::default(), None),
        };
        let mut view = AuthView::new(settings.access, &data);
        view.stamp = Stamp {
            auth: auth_stamp,
            settings: Some(settings_stamp),
        };
        Ok(view)
    }

    /// A view of `data` under `access`, with no file stamp (tests, and callers that just
    /// wrote the file and reload anyway at the next poll).
    pub fn new(access: Access, data: &AuthFile) -> AuthView {
        let users: Vec<ViewUser> = data
            .users
            .iter()
            .map(|u| ViewUser {
                name: u.name.as_str().into(),
                admin: u.admin,
            })
            .collect();
        let mut tokens = Vec::with_capacity(data.tokens.len());
        let mut by_prefix =
            HashMap::with_capacity_and_hasher(data.tokens.len(), Default::default());
        let mut collided = Vec::new();
        let user_index: HashMap<&str, usize> = data
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.name.as_str(), i))
            .collect();
        for t in &data.tokens {
            // A token whose user is gone counts as revoked (removal revokes; this covers a
            // hand-edited file too).
            let user = user_index.get(t.user.as_str()).copied();
            let crates = (!t.crates.is_empty())
                .then(|| t.crates.iter().map(|g| g.as_str().into()).collect());
            let i = tokens.len() as u32;
            tokens.push(ViewToken {
                sha256: t.sha256,
                id: t.id,
                expires: t.expires.unwrap_or(0),
                user: user.unwrap_or(0) as u32,
                scopes: t.scopes,
                revoked: t.revoked.is_some() || user.is_none(),
                crates,
            });
            match by_prefix.entry(prefix(&t.sha256)) {
                Entry::Vacant(v) => {
                    v.insert(i);
                }
                Entry::Occupied(_) => collided.push(i),
            }
        }
        AuthView {
            access,
            stamp: Stamp {
                auth: None,
                settings: None,
            },
            users,
            tokens,
            by_prefix,
            collided,
        }
    }

    pub fn access(&self) -> Access {
        self.access
    }

    pub fn stamp(&self) -> Stamp {
        self.stamp
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    fn find(&self, hash: &[u8; 32]) -> Option<&ViewToken> {
        // The same work whether or not the prefix is known: one lookup, one full compare.
        let candidate = self
            .by_prefix
            .get(&prefix(hash))
            .map(|&i| &self.tokens[i as usize]);
        let decoy = [0u8; 32];
        let stored = candidate.map_or(&decoy, |t| &t.sha256);
        if ct_eq(stored, hash) {
            return candidate;
        }
        self.collided
            .iter()
            .map(|&i| &self.tokens[i as usize])
            .find(|t| ct_eq(&t.sha256, hash))
    }

    /// Checks a token (as extracted from the request by the HTTP layer) for `need`, on
    /// `krate` when the route names one. No system call: `now` is the caller's clock.
    pub fn authorize(
        &self,
        token: Option<&str>,
        need: Need,
        krate: Option<&str>,
        now: u64,
    ) -> Result<Principal, Refusal> {
        let Some(token) = token else {
            return Err(Refusal::NoToken);
        };
        // Every presented string is hashed and looked up, well-formed or not, so a wrong
        // token and an unknown one take the same path.
        let hash = sha256(token.as_bytes());
        let t = self.find(&hash).ok_or(Refusal::Unknown)?;
        if t.revoked {
            return Err(Refusal::Revoked { token: t.id });
        }
        if t.expires != 0 && t.expires <= now {
            return Err(Refusal::Expired { token: t.id });
        }
        let user = &self.users[t.user as usize];
        let p = Principal {
            token: t.id,
            user: user.name.clone(),
            admin: user.admin,
            scopes: t.scopes,
            crates: t.crates.clone(),
        };
        if need == Need::Admin && !p.admin {
            return Err(Refusal::NotAdmin {
                user: p.user.to_string(),
            });
        }
        // Crate patterns limit writes only: reading an index file or a download never
        // depends on which crate a token was made for.
        let krate = if need == Need::Read { None } else { krate };
        p.check_scope(need.scopes(), krate)?;
        Ok(p)
    }
}

/// A fresh registry in a temp dir, for tests here and in the HTTP and CLI layers.
#[cfg(test)]
pub(crate) fn scratch_registry() -> (tempfile::TempDir, Registry) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let opts = super::InitOptions {
        url: "http://127.0.0.1:1".into(),
        index_dir: None,
        crates_dir: None,
        crates_io: true,
        allowed_registries: Vec::new(),
    };
    let reg = Registry::init(&tmp.path().join("reg"), opts).expect("init");
    (tmp, reg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::tarball::testing::simple_crate;

    const T0: u64 = 1_800_000_000;

    fn registry() -> (tempfile::TempDir, Registry) {
        scratch_registry()
    }

    fn publish(reg: &Registry, name: &str) {
        reg.publish(None, &simple_crate(name, "1.0.0", &[])[..])
            .unwrap();
    }

    /// Publishes `name` 1.0.0 as the token holder `p`, through the server's path.
    fn publish_as(reg: &Registry, name: &str, p: &Principal) {
        let checked = reg
            .check_upload(None, &simple_crate(name, "1.0.0", &[])[..])
            .unwrap();
        reg.apply(Command::Publish(checked), &Actor::Token(p.clone()))
            .unwrap();
    }

    fn token(reg: &Registry, user: &str, scopes: Option<Scopes>, crates: &[&str]) -> String {
        let req = NewToken {
            user: user.into(),
            scopes,
            crates: crates.iter().map(|s| s.to_string()).collect(),
            ..NewToken::default()
        };
        create_token(reg, req, T0).unwrap().1
    }

    fn view(reg: &Registry) -> AuthView {
        AuthView::load(reg.root()).unwrap()
    }

    #[test]
    fn user_names_follow_one_rule() {
        for ok in ["a", "alice", "Bob-2", "9lives", "x_y", &"a".repeat(64)] {
            validate_user_name(ok).unwrap();
        }
        for bad in ["", "-a", "_a", "a b", "ä", "a/b", "a.b", &"a".repeat(65)] {
            let e = validate_user_name(bad).unwrap_err().to_string();
            assert!(e.contains("ASCII letters, digits"), "{bad}: {e}");
        }
    }

    #[test]
    fn users_are_added_listed_and_removed() {
        let (_t, reg) = registry();
        add_user(&reg, "alice", true, T0).unwrap();
        let bob = add_user(&reg, "bob", false, T0).unwrap();
        assert_eq!(bob.id, 2);
        let e = add_user(&reg, "ALICE", false, T0).unwrap_err();
        assert!(matches!(e, AuthError::Conflict(_)), "{e}");
        let data = AuthFile::load(&reg).unwrap();
        let names: Vec<_> = data.users().iter().map(|u| (&*u.name, u.admin)).collect();
        assert_eq!(names, [("alice", true), ("bob", false)]);
        assert_eq!(data.user("Bob").unwrap().name, "bob");
        assert!(matches!(
            remove_user(&reg, "carol", T0),
            Err(AuthError::NotFound(_))
        ));
        assert_eq!(remove_user(&reg, "bob", T0).unwrap(), 0);
        // Ids are never reused, so an old owner list entry cannot name a new user.
        assert_eq!(add_user(&reg, "carol", false, T0).unwrap().id, 3);
    }

    #[test]
    fn token_secret_is_shown_once_and_stored_as_sha256_outside_the_index() {
        let (_t, reg) = registry();
        add_user(&reg, "alice", false, T0).unwrap();
        let (stored, secret) = create_token(
            &reg,
            NewToken {
                user: "alice".into(),
                label: Some("ci".into()),
                expires_in: Some(parse_duration("90d").unwrap()),
                ..NewToken::default()
            },
            T0,
        )
        .unwrap();
        let hexpart = secret.strip_prefix(TOKEN_PREFIX).unwrap();
        assert_eq!(hexpart.len(), 2 * TOKEN_BYTES);
        assert!(hexpart.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(stored.scopes, Scopes::ALL);
        assert_eq!(stored.expires, Some(T0 + 90 * 86_400));
        assert_eq!(stored.sha256, sha256(secret.as_bytes()));
        let path = reg.root().join(AUTH_FILE);
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains(hexpart), "the secret is in the file");
        assert!(text.contains(&hex(&stored.sha256)));
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&path).unwrap().permissions())
                & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!reg.index_dir().join(AUTH_FILE).exists());
        assert!(git::dirty_paths(reg.index_dir()).unwrap().is_empty());
        // Another token is another secret.
        let (second, other) = create_token(
            &reg,
            NewToken {
                user: "alice".into(),
                ..NewToken::default()
            },
            T0,
        )
        .unwrap();
        assert_ne!(other, secret);
        assert_eq!(second.id, stored.id + 1);
    }

    #[test]
    fn token_requests_are_checked() {
        let (_t, reg) = registry();
        add_user(&reg, "alice", false, T0).unwrap();
        let bad = |req: NewToken| create_token(&reg, req, T0).unwrap_err().to_string();
        let base = || NewToken {
            user: "alice".into(),
            ..NewToken::default()
        };
        assert!(bad(NewToken {
            user: "nobody".into(),
            ..base()
        })
        .contains("user `nobody` does not exist"));
        assert!(bad(NewToken {
            scopes: Some(Scopes::NONE),
            ..base()
        })
        .contains("at least one scope"));
        assert!(bad(NewToken {
            crates: vec!["foo**".into()],
            ..base()
        })
        .contains("invalid crate pattern `foo**`"));
        assert!(bad(NewToken {
            label: Some("a\nb".into()),
            ..base()
        })
        .contains("printable"));
        assert!(bad(NewToken {
            expires_in: Some(0),
            ..base()
        })
        .contains("expire"));
        assert!(AuthFile::load(&reg).unwrap().tokens().is_empty());
    }

    #[test]
    fn scopes_parse_by_crates_io_names() {
        let all: Vec<String> = Scopes::ALL.into();
        assert_eq!(
            all,
            [
                "read",
                "publish-new",
                "publish-update",
                "yank",
                "change-owners"
            ]
        );
        assert_eq!(Scopes::try_from(all).unwrap(), Scopes::ALL);
        let e = Scopes::parse("publish").unwrap_err().to_string();
        assert!(e.contains("unknown scope `publish`"), "{e}");
        assert_eq!(
            Need::Publish.scopes().to_string(),
            "publish-new or publish-update"
        );
    }

    #[test]
    fn durations() {
        for (text, secs) in [
            ("90d", 90 * 86_400),
            ("90", 90 * 86_400),
            ("12h", 12 * 3_600),
            ("30s", 30),
            ("36500d", MAX_LIFETIME),
        ] {
            assert_eq!(parse_duration(text).unwrap(), secs, "{text}");
        }
        for bad in [
            "",
            "d",
            "0",
            "0s",
            "-1d",
            "1.5d",
            "1w",
            "1m",
            " 1d",
            "1 d",
            "36501",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn crate_globs_match_canonical_names() {
        for (glob, krate, want) in [
            ("foo", "foo", true),
            ("foo", "Foo", true),
            ("foo-bar", "foo_bar", true),
            ("foo", "foobar", false),
            ("foo*", "foobar", true),
            ("foo*", "foo", true),
            ("foo-*", "Foo_bar", true),
            ("foo*", "fo", false),
            ("*", "anything", true),
        ] {
            validate_glob(glob).unwrap();
            assert_eq!(glob_matches(glob, krate), want, "{glob} {krate}");
        }
        for bad in ["", "**", "*foo", "f*o", "9foo", "foo/bar", "fö*"] {
            assert!(validate_glob(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn view_authorizes_by_scope_crate_and_state() {
        let (_t, reg) = registry();
        add_user(&reg, "alice", false, T0).unwrap();
        add_user(&reg, "root", true, T0).unwrap();
        let all = token(&reg, "alice", None, &[]);
        let read = token(&reg, "alice", Some(Scopes::READ), &[]);
        let foo = token(&reg, "alice", Some(Scopes::YANK), &["foo*"]);
        let admin = token(&reg, "root", Some(Scopes::READ), &[]);
        let v = view(&reg);
        assert_eq!(v.access(), Access::Public);
        assert_eq!((v.user_count(), v.token_count()), (2, 4));

        let p = v.authorize(Some(&all), Need::Publish, None, T0).unwrap();
        assert_eq!((&*p.user, p.admin, p.scopes), ("alice", false, Scopes::ALL));
        assert_eq!(
            v.authorize(None, Need::Read, None, T0),
            Err(Refusal::NoToken)
        );
        // A wrong token, a prefix of a right one, and garbage take the same path.
        for wrong in [
            "pal_0000",
            &all[..all.len() - 1],
            "",
            "Bearer x",
            &"x".repeat(300),
        ] {
            assert_eq!(
                v.authorize(Some(wrong), Need::Read, None, T0),
                Err(Refusal::Unknown),
                "{wrong}"
            );
        }
        assert_eq!(
            v.authorize(Some(&read), Need::Publish, None, T0),
            Err(Refusal::Scope {
                token: 2,
                needed: Need::Publish.scopes()
            })
        );
        v.authorize(Some(&read), Need::Read, Some("anything"), T0)
            .unwrap();
        v.authorize(Some(&foo), Need::Yank, Some("Foo-Bar"), T0)
            .unwrap();
        assert_eq!(
            v.authorize(Some(&foo), Need::Yank, Some("bar"), T0),
            Err(Refusal::CrateScope {
                token: 3,
                krate: "bar".into()
            })
        );
        // Crate patterns limit writes, never reads; scopes limit reads.
        assert!(matches!(
            v.authorize(Some(&foo), Need::Read, Some("bar"), T0),
            Err(Refusal::Scope { .. })
        ));
        assert_eq!(
            v.authorize(Some(&all), Need::Admin, None, T0),
            Err(Refusal::NotAdmin {
                user: "alice".into()
            })
        );
        assert!(
            v.authorize(Some(&admin), Need::Admin, None, T0)
                .unwrap()
                .admin
        );
    }

    #[test]
    fn expired_and_revoked_tokens_are_refused_with_their_reason() {
        let (_t, reg) = registry();
        add_user(&reg, "alice", false, T0).unwrap();
        add_user(&reg, "bob", false, T0).unwrap();
        let (_, short) = create_token(
            &reg,
            NewToken {
                user: "alice".into(),
                expires_in: Some(30),
                ..NewToken::default()
            },
            T0,
        )
        .unwrap();
        let gone = token(&reg, "alice", None, &[]);
        let bobs = token(&reg, "bob", None, &[]);
        let before = view(&reg);
        before
            .authorize(Some(&short), Need::Read, None, T0 + 29)
            .unwrap();
        assert_eq!(
            before.authorize(Some(&short), Need::Read, None, T0 + 30),
            Err(Refusal::Expired { token: 1 })
        );
        let (t, fresh) = revoke_token(&reg, 2, T0).unwrap();
        assert!(fresh && t.revoked == Some(T0));
        assert!(!revoke_token(&reg, 2, T0 + 5).unwrap().1);
        assert!(matches!(
            revoke_token(&reg, 99, T0),
            Err(AuthError::NotFound(_))
        ));
        // The view is immutable: the change shows only in a reloaded one.
        before.authorize(Some(&gone), Need::Read, None, T0).unwrap();
        assert_ne!(Stamp::current(reg.root()), before.stamp());
        let after = view(&reg);
        assert_eq!(Stamp::current(reg.root()), after.stamp());
        assert_eq!(
            after.authorize(Some(&gone), Need::Read, None, T0),
            Err(Refusal::Revoked { token: 2 })
        );
        // Removing a user revokes their tokens.
        assert_eq!(remove_user(&reg, "bob", T0).unwrap(), 1);
        assert_eq!(
            view(&reg).authorize(Some(&bobs), Need::Read, None, T0),
            Err(Refusal::Revoked { token: 3 })
        );
        let refusals = [
            Refusal::NoToken,
            Refusal::Unknown,
            Refusal::Expired { token: 1 },
            Refusal::Revoked { token: 2 },
        ];
        assert!(refusals.iter().all(Refusal::is_unauthenticated));
        assert_eq!(
            Refusal::Unknown.detail(),
            Refusal::Revoked { token: 2 }.detail()
        );
    }

    #[test]
    fn stamp_changes_with_every_write_and_with_the_settings() {
        let (_t, reg) = registry();
        let empty = Stamp::current(reg.root());
        assert_eq!(view(&reg).stamp(), empty);
        add_user(&reg, "alice", false, T0).unwrap();
        let one = Stamp::current(reg.root());
        assert_ne!(one, empty);
        add_user(&reg, "bobby", false, T0).unwrap();
        remove_user(&reg, "bobby", T0).unwrap();
        assert_ne!(Stamp::current(reg.root()), one);
        let before = Stamp::current(reg.root());
        set_access(&reg, Access::Private).unwrap();
        assert_ne!(Stamp::current(reg.root()), before);
        assert_eq!(view(&reg).access(), Access::Private);
    }

    #[test]
    fn owners_are_recorded_listed_and_checked() {
        let (_t, reg) = registry();
        add_user(&reg, "alice", false, T0).unwrap();
        add_user(&reg, "bob", false, T0).unwrap();
        add_user(&reg, "root", true, T0).unwrap();
        let secrets = ["alice", "bob", "root"].map(|u| token(&reg, u, None, &[]));
        let v = view(&reg);
        let [alice, bob, root] =
            secrets.map(|s| v.authorize(Some(&s), Need::Publish, None, T0).unwrap());

        // A new crate: anyone with publish-new; the publisher becomes its owner.
        let data = AuthFile::load(&reg).unwrap();
        authorize_publish(&data, &alice, "Foo-Bar", NameState::Free).unwrap();
        publish_as(&reg, "Foo-Bar", &alice);
        let data = AuthFile::load(&reg).unwrap();
        assert_eq!(data.recorded_owners("foo_bar"), ["alice"]);
        authorize_publish(&data, &alice, "Foo-Bar", NameState::Published).unwrap();
        authorize_publish(&data, &root, "Foo-Bar", NameState::Published).unwrap();
        assert_eq!(
            authorize_publish(&data, &bob, "Foo-Bar", NameState::Published),
            Err(Refusal::NotOwner {
                user: "bob".into(),
                krate: "Foo-Bar".into()
            })
        );
        assert!(authorize_owner(&data, &bob, "foo_bar").is_err());

        // Bob cannot make himself an owner; alice can.
        let e = add_owners(&reg, "foo_bar", &["bob".into()], Some(&bob)).unwrap_err();
        assert!(
            matches!(e, AuthError::Refused(Refusal::NotOwner { .. })),
            "{e}"
        );
        let msg = add_owners(&reg, "foo_bar", &["BOB".into()], Some(&alice)).unwrap();
        assert_eq!(msg, "user bob has been added as an owner of crate Foo-Bar");
        let logins = |v: Vec<User>| v.into_iter().map(|u| u.name).collect::<Vec<_>>();
        assert_eq!(
            logins(list_owners(&reg, "foo-bar").unwrap()),
            ["alice", "bob"]
        );
        let data = AuthFile::load(&reg).unwrap();
        authorize_publish(&data, &bob, "Foo-Bar", NameState::Published).unwrap();
        let again = add_owners(&reg, "Foo-Bar", &["bob".into()], None).unwrap_err();
        assert!(matches!(again, AuthError::Conflict(_)), "{again}");
        let nobody = add_owners(&reg, "Foo-Bar", &["carol".into()], None).unwrap_err();
        assert!(matches!(nobody, AuthError::NotFound(_)), "{nobody}");
        let missing = list_owners(&reg, "nothere").unwrap_err();
        assert!(missing
            .to_string()
            .contains("crate `nothere` does not exist"));

        // Removal: never the last owner.
        remove_owners(&reg, "Foo-Bar", &["alice".into()], Some(&bob)).unwrap();
        let last = remove_owners(&reg, "Foo-Bar", &["bob".into()], None).unwrap_err();
        assert!(
            last.to_string().contains("cannot remove every owner"),
            "{last}"
        );
        let not = remove_owners(&reg, "Foo-Bar", &["alice".into()], None).unwrap_err();
        assert!(matches!(not, AuthError::NotFound(_)), "{not}");

        // A crate published before owners were recorded belongs to the admins.
        publish(&reg, "legacy");
        let data = AuthFile::load(&reg).unwrap();
        assert!(data.recorded_owners("legacy").is_empty());
        assert_eq!(logins(list_owners(&reg, "legacy").unwrap()), ["root"]);
        authorize_publish(&data, &root, "legacy", NameState::Published).unwrap();
        assert!(authorize_publish(&data, &alice, "legacy", NameState::Published).is_err());

        // Removing a user drops them from owner lists; an emptied crate goes to the admins.
        remove_user(&reg, "bob", T0).unwrap();
        let data = AuthFile::load(&reg).unwrap();
        assert!(data.recorded_owners("Foo-Bar").is_empty());
        assert_eq!(
            authorize_publish(&data, &bob, "Foo-Bar", NameState::Published),
            Err(Refusal::Revoked { token: 2 })
        );
        assert_eq!(
            authorize_publish(&data, &bob, "brand-new", NameState::Free),
            Err(Refusal::Revoked { token: 2 })
        );
    }

    /// What broke: the hint said `cargo owner --add bob foo`, which, pasted as given, goes to
    /// crates.io.
    #[test]
    fn the_not_owner_hint_names_the_registry() {
        let detail = Refusal::NotOwner {
            user: "bob".into(),
            krate: "foo".into(),
        }
        .detail();
        assert!(
            detail.contains("`cargo owner --registry palletizer --add bob foo`"),
            "{detail}"
        );
    }

    #[test]
    fn publish_scopes_split_new_from_update() {
        let (_t, reg) = registry();
        add_user(&reg, "alice", false, T0).unwrap();
        let new_only = token(&reg, "alice", Some(Scopes::PUBLISH_NEW), &[]);
        let update_only = token(&reg, "alice", Some(Scopes::PUBLISH_UPDATE), &["foo"]);
        let v = view(&reg);
        let new_only = v
            .authorize(Some(&new_only), Need::Publish, None, T0)
            .unwrap();
        let update_only = v
            .authorize(Some(&update_only), Need::Publish, None, T0)
            .unwrap();
        publish_as(&reg, "foo", &new_only);
        let data = AuthFile::load(&reg).unwrap();
        authorize_publish(&data, &new_only, "bar", NameState::Free).unwrap();
        assert!(matches!(
            authorize_publish(&data, &new_only, "foo", NameState::Published),
            Err(Refusal::Scope { .. })
        ));
        authorize_publish(&data, &update_only, "foo", NameState::Published).unwrap();
        assert!(matches!(
            authorize_publish(&data, &update_only, "bar", NameState::Free),
            Err(Refusal::Scope { .. })
        ));
        let mut foo_new = update_only.clone();
        foo_new.scopes = Scopes::ALL;
        assert!(matches!(
            authorize_publish(&data, &foo_new, "bar", NameState::Free),
            Err(Refusal::CrateScope { .. })
        ));
    }

    #[test]
    fn bootstrap_creates_one_admin_token_once() {
        let (_t, reg) = registry();
        let secret = bootstrap_admin(&reg, T0).unwrap().unwrap();
        assert!(secret.starts_with(TOKEN_PREFIX));
        assert_eq!(bootstrap_admin(&reg, T0).unwrap(), None);
        let v = view(&reg);
        for need in [
            Need::Read,
            Need::Publish,
            Need::Yank,
            Need::ChangeOwners,
            Need::Admin,
        ] {
            let p = v.authorize(Some(&secret), need, Some("x"), T0).unwrap();
            assert_eq!(&*p.user, FIRST_ADMIN);
        }
        let data = AuthFile::load(&reg).unwrap();
        assert_eq!(data.tokens()[0].expires, None);
    }

    #[test]
    fn access_mode_and_config_json_never_disagree() {
        let (_t, reg) = registry();
        let committed = |reg: &Registry| {
            let repo = git2::Repository::open(reg.index_dir()).unwrap();
            let tree = repo.head().unwrap().peel_to_tree().unwrap();
            let blob = tree
                .get_path(Path::new("config.json"))
                .unwrap()
                .to_object(&repo)
                .unwrap();
            let text = String::from_utf8(blob.as_blob().unwrap().content().to_vec()).unwrap();
            serde_json::from_str::<serde_json::Value>(&text).unwrap()["auth-required"] == true
        };
        assert!(!committed(&reg));
        for (mode, private) in [
            (Access::Private, true),
            (Access::Open, false),
            (Access::Public, false),
            (Access::Private, true),
        ] {
            let s = set_access(&reg, mode).unwrap();
            assert_eq!(s.access, mode);
            let reopened = Registry::open(reg.root()).unwrap();
            assert_eq!(reopened.settings().access, mode);
            assert_eq!(committed(&reg), private, "{mode}");
            assert!(git::dirty_paths(reg.index_dir()).unwrap().is_empty());
        }
        // A crash between the two writes left them apart: sync puts config.json right.
        fs::write(
            reg.index_dir().join("config.json"),
            Settings::default().config_json(),
        )
        .unwrap();
        assert!(sync_config_json(&reg).unwrap());
        assert!(committed(&reg));
        assert!(!sync_config_json(&reg).unwrap());
    }

    #[test]
    fn last_used_is_recorded_and_never_goes_back() {
        let (_t, reg) = registry();
        add_user(&reg, "alice", false, T0).unwrap();
        token(&reg, "alice", None, &[]);
        record_last_used(&reg, &[(1, T0 + 10), (77, T0)]).unwrap();
        record_last_used(&reg, &[(1, T0 + 5)]).unwrap();
        let data = AuthFile::load(&reg).unwrap();
        assert_eq!(data.tokens()[0].last_used, Some(T0 + 10));
    }

    #[test]
    fn concurrent_writers_lose_no_change() {
        let (_t, reg) = registry();
        std::thread::scope(|s| {
            for w in 0..2 {
                let reg = &reg;
                s.spawn(move || {
                    for i in 0..15 {
                        add_user(reg, &format!("w{w}-{i}"), false, T0).unwrap();
                    }
                });
            }
        });
        let data = AuthFile::load(&reg).unwrap();
        assert_eq!(data.users().len(), 30);
        let mut ids: Vec<_> = data.users().iter().map(|u| u.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 30);
    }

    #[test]
    fn a_bad_file_is_an_error_not_an_empty_registry() {
        let (_t, reg) = registry();
        let path = reg.root().join(AUTH_FILE);
        fs::write(&path, "{not json").unwrap();
        let e = AuthFile::load(&reg).unwrap_err();
        assert!(matches!(e, AuthError::Corrupt { .. }), "{e}");
        assert!(add_user(&reg, "alice", false, T0).is_err());
        assert_eq!(fs::read_to_string(&path).unwrap(), "{not json");
        fs::write(&path, r#"{"format":9,"next_user_id":1,"next_token_id":1}"#).unwrap();
        let e = AuthView::load(reg.root()).unwrap_err().to_string();
        assert!(e.contains("newer palletizer"), "{e}");
    }

    /// The server parses `auth.json` on its event loop: a file past the cap is refused
    /// unread (the old view stays), and the CLI never writes one.
    #[test]
    fn auth_files_past_the_cap_are_neither_read_nor_written() {
        let (_t, reg) = registry();
        add_user(&reg, "alice", false, T0).unwrap();
        let path = reg.root().join(AUTH_FILE);
        let text = fs::read_to_string(&path).unwrap();
        let padded = format!("{text}{}", " ".repeat(MAX_AUTH_FILE as usize));
        fs::write(&path, &padded).unwrap();
        let e = AuthView::load(reg.root()).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
        fs::write(&path, &text).unwrap();
        // A file just under the cap (tokens copied in directly), then one token more.
        let mut data: AuthFile = serde_json::from_str(&text).unwrap();
        let one = NewToken {
            user: "alice".into(),
            label: Some("x".repeat(MAX_LABEL_LEN)),
            ..NewToken::default()
        };
        create_token(&reg, one, T0).unwrap();
        let with_one: AuthFile = AuthFile::load(&reg).unwrap();
        let token = with_one.tokens[0].clone();
        let size = |n: usize| {
            let mut d = data.clone();
            d.tokens = vec![token.clone(); n];
            serde_json::to_vec_pretty(&d).unwrap().len()
        };
        let each = (size(100) - size(0)) / 100;
        let fill = (MAX_AUTH_FILE as usize - size(0)) / each;
        data.tokens = vec![token; fill];
        let full = serde_json::to_vec_pretty(&data).unwrap();
        assert!(full.len() as u64 <= MAX_AUTH_FILE, "{}", full.len());
        fs::write(&path, &full).unwrap();
        AuthView::load(reg.root()).expect("a file within the cap loads");
        let more = NewToken {
            user: "alice".into(),
            label: Some("x".repeat(MAX_LABEL_LEN)),
            ..NewToken::default()
        };
        let e = create_token(&reg, more, T0).unwrap_err().to_string();
        assert!(e.contains("revoke or remove old tokens"), "{e}");
        assert_eq!(fs::read(&path).unwrap(), full, "nothing written");
        AuthView::load(reg.root()).unwrap();
    }

    #[test]
    fn tokens_sharing_a_hash_prefix_are_all_found() {
        let mut data = AuthFile::default();
        data.users.push(User {
            id: 1,
            name: "alice".into(),
            admin: false,
            created: T0,
        });
        let mut hashes = Vec::new();
        for last in 0..3u8 {
            let mut h = [7u8; 32];
            h[31] = last;
            hashes.push(h);
            data.tokens.push(Token {
                id: u64::from(last) + 1,
                user: "alice".into(),
                sha256: h,
                scopes: Scopes::ALL,
                crates: Vec::new(),
                created: T0,
                expires: None,
                label: None,
                last_used: None,
                revoked: None,
            });
        }
        let v = AuthView::new(Access::Public, &data);
        assert_eq!(v.collided.len(), 2);
        for (i, h) in hashes.iter().enumerate() {
            assert_eq!(v.find(h).unwrap().id, i as u64 + 1);
        }
        let mut other = [7u8; 32];
        other[31] = 9;
        assert!(v.find(&other).is_none());
    }

    /// Counts this thread's live heap bytes, to measure what a view really costs.
    mod counting {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local! {
            static LIVE: Cell<isize> = const { Cell::new(0) };
        }

        fn add(n: isize) {
            let _ = LIVE.try_with(|c| c.set(c.get() + n));
        }

        pub fn live() -> isize {
            LIVE.with(Cell::get)
        }

        struct Counting;

        // SAFETY: every call is forwarded to the system allocator unchanged; the counter is
        // a const-initialized thread-local without destructor, so touching it never allocates.
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, l: Layout) -> *mut u8 {
                add(l.size() as isize);
                unsafe { System.alloc(l) }
            }
            unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
                add(-(l.size() as isize));
                unsafe { System.dealloc(p, l) }
            }
            unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
                add(new as isize - l.size() as isize);
                unsafe { System.realloc(p, l, new) }
            }
        }

        #[global_allocator]
        static ALLOCATOR: Counting = Counting;
    }

    #[test]
    fn a_thousand_tokens_cost_well_under_a_third_of_a_mib() {
        let mut data = AuthFile::default();
        for u in 0..50u32 {
            data.users.push(User {
                id: u + 1,
                name: format!("user-{u}"),
                admin: u == 0,
                created: T0,
            });
        }
        let mut secrets = Vec::new();
        for i in 0..1000u64 {
            let secret = new_secret().unwrap();
            data.tokens.push(Token {
                id: i + 1,
                user: format!("user-{}", i % 50),
                sha256: sha256(secret.as_bytes()),
                scopes: Scopes::ALL,
                // One in ten restricted to a crate pattern, as a busy registry might have.
                crates: if i % 10 == 0 {
                    vec![format!("team-{i}-*")]
                } else {
                    Vec::new()
                },
                created: T0,
                expires: Some(T0 + 86_400),
                label: Some(format!("token number {i} for the build farm")),
                last_used: Some(T0),
                revoked: None,
            });
            secrets.push(secret);
        }
        let before = counting::live();
        let v = AuthView::new(Access::Private, &data);
        let bytes = counting::live() - before;
        eprintln!(
            "AuthView with 1000 tokens, 50 users: {bytes} heap bytes ({:.3} MiB)",
            bytes as f64 / (1 << 20) as f64
        );
        assert!(bytes > 1000 * 32, "the counter does not count: {bytes}");
        assert!(bytes < 150 * 1024, "{bytes} bytes");
        for s in &secrets {
            v.authorize(Some(s), Need::Read, None, T0).unwrap();
        }
    }
}
