//! The mirror's routes: `/mirror/index/{file}` (its own `config.json`, and the upstream's
//! index files less what the policy hides) and `/mirror/crates/{name}/{name}-{vers}.crate`.
//!
//! The loop only checks the path ([`want_index`], [`want_crate`]) and hands the request
//! to the mirror lane. There [`first_look`] answers from the cache when it can (crate files
//! go out through [`files::crate_file`], as the registry's own: `sendfile` or mmap
//! windows); otherwise the file is fetched ([`fetch`], on a fetcher thread) and
//! [`after_fetch`] answers everyone who waited for it. Failures are cargo-readable:
//! `{"errors":[{"detail":…}]}` with 404 (no such file), 403 (hidden by the policy), 502 (the
//! upstream failed, or sent a crate file that is not its index line's) or 504 (it timed
//! out), the last two only when no copy was cached.

use std::sync::atomic::Ordering::Relaxed;

use super::files::{self, Caches, Tree};
use super::request::Head;
use super::response::{Body, Response};
use crate::mirror::{is_index_rel, parse_crate_rel, FetchError, Mirror};

/// A mirror request, as the loop hands it to the mirror lane.
#[derive(Debug, Clone)]
pub struct Want {
    pub file: File,
    /// The request's head, for its validators.
    pub head: Head,
    /// The registry is private (`auth-required`; caches keep nothing shared).
    pub private: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum File {
    /// The mirror's own `config.json`.
    Config,
    /// An index file (`3/f/foo`).
    Index(String),
    /// A crate file, with its path below the crates tree.
    Crate {
        rel: String,
        name: String,
        vers: String,
    },
}

impl Want {
    fn caches(&self) -> Caches {
        match self.private {
            true => Caches::ClientOnly,
            false => Caches::Shared,
        }
    }

