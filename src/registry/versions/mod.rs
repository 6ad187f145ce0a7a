//! A published version's later life: yanking and unyanking it, deleting it (or every version
//! of a crate) with the tombstones that keep its number from being used again ([`tombstone`]),
//! and giving up a deleted crate's kept name.

pub(super) mod tombstone;

use std::fs;
use std::io;

use crate::registry::auth::{self, AuthError, NameState};
use crate::registry::index;
use crate::registry::names::Version;
use crate::registry::publish::crateinfo;
use crate::registry::store::{Needs, Redo};
use crate::registry::{Change, Context, CrateName, Error, IndexEntry, Registry, Result};

impl Registry {
    fn find_version(&self, name: &CrateName, vers: &str) -> Result<(Vec<IndexEntry>, usize)> {
        let wanted = Version::parse(vers).map_err(|e| Error::Invalid(e.to_string()))?;
        let entries = self.entries(name)?;
        if entries.is_empty() {
            return Err(Error::NotFound(format!("crate `{name}` does not exist")));
        }
        let i = entries
            .iter()
            .position(|e| Version::parse(&e.vers).is_ok_and(|v| v.0 == wanted.0))
            .ok_or_else(|| Error::NotFound(format!("crate `{name}` has no version `{vers}`")))?;
        Ok((entries, i))
    }

    /// [`Command::Yank`](super::Command::Yank), lock held. A crate that does not exist has no owners to ask: the
    /// yank itself answers that it does not exist.
    pub(super) fn yank_locked(
        &self,
        name: &CrateName,
        vers: &str,
        yanked: bool,
        by: Option<&auth::Principal>,
        changes: &mut Vec<Change>,
    ) -> Result<bool, AuthError> {
        if let Some(p) = by {
            if let Some(real) = self.find_canonical(name)? {
                let data = auth::AuthFile::load(self)?;
                auth::authorize_owner(&data, p, &real)?;
            }
        }
        let (mut entries, i) = self.find_version(name, vers)?;
        if entries[i].yanked == yanked {
            return Ok(false);
        }
        entries[i].yanked = yanked;
        let verb = if yanked { "Yank" } else { "Unyank" };
        let message = format!("{verb} {} {}", entries[i].name, entries[i].vers);
        let mark = self.journal(name, &self.index_redo(name, &entries))?;
        if let Err(e) = self.write_index_file(name, &entries, &message) {
            self.journal_cancel(mark);
            return Err(e.into());
        }
        self.update_search(name, &entries, None);
        let (name, vers) = (entries[i].name.clone(), entries[i].vers.clone());
        changes.push(if yanked {
            Change::Yanked { name, vers }
        } else {
            Change::Unyanked { name, vers }
        });
        Ok(true)
    }

