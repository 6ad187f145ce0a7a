//! Index commits whose git objects reach the disk later, many at once.
//!
//! A publish used to wait for libgit2 to fsync each object it wrote (a blob, three trees, a
//! commit: one file and one directory sync each) and the ref and its reflogs: 16 of a
//! publish's 27 fsyncs. Here the index file in the working tree is what a write makes
//! durable before it is acknowledged (with the journal naming the crate, see
//! [`crate::registry::store`]); the commit that records it is written without syncs, on a
//! repository the writer keeps open, and [`Writer::sync`] later writes every object committed
//! since into one synced pack and syncs the ref: a checkpoint.
//!
//! After a power cut before a checkpoint, loose objects and the ref may be torn:
//! [`verify_since`] removes the objects that do not read back whole and, when the history
//! from HEAD down to the last checkpoint's commit is no longer complete, points the branch
//! back at that commit; the registry's recovery then commits the working tree again (see
//! `recover`). A kill -9 loses nothing of this: the page cache keeps what was written.
//!
//! Only one thread of a process writes the index (the registry's writer, or the CLI), so
//! turning libgit2's process-wide fsync off around a commit affects no other write.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use git2::{Oid, Repository};

use super::{git, objects};

/// The writer's open repository and what it committed since the last checkpoint.
#[derive(Default)]
pub struct Writer {
    repo: Option<Repository>,
    /// The trees the last commit wrote, which the next one starts from.
    trees: objects::Trees,
    pending: Vec<Oid>,
    /// The packs the commits since the last checkpoint wrote (one each, by its index file),
    /// folded into the checkpoint's synced pack and removed then.
    packs: Vec<std::path::PathBuf>,
    /// The last commit this writer made and its tree, which the next one starts from.
    last: Option<(Oid, Oid)>,
    /// The journal's length after this writer's last append (0 after a checkpoint), and
    /// whether it holds lines another process (or registry handle) wrote, whose commits
    /// are not in `pending`.
    journal_len: u64,
    foreign: bool,
}

