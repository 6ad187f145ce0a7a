//! Static files: index files (read whole; they are small and change), crate files (sent
//! from the open file; they never change) and the files of a version's docs (sent like
//! crate files, but revalidated: an upload may replace them), with validators and
//! conditional requests. A 404 for any asks caches to check again: the file may be
//! published a moment later.
//!
//! Docs are HTML and JavaScript a publisher wrote: every docs response carries
//! [`DOCS_CSP`], which puts the page in a sandbox with an origin of its own (opaque), so its
//! scripts run but cannot read the registry's pages or API with the reader's credentials.
//!
//! Only files inside the served tree are reachable: the path is decoded first and then
//! refused if it holds `..`, `.`, empty segments, backslashes, NUL or other bytes that no
//! index or crate path contains, and no symlink is followed.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::{self, File};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::request::{percent_decode, Head};
use super::response::{Body, FileBody, Response};

/// Index files are small; anything larger is not one of ours.
const MAX_INDEX_FILE: u64 = 16 << 20;

/// Turns a request path (below the tree's mount point) into a safe relative path.
/// `Err` carries the status to answer.
pub fn safe_relative(raw: &str) -> Result<String, u16> {
    let bytes = percent_decode(raw).ok_or(400u16)?;
    let path = String::from_utf8(bytes).map_err(|_| 400u16)?;
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '/');
    if path.is_empty() || !path.chars().all(allowed) {
        return Err(400);
    }
    if path
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(400);
    }
    Ok(path)
}

/// Opens `rel` inside `tree` (through its cache of open files), following no symlink
/// anywhere below the tree's root.
fn open_beneath(tree: &Tree, rel: &str) -> io::Result<(Arc<File>, Stamp)> {
    let now = Instant::now();
    let mut cache = tree.cache.borrow_mut();
    let generation = tree.generation.get();
    if let Some(slot) = cache.get(rel, now) {
        let file = slot.file.clone().expect("a live slot holds its file");
        // No write to the registry since this descriptor was last checked.
        if tree.watched.get() && slot.checked == generation {
            tree.hits.set(tree.hits.get() + 1);
            return Ok((file, slot.stamp));
        }
        let meta = file.metadata()?;
        // Writers replace files by rename: an unlinked inode is a stale entry.
        if meta.nlink() > 0 && meta.is_file() {
            // Rewritten in place (by hand: the registry never does): the new length.
            slot.stamp = Stamp::of(&meta);
            slot.checked = generation;
            tree.hits.set(tree.hits.get() + 1);
            return Ok((file, slot.stamp));
        }
    }
    tree.misses.set(tree.misses.get() + 1);
    match open_uncached(tree, rel) {
        Ok((file, meta)) => {
            let file = Arc::new(file);
            let stamp = Stamp::of(&meta);
            cache.insert(rel, file.clone(), stamp, generation, now);
            Ok((file, stamp))
        }
        Err(e) => {
            cache.remove(rel);
            Err(e)
        }
    }
}

fn open_uncached(tree: &Tree, rel: &str) -> io::Result<(File, fs::Metadata)> {
    if tree.path.as_os_str().is_empty() {
        return Err(io::ErrorKind::NotFound.into()); // a tree that serves nothing
    }
    let file = match &tree.dir {
        Some(dir) => match openat2_beneath(dir, rel) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => open_checked(&tree.path, rel)?,
            other => other?,
        },
        None => open_checked(&tree.path, rel)?,
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::ErrorKind::NotFound.into());
    }
    Ok((file, meta))
}

/// Whether files may be opened with `O_NOATIME`: reads then skip the access-time check and
/// update (a few per cent of an index request's CPU). Only the files' owner (or root) may;
/// after one refusal the server stops asking.
static NOATIME: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// One `openat2` call: the kernel refuses symlinks and escapes (Linux 5.6 and later).
fn openat2_beneath(dir: &File, rel: &str) -> io::Result<File> {
    use std::sync::atomic::Ordering::Relaxed;
    let noatime = NOATIME.load(Relaxed);
    match openat2_flags(dir, rel, if noatime { libc::O_NOATIME } else { 0 }) {
        Err(e) if noatime && e.raw_os_error() == Some(libc::EPERM) => {
            NOATIME.store(false, Relaxed);
            openat2_flags(dir, rel, 0)
        }
        other => other,
    }
}

fn openat2_flags(dir: &File, rel: &str, extra: libc::c_int) -> io::Result<File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let path = std::ffi::CString::new(rel).map_err(|_| io::Error::from(io::ErrorKind::NotFound))?;
    // SAFETY: open_how is plain integers; all-zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW | extra) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS;
    // SAFETY: valid dirfd, NUL-terminated path, and an open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; File takes sole ownership.
    Ok(unsafe { File::from_raw_fd(fd as i32) })
}

