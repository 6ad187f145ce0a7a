//! Crash recovery: the journal a write keeps of the crate it is changing, and what opening
//! the registry repairs (see the registry's module docs).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{is_temp_name, sync_dir, write_atomic, JOURNAL_FILE, ORPHANS_DIR};
use crate::registry::auth::{self, AuthError};
use crate::registry::index::{deferred, git, search};
use crate::registry::publish::crateinfo;
use crate::registry::versions::tombstone;
use crate::registry::{Context, CrateName, IndexEntry, Registry, Result};

impl Registry {
    /// Repairs what a crash left (see the module docs). Returns what it did.
    pub fn recover(&self) -> Result<Vec<String>> {
        let mut done = Vec::new();
        let _lock = self.lock()?;
        // A journal another live process writes (the server, between its checkpoints) is
        // its own to finish.
        let journal = self.read_journal()?.unless_live();
        if !journal.is_empty() {
            let n = self.redo(&journal)?;
            if n > 0 {
                done.push(format!("wrote {n} file(s) again from the journal"));
            }
            // Commits after the last checkpoint were written without syncs: after a power
            // cut some may be torn (see `index::deferred`).
            let found = deferred::verify_since(&self.index_dir, journal.base)?;
            if found.removed > 0 {
                done.push(format!(
                    "removed {} git object file(s) a crash left torn",
                    found.removed
                ));
            }
            if let Some(base) = found.reset_to {
                done.push(format!(
                    "pointed the index back at {base}, the last commit synced before a crash"
                ));
            }
        }
        let (stale, staged) = git::repair(&self.index_dir)?;
        for p in stale {
            done.push(format!("removed stale git file {}", p.display()));
        }
        if staged {
            done.push("reset git's index to the last commit".to_owned());
        }
        for t in self.temp_files()? {
            fs::remove_file(&t).context(|| format!("removing {}", t.display()))?;
            done.push(format!("removed temp file {}", t.display()));
        }
        done.extend(self.remove_stale_docs_temps()?);
        let journal_done = self.repair_journaled(&journal)?;
        if git::commit_all(&self.index_dir, "Commit index changes left uncommitted")? {
            done.push("committed uncommitted index changes".to_owned());
        }
        // Missing, or emptied by a power cut before the checkpoint that syncs it.
        let no_search_lines = search::is_empty(&self.root);
        if !search::is_sound(&self.root)? || (no_search_lines && self.has_crates()?) {
            let n = self.rebuild_search()?;
            done.push(format!("rebuilt search.jsonl ({n} crates)"));
        }
        done.extend(journal_done);
        let restored = self.restore_intents(&journal.intents)?;
        if restored > 0 {
            done.push(format!(
                "wrote back {restored} audit line(s) a crash lost, from the journal"
            ));
        }
        // Last: a change a crash interrupted is settled as the repaired registry shows it.
        done.extend(self.recover_audit()?);
        if !journal.is_empty() {
            // Everything repaired is made durable, and the journal emptied.
            git::pack_all_loose(&self.index_dir)?;
            self.checkpoint_locked()?;
        }
        Ok(done)
    }

    /// Whether the index holds any crate (walks the index tree: only asked when the search
    /// file is missing).
    fn has_crates(&self) -> Result<bool> {
        Ok(!self.index_files()?.is_empty())
    }

    /// What the journal names (lock held). A torn or garbled journal must not stop the
    /// registry from opening: what does not parse is skipped.
    pub(in crate::registry) fn read_journal(&self) -> Result<Journal> {
        let path = self.root.join(JOURNAL_FILE);
        match fs::read(&path) {
            Ok(t) => Ok(Journal::parse(&String::from_utf8_lossy(&t))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Journal::default()),
            Err(e) => Err(e).context(|| format!("reading {}", path.display())),
        }
    }

    /// Completes the writes the journal names (lock held): orphan crate files of those
    /// crates are moved aside and their search lines rebuilt from the index.
    fn repair_journaled(&self, journal: &Journal) -> Result<Vec<String>> {
        let mut done = Vec::new();
        for name in &journal.names {
            done.extend(self.repair_crate(name)?);
        }
        Ok(done)
    }

    /// Makes one crate's files agree with its index lines (lock held): tombstones of
    /// versions in the index are dropped, crate files without a line are moved aside, a
    /// search line that disagrees is rebuilt.
    pub(crate) fn repair_crate(&self, name: &CrateName) -> Result<Vec<String>> {
        let mut done = Vec::new();
        let entries = self.entries(name)?;
        let dropped = tombstone::forget_indexed(&self.root, &entries)?;
        if dropped > 0 {
            done.push(format!(
                "dropped {dropped} tombstone(s) of {name} versions still in the index (a \
                 delete cut short)"
            ));
        }
        if entries.is_empty() {
            let owners = self.drop_unpublished_owners(name)?;
            if !owners.is_empty() {
                done.push(format!(
                    "forgot the owner(s) {} a first publish of {name} recorded before it was \
                     cut short",
                    owners.join(", ")
                ));
            }
        }
        for orphan in self.orphans_of(name, &entries)? {
            let to = self.move_aside(&orphan)?;
            done.push(format!(
                "moved crate file without index line {} to {}",
                orphan.display(),
                to.display()
            ));
        }
        if self.search_disagrees(name, &entries)? {
            self.rebuild_search_line(name, &entries)?;
            done.push(format!("rebuilt the search line of {name}"));
        }
        Ok(done)
    }

