//! Who may do what: the principal a token makes, the access a request needs, the refusals,
//! and the owner checks, always against the current file.
//!
//! Invariants: a crate with no recorded owners belongs to the admins; an expired or revoked
//! token, or one whose user is gone, is refused whatever it was allowed before.

use std::sync::Arc;

use super::{edit, glob_matches, now, AuthError, AuthFile, Scopes, User, REGISTRY_NAME};
use crate::registry::Registry;

/// The spelling of a published crate, or NotFound.
fn existing_crate(reg: &Registry, krate: &str) -> Result<String, AuthError> {
    let name =
        crate::registry::CrateName::parse(krate).map_err(|e| AuthError::NotFound(e.to_string()))?;
    reg.find_canonical(&name)?
        .ok_or_else(|| AuthError::NotFound(format!("crate `{krate}` does not exist")))
}

impl Registry {
    /// The users who manage a published crate (its owners, or the admins when none are
    /// recorded).
    pub fn list_owners(&self, krate: &str) -> Result<Vec<User>, AuthError> {
        existing_crate(self, krate)?;
        let data = AuthFile::load(self)?;
        Ok(data.effective_owners(krate).into_iter().cloned().collect())
    }
}

/// Checks that `by` (a token holder; `None`: an actor the checks do not apply to) may
/// change the owners of `krate`.
fn may_change_owners(data: &AuthFile, by: Option<&Principal>, krate: &str) -> Result<(), Refusal> {
    let Some(p) = by else { return Ok(()) };
    p.check_scope(Scopes::CHANGE_OWNERS, Some(krate))?;
    authorize_owner(data, p, krate)
}

/// [`crate::registry::Command::AddOwners`] (`add`) or [`crate::registry::Command::RemoveOwners`] on a published crate, lock
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

    /// The token the refusal names, by id (none for a missing or unknown token, and for the
    /// owner and admin checks, which name the user).
    pub fn token(&self) -> Option<u64> {
        match self {
            Refusal::Expired { token }
            | Refusal::Revoked { token }
            | Refusal::Scope { token, .. }
            | Refusal::CrateScope { token, .. } => Some(*token),
            _ => None,
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
    /// `publish-new` or `publish-update`; which one is decided with `authorize_publish`
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
