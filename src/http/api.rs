//! The cargo web API under `{api}/api/v1` and the git smart HTTP endpoints under the index:
//! routing, and the jobs that run on the registry worker thread (publish, yank, unyank,
//! search, git ref advertisement and upload-pack).
//!
//! Every failure is `{"errors":[{"detail":"..."}]}` with a 4xx/5xx status: cargo prints the
//! details, and panics on `{"ok":false}`, so that shape is never sent. Messages name crates
//! and versions, never filesystem paths.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::IpAddr;
use std::path::PathBuf;

use super::errors::{registry_error, storage_error};
use super::response::{Body, FileBody, Response};
use crate::registry::{
    self, Actor, AuthError, Command, CrateName, Event, GitError, Outcome, Principal,
    PublishMetadata, Refusal, Registry, WriteRefusal,
};

/// Largest JSON part of a publish (crates.io's limit).
pub const MAX_METADATA: u64 = 1 << 20;
/// Largest body accepted (and ignored) on requests that need none, such as unyank.
pub const MAX_SMALL_BODY: u64 = 64 * 1024;

/// Largest git upload-pack request accepted (libgit2 sends at most 256 haves per round).
pub const MAX_GIT_REQUEST: u64 = 1 << 20;

/// Work for the registry worker thread.
#[derive(Debug)]
pub enum Job {
    /// A publish body spooled to this file (removed by the job).
    Publish(PathBuf),
    /// The index repository's ref advertisement.
    GitRefs,
    /// Make the full-clone answer for the current HEAD ahead of the next clone (background).
    KeepClone,
    /// A git upload-pack request body spooled to this file (removed by the job).
    GitUploadPack { body: PathBuf, gzip: bool },
    Yank {
        name: CrateName,
        vers: String,
        yank: bool,
    },
    /// crates.io's JSON for one crate (`GET /api/v1/crates/{name}`).
    Crate { name: CrateName },
    Search {
        query: String,
        /// Hits of the pages before the one asked for.
        skip: usize,
        per_page: usize,
    },
    /// Write when tokens were last used: `(token id, unix seconds)`.
    RecordTokenUse(Vec<(u64, u64)>),
    /// Add downloads: `(crate file path below the crates directory, count)`.
    RecordDownloads(Vec<(String, u64)>),
    /// Log writes the event loop refused (and how many more it did not keep).
    AuditRefusals {
        refusals: Vec<WriteRefusal>,
        dropped: u64,
    },
    /// Make `config.json` say what the access setting says (after a hand edit).
    SyncAccess,
    /// List a crate's owners, or change them with the `{"users":[...]}` body spooled here
    /// (removed by the job).
    Owners {
        name: CrateName,
        change: Option<(OwnersChange, PathBuf)>,
    },
    /// Render a page that reads the registry.
    Page(super::pages::Page, super::pages::Ctx),
    /// A version's docs, the `.tar.gz` spooled here (removed by the job).
    UploadDocs {
        name: CrateName,
        vers: String,
        body: PathBuf,
    },
    /// Where `/docs/{name}/latest/{rest}` goes: `base` is the registry's base path.
    DocsLatest {
        name: CrateName,
        rest: String,
        base: String,
    },
    /// A file of the mirror (run on the mirror lane, never by a registry worker).
    Mirror(Box<super::mirror::Want>),
}

/// `PUT` (add) or `DELETE` (remove) on a crate's owners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnersChange {
    Add,
    Remove,
}

impl Job {
    /// The spooled body this job owns and removes, if any.
    pub fn body_file(&self) -> Option<&std::path::Path> {
        match self {
            Job::Publish(path)
            | Job::GitUploadPack { body: path, .. }
            | Job::UploadDocs { body: path, .. }
            | Job::Owners {
                change: Some((_, path)),
                ..
            } => Some(path),
            _ => None,
        }
    }
}