    /// Forgets the owners recorded for a journaled name that has no version and no tombstone
    /// keeping it (lock held): a first publish writes its publisher as owner before its index
    /// commit, and one cut short in between leaves them. Returns them. Access control data
    /// that cannot be read is left alone, for its own error to tell.
    fn drop_unpublished_owners(&self, name: &CrateName) -> Result<Vec<String>> {
        if tombstone::read(&self.root)?
            .0
            .iter()
            .any(|t| t.keeps_name(name))
        {
            return Ok(Vec::new());
        }
        let Ok(mut edit) = auth::Edit::open(self) else {
            return Ok(Vec::new());
        };
        let owners = edit.data.forget_owners(name);
        match edit.save() {
            Ok(()) => Ok(owners),
            Err(AuthError::Registry(e)) => Err(e),
            Err(_) => Ok(Vec::new()),
        }
    }

    /// Notes in the journal that `name` is about to change, with what the change will
    /// leave in the files it writes (`redo`), synced (lock held). This line is what makes
    /// the change durable: the files themselves are written without syncs and reach the
    /// disk at the next checkpoint (see [`Registry::checkpoint`]); recovery after a crash
    /// writes them again from the journal. The first line after a checkpoint names the
    /// commit HEAD was then at, which the checkpoint synced. A line carries the running
    /// command's audit intent too: the audit log's lines of a journaled write are synced at
    /// the checkpoint, and recovery writes back those a crash lost (see
    /// [`Registry::restore_intents`]). Returns the journal's length before the line, for
    /// [`Registry::journal_cancel`].
    pub(in crate::registry) fn journal(&self, name: &str, redo: &Redo) -> Result<u64> {
        let intent = self.intent_note.lock().expect("intent note").clone();
        let marks = self.journal_all(&[Journaled { name, redo, intent }])?;
        Ok(marks[0])
    }

    /// [`Registry::journal`] for several changes at once (a batch of publishes): their lines
    /// are written in order and synced once. Returns each line's offset, for
    /// [`Registry::journal_cancel`] (which takes back that line and every one after it).
    pub(in crate::registry) fn journal_all(&self, changes: &[Journaled<'_>]) -> Result<Vec<u64>> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.root.join(JOURNAL_FILE);
        let open = || {
            fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(&path)
                .context(|| format!("opening {}", path.display()))
        };
        let mut file = open()?;
        let mut len = file
            .metadata()
            .context(|| format!("reading {}", path.display()))?
            .len();
        if len > 0 && !self.git_writer().knows_journal(len) && !self.read_journal()?.is_live() {
            // Left by a process that is gone (a killed `palletizer` command): finished
            // first, as its own next open would.
            self.finish_dead_journal()?;
            file = open()?;
            len = 0;
        }
        let mut text = String::new();
        if len == 0 {
            if let Some(head) = self.git_writer().head(&self.index_dir) {
                let (pid, boot) = (std::process::id(), boot_id());
                text.push_str(&format!("{BASE_PREFIX}{head} {pid} {boot}\n"));
            }
        }
        let mut marks = Vec::with_capacity(changes.len());
        for c in changes {
            marks.push(len + text.len() as u64);
            let record = Record {
                krate: c.name.to_owned(),
                intent: c.intent.clone(),
                redo: c.redo.to_lines(&self.root),
                needs: c.redo.needs.clone(),
            };
            text.push_str(&serde_json::to_string(&record).expect("journal records serialize"));
            text.push('\n');
        }
        // The first mark of a new journal is 0: taking back its line removes the journal.
        if len == 0 {
            if let Some(m) = marks.first_mut() {
                *m = 0;
            }
        }
        let written = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_data());
        if let Err(e) = written {
            let _ = file.set_len(len);
            return Err(e).context(|| format!("writing {}", path.display()));
        }
        self.git_writer().journaled(len, len + text.len() as u64);
        if len == 0 {
            sync_dir(&self.root).context(|| format!("syncing {}", self.root.display()))?;
        }
        Ok(marks)
    }

