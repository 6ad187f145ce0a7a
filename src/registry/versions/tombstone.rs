//! Tombstones: `deleted.jsonl` at the registry root, one line per deleted version (name,
//! version, checksum, time of the delete), so that a deleted version's number is never used
//! again.
//!
//! Crate files are served as immutable: a CDN, a proxy cache or cargo's own cache keeps a
//! version's bytes forever. A version published again with other bytes under a deleted
//! number would be served as the old bytes, and every cargo behind such a cache would fail
//! the checksum. So, as on crates.io, a deleted version stays deleted: a publish or `add`
//! of a version that has a tombstone (same canonical name, same version less build
//! metadata) is refused. New versions of the crate are fine.
//!
//! The file is rewritten whole (temp file, fsync, rename) under the registry lock, by
//! `delete` only, before the index commit that removes the lines: a crash never leaves a
//! deleted version without its tombstone. A delete that fails or is cut short before its
//! commit leaves tombstones of versions that are still in the index; the failing delete puts
//! the old file back, and the journal's repair drops them (invariant: no version in the
//! index has a tombstone). It is registry state, not part of the public index: never in
//! `index/`, copied by backups.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::registry::names::{canonical, Version};
use crate::registry::store::{write_atomic, Previous};
use crate::registry::{Context, IndexEntry, Result};

pub const TOMBSTONE_FILE: &str = "deleted.jsonl";

/// One deleted version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// The crate's name as it was published.
    pub name: String,
    pub vers: String,
    /// SHA-256 of the deleted crate file, for whoever has to tell which bytes a cache holds.
    pub cksum: String,
    /// When it was deleted, as `YYYY-MM-DDTHH:MM:SSZ`.
    pub deleted: String,
    /// When the crate's name was given up (`delete --release-name`), in the same format.
    /// Until then a tombstone keeps the name for the crate's owners, or its admins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<String>,
}

impl Tombstone {
    /// Whether this tombstone covers `name` at `vers`: the same crate (names that differ only
    /// in case and `-`/`_` are one crate) and the same version less build metadata.
    pub fn covers(&self, name: &str, vers: &Version) -> bool {
        canonical(&self.name) == canonical(name)
            && Version::parse(&self.vers).is_ok_and(|v| v.same_release(vers))
    }

    /// Whether this tombstone keeps `name` (any version of it) for the deleted crate's
    /// owners: the name was not given up.
    pub fn keeps_name(&self, name: &str) -> bool {
        self.released.is_none() && canonical(&self.name) == canonical(name)
    }
}

pub fn path(root: &Path) -> PathBuf {
    root.join(TOMBSTONE_FILE)
}

/// Every tombstone, and the 1-based numbers of lines that cannot be read (a damaged file:
/// those are skipped rather than blocking every publish, and `check` reports them).
pub fn read(root: &Path) -> Result<(Vec<Tombstone>, Vec<usize>)> {
    let file = path(root);
    let bytes = match fs::read(&file) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(e).context(|| format!("reading {}", file.display())),
    };
    let mut found = Vec::new();
    let mut damaged = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Tombstone>(line) {
            Ok(t) => found.push(t),
            Err(_) => damaged.push(i + 1),
        }
    }
    Ok((found, damaged))
}

/// The tombstone of `name` at `vers`, if that version was deleted.
pub fn find(root: &Path, name: &str, vers: &Version) -> Result<Option<Tombstone>> {
    Ok(read(root)?.0.into_iter().find(|t| t.covers(name, vers)))
}

fn read_bytes(file: &Path) -> Result<Vec<u8>> {
    match fs::read(file) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).context(|| format!("reading {}", file.display())),
    }
}

/// Adds tombstones for `removed` (registry lock held), each stamped `deleted` (and released
/// at once when `name_released`: the name was given up with them). Returns the previous
/// file, to be put back if the delete fails before its commit.
pub(crate) fn add(
    root: &Path,
    removed: &[IndexEntry],
    deleted: &str,
    name_released: bool,
) -> Result<Previous> {
    let file = path(root);
    let mut text = read_bytes(&file)?;
    if name_released {
        if let Some(e) = removed.first() {
            text = mark_released(&text, &e.name, deleted).0;
        }
    }
    if !text.is_empty() && !text.ends_with(b"\n") {
        text.push(b'\n');
    }
    for e in removed {
        let t = Tombstone {
            name: e.name.clone(),
            vers: e.vers.clone(),
            cksum: e.cksum.clone(),
            deleted: deleted.to_owned(),
            released: name_released.then(|| deleted.to_owned()),
        };
        serde_json::to_writer(&mut text, &t).expect("tombstones serialize");
        text.push(b'\n');
    }
    let previous = Previous::keep(&file)?;
    if let Err(e) = write_atomic(&file, &text) {
        let _ = previous.put_back();
        return Err(e);
    }
    Ok(previous)
}

/// Marks every tombstone that keeps `name` as released at `when` (registry lock held): the
/// deleted crate's name is given up; its version numbers stay taken. Returns the name as
/// the tombstones spell it, if any kept it.
pub(crate) fn release(root: &Path, name: &str, when: &str) -> Result<Option<String>> {
    let file = path(root);
    let (text, spelled) = mark_released(&read_bytes(&file)?, name, when);
    if spelled.is_some() {
        write_atomic(&file, &text)?;
    }
    Ok(spelled)
}