/// What the router decided for an API request.
#[derive(Debug)]
pub enum Routed {
    Done(Response),
    /// Run now: no body to read.
    Job(Job),
    /// Spool the body to a file, then run the job made from it.
    Upload(Spooled),
    /// Read and drop a small body, then run the job.
    AfterBody(Job),
    /// Read the login form (bounded by the handler) into memory, then check it.
    Form(super::pages::Ctx),
}

/// What a spooled body becomes once it is complete.
#[derive(Debug, Clone)]
pub enum Spooled {
    Publish,
    GitUploadPack {
        gzip: bool,
    },
    Owners {
        name: CrateName,
        change: OwnersChange,
    },
    Docs {
        name: CrateName,
        vers: String,
    },
}

impl Spooled {
    pub fn job(self, body: PathBuf) -> Job {
        match self {
            Spooled::Publish => Job::Publish(body),
            Spooled::GitUploadPack { gzip } => Job::GitUploadPack { body, gzip },
            Spooled::Owners { name, change } => Job::Owners {
                name,
                change: Some((change, body)),
            },
            Spooled::Docs { name, vers } => Job::UploadDocs { name, vers, body },
        }
    }
}

/// A job's answer: the response for the client, and the events its write caused (what
/// maintenance after a write follows).
#[derive(Debug)]
pub struct Answer {
    pub response: Response,
    pub events: Vec<Event>,
}

/// Who a job runs for: the token holder the event loop let through (None where the access
/// mode asks for no token) and the client's address (None for the loop's own jobs).
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller<'a> {
    pub who: Option<&'a Principal>,
    pub peer: Option<IpAddr>,
}

impl Caller<'_> {
    /// The actor of the commands it asks for.
    fn actor(&self) -> Actor {
        Actor::remote(self.who, self.peer)
    }
}

/// Runs a job against the registry and renders its answer, for `caller`; writes are
/// [`Command`]s, which check ownership under the registry lock, against the current
/// `auth.json`, since only there is it known whether the crate exists.
pub fn run(reg: &Registry, job: Job, caller: Caller<'_>) -> Answer {
    let _spooled = RemoveOnDrop(job.body_file().map(std::path::Path::to_owned));
    let mut events = Vec::new();
    let response = run_job(reg, job, caller, &mut events);
    Answer { response, events }
}