    /// Takes back the journal line written at `mark` by [`Registry::journal`]: its change
    /// failed and was undone, and recovery must not redo it.
    pub(in crate::registry) fn journal_cancel(&self, mark: u64) {
        let path = self.root.join(JOURNAL_FILE);
        if mark == 0 {
            // The line was the journal's first: no journal at all, as before it.
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    error!("warning: taking back the journal line of a failed write: {e}");
                }
                _ => self.git_writer().journal_emptied(),
            }
            return;
        }
        let cut = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(mark).and_then(|()| f.sync_data()));
        if let Err(e) = cut {
            error!("warning: taking back the journal line of a failed write: {e}");
            return;
        }
        self.git_writer().journal_cut(mark);
    }

    /// A journal a process that is gone left (lock held): its writes are redone, its crates
    /// repaired, and everything made durable.
    fn finish_dead_journal(&self) -> Result<()> {
        let journal = self.read_journal()?;
        self.redo(&journal)?;
        self.checkpoint_locked()
    }

    /// Writes every file the journal's records name as they left it, synced, where the file
    /// on disk differs (lock held). Returns how many were written or removed.
    fn redo(&self, journal: &Journal) -> Result<usize> {
        let met: Vec<bool> = journal
            .needs
            .iter()
            .map(|(name, needs)| self.written_before(name, needs.as_ref()))
            .collect::<Result<_>>()?;
        let mut last: std::collections::BTreeMap<&str, Option<&[u8]>> = Default::default();
        for (path, bytes, record) in &journal.redo {
            if met[*record] {
                last.insert(path, bytes.as_deref());
            }
        }
        let mut n = 0;
        for (rel, bytes) in last {
            let path = self.root.join(rel);
            let now = match fs::read(&path) {
                Ok(b) => Some(b),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e).context(|| format!("reading {}", path.display())),
            };
            if now.as_deref() == bytes {
                continue;
            }
            match bytes {
                Some(b) => write_atomic(&path, b)?,
                None => {
                    fs::remove_file(&path).context(|| format!("removing {}", path.display()))?;
                    if let Some(dir) = path.parent() {
                        sync_dir(dir).context(|| format!("syncing {}", dir.display()))?;
                    }
                }
            }
            n += 1;
        }
        Ok(n)
    }

    /// Whether what a journal record `needs` is on disk: when not, its change was cut short
    /// right after its line, before it wrote anything the line redoes (lock held).
    fn written_before(&self, name: &CrateName, needs: Option<&Needs>) -> Result<bool> {
        match needs {
            None => Ok(true),
            // Access control data that cannot be read is left for its own error to tell;
            // the change is redone (an acknowledged one must never be lost).
            Some(Needs::Owner) => {
                Ok(auth::Edit::open(self).map_or(true, |e| e.data.has_owners(name)))
            }
            Some(Needs::Tombstones(versions)) => {
                let (stones, _) = tombstone::read(&self.root)?;
                Ok(versions.iter().all(|v| {
                    crate::registry::Version::parse(v)
                        .map_or(true, |v| stones.iter().any(|t| t.covers(name, &v)))
                }))
            }
        }
    }

    /// The writer's repository and the commits it has not synced yet.
    pub(in crate::registry) fn git_writer(
        &self,
    ) -> std::sync::MutexGuard<'_, crate::registry::index::deferred::Writer> {
        // A panic while committing leaves nothing the next commit would trust wrongly: its
        // objects are checked again at the next open.
        self.git.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The caller runs [`Registry::checkpoint`] itself (the server's writer, when idle): a
    /// command then ends once what it changed is durable as the journal describes, not
    /// after its commit's objects are synced too.
    pub fn defer_checkpoints(&self) {
        self.deferred
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether commands wait for a [`Registry::checkpoint`] (not yet run).
    pub fn needs_checkpoint(&self) -> bool {
        self.git_writer().has_pending()
    }

    /// Makes everything the journal names durable in its final form: the index commits since
    /// the last checkpoint go into one synced pack with the ref synced, the search file is
    /// synced, and the journal is emptied.
    pub fn checkpoint(&self) -> Result<()> {
        let _lock = self.lock()?;
        self.checkpoint_locked()
    }

    /// [`Registry::checkpoint`], lock held.
    pub(in crate::registry) fn checkpoint_locked(&self) -> Result<()> {
        let path = self.root.join(JOURNAL_FILE);
        let len = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e).context(|| format!("reading {}", path.display())),
        };
        let mut writer = self.git_writer();
        if len == 0 && !writer.has_pending() {
            return Ok(());
        }
        if !writer.knows_journal(len) {
            // Lines of another process's (or handle's) writes, which may have been cut
            // short (a killed command): each crate is repaired, whatever is loose goes.
            drop(writer);
            let journal = self.read_journal()?;
            self.redo(&journal)?;
            self.repair_journaled(&journal)?;
            git::pack_all_loose(&self.index_dir)?;
            git::sync_head_ref_of(&self.index_dir)?;
            writer = self.git_writer();
        }
        writer.sync(&self.index_dir)?;
        // The search changes appended since the last checkpoint go into the sorted file
        // (synced with the rest below). Were that to fail, searches still read them where
        // they are.
        if let Err(e) = search::compact(&self.root) {
            error!("warning: folding the search changes into search.jsonl: {e}");
        }
        // Every file the journaled writes wrote without syncs (crate files, page files,
        // index files and their folders), the search file and the audit log: one sync of
        // each file system they are on.
        for dir in [&self.root, &self.crates_dir, &self.index_dir] {
            super::sync_file_system(dir).context(|| format!("syncing {}", dir.display()))?;
        }
        // Not synced: a journal that comes back after a crash only repeats repairs.
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(e).context(|| format!("removing {}", path.display()))
            }
            _ => {}
        }
        writer.journal_emptied();
        Ok(())
    }

    /// Crate files in `name`'s directory that no index entry accounts for.
    pub(crate) fn orphans_of(&self, name: &str, entries: &[IndexEntry]) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let mut dirs = vec![self.crates_dir.join(name)];
        if let Some(e) = entries.first() {
            if e.name != name {
                dirs.push(self.crates_dir.join(&e.name));
            }
        }
        let expected: Vec<PathBuf> = entries
            .iter()
            .filter_map(|e| self.entry_crate_path(e).ok())
            .flat_map(|p| {
                let [info, readme] = crateinfo::sidecars(&p);
                [p, info, readme]
            })
            .collect();
        for dir in dirs {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).context(|| format!("reading {}", dir.display())),
            };
            for f in rd {
                let f = f.context(|| format!("reading {}", dir.display()))?;
                let p = f.path();
                let temp = f.file_name().to_str().is_some_and(is_temp_name);
                if !temp && !expected.contains(&p) {
                    out.push(p);
                }
            }
        }
        Ok(out)
    }

    /// Moves a crate file without an index line to `orphans/` (never deleting data).
    pub(crate) fn move_aside(&self, path: &Path) -> Result<PathBuf> {
        let dir = self.root.join(ORPHANS_DIR);
        fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("crate")
            .to_owned();
        let mut to = dir.join(&file);
        let mut n = 1;
        while to.exists() {
            to = dir.join(format!("{file}.{n}"));
            n += 1;
        }
        if let Err(e) = fs::rename(path, &to) {
            if e.raw_os_error() != Some(libc::EXDEV) {
                return Err(e).context(|| format!("moving {}", path.display()));
            }
            // The crates directory is on another file system: copy, sync, then remove.
            let bytes = fs::read(path).context(|| format!("reading {}", path.display()))?;
            write_atomic(&to, &bytes)?;
            fs::remove_file(path).context(|| format!("removing {}", path.display()))?;
        }
        sync_dir(&dir).context(|| format!("syncing {}", dir.display()))?;
        if let Some(parent) = path.parent() {
            let _ = fs::remove_dir(parent); // only if now empty
        }
        Ok(to)
    }
}

