//! The audit log: `audit.jsonl` at the registry root, beside `palletizer.toml`, one JSON
//! object a line ([`AuditRecord`]) for every change and every refused write: when, what
//! (`action`, `crate`, `version`, the user or token it is about), who (`actor`: a token's
//! user and id, `cli` and the Unix user, `anonymous`, `server`), from where (`peer`, for the
//! server) and how it ended (`outcome`, with the `reason` of a refusal or failure, and the
//! `changes` the command's events describe). Token secrets never reach it: actors and
//! tokens appear by id only.
//!
//! Every line is written under the registry lock, so the CLI and a running server append in
//! turn. The lines of one change are written by [`crate::registry::Registry::apply`], the one
//! write path, from its command and the events it returns; the server's refusals before a
//! command is made (a 401 or 403 of a write route) arrive in batches
//! ([`crate::registry::Registry::audit_refusals`]).
//!
//! Invariant: no change is acknowledged without its line, and no crash leaves a change
//! without one. Under the lock, before the change touches anything, its intent line
//! (`"outcome":"started"`) is appended and synced; after the change, its outcome line, synced,
//! before `apply` returns (and so before any answer goes out). Nothing else is written
//! between them. A publish or a yank syncs its intent in the registry's journal instead,
//! which is synced before the change touches anything, and its two lines reach the disk at
//! the next checkpoint; lines a crash lost are written back from the journal, the outcome
//! as the registry shows it ([`crate::registry::Registry::restore_intents`]). This assumes
//! what a power cut leaves of an appended file is a prefix of it. A crash in between leaves
//! a `started` line last: the next opening of the
//! log (at the next open of the registry, or the next write) appends its outcome as the
//! registry shows it (`ok` or `failed` for crate changes, whose result the index tells;
//! `interrupted` for the rest), so every `started` line is followed by its outcome. A torn
//! last line (a power loss, a full disk) is cut off: its change had not begun, or its intent
//! line stands before it. A change that changed nothing, asked by the server itself (the
//! config check at every start), leaves no line.
//!
//! Size: when an intent line would take the file past `audit-max-bytes`
//! (`palletizer.toml`), `audit.jsonl` becomes `audit.jsonl.1` (the previous one goes) and a
//! new file starts; the two together stay under about twice the setting. Refusals from the
//! server are bounded per second before they get here, so a flood of refused requests costs
//! one write a second and cannot grow the log past its cap.

mod read;

use std::fs::{self, File};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use read::AuditQuery;

use super::store::sync_dir;
use super::{AuthFile, Context, CrateName, Registry, Result};

/// The audit log, at the registry root.
pub const AUDIT_FILE: &str = "audit.jsonl";
/// The log before the last rotation.
pub const AUDIT_OLD_FILE: &str = "audit.jsonl.1";
/// The longest last line looked at when the log is opened: intent lines are far shorter.
const TAIL: u64 = 64 * 1024;
/// Refusals one batch from the server may add (more are counted, in one line).
pub const MAX_REFUSALS_PER_BATCH: usize = 64;
/// The longest crate or version text a refusal line keeps (a path segment can be long).
const MAX_FIELD: usize = 200;

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339, UTC, seconds.
    pub time: String,
    /// `publish`, `yank`, `unyank`, `delete`, `owner_add`, `owner_remove`, `user_add`,
    /// `user_remove`, `token_create`, `token_revoke`, `access`, `access_sync`,
    /// `first_admin`, `squash_index`, `restore`; `refusals_dropped` for refusals not logged.
    pub action: String,
    #[serde(rename = "crate", default, skip_serializing_if = "Option::is_none")]
    pub krate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The user a user or token command is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The users an owner change names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// The id of the token a token command is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
    /// The access mode asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
    pub actor: AuditActor,
    /// The client's address (IPv4 or IPv6), for what came through the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    pub outcome: AuditOutcome,
    /// Why it was refused or failed; what a restore restored; how an interrupted change
    /// was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What changed, as the command's events tell it (`{"change":"published",..}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<serde_json::Value>,
}

