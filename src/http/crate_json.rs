//! `GET /api/v1/crates/{name}`: one crate as crates.io's API describes it, so tools written
//! for crates.io (dependency dashboards, `cargo info`-like scripts) read it unchanged.
//!
//! Field names and shapes follow crates.io's answer: `crate` with `name`, `max_version`
//! (the highest version not yanked, `"0.0.0"` when all are), `max_stable_version` (the
//! same without pre-releases, `null` when none), `newest_version` (the last published),
//! `description`, `created_at` and `updated_at`; `versions`, highest first, with `num`,
//! `yanked`, `created_at`, `license`, `crate_size`, `checksum`, `rust_version` and the
//! version's own `description` and links. Times are RFC 3339: the index line's `pubtime` where it has one, else the
//! time the crate file was written (it is written once, when the version is published).
//! Download counts as crates.io names them: `downloads` (all time) and `recent_downloads`
//! (the last 90 days) on the crate, `downloads` on each version; they lag the downloads by
//! up to a minute (the server writes them once a minute). Fields crates.io has and this
//! registry does not know (categories) are left out rather than made up.

use std::time::SystemTime;

use serde_json::{json, Value};

use super::errors::registry_error;
use super::response::Response;
use crate::registry::{CrateDownloads, CrateInfo, CrateName, IndexEntry, Registry, Version};

/// crates.io's JSON for the crate `name`, or a 404 that says it is not here.
pub fn crate_json(reg: &Registry, name: &CrateName) -> Response {
    let mut entries = match reg.entries(name) {
        Ok(e) => e,
        Err(e) => return registry_error(e),
    };
    if entries.is_empty() {
        return Response::error(404, &format!("crate `{name}` does not exist"));
    }
    // Highest first; an entry whose version does not parse sorts last.
    entries.sort_by_cached_key(|e| std::cmp::Reverse(Version::parse(&e.vers).ok().map(|v| v.0)));
    let downloads = match reg.downloads(name, crate::registry::now()) {
        Ok(d) => d,
        Err(e) => return registry_error(e),
    };
    let versions: Vec<Described> = entries
        .iter()
        .map(|e| describe(reg, e, &downloads))
        .collect();
    let real_name = &entries[0].name;
    let max = |stable: bool| {
        entries
            .iter()
            .filter(|e| !e.yanked)
            .find(|e| !stable || Version::parse(&e.vers).is_ok_and(|v| v.0.pre.is_empty()))
            .map(|e| e.vers.clone())
    };
    // The crate files' times order publishes finer than the index's seconds.
    let newest = versions
        .iter()
        .max_by_key(|v| (v.written, v.created_at.clone()));
    let oldest = versions
        .iter()
        .min_by_key(|v| (v.written, v.created_at.clone()));
    let body = json!({
        "crate": {
            "id": real_name,
            "name": real_name,
            "description": versions[0].info.description,
            "homepage": versions[0].info.homepage,
            "documentation": versions[0].info.documentation,
            "repository": versions[0].info.repository,
            "max_version": max(false).unwrap_or_else(|| "0.0.0".to_owned()),
            "max_stable_version": max(true),
            "newest_version": newest.map(|v| v.entry.vers.as_str()),
            "created_at": oldest.map(|v| v.created_at.as_str()),
            "updated_at": newest.map(|v| v.created_at.as_str()),
            "downloads": downloads.total(),
            "recent_downloads": downloads.recent(),
        },
        "versions": versions.iter().map(Described::to_json).collect::<Vec<Value>>(),
    });
    Response::json(200, &body)
}

/// One version with what the index line lacks.
struct Described<'a> {
    entry: &'a IndexEntry,
    info: CrateInfo,
    created_at: String,
    /// When the crate file was written (once, at publish).
    written: Option<SystemTime>,
    crate_size: Option<u64>,
    /// All time.
    downloads: u64,
}

fn describe<'a>(
    reg: &Registry,
    entry: &'a IndexEntry,
    downloads: &CrateDownloads,
) -> Described<'a> {
    let path = reg.entry_crate_path(entry).ok();
    let meta = path.as_deref().and_then(|p| std::fs::metadata(p).ok());
    let written = meta.as_ref().and_then(|m| m.modified().ok());
    let created_at = entry
        .pubtime
        .clone()
        .or_else(|| written.map(rfc3339))
        .unwrap_or_default();
    Described {
        entry,
        info: reg.crate_info(entry),
        created_at,
        written,
        crate_size: meta.map(|m| m.len()),
        downloads: downloads.version(&entry.vers).0,
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Described<'_> {
    fn to_json(&self) -> Value {
        let e = self.entry;
        json!({
            "crate": e.name,
            "num": e.vers,
            "yanked": e.yanked,
            "created_at": self.created_at,
            "updated_at": self.created_at,
            "license": self.info.license,
            "description": self.info.description,
            "homepage": self.info.homepage,
            "documentation": self.info.documentation,
            "repository": self.info.repository,
            "crate_size": self.crate_size,
            "checksum": e.cksum,
            "rust_version": e.rust_version,
            "downloads": self.downloads,
        })
    }
}
