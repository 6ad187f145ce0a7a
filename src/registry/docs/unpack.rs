//! A docs upload unpacked into a staging tree, before the lock: the archive is read once,
//! under the crate file's rules ([`tarball::walk_archive`]: one gzip member, only plain files
//! and directories, no `..`, no absolute path, every name bounded, the compressed and the
//! unpacked bytes capped), with a cap on the number of entries besides. Files are written as
//! they arrive, never held in memory; a refusal removes the staging tree.
//!
//! Names starting with `.` (`target/doc/.lock`) are not stored: nothing serves them.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::registry::publish::tarball::{self, TarballError, Visit};
use crate::registry::{Error, Result};

/// A staging tree, removed with everything in it unless it was moved into place.
#[derive(Debug)]
pub(super) struct Staged(pub(super) Option<PathBuf>);

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_dir_all(path);
        }
    }
}

/// What an archive held, once unpacked.
#[derive(Debug)]
pub(super) struct Unpacked {
    /// Top-level directories holding an `index.html` that may be the crate's own folder:
    /// spelled like the folder asked for, but for case (the index's spelling is known only
    /// under the lock). At most [`MAX_FOLDERS`] are kept.
    pub folders: BTreeSet<String>,
    pub files: u64,
    pub bytes: u64,
}

/// How many spellings of the crate's folder are kept (bounded: memory stays flat whatever
/// the archive holds).
const MAX_FOLDERS: usize = 16;

/// The limits of [`unpack`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub archive: tarball::Limits,
    pub entries: u64,
}

/// Unpacks `archive` into `dir` (which exists and is empty), noting the top-level folders
/// spelled `folder` but for case that hold an `index.html`. An archive the rules refuse is
/// [`Error::Invalid`] or [`Error::TooLarge`]; a write the disk refuses is [`Error::Io`].
pub(super) fn unpack(
    archive: impl Read,
    dir: &Path,
    folder: &str,
    limits: Limits,
) -> Result<Unpacked> {
    let mut v = Writer {
        dir,
        folder,
        max_entries: limits.entries,
        entries: 0,
        out: Unpacked {
            folders: BTreeSet::new(),
            files: 0,
            bytes: 0,
        },
        write_error: None,
        refusal: None,
    };
    let walked = tarball::walk_archive(archive, limits.archive, &mut v);
    // A failed write (disk full) is the storage's trouble, not the archive's.
    if let Some(source) = v.write_error {
        return Err(Error::Io {
            context: "storing the docs".into(),
            source,
        });
    }
    if let Some(refusal) = v.refusal {
        return Err(refusal);
    }
    match walked {
        Ok(_) => Ok(v.out),
        Err(e @ (TarballError::TooLarge(_) | TarballError::UnpackedTooLarge(_))) => {
            Err(Error::TooLarge(of_docs(&e)))
        }
        Err(e) => Err(Error::Invalid(of_docs(&e))),
    }
}

/// The archive rules' message, said of a docs archive (the rules name a crate file).
fn of_docs(e: &TarballError) -> String {
    let text = e.to_string();
    match text.strip_prefix("crate file") {
        Some(rest) => format!("docs archive{rest}"),
        None => format!("docs archive: {text}"),
    }
}

/// Writes each entry under `dir` as it is read.
struct Writer<'a> {
    dir: &'a Path,
    folder: &'a str,
    max_entries: u64,
    entries: u64,
    out: Unpacked,
    write_error: Option<io::Error>,
    refusal: Option<Error>,
}

impl Writer<'_> {
    /// Stops the walk with `e`, which [`unpack`] reports instead of the walk's error.
    fn stop(&mut self, e: Error) -> TarballError {
        self.refusal = Some(e);
        TarballError::Corrupt("stopped".into())
    }

    fn failed_write(&mut self, e: io::Error, raw: &[u8]) -> TarballError {
        let clash = e.kind() == io::ErrorKind::AlreadyExists
            || matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::EISDIR));
        if clash {
            return self.stop(Error::Invalid(format!(
                "docs archive entry `{}` clashes with another (given twice, or as a file and \
                 a directory)",
                tarball::shown(raw)
            )));
        }
        self.write_error = Some(e);
        TarballError::Corrupt("write failed".into())
    }
}

