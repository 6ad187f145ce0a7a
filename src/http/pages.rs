//! The pages people read in a browser: the home page (how to use the registry, the newest
//! crates, a search box), search results, a page per crate and version, and the login
//! form of a private registry. Server-rendered HTML with inline CSS and no script.
//!
//! Each page is rendered per request into one buffer, bounded by construction (a page of
//! search hits, the newest few crates, at most [`MAX_VERSIONS_SHOWN`] versions, a README
//! read back bounded) and never cached. Pages that read more than one small file (search,
//! the newest crates, a crate's versions, info, README and owners) run on the registry
//! worker as [`Job::Page`]; the login page needs no file and is answered on the loop.
//!
//! Every string from a crate (name, description, README, links) is escaped here or was
//! sanitized when it was stored (the README, see [`Registry::readme_html`]), and the
//! answers carry a Content-Security-Policy that lets no script run at all.
//!
//! A browser's session in a private registry is a cookie holding the token itself: no
//! server-side state, and the cookie counts only for reading pages (never for the API,
//! whose writes it would otherwise expose to cross-site requests).

use std::fmt::Write as _;
use std::sync::Arc;

use super::request::{query_param, Head};
use super::response::{Body, Response};
use super::Site;
use crate::registry::{
    canonical, Access, AuthView, CrateDownloads, CrateInfo, CrateName, DepKind, IndexEntry, Need,
    Registry, Scopes, SearchLine, Version, RECENT_DAYS,
};

/// The cookie that carries a browser's token.
pub const SESSION_COOKIE: &str = "palletizer_session";
/// The registry name the copied `cargo` lines use (as on the login page).
const REGISTRY_NAME: &str = "palletizer";
const PER_PAGE: usize = 20;
/// The last search page served: deeper pages would keep more lines in memory.
pub const MAX_SEARCH_PAGE: usize = 50;
const NEWEST: usize = 10;
const MAX_VERSIONS_SHOWN: usize = 200;
/// Largest login form body (a token and the page to return to).
pub const MAX_LOGIN_BODY: u64 = 8 * 1024;

/// What a page needs to know about the site (the worker has no [`Site`]).
#[derive(Debug, Clone)]
pub struct Ctx {
    pub url: String,
    pub base: String,
    pub access: Access,
    /// The request carries a session cookie: the page offers to log out.
    pub session: bool,
    /// Who may do what, as the loop holds it (shared, never re-read from the file here).
    pub auth: Arc<AuthView>,
}

impl Ctx {
    pub fn of(site: &Site, head: &Head) -> Ctx {
        Ctx {
            url: site.url.clone(),
            base: site.base_path.clone(),
            access: site.access(),
            session: head.cookie.as_deref().and_then(session_token).is_some(),
            auth: Arc::clone(&site.auth),
        }
    }
}

/// A page the worker renders.
#[derive(Debug)]
pub enum Page {
    Home,
    Search { query: String, page: usize },
    Crate { name: String, vers: Option<String> },
}

/// The token in a `Cookie` header's session cookie.
pub fn session_token(cookie: &str) -> Option<&str> {
    cookie.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == SESSION_COOKIE && !v.is_empty()).then_some(v)
    })
}

/// The answer to a page request without a good token in a private registry: the login
/// form, which returns to `target` after logging in.
pub fn login_required(site: &Site, head: &Head, detail: &str) -> Response {
    let ctx = Ctx::of(site, head);
    login_page(&ctx, 401, Some(&head.target), Some(detail)).header(
        "WWW-Authenticate",
        format!("Cargo login_url=\"{}/login\"", site.url),
    )
}

/// Renders a page on the worker.
pub fn run(reg: &Registry, page: Page, ctx: &Ctx) -> Response {
    match page {
        Page::Home => home(reg, ctx),
        Page::Search { query, page } => search_page(reg, ctx, &query, page),
        Page::Crate { name, vers } => crate_page(reg, ctx, &name, vers.as_deref()),
    }
}

/// Checks the login form `body` against the loop's access view (no file is read) and sets
/// the session cookie.
pub fn login(body: &[u8], ctx: &Ctx) -> Response {
    let form = String::from_utf8_lossy(body);
    let next = query_param(&form, "next");
    let token = query_param(&form, "token").unwrap_or_default();
    let token = token.trim();
    let refusal = match ctx
        .auth
        .authorize(Some(token), Need::Read, None, crate::registry::now())
    {
        // The cookie holds the token: one that can change the registry would hand those
        // rights to whatever the browser sends with it.
        Ok(p) if p.scopes.intersects(Scopes::WRITE) => {
            let writes: Vec<&str> = p.scopes.names().filter(|&n| n != "read").collect();
            let detail = format!(
                "token {} has the scopes {}: a browser keeps only a read token. Make one \
                 with `palletizer token create --user {} --scope read`",
                p.token,
                writes.join(", "),
                p.user
            );
            let mut r = login_page(ctx, 403, next.as_deref(), Some(&detail));
            r.refusal = Some(format!("POST /login: token {} has write scopes", p.token));
            return r;
        }
        Ok(_) => None,
        Err(refusal) => Some(refusal),
    };
    // A cookie value may hold no space, quote, comma, semicolon or backslash.
    let cookie_safe = !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"\",;\\".contains(&b));
    match refusal {
        None if cookie_safe => {
            let mut cookie = format!(
                "{SESSION_COOKIE}={token}; Path={}/; HttpOnly; SameSite=Strict",
                ctx.base
            );
            if ctx.url.starts_with("https://") {
                cookie.push_str("; Secure");
            }
            Response::new(303)
                .header("Location", safe_next(ctx, next.as_deref()))
                .header("Set-Cookie", cookie)
                .header("Cache-Control", "no-store")
        }
        refusal => {
            let detail = refusal.map_or("the token holds characters no token has".into(), |r| {
                r.detail()
            });
            let mut r = login_page(ctx, 401, next.as_deref(), Some(&detail));
            r.refusal = Some(format!("POST /login: {detail}"));
            r
        }
    }
}

