//! The registry as files: `palletizer.toml`, the `index/` git repository whose working tree is
//! the sparse index, and `crates/` with one immutable `.crate` file per version.
//!
//! Every change is a [`Command`] run by [`Registry::apply`] ([`command`]): take the registry
//! lock (an advisory file lock), decide what depends on registry state, note the crate in
//! the journal (`.pending`), write files under a temp name, fsync and rename them into
//! place, rewrite the crate's index file whole, make one git commit, update the search data,
//! clear the journal, release the lock, and return the events the change caused. Opening a
//! registry (under the lock, so no writer can be alive) repairs what a crash left half-done:
//! stale git lock files and temp files are removed, git's index is put back to HEAD, index
//! edits on disk but not committed are committed, and for each crate in the journal, crate
//! files without an index line are moved aside to `orphans/` (never deleted), the owner a
//! first publish recorded before it was cut short is forgotten, and the search line is
//! rebuilt.
//!
//! A deleted version leaves a tombstone ([`tombstone`]): its number is never published again.
//! A deleted crate's name stays with its owners (or its admins) until an admin gives it up.
//!
//! Crate names enter only as [`CrateName`], which only validation makes.
//!
//! This module knows no sockets and no HTTP; the CLI and the server call the same functions.

pub mod auth;
pub mod backup;
pub mod check;
pub mod command;
pub mod index;
pub mod names;
pub mod publish;
pub mod settings;
pub mod versions;

// The files' old paths, for the callers outside the registry until they use the new ones.
pub use index::{git, gitpack, search};
pub use publish::{crateinfo, metadata, platform, tarball};
pub use versions::tombstone;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub use command::{Actor, Applied, Change, Command, Event, Outcome};
pub use index::{IndexEntry, CRATES_IO_INDEX};
pub use publish::metadata::PublishMetadata;
pub use settings::Settings;

pub use names::CrateName;

use auth::{AuthError, NameState};
use names::Version;

/// How a crate file comes in: the rules it is checked by, the name of the file it was read
/// from (`add`), and its original publish time when the caller knows it.
struct Via<'a> {
    rules: metadata::Rules,
    file_name: Option<&'a str>,
    pubtime: Option<index::Pubtime>,
}

/// A crate file checked against everything that needs no registry state (its archive, its
/// metadata, the settings), stored under a temp name in the crates directory until a
/// [`Command::Publish`] moves it into place; removed if it is dropped first.
#[derive(Debug)]
pub struct CheckedCrate {
    tmp: TempFile,
    /// Boxed, so a [`Command`] stays small.
    meta: Box<PublishMetadata>,
    name: CrateName,
    version: Version,
    entry: Box<IndexEntry>,
    readme_html: Option<String>,
}

impl CheckedCrate {
    pub fn name(&self) -> &CrateName {
        &self.name
    }

    pub fn vers(&self) -> &str {
        &self.meta.vers
    }
}

/// A temp file removed when dropped (unless it was renamed away first).
#[derive(Debug)]
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// The registry's settings file, at its root.
pub const SETTINGS_FILE: &str = "palletizer.toml";
const LOCK_FILE: &str = ".palletizer.lock";
/// Kept full-clone answers of the git index ([`gitpack::keep_clone`]).
pub const CLONE_CACHE_DIR: &str = ".clone-cache";
const TEMP_PREFIX: &str = ".tmp-";
/// The journal of crates a write is changing: one name per line, removed when the write is
/// complete. What it names is checked and repaired at the next open.
const JOURNAL_FILE: &str = ".pending";
/// Where crate files without an index line are moved (outside every served tree).
pub const ORPHANS_DIR: &str = "orphans";

/// Everything that can go wrong in a registry operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("index repository: {0}")]
    Git(#[from] git2::Error),
    #[error("{0}")]
    Settings(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<names::NameError> for Error {
    fn from(e: names::NameError) -> Error {
        Error::Invalid(e.to_string())
    }
}

impl Error {
    /// See [`storage_trouble`].
    pub fn storage_trouble(&self) -> Option<&'static str> {
        match self {
            Error::Io { source, .. } => storage_trouble(source),
            Error::Git(e) => git_storage_trouble(e),
            _ => None,
        }
    }
}

/// For errors caused by the storage rather than the request (disk full, quota, I/O error,
/// read-only file system): a short explanation for the client. The one place that decides
/// it, for every route and command: the server answers these with 507.
pub fn storage_trouble(e: &io::Error) -> Option<&'static str> {
    match e.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT) => Some(DISK_FULL),
        Some(libc::EIO | libc::EROFS) => Some(DISK_FAILED),
        _ => None,
    }
}

const DISK_FULL: &str = "the registry's disk is full; nothing was stored";
const DISK_FAILED: &str = "the registry's storage failed (I/O error); nothing was stored";

/// [`storage_trouble`] for libgit2, which reports OS errors as text: the C library's own
/// wording is matched.
pub fn git_storage_trouble(e: &git2::Error) -> Option<&'static str> {
    let msg = e.message();
    let has = |code: i32| {
        let text = io::Error::from_raw_os_error(code).to_string();
        let text = text.split(" (os error").next().unwrap_or(&text).to_owned();
        msg.contains(&text)
    };
    if has(libc::ENOSPC) || has(libc::EDQUOT) {
        Some(DISK_FULL)
    } else if has(libc::EIO) || has(libc::EROFS) {
        Some(DISK_FAILED)
    } else {
        None
    }
}

/// Attaches a description of what was being done to an I/O error.
pub(crate) trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: what(),
            source,
        })
    }
}

