//! The crates.io mirror end to end, against a local upstream: a small HTTP server in the
//! test that serves a sparse index tree the test writes (real crate files, their index
//! lines with `cksum` and `pubtime`), logs every request and can be stopped. The real
//! cargo resolves and builds through the mirror with source replacement.
//!
//! `PALLETIZER_TEST_CRATES_IO=1` also runs one build through a mirror of the real
//! crates.io.

mod support;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palletizer::registry::testing::{crate_bytes, file, sha256_hex};
use support::{get_bytes, show, Sandbox, ServerProc};

/// The upstream: files below `root`, served with an ETag (and 304s), each request logged.
struct Upstream {
    root: PathBuf,
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
    stopped: Arc<AtomicBool>,
    /// Time each crate download takes (to make concurrent requests overlap).
    delay: Arc<Mutex<Duration>>,
}

impl Upstream {
    fn start(root: &Path) -> Upstream {
        fs::create_dir_all(root).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let up = Upstream {
            root: root.to_owned(),
            addr: addr.clone(),
            log: Default::default(),
            stopped: Default::default(),
            delay: Default::default(),
        };
        fs::write(
            root.join("config.json"),
            format!("{{\"dl\":\"http://{addr}/dl\"}}"),
        )
        .unwrap();
        let (root, log, stopped, delay) = (
            up.root.clone(),
            up.log.clone(),
            up.stopped.clone(),
            up.delay.clone(),
        );
        std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((c, _)) => {
                        let (root, log, stopped, delay) =
                            (root.clone(), log.clone(), stopped.clone(), delay.clone());
                        std::thread::spawn(move || serve(c, &root, &log, &stopped, &delay));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        up
    }

    fn url(&self) -> String {
        format!("sparse+http://{}/", self.addr)
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
    }

    /// How many requests asked for `path`.
    fn count(&self, path: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == path)
            .count()
    }

    /// Publishes `vers` of `name` upstream with `deps` (name, req) and `pubtime`; returns
    /// the crate file's bytes.
    fn publish(&self, name: &str, vers: &str, deps: &[(&str, &str)], pubtime: &str) -> Vec<u8> {
        let dep_lines: String = deps
            .iter()
            .map(|(d, r)| format!("{d} = \"{r}\"\n"))
            .collect();
        let manifest = format!(
            "[package]\nname = \"{name}\"\nversion = \"{vers}\"\nedition = \"2021\"\n\n[dependencies]\n{dep_lines}"
        );
        let body = match deps.first() {
            Some((d, _)) => format!(
                "pub fn hello() -> String {{ format!(\"{name} {vers} + {{}}\", {d}::hello()) }}\n"
            ),
            None => format!("pub fn hello() -> String {{ \"{name} {vers}\".to_owned() }}\n"),
        };
        let dir = format!("{name}-{vers}");
        let (m, l) = (format!("{dir}/Cargo.toml"), format!("{dir}/src/lib.rs"));
        let bytes = crate_bytes(&[file(&m, manifest.as_bytes()), file(&l, body.as_bytes())]);
        let deps_json: Vec<serde_json::Value> = deps
            .iter()
            .map(|(d, r)| {
                serde_json::json!({"name": d, "req": r, "features": [], "optional": false,
                    "default_features": true, "target": null, "kind": "normal"})
            })
            .collect();
        let line = serde_json::json!({"name": name, "vers": vers, "deps": deps_json,
            "cksum": sha256_hex(&bytes[..]).unwrap(), "features": {}, "yanked": false,
            "pubtime": pubtime});
        let index = self.root.join(palletizer::registry::index_path_of(name));
        fs::create_dir_all(index.parent().unwrap()).unwrap();
        let mut text = fs::read_to_string(&index).unwrap_or_default();
        text.push_str(&format!("{line}\n"));
        fs::write(&index, text).unwrap();
        self.put_crate(name, vers, &bytes);
        bytes
    }

