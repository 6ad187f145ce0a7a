//! Rustdoc output per version, a third file tree beside the index and the crates:
//! `docs/{name}/{vers}/` holds what `cargo doc --no-deps` wrote in `target/doc` (the crate's
//! own folder `{name_with_underscores}/`, `static.files/`, the search index, source pages),
//! as the publisher's machine built it: the registry never compiles anything.
//!
//! An upload is checked and unpacked before the lock ([`Registry::check_docs`], see
//! [`unpack`]) into a staging tree at `docs/.tmp-…`; under the lock,
//! [`Command::UploadDocs`](super::Command::UploadDocs) decides what needs registry state (the
//! crate and version exist, the uploader may publish the crate, the crate's own folder is
//! there) and moves the tree into place. A new upload for a version that has docs swaps the
//! two trees in one `renameat2(RENAME_EXCHANGE)`: a reader opens a file of the old tree or of
//! the new one, never a gap. The old tree is removed before the lock is released. Staging
//! trees a crash left behind are removed when the registry is opened.
//!
//! Names are the index's spelling: `docs/{name as published}/{version as published}/`.

mod unpack;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::auth::{self, AuthError, AuthFile, NameState, Principal};
use super::names::{canonical, Version};
use super::publish::tarball;
use super::store::{is_stale_temp, is_temp_name, sync_dir, temp_path};
use super::{Change, Context, CrateName, Error, IndexEntry, Registry, Result};
use unpack::Staged;

/// The docs tree, at the registry root.
pub const DOCS_DIR: &str = "docs";

/// A docs upload checked against everything that needs no registry state and unpacked into
/// a staging tree, until a [`Command::UploadDocs`](super::Command::UploadDocs) moves it into
/// place; removed if it is dropped first.
#[derive(Debug)]
pub struct CheckedDocs {
    staged: Staged,
    name: CrateName,
    vers: Version,
    unpacked: unpack::Unpacked,
}

impl CheckedDocs {
    pub fn name(&self) -> &CrateName {
        &self.name
    }

    pub fn vers(&self) -> &Version {
        &self.vers
    }
}

/// The folder rustdoc writes a crate's pages in: its name with `_` for `-`.
pub fn crate_folder(name: &str) -> String {
    name.replace('-', "_")
}

impl Registry {
    /// Where the docs of every version live.
    pub fn docs_dir(&self) -> PathBuf {
        self.root.join(DOCS_DIR)
    }

    /// Checks and unpacks a docs upload of `name` `vers` (before the lock).
    pub fn check_docs(
        &self,
        name: &CrateName,
        vers: &str,
        archive: impl Read,
    ) -> Result<CheckedDocs> {
        let vers = Version::parse(vers).map_err(|e| Error::Invalid(e.to_string()))?;
        let dir = self.docs_dir();
        fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
        let staging = temp_path(&dir, "docs");
        fs::create_dir(&staging).context(|| format!("creating {}", staging.display()))?;
        let staged = Staged(Some(staging.clone()));
        let limits = unpack::Limits {
            archive: tarball::Limits {
                max_size: self.settings.max_docs_size,
                max_unpacked: self.settings.max_docs_unpacked_size,
            },
            entries: self.settings.max_docs_files,
        };
        let unpacked = unpack::unpack(archive, &staging, &crate_folder(name), limits)?;
        unpack::sync_tree(&staging).context(|| format!("syncing {}", staging.display()))?;
        Ok(CheckedDocs {
            staged,
            name: name.clone(),
            vers,
            unpacked,
        })
    }

