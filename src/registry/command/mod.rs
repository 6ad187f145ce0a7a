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

use super::audit::{AuditRecord, Log};
use super::auth::{self, AuthError, AuthFile, NewToken, Principal, Scopes, Token, User};
use super::index::git;
use super::settings::{Access, Settings};
use super::store::Journaled;
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

/// A command's intent line in the audit log: where it starts, for the outcome that follows.
struct Audited {
    log: Log,
    at: u64,
    intent: AuditRecord,
}

/// An intent as the journal line keeps it.
fn intent_line(intent: &AuditRecord) -> String {
    serde_json::to_string(intent).expect("audit records serialize")
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
        // A publish or a yank journals its crate, synced, before it changes anything; the
        // journal line keeps a copy of the intent, which then needs no sync of its own (the
        // outcome line syncs both). Other commands sync their intent first.
        let journaled = matches!(cmd, Command::Publish(_) | Command::Yank { .. });
        let audit = self.audit_intent(&cmd, actor, now, journaled)?;
        if journaled {
            *self.intent_note.lock().expect("intent note") =
                audit.as_ref().map(|a| intent_line(&a.intent));
        }
        let mut changes = Vec::new();
        let result = self.run_locked(cmd, actor, now, &mut changes);
        *self.intent_note.lock().expect("intent note") = None;
        let applied = self.audit_outcome(audit, actor, now, result, changes, journaled);
        // A command that failed with no commit waiting (a refused publish while idle)
        // leaves no journal behind.
        self.checkpoint_unless_deferred(applied.is_err());
        let applied = applied?;
        // Under the lock, before the caller hears of the change: an acknowledged change has
        // its webhook deliveries on disk (`outbox`).
        self.queue_deliveries(&applied.events);
        Ok(applied)
    }

    /// Publishes that came in together (the server's writer takes every publish waiting),
    /// under one lock: each is decided on its own as [`Registry::apply`] would, their
    /// journal lines are written and synced once, then each is written and committed in
    /// turn (one commit each) and answered. A publish that is refused or fails changes
    /// nothing for the others. Two publishes of one crate are never planned together: the
    /// later one goes into the next group, planned once the earlier is written.
    pub fn apply_publishes(
        &self,
        jobs: Vec<(CheckedCrate, Actor)>,
    ) -> Vec<Result<Applied, AuthError>> {
        let now = auth::now();
        let mut out: Vec<Option<Result<Applied, AuthError>>> = jobs.iter().map(|_| None).collect();
        let mut group = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, (checked, actor)) in jobs.into_iter().enumerate() {
            if !names.insert(checked.name().canonical()) {
                self.publish_group(std::mem::take(&mut group), now, &mut out);
                names.clear();
                names.insert(checked.name().canonical());
            }
            group.push((i, checked, actor));
        }
        self.publish_group(group, now, &mut out);
        out.into_iter()
            .map(|r| r.expect("every publish of a batch is answered"))
            .collect()
    }

    /// One group of [`Registry::apply_publishes`]: publishes of different crates.
    fn publish_group(
        &self,
        group: Vec<(usize, CheckedCrate, Actor)>,
        now: u64,
        out: &mut [Option<Result<Applied, AuthError>>],
    ) {
        let lock = match group.len() {
            0 => return,
            1 => None,
            _ => self.lock().ok(),
        };
        // The audit log opens (settling what a crash left) before anything is decided; one
        // that cannot has each publish run alone, and say so itself.
        let log = lock.as_ref().and_then(|_| self.audit_log().ok());
        let (Some(_lock), Some(_)) = (lock, log) else {
            for (i, checked, actor) in group {
                out[i] = Some(self.apply_at(Command::Publish(checked), &actor, now));
            }
            return;
        };
        // Each publish's intent and outcome lines are written together once it is decided
        // (the log holds at most one unfinished intent, its last line); until then its
        // journal line keeps a synced copy of the intent, which recovery writes back.
        let mut queue = std::collections::VecDeque::new();
        for (i, checked, actor) in group {
            let cmd = Command::Publish(checked);
            let intent = record::intent(&cmd, &actor, now);
            let Command::Publish(checked) = cmd else {
                unreachable!("the command is the publish made above")
            };
            match self.plan_publish(checked, actor.principal()) {
                Ok(planned) => queue.push_back((i, actor, intent, planned)),
                Err(e) => out[i] = Some(self.audit_late(intent, &actor, now, Err(e), vec![])),
            }
        }
        // Lines are written together; a failure to write them has each publish try its own.
        let mut one_at_a_time = false;
        let mut auth_changed = false;
        while !queue.is_empty() {
            let take = if one_at_a_time { 1 } else { queue.len() };
            let lines: Vec<Journaled<'_>> = queue
                .iter()
                .take(take)
                .map(|(_, _, intent, planned)| Journaled {
                    name: &planned.name,
                    redo: &planned.redo,
                    intent: intent.as_ref().map(intent_line),
                })
                .collect();
            let marks = match self.journal_all(&lines) {
                Ok(marks) => marks,
                Err(_) if take > 1 => {
                    one_at_a_time = true;
                    continue;
                }
                Err(e) => {
                    let (i, actor, intent, _) = queue.pop_front().expect("one was taken");
                    out[i] = Some(self.audit_late(intent, &actor, now, Err(e.into()), vec![]));
                    continue;
                }
            };
            for mark in marks {
                let (i, actor, intent, planned) = queue.pop_front().expect("one line each");
                let owner = planned.has_first_owner();
                let mut changes = Vec::new();
                let result = self
                    .finish_publish(planned, mark, auth_changed, &mut changes)
                    .map(Outcome::Published);
                // Written, or written and put back: the later publishes' reads are stale.
                auth_changed |= owner;
                let failed = result.is_err();
                let applied = self.audit_late(intent, &actor, now, result, changes);
                if let Ok(a) = &applied {
                    self.queue_deliveries(&a.events);
                }
                out[i] = Some(applied);
                if failed {
                    // Its line was taken back with every line after it: those are written
                    // again before their publishes go on.
                    break;
                }
            }
        }
        self.checkpoint_unless_deferred(!self.needs_checkpoint());
    }

    /// The audit log's intent line of a command about to run (lock held): synced unless the
    /// command is `journaled` (its journal line keeps a synced copy).
    fn audit_intent(
        &self,
        cmd: &Command,
        actor: &Actor,
        now: u64,
        journaled: bool,
    ) -> Result<Option<Audited>, AuthError> {
        let Some(intent) = record::intent(cmd, actor, now) else {
            return Ok(None);
        };
        let mut log = self.audit_log()?;
        let at = log.append_as(std::slice::from_ref(&intent), true, !journaled)?;
        Ok(Some(Audited { log, at, intent }))
    }

    /// The audit lines of a journaled command of a batch, intent and outcome, written once
    /// it ran (lock held). A log that cannot take them is a warning: the change stands,
    /// and its journal line keeps the intent until the checkpoint.
    fn audit_late(
        &self,
        intent: Option<AuditRecord>,
        actor: &Actor,
        now: u64,
        result: Result<Outcome, AuthError>,
        changes: Vec<Change>,
    ) -> Result<Applied, AuthError> {
        let audit = intent.and_then(|intent| {
            let mut log = self.audit_log().ok()?;
            match log.append_as(std::slice::from_ref(&intent), true, false) {
                Ok(at) => Some(Audited { log, at, intent }),
                Err(e) => {
                    error!("warning: the audit log's intent of {}: {e}", intent.action);
                    None
                }
            }
        });
        self.audit_outcome(audit, actor, now, result, changes, true)
    }

    /// The audit log's outcome line of a command that ran (lock held), and its events.
    fn audit_outcome(
        &self,
        audit: Option<Audited>,
        actor: &Actor,
        now: u64,
        result: Result<Outcome, AuthError>,
        changes: Vec<Change>,
        journaled: bool,
    ) -> Result<Applied, AuthError> {
        let events: Vec<Event> = changes
            .into_iter()
            .map(|change| Event {
                at: now,
                actor: actor.clone(),
                change,
            })
            .collect();
        if let Some(Audited {
            mut log,
            at,
            intent,
        }) = audit
        {
            let quiet = *actor == Actor::Server && result.is_ok() && events.is_empty();
            let line = record::outcome(&intent, result.as_ref().map(drop), &events);
            // The server's own checks that found nothing to do leave no line; a change
            // whose outcome line cannot be written still has its intent line, which the
            // next opening of the log settles.
            let written = match quiet {
                true => log.truncate(at),
                // A journaled write's lines are synced at the checkpoint (the journal keeps
                // a synced copy of the intent until then).
                false => log.append_as(&[line], false, !journaled).map(drop),
            };
            if let Err(e) = written {
                error!("warning: the audit log's outcome of {}: {e}", intent.action);
            }
        }
        Ok(Applied {
            outcome: result?,
            events,
        })
    }

    /// Syncs the index commit of a command just run (lock held), for callers that run no
    /// checkpoints of their own; a server's writer does, unless nothing waits for one
    /// (`idle`: a refused publish while idle leaves no journal behind). What a journaled
    /// command changed is durable already (the journal and the files it names).
    fn checkpoint_unless_deferred(&self, idle: bool) {
        let deferred = self.deferred.load(std::sync::atomic::Ordering::Relaxed);
        if !deferred || (idle && !self.needs_checkpoint()) {
            if let Err(e) = self.checkpoint_locked() {
                error!("warning: syncing the index commit: {e}");
            }
        }
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

    /// A batch as the server's writer takes it: each publish decided alone (a refusal or
    /// a conflict touches no other), the first owners of two new crates both recorded (the
    /// second planned before the first was written), two versions of one crate put in
    /// order, and one commit per publish.
    #[test]
    fn publishes_taken_together_are_decided_one_by_one_and_committed_one_each() {
        let (_t, reg) = scratch_registry();
        let alice = holder(&reg, "alice", false);
        let bob = holder(&reg, "bob", false);
        publish(&reg, "taken", "1.0.0", &alice).unwrap();
        let job = |name: &str, vers: &str, actor: &Actor| {
            let checked = reg
                .check_upload(None, &simple_crate(name, vers, &[])[..])
                .unwrap();
            (checked, actor.clone())
        };
        let results = reg.apply_publishes(vec![
            job("fresh-a", "1.0.0", &alice),
            job("fresh-b", "1.0.0", &bob),
            job("taken", "1.0.0", &alice),
            job("taken", "1.1.0", &bob),
            job("fresh-a", "1.1.0", &alice),
        ]);
        let said: Vec<Result<(), String>> = results
            .iter()
            .map(|r| r.as_ref().map(drop).map_err(|e| e.to_string()))
            .collect();
        assert!(
            said[0].is_ok() && said[1].is_ok() && said[4].is_ok(),
            "{said:?}"
        );
        assert!(
            said[2].as_ref().unwrap_err().contains("already uploaded"),
            "{said:?}"
        );
        assert!(matches!(results[3], Err(AuthError::Refused(_))), "{said:?}");
        assert_eq!(owners(&reg, "fresh-a"), ["alice"]);
        assert_eq!(owners(&reg, "fresh-b"), ["bob"]);
        assert_eq!(owners(&reg, "taken"), ["alice"]);
        let versions = |name: &str| -> Vec<String> {
            let name = CrateName::parse(name).unwrap();
            reg.entries(&name)
                .unwrap()
                .into_iter()
                .map(|e| e.vers)
                .collect()
        };
        assert_eq!(versions("fresh-a"), ["1.0.0", "1.1.0"]);
        assert_eq!(versions("taken"), ["1.0.0"]);
        assert!(reg
            .crate_path(
                &CrateName::parse("fresh-b").unwrap(),
                &crate::registry::Version::parse("1.0.0").unwrap()
            )
            .is_file());
        let repo = git2::Repository::open(reg.index_dir()).unwrap();
        let mut walk = repo.revwalk().unwrap();
        walk.push_head().unwrap();
        let messages: Vec<String> = walk
            .map(|oid| {
                let c = repo.find_commit(oid.unwrap()).unwrap();
                c.message().unwrap().trim().to_owned()
            })
            .take(4)
            .collect();
        assert_eq!(
            messages,
            [
                "Add fresh-a 1.1.0",
                "Add fresh-b 1.0.0",
                "Add fresh-a 1.0.0",
                "Add taken 1.0.0"
            ]
        );
        // Nothing is left waiting: the batch ended with its checkpoint (no server here).
        assert!(!reg
            .root()
            .join(crate::registry::store::JOURNAL_FILE)
            .exists());
        // The batch's publishes are in the audit log like any other.
        let log = std::fs::read_to_string(reg.root().join("audit.jsonl")).unwrap();
        for krate in ["fresh-a", "fresh-b", "taken"] {
            let outcomes: Vec<&str> = log
                .lines()
                .filter(|l| l.contains(&format!("\"crate\":\"{krate}\"")))
                .map(|l| {
                    l.split("\"outcome\":\"")
                        .nth(1)
                        .unwrap()
                        .split('"')
                        .next()
                        .unwrap()
                })
                .collect();
            let want: &[&str] = match krate {
                "fresh-a" => &["started", "ok", "started", "ok"],
                "fresh-b" => &["started", "ok"],
                _ => &["started", "ok", "started", "failed", "started", "refused"],
            };
            assert_eq!(outcomes, want, "{krate}: {log}");
        }
    }

    /// A publish of a batch that fails while writing (its crate folder cannot be made)
    /// takes back its journal line and nothing else: the publishes after it are journaled
    /// again and written, and the journal holds exactly the publishes that stand.
    #[test]
    fn a_publish_failing_inside_a_batch_leaves_the_others_journaled_and_written() {
        let (_t, reg) = scratch_registry();
        reg.defer_checkpoints();
        let alice = holder(&reg, "alice", false);
        std::fs::create_dir_all(reg.crates_dir()).unwrap();
        std::fs::write(reg.crates_dir().join("broken"), b"not a folder").unwrap();
        let jobs = ["first", "broken", "third"]
            .iter()
            .map(|name| {
                let checked = reg
                    .check_upload(None, &simple_crate(name, "1.0.0", &[])[..])
                    .unwrap();
                (checked, alice.clone())
            })
            .collect();
        let results = reg.apply_publishes(jobs);
        assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
        assert!(
            matches!(results[1], Err(AuthError::Registry(_))),
            "{results:?}"
        );
        let journal =
            std::fs::read_to_string(reg.root().join(crate::registry::store::JOURNAL_FILE)).unwrap();
        let crates: Vec<&str> = journal
            .lines()
            .filter_map(|l| l.split("\"crate\":\"").nth(1))
            .map(|rest| rest.split('"').next().unwrap())
            .collect();
        assert_eq!(crates, ["first", "third"], "{journal}");
        assert!(owners(&reg, "broken").is_empty());
        assert_eq!(owners(&reg, "third"), ["alice"]);
        reg.checkpoint().unwrap();
        let reopened = Registry::open(reg.root()).unwrap();
        let name = CrateName::parse("third").unwrap();
        assert_eq!(reopened.entries(&name).unwrap().len(), 1);
        assert!(reopened
            .entries(&CrateName::parse("broken").unwrap())
            .unwrap()
            .is_empty());
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
