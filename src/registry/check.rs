//! `palletizer check`: the registry's invariants, verified from the files.
//!
//! Every index line has its crate file with the same SHA-256; every crate file has a line;
//! the index working tree and git's index equal the last commit; no git lock file, temp file
//! or journal is left; `search.jsonl` agrees with the index; every tombstone can be read;
//! every docs tree is of a version in the index;
//! the access control files load as the server loads them (a broken `auth.json` makes it
//! refuse every token, and only a person can mend it).
//! Deleted versions (tombstones without index lines or crate files) are what a delete leaves,
//! not a problem. The check holds the registry lock, so a writer at work is never mistaken
//! for a crash.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::PathBuf;

use super::index::{self, git, search};
use super::names::{canonical, CrateName};
use super::publish::{crateinfo, tarball};
use super::versions::tombstone;
use super::{Context, IndexEntry, Registry, Result};

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    MissingCrateFile {
        name: String,
        vers: String,
        path: PathBuf,
    },
    ChecksumMismatch {
        name: String,
        vers: String,
        path: PathBuf,
    },
    InvalidEntry {
        file: String,
        detail: String,
    },
    OrphanCrateFile {
        path: PathBuf,
    },
    Uncommitted {
        path: String,
    },
    Staged {
        path: String,
    },
    StaleGitFile {
        path: PathBuf,
    },
    /// Git's index file (a cache) cannot be read.
    BrokenGitIndex,
    /// A write was cut short: the journal still names the crates it was changing.
    UnfinishedWrite,
    TempFile {
        path: PathBuf,
    },
    SearchOutOfDate {
        name: String,
    },
    /// Lines of the tombstone file that cannot be read: those deleted versions could be
    /// published again.
    DamagedTombstones {
        lines: Vec<usize>,
    },
    /// `auth.json` (or what locates it) does not load: the server answers 503 to every
    /// request that needs a token. `detail` names the file and says why.
    BrokenAccessControl {
        detail: String,
    },
    /// Docs of a version the index does not have (left by a hand edit or a crash).
    OrphanDocs {
        name: String,
        vers: String,
        path: PathBuf,
    },
}

impl Problem {
    /// Whether `--repair` can fix it without inventing or losing data.
    pub fn repairable(&self) -> bool {
        !matches!(
            self,
            Problem::MissingCrateFile { .. }
                | Problem::ChecksumMismatch { .. }
                | Problem::InvalidEntry { .. }
                | Problem::DamagedTombstones { .. }
                | Problem::BrokenAccessControl { .. }
        )
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::MissingCrateFile { name, vers, path } => {
                write!(f, "{name} {vers}: crate file {} is missing", path.display())
            }
            Problem::ChecksumMismatch { name, vers, path } => write!(
                f,
                "{name} {vers}: crate file {} does not match the index checksum",
                path.display()
            ),
            Problem::InvalidEntry { file, detail } => {
                write!(f, "index file {file} has an invalid line: {detail}")
            }
            Problem::OrphanCrateFile { path } => write!(
                f,
                "crate file {} has no index line (--repair moves it to {}/)",
                path.display(),
                super::store::ORPHANS_DIR
            ),
            Problem::Uncommitted { path } => {
                write!(f, "index file {path} differs from the last commit")
            }
            Problem::Staged { path } => {
                write!(
                    f,
                    "git's index stages {path}, which the last commit does not have"
                )
            }
            Problem::StaleGitFile { path } => {
                write!(f, "git lock or temp file {} left behind", path.display())
            }
            Problem::TempFile { path } => write!(f, "temp file {} left behind", path.display()),
            Problem::BrokenGitIndex => write!(f, "git's index file cannot be read"),
            Problem::UnfinishedWrite => write!(
                f,
                "a write was cut short (the journal {} names crates to finish)",
                super::store::JOURNAL_FILE
            ),
            Problem::SearchOutOfDate { name } => {
                write!(f, "search data for {name} disagrees with the index")
            }
            Problem::DamagedTombstones { lines } => {
                let lines: Vec<String> = lines.iter().map(usize::to_string).collect();
                write!(
                    f,
                    "{} line(s) {} cannot be read: the deleted versions they record could be \
                     published again (mend them by hand)",
                    tombstone::TOMBSTONE_FILE,
                    lines.join(", ")
                )
            }
            Problem::BrokenAccessControl { detail } => write!(
                f,
                "access control does not load ({detail}): the server refuses every token until \
                 it is mended by hand (--repair leaves it alone)"
            ),
            Problem::OrphanDocs { name, vers, path } => write!(
                f,
                "docs {} are of {name} {vers}, which the index does not have (--repair removes \
                 them)",
                path.display()
            ),
        }
    }
}

impl Registry {
    /// Lists every broken invariant (see the module docs).
    pub fn check(&self) -> Result<Vec<Problem>> {
        check(self)
    }

    /// Fixes what `palletizer check --repair` can: the crash recovery of
    /// [`Registry::recover`], then orphan crate files moved aside and search lines rebuilt.
    /// Returns what it did.
    pub fn repair(&self, problems: &[Problem]) -> Result<Vec<String>> {
        repair(self, problems)
    }
}

