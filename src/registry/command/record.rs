//! What [`Registry::apply`](crate::registry::Registry::apply) writes to the audit log: the
//! intent line a command starts with, made from the command before it runs, and its outcome
//! line, made from what it returned and the events it caused.

use super::{Actor, Change, Command, Event};
use crate::registry::audit::{AuditActor, AuditOutcome, AuditRecord};
use crate::registry::AuthError;

/// The action's name in the log: every command has one, but bookkeeping (tokens' last use)
/// is not a change anyone audits (`None`).
fn action(cmd: &Command) -> Option<&'static str> {
    Some(match cmd {
        Command::Publish(_) => "publish",
        Command::Yank { yanked: true, .. } => "yank",
        Command::Yank { yanked: false, .. } => "unyank",
        Command::Delete { .. } => "delete",
        Command::AddOwners { .. } => "owner_add",
        Command::RemoveOwners { .. } => "owner_remove",
        Command::AddUser { .. } => "user_add",
        Command::RemoveUser { .. } => "user_remove",
        Command::CreateToken(_) => "token_create",
        Command::RevokeToken { .. } => "token_revoke",
        Command::RecordTokenUse(_) => return None,
        Command::FirstAdmin => "first_admin",
        Command::SetAccess(_) => "access",
        Command::SyncAccess => "access_sync",
        Command::SquashIndex => "squash_index",
        Command::UploadDocs(_) => "docs_upload",
        Command::RemoveDocs { .. } => "docs_remove",
    })
}

/// The actor as the log names it (the peer goes in a field of its own).
pub(crate) fn audit_actor(actor: &Actor) -> AuditActor {
    match actor {
        Actor::Token { holder, .. } => AuditActor {
            kind: "token".into(),
            user: Some(holder.user.to_string()),
            token: Some(holder.token),
        },
        Actor::Anonymous { .. } => AuditActor::kind("anonymous"),
        Actor::Cli { user } => AuditActor {
            kind: "cli".into(),
            user: Some(user.clone()),
            token: None,
        },
        Actor::Server => AuditActor::kind("server"),
    }
}

/// The intent line of `cmd` by `actor` at `now`, written before it runs; `None` for what is
/// not audited.
pub(super) fn intent(cmd: &Command, actor: &Actor, now: u64) -> Option<AuditRecord> {
    let mut r = AuditRecord::new(now, action(cmd)?, audit_actor(actor));
    r.peer = actor.peer().map(|p| p.to_string());
    match cmd {
        Command::Publish(c) => {
            r.krate = Some(c.name().to_string());
            r.version = Some(c.vers().to_owned());
        }
        Command::Yank { name, vers, .. } => {
            r.krate = Some(name.to_string());
            r.version = Some(vers.clone());
        }
        Command::Delete { name, vers, .. } => {
            r.krate = Some(name.to_string());
            r.version = vers.clone();
        }
        Command::AddOwners { krate, users } | Command::RemoveOwners { krate, users } => {
            r.krate = Some(krate.clone());
            r.users = users.clone();
        }
        Command::AddUser { name, .. } | Command::RemoveUser { name } => r.user = Some(name.clone()),
        Command::CreateToken(req) => r.user = Some(req.user.clone()),
        Command::RevokeToken { id } => r.token = Some(*id),
        Command::SetAccess(a) => r.access = Some(a.to_string()),
        Command::UploadDocs(d) => {
            r.krate = Some(d.name().to_string());
            r.version = Some(d.vers().to_string());
        }
        Command::RemoveDocs { name, vers } => {
            r.krate = Some(name.to_string());
            r.version = vers.clone();
        }
        Command::RecordTokenUse(_)
        | Command::FirstAdmin
        | Command::SyncAccess
        | Command::SquashIndex => {}
    }
    Some(r)
}

/// The outcome line for `intent`: `ok` with the changes its events tell (and the names they
/// settle: the crate as published, the token made), `unchanged` when there were none, or
/// the refusal or error.
pub(super) fn outcome(
    intent: &AuditRecord,
    result: Result<(), &AuthError>,
    events: &[Event],
) -> AuditRecord {
    let mut r = intent.clone();
    match result {
        Ok(()) if events.is_empty() => r.outcome = AuditOutcome::Unchanged,
        Ok(()) => r.outcome = AuditOutcome::Ok,
        Err(AuthError::Refused(refusal)) => {
            r.outcome = AuditOutcome::Refused;
            r.reason = Some(refusal.to_string());
        }
        Err(e) => {
            r.outcome = AuditOutcome::Failed;
            r.reason = Some(e.to_string());
        }
    }
    for e in events {
        match &e.change {
            Change::Published { name, .. } => r.krate = Some(name.clone()),
            Change::TokenCreated { id, user, .. } if r.action == "token_create" => {
                r.token = Some(*id);
                r.user = Some(user.clone());
            }
            Change::TokenRevoked { user, .. } => r.user = Some(user.clone()),
            _ => {}
        }
        r.changes
            .push(serde_json::to_value(&e.change).expect("changes serialize"));
    }
    r
}
