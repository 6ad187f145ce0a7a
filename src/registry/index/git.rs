//! The index repository: creating it, committing changes to it, and telling whether its
//! working tree matches its last commit. Only the registry's writer path calls these.
//!
//! Durability: every repository this module writes to is opened through [`open_to_write`],
//! which turns on libgit2's process-wide `GIT_OPT_ENABLE_FSYNC_GITDIR`: libgit2 then fsyncs
//! every object, pack and ref it writes (and their directories), so a commit that returned is
//! on disk. No git setting is needed for that; `core.fsyncObjectFiles`, which older registries
//! set to the same end, makes git 2.47 warn on every command run in the index and is removed
//! at open (crash recovery).
//!
//! Git's index file is only a cache here: a commit is built in memory from HEAD's tree (the
//! cached index when it still equals HEAD, for its stat data) and the index file is written
//! only after the commit. A commit that fails, on a full disk too, leaves nothing staged for
//! the next one to sweep in; an index file that could not be written afterwards is noticed
//! by the next commit and not trusted.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use git2::{IndexAddOption, Repository, Signature, Status, StatusOptions};

use crate::registry::names::canonical;
use crate::registry::store::{is_temp_name, walk_files_in};

fn signature() -> Result<Signature<'static>, git2::Error> {
    Signature::now("palletizer", "palletizer@localhost")
}

/// Creates the repository with its first commit holding `config.json`.
pub fn init(dir: &Path, config_json: &str) -> Result<(), git2::Error> {
    sync_writes();
    let repo = Repository::init(dir)?;
    drop_reflogs(&repo)?;
    std::fs::write(dir.join("config.json"), config_json)
        .map_err(|e| git2::Error::from_str(&format!("writing config.json: {e}")))?;
    let mut index = repo.index()?;
    index.add_path(Path::new("config.json"))?;
    index.write()?;
    let tree = repo.find_tree(index.write_tree()?)?;
    let sig = signature()?;
    repo.commit(Some("HEAD"), &sig, &sig, "Initialize index", &tree, &[])?;
    Ok(())
}

/// The setting older registries used to make libgit2 fsync; git 2.47 warns about it on every
/// command run in the index.
const DEPRECATED_FSYNC: &str = "core.fsyncObjectFiles";

/// Turns on libgit2's fsync of everything it writes in a git directory (objects, packs,
/// refs), for the whole process, once.
fn sync_writes() {
    static ON: std::sync::Once = std::sync::Once::new();
    ON.call_once(|| set_fsync(true));
}

/// Sets libgit2's process-wide fsync of what it writes in a git directory (see
/// [`super::deferred`] for the one place that turns it off for a while).
pub(super) fn set_fsync(on: bool) {
    libgit2_sys::init();
    // SAFETY: a documented option taking one int, on an initialized libgit2.
    let rc = unsafe {
        libgit2_sys::git_libgit2_opts(
            libgit2_sys::GIT_OPT_ENABLE_FSYNC_GITDIR as libc::c_int,
            libc::c_int::from(on),
        )
    };
    // It cannot fail: the option only sets a flag.
    debug_assert!(rc >= 0);
}

/// Opens the repository to write to it, with libgit2's fsync on (see the module docs).
pub(super) fn open_to_write(dir: &Path) -> Result<Repository, git2::Error> {
    sync_writes();
    Repository::open(dir)
}

/// Drops the repository's `core.fsyncObjectFiles`, which libgit2 no longer needs (see the
/// module docs) and git warns about.
fn drop_deprecated_fsync(repo: &Repository) -> Result<(), git2::Error> {
    let mut local = repo.config()?.open_level(git2::ConfigLevel::Local)?;
    if local.get_entry(DEPRECATED_FSYNC).is_ok() {
        local.remove_multivar(DEPRECATED_FSYNC, ".*")?;
    }
    Ok(())
}

/// Writes the git config of the repository in `dir` anew, with what `init` gives a new
/// index repository and nothing else: a restore's, in place of whatever a backup held (a
/// config can make git run programs and read other files).
pub fn write_config(dir: &Path) -> Result<(), git2::Error> {
    let path = dir.join(".git").join("config");
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(io_error(&format!("removing {}", path.display()), e))
        }
        _ => {}
    }
    sync_writes();
    let mut config = git2::Config::open(&path)?;
    config.set_i32("core.repositoryformatversion", 0)?;
    config.set_bool("core.filemode", true)?;
    config.set_bool("core.bare", false)?;
    // No reflogs: the history is the record, and each ref update would sync two more files.
    config.set_bool("core.logallrefupdates", false)?;
    Ok(())
}

/// Stages the given paths (added, changed or removed) and commits them with `message`.
/// Returns false when the tree did not change, in which case nothing is committed.
pub fn commit_paths(dir: &Path, paths: &[&str], message: &str) -> Result<bool, git2::Error> {
    let repo = open_to_write(dir)?;
    let mut index = head_index(&repo)?;
    for p in paths {
        if dir.join(p).exists() {
            index.add_path(Path::new(p))?;
        } else {
            index.remove_path(Path::new(p))?;
        }
    }
    Ok(commit_index(&repo, &mut index, message)?.is_some())
}

/// Git's index as HEAD has it: the cached file when it agrees with HEAD (keeping its stat
/// data), else rebuilt in memory from HEAD's tree.
pub(super) fn head_index(repo: &Repository) -> Result<git2::Index, git2::Error> {
    let head = repo.head()?.peel_to_tree()?;
    let mut index = cached_index(repo)?;
    if index.write_tree()? != head.id() {
        index.read_tree(&head)?;
    }
    Ok(index)
}

