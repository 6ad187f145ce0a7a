//! Access control end to end with the real cargo: logging in, publishing, yanking and
//! changing owners in a `public` registry; building through a `private` one over the sparse
//! index and the git index (cargo's libgit2 and the git CLI) with a `read` token while
//! missing, wrong, expired and revoked tokens are refused; and every route of a private
//! registry over raw HTTP with no token, a wrong one, one of another scope and the right one.

mod support;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use palletizer::registry::tarball::testing::{publish_body, simple_crate};
use support::{meta, send_until_close, show, RawResponse, Sandbox, ServerProc};

const PUBLISH: [&str; 5] = [
    "publish",
    "--registry",
    "local",
    "--allow-dirty",
    "--no-verify",
];

/// Registry `local` at `index` in the sandbox's `CARGO_HOME`, with the credential provider
/// cargo insists on for an authenticated registry. `net` holds more `[net]` lines.
fn registry_config(home: &Path, index: &str, net: &str) {
    fs::create_dir_all(home).unwrap();
    fs::write(
        home.join("config.toml"),
        format!(
            "[registries.local]\nindex = \"{index}\"\n\n[registry]\n\
             global-credential-providers = [\"cargo:token\"]\n\n[net]\nretry = 0\n{net}"
        ),
    )
    .unwrap();
}

/// Cargo's stdout and stderr together.
fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_ok(out: &Output, what: &str) -> String {
    eprintln!("=== {what}\n{}", text(out));
    assert!(out.status.success(), "{what} failed:\n{}", show(out));
    text(out)
}

fn assert_fails_with(out: &Output, want: &str, what: &str) -> String {
    eprintln!("=== {what}\n{}", text(out));
    let all = text(out);
    assert!(
        !out.status.success() && all.contains(want),
        "{what}: expected a failure saying {want:?}:\n{}",
        show(out)
    );
    all
}

/// Cargo in `dir` with `token` in the environment (which overrides `cargo login`'s).
fn cargo_with(s: &Sandbox, dir: &Path, token: &str, args: &[&str]) -> Output {
    s.cargo_cmd(dir, args)
        .env("CARGO_REGISTRIES_LOCAL_TOKEN", token)
        .output()
        .unwrap()
}

