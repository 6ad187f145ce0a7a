//! The one write path. Every change to the registry is a [`Command`], run by
//! [`Registry::apply`]: it takes the registry lock once, decides under it everything that
//! depends on registry state (does the crate exist, who owns it, is the version tombstoned,
//! does the token's crate pattern cover it, is the token still valid), writes each file
//! atomically with the journal and the index commit of [`super`], puts back what it wrote
//! when a later step fails, and returns the [`Outcome`] with the [`Event`]s it caused.
//!
//! The CLI and the server's writer thread both call it; the server passes the token holder it
//! let through and the client's address, the CLI the Unix user running it ([`Actor`]).
//! Events are how the rest of the system learns of a change (maintenance of the index
//! repository, the audit log; webhooks later): they carry what changed, who changed it and
//! when, never a token secret, so none of them needs a second look at the files or a write
//! path of its own.
//!
//! The audit log is written here, for every command alike (`record`): the intent line before
//! the command runs, its outcome line (from its result and events) after, both synced under
//! the lock before `apply` returns; see [`crate::registry::audit`] for what a crash leaves.
//!
//! What needs no registry state (a crate file's archive, its metadata, the settings) is
//! checked before the lock, by [`Registry::check_upload`] and [`Registry::check_crate_file`],
//! so that the lock is never held while an upload is unpacked.

mod record;
mod shorthand;

pub(crate) use record::audit_actor;

use std::net::IpAddr;

use serde::Serialize;

use super::auth::{self, AuthError, AuthFile, NewToken, Principal, Scopes, Token, User};
use super::index::git;
use super::settings::{Access, Settings};
use super::{CheckedCrate, CheckedDocs, CrateName, IndexEntry, Registry};

/// Who asks for a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A token holder, as the server authenticated them: every check applies. `peer`: the
    /// client's address.
    Token {
        holder: Principal,
        peer: Option<IpAddr>,
    },
    /// A request the server let through without a token (access mode `open`): no checks.
    Anonymous { peer: Option<IpAddr> },
    /// The registry's administrator at the command line, by Unix user name: no checks.
    Cli { user: String },
    /// The server on its own behalf (the first start's admin, token bookkeeping).
    Server,
}

impl Actor {
    /// The administrator at the command line: the Unix user this process runs as.
    pub fn cli() -> Actor {
        Actor::Cli { user: unix_user() }
    }

    /// Who a request through the server comes from: the token holder the server let
    /// through, or no one (a route that needs no token), and the client's address.
    pub fn remote(holder: Option<&Principal>, peer: Option<IpAddr>) -> Actor {
        match holder {
            Some(p) => Actor::Token {
                holder: p.clone(),
                peer,
            },
            None => Actor::Anonymous { peer },
        }
    }

    /// The token holder, when the checks apply.
    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Actor::Token { holder, .. } => Some(holder),
            _ => None,
        }
    }

    /// The client's address, for a request through the server.
    pub fn peer(&self) -> Option<IpAddr> {
        match self {
            Actor::Token { peer, .. } | Actor::Anonymous { peer } => *peer,
            _ => None,
        }
    }
}

/// `{"kind":"token","user":..,"token":ID}` (the token's id, never its secret), `{"kind":
/// "anonymous"}`, `{"kind":"cli","user":..}`, `{"kind":"server"}`; with `"peer":ADDRESS`
/// for a request through the server.
impl Serialize for Actor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(tag = "kind", rename_all = "kebab-case")]
        enum Shown<'a> {
            Token {
                user: &'a str,
                token: u64,
                #[serde(skip_serializing_if = "Option::is_none")]
                peer: Option<IpAddr>,
            },
            Anonymous {
                #[serde(skip_serializing_if = "Option::is_none")]
                peer: Option<IpAddr>,
            },
            Cli {
                user: &'a str,
            },
            Server,
        }
        match self {
            Actor::Token { holder, peer } => Shown::Token {
                user: &holder.user,
                token: holder.token,
                peer: *peer,
            },
            Actor::Anonymous { peer } => Shown::Anonymous { peer: *peer },
            Actor::Cli { user } => Shown::Cli { user },
            Actor::Server => Shown::Server,
        }
        .serialize(s)
    }
}

