//! The route table: a request's method and path are parsed once, here, into an
//! [`Endpoint`], and everything else reads that one value: the access it needs
//! ([`Endpoint::required`]), its metric label ([`Endpoint::metric`]), the thread that runs it
//! ([`Endpoint::lane`]), whether a browser's session cookie may stand for the token
//! ([`Endpoint::takes_session_cookie`]) and its handler ([`Endpoint::handle`]).
//!
//! Adding a route is one variant in [`Endpoint::parse`] and one arm in each of those
//! matches; the compiler points at every arm that is missing.
//!
//! Invariants:
//! - The base path is stripped once, by [`Endpoint::of`]; nothing below sees it.
//! - A request the table answers itself (no such route, a method the route does not allow,
//!   a bad segment) is [`Endpoint::Refused`], which still says whose access rule applies:
//!   in a private registry it needs `read` like any route, so a probe learns nothing.
//! - A write that names its crate in the path is checked against the token's crate
//!   patterns with the name as decoded, or as sent when it does not decode (it then matches
//!   no pattern), before the handler refuses the bad name: access control fails closed.
//! - Parsing borrows the path and allocates nothing for the file routes (the hot path).

use super::api::{Job, OwnersChange, Routed, Spooled, MAX_GIT_REQUEST, MAX_SMALL_BODY};
use super::auth::{Challenge, Required};
use super::pages::{self, Ctx, Page, MAX_LOGIN_BODY, MAX_SEARCH_PAGE};
use super::request::{percent_decode, query_param, Head, Method};
use super::response::Response;
use super::{files, mirror, Site};
use crate::registry::{Access, CrateName, Need};

/// The Prometheus metrics route, below the base path. The event loop answers it (the
/// counters are its own); it needs an admin's token in every access mode.
pub const METRICS_PATH: &str = "/metrics";

/// Hits per search page when cargo does not say, and the most it may ask for.
const DEFAULT_PER_PAGE: usize = 10;
const MAX_PER_PAGE: usize = 100;

/// One request's route, decided once from its method and its path below the base path.
#[derive(Debug)]
pub enum Endpoint<'a> {
    /// `GET`/`HEAD /index/{file}`: a sparse index file, `config.json` included.
    IndexFile(&'a str),
    /// `GET`/`HEAD /crates/{file}`: a crate file (only names ending in `.crate` are served).
    CrateFile(&'a str),
    /// `GET`/`HEAD /mirror/index/{file}`: an index file of the crates.io mirror.
    MirrorIndex(&'a str),
    /// `GET`/`HEAD /mirror/crates/{name}/{name}-{vers}.crate`: a crate file of the mirror.
    MirrorCrate(&'a str),
    /// `GET`/`HEAD /index/info/refs?service=git-upload-pack`: the git ref advertisement.
    GitRefs,
    /// `POST /index/git-upload-pack`.
    GitUploadPack,
    /// `PUT /api/v1/crates/new`.
    Publish,
    /// `GET`/`HEAD /api/v1/crates?q=…&per_page=…&page=…`.
    Search {
        query: String,
        /// Hits of the pages before the one asked for.
        skip: usize,
        per_page: usize,
    },
    /// `GET`/`HEAD /api/v1/crates/{name}`: crates.io's crate JSON.
    Crate(Segment<'a>),
    /// `DELETE /api/v1/crates/{name}/{version}/yank` and `PUT …/unyank`.
    Yank {
        name: Segment<'a>,
        vers: &'a str,
        yank: bool,
    },
    /// `GET`/`HEAD` (list), `PUT` (add) and `DELETE` (remove) `/api/v1/crates/{name}/owners`.
    Owners {
        name: Segment<'a>,
        change: Option<OwnersChange>,
    },
    /// `GET`/`HEAD` of a page: `/`, `/search?q=…`, `/crates/{name}[/{version}]`.
    Page(Page),
    /// `PUT /api/v1/crates/{name}/{version}/docs`: a version's rustdoc output (`.tar.gz`).
    UploadDocs { name: Segment<'a>, vers: &'a str },
    /// `GET`/`HEAD /docs/{name}/{version}/{file}`: a file of a version's docs, sandboxed;
    /// `/docs/~{ticket}/{name}/{version}/{file}` in a private registry (see
    /// [`super::tickets`]).
    Docs {
        name: Segment<'a>,
        vers: &'a str,
        file: &'a str,
        ticket: Option<&'a str>,
    },
    /// `GET`/`HEAD /docs/{name}/latest/{file}` (and `/docs/{name}`): a redirect to the
    /// newest version that is not yanked and has docs.
    DocsLatest { name: Segment<'a>, file: &'a str },
    /// `GET`/`HEAD /login` (or `/me`): how to get a token, and the login form.
    LoginPage,
    /// `POST /login`: the login form's answer.
    LoginForm,
    /// `POST /logout` (`end`) ends a browser's session; `GET`/`HEAD` only shows the button
    /// that does (a link or an image on another page must not log anyone out).
    Logout { end: bool },
    /// `/metrics`, answered by the event loop.
    Metrics,
    /// Answered by the table itself.
    Refused {
        metric: Metric,
        guard: Guard,
        response: Response,
    },
}

/// What a route the table refuses needs before its refusal is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Nothing (the login and logout routes).
    Free,
    /// `read` in a private registry, asked for with this challenge.
    Read(Challenge),
}

/// A crate name as it appears in a path segment, percent-encoded or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a>(pub &'a str);

impl Segment<'_> {
    /// The segment decoded, or as sent when it does not decode (for the token's crate
    /// patterns, which such a name matches none of).
    pub fn decoded(&self) -> String {
        decode(self.0).unwrap_or_else(|| self.0.to_owned())
    }

    /// The crate name, or the 400 to answer.
    pub fn name(&self) -> Result<CrateName, Response> {
        let name =
            decode(self.0).ok_or_else(|| Response::error(400, "invalid crate name in path"))?;
        CrateName::parse(&name).map_err(|e| Response::error(400, &e.to_string()))
    }
}

fn decode(seg: &str) -> Option<String> {
    percent_decode(seg).and_then(|b| String::from_utf8(b).ok())
}

/// The thread an endpoint's handler runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// The event loop: files from kept descriptors, refusals, the login page, metrics.
    Loop,
    /// The registry writer: every change, one at a time.
    Writer,
    /// The index reader: git ref advertisements and upload-pack.
    IndexReader,
    /// The page reader: pages, searches, crate JSON, owner lists, the login form.
    Pages,
    /// The mirror: its cache, and its fetches from the upstream.
    Mirror,
}

/// The label of a request's series in `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Index,
    Download,
    ApiPublish,
    ApiYank,
    ApiOwners,
    ApiSearch,
    ApiCrate,
    ApiDocs,
    Docs,
    Git,
    Login,
    Metrics,
    MirrorIndex,
    MirrorDownload,
    Other,
}