/// Who asked, as the log shows it: `{"kind":"token","user":..,"token":ID}`,
/// `{"kind":"cli","user":UNIX_USER}`, `{"kind":"anonymous"}`, `{"kind":"server"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditActor {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
}

impl std::fmt::Display for AuditActor {
    /// `alice (token 3)`, `cli pi`, `anonymous`, `server`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.kind.as_str(), &self.user, self.token) {
            ("token", Some(u), Some(t)) => write!(f, "{u} (token {t})"),
            ("token", None, Some(t)) => write!(f, "token {t}"),
            ("cli", Some(u), _) => write!(f, "cli {u}"),
            (kind, _, _) => f.write_str(kind),
        }
    }
}

/// How a change ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// The intent line, written before the change begins; its outcome follows it.
    Started,
    Ok,
    /// Allowed, and nothing needed to change (a yank of a yanked version).
    Unchanged,
    /// Refused by access control (who may do what), with the reason.
    Refused,
    /// Failed, with the error; nothing was changed.
    Failed,
    /// The process ended during the change, and the registry cannot tell how far it got:
    /// it holds either the old state or the new one.
    Interrupted,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Started => "started",
            AuditOutcome::Ok => "ok",
            AuditOutcome::Unchanged => "unchanged",
            AuditOutcome::Refused => "refused",
            AuditOutcome::Failed => "failed",
            AuditOutcome::Interrupted => "interrupted",
        }
    }
}

/// A write the server refused before it became a command (its access check, at the event
/// loop): what the route would have done, the token it named (by id), from where, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRefusal {
    /// Unix seconds.
    pub at: u64,
    pub action: &'static str,
    pub krate: Option<String>,
    pub version: Option<String>,
    /// The token presented, when the refusal names it (expired, revoked, not enough scope).
    pub token: Option<u64>,
    pub peer: Option<IpAddr>,
    pub reason: String,
}