    /// Replaces the crate file the upstream serves for `vers` of `name`.
    fn put_crate(&self, name: &str, vers: &str, bytes: &[u8]) {
        let path = self.root.join(format!("dl/{name}/{vers}/download"));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }
}

/// One connection of the upstream: keep-alive, GET only.
fn serve(
    c: TcpStream,
    root: &Path,
    log: &Mutex<Vec<String>>,
    stopped: &AtomicBool,
    delay: &Mutex<Duration>,
) {
    let mut reader = BufReader::new(c.try_clone().unwrap());
    let mut c = c;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || stopped.load(Ordering::SeqCst) {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
        let mut inm = None;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("if-none-match") {
                    inm = Some(v.trim().to_owned());
                }
            }
        }
        log.lock().unwrap().push(path.clone());
        let rel = path.trim_start_matches('/');
        if rel.starts_with("dl/") {
            std::thread::sleep(*delay.lock().unwrap());
        }
        let head = match fs::read(root.join(rel)) {
            Ok(bytes) => {
                let tag = format!("\"{}\"", &sha256_hex(&bytes[..]).unwrap()[..16]);
                if inm.as_deref() == Some(tag.as_str()) {
                    format!("HTTP/1.1 304 Not Modified\r\nETag: {tag}\r\nContent-Length: 0\r\n\r\n")
                        .into_bytes()
                } else {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nETag: {tag}\r\nContent-Length: {}\r\n\r\n",
                        bytes.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(&bytes);
                    r
                }
            }
            Err(_) => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
        };
        if c.write_all(&head).is_err() {
            return;
        }
    }
}

const OLD: &str = "2020-01-01T00:00:00Z";

/// The current time as a `pubtime`.
fn pubtime_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// A registry with `[mirror]` (upstream `up`, and `extra` lines) served on a fixed port.
fn mirror_server(s: &Sandbox, up: &str, extra: &str) -> ServerProc {
    let srv = s.serve(&[]);
    let addr = srv.addr().to_owned();
    drop(srv);
    add_mirror_table(s, up, extra);
    s.serve(&["--bind", &addr])
}

fn add_mirror_table(s: &Sandbox, up: &str, extra: &str) {
    let path = s.reg().join("palletizer.toml");
    let mut text = fs::read_to_string(&path).unwrap();
    text.push_str(&format!("\n[mirror]\nupstream = \"{up}\"\n{extra}\n"));
    fs::write(&path, text).unwrap();
}

/// `CARGO_HOME/config.toml` making crates.io the index at `index` (a sparse URL).
fn replace_crates_io(home: &Path, index: &str) {
    fs::create_dir_all(home).unwrap();
    fs::write(
        home.join("config.toml"),
        format!(
            "[source.crates-io]\nreplace-with = \"pal-mirror\"\n\n[source.pal-mirror]\nregistry = \"{index}\"\n"
        ),
    )
    .unwrap();
}

/// A project depending on `dep` (`version = req`) whose binary prints `dep::hello()`.
fn project(s: &Sandbox, name: &str, dep: &str, req: &str) -> PathBuf {
    let dir = s.path().join(name);
    fs::create_dir_all(dir.join("src")).unwrap();
    fs::write(
        dir.join("Cargo.toml"),
        format!("[package]\nname = \"{name}\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n[dependencies]\n{dep} = \"{req}\"\n"),
    )
    .unwrap();
    fs::write(
        dir.join("src/main.rs"),
        format!("fn main() {{ println!(\"{{}}\", {dep}::hello()); }}\n"),
    )
    .unwrap();
    dir
}

/// Runs cargo in `dir` with `home` as `CARGO_HOME`; its output, or a panic with it.
fn cargo_in(s: &Sandbox, home: &Path, dir: &Path, args: &[&str]) -> std::process::Output {
    s.cargo_cmd(dir, args)
        .env("CARGO_HOME", home)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .output()
        .unwrap()
}