impl std::fmt::Display for Actor {
    /// `user alice (token 3)`, `anonymous`, `cli user pi`, `server`: for logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::Token { holder, .. } => {
                write!(f, "user {} (token {})", holder.user, holder.token)
            }
            Actor::Anonymous { .. } => f.write_str("anonymous"),
            Actor::Cli { user } => write!(f, "cli user {user}"),
            Actor::Server => f.write_str("server"),
        }
    }
}

/// The name of the user this process runs as, from the password database (`USER` when it
/// has no entry, then the uid).
fn unix_user() -> String {
    // SAFETY: getuid cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() };
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: a zeroed passwd is a valid value of a plain C struct; getpwuid_r only writes
    // into it, and into `buf` within the length it is given.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is to live memory of the stated size.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc == 0 && !found.is_null() && !pw.pw_name.is_null() {
        // SAFETY: on success pw_name points to a NUL-terminated string inside `buf`.
        let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
        return name.to_string_lossy().into_owned();
    }
    std::env::var("USER").unwrap_or_else(|_| format!("uid {uid}"))
}

/// A change to the registry.
#[derive(Debug)]
pub enum Command {
    /// A new version of a crate (a publish through the API, or `palletizer add`).
    Publish(CheckedCrate),
    /// Marks a version yanked (`yanked: true`) or not.
    Yank {
        name: CrateName,
        vers: String,
        yanked: bool,
    },
    /// Removes one version, or every version, of a crate (tombstones stay). A deleted
    /// crate's name keeps its owners unless `release_name`: then they are forgotten too and
    /// the name is free for anyone who may publish new crates.
    Delete {
        name: CrateName,
        vers: Option<String>,
        release_name: bool,
    },
    AddOwners {
        krate: String,
        users: Vec<String>,
    },
    RemoveOwners {
        krate: String,
        users: Vec<String>,
    },
    AddUser {
        name: String,
        admin: bool,
    },
    /// Removes a user: their tokens are revoked and they leave every owner list.
    RemoveUser {
        name: String,
    },
    CreateToken(NewToken),
    RevokeToken {
        id: u64,
    },
    /// When tokens were last used: `(token id, unix seconds)`. Bookkeeping: no event.
    RecordTokenUse(Vec<(u64, u64)>),
    /// Zero-config start: the admin user and one token, when no user exists yet.
    FirstAdmin,
    /// Sets the access mode (`palletizer.toml`, then `config.json`, committed).
    SetAccess(Access),
    /// Makes `config.json` say what the access setting says (after a hand edit).
    SyncAccess,
    /// Replaces the index's git history with one commit of the current tree.
    SquashIndex,
    /// Stores a version's rustdoc output (checked and unpacked before the lock by
    /// [`Registry::check_docs`]), replacing the docs it had.
    UploadDocs(CheckedDocs),
    /// Removes the docs of one version, or of every version, of a crate.
    RemoveDocs {
        name: CrateName,
        vers: Option<String>,
    },
}

/// What a command did, for the caller to report.
#[derive(Debug)]
pub enum Outcome {
    Published(IndexEntry),
    /// False when the version already was in the state asked for.
    Yanked {
        changed: bool,
    },
    /// The versions removed (none when only a deleted crate's name was released).
    Deleted {
        versions: Vec<String>,
    },
    /// The message cargo prints.
    OwnersChanged {
        msg: String,
    },
    UserAdded(User),
    UserRemoved {
        revoked: usize,
    },
    /// The stored token and its secret, which is never stored: shown once, never in an event.
    TokenCreated {
        token: Token,
        secret: String,
    },
    /// False when it already was revoked.
    TokenRevoked {
        token: Token,
        fresh: bool,
    },
    TokenUseRecorded,
    /// The first admin token's secret; `None` when users existed already.
    FirstAdmin {
        secret: Option<String>,
    },
    AccessSet(Box<Settings>),
    /// Whether `config.json` had to change.
    AccessSynced {
        changed: bool,
    },
    /// The one commit left, and what packing it did.
    IndexSquashed {
        head: String,
        packed: git::Packed,
    },
    /// The crate and version (as the index spells them) whose docs were stored.
    DocsUploaded {
        name: String,
        vers: String,
    },
    /// The versions whose docs were removed.
    DocsRemoved {
        versions: Vec<String>,
    },
}