/// Git's index file, or, when it cannot be read (torn by a crash, corrupted), a new one: it
/// is only a cache of HEAD's tree and the working tree's stat data. Writer lock held.
fn cached_index(repo: &Repository) -> Result<git2::Index, git2::Error> {
    match repo.index() {
        Ok(index) => Ok(index),
        Err(_) => {
            let _ = fs::remove_file(repo.path().join("index"));
            repo.index()
        }
    }
}

/// Whether git's index file can be read (for `check`).
pub fn index_readable(dir: &Path) -> Result<bool, git2::Error> {
    Ok(Repository::open(dir)?.index().is_ok())
}

/// Puts git's index back to HEAD's tree (the working tree is left alone).
fn reset_to_head(repo: &Repository) -> Result<(), git2::Error> {
    let tree = repo.head()?.peel_to_tree()?;
    let mut index = repo.index()?;
    index.read_tree(&tree)?;
    index.write()
}

/// What a writer killed mid-commit can leave in `.git`: lock files (`index.lock`,
/// `HEAD.lock`, `refs/heads/master.lock`, ...) that make every later commit fail, and
/// libgit2's temp object files. Only safe to remove while holding the registry lock.
pub fn stale_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let git = dir.join(".git");
    let mut out = Vec::new();
    for name in ["index.lock", "HEAD.lock", "config.lock", "packed-refs.lock"] {
        let p = git.join(name);
        if p.exists() {
            out.push(p);
        }
    }
    let mut found = |dir: &str, stale: &dyn Fn(&str) -> bool| {
        walk_files_in(&git.join(dir), "", false, &mut |rel, path| {
            if stale(rel.rsplit('/').next().unwrap_or(rel)) {
                out.push(path.to_owned());
            }
        })
    };
    found("refs", &|name| name.ends_with(".lock"))?;
    found("objects", &|name| {
        name.starts_with("tmp_object") || name.starts_with("tmp_pack")
    })?;
    out.sort();
    Ok(out)
}

/// Crash recovery for the repository (registry lock held): removes stale lock and temp
/// files, drops the `core.fsyncObjectFiles` of repositories made before libgit2 was told to
/// fsync by [`open_to_write`], and puts git's index back to HEAD. Returns what it removed
/// and whether the index had staged changes.
pub fn repair(dir: &Path) -> Result<(Vec<PathBuf>, bool), git2::Error> {
    let stale = stale_files(dir).map_err(|e| io_error("listing lock files", e))?;
    for p in &stale {
        fs::remove_file(p).map_err(|e| io_error(&format!("removing {}", p.display()), e))?;
    }
    let repo = open_to_write(dir)?;
    drop_deprecated_fsync(&repo)?;
    drop_reflogs(&repo)?;
    let unreadable = repo.index().is_err();
    cached_index(&repo)?;
    let staged = unreadable || !staged_paths(&repo)?.is_empty();
    if staged {
        reset_to_head(&repo)?;
    }
    Ok((stale, staged))
}

fn io_error(what: &str, e: io::Error) -> git2::Error {
    git2::Error::new(
        git2::ErrorCode::GenericError,
        git2::ErrorClass::Os,
        format!("{what}: {e}"),
    )
}

/// Paths whose staged content differs from HEAD (what a failed commit can leave behind).
fn staged_paths(repo: &Repository) -> Result<Vec<String>, git2::Error> {
    let head = repo.head()?.peel_to_tree()?;
    let index = repo.index()?;
    let diff = repo.diff_tree_to_index(Some(&head), Some(&index), None)?;
    Ok(diff
        .deltas()
        .filter_map(|d| {
            d.new_file()
                .path()
                .or(d.old_file().path())
                .and_then(|p| p.to_str())
                .map(str::to_owned)
        })
        .collect())
}

/// [`staged_paths`] for `check`.
pub fn staged(dir: &Path) -> Result<Vec<String>, git2::Error> {
    staged_paths(&Repository::open(dir)?)
}

/// How many of the newest crates a squashed history remembers (see [`squash`]).
const SQUASH_REMEMBERS: usize = 50;
/// The line of a squash commit's message that names the newest crates before it.
const NEWEST_LINE: &str = "Newest: ";

/// The crates of the newest "Add NAME VERS" commits, newest first, each once (by canonical
/// name), at most `names` of them, looking at no more than `commits` commits: what was
/// published last, read from the history instead of the file system. A squash commit
/// carries the list as it was before the squash.
pub fn recently_added(
    dir: &Path,
    names: usize,
    commits: usize,
) -> Result<Vec<String>, git2::Error> {
    let repo = Repository::open(dir)?;
    let mut walk = repo.revwalk()?;
    walk.push_head()?;
    let mut out: Vec<String> = Vec::with_capacity(names);
    for oid in walk.take(commits) {
        let commit = repo.find_commit(oid?)?;
        let message = commit.message().unwrap_or("");
        let added = message
            .strip_prefix("Add ")
            .and_then(|rest| rest.split([' ', '\n']).next())
            .into_iter();
        let remembered = message
            .lines()
            .find_map(|l| l.strip_prefix(NEWEST_LINE))
            .into_iter()
            .flat_map(|l| l.split(' '));
        for name in added.chain(remembered) {
            let key = canonical(name);
            if !name.is_empty() && !out.iter().any(|n| canonical(n) == key) {
                out.push(name.to_owned());
                if out.len() == names {
                    return Ok(out);
                }
            }
        }
    }
    Ok(out)
}

