//! Docs hosting over HTTP and at the command line: a version's `cargo doc` output uploaded
//! with a token (`PUT /api/v1/crates/{name}/{version}/docs`), served sandboxed under
//! `/docs/{name}/{version}/…` with content types and ETags, `latest` redirecting to the
//! newest version that is not yanked; hostile uploads each refused with a cargo-style error,
//! nothing left on disk, the server's peak memory flat; `docs add`/`docs remove`, `delete`,
//! `check`, `backup` and `restore` with docs.

mod support;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use palletizer::registry::testing::{crate_bytes, file, publish_body, simple_crate, Entry, RawTar};
use support::{
    publish_json, put_docs, raw_publish, send_until_close, show, snapshot, split_responses,
    vm_hwm_kib, RawResponse, Sandbox,
};

/// How far the server's peak resident set may rise while it refuses hostile uploads.
const FLAT_KIB: u64 = 256;

/// One request on its own connection, with extra header lines: the whole response.
fn get(addr: &str, path: &str, extra: &str) -> RawResponse {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n");
    split_responses(&send_until_close(addr, raw.as_bytes()), &[]).remove(0)
}

fn publish(addr: &str, token: &str, name: &str, vers: &str) {
    let body = publish_body(
        &publish_json(name, vers, serde_json::json!({})),
        &simple_crate(name, vers, &[]),
    );
    let (st, answer) = raw_publish(addr, token, &body);
    assert_eq!(st, 200, "publish {name} {vers}: {answer}");
}

/// What `cargo doc --no-deps` writes for a crate whose folder is `folder`, in small.
fn docs_of(folder: &str, marker: &str) -> Vec<u8> {
    let index = format!("./{folder}/index.html");
    let page = format!("<!DOCTYPE html><title>{marker}</title>");
    crate_bytes(&[
        file("./", b""),
        file("./.lock", b""),
        file(&index, page.as_bytes()),
        file("./static.files/main-1.js", b"window.x = 1;"),
        file("./static.files/Fira-1.woff2", b"wOF2"),
        file("./search.index/root-1.js", b"rr_('')"),
    ])
}

/// The error detail of a cargo-style JSON refusal, checked to be short and printable.
fn detail(what: &str, status: u16, body: &str) -> String {
    assert!((400..600).contains(&status), "{what}: {status} {body}");
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: {e}: {body}"));
    let d = v["errors"][0]["detail"].as_str().unwrap().to_owned();
    assert!(
        !d.is_empty() && d.len() < 400 && !d.chars().any(char::is_control),
        "{what}: {d:?}"
    );
    d
}

/// Names under the registry's docs tree, at any depth, directories too.
fn docs_tree(reg: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            out.push(e.path().strip_prefix(base).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                walk(base, &e.path(), out);
            }
        }
    }
    walk(&reg.join("docs"), &reg.join("docs"), &mut out);
    out.sort();
    out
}

/// A token for a new user `name` (not an admin), once the server knows it.
fn user_token(s: &Sandbox, addr: &str, name: &str, extra: &[&str]) -> String {
    s.palletizer_ok(&["user", "add", name]);
    let mut args = vec!["token", "create", "--user", name];
    args.extend_from_slice(extra);
    let token = s.palletizer_ok(&args).trim().to_owned();
    let start = Instant::now();
    // The server re-reads auth.json once the CLI's lock is released.
    while put_docs(addr, &token, "nothing-here", "1.0.0", b"x").0 == 401 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "token never known"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    token
}

/// 100,000 empty files in the crate's folder, as one small archive.
fn many_files() -> Vec<u8> {
    let mut t = RawTar::new().entry(b"./my_crate/index.html", b'0', b"<html>");
    for i in 0..100_000 {
        t = t.header(format!("./my_crate/f{i}.html").as_bytes(), b'0', 0);
    }
    t.end().finish()
}

