//! The index as the registry keeps it: a crate's entries read from its file, the file
//! rewritten whole and committed, the spelling a canonical name is published under, the
//! search lines that follow each write, and the listing of every version.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::registry::index::{self, git, gitpack, search, Found, GitError, SearchLine};
use crate::registry::names::{self, Version};
use crate::registry::publish::tarball;
use crate::registry::store::{
    create_private, is_temp_name, temp_path, walk_files, write_unsynced, Previous,
};
use crate::registry::{Context, CrateName, Error, IndexEntry, PublishMetadata, Registry, Result};

/// One version as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub vers: String,
    pub yanked: bool,
}

impl Registry {
    /// Keeps the index repository packed: once loose objects pass a threshold, they go into
    /// one new pack (or one pack of everything, when packs pile up). Run after changes, off
    /// the request path.
    pub fn maintain(&self) -> Result<Option<git::Packed>> {
        use std::sync::atomic::Ordering;
        // Loose objects as last counted plus an upper bound for the changes since; the
        // first call of an open registry counts them (changes made by another process
        // meanwhile are found at the next count, a little later than otherwise).
        let known = self.loose_estimate.load(Ordering::Relaxed);
        if known != usize::MAX && !git::may_need_packing(known) {
            self.loose_estimate
                .store(known + git::OBJECTS_PER_CHANGE, Ordering::Relaxed);
            return Ok(None);
        }
        let _lock = self.lock()?;
        let (packed, left) = git::maintain(&self.index_dir)?;
        self.loose_estimate.store(left, Ordering::Relaxed);
        Ok(packed)
    }

    /// Rewrites `search.jsonl` whole from the index (lock held): descriptions are kept from
    /// old lines that can still be read and are current, else read from the crate files.
    pub(crate) fn rebuild_search(&self) -> Result<usize> {
        let mut old = std::collections::HashMap::new();
        // Lines that cannot be read (a torn file, the reason for a rebuild) are left out.
        let _ = search::for_each_line(&self.root, |line| {
            old.insert(names::canonical(&line.name), line);
        });
        let mut lines = Vec::new();
        for (_, path) in self.index_files()? {
            let text =
                fs::read_to_string(&path).context(|| format!("reading {}", path.display()))?;
            let entries = index::parse_file(&text);
            let Some(first) = entries.first() else {
                continue;
            };
            let max_version = search::max_version(&entries).unwrap_or_default();
            let line = match old.remove(&names::canonical(&first.name)) {
                Some(l) if l.name == first.name && l.max_version == max_version => l,
                _ => self.search_line_from_files(&entries),
            };
            lines.push(line);
        }
        let n = lines.len();
        search::write_all(&self.root, lines)?;
        Ok(n)
    }

    /// Whether `search.jsonl` says something else than the index about `name`.
    pub(crate) fn search_disagrees(&self, name: &str, entries: &[IndexEntry]) -> Result<bool> {
        let line = search::find(&self.root, name)?;
        Ok(match (entries.first(), line) {
            (None, None) => false,
            (Some(e), Some(l)) => {
                l.name != e.name
                    || l.max_version != search::max_version(entries).unwrap_or_default()
            }
            _ => true,
        })
    }

    /// Rewrites `name`'s search line from the index; the description and keywords come
    /// from the newest version's `Cargo.toml`.
    pub(crate) fn rebuild_search_line(&self, name: &str, entries: &[IndexEntry]) -> Result<()> {
        if entries.is_empty() {
            return search::update(&self.root, name, None);
        }
        search::replace(&self.root, name, self.search_line_from_files(entries))
    }

