//! Shorthands for one command each, as the administrator at the command line or the server
//! on its own behalf: they build the [`Command`], run it through [`Registry::apply_at`] and
//! unwrap the one [`Outcome`] it answers with.

use std::io::Read;
use std::path::Path;

use super::{Actor, Command, Outcome};
use crate::registry::auth::{now, AuthError, NewToken, Principal, Token, User};
use crate::registry::index::Pubtime;
use crate::registry::settings::{Access, Settings};
use crate::registry::{CheckedCrate, CrateName, IndexEntry, PublishMetadata, Registry};

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

fn owners_shorthand(
    reg: &Registry,
    cmd: Command,
    by: Option<&Principal>,
) -> Result<String, AuthError> {
    let actor = by.map_or_else(Actor::cli, |p| Actor::remote(Some(p), None));
    match as_actor(reg, cmd, &actor, now())? {
        Outcome::OwnersChanged { msg } => Ok(msg),
        o => unexpected(o),
    }
}

impl Registry {
    /// Publishes a `.crate` file with the metadata in its `Cargo.toml`, as the administrator
    /// at the command line (`palletizer add`), with the time of the add as its `pubtime`.
    pub fn add_file(&self, path: &Path) -> Result<IndexEntry, AuthError> {
        self.add_file_published(path, None)
    }

    /// [`Registry::add_file`] with the version's original publish time, when it is known.
    pub fn add_file_published(
        &self,
        path: &Path,
        pubtime: Option<Pubtime>,
    ) -> Result<IndexEntry, AuthError> {
        let checked = self.check_crate_file(path, pubtime)?;
        self.publish_as(checked, &Actor::cli())
    }

    /// Publishes a crate as the administrator at the command line: `meta` is what cargo
    /// sent (None: derive it from the manifest), `tarball` the `.crate` bytes.
    pub fn publish(
        &self,
        meta: Option<PublishMetadata>,
        tarball: impl Read,
    ) -> Result<IndexEntry, AuthError> {
        let checked = self.check_upload(meta, tarball)?;
        self.publish_as(checked, &Actor::cli())
    }

    fn publish_as(&self, checked: CheckedCrate, actor: &Actor) -> Result<IndexEntry, AuthError> {
        match self.apply(Command::Publish(checked), actor)?.outcome {
            Outcome::Published(entry) => Ok(entry),
            o => unreachable!("a publish answered {o:?}"),
        }
    }

    /// Marks a version yanked (or not) as the administrator at the command line. Returns
    /// false when it already was in that state.
    pub fn set_yanked(
        &self,
        name: &CrateName,
        vers: &str,
        yanked: bool,
    ) -> Result<bool, AuthError> {
        let cmd = Command::Yank {
            name: name.clone(),
            vers: vers.to_owned(),
            yanked,
        };
        match self.apply(cmd, &Actor::cli())?.outcome {
            Outcome::Yanked { changed } => Ok(changed),
            o => unreachable!("a yank answered {o:?}"),
        }
    }

    /// Removes one version, or every version, of a crate as the administrator at the
    /// command line (see [`Command::Delete`]). Returns the versions removed.
    pub fn delete(&self, name: &CrateName, vers: Option<&str>) -> Result<Vec<String>, AuthError> {
        let cmd = Command::Delete {
            name: name.clone(),
            vers: vers.map(str::to_owned),
            release_name: false,
        };
        match self.apply(cmd, &Actor::cli())?.outcome {
            Outcome::Deleted { versions } => Ok(versions),
            o => unreachable!("a delete answered {o:?}"),
        }
    }

    /// Adds a user ([`Command::AddUser`] as the administrator).
    pub fn add_user(&self, name: &str, admin: bool, now: u64) -> Result<User, AuthError> {
        let cmd = Command::AddUser {
            name: name.to_owned(),
            admin,
        };
        match as_admin(self, cmd, now)? {
            Outcome::UserAdded(u) => Ok(u),
            o => unexpected(o),
        }
    }

