//! The cargo web API under `{api}/api/v1`: routing, and the jobs that run on the registry
//! worker thread (publish, yank, unyank, search).
//!
//! Every failure is `{"errors":[{"detail":"..."}]}` with a 4xx/5xx status: cargo prints the
//! details, and panics on `{"ok":false}`, so that shape is never sent. Messages name crates
//! and versions, never filesystem paths.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;

use super::request::{percent_decode, query_param, Head, Method};
use super::response::Response;
use crate::registry::{self, PublishMetadata, Registry};

/// Largest JSON part of a publish (crates.io's limit).
pub const MAX_METADATA: u64 = 1 << 20;
/// Largest body accepted (and ignored) on requests that need none, such as unyank.
pub const MAX_SMALL_BODY: u64 = 64 * 1024;
/// Hits per search page when cargo does not say, and the most it may ask for.
const DEFAULT_PER_PAGE: usize = 10;
const MAX_PER_PAGE: usize = 100;

/// Work for the registry worker thread.
#[derive(Debug)]
pub enum Job {
    /// A publish body spooled to this file (removed by the job).
    Publish(PathBuf),
    Yank {
        name: String,
        vers: String,
        yank: bool,
    },
    Search {
        query: String,
        per_page: usize,
    },
}

/// What the router decided for an API request.
#[derive(Debug)]
pub enum Routed {
    Done(Response),
    /// Run now: no body to read.
    Job(Job),
    /// Spool the body to a file, then run `Job::Publish` with it.
    Upload,
    /// Read and drop a small body, then run the job.
    AfterBody(Job),
}

fn decode(seg: &str) -> Option<String> {
    percent_decode(seg).and_then(|b| String::from_utf8(b).ok())
}

/// Routes `path` (the part after `/api/v1`).
pub fn route(path: &str, head: &Head, max_upload: u64) -> Routed {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let allow = |methods: &'static str| {
        Routed::Done(Response::error(405, &format!("use {methods} here")).header("Allow", methods))
    };
    match (head.method, segs.as_slice()) {
        (Method::Put, ["crates", "new"]) => {
            if head.content_length == 0 {
                return Routed::Done(Response::error(400, "publish request has no body"));
            }
            // Refused before any of the body is read (and before `100 Continue`).
            if head.content_length > max_upload {
                let detail = format!("max upload size is: {max_upload}");
                return Routed::Done(Response::error(413, &detail));
            }
            Routed::Upload
        }
        (_, ["crates", "new"]) => allow("PUT"),
        (Method::Get, ["crates"]) => {
            let query = head.query().unwrap_or("");
            let q = query_param(query, "q").unwrap_or_default();
            let per_page = match query_param(query, "per_page") {
                None => DEFAULT_PER_PAGE,
                Some(n) => match n.parse::<usize>() {
                    Ok(n) if n > 0 => n.min(MAX_PER_PAGE),
                    _ => {
                        return Routed::Done(Response::error(
                            400,
                            "per_page must be a positive number",
                        ))
                    }
                },
            };
            Routed::Job(Job::Search { query: q, per_page })
        }
        (_, ["crates"]) => allow("GET"),
        (method, ["crates", name, vers, action @ ("yank" | "unyank")]) => {
            let (Some(name), Some(vers)) = (decode(name), decode(vers)) else {
                return Routed::Done(Response::error(
                    400,
                    "invalid crate name or version in path",
                ));
            };
            let yank = *action == "yank";
            let wanted = if yank { Method::Delete } else { Method::Put };
            if method != wanted {
                return allow(if yank { "DELETE" } else { "PUT" });
            }
            let job = Job::Yank { name, vers, yank };
            if head.content_length == 0 {
                Routed::Job(job)
            } else if head.content_length <= MAX_SMALL_BODY {
                Routed::AfterBody(job)
            } else {
                Routed::Done(Response::error(413, "request body too large"))
            }
        }
        (_, ["crates", _, "owners"]) => Routed::Done(Response::error(
            501,
            "this registry does not manage crate owners yet",
        )),
        _ => Routed::Done(Response::error(404, "no such API endpoint")),
    }
}