/// `cargo login --registry local`, the token pasted on stdin.
fn login(s: &Sandbox, token: &str) -> String {
    let mut child = s
        .cargo_cmd(s.path(), &["login", "--registry", "local"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{token}").unwrap();
    let out = child.wait_with_output().unwrap();
    let all = assert_ok(&out, "cargo login");
    let creds = fs::read_to_string(s.cargo_home().join("credentials.toml")).unwrap();
    assert!(creds.contains(token), "{creds}");
    all
}

/// `palletizer token create ARGS`: the token alone on stdout.
fn new_token(s: &Sandbox, args: &[&str]) -> String {
    let mut all = vec!["token", "create"];
    all.extend_from_slice(args);
    let token = s.palletizer_ok(&all).trim().to_owned();
    assert!(token.starts_with("pal_"), "{token}");
    token
}

/// The `token list` row of the token labelled `label`: its columns.
fn token_row(s: &Sandbox, label: &str) -> Vec<String> {
    let list = s.palletizer_ok(&["token", "list"]);
    list.lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|cols| cols.get(4).map(String::as_str) == Some(label))
        .unwrap_or_else(|| panic!("no token labelled {label}:\n{list}"))
}

/// Polls `done` until it holds; a deadline only as the failure condition.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(25);
    while !done() {
        assert!(Instant::now() < until, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One request on its own connection (`Connection: close`); the body of the answer is what
/// follows its head, as sent.
fn request(
    addr: &str,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    headers: &str,
    body: &[u8],
) -> RawResponse {
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let mut raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}{headers}\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    let bytes = send_until_close(addr, &raw);
    let mut parsed = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut parsed);
    let Ok(httparse::Status::Complete(len)) = r.parse(&bytes) else {
        panic!(
            "{method} {path}: not a response: {:?}",
            String::from_utf8_lossy(&bytes)
        )
    };
    RawResponse {
        status: r.code.unwrap(),
        headers: r
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        body: bytes[len..].to_vec(),
    }
}

fn get_status(addr: &str, path: &str, authorization: Option<&str>) -> u16 {
    request(addr, "GET", path, authorization, "", b"").status
}

/// Waits until the running server knows `token`: the CLI writes it to a file the server
/// reloads within a second, so a token used at once may still be unknown (401).
fn wait_known(srv: &ServerProc, token: &str) {
    wait_until("the server knows a new token", || {
        let path = "/api/v1/crates/no-such-crate/0.0.0/unyank";
        request(srv.addr(), "PUT", path, Some(token), "", b"").status != 401
    });
}

/// Every log line so far must be free of every token.
fn assert_log_keeps_secrets(srv: &ServerProc, secrets: &[&str]) {
    for line in srv.log() {
        for secret in secrets {
            assert!(!line.contains(secret), "a token in the log: {line}");
        }
    }
}

/// A `HOME` for git whose credential store holds `token` for the server, as the login page
/// tells users to set it up.
fn git_home(s: &Sandbox, url: &str, token: Option<&str>) -> PathBuf {
    let home = s
        .path()
        .join(if token.is_some() { "home" } else { "home-bare" });
    fs::create_dir_all(&home).unwrap();
    fs::write(home.join(".gitconfig"), "[credential]\n\thelper = store\n").unwrap();
    if let Some(token) = token {
        let host = url.split_once("://").unwrap().1;
        fs::write(
            home.join(".git-credentials"),
            format!("http://token:{token}@{host}\n"),
        )
        .unwrap();
    }
    home
}

/// Runs cargo with `home` as `HOME` (where libgit2 and git find their configuration) and
/// nothing of the machine's git setup. rustup still finds its toolchains.
///
/// No `http.*` setting either: with any (here `CARGO_HTTP_MULTIPLEXING`, which
/// [`Sandbox::cargo_cmd`] sets), cargo fetches git over its own curl transport instead of
/// libgit2's, and that transport answers a 401 with "failed to receive HTTP 200 response: got
/// 401" instead of asking git's credential helpers.
fn with_home<'a>(cmd: &'a mut Command, home: &Path) -> &'a mut Command {
    let rustup = std::env::var_os("RUSTUP_HOME").unwrap_or_else(|| {
        Path::new(&std::env::var_os("HOME").unwrap_or_default())
            .join(".rustup")
            .into()
    });
    cmd.env("HOME", home)
        .env("RUSTUP_HOME", rustup)
        .env_remove("CARGO_HTTP_MULTIPLEXING")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("GIT_CONFIG_GLOBAL")
        .env_remove("GIT_ASKPASS")
        .env_remove("SSH_ASKPASS")
}

/// `cargo owner --list leaf`: the owners' logins, sorted.
fn owners(s: &Sandbox, token: &str) -> Vec<String> {
    let args = ["owner", "--registry", "local", "--list", "leaf"];
    let out = cargo_with(s, s.path(), token, &args);
    assert_ok(&out, "cargo owner --list");
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    names.sort();
    names
}