impl From<tarball::TarballError> for Error {
    fn from(e: tarball::TarballError) -> Error {
        match e {
            tarball::TarballError::TooLarge(_) | tarball::TarballError::UnpackedTooLarge(_) => {
                Error::TooLarge(e.to_string())
            }
            e => Error::Invalid(e.to_string()),
        }
    }
}

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

/// [`write_atomic`] with the file created with `mode` (less the umask) from the start.
pub(crate) fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().expect("registry paths have a parent");
    fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
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
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.context(|| format!("writing {}", path.display()))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
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

    fn existed(&self) -> bool {
        self.link.is_some()
    }

    /// The rewrite stands: the previous version goes.
    pub(crate) fn forget(self) {
        if let Some(link) = self.link {
            let _ = fs::remove_file(link);
        }
    }

    /// Puts the previous version back (or removes the file when there was none).
    pub(crate) fn put_back(self) -> io::Result<()> {
        match self.link {
            Some(link) => fs::rename(link, &self.path),
            None => match fs::remove_file(&self.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        }
    }
}

/// An open registry.
#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
    settings: Settings,
    index_dir: PathBuf,
    crates_dir: PathBuf,
}

/// Options for `init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub url: String,
    pub index_dir: Option<PathBuf>,
    pub crates_dir: Option<PathBuf>,
    pub crates_io: bool,
    pub allowed_registries: Vec<String>,
}

impl InitOptions {
    /// The defaults: `index/` and `crates/`, dependencies on crates.io allowed.
    pub fn for_url(url: &str) -> InitOptions {
        InitOptions {
            url: url.to_owned(),
            index_dir: None,
            crates_dir: None,
            crates_io: true,
            allowed_registries: Vec::new(),
        }
    }
}

/// Held while the registry is being written; released on drop.
struct WriteLock(File);

impl Drop for WriteLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// One version as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub vers: String,
    pub yanked: bool,
}