    /// [`Command::UploadDocs`](super::Command::UploadDocs), lock held: `by` must be allowed to
    /// publish the crate (an owner or an admin, the token's crate patterns allowing it).
    pub(super) fn upload_docs_locked(
        &self,
        checked: CheckedDocs,
        by: Option<&Principal>,
        changes: &mut Vec<Change>,
    ) -> Result<(String, String), AuthError> {
        let CheckedDocs {
            mut staged,
            name,
            vers,
            unpacked,
        } = checked;
        let entries = self.entries(&name)?;
        let Some(first) = entries.first() else {
            return Err(Error::NotFound(format!("crate `{name}` does not exist")).into());
        };
        let real = first.name.clone();
        if let Some(p) = by {
            let data = AuthFile::load(self)?;
            auth::authorize_publish(&data, p, &real, NameState::Published)?;
        }
        let Some(entry) = find_version(&entries, &vers) else {
            return Err(Error::NotFound(format!(
                "crate `{real}` has no version `{vers}`; publish it before its docs"
            ))
            .into());
        };
        let folder = crate_folder(&real);
        if !unpacked.folders.contains(&folder) {
            return Err(Error::Invalid(format!(
                "docs archive has no `{folder}/index.html` at its top: upload the contents of \
                 target/doc after `cargo doc --no-deps` (`tar -czf docs.tar.gz -C target/doc .`)"
            ))
            .into());
        }
        let crate_dir = self.docs_dir().join(&real);
        if let Err(e) = place(&mut staged, &crate_dir, &entry.vers) {
            let _ = fs::remove_dir(&crate_dir); // made for this upload, and empty
            return Err(e.into());
        }
        // The old tree, if any, goes before the lock is released.
        drop(staged);
        changes.push(Change::DocsUploaded {
            name: real.clone(),
            vers: entry.vers.clone(),
            files: unpacked.files,
            bytes: unpacked.bytes,
        });
        Ok((real, entry.vers.clone()))
    }

    /// [`Command::RemoveDocs`](super::Command::RemoveDocs), lock held. Returns the versions
    /// whose docs went.
    pub(super) fn remove_docs_locked(
        &self,
        name: &CrateName,
        vers: Option<&str>,
        by: Option<&Principal>,
        changes: &mut Vec<Change>,
    ) -> Result<Vec<String>, AuthError> {
        let real = self.docs_spelling(name)?;
        if let Some(p) = by {
            let data = AuthFile::load(self)?;
            auth::authorize_publish(&data, p, &real, NameState::Published)?;
        }
        let have = self.docs_versions(&real);
        let gone: Vec<String> = match vers {
            None => have,
            Some(v) => {
                let wanted = Version::parse(v).map_err(|e| Error::Invalid(e.to_string()))?;
                have.into_iter()
                    .filter(|h| h == v || Version::parse(h).is_ok_and(|x| x.0 == wanted.0))
                    .collect()
            }
        };
        if gone.is_empty() {
            let what = vers.map_or(String::new(), |v| format!(" {v}"));
            return Err(Error::NotFound(format!("no docs of `{real}`{what} are stored")).into());
        }
        self.remove_docs_of(&real, &gone)?;
        changes.push(Change::DocsRemoved {
            name: real,
            versions: gone.clone(),
        });
        Ok(gone)
    }

