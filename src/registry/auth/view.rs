//! The in-memory view of access control the server checks each request against: an
//! immutable token index built from [`AuthFile`], reloaded when [`Stamp`] says
//! `auth.json` or `palletizer.toml` changed.
//!
//! Invariants: a lookup makes no system call; the view holds token hashes, never secrets.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;
use std::sync::Arc;

use super::{
    auth_path, ct_eq, parse_auth, read_stamped, sha256, AuthError, AuthFile, Need, Principal,
    Refusal, Scopes, Stamp,
};
use crate::registry::names::canonical;
use crate::registry::settings::{Access, Settings};
use crate::registry::SETTINGS_FILE;

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
pub(super) struct ViewToken {
    sha256: [u8; 32],
    pub(super) id: u64,
    /// 0: never.
    expires: u64,
    user: u32,
    scopes: Scopes,
    revoked: bool,
    crates: Option<Arc<[Box<str>]>>,
}

/// The server's immutable token index: what [`AuthView::authorize`] needs, and who owns
/// each crate for the pages (no labels, no times but expiry; owner *checks* of a write
/// read [`AuthFile`] under the lock).
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
    pub(super) collided: Vec<u32>,
    /// Canonical crate name -> its recorded owners (indexes in `users`), as in the file.
    owners: HashMap<Box<str>, Box<[u32]>>,
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
            return Err(crate::registry::Error::NotFound(format!(
                "no registry in {} (no {SETTINGS_FILE})",
                root.display()
            ))
            .into());
        };
        let settings = Settings::parse(&text).map_err(|e| {
            crate::registry::Error::Settings(format!("{}: {e}", settings_path.display()))
        })?;
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
        let owners = data
            .owners
            .iter()
            .filter(|(_, names)| !names.is_empty())
            .map(|(krate, names)| {
                let known = names
                    .iter()
                    .filter_map(|n| {
                        let i = data
                            .users
                            .iter()
                            .position(|u| u.name.eq_ignore_ascii_case(n));
                        i.map(|i| i as u32)
                    })
                    .collect();
                (krate.as_str().into(), known)
            })
            .collect();
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
            owners,
        }
    }

    /// Who may manage `krate`, by name, as [`AuthFile::effective_owners`] says: its
    /// recorded owners, or the admins when none are recorded. No file is read.
    pub fn owners_of(&self, krate: &str) -> Vec<&str> {
        match self.owners.get(canonical(krate).as_str()) {
            Some(o) => o.iter().map(|&i| &*self.users[i as usize].name).collect(),
            None => self
                .users
                .iter()
                .filter(|u| u.admin)
                .map(|u| &*u.name)
                .collect(),
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

    pub(super) fn find(&self, hash: &[u8; 32]) -> Option<&ViewToken> {
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