/// Whether git's history is one line of commits from HEAD back to the root.
pub fn history_is_linear(dir: &Path) -> Result<bool, git2::Error> {
    let repo = Repository::open(dir)?;
    let mut commit = repo.head()?.peel_to_commit()?;
    loop {
        match commit.parent_count() {
            0 => return Ok(true),
            1 => commit = commit.parent(0)?,
            _ => return Ok(false),
        }
    }
}

/// Stages every change in the working tree (temp files excepted) and commits it.
pub fn commit_all(dir: &Path, message: &str) -> Result<bool, git2::Error> {
    let repo = open_to_write(dir)?;
    let mut index = head_index(&repo)?;
    // Only what the registry itself writes is committed: `config.json` and crate files at
    // their index paths. Anything else (temp files, strays) stays out, for `check` to report.
    let mut skip_foreign = |path: &Path, _: &[u8]| -> i32 {
        let ours = path
            .to_str()
            .is_some_and(|p| p == "config.json" || super::is_index_path(p));
        i32::from(!ours)
    };
    index.add_all(["*"], IndexAddOption::DEFAULT, Some(&mut skip_foreign))?;
    index.update_all(["*"], None)?;
    Ok(commit_index(&repo, &mut index, message)?.is_some())
}

/// Commits the in-memory index, then caches it in the index file (best effort: the commit
/// is what counts, and the next commit checks the cache against HEAD). Returns the new
/// commit, or `None` when the tree did not change.
pub(super) fn commit_index(
    repo: &Repository,
    index: &mut git2::Index,
    message: &str,
) -> Result<Option<git2::Oid>, git2::Error> {
    let tree_id = index.write_tree()?;
    let head = repo.head()?.peel_to_commit()?;
    if head.tree_id() == tree_id {
        return Ok(None);
    }
    let tree = repo.find_tree(tree_id)?;
    let sig = signature()?;
    let oid = repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &[&head])?;
    // libgit2 1.9 returns success when writing the commit object fails (a full disk): the
    // ref is then left alone. Believe the commit only once HEAD names it and it can be read;
    // the cause, if any, is what libgit2 noted last (taken before the checks overwrite it).
    let cause = git2::Error::last_error(-1);
    let landed = repo.head()?.target() == Some(oid) && repo.find_commit(oid).is_ok();
    if !landed {
        return Err(git2::Error::new(
            git2::ErrorCode::GenericError,
            git2::ErrorClass::Odb,
            format!("the commit was not written: {}", cause.message()),
        ));
    }
    let _ = index.write();
    Ok(Some(oid))
}

/// Paths in the working tree that differ from the last commit (temp files excluded).
pub fn dirty_paths(dir: &Path) -> Result<Vec<String>, git2::Error> {
    let repo = Repository::open(dir)?;
    let mut opts = StatusOptions::new();
    opts.include_untracked(true).recurse_untracked_dirs(true);
    let statuses = repo.statuses(Some(&mut opts))?;
    Ok(statuses
        .iter()
        .filter(|s| s.status() != Status::CURRENT && !s.status().contains(Status::IGNORED))
        .filter_map(|s| s.path().ok().map(str::to_owned))
        .filter(|p| !p.rsplit('/').next().is_some_and(is_temp_name))
        .collect())
}

/// Loose objects past which [`maintain`] packs them: a commit adds about five, so this is a
/// pack every couple of hundred changes, each a few hundred KiB to write.
pub(super) const LOOSE_OBJECTS_BEFORE_PACKING: usize = 1024;

/// Packs past which [`maintain`] merges them into one: a lookup that misses a pack's index
/// costs a binary search in each, and a repository that only ever gained packs would have a
/// hundred after 20,000 publishes. Merging rewrites every object, so it is rare: about every
/// 3,000 changes.
const PACKS_BEFORE_MERGING: usize = 16;

/// What [`maintain`] or [`squash`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Packed {
    /// Objects written to the new pack.
    pub objects: usize,
    /// Loose objects and old packs removed.
    pub removed_loose: usize,
    pub removed_packs: usize,
}

/// Keeps the repository packed (registry lock held): once loose objects pass a threshold,
/// they are written into one new pack and removed. libgit2 writes every commit's objects as
/// loose files (one file each, five per publish): 20,000 publishes would leave 100,000
/// files, and reading them costs a system call each. A new pack that would make more than
/// [`PACKS_BEFORE_MERGING`] is instead one pack of everything (see [`merge_packs`]).
/// Also says how many loose objects are left (0 once packed).
pub fn maintain(dir: &Path) -> Result<(Option<Packed>, usize), git2::Error> {
    let repo = open_to_write(dir)?;
    let loose = loose_objects(&repo).map_err(|e| io_error("listing loose objects", e))?;
    let packing = loose.len() >= LOOSE_OBJECTS_BEFORE_PACKING;
    let packs = pack_count(&repo).map_err(|e| io_error("listing packs", e))?;
    if packs + usize::from(packing) > PACKS_BEFORE_MERGING {
        return Ok((Some(merge_packs(&repo, loose)?), 0));
    }
    if !packing {
        return Ok((None, loose.len()));
    }
    Ok((Some(pack_loose(&repo, loose)?), 0))
}

