//! Checking a `.crate` file: a gzip'd tar whose entries all lie under `{name}-{vers}/`, holding
//! only files and directories and exactly one `Cargo.toml`.
//!
//! The check streams: the tarball is read once, hashed on the way, and never unpacked into
//! memory; only the manifest (capped) is kept. Everything an archive can make us hold or
//! inflate is bounded: the compressed bytes by `max_size`, the whole inflated stream (headers,
//! extension entries, data and whatever follows the end-of-archive blocks) by `max_unpacked`,
//! and the extension entries (GNU long names and links, PAX headers) by small fixed caps, since
//! they are read into memory to be applied to the entry they describe.
//!
//! Extension entries are interpreted here rather than by the tar crate, the way the tar crate
//! does when cargo unpacks the file (a GNU long name before a PAX `path`, one of each per
//! entry), and anything the two readings could disagree on (duplicates, malformed PAX records,
//! a PAX `size` other than the header's, data hidden after the end of the archive or in a
//! second gzip member) is refused. So is what other tar readers would apply and cargo's
//! ignores: every name that can place an entry is checked like its path (the header's own,
//! a GNU long name or link, a PAX `path` or `linkpath`, which must agree with a long name),
//! and PAX global headers (`g`, whose `path` other readers apply to every entry after it) and
//! GNU sparse records (`GNU.sparse.*`, which rename and resize an entry) are refused; cargo
//! writes neither.

use std::cell::Cell;
use std::io::{self, BufRead, Read};

use sha2::{Digest, Sha256};

/// The largest `Cargo.toml` we keep in memory.
const MAX_MANIFEST: u64 = 1 << 20;
/// The longest GNU long name or long link: Linux's `PATH_MAX`, plus its NUL.
pub const MAX_LONG_NAME: u64 = 4096 + 1;
/// The largest PAX extended header (`x`).
pub const MAX_PAX_HEADER: u64 = 64 * 1024;
/// The longest entry path, and the longest component of one (`PATH_MAX`, `NAME_MAX`): a longer
/// one cannot be unpacked on the file systems cargo runs on.
const MAX_PATH: usize = 4096;
const MAX_COMPONENT: usize = 255;
/// The zero padding allowed after the end-of-archive block: tar writers fill their last
/// record (10 KiB by default, 1 MiB for a blocking factor of 2048).
const MAX_PADDING: u64 = 1 << 20;
/// How much of a name an error message repeats.
const SHOWN_CHARS: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum TarballError {
    #[error("crate file is larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("crate file unpacks to more than the limit of {0} bytes")]
    UnpackedTooLarge(u64),
    #[error("crate file is not a valid gzip'd tar archive: {0}")]
    Corrupt(String),
    #[error("crate file entry `{0}` is not a plain file or directory")]
    BadEntryType(String),
    #[error("crate file entry `{0}` has an unsafe path")]
    UnsafePath(String),
    #[error("crate file entry `{0}` has a path longer than {MAX_PATH} bytes or a path component longer than {MAX_COMPONENT} bytes")]
    PathTooLong(String),
    #[error("crate file entry `{0}` is not under `{1}/`")]
    WrongPrefix(String, String),
    #[error("crate file has no `Cargo.toml` at `{0}/Cargo.toml`")]
    NoManifest(String),
    #[error("crate file has more than one manifest (`{0}`)")]
    ManyManifests(String),
    #[error("crate file has two different `{0}` entries (cargo would build with the last, this registry reads the first)")]
    DifferingManifests(String),
    #[error("crate file's Cargo.toml is larger than {MAX_MANIFEST} bytes")]
    ManifestTooLarge,
    #[error("crate file's Cargo.toml is not UTF-8")]
    ManifestNotUtf8,
    #[error("crate file has a {kind} entry of {size} bytes, more than the limit of {limit} bytes")]
    ExtensionTooLarge {
        kind: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("crate file has a malformed tar extension entry: {0}")]
    BadExtension(String),
    #[error("crate file has {0}, which cargo never writes and other tar readers would apply")]
    ForeignExtension(&'static str),
    #[error("crate file has data after the end of its tar archive (at most {MAX_PADDING} zero bytes may follow it)")]
    DataAfterEnd,
    #[error(
        "crate file has data after the end of its gzip stream (a crate file is one gzip member)"
    )]
    TrailingData,
    #[error("crate file is empty")]
    Empty,
}

/// What the check learned.
#[derive(Debug)]
pub struct Inspected {
    /// The single top-level directory, which must be `{name}-{vers}`.
    pub top_dir: String,
    /// The text of `{top_dir}/Cargo.toml`.
    pub manifest: String,
    /// Lowercase hex SHA-256 of the compressed bytes.
    pub cksum: String,
    /// Compressed size in bytes.
    #[allow(dead_code)] // read by the tests only
    pub size: u64,
}

/// Limits on a crate file.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_size: u64,
    pub max_unpacked: u64,
}

/// Passes bytes through while hashing and counting them, refusing more than `limit`.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    count: u64,
    limit: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.limit {
            return Err(io::Error::other(LimitHit));
        }
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Counts the inflated stream, refusing more than `limit`. The count lives outside so that it
/// can be read after an error the tar or gzip reader wrapped.
struct Counting<'c, R> {
    inner: R,
    count: &'c Cell<u64>,
    limit: u64,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        if self.count.get() > self.limit {
            return Err(io::Error::other(LimitHit));
        }
        Ok(n)
    }
}

#[derive(Debug)]
struct LimitHit;
impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("size limit")
    }
}
impl std::error::Error for LimitHit {}

/// A name from an archive as an error message may repeat it (see [`names::shown_at_most`]):
/// at most [`SHOWN_CHARS`] characters, escaped.
pub fn shown(bytes: &[u8]) -> String {
    crate::registry::names::shown_at_most(&String::from_utf8_lossy(bytes), SHOWN_CHARS)
}

/// Reads a whole crate file from `reader`, checking its structure; the caller compares
/// `top_dir` with the name and version it expects.
pub fn inspect<R: Read>(reader: R, limits: Limits) -> Result<Inspected, TarballError> {
    let mut krate = CrateVisit::default();
    let walked = walk_archive(reader, limits, &mut krate)?;
    let top = krate.top.ok_or(TarballError::Empty)?;
    let manifest = krate
        .manifest
        .ok_or_else(|| TarballError::NoManifest(top.clone()))?;
    Ok(Inspected {
        top_dir: top,
        manifest,
        cksum: walked.cksum,
        size: walked.size,
    })
}