/// A command's outcome and the events it caused, in the order they happened.
#[derive(Debug)]
pub struct Applied {
    pub outcome: Outcome,
    pub events: Vec<Event>,
}

/// One change that happened: what, by whom, when. Serialized as one flat JSON object (an
/// audit log line, a webhook body): `{"at":..,"actor":{"kind":"token","user":..,"token":..},
/// "change":"published","name":..,..}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Unix seconds, the clock of `auth.json`.
    pub at: u64,
    pub actor: Actor,
    #[serde(flatten)]
    pub change: Change,
}

/// What changed. Crate names are spelled as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
pub enum Change {
    Published {
        name: String,
        vers: String,
        /// SHA-256 of the crate file.
        cksum: String,
        /// The crate had no version in the index before (a new crate, or a deleted crate's
        /// name published again).
        new_crate: bool,
    },
    Yanked {
        name: String,
        vers: String,
    },
    Unyanked {
        name: String,
        vers: String,
    },
    Deleted {
        name: String,
        versions: Vec<String>,
    },
    /// A deleted crate's name was given up: its owners were forgotten.
    NameReleased {
        name: String,
        owners: Vec<String>,
    },
    OwnersAdded {
        name: String,
        users: Vec<String>,
    },
    OwnersRemoved {
        name: String,
        users: Vec<String>,
    },
    UserAdded {
        user: String,
        admin: bool,
    },
    /// The user's tokens were revoked and they left every owner list.
    UserRemoved {
        user: String,
        tokens_revoked: usize,
    },
    TokenCreated {
        id: u64,
        user: String,
        scopes: Scopes,
        crates: Vec<String>,
        expires: Option<u64>,
    },
    TokenRevoked {
        id: u64,
        user: String,
    },
    AccessSet {
        access: Access,
    },
    /// `config.json` was rewritten to follow the access setting.
    ConfigSynced {
        access: Access,
    },
    /// The index's history was replaced by one commit, `head`.
    IndexSquashed {
        head: String,
    },
    /// A version's docs were stored (replacing any it had): `files` files of `bytes` bytes.
    DocsUploaded {
        name: String,
        vers: String,
        files: u64,
        bytes: u64,
    },
    DocsRemoved {
        name: String,
        versions: Vec<String>,
    },
}

/// The action names of events, as webhooks (`events`, `X-Palletizer-Event`) and the audit
/// log name them: one per kind of [`Change`] ([`Change::action`]).
pub const ACTIONS: [&str; 15] = [
    "publish",
    "yank",
    "unyank",
    "delete",
    "name_release",
    "owner_add",
    "owner_remove",
    "user_add",
    "user_remove",
    "token_create",
    "token_revoke",
    "access",
    "squash",
    "docs_upload",
    "docs_remove",
];

impl Change {
    /// Its action name (one of [`ACTIONS`]). A hand edit of the access mode that
    /// `config.json` followed is `access`, as a change made with the CLI is.
    pub fn action(&self) -> &'static str {
        match self {
            Change::Published { .. } => "publish",
            Change::Yanked { .. } => "yank",
            Change::Unyanked { .. } => "unyank",
            Change::Deleted { .. } => "delete",
            Change::NameReleased { .. } => "name_release",
            Change::OwnersAdded { .. } => "owner_add",
            Change::OwnersRemoved { .. } => "owner_remove",
            Change::UserAdded { .. } => "user_add",
            Change::UserRemoved { .. } => "user_remove",
            Change::TokenCreated { .. } => "token_create",
            Change::TokenRevoked { .. } => "token_revoke",
            Change::AccessSet { .. } | Change::ConfigSynced { .. } => "access",
            Change::IndexSquashed { .. } => "squash",
            Change::DocsUploaded { .. } => "docs_upload",
            Change::DocsRemoved { .. } => "docs_remove",
        }
    }
}