fn cargo_ok(s: &Sandbox, home: &Path, dir: &Path, args: &[&str]) -> String {
    let out = cargo_in(s, home, dir, args);
    assert!(
        out.status.success(),
        "cargo {args:?} failed:\n{}",
        show(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An upstream with `mirb` 0.1.0 and `mira` 0.1.0 (which needs `mirb ^0.1`).
fn two_crates(s: &Sandbox) -> Upstream {
    let up = Upstream::start(&s.path().join("upstream"));
    up.publish("mirb", "0.1.0", &[], OLD);
    up.publish("mira", "0.1.0", &[("mirb", "^0.1")], OLD);
    up
}

/// The lockfile cargo writes for `dir` resolving against the upstream directly.
fn direct_lockfile(s: &Sandbox, up: &Upstream, dir: &Path) -> String {
    let home = s.path().join("home-direct");
    replace_crates_io(&home, &up.url());
    cargo_ok(s, &home, dir, &["generate-lockfile"]);
    let lock = fs::read_to_string(dir.join("Cargo.lock")).unwrap();
    fs::remove_file(dir.join("Cargo.lock")).unwrap();
    lock
}

fn mirror_index(srv: &ServerProc) -> String {
    format!("sparse+{}/mirror/index/", srv.url())
}

fn metric(srv: &ServerProc, token: &str, name: &str) -> u64 {
    let mut c = TcpStream::connect(srv.addr()).unwrap();
    write!(
        c,
        "GET /metrics HTTP/1.1\r\nHost: {}\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n",
        srv.addr()
    )
    .unwrap();
    let (status, body) = support::read_one(&mut c);
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
        .parse()
        .unwrap()
}

#[test]
fn cargo_builds_through_the_mirror_with_the_upstreams_lockfile_and_after_it_stops() {
    let s = Sandbox::new();
    let up = two_crates(&s);
    let app = project(&s, "app", "mira", "0.1");
    let direct = direct_lockfile(&s, &up, &app);
    let srv = mirror_server(&s, &up.url(), "ttl = \"1s\"");
    let home = s.path().join("home-mirror");
    replace_crates_io(&home, &mirror_index(&srv));
    let out = cargo_ok(&s, &home, &app, &["run", "-q"]);
    assert_eq!(out.trim(), "mira 0.1.0 + mirb 0.1.0");
    let through = fs::read_to_string(app.join("Cargo.lock")).unwrap();
    assert_eq!(
        through, direct,
        "the lockfile through the mirror is the upstream's"
    );
    assert!(s
        .reg()
        .join("mirror/crates/mira/mira-0.1.0.crate")
        .is_file());
    assert_eq!(up.count("/dl/mira/0.1.0/download"), 1);
    // The upstream goes away; a fresh CARGO_HOME resolves anew (the TTL has passed: the
    // copies are served stale) and builds.
    up.stop();
    std::thread::sleep(Duration::from_millis(1100));
    fs::remove_file(app.join("Cargo.lock")).unwrap();
    fs::remove_dir_all(app.join("target")).unwrap();
    let fresh = s.path().join("home-fresh");
    replace_crates_io(&fresh, &mirror_index(&srv));
    let out = cargo_ok(&s, &fresh, &app, &["run", "-q"]);
    assert_eq!(out.trim(), "mira 0.1.0 + mirb 0.1.0");
    assert_eq!(fs::read_to_string(app.join("Cargo.lock")).unwrap(), direct);
    let token = s.token();
    assert!(metric(&srv, &token, "palletizer_mirror_stale_total") >= 2);
    assert!(metric(&srv, &token, "palletizer_mirror_upstream_errors_total") >= 2);
    assert!(metric(&srv, &token, "palletizer_mirror_hits_total") >= 1);
    assert!(metric(&srv, &token, "palletizer_mirror_cache_bytes") > 0);
    // Mirror requests are not the registry workers' jobs.
    assert_eq!(metric(&srv, &token, "palletizer_worker_queue_depth"), 0);
    // A file the mirror never saw: a cargo-readable 502.
    let (status, body) = get_bytes(srv.addr(), "/mirror/index/3/n/new").unwrap();
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("{\"errors\":[{\"detail\":"));
}

#[test]
fn index_files_are_revalidated_after_the_ttl_and_served_as_the_upstream_sent_them() {
    let s = Sandbox::new();
    let up = two_crates(&s);
    let srv = mirror_server(&s, &up.url(), "ttl = \"1s\"");
    let (status, body) = get_bytes(srv.addr(), "/mirror/index/mi/ra/mira").unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, fs::read(up.root.join("mi/ra/mira")).unwrap());
    let (_, again) = get_bytes(srv.addr(), "/mirror/index/mi/ra/mira").unwrap();
    assert_eq!(again, body);
    assert_eq!(up.count("/mi/ra/mira"), 1, "within the TTL: from the cache");
    std::thread::sleep(Duration::from_millis(1100));
    get_bytes(srv.addr(), "/mirror/index/mi/ra/mira").unwrap();
    assert_eq!(up.count("/mi/ra/mira"), 2, "after the TTL: revalidated");
    let token = s.token();
    assert_eq!(
        metric(&srv, &token, "palletizer_mirror_revalidations_total"),
        1
    );
    let (status, cfg) = get_bytes(srv.addr(), "/mirror/index/config.json").unwrap();
    assert_eq!(status, 200);
    let cfg: serde_json::Value = serde_json::from_slice(&cfg).unwrap();
    assert_eq!(
        cfg["dl"],
        format!(
            "{}/mirror/crates/{{crate}}/{{crate}}-{{version}}.crate",
            srv.url()
        )
    );
    assert_eq!(
        get_bytes(srv.addr(), "/mirror/index/3/n/nop").unwrap().0,
        404
    );
    assert_eq!(get_bytes(srv.addr(), "/mirror/index/../x").unwrap().0, 400);
    assert_eq!(
        get_bytes(srv.addr(), "/mirror/crates/mira/x.crate")
            .unwrap()
            .0,
        404
    );
}

#[test]
fn a_tampered_crate_file_upstream_is_refused_and_never_cached() {
    let s = Sandbox::new();
    let up = two_crates(&s);
    let good = fs::read(up.root.join("dl/mirb/0.1.0/download")).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    up.put_crate("mirb", "0.1.0", &bad);
    let srv = mirror_server(&s, &up.url(), "");
    let path = "/mirror/crates/mirb/mirb-0.1.0.crate";
    let (status, body) = get_bytes(srv.addr(), path).unwrap();
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("checksum"), "{text}");
    assert!(!s.reg().join("mirror/crates/mirb/mirb-0.1.0.crate").exists());
    assert_eq!(fs::read_dir(s.reg().join("mirror/tmp")).unwrap().count(), 0);
    assert_eq!(
        metric(&srv, &s.token(), "palletizer_mirror_checksum_refused_total"),
        1
    );
    // Nothing of the refusal is kept: once the upstream serves the right file, it is.
    up.put_crate("mirb", "0.1.0", &good);
    let (status, body) = get_bytes(srv.addr(), path).unwrap();
    assert_eq!((status, body), (200, good));
}