/// What a walk does with each entry once every name that places it was checked: a crate
/// file keeps its manifest ([`inspect`]), a docs archive writes its files.
pub(crate) trait Visit {
    /// One plain file or directory: `path` is checked (relative, no `..`, bounded),
    /// `raw` is it as the archive spells it (for messages), `data` the file's bytes.
    fn entry(
        &mut self,
        path: &str,
        raw: &[u8],
        dir: bool,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<(), TarballError>;
}

/// What [`walk_archive`] learned of the compressed bytes.
#[derive(Debug)]
pub(crate) struct Walked {
    /// Lowercase hex SHA-256 of the compressed bytes.
    pub cksum: String,
    pub size: u64,
}

/// Reads a whole gzip'd tar from `reader` under the rules of the module docs (one gzip
/// member, only plain files and directories, every name checked, everything bounded by
/// `limits`), handing each entry to `visit`.
pub(crate) fn walk_archive<R: Read>(
    reader: R,
    limits: Limits,
    visit: &mut dyn Visit,
) -> Result<Walked, TarballError> {
    let mut hashing = Hashing {
        inner: reader,
        hash: Sha256::new(),
        count: 0,
        limit: limits.max_size,
    };
    let inflated = Cell::new(0);
    match walk(&mut hashing, limits, &inflated, visit) {
        // A limit error may arrive wrapped by the tar or gzip reader: trust the counts.
        Err(_) if hashing.count > limits.max_size => {
            return Err(TarballError::TooLarge(limits.max_size))
        }
        Err(_) if inflated.get() > limits.max_unpacked => {
            return Err(TarballError::UnpackedTooLarge(limits.max_unpacked))
        }
        other => other?,
    };
    if hashing.count == 0 {
        return Err(TarballError::Empty);
    }
    Ok(Walked {
        cksum: hex(&hashing.hash.finalize()),
        size: hashing.count,
    })
}

fn corrupt(e: io::Error) -> TarballError {
    // The tar crate's messages may quote a header's path.
    TarballError::Corrupt(shown(e.to_string().as_bytes()))
}

fn walk<R: Read>(
    hashing: &mut Hashing<R>,
    limits: Limits,
    inflated: &Cell<u64>,
    visit: &mut dyn Visit,
) -> Result<(), TarballError> {
    // A buffered reader we keep hold of, so that bytes after the gzip member stay visible.
    let mut compressed = io::BufReader::with_capacity(32 * 1024, &mut *hashing);
    let gz = flate2::bufread::GzDecoder::new(&mut compressed);
    let mut archive = tar::Archive::new(Counting {
        inner: gz,
        count: inflated,
        limit: limits.max_unpacked,
    });
    let mut state = Walk::default();
    for entry in archive.entries().map_err(corrupt)?.raw(true) {
        state.entry(entry.map_err(corrupt)?, limits, visit)?;
    }
    if !state.pending.is_empty() {
        return Err(TarballError::BadExtension(
            "an extension entry is not followed by the entry it describes".into(),
        ));
    }
    // The tar reader stops at the first end-of-archive block. What follows must be the zero
    // padding writers add; reading it to the end also checks gzip's CRC and length trailer.
    let mut rest = archive.into_inner();
    let mut buf = [0u8; 8 * 1024];
    let mut padding = 0u64;
    loop {
        let n = rest.read(&mut buf).map_err(corrupt)?;
        if n == 0 {
            break;
        }
        padding += n as u64;
        if padding > MAX_PADDING || buf[..n].iter().any(|b| *b != 0) {
            return Err(TarballError::DataAfterEnd);
        }
    }
    drop(rest);
    // cargo's gzip reader stops after the first member: a second one would be hashed and
    // stored but never unpacked, so a crate file is exactly one member.
    if !compressed.fill_buf().map_err(corrupt)?.is_empty() {
        return Err(TarballError::TrailingData);
    }
    Ok(())
}

/// Extension entries seen since the last real entry, to be applied to the next one.
#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: bool,
    pax: Option<Pax>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.long_name.is_none() && !self.long_link && self.pax.is_none()
    }
}

/// The PAX keys that change how an entry is read.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    size: Option<u64>,
}

#[derive(Default)]
struct Walk {
    /// Sum of the entries' declared sizes: refuses a huge entry before its data is inflated.
    declared: u64,
    pending: Pending,
}

impl Walk {
    fn entry<R: Read>(
        &mut self,
        mut entry: tar::Entry<'_, R>,
        limits: Limits,
        visit: &mut dyn Visit,
    ) -> Result<(), TarballError> {
        let size = entry.size();
        self.declared = self.declared.saturating_add(size);
        if self.declared > limits.max_unpacked {
            return Err(TarballError::UnpackedTooLarge(limits.max_unpacked));
        }
        let header = entry.header();
        let kind = header.entry_type();
        // A reader that knows no extension unpacks its entry as a file of that name, and any
        // entry under its own name.
        check_header_name(&header.path_bytes())?;
        // The tar crate only honours extension entries in a ustar or GNU header; in an old
        // header they are entries of their own, refused below as neither file nor directory.
        let recognized = header.as_gnu().is_some() || header.as_ustar().is_some();
        if recognized && (kind.is_gnu_longname() || kind.is_gnu_longlink()) {
            return self.long_name_or_link(&mut entry, kind.is_gnu_longname());
        }
        if recognized && kind.is_pax_local_extensions() {
            let data = read_extension(&mut entry, "PAX header", MAX_PAX_HEADER)?;
            let pax = parse_pax(&data)?;
            if self.pending.pax.replace(pax).is_some() {
                return Err(TarballError::BadExtension(
                    "two PAX headers describe one entry".into(),
                ));
            }
            return Ok(());
        }
        if kind.is_pax_global_extensions() {
            // Refused unread, whatever its header: cargo's tar reader skips it, other readers
            // apply it to every entry after it.
            return Err(TarballError::ForeignExtension(
                "a PAX global header (`g` entry)",
            ));
        }
        let pending = std::mem::take(&mut self.pending);
        let pax = pending.pax.unwrap_or_default();
        if let Some(pax_size) = pax.size {
            // The tar crate would read `pax_size` bytes where we stepped over `size`.
            if pax_size != size {
                return Err(TarballError::BadExtension(format!(
                    "PAX size {pax_size} differs from the header's size {size}"
                )));
            }
        }
        let path_bytes = match (pending.long_name, pax.path) {
            (Some(name), pax_path) => long_name_path(name, pax_path)?,
            (None, Some(path)) => path,
            (None, None) => entry.path_bytes().into_owned(),
        };
        let path = check_path(&path_bytes)?;
        if !(kind.is_file() || kind.is_dir()) {
            return Err(TarballError::BadEntryType(shown(&path_bytes)));
        }
        visit.entry(path, &path_bytes, kind.is_dir(), size, &mut entry)
    }

    /// A GNU long name (`long_name`) or long link, applied to the next entry.
    fn long_name_or_link<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        long_name: bool,
    ) -> Result<(), TarballError> {
        let what = if long_name {
            "GNU long-name"
        } else {
            "GNU long-link"
        };
        let data = read_extension(entry, what, MAX_LONG_NAME)?;
        if !long_name {
            check_path(without_nul(&data))?; // a long name is checked as the entry's path
        }
        let taken = if long_name {
            self.pending.long_name.replace(data).is_some()
        } else {
            std::mem::replace(&mut self.pending.long_link, true)
        };
        if taken {
            return Err(TarballError::BadExtension(format!(
                "two {what} entries describe one entry"
            )));
        }
        Ok(())
    }
}

/// A crate file's entries: all under one top directory, with one `Cargo.toml` kept.
#[derive(Default)]
struct CrateVisit {
    top: Option<String>,
    manifest: Option<String>,
}

