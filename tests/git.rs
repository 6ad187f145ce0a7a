//! The index as a git repository over smart HTTP: the real cargo (libgit2) resolving
//! through a git registry URL, incremental fetches past libgit2's 20-have rounds, and the
//! git CLI.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use palletizer::registry::tarball::testing::simple_crate;
use support::{show, Sandbox};

fn add(s: &Sandbox, name: &str, vers: &str) {
    let p = s.path().join(format!("{name}-{vers}.crate"));
    fs::write(&p, simple_crate(name, vers, &[])).unwrap();
    s.palletizer_ok(&["add", p.to_str().unwrap()]);
}

#[test]
fn cargo_resolves_through_the_git_index_and_fetches_incrementally() {
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    s.cargo_config(&format!(
        "[registries.local]\nindex = \"{}/index\"\n[net]\nretry = 0\n",
        srv.url()
    ));
    for file in [s.package("leaf", Some("0.1.0")), s.package("ab", None)] {
        s.palletizer_ok(&["add", file.to_str().unwrap()]);
    }
    // More than 20 commits, so that the next fetch negotiates over several rounds.
    for i in 0..25 {
        add(&s, &format!("filler{i}"), "1.0.0");
    }
    let app = s.consumer();
    let out = s.cargo_ok(&app, &["run", "-q"]);
    assert!(out.contains("leaf 0.1.0 ab"), "{out}");
    let log = srv.log_from_with(0, "POST /index/git-upload-pack 200");
    assert!(
        log.iter()
            .any(|l| l.contains("GET /index/info/refs?service=git-upload-pack 200")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("POST /index/git-upload-pack 200")),
        "{log:?}"
    );
    let lock = fs::read_to_string(app.join("Cargo.lock")).unwrap();
    assert!(
        lock.contains(&format!("registry+{}/index", srv.url())),
        "{lock}"
    );

    for i in 0..3 {
        add(&s, &format!("more{i}"), "1.0.0");
    }
    s.palletizer_ok(&["add", s.package("leaf", Some("0.1.1")).to_str().unwrap()]);
    let before = srv.log().len();
    s.cargo_ok(&app, &["update"]);
    let lock = fs::read_to_string(app.join("Cargo.lock")).unwrap();
    assert!(
        lock.contains("name = \"leaf\"\nversion = \"0.1.1\""),
        "{lock}"
    );
    let posts = |l: &[String]| {
        l.iter()
            .filter(|l| l.contains("POST /index/git-upload-pack 200"))
            .count()
    };
    let fetch = srv.log_when(before, |l| posts(l) >= 2);
    assert!(
        fetch
            .iter()
            .filter(|l| l.contains("POST /index/git-upload-pack 200"))
            .count()
            >= 2,
        "{fetch:?}"
    );
    let status = |l: &String| l.split_whitespace().nth(3).map(str::to_owned);
    assert!(
        fetch.iter().all(|l| status(l).as_deref() == Some("200")),
        "{fetch:?}"
    );
}

#[test]
fn git_cli_clones_and_fetches() {
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    add(&s, "foo", "1.0.0");
    let dir = s.path().join("clone");
    let git = |args: &[&str], cwd: &std::path::Path| {
        let out = Command::new("git")
            .args(args)
            .current_dir(cwd)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("HOME", s.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}:\n{}", show(&out));
    };
    git(
        &[
            "clone",
            "-q",
            &format!("{}/index", srv.url()),
            dir.to_str().unwrap(),
        ],
        s.path(),
    );
    assert!(dir.join("config.json").exists());
    assert!(dir.join("3/f/foo").exists());
    add(&s, "bar", "1.0.0");
    git(&["pull", "-q", "--ff-only"], &dir);
    assert!(dir.join("3/b/bar").exists());
}

#[test]
fn git_endpoints_refuse_what_they_do_not_serve() {
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    let req = |raw: &[u8]| -> (u16, String) {
        let mut c = TcpStream::connect(srv.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(raw).unwrap();
        let mut buf = Vec::new();
        let _ = c.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text[9..12].parse().unwrap();
        (status, text)
    };
    let close = "Host: x\r\nConnection: close\r\n";
    let (st, _) = req(format!("GET /index/info/refs HTTP/1.1\r\n{close}\r\n").as_bytes());
    assert_eq!(st, 403, "dumb HTTP is not served");
    let (st, text) = req(format!(
        "GET /index/info/refs?service=git-upload-pack HTTP/1.1\r\n{close}\r\n"
    )
    .as_bytes());
    assert_eq!(st, 200);
    assert!(
        text.contains("application/x-git-upload-pack-advertisement"),
        "{text}"
    );
    assert!(
        text.contains("multi_ack_detailed") && text.contains(" HEAD\0"),
        "{text}"
    );
    let body = b"0032want 0123456789abcdef0123456789abcdef01234567\n00000009done\n";
    let raw = format!(
        "POST /index/git-upload-pack HTTP/1.1\r\n{close}Content-Length: {}\r\n\r\n",
        body.len()
    );
    let (st, text) = req(&[raw.as_bytes(), body].concat());
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("not our ref"), "{text}");
    let raw =
        format!("POST /index/git-upload-pack HTTP/1.1\r\n{close}Content-Length: 5\r\n\r\nxxxxx");
    assert_eq!(req(raw.as_bytes()).0, 400);
    let (st, _) = req(format!(
        "POST /index/git-receive-pack HTTP/1.1\r\n{close}Content-Length: 0\r\n\r\n"
    )
    .as_bytes());
    assert_eq!(st, 403);
}