impl Event {
    /// Whether the index repository got a new commit: after those, the repository is kept
    /// packed and the kept full-clone answer is made again.
    pub fn moves_index_head(&self) -> bool {
        matches!(
            self.change,
            Change::Published { .. }
                | Change::Yanked { .. }
                | Change::Unyanked { .. }
                | Change::Deleted { .. }
                | Change::AccessSet { .. }
                | Change::ConfigSynced { .. }
                | Change::IndexSquashed { .. }
        )
    }

    /// The crate it concerns, if any.
    pub fn krate(&self) -> Option<&str> {
        match &self.change {
            Change::Published { name, .. }
            | Change::Yanked { name, .. }
            | Change::Unyanked { name, .. }
            | Change::Deleted { name, .. }
            | Change::NameReleased { name, .. }
            | Change::OwnersAdded { name, .. }
            | Change::OwnersRemoved { name, .. }
            | Change::DocsUploaded { name, .. }
            | Change::DocsRemoved { name, .. } => Some(name),
            _ => None,
        }
    }
}

impl Registry {
    /// Runs a command under the registry lock (see the module docs).
    pub fn apply(&self, cmd: Command, actor: &Actor) -> Result<Applied, AuthError> {
        self.apply_at(cmd, actor, auth::now())
    }

    /// [`Registry::apply`] with the clock read by the caller (tests pin it).
    ///
    /// The audit log's lines are written here, for every command alike: the intent before
    /// the command runs, the outcome (from its result and events) after it, both synced
    /// under the lock, before anyone is answered (see [`crate::registry::audit`]).
    pub(crate) fn apply_at(
        &self,
        cmd: Command,
        actor: &Actor,
        now: u64,
    ) -> Result<Applied, AuthError> {
        let _lock = self.lock()?;
        let intent = record::intent(&cmd, actor, now);
        // A publish or a yank journals its crate, synced, before it changes anything; the
        // journal line keeps a copy of the intent, which then needs no sync of its own (the
        // outcome line syncs both). Other commands sync their intent first.
        let journaled = matches!(cmd, Command::Publish(_) | Command::Yank { .. });
        let mut log = match &intent {
            Some(line) => {
                let mut log = self.audit_log()?;
                let at = log.append_as(std::slice::from_ref(line), true, !journaled)?;
                if journaled {
                    *self.intent_note.lock().expect("intent note") =
                        Some(serde_json::to_string(line).expect("audit records serialize"));
                }
                Some((log, at))
            }
            None => None,
        };
        let mut changes = Vec::new();
        let result = self.run_locked(cmd, actor, now, &mut changes);
        *self.intent_note.lock().expect("intent note") = None;
        let events: Vec<Event> = changes
            .into_iter()
            .map(|change| Event {
                at: now,
                actor: actor.clone(),
                change,
            })
            .collect();
        if let (Some((log, at)), Some(intent)) = (&mut log, &intent) {
            let quiet = *actor == Actor::Server && result.is_ok() && events.is_empty();
            let line = record::outcome(intent, result.as_ref().map(drop), &events);
            // The server's own checks that found nothing to do leave no line; a change
            // whose outcome line cannot be written still has its intent line, which the
            // next opening of the log settles.
            let written = match quiet {
                true => log.truncate(*at),
                // A journaled write's lines are synced at the checkpoint (the journal keeps
                // a synced copy of the intent until then).
                false => log.append_as(&[line], false, !journaled).map(drop),
            };
            if let Err(e) = written {
                error!("warning: the audit log's outcome of {}: {e}", intent.action);
            }
        }
        // A command that failed with no commit waiting (a refused publish while idle)
        // leaves no journal behind.
        let deferred = self.deferred.load(std::sync::atomic::Ordering::Relaxed);
        if !deferred || (result.is_err() && !self.needs_checkpoint()) {
            // What the command changed is durable already (the journal and the files it
            // names); this syncs its commit, for callers that run no checkpoints of their own.
            if let Err(e) = self.checkpoint_locked() {
                error!("warning: syncing the index commit: {e}");
            }
        }
        let outcome = result?;
        // Under the lock, before the caller hears of the change: an acknowledged change has
        // its webhook deliveries on disk (`outbox`).
        self.queue_deliveries(&events);
        Ok(Applied { outcome, events })
    }