/// A hostile upload: what it is, crate, version, token, archive, and what its refusal says.
type Case<'a> = (&'a str, &'a str, &'a str, &'a str, Vec<u8>, &'a str);

#[test]
fn hostile_docs_uploads_are_refused_leave_nothing_and_memory_flat() {
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    let (addr, token) = (srv.addr().to_owned(), s.token());
    publish(&addr, &token, "my-crate", "1.0.0");
    let mallory = user_token(&s, &addr, "mallory", &[]);
    let narrow = user_token(&s, &addr, "nora", &["--crate", "other-*"]);
    // Mallory owns a crate of her own, so her token may publish: the refusal is ownership.
    publish(&addr, &mallory, "mallorys", "1.0.0");
    let pid = srv.child.id();
    // One good upload first: the baseline holds what any upload needs.
    let (st, body) = put_docs(
        &addr,
        &token,
        "my-crate",
        "1.0.0",
        &docs_of("my_crate", "good"),
    );
    assert_eq!(st, 200, "{body}");
    support::wait_for_checkpoint(&s.reg());
    let before = snapshot(&s.reg());
    let tree = docs_tree(&s.reg());
    let baseline = vm_hwm_kib(pid);
    let link = |kind| Entry {
        path: "./my_crate/evil",
        data: b"",
        kind,
    };
    let index = file("./my_crate/index.html", b"<html>");
    let cases: Vec<Case> = vec![
        (
            "a symbolic link",
            "my-crate",
            "1.0.0",
            &token,
            crate_bytes(&[index.clone_entry(), link(tar::EntryType::Symlink)]),
            "is not a plain file or directory",
        ),
        (
            "a hard link",
            "my-crate",
            "1.0.0",
            &token,
            crate_bytes(&[index.clone_entry(), link(tar::EntryType::Link)]),
            "is not a plain file or directory",
        ),
        (
            "`..`",
            "my-crate",
            "1.0.0",
            &token,
            crate_bytes(&[index.clone_entry(), file("./my_crate/../../../evil", b"x")]),
            "unsafe path",
        ),
        (
            "an absolute path",
            "my-crate",
            "1.0.0",
            &token,
            crate_bytes(&[index.clone_entry(), file("/tmp/evil", b"x")]),
            "unsafe path",
        ),
        (
            "a file of 1 GiB of zeros",
            "my-crate",
            "1.0.0",
            &token,
            RawTar::new()
                .entry(b"./my_crate/index.html", b'0', b"<html>")
                .zero_entry(b"./my_crate/zeros.bin", b'0', 1 << 30)
                .end()
                .finish(),
            "unpacks to more than the limit",
        ),
        (
            "1 GiB of zeros after the archive",
            "my-crate",
            "1.0.0",
            &token,
            RawTar::new()
                .entry(b"./my_crate/index.html", b'0', b"<html>")
                .end()
                .zeros(1 << 30)
                .finish(),
            "data after the end",
        ),
        (
            "100,000 tiny files",
            "my-crate",
            "1.0.0",
            &token,
            many_files(),
            "more than the limit of 50000 files",
        ),
        (
            "no crate folder",
            "my-crate",
            "1.0.0",
            &token,
            docs_of("other_crate", "x"),
            "no `my_crate/index.html`",
        ),
        (
            "another user's crate",
            "my-crate",
            "1.0.0",
            &mallory,
            docs_of("my_crate", "x"),
            "mallory",
        ),
        (
            "a token whose crate patterns leave the crate out",
            "my-crate",
            "1.0.0",
            &narrow,
            docs_of("my_crate", "x"),
            "my-crate",
        ),
        (
            "a version that does not exist",
            "my-crate",
            "9.9.9",
            &token,
            docs_of("my_crate", "x"),
            "has no version `9.9.9`",
        ),
        (
            "a crate that does not exist",
            "no-such-crate",
            "1.0.0",
            &token,
            docs_of("no_such_crate", "x"),
            "does not exist",
        ),
        (
            "a version that is not one",
            "my-crate",
            "one",
            &token,
            docs_of("my_crate", "x"),
            "one",
        ),
        (
            "not gzip",
            "my-crate",
            "1.0.0",
            &token,
            b"<html>".to_vec(),
            "not a valid gzip",
        ),
    ];
    for (what, name, vers, who, archive, want) in cases {
        let started = Instant::now();
        let (st, body) = put_docs(&addr, who, name, vers, &archive);
        let d = detail(what, st, &body);
        let hwm = vm_hwm_kib(pid);
        eprintln!(
            "{what}: {} KB sent, {st} {d} ({:?}), VmHWM {hwm} KiB",
            archive.len() / 1000,
            started.elapsed()
        );
        assert!(d.contains(want), "{what}: want {want:?} in {d:?}");
        assert!(
            hwm <= baseline + FLAT_KIB,
            "{what}: the server's VmHWM went from {baseline} KiB to {hwm} KiB"
        );
        assert_eq!(docs_tree(&s.reg()), tree, "{what} left something behind");
    }
    // Larger than max-docs-size: refused before the body is sent.
    let raw = "PUT /api/v1/crates/my-crate/1.0.0/docs HTTP/1.1\r\nHost: localhost\r\n\
Authorization: TOKEN\r\nContent-Length: 1000000000\r\nExpect: 100-continue\r\n\r\n"
        .replace("TOKEN", &token);
    let r = split_responses(&send_until_close(&addr, raw.as_bytes()), &[]).remove(0);
    let d = detail("too large", r.status, &String::from_utf8_lossy(&r.body));
    assert_eq!(r.status, 413, "{d}");
    assert!(d.contains("max-docs-size"), "{d}");
    assert!(
        snapshot(&s.reg()) == before,
        "a hostile upload changed the registry"
    );
    // The good docs are still served as they were.
    let page = get(&addr, "/docs/my-crate/1.0.0/my_crate/index.html", "");
    assert!(String::from_utf8_lossy(&page.body).contains("good"));
}