#[test]
fn fifty_concurrent_fetches_of_one_missing_crate_make_one_upstream_request() {
    let s = Sandbox::new();
    let up = two_crates(&s);
    *up.delay.lock().unwrap() = Duration::from_millis(500);
    let good = fs::read(up.root.join("dl/mira/0.1.0/download")).unwrap();
    let srv = mirror_server(&s, &up.url(), "");
    let addr = srv.addr().to_owned();
    let clients: Vec<_> = (0..50)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                get_bytes(&addr, "/mirror/crates/mira/mira-0.1.0.crate").unwrap()
            })
        })
        .collect();
    for c in clients {
        let (status, body) = c.join().unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, good);
    }
    assert_eq!(
        up.count("/dl/mira/0.1.0/download"),
        1,
        "{:?}",
        up.log.lock().unwrap()
    );
    assert_eq!(up.count("/mi/ra/mira"), 1);
}

#[test]
fn min_age_and_deny_change_what_cargo_resolves() {
    let s = Sandbox::new();
    let up = two_crates(&s);
    up.publish("mirb", "0.1.1", &[], &pubtime_now());
    let app = project(&s, "app", "mira", "0.1");
    let resolved = |srv: &ServerProc, home: &str| {
        let home = s.path().join(home);
        replace_crates_io(&home, &mirror_index(srv));
        let out = cargo_in(&s, &home, &app, &["generate-lockfile"]);
        let lock = fs::read_to_string(app.join("Cargo.lock")).unwrap_or_default();
        let _ = fs::remove_file(app.join("Cargo.lock"));
        (out, lock)
    };
    // Without a policy the newest version is taken.
    let srv = mirror_server(&s, &up.url(), "");
    let (_, lock) = resolved(&srv, "home-a");
    assert!(
        lock.contains("name = \"mirb\"\nversion = \"0.1.1\""),
        "{lock}"
    );
    drop(srv);
    let edit = |extra: &str| {
        let path = s.reg().join("palletizer.toml");
        let text = fs::read_to_string(&path).unwrap();
        let base = text.split("\n[mirror]").next().unwrap().to_owned();
        fs::write(&path, base).unwrap();
        add_mirror_table(&s, &up.url(), extra);
    };
    let addr = |srv: &ServerProc| srv.addr().to_owned();
    let srv = s.serve(&["--bind", "127.0.0.1:0"]);
    let bind = addr(&srv);
    drop(srv);
    // min-age hides the version published just now.
    edit("min-age = \"3d\"");
    let srv = s.serve(&["--bind", &bind]);
    let (_, lock) = resolved(&srv, "home-b");
    assert!(
        lock.contains("name = \"mirb\"\nversion = \"0.1.0\""),
        "{lock}"
    );
    assert!(metric(&srv, &s.token(), "palletizer_mirror_policy_hidden_total") >= 1);
    drop(srv);
    // deny with a version requirement hides that version; deny of a crate hides it all.
    edit("deny = [\"mirb@=0.1.1\"]");
    let srv = s.serve(&["--bind", &bind]);
    let (_, lock) = resolved(&srv, "home-c");
    assert!(
        lock.contains("name = \"mirb\"\nversion = \"0.1.0\""),
        "{lock}"
    );
    assert_eq!(
        get_bytes(srv.addr(), "/mirror/crates/mirb/mirb-0.1.1.crate")
            .unwrap()
            .0,
        403
    );
    drop(srv);
    edit("deny = [\"mira\"]");
    let srv = s.serve(&["--bind", &bind]);
    let (out, _) = resolved(&srv, "home-d");
    assert!(!out.status.success());
    assert!(
        show(&out).contains("no matching package named `mira` found"),
        "{}",
        show(&out)
    );
}