    fn run_locked(
        &self,
        cmd: Command,
        actor: &Actor,
        now: u64,
        changes: &mut Vec<Change>,
    ) -> Result<Outcome, AuthError> {
        let by = actor.principal();
        Ok(match cmd {
            Command::Publish(checked) => {
                Outcome::Published(self.publish_locked(checked, by, changes)?)
            }
            Command::Yank { name, vers, yanked } => {
                let changed = self.yank_locked(&name, &vers, yanked, by, changes)?;
                Outcome::Yanked { changed }
            }
            Command::Delete {
                name,
                vers,
                release_name,
            } => {
                require_admin(self, by)?;
                let versions = self.delete_locked(&name, vers.as_deref(), release_name, changes)?;
                Outcome::Deleted { versions }
            }
            Command::AddOwners { krate, users } => {
                let (real, msg, added) = auth::change_owners(self, &krate, &users, by, true)?;
                changes.push(Change::OwnersAdded {
                    name: real,
                    users: added,
                });
                Outcome::OwnersChanged { msg }
            }
            Command::RemoveOwners { krate, users } => {
                let (real, msg, removed) = auth::change_owners(self, &krate, &users, by, false)?;
                changes.push(Change::OwnersRemoved {
                    name: real,
                    users: removed,
                });
                Outcome::OwnersChanged { msg }
            }
            Command::UploadDocs(checked) => {
                let (name, vers) = self.upload_docs_locked(checked, by, changes)?;
                Outcome::DocsUploaded { name, vers }
            }
            Command::RemoveDocs { name, vers } => {
                let versions = self.remove_docs_locked(&name, vers.as_deref(), by, changes)?;
                Outcome::DocsRemoved { versions }
            }
            Command::SquashIndex => {
                require_admin(self, by)?;
                let (oid, packed) = git::squash(self.index_dir(), "Squash index history")
                    .map_err(super::Error::from)?;
                let head = oid.to_string();
                changes.push(Change::IndexSquashed { head: head.clone() });
                Outcome::IndexSquashed { head, packed }
            }
            other => self.run_access_locked(other, by, now, changes)?,
        })
    }

    /// The commands on users, tokens and the access mode (lock held).
    fn run_access_locked(
        &self,
        cmd: Command,
        by: Option<&Principal>,
        now: u64,
        changes: &mut Vec<Change>,
    ) -> Result<Outcome, AuthError> {
        Ok(match cmd {
            Command::AddUser { name, admin } => {
                require_admin(self, by)?;
                auth::validate_user_name(&name)?;
                let user = auth::edit(self, |data| data.add_user(&name, admin, now))?;
                changes.push(Change::UserAdded {
                    user: user.name.clone(),
                    admin: user.admin,
                });
                Outcome::UserAdded(user)
            }
            Command::RemoveUser { name } => {
                require_admin(self, by)?;
                let (user, revoked) = auth::edit(self, |data| data.remove_user(&name, now))?;
                changes.push(Change::UserRemoved {
                    user,
                    tokens_revoked: revoked,
                });
                Outcome::UserRemoved { revoked }
            }
            Command::CreateToken(req) => {
                require_admin(self, by)?;
                let (token, secret) = auth::create_token_in(self, req, now)?;
                changes.push(token_created(&token));
                Outcome::TokenCreated { token, secret }
            }
            Command::RevokeToken { id } => {
                require_admin(self, by)?;
                let (token, fresh) = auth::edit(self, |data| data.revoke_token(id, now))?;
                if fresh {
                    changes.push(Change::TokenRevoked {
                        id,
                        user: token.user.clone(),
                    });
                }
                Outcome::TokenRevoked { token, fresh }
            }
            Command::RecordTokenUse(uses) => {
                if !uses.is_empty() {
                    auth::edit(self, |data| {
                        data.record_use(&uses);
                        Ok(())
                    })?;
                }
                Outcome::TokenUseRecorded
            }
            Command::FirstAdmin => {
                require_admin(self, by)?;
                let made = auth::first_admin_in(self, now)?;
                if let Some((user, token, _)) = &made {
                    changes.push(Change::UserAdded {
                        user: user.name.clone(),
                        admin: true,
                    });
                    changes.push(token_created(token));
                }
                Outcome::FirstAdmin {
                    secret: made.map(|(_, _, secret)| secret),
                }
            }
            Command::SetAccess(access) => {
                require_admin(self, by)?;
                let (settings, changed) = auth::set_access_locked(self, access)?;
                if changed {
                    changes.push(Change::AccessSet { access });
                }
                Outcome::AccessSet(Box::new(settings))
            }
            Command::SyncAccess => {
                let (settings, changed) = auth::sync_config_json_locked(self)?;
                if changed {
                    changes.push(Change::ConfigSynced {
                        access: settings.access,
                    });
                }
                Outcome::AccessSynced { changed }
            }
            Command::Publish(_)
            | Command::Yank { .. }
            | Command::Delete { .. }
            | Command::AddOwners { .. }
            | Command::RemoveOwners { .. }
            | Command::UploadDocs(_)
            | Command::RemoveDocs { .. }
            | Command::SquashIndex => unreachable!("crate commands are run by run_locked"),
        })
    }
}