impl Metric {
    pub const ALL: [Metric; 15] = [
        Metric::Index,
        Metric::Download,
        Metric::ApiPublish,
        Metric::ApiYank,
        Metric::ApiOwners,
        Metric::ApiSearch,
        Metric::ApiCrate,
        Metric::ApiDocs,
        Metric::Docs,
        Metric::Git,
        Metric::Login,
        Metric::Metrics,
        Metric::MirrorIndex,
        Metric::MirrorDownload,
        Metric::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Index => "index",
            Metric::Download => "download",
            Metric::ApiPublish => "api_publish",
            Metric::ApiYank => "api_yank",
            Metric::ApiOwners => "api_owners",
            Metric::ApiSearch => "api_search",
            Metric::ApiCrate => "api_crate",
            Metric::ApiDocs => "api_docs",
            Metric::Docs => "docs",
            Metric::Git => "git",
            Metric::Login => "login",
            Metric::Metrics => "metrics",
            Metric::MirrorIndex => "mirror_index",
            Metric::MirrorDownload => "mirror_download",
            Metric::Other => "other",
        }
    }
}

fn refused(metric: Metric, guard: Guard, response: Response) -> Endpoint<'static> {
    Endpoint::Refused {
        metric,
        guard,
        response,
    }
}

const CARGO: Guard = Guard::Read(Challenge::Cargo);
const GIT: Guard = Guard::Read(Challenge::Basic);

fn not_allowed(metric: Metric, guard: Guard, methods: &'static str) -> Endpoint<'static> {
    refused(metric, guard, Response::not_allowed(methods))
}

fn no_route() -> Endpoint<'static> {
    refused(Metric::Other, CARGO, Response::error(404, "not found"))
}

