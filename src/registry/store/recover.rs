//! Crash recovery: the journal a write keeps of the crate it is changing, and what opening
//! the registry repairs (see the registry's module docs).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{is_temp_name, sync_dir, write_atomic, JOURNAL_FILE, ORPHANS_DIR};
use crate::registry::auth::{self, AuthError};
use crate::registry::index::{git, search};
use crate::registry::publish::crateinfo;
use crate::registry::versions::tombstone;
use crate::registry::{Context, CrateName, IndexEntry, Registry, Result};

impl Registry {
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
        done.extend(self.remove_stale_docs_temps()?);
        if git::commit_all(&self.index_dir, "Commit index changes left uncommitted")? {
            done.push("committed uncommitted index changes".to_owned());
        }
        let no_search_file = !search::path(&self.root).exists();
        if !search::is_sound(&self.root)? || (no_search_file && self.has_crates()?) {
            let n = self.rebuild_search()?;
            done.push(format!("rebuilt search.jsonl ({n} crates)"));
        }
        done.extend(self.finish_journal()?);
        // Last: a change a crash interrupted is settled as the repaired registry shows it.
        done.extend(self.recover_audit()?);
        Ok(done)
    }

    /// Whether the index holds any crate (walks the index tree: only asked when the search
    /// file is missing).
    fn has_crates(&self) -> Result<bool> {
        Ok(!self.index_files()?.is_empty())
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
    pub(in crate::registry) fn journal(&self, name: &str) -> Result<()> {
        self.finish_journal()?;
        write_atomic(
            &self.root.join(JOURNAL_FILE),
            format!("{name}\n").as_bytes(),
        )
    }

    /// The write the journal names is complete.
    pub(in crate::registry) fn journal_done(&self) {
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
}