/// The journal's first line after a checkpoint: the commit HEAD was then at.
const BASE_PREFIX: &str = "@base ";

/// What the journal says (see [`Registry::journal`]).
#[derive(Debug, Default)]
pub(in crate::registry) struct Journal {
    names: Vec<CrateName>,
    base: Option<git2::Oid>,
    /// The audit intents of the lines, in order.
    intents: Vec<String>,
    /// The files the records leave, in order (a later one wins): path from the root, bytes
    /// or `None` for removed, and the record's index in `needs`.
    redo: Vec<(String, Option<Vec<u8>>, usize)>,
    /// Each record's crate and what it needs written before its files count.
    needs: Vec<(CrateName, Option<Needs>)>,
    /// The process that wrote it, and the boot it ran in.
    writer: Option<u32>,
    boot: Option<String>,
}

/// Whether process `pid` runs (a killed process its parent has not reaped yet, a zombie,
/// does not).
fn running(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (name) S ...`: the state follows the last `)`.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// One journal line (see [`Registry::journal`]).
#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    #[serde(rename = "crate")]
    krate: String,
    intent: Option<String>,
    /// Path from the registry root, and the bytes in hex (`None`: removed).
    redo: Vec<(String, Option<String>)>,
    /// What the change writes itself, synced, after this line and before its other files:
    /// without it, the change was cut short before it wrote anything else, and is not redone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    needs: Option<Needs>,
}

/// What a journaled change writes (synced) before the files its line redoes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(in crate::registry) enum Needs {
    /// The crate's first owner, in the access control file (a first publish).
    Owner,
    /// The tombstones of these versions of the crate (a delete).
    Tombstones(Vec<String>),
}

/// One change for [`Registry::journal_all`]: its crate, what it leaves, and the audit intent
/// of the command that makes it.
pub(in crate::registry) struct Journaled<'a> {
    pub(in crate::registry) name: &'a str,
    pub(in crate::registry) redo: &'a Redo,
    pub(in crate::registry) intent: Option<String>,
}

/// What a journaled write leaves in the files it writes without syncs.
#[derive(Debug, Default)]
pub(in crate::registry) struct Redo {
    files: Vec<(PathBuf, Option<Vec<u8>>)>,
    needs: Option<Needs>,
}

impl Redo {
    /// The change writes `needs` (synced) after its journal line, before these files.
    pub(in crate::registry) fn needs(&mut self, needs: Needs) {
        self.needs = Some(needs);
    }

    /// `path` will hold `bytes`.
    pub(in crate::registry) fn write(&mut self, path: &Path, bytes: Vec<u8>) {
        self.files.push((path.to_owned(), Some(bytes)));
    }

    /// `path` will be gone.
    pub(in crate::registry) fn remove(&mut self, path: &Path) {
        self.files.push((path.to_owned(), None));
    }

    fn to_lines(&self, root: &Path) -> Vec<(String, Option<String>)> {
        self.files
            .iter()
            .filter_map(|(p, b)| {
                let rel = p.strip_prefix(root).ok()?.to_str()?.to_owned();
                Some((rel, b.as_deref().map(to_hex)))
            })
            .collect()
    }
}

fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A path inside the registry: relative, no `..`.
fn safe_relative(path: &str) -> bool {
    let p = Path::new(path);
    p.is_relative()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// This boot of the machine (a process id names one process only within a boot).
fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

impl Journal {
    /// Reads a journal, this format or the older one (a name a line); what does not parse is
    /// skipped.
    fn parse(text: &str) -> Journal {
        let mut j = Journal::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix(BASE_PREFIX) {
                let mut parts = rest.split(' ');
                if j.base.is_none() {
                    j.base = parts.next().and_then(|o| git2::Oid::from_str(o).ok());
                    j.writer = parts.next().and_then(|p| p.parse().ok());
                    j.boot = parts.next().map(str::to_owned);
                }
                continue;
            }
            if line.starts_with('{') {
                // A torn last line (its write never completed, nor its answer) is skipped.
                let Ok(r) = serde_json::from_str::<Record>(line) else {
                    continue;
                };
                let Ok(name) = CrateName::parse(&r.krate) else {
                    continue;
                };
                if !j.names.contains(&name) {
                    j.names.push(name.clone());
                }
                j.intents.extend(r.intent);
                let record = j.needs.len();
                j.needs.push((name, r.needs));
                for (path, hex) in r.redo {
                    let bytes = match hex {
                        Some(h) => match from_hex(&h) {
                            Some(b) => Some(b),
                            None => continue,
                        },
                        None => None,
                    };
                    if safe_relative(&path) {
                        j.redo.push((path, bytes, record));
                    }
                }
                continue;
            }
            let (name, intent) = match line.split_once('\t') {
                Some((n, i)) => (n, Some(i)),
                None => (line, None),
            };
            let Ok(name) = CrateName::parse(name.trim()) else {
                continue;
            };
            if !j.names.contains(&name) {
                j.names.push(name);
            }
            j.intents.extend(intent.map(str::to_owned));
        }
        j
    }

    pub(in crate::registry) fn is_empty(&self) -> bool {
        self.names.is_empty() && self.base.is_none()
    }

    /// Whether another process of this boot that is still running writes it: its commits
    /// wait for that process's checkpoint, not for a crash's repair.
    pub(in crate::registry) fn is_live(&self) -> bool {
        let (Some(pid), Some(boot)) = (self.writer, &self.boot) else {
            return false;
        };
        // Without a boot id to compare (no /proc), a process id alone could be another
        // boot's: not live.
        !boot.is_empty() && pid != std::process::id() && *boot == boot_id() && running(pid)
    }

    /// This journal, or an empty one when another live process writes it.
    fn unless_live(self) -> Journal {
        match self.is_live() {
            true => Journal::default(),
            false => self,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::auth::scratch_registry;
    use crate::registry::publish::tarball::testing::simple_crate;
    use crate::registry::{Actor, Command};

    /// Publishes the way the server's writer does: the commit waits for a checkpoint.
    fn publish_deferred(reg: &Registry, name: &str) {
        let checked = reg
            .check_upload(None, &simple_crate(name, "1.0.0", &[])[..])
            .unwrap();
        reg.apply(Command::Publish(checked), &Actor::cli()).unwrap();
    }

    fn loose_count(reg: &Registry) -> usize {
        let repo = git2::Repository::open(reg.index_dir()).unwrap();
        git::loose_objects_of(&repo).unwrap().len()
    }

    /// The index files of the repository's packs.
    fn packs(reg: &Registry) -> Vec<PathBuf> {
        let dir = reg.index_dir().join(".git/objects/pack");
        let mut out: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "idx"))
            .collect();
        out.sort();
        out
    }

    fn head_names(reg: &Registry) -> Vec<String> {
        let repo = git2::Repository::open(reg.index_dir()).unwrap();
        let tree = repo.head().unwrap().peel_to_tree().unwrap();
        let mut names = Vec::new();
        tree.walk(git2::TreeWalkMode::PreOrder, |_, e| {
            if e.kind() == Some(git2::ObjectType::Blob) {
                names.push(e.name().unwrap().to_owned());
            }
            git2::TreeWalkResult::Ok
        })
        .unwrap();
        names.sort();
        names
    }

    #[test]
    fn a_checkpoint_packs_the_deferred_commits_and_empties_the_journal() {
        let (_t, reg) = scratch_registry();
        reg.defer_checkpoints();
        let before = packs(&reg).len();
        let loose = loose_count(&reg);
        for name in ["alpha", "beta", "gamma"] {
            publish_deferred(&reg, name);
        }
        let journal = reg.root().join(JOURNAL_FILE);
        let text = fs::read_to_string(&journal).unwrap();
        assert!(text.starts_with(BASE_PREFIX), "{text}");
        let records: Vec<Record> = text
            .lines()
            .skip(1)
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let names: Vec<&str> = records.iter().map(|r| r.krate.as_str()).collect();
        assert_eq!(names, ["alpha", "beta", "gamma"]);
        for r in &records {
            assert!(r.intent.as_deref().unwrap().contains("\"started\""));
            // The crate file, its page file, no README, the index file.
            let paths: Vec<&str> = r.redo.iter().map(|(p, _)| p.as_str()).collect();
            assert_eq!(paths.len(), 4, "{paths:?}");
            assert!(paths[0].ends_with("-1.0.0.crate") && paths[3].starts_with("index/"));
        }
        assert!(reg.needs_checkpoint());
        assert_eq!(
            packs(&reg).len(),
            before + 3,
            "the commits wait in a pack each"
        );
        assert_eq!(loose_count(&reg), loose, "and write no loose object");
        reg.checkpoint().unwrap();
        assert!(!journal.exists());
        assert!(!reg.needs_checkpoint());
        assert_eq!(
            packs(&reg).len(),
            before + 1,
            "the commits' packs are folded into the checkpoint's"
        );
        assert_eq!(head_names(&reg), ["alpha", "beta", "config.json", "gamma"]);
        assert!(git::history_is_linear(reg.index_dir()).unwrap());
    }

    /// A journal line is written before the change's own synced writes (a delete's
    /// tombstones, a first publish's owner): a change killed in between wrote nothing its
    /// line redoes, and recovery leaves its crate as it was, while a line that needs
    /// nothing (a yank) is redone.
    #[test]
    fn a_change_cut_short_before_its_own_writes_is_not_redone() {
        let (_t, reg) = scratch_registry();
        for name in ["cut", "yanked"] {
            publish_deferred(&reg, name);
        }
        let index_dir = reg.index_dir().to_owned();
        let path = |n: &str| {
            let n = CrateName::parse(n).unwrap();
            index_dir.join(crate::registry::index::index_path(&n))
        };
        let before = fs::read(path("cut")).unwrap();
        let mut entries = reg.entries(&CrateName::parse("yanked").unwrap()).unwrap();
        entries[0].yanked = true;
        let yanked = crate::registry::index::render_file(&entries);
        {
            let _lock = reg.lock().unwrap();
            let mut delete = Redo::default();
            delete.remove(&path("cut"));
            delete.needs(Needs::Tombstones(vec!["1.0.0".to_owned()]));
            reg.journal("cut", &delete).unwrap();
            let mut yank = Redo::default();
            yank.write(&path("yanked"), yanked.clone().into_bytes());
            reg.journal("yanked", &yank).unwrap();
        }
        let root = reg.root().to_owned();
        drop(reg);
        let reg = Registry::open(&root).unwrap();
        assert_eq!(fs::read(path("cut")).unwrap(), before, "not deleted");
        assert_eq!(
            fs::read_to_string(path("yanked")).unwrap(),
            yanked,
            "yanked"
        );
        assert!(reg
            .crate_path(
                &CrateName::parse("cut").unwrap(),
                &crate::registry::Version::parse("1.0.0").unwrap()
            )
            .exists());
        assert!(!root.join(JOURNAL_FILE).exists());
        assert_eq!(reg.check().unwrap(), Vec::new());
    }

    /// A power cut before the checkpoint: the loose objects of the deferred commits come
    /// back empty and the branch's ref file torn. The index files, synced before each
    /// publish was answered, are what the reopened registry commits again.
    #[test]
    fn a_power_cut_before_the_checkpoint_loses_no_acknowledged_publish() {
        let (_t, reg) = scratch_registry();
        publish_deferred(&reg, "base"); // not deferred yet: synced at once
        let synced = packs(&reg);
        reg.defer_checkpoints();
        for name in ["one", "two"] {
            publish_deferred(&reg, name);
        }
        let mut unsynced = packs(&reg);
        unsynced.retain(|p| !synced.contains(p));
        assert_eq!(unsynced.len(), 2, "two commits' packs: {unsynced:?}");
        // Only what was written since the last sync is torn.
        tear_unsynced_commits(&reg, &synced);
        // The files the publishes wrote without syncs never reached the disk either: the
        // index files, crate files and page files come back from the journal.
        let files = |reg: &Registry| -> Vec<(std::path::PathBuf, Vec<u8>)> {
            let mut out = Vec::new();
            for name in ["one", "two"] {
                let n = CrateName::parse(name).unwrap();
                let v = crate::registry::Version::parse("1.0.0").unwrap();
                let krate = reg.crate_path(&n, &v);
                let [info, _] = crateinfo::sidecars(&krate);
                let index = reg.index_dir().join(crate::registry::index::index_path(&n));
                for p in [krate, info, index] {
                    let bytes = fs::read(&p).unwrap();
                    out.push((p, bytes));
                }
            }
            out
        };
        let written = files(&reg);
        for (p, _) in &written {
            fs::remove_file(p).unwrap();
        }
        let root = reg.root().to_owned();
        drop(reg);
        let reg = Registry::open(&root).unwrap();
        assert_eq!(
            files(&reg),
            written,
            "rewritten byte for byte from the journal"
        );
        assert_eq!(head_names(&reg), ["base", "config.json", "one", "two"]);
        assert!(!root.join(JOURNAL_FILE).exists());
        let repo = git2::Repository::open(reg.index_dir()).unwrap();
        let head = repo.head().unwrap().peel_to_commit().unwrap();
        assert_eq!(
            head.message().ok(),
            Some("Commit index changes left uncommitted")
        );
        assert!(history_reads_all(&repo));
        let problems = reg.check().unwrap();
        assert!(problems.is_empty(), "{problems:?}");
    }

    /// Zeroes the packs that are not in `synced` (the commits' own, written without syncs:
    /// the second of the two keeps its length, its blocks gone) and tears the branch's ref
    /// file: what a power cut leaves of commits written without syncs.
    fn tear_unsynced_commits(reg: &Registry, synced: &[PathBuf]) {
        let mut unsynced = packs(reg);
        unsynced.retain(|p| !synced.contains(p));
        assert!(!unsynced.is_empty(), "no commit waits for a checkpoint");
        for (i, idx) in unsynced.iter().enumerate() {
            for path in [idx.clone(), idx.with_extension("pack")] {
                let len = fs::metadata(&path).unwrap().len() as usize;
                let mut perms = fs::metadata(&path).unwrap().permissions();
                #[allow(clippy::permissions_set_readonly_false)]
                perms.set_readonly(false);
                fs::set_permissions(&path, perms).unwrap();
                let torn = if i % 2 == 0 {
                    Vec::new()
                } else {
                    vec![0u8; len]
                };
                fs::write(&path, torn).unwrap();
            }
        }
        fs::write(reg.index_dir().join(".git/refs/heads/master"), b"").unwrap();
    }

    /// A delete of every version removes the crate's index file: acknowledged before the
    /// checkpoint, the removal must be durable on its own, or a power cut brings the file
    /// back and the reopened registry commits it again (and drops the tombstones, which then
    /// name versions in the index): the delete is undone.
    #[test]
    fn a_power_cut_after_a_deferred_delete_keeps_the_crate_deleted() {
        let (_t, reg) = scratch_registry();
        publish_deferred(&reg, "gone"); // not deferred yet: synced at once
        publish_deferred(&reg, "kept");
        let synced = packs(&reg);
        reg.defer_checkpoints();
        let name = CrateName::parse("gone").unwrap();
        let file = reg
            .index_dir()
            .join(crate::registry::index::index_path(&name));
        let before = fs::read(&file).unwrap();
        super::super::synced::take();
        reg.apply(
            Command::Delete {
                name: name.clone(),
                vers: None,
                release_name: false,
            },
            &Actor::cli(),
        )
        .unwrap();
        assert!(!file.exists());
        // The power cut: a removal whose folder was not synced after it did not happen.
        let folder = file.parent().unwrap().to_owned();
        if !super::super::synced::take().contains(&folder) {
            fs::write(&file, &before).unwrap();
        }
        tear_unsynced_commits(&reg, &synced);
        let root = reg.root().to_owned();
        drop(reg);
        let reg = Registry::open(&root).unwrap();
        assert_eq!(
            reg.entries(&name).unwrap(),
            [],
            "the acknowledged delete was undone"
        );
        assert_eq!(head_names(&reg), ["config.json", "kept"]);
    }

    /// The CLI squashes the history while the server's writer has commits waiting for their
    /// checkpoint: the squash drops those commits' objects (no longer reachable), and the
    /// server's next checkpoints must still complete (and empty the journal), not fail on
    /// objects that are gone for good.
    #[test]
    fn a_squash_by_another_process_leaves_the_servers_checkpoints_working() {
        let (_t, server) = scratch_registry();
        server.defer_checkpoints();
        publish_deferred(&server, "one");
        assert!(server.needs_checkpoint());
        let cli = Registry::open(server.root()).unwrap();
        cli.apply(Command::SquashIndex, &Actor::cli()).unwrap();
        drop(cli);
        publish_deferred(&server, "two");
        server.checkpoint().unwrap();
        assert!(!server.root().join(JOURNAL_FILE).exists());
        assert!(!server.needs_checkpoint());
        publish_deferred(&server, "three");
        server.checkpoint().unwrap();
        assert!(!server.root().join(JOURNAL_FILE).exists());
        assert_eq!(head_names(&server), ["config.json", "one", "three", "two"]);
    }

    /// A kill -9 before the checkpoint loses nothing and rewrites no history: the reopened
    /// registry finds every deferred commit whole.
    #[test]
    fn a_kill_before_the_checkpoint_keeps_every_commit() {
        let (_t, reg) = scratch_registry();
        reg.defer_checkpoints();
        for name in ["one", "two"] {
            publish_deferred(&reg, name);
        }
        let head = git2::Repository::open(reg.index_dir())
            .unwrap()
            .head()
            .unwrap()
            .target();
        let root = reg.root().to_owned();
        drop(reg);
        let reg = Registry::open(&root).unwrap();
        let repo = git2::Repository::open(reg.index_dir()).unwrap();
        assert_eq!(repo.head().unwrap().target(), head);
        assert_eq!(loose_count(&reg), 0);
        assert!(history_reads_all(&repo));
    }

    /// The journal's copy of an intent is written back when the audit log lost it.
    #[test]
    fn an_intent_the_audit_log_lost_comes_back_from_the_journal() {
        let (_t, reg) = scratch_registry();
        publish_deferred(&reg, "kept");
        let intent = r#"{"time":"2026-01-01T00:00:00Z","action":"publish","crate":"kept","version":"1.0.0","actor":{"kind":"cli","user":"ops"},"outcome":"started"}"#;
        fs::write(reg.root().join(JOURNAL_FILE), format!("kept\t{intent}\n")).unwrap();
        let done = reg.recover().unwrap();
        assert!(done.iter().any(|d| d.contains("audit line")), "{done:?}");
        let log = fs::read_to_string(reg.root().join("audit.jsonl")).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        let at = lines
            .iter()
            .position(|l| *l == intent)
            .expect("intent back");
        assert!(lines[at + 1].contains("\"crate\":\"kept\""), "{log}");
        assert!(!lines[at + 1].contains("\"started\""), "settled: {log}");
        // Once there, it is not written twice.
        fs::write(reg.root().join(JOURNAL_FILE), format!("kept\t{intent}\n")).unwrap();
        reg.recover().unwrap();
        let again = fs::read_to_string(reg.root().join("audit.jsonl")).unwrap();
        assert_eq!(again.matches(intent).count(), 1);
    }

    /// A kill -9 while the journal still names a publish whose audit lines are further back
    /// in the log than its last 64 KiB (the server's refused writes, a batch a second, came
    /// after it): the intent is in the log, whole, and must not be written a second time
    /// (which the opening of the log then settles as a second publish).
    #[test]
    fn an_intent_further_back_than_the_tail_is_not_written_twice() {
        let (_t, reg) = scratch_registry();
        reg.defer_checkpoints();
        publish_deferred(&reg, "kept");
        let journal = fs::read_to_string(reg.root().join(JOURNAL_FILE)).unwrap();
        let record: Record = serde_json::from_str(journal.lines().last().unwrap()).unwrap();
        let intent = record.intent.as_deref().unwrap();
        let refusal = crate::registry::WriteRefusal {
            at: 1_800_000_000,
            action: "publish",
            krate: Some("x".repeat(150)),
            version: Some("1.0.0".to_owned()),
            token: None,
            peer: None,
            reason: "r".repeat(150),
        };
        for _ in 0..10 {
            reg.audit_refusals(&vec![refusal.clone(); 64], 0).unwrap();
        }
        let root = reg.root().to_owned();
        drop(reg);
        let reg = Registry::open(&root).unwrap();
        let log = fs::read_to_string(reg.root().join("audit.jsonl")).unwrap();
        assert!(log.len() > 64 * 1024);
        assert_eq!(log.matches(intent).count(), 1, "written twice");
        assert_eq!(
            log.matches(r#""action":"publish","crate":"kept""#).count(),
            2
        );
    }

    fn history_reads_all(repo: &git2::Repository) -> bool {
        let mut walk = repo.revwalk().unwrap();
        walk.push_head().unwrap();
        walk.all(|oid| {
            let c = repo.find_commit(oid.unwrap()).unwrap();
            let tree = c.tree().unwrap();
            let mut ok = true;
            tree.walk(git2::TreeWalkMode::PreOrder, |_, e| {
                ok &= repo.find_object(e.id(), None).is_ok();
                git2::TreeWalkResult::Ok
            })
            .unwrap();
            ok
        })
    }
}