impl Registry {
    /// Creates a registry in `root`: settings, the index repository with `config.json`, and
    /// the crates directory. Refuses to touch an existing registry.
    pub fn init(root: &Path, opts: InitOptions) -> Result<Registry> {
        let url = opts.url.trim_end_matches('/').to_owned();
        settings::check_url(&url).map_err(Error::Settings)?;
        let settings_path = root.join(SETTINGS_FILE);
        if settings_path.exists() {
            return Err(Error::Conflict(format!(
                "a registry already exists in {} (found {SETTINGS_FILE})",
                root.display()
            )));
        }
        let mut allowed = Vec::new();
        if opts.crates_io {
            allowed.push(CRATES_IO_INDEX.to_owned());
        }
        allowed.extend(opts.allowed_registries);
        let settings = Settings {
            url,
            index_dir: opts.index_dir.unwrap_or_else(|| "index".into()),
            crates_dir: opts.crates_dir.unwrap_or_else(|| "crates".into()),
            allowed_registries: allowed,
            ..Settings::default()
        };
        let index_dir = root.join(&settings.index_dir);
        if index_dir.exists()
            && fs::read_dir(&index_dir)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            return Err(Error::Conflict(format!(
                "index directory {} exists and is not empty",
                index_dir.display()
            )));
        }
        fs::create_dir_all(root).context(|| format!("creating {}", root.display()))?;
        let crates_dir = root.join(&settings.crates_dir);
        fs::create_dir_all(&crates_dir).context(|| format!("creating {}", crates_dir.display()))?;
        fs::create_dir_all(&index_dir).context(|| format!("creating {}", index_dir.display()))?;
        git::init(&index_dir, &settings.config_json())?;
        // The settings file is written last: its presence marks a complete registry.
        write_atomic(&settings_path, settings.to_toml().as_bytes())?;
        Registry::open(root)
    }

    /// Opens the registry whose `palletizer.toml` is in `root`, finishing or discarding what
    /// a crash left half-done.
    pub fn open(root: &Path) -> Result<Registry> {
        let reg = Registry::open_as_is(root)?;
        reg.recover()?;
        Ok(reg)
    }

    /// Opens the registry without repairing anything (for `check`).
    pub fn open_as_is(root: &Path) -> Result<Registry> {
        let path = root.join(SETTINGS_FILE);
        let text = fs::read_to_string(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NotFound(format!(
                "no registry in {} (no {SETTINGS_FILE}; create one with `palletizer init`)",
                root.display()
            )),
            _ => Error::Io {
                context: format!("reading {}", path.display()),
                source: e,
            },
        })?;
        let settings = Settings::parse(&text)
            .map_err(|e| Error::Settings(format!("{}: {e}", path.display())))?;
        let reg = Registry {
            root: root.to_owned(),
            index_dir: root.join(&settings.index_dir),
            crates_dir: root.join(&settings.crates_dir),
            settings,
        };
        if !reg.index_dir.join(".git").exists() {
            return Err(Error::Settings(format!(
                "index directory {} is not a git repository",
                reg.index_dir.display()
            )));
        }
        Ok(reg)
    }

    /// Repairs what a crash left (see the module docs). Returns what it did.
    pub fn recover(&self) -> Result<Vec<String>> {
        let mut done = Vec::new();
        let _lock = self.lock()?;
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
        if git::commit_all(&self.index_dir, "Commit index changes left uncommitted")? {
            done.push("committed uncommitted index changes".to_owned());
        }
        let no_search_file = !search::path(&self.root).exists();
        if !search::is_sound(&self.root)? || (no_search_file && self.has_crates()?) {
            let n = self.rebuild_search()?;
            done.push(format!("rebuilt search.jsonl ({n} crates)"));
        }
        done.extend(self.finish_journal()?);
        Ok(done)
    }

    /// Keeps the index repository packed (see [`git::maintain`]); run after changes, off
    /// the request path.
    pub fn maintain(&self) -> Result<Option<git::Packed>> {
        let _lock = self.lock()?;
        Ok(git::maintain(&self.index_dir)?)
    }

    /// Whether the index holds any crate (walks the index tree: only asked when the search
    /// file is missing).
    fn has_crates(&self) -> Result<bool> {
        Ok(!self.index_files()?.is_empty())
    }

    /// Rewrites `search.jsonl` whole from the index (lock held): descriptions are kept from
    /// old lines that can still be read and are current, else read from the crate files.
    pub(crate) fn rebuild_search(&self) -> Result<usize> {
        let mut old = std::collections::HashMap::new();
        if let Ok(bytes) = fs::read(search::path(&self.root)) {
            for l in String::from_utf8_lossy(&bytes).lines() {
                if let Ok(line) = serde_json::from_str::<search::SearchLine>(l) {
                    old.insert(names::canonical(&line.name), line);
                }
            }
        }
        let mut lines = Vec::new();
        for (_, path) in self.index_files()? {
            let text =
                fs::read_to_string(&path).context(|| format!("reading {}", path.display()))?;
            let entries = index::parse_file(&text);
            let Some(first) = entries.first() else {
                continue;
            };
            let max_version = search::max_version(&entries).unwrap_or_default();
            let line = match old.remove(&names::canonical(&first.name)) {
                Some(l) if l.name == first.name && l.max_version == max_version => l,
                _ => self.search_line_from_files(&entries),
            };
            lines.push(line);
        }
        let n = lines.len();
        search::write_all(&self.root, lines)?;
        Ok(n)
    }

    /// Completes the writes the journal names (lock held): orphan crate files of those
    /// crates are moved aside and their search lines rebuilt from the index.
    fn finish_journal(&self) -> Result<Vec<String>> {
        let path = self.root.join(JOURNAL_FILE);
        // Read as bytes: a torn or garbled journal must not stop the registry from opening;
        // what does not name a crate is skipped.
        let text = match fs::read(&path) {
            Ok(t) => String::from_utf8_lossy(&t).into_owned(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).context(|| format!("reading {}", path.display())),
        };
        let mut done = Vec::new();
        for name in text.lines().filter_map(|l| CrateName::parse(l.trim()).ok()) {
            done.extend(self.repair_crate(&name)?);
        }
        fs::remove_file(&path).context(|| format!("removing {}", path.display()))?;
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

    /// Notes in the journal that `name` is about to change (lock held). A journal left by
    /// an earlier write is completed first.
    fn journal(&self, name: &str) -> Result<()> {
        self.finish_journal()?;
        write_atomic(
            &self.root.join(JOURNAL_FILE),
            format!("{name}\n").as_bytes(),
        )
    }

    /// The write the journal names is complete.
    fn journal_done(&self) {
        let _ = fs::remove_file(self.root.join(JOURNAL_FILE));
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

    /// Whether `search.jsonl` says something else than the index about `name`.
    pub(crate) fn search_disagrees(&self, name: &str, entries: &[IndexEntry]) -> Result<bool> {
        let line = search::find(&self.root, name)?;
        Ok(match (entries.first(), line) {
            (None, None) => false,
            (Some(e), Some(l)) => {
                l.name != e.name
                    || l.max_version != search::max_version(entries).unwrap_or_default()
            }
            _ => true,
        })
    }

    /// Rewrites `name`'s search line from the index; the description and keywords come
    /// from the newest version's `Cargo.toml`.
    pub(crate) fn rebuild_search_line(&self, name: &str, entries: &[IndexEntry]) -> Result<()> {
        if entries.is_empty() {
            return search::update(&self.root, name, None);
        }
        search::replace(&self.root, name, self.search_line_from_files(entries))
    }

    /// A crate's search line from its index entries (not empty) and its newest crate file.
    fn search_line_from_files(&self, entries: &[IndexEntry]) -> search::SearchLine {
        let newest = entries
            .iter()
            .filter_map(|e| Version::parse(&e.vers).ok().map(|v| (v.0, e)))
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, e)| e);
        let (description, keywords) = match newest {
            Some(e) => self.described_by_crate_file(e).unwrap_or_default(),
            None => (None, Vec::new()),
        };
        search::SearchLine {
            name: entries[0].name.clone(),
            max_version: search::max_version(entries).unwrap_or_default(),
            description,
            keywords,
        }
    }

    /// The description and keywords in a version's crate file.
    fn described_by_crate_file(&self, e: &IndexEntry) -> Result<(Option<String>, Vec<String>)> {
        let path = self.entry_crate_path(e)?;
        let f = File::open(&path).context(|| format!("opening {}", path.display()))?;
        let limits = tarball::Limits {
            max_size: u64::MAX,
            max_unpacked: self.settings.max_unpacked_size,
        };
        let inspected = tarball::inspect(f, limits)?;
        let meta = PublishMetadata::from_manifest(&inspected.manifest)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        Ok((meta.description, meta.keywords))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn settings(&self) -> &Settings {
        &self.settings
    }
    /// Where full-clone answers of the git index are kept (a cache: safe to delete).
    pub fn clone_cache_dir(&self) -> PathBuf {
        self.root.join(CLONE_CACHE_DIR)
    }

    pub fn index_dir(&self) -> &Path {
        &self.index_dir
    }
    pub fn crates_dir(&self) -> &Path {
        &self.crates_dir
    }

    /// The file every writer locks while it writes (and closes after: the server watches
    /// for that close).
    pub fn lock_path(&self) -> PathBuf {
        self.root.join(LOCK_FILE)
    }

    fn lock(&self) -> Result<WriteLock> {
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

    /// Reads a crate's index entries (empty when the crate is unknown).
    pub fn entries(&self, name: &CrateName) -> Result<Vec<IndexEntry>> {
        let path = self.index_dir.join(index::index_path(name));
        match fs::read_to_string(&path) {
            Ok(text) => Ok(index::parse_file(&text)
                .into_iter()
                .filter(|e| e.name.eq_ignore_ascii_case(name))
                .collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).context(|| format!("reading {}", path.display())),
        }
    }

    /// Whether a dependency's registry URL names this registry.
    pub fn is_own_index(&self, url: &str) -> bool {
        let norm = |u: &str| u.trim_end_matches('/').to_owned();
        let url = norm(url);
        let file_url = format!("file://{}", self.index_dir.display());
        self.settings
            .own_index_urls()
            .iter()
            .any(|u| norm(u) == url)
            || norm(&file_url) == url
    }

    /// Publishes a `.crate` file with the metadata in its `Cargo.toml`, as the administrator
    /// at the command line (`palletizer add`), with the time of the add as its `pubtime`.
    pub fn add_file(&self, path: &Path) -> Result<IndexEntry, AuthError> {
        self.add_file_published(path, None)
    }

    /// [`Registry::add_file`] with the version's original publish time, when it is known.
    pub fn add_file_published(
        &self,
        path: &Path,
        pubtime: Option<index::Pubtime>,
    ) -> Result<IndexEntry, AuthError> {
        let checked = self.check_crate_file(path, pubtime)?;
        self.publish_as(checked, &Actor::cli())
    }

    /// Publishes a crate as the administrator at the command line: `meta` is what cargo
    /// sent (None: derive it from the manifest), `tarball` the `.crate` bytes.
    pub fn publish(
        &self,
        meta: Option<PublishMetadata>,
        tarball: impl Read,
    ) -> Result<IndexEntry, AuthError> {
        let checked = self.check_upload(meta, tarball)?;
        self.publish_as(checked, &Actor::cli())
    }

    fn publish_as(&self, checked: CheckedCrate, actor: &Actor) -> Result<IndexEntry, AuthError> {
        match self.apply(Command::Publish(checked), actor)?.outcome {
            Outcome::Published(entry) => Ok(entry),
            o => unreachable!("a publish answered {o:?}"),
        }
    }

    /// Checks a crate file for `palletizer add` (its metadata from its `Cargo.toml`, under
    /// the rules for crate files another registry took): a file named like a crate file must
    /// be named for the crate it holds. `pubtime`: its original publish time, when known.
    pub fn check_crate_file(
        &self,
        path: &Path,
        pubtime: Option<index::Pubtime>,
    ) -> Result<CheckedCrate> {
        let f = File::open(path)
            .map_err(|e| Error::Invalid(format!("cannot read the crate file: {e}")))?;
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| n.ends_with(".crate"));
        let via = Via {
            rules: metadata::Rules::Add,
            file_name,
            pubtime,
        };
        self.check_via(None, f, via)
    }

    /// Checks an upload for a publish: `meta` is what cargo sent (None: derive it from the
    /// manifest), `tarball` the `.crate` bytes.
    pub fn check_upload(
        &self,
        meta: Option<PublishMetadata>,
        tarball: impl Read,
    ) -> Result<CheckedCrate> {
        let via = Via {
            rules: metadata::Rules::Publish,
            file_name: None,
            pubtime: None,
        };
        self.check_via(meta, tarball, via)
    }

    /// Everything about a crate file that needs no registry state, before the lock: the
    /// archive, the metadata against the manifest and the settings. The file is stored
    /// under a temp name meanwhile, synced.
    fn check_via(
        &self,
        meta: Option<PublishMetadata>,
        tarball: impl Read,
        via: Via<'_>,
    ) -> Result<CheckedCrate> {
        fs::create_dir_all(&self.crates_dir)
            .context(|| format!("creating {}", self.crates_dir.display()))?;
        let tmp = TempFile(temp_path(&self.crates_dir, "upload.crate"));
        let tmp_path = tmp.0.as_path();
        let mut out =
            File::create(tmp_path).context(|| format!("creating {}", tmp_path.display()))?;
        let limits = tarball::Limits {
            max_size: self.settings.max_crate_size,
            max_unpacked: self.settings.max_unpacked_size,
        };
        let mut write_error = None;
        let inspected = tarball::inspect(
            Tee {
                inner: tarball,
                out: &mut out,
                write_error: &mut write_error,
            },
            limits,
        );
        // A failed write (disk full) surfaces through the tar reader as a broken archive:
        // report it as what it is, the storage's trouble, not the crate's.
        if let Some(source) = write_error {
            return Err(Error::Io {
                context: "storing the crate file".into(),
                source,
            });
        }
        let inspected = inspected?;
        let from_manifest = PublishMetadata::from_manifest(&inspected.manifest)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let manifest_readme = from_manifest.readme_file.clone();
        let meta = match meta {
            Some(m) => {
                if m.name != from_manifest.name || m.vers != from_manifest.vers {
                    return Err(Error::Invalid(format!(
                        "metadata says {} {} but the crate file's Cargo.toml says {} {}",
                        names::shown(&m.name),
                        names::shown(&m.vers),
                        names::shown(&from_manifest.name),
                        names::shown(&from_manifest.vers)
                    )));
                }
                m
            }
            None => from_manifest,
        };
        metadata::validate(&meta, via.rules)
            .and_then(|()| index::check_line_len(&meta))
            .map_err(Error::Invalid)?;
        let name = CrateName::parse(&meta.name)?;
        let top = format!("{}-{}", meta.name, meta.vers);
        if let Some(file_name) = via.file_name {
            if file_name != format!("{top}.crate") {
                return Err(Error::Invalid(format!(
                    "file name `{}` does not match its manifest ({} {}); expected `{top}.crate`",
                    names::shown(file_name),
                    meta.name,
                    meta.vers
                )));
            }
        }
        if inspected.top_dir != top {
            return Err(Error::Invalid(format!(
                "crate file's files are under `{}/`, expected `{top}/`",
                names::shown(&inspected.top_dir)
            )));
        }
        self.check_settings_allow(&meta)?;
        out.sync_all()
            .context(|| format!("syncing {}", tmp_path.display()))?;
        drop(out);
        // Rendered here, before the lock: the crate page only reads the result.
        let readme_html = match meta.readme.as_deref() {
            Some(text) => crateinfo::render_readme(text),
            None => manifest_readme
                .as_deref()
                .and_then(|f| {
                    crateinfo::readme_from_crate(tmp_path, &top, f)
                        .ok()
                        .flatten()
                })
                .and_then(|text| crateinfo::render_readme(&text)),
        };

        let version = Version::parse(&meta.vers).map_err(|e| Error::Invalid(e.to_string()))?;
        let pubtime = via.pubtime.unwrap_or_else(index::Pubtime::now);
        let entry =
            IndexEntry::from_publish(&meta, &inspected.cksum, pubtime.as_str().into(), |u| {
                self.is_own_index(u)
            });
        Ok(CheckedCrate {
            tmp,
            meta: Box::new(meta),
            name,
            version,
            entry: Box::new(entry),
            readme_html,
        })
    }

    /// What `palletizer.toml` asks of a crate: dependencies only from the registries it
    /// allows, and (last, so that everything else wrong with a crate is said first) a
    /// description and a license unless the setting is off.
    fn check_settings_allow(&self, meta: &PublishMetadata) -> Result<()> {
        for d in &meta.deps {
            if let Some(r) = &d.registry {
                if !self.is_own_index(r) && !self.settings.allowed_registries.iter().any(|a| a == r)
                {
                    return Err(Error::Invalid(format!(
                        "dependency `{}` is from registry {r}, which this registry does not allow",
                        d.name
                    )));
                }
            }
        }
        if self.settings.require_description_and_license {
            metadata::require_description_and_license(meta).map_err(Error::Invalid)?;
        }
        Ok(())
    }

    /// [`Command::Publish`], lock held. `by`: the token holder the checks apply to. A new
    /// crate's publisher becomes its owner in the same step; a deleted crate's kept name
    /// keeps its owners.
    fn publish_locked(
        &self,
        checked: CheckedCrate,
        by: Option<&auth::Principal>,
        changes: &mut Vec<Change>,
    ) -> Result<IndexEntry, AuthError> {
        let CheckedCrate {
            tmp,
            meta,
            name,
            version,
            entry,
            readme_html,
        } = checked;
        // Who may publish under this name, decided first (a refusal says nothing of what
        // else is wrong).
        let mut first_owner = None;
        let mut access = None;
        if let Some(p) = by {
            let mut edit = auth::Edit::open(self)?;
            let state = self.name_state(&name, &edit.data)?;
            auth::authorize_publish(&edit.data, p, &name, state)?;
            if state == NameState::Free {
                first_owner = Some(edit.data.set_first_owner(&name, &p.user)?);
            }
            access = Some(edit);
        }
        self.check_name_free(&name)?;
        let mut entries = self.entries(&name)?;
        self.check_version_free(&meta, &version, &entries)?;
        let new_crate = entries.is_empty();
        self.journal(&name)?;
        // The owner goes in first, kept to be put back: a publish that fails takes it along,
        // and the journal's repair drops it after a crash (see `drop_unpublished_owners`).
        let previous_owners = match access.map(auth::Edit::save_keeping).transpose() {
            Ok(p) => p.flatten(),
            Err(e) => {
                self.journal_done();
                return Err(e);
            }
        };
        let placed = self.place(&tmp.0, &name, &version, &meta, readme_html.as_deref());
        let committed = placed.and_then(|dest| {
            entries.push((*entry).clone());
            let message = format!("Add {} {}", meta.name, meta.vers);
            self.write_index_file(&name, &entries, &message)
                .inspect_err(|_| self.unplace(&dest))
        });
        if let Err(e) = committed {
            if let Some(previous) = previous_owners {
                let _ = previous.put_back();
            }
            self.journal_done();
            return Err(e.into());
        }
        if let Some(previous) = previous_owners {
            previous.forget();
        }
        let newest = search::max_version(&entries);
        let described = newest.as_deref() == Some(meta.vers.as_str());
        self.update_search(
            &name,
            &entries,
            described.then(|| (meta.description.clone(), meta.keywords.clone())),
        );
        changes.push(Change::Published {
            name: entry.name.clone(),
            vers: entry.vers.clone(),
            cksum: entry.cksum.clone(),
            new_crate,
        });
        if let Some(user) = first_owner {
            changes.push(Change::OwnersAdded {
                name: entry.name.clone(),
                users: vec![user],
            });
        }
        Ok(*entry)
    }

    /// Refuses a version that is published (less build metadata) or was deleted (lock held).
    fn check_version_free(
        &self,
        meta: &PublishMetadata,
        version: &Version,
        entries: &[IndexEntry],
    ) -> Result<()> {
        if let Some(e) = entries
            .iter()
            .find(|e| Version::parse(&e.vers).is_ok_and(|v| v.same_release(version)))
        {
            return Err(Error::Conflict(format!(
                "crate version `{}` of `{}` is already uploaded (as {})",
                meta.vers, meta.name, e.vers
            )));
        }
        if let Some(t) = tombstone::find(&self.root, &meta.name, version)? {
            return Err(Error::Conflict(format!(
                "crate version `{}` of `{}` was deleted on {} (as {} {}), and version numbers \
                 cannot be reused: caches may still hold the deleted file; publish a new version",
                meta.vers,
                meta.name,
                names::shown(&t.deleted),
                names::shown(&t.name),
                names::shown(&t.vers),
            )));
        }
        Ok(())
    }

    /// Moves a journaled crate's file into place with its page files (lock held). Returns
    /// where the crate file went.
    fn place(
        &self,
        tmp: &Path,
        name: &CrateName,
        version: &Version,
        meta: &PublishMetadata,
        readme_html: Option<&str>,
    ) -> Result<PathBuf> {
        let dest = self.crate_path(name, version);
        let dest_dir = dest.parent().expect("crate paths have a parent");
        // The page files go in with the crate file, before the commit: a publish that is
        // answered 200 has them, and one that fails (or is killed) takes them along (the
        // journal's repair moves leftovers aside like the crate file).
        let info = crateinfo::CrateInfo::from_meta(meta);
        let placed = (|| {
            fs::create_dir_all(dest_dir).context(|| format!("creating {}", dest_dir.display()))?;
            crateinfo::store(&dest, &info, readme_html)?;
            fs::rename(tmp, &dest)
                .context(|| format!("moving crate file to {}", dest.display()))?;
            sync_dir(dest_dir).context(|| format!("syncing {}", dest_dir.display()))
        })();
        match placed {
            Ok(()) => Ok(dest),
            Err(e) => {
                self.unplace(&dest);
                Err(e)
            }
        }
    }

    /// Nothing of a publish that failed stays: no crate file, no page files.
    fn unplace(&self, dest: &Path) {
        let [info_file, readme_file] = crateinfo::sidecars(dest);
        for p in [dest, &info_file, &readme_file] {
            let _ = fs::remove_file(p);
        }
        if let Some(dir) = dest.parent() {
            let _ = fs::remove_dir(dir);
        }
    }

    /// Whether `name` is published, kept for the owners of a deleted crate (owners recorded,
    /// or versions deleted and the name not given up), or free (lock held).
    fn name_state(&self, name: &CrateName, data: &auth::AuthFile) -> Result<NameState> {
        if self.find_canonical(name)?.is_some() {
            return Ok(NameState::Published);
        }
        let kept = !data.recorded_owners(name).is_empty()
            || tombstone::read(&self.root)?
                .0
                .iter()
                .any(|t| t.keeps_name(name));
        Ok(if kept {
            NameState::Kept
        } else {
            NameState::Free
        })
    }

    /// Refuses a name whose canonical form belongs to a crate spelled differently.
    fn check_name_free(&self, name: &CrateName) -> Result<()> {
        if let Some(existing) = self.find_canonical(name)? {
            if existing != name.as_str() {
                return Err(Error::Conflict(format!(
                    "crate name `{name}` is too similar to the existing crate `{existing}`"
                )));
            }
        }
        Ok(())
    }

    /// The spelling of the published crate whose canonical name equals `name`'s, if any.
    /// Only the first four characters choose an index directory, so at most eight
    /// directories (`-`/`_` at positions 1..4) can hold a colliding name.
    pub fn find_canonical(&self, name: &CrateName) -> Result<Option<String>> {
        let canon = name.canonical();
        let lower = name.to_ascii_lowercase();
        let head: Vec<char> = lower.chars().take(4).collect();
        let seps: Vec<usize> = (0..head.len())
            .filter(|&i| head[i] == '-' || head[i] == '_')
            .collect();
        let mut dirs = Vec::new();
        for mask in 0..(1u32 << seps.len()) {
            let mut variant: Vec<char> = lower.chars().collect();
            for (bit, &i) in seps.iter().enumerate() {
                variant[i] = if mask & (1 << bit) != 0 { '-' } else { '_' };
            }
            let v: String = variant.into_iter().collect();
            let p = index::index_path_of(&v);
            let dir = Path::new(&p)
                .parent()
                .expect("index paths have a directory")
                .to_owned();
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        for dir in dirs {
            let Ok(rd) = fs::read_dir(self.index_dir.join(&dir)) else {
                continue;
            };
            for f in rd.flatten() {
                let fname = f.file_name();
                let Some(fname) = fname.to_str() else {
                    continue;
                };
                if is_temp_name(fname) || names::canonical(fname) != canon {
                    continue;
                }
                let path = format!("{}/{fname}", dir.display());
                let text = fs::read_to_string(self.index_dir.join(&path))
                    .context(|| format!("reading index file {path}"))?;
                if let Some(e) = index::parse_file(&text).into_iter().next() {
                    return Ok(Some(e.name));
                }
            }
        }
        Ok(None)
    }

    /// Rewrites a crate's index file from `entries` (removing it when empty) and commits.
    /// Must be called with the lock held. On failure the file is put back as it was (see
    /// [`Previous`]).
    fn write_index_file(
        &self,
        name: &CrateName,
        entries: &[IndexEntry],
        message: &str,
    ) -> Result<()> {
        let rel = index::index_path(name);
        let path = self.index_dir.join(&rel);
        let previous = Previous::keep(&path)?;
        let result = (|| {
            if entries.is_empty() {
                if previous.existed() {
                    fs::remove_file(&path).context(|| format!("removing {}", path.display()))?;
                }
            } else {
                write_atomic(&path, index::render_file(entries).as_bytes())?;
            }
            git::commit_paths(&self.index_dir, &[&rel], message)?;
            Ok(())
        })();
        match result {
            Ok(()) => previous.forget(),
            // Put the file back so the working tree matches the last commit.
            Err(_) => {
                let _ = previous.put_back();
            }
        }
        result
    }

    /// Refreshes the crate's search line after a write (lock held) and clears the journal.
    /// The index commit has already happened, so a failure here is reported but does not
    /// undo the write: the journal keeps the crate, and the next write or open rebuilds it.
    fn update_search(
        &self,
        name: &CrateName,
        entries: &[IndexEntry],
        described: Option<(Option<String>, Vec<String>)>,
    ) {
        let line = entries.first().map(|e| search::SearchLine {
            name: e.name.clone(),
            max_version: search::max_version(entries).unwrap_or_default(),
            description: described.as_ref().and_then(|d| d.0.clone()),
            keywords: described.map(|d| d.1).unwrap_or_default(),
        });
        match search::update(&self.root, name, line) {
            Ok(()) => self.journal_done(),
            Err(e) => error!("warning: search data not updated for {name}: {e}"),
        }
    }

    /// Searches crate names and descriptions (see [`search::search`]).
    pub fn search(&self, query: &str, per_page: usize) -> Result<search::Found> {
        search::search(&self.root, query, per_page)
    }

    /// One page of search hits, after `skip` (see [`search::search_page`]).
    pub fn search_page(&self, query: &str, skip: usize, per_page: usize) -> Result<search::Found> {
        search::search_page(&self.root, query, skip, per_page)
    }

    fn find_version(&self, name: &CrateName, vers: &str) -> Result<(Vec<IndexEntry>, usize)> {
        let wanted = Version::parse(vers).map_err(|e| Error::Invalid(e.to_string()))?;
        let entries = self.entries(name)?;
        if entries.is_empty() {
            return Err(Error::NotFound(format!("crate `{name}` does not exist")));
        }
        let i = entries
            .iter()
            .position(|e| Version::parse(&e.vers).is_ok_and(|v| v.0 == wanted.0))
            .ok_or_else(|| Error::NotFound(format!("crate `{name}` has no version `{vers}`")))?;
        Ok((entries, i))
    }

    /// Marks a version yanked (or not) as the administrator at the command line. Returns
    /// false when it already was in that state.
    pub fn set_yanked(
        &self,
        name: &CrateName,
        vers: &str,
        yanked: bool,
    ) -> Result<bool, AuthError> {
        let cmd = Command::Yank {
            name: name.clone(),
            vers: vers.to_owned(),
            yanked,
        };
        match self.apply(cmd, &Actor::cli())?.outcome {
            Outcome::Yanked { changed } => Ok(changed),
            o => unreachable!("a yank answered {o:?}"),
        }
    }

    /// [`Command::Yank`], lock held. A crate that does not exist has no owners to ask: the
    /// yank itself answers that it does not exist.
    fn yank_locked(
        &self,
        name: &CrateName,
        vers: &str,
        yanked: bool,
        by: Option<&auth::Principal>,
        changes: &mut Vec<Change>,
    ) -> Result<bool, AuthError> {
        if let Some(p) = by {
            if let Some(real) = self.find_canonical(name)? {
                let data = auth::AuthFile::load(self)?;
                auth::authorize_owner(&data, p, &real)?;
            }
        }
        let (mut entries, i) = self.find_version(name, vers)?;
        if entries[i].yanked == yanked {
            return Ok(false);
        }
        entries[i].yanked = yanked;
        let verb = if yanked { "Yank" } else { "Unyank" };
        let message = format!("{verb} {} {}", entries[i].name, entries[i].vers);
        self.journal(name)?;
        if let Err(e) = self.write_index_file(name, &entries, &message) {
            self.journal_done();
            return Err(e.into());
        }
        self.update_search(name, &entries, None);
        let (name, vers) = (entries[i].name.clone(), entries[i].vers.clone());
        changes.push(if yanked {
            Change::Yanked { name, vers }
        } else {
            Change::Unyanked { name, vers }
        });
        Ok(true)
    }

    /// Removes one version, or every version, of a crate as the administrator at the
    /// command line (see [`Command::Delete`]). Returns the versions removed.
    pub fn delete(&self, name: &CrateName, vers: Option<&str>) -> Result<Vec<String>, AuthError> {
        let cmd = Command::Delete {
            name: name.clone(),
            vers: vers.map(str::to_owned),
            release_name: false,
        };
        match self.apply(cmd, &Actor::cli())?.outcome {
            Outcome::Deleted { versions } => Ok(versions),
            o => unreachable!("a delete answered {o:?}"),
        }
    }

    /// [`Command::Delete`], lock held: tombstones first (so that the version numbers are
    /// never used again, see [`tombstone`]), then index lines (committed), then crate files.
    /// Returns the versions removed. Deleting every version frees no version number, and the
    /// name stays with the crate's owners: only they or an admin publish under it again,
    /// unless `release_name` gives it up (owners forgotten, tombstones marked so).
    fn delete_locked(
        &self,
        name: &CrateName,
        vers: Option<&str>,
        release_name: bool,
        changes: &mut Vec<Change>,
    ) -> Result<Vec<String>, AuthError> {
        if release_name && vers.is_some() {
            return Err(Error::Invalid(format!(
                "giving up the name `{name}` deletes every version: name no version"
            ))
            .into());
        }
        let (kept, removed): (Vec<IndexEntry>, Vec<IndexEntry>) = match vers {
            Some(v) => {
                let (mut entries, i) = self.find_version(name, v)?;
                let gone = entries.remove(i);
                (entries, vec![gone])
            }
            None => (Vec::new(), self.entries(name)?),
        };
        if removed.is_empty() {
            return self.release_deleted_name(name, release_name, changes);
        }
        let real = removed[0].name.clone();
        let message = match vers {
            Some(_) => format!("Delete {real} {}", removed[0].vers),
            None => format!("Delete {real} (all versions)"),
        };
        // Read before anything changes (a file that cannot be read refuses the delete), and
        // written last: a name given up whose owners could not be forgotten stays theirs,
        // never the other way round, and the same delete finishes it.
        let access = match release_name {
            true => Some(auth::Edit::open(self)?),
            false => None,
        };
        // Journaled by the real spelling: the crate files live under it.
        self.journal(&real)?;
        let now = index::Pubtime::now();
        let previous = match tombstone::add(&self.root, &removed, now.as_str(), release_name) {
            Ok(p) => p,
            Err(e) => {
                self.journal_done();
                return Err(e.into());
            }
        };
        if let Err(e) = self.write_index_file(name, &kept, &message) {
            // Not deleted after all: no tombstones. If they cannot be taken back, the
            // journal stays and its repair drops them (they name versions in the index).
            if previous.put_back().is_ok() {
                self.journal_done();
            }
            return Err(e.into());
        }
        previous.forget();
        changes.push(Change::Deleted {
            name: real.clone(),
            versions: removed.iter().map(|e| e.vers.clone()).collect(),
        });
        self.remove_crate_files(&real, &removed)?;
        self.update_search(name, &kept, None);
        if let Some(mut edit) = access {
            let owners = edit.data.forget_owners(&real);
            edit.save()?;
            changes.push(Change::NameReleased {
                name: real.clone(),
                owners,
            });
        }
        Ok(removed.into_iter().map(|e| e.vers).collect())
    }

    /// Removes deleted versions' crate files and page files (lock held, index committed).
    fn remove_crate_files(&self, real: &str, removed: &[IndexEntry]) -> Result<()> {
        for e in removed {
            let crate_path = self.entry_crate_path(e)?;
            let [info, readme] = crateinfo::sidecars(&crate_path);
            // Page files first: a crash in between leaves a crate file the journal's repair
            // moves aside, never page files without their crate.
            for p in [info, readme, crate_path] {
                match fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                    Err(err) => return Err(err).context(|| format!("removing {}", p.display())),
                }
            }
        }
        let _ = fs::remove_dir(self.crates_dir.join(real));
        Ok(())
    }

    /// `delete NAME` of a crate with no version left: with `release_name`, a deleted crate's
    /// kept name is given up (owners forgotten, tombstones marked); otherwise, or when the
    /// name is not kept, the crate does not exist.
    fn release_deleted_name(
        &self,
        name: &CrateName,
        release_name: bool,
        changes: &mut Vec<Change>,
    ) -> Result<Vec<String>, AuthError> {
        let missing = || Error::NotFound(format!("crate `{name}` does not exist")).into();
        if !release_name {
            return Err(missing());
        }
        let mut edit = auth::Edit::open(self)?;
        if self.name_state(name, &edit.data)? != NameState::Kept {
            return Err(missing());
        }
        let owners = edit.data.forget_owners(name);
        // The tombstones are marked first: if the owners cannot be forgotten, the name stays
        // theirs (recorded owners keep a name) and the delete can be run again.
        let spelled = tombstone::release(&self.root, name, index::Pubtime::now().as_str())?;
        edit.save()?;
        changes.push(Change::NameReleased {
            name: spelled.unwrap_or_else(|| name.to_string()),
            owners,
        });
        Ok(Vec::new())
    }

    /// Every version of every crate (or of `name`), sorted by name then version.
    pub fn list(&self, name: Option<&CrateName>) -> Result<Vec<Listed>> {
        let mut entries = match name {
            Some(n) => self.entries(n)?,
            None => {
                let mut all = Vec::new();
                for (_, path) in self.index_files()? {
                    let text = fs::read_to_string(&path)
                        .context(|| format!("reading {}", path.display()))?;
                    all.extend(index::parse_file(&text));
                }
                all
            }
        };
        entries.sort_by(|a, b| {
            let key = |e: &IndexEntry| semver::Version::parse(&e.vers).ok();
            a.name.cmp(&b.name).then_with(|| key(a).cmp(&key(b)))
        });
        Ok(entries
            .into_iter()
            .map(|e| Listed {
                name: e.name,
                vers: e.vers,
                yanked: e.yanked,
            })
            .collect())
    }

    /// Every crate index file: (path relative to the index root, absolute path).
    pub fn index_files(&self) -> Result<Vec<(String, PathBuf)>> {
        let mut out = Vec::new();
        walk_files(&self.index_dir, "", &mut |rel, path| {
            let top_level = !rel.contains('/');
            let name = rel.rsplit('/').next().unwrap_or(rel);
            if !top_level && !is_temp_name(name) {
                out.push((rel.to_owned(), path.to_owned()));
            }
        })
        .context(|| format!("reading {}", self.index_dir.display()))?;
        out.sort();
        Ok(out)
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
fn walk_files(dir: &Path, prefix: &str, f: &mut dyn FnMut(&str, &Path)) -> io::Result<()> {
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

/// Copies everything read from `inner` into `out`, keeping a write error apart so that it
/// is not mistaken for a broken archive.
struct Tee<'a, R> {
    inner: R,
    out: &'a mut File,
    write_error: &'a mut Option<io::Error>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Err(e) = self.out.write_all(&buf[..n]) {
            let kind = e.kind();
            *self.write_error = Some(e);
            return Err(kind.into());
        }
        Ok(n)
    }
}
