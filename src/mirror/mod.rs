//! A caching mirror of crates.io (or any sparse index), beside the registry: its own tree
//! of index files and crate files under `mirror/` in the registry (see [`cache`]), its own
//! upstream client ([`upstream`]), its policy ([`policy`]). The registry's own crates and
//! the mirror are separate indexes; nothing here touches the registry's files.
//!
//! Invariants:
//! - Index files are kept as the upstream sent them; the policy is applied when they are
//!   served, so a changed policy needs no refetch.
//! - A crate file is stored only once its SHA-256 equals the `cksum` of its index line, by
//!   rename from `tmp/` when whole: no client is ever served a byte of an unchecked file.
//!   Stored crate files never change.
//! - Nothing here runs on the event loop: the server calls these blocking functions from
//!   its mirror threads, the CLI inline.
//! - Offline, the upstream is never contacted.

pub mod bundle;
pub mod cache;
pub mod flights;
pub mod offline;
pub mod policy;
pub mod upstream;

use std::fs;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::registry::{index_path_of, now, MirrorSettings};
pub use cache::Layout;
pub use policy::Policy;
use upstream::{Failure, IndexAnswer, Upstream};

/// The mirror's counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests answered from the cache without asking the upstream.
    pub hits: AtomicU64,
    /// Files fetched because the cache had no copy.
    pub misses: AtomicU64,
    /// Revalidations the upstream answered 304, and those that brought a new copy.
    pub revalidated: AtomicU64,
    pub refreshed: AtomicU64,
    /// Index files served from an old copy because the upstream failed.
    pub stale: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub bytes_fetched: AtomicU64,
    /// Index lines left out by the policy.
    pub hidden: AtomicU64,
    /// Crate files refused for a checksum that is not their index line's.
    pub checksum_refused: AtomicU64,
    /// Bytes of crate files in the cache (counted at start, then as they are stored).
    pub cache_bytes: AtomicU64,
}

/// Why the mirror cannot give a file.
#[derive(Debug, Clone)]
pub enum FetchError {
    /// The upstream failed or timed out, and no copy was cached.
    Upstream(Failure),
    /// No such file (upstream, or offline and not cached).
    NotFound(String),
    /// The policy hides it.
    Hidden(String),
    /// The upstream's crate file is not the one its index line names.
    Checksum(String),
    /// The cache could not be read or written.
    Storage(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Upstream(u) => write!(f, "the upstream failed: {}", u.detail),
            FetchError::NotFound(d)
            | FetchError::Hidden(d)
            | FetchError::Checksum(d)
            | FetchError::Storage(d) => f.write_str(d),
        }
    }
}

fn storage(what: &str, e: io::Error) -> FetchError {
    FetchError::Storage(format!("the mirror's cache: {what}: {e}"))
}

/// An index file as served: the upstream's bytes less hidden lines, and a strong ETag of
/// exactly those bytes.
pub struct Served {
    pub bytes: Vec<u8>,
    pub etag: String,
}

/// The fields of an index line the mirror reads.
#[derive(serde::Deserialize)]
struct Line {
    name: String,
    vers: String,
    cksum: String,
    #[serde(default)]
    pubtime: Option<String>,
}

/// The mirror: cheap to clone, shared by the server's mirror threads.
#[derive(Clone)]
pub struct Mirror {
    inner: Arc<Inner>,
}

struct Inner {
    layout: Layout,
    settings: MirrorSettings,
    ttl: u64,
    policy: Policy,
    /// `None` when offline: there is nothing to ask.
    upstream: Option<Upstream>,
    stats: Stats,
}