/// Removes a spooled body however its job ends, a panic included.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Publishes that waited for the writer together: each spooled body is checked on its own,
/// then those that pass are written as one batch ([`Registry::apply_publishes`]: one
/// journal sync for all, one commit each). The answers are in the order of `jobs`.
pub fn run_publishes(reg: &Registry, jobs: Vec<(PathBuf, Caller<'_>)>) -> Vec<Answer> {
    let _spooled: Vec<RemoveOnDrop> = jobs
        .iter()
        .map(|(path, _)| RemoveOnDrop(Some(path.clone())))
        .collect();
    let mut answers: Vec<Option<Answer>> = jobs.iter().map(|_| None).collect();
    let mut batch = Vec::new();
    let mut waiting = Vec::new();
    for (i, (path, caller)) in jobs.iter().enumerate() {
        match check_publish(reg, path, caller.who) {
            Ok((checked, name)) => {
                batch.push((checked, caller.actor()));
                waiting.push((i, name));
            }
            Err(response) => {
                answers[i] = Some(Answer {
                    response,
                    events: Vec::new(),
                })
            }
        }
    }
    for ((i, name), result) in waiting.into_iter().zip(reg.apply_publishes(batch)) {
        answers[i] = Some(match result {
            Ok(applied) => Answer {
                response: publish_ok(),
                events: applied.events,
            },
            Err(e) => Answer {
                response: write_error(reg, jobs[i].1.who, e, &format!("publish of {name}")),
                events: Vec::new(),
            },
        });
    }
    answers
        .into_iter()
        .map(|a| a.expect("every publish is answered"))
        .collect()
}

fn run_job(reg: &Registry, job: Job, caller: Caller<'_>, events: &mut Vec<Event>) -> Response {
    let who = caller.who;
    match job {
        Job::GitRefs => match reg.git_refs() {
            Ok(bytes) => Response::new(200)
                .header(
                    "Content-Type",
                    "application/x-git-upload-pack-advertisement",
                )
                .header("Cache-Control", "no-cache")
                .body(Body::Bytes(bytes)),
            Err(e) => git_error(e),
        },
        Job::GitUploadPack { body, gzip } => upload_pack(reg, &body, gzip),
        Job::KeepClone => match reg.keep_clone() {
            Ok(()) => Response::new(204),
            Err(e) => git_error(e),
        },
        Job::Publish(path) => publish(reg, &path, caller, events),
        Job::Yank { name, vers, yank } => {
            let cmd = Command::Yank {
                name: name.clone(),
                vers,
                yanked: yank,
            };
            match apply(reg, cmd, caller, events) {
                Ok(_) => Response::json(200, &serde_json::json!({ "ok": true })),
                Err(e) => {
                    let real = reg.find_canonical(&name).ok().flatten();
                    let what = format!("yank of {}", real.as_deref().unwrap_or(&name));
                    write_error(reg, who, e, &what)
                }
            }
        }
        Job::Owners { name, change } => owners(reg, &name, change, caller, events),
        Job::UploadDocs { name, vers, body } => {
            upload_docs(reg, &name, &vers, &body, caller, events)
        }
        Job::DocsLatest { name, rest, base } => docs_latest(reg, &name, &rest, &base),
        Job::SyncAccess => match reg.apply(Command::SyncAccess, &Actor::Server) {
            Ok(applied) => {
                events.extend(applied.events);
                Response::new(204)
            }
            Err(e) => {
                error!("error: config.json does not follow the access setting: {e}");
                Response::new(500)
            }
        },
        Job::Page(page, ctx) => super::pages::run(reg, page, &ctx),
        Job::Mirror(_) => Response::error(500, "a mirror request reached a registry worker"),
        Job::Crate { name } => super::crate_json::crate_json(reg, &name),
        Job::RecordTokenUse(uses) => match reg.record_last_used(&uses) {
            Ok(()) => Response::new(204),
            Err(e) => {
                error!("warning: tokens' last use not recorded: {e}");
                Response::new(500)
            }
        },
        Job::RecordDownloads(counts) => match reg.record_downloads(&counts, registry::now()) {
            Ok(()) => Response::new(204),
            Err(e) => {
                error!("warning: download counts not recorded: {e}");
                Response::new(500)
            }
        },
        Job::AuditRefusals { refusals, dropped } => match reg.audit_refusals(&refusals, dropped) {
            Ok(()) => Response::new(204),
            Err(e) => {
                error!("warning: refused writes not in the audit log: {e}");
                Response::new(500)
            }
        },
        Job::Search {
            query,
            skip,
            per_page,
        } => match reg.search_page(&query, skip, per_page) {
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

fn git_error(e: GitError) -> Response {
    if let Some(detail) = e.storage_trouble() {
        error!("error: git: {e}");
        return storage_error(detail);
    }
    match e {
        GitError::BadRequest(m) => Response::error(400, &m),
        e => {
            error!("error: git: {e}");
            Response::error(500, "internal error while reading the index repository")
        }
    }
}

/// Runs upload-pack on a spooled request; the answer comes as a file (see
/// [`Registry::upload_pack`]), sent through the file body (small answers are read into
/// memory).
fn upload_pack(reg: &Registry, path: &std::path::Path, gzip: bool) -> Response {
    let mut raw = Vec::new();
    let read = File::open(path).and_then(|f| {
        if gzip {
            flate2::read::GzDecoder::new(f)
                .take(MAX_GIT_REQUEST * 8)
                .read_to_end(&mut raw)
        } else {
            f.take(MAX_GIT_REQUEST).read_to_end(&mut raw)
        }
    });
    if read.is_err() {
        return Response::error(400, "unreadable upload-pack request body");
    }
    let file = match reg.upload_pack(&raw) {
        Ok(f) => f,
        Err(e) => return git_error(e),
    };
    let len = match file.metadata() {
        Ok(m) => m.len(),
        Err(_) => return Response::error(500, "internal error while building the pack"),
    };
    // The file was written completely before being mapped and is unlinked: nothing changes it.
    Response::new(200)
        .header("Content-Type", "application/x-git-upload-pack-result")
        .header("Cache-Control", "no-cache")
        .body(Body::File(FileBody::new(std::sync::Arc::new(file), len)))
}

/// A refusal decided on the worker (ownership): logged with its reason, never the token.
/// The worker reads the current `auth.json`, so it may be first to see that the token's
/// user was removed: that is a revoked token, answered as the event loop would (401).
fn refused_here(reg: &Registry, p: &Principal, refusal: Refusal, route: &str) -> Response {
    let mut r = super::auth::refused(&refusal, super::auth::Challenge::Cargo, &reg.settings().url);
    r.refusal = Some(format!(
        "{route} for user {} (token {}): {}",
        p.user,
        p.token,
        refusal.reason()
    ));
    r
}

/// Runs a command for `caller` (anonymous when the access mode asks for no token), keeping
/// the events it caused.
fn apply(
    reg: &Registry,
    cmd: Command,
    caller: Caller<'_>,
    events: &mut Vec<Event>,
) -> Result<Outcome, AuthError> {
    let applied = reg.apply(cmd, &caller.actor())?;
    events.extend(applied.events);
    Ok(applied.outcome)
}

/// The answer to a command that failed: a refusal is logged with its reason (`what` was
/// refused), never the token; the rest as registry or access control errors.
fn write_error(reg: &Registry, who: Option<&Principal>, e: AuthError, what: &str) -> Response {
    match (e, who) {
        (AuthError::Refused(refusal), Some(p)) => refused_here(reg, p, refusal, what),
        (AuthError::Registry(e), _) => registry_error(e),
        (e, _) => super::auth::auth_error(e, &reg.settings().url),
    }
}

/// `GET`, `PUT` and `DELETE /api/v1/crates/{name}/owners`.
fn owners(
    reg: &Registry,
    name: &CrateName,
    change: Option<(OwnersChange, PathBuf)>,
    caller: Caller<'_>,
    events: &mut Vec<Event>,
) -> Response {
    let who = caller.who;
    let url = &reg.settings().url;
    let Some((change, body)) = change else {
        return match reg.list_owners(name) {
            Ok(users) => super::auth::owners_response(&users),
            Err(e) => super::auth::auth_error(e, url),
        };
    };
    let body = match std::fs::read(&body) {
        Ok(b) => b,
        Err(e) => {
            return registry_error(registry::Error::Io {
                context: "reading the request".into(),
                source: e,
            })
        }
    };
    let users = match super::auth::owners_request(&body) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let krate = name.to_string();
    let cmd = match change {
        OwnersChange::Add => Command::AddOwners { krate, users },
        OwnersChange::Remove => Command::RemoveOwners { krate, users },
    };
    match apply(reg, cmd, caller, events) {
        Ok(Outcome::OwnersChanged { msg }) => super::auth::owners_changed(&msg),
        Ok(o) => unreachable!("an owner change answered {o:?}"),
        Err(AuthError::Refused(refusal)) if who.is_some() => refused_here(
            reg,
            who.expect("checked"),
            refusal,
            &format!("owner change of {name}"),
        ),
        Err(e) => super::auth::auth_error(e, url),
    }
}

/// `PUT /api/v1/crates/new`: the body checked (before the lock), then the command.
fn publish(
    reg: &Registry,
    path: &std::path::Path,
    caller: Caller<'_>,
    events: &mut Vec<Event>,
) -> Response {
    let (checked, name) = match check_publish(reg, path, caller.who) {
        Ok(c) => c,
        Err(response) => return response,
    };
    match apply(reg, Command::Publish(checked), caller, events) {
        Ok(_) => publish_ok(),
        Err(e) => write_error(reg, caller.who, e, &format!("publish of {name}")),
    }
}

/// A spooled publish body, `u32 LE json_len | json | u32 LE crate_len | .crate` with nothing
/// after the tarball, checked against everything that needs no registry state. Returns the
/// checked crate and the name it was published as, or the answer that refuses it.
fn check_publish(
    reg: &Registry,
    path: &std::path::Path,
    who: Option<&Principal>,
) -> Result<(registry::CheckedCrate, String), Response> {
    let bad = |m: &str| Response::error(400, m);
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            return Err(registry_error(registry::Error::Io {
                context: "opening the upload".into(),
                source: e,
            }))
        }
    };
    let total = match f.metadata() {
        Ok(m) => m.len(),
        Err(e) => {
            return Err(registry_error(registry::Error::Io {
                context: "reading the upload".into(),
                source: e,
            }))
        }
    };
    let read_u32 = |f: &mut File| -> io::Result<u64> {
        let mut b = [0u8; 4];
        f.read_exact(&mut b)?;
        Ok(u32::from_le_bytes(b) as u64)
    };
    let Ok(json_len) = read_u32(&mut f) else {
        return Err(bad("publish body is truncated: no metadata length"));
    };
    if json_len > MAX_METADATA {
        return Err(Response::error(
            413,
            &format!("metadata is larger than {MAX_METADATA} bytes"),
        ));
    }
    if 4 + json_len + 4 > total {
        return Err(bad(
            "publish body is truncated: metadata length goes beyond the body",
        ));
    }
    let mut json = vec![0u8; json_len as usize];
    if f.read_exact(&mut json).is_err() {
        return Err(bad("publish body is truncated inside the metadata"));
    }
    let meta: PublishMetadata = match serde_json::from_slice(&json) {
        Ok(m) => m,
        Err(e) => return Err(bad(&format!("invalid JSON metadata: {e}"))),
    };
    drop(json);
    let Ok(crate_len) = read_u32(&mut f) else {
        return Err(bad("publish body is truncated: no crate file length"));
    };
    let expected = 4 + json_len + 4 + crate_len;
    if expected != total {
        let how = if expected > total {
            "goes beyond the body"
        } else {
            "leaves bytes after the crate file"
        };
        return Err(bad(&format!("crate file length {crate_len} {how}")));
    }
    if f.seek(SeekFrom::Start(8 + json_len)).is_err() {
        return Err(bad("publish body is unreadable"));
    }
    // A token holder's publish names a valid crate before anything else is said of it.
    if who.is_some() {
        if let Err(e) = CrateName::parse(&meta.name) {
            return Err(bad(&e.to_string()));
        }
    }
    let name = meta.name.clone();
    // Checked before the lock; who may publish it is decided under the lock, by the command.
    match reg.check_upload(Some(meta), f.take(crate_len)) {
        Ok(c) => Ok((c, name)),
        Err(e) => Err(registry_error(e)),
    }
}

/// `PUT /api/v1/crates/{name}/{vers}/docs`: the spooled `.tar.gz` checked and unpacked
/// before the lock, then stored by the command, which decides who may.
fn upload_docs(
    reg: &Registry,
    name: &CrateName,
    vers: &str,
    body: &std::path::Path,
    caller: Caller<'_>,
    events: &mut Vec<Event>,
) -> Response {
    let who = caller.who;
    let file = match File::open(body) {
        Ok(f) => f,
        Err(e) => {
            return registry_error(registry::Error::Io {
                context: "opening the upload".into(),
                source: e,
            })
        }
    };
    let checked = match reg.check_docs(name, vers, file) {
        Ok(c) => c,
        Err(e) => return registry_error(e),
    };
    match apply(reg, Command::UploadDocs(checked), caller, events) {
        Ok(Outcome::DocsUploaded { name, vers }) => Response::json(
            200,
            &serde_json::json!({ "ok": true, "name": name, "vers": vers }),
        ),
        Ok(o) => unreachable!("a docs upload answered {o:?}"),
        Err(e) => write_error(reg, who, e, &format!("docs upload of {name} {vers}")),
    }
}

/// `/docs/{name}/latest/{rest}`: a redirect to the newest version that is not yanked and
/// has docs (`rest` empty: the crate's own page).
fn docs_latest(reg: &Registry, name: &CrateName, rest: &str, base: &str) -> Response {
    match reg.latest_docs(name) {
        Ok(Some((real, vers))) => {
            let rest = match rest {
                "" => format!("{}/index.html", registry::crate_folder(&real)),
                r => r.to_owned(),
            };
            Response::new(302)
                .header("Location", format!("{base}/docs/{real}/{vers}/{rest}"))
                .header("Cache-Control", "no-cache")
        }
        Ok(None) => Response::error(
            404,
            &format!("no version of `{name}` that is not yanked has docs here"),
        ),
        Err(e) => registry_error(e),
    }
}

fn publish_ok() -> Response {
    Response::json(
        200,
        &serde_json::json!({ "warnings": { "invalid_categories": [], "invalid_badges": [], "other": [] } }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::testing::{publish_body, simple_crate};
    use crate::registry::InitOptions;
    use proptest::prelude::*;

    fn registry() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::init(dir.path(), InitOptions::for_url("http://127.0.0.1:1")).unwrap();
        (dir, reg)
    }

    fn valid_body() -> Vec<u8> {
        let json = serde_json::json!({
            "name": "framed", "vers": "1.0.0", "deps": [], "features": {}, "authors": [],
            "description": "framed", "documentation": null, "homepage": null, "readme": null,
            "readme_file": null, "keywords": [], "categories": [], "license": "MIT",
            "license_file": null, "repository": null, "badges": {}, "links": null,
            "rust_version": null
        });
        publish_body(
            &serde_json::to_vec(&json).unwrap(),
            &simple_crate("framed", "1.0.0", &[]),
        )
    }

    fn run_publish(reg: &Registry, body: &[u8]) -> Response {
        let path = registry::temp_path(reg.root(), "test-upload");
        std::fs::write(&path, body).unwrap();
        run(reg, Job::Publish(path.clone()), Caller::default()).response
    }

    #[test]
    fn the_valid_framing_publishes() {
        let (_dir, reg) = registry();
        assert_eq!(run_publish(&reg, &valid_body()).status, 200);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Publish framing on mutated bodies: never a panic, never a 2xx for a body that is
        /// not the valid one, always a cargo-readable error, and the spool file is removed.
        #[test]
        fn mutated_publish_bodies_are_refused_cleanly(
            cut in 0usize..4096,
            flips in proptest::collection::vec((0usize..4096, any::<u8>()), 0..4),
            extra in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let (_dir, reg) = registry();
            let mut body = valid_body();
            body.truncate(body.len().saturating_sub(cut % 64));
            for (at, b) in &flips {
                let len = body.len();
                if len > 0 {
                    body[at % len] ^= b | 1;
                }
            }
            body.extend_from_slice(&extra);
            let unchanged = body == valid_body();
            let r = run_publish(&reg, &body);
            if !unchanged {
                prop_assert!(r.status >= 400 && r.status < 500 || r.status == 200, "{}", r.status);
            }
            if r.status != 200 {
                let Body::Bytes(bytes) = &r.body else { panic!("error without a body") };
                let v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
                prop_assert!(v["errors"][0]["detail"].as_str().is_some_and(|d| !d.is_empty()));
            }
            let left: Vec<_> = std::fs::read_dir(reg.root())
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().contains("test-upload"))
                .collect();
            prop_assert!(left.is_empty(), "spool file left behind");
        }
    }
}
