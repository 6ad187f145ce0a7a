//! `palletizer backup FILE` and `palletizer restore FILE DIR`: the whole registry as one
//! gzipped tar, and back.
//!
//! A backup is taken under the registry lock, so no write is half-done in it: a publish that
//! arrives meanwhile waits (the server keeps serving reads) and lands after it. It holds a
//! manifest first ([`MANIFEST`]: format, version, time, HEAD commit, and how many entries and
//! data bytes follow), then `palletizer.toml`, `auth.json` (token hashes only, as on disk),
//! `search.jsonl`, the index repository under `index/` (of its `.git` what a restore takes:
//! HEAD, refs, logs and objects, less lock and temp files; not git's `index` file, a cache of
//! HEAD that the restore rebuilds, nor the config, hooks or caches), the crate files
//! and their page files under `crates/`, `orphans/`, each version's docs under `docs/`, the
//! audit log (`audit.jsonl` and `audit.jsonl.1`, streamed) and the download counts
//! (`downloads/`). Never the journal, the lock file or upload spool files. It is written to
//! `FILE.tmp`, synced and renamed, so `FILE` is always
//! a whole backup or the previous one.
//!
//! A restore trusts nothing in the file: only directories, plain files and GNU long names are
//! taken, paths must be relative, without `..`, and under one of the registry's own top-level
//! names; nothing is ever written through a link (none is ever made); every count and size is
//! bounded by the manifest, which is checked against the free space before anything is
//! written. Nothing git would run or follow is restored ([`git_entry`]): of the index's `.git`
//! only HEAD, refs, logs and objects are taken, git's config is written anew, caches and hook
//! samples are left out, and hooks, alternates, `commondir`, `info/` rules, nested `.git`
//! entries and `.git*` files in the working tree are refused. A backup takes what a restore
//! keeps, so a registry with hooks of its admin's still backs up and restores.
//! It extracts into a hidden sibling of `DIR`, opens the registry there (crash
//! recovery rebuilds git's index), requires HEAD to be the manifest's and `check` to be clean,
//! notes the restore in the restored audit log, syncs, and only then renames it to `DIR`: a refused restore leaves no `DIR` behind, and
//! never touches a registry that exists.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::index::search;
use super::{check, Registry, Settings, SETTINGS_FILE};

/// The first entry of every backup.
pub const MANIFEST: &str = "palletizer-backup.json";
const FORMAT: &str = "palletizer-backup";
/// The format version this code writes and reads.
const VERSION: u32 = 1;
const MAX_MANIFEST: u64 = 64 * 1024;
/// Bounds on what a (possibly hostile) backup file can make a restore create.
const MAX_ENTRIES: u64 = 50_000_000;
const MAX_PATH: usize = 4096;
const MAX_COMPONENT: usize = 255;
/// A GNU long name: a path of [`MAX_PATH`] bytes and its NUL.
const MAX_LONG_NAME: u64 = MAX_PATH as u64 + 1;
/// Zero blocks allowed after the end of the archive (tar writers pad their last record).
const MAX_PADDING: u64 = 1 << 20;
/// The registry's own top-level names: nothing else is read from a backup.
const TOP_FILES: [&str; 5] = [
    SETTINGS_FILE,
    super::auth::AUTH_FILE,
    search::SEARCH_FILE,
    search::TAIL_FILE,
    super::versions::tombstone::TOMBSTONE_FILE,
];
const INDEX: &str = "index";
const CRATES: &str = "crates";
const TOP_DIRS: [&str; 5] = [
    INDEX,
    CRATES,
    super::store::ORPHANS_DIR,
    super::downloads::DOWNLOADS_DIR,
    super::DOCS_DIR,
];
/// The audit log's files: streamed, not read whole (they may be megabytes), and readable by
/// the registry's owner only, like `auth.json`.
const TOP_LOGS: [&str; 2] = [super::audit::AUDIT_OLD_FILE, super::audit::AUDIT_FILE];

/// Whether a top-level file is the owner's only (mode 0600): token hashes, the audit log.
fn private_file(name: &str) -> bool {
    name == super::auth::AUTH_FILE || TOP_LOGS.contains(&name)
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} is not a palletizer backup ({1})")]
    NotABackup(String, String),
    #[error("backup file {0} is damaged or cut short: {1}")]
    Damaged(String, String),
    #[error("{0}")]
    Refused(String),
    #[error("the disk holding {0} is full; {1}")]
    DiskFull(String, &'static str),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Registry(#[from] super::Error),
}

type Result<T, E = BackupError> = std::result::Result<T, E>;

