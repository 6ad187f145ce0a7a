//! `auth.json` itself: its format (users, tokens, owners), reading it (bounded, stamped),
//! writing it whole (0600, temp file, fsync, rename), and every change to its data.
//!
//! Invariants: the file is never inside the index repository; a newer format is refused
//! rather than half understood; an unchanged file is never rewritten (every rewrite makes the
//! server reload it); changes happen under the registry lock, on data read fresh under it.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{
    new_secret, sha256, validate_glob, AuthError, NewToken, Scopes, TokenFields, AUTH_FILE,
    FIRST_ADMIN, MAX_AUTH_FILE, MAX_GLOBS, MAX_LABEL_LEN, MAX_USER_LEN,
};
use crate::registry::names::canonical;
use crate::registry::publish::tarball::hex;
use crate::registry::settings::Settings;
use crate::registry::store::{Previous, SETTINGS_FILE};
use crate::registry::Registry;

/// The file format this code writes; a newer one is refused rather than half understood.
const FORMAT: u32 = 1;

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

/// The whole access control file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthFile {
    pub(super) format: u32,
    pub(super) next_user_id: u32,
    pub(super) next_token_id: u64,
    #[serde(default)]
    pub(super) users: Vec<User>,
    #[serde(default)]
    pub(super) tokens: Vec<Token>,
    /// Canonical crate name -> user names.
    #[serde(default)]
    pub(super) owners: BTreeMap<String, Vec<String>>,
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
pub(super) fn auth_path(root: &Path, settings: &Settings) -> Result<PathBuf, AuthError> {
    let index = root.join(&settings.index_dir);
    // A plain folder below the root (the usual `index`, no link on the way) cannot hold the
    // root: told with one `lstat` a part, not two path resolutions on every read.
    let rel = Path::new(&settings.index_dir);
    let mut at = root.to_owned();
    // (An empty setting names the root itself: not plain.)
    let plain = rel.is_relative()
        && rel.components().next().is_some()
        && rel.components().all(|c| {
            at.push(c);
            matches!(c, std::path::Component::Normal(_))
                && fs::symlink_metadata(&at).is_ok_and(|m| m.is_dir())
        });
    if plain {
        return Ok(root.join(AUTH_FILE));
    }
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
pub(super) fn read_stamped(path: &Path) -> Result<Option<(String, FileStamp)>, AuthError> {
    let io_err = |source: io::Error| {
        AuthError::Registry(crate::registry::Error::Io {
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
    // Sized from the start: one read for the whole file, not a dozen growing ones.
    let mut text = String::with_capacity(meta.len() as usize + 1);
    (&mut f)
        .take(MAX_AUTH_FILE + 1)
        .read_to_string(&mut text)
        .map_err(io_err)?;
    Ok(Some((text, FileStamp::of(&meta))))
}

pub(super) fn parse_auth(path: &Path, text: &str) -> Result<AuthFile, AuthError> {
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
        crate::registry::store::write_atomic_mode(path, &bytes, 0o600)?;
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
                crate::registry::names::shown(name)
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

    pub(super) fn is_owner(&self, user: &str, krate: &str) -> bool {
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

/// Runs `f` on the current file and writes the result (lock held: see [`crate::registry::command`]).
pub(crate) fn edit<T>(
    reg: &Registry,
    f: impl FnOnce(&mut AuthFile) -> Result<T, AuthError>,
) -> Result<T, AuthError> {
    let mut e = Edit::open(reg)?;
    let out = f(&mut e.data)?;
    e.save()?;
    Ok(out)
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
            crate::registry::names::shown(name)
        )));
    }
    Ok(())
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

/// [`crate::registry::Command::CreateToken`], lock held.
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

/// [`crate::registry::Command::FirstAdmin`], lock held: the user, the token and its secret.
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

impl AuthFile {
    pub(super) fn add_owners(
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
    pub(super) fn remove_owners(
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
                    crate::registry::names::shown(name)
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

    /// Whether the crate has owners recorded.
    pub(crate) fn has_owners(&self, krate: &str) -> bool {
        self.owners
            .get(&canonical(krate))
            .is_some_and(|o| !o.is_empty())
    }

    /// Forgets a crate's recorded owners (a name given up). Returns them.
    pub(crate) fn forget_owners(&mut self, krate: &str) -> Vec<String> {
        self.owners.remove(&canonical(krate)).unwrap_or_default()
    }
}

/// The identity of one file's contents as `stat` tells it. Writers replace files by rename,
/// so the inode changes with every write; length and times catch the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileStamp {
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
    pub(super) auth: Option<FileStamp>,
    pub(super) settings: Option<FileStamp>,
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