#[test]
fn public_registry_owners_decide_who_publishes_and_yanks_with_real_cargo() {
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    assert_eq!(s.palletizer_ok(&["access"]).trim(), "public");
    registry_config(&s.cargo_home(), &format!("sparse+{}/index/", srv.url()), "");
    s.palletizer_ok(&["user", "add", "alice"]);
    s.palletizer_ok(&["user", "add", "bob"]);
    let alice = new_token(&s, &["--user", "alice"]);
    let bob = new_token(&s, &["--user", "bob"]);
    wait_known(&srv, &bob);
    let leaf = s.test_crate("leaf", Some("0.1.0"));

    // Reads are public, writes are not: cargo asks for a token before it sends anything.
    let out = s.cargo(&leaf, &PUBLISH);
    assert_fails_with(&out, "no token found for `local`", "publish without a token");
    assert!(!s.reg().join("index/le/af/leaf").exists());

    login(&s, &alice);
    let out = s.cargo(&leaf, &PUBLISH);
    assert!(assert_ok(&out, "alice's publish").contains("Published leaf v0.1.0"));
    assert_eq!(owners(&s, &alice), ["alice"]);

    // Bob is no owner of alice's crate: no new version, no yank, each a 403 cargo prints.
    let leaf_next = s.test_crate("leaf", Some("0.1.1"));
    let not_owner =
        "(status 403 Forbidden): user `bob` is not an owner of crate `leaf`; an owner can add \
         them with `cargo owner --add bob leaf`";
    let out = cargo_with(&s, &leaf_next, &bob, &PUBLISH);
    assert_fails_with(&out, not_owner, "bob's publish");
    let yank = ["yank", "--registry", "local", "leaf@0.1.0"];
    let out = cargo_with(&s, s.path(), &bob, &yank);
    assert_fails_with(&out, not_owner, "bob's yank");
    let index = fs::read_to_string(s.reg().join("index/le/af/leaf")).unwrap();
    assert_eq!(index.lines().count(), 1, "{index}");
    assert_eq!(s.index_line("le/af/leaf", "0.1.0")["yanked"], false);

    // Alice (logged in) makes bob an owner; then he can.
    let out = s.cargo(s.path(), &["owner", "--registry", "local", "--add", "bob", "leaf"]);
    assert_ok(&out, "cargo owner --add");
    assert_eq!(owners(&s, &alice), ["alice", "bob"]);
    let out = cargo_with(&s, &leaf_next, &bob, &PUBLISH);
    assert!(assert_ok(&out, "bob's publish as owner").contains("Published leaf v0.1.1"));
    assert_ok(&cargo_with(&s, s.path(), &bob, &yank), "bob's yank as owner");
    assert_eq!(s.index_line("le/af/leaf", "0.1.0")["yanked"], true);

    // Removed again, bob can no longer undo the yank.
    let out = s.cargo(
        s.path(),
        &["owner", "--registry", "local", "--remove", "bob", "leaf"],
    );
    assert_ok(&out, "cargo owner --remove");
    assert_eq!(owners(&s, &bob), ["alice"]);
    let unyank = ["yank", "--undo", "--registry", "local", "leaf@0.1.0"];
    let out = cargo_with(&s, s.path(), &bob, &unyank);
    assert_fails_with(&out, not_owner, "bob's unyank after removal");
    assert_eq!(s.index_line("le/af/leaf", "0.1.0")["yanked"], true);

    let log = srv.log_from_with(0, "not an owner");
    assert!(
        log.iter()
            .any(|l| l.contains("refused") && l.contains("bob") && l.contains("not an owner")),
        "{log:?}"
    );
    assert_log_keeps_secrets(&srv, &[&alice, &bob, &s.token()]);
}

