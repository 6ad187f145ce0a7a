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

use super::git;

/// The writer's open repository and what it committed since the last checkpoint.
#[derive(Default)]
pub struct Writer {
    repo: Option<Repository>,
    pending: Vec<Oid>,
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
            // Whatever libgit2 keeps of a failed write (a full disk) is not trusted.
            self.repo = None;
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
        let _unsynced = Unsynced::new();
        let before = repo.head()?.target();
        let mut index = git::head_index(repo)?;
        for p in paths {
            if dir.join(p).exists() {
                index.add_path(Path::new(p))?;
            } else {
                index.remove_path(Path::new(p))?;
            }
        }
        let Some(commit) = git::commit_index(repo, &mut index, message)? else {
            return Ok(false);
        };
        let commit = repo.find_commit(commit)?;
        let mut written = vec![commit.id()];
        let tree = commit.tree()?;
        written.push(tree.id());
        for p in paths {
            // Each folder of the path and the file itself (a removed file has none).
            let mut at = String::new();
            for part in p.split('/') {
                if !at.is_empty() {
                    at.push('/');
                }
                at.push_str(part);
                match tree.get_path(Path::new(&at)) {
                    Ok(entry) => written.push(entry.id()),
                    Err(_) => break,
                }
            }
        }
        // libgit2 1.9 can report an object write on a full disk as done, and only the
        // commit itself is checked for that (`git::commit_index`): each object is read
        // back from the disk before the commit counts. One that does not read back takes
        // the branch back to where it was.
        let odb = repo.odb()?;
        if let Some(missing) = written.iter().find(|o| odb.read(**o).is_err()) {
            let cause = git2::Error::last_error(-1);
            if let Some(before) = before {
                let branch = git::head_branch(repo);
                repo.reference(&branch, before, true, "palletizer: commit not written")?;
            }
            return Err(git2::Error::new(
                git2::ErrorCode::GenericError,
                git2::ErrorClass::Odb,
                format!(
                    "the commit's object {missing} was not written: {}",
                    cause.message()
                ),
            ));
        }
        self.pending.extend(written);
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
        self.pending.clear();
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
        let _ = repo.head();
        *slot = Some(repo);
    }
    Ok(slot.as_ref().expect("opened above"))
}

/// What [`verify_since`] found and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verified {
    /// Loose object files that did not read back whole, removed.
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