/// `time` for unix seconds.
pub fn rfc3339(secs: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The log opened for appending, lock held.
pub(crate) struct Log {
    file: File,
    root: PathBuf,
    len: u64,
    max: u64,
    /// Bytes of a torn last line cut off when it was opened.
    cut: u64,
}

impl Registry {
    /// Opens the audit log to append to it (lock held): a torn last line is cut off, and a
    /// change a crash interrupted gets its outcome line (see the module docs).
    pub(crate) fn audit_log(&self) -> Result<Log> {
        Ok(self.open_audit_log()?.0)
    }

    /// [`Registry::audit_log`], and what it repaired.
    fn open_audit_log(&self) -> Result<(Log, Vec<String>)> {
        let mut log = Log::open(self.root(), self.settings().audit_max_bytes)?;
        let mut done = Vec::new();
        if log.cut > 0 {
            done.push(format!(
                "cut a torn last line of {AUDIT_FILE} ({} bytes)",
                log.cut
            ));
        }
        if let Some(started) = log.unfinished()? {
            let settled = self.settle(started);
            done.push(format!(
                "wrote the outcome of the {} a crash interrupted to {AUDIT_FILE}",
                settled.action
            ));
            log.append(&[settled], false)?;
        }
        Ok((log, done))
    }

    /// What the registry says of a change whose process ended before its outcome line: a
    /// crate change shows in the index (recovery has finished or undone it by now); the rest
    /// is whichever of the old or new state the atomic rewrite of its file left.
    fn settle(&self, mut r: AuditRecord) -> AuditRecord {
        let found = match (r.action.as_str(), &r.krate) {
            ("publish" | "yank" | "unyank" | "delete", Some(krate)) => CrateName::parse(krate)
                .ok()
                .and_then(|name| self.entries(&name).ok())
                .map(|entries| {
                    let this = entries
                        .iter()
                        .find(|e| Some(e.vers.as_str()) == r.version.as_deref());
                    match r.action.as_str() {
                        "publish" => this.is_some(),
                        "yank" => this.is_some_and(|e| e.yanked),
                        "unyank" => this.is_some_and(|e| !e.yanked),
                        _ if r.version.is_none() => entries.is_empty(),
                        _ => this.is_none(),
                    }
                }),
            _ => None,
        };
        let (outcome, how) = match found {
            Some(true) => (AuditOutcome::Ok, "it is in place"),
            Some(false) => (AuditOutcome::Failed, "it was undone"),
            None => (
                AuditOutcome::Interrupted,
                "the registry holds the old state or the new one",
            ),
        };
        r.outcome = outcome;
        r.reason = Some(format!(
            "the process ended during the change, before its outcome was written; found at \
             the next open: {how}"
        ));
        r
    }

    /// Settles what a crash left in the log (lock held): part of opening the registry.
    /// Returns what it did.
    pub(crate) fn recover_audit(&self) -> Result<Vec<String>> {
        Ok(self.open_audit_log()?.1)
    }

    /// Writes back the audit lines of journaled writes that a crash lost (lock held, after
    /// the registry's repairs): a publish or yank syncs its intent in the journal only, and
    /// the log's lines at the next checkpoint. Each intent (the journal's copy) missing from
    /// the end of the log comes back with its outcome as the repaired registry shows it.
    /// Returns how many came back.
    pub(crate) fn restore_intents(&self, intents: &[String]) -> Result<usize> {
        if intents.is_empty() {
            return Ok(0);
        }
        let mut log = Log::open(self.root(), self.settings().audit_max_bytes)?;
        let (_, tail) = log.tail(TAIL)?;
        let mut missing: Vec<&String> = intents
            .iter()
            .filter(|line| {
                let wanted = format!("{line}\n");
                !tail.windows(wanted.len()).any(|w| w == wanted.as_bytes())
            })
            .collect();
        if !missing.is_empty() {
            // Further back (later lines pushed them out of the tail, or into the rotated
            // file): both files, a line at a time. Only after a crash, with a journal left.
            each_line(self.root(), &mut |l| missing.retain(|m| m.as_bytes() != l))
                .context(|| format!("reading the audit log in {}", self.root().display()))?;
        }
        let mut restored = 0;
        for line in missing {
            let Ok(record) = serde_json::from_str::<AuditRecord>(line) else {
                continue;
            };
            let settled = self.settle(record.clone());
            log.append(&[record, settled], false)?;
            restored += 1;
        }
        Ok(restored)
    }

    /// Appends the server's refusals of writes (a batch; `dropped` more were not kept), each
    /// token holder by user and id: the user is looked up in `auth.json` now.
    pub fn audit_refusals(&self, refusals: &[WriteRefusal], dropped: u64) -> Result<()> {
        if refusals.is_empty() && dropped == 0 {
            return Ok(());
        }
        let _lock = self.lock()?;
        let auth = AuthFile::load(self).ok();
        let user_of = |id: u64| {
            let t = auth.as_ref()?.tokens().iter().find(|t| t.id == id)?;
            Some(t.user.clone())
        };
        let cut = |s: &Option<String>| -> Option<String> {
            s.as_ref().map(|s| s.chars().take(MAX_FIELD).collect())
        };
        let mut records: Vec<AuditRecord> = refusals
            .iter()
            .map(|r| AuditRecord {
                krate: cut(&r.krate),
                version: cut(&r.version),
                actor: match r.token {
                    Some(id) => AuditActor {
                        kind: "token".into(),
                        user: user_of(id),
                        token: Some(id),
                    },
                    None => AuditActor::kind("anonymous"),
                },
                peer: r.peer.map(|p| p.to_string()),
                outcome: AuditOutcome::Refused,
                reason: Some(r.reason.chars().take(MAX_FIELD).collect()),
                ..AuditRecord::new(r.at, r.action, AuditActor::kind("anonymous"))
            })
            .collect();
        if dropped > 0 {
            let at = refusals.last().map_or_else(super::now, |r| r.at);
            records.push(AuditRecord {
                outcome: AuditOutcome::Refused,
                reason: Some(format!(
                    "{dropped} more refused writes in the same second were not logged one by one"
                )),
                ..AuditRecord::new(at, "refusals_dropped", AuditActor::kind("server"))
            });
        }
        self.audit_log()?.append(&records, true).map(drop)
    }

    /// Appends one record on its own (a restore), lock taken.
    pub(crate) fn audit_one(&self, record: &AuditRecord) -> Result<()> {
        let _lock = self.lock()?;
        self.audit_log()?
            .append(std::slice::from_ref(record), true)
            .map(drop)
    }
}

impl AuditActor {
    pub fn kind(kind: &str) -> AuditActor {
        AuditActor {
            kind: kind.to_owned(),
            user: None,
            token: None,
        }
    }
}

impl AuditRecord {
    /// A record of `action` by `actor` at `at` (unix seconds), started, naming nothing yet.
    pub fn new(at: u64, action: &str, actor: AuditActor) -> AuditRecord {
        AuditRecord {
            time: rfc3339(at),
            action: action.to_owned(),
            krate: None,
            version: None,
            user: None,
            users: Vec::new(),
            token: None,
            access: None,
            actor,
            peer: None,
            outcome: AuditOutcome::Started,
            reason: None,
            changes: Vec::new(),
        }
    }

    /// The record's time as unix seconds (0 when it does not parse).
    pub fn unix_time(&self) -> u64 {
        humantime::parse_rfc3339_weak(&self.time)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs())
    }
}