/// Runs a job against the registry and renders its answer.
pub fn run(reg: &Registry, job: Job) -> Response {
    match job {
        Job::Publish(path) => {
            let r = publish(reg, &path);
            let _ = std::fs::remove_file(&path);
            r
        }
        Job::Yank { name, vers, yank } => match reg.set_yanked(&name, &vers, yank) {
            Ok(_) => Response::json(200, &serde_json::json!({ "ok": true })),
            Err(e) => registry_error(e),
        },
        Job::Search { query, per_page } => match reg.search(&query, per_page) {
            Ok(found) => {
                let crates: Vec<_> = found
                    .hits
                    .iter()
                    .map(|h| {
                        serde_json::json!({
                            "name": h.name,
                            "max_version": h.max_version,
                            "description": h.description,
                        })
                    })
                    .collect();
                Response::json(
                    200,
                    &serde_json::json!({ "crates": crates, "meta": { "total": found.total } }),
                )
            }
            Err(e) => registry_error(e),
        },
    }
}

/// Maps a registry error to a status and a message for the client. Internal errors are
/// logged with their detail and answered without it.
pub fn registry_error(e: registry::Error) -> Response {
    use registry::Error as E;
    match e {
        E::NotFound(m) => Response::error(404, &m),
        E::Invalid(m) => Response::error(400, &m),
        E::Conflict(m) => Response::error(409, &m),
        E::TooLarge(m) => Response::error(413, &m),
        e @ (E::Io { .. } | E::Git(_) | E::Settings(_)) => {
            eprintln!("error: registry: {e}");
            Response::error(
                500,
                "internal error while writing the registry; the server log has details",
            )
        }
    }
}

/// `u32 LE json_len | json | u32 LE crate_len | .crate`, with nothing after the tarball.
fn publish(reg: &Registry, path: &std::path::Path) -> Response {
    let bad = |m: &str| Response::error(400, m);
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            return registry_error(registry::Error::Io {
                context: "opening the upload".into(),
                source: e,
            })
        }
    };
    let total = match f.metadata() {
        Ok(m) => m.len(),
        Err(e) => {
            return registry_error(registry::Error::Io {
                context: "reading the upload".into(),
                source: e,
            })
        }
    };
    let read_u32 = |f: &mut File| -> io::Result<u64> {
        let mut b = [0u8; 4];
        f.read_exact(&mut b)?;
        Ok(u32::from_le_bytes(b) as u64)
    };
    let Ok(json_len) = read_u32(&mut f) else {
        return bad("publish body is truncated: no metadata length");
    };
    if json_len > MAX_METADATA {
        return Response::error(
            413,
            &format!("metadata is larger than {MAX_METADATA} bytes"),
        );
    }
    if 4 + json_len + 4 > total {
        return bad("publish body is truncated: metadata length goes beyond the body");
    }
    let mut json = vec![0u8; json_len as usize];
    if f.read_exact(&mut json).is_err() {
        return bad("publish body is truncated inside the metadata");
    }
    let meta: PublishMetadata = match serde_json::from_slice(&json) {
        Ok(m) => m,
        Err(e) => return bad(&format!("invalid JSON metadata: {e}")),
    };
    drop(json);
    let Ok(crate_len) = read_u32(&mut f) else {
        return bad("publish body is truncated: no crate file length");
    };
    let expected = 4 + json_len + 4 + crate_len;
    if expected != total {
        let how = if expected > total {
            "goes beyond the body"
        } else {
            "leaves bytes after the crate file"
        };
        return bad(&format!("crate file length {crate_len} {how}"));
    }
    if f.seek(SeekFrom::Start(8 + json_len)).is_err() {
        return bad("publish body is unreadable");
    }
    match reg.publish(Some(meta), f.take(crate_len)) {
        Ok(_) => Response::json(
            200,
            &serde_json::json!({ "warnings": { "invalid_categories": [], "invalid_badges": [], "other": [] } }),
        ),
        Err(e) => registry_error(e),
    }
}