/// The header's "Log out": a form, since logging out changes state and a `GET` must not.
fn logout_button(base: &str) -> String {
    format!(
        "<form class=\"out\" method=\"post\" action=\"{base}/logout\">\
<button type=\"submit\">Log out</button></form>"
    )
}

/// `GET /logout`: the button that logs out, nothing more.
pub fn logout_page(ctx: &Ctx) -> Response {
    let main = format!(
        "<h1>Log out</h1><p>Logging out removes the token from this browser's cookie.</p>{}",
        logout_button(&ctx.base)
    );
    layout(ctx, 200, "Log out: Palletizer", "", &main).header("Cache-Control", "no-store")
}

pub fn logout(ctx: &Ctx) -> Response {
    let mut cookie = format!(
        "{SESSION_COOKIE}=; Path={}/; HttpOnly; SameSite=Strict; Max-Age=0",
        ctx.base
    );
    if ctx.url.starts_with("https://") {
        cookie.push_str("; Secure");
    }
    Response::new(303)
        .header("Location", format!("{}/login", ctx.base))
        .header("Set-Cookie", cookie)
        .header("Cache-Control", "no-store")
}

/// Where a login returns: a path on this site, never another origin (`//host`, `/\host`).
fn safe_next(ctx: &Ctx, next: Option<&str>) -> String {
    let home = format!("{}/", ctx.base);
    match next {
        Some(n)
            if n.starts_with(&home)
                && !n.starts_with("//")
                && n.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') =>
        {
            n.to_owned()
        }
        _ => home,
    }
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query value or a path segment.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A link target from crate metadata: only http(s) URLs become links.
fn web_link(url: &str) -> Option<String> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    (lower.starts_with("https://") || lower.starts_with("http://")).then(|| esc(url))
}

const STYLE: &str = "\
*{box-sizing:border-box}\
body{margin:0;font:16px/1.5 system-ui,-apple-system,\"Segoe UI\",Roboto,sans-serif;color:#1b1b1b;background:#fff}\
a{color:#0b57a4}a:focus,button:focus,input:focus{outline:3px solid #e8a200;outline-offset:1px}\
header,main,footer{max-width:72rem;margin:0 auto;padding:.75rem 1rem}\
header{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center;border-bottom:1px solid #ccc}\
header .home{font-weight:700;color:#1b1b1b;text-decoration:none;margin-right:auto}\
form.s{display:flex;gap:.25rem;flex:1 1 16rem;max-width:28rem}form.out{margin:0}\
input[type=search],input[type=password]{flex:1;min-width:0;padding:.45rem;border:1px solid #666;border-radius:4px;font:inherit}\
button{padding:.45rem .9rem;border:1px solid #0b57a4;background:#0b57a4;color:#fff;border-radius:4px;font:inherit;cursor:pointer}\
pre{background:#f3f3f3;padding:.6rem;overflow-x:auto;border-radius:4px}code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.92em}\
h1{font-size:1.7rem;margin:.5rem 0;overflow-wrap:anywhere}h2{font-size:1.2rem;margin:1.2rem 0 .4rem}\
ul.list{list-style:none;padding:0}ul.list li{padding:.5rem 0;border-bottom:1px solid #e2e2e2}\
.v{color:#4a4a4a;font-weight:400}.muted{color:#4a4a4a}\
.yanked{color:#8a1414;background:#fde8e8;border-radius:3px;padding:0 .3rem;font-size:.85em}\
.cols{display:grid;grid-template-columns:minmax(0,1fr);gap:1.5rem}\
@media(min-width:60rem){.cols{grid-template-columns:minmax(0,1fr) 20rem}}\
aside dl{margin:0}aside dt{font-weight:600;margin-top:.6rem}aside dd{margin:0;overflow-wrap:anywhere}\
.readme img{max-width:100%}.readme table{border-collapse:collapse}.readme td,.readme th{border:1px solid #ccc;padding:.2rem .4rem}\
.err{color:#8a1414;font-weight:600}.sr{position:absolute;left:-9999px}\
nav.pages{display:flex;gap:1rem;margin:1rem 0}";

/// Whether a dependency's `registry` is crates.io's index (git or sparse).
fn is_crates_io(registry: &str) -> bool {
    matches!(
        registry.trim_end_matches('/'),
        crate::registry::CRATES_IO_INDEX | "sparse+https://index.crates.io"
    )
}

/// The whole page around `main` (already escaped HTML).
fn layout(ctx: &Ctx, status: u16, title: &str, query: &str, main: &str) -> Response {
    let b = &ctx.base;
    let mut html = String::with_capacity(main.len() + STYLE.len() + 1024);
    let _ = write!(
        html,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{title}</title><style>{STYLE}</style></head><body>\
<header><a class=\"home\" href=\"{b}/\">Palletizer <span class=\"muted\">{url}</span></a>\
<form class=\"s\" role=\"search\" action=\"{b}/search\" method=\"get\">\
<label class=\"sr\" for=\"top-q\">Search crates</label>\
<input id=\"top-q\" type=\"search\" name=\"q\" value=\"{q}\" placeholder=\"Search crates\">\
<button type=\"submit\">Search</button></form>",
        title = esc(title),
        url = esc(&ctx.url),
        q = esc(query),
    );
    if ctx.session {
        let _ = write!(html, "{}", logout_button(&ctx.base));
    }
    let _ = write!(
        html,
        "</header>\n<main id=\"main\">{main}</main>\n<footer class=\"muted\">\
<a href=\"{b}/login\">Getting a token</a></footer></body></html>\n"
    );
    Response::new(status)
        .header("Content-Type", "text/html; charset=utf-8")
        .header("Cache-Control", "no-cache")
        .header("Content-Security-Policy", csp(ctx.access))
        .header("X-Content-Type-Options", "nosniff")
        .header("Referrer-Policy", "same-origin")
        .body(Body::Bytes(html.into_bytes()))
}

/// No script runs, forms post only here. In a private registry no image loads from
/// anywhere else either: a README's remote image would tell its publisher who reads the
/// page and when.
fn csp(access: Access) -> &'static str {
    match access {
        Access::Private => {
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; \
form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
        }
        Access::Open | Access::Public => {
            "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; \
form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
        }
    }
}

