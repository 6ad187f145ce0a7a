//! The mirror's files on disk, under `mirror/` in the registry:
//!
//! - `index/{path}`: an index file as the upstream sent it (`3/f/foo`, `se/rd/serde`, and
//!   the upstream's `config.json`), replaced whole by rename when the upstream has a new one;
//! - `index/{path}.meta`: what is known of it (`.` never occurs in a crate name): the
//!   upstream's validators, when it was last confirmed, or that the upstream has no such
//!   file;
//! - `crates/{name}/{name}-{version}.crate`: crate files, the local registry's layout,
//!   written once (checked against their index line first) and never changed;
//! - `tmp/`: files being written, renamed into place when whole.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What is known of a cached index file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// When the upstream last confirmed this copy (seconds since the epoch).
    pub checked: u64,
    /// The upstream has no such file (as of `checked`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub missing: bool,
}

/// The mirror's directories.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: PathBuf) -> Layout {
        Layout { root }
    }
    pub fn index_dir(&self) -> PathBuf {
        self.root.join("index")
    }
    pub fn crates_dir(&self) -> PathBuf {
        self.root.join("crates")
    }
    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
    pub fn index_file(&self, rel: &str) -> PathBuf {
        self.index_dir().join(rel)
    }
    fn meta_file(&self, rel: &str) -> PathBuf {
        self.index_dir().join(format!("{rel}.meta"))
    }
    pub fn crate_file(&self, rel: &str) -> PathBuf {
        self.crates_dir().join(rel)
    }

    /// The meta of `rel`, if the mirror ever fetched it.
    pub fn meta(&self, rel: &str) -> Option<Meta> {
        let bytes = fs::read(self.meta_file(rel)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The cached bytes of `rel`, if any.
    pub fn read_index(&self, rel: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.index_file(rel)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn write_meta(&self, rel: &str, meta: &Meta) -> io::Result<()> {
        let bytes = serde_json::to_vec(meta).expect("meta serializes");
        self.write_atomic(&self.meta_file(rel), &bytes)
    }

    /// A new copy of `rel` from the upstream, then its meta.
    pub fn store_index(&self, rel: &str, bytes: &[u8], meta: &Meta) -> io::Result<()> {
        self.write_atomic(&self.index_file(rel), bytes)?;
        self.write_meta(rel, meta)
    }

    /// The upstream has no `rel` (any copy kept from before goes).
    pub fn store_missing(&self, rel: &str, checked: u64) -> io::Result<()> {
        match fs::remove_file(self.index_file(rel)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let meta = Meta {
            checked,
            missing: true,
            ..Meta::default()
        };
        self.write_meta(rel, &meta)
    }

    /// A new file in `tmp/`, to be renamed into place with [`Self::commit`].
    pub fn temp(&self, hint: &str) -> io::Result<(File, PathBuf)> {
        let dir = self.tmp_dir();
        fs::create_dir_all(&dir)?;
        let path = crate::registry::temp_path(&dir, hint);
        Ok((crate::registry::create_private(&path)?, path))
    }

    /// Makes a whole temp file (already synced) `dest`, readable by all, by rename.
    pub fn commit(&self, tmp: &Path, dest: &Path) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(tmp, fs::Permissions::from_mode(0o644))?;
        let dir = dest.parent().expect("cache paths have a parent");
        fs::create_dir_all(dir)?;
        fs::rename(tmp, dest)?;
        File::open(dir)?.sync_all()
    }

    fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> io::Result<()> {
        let (mut f, tmp) = self.temp("index")?;
        let written = f.write_all(bytes).and_then(|_| f.sync_all());
        let done = written.and_then(|_| self.commit(&tmp, dest));
        if done.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_files_and_their_meta_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::new(dir.path().join("mirror"));
        assert_eq!(l.meta("3/f/foo"), None);
        let meta = Meta {
            etag: Some("\"x\"".into()),
            checked: 7,
            ..Meta::default()
        };
        l.store_index("3/f/foo", b"line\n", &meta).unwrap();
        assert_eq!(l.meta("3/f/foo"), Some(meta));
        assert_eq!(l.read_index("3/f/foo").unwrap().unwrap(), b"line\n");
        l.store_missing("3/f/foo", 9).unwrap();
        assert!(l.meta("3/f/foo").unwrap().missing);
        assert_eq!(l.read_index("3/f/foo").unwrap(), None);
        assert_eq!(fs::read_dir(l.root.join("tmp")).unwrap().count(), 0);
    }
}