    /// A crate's search line from its index entries (not empty) and its newest crate file.
    fn search_line_from_files(&self, entries: &[IndexEntry]) -> SearchLine {
        let newest = entries
            .iter()
            .filter_map(|e| Version::parse(&e.vers).ok().map(|v| (v.0, e)))
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, e)| e);
        let (description, keywords) = match newest {
            Some(e) => self.described_by_crate_file(e).unwrap_or_default(),
            None => (None, Vec::new()),
        };
        SearchLine {
            name: entries[0].name.clone(),
            max_version: search::max_version(entries).unwrap_or_default(),
            description,
            keywords,
        }
    }

    /// The description and keywords in a version's crate file.
    fn described_by_crate_file(&self, e: &IndexEntry) -> Result<(Option<String>, Vec<String>)> {
        let path = self.entry_crate_path(e)?;
        let f = File::open(&path).context(|| format!("opening {}", path.display()))?;
        let limits = tarball::Limits {
            max_size: u64::MAX,
            max_unpacked: self.settings.max_unpacked_size,
        };
        let inspected = tarball::inspect(f, limits)?;
        let meta = PublishMetadata::from_manifest(&inspected.manifest)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        Ok((meta.description, meta.keywords))
    }

    /// Reads a crate's index entries (empty when the crate is unknown).
    pub fn entries(&self, name: &CrateName) -> Result<Vec<IndexEntry>> {
        let path = self.index_dir.join(index::index_path(name));
        match fs::read_to_string(&path) {
            Ok(text) => Ok(index::parse_file(&text)
                .into_iter()
                .filter(|e| e.name.eq_ignore_ascii_case(name))
                .collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).context(|| format!("reading {}", path.display())),
        }
    }

    /// The spelling of the published crate whose canonical name equals `name`'s, if any.
    /// Only the first four characters choose an index directory, so at most eight
    /// directories (`-`/`_` at positions 1..4) can hold a colliding name.
    pub fn find_canonical(&self, name: &CrateName) -> Result<Option<String>> {
        let canon = name.canonical();
        let lower = name.to_ascii_lowercase();
        let head: Vec<char> = lower.chars().take(4).collect();
        let seps: Vec<usize> = (0..head.len())
            .filter(|&i| head[i] == '-' || head[i] == '_')
            .collect();
        let mut dirs = Vec::new();
        for mask in 0..(1u32 << seps.len()) {
            let mut variant: Vec<char> = lower.chars().collect();
            for (bit, &i) in seps.iter().enumerate() {
                variant[i] = if mask & (1 << bit) != 0 { '-' } else { '_' };
            }
            let v: String = variant.into_iter().collect();
            let p = index::index_path_of(&v);
            let dir = Path::new(&p)
                .parent()
                .expect("index paths have a directory")
                .to_owned();
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        for dir in dirs {
            let Ok(rd) = fs::read_dir(self.index_dir.join(&dir)) else {
                continue;
            };
            for f in rd.flatten() {
                let fname = f.file_name();
                let Some(fname) = fname.to_str() else {
                    continue;
                };
                if is_temp_name(fname) || names::canonical(fname) != canon {
                    continue;
                }
                let path = format!("{}/{fname}", dir.display());
                let text = fs::read_to_string(self.index_dir.join(&path))
                    .context(|| format!("reading index file {path}"))?;
                if let Some(e) = index::parse_file(&text).into_iter().next() {
                    return Ok(Some(e.name));
                }
            }
        }
        Ok(None)
    }

    /// Rewrites a crate's index file from `entries` (removing it when empty) and commits.
    /// Must be called with the lock held. On failure the file is put back as it was (see
    /// [`Previous`]).
    pub(in crate::registry) fn write_index_file(
        &self,
        name: &CrateName,
        entries: &[IndexEntry],
        message: &str,
    ) -> Result<()> {
        let rel = index::index_path(name);
        let path = self.index_dir.join(&rel);
        let previous = Previous::keep(&path)?;
        let result = (|| {
            if entries.is_empty() {
                if previous.existed() {
                    // Not synced: the journal line holds the removal until the checkpoint.
                    fs::remove_file(&path).context(|| format!("removing {}", path.display()))?;
                }
            } else {
                // Not synced: the journal line holds these bytes until the checkpoint.
                write_unsynced(&path, index::render_file(entries).as_bytes())?;
            }
            self.git_writer()
                .commit_paths(&self.index_dir, &[&rel], message)?;
            Ok(())
        })();
        match result {
            Ok(()) => previous.forget(),
            // Put the file back so the working tree matches the last commit.
            Err(_) => {
                let _ = previous.put_back();
            }
        }
        result
    }

    /// Refreshes the crate's search line after a write (lock held) and clears the journal.
    /// The index commit has already happened, so a failure here is reported but does not
    /// undo the write: the journal keeps the crate, and the next write or open rebuilds it.
    pub(in crate::registry) fn update_search(
        &self,
        name: &CrateName,
        entries: &[IndexEntry],
        described: Option<(Option<String>, Vec<String>)>,
    ) {
        let line = entries.first().map(|e| SearchLine {
            name: e.name.clone(),
            max_version: search::max_version(entries).unwrap_or_default(),
            description: described.as_ref().and_then(|d| d.0.clone()),
            keywords: described.map(|d| d.1).unwrap_or_default(),
        });
        if let Err(e) = search::update(&self.root, name, line) {
            // The journal keeps the crate until the next checkpoint, which repairs nothing:
            // rebuild the line now.
            error!("warning: search data not updated for {name}: {e}");
        }
    }

    /// Finds crates whose name or description holds every word of `query`, ignoring case and
    /// `-`/`_`: exact name first, then names starting with the query, then the rest, each by
    /// name; `per_page` hits at most.
    pub fn search(&self, query: &str, per_page: usize) -> Result<Found> {
        search::search(&self.root, query, per_page)
    }

    /// [`Registry::search`], skipping the first `skip` hits of that order (a later page);
    /// memory holds one page whatever `skip` is.
    pub fn search_page(&self, query: &str, skip: usize, per_page: usize) -> Result<Found> {
        search::search_page(&self.root, query, skip, per_page)
    }

    /// Where the search files are (`search.jsonl` and the changes since): a reader that
    /// keeps what it made from them checks whether they changed.
    pub fn search_paths(&self) -> [PathBuf; 2] {
        [search::path(&self.root), search::tail_path(&self.root)]
    }

    /// Calls `f` with every readable line of `search.jsonl`, streaming (damaged lines are
    /// skipped, as search does).
    pub fn for_each_search_line(&self, f: impl FnMut(SearchLine)) -> Result<()> {
        search::for_each_line(&self.root, f)
    }

    /// The crates of the newest "Add NAME VERS" commits, newest first, each once (by
    /// canonical name), at most `names` of them, looking at no more than `commits` commits:
    /// what was published last, read from the index history.
    pub fn recently_added(&self, names: usize, commits: usize) -> Result<Vec<String>> {
        Ok(git::recently_added(&self.index_dir, names, commits)?)
    }

    /// The answer to a git client's `GET info/refs?service=git-upload-pack`.
    pub fn git_refs(&self) -> Result<Vec<u8>, GitError> {
        gitpack::advertise(&self.index_dir)
    }

    /// Answers a git `POST git-upload-pack` body (a negotiation round, an incremental pack,
    /// or a full clone) as a file: for a full clone of the current HEAD, the answer
    /// [`Registry::keep_clone`] kept; otherwise the answer written to a temp file (mode 0600)
    /// in the registry root, unlinked once open.
    pub fn upload_pack(&self, body: &[u8]) -> Result<File, GitError> {
        let out_path = temp_path(&self.root, "git-pack");
        let result = (|| -> Result<File, GitError> {
            let mut out = std::io::BufWriter::new(create_private(&out_path)?);
            let kept = self.clone_cache_dir();
            if let gitpack::Answer::Kept(file) =
                gitpack::upload_pack(&self.index_dir, Some(&kept), body, &mut out)?
            {
                return Ok(file);
            }
            out.flush()?;
            Ok(File::open(&out_path)?)
        })();
        let _ = fs::remove_file(&out_path);
        result
    }

    /// Makes sure the full-clone answer of the git index for the current HEAD is kept, and
    /// removes the ones for older HEADs. Run in the background after the index changed, so
    /// that the next clone is one file send. Nothing is made until someone has cloned: a
    /// registry used through the sparse index never spends the time.
    pub fn keep_clone(&self) -> Result<(), GitError> {
        gitpack::keep_clone(&self.index_dir, &self.clone_cache_dir())
    }

    /// Every version of every crate (or of `name`), sorted by name then version.
    pub fn list(&self, name: Option<&CrateName>) -> Result<Vec<Listed>> {
        let mut entries = match name {
            Some(n) => self.entries(n)?,
            None => {
                let mut all = Vec::new();
                for (_, path) in self.index_files()? {
                    let text = fs::read_to_string(&path)
                        .context(|| format!("reading {}", path.display()))?;
                    all.extend(index::parse_file(&text));
                }
                all
            }
        };
        entries.sort_by(|a, b| {
            let key = |e: &IndexEntry| semver::Version::parse(&e.vers).ok();
            a.name.cmp(&b.name).then_with(|| key(a).cmp(&key(b)))
        });
        Ok(entries
            .into_iter()
            .map(|e| Listed {
                name: e.name,
                vers: e.vers,
                yanked: e.yanked,
            })
            .collect())
    }

    /// Every crate index file: (path relative to the index root, absolute path).
    pub fn index_files(&self) -> Result<Vec<(String, PathBuf)>> {
        let mut out = Vec::new();
        walk_files(&self.index_dir, "", &mut |rel, path| {
            let top_level = !rel.contains('/');
            let name = rel.rsplit('/').next().unwrap_or(rel);
            if !top_level && !is_temp_name(name) {
                out.push((rel.to_owned(), path.to_owned()));
            }
        })
        .context(|| format!("reading {}", self.index_dir.display()))?;
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::registry::auth::scratch_registry;
    use crate::registry::testing::simple_crate;

    fn loose_objects(reg: &crate::registry::Registry) -> usize {
        let objects = reg.index_dir().join(".git/objects");
        std::fs::read_dir(objects)
            .unwrap()
            .flatten()
            .filter(|d| d.file_name().len() == 2)
            .map(|d| std::fs::read_dir(d.path()).unwrap().count())
            .sum()
    }

    /// `maintain` lists the object folders only when the changes since its last count could
    /// have passed the threshold, and still packs once they do: loose objects never pile up
    /// past the threshold plus one change's worth.
    #[test]
    fn maintain_counts_rarely_and_still_packs() {
        let (_tmp, reg) = scratch_registry();
        let mut packed = 0;
        for i in 0..260 {
            let name = format!("many{i:03}");
            reg.publish(None, &simple_crate(&name, "1.0.0", &[])[..])
                .unwrap();
            if reg.maintain().unwrap().is_some() {
                packed += 1;
            }
            assert!(
                loose_objects(&reg)
                    < super::git::LOOSE_OBJECTS_BEFORE_PACKING + 2 * super::git::OBJECTS_PER_CHANGE,
                "after {i}"
            );
        }
        assert!(packed >= 1, "never packed");
    }
}