impl<'a> Endpoint<'a> {
    /// The endpoint of a request to `site`: the base path stripped, then [`Self::parse`].
    pub fn of(site: &Site, head: &'a Head) -> Endpoint<'a> {
        match head.origin_path().strip_prefix(site.base_path.as_str()) {
            Some(path) => Endpoint::parse(head.method, path, head.query()),
            None => no_route(),
        }
    }

    /// The endpoint of `method` on `path` (below the base path, without the query).
    pub fn parse(method: Method, path: &'a str, query: Option<&str>) -> Endpoint<'a> {
        let read = matches!(method, Method::Get | Method::Head);
        match path {
            METRICS_PATH => return Endpoint::Metrics,
            "/login" if method == Method::Post => return Endpoint::LoginForm,
            "/login" | "/me" if read => return Endpoint::LoginPage,
            "/login" | "/me" => {
                return not_allowed(Metric::Login, Guard::Free, "GET, HEAD, POST");
            }
            "/logout" if read || method == Method::Post => {
                return Endpoint::Logout {
                    end: method == Method::Post,
                }
            }
            "/logout" => return not_allowed(Metric::Other, Guard::Free, "GET, HEAD, POST"),
            _ => {}
        }
        if let Some(page) = page_of(path, query) {
            if !read {
                return not_allowed(Metric::Other, CARGO, "GET, HEAD");
            }
            return Endpoint::Page(page);
        }
        if let Some(api) = path.strip_prefix("/api/v1/") {
            return api_endpoint(method, api, query);
        }
        if let Some(rest) = path.strip_prefix("/index/") {
            return match rest {
                "info/refs" | "git-upload-pack" | "git-receive-pack" => {
                    git_endpoint(method, rest, query)
                }
                _ if read => Endpoint::IndexFile(rest),
                _ => not_allowed(Metric::Index, CARGO, "GET, HEAD"),
            };
        }
        if let Some(rest) = path.strip_prefix("/docs/") {
            return match read {
                true => docs_endpoint(rest),
                false => not_allowed(Metric::Docs, CARGO, "GET, HEAD"),
            };
        }
        if let Some(rest) = path.strip_prefix("/mirror/index/") {
            return match read {
                true => Endpoint::MirrorIndex(rest),
                false => not_allowed(Metric::MirrorIndex, CARGO, "GET, HEAD"),
            };
        }
        if let Some(rest) = path.strip_prefix("/mirror/crates/") {
            return match read {
                true => Endpoint::MirrorCrate(rest),
                false => not_allowed(Metric::MirrorDownload, CARGO, "GET, HEAD"),
            };
        }
        if let Some(rest) = path.strip_prefix("/crates/") {
            let metric = if path.ends_with(".crate") {
                Metric::Download
            } else {
                Metric::Other
            };
            return match read {
                true => Endpoint::CrateFile(rest),
                false => not_allowed(metric, CARGO, "GET, HEAD"),
            };
        }
        no_route()
    }

    /// What the endpoint needs in `access` mode besides being well-formed. `None`: nothing.
    pub fn required(&self, access: Access) -> Option<Required> {
        // Metrics tell anyone how the registry is used: an admin's token in every mode,
        // `open` included (a listener marked `metrics = true` serves them without one).
        if let Endpoint::Metrics = self {
            return Some(required(Need::Admin, None, Challenge::Cargo));
        }
        if access == Access::Open {
            return None;
        }
        let read =
            |challenge| (access == Access::Private).then(|| required(Need::Read, None, challenge));
        match self {
            Endpoint::LoginPage
            | Endpoint::LoginForm
            | Endpoint::Logout { .. }
            | Endpoint::Refused {
                guard: Guard::Free, ..
            } => None,
            // The ticket is the credential: its handler serves nothing without a good one.
            Endpoint::Docs {
                ticket: Some(_), ..
            } => None,
            Endpoint::Publish => Some(required(Need::Publish, None, Challenge::Cargo)),
            Endpoint::Yank { name, .. } => {
                Some(required(Need::Yank, Some(name.decoded()), Challenge::Cargo))
            }
            Endpoint::Owners {
                name,
                change: Some(_),
            } => Some(required(
                Need::ChangeOwners,
                Some(name.decoded()),
                Challenge::Cargo,
            )),
            // Docs are part of a publish: who may publish the crate may upload them.
            Endpoint::UploadDocs { name, .. } => Some(required(
                Need::Publish,
                Some(name.decoded()),
                Challenge::Cargo,
            )),
            Endpoint::GitRefs
            | Endpoint::GitUploadPack
            | Endpoint::Refused {
                guard: Guard::Read(Challenge::Basic),
                ..
            } => read(Challenge::Basic),
            Endpoint::IndexFile(_)
            | Endpoint::CrateFile(_)
            | Endpoint::MirrorIndex(_)
            | Endpoint::MirrorCrate(_)
            | Endpoint::Search { .. }
            | Endpoint::Crate(_)
            | Endpoint::Owners { change: None, .. }
            | Endpoint::Page(_)
            | Endpoint::Docs { .. }
            | Endpoint::DocsLatest { .. }
            | Endpoint::Metrics
            | Endpoint::Refused { .. } => read(Challenge::Cargo),
        }
    }

    /// The label of the request's series in `/metrics`.
    pub fn metric(&self) -> Metric {
        match self {
            Endpoint::IndexFile(_) => Metric::Index,
            Endpoint::MirrorIndex(_) => Metric::MirrorIndex,
            Endpoint::MirrorCrate(_) => Metric::MirrorDownload,
            Endpoint::CrateFile(rest) if rest.ends_with(".crate") => Metric::Download,
            Endpoint::CrateFile(_) | Endpoint::Page(_) | Endpoint::Logout { .. } => Metric::Other,
            Endpoint::GitRefs | Endpoint::GitUploadPack => Metric::Git,
            Endpoint::Publish => Metric::ApiPublish,
            Endpoint::Search { .. } => Metric::ApiSearch,
            Endpoint::Crate(_) => Metric::ApiCrate,
            Endpoint::Yank { .. } => Metric::ApiYank,
            Endpoint::Owners { .. } => Metric::ApiOwners,
            Endpoint::UploadDocs { .. } => Metric::ApiDocs,
            Endpoint::Docs { .. } | Endpoint::DocsLatest { .. } => Metric::Docs,
            Endpoint::LoginPage | Endpoint::LoginForm => Metric::Login,
            Endpoint::Metrics => Metric::Metrics,
            Endpoint::Refused { metric, .. } => *metric,
        }
    }

    /// The thread the endpoint's handler runs on.
    pub fn lane(&self) -> Lane {
        match self {
            Endpoint::IndexFile(_)
            | Endpoint::CrateFile(_)
            | Endpoint::Docs { .. }
            | Endpoint::LoginPage
            // The login form is a token check against the loop's view, once its small
            // body is in memory.
            | Endpoint::LoginForm
            | Endpoint::Logout { .. }
            | Endpoint::Metrics
            | Endpoint::Refused { .. } => Lane::Loop,
            Endpoint::GitRefs | Endpoint::GitUploadPack => Lane::IndexReader,
            Endpoint::MirrorIndex(_) | Endpoint::MirrorCrate(_) => Lane::Mirror,
            Endpoint::Search { .. }
            | Endpoint::Crate(_)
            | Endpoint::Owners { change: None, .. }
            | Endpoint::DocsLatest { .. }
            | Endpoint::Page(_) => Lane::Pages,
            Endpoint::Publish
            | Endpoint::UploadDocs { .. }
            | Endpoint::Yank { .. }
            | Endpoint::Owners {
                change: Some(_), ..
            } => Lane::Writer,
        }
    }

    /// Whether the request changes something (a write, a session started or ended): such a
    /// request from another site's page is refused (see [`crate::http::admit`]).
    pub fn changes_state(&self) -> bool {
        matches!(self.lane(), Lane::Writer)
            || matches!(self, Endpoint::LoginForm | Endpoint::Logout { end: true })
    }

    /// For a write route, what the audit log calls it and the crate and version its path
    /// names (a publish names its crate only in its body): `None` for the rest. A write
    /// refused before it becomes a command is logged under these.
    pub fn audited_write(&self) -> Option<(&'static str, Option<String>, Option<String>)> {
        match self {
            Endpoint::Publish => Some(("publish", None, None)),
            Endpoint::Yank { name, vers, yank } => Some((
                if *yank { "yank" } else { "unyank" },
                Some(name.decoded()),
                Some(decode(vers).unwrap_or_else(|| (*vers).to_owned())),
            )),
            Endpoint::Owners {
                name,
                change: Some(change),
            } => Some((
                match change {
                    OwnersChange::Add => "owner_add",
                    OwnersChange::Remove => "owner_remove",
                },
                Some(name.decoded()),
                None,
            )),
            _ => None,
        }
    }

    /// Whether a browser's session cookie may stand for the token: on page and docs reads
    /// only, never on the API, where a cross-site request would carry it.
    pub fn takes_session_cookie(&self) -> bool {
        matches!(
            self,
            Endpoint::Page(_) | Endpoint::Docs { ticket: None, .. } | Endpoint::DocsLatest { .. }
        )
    }

    /// Runs the handler: the answer now, or the job (with or without the body) for
    /// [`Self::lane`]. [`Endpoint::Metrics`] is the event loop's own.
    pub fn handle(self, site: &Site, head: &Head) -> Routed {
        let done = Routed::Done;
        let caches = if site.access() == Access::Private {
            files::Caches::ClientOnly
        } else {
            files::Caches::Shared
        };
        match self {
            Endpoint::IndexFile(rest) => done(match files::safe_relative(rest) {
                Ok(rel) => files::index_file(&site.trees.index, &rel, head, caches),
                Err(status) => Response::error(status, "invalid path"),
            }),
            Endpoint::CrateFile(rest) => done(crate_file(site, rest, head, caches)),
            Endpoint::MirrorIndex(rest) => mirror_job(site, head, mirror::want_index(rest)),
            Endpoint::MirrorCrate(rest) => mirror_job(site, head, mirror::want_crate(rest)),
            Endpoint::GitRefs => Routed::Job(Job::GitRefs),
            Endpoint::GitUploadPack => upload_pack(head),
            Endpoint::Publish => publish(head, site.max_upload),
            Endpoint::Search {
                query,
                skip,
                per_page,
            } => Routed::Job(Job::Search {
                query,
                skip,
                per_page,
            }),
            Endpoint::Crate(name) => match name.name() {
                Ok(name) => Routed::Job(Job::Crate { name }),
                Err(r) => done(r),
            },
            Endpoint::Yank { name, vers, yank } => yank_job(name, vers, yank, head),
            Endpoint::Owners { name, change } => owners(name, change, head),
            Endpoint::Page(page) => Routed::Job(Job::Page(page, Ctx::of(site, head))),
            Endpoint::UploadDocs { name, vers } => upload_docs(name, vers, head, site.max_docs),
            Endpoint::Docs {
                name,
                vers,
                file,
                ticket,
            } => docs_file(
                site,
                DocsPath {
                    name,
                    vers,
                    file,
                    ticket,
                },
                head,
                caches,
            ),
            Endpoint::DocsLatest { name, file } => docs_latest(site, name, file),
            Endpoint::LoginPage => {
                let next = head.query().and_then(|q| query_param(q, "next"));
                done(pages::login_page(
                    &Ctx::of(site, head),
                    200,
                    next.as_deref(),
                    None,
                ))
            }
            // Fail closed: the view the form would check against may hold a token the broken
            // edit meant to revoke (see [`crate::http::authorize`]).
            Endpoint::LoginForm if site.auth_broken.is_some() => done(Response::error(
                503,
                "the registry's access control is broken; logging in is refused until an \
                 administrator fixes it",
            )),
            Endpoint::LoginForm => match head.content_length {
                0 => done(Response::error(400, "the login form sends a token")),
                n if n > MAX_LOGIN_BODY => done(Response::error(413, "request body too large")),
                _ => Routed::Form(Ctx::of(site, head)),
            },
            Endpoint::Logout { end: true } => done(pages::logout(&Ctx::of(site, head))),
            Endpoint::Logout { end: false } => done(pages::logout_page(&Ctx::of(site, head))),
            Endpoint::Metrics => done(Response::error(404, "not found")),
            Endpoint::Refused { response, .. } => done(response),
        }
    }
}

/// A crate file, counted as a download when it is sent whole (a GET's 200: not a HEAD,
/// not a 304).
fn crate_file(site: &Site, rest: &str, head: &Head, caches: files::Caches) -> Response {
    match files::safe_relative(rest) {
        Ok(rel) => {
            let r = files::crate_file(&site.trees.crates, &rel, head, caches);
            if r.status == 200 && head.method == Method::Get {
                site.downloads.note(&rel);
            }
            r
        }
        Err(status) => Response::error(status, "invalid path"),
    }
}

/// `/docs/{name}/latest/{file}`: the job that finds the version. The rest goes into a
/// Location header: only a path of the served characters.
fn docs_latest(site: &Site, name: Segment<'_>, file: &str) -> Routed {
    let rest = match file {
        "" => Ok(String::new()),
        f => files::safe_relative(f.strip_suffix('/').unwrap_or(f)).map(|r| {
            let dir = if f.ends_with('/') { "/index.html" } else { "" };
            format!("{r}{dir}")
        }),
    };
    match (name.name(), rest) {
        (Ok(name), Ok(rest)) => Routed::Job(Job::DocsLatest {
            name,
            rest,
            base: site.base_path.clone(),
        }),
        (Err(r), _) => Routed::Done(r),
        (_, Err(status)) => Routed::Done(Response::error(status, "invalid path")),
    }
}

/// A mirror request for the mirror lane, or its refusal.
fn mirror_job(site: &Site, head: &Head, file: Result<mirror::File, Response>) -> Routed {
    if !site.mirror {
        return Routed::Done(Response::error(
            404,
            "this registry has no mirror; a [mirror] table in palletizer.toml starts one",
        ));
    }
    match file {
        Ok(file) => Routed::Job(Job::Mirror(Box::new(mirror::Want {
            file,
            head: head.clone(),
            private: site.access() == Access::Private,
        }))),
        Err(r) => Routed::Done(r),
    }
}

fn required(need: Need, krate: Option<String>, challenge: Challenge) -> Required {
    Required {
        need,
        krate,
        challenge,
    }
}

/// A page path (below the base path): `/`, `/search`, `/crates/{name}[/{version}]`.
/// `None`: no page.
fn page_of(path: &str, query: Option<&str>) -> Option<Page> {
    match path {
        "/" => return Some(Page::Home),
        "/search" => {
            let q = query.unwrap_or("");
            let query = query_param(q, "q").unwrap_or_default();
            let page = query_param(q, "page")
                .and_then(|p| p.parse::<usize>().ok())
                .unwrap_or(1)
                .clamp(1, MAX_SEARCH_PAGE);
            return Some(Page::Search { query, page });
        }
        _ => {}
    }
    // `/crates/{name}` and `/crates/{name}/{version}`: a version never ends in `.crate`,
    // so a page can never shadow a download (`/crates/{name}/{name}-{vers}.crate`).
    // Only segments shaped like a name and a version: anything else (`..`, encoded
    // slashes) stays with the file routes and their answers.
    let rest = path.strip_prefix("/crates/")?;
    let mut segs = rest.split('/');
    let name = segs.next().filter(|n| {
        !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
    })?;
    let vers = segs.next().filter(|v| !v.is_empty());
    let version_like = |v: &str| {
        v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.+".contains(&b))
    };
    if segs.next().is_some() || vers.is_some_and(|v| v.ends_with(".crate") || !version_like(v)) {
        return None;
    }
    Some(Page::Crate {
        name: name.to_owned(),
        vers: vers.map(str::to_owned),
    })
}

/// The git smart HTTP routes below the index (`rest` follows `/index/`).
fn git_endpoint<'a>(method: Method, rest: &str, query: Option<&str>) -> Endpoint<'a> {
    let bad = |status, detail| refused(Metric::Git, GIT, Response::error(status, detail));
    match (rest, method) {
        ("info/refs", Method::Get | Method::Head) => {
            let service = query.and_then(|q| query_param(q, "service"));
            if service.as_deref() == Some("git-upload-pack") {
                Endpoint::GitRefs
            } else {
                // Dumb HTTP would need the object store exposed; only smart HTTP is served.
                bad(403, "only git smart HTTP (git-upload-pack) is served")
            }
        }
        ("info/refs", _) => not_allowed(Metric::Git, GIT, "GET, HEAD"),
        ("git-upload-pack", Method::Post) => Endpoint::GitUploadPack,
        ("git-upload-pack", _) => not_allowed(Metric::Git, GIT, "POST"),
        _ => bad(403, "pushing to the index is not allowed"),
    }
}

/// The web API (`path` follows `/api/v1/`; the empty segments cargo may leave are
/// tolerated at the start).
fn api_endpoint<'a>(method: Method, path: &'a str, query: Option<&str>) -> Endpoint<'a> {
    let mut segs = [""; 4];
    let mut n = 0;
    for seg in path.trim_start_matches('/').split('/') {
        if n == segs.len() {
            return refused(
                Metric::Other,
                CARGO,
                Response::error(404, "no such API endpoint"),
            );
        }
        segs[n] = seg;
        n += 1;
    }
    let read = matches!(method, Method::Get | Method::Head);
    match (method, &segs[..n]) {
        (Method::Put, ["crates", "new"]) => Endpoint::Publish,
        (_, ["crates", "new"]) => not_allowed(Metric::Other, CARGO, "PUT"),
        (_, ["crates"]) if read => search(query.unwrap_or("")),
        (_, ["crates"]) => not_allowed(Metric::ApiSearch, CARGO, "GET, HEAD"),
        (_, ["crates", name]) if read => Endpoint::Crate(Segment(name)),
        (_, ["crates", _]) => not_allowed(Metric::ApiCrate, CARGO, "GET, HEAD"),
        (_, &["crates", name, vers, action @ ("yank" | "unyank")]) => {
            let yank = action == "yank";
            let wanted = if yank { Method::Delete } else { Method::Put };
            if method == wanted {
                return Endpoint::Yank {
                    name: Segment(name),
                    vers,
                    yank,
                };
            }
            // A bad name or version is named before the method.
            let refusal = match (Segment(name).name(), decode(vers)) {
                (Err(r), _) => r,
                (_, None) => Response::error(400, "invalid version in path"),
                _ => Response::not_allowed(if yank { "DELETE" } else { "PUT" }),
            };
            refused(Metric::ApiYank, CARGO, refusal)
        }
        (Method::Put, &["crates", name, vers, "docs"]) => Endpoint::UploadDocs {
            name: Segment(name),
            vers,
        },
        (_, ["crates", _, _, "docs"]) => not_allowed(Metric::ApiDocs, CARGO, "PUT"),
        (_, &["crates", name, "owners"]) => {
            let change = match method {
                Method::Get | Method::Head => None,
                Method::Put => Some(OwnersChange::Add),
                Method::Delete => Some(OwnersChange::Remove),
                _ => return not_allowed(Metric::ApiOwners, CARGO, "GET, HEAD, PUT, DELETE"),
            };
            Endpoint::Owners {
                name: Segment(name),
                change,
            }
        }
        _ => refused(
            Metric::Other,
            CARGO,
            Response::error(404, "no such API endpoint"),
        ),
    }
}