/// A stored README with each image shown as a link to it (`[image: ALT]`), for a private
/// registry's pages. The stored HTML is the Markdown writer's own (raw HTML is dropped when
/// it is rendered), so every `<img` is one it wrote: `<img src="…" alt="…"…/>`, with
/// the values already escaped.
fn images_as_links(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(at) = rest.find("<img ") {
        out.push_str(&rest[..at]);
        let tag_end = rest[at..].find('>').map_or(rest.len(), |e| at + e + 1);
        let tag = &rest[at..tag_end];
        let attr = |name: &str| {
            let key = format!(" {name}=\"");
            let start = tag.find(&key)? + key.len();
            let len = tag[start..].find('"')?;
            Some(&tag[start..start + len])
        };
        let alt = attr("alt").filter(|a| !a.is_empty()).unwrap_or("image");
        match attr("src").filter(|s| !s.is_empty()) {
            Some(src) => {
                let _ = write!(out, "<a href=\"{src}\">[image: {alt}]</a>");
            }
            None => {
                let _ = write!(out, "[image: {alt}]");
            }
        }
        rest = &rest[tag_end..];
    }
    out.push_str(rest);
    out
}

fn error_page(ctx: &Ctx, status: u16, message: &str) -> Response {
    let main = format!(
        "<h1>{}</h1><p>{}</p>",
        super::response::reason(status),
        esc(message)
    );
    layout(ctx, status, super::response::reason(status), "", &main)
}

fn not_found(ctx: &Ctx, message: &str) -> Response {
    error_page(ctx, 404, message)
}

fn config_snippet(ctx: &Ctx) -> String {
    let mut s = format!(
        "[registries.{REGISTRY_NAME}]\nindex = \"sparse+{}/index/\"\n",
        ctx.url
    );
    if ctx.access != Access::Open {
        s.push_str("\n[registry]\nglobal-credential-providers = [\"cargo:token\"]\n");
    }
    esc(&s)
}

/// `/login`: how to get a token, and in a private registry the form that starts a session.
pub fn login_page(ctx: &Ctx, status: u16, next: Option<&str>, error: Option<&str>) -> Response {
    let url = &ctx.url;
    let host = url
        .split_once("://")
        .map_or(url.as_str(), |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or("");
    let scheme = url.split_once("://").map_or("https", |(s, _)| s);
    let mode = match ctx.access {
        Access::Open => "open: no token is checked",
        Access::Public => {
            "public: anyone may read; publishing, yanking and owner changes need a token"
        }
        Access::Private => "private: every request needs a token with the <code>read</code> scope",
    };
    let mut main = String::with_capacity(4096);
    if ctx.access == Access::Private {
        main.push_str("<h1>Log in</h1>");
        if let Some(e) = error {
            let _ = write!(main, "<p class=\"err\" role=\"alert\">{}</p>", esc(e));
        }
        let _ = write!(
            main,
            "<form method=\"post\" action=\"{b}/login\"><p><label for=\"token\">Token</label><br>\
<input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" required \
style=\"width:100%;max-width:28rem\"></p>\
<input type=\"hidden\" name=\"next\" value=\"{next}\">\
<p><button type=\"submit\">Log in</button></p></form>\
<p class=\"muted\">The token stays in a cookie of this browser until you log out or close it; \
only a token with the <code>read</code> scope alone is taken here.</p>",
            b = ctx.base,
            next = esc(&safe_next(ctx, next)),
        );
        main.push_str("<h2>Getting a token</h2>");
    } else {
        main.push_str("<h1>Getting a token</h1>");
    }
    let _ = write!(
        main,
        "<p>This registry ({url}) is {mode}.</p>\
<p>Tokens are made on the registry's machine by its administrator:</p>\
<pre><code>palletizer user add NAME\npalletizer token create --user NAME [--scope read] [--expires 90d]</code></pre>\
<p>The token is shown once. Then, in <code>~/.cargo/config.toml</code>:</p>\
<pre><code>{snippet}</code></pre>\
<p>and run <code>cargo login --registry {REGISTRY_NAME}</code> and paste the token.</p>\
<p>For the git index (<code>net.git-fetch-with-cli</code> or cargo's libgit2), git asks for \
credentials: any user name, the token as password, e.g. with <code>git config --global \
credential.helper store</code> and the line <code>{scheme}://token:TOKEN@{host}</code> in \
<code>~/.git-credentials</code>.</p>",
        url = esc(url),
        snippet = config_snippet(ctx),
        scheme = esc(scheme),
        host = esc(host),
    );
    let title = if ctx.access == Access::Private {
        "Log in: Palletizer"
    } else {
        "Getting a token: Palletizer"
    };
    layout(ctx, status, title, "", &main).header("Cache-Control", "no-store")
}

fn crate_link(ctx: &Ctx, name: &str) -> String {
    format!("{}/crates/{}", ctx.base, enc(name))
}

fn hit_list(ctx: &Ctx, hits: &[SearchLine], out: &mut String) {
    out.push_str("<ul class=\"list\">");
    for h in hits {
        let _ = write!(
            out,
            "<li><a href=\"{}\"><strong>{}</strong></a> <span class=\"v\">{}</span>",
            crate_link(ctx, &h.name),
            esc(&h.name),
            esc(&h.max_version)
        );
        if let Some(d) = &h.description {
            let _ = write!(out, "<br>{}", esc(d));
        }
        out.push_str("</li>");
    }
    out.push_str("</ul>");
}

fn home(reg: &Registry, ctx: &Ctx) -> Response {
    let (newest, total) = match newest_crates(reg) {
        Ok(found) => found,
        Err(e) => {
            error!("error: home page: {e}");
            (Vec::new(), 0)
        }
    };
    let mut main = String::with_capacity(8192);
    let _ = write!(
        main,
        "<h1>Crates at {url}</h1><p>A Cargo registry with {total} crate{s}.</p>\
<section aria-labelledby=\"use\"><h2 id=\"use\">Use this registry</h2>\
<p>Add to <code>.cargo/config.toml</code>:</p><pre><code>{snippet}</code></pre>\
<p>then <code>cargo add NAME --registry {REGISTRY_NAME}</code>. \
<a href=\"{b}/login\">Getting a token</a>.</p></section>\
<section aria-labelledby=\"find\"><h2 id=\"find\">Search</h2>\
<form role=\"search\" action=\"{b}/search\" method=\"get\"><label for=\"q\">Crate name, words of its description or a keyword</label>\
<div style=\"display:flex;gap:.25rem;max-width:32rem\"><input id=\"q\" type=\"search\" name=\"q\">\
<button type=\"submit\">Search</button></div></form></section>\
<section aria-labelledby=\"new\"><h2 id=\"new\">Newest crates</h2>",
        url = esc(&ctx.url),
        s = if total == 1 { "" } else { "s" },
        snippet = config_snippet(ctx),
        b = ctx.base,
    );
    if newest.is_empty() {
        main.push_str("<p>Nothing is published yet.</p>");
    } else {
        hit_list(ctx, &newest, &mut main);
    }
    main.push_str("</section>");
    layout(ctx, 200, "Palletizer", "", &main)
}

/// The [`NEWEST`] crates published last (from the index's history: a few commit reads,
/// whatever the registry's size), and the number of crates (one pass over `search.jsonl`).
/// The home page's list, kept between requests on the thread that renders pages: it is
/// worked out again only when the search files changed (every publish, yank and delete
/// appends to them), so a home page view costs two `stat`s instead of a read of every
/// crate's search line and a walk of the history.
type Newest = (Vec<SearchLine>, usize);
/// Which search files a kept list was made from: device, inode, size, modification time of
/// each (`None`: missing).
type SearchFileId = [Option<(u64, u64, u64, i64, i64)>; 2];

thread_local! {
    static NEWEST_SEEN: std::cell::RefCell<Option<(SearchFileId, Newest)>> =
        const { std::cell::RefCell::new(None) };
}

fn newest_crates(reg: &Registry) -> crate::registry::Result<Newest> {
    use std::os::unix::fs::MetadataExt;
    let key = reg.search_paths().map(|p| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
    });
    // The sorted file is there once the registry holds a crate and checkpointed; before,
    // nothing is kept.
    let key = key[0].is_some().then_some(key);
    if let Some(key) = key {
        let kept = NEWEST_SEEN.with_borrow(|seen| {
            seen.as_ref()
                .filter(|(k, _)| *k == key)
                .map(|(_, found)| found.clone())
        });
        if let Some(found) = kept {
            return Ok(found);
        }
    }
    let found = newest_crates_now(reg)?;
    if let Some(key) = key {
        NEWEST_SEEN.with_borrow_mut(|seen| *seen = Some((key, found.clone())));
    }
    Ok(found)
}