fn io_err(context: impl FnOnce() -> String) -> impl FnOnce(io::Error) -> BackupError {
    move |source| BackupError::Io {
        context: context(),
        source,
    }
}

/// What the first entry says.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    format: String,
    version: u32,
    /// RFC 3339, UTC.
    created: String,
    head: String,
    /// Entries after the manifest (GNU long names not counted) and their data bytes.
    entries: u64,
    bytes: u64,
}

/// What a backup or a restore did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub entries: u64,
    pub bytes: u64,
    pub head: String,
    pub created: String,
    /// What the restore changed on the way (settings pointed at the restored trees).
    pub notes: Vec<String>,
}

/// One thing to archive, listed before writing so the manifest can count it.
enum Item {
    Dir(String),
    File {
        name: String,
        path: PathBuf,
        size: u64,
    },
    /// A small root file read whole under the lock.
    Bytes(String, Vec<u8>),
}

/// `FILE.tmp`, beside `FILE`.
fn tmp_name(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// True for an I/O error that means the disk is full.
fn disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// Writes a backup of the registry in `root` to `file`.
pub fn backup(root: &Path, file: &Path) -> Result<Summary> {
    let reg = Registry::open(root)?;
    // A backup of a registry that fails its checks would be refused by the restore: say so
    // now, while the registry can still be fixed.
    let problems = check::check(&reg)?;
    if let Some(first) = problems.first() {
        return Err(BackupError::Refused(format!(
            "the registry has {} problem(s), first: {first}; fix them (`palletizer check \
             --repair`) before taking a backup, which would not restore",
            problems.len()
        )));
    }
    refuse_inside(&reg, file)?;
    let tmp = tmp_name(file);
    let _lock = reg.lock()?;
    let written = write_backup(&reg, &tmp).and_then(|summary| {
        fs::rename(&tmp, file).map_err(io_err(|| format!("renaming {}", tmp.display())))?;
        sync_parent(file)?;
        Ok(summary)
    });
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// The directory holding `path` (`.` for a bare name).
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// A backup file inside a tree it copies would copy itself.
fn refuse_inside(reg: &Registry, file: &Path) -> Result<()> {
    let parent = parent_of(file)
        .canonicalize()
        .map_err(io_err(|| format!("the folder of {}", file.display())))?;
    for tree in [
        reg.index_dir().to_owned(),
        reg.crates_dir().to_owned(),
        reg.root().join(super::store::ORPHANS_DIR),
    ] {
        if tree.canonicalize().is_ok_and(|t| parent.starts_with(t)) {
            return Err(BackupError::Refused(format!(
                "the backup file {} would be inside {}, which it copies; write it elsewhere",
                file.display(),
                tree.display()
            )));
        }
    }
    Ok(())
}

fn sync_parent(path: &Path) -> Result<()> {
    let parent = parent_of(path);
    File::open(&parent)
        .and_then(|d| d.sync_all())
        .map_err(io_err(|| format!("syncing {}", parent.display())))
}

/// The registry's HEAD commit, as hex.
fn head_of(index_dir: &Path) -> Result<String> {
    let repo = git2::Repository::open(index_dir).map_err(super::Error::Git)?;
    let head = repo
        .head()
        .and_then(|h| h.peel_to_commit())
        .map_err(super::Error::Git)?;
    Ok(head.id().to_string())
}

/// Lists what the backup holds (registry lock held).
fn list(reg: &Registry) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    for name in TOP_FILES {
        let path = reg.root().join(name);
        match fs::read(&path) {
            Ok(bytes) => items.push(Item::Bytes(name.to_owned(), bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound && name != SETTINGS_FILE => {}
            Err(e) => return Err(io_err(|| format!("reading {}", path.display()))(e)),
        }
    }
    for name in TOP_LOGS {
        let path = reg.root().join(name);
        match fs::metadata(&path) {
            Ok(m) => items.push(Item::File {
                name: name.to_owned(),
                path,
                size: m.len(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(|| format!("reading {}", path.display()))(e)),
        }
    }
    let trees = [
        (INDEX, reg.index_dir().to_owned()),
        (CRATES, reg.crates_dir().to_owned()),
        (
            super::store::ORPHANS_DIR,
            reg.root().join(super::store::ORPHANS_DIR),
        ),
        (
            super::downloads::DOWNLOADS_DIR,
            reg.root().join(super::downloads::DOWNLOADS_DIR),
        ),
        (super::DOCS_DIR, reg.docs_dir()),
    ];
    for (name, dir) in trees {
        if dir.is_dir() {
            items.push(Item::Dir(name.to_owned()));
            list_tree(&dir, name, false, &mut items)
                .map_err(io_err(|| format!("reading {}", dir.display())))?;
        }
    }
    Ok(items)
}

/// Directories and plain files under `dir`, sorted. Inside `.git`, git's `index` (a cache),
/// lock files and temp objects are left out; everywhere, the registry's temp files.
fn list_tree(dir: &Path, prefix: &str, in_git: bool, items: &mut Vec<Item>) -> io::Result<()> {
    let mut entries: Vec<fs::DirEntry> = fs::read_dir(dir)?.collect::<io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let Ok(name) = e.file_name().into_string() else {
            continue; // never made by the registry, and not restorable by name
        };
        let skip = super::store::is_temp_name(&name)
            || (in_git
                && (name.ends_with(".lock")
                    || name.starts_with("tmp_")
                    || (prefix.ends_with("/.git") && name == "index")));
        if skip {
            continue;
        }
        let rel = format!("{prefix}/{name}");
        let ty = e.file_type()?;
        if git_entry(&rel, ty.is_dir()) != GitEntry::Keep {
            continue; // what a restore would leave out or refuse (see `git_entry`)
        }
        if ty.is_dir() {
            items.push(Item::Dir(rel.clone()));
            list_tree(&e.path(), &rel, in_git || name == ".git", items)?;
        } else if ty.is_file() {
            items.push(Item::File {
                name: rel,
                path: e.path(),
                size: e.metadata()?.len(),
            });
        }
    }
    Ok(())
}

/// Keeps the first error of the file being written: the tar and gzip layers may wrap it.
struct Recording<W> {
    inner: W,
    error: Option<io::Error>,
}

impl<W> Recording<W> {
    fn note(&mut self, e: &io::Error) {
        self.error.get_or_insert_with(|| match e.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(e.kind(), e.to_string()),
        });
    }
}

impl<W: Write> Write for Recording<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = self.inner.write(buf);
        if let Err(e) = &r {
            self.note(e);
        }
        r
    }
    fn flush(&mut self) -> io::Result<()> {
        let r = self.inner.flush();
        if let Err(e) = &r {
            self.note(e);
        }
        r
    }
}

/// Reads exactly `left` bytes: a file that ends early must not leave a short tar entry.
struct Exactly<R> {
    inner: R,
    left: u64,
    path: PathBuf,
}

impl<R: Read> Read for Exactly<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} shrank while being copied", self.path.display()),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn header(kind: tar::EntryType, size: u64, mode: u32, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(mtime);
    h
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Writes the archive to `tmp` and syncs it (registry lock held).
fn write_backup(reg: &Registry, tmp: &Path) -> Result<Summary> {
    let head = head_of(reg.index_dir())?;
    let items = list(reg)?;
    let now = SystemTime::now();
    let manifest = Manifest {
        format: FORMAT.to_owned(),
        version: VERSION,
        created: humantime::format_rfc3339_seconds(now).to_string(),
        head,
        entries: items.len() as u64,
        bytes: items
            .iter()
            .map(|i| match i {
                Item::Dir(_) => 0,
                Item::File { size, .. } => *size,
                Item::Bytes(_, b) => b.len() as u64,
            })
            .sum(),
    };
    let file = File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|e| write_error(tmp, e))?;
    let mut out = Recording {
        inner: BufWriter::with_capacity(64 * 1024, file),
        error: None,
    };
    let written = write_archive(&mut out, &manifest, &items, unix_secs(now));
    let finished = written.and_then(|()| {
        let file = out
            .inner
            .into_inner()
            .map_err(|e| e.into_error())
            .map_err(|e| write_error(tmp, e))?;
        file.sync_all().map_err(|e| write_error(tmp, e))
    });
    match (finished, out.error) {
        (Ok(()), _) => Ok(Summary {
            entries: manifest.entries,
            bytes: manifest.bytes,
            head: manifest.head,
            created: manifest.created,
            notes: Vec::new(),
        }),
        // The file's own error says more than what the tar or gzip layer made of it.
        (Err(_), Some(e)) => Err(write_error(tmp, e)),
        (Err(e), None) => Err(e),
    }
}