/// `GET /api/v1/crates?q=…`: the page asked for, 1-based as crates.io counts pages.
fn search(query: &str) -> Endpoint<'static> {
    let bad = |detail| refused(Metric::ApiSearch, CARGO, Response::error(400, detail));
    let positive = |key| match query_param(query, key) {
        None => Ok(None),
        Some(n) => match n.parse::<usize>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(()),
        },
    };
    let Ok(per_page) = positive("per_page") else {
        return bad("per_page must be a positive number");
    };
    let per_page = per_page.map_or(DEFAULT_PER_PAGE, |n| n.min(MAX_PER_PAGE));
    let Ok(page) = positive("page") else {
        return bad("page must be a positive number");
    };
    Endpoint::Search {
        query: query_param(query, "q").unwrap_or_default(),
        skip: (page.unwrap_or(1) - 1).saturating_mul(per_page),
        per_page,
    }
}

/// `/docs/…` (`rest` follows `/docs/`): `{name}/latest/{file}` and `{name}` go to the
/// newest version with docs, `{name}/{vers}/{file}` is a file.
fn docs_endpoint(rest: &str) -> Endpoint<'_> {
    if rest.starts_with('~') {
        let mut segs = rest.splitn(4, '/');
        let ticket = segs.next();
        return match (segs.next(), segs.next(), segs.next()) {
            (Some(name), Some(vers), file) => Endpoint::Docs {
                name: Segment(name),
                vers,
                file: file.unwrap_or(""),
                ticket,
            },
            _ => refused(Metric::Docs, CARGO, Response::error(404, "not found")),
        };
    }
    let mut segs = rest.splitn(3, '/');
    let name = Segment(segs.next().unwrap_or(""));
    match (segs.next(), segs.next()) {
        (None | Some(""), None) | (Some("latest"), None) => Endpoint::DocsLatest { name, file: "" },
        (Some("latest"), Some(file)) => Endpoint::DocsLatest { name, file },
        (Some(vers), file) => Endpoint::Docs {
            name,
            vers,
            file: file.unwrap_or(""),
            ticket: None,
        },
        (None, Some(_)) => unreachable!("splitn yields segments in order"),
    }
}