/// Whether [`maintain`] can have anything to do after one more change, when `loose` loose
/// objects were counted since its last look: a change's commit writes at most
/// [`OBJECTS_PER_CHANGE`] (a blob, the trees down to it, the commit), so the listing of
/// every object folder (257 directory opens) is skipped until they could pass the threshold.
pub fn may_need_packing(loose: usize) -> bool {
    loose.saturating_add(OBJECTS_PER_CHANGE) >= LOOSE_OBJECTS_BEFORE_PACKING
}

/// The most objects one change's commit writes: the index file's blob, the trees of its
/// path (at most three folders deep, and the root), the commit; with room to spare.
pub const OBJECTS_PER_CHANGE: usize = 8;

/// Writes every loose object into one new synced pack and removes them (registry lock held;
/// after a crash recovery, see [`super::deferred`]). Returns how many were packed.
pub fn pack_all_loose(dir: &Path) -> Result<usize, git2::Error> {
    let repo = open_to_write(dir)?;
    let loose = loose_objects_of(&repo)?;
    if loose.is_empty() {
        return Ok(0);
    }
    Ok(pack_loose(&repo, loose)?.objects)
}

/// Writes the loose objects into one new pack and removes them.
fn pack_loose(repo: &Repository, loose: Vec<(git2::Oid, PathBuf)>) -> Result<Packed, git2::Error> {
    let mut pb = repo.packbuilder()?;
    for (oid, _) in &loose {
        pb.insert_object(*oid, None)?;
    }
    let (objects, _) = write_pack(repo, &mut pb)?;
    Ok(Packed {
        objects,
        removed_loose: remove_loose(loose),
        removed_packs: 0,
    })
}