impl Visit for CrateVisit {
    fn entry(
        &mut self,
        path: &str,
        raw: &[u8],
        dir: bool,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<(), TarballError> {
        let mut parts = path.split('/').filter(|p| !p.is_empty() && *p != ".");
        let first = parts
            .next()
            .ok_or_else(|| TarballError::UnsafePath(shown(raw)))?;
        match &self.top {
            None => self.top = Some(first.to_owned()),
            Some(t) if t != first => return Err(TarballError::WrongPrefix(shown(raw), t.clone())),
            Some(_) => {}
        }
        let rest: Vec<&str> = parts.collect();
        if dir || rest.len() != 1 || !rest[0].eq_ignore_ascii_case("Cargo.toml") {
            return Ok(());
        }
        if rest[0] != "Cargo.toml" {
            return Err(TarballError::ManyManifests(shown(raw)));
        }
        if size > MAX_MANIFEST {
            return Err(TarballError::ManifestTooLarge);
        }
        if let Some(first) = &self.manifest {
            // Old cargo wrote `Cargo.toml` twice, and crates.io (which keys manifests by
            // path) serves those crates. A copy with other bytes is refused: this check
            // reads the first copy, while a tar extractor (cargo's too) and crates.io keep
            // the last, so the index would describe a manifest cargo never builds with.
            if !same_bytes(data, first.as_bytes())? {
                return Err(TarballError::DifferingManifests(shown(raw)));
            }
            return Ok(());
        }
        let mut text = Vec::new();
        // The reader already stops at the header's size; the cap holds whatever it says.
        data.take(MAX_MANIFEST)
            .read_to_end(&mut text)
            .map_err(corrupt)?;
        let text = String::from_utf8(text).map_err(|_| TarballError::ManifestNotUtf8)?;
        self.manifest = Some(text);
        Ok(())
    }
}

/// Whether an entry's data is exactly `want`, read in small pieces (never a second copy).
fn same_bytes(entry: &mut dyn Read, want: &[u8]) -> Result<bool, TarballError> {
    let mut buf = [0u8; 8 * 1024];
    let mut at = 0;
    loop {
        let n = entry.read(&mut buf).map_err(corrupt)?;
        if n == 0 {
            return Ok(at == want.len());
        }
        if want.get(at..at + n) != Some(&buf[..n]) {
            return Ok(false);
        }
        at += n;
    }
}

/// Checks an entry's path: UTF-8, relative, no `..`, `\`, NUL or control characters (the
/// top directory is repeated in messages, and no file system cargo unpacks to wants them), and
/// short enough to unpack.
fn check_path(bytes: &[u8]) -> Result<&str, TarballError> {
    let path = std::str::from_utf8(bytes).map_err(|_| TarballError::UnsafePath(shown(bytes)))?;
    if path.starts_with('/')
        || path.contains('\\')
        || path.chars().any(char::is_control)
        || path.split('/').any(|p| p == "..")
    {
        return Err(TarballError::UnsafePath(shown(bytes)));
    }
    if path.len() > MAX_PATH || path.split('/').any(|p| p.len() > MAX_COMPONENT) {
        return Err(TarballError::PathTooLong(shown(bytes)));
    }
    Ok(path)
}

/// A GNU long name or link as its path: without the NUL writers end it with.
fn without_nul(data: &[u8]) -> &[u8] {
    data.strip_suffix(b"\0").unwrap_or(data)
}

/// The path of an entry with a GNU long name: the name, which a PAX `path` for the same entry
/// must equal (the tar crate takes the long name, other readers the PAX path).
fn long_name_path(name: Vec<u8>, pax_path: Option<Vec<u8>>) -> Result<Vec<u8>, TarballError> {
    let name = without_nul(&name).to_vec();
    if pax_path.is_some_and(|p| p != name) {
        return Err(TarballError::BadExtension(
            "a GNU long name and a PAX path name one entry differently".into(),
        ));
    }
    Ok(name)
}

/// Checks the name in an entry's own header (an extension entry's too) as a reader that knows
/// no extension would unpack it: never absolute, never with a `..` component. Other checks are
/// left to [`check_path`] on the entry's real path: a long path's header holds its first 100
/// bytes, which may end inside a character.
fn check_header_name(bytes: &[u8]) -> Result<(), TarballError> {
    if bytes.starts_with(b"/") || bytes.split(|b| *b == b'/').any(|p| p == b"..") {
        return Err(TarballError::UnsafePath(shown(bytes)));
    }
    Ok(())
}

/// Reads an extension entry's data whole, after checking its declared size against `limit`.
fn read_extension<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    kind: &'static str,
    limit: u64,
) -> Result<Vec<u8>, TarballError> {
    let size = entry.size();
    if size > limit {
        return Err(TarballError::ExtensionTooLarge { kind, size, limit });
    }
    let mut data = Vec::with_capacity(size as usize);
    entry.take(limit).read_to_end(&mut data).map_err(corrupt)?;
    if data.len() as u64 != size {
        return Err(TarballError::Corrupt(format!(
            "the archive ends inside a {kind} entry"
        )));
    }
    Ok(data)
}

/// What [`TarballError::ForeignExtension`] says of PAX records of a GNU sparse file.
const GNU_SPARSE: &str =
    "GNU sparse records (PAX `GNU.sparse.*`, which rename and resize an entry)";

/// Parses PAX records (`"<len> <key>=<value>\n"`, `len` counting the whole record). Strict:
/// every record well formed and newline-free inside, `path`, `linkpath` and `size` at most
/// once, so that the tar crate (which splits on newlines and takes the first match) reads the
/// same values; a `linkpath` is checked as a path, and GNU sparse records are refused.
fn parse_pax(data: &[u8]) -> Result<Pax, TarballError> {
    let bad = |why: &str| TarballError::BadExtension(format!("PAX header: {why}"));
    let mut pax = Pax::default();
    let mut linkpath = false;
    let mut rest = data;
    while !rest.is_empty() {
        let space = rest
            .iter()
            .take(20)
            .position(|b| *b == b' ')
            .ok_or_else(|| bad("a record does not start with its length"))?;
        let len = decimal(&rest[..space])
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| bad("a record's length is not a number"))?;
        if len <= space + 1 || len > rest.len() {
            return Err(bad("a record's length is out of range"));
        }
        let (record, tail) = rest.split_at(len);
        rest = tail;
        let body = record[space + 1..]
            .strip_suffix(b"\n")
            .ok_or_else(|| bad("a record does not end with a newline"))?;
        if body.contains(&b'\n') {
            return Err(bad("a record holds a newline"));
        }
        let eq = body
            .iter()
            .position(|b| *b == b'=')
            .filter(|i| *i > 0)
            .ok_or_else(|| bad("a record has no key"))?;
        let (key, value) = (&body[..eq], &body[eq + 1..]);
        let repeated = match key {
            b"path" => pax.path.replace(value.to_vec()).is_some(),
            b"size" => {
                let size = decimal(value).ok_or_else(|| bad("`size` is not a number"))?;
                pax.size.replace(size).is_some()
            }
            // Links are refused, but a reader may still take a file's `linkpath`.
            b"linkpath" => {
                check_path(value)?;
                std::mem::replace(&mut linkpath, true)
            }
            // GNU tar takes a sparse file's real name and size from these.
            k if k.starts_with(b"GNU.sparse.") => {
                return Err(TarballError::ForeignExtension(GNU_SPARSE));
            }
            // Other keys (times, owners, extended attributes) do not change where or how much
            // an entry unpacks.
            _ => false,
        };
        if repeated {
            return Err(bad(&format!("`{}` given twice", shown(key))));
        }
    }
    Ok(pax)
}

/// Plain ASCII digits (no sign, no spaces) as a number.
fn decimal(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// SHA-256 of everything `reader` yields, as lowercase hex.
pub fn sha256_hex(mut reader: impl Read) -> io::Result<String> {
    let mut hash = Sha256::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(hex(&hash.finalize()));
        }
        hash.update(&buf[..n]);
    }
}

