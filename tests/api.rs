//! The web API: the real cargo publishing, yanking and searching against a running server,
//! and raw requests that must be refused without changing the registry.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use palletizer::registry::testing::{noise, publish_body, simple_crate};
use support::{meta, raw_publish, read_one, show, snapshot, Sandbox, ServerProc};

fn setup() -> (Sandbox, ServerProc) {
    let s = Sandbox::new();
    let srv = s.serve_for_cargo();
    (s, srv)
}

fn cargo_publish(s: &Sandbox, dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "publish",
        "--registry",
        "local",
        "--allow-dirty",
        "--no-verify",
    ];
    args.extend_from_slice(extra);
    s.cargo_cmd(dir, &args)
        .env("CARGO_REGISTRIES_LOCAL_TOKEN", s.token())
        .output()
        .unwrap()
}

fn publish_ok(s: &Sandbox, name: &str, version: Option<&str>) {
    let dir = s.test_crate(name, version);
    let out = cargo_publish(s, &dir, &[]);
    assert!(out.status.success(), "publish {name}:\n{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Published"), "{err}");
}

fn head_commit(s: &Sandbox) -> String {
    let repo = git2::Repository::open(s.reg().join("index")).unwrap();
    let id = repo.head().unwrap().peel_to_commit().unwrap().id();
    id.to_string()
}

fn commit_count(s: &Sandbox) -> usize {
    let repo = git2::Repository::open(s.reg().join("index")).unwrap();
    let mut walk = repo.revwalk().unwrap();
    walk.push_head().unwrap();
    walk.count()
}