fn write_error(path: &Path, e: io::Error) -> BackupError {
    if disk_full(&e) {
        BackupError::DiskFull(path.display().to_string(), "no backup was written")
    } else {
        io_err(|| format!("writing {}", path.display()))(e)
    }
}

fn write_archive<W: Write>(out: W, manifest: &Manifest, items: &[Item], now: u64) -> Result<()> {
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let fail = |e: io::Error| io_err(|| "writing the backup".to_owned())(e);
    let json = serde_json::to_vec_pretty(manifest).expect("the manifest serializes");
    let mut h = header(tar::EntryType::Regular, json.len() as u64, 0o644, now);
    tar.append_data(&mut h, MANIFEST, &json[..]).map_err(fail)?;
    for item in items {
        match item {
            Item::Dir(name) => {
                let mut h = header(tar::EntryType::Directory, 0, 0o755, now);
                tar.append_data(&mut h, name, io::empty()).map_err(fail)?;
            }
            Item::Bytes(name, bytes) => {
                let mode = if private_file(name) { 0o600 } else { 0o644 };
                let mut h = header(tar::EntryType::Regular, bytes.len() as u64, mode, now);
                tar.append_data(&mut h, name, &bytes[..]).map_err(fail)?;
            }
            Item::File { name, path, size } => {
                let f =
                    File::open(path).map_err(io_err(|| format!("reading {}", path.display())))?;
                let mtime = f
                    .metadata()
                    .and_then(|m| m.modified())
                    .map_or(now, unix_secs);
                let mode = if private_file(name) { 0o600 } else { 0o644 };
                let mut h = header(tar::EntryType::Regular, *size, mode, mtime);
                let data = Exactly {
                    inner: f,
                    left: *size,
                    path: path.clone(),
                };
                tar.append_data(&mut h, name, data).map_err(fail)?;
            }
        }
    }
    tar.into_inner()
        .map_err(fail)?
        .finish()
        .map_err(fail)?
        .flush()
        .map_err(fail)
}