/// libgit2's fsync is off while this lives (see the module docs); one at a time in the
/// process (tests run registries on many threads).
struct Unsynced(#[allow(dead_code)] std::sync::MutexGuard<'static, ()>);

/// Held while libgit2's fsync is off.
pub(super) static FSYNC_OFF: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Unsynced {
    fn new() -> Unsynced {
        let guard = FSYNC_OFF.lock().unwrap_or_else(|p| p.into_inner());
        git::set_fsync(false);
        Unsynced(guard)
    }
}

impl Drop for Unsynced {
    fn drop(&mut self) {
        git::set_fsync(true);
    }
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("open", &self.repo.is_some())
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Writer {
    fn repo(&mut self, dir: &Path) -> Result<&Repository, git2::Error> {
        open(&mut self.repo, dir)
    }

    /// Notes an append to the journal, which was `before` bytes long and is now `after`.
    pub fn journaled(&mut self, before: u64, after: u64) {
        if before != self.journal_len {
            self.foreign = true;
        }
        self.journal_len = after;
    }

    /// Notes that the journal was cut back to `len` bytes (a failed change took back its
    /// line and those after it, none of which left a commit).
    pub fn journal_cut(&mut self, len: u64) {
        match len <= self.journal_len {
            true => self.journal_len = len,
            false => self.foreign = true,
        }
    }

    /// Whether a journal of `len` bytes names only commits this writer knows of.
    pub fn knows_journal(&self, len: u64) -> bool {
        !self.foreign && len == self.journal_len
    }

    /// The journal was emptied by a checkpoint.
    pub fn journal_emptied(&mut self) {
        self.journal_len = 0;
        self.foreign = false;
    }

    /// Whether commits wait for a checkpoint.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The commit HEAD names now (`None` for a repository that cannot say).
    pub fn head(&mut self, dir: &Path) -> Option<Oid> {
        self.repo(dir).ok()?.head().ok()?.target()
    }

    /// Stages `paths` (added, changed or removed) and commits them without syncing; the
    /// objects are noted for the next [`Writer::sync`]. Returns false when the tree did not
    /// change.
    pub fn commit_paths(
        &mut self,
        dir: &Path,
        paths: &[&str],
        message: &str,
    ) -> Result<bool, git2::Error> {
        let result = self.commit_unsynced(dir, paths, message);
        if result.is_err() {
            // Whatever was kept of a failed write (a full disk) is not trusted.
            self.repo = None;
            self.trees = objects::Trees::default();
            self.last = None;
        }
        result
    }

    fn commit_unsynced(
        &mut self,
        dir: &Path,
        paths: &[&str],
        message: &str,
    ) -> Result<bool, git2::Error> {
        let repo = open(&mut self.repo, dir)?;
        let git = repo.path().to_owned();
        let branch = git::head_branch(repo);
        // The branch as its loose ref file says (one read); libgit2 when it is packed.
        let before = match objects::read_loose_ref(&git, &branch) {
            Some(oid) => Some(oid),
            None => repo.head().ok().and_then(|h| h.target()),
        };
        let root = match (before, self.last) {
            (Some(oid), Some((last, tree))) if oid == last => Some(tree),
            (Some(oid), _) => Some(repo.find_commit(oid)?.tree_id()),
            (None, _) => None,
        };
        let mut written = Vec::new();
        let mut changes = Vec::with_capacity(paths.len());
        for p in paths {
            let blob = match fs::read(dir.join(p)) {
                Ok(data) => {
                    let blob = objects::blob(data)?;
                    let oid = blob.oid;
                    written.push(blob);
                    Some(oid)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(io_error(&format!("reading {p}"), e)),
            };
            changes.push(objects::Change { path: p, blob });
        }
        let tree = self.trees.edit(repo, root, &changes, &mut written)?;
        let tree = match tree {
            Some(t) => t,
            // Git stores no empty trees but the root's.
            None => objects::empty_tree(&mut written)?,
        };
        if Some(tree) == root {
            return Ok(false);
        }
        let commit = objects::commit(tree, before, message)?;
        let commit_oid = commit.oid;
        written.push(commit);
        let idx = objects::write_pack(&git.join("objects"), &written)
            .map_err(|e| io_error(&format!("writing the objects of {commit_oid}"), e))?;
        self.packs.push(idx);
        self.pending.extend(written.iter().map(|o| o.oid));
        objects::write_ref(&git, &branch, commit_oid)
            .map_err(|e| io_error(&format!("writing {branch}"), e))?;
        self.last = Some((commit_oid, tree));
        Ok(true)
    }

    /// The checkpoint: every object committed since the last one goes into one new pack,
    /// which is synced, then the branch's ref file and its folder are synced, then the loose
    /// copies go. Returns how many objects were packed.
    pub fn sync(&mut self, dir: &Path) -> Result<usize, git2::Error> {
        if self.pending.is_empty() {
            return Ok(0);
        }
        let repo = open(&mut self.repo, dir)?;
        // An object that is gone was removed under the lock by another process's squash
        // (it was no longer reachable): nothing is left of it to sync.
        let odb = repo.odb()?;
        let mut seen = HashSet::new();
        let oids: Vec<Oid> = self
            .pending
            .iter()
            .copied()
            .filter(|o| seen.insert(*o) && odb.exists(*o))
            .collect();
        let packed = match oids.is_empty() {
            true => 0,
            false => git::pack_objects(repo, &oids)?,
        };
        git::sync_head_ref(repo)?;
        git::remove_loose_copies(repo, &oids);
        // The commits' own packs: their objects are in the synced pack now. The index
        // file goes first (git then no longer looks in the pack), then the pack.
        let removed = !self.packs.is_empty();
        for idx in self.packs.drain(..) {
            let _ = fs::remove_file(&idx);
            let _ = fs::remove_file(idx.with_extension("pack"));
        }
        self.pending.clear();
        // Git's index file, a cache the commits do not keep, is put back in step with HEAD
        // for `git status` in the folder (unsynced: nothing depends on it).
        let _unsynced = Unsynced::new();
        if let Err(e) = git::reset_to_head(repo) {
            error!("warning: refreshing git's index file: {e}");
        }
        drop(_unsynced);
        drop(odb);
        if removed {
            // libgit2 keeps every pack it has seen open: the removed ones go with the handle.
            self.repo = None;
        }
        Ok(packed)
    }
}

/// The repository kept in `slot`, opened on first use.
fn open<'a>(slot: &'a mut Option<Repository>, dir: &Path) -> Result<&'a Repository, git2::Error> {
    if slot.is_none() {
        // Opened with libgit2's fsync off: its ref store and object store take the setting
        // when they are first used, which is here.
        let _unsynced = Unsynced::new();
        let repo = Repository::open(dir)?;
        repo.odb()?;
        super::objects::fan_out(&repo.path().join("objects"));
        let _ = repo.head();
        *slot = Some(repo);
    }
    Ok(slot.as_ref().expect("opened above"))
}

/// What [`verify_since`] found and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verified {
    /// Loose object files and packs that did not read back whole, removed.
    pub removed: usize,
    /// The branch pointed back at the last checkpoint's commit (history after it was torn).
    pub reset_to: Option<Oid>,
}

