//! The index as a git repository over smart HTTP: the real cargo (libgit2) resolving
//! through a git registry URL, incremental fetches past libgit2's 20-have rounds, and the
//! git CLI.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use palletizer::registry::testing::simple_crate;
use support::{show, Sandbox};

fn add(s: &Sandbox, name: &str, vers: &str) {
    let p = s.path().join(format!("{name}-{vers}.crate"));
    fs::write(&p, simple_crate(name, vers, &[])).unwrap();
    s.palletizer_ok(&["add", p.to_str().unwrap()]);
}

/// A served registry with cargo pointed at its git index, holding `leaf` 0.1.0, `ab` and
/// `fillers` more crates (one commit each), and the consumer project depending on both.
fn git_registry_with_consumer(
    s: &Sandbox,
    fillers: usize,
) -> (support::ServerProc, std::path::PathBuf) {
    let srv = s.serve(&[]);
    s.cargo_config(&format!(
        "[registries.local]\nindex = \"{}/index\"\n[net]\nretry = 0\n",
        srv.url()
    ));
    for file in [s.package("leaf", Some("0.1.0")), s.package("ab", None)] {
        s.palletizer_ok(&["add", file.to_str().unwrap()]);
    }
    for i in 0..fillers {
        add(s, &format!("filler{i}"), "1.0.0");
    }
    (srv, s.consumer())
}

#[test]
fn cargo_resolves_through_the_git_index_and_fetches_incrementally() {
    let s = Sandbox::new();
    // More than 20 commits, so that the next fetch negotiates over several rounds.
    let (srv, app) = git_registry_with_consumer(&s, 25);
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
        git(&s, args, cwd);
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
    let close = "Host: localhost\r\nConnection: close\r\n";
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

/// Runs git with no user configuration; panics with its output on failure.
fn git(s: &Sandbox, args: &[&str], cwd: &std::path::Path) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(cwd)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("HOME", s.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}:\n{}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The commit the registry's index HEAD names.
fn head_of(s: &Sandbox) -> String {
    git(s, &["rev-parse", "HEAD"], &s.reg().join("index"))
        .trim()
        .to_owned()
}

/// The kept full-clone answers: (file name, inode). A file the server's background writer
/// removes (a temp file renamed into place, an old answer) between the listing and the look
/// at it is not listed.
fn kept(s: &Sandbox) -> Vec<(String, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out: Vec<(String, u64)> = fs::read_dir(s.reg().join(".clone-cache"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    Some((name, e.metadata().ok()?.ino()))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn full_clones_are_sent_from_a_kept_answer_that_follows_publishes() {
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    add(&s, "foo", "1.0.0");
    assert!(kept(&s).is_empty(), "nothing is kept before anyone clones");
    let url = format!("{}/index", srv.url());
    let first = s.path().join("first");
    git(
        &s,
        &["clone", "-q", &url, first.to_str().unwrap()],
        s.path(),
    );
    let head = head_of(&s);
    let once = kept(&s);
    assert_eq!(
        once.iter().map(|k| k.0.as_str()).collect::<Vec<_>>(),
        [format!("clone-{head}")]
    );
    // A second clone is the same file, not a new pack.
    let second = s.path().join("second");
    git(
        &s,
        &["clone", "-q", &url, second.to_str().unwrap()],
        s.path(),
    );
    assert_eq!(kept(&s), once);
    assert!(second.join("3/f/foo").exists());
    assert_eq!(
        git(&s, &["rev-parse", "HEAD"], &second).trim(),
        head,
        "the kept answer is the current HEAD's"
    );

    // A publish through the server moves HEAD; the answer for the new HEAD is made in the
    // background and the old one removed, with the temp file a killed writer left (its
    // process id names no process).
    fs::write(
        s.reg()
            .join(".clone-cache")
            .join(format!("clone-{head}.4194999.tmp")),
        b"torn",
    )
    .unwrap();
    let body = palletizer::registry::testing::publish_body(
        &support::meta("bar", "1.0.0", serde_json::json!([])),
        &simple_crate("bar", "1.0.0", &[]),
    );
    let (st, text) = support::raw_publish(srv.addr(), &s.token(), &body);
    assert_eq!(st, 200, "{text}");
    let new_head = head_of(&s);
    assert_ne!(new_head, head);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while kept(&s).iter().map(|k| k.0.clone()).collect::<Vec<_>>() != [format!("clone-{new_head}")]
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no kept answer for {new_head}: {:?}",
            kept(&s)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let third = s.path().join("third");
    git(
        &s,
        &["clone", "-q", &url, third.to_str().unwrap()],
        s.path(),
    );
    assert!(third.join("3/b/bar").exists());
    assert!(third.join("3/f/foo").exists());
    git(&s, &["fsck", "--strict"], &third);
    // The first clone catches up with an incremental fetch.
    git(&s, &["pull", "-q", "--ff-only"], &first);
    assert!(first.join("3/b/bar").exists());
    git(&s, &["fsck", "--strict"], &first);
}

#[test]
fn cargo_keeps_resolving_after_the_index_history_is_squashed() {
    let s = Sandbox::new();
    let (srv, app) = git_registry_with_consumer(&s, 5);
    s.cargo_ok(&app, &["generate-lockfile"]);
    let before = fs::read_to_string(app.join("Cargo.lock")).unwrap();

    let out = s.palletizer_ok(&["squash-index"]);
    assert!(out.contains("Squashed the index history"), "{out}");
    let index = s.reg().join("index");
    assert_eq!(
        git(&s, &["rev-list", "--count", "HEAD"], &index).trim(),
        "1"
    );
    git(&s, &["fsck", "--strict", "--no-dangling"], &index);
    assert!(s.palletizer_ok(&["check"]).contains("consistent"));
    // The home page's newest crates come from the history: the squash commit names them.
    let (status, home) = support::get_bytes(srv.addr(), "/").unwrap();
    let home = String::from_utf8_lossy(&home);
    assert_eq!(status, 200);
    assert!(home.contains("/crates/leaf\""), "{home}");

    // The same lockfile from the squashed history (libgit2, with the old history cached).
    fs::remove_file(app.join("Cargo.lock")).unwrap();
    s.cargo_ok(&app, &["generate-lockfile"]);
    assert_eq!(fs::read_to_string(app.join("Cargo.lock")).unwrap(), before);

    // A publish after the squash reaches libgit2 ...
    s.palletizer_ok(&["add", s.package("leaf", Some("0.1.1")).to_str().unwrap()]);
    s.cargo_ok(&app, &["update"]);
    let lock = fs::read_to_string(app.join("Cargo.lock")).unwrap();
    assert!(
        lock.contains("name = \"leaf\"\nversion = \"0.1.1\""),
        "{lock}"
    );
    assert!(s.cargo_ok(&app, &["run", "-q"]).contains("leaf 0.1.1 ab"));

    // ... and the git CLI, across a second squash.
    s.palletizer_ok(&["squash-index"]);
    s.palletizer_ok(&["add", s.package("leaf", Some("0.1.2")).to_str().unwrap()]);
    let out = s
        .cargo_cmd(&app, &["update"])
        .env("CARGO_NET_GIT_FETCH_WITH_CLI", "true")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let lock = fs::read_to_string(app.join("Cargo.lock")).unwrap();
    assert!(
        lock.contains("name = \"leaf\"\nversion = \"0.1.2\""),
        "{lock}"
    );
    assert!(
        !srv.log().iter().any(|l| l.contains(" 500 ")),
        "{:?}",
        srv.log()
    );
}