    /// Removes a user ([`Command::RemoveUser`] as the administrator). Returns how many tokens
    /// were revoked.
    pub fn remove_user(&self, name: &str, now: u64) -> Result<usize, AuthError> {
        let cmd = Command::RemoveUser {
            name: name.to_owned(),
        };
        match as_admin(self, cmd, now)? {
            Outcome::UserRemoved { revoked } => Ok(revoked),
            o => unexpected(o),
        }
    }

    /// Creates a token ([`Command::CreateToken`] as the administrator). Returns what is stored
    /// and the secret, which is never stored and must be shown to the user now.
    pub fn create_token(&self, req: NewToken, now: u64) -> Result<(Token, String), AuthError> {
        match as_admin(self, Command::CreateToken(req), now)? {
            Outcome::TokenCreated { token, secret } => Ok((token, secret)),
            o => unexpected(o),
        }
    }

    /// Revokes a token ([`Command::RevokeToken`] as the administrator). Returns it, and false
    /// when it already was revoked.
    pub fn revoke_token(&self, id: u64, now: u64) -> Result<(Token, bool), AuthError> {
        match as_admin(self, Command::RevokeToken { id }, now)? {
            Outcome::TokenRevoked { token, fresh } => Ok((token, fresh)),
            o => unexpected(o),
        }
    }

    /// Records when tokens were last used: `(token id, unix seconds)`. The server gathers these
    /// in memory and hands them over now and then ([`Command::RecordTokenUse`]).
    pub fn record_last_used(&self, uses: &[(u64, u64)]) -> Result<(), AuthError> {
        if uses.is_empty() {
            return Ok(());
        }
        as_actor(
            self,
            Command::RecordTokenUse(uses.to_vec()),
            &Actor::Server,
            now(),
        )
        .map(drop)
    }

    /// Zero-config start: when the registry has no user yet, creates the admin user `admin` and
    /// one token with every scope, and returns its secret (to print once). `None` when users
    /// exist already ([`Command::FirstAdmin`]).
    pub fn bootstrap_admin(&self, now: u64) -> Result<Option<String>, AuthError> {
        match as_actor(self, Command::FirstAdmin, &Actor::Server, now)? {
            Outcome::FirstAdmin { secret } => Ok(secret),
            o => unexpected(o),
        }
    }

    /// Adds owners to a published crate ([`Command::AddOwners`]; `by: None` as the
    /// administrator). Returns the message cargo prints.
    pub fn add_owners(
        &self,
        krate: &str,
        users: &[String],
        by: Option<&Principal>,
    ) -> Result<String, AuthError> {
        let cmd = Command::AddOwners {
            krate: krate.to_owned(),
            users: users.to_vec(),
        };
        owners_shorthand(self, cmd, by)
    }

    /// Removes owners from a published crate ([`Command::RemoveOwners`]); at least one recorded
    /// owner must remain. Returns the message for cargo.
    pub fn remove_owners(
        &self,
        krate: &str,
        users: &[String],
        by: Option<&Principal>,
    ) -> Result<String, AuthError> {
        let cmd = Command::RemoveOwners {
            krate: krate.to_owned(),
            users: users.to_vec(),
        };
        owners_shorthand(self, cmd, by)
    }

    /// Sets the access mode ([`Command::SetAccess`] as the administrator). Returns the new
    /// settings.
    pub fn set_access(&self, access: Access) -> Result<Settings, AuthError> {
        match as_admin(self, Command::SetAccess(access), now())? {
            Outcome::AccessSet(settings) => Ok(*settings),
            o => unexpected(o),
        }
    }

    /// Rewrites and commits `config.json` when it disagrees with `palletizer.toml` (after a crash
    /// between the two writes of [`Registry::set_access`], or a hand edit; [`Command::SyncAccess`]).
    /// Returns whether it changed.
    pub fn sync_config_json(&self) -> Result<bool, AuthError> {
        match as_actor(self, Command::SyncAccess, &Actor::Server, now())? {
            Outcome::AccessSynced { changed } => Ok(changed),
            o => unexpected(o),
        }
    }
}