/// Restores the backup in `file` into `dir`, which must not exist or be empty.
pub fn restore(file: &Path, dir: &Path) -> Result<Summary> {
    let (parent, name) = check_target(dir)?;
    let input = File::open(file).map_err(io_err(|| format!("reading {}", file.display())))?;
    let tmp = parent.join(format!(".{name}.restore-{}", std::process::id()));
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&tmp)
        .map_err(io_err(|| format!("creating {}", tmp.display())))?;
    let done = extract(input, file, &tmp, &parent).and_then(|m| finish(&tmp, m, file));
    let done = done.and_then(|summary| {
        let d = File::open(&tmp).map_err(io_err(|| format!("opening {}", tmp.display())))?;
        // One sync of the file system instead of one per file: nothing is under its final
        // name before this returns.
        // SAFETY: syncfs on a descriptor we own, open for the call.
        if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&d)) } != 0 {
            let e = io::Error::last_os_error();
            return Err(write_error_restore(dir, e));
        }
        fs::rename(&tmp, dir).map_err(|e| {
            let context = format!("moving the restored registry to {}", dir.display());
            match e.raw_os_error() {
                Some(libc::ENOTEMPTY | libc::EEXIST) => BackupError::Refused(format!(
                    "{} is no longer empty; nothing was restored",
                    dir.display()
                )),
                _ => io_err(|| context)(e),
            }
        })?;
        sync_parent(dir)?;
        Ok(summary)
    });
    if done.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    done
}

/// `dir` must be new or empty and its parent must exist: (parent, file name).
fn check_target(dir: &Path) -> Result<(PathBuf, String)> {
    match fs::read_dir(dir) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(BackupError::Refused(format!(
                    "{} exists and is not empty; restore only into a new or empty directory \
                     (it never writes over a registry)",
                    dir.display()
                )));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            return Err(BackupError::Refused(format!(
                "{} exists and is not a directory",
                dir.display()
            )))
        }
        Err(e) => return Err(io_err(|| format!("reading {}", dir.display()))(e)),
    }
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            BackupError::Refused(format!(
                "{} does not end in a directory name",
                dir.display()
            ))
        })?
        .to_owned();
    let parent = parent_of(dir);
    if !parent.is_dir() {
        return Err(BackupError::Refused(format!(
            "{} does not exist; create it first",
            parent.display()
        )));
    }
    Ok((parent, name))
}

fn write_error_restore(dir: &Path, e: io::Error) -> BackupError {
    if disk_full(&e) {
        BackupError::DiskFull(dir.display().to_string(), "nothing was restored")
    } else {
        io_err(|| format!("writing under {}", dir.display()))(e)
    }
}

/// Free bytes for an unprivileged writer on the file system holding `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: a NUL-terminated path and a zeroed struct the call fills.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(c.as_ptr(), &mut st) == 0)
            .then(|| (st.f_frsize as u64).saturating_mul(st.f_bavail as u64))
    }
}