/// Merges every pack but the largest, and the loose objects, into one new pack, syncs it,
/// then removes the loose objects and the merged packs. The largest pack (most of the
/// history) is left alone, so a merge costs what was added since, not the whole history:
/// rewriting every object of a 20,000-commit index took 45 s and 110 MB; merging the 16
/// small packs is about 16,000 objects. When the merged pack outgrows the kept one, the next
/// merge takes the old one in (each object is rewritten a logarithmic number of times).
/// Objects are listed from the packs' index files, so no object is read to list them.
///
/// A crash at any point loses nothing: every object is in the new pack, synced, before any
/// file is removed, and an old pack goes index first (without its index a pack is never
/// consulted, while an index without its pack would fail lookups). A reader at work keeps
/// the files it has open (unlinked files stay readable); a pack it has not opened yet fails
/// to open and is skipped, and on a miss libgit2 rescans the pack directory and finds the
/// new pack.
fn merge_packs(repo: &Repository, loose: Vec<(git2::Oid, PathBuf)>) -> Result<Packed, git2::Error> {
    let pack_dir = repo.path().join("objects/pack");
    let mut packs = packs_by_size(&pack_dir).map_err(|e| io_error("listing packs", e))?;
    let kept = packs.pop().map(|(_, stem)| stem);
    let mut pb = repo.packbuilder()?;
    for (_, stem) in &packs {
        let idx = fs::read(pack_dir.join(format!("{stem}.idx")))
            .map_err(|e| io_error(&format!("reading {stem}.idx"), e))?;
        for id in pack_index_ids(&idx)
            .ok_or_else(|| git2::Error::from_str(&format!("{stem}.idx is not a v2 pack index")))?
        {
            pb.insert_object(id, None)?;
        }
    }
    for (id, _) in &loose {
        pb.insert_object(*id, None)?;
    }
    let (objects, new_pack) = write_pack(repo, &mut pb)?;
    drop(pb);
    let keep: Vec<&str> = [Some(new_pack.as_str()), kept.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    let packed = Packed {
        objects,
        removed_loose: remove_loose(loose),
        removed_packs: remove_packs_except(repo, &keep)?,
    };
    release_freed_memory();
    Ok(packed)
}

/// The packs in `dir` as (size of the `.pack`, `pack-<hash>`), smallest first.
fn packs_by_size(dir: &Path) -> io::Result<Vec<(u64, String)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name
            .strip_suffix(".pack")
            .filter(|s| s.starts_with("pack-"))
        {
            if dir.join(format!("{stem}.idx")).exists() {
                out.push((entry.metadata()?.len(), stem.to_owned()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The object ids a pack index (version 2, what libgit2 and git write) lists.
fn pack_index_ids(idx: &[u8]) -> Option<impl Iterator<Item = git2::Oid> + '_> {
    const FANOUT: usize = 8;
    const IDS: usize = FANOUT + 256 * 4;
    if idx.get(..8)? != b"\xfftOc\0\0\0\x02" {
        return None;
    }
    let count = u32::from_be_bytes(idx.get(FANOUT + 255 * 4..IDS)?.try_into().ok()?) as usize;
    let ids = idx.get(IDS..IDS.checked_add(count.checked_mul(20)?)?)?;
    Some(ids.chunks(20).filter_map(|c| git2::Oid::from_bytes(c).ok()))
}

/// Building a pack takes memory in proportion to the objects in it, freed on the writer
/// thread's own heap arena: hand it back to the system.
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory at the heap's edges to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Removes loose object files whose objects are in a synced pack. Returns how many.
fn remove_loose(loose: Vec<(git2::Oid, PathBuf)>) -> usize {
    // A reader that looked for one of them a moment ago finds it in the pack on its retry
    // (libgit2 refreshes its pack list when an object is missing).
    loose
        .into_iter()
        .filter(|(_, path)| fs::remove_file(path).is_ok())
        .count()
}

/// Removes every pack but those in `keep` (`pack-<hash>`), index files first: without its
/// index a pack is never consulted again. Returns how many packs went.
fn remove_packs_except(repo: &Repository, keep: &[&str]) -> Result<usize, git2::Error> {
    let pack_dir = repo.path().join("objects/pack");
    let mut removed = 0;
    for ext in ["idx", ""] {
        for entry in fs::read_dir(&pack_dir)
            .map_err(|e| io_error("listing packs", e))?
            .flatten()
        {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let old = name.starts_with("pack-") && !keep.iter().any(|k| name.starts_with(k));
            if old && name.ends_with(ext) && fs::remove_file(entry.path()).is_ok() && ext.is_empty()
            {
                removed += usize::from(name.ends_with(".pack"));
            }
        }
    }
    Ok(removed)
}

/// How many packs the repository has (counted by their index files).
fn pack_count(repo: &Repository) -> io::Result<usize> {
    let pack_dir = repo.path().join("objects/pack");
    let rd = match fs::read_dir(&pack_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut n = 0;
    for entry in rd {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        n += usize::from(name.starts_with("pack-") && name.ends_with(".idx"));
    }
    Ok(n)
}

/// Replaces the index's history with one commit holding HEAD's tree (registry lock held),
/// as crates.io does with its index from time to time: a clone then carries one version
/// of each file instead of every change ever made. Everything no longer reachable (old
/// commits, loose objects, old packs, reflogs) is removed once the new pack is on disk.
///
/// Clients keep working: cargo fetches the index with a forced refspec, so a history that
/// no longer contains their last fetch is fetched anew.
pub fn squash(dir: &Path, message: &str) -> Result<(git2::Oid, Packed), git2::Error> {
    // The newest crates come from the history (the home page lists them): the one commit
    // left names them.
    let newest = recently_added(dir, SQUASH_REMEMBERS, 10_000)?;
    let message = if newest.is_empty() {
        message.to_owned()
    } else {
        format!("{message}\n\n{NEWEST_LINE}{}\n", newest.join(" "))
    };
    let message = message.as_str();
    let repo = open_to_write(dir)?;
    let head = repo.head()?;
    let branch = head
        .name()
        .map_err(|_| git2::Error::from_str("HEAD is not a branch"))?
        .to_owned();
    let tree = head.peel_to_tree()?;
    let sig = signature()?;
    let oid = repo.commit(None, &sig, &sig, message, &tree, &[])?;
    if repo.find_commit(oid).is_err() {
        let cause = git2::Error::last_error(-1);
        return Err(git2::Error::from_str(&format!(
            "the commit was not written: {}",
            cause.message()
        )));
    }
    // Everything reachable from the new commit goes into one synced pack before the ref
    // moves: a crash at any point leaves either the old history or the new one, whole.
    let mut pb = repo.packbuilder()?;
    pb.insert_commit(oid)?;
    let (objects, new_pack) = write_pack(&repo, &mut pb)?;
    repo.reference(&branch, oid, true, "squash index history")?;
    if repo.head()?.target() != Some(oid) {
        return Err(git2::Error::from_str(
            "HEAD did not move to the squashed commit",
        ));
    }
    let _ = fs::remove_dir_all(repo.path().join("logs"));
    let loose = loose_objects(&repo).map_err(|e| io_error("listing loose objects", e))?;
    let packed = Packed {
        objects,
        removed_loose: remove_loose(loose),
        removed_packs: remove_packs_except(&repo, &[new_pack.as_str()])?,
    };
    reset_to_head(&repo)?;
    Ok((oid, packed))
}

/// Writes `pb` as a pack into the repository and syncs it (libgit2 does not) before the
/// objects it holds are removed from anywhere else. Returns the number of objects and the
/// pack's file name without extension (`pack-<hash>`).
fn write_pack(
    repo: &Repository,
    pb: &mut git2::PackBuilder<'_>,
) -> Result<(usize, String), git2::Error> {
    let pack_dir = repo.path().join("objects/pack");
    fs::create_dir_all(&pack_dir).map_err(|e| io_error("creating objects/pack", e))?;
    let objects = pb.object_count();
    pb.write(&pack_dir, 0o444)?;
    let stem = format!(
        "pack-{}",
        pb.name()?
            .ok_or_else(|| git2::Error::from_str("the pack builder named no pack"))?
    );
    for ext in ["pack", "idx"] {
        let path = pack_dir.join(format!("{stem}.{ext}"));
        fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_error(&format!("syncing {}", path.display()), e))?;
    }
    fs::File::open(&pack_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("syncing objects/pack", e))?;
    if let Err(e) = verify_pack(repo, &stem, objects) {
        // Not left for readers to consult before the loose objects: index first, as
        // `remove_packs_except` does.
        for ext in ["idx", "pack"] {
            let _ = fs::remove_file(pack_dir.join(format!("{stem}.{ext}")));
        }
        return Err(e);
    }
    Ok((objects, stem))
}

/// Reads back every object of the new pack `stem` from the pack alone, before anything is
/// removed because it is in there: libgit2 1.9 can report a write on a full disk as done
/// (see `commit_index`), and a pack that does not read back must not replace the loose
/// objects or packs it copies. The pack is looked at through hard links in a folder of its
/// own (no data blocks), where no loose object can answer for it.
fn verify_pack(repo: &Repository, stem: &str, objects: usize) -> Result<(), git2::Error> {
    let pack_dir = repo.path().join("objects/pack");
    let alone = repo
        .path()
        .join(format!("objects/verify-{}", std::process::id()));
    let _ = fs::remove_dir_all(&alone);
    let checked = (|| {
        fs::create_dir_all(alone.join("pack")).map_err(|e| io_error("creating a folder", e))?;
        for ext in ["pack", "idx"] {
            let name = format!("{stem}.{ext}");
            fs::hard_link(pack_dir.join(&name), alone.join("pack").join(&name))
                .map_err(|e| io_error(&format!("linking {name}"), e))?;
        }
        let idx = fs::read(pack_dir.join(format!("{stem}.idx")))
            .map_err(|e| io_error("reading the new pack's index", e))?;
        let ids: Vec<git2::Oid> = pack_index_ids(&idx)
            .ok_or_else(|| git2::Error::from_str("the new pack's index cannot be read"))?
            .collect();
        if ids.len() != objects {
            return Err(git2::Error::from_str(&format!(
                "the new pack holds {} objects, not {objects}",
                ids.len()
            )));
        }
        let odb = git2::Odb::new()?;
        odb.add_disk_alternate(
            alone
                .to_str()
                .ok_or_else(|| git2::Error::from_str("the repository's path is not UTF-8"))?,
        )?;
        for id in ids {
            // libgit2 checks each object's hash as it reads it.
            odb.read(id)?;
        }
        Ok(())
    })();
    let _ = fs::remove_dir_all(&alone);
    checked
        .map_err(|e| git2::Error::from_str(&format!("the new pack {stem} does not read back: {e}")))
}

/// Every loose object file: `objects/xx/yyyy...`.
fn loose_objects(repo: &Repository) -> io::Result<Vec<(git2::Oid, PathBuf)>> {
    let objects = repo.path().join("objects");
    let mut out = Vec::new();
    for dir in fs::read_dir(&objects)?.flatten() {
        let prefix = dir.file_name();
        let Some(prefix) = prefix.to_str().filter(|p| p.len() == 2) else {
            continue;
        };
        for file in fs::read_dir(dir.path())?.flatten() {
            let rest = file.file_name();
            let Some(rest) = rest.to_str() else { continue };
            if let Ok(oid) = git2::Oid::from_str(&format!("{prefix}{rest}")) {
                if rest.len() == 38 {
                    out.push((oid, file.path()));
                }
            }
        }
    }
    Ok(out)
}

/// The branch HEAD points at (`refs/heads/master` unless HEAD says otherwise).
pub(super) fn head_branch(repo: &Repository) -> String {
    repo.find_reference("HEAD")
        .ok()
        .and_then(|r| r.symbolic_target().ok().flatten().map(str::to_owned))
        .unwrap_or_else(|| "refs/heads/master".to_owned())
}

/// Syncs the file of the branch HEAD points at and its folder (or `packed-refs`, where a
/// packed branch lives): what a ref update written without fsync needs to be durable.
pub(super) fn sync_head_ref(repo: &Repository) -> Result<(), git2::Error> {
    let branch = head_branch(repo);
    let loose = repo.path().join(&branch);
    let file = match loose.exists() {
        true => loose,
        false => repo.path().join("packed-refs"),
    };
    let dir = file.parent().expect("ref files have a folder").to_owned();
    for path in [&file, &dir] {
        fs::File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_error(&format!("syncing {}", path.display()), e))?;
    }
    Ok(())
}

/// [`sync_head_ref`] of the repository in `dir`.
pub fn sync_head_ref_of(dir: &Path) -> Result<(), git2::Error> {
    sync_head_ref(&Repository::open(dir)?)
}

/// Writes the objects `oids` (each one alone, not what it reaches) into one new synced
/// pack. Returns how many went in.
pub(super) fn pack_objects(repo: &Repository, oids: &[git2::Oid]) -> Result<usize, git2::Error> {
    let mut pb = repo.packbuilder()?;
    for oid in oids {
        pb.insert_object(*oid, None)?;
    }
    Ok(write_pack(repo, &mut pb)?.0)
}

/// Removes the loose files of objects that are now in a synced pack (those missing are
/// skipped: an object that already was in a pack was never written loose).
pub(super) fn remove_loose_copies(repo: &Repository, oids: &[git2::Oid]) {
    let objects = repo.path().join("objects");
    for oid in oids {
        let hex = oid.to_string();
        let _ = fs::remove_file(objects.join(&hex[..2]).join(&hex[2..]));
    }
}

/// Every loose object file of the repository.
pub(crate) fn loose_objects_of(
    repo: &Repository,
) -> Result<Vec<(git2::Oid, PathBuf)>, git2::Error> {
    loose_objects(repo).map_err(|e| io_error("listing loose objects", e))
}

/// Drops the reflogs of repositories made before reflogs were turned off (see
/// [`write_config`]): libgit2 keeps appending to a reflog that exists.
fn drop_reflogs(repo: &Repository) -> Result<bool, git2::Error> {
    let mut local = repo.config()?.open_level(git2::ConfigLevel::Local)?;
    if local.get_bool("core.logallrefupdates").ok() != Some(false) {
        local.set_bool("core.logallrefupdates", false)?;
    }
    let logs = repo.path().join("logs");
    match fs::remove_dir_all(&logs) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error(&format!("removing {}", logs.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" {
        /// libgit2's own flag behind `GIT_OPT_ENABLE_FSYNC_GITDIR` (repository.c), which has
        /// no getter; libgit2 is linked statically, so the test reads it where it lives.
        static git_repository__fsync_gitdir: bool;
    }

    #[test]
    fn writes_turn_on_libgit2_fsync_and_set_no_deprecated_git_config() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), "{}").unwrap();
        // Not while another test's deferred commit has it off.
        let _on = super::super::deferred::FSYNC_OFF.lock();
        // SAFETY: a plain bool libgit2 writes only through git_libgit2_opts, done above.
        assert!(unsafe { std::ptr::read_volatile(&raw const git_repository__fsync_gitdir) });
        let config = Repository::open(dir.path()).unwrap().config().unwrap();
        assert!(config.get_entry(DEPRECATED_FSYNC).is_err(), "set by init");

        // A registry made before: recovery removes the old key, whatever it said.
        let git_config = dir.path().join(".git/config");
        let mut text = fs::read_to_string(&git_config).unwrap();
        text.push_str("[core]\n\tfsyncObjectFiles = true\n\tfsyncObjectFiles = false\n");
        fs::write(&git_config, text).unwrap();
        repair(dir.path()).unwrap();
        let text = fs::read_to_string(&git_config).unwrap();
        assert!(!text.contains("fsyncObjectFiles"), "{text}");
        assert!(text.contains("bare = false"), "the rest is kept: {text}");
        fs::write(dir.path().join("config.json"), "{\"a\":1}").unwrap();
        assert!(commit_paths(dir.path(), &["config.json"], "after").unwrap());
    }

    /// A pack that does not read back whole (a write a full disk cut short, which libgit2
    /// may report as done) is refused and taken away; the loose objects stay.
    #[test]
    fn a_pack_that_does_not_read_back_is_refused_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), "{}").unwrap();
        let repo = Repository::open(dir.path()).unwrap();
        let loose = loose_objects(&repo).unwrap();
        let oids: Vec<git2::Oid> = loose.iter().map(|(o, _)| *o).collect();
        let mut pb = repo.packbuilder().unwrap();
        for o in &oids {
            pb.insert_object(*o, None).unwrap();
        }
        let (_, stem) = write_pack(&repo, &mut pb).unwrap();
        let pack = repo.path().join(format!("objects/pack/{stem}.pack"));
        // Truncated in the middle of its objects: the index still lists them.
        let len = fs::metadata(&pack).unwrap().len();
        let mut perms = fs::metadata(&pack).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        fs::set_permissions(&pack, perms).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .open(&pack)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        let err = verify_pack(&repo, &stem, oids.len()).unwrap_err();
        assert!(err.message().contains("does not read back"), "{err}");
        assert!(!repo
            .path()
            .join(format!("objects/verify-{}", std::process::id()))
            .exists());
        // Whole again, it reads back.
        let mut pb = repo.packbuilder().unwrap();
        for o in &oids {
            pb.insert_object(*o, None).unwrap();
        }
        fs::remove_file(&pack).unwrap();
        fs::remove_file(repo.path().join(format!("objects/pack/{stem}.idx"))).unwrap();
        let (n, again) = write_pack(&repo, &mut pb).unwrap();
        assert_eq!((n, &again), (oids.len(), &stem));
        assert_eq!(
            loose_objects(&repo).unwrap().len(),
            loose.len(),
            "loose ones untouched"
        );
    }

    #[test]
    fn maintain_packs_loose_objects_past_the_threshold_and_loses_none() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), "{}").unwrap();
        let repo = Repository::open(dir.path()).unwrap();
        assert_eq!(
            maintain(dir.path()).unwrap().0,
            None,
            "few loose objects: left alone"
        );
        let blobs: Vec<git2::Oid> = (0..LOOSE_OBJECTS_BEFORE_PACKING)
            .map(|i| repo.blob(format!("blob {i}").as_bytes()).unwrap())
            .collect();
        let packed = maintain(dir.path()).unwrap().0.expect("packed");
        assert!(packed.objects > LOOSE_OBJECTS_BEFORE_PACKING, "{packed:?}");
        assert_eq!(packed.objects, packed.removed_loose);
        assert!(loose_objects(&repo).unwrap().is_empty());
        let fresh = Repository::open(dir.path()).unwrap();
        for b in &blobs {
            assert!(fresh.find_blob(*b).is_ok(), "{b} lost");
        }
        assert!(fresh.head().unwrap().peel_to_commit().is_ok());
        // Commits keep working on a packed repository.
        fs::write(dir.path().join("config.json"), "{\"a\":1}").unwrap();
        assert!(commit_paths(dir.path(), &["config.json"], "change").unwrap());
    }

    /// Every object reachable from HEAD.
    fn reachable(repo: &Repository) -> Vec<git2::Oid> {
        let mut out = Vec::new();
        let mut walk = repo.revwalk().unwrap();
        walk.push_head().unwrap();
        for c in walk {
            let commit = repo.find_commit(c.unwrap()).unwrap();
            out.push(commit.id());
            let tree = commit.tree().unwrap();
            out.push(tree.id());
            tree.walk(git2::TreeWalkMode::PreOrder, |_, e| {
                out.push(e.id());
                git2::TreeWalkResult::Ok
            })
            .unwrap();
        }
        out.sort();
        out.dedup();
        out
    }

    #[test]
    fn maintain_merges_many_packs_into_one_while_a_reader_reads() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        use std::time::{Duration, Instant};

        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), "{}").unwrap();
        let repo = Repository::open(dir.path()).unwrap();
        let packs = PACKS_BEFORE_MERGING + 4;
        for i in 0..packs {
            for j in 0..3 {
                let path = format!("{i}/{j}");
                fs::create_dir_all(dir.path().join(i.to_string())).unwrap();
                fs::write(dir.path().join(&path), format!("{i} {j}")).unwrap();
                assert!(commit_paths(dir.path(), &[&path], "change").unwrap());
            }
            pack_loose(&repo, loose_objects(&repo).unwrap()).unwrap();
        }
        assert_eq!(pack_count(&repo).unwrap(), packs);
        // Loose objects are kept too, reachable or not (a blob written a moment ago).
        let stray = repo.blob(b"not yet committed").unwrap();
        let mut all = reachable(&repo);
        all.push(stray);

        // A reader that keeps one repository open across the merge (as one that is serving
        // a fetch), and sometimes opens it anew.
        let stop = Arc::new(AtomicBool::new(false));
        let passes = Arc::new(AtomicUsize::new(0));
        let reader = {
            let (stop, passes, all) = (stop.clone(), passes.clone(), all.clone());
            let path = dir.path().to_owned();
            std::thread::spawn(move || {
                let mut repo = Repository::open(&path).unwrap();
                let mut failures = Vec::new();
                for pass in 0..100_000 {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    if pass % 3 == 2 {
                        repo = Repository::open(&path).unwrap();
                    }
                    let odb = repo.odb().unwrap();
                    for oid in &all {
                        if let Err(e) = odb.read(*oid) {
                            failures.push(format!("pass {pass}: {oid}: {e}"));
                        }
                    }
                    passes.fetch_add(1, Ordering::Release);
                }
                failures
            })
        };
        let wait_for = |n: usize| {
            let deadline = Instant::now() + Duration::from_secs(30);
            while passes.load(Ordering::Acquire) < n {
                assert!(Instant::now() < deadline, "the reader never got there");
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        wait_for(1);
        let packed = maintain(dir.path()).unwrap().0.expect("merged");
        let after = passes.load(Ordering::Acquire);
        wait_for(after + 2);
        stop.store(true, Ordering::Release);
        let failures = reader.join().unwrap();
        assert!(failures.is_empty(), "{failures:?}");

        // The largest pack is left alone; everything else is in the new one.
        assert_eq!(packed.removed_packs, packs - 1, "{packed:?}");
        assert!(packed.objects < all.len(), "{packed:?}");
        assert_eq!(pack_count(&repo).unwrap(), 2);
        assert!(loose_objects(&repo).unwrap().is_empty());
        let fresh = Repository::open(dir.path()).unwrap();
        for oid in &all {
            assert!(fresh.odb().unwrap().read(*oid).is_ok(), "{oid} lost");
        }
        // Commits keep working, and one pack is left alone.
        fs::write(dir.path().join("config.json"), "{\"a\":1}").unwrap();
        assert!(commit_paths(dir.path(), &["config.json"], "after").unwrap());
        assert_eq!(maintain(dir.path()).unwrap().0, None);
    }

    #[test]
    fn squash_keeps_the_tree_and_drops_the_history() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), "{}").unwrap();
        for i in 0..5 {
            fs::write(dir.path().join("config.json"), format!("{{\"v\":{i}}}")).unwrap();
            commit_paths(dir.path(), &["config.json"], "change").unwrap();
        }
        let repo = Repository::open(dir.path()).unwrap();
        let tree = repo.head().unwrap().peel_to_tree().unwrap().id();
        let old = repo.head().unwrap().target().unwrap();
        let (head, packed) = squash(dir.path(), "Squash").unwrap();
        let fresh = Repository::open(dir.path()).unwrap();
        let commit = fresh.head().unwrap().peel_to_commit().unwrap();
        assert_eq!(commit.id(), head);
        assert_eq!(commit.tree_id(), tree);
        assert_eq!(commit.parent_count(), 0);
        assert!(fresh.find_commit(old).is_err(), "old history is gone");
        assert_eq!(packed.objects, 3, "commit, tree, blob: {packed:?}");
        assert!(loose_objects(&fresh).unwrap().is_empty());
        assert!(staged_paths(&fresh).unwrap().is_empty());
        fs::write(dir.path().join("config.json"), "{}").unwrap();
        assert!(commit_paths(dir.path(), &["config.json"], "after").unwrap());
    }

    #[test]
    fn squashed_histories_remember_the_newest_crates() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), "{}").unwrap();
        let add = |name: &str, vers: &str| {
            fs::write(dir.path().join(name), format!("{name} {vers}")).unwrap();
            commit_paths(dir.path(), &[name], &format!("Add {name} {vers}")).unwrap();
        };
        add("a", "1.0.0");
        add("b", "1.0.0");
        add("a", "1.1.0");
        fs::write(dir.path().join("config.json"), "{\"v\":1}").unwrap();
        commit_paths(dir.path(), &["config.json"], "Yank b 1.0.0").unwrap();
        let newest = |n| recently_added(dir.path(), n, 100).unwrap();
        assert_eq!(newest(10), ["a", "b"]);
        squash(dir.path(), "Squash").unwrap();
        assert_eq!(newest(10), ["a", "b"], "remembered by the squash");
        add("c", "1.0.0");
        add("B", "2.0.0");
        assert_eq!(newest(10), ["B", "c", "a"]);
        assert_eq!(newest(2), ["B", "c"]);
        squash(dir.path(), "Squash").unwrap();
        assert_eq!(newest(10), ["B", "c", "a"], "across a second squash");
        let repo = Repository::open(dir.path()).unwrap();
        let head = repo.head().unwrap().peel_to_commit().unwrap();
        assert_eq!(head.summary().unwrap(), Some("Squash"));
    }
}
