//! The store: the registry's files on disk and how they are written. Names of the files at
//! the root, temp files (named for their writer's process, so a stale one is told from a
//! live one), atomic writes (temp file, fsync, rename, fsync of the directory), the previous
//! version of a file kept while it is rewritten, the write lock, and where a version's crate
//! file lives.
//!
//! What a write notes before it starts and what opening the registry repairs is in
//! [`recover`].

mod recover;

pub(super) use recover::{Journaled, Needs, Redo};

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::names::Version;
use super::{Context, CrateName, Error, IndexEntry, Registry, Result};

/// A temp file removed when dropped (unless it was renamed away first).
#[derive(Debug)]
pub(super) struct TempFile(pub(super) PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// The registry's settings file, at its root.
pub const SETTINGS_FILE: &str = "palletizer.toml";
const LOCK_FILE: &str = ".palletizer.lock";
/// Kept full-clone answers of the git index ([`Registry::keep_clone`]).
pub const CLONE_CACHE_DIR: &str = ".clone-cache";
const TEMP_PREFIX: &str = ".tmp-";
/// The journal of crates a write is changing: one name per line, removed when the write is
/// complete. What it names is checked and repaired at the next open.
pub(super) const JOURNAL_FILE: &str = ".pending";
/// Where crate files without an index line are moved (outside every served tree).
pub const ORPHANS_DIR: &str = "orphans";

/// True for the names the writer path gives its temp files.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX)
}

/// True for a temp file whose writer is gone: its name carries the writer's process id, and
/// a live writer's files (an upload in progress in another process) must be left alone.
pub fn is_stale_temp(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(TEMP_PREFIX) else {
        return false;
    };
    match rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) {
        Some(pid) => pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists(),
        None => true,
    }
}

/// A unique temp path inside `dir`, on the same filesystem as the file it will become.
pub fn temp_path(dir: &Path, hint: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{TEMP_PREFIX}{}-{n}-{hint}", std::process::id()))
}

/// Creates a new file only its owner may read or write (mode 0600, whatever the umask):
/// request bodies spooled to disk (a publish, a git request) and answers built there, which
/// may hold what a private registry keeps from other local users. Fails if `path` exists.
pub fn create_private(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_mode(path, bytes, 0o666)
}

/// [`write_atomic`] but for the directory's sync, which is the caller's: several files
/// renamed into one folder share it.
pub(crate) fn write_synced_in_place(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_as(path, bytes, 0o666, false)
}

/// [`write_atomic`] with the file created with `mode` (less the umask) from the start.
pub(crate) fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_atomic_as(path, bytes, mode, true)
}