/// The portable road: lstat each directory below `base`, then open with O_NOFOLLOW.
fn open_checked(base: &Path, rel: &str) -> io::Result<File> {
    let mut path = base.to_path_buf();
    let segments: Vec<&str> = rel.split('/').collect();
    for seg in &segments[..segments.len() - 1] {
        path.push(seg);
        if !fs::symlink_metadata(&path)?.is_dir() {
            return Err(io::ErrorKind::NotFound.into());
        }
    }
    path.push(segments[segments.len() - 1]);
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
}

/// What a response tells of a file: its length and validators. Read when the file is
/// opened, and again when a kept descriptor is checked (after a noticed write, or a short
/// read): the registry replaces files by rename, so an inode's bytes and times stay as they
/// were unless someone edits the file in place by hand.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    len: u64,
    ino: u64,
    mtime: i64,
    mtime_nsec: u32,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        Stamp {
            len: meta.size(),
            ino: meta.ino(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
        }
    }
}

/// A strong validator from the inode, size and modification time: every write to the
/// registry renames a new file into place, so any change of bytes changes the inode.
fn etag(stamp: &Stamp) -> String {
    format!(
        "\"{:x}-{:x}-{:x}{:09}\"",
        stamp.ino, stamp.len, stamp.mtime, stamp.mtime_nsec
    )
}

fn modified(stamp: &Stamp) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(stamp.mtime.max(0) as u64)
}

/// RFC 9110 13.1.2/13.1.3: If-None-Match wins over If-Modified-Since; a 304 only for a
/// conditional request that matches.
fn not_modified(head: &Head, tag: &str, mtime: SystemTime) -> bool {
    if let Some(inm) = &head.if_none_match {
        return inm.trim() == "*"
            || inm
                .split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == tag);
    }
    if let Some(ims) = &head.if_modified_since {
        if let Ok(since) = httpdate::parse_http_date(ims) {
            return mtime <= since;
        }
    }
    false
}

fn validators(r: Response, tag: &str, mtime: SystemTime) -> Response {
    r.header("ETag", tag.to_owned())
        .header("Last-Modified", httpdate::fmt_http_date(mtime))
}

/// Who may keep copies of served files: any cache (a CDN, a caching proxy) when anyone may
/// read the registry, only the client's own when reading takes a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caches {
    Shared,
    ClientOnly,
}

impl Caches {
    /// Crate files never change once published (a new upload of the same version is
    /// refused; a deleted one is gone for good): a year, without asking again.
    fn for_crate(self) -> &'static str {
        match self {
            Caches::Shared => "public, max-age=31536000, immutable",
            Caches::ClientOnly => "private, max-age=31536000, immutable",
        }
    }

    /// Index files and `config.json` change with every publish and yank: a cache may keep
    /// them but asks first each time, with the ETag (a 304 costs a few bytes).
    fn for_index(self) -> &'static str {
        match self {
            Caches::Shared => "public, no-cache",
            Caches::ClientOnly => "private, no-cache",
        }
    }

    /// A missing index or crate file may be published a moment later: a cache that kept
    /// the 404 would hide it, so it must ask again, like for an index file.
    fn for_missing(self) -> &'static str {
        self.for_index()
    }
}

/// A missing file, a symlink or an escape is a 404. Anything else (out of descriptors, an
/// I/O error) is the server's trouble: a 503 that cargo retries, never a 404 that would tell
/// it the crate does not exist.
fn open_failed(e: io::Error, what: &str, caches: Caches) -> Response {
    let missing = e.kind() == io::ErrorKind::NotFound
        || matches!(
            e.raw_os_error(),
            Some(
                libc::ENOENT
                    | libc::ENOTDIR
                    | libc::ELOOP
                    | libc::EXDEV
                    | libc::EISDIR
                    | libc::ENAMETOOLONG
            )
        );
    if missing {
        return not_found(what, caches);
    }
    error!("error: opening a {what}: {e}");
    Response::error(503, "the server cannot open files right now; try again")
        .header("Retry-After", "1")
}

fn not_found(what: &str, caches: Caches) -> Response {
    Response::error(404, &format!("{what} not found")).header("Cache-Control", caches.for_missing())
}