/// The parts of a docs file's path, as sent.
struct DocsPath<'a> {
    name: Segment<'a>,
    vers: &'a str,
    file: &'a str,
    ticket: Option<&'a str>,
}

impl DocsPath<'_> {
    /// `{base}/docs/[{ticket}/]{name}/{vers}/{file}[?{query}]`.
    fn url(&self, base: &str, ticket: Option<&str>, file: &str, query: Option<&str>) -> String {
        let ticket = ticket.map_or(String::new(), |t| format!("{t}/"));
        let query = query.map_or(String::new(), |q| format!("?{q}"));
        let (name, vers) = (self.name.0, self.vers);
        format!("{base}/docs/{ticket}{name}/{vers}/{file}{query}")
    }
}

/// A file of a version's docs; a folder (`…/` or nothing after the version) goes to its
/// `index.html`, the version's own to the crate's page. In a private registry a reader whose
/// login cookie opened the page is sent on to the same page with a ticket (and one whose
/// ticket is stale, back to get a new one): see [`super::tickets`].
fn docs_file(site: &Site, p: DocsPath, head: &Head, caches: files::Caches) -> Routed {
    let done = Routed::Done;
    let crate_name = match p.name.name() {
        Ok(n) => n,
        Err(r) => return done(r),
    };
    let no_store = |location: String| {
        Response::new(302)
            .header("Location", location)
            .header("Cache-Control", "no-store")
    };
    let tree = format!("{}/{}", p.name.0, p.vers);
    let now = crate::registry::now();
    match p.ticket {
        Some(t) if !site.docs_key.check(t, &tree, now) => {
            return done(no_store(p.url(&site.base_path, None, p.file, head.query())));
        }
        None if site.access() == Access::Private && head.authorization.is_none() => {
            let ticket = site.docs_key.issue(&tree, now);
            let to = p.url(&site.base_path, Some(&ticket), p.file, head.query());
            return done(no_store(to));
        }
        _ => {}
    }
    let (file, vers) = (p.file, p.vers);
    if file.is_empty() || file.ends_with('/') {
        let to = match file {
            "" => format!("{}/index.html", crate::registry::crate_folder(&crate_name)),
            dir => format!("{dir}index.html"),
        };
        return done(
            Response::new(302).header("Location", p.url(&site.base_path, p.ticket, &to, None)),
        );
    }
    done(
        match files::safe_relative(&format!("{}/{vers}/{file}", p.name.0)) {
            Ok(rel) => files::docs_file(&site.trees.docs, &rel, head, caches),
            Err(status) => Response::error(status, "invalid path")
                .header("Content-Security-Policy", files::DOCS_CSP),
        },
    )
}