/// `Entry` is not `Clone`; the few tests here that reuse one make a copy.
trait CloneEntry<'a> {
    fn clone_entry(&self) -> Entry<'a>;
}

impl<'a> CloneEntry<'a> for Entry<'a> {
    fn clone_entry(&self) -> Entry<'a> {
        Entry {
            path: self.path,
            data: self.data,
            kind: self.kind,
        }
    }
}

#[test]
fn docs_are_served_sandboxed_with_types_etags_and_latest() {
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    let (addr, token) = (srv.addr().to_owned(), s.token());
    publish(&addr, &token, "my-crate", "1.0.0");
    let (st, body) = put_docs(
        &addr,
        &token,
        "my-crate",
        "1.0.0",
        &docs_of("my_crate", "one"),
    );
    assert_eq!(st, 200, "{body}");
    let page = get(&addr, "/docs/my-crate/1.0.0/my_crate/index.html", "");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("Content-Security-Policy").unwrap();
    assert!(csp.starts_with("sandbox allow-scripts"), "{csp}");
    assert!(!csp.contains("allow-same-origin"), "{csp}");
    assert_eq!(page.header("X-Content-Type-Options"), Some("nosniff"));
    assert!(String::from_utf8_lossy(&page.body).contains("<title>one</title>"));
    let tag = page.header("ETag").unwrap().to_owned();
    let again = get(
        &addr,
        "/docs/my-crate/1.0.0/my_crate/index.html",
        &format!("If-None-Match: {tag}\r\n"),
    );
    assert_eq!(again.status, 304);
    let js = get(&addr, "/docs/my-crate/1.0.0/static.files/main-1.js", "");
    assert_eq!(
        js.header("Content-Type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(js.header("Content-Security-Policy").is_some());
    let font = get(&addr, "/docs/my-crate/1.0.0/static.files/Fira-1.woff2", "");
    assert_eq!(font.header("Content-Type"), Some("font/woff2"));
    assert_eq!(font.header("Access-Control-Allow-Origin"), Some("*"));
    for (path, status) in [
        ("/docs/my-crate/1.0.0/.lock", 404),
        ("/docs/my-crate/1.0.0/nope.html", 404),
        ("/docs/my-crate/1.0.0/../../palletizer.toml", 400),
        ("/docs/my-crate/1.0.0/%2e%2e/%2e%2e/palletizer.toml", 400),
        ("/docs/my-crate/2.0.0/my_crate/index.html", 404),
        ("/docs/nobody/latest/", 404),
    ] {
        assert_eq!(get(&addr, path, "").status, status, "{path}");
    }
    // A version's folder and `latest` are redirects.
    let to = |path: &str| {
        let r = get(&addr, path, "");
        assert_eq!(r.status, 302, "{path}");
        r.header("Location").unwrap().to_owned()
    };
    assert_eq!(
        to("/docs/my-crate/1.0.0/"),
        "/docs/my-crate/1.0.0/my_crate/index.html"
    );
    assert_eq!(
        to("/docs/my-crate/latest/"),
        "/docs/my-crate/1.0.0/my_crate/index.html"
    );
    assert_eq!(
        to("/docs/my-crate"),
        "/docs/my-crate/1.0.0/my_crate/index.html"
    );
    assert_eq!(
        to("/docs/my-crate/latest/static.files/main-1.js"),
        "/docs/my-crate/1.0.0/static.files/main-1.js"
    );
    // A newer version without docs does not move `latest`; its docs do; a yank moves it back.
    publish(&addr, &token, "my-crate", "1.1.0");
    assert_eq!(
        to("/docs/my-crate/latest/"),
        "/docs/my-crate/1.0.0/my_crate/index.html"
    );
    let (st, body) = put_docs(
        &addr,
        &token,
        "my-crate",
        "1.1.0",
        &docs_of("my_crate", "two"),
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        to("/docs/my-crate/latest/"),
        "/docs/my-crate/1.1.0/my_crate/index.html"
    );
    let yank = "DELETE /api/v1/crates/my-crate/1.1.0/yank HTTP/1.1\r\nHost: localhost\r\n\
Authorization: TOKEN\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        .replace("TOKEN", &token);
    let r = split_responses(&send_until_close(&addr, yank.as_bytes()), &[]);
    assert_eq!(r[0].status, 200);
    assert_eq!(
        to("/docs/my-crate/latest/"),
        "/docs/my-crate/1.0.0/my_crate/index.html"
    );
    // The crate page links the docs of the version it shows, and only when there are some.
    let crate_page = String::from_utf8(get(&addr, "/crates/my-crate", "").body).unwrap();
    assert!(
        crate_page.contains("href=\"/docs/my-crate/1.0.0/my_crate/index.html\""),
        "{crate_page}"
    );
    publish(&addr, &token, "bare", "1.0.0");
    let bare = String::from_utf8(get(&addr, "/crates/bare", "").body).unwrap();
    assert!(!bare.contains("/docs/"), "{bare}");
    // A new upload replaces the tree: new bytes, a new ETag.
    let (st, body) = put_docs(
        &addr,
        &token,
        "my-crate",
        "1.0.0",
        &docs_of("my_crate", "three"),
    );
    assert_eq!(st, 200, "{body}");
    let replaced = get(&addr, "/docs/my-crate/1.0.0/my_crate/index.html", "");
    assert!(String::from_utf8_lossy(&replaced.body).contains("<title>three</title>"));
    assert_ne!(replaced.header("ETag").unwrap(), tag);

    // Private: docs need a read token, or the pages' login cookie.
    s.palletizer_ok(&["access", "private"]);
    let path = "/docs/my-crate/1.0.0/my_crate/index.html";
    let start = Instant::now();
    while get(&addr, path, "").status != 401 {
        assert!(start.elapsed() < Duration::from_secs(30), "never private");
        std::thread::sleep(Duration::from_millis(50));
    }
    let read = s.palletizer_ok(&["token", "create", "--user", "admin", "--scope", "read"]);
    let read = read.trim();
    let start = Instant::now();
    while get(&addr, path, &format!("Authorization: {read}\r\n")).status != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "read token never taken"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let form = format!("token={read}");
    let login = format!(
        "POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Type: \
         application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    );
    let answer = split_responses(&send_until_close(&addr, login.as_bytes()), &[]).remove(0);
    let cookie = answer.header("Set-Cookie").expect("a session cookie");
    let cookie = cookie.split(';').next().unwrap();
    // The cookie opens the page by way of a read ticket for its tree, which the sandboxed
    // page's own requests (sent without the cookie) carry in their path.
    let with_cookie = get(
        &addr,
        &format!("{path}?search=x"),
        &format!("Cookie: {cookie}\r\n"),
    );
    assert_eq!(with_cookie.status, 302);
    assert_eq!(with_cookie.header("Cache-Control"), Some("no-store"));
    let ticketed = with_cookie.header("Location").unwrap().to_owned();
    let ticket = ticketed
        .strip_prefix("/docs/")
        .and_then(|t| t.split_once('/'))
        .map(|(t, rest)| {
            assert_eq!(rest, "my-crate/1.0.0/my_crate/index.html?search=x");
            t.to_owned()
        })
        .unwrap_or_else(|| panic!("{ticketed}"));
    assert!(ticket.starts_with('~'), "{ticketed}");
    let page = get(&addr, &ticketed, "");
    assert_eq!(page.status, 200);
    assert!(page.header("Content-Security-Policy").is_some());
    assert_eq!(page.header("Referrer-Policy"), Some("no-referrer"));
    let js = get(
        &addr,
        &format!("/docs/{ticket}/my-crate/1.0.0/static.files/main-1.js"),
        "",
    );
    assert_eq!(js.status, 200);
    // The ticket opens that version's tree only; a forged or foreign one is sent back.
    let other = get(
        &addr,
        &format!("/docs/{ticket}/my-crate/1.1.0/my_crate/index.html"),
        "",
    );
    assert_eq!(other.status, 302);
    assert_eq!(
        other.header("Location"),
        Some("/docs/my-crate/1.1.0/my_crate/index.html")
    );
    let forged = format!("/docs/{}0/my-crate/1.0.0/my_crate/index.html", &ticket);
    assert_eq!(get(&addr, &forged, "").status, 302);
    // Without the cookie or a ticket, nothing.
    assert_eq!(get(&addr, path, "").status, 401);
    // The cookie is for reading pages, never for the API.
    let body = docs_of("my_crate", "x");
    let mut raw = format!(
        "PUT /api/v1/crates/my-crate/1.0.0/docs HTTP/1.1\r\nHost: localhost\r\nCookie: \
         {cookie}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    let r = split_responses(&send_until_close(&addr, &raw), &[]).remove(0);
    assert_eq!(r.status, 401);
}

#[test]
fn docs_at_the_command_line_with_delete_check_backup_and_restore() {
    let s = Sandbox::new();
    let url = format!("file://{}", s.reg().display());
    s.palletizer_ok(&["init", "--url", &url]);
    let work = s.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let krate = work.join("my-crate-1.0.0.crate");
    fs::write(&krate, simple_crate("my-crate", "1.0.0", &[])).unwrap();
    s.palletizer_ok(&["add", krate.to_str().unwrap()]);
    // A target/doc directory.
    let doc = work.join("target-doc");
    fs::create_dir_all(doc.join("my_crate")).unwrap();
    fs::create_dir_all(doc.join("static.files")).unwrap();
    fs::write(doc.join("my_crate/index.html"), "<title>dir</title>").unwrap();
    fs::write(doc.join("static.files/main.js"), "1").unwrap();
    fs::write(doc.join(".lock"), "").unwrap();
    let out = s.palletizer_ok(&["docs", "add", "my-crate", "1.0.0", doc.to_str().unwrap()]);
    assert!(
        out.contains("docs/my-crate/1.0.0/my_crate/index.html"),
        "{out}"
    );
    let stored = s.reg().join("docs/my-crate/1.0.0");
    assert_eq!(
        fs::read_to_string(stored.join("my_crate/index.html")).unwrap(),
        "<title>dir</title>"
    );
    assert!(!stored.join(".lock").exists());
    // A .tar.gz replaces it.
    let tgz = work.join("docs.tar.gz");
    fs::write(&tgz, docs_of("my_crate", "tgz")).unwrap();
    s.palletizer_ok(&["docs", "add", "my-crate", "1.0.0", tgz.to_str().unwrap()]);
    let index = fs::read_to_string(stored.join("my_crate/index.html")).unwrap();
    assert!(index.contains("tgz"), "{index}");
    // A link in the directory is refused, never followed; bad arguments say how.
    std::os::unix::fs::symlink("/etc/passwd", doc.join("my_crate/passwd.html")).unwrap();
    let out = s.palletizer(&["docs", "add", "my-crate", "1.0.0", doc.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        show(&out).contains("is not a plain file or directory"),
        "{}",
        show(&out)
    );
    for args in [
        &["docs"][..],
        &["docs", "add", "my-crate", "1.0.0"],
        &["docs", "list"],
        &["docs", "remove"],
    ] {
        let out = s.palletizer(args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            show(&out).contains("usage: palletizer docs"),
            "{}",
            show(&out)
        );
    }
    let out = s.palletizer(&["docs", "add", "my-crate", "2.0.0", tgz.to_str().unwrap()]);
    assert!(
        show(&out).contains("has no version `2.0.0`"),
        "{}",
        show(&out)
    );
    assert!(s
        .palletizer_ok(&["check"])
        .contains("registry is consistent"));

    // Backup and restore carry the docs.
    let backup = s.path().join("reg.tar.gz");
    s.palletizer_ok(&["backup", backup.to_str().unwrap()]);
    let restored = s.path().join("restored");
    s.palletizer_ok(&[
        "restore",
        backup.to_str().unwrap(),
        restored.to_str().unwrap(),
    ]);
    let copy = restored.join("docs/my-crate/1.0.0/my_crate/index.html");
    assert!(fs::read_to_string(copy).unwrap().contains("tgz"));

    // Docs of a version the index does not have: reported, and repaired by removal.
    let orphan = s.reg().join("docs/my-crate/9.9.9/my_crate");
    fs::create_dir_all(&orphan).unwrap();
    fs::write(orphan.join("index.html"), "x").unwrap();
    let out = s.palletizer(&["check"]);
    assert!(!out.status.success());
    assert!(
        show(&out).contains("my-crate 9.9.9, which the index does not have"),
        "{}",
        show(&out)
    );
    s.palletizer_ok(&["check", "--repair"]);
    assert!(!s.reg().join("docs/my-crate/9.9.9").exists());

    // Removal of one version, then of the crate's docs with the crate.
    let out = s.palletizer_ok(&["docs", "remove", "my-crate", "1.0.0"]);
    assert!(out.contains("Removed the docs of my-crate 1.0.0"), "{out}");
    assert!(!stored.exists());
    let out = s.palletizer(&["docs", "remove", "my-crate"]);
    assert!(
        show(&out).contains("no docs of `my-crate`"),
        "{}",
        show(&out)
    );
    s.palletizer_ok(&["docs", "add", "my-crate", "1.0.0", tgz.to_str().unwrap()]);
    s.palletizer_ok(&["delete", "my-crate"]);
    assert!(
        !s.reg().join("docs/my-crate").exists(),
        "delete takes the docs"
    );
    assert!(s
        .palletizer_ok(&["check"])
        .contains("registry is consistent"));
}