fn newest_crates_now(reg: &Registry) -> crate::registry::Result<Newest> {
    let names = reg.recently_added(NEWEST, 2_000)?;
    let keys: Vec<String> = names.iter().map(|n| canonical(n)).collect();
    let mut found: Vec<Option<SearchLine>> = vec![None; keys.len()];
    let mut total = 0;
    reg.for_each_search_line(|line| {
        total += 1;
        let key = canonical(&line.name);
        if let Some(i) = keys.iter().position(|k| *k == key) {
            found[i] = Some(line);
        }
    })?;
    // Crates deleted since, or with every version yanked, drop out.
    let newest = found
        .into_iter()
        .flatten()
        .filter(|l| !l.max_version.is_empty())
        .collect();
    Ok((newest, total))
}

fn search_page(reg: &Registry, ctx: &Ctx, query: &str, page: usize) -> Response {
    let found = match reg.search_page(query, (page - 1) * PER_PAGE, PER_PAGE) {
        Ok(f) => f,
        Err(e) => {
            error!("error: search page: {e}");
            return error_page(ctx, 500, "The search failed; the server log has details.");
        }
    };
    let mut main = String::with_capacity(8192);
    let _ = write!(
        main,
        "<h1>Search results for “{}”</h1><p>{} crate{} found.</p>",
        esc(query),
        found.total,
        if found.total == 1 { "" } else { "s" }
    );
    hit_list(ctx, &found.hits, &mut main);
    let pages = found.total.div_ceil(PER_PAGE).min(MAX_SEARCH_PAGE);
    if pages > 1 {
        let link = |p: usize| format!("{}/search?q={}&amp;page={p}", ctx.base, enc(query));
        main.push_str("<nav class=\"pages\" aria-label=\"Result pages\">");
        if page > 1 {
            let _ = write!(
                main,
                "<a rel=\"prev\" href=\"{}\">Previous</a>",
                link(page - 1)
            );
        }
        let _ = write!(main, "<span>Page {page} of {pages}</span>");
        if page < pages {
            let _ = write!(main, "<a rel=\"next\" href=\"{}\">Next</a>", link(page + 1));
        }
        main.push_str("</nav>");
    }
    let title = format!("{query}: search: Palletizer");
    layout(ctx, 200, &title, query, &main)
}

