//! `palletizer check`: the registry's invariants, verified from the files.
//!
//! Every index line has its crate file with the same SHA-256; every crate file has a line;
//! the index working tree equals its last commit; no temp files are left.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::PathBuf;

use super::{index, tarball, Context, Registry, Result};

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
    OrphanCrateFile {
        path: PathBuf,
    },
    Uncommitted {
        path: String,
    },
    TempFile {
        path: PathBuf,
    },
}

impl Problem {
    /// Whether `--repair` can fix it without inventing or losing data.
    pub fn repairable(&self) -> bool {
        matches!(self, Problem::Uncommitted { .. } | Problem::TempFile { .. })
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
            Problem::OrphanCrateFile { path } => write!(
                f,
                "crate file {} has no index line (publish it with `palletizer add`, or remove it)",
                path.display()
            ),
            Problem::Uncommitted { path } => {
                write!(f, "index file {path} differs from the last commit")
            }
            Problem::TempFile { path } => write!(f, "temp file {} left behind", path.display()),
        }
    }
}

/// Lists every broken invariant.
pub fn check(reg: &Registry) -> Result<Vec<Problem>> {
    let mut problems = Vec::new();
    let mut expected = BTreeSet::new();
    for (_, path) in reg.index_files()? {
        let text =
            std::fs::read_to_string(&path).context(|| format!("reading {}", path.display()))?;
        for e in index::parse_file(&text) {
            let crate_path = reg.crate_path(&e.name, &e.vers);
            expected.insert(crate_path.clone());
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
        }
    }
    let temps: BTreeSet<PathBuf> = reg.temp_files()?.into_iter().collect();
    let mut found = Vec::new();
    super::walk_files(reg.crates_dir(), "", &mut |_, p| found.push(p.to_owned()))
        .context(|| format!("reading {}", reg.crates_dir().display()))?;
    for p in found {
        let temp = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(super::is_temp_name);
        if !expected.contains(&p) && !temp {
            problems.push(Problem::OrphanCrateFile { path: p });
        }
    }
    for path in super::git::dirty_paths(reg.index_dir())? {
        problems.push(Problem::Uncommitted { path });
    }
    problems.extend(temps.into_iter().map(|path| Problem::TempFile { path }));
    Ok(problems)
}