/// The lines of a tombstone file with every tombstone that keeps `name` released at `when`,
/// and the name as the first of them spells it (`None`: none kept it).
fn mark_released(bytes: &[u8], name: &str, when: &str) -> (Vec<u8>, Option<String>) {
    let mut text = Vec::with_capacity(bytes.len() + 64);
    let mut spelled = None;
    for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Tombstone>(line) {
            Ok(mut t) if t.keeps_name(name) => {
                t.released = Some(when.to_owned());
                spelled.get_or_insert_with(|| t.name.clone());
                serde_json::to_writer(&mut text, &t).expect("tombstones serialize");
            }
            // Other lines, damaged ones too, are kept as they are.
            _ => text.extend_from_slice(line),
        }
        text.push(b'\n');
    }
    (text, spelled)
}

/// Drops the tombstones of versions that are in `entries` (registry lock held): what a
/// delete cut short before its commit leaves. Returns how many were dropped.
pub(crate) fn forget_indexed(root: &Path, entries: &[IndexEntry]) -> Result<usize> {
    let file = path(root);
    let bytes = match fs::read(&file) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).context(|| format!("reading {}", file.display())),
    };
    let indexed = |t: &Tombstone| {
        entries
            .iter()
            .any(|e| Version::parse(&e.vers).is_ok_and(|v| t.covers(&e.name, &v)))
    };
    let mut kept = Vec::with_capacity(bytes.len());
    let mut dropped = 0;
    for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        // A damaged line is kept as it is: it is not ours to drop.
        if serde_json::from_slice::<Tombstone>(line).is_ok_and(|t| indexed(&t)) {
            dropped += 1;
        } else {
            kept.extend_from_slice(line);
            kept.push(b'\n');
        }
    }
    if dropped > 0 {
        write_atomic(&file, &kept)?;
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, vers: &str) -> IndexEntry {
        serde_json::from_value(serde_json::json!({
            "name": name, "vers": vers, "deps": [], "cksum": "ab", "features": {},
            "yanked": false
        }))
        .unwrap()
    }

    #[test]
    fn a_tombstone_covers_the_crate_and_release_not_build_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        add(
            root,
            &[entry("Foo-Bar", "1.0.0+build.1")],
            "2026-01-01T00:00:00Z",
            false,
        )
        .unwrap()
        .forget();
        let v = |s: &str| Version::parse(s).unwrap();
        for (name, vers, covered) in [
            ("Foo-Bar", "1.0.0+build.1", true),
            ("foo_bar", "1.0.0", true),
            ("foo-bar", "1.0.0+other", true),
            ("foo-bar", "1.0.1", false),
            ("foo-bar", "1.0.0-rc.1", false),
            ("foobar", "1.0.0", false),
        ] {
            assert_eq!(
                find(root, name, &v(vers)).unwrap().is_some(),
                covered,
                "{name} {vers}"
            );
        }
        let t = find(root, "foo_bar", &v("1.0.0")).unwrap().unwrap();
        assert_eq!(t.name, "Foo-Bar");
        assert_eq!(t.cksum, "ab");
        assert_eq!(t.deleted, "2026-01-01T00:00:00Z");
    }

    #[test]
    fn damaged_lines_are_reported_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(path(root), b"{\"name\":\"x\xff\n").unwrap();
        add(
            root,
            &[entry("a", "1.0.0"), entry("a", "2.0.0")],
            "t",
            false,
        )
        .unwrap()
        .forget();
        let (found, damaged) = read(root).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(damaged, [1]);
        assert_eq!(forget_indexed(root, &[entry("a", "2.0.0")]).unwrap(), 1);
        let (found, damaged) = read(root).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].vers, "1.0.0");
        assert_eq!(damaged, [1], "a damaged line is not ours to drop");
    }

    #[test]
    fn a_failed_delete_puts_the_old_file_back() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        add(root, &[entry("a", "1.0.0")], "t", false)
            .unwrap()
            .forget();
        let before = fs::read(path(root)).unwrap();
        add(root, &[entry("a", "2.0.0")], "t", false)
            .unwrap()
            .put_back()
            .unwrap();
        assert_eq!(fs::read(path(root)).unwrap(), before);
        let fresh = tempfile::tempdir().unwrap();
        add(fresh.path(), &[entry("b", "1.0.0")], "t", false)
            .unwrap()
            .put_back()
            .unwrap();
        assert!(!path(fresh.path()).exists(), "no file before, none after");
        assert!(
            fs::read_dir(root).unwrap().count() == 1,
            "no temp files left"
        );
    }

    #[test]
    fn a_released_name_is_kept_no_more_but_its_versions_stay_taken() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(path(root), b"damaged\n").unwrap();
        add(root, &[entry("Foo-Bar", "1.0.0")], "t1", false)
            .unwrap()
            .forget();
        add(root, &[entry("other", "1.0.0")], "t1", false)
            .unwrap()
            .forget();
        let keeps = |name: &str| read(root).unwrap().0.iter().any(|t| t.keeps_name(name));
        assert!(keeps("foo_bar") && keeps("other"));
        assert_eq!(
            release(root, "foo_bar", "t2").unwrap().as_deref(),
            Some("Foo-Bar")
        );
        assert!(!keeps("foo-bar") && keeps("other"));
        assert_eq!(
            release(root, "foo-bar", "t3").unwrap(),
            None,
            "nothing left to release"
        );
        let v = Version::parse("1.0.0").unwrap();
        let t = find(root, "foo-bar", &v).unwrap().unwrap();
        assert_eq!(t.released.as_deref(), Some("t2"));
        assert_eq!(
            read(root).unwrap().1,
            [1],
            "a damaged line is kept as it was"
        );
        // A delete that gives the name up releases the older tombstones with the new ones.
        add(root, &[entry("other", "2.0.0")], "t4", true)
            .unwrap()
            .forget();
        assert!(!keeps("other"));
    }
}