fn crate_page(reg: &Registry, ctx: &Ctx, name: &str, vers: Option<&str>) -> Response {
    let Ok(parsed) = CrateName::parse(name) else {
        return not_found(ctx, "That is not a crate name.");
    };
    let mut entries = match reg.entries(&parsed) {
        Ok(e) => e,
        Err(e) => {
            error!("error: crate page: {e}");
            return error_page(
                ctx,
                500,
                "The crate could not be read; the server log has details.",
            );
        }
    };
    if entries.is_empty() {
        return not_found(ctx, &format!("No crate named {name} is published here."));
    }
    // Newest first; an entry whose version does not parse sorts last.
    entries.sort_by_cached_key(|e| std::cmp::Reverse(Version::parse(&e.vers).ok().map(|v| v.0)));
    let newest = entries.iter().position(|e| !e.yanked).unwrap_or(0);
    let shown = match vers {
        Some(v) => {
            let wanted = Version::parse(v).ok();
            match entries.iter().position(|e| {
                e.vers == v
                    || wanted
                        .as_ref()
                        .is_some_and(|w| Version::parse(&e.vers).is_ok_and(|x| x.0 == w.0))
            }) {
                Some(i) => i,
                None => return not_found(ctx, &format!("{} has no version {v}.", entries[0].name)),
            }
        }
        None => newest,
    };
    let e = &entries[shown];
    let info = reg.crate_info(e);
    let mut readme = reg.readme_html(e);
    if ctx.access == Access::Private {
        readme = readme.map(|html| images_as_links(&html));
    }
    let owners: Vec<&str> = ctx.auth.owners_of(&e.name);
    let mut main = String::with_capacity(16 * 1024 + readme.as_ref().map_or(0, String::len));
    // Counts that cannot be read show as none: the page is still worth showing.
    let downloads = reg
        .downloads(&parsed, crate::registry::now())
        .unwrap_or_else(|err| {
            error!("warning: download counts of {name}: {err}");
            CrateDownloads::default()
        });
    let shown_page = Shown {
        entries: &entries,
        at: shown,
        pinned: shown != newest,
        downloads: &downloads,
        docs: reg.has_docs(&e.name, &e.vers),
    };
    render_crate(
        ctx,
        &shown_page,
        &info,
        &owners,
        readme.as_deref(),
        &mut main,
    );
    let title = format!("{} {}: Palletizer", e.name, e.vers);
    layout(ctx, 200, &title, "", &main)
}

/// The versions of a crate, newest first, and the one a page shows.
struct Shown<'a> {
    entries: &'a [IndexEntry],
    at: usize,
    /// Not the version `cargo add` picks: the copied lines name it.
    pinned: bool,
    downloads: &'a CrateDownloads,
    /// The version has docs here.
    docs: bool,
}

fn render_crate(
    ctx: &Ctx,
    shown: &Shown<'_>,
    info: &CrateInfo,
    owners: &[&str],
    readme: Option<&str>,
    out: &mut String,
) {
    let e = &shown.entries[shown.at];
    let (name, vers) = (esc(&e.name), esc(&e.vers));
    let add = if shown.pinned {
        format!("{name}@{vers}")
    } else {
        name.clone()
    };
    let _ = write!(out, "<h1>{name} <span class=\"v\">{vers}</span>");
    if e.yanked {
        out.push_str(" <span class=\"yanked\">yanked</span>");
    }
    out.push_str("</h1>");
    if let Some(d) = &info.description {
        let _ = write!(out, "<p>{}</p>", esc(d));
    }
    let _ = write!(
        out,
        "<section aria-labelledby=\"install\"><h2 id=\"install\">Install</h2>\
<p>Run in your project:</p><pre><code>cargo add {add} --registry {REGISTRY_NAME}</code></pre>\
<p>or add to <code>Cargo.toml</code>:</p>\
<pre><code>{name} = {{ version = \"{vers}\", registry = \"{REGISTRY_NAME}\" }}</code></pre></section>\
<div class=\"cols\"><article class=\"readme\" aria-labelledby=\"readme\"><h2 id=\"readme\">README</h2>"
    );
    match readme {
        Some(html) => out.push_str(html),
        None => out.push_str("<p class=\"muted\">This version has no README.</p>"),
    }
    out.push_str("</article><aside aria-label=\"About this crate\"><dl>");
    let dd = |out: &mut String, term: &str, value: &str| {
        let _ = write!(out, "<dt>{term}</dt><dd>{value}</dd>");
    };
    if let Some(l) = &info.license {
        dd(out, "License", &esc(l));
    } else if let Some(l) = &info.license_file {
        dd(out, "License", &format!("see {}", esc(l)));
    }
    if let Some(r) = &e.rust_version {
        dd(out, "Rust version", &format!("{} or newer", esc(r)));
    }
    if let Some(t) = &e.pubtime {
        dd(
            out,
            "Published",
            &format!("<time datetime=\"{0}\">{0}</time>", esc(t)),
        );
    }
    render_links(ctx, shown, info, &name, &vers, out);
    if !owners.is_empty() {
        let list: Vec<String> = owners.iter().map(|o| esc(o)).collect();
        dd(out, "Owners", &list.join(", "));
    }
    if !info.authors.is_empty() {
        let list: Vec<String> = info.authors.iter().map(|a| esc(a)).collect();
        dd(out, "Authors", &list.join(", "));
    }
    if !info.keywords.is_empty() {
        let list: Vec<String> = info.keywords.iter().map(|k| esc(k)).collect();
        dd(out, "Keywords", &list.join(", "));
    }
    out.push_str("</dl>");
    render_deps(ctx, e, out);
    render_features(e, out);
    render_versions(ctx, shown.entries, shown.at, out);
    out.push_str("</aside></div>");
}

/// The download counts, the project's links and the docs link of a crate page.
fn render_links(
    ctx: &Ctx,
    shown: &Shown<'_>,
    info: &CrateInfo,
    name: &str,
    vers: &str,
    out: &mut String,
) {
    let e = &shown.entries[shown.at];
    let dd = |out: &mut String, term: &str, value: &str| {
        let _ = write!(out, "<dt>{term}</dt><dd>{value}</dd>");
    };
    let counts = |(total, recent): (u64, u64)| {
        format!("{total} <span class=\"muted\">({recent} in the last {RECENT_DAYS} days)</span>")
    };
    let all = (shown.downloads.total(), shown.downloads.recent());
    dd(out, "Downloads", &counts(all));
    dd(
        out,
        "Of this version",
        &counts(shown.downloads.version(&e.vers)),
    );
    for (term, url) in [
        ("Repository", &info.repository),
        ("Homepage", &info.homepage),
        ("Documentation", &info.documentation),
    ] {
        if let Some(u) = url {
            let value = match web_link(u) {
                Some(href) => {
                    format!("<a href=\"{href}\" rel=\"nofollow noopener noreferrer\">{href}</a>")
                }
                None => esc(u),
            };
            dd(out, term, &value);
        }
    }
    if shown.docs {
        let href = format!(
            "{}/docs/{}/{}/{}/index.html",
            ctx.base,
            enc(&e.name),
            enc(&e.vers),
            enc(&crate::registry::crate_folder(&e.name))
        );
        let link = format!("<a class=\"docs\" href=\"{href}\">{name} {vers} (rustdoc)</a>");
        dd(out, "Docs", &link);
    }
}