impl Log {
    /// Opens (or creates, mode 0600: it names users and addresses) `audit.jsonl` in `root`
    /// and cuts a torn last line.
    fn open(root: &Path, max: u64) -> Result<Log> {
        let path = root.join(AUDIT_FILE);
        let created = !path.exists();
        let file = File::options()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .context(|| format!("opening {}", path.display()))?;
        if created {
            sync_dir(root).context(|| format!("syncing {}", root.display()))?;
        }
        let len = file
            .metadata()
            .context(|| format!("reading {}", path.display()))?
            .len();
        let mut log = Log {
            file,
            root: root.to_owned(),
            len,
            max,
            cut: 0,
        };
        log.cut = log.cut_torn_line()?;
        Ok(log)
    }

    fn path(&self) -> PathBuf {
        self.root.join(AUDIT_FILE)
    }

    /// The last `want` bytes at most, and where they start.
    fn tail(&self, want: u64) -> Result<(u64, Vec<u8>)> {
        let from = self.len.saturating_sub(want);
        let mut buf = vec![0u8; (self.len - from) as usize];
        self.file
            .read_exact_at(&mut buf, from)
            .context(|| format!("reading {}", self.path().display()))?;
        Ok((from, buf))
    }

    /// The end of the file from the start of its last line (that is, after the newline
    /// before its last byte), and where that starts: `None` when the last line is longer
    /// than [`TAIL`]. A few KiB are read first; lines are rarely longer.
    fn last_line(&self) -> Result<Option<(u64, Vec<u8>)>> {
        for want in [4096, TAIL] {
            let (from, tail) = self.tail(want)?;
            let body = &tail[..tail.len().saturating_sub(1)];
            match body.iter().rposition(|&b| b == b'\n') {
                Some(i) => return Ok(Some((from + i as u64 + 1, tail[i + 1..].to_vec()))),
                None if from == 0 => return Ok(Some((0, tail))),
                None => {}
            }
        }
        Ok(None)
    }