/// Builders for test crate files, shared by unit and integration tests.
#[doc(hidden)]
pub mod testing {
    use std::io::Write;

    /// One tar entry: path, contents, and the raw entry type byte.
    pub struct Entry<'a> {
        pub path: &'a str,
        pub data: &'a [u8],
        pub kind: tar::EntryType,
    }

    pub fn file<'a>(path: &'a str, data: &'a [u8]) -> Entry<'a> {
        Entry {
            path,
            data,
            kind: tar::EntryType::Regular,
        }
    }

    /// A gzip'd tar of the entries, paths written raw (so `../` can be tested).
    pub fn crate_bytes(entries: &[Entry<'_>]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            {
                let name = &mut h.as_gnu_mut().unwrap().name;
                name[..e.path.len()].copy_from_slice(e.path.as_bytes());
            }
            h.set_size(e.data.len() as u64);
            h.set_entry_type(e.kind);
            h.set_mode(0o644);
            if e.kind == tar::EntryType::Symlink {
                h.set_link_name("/etc/passwd").unwrap();
            }
            h.set_cksum();
            tar.append(&h, e.data).unwrap();
        }
        let tar = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        gz.finish().unwrap()
    }

    /// A publish request body: `u32 LE json_len | json | u32 LE crate_len | crate`.
    pub fn publish_body(json: &[u8], krate: &[u8]) -> Vec<u8> {
        let mut b = Vec::with_capacity(8 + json.len() + krate.len());
        b.extend_from_slice(&(json.len() as u32).to_le_bytes());
        b.extend_from_slice(json);
        b.extend_from_slice(&(krate.len() as u32).to_le_bytes());
        b.extend_from_slice(krate);
        b
    }

    /// `n` incompressible bytes (xorshift), the same for every call.
    pub fn noise(n: usize) -> Vec<u8> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// A gzip'd tar written block by block, for archives no tar writer would produce. Runs of
    /// zeros cost almost nothing to build: a deflate block of [`ZERO_CHUNK`] zeros is made once
    /// and repeated, so a test can describe a 256 MiB entry in a few hundred KB without
    /// compressing 256 MiB.
    pub struct RawTar {
        deflate: flate2::Compress,
        out: Vec<u8>,
        crc: flate2::Crc,
    }

    /// The zeros one repeated deflate block inflates to.
    pub const ZERO_CHUNK: usize = 1 << 20;

    impl Default for RawTar {
        fn default() -> RawTar {
            RawTar {
                deflate: flate2::Compress::new(flate2::Compression::default(), false),
                out: Vec::new(),
                crc: flate2::Crc::new(),
            }
        }
    }

    impl RawTar {
        pub fn new() -> RawTar {
            RawTar::default()
        }

        fn deflate(&mut self, data: &[u8], flush: flate2::FlushCompress) {
            let start = self.deflate.total_in();
            loop {
                let done = (self.deflate.total_in() - start) as usize;
                self.out.reserve(data.len() / 2 + 1024);
                self.deflate
                    .compress_vec(&data[done..], &mut self.out, flush)
                    .unwrap();
                let all_in = (self.deflate.total_in() - start) as usize == data.len();
                // Room left over means the compressor had nothing more to say.
                if all_in && self.out.len() < self.out.capacity() {
                    break;
                }
            }
        }

        /// Raw bytes, as they are.
        pub fn bytes(mut self, data: &[u8]) -> RawTar {
            self.crc.update(data);
            self.deflate(data, flate2::FlushCompress::None);
            self
        }

        /// `n` zero bytes.
        pub fn zeros(self, n: u64) -> RawTar {
            static BLOCK: std::sync::OnceLock<(Vec<u8>, flate2::Crc)> = std::sync::OnceLock::new();
            let (block, crc) = BLOCK.get_or_init(|| independent_block(&vec![0u8; ZERO_CHUNK]));
            let rest = vec![0u8; (n % ZERO_CHUNK as u64) as usize];
            self.paste(block, crc, n / ZERO_CHUNK as u64).bytes(&rest)
        }

        /// `unit`, `times` times over, compressed once.
        pub fn repeat(self, unit: &[u8], times: u64) -> RawTar {
            let (block, crc) = independent_block(unit);
            self.paste(&block, &crc, times)
        }

        fn paste(mut self, block: &[u8], crc: &flate2::Crc, times: u64) -> RawTar {
            // A full flush ends the stream so far on a byte boundary and forgets its history,
            // so blocks that refer to nothing before them can follow.
            self.deflate(&[], flate2::FlushCompress::Full);
            for _ in 0..times {
                self.out.extend_from_slice(block);
                self.crc.combine(crc);
            }
            self
        }

        /// A header block (see [`header_block`]).
        pub fn header(self, path: &[u8], kind: u8, size: u64) -> RawTar {
            self.bytes(&header_block(path, kind, size))
        }

        /// Entry data, padded to the next block.
        pub fn data(self, data: &[u8]) -> RawTar {
            self.bytes(&padded(data))
        }

        /// A header and its data.
        pub fn entry(self, path: &[u8], kind: u8, data: &[u8]) -> RawTar {
            self.bytes(&raw_entry(path, kind, data))
        }

        /// An entry of `size` zero bytes.
        pub fn zero_entry(self, path: &[u8], kind: u8, size: u64) -> RawTar {
            self.header(path, kind, size)
                .zeros(size.next_multiple_of(512))
        }

        /// The manifest of `foo` 1.0.0, the first entry of every crate built here.
        pub fn foo_manifest(self) -> RawTar {
            self.entry(b"foo-1.0.0/Cargo.toml", b'0', FOO_MANIFEST.as_bytes())
        }

        /// The end-of-archive blocks.
        pub fn end(self) -> RawTar {
            self.zeros(1024)
        }

        /// The gzip file: header, deflate stream, CRC and length.
        pub fn finish(mut self) -> Vec<u8> {
            self.deflate(&[], flate2::FlushCompress::Finish);
            let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
            gz.extend_from_slice(&self.out);
            gz.extend_from_slice(&self.crc.sum().to_le_bytes());
            gz.extend_from_slice(&self.crc.amount().to_le_bytes());
            gz
        }
    }

    /// A GNU header block: the path written raw (cut at 100 bytes), any type byte, any size.
    pub fn header_block(path: &[u8], kind: u8, size: u64) -> [u8; 512] {
        let mut h = tar::Header::new_gnu();
        let name = &mut h.as_gnu_mut().unwrap().name;
        let n = path.len().min(name.len());
        name[..n].copy_from_slice(&path[..n]);
        h.set_size(size);
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_mode(0o644);
        h.set_cksum();
        *h.as_bytes()
    }

    /// `data` padded with zeros to a whole number of blocks.
    pub fn padded(data: &[u8]) -> Vec<u8> {
        let mut v = data.to_vec();
        v.resize(data.len().next_multiple_of(512), 0);
        v
    }

    /// A header block and its padded data, uncompressed.
    pub fn raw_entry(path: &[u8], kind: u8, data: &[u8]) -> Vec<u8> {
        let mut v = header_block(path, kind, data.len() as u64).to_vec();
        v.extend_from_slice(&padded(data));
        v
    }

    /// Deflate blocks holding `data` that refer to nothing before them and end on a byte
    /// boundary, and the CRC of `data`.
    fn independent_block(data: &[u8]) -> (Vec<u8>, flate2::Crc) {
        let mut t = RawTar::new();
        t.deflate(data, flate2::FlushCompress::Full);
        t.crc.update(data);
        (t.out, t.crc)
    }

    /// The manifest [`RawTar::foo_manifest`] writes.
    pub const FOO_MANIFEST: &str =
        "[package]\nname = \"foo\"\nversion = \"1.0.0\"\nedition = \"2021\"\ndescription = \"test crate foo\"\n";

    /// One PAX record: `"<len> <key>=<value>\n"`, `len` counting itself.
    pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
        let body = key.len() + value.len() + 3; // ' ', '=', '\n'
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        let mut r = format!("{len} {key}=").into_bytes();
        r.extend_from_slice(value);
        r.push(b'\n');
        r
    }

    /// Crate files for `foo` 1.0.0 built to make a reader hold or inflate far more than the
    /// file's size, each with what it attacks. Each is under 2 MB.
    pub fn hostile_crates() -> Vec<(&'static str, Vec<u8>)> {
        const BIG: u64 = 256 << 20;
        let after = |t: RawTar| t.entry(b"foo-1.0.0/src/lib.rs", b'0', b"").end();
        // 9,000 headers of 60 KiB, each under the cap: 540 MiB inflated in all.
        let pax_and_dir = [
            raw_entry(
                b"PaxHeaders/foo",
                b'x',
                &pax_record("comment", &[b'a'; 60 << 10]),
            ),
            raw_entry(b"foo-1.0.0/", b'5', b""),
        ]
        .concat();
        let many_pax = RawTar::new().foo_manifest().repeat(&pax_and_dir, 9_000);
        let long_name = raw_entry(b"././@LongLink", b'L', &[b'a'; 4000]);
        let long_names = RawTar::new().foo_manifest().repeat(&long_name, 2_000);
        let huge = [
            ("256 MiB GNU long name", b"././@LongLink".as_slice(), b'L'),
            ("256 MiB GNU long link", b"././@LongLink", b'K'),
            ("256 MiB PAX header", b"PaxHeaders/foo", b'x'),
            ("256 MiB PAX global header", b"pax_global_header", b'g'),
        ]
        .map(|(what, path, kind)| {
            (
                what,
                after(RawTar::new().foo_manifest().zero_entry(path, kind, BIG)),
            )
        });
        huge.into_iter()
            .chain([
                (
                    "1 GiB of zeros after the end of the archive",
                    after(RawTar::new().foo_manifest()).zeros(1 << 30),
                ),
                ("9,000 PAX headers of 60 KiB", after(many_pax)),
                ("2,000 GNU long names in a row", after(long_names)),
            ])
            .map(|(what, t)| (what, t.finish()))
            .collect()
    }

    /// Crate files for `foo` 1.0.0 with a header that would place an entry elsewhere than the
    /// checked path says, for a reader other than cargo's, each with what it is.
    pub fn renaming_crates() -> Vec<(&'static str, Vec<u8>)> {
        let lib = |t: RawTar| t.entry(b"foo-1.0.0/src/lib.rs", b'0', b"").end().finish();
        let evil = b"../evil".as_slice();
        let x = |key: &str, value: &[u8]| {
            let pax = pax_record(key, value);
            lib(RawTar::new()
                .foo_manifest()
                .entry(b"PaxHeaders/a", b'x', &pax)
                .entry(b"foo-1.0.0/a", b'0', b"a"))
        };
        let global = |t: RawTar| lib(t.entry(b"foo-1.0.0/a", b'0', b"a"));
        vec![
            (
                "a PAX global header with a path",
                global(RawTar::new().foo_manifest().entry(
                    b"pax_global_header",
                    b'g',
                    &pax_record("path", evil),
                )),
            ),
            (
                "a PAX global header first, as git archive writes",
                global(
                    RawTar::new()
                        .entry(b"pax_global_header", b'g', &pax_record("comment", b"abc"))
                        .foo_manifest(),
                ),
            ),
            ("a PAX sparse name", x("GNU.sparse.name", evil)),
            ("a PAX sparse map", x("GNU.sparse.map", b"0,1")),
            ("a PAX link path on a file", x("linkpath", evil)),
            (
                "a GNU long link on a file",
                lib(RawTar::new()
                    .foo_manifest()
                    .entry(b"././@LongLink", b'K', b"../evil\0")
                    .entry(b"foo-1.0.0/a", b'0', b"a")),
            ),
            (
                "a GNU long name and a PAX path that disagree",
                lib(RawTar::new()
                    .foo_manifest()
                    .entry(b"PaxHeaders/a", b'x', &pax_record("path", evil))
                    .entry(b"././@LongLink", b'L', b"foo-1.0.0/a\0")
                    .entry(b"foo-1.0.0/a", b'0', b"a")),
            ),
            (
                "a header name outside, under a PAX path inside",
                lib(RawTar::new()
                    .foo_manifest()
                    .entry(b"PaxHeaders/a", b'x', &pax_record("path", b"foo-1.0.0/a"))
                    .entry(evil, b'0', b"a")),
            ),
            (
                "an extension entry's own name outside",
                lib(RawTar::new()
                    .foo_manifest()
                    .entry(b"../PaxHeaders/a", b'x', &pax_record("comment", b"x"))
                    .entry(b"foo-1.0.0/a", b'0', b"a")),
            ),
        ]
    }

    /// A minimal valid crate file for `name` `vers`, plus extra files.
    pub fn simple_crate(name: &str, vers: &str, extra: &[(&str, &[u8])]) -> Vec<u8> {
        let dir = format!("{name}-{vers}");
        let manifest = format!(
            "[package]\nname = \"{name}\"\nversion = \"{vers}\"\nedition = \"2021\"\ndescription = \"test crate {name}\"\nlicense = \"MIT\"\n"
        );
        let m_path = format!("{dir}/Cargo.toml");
        let lib_path = format!("{dir}/src/lib.rs");
        let extra_paths: Vec<String> = extra.iter().map(|(p, _)| format!("{dir}/{p}")).collect();
        let mut entries = vec![file(&m_path, manifest.as_bytes()), file(&lib_path, b"")];
        for (i, (_, data)) in extra.iter().enumerate() {
            entries.push(file(&extra_paths[i], data));
        }
        crate_bytes(&entries)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    const LIMITS: Limits = Limits {
        max_size: 1 << 20,
        max_unpacked: 4 << 20,
    };

    #[test]
    fn good_crate() {
        let bytes = simple_crate("foo", "1.0.0", &[]);
        let i = inspect(&bytes[..], LIMITS).unwrap();
        assert_eq!(i.top_dir, "foo-1.0.0");
        assert!(i.manifest.contains("name = \"foo\""));
        assert_eq!(i.cksum, sha256_hex(&bytes[..]).unwrap());
        assert_eq!(i.size, bytes.len() as u64);
    }

    #[test]
    fn refusals() {
        let m = b"[package]\nname='foo'\nversion='1.0.0'\n";
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not gzip at all".to_vec(), "Corrupt"),
            (
                crate_bytes(&[
                    file("foo-1.0.0/Cargo.toml", m),
                    file("foo-1.0.0/../evil", b"x"),
                ]),
                "UnsafePath",
            ),
            (
                crate_bytes(&[file("/foo-1.0.0/Cargo.toml", m)]),
                "UnsafePath",
            ),
            (
                crate_bytes(&[file("foo-1.0.0/Cargo.toml", m), file("bar-1.0.0/x", b"x")]),
                "WrongPrefix",
            ),
            (
                crate_bytes(&[file("foo-1.0.0/src/lib.rs", b"")]),
                "NoManifest",
            ),
            (
                crate_bytes(&[
                    file("foo-1.0.0/Cargo.toml", m),
                    file("foo-1.0.0/cargo.toml", m),
                ]),
                "ManyManifests",
            ),
            (
                crate_bytes(&[
                    file("foo-1.0.0/Cargo.toml", m),
                    Entry {
                        path: "foo-1.0.0/link",
                        data: b"",
                        kind: tar::EntryType::Symlink,
                    },
                ]),
                "BadEntryType",
            ),
            (
                simple_crate("foo", "1.0.0", &[("big", &vec![7u8; 5 << 20])]),
                "UnpackedTooLarge",
            ),
        ];
        for (bytes, want) in cases {
            let err = inspect(&bytes[..], LIMITS).unwrap_err();
            assert!(
                format!("{err:?}").starts_with(want),
                "want {want}, got {err:?}"
            );
        }
    }

    #[test]
    fn a_manifest_written_twice_is_one_manifest() {
        let m = b"[package]\nname='foo'\nversion='1.0.0'\n";
        let twice = crate_bytes(&[
            file("foo-1.0.0/Cargo.toml", m),
            file("foo-1.0.0/src/lib.rs", b""),
            file("foo-1.0.0/./Cargo.toml", m),
        ]);
        let i = inspect(&twice[..], LIMITS).unwrap();
        assert_eq!(i.manifest.as_bytes(), m);
        let longer: &[u8] = b"[package]\nname='foo'\nversion='1.0.0'\n\n";
        for other in [
            &b"[package]\nname='foo'\nversion='2.0.0'\n"[..],
            &m[..10],
            longer,
        ] {
            let differing = crate_bytes(&[
                file("foo-1.0.0/Cargo.toml", m),
                file("foo-1.0.0/Cargo.toml", other),
            ]);
            let err = inspect(&differing[..], LIMITS).unwrap_err();
            assert!(
                matches!(&err, TarballError::DifferingManifests(p) if p == "foo-1.0.0/Cargo.toml"),
                "{err:?}"
            );
        }
    }

    #[test]
    fn truncated_gzip_is_corrupt() {
        let bytes = simple_crate("foo", "1.0.0", &[("data", &[1u8; 4096])]);
        let err = inspect(&bytes[..bytes.len() - 6], LIMITS).unwrap_err();
        assert!(matches!(err, TarballError::Corrupt(_)), "{err:?}");
    }

    #[test]
    fn compressed_limit() {
        let noise = noise(300_000);
        let bytes = simple_crate("foo", "1.0.0", &[("noise", &noise)]);
        let small = Limits {
            max_size: 100_000,
            ..LIMITS
        };
        assert!(bytes.len() > 100_000, "{}", bytes.len());
        let r = inspect(&bytes[..], small);
        assert!(matches!(r, Err(TarballError::TooLarge(100_000))), "{r:?}");
    }

    /// The server's default limits.
    const DEFAULTS: Limits = Limits {
        max_size: 10 << 20,
        max_unpacked: 512 << 20,
    };

    fn err_of(bytes: &[u8]) -> TarballError {
        inspect(bytes, DEFAULTS).expect_err("the crate file was accepted")
    }

    fn lib_and_end(t: RawTar) -> Vec<u8> {
        t.entry(b"foo-1.0.0/src/lib.rs", b'0', b"").end().finish()
    }

    #[test]
    fn raw_tar_builds_what_the_tar_crate_reads() {
        let bytes = lib_and_end(
            RawTar::new()
                .foo_manifest()
                .zeros(5 * ZERO_CHUNK as u64 + 3),
        );
        // Five repeated zero blocks inflate, CRC and length included.
        let err = err_of(&bytes);
        assert!(matches!(err, TarballError::DataAfterEnd), "{err:?}");
        let i = inspect(&lib_and_end(RawTar::new().foo_manifest())[..], DEFAULTS).unwrap();
        assert_eq!(i.top_dir, "foo-1.0.0");
        assert_eq!(i.manifest, FOO_MANIFEST);
    }

    #[test]
    fn long_paths_from_the_tar_writer_cargo_uses_are_read() {
        // cargo writes paths over 100 bytes as GNU long-name entries.
        let long = format!("foo-1.0.0/src/{}/lib.rs", "deeply_nested_module".repeat(8));
        assert!(long.len() > 100);
        let mut tar = tar::Builder::new(Vec::new());
        for (path, data) in [
            ("foo-1.0.0/Cargo.toml", FOO_MANIFEST.as_bytes()),
            (&long, b""),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            tar.append_data(&mut h, path, data).unwrap();
        }
        let tar = tar.into_inner().unwrap();
        assert!(tar.windows(13).any(|w| w == b"././@LongLink"));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let i = inspect(&gz.finish().unwrap()[..], DEFAULTS).unwrap();
        assert_eq!(i.top_dir, "foo-1.0.0");

        // The long name is what is checked, not the truncated header name.
        let mut name = b"bar-1.0.0/".to_vec();
        name.extend_from_slice(&[b'x'; 150]);
        name.push(0);
        let t = RawTar::new()
            .foo_manifest()
            .entry(b"././@LongLink", b'L', &name)
            .entry(b"foo-1.0.0/short", b'0', b"");
        let err = err_of(&lib_and_end(t));
        assert!(
            matches!(&err, TarballError::WrongPrefix(p, _) if p.starts_with("bar-1.0.0/xxx")),
            "{err:?}"
        );
    }

    #[test]
    fn pax_path_applies_to_the_next_entry() {
        let pax = pax_record("path", b"foo-1.0.0/src/from-pax.rs");
        let ok = RawTar::new()
            .foo_manifest()
            .entry(b"PaxHeaders/x", b'x', &pax)
            .entry(b"bar-1.0.0/header-name", b'0', b"");
        inspect(&lib_and_end(ok)[..], DEFAULTS).unwrap();
        let mut pax = pax_record("mtime", b"1.5");
        pax.extend(pax_record("path", b"bar-1.0.0/evil"));
        let bad = RawTar::new()
            .foo_manifest()
            .entry(b"PaxHeaders/x", b'x', &pax)
            .entry(b"foo-1.0.0/header-name", b'0', b"");
        let err = err_of(&lib_and_end(bad));
        assert!(
            matches!(&err, TarballError::WrongPrefix(p, _) if p == "bar-1.0.0/evil"),
            "{err:?}"
        );
    }

    #[test]
    fn tar_extension_entries_are_capped_before_they_are_read() {
        for (what, bytes) in hostile_crates() {
            // Small enough that none could have been inflated whole, let alone kept.
            assert!(bytes.len() < 2 << 20, "{what}: {} bytes", bytes.len());
            let err = err_of(&bytes);
            let want = match what {
                w if w.starts_with("256 MiB PAX global") => {
                    matches!(err, TarballError::ForeignExtension(_))
                }
                w if w.starts_with("256 MiB") => {
                    matches!(err, TarballError::ExtensionTooLarge { .. })
                }
                w if w.contains("after the end") => matches!(err, TarballError::DataAfterEnd),
                w if w.contains("PAX headers") => matches!(err, TarballError::UnpackedTooLarge(_)),
                _ => matches!(err, TarballError::BadExtension(_)),
            };
            assert!(want, "{what}: {err:?}");
            assert!(err.to_string().len() < 300, "{what}: {err}");
        }
    }

    #[test]
    fn malformed_extensions_are_refused() {
        let file = |t: RawTar| t.entry(b"foo-1.0.0/a", b'0', b"");
        // An extension entry of `kind` holding `data`, then a file.
        let ext = |kind: u8, data: &[u8]| {
            let path: &[u8] = match kind {
                b'x' => b"PaxHeaders/x",
                _ => b"././@LongLink",
            };
            file(RawTar::new().foo_manifest().entry(path, kind, data))
        };
        let rec = pax_record;
        let mut two_paths = rec("path", b"foo-1.0.0/a");
        two_paths.extend(rec("path", b"foo-1.0.0/b"));
        let mut long_name = vec![b'n'; 4097];
        long_name.push(0);
        let cases: Vec<(&str, RawTar)> = vec![
            (
                "two long names",
                file(
                    RawTar::new()
                        .foo_manifest()
                        .entry(b"././@LongLink", b'L', b"foo-1.0.0/a\0")
                        .entry(b"././@LongLink", b'L', b"foo-1.0.0/b\0"),
                ),
            ),
            (
                "a long name before the end of the archive",
                RawTar::new()
                    .foo_manifest()
                    .entry(b"././@LongLink", b'L', b"foo-1.0.0/a\0"),
            ),
            ("two PAX paths", ext(b'x', &two_paths)),
            (
                "a PAX size the header does not have",
                ext(b'x', &rec("size", b"512")),
            ),
            ("a PAX size with a sign", ext(b'x', &rec("size", b"+0"))),
            (
                "a PAX record with a wrong length",
                ext(b'x', b"99 path=foo-1.0.0/a\n"),
            ),
            (
                "a PAX record holding a newline",
                ext(b'x', &rec("path", b"a\nb")),
            ),
            ("a PAX record without a key", ext(b'x', b"7 =abc\n")),
            ("a long name over PATH_MAX", ext(b'L', &long_name)),
        ];
        for (what, t) in cases {
            let bytes = match what {
                "a long name before the end of the archive" => t.end().finish(),
                _ => lib_and_end(t),
            };
            let err = inspect(&bytes[..], DEFAULTS).expect_err(what);
            assert!(
                matches!(
                    err,
                    TarballError::BadExtension(_) | TarballError::ExtensionTooLarge { .. }
                ),
                "{what}: {err:?}"
            );
        }
    }

    #[test]
    fn every_header_that_can_place_an_entry_is_checked() {
        for (what, bytes) in renaming_crates() {
            let err = inspect(&bytes[..], DEFAULTS).expect_err(what);
            let want = match what {
                w if w.contains("global") || w.contains("sparse") => {
                    matches!(err, TarballError::ForeignExtension(_))
                }
                w if w.contains("disagree") => matches!(err, TarballError::BadExtension(_)),
                _ => matches!(err, TarballError::UnsafePath(_)),
            };
            assert!(want, "{what}: {err:?}");
        }
        // The same headers are read when they agree with the checked path: a link name
        // inside, a long name and a PAX path that are one name.
        let long = b"foo-1.0.0/a\0";
        for t in [
            RawTar::new()
                .foo_manifest()
                .entry(
                    b"PaxHeaders/a",
                    b'x',
                    &pax_record("linkpath", b"foo-1.0.0/b"),
                )
                .entry(b"foo-1.0.0/a", b'0', b"a"),
            RawTar::new()
                .foo_manifest()
                .entry(b"PaxHeaders/a", b'x', &pax_record("path", b"foo-1.0.0/a"))
                .entry(b"././@LongLink", b'L', long)
                .entry(b"foo-1.0.0/a", b'0', b"a"),
        ] {
            inspect(&lib_and_end(t)[..], DEFAULTS).unwrap();
        }
    }

    #[test]
    fn names_in_errors_are_bounded_and_printable() {
        let mut name = "foo-1.0.0/\x1b[2J\r\u{202e}".as_bytes().to_vec();
        name.extend_from_slice(&[b'a'; 3000]);
        let cases = [
            RawTar::new()
                .foo_manifest()
                .entry(b"././@LongLink", b'L', &name)
                .entry(b"x", b'2', b""),
            RawTar::new()
                .foo_manifest()
                .entry(b"PaxHeaders/x", b'x', &pax_record("path", &name[10..]))
                .entry(b"x", b'0', b""),
            RawTar::new().entry(b"\x1b]0;title\x07/Cargo.toml", b'0', b""),
        ];
        for t in cases {
            let msg = err_of(&lib_and_end(t)).to_string();
            assert!(msg.len() < 400, "{msg}");
            assert!(
                !msg.chars().any(|c| c.is_control() || c == '\u{202e}'),
                "{msg:?}"
            );
        }
        assert_eq!(shown(&[b'a'; 300]).chars().count(), SHOWN_CHARS + 1);
        assert_eq!(shown(b"a\nb"), "a\\nb");
    }

    #[test]
    fn data_after_the_archive_is_refused() {
        let good = lib_and_end(RawTar::new().foo_manifest());
        // Tar writers pad the last record with zeros: accepted.
        inspect(
            &lib_and_end(
                RawTar::new()
                    .foo_manifest()
                    .entry(b"foo-1.0.0/a", b'0', b"x"),
            )[..],
            DEFAULTS,
        )
        .unwrap();
        let padded = RawTar::new()
            .foo_manifest()
            .entry(b"foo-1.0.0/src/lib.rs", b'0', b"")
            .end()
            .zeros(10 * 1024 - 1024)
            .finish();
        inspect(&padded[..], DEFAULTS).unwrap();
        // A file hidden after the end, which a reader ignoring zero blocks would unpack.
        let hidden = RawTar::new()
            .foo_manifest()
            .end()
            .entry(b"foo-1.0.0/build.rs", b'0', b"fn main() {}")
            .finish();
        assert!(matches!(err_of(&hidden), TarballError::DataAfterEnd));
        // A second gzip member: cargo would never unpack it.
        let mut two = good.clone();
        two.extend_from_slice(&simple_crate("foo", "1.0.0", &[("x", b"y")]));
        assert!(
            matches!(err_of(&two), TarballError::TrailingData),
            "{:?}",
            err_of(&two)
        );
        let mut junk = good.clone();
        junk.push(0);
        assert!(matches!(err_of(&junk), TarballError::TrailingData));
        // The CRC is still checked.
        let mut bad_crc = good.clone();
        let n = bad_crc.len();
        bad_crc[n - 8] ^= 1;
        assert!(matches!(err_of(&bad_crc), TarballError::Corrupt(_)));
    }

    #[test]
    fn manifest_size_is_what_the_header_says_and_capped() {
        // The header claims 10 bytes: the rest of the text is read as the next header.
        let mut lying = RawTar::new().header(b"foo-1.0.0/Cargo.toml", b'0', 10);
        lying = lying.data(&vec![b'#'; 4096]);
        assert!(matches!(
            err_of(&lying.end().finish()),
            TarballError::Corrupt(_)
        ));
        // The header claims 2 MiB: refused before a byte of it is read.
        let huge = RawTar::new()
            .zero_entry(b"foo-1.0.0/Cargo.toml", b'0', 2 << 20)
            .end()
            .finish();
        assert!(matches!(err_of(&huge), TarballError::ManifestTooLarge));
        // The header claims 512 KiB and the archive ends first.
        let short = RawTar::new()
            .header(b"foo-1.0.0/Cargo.toml", b'0', 512 << 10)
            .data(FOO_MANIFEST.as_bytes())
            .finish();
        assert!(matches!(err_of(&short), TarballError::Corrupt(_)));
        let not_utf8 = RawTar::new().entry(b"foo-1.0.0/Cargo.toml", b'0', &[0xff, 0xfe]);
        assert!(matches!(
            err_of(&lib_and_end(not_utf8)),
            TarballError::ManifestNotUtf8
        ));
    }

    #[test]
    fn long_components_are_refused() {
        let mut path = b"foo-1.0.0/".to_vec();
        path.extend_from_slice(&[b'c'; 256]);
        let t = RawTar::new()
            .foo_manifest()
            .entry(b"PaxHeaders/x", b'x', &pax_record("path", &path))
            .entry(b"foo-1.0.0/a", b'0', b"");
        assert!(matches!(
            err_of(&lib_and_end(t)),
            TarballError::PathTooLong(_)
        ));
    }

    mod mutated {
        use std::io::Write;

        use proptest::prelude::*;

        use super::super::testing::*;
        use super::super::*;

        const SMALL: Limits = Limits {
            max_size: 64 << 10,
            max_unpacked: 256 << 10,
        };
        /// The most a reader can overshoot a limit by: one read of the largest buffer.
        const SLACK: u64 = 32 << 10;

        /// Valid crates (raw tar) of each shape the checker reads, and two that must hit the
        /// unpacked limit.
        fn bases() -> Vec<Vec<u8>> {
            let manifest = raw_entry(b"foo-1.0.0/Cargo.toml", b'0', FOO_MANIFEST.as_bytes());
            let lib = raw_entry(b"foo-1.0.0/src/lib.rs", b'0', b"pub fn f() {}\n");
            let end = vec![0u8; 1024];
            let long = format!("foo-1.0.0/src/{}.rs", "long".repeat(40));
            let mut long_name = long.clone().into_bytes();
            long_name.push(0);
            let pax = pax_record("path", long.as_bytes());
            vec![
                [&manifest[..], &lib, &end].concat(),
                [
                    &manifest[..],
                    &raw_entry(b"././@LongLink", b'L', &long_name),
                    &raw_entry(b"foo-1.0.0/src/x", b'0', b"x"),
                    &end,
                ]
                .concat(),
                [
                    &manifest[..],
                    &raw_entry(b"PaxHeaders/x", b'x', &pax),
                    &raw_entry(b"foo-1.0.0/src/y", b'0', b"y"),
                    &end,
                ]
                .concat(),
                [
                    &manifest[..],
                    &raw_entry(b"foo-1.0.0/big", b'0', &[0; 1 << 20]),
                    &end,
                ]
                .concat(),
                [&manifest[..], &lib, &end, &[0; 1 << 20]].concat(),
            ]
        }

        fn gzip(tar: &[u8]) -> Vec<u8> {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(tar).unwrap();
            gz.finish().unwrap()
        }

        #[derive(Debug, Clone)]
        enum Op {
            Flip(usize, u8),
            Insert(usize, u8),
            Delete(usize),
            /// Sets a byte of a 512-byte block and recomputes the block's header checksum, so
            /// that header fields (type, size, name) change and still pass the checksum.
            Header(usize, usize, u8),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (any::<usize>(), 0u8..8).prop_map(|(i, b)| Op::Flip(i, b)),
                (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Op::Insert(i, b)),
                any::<usize>().prop_map(Op::Delete),
                (any::<usize>(), 0usize..500, any::<u8>())
                    .prop_map(|(i, o, b)| Op::Header(i, o, b)),
            ]
        }

        fn apply(bytes: &mut Vec<u8>, ops: &[Op]) {
            for op in ops {
                if bytes.is_empty() {
                    return;
                }
                let n = bytes.len();
                match *op {
                    Op::Flip(i, bit) => bytes[i % n] ^= 1 << bit,
                    Op::Insert(i, b) => bytes.insert(i % (n + 1), b),
                    Op::Delete(i) => {
                        bytes.remove(i % n);
                    }
                    Op::Header(i, offset, b) => {
                        let start = (i % n.div_ceil(512)) * 512;
                        if start + 512 > n || (148..156).contains(&offset) {
                            continue;
                        }
                        bytes[start + offset] = b;
                        let mut h = tar::Header::new_old();
                        h.as_mut_bytes().copy_from_slice(&bytes[start..start + 512]);
                        h.set_cksum();
                        bytes[start..start + 512].copy_from_slice(h.as_bytes());
                    }
                }
            }
        }

        /// Checks one crate file: no panic, no reading past either limit, and anything accepted
        /// reads the same through the tar crate as cargo unpacks it.
        fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
            let mut hashing = Hashing {
                inner: bytes,
                hash: Sha256::new(),
                count: 0,
                limit: SMALL.max_size,
            };
            let inflated = Cell::new(0);
            let mut krate = CrateVisit::default();
            let walked = walk(&mut hashing, SMALL, &inflated, &mut krate)
                .ok()
                .and_then(|()| krate.top.zip(krate.manifest));
            prop_assert!(hashing.count <= SMALL.max_size + SLACK);
            prop_assert!(
                inflated.get() <= SMALL.max_unpacked + SLACK,
                "{}",
                inflated.get()
            );
            let Some((top, manifest)) = walked else {
                return Ok(());
            };
            let mut cargo_view = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
            let mut manifests = 0;
            for entry in cargo_view.entries().unwrap() {
                let mut entry = entry.unwrap();
                let kind = entry.header().entry_type();
                prop_assert!(kind.is_file() || kind.is_dir(), "{kind:?}");
                let path = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
                prop_assert!(
                    path.starts_with(&format!("{top}/")),
                    "{path} not under {top}"
                );
                if path == format!("{top}/Cargo.toml") {
                    let mut text = String::new();
                    entry.read_to_string(&mut text).unwrap();
                    prop_assert_eq!(&text, &manifest);
                    manifests += 1;
                }
            }
            prop_assert_eq!(manifests, 1);
            Ok(())
        }

        proptest! {
            #![proptest_config(crate::registry::publish::metadata::round_trip::config(96))]

            #[test]
            fn mutated_tar_never_panics_nor_reads_past_limits(
                base in 0usize..5,
                ops in proptest::collection::vec(op(), 1..6),
            ) {
                let mut tar = bases()[base].clone();
                apply(&mut tar, &ops);
                check(&gzip(&tar))?;
            }

            #[test]
            fn mutated_gzip_never_panics_nor_reads_past_limits(
                base in 0usize..5,
                ops in proptest::collection::vec(op().prop_filter("not a header op", |o| !matches!(o, Op::Header(..))), 1..4),
            ) {
                let mut gz = gzip(&bases()[base]);
                apply(&mut gz, &ops);
                check(&gz)?;
            }
        }

        #[test]
        fn unmutated_bases_are_read_as_expected() {
            for (i, tar) in bases().iter().enumerate() {
                let r = inspect(&gzip(tar)[..], SMALL);
                match i {
                    3 | 4 => assert!(
                        matches!(
                            r,
                            Err(TarballError::UnpackedTooLarge(_) | TarballError::DataAfterEnd)
                        ),
                        "{i}: {r:?}"
                    ),
                    _ => assert!(r.is_ok(), "{i}: {r:?}"),
                }
                check(&gzip(tar)).unwrap();
            }
        }
    }
}