/// Serves a file of the index tree (`config.json` or a crate's file).
pub fn index_file(index: &Tree, rel: &str, head: &Head, caches: Caches) -> Response {
    if rel.starts_with(".git") || rel.split('/').any(|s| s.starts_with('.')) {
        return not_found("index file", caches);
    }
    let content_type = if rel == "config.json" {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    // A file rewritten in place by hand (the registry only renames new files into place)
    // reads short, or long by the one byte more than its length that is asked for: it is
    // then checked again at once, instead of being served cut or with the old validators.
    for attempt in 0..2 {
        let (file, meta) = match open_beneath(index, rel) {
            Ok(opened) => opened,
            Err(e) => return open_failed(e, "index file", caches),
        };
        if meta.len > MAX_INDEX_FILE {
            return not_found("index file", caches);
        }
        let tag = etag(&meta);
        let mtime = modified(&meta);
        if not_modified(head, &tag, mtime) {
            return validators(Response::new(304), &tag, mtime)
                .header("Cache-Control", caches.for_index());
        }
        let mut bytes = vec![0; meta.len as usize + 1];
        match read_full_at(&file, &mut bytes, meta.len) {
            Ok(n) if n as u64 == meta.len => {
                bytes.truncate(n);
                let r = Response::new(200)
                    .header("Content-Type", content_type)
                    .header("Cache-Control", caches.for_index())
                    .body(Body::Bytes(bytes));
                return validators(r, &tag, mtime);
            }
            Ok(_) if attempt == 0 => index.recheck(rel),
            _ => break,
        }
    }
    Response::error(500, "could not read the index file")
}

/// Reads from the start of `file` into `buf` (one byte longer than the file should be)
/// until at least `len` bytes came or the file ended; how many came. One `pread` when the
/// file is as long as it should be, also when that is 0 (a file that grew must show).
fn read_full_at(file: &File, buf: &mut [u8], len: u64) -> io::Result<usize> {
    let mut n = 0;
    while (n as u64) < len.max(1) {
        match file.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Serves a crate file (the connection sends it with `sendfile` on plain TCP, through mmap
/// windows over TLS).
pub fn crate_file(crates: &Tree, rel: &str, head: &Head, caches: Caches) -> Response {
    if !rel.ends_with(".crate") || rel.split('/').any(|s| s.starts_with('.')) {
        return not_found("crate file", caches);
    }
    let sent = Sent {
        what: "crate file",
        content_type: "application/gzip",
        cache_control: caches.for_crate(),
    };
    send_file(crates, rel, head, caches, sent)
}

/// How [`send_file`] answers for one kind of file.
struct Sent {
    what: &'static str,
    content_type: &'static str,
    cache_control: &'static str,
}

/// A file sent from its open descriptor (`sendfile`, or mmap windows over TLS), with its
/// validators, or a 304.
fn send_file(tree: &Tree, rel: &str, head: &Head, caches: Caches, sent: Sent) -> Response {
    let (file, meta) = match open_beneath(tree, rel) {
        Ok(opened) => opened,
        Err(e) => return open_failed(e, sent.what, caches),
    };
    let tag = etag(&meta);
    let mtime = modified(&meta);
    if not_modified(head, &tag, mtime) {
        return validators(Response::new(304), &tag, mtime)
            .header("Cache-Control", sent.cache_control);
    }
    let body = Body::File(FileBody::new(file, meta.len));
    let r = Response::new(200)
        .header("Content-Type", sent.content_type)
        .header("Cache-Control", sent.cache_control)
        .body(body);
    validators(r, &tag, mtime)
}

/// The crate files served since the counts were last taken, by path below the crates
/// directory: one entry per version downloaded, a counter each, on the event loop (no
/// system call, no allocation but a version's first download of the minute). The loop hands
/// them to the writer once a minute and at shutdown ([`crate::registry::Registry::record_downloads`]).
#[derive(Debug, Default)]
pub struct Downloads(RefCell<HashMap<Box<str>, u64>>);

impl Downloads {
    /// Counts one download of the crate file at `rel`.
    pub fn note(&self, rel: &str) {
        let mut counts = self.0.borrow_mut();
        match counts.get_mut(rel) {
            Some(n) => *n += 1,
            None => {
                counts.insert(rel.into(), 1);
            }
        }
    }

    /// Whether any download waits to be written.
    pub fn any(&self) -> bool {
        !self.0.borrow().is_empty()
    }

    /// The counts so far, which start again from zero.
    pub fn take(&self) -> Vec<(String, u64)> {
        let mut counts = self.0.borrow_mut();
        let taken = counts.drain().map(|(k, n)| (k.into(), n)).collect();
        // A burst of many versions must not keep its table's memory.
        counts.shrink_to(16);
        taken
    }
}

/// The policy of every docs response: a sandbox whose scripts run (rustdoc's search and
/// settings) in an opaque origin, so that a request they make to the registry is
/// cross-origin: no answer is readable, and the session cookie (`SameSite=Strict`) is not
/// sent. Popups (a link opened in a new tab) leave the sandbox, as ordinary pages.
pub const DOCS_CSP: &str = "sandbox allow-scripts allow-popups allow-popups-to-escape-sandbox";

/// Serves a file of a version's docs (`rel` is `{name}/{vers}/{file}`), sandboxed.
pub fn docs_file(docs: &Tree, rel: &str, head: &Head, caches: Caches) -> Response {
    let r = if rel.split('/').any(|s| s.starts_with('.')) {
        not_found("docs file", caches)
    } else {
        let sent = Sent {
            what: "docs file",
            content_type: docs_type(rel),
            // An upload may replace them: kept, but asked for again with the ETag.
            cache_control: caches.for_index(),
        };
        let r = send_file(docs, rel, head, caches, sent);
        // Fonts load in CORS mode, and the sandbox's origin is opaque: rustdoc's stock
        // fonts may be read by any page (a credentialed request gets no such header).
        match docs_type(rel).starts_with("font/") {
            true => r.header("Access-Control-Allow-Origin", "*"),
            false => r,
        }
    };
    // A private registry's docs URLs carry a read ticket (see `super::tickets`): no
    // Referer repeats them.
    r.header("Content-Security-Policy", DOCS_CSP)
        .header("X-Content-Type-Options", "nosniff")
        .header("Referrer-Policy", "no-referrer")
}

/// The content type of a docs file, by its extension (what rustdoc writes, and the images
/// a crate's docs may carry); anything else is served as bytes, never sniffed.
fn docs_type(rel: &str) -> &'static str {
    let ext = rel.rsplit_once('.').map_or("", |(_, e)| e);
    match ext {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "json" => "application/json",
        "txt" | "md" => "text/plain; charset=utf-8",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// A served directory, with a descriptor kept open for `openat2` and a cache of open files.
#[derive(Debug)]
pub struct Tree {
    pub path: PathBuf,
    dir: Option<File>,
    cache: RefCell<OpenFiles>,
    /// Opens served from a kept descriptor, and opens that had to ask the kernel (for
    /// `/metrics`).
    hits: Cell<u64>,
    misses: Cell<u64>,
    /// Counts the registry's writes that were noticed ([`Trees::written`]); a kept
    /// descriptor checked at the current count is used as it is.
    generation: Cell<u32>,
    /// Writes are noticed: without that, every use of a kept descriptor checks it.
    watched: Cell<bool>,
}

impl Tree {
    pub fn new(path: PathBuf, cached_files: usize) -> Tree {
        let dir = match path.as_os_str().is_empty() {
            true => None,
            false => File::open(&path).ok(),
        };
        Tree {
            path,
            dir,
            cache: RefCell::new(OpenFiles::new(cached_files)),
            hits: Cell::new(0),
            misses: Cell::new(0),
            generation: Cell::new(0),
            watched: Cell::new(false),
        }
    }

    /// See [`Trees::written`].
    fn written(&self, watching: bool) {
        self.generation.set(self.generation.get().wrapping_add(1));
        self.watched.set(watching);
    }

    /// Makes the next use of `rel`'s kept descriptor check it (one `fstat`).
    fn recheck(&self, rel: &str) {
        let mut cache = self.cache.borrow_mut();
        if let Some(i) = cache.find(rel) {
            cache.slots[i].checked = self.generation.get().wrapping_sub(1);
        }
    }

    /// (hits, misses) of the open-file cache so far.
    pub fn cache_stats(&self) -> (u64, u64) {
        (self.hits.get(), self.misses.get())
    }
}

/// Where the served trees live, for the router.
#[derive(Debug)]
pub struct Trees {
    pub index: Tree,
    pub crates: Tree,
    /// Each version's docs; serves nothing until [`Trees::with_docs`] says where they are.
    pub docs: Tree,
}

impl Trees {
    /// `cached_files`: open files kept per tree (0: none).
    pub fn new(index_dir: PathBuf, crates_dir: PathBuf, cached_files: usize) -> Trees {
        Trees {
            index: Tree::new(index_dir, cached_files),
            crates: Tree::new(crates_dir, cached_files),
            docs: Tree::new(PathBuf::new(), 0),
        }
    }

    /// The trees, with each version's docs served from `docs_dir`.
    pub fn with_docs(self, docs_dir: PathBuf, cached_files: usize) -> Trees {
        Trees {
            docs: Tree::new(docs_dir, cached_files),
            ..self
        }
    }

    /// The registry was written (or may have been): every kept descriptor is checked again
    /// (one `fstat`) on its next use. `watching`: whether the next writes will be noticed
    /// too; until they are, every use checks.
    pub fn written(&self, watching: bool) {
        self.index.written(watching);
        self.crates.written(watching);
        self.docs.written(watching);
    }
}

/// Open files by relative path, so a request costs no path walk, open or close, and while
/// no write to the registry was noticed since a file was last checked ([`Trees::written`]),
/// no `fstat` either. Contents are never cached: every response reads the file, and an
/// entry whose inode was unlinked (replaced by rename, or deleted) is reopened on use. Entries are
/// also reopened after [`OPEN_FILE_TTL`], in case a directory above them was moved, and
/// closed once unused for [`OPEN_FILE_IDLE`] (a crawler's walk does not keep descriptors,
/// about 200 bytes of kernel memory each, open for good): every lookup checks the next slot
/// in turn, so the sweep costs one comparison and needs no timer.
///
/// When full, a new file takes the slot of one picked at random. Under a working set a
/// little larger than the cache (cargo resolving a large lockfile, a mirror walking the
/// index in order) FIFO and LRU evict each file just before it is asked for again and hit
/// nothing; random replacement keeps most of the hits, and for files asked for
/// independently of each other it hits as often as FIFO.
///
/// Bookkeeping, 64-bit: per entry a 72-byte slot (with the file's length and validators),
/// the path on the heap (a 32-byte malloc chunk for paths up to 24 bytes such as `3/f/foo`
/// or `se/rd/serde`, 48 or 64 for a crate path), the `Arc` around the file (32) and 16
/// bytes plus a control byte in the index, which is between 7/16 and 7/8 full: about 170
/// to 230 bytes per file, nothing for files never asked for. Slots grow by a quarter at a
/// time, never past the cap.
#[derive(Debug)]
struct OpenFiles {
    /// Live slots hold a file and are in `index`; free ones hold none and are in `free`.
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// A path's hash to its slot. Keyed by the hash, so each path is stored once (in its
    /// slot, which settles a collision).
    index: HashMap<u64, u32, BuildHasherDefault<KeyIsHash>>,
    keys: RandomState,
    cap: usize,
    /// Origin of the slots' times, kept in whole seconds.
    epoch: Instant,
    /// The next slot the idle sweep looks at.
    sweep: usize,
    /// xorshift state choosing the slot to replace.
    rng: u64,
}

const _: () = assert!(std::mem::size_of::<Slot>() <= 72);

#[derive(Debug)]
struct Slot {
    path: Box<str>,
    file: Option<Arc<File>>,
    /// Seconds after the cache's epoch the file was opened, and last asked for.
    opened: u32,
    used: u32,
    /// The tree's write count when the file was last known to be the one at `path`.
    checked: u32,
    stamp: Stamp,
}

/// The index's keys are already SipHash values; hashing them again would only cost time.
#[derive(Debug, Default)]
struct KeyIsHash(u64);

impl Hasher for KeyIsHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// How long an open file is trusted without a reopen, in seconds.
const OPEN_FILE_TTL: u32 = 10;
/// How long an unused file stays open, in seconds (nginx's `open_file_cache inactive`).
const OPEN_FILE_IDLE: u32 = 60;

impl OpenFiles {
    fn new(cap: usize) -> OpenFiles {
        OpenFiles {
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::default(),
            keys: RandomState::new(),
            cap: cap.min(u32::MAX as usize),
            epoch: Instant::now(),
            sweep: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    fn secs(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.epoch).as_secs() as u32
    }

    /// The live slot holding `rel`, if any.
    fn find(&self, rel: &str) -> Option<usize> {
        let i = *self.index.get(&self.keys.hash_one(rel))? as usize;
        let slot = &self.slots[i];
        (slot.file.is_some() && *slot.path == *rel).then_some(i)
    }

    /// The live slot of `rel`, unless opened more than [`OPEN_FILE_TTL`] ago.
    fn get(&mut self, rel: &str, now: Instant) -> Option<&mut Slot> {
        let now = self.secs(now);
        self.sweep_one(now);
        let i = self.find(rel)?;
        let slot = &mut self.slots[i];
        if now.saturating_sub(slot.opened) > OPEN_FILE_TTL {
            return None;
        }
        slot.used = now;
        Some(slot)
    }

    /// Closes the next slot's file if nobody asked for it lately.
    fn sweep_one(&mut self, now: u32) {
        if self.slots.is_empty() {
            return;
        }
        self.sweep = (self.sweep + 1) % self.slots.len();
        let slot = &self.slots[self.sweep];
        if slot.file.is_some() && now.saturating_sub(slot.used) > OPEN_FILE_IDLE {
            self.free_slot(self.sweep);
        }
    }

    fn free_slot(&mut self, i: usize) {
        self.unindex(i);
        self.slots[i].file = None;
        self.free.push(i as u32);
    }

    fn unindex(&mut self, i: usize) {
        let h = self.keys.hash_one(&*self.slots[i].path);
        if self.index.get(&h) == Some(&(i as u32)) {
            self.index.remove(&h);
        }
    }

    /// Closes the kept descriptor of `rel` (the file is gone).
    fn remove(&mut self, rel: &str) {
        if let Some(i) = self.find(rel) {
            self.free_slot(i);
        }
    }

    fn insert(&mut self, rel: &str, file: Arc<File>, stamp: Stamp, checked: u32, now: Instant) {
        if self.cap == 0 {
            return;
        }
        let now = self.secs(now);
        let slot = Slot {
            path: rel.into(),
            file: Some(file),
            opened: now,
            used: now,
            checked,
            stamp,
        };
        // A reopened file keeps its slot.
        if let Some(i) = self.find(rel) {
            self.slots[i] = slot;
            return;
        }
        let i = if let Some(i) = self.free.pop() {
            self.slots[i as usize] = slot;
            i as usize
        } else if self.slots.len() < self.cap {
            if self.slots.len() == self.slots.capacity() {
                let room = self.cap - self.slots.len();
                self.slots
                    .reserve_exact((self.slots.len() / 4).max(16).min(room));
            }
            self.slots.push(slot);
            self.slots.len() - 1
        } else {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let i = (self.rng % self.cap as u64) as usize;
            self.unindex(i);
            self.slots[i] = slot;
            i
        };
        self.index.insert(self.keys.hash_one(rel), i as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_forms_are_refused() {
        for bad in [
            "../x",
            "a/../b",
            "%2e%2e/x",
            "%2E%2E%2Fx",
            "a//b",
            "a\\b",
            "a%00b",
            "./a",
            "a/.",
            "",
            "a%2",
            "a b",
        ] {
            assert!(safe_relative(bad).is_err(), "{bad}");
        }
        assert_eq!(safe_relative("3/f/foo").unwrap(), "3/f/foo");
        assert_eq!(
            safe_relative("foo/foo-1.0.0+meta.crate").unwrap(),
            "foo/foo-1.0.0+meta.crate"
        );
        assert_eq!(
            safe_relative("foo/foo-1.0.0%2Bmeta.crate").unwrap(),
            "foo/foo-1.0.0+meta.crate"
        );
    }

    #[test]
    fn open_errors_are_404_only_when_the_file_is_not_there() {
        for errno in [libc::ENOENT, libc::ENOTDIR, libc::ELOOP, libc::EXDEV] {
            assert_eq!(
                open_failed(io::Error::from_raw_os_error(errno), "x", Caches::Shared).status,
                404,
                "{errno}"
            );
        }
        for errno in [libc::EMFILE, libc::ENFILE, libc::EIO, libc::EACCES] {
            let r = open_failed(io::Error::from_raw_os_error(errno), "x", Caches::Shared);
            assert_eq!(r.status, 503, "{errno}");
            assert!(r
                .headers
                .iter()
                .any(|(n, v)| *n == "Retry-After" && v == "1"));
        }
    }

    #[test]
    fn conditional_matching() {
        let mut h = crate::http::request::parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 100)
            .unwrap()
            .unwrap();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(!not_modified(&h, "\"a\"", t), "unconditional never 304");
        h.if_none_match = Some("\"b\", W/\"a\"".into());
        assert!(not_modified(&h, "\"a\"", t));
        h.if_none_match = Some("\"b\"".into());
        h.if_modified_since = Some(httpdate::fmt_http_date(t));
        assert!(!not_modified(&h, "\"a\"", t), "If-None-Match wins");
        h.if_none_match = None;
        assert!(not_modified(&h, "\"a\"", t));
        assert!(!not_modified(&h, "\"a\"", t + Duration::from_secs(1)));
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    fn get(tree: &Tree, rel: &str) -> (u16, Vec<u8>) {
        let h = crate::http::request::parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 100)
            .unwrap()
            .unwrap();
        let r = index_file(tree, rel, &h, Caches::Shared);
        let body = match r.body {
            Body::Bytes(b) => b,
            _ => Vec::new(),
        };
        (r.status, body)
    }

    #[test]
    fn cached_files_never_serve_stale_bytes() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("3/f")).unwrap();
        let file = dir.path().join("3/f/foo");
        fs::write(&file, "one\n").unwrap();
        let tree = Tree::new(dir.path().to_owned(), 4);
        assert_eq!(get(&tree, "3/f/foo"), (200, b"one\n".to_vec()));
        assert_eq!(
            get(&tree, "3/f/foo"),
            (200, b"one\n".to_vec()),
            "served from the cached descriptor"
        );
        // Replaced by rename, as the registry writes.
        let tmp = dir.path().join("3/f/.tmp");
        fs::write(&tmp, "two, longer\n").unwrap();
        fs::rename(&tmp, &file).unwrap();
        assert_eq!(get(&tree, "3/f/foo"), (200, b"two, longer\n".to_vec()));
        // Rewritten in place (an editor): the fresh length and bytes are read.
        fs::write(&file, "3\n").unwrap();
        assert_eq!(get(&tree, "3/f/foo"), (200, b"3\n".to_vec()));
        fs::remove_file(&file).unwrap();
        assert_eq!(get(&tree, "3/f/foo").0, 404);
        // More files than the cache holds still all work.
        for i in 0..10 {
            fs::write(dir.path().join(format!("3/f/f{i}")), format!("{i}")).unwrap();
        }
        for round in 0..2 {
            for i in 0..10 {
                assert_eq!(
                    get(&tree, &format!("3/f/f{i}")),
                    (200, format!("{i}").into_bytes()),
                    "round {round}"
                );
            }
        }
        let cache = tree.cache.borrow();
        assert!(cache.slots.len() <= 4 && cache.index.len() <= 4);
    }

    /// Once writes are noticed, a kept descriptor is used without a check until the next
    /// write; a file changed in place by hand is still never served cut.
    #[test]
    fn noticed_writes_decide_when_kept_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("foo");
        let replace = |text: &str| {
            let tmp = dir.path().join(".tmp");
            fs::write(&tmp, text).unwrap();
            fs::rename(&tmp, &file).unwrap();
        };
        fs::write(&file, "one\n").unwrap();
        let tree = Tree::new(dir.path().to_owned(), 4);
        tree.written(true);
        assert_eq!(get(&tree, "foo"), (200, b"one\n".to_vec()));
        // A rename nobody announced: the kept descriptor is trusted (no fstat was made).
        replace("two\n");
        assert_eq!(get(&tree, "foo"), (200, b"one\n".to_vec()));
        // The writer released the lock: checked again, the new file is opened.
        tree.written(true);
        assert_eq!(get(&tree, "foo"), (200, b"two\n".to_vec()));
        // Rewritten in place, longer or shorter: read again at once, never cut.
        fs::write(&file, "three, longer\n").unwrap();
        assert_eq!(get(&tree, "foo"), (200, b"three, longer\n".to_vec()));
        fs::write(&file, "4\n").unwrap();
        assert_eq!(get(&tree, "foo"), (200, b"4\n".to_vec()));
        // Writes no longer noticed (the watch was lost): every use checks.
        tree.written(false);
        replace("five\n");
        assert_eq!(get(&tree, "foo"), (200, b"five\n".to_vec()));
        replace("six\n");
        assert_eq!(get(&tree, "foo"), (200, b"six\n".to_vec()));
        let (hits, misses) = tree.cache_stats();
        assert_eq!((hits, misses), (5, 4), "opened for one, two, five and six");
    }

    /// A kept file that was empty when opened read nothing (its length, 0, was all there
    /// was to read), so writing into it in place by hand went unseen: served empty.
    #[test]
    fn a_kept_empty_file_written_in_place_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("foo");
        fs::write(&file, "").unwrap();
        let tree = Tree::new(dir.path().to_owned(), 4);
        tree.written(true);
        assert_eq!(get(&tree, "foo"), (200, Vec::new()));
        fs::write(&file, "now there is a line\n").unwrap();
        assert_eq!(get(&tree, "foo"), (200, b"now there is a line\n".to_vec()));
    }

    /// Serving reads files without touching their access time (`O_NOATIME`, allowed here:
    /// the tests run as the files' owner).
    #[test]
    fn serving_leaves_access_times_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("foo");
        fs::write(&path, "one\n").unwrap();
        // An access time older than the modification time: with `relatime` (the default)
        // any plain read would move it.
        let old = SystemTime::now() - Duration::from_secs(3600);
        let f = File::options().write(true).open(&path).unwrap();
        f.set_times(fs::FileTimes::new().set_accessed(old)).unwrap();
        drop(f);
        let before = fs::metadata(&path).unwrap().accessed().unwrap();
        let tree = Tree::new(dir.path().to_owned(), 4);
        assert_eq!(get(&tree, "foo"), (200, b"one\n".to_vec()));
        assert_eq!(get(&tree, "foo"), (200, b"one\n".to_vec()));
        assert_eq!(fs::metadata(&path).unwrap().accessed().unwrap(), before);
    }

    /// FIFO (the cache before) hit nothing once the files asked for in turn outnumbered it.
    #[test]
    fn a_working_set_larger_than_the_cache_still_hits() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree::new(dir.path().to_owned(), 100);
        for i in 0..120 {
            fs::write(dir.path().join(format!("f{i}")), format!("{i}")).unwrap();
        }
        for _round in 0..20 {
            for i in 0..120 {
                assert_eq!(get(&tree, &format!("f{i}")).0, 200);
            }
        }
        let (hits, misses) = tree.cache_stats();
        assert_eq!(hits + misses, 2400);
        assert!(hits > 1200, "{hits} hits, {misses} misses");
        let cache = tree.cache.borrow();
        assert_eq!(cache.slots.len(), 100);
        assert!(cache.index.len() <= 100);
        assert_eq!(cache.slots.iter().filter(|s| s.file.is_some()).count(), 100);
    }

    #[test]
    fn a_file_gone_from_the_tree_closes_its_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree::new(dir.path().to_owned(), 8);
        fs::write(dir.path().join("a"), "a").unwrap();
        assert_eq!(get(&tree, "a").0, 200);
        fs::remove_file(dir.path().join("a")).unwrap();
        assert_eq!(get(&tree, "a").0, 404);
        assert!(tree.cache.borrow().slots[0].file.is_none());
        assert!(tree.cache.borrow().index.is_empty());
        fs::write(dir.path().join("a"), "back").unwrap();
        assert_eq!(get(&tree, "a"), (200, b"back".to_vec()));
        assert_eq!(tree.cache.borrow().slots.len(), 1, "the slot is reused");
    }

    #[test]
    fn files_nobody_asks_for_are_closed() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree::new(dir.path().to_owned(), 100);
        for i in 0..10 {
            fs::write(dir.path().join(format!("f{i}")), "x").unwrap();
            assert_eq!(get(&tree, &format!("f{i}")).0, 200);
        }
        fs::write(dir.path().join("hot"), "x").unwrap();
        let mut cache = tree.cache.borrow_mut();
        let open = |c: &OpenFiles| c.slots.iter().filter(|s| s.file.is_some()).count();
        assert_eq!(open(&cache), 10);
        // Lookups for one file a minute and more later sweep the others out.
        let later = Instant::now() + Duration::from_secs(u64::from(OPEN_FILE_IDLE) + 2);
        for _ in 0..10 {
            assert!(cache.get("hot", later).is_none());
        }
        assert_eq!(open(&cache), 0);
        assert!(cache.index.is_empty());
        assert_eq!(cache.free.len(), 10);
        // Freed slots are taken before the slot vector grows.
        let f = Arc::new(File::open(dir.path().join("hot")).unwrap());
        let stamp = Stamp::of(&f.metadata().unwrap());
        cache.insert("hot", f, stamp, 0, later);
        assert_eq!((cache.slots.len(), cache.free.len()), (10, 9));
        assert!(cache.get("hot", later).is_some());
    }

    #[test]
    fn downloads_are_counted_per_file_and_start_again_once_taken() {
        let d = Downloads::default();
        assert!(!d.any());
        for rel in ["a/a-1.0.0.crate", "a/a-1.0.0.crate", "b/b-2.0.0.crate"] {
            d.note(rel);
        }
        assert!(d.any());
        let mut taken = d.take();
        taken.sort();
        assert_eq!(
            taken,
            [
                ("a/a-1.0.0.crate".to_owned(), 2),
                ("b/b-2.0.0.crate".to_owned(), 1)
            ]
        );
        assert!(!d.any() && d.take().is_empty());
    }

    #[test]
    fn a_404_asks_caches_to_check_again() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree::new(dir.path().to_owned(), 8);
        let h = crate::http::request::parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 100)
            .unwrap()
            .unwrap();
        for (caches, want) in [
            (Caches::Shared, "public, no-cache"),
            (Caches::ClientOnly, "private, no-cache"),
        ] {
            for r in [
                index_file(&tree, "3/n/nope", &h, caches),
                crate_file(&tree, "nope/nope-1.0.0.crate", &h, caches),
            ] {
                assert_eq!(r.status, 404);
                assert!(
                    r.headers
                        .iter()
                        .any(|(n, v)| *n == "Cache-Control" && v == want),
                    "{:?}",
                    r.headers
                );
            }
        }
    }
}
