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

use palletizer::registry::testing::{publish_body, simple_crate};
use support::{meta, read_one, send_until_close, show, RawResponse, Sandbox, ServerProc, PUBLISH};

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
    assert!(out.status.success(), "{what} failed:\n{}", show(out));
    text(out)
}

fn assert_fails_with(out: &Output, want: &str, what: &str) -> String {
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
fn login(s: &Sandbox, token: &str) {
    let mut child = s
        .cargo_cmd(s.path(), &["login", "--registry", "local"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{token}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_ok(&out, "cargo login");
    let creds = fs::read_to_string(s.cargo_home().join("credentials.toml")).unwrap();
    assert!(creds.contains(token), "{creds}");
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

/// Each of `patterns` is in some line of `log`.
fn assert_logged(log: &[String], patterns: &[&str]) {
    for p in patterns {
        assert!(log.iter().any(|l| l.contains(p)), "no {p:?} in {log:?}");
    }
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
    let sparse = format!("sparse+{}/index/", srv.url());
    registry_config(&s.cargo_home(), &sparse, "");
    let anonymous = s.path().join("cargo-home-anonymous");
    registry_config(&anonymous, &sparse, "");
    s.palletizer_ok(&["user", "add", "alice"]);
    s.palletizer_ok(&["user", "add", "bob"]);
    let alice = new_token(&s, &["--user", "alice"]);
    let bob = new_token(&s, &["--user", "bob"]);
    wait_known(&srv, &bob);
    let leaf = s.test_crate("leaf", Some("0.1.0"));

    // Reads are public, writes are not: cargo asks for a token before it sends anything.
    let out = s.cargo(&leaf, &PUBLISH);
    assert_fails_with(
        &out,
        "no token found for `local`",
        "publish without a token",
    );
    assert!(!s.reg().join("index/le/af/leaf").exists());

    login(&s, &alice);
    let out = s.cargo(&leaf, &PUBLISH);
    assert!(assert_ok(&out, "alice's publish").contains("Published leaf v0.1.0"));
    // Reads need no token: search from a CARGO_HOME without one.
    let search = s
        .cargo_cmd(s.path(), &["search", "--registry", "local", "leaf"])
        .env("CARGO_HOME", &anonymous)
        .output()
        .unwrap();
    assert!(assert_ok(&search, "anonymous search").contains("leaf = \"0.1.0\""));
    assert_eq!(owners(&s, &alice), ["alice"]);

    // Bob is no owner of alice's crate: no new version, no yank, each a 403 cargo prints.
    let leaf_next = s.test_crate("leaf", Some("0.1.1"));
    // The hint names the registry: pasted without `--registry`, it would go to crates.io.
    let not_owner =
        "(status 403 Forbidden): user `bob` is not an owner of crate `leaf`; an owner can add \
         them with `cargo owner --registry palletizer --add bob leaf` (`palletizer` being this \
         registry's name in their cargo config)";
    let out = cargo_with(&s, &leaf_next, &bob, &PUBLISH);
    assert_fails_with(&out, not_owner, "bob's publish");
    let yank = ["yank", "--registry", "local", "leaf@0.1.0"];
    let out = cargo_with(&s, s.path(), &bob, &yank);
    assert_fails_with(&out, not_owner, "bob's yank");
    let index = fs::read_to_string(s.reg().join("index/le/af/leaf")).unwrap();
    assert_eq!(index.lines().count(), 1, "{index}");
    assert_eq!(s.index_line("le/af/leaf", "0.1.0")["yanked"], false);

    // Alice (logged in) makes bob an owner; then he can.
    let out = s.cargo(
        s.path(),
        &["owner", "--registry", "local", "--add", "bob", "leaf"],
    );
    assert_ok(&out, "cargo owner --add");
    assert_eq!(owners(&s, &alice), ["alice", "bob"]);
    let out = cargo_with(&s, &leaf_next, &bob, &PUBLISH);
    assert!(assert_ok(&out, "bob's publish as owner").contains("Published leaf v0.1.1"));
    assert_ok(
        &cargo_with(&s, s.path(), &bob, &yank),
        "bob's yank as owner",
    );
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

    let log = srv.log_from_with(0, "refused yank of leaf for user bob");
    assert_logged(
        &log,
        &[
            "refused publish of leaf for user bob",
            "refused yank of leaf for user bob",
        ],
    );
    for l in log.iter().filter(|l| l.contains("for user bob")) {
        assert!(l.ends_with(": not an owner"), "{l}");
    }
    assert_log_keeps_secrets(&srv, &[&alice, &bob, &s.token()]);
}

/// What broke: after `palletizer delete leaf`, any user with a `publish-new` token published
/// `leaf` again, got 200 and became its only owner, so that whoever depended on it got their
/// code. The name stays with the owners until an admin gives it up.
#[test]
fn a_deleted_crates_name_stays_with_its_owners_until_an_admin_releases_it() {
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    let sparse = format!("sparse+{}/index/", srv.url());
    registry_config(&s.cargo_home(), &sparse, "");
    s.palletizer_ok(&["user", "add", "alice"]);
    s.palletizer_ok(&["user", "add", "bob"]);
    let alice = new_token(&s, &["--user", "alice"]);
    let bob = new_token(&s, &["--user", "bob", "--scope", "publish-new"]);
    wait_known(&srv, &bob);
    let [v1, v2, v3] = ["0.1.0", "0.2.0", "0.3.0"].map(|v| s.test_crate("leaf", Some(v)));
    assert_ok(&cargo_with(&s, &v1, &alice, &PUBLISH), "alice's publish");
    let deleted = s.palletizer_ok(&["delete", "leaf"]);
    assert!(
        deleted.contains("new versions can, by the crate's owners or an admin"),
        "{deleted}"
    );
    assert!(!s.reg().join("index/le/af/leaf").exists());

    // Bob may publish new crates, but not under alice's deleted crate's name.
    let kept = "(status 403 Forbidden): crate `leaf` was deleted and its name stays with its \
                owners: user `bob` is not one of them, so only they or an admin may publish it \
                again (an admin can give the name up with `palletizer delete leaf \
                --release-name`)";
    let out = cargo_with(&s, &v2, &bob, &PUBLISH);
    assert_fails_with(&out, kept, "bob's publish under the deleted name");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(kept),
        "cargo prints the detail"
    );
    assert!(!s.reg().join("index/le/af/leaf").exists());
    let out = cargo_with(&s, &v2, &alice, &PUBLISH);
    assert!(assert_ok(&out, "alice's publish again").contains("Published leaf v0.2.0"));
    assert_eq!(owners(&s, &alice), ["alice"]);

    // `--release-name` is the whole name's: no version, no other command.
    let out = s.palletizer(&["delete", "leaf", "0.2.0", "--release-name"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("name no version"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let out = s.palletizer(&["yank", "leaf", "0.2.0", "--release-name"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("`--release-name` does not apply to `yank`"),
        "{err}"
    );
    assert_eq!(s.index_line("le/af/leaf", "0.2.0")["yanked"], false);

    // Given up by an admin, the name is anyone's; the deleted version numbers stay taken.
    let released = s.palletizer_ok(&["delete", "leaf", "--release-name"]);
    assert!(
        released.contains("Deleted leaf 0.2.0") && released.contains("The name leaf is free"),
        "{released}"
    );
    let out = cargo_with(&s, &v2, &bob, &PUBLISH);
    assert_fails_with(
        &out,
        "cannot be reused",
        "bob's publish of a deleted version",
    );
    let out = cargo_with(&s, &v3, &bob, &PUBLISH);
    assert!(assert_ok(&out, "bob's publish of the released name").contains("Published leaf v0.3.0"));
    assert_eq!(owners(&s, &bob), ["bob"]);

    let log = srv.log_from_with(0, "refused publish of leaf for user bob");
    assert_logged(&log, &["refused publish of leaf for user bob (token"]);
    assert!(
        log.iter()
            .any(|l| l.contains("for user bob") && l.ends_with(": name kept")),
        "{log:?}"
    );
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
    assert!(
        lock.contains(&format!("sparse+{}/index/", srv.url())),
        "{lock}"
    );
    let download = "GET /crates/ab/ab-1.0.0.crate 200";
    assert_logged(&srv.log_from_with(0, download), &[download]);

    // A read token cannot publish.
    let tgt = s.test_crate("tgt", None);
    assert_fails_with(
        &s.cargo(&tgt, &PUBLISH),
        "(status 403 Forbidden): this token does not have the `publish-new or publish-update` scope",
        "publish with a read token",
    );
    assert!(!s.reg().join("index/3/t/tgt").exists());
    // The admin token of the zero-config start can, and its user owns the new crate.
    let out = cargo_with(&s, &tgt, &s.token(), &PUBLISH);
    assert!(assert_ok(&out, "admin's publish").contains("Published tgt v0.3.0"));
    assert_eq!(s.palletizer_ok(&["owner", "list", "tgt"]).trim(), "admin");
    // Search is an API call like the others: cargo sends the read token.
    let out = s.cargo(s.path(), &["search", "--registry", "local", "leaf"]);
    assert!(assert_ok(&out, "cargo search").contains("leaf = \"0.1.1\""));

    // An expired token. The server learns of it within a second and, a second after it
    // was made, refuses it for that reason.
    let short = new_token(
        &s,
        &["--user", "reader", "--scope", "read", "--expires", "1s"],
    );
    let expired = "the token has expired";
    wait_until("the server refuses the short token as expired", || {
        let r = request(
            srv.addr(),
            "GET",
            "/index/config.json",
            Some(&short),
            "",
            b"",
        );
        String::from_utf8_lossy(&r.body).contains(expired)
    });
    let out = cargo_with(&s, &app, &short, &lockfile);
    assert_fails_with(&out, "token rejected for `local`", "an expired token");
    assert!(text(&out).contains(expired), "{}", show(&out));

    // A token revoked with the CLI stops working on the running server.
    let soon = new_token(
        &s,
        &["--user", "reader", "--scope", "read", "--label", "soon"],
    );
    wait_known(&srv, &soon);
    assert_ok(&cargo_with(&s, &app, &soon, &lockfile), "a live token");
    let id = token_row(&s, "soon")[0].clone();
    s.palletizer_ok(&["token", "revoke", &id]);
    // The CLI released the registry's lock as it finished: the server read the access
    // control files again before its next request.
    assert_eq!(
        get_status(srv.addr(), "/index/config.json", Some(&soon)),
        401,
        "refused right after the CLI returned"
    );
    assert_fails_with(
        &cargo_with(&s, &app, &soon, &lockfile),
        "token rejected for `local`",
        "a revoked token",
    );
    assert_logged(
        &srv.log_from_with(0, ": revoked"),
        &[
            "refused GET /index/config.json: no token",
            "refused GET /index/config.json: unknown",
            "refused GET /index/config.json: expired",
            "refused GET /index/config.json: revoked",
            "refused PUT /api/v1/crates/new: scope",
        ],
    );

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
    // Challenged first, then let in.
    let git_fetch = [
        "GET /index/info/refs?service=git-upload-pack 401",
        "GET /index/info/refs?service=git-upload-pack 200",
        "POST /index/git-upload-pack 200",
    ];
    assert_logged(
        &srv.log_from_with(before, "POST /index/git-upload-pack 200"),
        &git_fetch,
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
    assert!(
        lock.contains("name = \"leaf\"\nversion = \"0.1.1\""),
        "{lock}"
    );
    let log = srv.log_from_with(before, download);
    assert_logged(&log, &git_fetch);
    assert_logged(&log, &[download]);
    assert_log_keeps_secrets(&srv, &[&read, &wrong, &short, &soon, &s.token()]);
}

/// HTTP Basic credentials as git sends them: `Basic base64(user:password)`.
fn basic(user: &str, password: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = format!("{user}:{password}").into_bytes();
    let mut out = String::from("Basic ");
    for group in bytes.chunks(3) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=group.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
        out.push_str(&"=".repeat(3 - group.len()));
    }
    out
}

/// One route of the table: what it asks and which token of which scope it needs.
struct Route {
    method: &'static str,
    path: String,
    headers: &'static str,
    body: Vec<u8>,
    /// The token with the scope the route needs, and one with another scope.
    right: String,
    other: String,
    git: bool,
}

#[test]
fn private_registry_every_route_refuses_no_wrong_and_other_scope_tokens() {
    let s = Sandbox::new();
    // `init --access private` writes the URL into config.json before the server runs, so
    // the port is chosen first.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    s.palletizer_ok(&["init", "--url", &url, "--access", "private"]);
    let leaf = s.path().join("leaf-0.1.0.crate");
    fs::write(&leaf, simple_crate("leaf", "0.1.0", &[])).unwrap();
    s.palletizer_ok(&["add", leaf.to_str().unwrap()]);
    s.palletizer_ok(&["user", "add", "boss", "--admin"]);
    s.palletizer_ok(&["user", "add", "reader"]);
    let read = new_token(&s, &["--user", "reader", "--scope", "read"]);
    let publish = new_token(&s, &["--user", "boss", "--scope", "publish-new"]);
    let yank = new_token(&s, &["--user", "boss", "--scope", "yank"]);
    let owners = new_token(&s, &["--user", "boss", "--scope", "change-owners"]);
    let wrong = format!("pal_{}", "5a".repeat(32));
    let srv = s.serve(&["--bind", &format!("127.0.0.1:{port}")]);
    assert_eq!(srv.url(), url);
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(s.reg().join("index/config.json")).unwrap()).unwrap();
    assert_eq!(config["auth-required"], true, "{config}");
    assert_eq!(config["api"], url, "{config}");
    let dl = config["dl"].as_str().unwrap();
    let download = dl
        .strip_prefix(url.as_str())
        .unwrap()
        .replace("{crate}", "leaf")
        .replace("{version}", "0.1.0");

    let head = git2::Repository::open(s.reg().join("index"))
        .unwrap()
        .head()
        .unwrap()
        .target()
        .unwrap();
    let want = format!("want {head}\n");
    let upload_pack = format!("{:04x}{want}00000009done\n", want.len() + 4).into_bytes();
    let fresh = publish_body(
        &meta("fresh", "1.0.0", serde_json::json!([])),
        &simple_crate("fresh", "1.0.0", &[]),
    );
    let json = "Content-Type: application/json\r\n";
    let route = |method, path: &str, right: &str, other: &str| Route {
        method,
        path: path.to_owned(),
        headers: "",
        body: Vec::new(),
        right: right.to_owned(),
        other: other.to_owned(),
        git: false,
    };
    let mut routes = vec![
        route("GET", "/index/config.json", &read, &publish),
        route("GET", "/index/le/af/leaf", &read, &yank),
        route("GET", &download, &read, &owners),
        Route {
            git: true,
            ..route(
                "GET",
                "/index/info/refs?service=git-upload-pack",
                &read,
                &publish,
            )
        },
        Route {
            git: true,
            headers: "Content-Type: application/x-git-upload-pack-request\r\n",
            body: upload_pack,
            ..route("POST", "/index/git-upload-pack", &read, &yank)
        },
        route("GET", "/api/v1/crates?q=leaf&per_page=5", &read, &owners),
        Route {
            body: fresh,
            ..route("PUT", "/api/v1/crates/new", &publish, &read)
        },
        route("DELETE", "/api/v1/crates/leaf/0.1.0/yank", &yank, &read),
        Route {
            headers: json,
            ..route("PUT", "/api/v1/crates/leaf/0.1.0/unyank", &yank, &read)
        },
        route("GET", "/api/v1/crates/leaf/owners", &read, &owners),
        Route {
            headers: json,
            body: br#"{"users":["boss","reader"]}"#.to_vec(),
            ..route("PUT", "/api/v1/crates/leaf/owners", &owners, &read)
        },
        Route {
            headers: json,
            body: br#"{"users":["reader"]}"#.to_vec(),
            ..route("DELETE", "/api/v1/crates/leaf/owners", &owners, &yank)
        },
    ];
    // The login page asks nothing of anyone.
    routes.push(route("GET", "/login", &read, &publish));

    let login_url = format!("Cargo login_url=\"{url}/login\"");
    for r in &routes {
        let what = format!("{} {}", r.method, r.path);
        let send =
            |auth: Option<&str>| request(srv.addr(), r.method, &r.path, auth, r.headers, &r.body);
        // Tokens on git routes as git sends them, elsewhere raw as cargo does.
        let token = |t: &str| {
            if r.git {
                basic("token", t)
            } else {
                t.to_owned()
            }
        };
        let (wrong, other, right) = (token(&wrong), token(&r.other), token(&r.right));
        let cases: [(&str, Option<String>, u16); 4] = if r.path == "/login" {
            [
                ("no token", None, 200),
                ("wrong token", Some(wrong), 200),
                ("other scope", Some(other), 200),
                ("right token", Some(right), 200),
            ]
        } else {
            [
                ("no token", None, 401),
                ("wrong token", Some(wrong), 401),
                ("other scope", Some(other), 403),
                ("right token", Some(right), 200),
            ]
        };
        for (case, auth, status) in cases {
            let got = send(auth.as_deref());
            let body = String::from_utf8_lossy(&got.body).into_owned();
            assert_eq!(got.status, status, "{what} with {case}: {body}");
            let challenge = got.header("WWW-Authenticate");
            match status {
                401 if r.git => {
                    assert_eq!(
                        challenge,
                        Some("Basic realm=\"palletizer\""),
                        "{what} {case}"
                    )
                }
                401 => assert_eq!(challenge, Some(login_url.as_str()), "{what} {case}"),
                _ => assert_eq!(challenge, None, "{what} {case}"),
            }
            if matches!(status, 401 | 403) {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert!(
                    v["errors"][0]["detail"].is_string(),
                    "{what} {case}: {body}"
                );
            }
        }
    }
    // The writes the right tokens made, and only those.
    assert!(s.reg().join("index/fr/es/fresh").exists());
    assert_eq!(s.index_line("le/af/leaf", "0.1.0")["yanked"], false);
    let listed = request(
        srv.addr(),
        "GET",
        "/api/v1/crates/leaf/owners",
        Some(&read),
        "",
        b"",
    );
    let listed: serde_json::Value = serde_json::from_slice(&listed.body).unwrap();
    assert_eq!(listed["users"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["users"][0]["login"], "boss", "{listed}");

    // A refused upload is answered at once: no `100 Continue`, no wait for the body.
    for (token, status) in [(None, 401), (Some(&read), 403)] {
        let mut c = std::net::TcpStream::connect(srv.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let auth = token.map_or(String::new(), |t| format!("Authorization: {t}\r\n"));
        write!(
            c,
            "PUT /api/v1/crates/new HTTP/1.1\r\nHost: localhost\r\n{auth}Expect: 100-continue\r\n\
             Content-Length: 1000000\r\n\r\n"
        )
        .unwrap();
        let (got, body) = read_one(&mut c);
        assert_eq!(got, status, "{body}");
    }

    // Each refusal is logged with its route and reason, never with the token.
    let log = srv.log_from_with(0, "refused DELETE /api/v1/crates/leaf/owners: scope");
    for r in routes.iter().filter(|r| r.path != "/login") {
        let path = r.path.split('?').next().unwrap();
        for reason in ["no token", "unknown", "scope"] {
            let want = format!("refused {} {path}: {reason}", r.method);
            assert!(log.iter().any(|l| l.ends_with(&want)), "{want}: {log:?}");
        }
    }
    assert!(
        !log.iter().any(|l| l.contains("refused GET /login")),
        "{log:?}"
    );
    assert_log_keeps_secrets(&srv, &[&read, &publish, &yank, &owners, &wrong]);
}

/// Removing a user revokes their tokens. The event loop may still let such a token through
/// until it reloads (within a second); the worker, which reads the current file, then
/// refuses it, and must do so as a revoked token (401 with the challenge), not as a 403.
#[test]
fn removed_users_token_is_a_401_also_when_the_worker_catches_it() {
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    let leaf = s.path().join("leaf-0.1.0.crate");
    fs::write(&leaf, simple_crate("leaf", "0.1.0", &[])).unwrap();
    s.palletizer_ok(&["add", leaf.to_str().unwrap()]);
    let login_url = format!("Cargo login_url=\"{}/login\"", srv.url());
    // Which check refuses depends on when the server last reloaded: try a few times, until
    // the worker's check has answered once.
    for i in 0..10 {
        let name = format!("gone{i}");
        s.palletizer_ok(&["user", "add", &name]);
        let token = new_token(&s, &["--user", &name]);
        wait_known(&srv, &token);
        s.palletizer_ok(&["user", "remove", &name]);
        let before = srv.log().len();
        let r = request(
            srv.addr(),
            "DELETE",
            "/api/v1/crates/leaf/0.1.0/yank",
            Some(&token),
            "",
            b"",
        );
        let body = String::from_utf8_lossy(&r.body).into_owned();
        assert_eq!(r.status, 401, "{body}");
        assert_eq!(r.header("WWW-Authenticate"), Some(login_url.as_str()));
        assert!(body.contains("the token is not valid"), "{body}");
        let log = srv.log_from_with(before, "/yank 401");
        if log
            .iter()
            .any(|l| l.contains(&format!("for user {name} (token")))
        {
            break;
        }
    }
    assert_eq!(s.index_line("le/af/leaf", "0.1.0")["yanked"], false);
}

/// `access` edited by hand in `palletizer.toml` (what made the setting and `config.json`
/// disagree before): the server's start makes `config.json` follow, and refuses readers.
#[test]
fn config_json_follows_the_access_setting_at_start() {
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    drop(srv);
    s.make_private_by_hand();
    let srv = s.serve(&[]);
    let config = fs::read_to_string(s.reg().join("index/config.json")).unwrap();
    assert!(config.contains("\"auth-required\": true"), "{config}");
    let repo = git2::Repository::open(s.reg().join("index")).unwrap();
    let head = repo.head().unwrap().peel_to_commit().unwrap();
    assert_eq!(head.message().unwrap(), "Set access to private");
    assert_eq!(get_status(srv.addr(), "/index/config.json", None), 401);
    assert_eq!(
        get_status(srv.addr(), "/index/config.json", Some(&s.token())),
        200
    );
}

/// An open registry listening beyond loopback says so at start.
#[test]
fn open_access_beyond_loopback_is_warned_about() {
    let s = Sandbox::new();
    let out = s.palletizer(&["init", "--url", "http://reg.example", "--access", "open"]);
    assert!(out.status.success(), "{}", show(&out));
    let srv = s.serve(&["--bind", "0.0.0.0:0"]);
    let log = srv.log_from_with(0, "access is `open`");
    assert!(
        log.iter()
            .any(|l| l.starts_with("warning: access is `open`")),
        "{log:?}"
    );
    drop(srv);
    let srv = s.serve(&["--bind", "127.0.0.1:0"]);
    assert!(!srv.log().iter().any(|l| l.contains("access is `open`")));
}

/// A token revoked while its upload is still arriving: the publish is refused when the body
/// is complete, not accepted on the strength of the check made when the head arrived.
#[test]
fn a_token_revoked_during_its_upload_cannot_publish() {
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    let slow = new_token(&s, &["--user", "admin", "--label", "slow"]);
    wait_known(&srv, &slow);
    let body = publish_body(
        &meta("slowpoke", "1.0.0", serde_json::json!([])),
        &simple_crate("slowpoke", "1.0.0", &[]),
    );
    let mut c = std::net::TcpStream::connect(srv.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "PUT /api/v1/crates/new HTTP/1.1\r\nHost: localhost\r\nAuthorization: {slow}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(&body[..10]).unwrap();
    let id = token_row(&s, "slow")[0].clone();
    s.palletizer_ok(&["token", "revoke", &id]);
    wait_until("the server refuses the revoked token", || {
        get_status(srv.addr(), "/api/v1/crates/slowpoke/owners", None) == 404
            && request(
                srv.addr(),
                "PUT",
                "/api/v1/crates/x/1.0.0/unyank",
                Some(&slow),
                "",
                b"",
            )
            .status
                == 401
    });
    c.write_all(&body[10..]).unwrap();
    let (status, text) = read_one(&mut c);
    assert_eq!(status, 401, "{text}");
    assert!(!s.reg().join("crates/slowpoke").exists());
}

/// `access` changed by hand while the server runs: `config.json` follows (committed), not
/// only the checks.
#[test]
fn config_json_follows_an_access_change_while_running() {
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    s.make_private_by_hand();
    s.wait_for_private_config();
    let served = request(
        srv.addr(),
        "GET",
        "/index/config.json",
        Some(&s.token()),
        "",
        b"",
    );
    assert_eq!(served.status, 200);
    assert!(String::from_utf8_lossy(&served.body).contains("auth-required"));
    assert_eq!(get_status(srv.addr(), "/index/config.json", None), 401);
}

/// A token revoked while the server sat idle: the very first request after the quiet spell
/// meets the revocation (the loop looks at the access files before it reads a request).
#[test]
fn the_first_request_after_an_idle_spell_meets_a_revocation() {
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    let t = new_token(&s, &["--user", "admin", "--label", "idle"]);
    wait_known(&srv, &t);
    let id = token_row(&s, "idle")[0].clone();
    s.palletizer_ok(&["token", "revoke", &id]);
    // Longer than the half second between looks, with no request at all meanwhile.
    std::thread::sleep(Duration::from_millis(1200));
    let r = request(
        srv.addr(),
        "PUT",
        "/api/v1/crates/x/1.0.0/unyank",
        Some(&t),
        "",
        b"",
    );
    assert_eq!(r.status, 401);
}