    /// The key its fetch is coalesced by.
    pub fn key(&self) -> String {
        match &self.file {
            File::Config => "config".into(),
            File::Index(rel) => format!("i:{rel}"),
            File::Crate { rel, .. } => format!("c:{rel}"),
        }
    }
}

/// `/mirror/index/{rest}`: the file, or the refusal of its path.
pub fn want_index(rest: &str) -> Result<File, Response> {
    let rel = files::safe_relative(rest).map_err(|s| Response::error(s, "invalid path"))?;
    if rel == "config.json" {
        return Ok(File::Config);
    }
    if !is_index_rel(&rel) {
        // Only a crate's index file: nothing else of the upstream is mirrored.
        return Err(not_found("index file"));
    }
    Ok(File::Index(rel))
}

/// `/mirror/crates/{rest}`: the crate file, or the refusal of its path.
pub fn want_crate(rest: &str) -> Result<File, Response> {
    let rel = files::safe_relative(rest).map_err(|s| Response::error(s, "invalid path"))?;
    match parse_crate_rel(&rel) {
        Some((name, vers)) => Ok(File::Crate { rel, name, vers }),
        None => Err(not_found("crate file")),
    }
}

fn not_found(what: &str) -> Response {
    Response::error(404, &format!("{what} not found")).header("Cache-Control", "no-cache")
}

/// What the mirror lane does with a request.
pub enum Step {
    Answer(Response),
    /// Fetch the file (coalesced by [`Want::key`]), then [`after_fetch`].
    Fetch,
}

/// The mirror's `config.json`: downloads come back here; no web API.
fn config_json(url: &str, private: bool) -> Response {
    let mut v = serde_json::json!({
        "dl": format!("{url}/mirror/crates/{{crate}}/{{crate}}-{{version}}.crate"),
    });
    if private {
        v["auth-required"] = true.into();
    }
    Response::json(200, &v).header("Cache-Control", "no-cache")
}

/// Answers from the cache when it holds what is asked for, now.
pub fn first_look(mirror: &Mirror, crates: &Tree, url: &str, want: &Want) -> Step {
    match &want.file {
        File::Config => Step::Answer(config_json(url, want.private)),
        File::Index(rel) if mirror.is_fresh(rel) => {
            mirror.stats().hits.fetch_add(1, Relaxed);
            Step::Answer(index_answer(mirror, rel, want))
        }
        File::Crate { name, vers, .. } if mirror.listed_hidden(name, vers) => Step::Answer(failed(
            &FetchError::Hidden(format!("{name} {vers} is hidden by the mirror's policy")),
        )),
        File::Crate { rel, .. } if mirror.layout().crate_file(rel).exists() => {
            mirror.stats().hits.fetch_add(1, Relaxed);
            Step::Answer(files::crate_file(crates, rel, &want.head, want.caches()))
        }
        _ => Step::Fetch,
    }
}

/// The fetch behind a [`Step::Fetch`] (blocking: on a fetcher thread).
pub fn fetch(mirror: &Mirror, file: &File) -> Result<(), FetchError> {
    match file {
        File::Config => Ok(()),
        File::Index(rel) => mirror.ensure_index(rel),
        File::Crate { name, vers, .. } => mirror.ensure_crate(name, vers).map(drop),
    }
}

/// The answer to a request whose file's fetch landed with `result`.
pub fn after_fetch(
    mirror: &Mirror,
    crates: &Tree,
    url: &str,
    want: &Want,
    result: &Result<(), FetchError>,
) -> Response {
    if let Err(e) = result {
        return failed(e);
    }
    match &want.file {
        File::Config => config_json(url, want.private),
        File::Index(rel) => index_answer(mirror, rel, want),
        File::Crate { rel, .. } => files::crate_file(crates, rel, &want.head, want.caches()),
    }
}

/// An index file from the cache, with the policy applied; 304 when the client has it.
fn index_answer(mirror: &Mirror, rel: &str, want: &Want) -> Response {
    let cache_control = match want.private {
        true => "private, no-cache",
        false => "public, no-cache",
    };
    let served = match mirror.served_index(rel) {
        Ok(Some(s)) => s,
        Ok(None) => return not_found("index file"),
        Err(e) => return failed(&e),
    };
    let matches = want.head.if_none_match.as_deref().is_some_and(|inm| {
        inm.split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == served.etag || t == "*")
    });
    let r = match matches {
        true => Response::new(304),
        false => Response::new(200)
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(Body::Bytes(served.bytes)),
    };
    r.header("ETag", served.etag)
        .header("Cache-Control", cache_control)
}

/// A failure as cargo shows it.
pub fn failed(e: &FetchError) -> Response {
    let status = match e {
        FetchError::NotFound(_) => 404,
        FetchError::Hidden(_) => 403,
        FetchError::Upstream(f) if f.timeout => 504,
        FetchError::Upstream(_) | FetchError::Checksum(_) => 502,
        FetchError::Storage(_) => 507,
    };
    let r = Response::error(status, &format!("mirror: {e}"));
    match status {
        404 => r.header("Cache-Control", "no-cache"),
        502 | 504 => r.header("Retry-After", "5"),
        _ => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked_on_the_loop() {
        assert_eq!(want_index("config.json").unwrap(), File::Config);
        assert_eq!(
            want_index("3/f/foo").unwrap(),
            File::Index("3/f/foo".into())
        );
        assert_eq!(want_index("3/f/bar").unwrap_err().status, 404);
        assert_eq!(want_index("../x").unwrap_err().status, 400);
        assert_eq!(want_index("se/rd/.git").unwrap_err().status, 404);
        let c = want_crate("serde/serde-1.0.0.crate").unwrap();
        assert!(matches!(c, File::Crate { ref vers, .. } if vers == "1.0.0"));
        assert_eq!(
            want_crate("serde/other-1.0.0.crate").unwrap_err().status,
            404
        );
        assert_eq!(want_crate("serde/%2e%2e").unwrap_err().status, 400);
    }
}
