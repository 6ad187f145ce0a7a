//! Static files: index files (read whole; they are small and change) and crate files
//! (mapped in windows; they never change), with validators and conditional requests.
//!
//! Only files inside the served tree are reachable: the path is decoded first and then
//! refused if it holds `..`, `.`, empty segments, backslashes, NUL or other bytes that no
//! index or crate path contains, and no symlink is followed.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::request::{percent_decode, Head};
use super::response::{Body, FileBody, Response};

/// Crate files up to this size are read into memory instead of mapped.
const READ_SMALL_CRATE: u64 = 64 * 1024;

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

/// Opens `rel` inside `tree`, following no symlink anywhere below the tree's root.
fn open_beneath(tree: &Tree, rel: &str) -> io::Result<(File, fs::Metadata)> {
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

/// One `openat2` call: the kernel refuses symlinks and escapes (Linux 5.6 and later).
fn openat2_beneath(dir: &File, rel: &str) -> io::Result<File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let path = std::ffi::CString::new(rel).map_err(|_| io::Error::from(io::ErrorKind::NotFound))?;
    // SAFETY: open_how is plain integers; all-zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64;
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

/// A strong validator from the inode, size and modification time: every write to the
/// registry renames a new file into place, so any change of bytes changes the inode.
fn etag(meta: &fs::Metadata) -> String {
    format!(
        "\"{:x}-{:x}-{:x}{:09}\"",
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec()
    )
}

fn modified(meta: &fs::Metadata) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(meta.mtime().max(0) as u64)
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
    r.header("ETag", tag)
        .header("Last-Modified", httpdate::fmt_http_date(mtime))
}

fn not_found(what: &str) -> Response {
    Response::error(404, &format!("{what} not found"))
}

/// Serves a file of the index tree (`config.json` or a crate's file).
pub fn index_file(index: &Tree, rel: &str, head: &Head) -> Response {
    if rel.starts_with(".git") || rel.split('/').any(|s| s.starts_with('.')) {
        return not_found("index file");
    }
    let Ok((mut file, meta)) = open_beneath(index, rel) else {
        return not_found("index file");
    };
    if meta.len() > MAX_INDEX_FILE {
        return not_found("index file");
    }
    let tag = etag(&meta);
    let mtime = modified(&meta);
    let content_type = if rel == "config.json" {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    if not_modified(head, &tag, mtime) {
        return validators(Response::new(304), &tag, mtime);
    }
    // Files are replaced by rename, never rewritten in place: the open file keeps its length.
    let mut bytes = vec![0; meta.len() as usize];
    if file.read_exact(&mut bytes).is_err() {
        return Response::error(500, "could not read the index file");
    }
    let r = Response::new(200)
        .header("Content-Type", content_type)
        .body(Body::Bytes(bytes));
    validators(r, &tag, mtime)
}

/// Serves a crate file through mmap windows.
pub fn crate_file(crates: &Tree, rel: &str, head: &Head) -> Response {
    if !rel.ends_with(".crate") || rel.split('/').any(|s| s.starts_with('.')) {
        return not_found("crate file");
    }
    let Ok((file, meta)) = open_beneath(crates, rel) else {
        return not_found("crate file");
    };
    let tag = etag(&meta);
    let mtime = modified(&meta);
    if not_modified(head, &tag, mtime) {
        return validators(Response::new(304), &tag, mtime);
    }
    let body = if meta.len() <= READ_SMALL_CRATE {
        // Mapping costs more than copying a small file: map, populate, and an unmap that
        // must flush the worker thread's TLB too.
        let mut bytes = vec![0; meta.len() as usize];
        let mut file = file;
        if file.read_exact(&mut bytes).is_err() {
            return Response::error(500, "could not read the crate file");
        }
        Body::Bytes(bytes)
    } else {
        Body::File(FileBody::new(file, meta.len()))
    };
    let r = Response::new(200)
        .header("Content-Type", "application/gzip")
        .body(body);
    validators(r, &tag, mtime)
}

/// A served directory, with a descriptor kept open for `openat2`.
#[derive(Debug, Clone)]
pub struct Tree {
    pub path: PathBuf,
    dir: Option<Arc<File>>,
}

impl Tree {
    pub fn new(path: PathBuf) -> Tree {
        let dir = File::open(&path).ok().map(Arc::new);
        Tree { path, dir }
    }
}

/// Where the served trees live, for the router.
#[derive(Debug, Clone)]
pub struct Trees {
    pub index: Tree,
    pub crates: Tree,
}

impl Trees {
    pub fn new(index_dir: PathBuf, crates_dir: PathBuf) -> Trees {
        Trees {
            index: Tree::new(index_dir),
            crates: Tree::new(crates_dir),
        }
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
    fn conditional_matching() {
        let mut h = crate::http::request::parse(b"GET / HTTP/1.1\r\n\r\n", 100)
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