fn render_deps(ctx: &Ctx, e: &IndexEntry, out: &mut String) {
    for (kind, title) in [
        (DepKind::Normal, "Dependencies"),
        (DepKind::Build, "Build dependencies"),
        (DepKind::Dev, "Dev dependencies"),
    ] {
        let deps: Vec<_> = e
            .deps
            .iter()
            .filter(|d| d.kind.unwrap_or_default() == kind)
            .collect();
        if deps.is_empty() {
            continue;
        }
        let _ = write!(out, "<h2>{title}</h2><ul class=\"list\">");
        for d in deps {
            let real = d.package.as_deref().unwrap_or(&d.name);
            out.push_str("<li>");
            // `registry: None` in the index means this registry.
            if d.registry.is_none() {
                let _ = write!(
                    out,
                    "<a href=\"{}\">{}</a>",
                    crate_link(ctx, real),
                    esc(real)
                );
            } else if d.registry.as_deref().is_some_and(is_crates_io) {
                let _ = write!(
                    out,
                    "<a href=\"https://crates.io/crates/{0}\">{0}</a> \
                     <span class=\"muted\">(crates.io)</span>",
                    esc(real)
                );
            } else {
                let _ = write!(
                    out,
                    "{} <span class=\"muted\">(from {})</span>",
                    esc(real),
                    esc(d.registry.as_deref().unwrap_or_default())
                );
            }
            let _ = write!(out, " <code>{}</code>", esc(&d.req));
            if d.package.is_some() {
                let _ = write!(out, " as <code>{}</code>", esc(&d.name));
            }
            if d.optional {
                out.push_str(" <span class=\"muted\">optional</span>");
            }
            if let Some(t) = &d.target {
                let _ = write!(out, " <span class=\"muted\">on {}</span>", esc(t));
            }
            out.push_str("</li>");
        }
        out.push_str("</ul>");
    }
}

fn render_features(e: &IndexEntry, out: &mut String) {
    let all = e.features.iter().chain(e.features2.iter().flatten());
    let mut any = false;
    for (f, values) in all {
        if !any {
            out.push_str("<h2>Features</h2><ul class=\"list\">");
            any = true;
        }
        let _ = write!(out, "<li><code>{}</code>", esc(f));
        if !values.is_empty() {
            let list: Vec<String> = values.iter().map(|v| esc(v)).collect();
            let _ = write!(out, " = {}", list.join(", "));
        }
        out.push_str("</li>");
    }
    if any {
        out.push_str("</ul>");
    }
}