#[test]
fn mirror_fetch_fills_the_cache_then_an_offline_mirror_builds_and_a_bundle_moves_it() {
    let s = Sandbox::new();
    let up = two_crates(&s);
    let app = project(&s, "app", "mira", "0.1");
    let lock = direct_lockfile(&s, &up, &app);
    fs::write(app.join("Cargo.lock"), &lock).unwrap();
    // A registry whose mirror is filled from the lockfile by the CLI, no server running.
    let srv = s.serve(&[]);
    let bind = srv.addr().to_owned();
    drop(srv);
    add_mirror_table(&s, &up.url(), "");
    let lockfile = app.join("Cargo.lock");
    let out = s.palletizer_ok(&["mirror", "fetch", lockfile.to_str().unwrap()]);
    assert!(
        out.contains("2 of 2 crates.io packages are in the mirror's cache"),
        "{out}"
    );
    let bundle = s.path().join("bundle.tar");
    let out = s.palletizer_ok(&["mirror", "export", bundle.to_str().unwrap()]);
    assert!(out.contains("2 crate files"), "{out}");
    let out = s.palletizer_ok(&["mirror", "check"]);
    assert!(out.contains("Checked 2 crate files: 0 problems"), "{out}");
    // Offline, with the upstream gone: cargo builds from the cache alone.
    up.stop();
    let path = s.reg().join("palletizer.toml");
    let text = fs::read_to_string(&path)
        .unwrap()
        .replace("[mirror]\n", "[mirror]\noffline = true\n");
    fs::write(&path, text).unwrap();
    let srv = s.serve(&["--bind", &bind]);
    let home = s.path().join("home-offline");
    replace_crates_io(&home, &mirror_index(&srv));
    let out = cargo_ok(&s, &home, &app, &["run", "-q", "--locked"]);
    assert_eq!(out.trim(), "mira 0.1.0 + mirb 0.1.0");
    drop(srv);
    // The bundle, imported into a fresh registry (offline), builds there too.
    let t = Sandbox::new();
    let srv = t.serve(&[]);
    let tbind = srv.addr().to_owned();
    drop(srv);
    add_mirror_table(&t, &up.url(), "offline = true");
    // A tampered bundle is refused whole.
    let mut bytes = fs::read(&bundle).unwrap();
    let krate = fs::read(s.reg().join("mirror/crates/mirb/mirb-0.1.0.crate")).unwrap();
    let at = bytes
        .windows(krate.len())
        .position(|w| w == krate.as_slice())
        .unwrap();
    bytes[at + krate.len() / 2] ^= 0xff;
    let tampered = t.path().join("tampered.tar");
    fs::write(&tampered, &bytes).unwrap();
    let out = t.palletizer(&["mirror", "import", tampered.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        show(&out).contains("mirb/mirb-0.1.0.crate: checksum"),
        "{}",
        show(&out)
    );
    assert!(support::snapshot(&t.reg().join("mirror/crates")).is_empty());
    assert!(!t.reg().join("mirror/index/mi/ra/mira").exists());
    let out = t.palletizer_ok(&["mirror", "import", bundle.to_str().unwrap()]);
    assert!(out.contains("2 crate files"), "{out}");
    let srv = t.serve(&["--bind", &tbind]);
    let app2 = project(&t, "app", "mira", "0.1");
    fs::write(app2.join("Cargo.lock"), &lock).unwrap();
    let home = t.path().join("home-imported");
    replace_crates_io(&home, &mirror_index(&srv));
    let out = cargo_ok(&t, &home, &app2, &["run", "-q", "--locked"]);
    assert_eq!(out.trim(), "mira 0.1.0 + mirb 0.1.0");
    // Bad command lines are one line and a failure.
    let out = t.palletizer(&["mirror", "prune"]);
    assert!(!out.status.success() && show(&out).contains("--older-than"));
    let out = t.palletizer(&["mirror", "fetch", "/nonexistent/Cargo.lock"]);
    assert!(!out.status.success());
    let pruned = t.palletizer_ok(&["mirror", "prune", "--max-bytes", "0"]);
    assert!(pruned.contains("Removed 2 crate files"), "{pruned}");
}

/// Opt-in: one real crate through a mirror of crates.io.
#[test]
fn crates_io_through_the_mirror() {
    if std::env::var_os("PALLETIZER_TEST_CRATES_IO").is_none() {
        eprintln!(
            "skipped: set PALLETIZER_TEST_CRATES_IO=1 to build through a mirror of crates.io"
        );
        return;
    }
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    let bind = srv.addr().to_owned();
    drop(srv);
    add_mirror_table(&s, palletizer::registry::CRATES_IO_SPARSE, "");
    let srv = s.serve(&["--bind", &bind]);
    let app = s.path().join("app");
    fs::create_dir_all(app.join("src")).unwrap();
    fs::write(
        app.join("Cargo.toml"),
        "[package]\nname = \"app\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n[dependencies]\nitoa = \"=1.0.11\"\n",
    )
    .unwrap();
    fs::write(
        app.join("src/main.rs"),
        "fn main() { println!(\"{}\", itoa::Buffer::new().format(42)); }\n",
    )
    .unwrap();
    let home = s.path().join("home");
    replace_crates_io(&home, &mirror_index(&srv));
    let out = cargo_ok(&s, &home, &app, &["run", "-q"]);
    assert_eq!(out.trim(), "42");
    let lock = fs::read_to_string(app.join("Cargo.lock")).unwrap();
    assert!(lock.contains("source = \"registry+https://github.com/rust-lang/crates.io-index\""));
}

/// Memory stays flat whatever the crate's size: a 40 MiB crate file fetched cold, streamed
/// to disk while hashed, then served by sendfile, after a small one (which pages in the
/// fetch path's code), moves the server's peak resident set by less than 1 MiB. (The tests run the debug build, whose own pages are
/// most of its resident set; the absolute figure is for a release build to show.)
#[test]
fn a_large_crate_fetched_cold_keeps_the_servers_memory_flat() {
    let s = Sandbox::new();
    let up = Upstream::start(&s.path().join("upstream"));
    let bytes = palletizer::registry::testing::noise(40 << 20);
    let line = serde_json::json!({"name": "big", "vers": "1.0.0", "deps": [],
        "cksum": sha256_hex(&bytes[..]).unwrap(), "features": {}, "pubtime": OLD});
    fs::create_dir_all(up.root.join("3/b")).unwrap();
    fs::write(up.root.join("3/b/big"), format!("{line}\n")).unwrap();
    up.put_crate("big", "1.0.0", &bytes);
    up.publish("mirb", "0.1.0", &[], OLD);
    let srv = mirror_server(&s, &up.url(), "");
    // A small crate first, cold: the code of the fetch path is paged in once.
    let small = get_bytes(srv.addr(), "/mirror/crates/mirb/mirb-0.1.0.crate").unwrap();
    assert_eq!(small.0, 200);
    let before = support::vm_hwm_kib(srv.child.id());
    let (status, body) = get_bytes(srv.addr(), "/mirror/crates/big/big-1.0.0.crate").unwrap();
    assert_eq!(status, 200);
    assert!(body == bytes, "the bytes served are the upstream's");
    let after = support::vm_hwm_kib(srv.child.id());
    eprintln!("server VmHWM: {before} KiB before, {after} KiB after a cold 40 MiB fetch");
    assert!(after - before < 1024, "VmHWM grew {} KiB", after - before);
}

/// In a private registry the mirror needs a `read` token too, and its `config.json` says
/// `auth-required`.
#[test]
fn a_private_registrys_mirror_asks_for_a_token() {
    let s = Sandbox::new();
    let up = two_crates(&s);
    let srv = mirror_server(&s, &up.url(), "");
    s.make_private_by_hand();
    s.wait_for_private_config();
    let (status, _) = get_bytes(srv.addr(), "/mirror/index/config.json").unwrap();
    assert_eq!(status, 401);
    assert_eq!(
        get_bytes(srv.addr(), "/mirror/crates/mirb/mirb-0.1.0.crate")
            .unwrap()
            .0,
        401
    );
    let mut c = TcpStream::connect(srv.addr()).unwrap();
    write!(
        c,
        "GET /mirror/index/config.json HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        srv.addr(),
        s.token()
    )
    .unwrap();
    let (status, body) = support::read_one(&mut c);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"auth-required\":true"), "{body}");
    // cargo through it: crates.io replaced by a registry entry, whose token cargo sends.
    let home = s.path().join("home-private");
    fs::create_dir_all(&home).unwrap();
    fs::write(
        home.join("config.toml"),
        format!(
            "[registry]\nglobal-credential-providers = [\"cargo:token\"]\n\n\
             [source.crates-io]\nreplace-with = \"pal-mirror\"\n\n\
             [registries.pal-mirror]\nindex = \"{}\"\n",
            mirror_index(&srv)
        ),
    )
    .unwrap();
    let app = project(&s, "app", "mira", "0.1");
    let out = s
        .cargo_cmd(&app, &["run", "-q"])
        .env("CARGO_HOME", &home)
        .env("CARGO_TARGET_DIR", app.join("target"))
        .env("CARGO_REGISTRIES_PAL_MIRROR_TOKEN", s.token())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "mira 0.1.0 + mirb 0.1.0"
    );
}