/// Lists every broken invariant.
pub fn check(reg: &Registry) -> Result<Vec<Problem>> {
    let _lock = reg.lock()?;
    let mut problems = Vec::new();
    let mut expected = BTreeSet::new();
    let mut crates: BTreeMap<String, Vec<IndexEntry>> = BTreeMap::new();
    for (rel, path) in reg.index_files()? {
        let text =
            std::fs::read_to_string(&path).context(|| format!("reading {}", path.display()))?;
        for e in index::parse_file(&text) {
            let crate_path = match reg.entry_crate_path(&e) {
                Ok(p) => p,
                Err(err) => {
                    problems.push(Problem::InvalidEntry {
                        file: rel.clone(),
                        detail: err.to_string(),
                    });
                    continue;
                }
            };
            expected.insert(crate_path.clone());
            expected.extend(crateinfo::sidecars(&crate_path));
            let (name, vers) = (e.name.clone(), e.vers.clone());
            match File::open(&crate_path) {
                Err(_) => problems.push(Problem::MissingCrateFile {
                    name,
                    vers,
                    path: crate_path,
                }),
                Ok(f) => {
                    let sum = tarball::sha256_hex(f)
                        .context(|| format!("reading {}", crate_path.display()))?;
                    if sum != e.cksum {
                        problems.push(Problem::ChecksumMismatch {
                            name,
                            vers,
                            path: crate_path,
                        });
                    }
                }
            }
            crates.entry(canonical(&e.name)).or_default().push(e);
        }
    }
    let temps: BTreeSet<PathBuf> = reg.temp_files()?.into_iter().collect();
    let mut found = Vec::new();
    super::store::walk_files(reg.crates_dir(), "", &mut |_, p| found.push(p.to_owned()))
        .context(|| format!("reading {}", reg.crates_dir().display()))?;
    for p in found {
        let temp = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(super::store::is_temp_name);
        if !expected.contains(&p) && !temp {
            problems.push(Problem::OrphanCrateFile { path: p });
        }
    }
    if git::index_readable(reg.index_dir())? {
        for path in git::dirty_paths(reg.index_dir())? {
            problems.push(Problem::Uncommitted { path });
        }
        // Commits leave git's index file behind HEAD until the next checkpoint, which puts
        // it back in step: staged paths tell of a failed commit only once none waits.
        if reg.read_journal()?.is_empty() {
            for path in git::staged(reg.index_dir())? {
                problems.push(Problem::Staged { path });
            }
        }
    } else {
        problems.push(Problem::BrokenGitIndex);
    }
    for path in git::stale_files(reg.index_dir())
        .context(|| format!("reading {}", reg.index_dir().display()))?
    {
        problems.push(Problem::StaleGitFile { path });
    }
    problems.extend(temps.into_iter().map(|path| Problem::TempFile { path }));
    problems.extend(
        reg.stale_docs_temps()
            .into_iter()
            .map(|path| Problem::TempFile { path }),
    );
    let journal = reg.read_journal()?;
    if !journal.is_empty() && !journal.is_live() {
        problems.push(Problem::UnfinishedWrite);
    }
    problems.extend(search_problems(reg, &crates)?);
    for (name, vers, path) in reg.orphan_docs(&crates) {
        problems.push(Problem::OrphanDocs { name, vers, path });
    }
    let (_, damaged) = tombstone::read(reg.root())?;
    if !damaged.is_empty() {
        problems.push(Problem::DamagedTombstones { lines: damaged });
    }
    // Loaded as the server loads it, so that what it refuses is what this reports.
    if let Err(e) = super::auth::AuthView::load(reg.root()) {
        problems.push(Problem::BrokenAccessControl {
            detail: e.to_string(),
        });
    }
    Ok(problems)
}

/// Crates whose search line is missing, stale or left over.
fn search_problems(
    reg: &Registry,
    crates: &BTreeMap<String, Vec<IndexEntry>>,
) -> Result<Vec<Problem>> {
    let mut lines = BTreeMap::new();
    // What cannot be read counts as missing.
    let _ = reg.for_each_search_line(|line| {
        lines.insert(canonical(&line.name), line);
    });
    let mut out = Vec::new();
    for (key, entries) in crates {
        let agrees = lines.remove(key).is_some_and(|l| {
            l.name == entries[0].name
                && l.max_version == search::max_version(entries).unwrap_or_default()
        });
        if !agrees {
            out.push(Problem::SearchOutOfDate {
                name: entries[0].name.clone(),
            });
        }
    }
    out.extend(
        lines
            .into_values()
            .map(|l| Problem::SearchOutOfDate { name: l.name }),
    );
    Ok(out)
}

/// Fixes what `--repair` can: the crash recovery of [`Registry::recover`], then orphan
/// crate files moved aside and search lines rebuilt. Returns what it did.
pub fn repair(reg: &Registry, problems: &[Problem]) -> Result<Vec<String>> {
    let mut done = reg.recover()?;
    let _lock = reg.lock()?;
    for p in problems {
        match p {
            Problem::OrphanCrateFile { path } if path.exists() => {
                let to = reg.move_aside(path)?;
                done.push(format!(
                    "moved crate file without index line {} to {}",
                    path.display(),
                    to.display()
                ));
            }
            Problem::OrphanDocs { path, .. } if path.exists() => {
                reg.remove_orphan_docs(path)?;
                done.push(format!(
                    "removed docs without their version {}",
                    path.display()
                ));
            }
            Problem::SearchOutOfDate { name } => {
                let entries = match CrateName::parse(name) {
                    Ok(n) => reg.entries(&n)?,
                    Err(_) => Vec::new(),
                };
                reg.rebuild_search_line(name, &entries)?;
                done.push(format!("rebuilt the search line of {name}"));
            }
            _ => {}
        }
    }
    // The rebuilt lines go into the sorted file: a repaired registry is left as a
    // checkpoint leaves it.
    search::compact(reg.root())?;
    Ok(done)
}
