//! Download counts: how often each version's crate file was served, in all and per day for
//! the last [`RECENT_DAYS`] days.
//!
//! The server counts downloads in memory on its event loop (no system call per download)
//! and hands them to its writer thread once a minute and at shutdown, which adds them here:
//! a kill loses at most the last minute. On disk, one small file per crate that was ever
//! downloaded, `downloads/{canonical name}.json`, rewritten atomically:
//! `{"versions":{"1.0.0":{"total":12,"days":{"20430":5,"20431":7}}}}` (days since the
//! epoch, UTC; older days are dropped as the file is rewritten, the totals stay). The page
//! reader reads one crate's file for its page or its API answer; nothing is kept in memory.
//!
//! Only the server writes these files, a batch at a time under the registry lock (so a
//! backup, which holds it, copies whole files); `backup` carries them and `restore` puts
//! them back.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::store::write_atomic;
use super::{canonical, Context, CrateName, Registry, Result, Version};

/// The directory of the count files, at the registry root.
pub const DOWNLOADS_DIR: &str = "downloads";
/// How many days "recent downloads" covers (crates.io's 90), today included.
pub const RECENT_DAYS: u64 = 90;
const DAY: u64 = 86_400;

/// One crate's file.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Counts {
    versions: BTreeMap<String, Counted>,
}

/// One version's counts.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Counted {
    total: u64,
    /// Day (since the epoch) -> downloads that day, for the last [`RECENT_DAYS`] days.
    #[serde(default)]
    days: BTreeMap<u64, u64>,
}

/// One crate's downloads, per version: (all time, the last [`RECENT_DAYS`] days).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrateDownloads {
    versions: HashMap<String, (u64, u64)>,
}

impl CrateDownloads {
    /// Every download of every version counted here.
    pub fn total(&self) -> u64 {
        self.versions.values().map(|v| v.0).sum()
    }

    /// Downloads in the last [`RECENT_DAYS`] days.
    pub fn recent(&self) -> u64 {
        self.versions.values().map(|v| v.1).sum()
    }

    /// One version's (all time, recent); zeros when it was never downloaded.
    pub fn version(&self, vers: &str) -> (u64, u64) {
        self.versions.get(vers).copied().unwrap_or_default()
    }
}

/// The crate and version of a crate file's path below the crates directory
/// (`{name}/{name}-{vers}.crate`), or `None` for anything else.
fn crate_and_version(rel: &str) -> Option<(CrateName, String)> {
    let (dir, file) = rel.split_once('/')?;
    let name = CrateName::parse(dir).ok()?;
    let vers = file.strip_prefix(dir)?.strip_prefix('-')?;
    let vers = vers.strip_suffix(".crate")?;
    Version::parse(vers).ok()?;
    Some((name, vers.to_owned()))
}

impl Registry {
    fn downloads_path(&self, name: &CrateName) -> PathBuf {
        self.root()
            .join(DOWNLOADS_DIR)
            .join(format!("{}.json", name.canonical()))
    }

    fn read_counts(&self, name: &CrateName) -> Result<Counts> {
        let path = self.downloads_path(name);
        match fs::read(&path) {
            // A damaged file counts from zero again rather than failing every download.
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Counts::default()),
            Err(e) => Err(e).context(|| format!("reading {}", path.display())),
        }
    }

    /// Adds downloads: `(path of the crate file below the crates directory, count)`, as
    /// the server counted them, on day `now` (unix seconds). Paths that name no crate file
    /// are skipped.
    pub fn record_downloads(&self, counts: &[(String, u64)], now: u64) -> Result<()> {
        if counts.is_empty() {
            return Ok(());
        }
        // Also orders the writer thread's batch and the one written at shutdown.
        let _lock = self.lock()?;
        let today = now / DAY;
        let mut by_crate: BTreeMap<String, (CrateName, Vec<(String, u64)>)> = BTreeMap::new();
        for (rel, n) in counts {
            if let Some((name, vers)) = crate_and_version(rel) {
                by_crate
                    .entry(canonical(&name))
                    .or_insert_with(|| (name, Vec::new()))
                    .1
                    .push((vers, *n));
            }
        }
        for (name, versions) in by_crate.into_values() {
            let mut file = self.read_counts(&name)?;
            for (vers, n) in versions {
                let v = file.versions.entry(vers).or_default();
                v.total += n;
                *v.days.entry(today).or_default() += n;
            }
            for v in file.versions.values_mut() {
                v.days.retain(|&day, _| day + RECENT_DAYS > today);
            }
            let bytes = serde_json::to_vec(&file).expect("counts serialize");
            write_atomic(&self.downloads_path(&name), &bytes)?;
        }
        Ok(())
    }

    /// A crate's downloads as of `now` (unix seconds): zeros when it was never downloaded.
    pub fn downloads(&self, name: &CrateName, now: u64) -> Result<CrateDownloads> {
        let today = now / DAY;
        let file = self.read_counts(name)?;
        let versions = file
            .versions
            .into_iter()
            .map(|(vers, v)| {
                let recent: u64 = v
                    .days
                    .iter()
                    .filter(|(&day, _)| day + RECENT_DAYS > today && day <= today)
                    .map(|(_, n)| n)
                    .sum();
                (vers, (v.total, recent))
            })
            .collect();
        Ok(CrateDownloads { versions })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::auth::scratch_registry;

    #[test]
    fn counts_add_up_per_version_and_day_and_old_days_leave_the_recent_sum() {
        let (_t, reg) = scratch_registry();
        let day = |d: u64| d * DAY + 3600;
        let foo = CrateName::parse("Foo-Bar").unwrap();
        reg.record_downloads(
            &[
                ("Foo-Bar/Foo-Bar-1.0.0.crate".into(), 3),
                ("Foo-Bar/Foo-Bar-2.0.0-rc.1.crate".into(), 1),
                ("other/other-0.1.0.crate".into(), 7),
                ("Foo-Bar/not-a-crate-file".into(), 9),
                ("../Foo-Bar-1.0.0.crate".into(), 9),
            ],
            day(20_000),
        )
        .unwrap();
        reg.record_downloads(&[("Foo-Bar/Foo-Bar-1.0.0.crate".into(), 2)], day(20_050))
            .unwrap();
        // Any spelling of the name reads the same file.
        let same = CrateName::parse("foo_bar").unwrap();
        let d = reg.downloads(&same, day(20_050)).unwrap();
        assert_eq!(d.version("1.0.0"), (5, 5));
        assert_eq!(d.version("2.0.0-rc.1"), (1, 1));
        assert_eq!(d.version("3.0.0"), (0, 0));
        assert_eq!((d.total(), d.recent()), (6, 6));
        // 90 days after the first: only the second day's downloads are recent.
        let later = reg.downloads(&foo, day(20_090)).unwrap();
        assert_eq!(later.version("1.0.0"), (5, 2));
        // Rewritten after that, the old day is gone from the file, the total stays.
        reg.record_downloads(&[("Foo-Bar/Foo-Bar-1.0.0.crate".into(), 1)], day(20_090))
            .unwrap();
        let text = fs::read_to_string(reg.downloads_path(&foo)).unwrap();
        assert!(!text.contains("\"20000\""), "{text}");
        let d = reg.downloads(&foo, day(20_090)).unwrap();
        assert_eq!(d.version("1.0.0"), (6, 3));
        assert_eq!(
            reg.downloads(&CrateName::parse("other").unwrap(), day(20_000))
                .unwrap()
                .total(),
            7
        );
        let none = reg.downloads(&CrateName::parse("nothing").unwrap(), 0);
        assert_eq!(none.unwrap(), CrateDownloads::default());
    }
}
