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
//!
//! The rooms: [`tokens`] (scopes, secrets, globs: values only), [`file`] (the format and every
//! change to its data), [`policy`] (principals, needs, refusals, owner checks), [`config`]
//! (the access mode's files) and [`view`] (the server's in-memory index). Each depends only on
//! the ones before it.

mod config;
mod file;
mod policy;
mod tokens;
mod view;

#[cfg(test)]
mod tests;

use std::time::{SystemTime, UNIX_EPOCH};

#[cfg(test)]
use super::Registry;

pub(crate) use config::{set_access_locked, sync_config_json_locked};
use file::{auth_path, parse_auth, read_stamped};
pub(crate) use file::{create_token_in, edit, first_admin_in, Edit};
pub use file::{validate_user_name, AuthFile, Stamp, Token, User};
pub(crate) use policy::change_owners;
pub use policy::{
    authorize_admin, authorize_owner, authorize_publish, NameState, Need, Principal, Refusal,
};
use tokens::{ct_eq, new_secret, sha256, TokenFields};
pub use tokens::{glob_matches, parse_duration, validate_glob, NewToken, Scopes};
pub use view::AuthView;

/// The access control file, at the registry root.
pub const AUTH_FILE: &str = "auth.json";

/// What every token starts with, so a leaked one is recognizable (secret scanners, logs).
pub const TOKEN_PREFIX: &str = "pal_";

/// Longest user name.
pub const MAX_USER_LEN: usize = 64;

/// Longest token label.
pub const MAX_LABEL_LEN: usize = 200;

/// Most crate globs on one token.
pub const MAX_GLOBS: usize = 32;

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
    Registry(#[from] crate::registry::Error),
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