#[test]
fn cargo_publish_yank_search_end_to_end() {
    let (s, srv) = setup();
    for (name, vers) in support::RICH_DEPS {
        publish_ok(&s, name, Some(vers));
    }
    publish_ok(&s, "rich", None);
    let line = s.index_line("ri/ch/rich", "0.2.0");
    let abdep = line["deps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "abdep")
        .unwrap();
    assert_eq!(abdep["package"], "ab");
    assert!(abdep["registry"].is_null());
    assert_eq!(line["features2"]["extra"], serde_json::json!(["dep:abdep"]));
    // cargo's post-publish poll found the version at once: one PUT, no repeated polling.
    let puts = |l: &[String]| {
        l.iter()
            .filter(|l| l.contains("PUT /api/v1/crates/new 200"))
            .count()
    };
    let log = srv.log_when(0, |l| puts(l) >= 6);
    assert_eq!(
        log.iter()
            .filter(|l| l.contains("PUT /api/v1/crates/new 200"))
            .count(),
        6,
        "{log:?}"
    );

    // A second publish of the same version is refused by cargo itself (it reads the index).
    let out = cargo_publish(&s, &s.test_crate("ab", None), &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{}",
        show(&out)
    );

    // A 5 MiB crate goes through `Expect: 100-continue`.
    let big = s.test_crate("leaf", Some("0.2.0"));
    fs::write(big.join("blob.bin"), noise(5 << 20)).unwrap();
    let out = cargo_publish(&s, &big, &[]);
    assert!(out.status.success(), "{}", show(&out));
    let size = fs::metadata(s.reg().join("crates/leaf/leaf-0.2.0.crate"))
        .unwrap()
        .len();
    assert!(size > 5 << 20, "{size}");

    // Yank and unyank through cargo.
    let app = s.test_crate("app", None);
    let yank = |extra: &[&str]| {
        let mut args = vec!["yank", "--registry", "local", "leaf@0.1.1"];
        args.extend_from_slice(extra);
        let out = s
            .cargo_cmd(&app, &args)
            .env("CARGO_REGISTRIES_LOCAL_TOKEN", s.token())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
    };
    let etag_before = fs::metadata(s.reg().join("index/le/af/leaf")).unwrap();
    yank(&[]);
    assert_eq!(s.index_line("le/af/leaf", "0.1.1")["yanked"], true);
    let etag_after = fs::metadata(s.reg().join("index/le/af/leaf")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_ne!(
        etag_before.ino(),
        etag_after.ino(),
        "the file was replaced, so its ETag changed"
    );
    let out = s.cargo_ok(&app, &["generate-lockfile"]);
    let lock = fs::read_to_string(app.join("Cargo.lock")).unwrap();
    assert!(
        lock.contains("name = \"leaf\"\nversion = \"0.1.0\""),
        "{out}\n{lock}"
    );
    yank(&["--undo"]);
    assert_eq!(s.index_line("le/af/leaf", "0.1.1")["yanked"], false);
    s.cargo_ok(&app, &["update", "-p", "leaf"]);
    let out = s.cargo_ok(&app, &["run", "-q"]);
    assert!(out.contains("leaf 0.1.1 + ab + tgt"), "{out}");

    // Search: descriptions, the exact name first, and the "and N crates more" line.
    let out = s.cargo_ok(
        &app,
        &["search", "--registry", "local", "leaf", "--limit", "5"],
    );
    assert!(out.contains("leaf = \"0.2.0\""), "{out}");
    assert!(out.contains("# A leaf crate with no dependencies"), "{out}");
    let out = s.cargo_ok(&app, &["search", "--registry", "local", "", "--limit", "2"]);
    assert!(out.contains("... and 3 crates more"), "{out}");
    let out = s.cargo_ok(&app, &["search", "--registry", "local", "ab"]);
    assert!(
        out.lines().next().unwrap().starts_with("ab = \"1.0.0\""),
        "{out}"
    );
    // max_version skips yanked versions.
    let yanked = s
        .cargo_cmd(&app, &["yank", "--registry", "local", "leaf@0.2.0"])
        .env("CARGO_REGISTRIES_LOCAL_TOKEN", s.token())
        .output()
        .unwrap();
    assert!(yanked.status.success(), "{}", show(&yanked));
    let out = s.cargo_ok(&app, &["search", "--registry", "local", "leaf"]);
    assert!(out.contains("leaf = \"0.1.1\""), "{out}");
}

#[test]
fn dependencies_on_our_registry_and_crates_io() {
    let (s, _srv) = setup();
    publish_ok(&s, "leaf", None);
    // A stand-in for crates.io, so packaging needs no network: cargo still writes the
    // crates.io index URL for such dependencies.
    let fake = s.path().join("fake-crates-io");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_palletizer"))
        .args([
            "-r",
            fake.to_str().unwrap(),
            "init",
            "--url",
            &format!("file://{}", fake.display()),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let p = s.path().join("cio-1.0.0.crate");
    fs::write(&p, simple_crate("cio", "1.0.0", &[])).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_palletizer"))
        .args(["-r", fake.to_str().unwrap(), "add", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let cfg = fs::read_to_string(s.cargo_home().join("config.toml")).unwrap();
    s.cargo_config(&format!(
        "{cfg}[source.crates-io]\nreplace-with = \"fake\"\n[source.fake]\nregistry = \"file://{}/index\"\n",
        fake.display()
    ));
    let dir = s.path().join("mixed");
    fs::create_dir_all(dir.join("src")).unwrap();
    fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"mixed\"\nversion = \"0.1.0\"\nedition = \"2021\"\ndescription = \"ours and theirs\"\nlicense = \"MIT\"\n\n\
[dependencies]\nleaf = { version = \"0.1\", registry = \"local\" }\ncio = \"1\"\n",
    )
    .unwrap();
    fs::write(dir.join("src/lib.rs"), "").unwrap();
    let out = cargo_publish(&s, &dir, &[]);
    assert!(out.status.success(), "{}", show(&out));
    let line = s.index_line("mi/xe/mixed", "0.1.0");
    let deps = line["deps"].as_array().unwrap();
    let dep = |n: &str| deps.iter().find(|d| d["name"] == n).unwrap().clone();
    assert!(dep("leaf")["registry"].is_null(), "{line}");
    assert_eq!(
        dep("cio")["registry"],
        "https://github.com/rust-lang/crates.io-index",
        "{line}"
    );
}

#[test]
fn bad_publishes_are_refused_and_change_nothing() {
    let (s, srv) = setup();
    let good = simple_crate("foo-bar", "1.0.0", &[]);
    let (st, body) = raw_publish(
        srv.addr(),
        &s.token(),
        &publish_body(&meta("foo-bar", "1.0.0", serde_json::json!([])), &good),
    );
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("\"warnings\""));
    let before = snapshot(&s.reg());
    let head = head_commit(&s);

    let other = simple_crate("other", "1.0.0", &[]);
    let mut truncated = publish_body(&meta("other", "1.0.0", serde_json::json!([])), &other);
    truncated.truncate(truncated.len() - 10);
    let mut beyond = publish_body(&meta("other", "1.0.0", serde_json::json!([])), &other);
    let json_len = meta("other", "1.0.0", serde_json::json!([])).len();
    beyond[4 + json_len..8 + json_len].copy_from_slice(&(other.len() as u32 + 100).to_le_bytes());
    let mut json_beyond = publish_body(b"{}", b"");
    json_beyond[..4].copy_from_slice(&1000u32.to_le_bytes());
    let dep = |registry: &str| {
        serde_json::json!([{ "name": "x", "version_req": "^1", "features": [], "optional": false,
            "default_features": true, "target": null, "kind": "normal", "registry": registry }])
    };
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("truncated framing", truncated, 400, "goes beyond the body"),
        (
            "crate length beyond body",
            beyond,
            400,
            "goes beyond the body",
        ),
        (
            "json length beyond body",
            json_beyond,
            400,
            "metadata length goes beyond",
        ),
        ("tiny body", vec![1, 2], 400, "truncated"),
        (
            "invalid json",
            publish_body(b"{not json", &other),
            400,
            "invalid JSON metadata",
        ),
        (
            "name mismatch",
            publish_body(&meta("another", "1.0.0", serde_json::json!([])), &other),
            400,
            "Cargo.toml says other 1.0.0",
        ),
        (
            "version mismatch",
            publish_body(&meta("other", "1.0.1", serde_json::json!([])), &other),
            400,
            "Cargo.toml says other 1.0.0",
        ),
        (
            "invalid name",
            publish_body(
                &meta("9bad", "1.0.0", serde_json::json!([])),
                &simple_crate("9bad", "1.0.0", &[]),
            ),
            400,
            "must start with an ASCII letter",
        ),
        (
            "reserved name",
            publish_body(
                &meta("std", "1.0.0", serde_json::json!([])),
                &simple_crate("std", "1.0.0", &[]),
            ),
            400,
            "reserved",
        ),
        (
            "existing version",
            publish_body(&meta("foo-bar", "1.0.0", serde_json::json!([])), &good),
            409,
            "already uploaded",
        ),
        (
            "build metadata",
            publish_body(
                &meta("foo-bar", "1.0.0+meta", serde_json::json!([])),
                &simple_crate("foo-bar", "1.0.0+meta", &[]),
            ),
            409,
            "already uploaded",
        ),
        (
            "canonical collision",
            publish_body(
                &meta("Foo_Bar", "2.0.0", serde_json::json!([])),
                &simple_crate("Foo_Bar", "2.0.0", &[]),
            ),
            409,
            "too similar",
        ),
        (
            "registry not allowed",
            publish_body(
                &meta("other", "1.0.0", dep("sparse+https://evil.example/index/")),
                &other,
            ),
            400,
            "which this registry does not allow; to allow it, add that index URL to \
             `allowed-registries` in palletizer.toml",
        ),
        (
            "corrupt tarball",
            publish_body(
                &meta("other", "1.0.0", serde_json::json!([])),
                b"\x1f\x8bnope",
            ),
            400,
            "not a valid gzip",
        ),
    ];
    for (what, body, status, detail) in cases {
        let (st, text) = raw_publish(srv.addr(), &s.token(), &body);
        assert_eq!(st, status, "{what}: {text}");
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: {text}"));
        let d = v["errors"][0]["detail"].as_str().unwrap();
        assert!(d.contains(detail), "{what}: {d}");
        assert!(
            !d.contains(s.path().to_str().unwrap()),
            "{what}: path leaked: {d}"
        );
        assert_eq!(head_commit(&s), head, "{what} committed");
        assert!(snapshot(&s.reg()) == before, "{what} changed the registry");
    }

    // Over the limit: refused from the head alone, before `100 Continue` and the body.
    let mut c = TcpStream::connect(srv.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let token = s.token();
    c.write_all(format!("PUT /api/v1/crates/new HTTP/1.1\r\nHost: localhost\r\nAuthorization: {token}\r\nContent-Length: 200000000\r\nExpect: 100-continue\r\n\r\n").as_bytes())
        .unwrap();
    let (st, text) = read_one(&mut c);
    assert_eq!(st, 413);
    assert!(text.contains("max upload size is: "), "{text}");

    // A client that asks for `100 Continue` gets it before sending the body.
    let body = publish_body(
        &meta("cont", "1.0.0", serde_json::json!([])),
        &simple_crate("cont", "1.0.0", &[]),
    );
    let mut c = TcpStream::connect(srv.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "PUT /api/v1/crates/new HTTP/1.1\r\nHost: localhost\r\nAuthorization: {token}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).unwrap();
    let mut interim = [0u8; 25];
    c.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    c.write_all(&body).unwrap();
    assert_eq!(read_one(&mut c).0, 200);

    // A client that disconnects mid-body leaves no file behind.
    let before = snapshot(&s.reg());
    let mut c = TcpStream::connect(srv.addr()).unwrap();
    c.write_all(format!("PUT /api/v1/crates/new HTTP/1.1\r\nHost: localhost\r\nAuthorization: {token}\r\nContent-Length: 100000\r\n\r\n").as_bytes())
        .unwrap();
    c.write_all(&[0u8; 5000]).unwrap();
    let spooled = || {
        fs::read_dir(s.reg())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".tmp-")
            })
            .count()
    };
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while spooled() == 0 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(spooled(), 1, "the body is spooled to a temp file");
    drop(c);
    while spooled() > 0 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(spooled(), 0, "temp file removed");
    assert!(snapshot(&s.reg()) == before);
}

#[test]
fn api_errors_are_cargo_readable() {
    let (s, srv) = setup();
    let auth = format!("\r\nAuthorization: {}\r\n", s.token());
    let req = |raw: &str| {
        let mut c = TcpStream::connect(srv.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(raw.replacen("\r\n", &auth, 1).as_bytes())
            .unwrap();
        read_one(&mut c)
    };
    for (raw, status) in [
        (
            "DELETE /api/v1/crates/nope/1.0.0/yank HTTP/1.1\r\nHost: localhost\r\n\r\n",
            404,
        ),
        (
            "PUT /api/v1/crates/nope/1.0.0/unyank HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
            404,
        ),
        (
            "DELETE /api/v1/crates/nope/x.y/yank HTTP/1.1\r\nHost: localhost\r\n\r\n",
            400,
        ),
        (
            "GET /api/v1/crates/nope/1.0.0/yank HTTP/1.1\r\nHost: localhost\r\n\r\n",
            405,
        ),
        (
            "GET /api/v1/crates?q=x&per_page=zero HTTP/1.1\r\nHost: localhost\r\n\r\n",
            400,
        ),
        ("GET /api/v1/nothing HTTP/1.1\r\nHost: localhost\r\n\r\n", 404),
    ] {
        let (st, body) = req(raw);
        assert_eq!(st, status, "{raw}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            v["errors"][0]["detail"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{body}"
        );
    }
    let (st, body) = req("GET /api/v1/crates?q=anything HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(st, 200);
    assert_eq!(body.trim(), r#"{"crates":[],"meta":{"total":0}}"#);
}

#[test]
fn names_from_urls_never_reach_the_file_system() {
    let (s, srv) = setup();
    publish_ok(&s, "leaf", None);
    // Bait outside the registry that would parse as an index line: the traversal used to
    // rewrite such a file, and answered 500 where a missing one answered 404.
    support::index_line_bait(s.path());
    let before = snapshot(s.path());
    let long = "x".repeat(5000);
    for name in [
        "..%2F..%2F..%2Fetc",
        "..%2F..%2Fetc",
        "%2E%2E",
        "",
        "a%C3%A9b",
        "a%00b",
        "%2Fetc",
        "a%2Fb",
        long.as_str(),
    ] {
        for (method, action) in [("DELETE", "yank"), ("PUT", "unyank")] {
            let raw = format!(
                "{method} /api/v1/crates/{name}/1.0.0/{action} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\nContent-Length: 0\r\n\r\n",
                s.token()
            );
            let mut c = TcpStream::connect(srv.addr()).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c.write_all(raw.as_bytes()).unwrap();
            let (st, body) = read_one(&mut c);
            assert!(
                st == 400 || (name.is_empty() && st == 404),
                "{method} {name:.40}: {st} {body}"
            );
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let detail = v["errors"][0]["detail"].as_str().unwrap();
            assert!(detail.len() < 300, "bounded echo: {detail}");
        }
    }
    assert_eq!(snapshot(s.path()), before, "nothing changed anywhere");
}

#[test]
fn twenty_concurrent_publishes_all_land() {
    let (s, srv) = setup();
    let before = commit_count(&s);
    let dirs: Vec<_> = (0..20)
        .map(|i| {
            let dir = s.path().join(format!("c{i}"));
            fs::create_dir_all(dir.join("src")).unwrap();
            fs::write(
                dir.join("Cargo.toml"),
                format!("[package]\nname = \"conc{i}\"\nversion = \"0.1.0\"\nedition = \"2021\"\ndescription = \"c\"\nlicense = \"MIT\"\n"),
            )
            .unwrap();
            fs::write(dir.join("src/lib.rs"), "").unwrap();
            dir
        })
        .collect();
    let children: Vec<_> = dirs
        .iter()
        .map(|d| {
            s.cargo_cmd(
                d,
                &[
                    "publish",
                    "--registry",
                    "local",
                    "--allow-dirty",
                    "--no-verify",
                ],
            )
            .env("CARGO_REGISTRIES_LOCAL_TOKEN", s.token())
            .env("CARGO_TARGET_DIR", d.join("target"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    // Index reads keep being answered for as long as the publishes run, including between
    // the first and the last of them (the worker commits; the loop never waits for it).
    let mut children = children;
    let puts = || {
        srv.log()
            .iter()
            .filter(|l| l.contains("PUT /api/v1/crates/new 200"))
            .count()
    };
    let mut during = 0;
    while children.iter_mut().any(|c| c.try_wait().unwrap().is_none()) {
        let mut c = TcpStream::connect(srv.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"GET /index/config.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        assert_eq!(read_one(&mut c).0, 200);
        if (1..20).contains(&puts()) {
            during += 1;
        }
        // Paced well under the per-peer request rate: this shows reads go on, not limits.
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        during > 0,
        "no index read was answered while publishes were in progress"
    );
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", show(&out));
    }
    assert_eq!(commit_count(&s) - before, 20);
    for i in 0..20 {
        assert_eq!(
            s.index_line(&format!("co/nc/conc{i}"), "0.1.0")["yanked"],
            false
        );
    }
}

#[test]
fn odd_authorization_headers_never_stop_the_server() {
    let (s, srv) = setup();
    let body = publish_body(
        &meta("odd", "1.0.0", serde_json::json!([])),
        &simple_crate("odd", "1.0.0", &[]),
    );
    let long = "x".repeat(10_000);
    // A multi-byte character where a scheme's space would be used to panic the event loop.
    for value in [
        "Basicé",
        "Beareré",
        "pal_é",
        "Basic !!!",
        "Bearer",
        long.as_str(),
    ] {
        let mut c = TcpStream::connect(srv.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let head = format!(
            "PUT /api/v1/crates/new HTTP/1.1\r\nHost: localhost\r\nAuthorization: {value}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        c.write_all(head.as_bytes()).unwrap();
        let _ = c.write_all(&body);
        let (st, text) = read_one(&mut c);
        assert_eq!(st, 401, "{value:.20}: {text}");
    }
    // Two sets of credentials: refused, whichever comes first.
    let mut c = TcpStream::connect(srv.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let two = format!(
        "DELETE /api/v1/crates/odd/1.0.0/yank HTTP/1.1\r\nHost: localhost\r\nAuthorization: wrong\r\nAuthorization: {}\r\n\r\n",
        s.token()
    );
    c.write_all(two.as_bytes()).unwrap();
    assert_eq!(read_one(&mut c).0, 400);
    // Still serving, and the publish works with the right token.
    let (st, text) = raw_publish(srv.addr(), &s.token(), &body);
    assert_eq!(st, 200, "{text}");
    // HEAD is allowed wherever GET is; names too long for the file system are not found.
    for (req, status) in [
        (
            "HEAD /api/v1/crates?q=odd HTTP/1.1\r\nHost: localhost\r\n\r\n".to_owned(),
            200,
        ),
        (
            "HEAD /api/v1/crates/odd/owners HTTP/1.1\r\nHost: localhost\r\n\r\n".to_owned(),
            200,
        ),
        (
            format!(
                "GET /index/{} HTTP/1.1\r\nHost: localhost\r\n\r\n",
                "a".repeat(300)
            ),
            404,
        ),
        (
            format!(
                "GET /crates/{0}/{0}-1.0.0.crate HTTP/1.1\r\nHost: localhost\r\n\r\n",
                "a".repeat(300)
            ),
            404,
        ),
    ] {
        let mut c = TcpStream::connect(srv.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(req.as_bytes()).unwrap();
        let mut buf = [0u8; 12];
        c.read_exact(&mut buf).unwrap();
        let got: u16 = std::str::from_utf8(&buf[9..12]).unwrap().parse().unwrap();
        assert_eq!(got, status, "{req:.60}");
    }
}

#[test]
fn a_deleted_version_cannot_be_published_again() {
    let (s, srv) = setup();
    for v in ["0.1.0", "0.1.1"] {
        publish_ok(&s, "leaf", Some(v));
    }
    s.palletizer_ok(&["delete", "leaf", "0.1.0"]);
    let head = head_commit(&s);
    // The real cargo, with other bytes under the deleted number: it finds no such version in
    // the index and sends it; the server refuses with a message cargo shows as it is.
    let dir = s.test_crate("leaf", Some("0.1.0"));
    fs::write(dir.join("src/fixed.rs"), "// the fix\n").unwrap();
    let out = cargo_publish(&s, &dir, &[]);
    assert!(!out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("409"), "{err}");
    assert!(
        err.contains("crate version `0.1.0` of `leaf` was deleted on")
            && err.contains("version numbers cannot be reused")
            && err.contains("publish a new version"),
        "{err}"
    );
    // A raw publish, with build metadata this time: the JSON errors shape, a 409.
    let krate = simple_crate("leaf", "0.1.0+again", &[]);
    let (st, body) = raw_publish(
        srv.addr(),
        &s.token(),
        &publish_body(&meta("leaf", "0.1.0+again", serde_json::json!([])), &krate),
    );
    assert_eq!(st, 409, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let detail = v["errors"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("was deleted on"), "{detail}");
    assert_eq!(head_commit(&s), head, "nothing was committed");
    assert!(!s.reg().join("crates/leaf/leaf-0.1.0.crate").exists());
    assert!(!s.reg().join("crates/leaf/leaf-0.1.0+again.crate").exists());
    // The other version is untouched and a new one is welcome.
    let (st, _) = support::get_bytes(srv.addr(), "/crates/leaf/leaf-0.1.1.crate").unwrap();
    assert_eq!(st, 200);
    publish_ok(&s, "leaf", Some("0.1.2"));
    let (st, _) = support::get_bytes(srv.addr(), "/crates/leaf/leaf-0.1.0.crate").unwrap();
    assert_eq!(st, 404);
    assert!(s.palletizer_ok(&["check"]).contains("consistent"));
}

/// crates.io refuses a crate without a description or a license, and so does this registry
/// (a 400 cargo prints, naming what is missing and the setting), unless the setting is off.
#[test]
fn a_crate_without_description_or_license_is_refused_unless_the_setting_is_off() {
    let (s, srv) = setup();
    let leaf = s.test_crate("leaf", Some("0.1.0"));
    let manifest = leaf.join("Cargo.toml");
    let text = fs::read_to_string(&manifest).unwrap();
    let bare: String = text
        .lines()
        .filter(|l| !l.starts_with("license") && !l.starts_with("description"))
        .map(|l| format!("{l}\n"))
        .collect();
    let setting = "an admin can turn the check off with `require-description-and-license = \
                   false` in palletizer.toml";
    for (manifest_text, missing) in [
        (
            bare.clone(),
            "(status 400 Bad Request): the manifest has no `description` and no `license` (or \
             `license-file`)",
        ),
        (
            bare.replace("[package]\n", "[package]\ndescription = \"a leaf\"\n"),
            "(status 400 Bad Request): the manifest has no `license` (or `license-file`):",
        ),
    ] {
        fs::write(&manifest, manifest_text).unwrap();
        let out = cargo_publish(&s, &leaf, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}", show(&out));
        assert!(err.contains(missing) && err.contains(setting), "{err}");
    }
    assert!(!s.reg().join("index/le/af/leaf").exists());
    assert!(!s.reg().join("crates/leaf").exists());

    // Turned off (read when the server starts), the same crate is published.
    let addr = srv.addr().to_owned();
    drop(srv);
    s.stop_requiring_description_and_license();
    // At the same address: the registry's `url` (and config.json) name it.
    let _srv = s.serve(&["--bind", &addr]);
    fs::write(&manifest, &bare).unwrap();
    let out = cargo_publish(&s, &leaf, &[]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Published leaf v0.1.0"));
}