    /// [`Command::Delete`](super::Command::Delete), lock held: tombstones first (so that the version numbers are
    /// never used again, see [`tombstone`]), then index lines (committed), then crate files.
    /// Returns the versions removed. Deleting every version frees no version number, and the
    /// name stays with the crate's owners: only they or an admin publish under it again,
    /// unless `release_name` gives it up (owners forgotten, tombstones marked so).
    pub(super) fn delete_locked(
        &self,
        name: &CrateName,
        vers: Option<&str>,
        release_name: bool,
        changes: &mut Vec<Change>,
    ) -> Result<Vec<String>, AuthError> {
        if release_name && vers.is_some() {
            return Err(Error::Invalid(format!(
                "giving up the name `{name}` deletes every version: name no version"
            ))
            .into());
        }
        let (kept, removed): (Vec<IndexEntry>, Vec<IndexEntry>) = match vers {
            Some(v) => {
                let (mut entries, i) = self.find_version(name, v)?;
                let gone = entries.remove(i);
                (entries, vec![gone])
            }
            None => (Vec::new(), self.entries(name)?),
        };
        if removed.is_empty() {
            return self.release_deleted_name(name, release_name, changes);
        }
        let real = removed[0].name.clone();
        let message = match vers {
            Some(_) => format!("Delete {real} {}", removed[0].vers),
            None => format!("Delete {real} (all versions)"),
        };
        // Read before anything changes (a file that cannot be read refuses the delete), and
        // written last: a name given up whose owners could not be forgotten stays theirs,
        // never the other way round, and the same delete finishes it.
        let access = match release_name {
            true => Some(auth::Edit::open(self)?),
            false => None,
        };
        // Journaled by the real spelling: the crate files live under it.
        let mut redo = self.index_redo(name, &kept);
        for e in &removed {
            let crate_path = self.entry_crate_path(e)?;
            for p in crateinfo::sidecars(&crate_path) {
                redo.remove(&p);
            }
            redo.remove(&crate_path);
        }
        redo.needs(Needs::Tombstones(
            removed.iter().map(|e| e.vers.clone()).collect(),
        ));
        let mark = self.journal(&real, &redo)?;
        let now = index::Pubtime::now();
        let previous = match tombstone::add(&self.root, &removed, now.as_str(), release_name) {
            Ok(p) => p,
            Err(e) => {
                self.journal_cancel(mark);
                return Err(e.into());
            }
        };
        if let Err(e) = self.write_index_file(name, &kept, &message) {
            self.journal_cancel(mark);
            // Not deleted after all: no tombstones. If they cannot be taken back, the
            // journal's repair drops them (they name versions in the index), now rather
            // than after a crash.
            if previous.put_back().is_err() {
                if let Ok(real) = CrateName::parse(&real) {
                    let _ = self.repair_crate(&real);
                }
            }
            return Err(e.into());
        }
        previous.forget();
        changes.push(Change::Deleted {
            name: real.clone(),
            versions: removed.iter().map(|e| e.vers.clone()).collect(),
        });
        self.remove_crate_files(&real, &removed)?;
        let versions: Vec<String> = removed.iter().map(|e| e.vers.clone()).collect();
        self.remove_docs_of(&real, &versions)?;
        self.update_search(name, &kept, None);
        if let Some(mut edit) = access {
            let owners = edit.data.forget_owners(&real);
            edit.save()?;
            changes.push(Change::NameReleased {
                name: real.clone(),
                owners,
            });
        }
        Ok(removed.into_iter().map(|e| e.vers).collect())
    }

    /// What a journaled write of `name`'s index file leaves: `entries` rendered, or no file.
    fn index_redo(&self, name: &CrateName, entries: &[IndexEntry]) -> Redo {
        let mut redo = Redo::default();
        let path = self.index_dir.join(index::index_path(name));
        match entries.is_empty() {
            true => redo.remove(&path),
            false => redo.write(&path, index::render_file(entries).into_bytes()),
        }
        redo
    }

    /// Removes deleted versions' crate files and page files (lock held, index committed).
    fn remove_crate_files(&self, real: &str, removed: &[IndexEntry]) -> Result<()> {
        for e in removed {
            let crate_path = self.entry_crate_path(e)?;
            let [info, readme] = crateinfo::sidecars(&crate_path);
            // Page files first: a crash in between leaves a crate file the journal's repair
            // moves aside, never page files without their crate.
            for p in [info, readme, crate_path] {
                match fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                    Err(err) => return Err(err).context(|| format!("removing {}", p.display())),
                }
            }
        }
        let _ = fs::remove_dir(self.crates_dir.join(real));
        Ok(())
    }

    /// `delete NAME` of a crate with no version left: with `release_name`, a deleted crate's
    /// kept name is given up (owners forgotten, tombstones marked); otherwise, or when the
    /// name is not kept, the crate does not exist.
    fn release_deleted_name(
        &self,
        name: &CrateName,
        release_name: bool,
        changes: &mut Vec<Change>,
    ) -> Result<Vec<String>, AuthError> {
        let missing = || Error::NotFound(format!("crate `{name}` does not exist")).into();
        if !release_name {
            return Err(missing());
        }
        let mut edit = auth::Edit::open(self)?;
        if self.name_state(name, &edit.data)? != NameState::Kept {
            return Err(missing());
        }
        let owners = edit.data.forget_owners(name);
        // The tombstones are marked first: if the owners cannot be forgotten, the name stays
        // theirs (recorded owners keep a name) and the delete can be run again.
        let spelled = tombstone::release(&self.root, name, index::Pubtime::now().as_str())?;
        edit.save()?;
        changes.push(Change::NameReleased {
            name: spelled.unwrap_or_else(|| name.to_string()),
            owners,
        });
        Ok(Vec::new())
    }
}