/// Unpacks the archive into `tmp`; returns its manifest.
fn extract(input: File, file: &Path, tmp: &Path, parent: &Path) -> Result<Manifest> {
    let shown = file.display().to_string();
    let damaged = |e: &dyn std::fmt::Display| BackupError::Damaged(shown.clone(), e.to_string());
    let mut gz = flate2::bufread::GzDecoder::new(BufReader::with_capacity(64 * 1024, input));
    let mut archive = tar::Archive::new(&mut gz);
    let mut entries = archive
        .entries()
        .map_err(|e| BackupError::NotABackup(shown.clone(), e.to_string()))?
        .raw(true);
    let manifest = match entries.next() {
        None => return Err(BackupError::NotABackup(shown, "it is empty".into())),
        Some(Err(e)) => return Err(BackupError::NotABackup(shown, not_gzip(e))),
        Some(Ok(e)) => read_manifest(e, &shown)?,
    };
    if let Some(free) = free_bytes(parent) {
        if manifest.bytes > free {
            return Err(BackupError::Refused(format!(
                "the backup holds {} bytes and only {free} are free on the disk holding {}; \
                 nothing was restored",
                manifest.bytes,
                parent.display()
            )));
        }
    }
    let (mut count, mut bytes) = (0u64, 0u64);
    let mut long_name: Option<Vec<u8>> = None;
    for entry in entries {
        let mut entry = entry.map_err(|e| damaged(&e))?;
        let kind = entry.header().entry_type();
        let size = entry.header().size().map_err(|e| damaged(&e))?;
        if kind.is_gnu_longname() {
            if size > MAX_LONG_NAME || long_name.is_some() {
                return Err(damaged(&"a GNU long name entry is too long or repeated"));
            }
            let mut name = Vec::new();
            (&mut entry)
                .take(size)
                .read_to_end(&mut name)
                .map_err(|e| damaged(&e))?;
            while name.last() == Some(&0) {
                name.pop();
            }
            long_name = Some(name);
            continue;
        }
        let raw = long_name
            .take()
            .unwrap_or_else(|| entry.path_bytes().into_owned());
        let rel = entry_path(&raw)?;
        count += 1;
        if count > manifest.entries || count > MAX_ENTRIES {
            return Err(damaged(&"it holds more entries than its manifest lists"));
        }
        let dest = tmp.join(&rel);
        if kind.is_dir() {
            restore_dir(&dest, &rel, tmp)?;
        } else if kind.is_file() {
            bytes = bytes.saturating_add(size);
            if bytes > manifest.bytes {
                return Err(damaged(&"it holds more data than its manifest lists"));
            }
            let mtime = entry.header().mtime().unwrap_or(0);
            write_file(&mut entry, &dest, &rel, size, mtime, tmp, &shown)?;
        } else {
            return Err(BackupError::Refused(format!(
                "backup entry `{}` is {}; a palletizer backup holds only files and \
                 directories, and nothing was restored",
                super::names::shown_at_most(&rel, 200),
                kind_name(kind)
            )));
        }
    }
    if long_name.is_some() {
        return Err(damaged(&"a long name names no entry"));
    }
    if count != manifest.entries || bytes != manifest.bytes {
        return Err(damaged(&format!(
            "{count} of {} entries and {bytes} of {} bytes",
            manifest.entries, manifest.bytes
        )));
    }
    // Reading to the end checks the gzip trailer (CRC and length) too.
    let mut rest = [0u8; 8192];
    let mut padding = 0u64;
    loop {
        let n = gz.read(&mut rest).map_err(|e| damaged(&e))?;
        if n == 0 {
            break;
        }
        padding += n as u64;
        if padding > MAX_PADDING || rest[..n].iter().any(|&b| b != 0) {
            return Err(damaged(&"data follows the end of the archive"));
        }
    }
    let mut inner = gz.into_inner();
    if !inner.fill_buf().map_err(|e| damaged(&e))?.is_empty() {
        return Err(damaged(&"data follows the end of the gzip stream"));
    }
    Ok(manifest)
}

/// What a reading error at the very start means to a person.
fn not_gzip(e: io::Error) -> String {
    let text = e.to_string();
    if text.contains("gzip") || text.contains("header") {
        "not a gzip file".to_owned()
    } else {
        text
    }
}

fn read_manifest<R: Read>(mut entry: tar::Entry<'_, R>, shown: &str) -> Result<Manifest> {
    let not = |why: &str| BackupError::NotABackup(shown.to_owned(), why.to_owned());
    let size = entry.header().size().map_err(|_| not("no manifest"))?;
    if entry.path_bytes().as_ref() != MANIFEST.as_bytes()
        || !entry.header().entry_type().is_file()
        || size > MAX_MANIFEST
    {
        return Err(not(&format!("its first entry is not {MANIFEST}")));
    }
    let mut text = Vec::new();
    (&mut entry)
        .take(size)
        .read_to_end(&mut text)
        .map_err(|e| BackupError::Damaged(shown.to_owned(), e.to_string()))?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|_| not("its manifest cannot be read"))?;
    if manifest.format != FORMAT {
        return Err(not("its manifest names another format"));
    }
    if manifest.version != VERSION {
        return Err(BackupError::Refused(format!(
            "{shown} is a backup of format version {}; this palletizer reads version {VERSION}",
            manifest.version
        )));
    }
    Ok(manifest)
}