fn write_atomic_as(path: &Path, bytes: &[u8], mode: u32, sync_folder: bool) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().expect("registry paths have a parent");
    create_dir_all_synced(dir).context(|| format!("creating {}", dir.display()))?;
    let tmp = temp_path(dir, "write");
    let result = (|| {
        let mut f = File::options()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        match sync_folder {
            true => sync_dir(dir),
            false => Ok(()),
        }
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.context(|| format!("writing {}", path.display()))
}

/// Creates `dir` and its missing parents, each parent synced once a folder is made in it:
/// a file synced into a new folder is durable only once the folder's own entry is.
pub(crate) fn create_dir_all_synced(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_all_synced(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

/// Writes `bytes` to `path` through a temp file and a rename, without syncs: for the files
/// of a journaled write, whose journal line holds the bytes until the checkpoint syncs them
/// (see [`recover`]).
pub(crate) fn write_unsynced(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().expect("registry paths have a parent");
    fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
    let tmp = temp_path(dir, "write");
    let result = (|| {
        let mut f = File::options().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.context(|| format!("writing {}", path.display()))
}

/// Syncs the whole file system `dir` is on (`syncfs`): what a checkpoint makes durable in
/// one call instead of one fsync per file and folder.
pub(super) fn sync_file_system(dir: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let d = File::open(dir)?;
    // SAFETY: syncfs on a descriptor this function owns.
    match unsafe { libc::syncfs(d.as_raw_fd()) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()?;
    #[cfg(test)]
    synced::note(dir);
    Ok(())
}

/// A file's previous version, kept under a hard link (which needs no data blocks) while the
/// file is rewritten, so that putting it back works on a full disk too. A crash leaves the
/// link as a stale temp file, removed at the next open.
#[must_use = "the previous version is either put back or forgotten"]
pub(crate) struct Previous {
    path: PathBuf,
    link: Option<PathBuf>,
}

impl Previous {
    /// Keeps `path` as it is now (it may not exist).
    pub(crate) fn keep(path: &Path) -> Result<Previous> {
        let dir = path.parent().expect("registry paths have a parent");
        let link = temp_path(dir, "old");
        let link = match fs::hard_link(path, &link) {
            Ok(()) => Some(link),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).context(|| format!("keeping {}", path.display())),
        };
        Ok(Previous {
            path: path.to_owned(),
            link,
        })
    }

    pub(crate) fn existed(&self) -> bool {
        self.link.is_some()
    }

    /// The rewrite stands: the previous version goes.
    pub(crate) fn forget(self) {
        if let Some(link) = self.link {
            let _ = fs::remove_file(link);
        }
    }

    /// Puts the previous version back (or removes the file when there was none), synced:
    /// a write refused after its file was renamed into place stays refused after a power
    /// cut.
    pub(crate) fn put_back(self) -> io::Result<()> {
        match self.link {
            Some(link) => fs::rename(link, &self.path)?,
            None => match fs::remove_file(&self.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            },
        }
        match self.path.parent() {
            Some(dir) => sync_dir(dir),
            None => Ok(()),
        }
    }
}

/// Held while the registry is being written; released on drop.
pub(super) struct WriteLock(File);

impl Drop for WriteLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl Registry {
    /// The file every writer locks while it writes (and closes after: the server watches
    /// for that close).
    pub fn lock_path(&self) -> PathBuf {
        self.root.join(LOCK_FILE)
    }

    pub(super) fn lock(&self) -> Result<WriteLock> {
        let path = self.lock_path();
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .context(|| format!("opening {}", path.display()))?;
        f.lock().context(|| format!("locking {}", path.display()))?;
        Ok(WriteLock(f))
    }

    /// The path of a version's crate file: `crates/{name}/{name}-{vers}.crate`.
    pub fn crate_path(&self, name: &CrateName, vers: &Version) -> PathBuf {
        self.crates_dir
            .join(name.as_str())
            .join(format!("{name}-{vers}.crate"))
    }

    /// The crate file of an index entry (whose name and version are checked again: an index
    /// file is data on disk like any other).
    pub fn entry_crate_path(&self, e: &IndexEntry) -> Result<PathBuf> {
        let name = CrateName::parse(&e.name)?;
        let vers = Version::parse(&e.vers).map_err(|err| Error::Invalid(err.to_string()))?;
        Ok(self.crate_path(&name, &vers))
    }

    /// Temp files left by writers that are gone: crates dir, index tree, registry root.
    pub fn temp_files(&self) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for dir in [&self.crates_dir, &self.index_dir] {
            walk_files(dir, "", &mut |rel, path| {
                if rel.rsplit('/').next().is_some_and(is_stale_temp) {
                    out.push(path.to_owned());
                }
            })
            .context(|| format!("reading {}", dir.display()))?;
        }
        if let Ok(rd) = fs::read_dir(&self.root) {
            for f in rd.flatten() {
                if f.file_name().to_str().is_some_and(is_stale_temp) && f.path().is_file() {
                    out.push(f.path());
                }
            }
        }
        Ok(out)
    }
}

/// Walks regular files under `dir`, skipping `.git`, calling `f(relative, absolute)`.
pub(super) fn walk_files(
    dir: &Path,
    prefix: &str,
    f: &mut dyn FnMut(&str, &Path),
) -> io::Result<()> {
    walk_files_in(dir, prefix, true, f)
}

/// [`walk_files`], into `.git` too when `skip_git` is false.
pub(crate) fn walk_files_in(
    dir: &Path,
    prefix: &str,
    skip_git: bool,
    f: &mut dyn FnMut(&str, &Path),
) -> io::Result<()> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in rd {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if skip_git && name == ".git" {
            continue;
        }
        let rel = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}/{name}")
        };
        let ty = entry.file_type()?;
        if ty.is_dir() {
            walk_files_in(&entry.path(), &rel, skip_git, f)?;
        } else if ty.is_file() {
            f(&rel, &entry.path());
        }
    }
    Ok(())
}

/// The folders [`sync_dir`] synced on this thread, for tests that model a power cut: a
/// file created, renamed or removed is durable only once its folder is synced after.
#[cfg(test)]
pub(crate) mod synced {
    use std::cell::RefCell;
    use std::path::{Path, PathBuf};

    thread_local! {
        static DIRS: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn note(dir: &Path) {
        DIRS.with(|d| d.borrow_mut().push(dir.to_owned()));
    }

    /// The folders synced since the last call, oldest first.
    pub(crate) fn take() -> Vec<PathBuf> {
        DIRS.with(|d| std::mem::take(&mut *d.borrow_mut()))
    }
}