    /// Removes the docs of `versions` of the crate spelled `real`, if any (lock held): each
    /// tree is first renamed away, so it disappears at once, then deleted.
    pub(super) fn remove_docs_of(&self, real: &str, versions: &[String]) -> Result<()> {
        let crate_dir = self.docs_dir().join(real);
        for v in versions {
            let dir = crate_dir.join(v);
            let aside = temp_path(&self.docs_dir(), "removed");
            match fs::rename(&dir, &aside) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).context(|| format!("removing {}", dir.display())),
            }
            fs::remove_dir_all(&aside).context(|| format!("removing {}", aside.display()))?;
        }
        let _ = fs::remove_dir(&crate_dir);
        Ok(())
    }

    /// The versions of the crate spelled `real` that have docs, as their folders spell them.
    pub fn docs_versions(&self, real: &str) -> Vec<String> {
        let Ok(rd) = fs::read_dir(self.docs_dir().join(real)) else {
            return Vec::new();
        };
        let mut out: Vec<String> = rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !is_temp_name(n))
            .collect();
        out.sort();
        out
    }

    /// Whether the version `vers` (as the index spells it) of the crate spelled `real` has
    /// docs.
    pub fn has_docs(&self, real: &str, vers: &str) -> bool {
        fs::symlink_metadata(self.docs_dir().join(real).join(vers)).is_ok_and(|m| m.is_dir())
    }

    /// The newest version that is not yanked and has docs: `(name as published, version)`.
    pub fn latest_docs(&self, name: &CrateName) -> Result<Option<(String, String)>> {
        let mut entries = self.entries(name)?;
        entries.retain(|e| !e.yanked && self.has_docs(&e.name, &e.vers));
        let newest = entries
            .into_iter()
            .filter_map(|e| Version::parse(&e.vers).ok().map(|v| (v.0, e)))
            .max_by(|a, b| a.0.cmp(&b.0));
        Ok(newest.map(|(_, e)| (e.name, e.vers)))
    }

    /// The spelling the docs tree uses for `name`: the index's, else a folder of the docs
    /// tree whose name is the same crate name (docs left of a crate that is gone).
    fn docs_spelling(&self, name: &CrateName) -> Result<String> {
        if let Some(e) = self.entries(name)?.first() {
            return Ok(e.name.clone());
        }
        let found = fs::read_dir(self.docs_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .find(|n| canonical(n) == name.canonical());
        Ok(found.unwrap_or_else(|| name.to_string()))
    }

    /// Staging trees of writers that are gone (lock held, or the registry being opened).
    pub(super) fn stale_docs_temps(&self) -> Vec<PathBuf> {
        let Ok(rd) = fs::read_dir(self.docs_dir()) else {
            return Vec::new();
        };
        rd.flatten()
            .filter(|e| e.file_name().to_str().is_some_and(is_stale_temp))
            .map(|e| e.path())
            .collect()
    }

    /// Removes the staging trees a crash left (see [`Self::stale_docs_temps`]).
    pub(super) fn remove_stale_docs_temps(&self) -> Result<Vec<String>> {
        let mut done = Vec::new();
        for p in self.stale_docs_temps() {
            fs::remove_dir_all(&p).context(|| format!("removing {}", p.display()))?;
            done.push(format!("removed a docs upload cut short, {}", p.display()));
        }
        Ok(done)
    }

    /// Docs trees of versions the index does not have (`crates`: the index's entries by
    /// canonical name), as `(name, version, path)`.
    pub(super) fn orphan_docs(
        &self,
        crates: &BTreeMap<String, Vec<IndexEntry>>,
    ) -> Vec<(String, String, PathBuf)> {
        let Ok(rd) = fs::read_dir(self.docs_dir()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for krate in rd.flatten() {
            let Ok(name) = krate.file_name().into_string() else {
                continue;
            };
            if is_temp_name(&name) {
                continue;
            }
            let entries = crates.get(&canonical(&name));
            for vers in self.docs_versions(&name) {
                let known =
                    entries.is_some_and(|es| es.iter().any(|e| e.name == name && e.vers == vers));
                if !known {
                    let path = krate.path().join(&vers);
                    out.push((name.clone(), vers, path));
                }
            }
        }
        out
    }

    /// Removes a docs tree `check` found without its version (lock held).
    pub(super) fn remove_orphan_docs(&self, path: &Path) -> Result<()> {
        fs::remove_dir_all(path).context(|| format!("removing {}", path.display()))?;
        if let Some(parent) = path.parent() {
            let _ = fs::remove_dir(parent);
        }
        Ok(())
    }
}

/// Moves a staging tree to `crate_dir/vers`; a tree there already is swapped out into the
/// staging tree's place, to go with it.
fn place(staged: &mut Staged, crate_dir: &Path, vers: &str) -> Result<()> {
    fs::create_dir_all(crate_dir).context(|| format!("creating {}", crate_dir.display()))?;
    let dest = crate_dir.join(vers);
    let from = staged.0.clone().expect("a checked upload holds its tree");
    if dest.exists() {
        exchange(&from, &dest).context(|| format!("replacing {}", dest.display()))?;
    } else {
        fs::rename(&from, &dest).context(|| format!("moving docs to {}", dest.display()))?;
        staged.0 = None;
    }
    sync_dir(crate_dir).context(|| format!("syncing {}", crate_dir.display()))
}

/// The entry of `vers` (build metadata counts: it is part of the folder's name).
fn find_version<'a>(entries: &'a [IndexEntry], vers: &Version) -> Option<&'a IndexEntry> {
    entries
        .iter()
        .find(|e| Version::parse(&e.vers).is_ok_and(|v| v.0 == vers.0))
}