impl Visit for Writer<'_> {
    fn entry(
        &mut self,
        path: &str,
        raw: &[u8],
        dir: bool,
        size: u64,
        data: &mut dyn Read,
    ) -> std::result::Result<(), TarballError> {
        let parts: Vec<&str> = path
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        // `./` itself, and the dot files nothing serves (cargo's `.lock`).
        if parts.is_empty() || parts.iter().any(|p| p.starts_with('.')) {
            return Ok(());
        }
        self.entries += 1;
        if self.entries > self.max_entries {
            let max = self.max_entries;
            return Err(self.stop(Error::TooLarge(format!(
                "docs archive has more than the limit of {max} files and directories \
                 (max-docs-files in palletizer.toml)"
            ))));
        }
        let dest = parts.iter().fold(self.dir.to_path_buf(), |p, c| p.join(c));
        if dir {
            return fs::create_dir_all(&dest).map_err(|e| self.failed_write(e, raw));
        }
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| self.failed_write(e, raw))?;
        }
        let mut file = File::options()
            .write(true)
            .create_new(true)
            .open(&dest)
            .map_err(|e| self.failed_write(e, raw))?;
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match data.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(TarballError::Corrupt(tarball::shown(
                        e.to_string().as_bytes(),
                    )))
                }
            };
            file.write_all(&buf[..n])
                .map_err(|e| self.failed_write(e, raw))?;
        }
        let own = parts.len() == 2
            && parts[1] == "index.html"
            && parts[0].eq_ignore_ascii_case(self.folder);
        if own && self.out.folders.len() < MAX_FOLDERS {
            self.out.folders.insert(parts[0].to_owned());
        }
        self.out.files += 1;
        self.out.bytes += size;
        Ok(())
    }
}

/// Makes everything written under `dir` durable at once (`syncfs`): one call for a tree
/// of thousands of files instead of one fsync each.
pub(super) fn sync_tree(dir: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = File::open(dir)?;
    // SAFETY: a valid descriptor, open for the duration of the call.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::publish::tarball::testing::{crate_bytes, file, Entry, RawTar};

    const LIMITS: Limits = Limits {
        archive: tarball::Limits {
            max_size: 1 << 20,
            max_unpacked: 8 << 20,
        },
        entries: 100,
    };

    fn unpack_into(bytes: &[u8], limits: Limits) -> (tempfile::TempDir, Result<Unpacked>) {
        let dir = tempfile::tempdir().unwrap();
        let r = unpack(bytes, dir.path(), "foo_bar", limits);
        (dir, r)
    }

    #[test]
    fn a_doc_tree_unpacks_with_its_folders() {
        let bytes = crate_bytes(&[
            file("./", b""),
            file("./.lock", b""),
            file("./foo_bar/index.html", b"<html>"),
            file("./other/index.html", b"<html>"),
            file("./foo_bar/struct.A.html", b"<html>"),
            file("./static.files/main-1234.js", b"js"),
            file("./search-index.js", b"x"),
            file("./src/foo_bar/lib.rs.html", b"<html>"),
        ]);
        let (dir, r) = unpack_into(&bytes, LIMITS);
        let u = r.unwrap();
        assert_eq!(u.folders.iter().collect::<Vec<_>>(), ["foo_bar"]);
        assert_eq!(u.files, 6);
        assert!(
            !dir.path().join(".lock").exists(),
            "dot files are not stored"
        );
        assert_eq!(
            fs::read(dir.path().join("static.files/main-1234.js")).unwrap(),
            b"js"
        );
    }

    #[test]
    fn refusals_say_docs_archive() {
        let link = Entry {
            path: "foo/link",
            data: b"",
            kind: tar::EntryType::Symlink,
        };
        let hard = Entry {
            path: "foo/hard",
            data: b"",
            kind: tar::EntryType::Link,
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (crate_bytes(&[link]), "is not a plain file"),
            (crate_bytes(&[hard]), "is not a plain file"),
            (crate_bytes(&[file("foo/../../evil", b"x")]), "unsafe path"),
            (crate_bytes(&[file("/etc/evil", b"x")]), "unsafe path"),
            (
                crate_bytes(&[file("a", b"x"), file("a", b"y")]),
                "clashes with another",
            ),
            (
                crate_bytes(&[file("a", b"x"), file("a/b/c", b"y")]),
                "clashes with another",
            ),
            (b"not gzip".to_vec(), "not a valid gzip"),
            (
                RawTar::new()
                    .zero_entry(b"foo/zeros", b'0', 64 << 20)
                    .end()
                    .finish(),
                "unpacks to more than",
            ),
        ];
        for (bytes, want) in cases {
            let (_dir, r) = unpack_into(&bytes, LIMITS);
            let e = r.unwrap_err().to_string();
            assert!(e.starts_with("docs archive"), "{e}");
            assert!(e.contains(want), "want {want}: {e}");
        }
        let many: Vec<String> = (0..101).map(|i| format!("f{i}")).collect();
        let entries: Vec<Entry> = many.iter().map(|p| file(p, b"")).collect();
        let (_dir, r) = unpack_into(&crate_bytes(&entries), LIMITS);
        let e = r.unwrap_err();
        assert!(matches!(e, Error::TooLarge(_)), "{e}");
        assert!(e.to_string().contains("limit of 100 files"), "{e}");
    }
}
