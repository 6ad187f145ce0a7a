//! The registry as files: `palletizer.toml`, the `index/` git repository whose working tree is
//! the sparse index, and `crates/` with one immutable `.crate` file per version.
//!
//! Every change is a [`Command`] run by [`Registry::apply`]: take the registry lock (an
//! advisory file lock), decide what depends on registry state, note the crate in
//! the journal (`.pending`), write files under a temp name, fsync and rename them into
//! place, rewrite the crate's index file whole, make one git commit, update the search data,
//! clear the journal, queue the webhook deliveries its events cause, release the lock, and
//! return the events. Opening a registry (under the lock, so no writer can be alive)
//! repairs what a crash left half-done: stale git lock files and temp files are removed,
//! git's index is put back to HEAD, index edits on disk but not committed are committed,
//! and for each crate in the journal, crate files without an index line are moved aside to
//! `orphans/` (never deleted), the owner a first publish recorded before it was cut short is
//! forgotten, and the search line is rebuilt.
//!
//! A deleted version leaves a tombstone (in `deleted.jsonl`): its number is never published
//! again. A deleted crate's name stays with its owners (or its admins) until an admin gives
//! it up.
//!
//! Crate names enter only as [`CrateName`], which only validation makes.
//!
//! The registry is built of rooms, all private: the rest of the program uses [`Registry`]'s
//! methods and the types and few functions re-exported here.
//!
//! - `store`: the files at the root, temp files, atomic writes, the previous version of a
//!   file kept while it is rewritten, the write lock, where a crate file lives; and
//!   `store::recover`, the journal and what opening the registry repairs;
//! - `index`: the index lines, a crate's index file rewritten whole and committed, the git
//!   repository, the index served to git clients, the search file;
//! - `publish`: the checks of a crate file before the lock (archive, metadata, targets, the
//!   README rendered) and the publish under it;
//! - `versions`: yank and unyank, delete and its tombstones, giving up a kept name;
//! - `docs`: each version's rustdoc output, uploaded, checked, swapped in whole, removed;
//! - `auth`: users, tokens and owners in `auth.json`, and who may do what;
//! - `command`: the one write path, its events, the audit lines it writes for them, and the
//!   one-command shorthands;
//! - `audit`: the audit log (`audit.jsonl`), its crash invariant, rotation and reading;
//! - `downloads`: download counts per version and day, flushed by the server;
//! - `names` and `settings`: crate names and versions, `palletizer.toml`;
//! - `outbox`: webhook deliveries queued on disk by each change, for the server to send;
//! - `check` and `backup`: `palletizer check`, `backup` and `restore`;
//! - [`testing`]: helpers for the tests and benches, not part of the API.
//!
//! This module knows no sockets and no HTTP; the CLI and the server call the same functions.

mod audit;
mod auth;
mod backup;
mod check;
mod command;
mod docs;
mod downloads;
mod index;
mod names;
mod outbox;
mod publish;
mod settings;
mod store;
pub mod testing;
mod versions;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use audit::{
    AuditActor, AuditOutcome, AuditQuery, AuditRecord, WriteRefusal, AUDIT_FILE, AUDIT_OLD_FILE,
    MAX_REFUSALS_PER_BATCH,
};
pub use auth::{
    now, parse_duration, validate_user_name, AuthError, AuthFile, AuthView, Need, NewToken,
    Principal, Refusal, Scopes, Stamp, Token, User, AUTH_FILE, FIRST_ADMIN, TOKEN_PREFIX,
};
pub use backup::{backup, restore, Summary};
pub use check::Problem;
pub use command::{Actor, Applied, Change, Command, Event, Outcome, ACTIONS};
pub use docs::{crate_folder, CheckedDocs, DOCS_DIR};
pub use downloads::{CrateDownloads, DOWNLOADS_DIR, RECENT_DAYS};
pub use index::{
    index_path_of, Found, GitError, IndexDep, IndexEntry, Listed, Pubtime, SearchLine,
    CRATES_IO_INDEX,
};
pub use names::{canonical, CrateName, Version};
pub use outbox::{dropped_total as outbox_dropped_total, Delivery, Outbox, QUEUE_DIR};
pub use publish::{CheckedCrate, CrateInfo, DepKind, PublishDep, PublishMetadata};
pub use settings::{
    shown_url, Access, CrateRule, HookFormat, HookUrl, MirrorSettings, Settings, Webhook,
    CRATES_IO_SPARSE,
};
pub use store::{create_private, temp_path, SETTINGS_FILE};

use index::git;
use publish::tarball;
use store::{write_atomic, CLONE_CACHE_DIR};

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
fn git_storage_trouble(e: &git2::Error) -> Option<&'static str> {
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

/// An open registry.
#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
    settings: Settings,
    index_dir: PathBuf,
    crates_dir: PathBuf,
    /// Loose objects in the index repository as [`Registry::maintain`] last counted them,
    /// plus an upper bound for each change since; `usize::MAX`: not counted yet. Shared by
    /// clones (one repository).
    loose_estimate: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// The index commits written since the last checkpoint, on a repository kept open (see
    /// [`index::deferred`]). Shared by clones: one writer.
    git: std::sync::Arc<std::sync::Mutex<index::deferred::Writer>>,
    /// Whether the caller runs checkpoints ([`Registry::defer_checkpoints`]); if not, every
    /// command ends with one.
    deferred: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The audit intent of the command running now, for the journal line it writes.
    intent_note: std::sync::Arc<std::sync::Mutex<Option<String>>>,
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
            loose_estimate: std::sync::Arc::new(usize::MAX.into()),
            git: Default::default(),
            deferred: Default::default(),
            intent_note: Default::default(),
        };
        if !reg.index_dir.join(".git").exists() {
            return Err(Error::Settings(format!(
                "index directory {} is not a git repository",
                reg.index_dir.display()
            )));
        }
        Ok(reg)
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
}