fn render_versions(ctx: &Ctx, entries: &[IndexEntry], shown: usize, out: &mut String) {
    let _ = write!(
        out,
        "<h2>Versions</h2><ul class=\"list\" aria-label=\"Versions\">"
    );
    for (i, v) in entries.iter().enumerate().take(MAX_VERSIONS_SHOWN) {
        let href = format!("{}/{}", crate_link(ctx, &v.name), enc(&v.vers));
        let current = if i == shown {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(out, "<li><a href=\"{href}\"{current}>{}</a>", esc(&v.vers));
        if v.yanked {
            out.push_str(" <span class=\"yanked\">yanked</span>");
        }
        if let Some(t) = &v.pubtime {
            let day = t.get(..10).unwrap_or(t);
            let _ = write!(
                out,
                " <time class=\"muted\" datetime=\"{}\">{}</time>",
                esc(t),
                esc(day)
            );
        }
        out.push_str("</li>");
    }
    if entries.len() > MAX_VERSIONS_SHOWN {
        let _ = write!(
            out,
            "<li class=\"muted\">and {} older versions</li>",
            entries.len() - MAX_VERSIONS_SHOWN
        );
    }
    out.push_str("</ul>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::files::Trees;
    use crate::http::Method;
    use crate::registry::testing::{render_readme, scratch_registry};

    fn head(method: Method, target: &str, cookie: Option<&str>) -> Head {
        let raw = format!(
            "{} {target} HTTP/1.1\r\nHost: x\r\n{}\r\n",
            method.as_str(),
            cookie.map_or(String::new(), |c| format!("Cookie: {c}\r\n"))
        );
        crate::http::request::parse(raw.as_bytes(), 8192)
            .unwrap()
            .unwrap()
    }

    /// The access check of a request to `s`, at time 100.
    fn check(
        s: &Site,
        h: Head,
    ) -> Result<Option<crate::registry::Principal>, Box<crate::http::Refused>> {
        crate::http::authorize(s, &crate::http::Endpoint::of(s, &h), &h, 100)
    }

    fn site(url: &str) -> Site {
        let t = Trees::new("/nonexistent/i".into(), "/nonexistent/c".into(), 0);
        Site::new(url, t, 1 << 20)
    }

    fn text(r: &Response) -> String {
        let Body::Bytes(b) = &r.body else {
            panic!("no page body")
        };
        String::from_utf8(b.clone()).unwrap()
    }

    fn ctx(access: Access) -> Ctx {
        Ctx {
            url: "https://reg.example/sub".into(),
            base: "/sub".into(),
            access,
            session: false,
            auth: Arc::new(AuthView::new(access, &Default::default())),
        }
    }

    #[test]
    fn session_cookie_and_return_paths() {
        assert_eq!(
            session_token("a=1; palletizer_session=tok; b=2"),
            Some("tok")
        );
        assert_eq!(session_token("palletizer_session="), None);
        assert_eq!(session_token("xpalletizer_session=tok"), None);
        let c = ctx(Access::Private);
        assert_eq!(
            safe_next(&c, Some("/sub/crates/x?y=1")),
            "/sub/crates/x?y=1"
        );
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/other",
            "/sub/\\x",
            "/sub/a b",
        ] {
            assert_eq!(safe_next(&c, Some(bad)), "/sub/", "{bad}");
        }
    }

    /// The cookie stands for the token on page reads in a private registry, and nowhere
    /// else: not on the index, not on an API write (a cross-site request would carry it).
    #[test]
    fn session_cookie_counts_for_page_reads_only() {
        let (_tmp, reg) = scratch_registry();
        let secret = reg.bootstrap_admin(100).unwrap().unwrap();
        reg.set_access(Access::Private).unwrap();
        let mut s = site("http://h");
        s.auth = Arc::new(AuthView::load(reg.root()).unwrap());
        let cookie = format!("palletizer_session={secret}");
        let with = |m, t: &str| check(&s, head(m, t, Some(&cookie)));
        assert!(with(Method::Get, "/crates/foo").unwrap().is_some());
        assert!(with(Method::Get, "/").unwrap().is_some());
        assert!(with(Method::Head, "/search?q=x").unwrap().is_some());
        for (m, t) in [
            (Method::Get, "/index/config.json"),
            (Method::Get, "/crates/foo/foo-1.0.0.crate"),
            (Method::Delete, "/api/v1/crates/foo/1.0.0/yank"),
            (Method::Put, "/api/v1/crates/new"),
        ] {
            let refused = with(m, t).expect_err(t);
            assert_eq!(refused.response.status, 401, "{t}");
        }
        // Without a session, a page answers with the login form, returning to it after.
        let r = check(&s, head(Method::Get, "/crates/foo", None))
            .unwrap_err()
            .response;
        assert_eq!(r.status, 401);
        let page = text(&r);
        assert!(
            page.contains("<form method=\"post\" action=\"/login\">"),
            "{page}"
        );
        assert!(
            page.contains("name=\"next\" value=\"/crates/foo\""),
            "{page}"
        );
        let bad = check(&s, head(Method::Get, "/", Some("palletizer_session=nope")));
        assert_eq!(bad.unwrap_err().response.status, 401);
    }

    /// The form takes a read token, and only one: a token that can also publish, yank or
    /// change owners never goes into a cookie. The view is the one the loop holds: the
    /// form reads no file.
    #[test]
    fn login_form_sets_a_cookie_only_for_a_good_read_token() {
        let (_tmp, reg) = scratch_registry();
        let admin = reg.bootstrap_admin(100).unwrap().unwrap();
        let (_, secret) = reg
            .create_token(
                crate::registry::NewToken {
                    user: "admin".into(),
                    scopes: Some(Scopes::READ),
                    crates: Vec::new(),
                    expires_in: None,
                    label: None,
                },
                100,
            )
            .unwrap();
        let c = Ctx {
            auth: Arc::new(AuthView::load(reg.root()).unwrap()),
            ..ctx(Access::Private)
        };
        std::fs::remove_file(reg.root().join("auth.json")).unwrap();
        let body = format!("token={secret}&next=%2Fsub%2Fcrates%2Ffoo");
        let r = login(body.as_bytes(), &c);
        assert_eq!(r.status, 303);
        let header = |r: &Response, n: &str| {
            r.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.to_string())
        };
        let full = login(format!("token={admin}").as_bytes(), &c);
        assert_eq!(full.status, 403);
        assert!(header(&full, "Set-Cookie").is_none());
        let page = text(&full);
        assert!(
            page.contains("publish-new, publish-update, yank, change-owners")
                && page.contains("--scope read"),
            "{page}"
        );
        assert_eq!(header(&r, "Location").as_deref(), Some("/sub/crates/foo"));
        let cookie = header(&r, "Set-Cookie").unwrap();
        assert_eq!(
            cookie,
            format!("palletizer_session={secret}; Path=/sub/; HttpOnly; SameSite=Strict; Secure")
        );
        let r = login(b"token=wrong&next=%2Fsub%2F", &c);
        assert_eq!(r.status, 401);
        assert!(header(&r, "Set-Cookie").is_none());
        assert!(text(&r).contains("role=\"alert\""));
        let r = logout(&ctx(Access::Private));
        assert!(header(&r, "Set-Cookie").unwrap().contains("Max-Age=0"));
    }

    /// Only a POST ends a session: a `GET /logout` (a link, an image on another site's page)
    /// shows the button and leaves the cookie alone; the POST clears it.
    #[test]
    fn only_a_post_logs_out() {
        let s = site("http://h");
        let answer = |m| {
            let h = head(m, "/logout", Some("palletizer_session=tok"));
            match crate::http::Endpoint::of(&s, &h).handle(&s, &h) {
                crate::http::Routed::Done(r) => r,
                _ => panic!("logout makes no job"),
            }
        };
        let cookie = |r: &Response| {
            r.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
                .map(|(_, v)| v.to_string())
        };
        for m in [Method::Get, Method::Head] {
            let r = answer(m);
            assert_eq!(r.status, 200);
            assert_eq!(cookie(&r), None);
        }
        let page = text(&answer(Method::Get));
        assert!(page.contains("<form class=\"out\" method=\"post\" action=\"/logout\">"));
        let r = answer(Method::Post);
        assert_eq!(r.status, 303);
        assert!(cookie(&r).unwrap().contains("Max-Age=0"));
    }

    #[test]
    fn login_page_tells_how_to_get_a_token() {
        let r = login_page(&ctx(Access::Private), 200, None, None);
        assert_eq!(r.status, 200);
        let page = text(&r);
        for want in [
            "palletizer token create --user NAME",
            "sparse+https://reg.example/sub/index/",
            "global-credential-providers = [&quot;cargo:token&quot;]",
            "cargo login --registry palletizer",
            "https://token:TOKEN@reg.example",
            "<code>read</code> scope",
            "<label for=\"token\">Token</label>",
        ] {
            assert!(page.contains(want), "{want}\n{page}");
        }
        let open = Ctx {
            url: "http://h/<x>".into(),
            base: String::new(),
            access: Access::Public,
            session: false,
            auth: ctx(Access::Public).auth,
        };
        let page = text(&login_page(&open, 200, None, None));
        assert!(!page.contains("<x>"));
        assert!(!page.contains("<form method=\"post\""));
    }

    /// "Log out" is offered to a reader who has a session, never to somebody who has none.
    #[test]
    fn log_out_only_for_a_session() {
        let page = |c: Ctx| text(&layout(&c, 200, "t", "", ""));
        for access in [Access::Open, Access::Public, Access::Private] {
            assert!(!page(ctx(access)).contains("Log out"), "{access}");
            let with = Ctx {
                session: true,
                ..ctx(access)
            };
            assert!(
                page(with).contains("action=\"/sub/logout\"><button type=\"submit\">Log out"),
                "{access}"
            );
        }
        let s = site("http://h");
        let with = head(Method::Get, "/", Some("a=1; palletizer_session=tok"));
        assert!(Ctx::of(&s, &with).session);
        assert!(!Ctx::of(&s, &head(Method::Get, "/", Some("a=1"))).session);
    }

    /// A crates.io dependency is named as one and links to crates.io; another registry's is
    /// named by its index.
    #[test]
    fn dependencies_say_where_they_come_from() {
        let entry: IndexEntry = serde_json::from_value(serde_json::json!({
            "name": "foo", "vers": "1.0.0", "cksum": "00", "features": {},
            "deps": [
                {"name": "serde", "req": "^1", "kind": "normal",
                 "registry": crate::registry::CRATES_IO_INDEX},
                {"name": "other", "req": "^2", "kind": "normal",
                 "registry": "https://git.example/index"},
                {"name": "local", "req": "^3", "kind": "normal"},
            ],
        }))
        .unwrap();
        let mut out = String::new();
        render_deps(&ctx(Access::Public), &entry, &mut out);
        assert!(
            out.contains("<a href=\"https://crates.io/crates/serde\">serde</a> <span class=\"muted\">(crates.io)</span>"),
            "{out}"
        );
        assert!(
            out.contains("other <span class=\"muted\">(from https://git.example/index)</span>"),
            "{out}"
        );
        assert!(
            out.contains("<a href=\"/sub/crates/local\">local</a>"),
            "{out}"
        );
        assert!(!out.contains("other registry"), "{out}");
    }

    /// In a private registry no README image loads from another site (it would tell the
    /// publisher who reads the page, and when): each is a link, and the page's policy lets
    /// no remote image load. A public registry keeps them.
    #[test]
    fn private_pages_load_no_remote_image() {
        let md = "# R\n\n![logo](https://tracker.example/p.png?u=1&v=2 \"T\") and \
![](http://x.example/y.png) and text `<img src=\"https://t.example/\">`\n";
        let html = render_readme(md).unwrap();
        assert_eq!(html.matches("<img ").count(), 2, "{html}");
        let private = images_as_links(&html);
        assert!(!private.contains("<img"), "{private}");
        assert!(
            private.contains(
                "<a href=\"https://tracker.example/p.png?u=1&amp;v=2\">[image: logo]</a>"
            ),
            "{private}"
        );
        assert!(
            private.contains("<a href=\"http://x.example/y.png\">[image: image]</a>"),
            "{private}"
        );
        assert!(private.contains("&lt;img src="), "{private}");
        let policy = |access| {
            let r = layout(&ctx(access), 200, "t", "", "");
            r.headers
                .iter()
                .find(|(k, _)| *k == "Content-Security-Policy")
                .map(|(_, v)| v.to_string())
                .unwrap()
        };
        assert!(policy(Access::Private).contains("img-src data:;"));
        assert!(!policy(Access::Private).contains("https:"));
        assert!(policy(Access::Public).contains("img-src https: data:"));
    }

    /// A crate whose name-adjacent fields and README hold markup shows it as text: nothing
    /// from the crate becomes an element or an attribute.
    #[test]
    fn crate_strings_are_escaped_and_the_readme_sanitized() {
        let evil = "<script>document.title='pwned'</script>\"'><img src=x onerror=alert(1)>";
        let entry: IndexEntry = serde_json::from_value(serde_json::json!({
            "name": "foo", "vers": "1.0.0", "cksum": "00", "features": {evil: [evil]},
            "deps": [{"name": "bar", "req": "^1", "target": evil, "kind": "normal"}],
            "rust_version": evil, "pubtime": evil,
        }))
        .unwrap();
        let info = CrateInfo {
            description: Some(evil.into()),
            license: Some(evil.into()),
            repository: Some(format!("https://x/{evil}")),
            homepage: Some(format!("javascript:{evil}")),
            authors: vec![evil.into()],
            keywords: vec![evil.into()],
            ..Default::default()
        };
        let readme = render_readme(&format!("# R\n\n{evil}\n")).unwrap();
        let shown = Shown {
            entries: std::slice::from_ref(&entry),
            at: 0,
            pinned: false,
            downloads: &CrateDownloads::default(),
            docs: true,
        };
        let mut out = String::new();
        render_crate(
            &ctx(Access::Open),
            &shown,
            &info,
            &[evil],
            Some(&readme),
            &mut out,
        );
        // No script element, no handler attribute, no script URL in any tag; no
        // attribute value left early.
        for tag in out.split('<').skip(1).map(|t| t.split('>').next().unwrap()) {
            // Tag and attribute names; quoted values hold escaped text only.
            let names: String = tag.split('"').step_by(2).collect();
            for bad in ["script", "onerror"] {
                assert!(!names.contains(bad), "`{bad}` in <{tag}>");
            }
            assert!(!tag.contains("\"javascript:"), "<{tag}>");
        }
        assert!(!out.contains("\"'>"), "{out}");
        assert!(out.contains("&lt;script&gt;"), "{out}");
        assert!(out.contains("<a href=\"/sub/crates/bar\">bar</a>"), "{out}");
        let r = layout(&ctx(Access::Open), 200, evil, evil, "");
        assert!(!text(&r).contains("<script"));
        let csp = r
            .headers
            .iter()
            .find(|(k, _)| *k == "Content-Security-Policy");
        assert!(csp.is_some_and(|(_, v)| v.contains("default-src 'none'")));
    }
}