/// Deletes, squashes, users, tokens and the access mode are the administrator's: the CLI
/// (and the server for its own bookkeeping) needs nothing, a token holder must be an admin,
/// checked against the current file (no API route asks for one of these yet).
fn require_admin(reg: &Registry, by: Option<&Principal>) -> Result<(), AuthError> {
    if let Some(p) = by {
        auth::authorize_admin(&AuthFile::load(reg)?, p)?;
    }
    Ok(())
}

fn token_created(t: &Token) -> Change {
    Change::TokenCreated {
        id: t.id,
        user: t.user.clone(),
        scopes: t.scopes,
        crates: t.crates.clone(),
        expires: t.expires,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::auth::{scratch_registry, AuthView, Need, Refusal};
    use crate::registry::publish::tarball::testing::simple_crate;

    /// A user and a token holder of theirs with every scope.
    fn holder(reg: &Registry, user: &str, admin: bool) -> Actor {
        reg.add_user(user, admin, auth::now()).unwrap();
        let req = NewToken {
            user: user.into(),
            ..NewToken::default()
        };
        let (_, secret) = reg.create_token(req, auth::now()).unwrap();
        let view = AuthView::load(reg.root()).unwrap();
        let p = view
            .authorize(Some(&secret), Need::Publish, None, auth::now())
            .unwrap();
        Actor::remote(Some(&p), None)
    }

    fn publish(
        reg: &Registry,
        name: &str,
        vers: &str,
        actor: &Actor,
    ) -> Result<Applied, AuthError> {
        let checked = reg
            .check_upload(None, &simple_crate(name, vers, &[])[..])
            .unwrap();
        reg.apply(Command::Publish(checked), actor)
    }

    fn delete(reg: &Registry, name: &str, release_name: bool) -> Result<Applied, AuthError> {
        let cmd = Command::Delete {
            name: CrateName::parse(name).unwrap(),
            vers: None,
            release_name,
        };
        reg.apply(cmd, &Actor::cli())
    }

    fn owners(reg: &Registry, name: &str) -> Vec<String> {
        AuthFile::load(reg).unwrap().recorded_owners(name).to_vec()
    }

    fn changes(a: &Applied) -> Vec<&Change> {
        a.events.iter().map(|e| &e.change).collect()
    }

    /// What broke: after `delete foo`, anyone with publish-new published `foo 2.0.0` and
    /// became its only owner.
    #[test]
    fn a_deleted_crates_name_stays_with_its_owners_until_released() {
        let (_t, reg) = scratch_registry();
        let alice = holder(&reg, "alice", false);
        let bob = holder(&reg, "bob", false);
        let root = holder(&reg, "root", true);
        let first = publish(&reg, "foo", "1.0.0", &alice).unwrap();
        assert_eq!(
            changes(&first)[1],
            &Change::OwnersAdded {
                name: "foo".into(),
                users: vec!["alice".into()]
            }
        );
        assert_eq!(first.events[0].actor, alice);
        delete(&reg, "Foo", false).unwrap();
        assert_eq!(owners(&reg, "foo"), ["alice"]);

        let e = publish(&reg, "foo", "2.0.0", &bob).unwrap_err();
        assert!(
            matches!(&e, AuthError::Refused(Refusal::NameKept { user, krate })
                if user == "bob" && krate == "foo"),
            "{e}"
        );
        assert!(e.to_string().contains("deleted crate `foo`"), "{e}");
        assert!(reg
            .entries(&CrateName::parse("foo").unwrap())
            .unwrap()
            .is_empty());
        assert_eq!(owners(&reg, "foo"), ["alice"], "a refusal changes no owner");
        // Nor under another spelling of the same name.
        assert!(publish(&reg, "FOO", "2.0.0", &bob).is_err());

        publish(&reg, "foo", "2.0.0", &alice).unwrap();
        publish(&reg, "foo", "3.0.0", &root).unwrap();
        assert_eq!(
            owners(&reg, "foo"),
            ["alice"],
            "the owners stay as they were"
        );

        // Given up: the owners are forgotten, the version numbers stay taken.
        let released = delete(&reg, "foo", true).unwrap();
        assert_eq!(
            changes(&released)[1],
            &Change::NameReleased {
                name: "foo".into(),
                owners: vec!["alice".into()]
            }
        );
        assert!(owners(&reg, "foo").is_empty());
        let again = publish(&reg, "foo", "3.0.0", &bob).unwrap_err();
        assert!(again.to_string().contains("was deleted on"), "{again}");
        publish(&reg, "foo", "4.0.0", &bob).unwrap();
        assert_eq!(owners(&reg, "foo"), ["bob"]);
    }

    #[test]
    fn a_crate_without_recorded_owners_keeps_its_name_for_the_admins() {
        let (_t, reg) = scratch_registry();
        let bob = holder(&reg, "bob", false);
        let root = holder(&reg, "root", true);
        // Added at the command line: no owner is recorded, the crate is the admins'.
        reg.add_file(&write_crate(&reg, "legacy", "1.0.0")).unwrap();
        delete(&reg, "legacy", false).unwrap();
        assert!(matches!(
            publish(&reg, "legacy", "2.0.0", &bob),
            Err(AuthError::Refused(Refusal::NameKept { .. }))
        ));
        publish(&reg, "legacy", "2.0.0", &root).unwrap();
        assert!(
            owners(&reg, "legacy").is_empty(),
            "an admin's publish takes no name"
        );

        // A name deleted earlier can be given up later; an unknown one cannot.
        delete(&reg, "legacy", false).unwrap();
        let released = delete(&reg, "legacy", true).unwrap();
        assert!(matches!(
            released.outcome,
            Outcome::Deleted { ref versions } if versions.is_empty()
        ));
        assert_eq!(
            changes(&released),
            [&Change::NameReleased {
                name: "legacy".into(),
                owners: Vec::new()
            }]
        );
        assert!(!released.events[0].moves_index_head());
        publish(&reg, "legacy", "3.0.0", &bob).unwrap();
        assert_eq!(owners(&reg, "legacy"), ["bob"]);
        for name in ["nothere", "legacy-two"] {
            let e = delete(&reg, name, true).unwrap_err();
            assert!(e.to_string().contains("does not exist"), "{name}: {e}");
        }
        let with_version = Command::Delete {
            name: CrateName::parse("legacy").unwrap(),
            vers: Some("3.0.0".into()),
            release_name: true,
        };
        let e = reg.apply(with_version, &Actor::cli()).unwrap_err();
        assert!(e.to_string().contains("name no version"), "{e}");
        assert_eq!(owners(&reg, "legacy"), ["bob"]);
    }

    fn write_crate(reg: &Registry, name: &str, vers: &str) -> std::path::PathBuf {
        let path = reg.root().join(format!("{name}-{vers}.crate"));
        std::fs::write(&path, simple_crate(name, vers, &[])).unwrap();
        path
    }

    #[test]
    fn every_change_is_told_as_events_without_secrets() {
        let (_t, reg) = scratch_registry();
        let cli = Actor::cli();
        let Actor::Cli { user } = &cli else {
            unreachable!()
        };
        assert!(!user.is_empty());
        let add = reg
            .apply(
                Command::AddUser {
                    name: "alice".into(),
                    admin: false,
                },
                &cli,
            )
            .unwrap();
        assert_eq!(
            changes(&add),
            [&Change::UserAdded {
                user: "alice".into(),
                admin: false
            }]
        );
        let made = reg
            .apply(
                Command::CreateToken(NewToken {
                    user: "alice".into(),
                    ..NewToken::default()
                }),
                &cli,
            )
            .unwrap();
        let Outcome::TokenCreated { secret, .. } = &made.outcome else {
            panic!("{:?}", made.outcome)
        };
        let told = format!("{:?}", made.events);
        assert!(told.contains("TokenCreated"), "{told}");
        assert!(!told.contains(&secret[4..]), "a secret in an event: {told}");
        let line = serde_json::to_string(&made.events).unwrap();
        assert!(!line.contains(&secret[4..]), "a secret in an event: {line}");
        let json = serde_json::to_value(&made.events[0]).unwrap();
        assert_eq!(json["change"], "token-created");
        assert_eq!(json["user"], "alice");
        assert_eq!(json["actor"]["kind"], "cli");
        assert_eq!(json["actor"]["user"], user.as_str());

        let alice = holder(&reg, "alice2", false);
        let published = publish(&reg, "bar", "1.0.0", &alice).unwrap();
        assert!(published.events[0].moves_index_head());
        assert_eq!(published.events[0].krate(), Some("bar"));
        let json = serde_json::to_value(&published.events[0]).unwrap();
        assert_eq!(json["change"], "published");
        assert_eq!(
            (&json["name"], &json["vers"]),
            (&"bar".into(), &"1.0.0".into())
        );
        assert_eq!(json["actor"]["kind"], "token");
        assert_eq!(json["actor"]["user"], "alice2");
        assert!(json["at"].as_u64().unwrap() > 1_700_000_000);
        let yank = |yanked| Command::Yank {
            name: CrateName::parse("bar").unwrap(),
            vers: "1.0.0".into(),
            yanked,
        };
        let y = reg.apply(yank(true), &alice).unwrap();
        assert_eq!(
            changes(&y),
            [&Change::Yanked {
                name: "bar".into(),
                vers: "1.0.0".into()
            }]
        );
        // Nothing changed, nothing told: no maintenance follows.
        let again = reg.apply(yank(true), &alice).unwrap();
        assert!(again.events.is_empty());
        let mallory = holder(&reg, "mallory", false);
        let refused = reg.apply(yank(false), &mallory).unwrap_err();
        assert!(
            matches!(refused, AuthError::Refused(Refusal::NotOwner { .. })),
            "{refused}"
        );
        // Users and tokens are the administrator's, never a token holder's.
        let e = reg
            .apply(
                Command::RemoveUser {
                    name: "alice".into(),
                },
                &mallory,
            )
            .unwrap_err();
        assert!(
            matches!(e, AuthError::Refused(Refusal::NotAdmin { .. })),
            "{e}"
        );
        let set = reg
            .apply(Command::SetAccess(Access::Private), &cli)
            .unwrap();
        assert!(set.events.iter().all(Event::moves_index_head));
        assert_eq!(set.events.len(), 1);
    }

    /// A first publish writes its owner before its index commit: cut short in between (the
    /// journal names the crate), the owner goes at the next open; a deleted crate's kept
    /// name keeps its owners.
    #[test]
    fn a_first_publish_cut_short_leaves_no_owner_behind() {
        let (_t, reg) = scratch_registry();
        let alice = holder(&reg, "alice", false);
        publish(&reg, "kept", "1.0.0", &alice).unwrap();
        delete(&reg, "kept", false).unwrap();
        auth::edit(&reg, |data| data.set_first_owner("ghost", "alice")).unwrap();
        let journal = reg.root().join(crate::registry::store::JOURNAL_FILE);
        std::fs::write(&journal, "ghost\nkept\n").unwrap();
        let reopened = Registry::open(reg.root()).unwrap();
        assert!(owners(&reopened, "ghost").is_empty());
        assert_eq!(owners(&reopened, "kept"), ["alice"]);
        assert!(!journal.exists());
    }
}
