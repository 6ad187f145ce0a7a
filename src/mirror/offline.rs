//! The mirror's maintenance from the command line: filling the cache from lockfiles
//! (`mirror fetch`), dropping old crate files (`mirror prune`), and checking every cached
//! crate file against its index line (`mirror check`).

use std::collections::BTreeSet;
use std::fs;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::{parse_crate_rel, walk_files, FetchError, Mirror};
use crate::registry::index_path_of;

/// The sources a lockfile names crates.io by.
const CRATES_IO_SOURCES: [&str; 2] = [
    "registry+https://github.com/rust-lang/crates.io-index",
    "sparse+https://index.crates.io/",
];

/// The crates.io packages of a lockfile: (name, version).
pub fn lockfile_packages(text: &str) -> Result<Vec<(String, String)>, String> {
    #[derive(serde::Deserialize)]
    struct Lock {
        #[serde(default)]
        package: Vec<Package>,
    }
    #[derive(serde::Deserialize)]
    struct Package {
        name: String,
        version: String,
        #[serde(default)]
        source: Option<String>,
    }
    let lock: Lock = toml::from_str(text).map_err(|e| e.message().to_owned())?;
    Ok(lock
        .package
        .into_iter()
        .filter(|p| {
            p.source
                .as_deref()
                .is_some_and(|s| CRATES_IO_SOURCES.contains(&s))
        })
        .map(|p| (p.name, p.version))
        .collect())
}

/// What `mirror fetch` did.
#[derive(Debug, Default)]
pub struct Fetched {
    pub total: usize,
    /// (name, version, why) of each package that could not be had.
    pub failed: Vec<(String, String, String)>,
}

/// Fills the cache with every crates.io package of `lockfiles` (their index files and
/// crate files), a few at a time; progress on stderr when it is a terminal.
pub fn fetch_lockfiles(mirror: &Mirror, lockfiles: &[&Path]) -> Result<Fetched, String> {
    let mut wanted = BTreeSet::new();
    for path in lockfiles {
        let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let pkgs = lockfile_packages(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        wanted.extend(pkgs);
    }
    let wanted: Vec<(String, String)> = wanted.into_iter().collect();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let failed = Mutex::new(Vec::new());
    let tty = std::io::stderr().is_terminal();
    let threads = mirror.settings().fetchers.min(wanted.len()).max(1);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((name, vers)) = wanted.get(i) else {
                    return;
                };
                if let Err(e) = mirror.ensure_crate(name, vers) {
                    let why = e.to_string();
                    failed
                        .lock()
                        .unwrap()
                        .push((name.clone(), vers.clone(), why));
                }
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if tty {
                    let _ = write!(
                        std::io::stderr(),
                        "\r\x1b[K[{n}/{}] {name} {vers}",
                        wanted.len()
                    );
                }
            });
        }
    });
    if tty {
        let _ = writeln!(std::io::stderr(), "\r\x1b[K");
    }
    let mut failed = failed.into_inner().unwrap();
    failed.sort();
    Ok(Fetched {
        total: wanted.len(),
        failed,
    })
}

/// What `mirror prune` removed.
#[derive(Debug, Default)]
pub struct Pruned {
    pub files: usize,
    pub bytes: u64,
    pub kept_bytes: u64,
}

/// Removes crate files fetched more than `older_than` ago, then the oldest ones until at
/// most `max_bytes` are left. Index files stay (they are small, and revalidated anyway).
pub fn prune(mirror: &Mirror, older_than: Option<Duration>, max_bytes: Option<u64>) -> Pruned {
    let dir = mirror.layout().crates_dir();
    let mut files: Vec<(SystemTime, String, u64)> = walk_files(&dir)
        .into_iter()
        .map(|(rel, len)| {
            let at = fs::metadata(dir.join(&rel))
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            (at, rel, len)
        })
        .collect();
    files.sort();
    let mut total: u64 = files.iter().map(|f| f.2).sum();
    let cutoff = older_than.and_then(|d| SystemTime::now().checked_sub(d));
    let mut out = Pruned::default();
    for (at, rel, len) in files {
        let old = cutoff.is_some_and(|c| at < c);
        let over = max_bytes.is_some_and(|m| total > m);
        if !(old || over) {
            continue;
        }
        if fs::remove_file(dir.join(&rel)).is_ok() {
            total -= len;
            out.files += 1;
            out.bytes += len;
        }
    }
    out.kept_bytes = total;
    mirror
        .stats()
        .cache_bytes
        .store(total, std::sync::atomic::Ordering::Relaxed);
    out
}

/// Checks every cached crate file against the `cksum` of its line in the cached index
/// file (no upstream request). Returns the problems, one line each.
pub fn check(mirror: &Mirror) -> (usize, Vec<String>) {
    let l = mirror.layout();
    let files = walk_files(&l.crates_dir());
    let mut problems = Vec::new();
    for (rel, _) in &files {
        let Some((name, vers)) = parse_crate_rel(rel) else {
            problems.push(format!("{rel}: not a crate file's path"));
            continue;
        };
        match cached_cksum(mirror, &name, &vers) {
            Err(e) => problems.push(format!("{rel}: {e}")),
            Ok(want) => match fs::File::open(l.crate_file(rel)).and_then(sha256_of) {
                Ok(got) if got == want => {}
                Ok(got) => problems.push(format!(
                    "{rel}: checksum {got}, but its index line says {want}"
                )),
                Err(e) => problems.push(format!("{rel}: {e}")),
            },
        }
    }
    (files.len(), problems)
}

/// The `cksum` of `vers` of `name` in the cached index file.
pub fn cached_cksum(mirror: &Mirror, name: &str, vers: &str) -> Result<String, FetchError> {
    let rel = index_path_of(name);
    let raw = mirror
        .layout()
        .read_index(&rel)
        .map_err(|e| FetchError::Storage(e.to_string()))?
        .ok_or_else(|| FetchError::NotFound(format!("no cached index file for {name}")))?;
    super::line_of(&raw, name, vers)
        .map(|l| l.cksum)
        .ok_or_else(|| FetchError::NotFound(format!("{name} {vers} is not in its index file")))
}

/// The hex SHA-256 of everything `r` reads.
pub fn sha256_of(mut r: impl std::io::Read) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match r.read(&mut buf)? {
            0 => break,
            n => h.update(&buf[..n]),
        }
    }
    Ok(format!("{:x}", h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_crates_io_packages_of_a_lockfile() {
        let lock = r#"
version = 4

[[package]]
name = "app"
version = "0.1.0"

[[package]]
name = "serde"
version = "1.0.200"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "ab"

[[package]]
name = "private"
version = "0.2.0"
source = "sparse+https://reg.example/index/"
"#;
        assert_eq!(
            lockfile_packages(lock).unwrap(),
            vec![("serde".to_owned(), "1.0.200".to_owned())]
        );
        assert!(lockfile_packages("[[package]]\nname = 1").is_err());
    }
}