/// Swaps two directories in one step (`renameat2(RENAME_EXCHANGE)`, Linux 3.15 and later).
/// Where the file system cannot, the old tree is moved aside first: readers then see a
/// moment without docs, never a mix of two trees.
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    const RENAME_EXCHANGE: libc::c_uint = 1 << 1;
    let ca = CString::new(a.as_os_str().as_bytes())?;
    let cb = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: two NUL-terminated paths, alive for the call; AT_FDCWD needs no descriptor.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) {
        return Err(e);
    }
    let aside = temp_path(a.parent().expect("a staging tree has a parent"), "old-docs");
    fs::rename(b, &aside)?;
    fs::rename(a, b)?;
    fs::rename(&aside, a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::auth::scratch_registry;
    use crate::registry::publish::tarball::testing::{crate_bytes, file, simple_crate};
    use crate::registry::{Actor, Command};

    fn docs(name: &str, marker: &[u8]) -> Vec<u8> {
        let index = format!("./{}/index.html", crate_folder(name));
        crate_bytes(&[file(&index, marker), file("./static.files/main.js", b"js")])
    }

    fn upload(reg: &Registry, name: &str, vers: &str, bytes: &[u8]) -> Result<(), AuthError> {
        let checked = reg.check_docs(&CrateName::parse(name).unwrap(), vers, bytes)?;
        reg.apply(Command::UploadDocs(checked), &Actor::cli())
            .map(drop)
    }

    fn left_in_docs(reg: &Registry) -> Vec<String> {
        fs::read_dir(reg.docs_dir())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn an_upload_replaces_the_tree_and_a_delete_takes_it() {
        let (_t, reg) = scratch_registry();
        let checked = reg
            .check_upload(None, &simple_crate("my-crate", "1.0.0", &[])[..])
            .unwrap();
        reg.apply(Command::Publish(checked), &Actor::cli()).unwrap();
        upload(&reg, "my-crate", "1.0.0", &docs("my-crate", b"one")).unwrap();
        let page = reg.docs_dir().join("my-crate/1.0.0/my_crate/index.html");
        assert_eq!(fs::read(&page).unwrap(), b"one");
        upload(&reg, "My-Crate", "1.0.0", &docs("my-crate", b"two")).unwrap();
        assert_eq!(fs::read(&page).unwrap(), b"two");
        assert_eq!(left_in_docs(&reg), ["my-crate"], "no staging tree left");
        let latest = reg.latest_docs(&CrateName::parse("my-crate").unwrap());
        assert_eq!(latest.unwrap(), Some(("my-crate".into(), "1.0.0".into())));

        for (name, vers, bytes, want) in [
            (
                "my-crate",
                "2.0.0",
                docs("my-crate", b"x"),
                "has no version",
            ),
            ("other", "1.0.0", docs("other", b"x"), "does not exist"),
            (
                "my-crate",
                "1.0.0",
                docs("not-mine", b"x"),
                "my_crate/index.html",
            ),
            ("my-crate", "nope", docs("my-crate", b"x"), "nope"),
        ] {
            let e = upload(&reg, name, vers, &bytes).unwrap_err();
            assert!(e.to_string().contains(want), "{name} {vers}: {e}");
            assert_eq!(left_in_docs(&reg), ["my-crate"], "{name} {vers}");
        }
        assert_eq!(fs::read(&page).unwrap(), b"two");

        let delete = Command::Delete {
            name: CrateName::parse("my-crate").unwrap(),
            vers: None,
            release_name: false,
        };
        reg.apply(delete, &Actor::cli()).unwrap();
        assert!(left_in_docs(&reg).is_empty(), "{:?}", left_in_docs(&reg));
    }
}