/// A docs upload: a body within `max-docs-size`, refused before any of it is read.
fn upload_docs(name: Segment, vers: &str, head: &Head, max_docs: u64) -> Routed {
    let name = match name.name() {
        Ok(n) => n,
        Err(r) => return Routed::Done(r),
    };
    let Some(vers) = decode(vers) else {
        return Routed::Done(Response::error(400, "invalid version in path"));
    };
    if head.content_length == 0 {
        return Routed::Done(Response::error(
            400,
            "docs upload has no body: send the .tar.gz of target/doc",
        ));
    }
    if head.content_length > max_docs {
        let detail = format!(
            "docs archive is larger than the limit of {max_docs} bytes (max-docs-size in \
             palletizer.toml)"
        );
        return Routed::Done(Response::error(413, &detail));
    }
    Routed::Upload(Spooled::Docs { name, vers })
}

/// Refused before any of the body is read (and before `100 Continue`).
fn publish(head: &Head, max_upload: u64) -> Routed {
    if head.content_length == 0 {
        return Routed::Done(Response::error(400, "publish request has no body"));
    }
    if head.content_length > max_upload {
        let detail = format!("max upload size is: {max_upload}");
        return Routed::Done(Response::error(413, &detail));
    }
    Routed::Upload(Spooled::Publish)
}

fn upload_pack(head: &Head) -> Routed {
    let done = |status, detail| Routed::Done(Response::error(status, detail));
    if head.content_length == 0 {
        return done(400, "upload-pack request has no body");
    }
    if head.content_length > MAX_GIT_REQUEST {
        return done(413, "upload-pack request too large");
    }
    match head.content_encoding.as_deref() {
        None | Some("identity") => Routed::Upload(Spooled::GitUploadPack { gzip: false }),
        Some("gzip" | "x-gzip") => Routed::Upload(Spooled::GitUploadPack { gzip: true }),
        Some(_) => done(415, "unsupported Content-Encoding"),
    }
}

fn yank_job(name: Segment, vers: &str, yank: bool, head: &Head) -> Routed {
    let name = match name.name() {
        Ok(n) => n,
        Err(r) => return Routed::Done(r),
    };
    let Some(vers) = decode(vers) else {
        return Routed::Done(Response::error(400, "invalid version in path"));
    };
    let job = Job::Yank { name, vers, yank };
    match head.content_length {
        0 => Routed::Job(job),
        n if n <= MAX_SMALL_BODY => Routed::AfterBody(job),
        _ => Routed::Done(Response::error(413, "request body too large")),
    }
}