impl Mirror {
    /// The mirror of the registry at `root`, as `settings` describe it.
    pub fn open(root: &Path, settings: &MirrorSettings) -> Result<Mirror, String> {
        settings.check()?;
        let (deny, allow) = settings.rules()?;
        let policy = Policy {
            min_age: settings.min_age()?.map(|d| d.as_secs()),
            deny,
            allow,
        };
        let upstream = match settings.offline {
            true => None,
            false => Some(Upstream::new(settings)?),
        };
        let layout = Layout::new(root.join("mirror"));
        for dir in [layout.index_dir(), layout.crates_dir()] {
            fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        Ok(Mirror {
            inner: Arc::new(Inner {
                layout,
                ttl: settings.ttl()?.as_secs(),
                settings: settings.clone(),
                policy,
                upstream,
                stats: Stats::default(),
            }),
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }
    pub fn settings(&self) -> &MirrorSettings {
        &self.inner.settings
    }
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }
    pub fn offline(&self) -> bool {
        self.inner.upstream.is_none()
    }

    /// Whether `rel` may be answered from the cache now, without the upstream: confirmed
    /// within the TTL, or offline (where the cache is all there is).
    pub fn is_fresh(&self, rel: &str) -> bool {
        if self.offline() {
            return true;
        }
        self.layout()
            .meta(rel)
            .is_some_and(|m| m.checked.saturating_add(self.inner.ttl) > now())
    }

    /// Makes the cache hold a current answer for index file `rel` (a copy, or the
    /// upstream's word that there is none): fetched on a miss, revalidated once the TTL
    /// passed. When the upstream fails, a copy from before is kept and served (stale).
    pub fn ensure_index(&self, rel: &str) -> Result<(), FetchError> {
        if self.is_fresh(rel) {
            return Ok(());
        }
        let Some(up) = &self.inner.upstream else {
            return Ok(());
        };
        match self.refresh(up, rel) {
            Err(FetchError::Upstream(f)) => {
                self.stats().upstream_errors.fetch_add(1, Relaxed);
                if self.layout().index_file(rel).exists() {
                    self.stats().stale.fetch_add(1, Relaxed);
                    error!(
                        "warning: mirror: serving a stale copy of {rel}: {}",
                        f.detail
                    );
                    return Ok(());
                }
                error!("error: mirror: fetching {rel}: {}", f.detail);
                Err(FetchError::Upstream(f))
            }
            other => other,
        }
    }

    fn refresh(&self, up: &Upstream, rel: &str) -> Result<(), FetchError> {
        let l = self.layout();
        let had = l.index_file(rel).exists();
        let meta = l.meta(rel).filter(|_| had).unwrap_or_default();
        let answer = up
            .index(rel, meta.etag.as_deref(), meta.last_modified.as_deref())
            .map_err(FetchError::Upstream)?;
        let checked = now();
        let stats = self.stats();
        match answer {
            IndexAnswer::Fresh {
                bytes,
                etag,
                last_modified,
            } => {
                stats.bytes_fetched.fetch_add(bytes.len() as u64, Relaxed);
                let counter = if had { &stats.refreshed } else { &stats.misses };
                counter.fetch_add(1, Relaxed);
                let meta = cache::Meta {
                    etag,
                    last_modified,
                    checked,
                    missing: false,
                };
                l.store_index(rel, &bytes, &meta)
                    .map_err(|e| storage(rel, e))
            }
            IndexAnswer::NotModified => {
                stats.revalidated.fetch_add(1, Relaxed);
                let meta = cache::Meta { checked, ..meta };
                l.write_meta(rel, &meta).map_err(|e| storage(rel, e))
            }
            IndexAnswer::Missing => l.store_missing(rel, checked).map_err(|e| storage(rel, e)),
        }
    }

    /// Index file `rel` as served now: `None` when there is none.
    pub fn served_index(&self, rel: &str) -> Result<Option<Served>, FetchError> {
        let Some(raw) = self.layout().read_index(rel).map_err(|e| storage(rel, e))? else {
            return Ok(None);
        };
        let (bytes, hidden) = self.policy().filter(raw, now());
        self.stats().hidden.fetch_add(hidden, Relaxed);
        let digest = Sha256::digest(&bytes);
        let etag = format!("\"{}\"", &format!("{digest:x}")[..32]);
        Ok(Some(Served { bytes, etag }))
    }

    /// Whether the deny and allow lists hide `vers` of `name` (min-age needs the line).
    pub fn listed_hidden(&self, name: &str, vers: &str) -> bool {
        let p = self.policy();
        let lists = Policy {
            min_age: None,
            deny: p.deny.clone(),
            allow: p.allow.clone(),
        };
        lists.hides(name, vers, None, now())
    }

    /// Makes the cache hold the crate file of `vers` of `name`, checked against its index
    /// line, and returns its path below the crates tree.
    pub fn ensure_crate(&self, name: &str, vers: &str) -> Result<String, FetchError> {
        let rel = crate_rel(name, vers);
        if self.listed_hidden(name, vers) {
            return Err(hidden(name, vers));
        }
        if self.layout().crate_file(&rel).exists() {
            return Ok(rel);
        }
        let line = self.find_line(name, vers)?;
        if self
            .policy()
            .hides(&line.name, &line.vers, line.pubtime.as_deref(), now())
        {
            return Err(hidden(name, vers));
        }
        let Some(up) = &self.inner.upstream else {
            return Err(FetchError::NotFound(format!(
                "the mirror is offline and has no copy of {name} {vers}"
            )));
        };
        let url = self.download_url(&line)?;
        self.download(up, &url, &line, &rel)?;
        Ok(rel)
    }

    /// The index line of `vers` of `name` (its index file fetched if need be).
    fn find_line(&self, name: &str, vers: &str) -> Result<Line, FetchError> {
        let index_rel = index_path_of(name);
        self.ensure_index(&index_rel)?;
        let raw = self
            .layout()
            .read_index(&index_rel)
            .map_err(|e| storage(&index_rel, e))?
            .unwrap_or_default();
        line_of(&raw, name, vers)
            .ok_or_else(|| FetchError::NotFound(format!("{name} {vers} is not in the index")))
    }

    /// Where the upstream serves a version's crate file: its `config.json`'s `dl`, with
    /// cargo's markers filled in.
    fn download_url(&self, line: &Line) -> Result<String, FetchError> {
        self.ensure_index("config.json")?;
        let raw = self
            .layout()
            .read_index("config.json")
            .map_err(|e| storage("config.json", e))?
            .ok_or_else(|| FetchError::NotFound("the upstream has no config.json".into()))?;
        let dl = serde_json::from_slice::<serde_json::Value>(&raw)
            .ok()
            .and_then(|v| v.get("dl")?.as_str().map(str::to_owned))
            .ok_or_else(|| {
                FetchError::Upstream(Failure {
                    detail: "the upstream's config.json has no `dl`".into(),
                    timeout: false,
                })
            })?;
        Ok(expand_dl(&dl, &line.name, &line.vers, &line.cksum))
    }

    /// Streams the crate file to `tmp/` while hashing it; renamed into place only when its
    /// SHA-256 is the line's `cksum`. Memory stays flat whatever the size.
    fn download(&self, up: &Upstream, url: &str, line: &Line, rel: &str) -> Result<(), FetchError> {
        let l = self.layout();
        let (mut file, tmp) = l.temp("crate").map_err(|e| storage(rel, e))?;
        let mut hasher = Sha256::new();
        let max = self.settings().max_crate_size;
        let got = up.download(url, max, &mut file, |chunk| hasher.update(chunk));
        let stats = self.stats();
        let result = got.map_err(FetchError::Upstream).and_then(|n| {
            stats.bytes_fetched.fetch_add(n, Relaxed);
            let sum = format!("{:x}", hasher.finalize());
            if sum != line.cksum {
                stats.checksum_refused.fetch_add(1, Relaxed);
                let detail = format!(
                    "the upstream's crate file of {} {} has checksum {sum}, not {} as its \
                     index line says; refused and not cached",
                    line.name, line.vers, line.cksum
                );
                error!("error: mirror: {detail}");
                return Err(FetchError::Checksum(detail));
            }
            file.sync_all().map_err(|e| storage(rel, e))?;
            l.commit(&tmp, &l.crate_file(rel))
                .map_err(|e| storage(rel, e))?;
            stats.misses.fetch_add(1, Relaxed);
            stats.cache_bytes.fetch_add(n, Relaxed);
            Ok(())
        });
        if let Err(e) = &result {
            let _ = fs::remove_file(&tmp);
            if let FetchError::Upstream(f) = e {
                stats.upstream_errors.fetch_add(1, Relaxed);
                error!(
                    "error: mirror: fetching {} {}: {}",
                    line.name, line.vers, f.detail
                );
            }
        }
        result
    }

    /// Counts the crate files' bytes (for the cache size gauge).
    pub fn count_cache(&self) {
        let bytes = walk_files(&self.layout().crates_dir())
            .iter()
            .map(|(_, len)| len)
            .sum();
        self.stats().cache_bytes.store(bytes, Relaxed);
    }
}

/// The line of `vers` of `name` in an index file's bytes.
fn line_of(raw: &[u8], name: &str, vers: &str) -> Option<Line> {
    raw.split(|&b| b == b'\n')
        .filter_map(|l| serde_json::from_slice::<Line>(l).ok())
        .find(|l| l.vers == vers && l.name == name)
}

fn hidden(name: &str, vers: &str) -> FetchError {
    FetchError::Hidden(format!("{name} {vers} is hidden by the mirror's policy"))
}

/// A crate file's path below the crates tree: `{name}/{name}-{vers}.crate`.
pub fn crate_rel(name: &str, vers: &str) -> String {
    format!("{name}/{name}-{vers}.crate")
}

/// The name and version in a crate file's path (`{name}/{name}-{vers}.crate`), if it is
/// one: a valid crate name and a valid version.
pub fn parse_crate_rel(rel: &str) -> Option<(String, String)> {
    let (name, file) = rel.split_once('/')?;
    let vers = file
        .strip_prefix(name)?
        .strip_prefix('-')?
        .strip_suffix(".crate")?;
    if !name_ok(name) {
        return None;
    }
    semver::Version::parse(vers).ok()?;
    Some((name.to_owned(), vers.to_owned()))
}

/// Whether `name` can be a crate's name upstream: crates.io's rule (an ASCII letter, then
/// letters, digits, `-` and `_`, at most 64), without the local registry's reserved names
/// (crates published before a name was reserved are still served).
pub fn name_ok(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphabetic()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
}

/// Whether `rel` is where a sparse index keeps a crate's file (`3/f/foo`).
pub fn is_index_rel(rel: &str) -> bool {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    name_ok(file) && index_path_of(file) == rel
}

/// `dl` with cargo's markers replaced; without any, cargo's default suffix.
pub fn expand_dl(dl: &str, name: &str, vers: &str, cksum: &str) -> String {
    const MARKERS: [&str; 5] = [
        "{crate}",
        "{version}",
        "{prefix}",
        "{lowerprefix}",
        "{sha256-checksum}",
    ];
    if !MARKERS.iter().any(|m| dl.contains(m)) {
        return format!("{}/{name}/{vers}/download", dl.trim_end_matches('/'));
    }
    let lower = index_path_of(name);
    let lowerprefix = lower.rsplit_once('/').map_or("", |(p, _)| p).to_owned();
    let prefix = match name.len() {
        1 => "1".to_owned(),
        2 => "2".to_owned(),
        3 => format!("3/{}", &name[..1]),
        _ => format!("{}/{}", &name[..2], &name[2..4]),
    };
    dl.replace("{crate}", name)
        .replace("{version}", vers)
        .replace("{prefix}", &prefix)
        .replace("{lowerprefix}", &lowerprefix)
        .replace("{sha256-checksum}", cksum)
}

/// Every file below `dir` with its length, as paths relative to `dir`.
pub fn walk_files(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else if let Ok(rel) = e.path().strip_prefix(dir) {
                out.push((rel.to_string_lossy().into_owned(), meta.len()));
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_paths_parse_only_when_name_and_version_are_valid() {
        let p = |s| parse_crate_rel(s);
        assert_eq!(
            p("Serde_json/Serde_json-1.0.0+x.crate"),
            Some(("Serde_json".into(), "1.0.0+x".into()))
        );
        assert_eq!(p("serde/serde-1.0.0"), None);
        assert_eq!(p("serde/serdf-1.0.0.crate"), None);
        assert_eq!(p("serde/serde-one.crate"), None);
        assert_eq!(p("se rde/se rde-1.0.0.crate"), None);
        assert_eq!(crate_rel("a", "1.0.0"), "a/a-1.0.0.crate");
    }

    #[test]
    fn dl_templates_expand_as_cargo_does() {
        let e = |dl| expand_dl(dl, "MyCrate", "0.1.0", "abc");
        assert_eq!(
            e("https://static.crates.io/crates"),
            "https://static.crates.io/crates/MyCrate/0.1.0/download"
        );
        assert_eq!(
            e("http://h/dl/{prefix}/{lowerprefix}/{crate}/{version}/{sha256-checksum}"),
            "http://h/dl/My/Cr/my/cr/MyCrate/0.1.0/abc"
        );
        assert_eq!(
            expand_dl("x/{prefix}/{crate}", "foo", "1.0.0", ""),
            "x/3/f/foo"
        );
    }
}