#[test]
fn private_registry_builds_with_a_read_token_over_sparse_and_git_and_refuses_the_rest() {
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    registry_config(&s.cargo_home(), &format!("sparse+{}/index/", srv.url()), "");
    for (name, vers) in [("leaf", "0.1.0"), ("leaf", "0.1.1"), ("ab", "1.0.0")] {
        let file = s.package(name, Some(vers));
        s.palletizer_ok(&["add", file.to_str().unwrap()]);
    }
    // Made private while running: config.json follows, and so does the server.
    s.palletizer_ok(&["access", "private"]);
    wait_until("the running server turns private", || {
        get_status(srv.addr(), "/index/config.json", None) == 401
    });
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(s.reg().join("index/config.json")).unwrap()).unwrap();
    assert_eq!(config["auth-required"], true, "{config}");
    assert_eq!(config["api"], srv.url(), "{config}");
    s.palletizer_ok(&["user", "add", "reader"]);
    let read = new_token(&s, &["--user", "reader", "--scope", "read"]);
    wait_known(&srv, &read);
    let wrong = format!("pal_{}", "0".repeat(64));

    let app = s.consumer();
    let lockfile = ["generate-lockfile"];
    assert_fails_with(
        &s.cargo(&app, &lockfile),
        "no token found for `local`, please run `cargo login --registry local`",
        "sparse without a token",
    );
    assert_fails_with(
        &cargo_with(&s, &app, &wrong, &lockfile),
        "token rejected for `local`",
        "sparse with a wrong token",
    );

    login(&s, &read);
    let out = s.cargo(&app, &["run", "-q"]);
    assert!(assert_ok(&out, "build over sparse").contains("leaf 0.1.1 ab"));
    let lock = fs::read_to_string(app.join("Cargo.lock")).unwrap();
    assert!(lock.contains(&format!("sparse+{}/index/", srv.url())), "{lock}");
    let log = srv.log_from_with(0, "GET /crates/ab/ab-1.0.0.crate 200");
    assert!(
        log.iter().any(|l| l.contains("GET /crates/ab/ab-1.0.0.crate 200")),
        "{log:?}"
    );

    // A read token cannot publish.
    let tgt = s.test_crate("tgt", None);
    assert_fails_with(
        &s.cargo(&tgt, &PUBLISH),
        "(status 403 Forbidden): this token does not have the `publish-new or publish-update` scope",
        "publish with a read token",
    );
    assert!(!s.reg().join("index/3/t/tgt").exists());

    // An expired token.
    let short = new_token(
        &s,
        &["--user", "reader", "--scope", "read", "--expires", "1s", "--label", "short"],
    );
    wait_until("the short token expires", || {
        token_row(&s, "short").last().map(String::as_str) == Some("expired")
    });
    assert_fails_with(
        &cargo_with(&s, &app, &short, &lockfile),
        "token rejected for `local`",
        "an expired token",
    );

    // A token revoked with the CLI stops working on the running server.
    let soon = new_token(&s, &["--user", "reader", "--scope", "read", "--label", "soon"]);
    wait_known(&srv, &soon);
    assert_ok(&cargo_with(&s, &app, &soon, &lockfile), "a live token");
    let id = token_row(&s, "soon")[0].clone();
    s.palletizer_ok(&["token", "revoke", &id]);
    wait_until("the revoked token is refused", || {
        get_status(srv.addr(), "/index/config.json", Some(&soon)) == 401
    });
    assert_fails_with(
        &cargo_with(&s, &app, &soon, &lockfile),
        "token rejected for `local`",
        "a revoked token",
    );
    let log = srv.log_from_with(0, ": revoked");
    for reason in ["no token", "unknown", "expired", "revoked"] {
        assert!(
            log.iter()
                .any(|l| l.contains("refused GET /index/config.json: ") && l.ends_with(reason)),
            "{reason}: {log:?}"
        );
    }
    assert!(log.iter().any(|l| l.contains("refused publish of tgt") || l.contains("refused PUT /api/v1/crates/new: scope")), "{log:?}");

    // The git index through cargo's libgit2: git authenticates with HTTP Basic from its
    // credential store; downloads still carry the cargo token.
    let git_index = format!("{}/index", srv.url());
    registry_config(&s.cargo_home(), &git_index, "");
    fs::remove_file(app.join("Cargo.lock")).unwrap();
    let bare = git_home(&s, &srv.url(), None);
    let out = with_home(&mut s.cargo_cmd(&app, &lockfile), &bare)
        .output()
        .unwrap();
    assert_fails_with(
        &out,
        "failed to authenticate when downloading repository",
        "git without credentials",
    );
    let home = git_home(&s, &srv.url(), Some(&read));
    let before = srv.log().len();
    let out = with_home(&mut s.cargo_cmd(&app, &["run", "-q"]), &home)
        .output()
        .unwrap();
    assert!(assert_ok(&out, "build over git (libgit2)").contains("leaf 0.1.1 ab"));
    let lock = fs::read_to_string(app.join("Cargo.lock")).unwrap();
    assert!(lock.contains(&format!("registry+{git_index}")), "{lock}");
    let log = srv.log_from_with(before, "POST /index/git-upload-pack 200");
    assert!(
        log.iter()
            .any(|l| l.contains("GET /index/info/refs?service=git-upload-pack 401")),
        "git is challenged first: {log:?}"
    );
    assert!(
        log.iter().any(|l| l.contains("POST /index/git-upload-pack 200")),
        "{log:?}"
    );

    // The git CLI, from a fresh CARGO_HOME so that it clones the whole index.
    let cli_home = s.path().join("cargo-home-cli");
    registry_config(&cli_home, &git_index, "git-fetch-with-cli = true\n");
    fs::remove_file(app.join("Cargo.lock")).unwrap();
    let before = srv.log().len();
    for args in [&lockfile[..], &["fetch"]] {
        let out = with_home(&mut s.cargo_cmd(&app, args), &home)
            .env("CARGO_HOME", &cli_home)
            .env("CARGO_REGISTRIES_LOCAL_TOKEN", &read)
            .output()
            .unwrap();
        assert_ok(&out, &format!("cargo {args:?} over git (CLI)"));
    }
    let lock = fs::read_to_string(app.join("Cargo.lock")).unwrap();
    assert!(lock.contains("name = \"leaf\"\nversion = \"0.1.1\""), "{lock}");
    let log = srv.log_from_with(before, "GET /crates/ab/ab-1.0.0.crate 200");
    assert!(
        log.iter().any(|l| l.contains("POST /index/git-upload-pack 200")),
        "{log:?}"
    );
    assert!(
        log.iter().any(|l| l.contains("GET /crates/ab/ab-1.0.0.crate 200")),
        "{log:?}"
    );
    assert_log_keeps_secrets(&srv, &[&read, &wrong, &short, &soon, &s.token()]);
}