fn owners(name: Segment, change: Option<OwnersChange>, head: &Head) -> Routed {
    let name = match name.name() {
        Ok(n) => n,
        Err(r) => return Routed::Done(r),
    };
    match change {
        None => Routed::Job(Job::Owners { name, change: None }),
        Some(_) if head.content_length == 0 => Routed::Done(Response::error(
            400,
            "owner changes need a body: {\"users\":[...]}",
        )),
        Some(_) if head.content_length > MAX_SMALL_BODY => {
            Routed::Done(Response::error(413, "request body too large"))
        }
        Some(change) => Routed::Upload(Spooled::Owners { name, change }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::files::Trees;
    use crate::registry::Access::{Open, Private, Public};

    const METHODS: [Method; 6] = [
        Method::Get,
        Method::Head,
        Method::Put,
        Method::Post,
        Method::Delete,
        Method::Other,
    ];

    /// A parsed head of `method target` with a 10-byte body (any method, unknown ones too).
    fn head(method: Method, target: &str) -> Head {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n");
        let mut h = crate::http::request::parse(raw.as_bytes(), 8192)
            .unwrap()
            .unwrap();
        h.method = method;
        h
    }

    /// `-`: nothing; `read`, `read/basic`, `publish`, `yank:NAME`, `owners:NAME`.
    fn short(r: Option<Required>) -> String {
        let Some(r) = r else { return "-".into() };
        let need = match r.need {
            Need::Read => "read",
            Need::Publish => "publish",
            Need::Yank => "yank",
            Need::ChangeOwners => "owners",
            Need::Admin => "admin",
        };
        let mut s = need.to_owned();
        if r.challenge == Challenge::Basic {
            s.push_str("/basic");
        }
        if let Some(k) = r.krate {
            s = format!("{s}:{k}");
        }
        s
    }

    #[test]
    fn every_route_in_every_mode() {
        use Method::*;
        // method, path, open, public, private
        #[rustfmt::skip]
        let table: &[(Method, &str, &str, &str, &str)] = &[
            (Get, "/index/config.json", "-", "-", "read"),
            (Head, "/index/config.json", "-", "-", "read"),
            (Get, "/index/3/f/foo", "-", "-", "read"),
            (Get, "/index/my/cr/mycrate", "-", "-", "read"),
            (Put, "/index/config.json", "-", "-", "read"),
            (Get, "/crates/foo/foo-1.0.0.crate", "-", "-", "read"),
            (Head, "/crates/foo/foo-1.0.0.crate", "-", "-", "read"),
            (Delete, "/crates/foo/foo-1.0.0.crate", "-", "-", "read"),
            (Get, "/index/info/refs", "-", "-", "read/basic"),
            (Head, "/index/info/refs", "-", "-", "read/basic"),
            (Post, "/index/git-upload-pack", "-", "-", "read/basic"),
            (Get, "/index/git-upload-pack", "-", "-", "read/basic"),
            (Post, "/index/git-receive-pack", "-", "-", "read/basic"),
            (Put, "/api/v1/crates/new", "-", "publish", "publish"),
            (Put, "/api/v1//crates/new", "-", "publish", "publish"),
            (Get, "/api/v1/crates/new", "-", "-", "read"),
            (Post, "/api/v1/crates/new", "-", "-", "read"),
            (Get, "/api/v1/crates", "-", "-", "read"),
            (Head, "/api/v1/crates", "-", "-", "read"),
            (Delete, "/api/v1/crates", "-", "-", "read"),
            (Delete, "/api/v1/crates/foo/1.0.0/yank", "-", "yank:foo", "yank:foo"),
            (Put, "/api/v1/crates/foo/1.0.0/yank", "-", "-", "read"),
            (Put, "/api/v1/crates/Foo%2Dbar/1.0.0/unyank", "-", "yank:Foo-bar", "yank:Foo-bar"),
            (Delete, "/api/v1/crates/foo/1.0.0/unyank", "-", "-", "read"),
            (Get, "/api/v1/crates/foo/owners", "-", "-", "read"),
            (Head, "/api/v1/crates/foo/owners", "-", "-", "read"),
            (Put, "/api/v1/crates/foo/owners", "-", "owners:foo", "owners:foo"),
            (Delete, "/api/v1/crates/foo/owners", "-", "owners:foo", "owners:foo"),
            (Post, "/api/v1/crates/foo/owners", "-", "-", "read"),
            (Get, "/api/v1/nothing/here", "-", "-", "read"),
            (Put, "/api/v1/nothing/here", "-", "-", "read"),
            (Other, "/api/v1/crates/new", "-", "-", "read"),
            (Get, "/", "-", "-", "read"),
            (Get, "/index/", "-", "-", "read"),
            (Get, "/elsewhere", "-", "-", "read"),
            (Get, "/login", "-", "-", "-"),
            (Head, "/login", "-", "-", "-"),
            (Get, "/me", "-", "-", "-"),
            (Get, "/metrics", "admin", "admin", "admin"),
            (Head, "/metrics", "admin", "admin", "admin"),
            (Post, "/metrics", "admin", "admin", "admin"),
            (Get, "/metrics/", "-", "-", "read"),
            (Post, "/login", "-", "-", "-"),
            (Post, "/logout", "-", "-", "-"),
            (Get, "/search", "-", "-", "read"),
            (Get, "/crates/foo", "-", "-", "read"),
            (Get, "/crates/foo/1.0.0", "-", "-", "read"),
            (Get, "/api/v1/crates/foo", "-", "-", "read"),
            (Head, "/api/v1/crates/foo", "-", "-", "read"),
            (Put, "/api/v1/crates/foo", "-", "-", "read"),
            (Get, "/logout", "-", "-", "-"),
            (Put, "/logout", "-", "-", "-"),
            (Put, "/api/v1/crates/foo/1.0.0/docs", "-", "publish:foo", "publish:foo"),
            (Get, "/api/v1/crates/foo/1.0.0/docs", "-", "-", "read"),
            (Get, "/docs/foo/1.0.0/foo/index.html", "-", "-", "read"),
            (Head, "/docs/foo/latest/foo/index.html", "-", "-", "read"),
            (Get, "/docs/foo", "-", "-", "read"),
            (Put, "/docs/foo/1.0.0/foo/index.html", "-", "-", "read"),
            // A ticket is the credential, checked by the handler.
            (Get, "/docs/~1.ab/foo/1.0.0/foo/index.html", "-", "-", "-"),
            (Get, "/docs/~1.ab/foo", "-", "-", "read"),
            (Get, "/mirror/index/config.json", "-", "-", "read"),
            (Get, "/mirror/index/3/f/foo", "-", "-", "read"),
            (Put, "/mirror/index/3/f/foo", "-", "-", "read"),
            (Get, "/mirror/crates/foo/foo-1.0.0.crate", "-", "-", "read"),
            (Delete, "/mirror/crates/foo/foo-1.0.0.crate", "-", "-", "read"),
        ];
        for &(method, path, open, public, private) in table {
            for (mode, want) in [(Open, open), (Public, public), (Private, private)] {
                let got = short(Endpoint::parse(method, path, None).required(mode));
                assert_eq!(got, want, "{} {path} in {mode} mode", method.as_str());
            }
        }
    }

    /// A crate name that does not decode is checked as sent: a token limited to some
    /// crates is refused, never let through for lack of a name.
    #[test]
    fn undecodable_crate_names_fail_closed() {
        let e = Endpoint::parse(Method::Delete, "/api/v1/crates/%ZZ/1.0.0/yank", None);
        let r = e.required(Public).unwrap();
        assert_eq!(r.krate.as_deref(), Some("%ZZ"));
    }

    fn site() -> Site {
        let t = Trees::new("/nonexistent/i".into(), "/nonexistent/c".into(), 0);
        let mut s = Site::new("http://127.0.0.1:1", t, 1 << 20);
        s.mirror = true;
        s
    }

    /// What the handler made: `done STATUS`, `job`, `upload` or `after-body`.
    fn handled(method: Method, target: &str) -> String {
        let s = site();
        let h = head(method, target);
        match Endpoint::of(&s, &h).handle(&s, &h) {
            Routed::Done(r) => format!("done {}", r.status),
            Routed::Job(_) => "job".into(),
            Routed::Upload(_) => "upload".into(),
            Routed::AfterBody(_) => "after-body".into(),
            Routed::Form(_) => "form".into(),
        }
    }

    #[test]
    fn metric_labels_and_lanes() {
        use Lane::*;
        use Method::*;
        #[rustfmt::skip]
        let cases = [
            (Get, "/index/config.json", "index", Loop),
            (Get, "/index/3/f/foo", "index", Loop),
            (Put, "/index/3/f/foo", "index", Loop),
            (Get, "/index/info/refs?service=git-upload-pack", "git", IndexReader),
            (Get, "/index/info/refs", "git", Loop),
            (Post, "/index/git-upload-pack", "git", IndexReader),
            (Post, "/index/git-receive-pack", "git", Loop),
            (Get, "/crates/foo/foo-1.0.0.crate", "download", Loop),
            (Get, "/crates/foo", "other", Pages),
            (Get, "/crates/foo/1.0.0", "other", Pages),
            (Put, "/api/v1/crates/new", "api_publish", Writer),
            (Put, "/api/v1//crates/new", "api_publish", Writer),
            (Get, "/api/v1/crates/new", "other", Loop),
            (Delete, "/api/v1/crates/foo/1.0.0/yank", "api_yank", Writer),
            (Put, "/api/v1/crates/foo/1.0.0/unyank", "api_yank", Writer),
            (Put, "/api/v1/crates/foo/1.0.0/yank", "api_yank", Loop),
            (Get, "/api/v1/crates/foo/owners", "api_owners", Pages),
            (Put, "/api/v1/crates/foo/owners", "api_owners", Writer),
            (Delete, "/api/v1/crates/foo/owners", "api_owners", Writer),
            (Get, "/api/v1/crates?q=x", "api_search", Pages),
            (Get, "/api/v1/crates?per_page=0", "api_search", Loop),
            (Get, "/api/v1/crates/foo", "api_crate", Pages),
            (Get, "/api/v1/crates/a/b/c/d/e", "other", Loop),
            (Get, "/login", "login", Loop),
            (Post, "/login", "login", Loop),
            (Get, "/me", "login", Loop),
            (Post, "/logout", "other", Loop),
            (Get, "/metrics", "metrics", Loop),
            (Get, "/", "other", Pages),
            (Get, "/search?q=x", "other", Pages),
            (Put, "/api/v1/crates/foo/1.0.0/docs", "api_docs", Writer),
            (Post, "/api/v1/crates/foo/1.0.0/docs", "api_docs", Loop),
            (Get, "/docs/foo/1.0.0/foo/index.html", "docs", Loop),
            (Get, "/docs/foo/1.0.0/", "docs", Loop),
            (Get, "/docs/foo/latest/foo/index.html", "docs", Pages),
            (Get, "/docs/foo/latest", "docs", Pages),
            (Get, "/docs/foo", "docs", Pages),
            (Delete, "/docs/foo/1.0.0/x.html", "docs", Loop),
            (Get, "/mirror/index/3/f/foo", "mirror_index", Mirror),
            (Head, "/mirror/index/config.json", "mirror_index", Mirror),
            (Post, "/mirror/index/3/f/foo", "mirror_index", Loop),
            (Get, "/mirror/crates/foo/foo-1.0.0.crate", "mirror_download", Mirror),
        ];
        for (method, target, label, lane) in cases {
            let (path, query) = target
                .split_once('?')
                .map_or((target, None), |(p, q)| (p, Some(q)));
            let e = Endpoint::parse(method, path, query);
            assert_eq!(e.metric().name(), label, "{} {target}", method.as_str());
            assert_eq!(e.lane(), lane, "{} {target}", method.as_str());
        }
    }

    /// The lane, the access rule and the handler agree, whatever the request: what runs
    /// on the loop makes no job, what makes a job names a worker, and whatever runs on the
    /// writer asks a write token in public mode (reads there are free); a private registry
    /// asks a token for everything.
    #[test]
    fn lanes_access_and_handlers_agree() {
        let paths = [
            "/index/config.json",
            "/index/3/f/foo",
            "/crates/foo/foo-1.0.0.crate",
            "/index/info/refs?service=git-upload-pack",
            "/index/info/refs",
            "/index/git-upload-pack",
            "/index/git-receive-pack",
            "/api/v1/crates/new",
            "/api/v1//crates/new",
            "/api/v1///crates/new",
            "/api/v1/crates?q=foo&per_page=3",
            "/api/v1/crates/foo/1.0.0/yank",
            "/api/v1/crates/foo/1.0.0/unyank",
            "/api/v1//crates/f%6Fo/1.0.0/unyank",
            "/api/v1/crates/foo/owners",
            "/api/v1/crates/foo",
            "/api/v1/crates/foo/1.0.0",
            "/api/v1/crates/foo/1.0.0/download",
            "/api/v1/",
            "/api/v1",
            "/index",
            "/",
            "/search?q=x",
            "/crates/foo",
            "/crates/foo/1.0.0",
            "/login",
            "/logout",
            "/metrics",
            "/api/v1/crates/foo/1.0.0/docs",
            "/docs/foo/1.0.0/foo/index.html",
            "/docs/foo/1.0.0/",
            "/docs/foo/1.0.0",
            "/docs/foo/latest/",
            "/docs/foo/latest/foo/struct.A.html",
            "/docs/foo",
            "/mirror/index/config.json",
            "/mirror/index/3/f/foo",
            "/mirror/crates/foo/foo-1.0.0.crate",
        ];
        let s = site();
        for target in paths {
            for method in METHODS {
                let what = format!("{} {target}", method.as_str());
                let h = head(method, target);
                let e = Endpoint::of(&s, &h);
                let (lane, public, private) = (e.lane(), e.required(Public), e.required(Private));
                let free = matches!(target, "/login" | "/logout");
                assert_eq!(private.is_none(), free, "{what}");
                if e.required(Open).is_some() {
                    assert!(matches!(e, Endpoint::Metrics), "{what}");
                    continue;
                }
                let made = handled(method, target);
                // The login form's body is read into memory, then checked on the loop.
                let on_loop = made.starts_with("done") || made == "form";
                assert_eq!(lane == Lane::Loop, on_loop, "{what}: {made}");
                let write = public.as_ref().is_some_and(|r| {
                    matches!(r.need, Need::Publish | Need::Yank | Need::ChangeOwners)
                });
                assert_eq!(write, lane == Lane::Writer, "{what}");
                if let Some(p) = private {
                    if write {
                        assert_eq!(Some(p.need), public.map(|r| r.need), "{what}");
                    }
                }
            }
        }
    }

    /// Downloads keep their path: only names that can never be a crate file are pages.
    #[test]
    fn crate_pages_never_shadow_downloads() {
        let page = |path: &str| {
            matches!(
                Endpoint::parse(Method::Get, path, None),
                Endpoint::Page(Page::Crate { .. })
            )
        };
        assert!(page("/crates/foo"));
        assert!(page("/crates/foo/"));
        assert!(page("/crates/foo/1.0.0"));
        assert!(page("/crates/foo/1.0.0-rc.1+build"));
        assert!(!page("/crates/foo/foo-1.0.0.crate"));
        assert!(!page("/crates/foo/1.0.0/extra"));
        assert!(!page("/crates/"));
        assert!(!page("/crates/../palletizer.toml"));
        assert!(!page("/crates/foo/..%2fx"));
        let cookie = |m, path| Endpoint::parse(m, path, None).takes_session_cookie();
        assert!(cookie(Method::Get, "/crates/foo/1.0.0"));
        assert!(cookie(Method::Head, "/"));
        assert!(cookie(Method::Get, "/search"));
        assert!(!cookie(Method::Get, "/crates/foo/foo-1.0.0.crate"));
        assert!(!cookie(Method::Post, "/crates/foo"));
        assert!(!cookie(Method::Get, "/api/v1/crates"));
        assert!(!cookie(Method::Get, "/api/v1/crates/foo"));
        assert!(!cookie(Method::Get, "/login"));
        let Endpoint::Page(Page::Search { query, page }) =
            Endpoint::parse(Method::Get, "/search", Some("q=a+b&page=999"))
        else {
            panic!("not a search page")
        };
        assert_eq!((query.as_str(), page), ("a b", MAX_SEARCH_PAGE));
        assert_eq!(handled(Method::Put, "/crates/foo"), "done 405");
    }

    /// The base path is stripped once: below it the routes are found, elsewhere nothing.
    #[test]
    fn the_base_path_is_stripped_once() {
        let t = Trees::new("/nonexistent/i".into(), "/nonexistent/c".into(), 0);
        let s = Site::new("https://h/reg/", t, 1 << 20);
        let of = |target: &str| {
            let h = head(Method::Get, target);
            Endpoint::of(&s, &h).metric().name()
        };
        assert_eq!(of("/reg/index/config.json"), "index");
        assert_eq!(of("/reg/api/v1/crates/foo"), "api_crate");
        assert_eq!(of("/index/config.json"), "other");
        assert_eq!(of("/reg/reg/index/config.json"), "other");
    }
}