fn kind_name(kind: tar::EntryType) -> &'static str {
    match kind {
        tar::EntryType::Symlink => "a symbolic link",
        tar::EntryType::Link => "a hard link",
        tar::EntryType::Char | tar::EntryType::Block => "a device",
        tar::EntryType::Fifo => "a FIFO",
        _ => "of a kind palletizer never writes",
    }
}

/// An archive path as a safe relative path under one of the registry's top-level names.
fn entry_path(raw: &[u8]) -> Result<String> {
    let shown = || super::names::shown_at_most(&String::from_utf8_lossy(raw), 200);
    let refuse = |why: &str| {
        BackupError::Refused(format!(
            "backup entry `{}` {why}; nothing was restored",
            shown()
        ))
    };
    let text = std::str::from_utf8(raw).map_err(|_| refuse("is not UTF-8"))?;
    let text = text.strip_suffix('/').unwrap_or(text);
    if text.len() > MAX_PATH {
        return Err(refuse("is too long"));
    }
    let mut parts = Vec::new();
    for c in Path::new(text).components() {
        match c {
            Component::Normal(p) => {
                let p = p.to_str().expect("from a str");
                if p.len() > MAX_COMPONENT || p.contains('\0') {
                    return Err(refuse("has a path component that is too long"));
                }
                parts.push(p);
            }
            _ => {
                return Err(refuse(
                    "is not a plain relative path (absolute, or with `.` or `..`)",
                ))
            }
        }
    }
    // `Path::components` drops `.` in the middle and doubled slashes: the path must be
    // exactly what it says.
    if parts.is_empty() || parts.join("/") != text {
        return Err(refuse("is not a plain relative path"));
    }
    let top = parts[0];
    let ok = (parts.len() == 1 && (TOP_FILES.contains(&top) || TOP_LOGS.contains(&top)))
        || TOP_DIRS.contains(&top);
    if !ok {
        return Err(refuse("is not part of a registry"));
    }
    Ok(parts.join("/"))
}