    /// Cuts what follows the last newline: a line whose write never completed.
    fn cut_torn_line(&mut self) -> Result<u64> {
        if self.len == 0 {
            return Ok(0);
        }
        let Some((start, last)) = self.last_line()? else {
            // A last line longer than any this code writes: left for the reader to skip.
            return Ok(0);
        };
        if last.last() == Some(&b'\n') {
            return Ok(0);
        }
        self.set_len(start)?;
        let cut = self.len - start;
        self.len = start;
        Ok(cut)
    }

    fn set_len(&self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .and_then(|()| self.file.sync_data())
            .context(|| format!("cutting {}", self.path().display()))
    }

    /// The last line, when it is an intent whose outcome never came.
    fn unfinished(&self) -> Result<Option<AuditRecord>> {
        if self.len == 0 {
            return Ok(None);
        }
        let Some((_, last)) = self.last_line()? else {
            return Ok(None);
        };
        Ok(serde_json::from_slice::<AuditRecord>(&last)
            .ok()
            .filter(|r| r.outcome == AuditOutcome::Started))
    }

    /// Appends `records`, one line each, synced. `may_rotate`: the file is rotated first
    /// whenever the next line would take it past the cap (never between an intent and its
    /// outcome, which go to the same file). A failed write is cut back off. Returns where
    /// the last file written starts to hold them (to cut an intent back off).
    pub(crate) fn append(&mut self, records: &[AuditRecord], may_rotate: bool) -> Result<u64> {
        self.append_as(records, may_rotate, true)
    }

    /// [`Log::append`], the last write synced only when `sync` (not for the lines of a
    /// journaled write, synced at the checkpoint; see the module docs).
    pub(crate) fn append_as(
        &mut self,
        records: &[AuditRecord],
        may_rotate: bool,
        sync: bool,
    ) -> Result<u64> {
        let mut bytes = Vec::with_capacity(256 * records.len());
        for r in records {
            let start = bytes.len();
            serde_json::to_writer(&mut bytes, r).expect("audit records serialize");
            bytes.push(b'\n');
            let line = (bytes.len() - start) as u64;
            let before = self.len + start as u64;
            if may_rotate && before > 0 && before + line > self.max {
                let next = bytes.split_off(start);
                self.write(&bytes, true)?;
                self.rotate()?;
                bytes = next;
            }
        }
        let at = self.len;
        self.write(&bytes, sync)?;
        Ok(at)
    }

    fn write(&mut self, bytes: &[u8], sync: bool) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let written = self.file.write_all(bytes).and_then(|()| match sync {
            true => self.file.sync_data(),
            false => Ok(()),
        });
        if let Err(e) = written {
            let _ = self.file.set_len(self.len);
            return Err(e).context(|| format!("writing {}", self.path().display()));
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Cuts the log back to `len` (an intent whose command changed nothing).
    pub(crate) fn truncate(&mut self, len: u64) -> Result<()> {
        self.set_len(len)?;
        self.len = len;
        Ok(())
    }

    /// `audit.jsonl` becomes `audit.jsonl.1`; a new, empty `audit.jsonl` is opened.
    fn rotate(&mut self) -> Result<()> {
        let (path, old) = (self.path(), self.root.join(AUDIT_OLD_FILE));
        fs::rename(&path, &old).context(|| format!("renaming {}", path.display()))?;
        let fresh = Log::open(&self.root, self.max)?;
        *self = fresh;
        Ok(())
    }
}

/// Reads the log files of `root`, oldest line first, calling `line` with each line's bytes.
fn each_line(root: &Path, line: &mut dyn FnMut(&[u8])) -> io::Result<()> {
    use std::io::BufRead;
    for name in [AUDIT_OLD_FILE, AUDIT_FILE] {
        let file = match File::open(root.join(name)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mut reader = io::BufReader::new(file);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf)? == 0 {
                break;
            }
            line(buf.strip_suffix(b"\n").unwrap_or(&buf));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