/// After a crash before a checkpoint whose commit was `base` (see the module docs): removes
/// loose objects that do not read back whole, then checks that every commit from HEAD down to
/// `base`, and every tree and file of theirs, can be read; when not, the branch goes back to
/// `base` (synced). Registry lock held.
pub fn verify_since(dir: &Path, base: Option<Oid>) -> Result<Verified, git2::Error> {
    let repo = git::open_to_write(dir)?;
    let mut found = Verified::default();
    // A commit's pack written without syncs that a power cut tore goes before libgit2
    // loads it: its objects are then missing, and the history check below finds them so.
    let packs = repo.path().join("objects").join("pack");
    for entry in fs::read_dir(&packs).into_iter().flatten().flatten() {
        let idx = entry.path();
        if idx.extension().is_some_and(|e| e == "idx") && !objects::pack_is_whole(&idx) {
            let _ = fs::remove_file(&idx);
            let _ = fs::remove_file(idx.with_extension("pack"));
            found.removed += 1;
        }
    }
    let odb = repo.odb()?;
    for (oid, path) in git::loose_objects_of(&repo)? {
        // libgit2 checks the object's hash as it reads it.
        if odb.read(oid).is_err() && fs::remove_file(&path).is_ok() {
            found.removed += 1;
        }
    }
    if history_reads(&repo, base).unwrap_or(false) {
        return Ok(found);
    }
    let Some(base) = base else {
        return Err(git2::Error::from_str(
            "the index history is torn and the journal names no commit to go back to",
        ));
    };
    repo.find_commit(base)?;
    let branch = git::head_branch(&repo);
    if repo.find_reference(&branch).is_err() {
        // A torn ref file cannot be updated in place: libgit2 reads the old value first.
        let torn = repo.path().join(&branch);
        match fs::remove_file(&torn) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(git2::Error::from_str(&format!(
                    "removing the torn {}: {e}",
                    torn.display()
                )))
            }
            _ => {}
        }
    }
    repo.reference(
        &branch,
        base,
        true,
        "palletizer: back to the last synced commit",
    )?;
    git::sync_head_ref(&repo)?;
    found.reset_to = Some(base);
    Ok(found)
}

/// Whether HEAD, the commits down to `base` and all their trees and files read back.
fn history_reads(repo: &Repository, base: Option<Oid>) -> Result<bool, git2::Error> {
    let head = repo
        .head()?
        .target()
        .ok_or_else(|| git2::Error::from_str("no HEAD"))?;
    let mut walk = repo.revwalk()?;
    walk.push(head)?;
    if let Some(b) = base {
        if repo.find_commit(b).is_ok() {
            walk.hide(b)?;
        }
    }
    let odb = repo.odb()?;
    let mut seen = HashSet::new();
    for oid in walk {
        let commit = repo.find_commit(oid?)?;
        let mut stack = vec![commit.tree_id()];
        while let Some(t) = stack.pop() {
            if !seen.insert(t) {
                continue;
            }
            let tree = repo.find_tree(t)?;
            for entry in tree.iter() {
                match entry.kind() {
                    Some(git2::ObjectType::Tree) => stack.push(entry.id()),
                    _ => {
                        if seen.insert(entry.id()) {
                            odb.read(entry.id())?;
                        }
                    }
                }
            }
        }
    }
    Ok(true)
}

fn io_error(what: &str, e: std::io::Error) -> git2::Error {
    git2::Error::new(
        git2::ErrorCode::GenericError,
        git2::ErrorClass::Os,
        format!("{what}: {e}"),
    )
}