/// What a restore does with an entry, and whether a backup takes it: git runs hooks and the
/// programs its config names (`core.fsmonitor`, `core.hooksPath`, filters), reads objects
/// from alternates, follows `.git` files, `commondir` and `gitdir` to other repositories, and
/// applies `info/` and `.git*` rules. Of the index's `.git` only what holds its history is
/// taken; the config is written anew by [`finish`].
#[derive(Debug, PartialEq, Eq)]
enum GitEntry {
    /// Restored as it is (everything outside the index's git files).
    Keep,
    /// Left out: what the restore writes itself (the config), caches git rebuilds, samples.
    LeaveOut,
    /// Refused, with why.
    Refuse(&'static str),
}

/// [`GitEntry`] for the path `rel` (checked by [`entry_path`]), a directory or a file.
fn git_entry(rel: &str, dir: bool) -> GitEntry {
    use GitEntry::{Keep, LeaveOut, Refuse};
    let parts: Vec<&str> = rel.split('/').collect();
    if parts[0] != INDEX || parts.len() == 1 {
        return Keep;
    }
    let git_name = |p: &&str| p.len() >= 4 && p[..4].eq_ignore_ascii_case(".git");
    if parts[1] != ".git" || parts[2..].iter().any(git_name) {
        return match parts[1..].iter().any(git_name) {
            true => Refuse(
                "is a `.git` directory or file (`.git`, `.gitattributes`, `.gitmodules`, ...) \
                 that git would follow or apply",
            ),
            false => Keep,
        };
    }
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let pack = |s: &str| {
        let stem = s.strip_suffix(".pack").or_else(|| s.strip_suffix(".idx"));
        stem.and_then(|s| s.strip_prefix("pack-"))
            .is_some_and(|h| hex(h, 40))
    };
    match (&parts[2..], dir) {
        ([], true) | (["HEAD" | "description" | "packed-refs"], false) => Keep,
        (["refs" | "logs", ..], _) => Keep,
        (["objects"] | ["objects", "pack" | "info"], true) => Keep,
        (["objects", d], true) if hex(d, 2) => Keep,
        (["objects", d, o], false) if hex(d, 2) && hex(o, 38) => Keep,
        (["objects", "pack", p], false) if pack(p) => Keep,
        (["objects", "info", "alternates" | "http-alternates"], _) => {
            Refuse("names another object store, which git would read")
        }
        (["objects", "info" | "pack", _, ..], _) => LeaveOut,
        (["config"], false) | (["hooks"] | ["info"], true) => LeaveOut,
        (["hooks", h], false) if h.ends_with(".sample") => LeaveOut,
        (["hooks", ..], _) => Refuse("is a git hook, which git would run"),
        (["info", "exclude" | "refs"], false) => LeaveOut,
        (["ORIG_HEAD" | "FETCH_HEAD" | "COMMIT_EDITMSG"], false) => LeaveOut,
        ([], false) => Refuse("is a `.git` file, which git would follow to another repository"),
        _ => Refuse(
            "is not one of the git files a restore takes (HEAD, refs, logs, objects): git could \
             run or follow it",
        ),
    }
}

/// Whether a restore writes the entry at `rel` ([`git_entry`]); a refusal is the error.
fn restored(rel: &str, dir: bool) -> Result<bool> {
    match git_entry(rel, dir) {
        GitEntry::Keep => Ok(true),
        GitEntry::LeaveOut => Ok(false),
        GitEntry::Refuse(why) => Err(BackupError::Refused(format!(
            "backup entry `{}` {why}; nothing was restored",
            super::names::shown_at_most(rel, 200)
        ))),
    }
}

/// Makes the directory of entry `rel`, unless a restore leaves it out ([`git_entry`]).
fn restore_dir(dest: &Path, rel: &str, tmp: &Path) -> Result<()> {
    if restored(rel, true)? {
        fs::create_dir_all(dest).map_err(|e| write_error_restore(tmp, e))?;
    }
    Ok(())
}

/// Writes the file of entry `rel`, unless a restore leaves it out ([`git_entry`]).
fn write_file(
    entry: &mut impl Read,
    dest: &Path,
    rel: &str,
    size: u64,
    mtime: u64,
    tmp: &Path,
    shown: &str,
) -> Result<()> {
    if !restored(rel, false)? {
        return Ok(()); // the tar reader skips its data
    }
    if let Some(dir) = dest.parent() {
        fs::create_dir_all(dir).map_err(|e| write_error_restore(tmp, e))?;
    }
    // auth.json holds token hashes, the audit log users and addresses: readable by the
    // registry's owner only, from the start.
    let mode = if private_file(rel) { 0o600 } else { 0o644 };
    let mut f = match File::options()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(dest)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(BackupError::Refused(format!(
                "backup entry `{}` appears twice; nothing was restored",
                super::names::shown_at_most(rel, 200)
            )))
        }
        Err(e) => return Err(write_error_restore(tmp, e)),
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(left.min(usize::MAX as u64) as usize);
        let n = entry
            .read(&mut buf[..want])
            .map_err(|e| BackupError::Damaged(shown.to_owned(), e.to_string()))?;
        if n == 0 {
            return Err(BackupError::Damaged(
                shown.to_owned(),
                format!("entry `{rel}` ends early"),
            ));
        }
        f.write_all(&buf[..n])
            .map_err(|e| write_error_restore(tmp, e))?;
        left -= n as u64;
    }
    let _ = f.set_modified(UNIX_EPOCH + Duration::from_secs(mtime));
    Ok(())
}

/// Opens the extracted registry (crash recovery rebuilds git's index), points its settings at
/// the restored trees, checks it, and notes the restore in its audit log.
fn finish(tmp: &Path, manifest: Manifest, file: &Path) -> Result<Summary> {
    let settings_path = tmp.join(SETTINGS_FILE);
    let text = fs::read_to_string(&settings_path).map_err(|_| {
        BackupError::Refused(format!("the backup holds no readable {SETTINGS_FILE}"))
    })?;
    let mut settings = Settings::parse(&text)
        .map_err(|e| BackupError::Refused(format!("the backup's {SETTINGS_FILE}: {e}")))?;
    let mut notes = Vec::new();
    if settings.index_dir != Path::new(INDEX) || settings.crates_dir != Path::new(CRATES) {
        notes.push(format!(
            "index-dir and crates-dir ({} and {}) now point at the restored {INDEX}/ and \
             {CRATES}/",
            settings.index_dir.display(),
            settings.crates_dir.display()
        ));
        settings.index_dir = INDEX.into();
        settings.crates_dir = CRATES.into();
        super::store::write_atomic(&settings_path, settings.to_toml().as_bytes())?;
    }
    if !tmp.join(INDEX).join(".git").join("HEAD").is_file() {
        return Err(BackupError::Refused(
            "the backup holds no index repository".into(),
        ));
    }
    // Before anything opens the repository: the backup's config was left out.
    super::git::write_config(&tmp.join(INDEX)).map_err(super::Error::Git)?;
    // Opening runs crash recovery, which rebuilds git's index (left out of every backup).
    let reg = Registry::open(tmp)?;
    let head = head_of(reg.index_dir())?;
    if head != manifest.head {
        return Err(BackupError::Refused(format!(
            "the restored index is at commit {head}, but the backup was taken at {}",
            manifest.head
        )));
    }
    let problems = check::check(&reg)?;
    if let Some(first) = problems.first() {
        return Err(BackupError::Refused(format!(
            "the restored registry fails its checks ({} problem(s), first: {first}); nothing \
             was restored",
            problems.len()
        )));
    }
    let actor = super::command::audit_actor(&super::Actor::cli());
    let mut line = super::audit::AuditRecord::new(super::now(), "restore", actor);
    line.outcome = super::audit::AuditOutcome::Ok;
    line.reason = Some(format!(
        "from the backup {} taken at {}, index at {}",
        file.display(),
        manifest.created,
        manifest.head
    ));
    reg.audit_one(&line)?;
    Ok(Summary {
        entries: manifest.entries,
        bytes: manifest.bytes,
        head: manifest.head,
        created: manifest.created,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_stay_under_the_registrys_own_names() {
        for ok in [
            "index/.git/HEAD",
            "crates/foo/foo-1.0.0.crate",
            "auth.json",
            "index/",
        ] {
            assert!(entry_path(ok.as_bytes()).is_ok(), "{ok}");
        }
        for bad in [
            "../x",
            "/etc/passwd",
            "index/../../x",
            "index/./x",
            "index//x",
            "./index/x",
            "x",
            ".pending",
            "auth.json/x",
            "",
        ] {
            assert!(entry_path(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(entry_path(b"index/\xff").is_err());
        assert!(entry_path(format!("index/{}", "a".repeat(256)).as_bytes()).is_err());
    }

    #[test]
    fn of_the_index_git_files_only_its_history_is_restored() {
        let object = format!("index/.git/objects/0f/{}", "a".repeat(38));
        let pack = format!("index/.git/objects/pack/pack-{}.idx", "b".repeat(40));
        let (keep, out, refuse) = ("keep", "leave out", "refuse");
        let cases = [
            ("index", true, keep),
            ("index/config.json", false, keep),
            ("index/fo/o/foo", false, keep),
            ("crates/foo/.git", false, keep),
            ("index/.git", true, keep),
            ("index/.git/HEAD", false, keep),
            ("index/.git/packed-refs", false, keep),
            ("index/.git/refs/heads/master", false, keep),
            ("index/.git/logs/HEAD", false, keep),
            ("index/.git/objects/0f", true, keep),
            (&object, false, keep),
            (&pack, false, keep),
            ("index/.git/config", false, out),
            ("index/.git/hooks", true, out),
            ("index/.git/hooks/pre-commit.sample", false, out),
            ("index/.git/info/exclude", false, out),
            ("index/.git/objects/info/commit-graph", false, out),
            ("index/.git/objects/pack/multi-pack-index", false, out),
            ("index/.git/objects/pack/pack-x.pack", false, out),
            ("index/.git", false, refuse),
            ("index/.git/config", true, refuse),
            ("index/.git/hooks/pre-commit", false, refuse),
            ("index/.git/hooks/x.sample", true, refuse),
            ("index/.git/objects/info/alternates", false, refuse),
            ("index/.git/objects/0f/short", false, refuse),
            ("index/.git/info/attributes", false, refuse),
            ("index/.git/info/grafts", false, refuse),
            ("index/.git/commondir", false, refuse),
            ("index/.git/shallow", false, refuse),
            ("index/.git/index", false, refuse),
            ("index/.git/worktrees/w/gitdir", false, refuse),
            ("index/.git/modules", true, refuse),
            ("index/.git/refs/.git", true, refuse),
            ("index/fo/.git", false, refuse),
            ("index/.Git/HEAD", false, refuse),
            ("index/.gitattributes", false, refuse),
            ("index/.gitignore", false, refuse),
        ];
        for (rel, dir, want) in cases {
            let got = match git_entry(rel, dir) {
                GitEntry::Keep => keep,
                GitEntry::LeaveOut => out,
                GitEntry::Refuse(_) => refuse,
            };
            assert_eq!(got, want, "{rel} (directory: {dir})");
        }
    }
}
