//! Caching: crate files are immutable for any cache, index files revalidate with their ETag,
//! and private registries keep shared caches out. A real nginx `proxy_cache` between cargo
//! and palletizer: cargo resolves through it, a new publish shows on the next resolve, and
//! downloads keep working from the cache with palletizer stopped.
//!
//! The proxy test needs `nginx` on `PATH`: without it, it is reported as ignored with the
//! reason, except under `CI=true`, where it fails (tests/support/harness.rs).

mod support;

use std::fs;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use palletizer::registry::testing::simple_crate;
use support::{send_until_close, show, split_responses, Sandbox};

support::harness::tests!(
    crate_files_are_immutable_and_index_files_revalidate,
    private_registries_keep_shared_caches_out,
    cargo_resolves_through_a_caching_proxy_that_outlives_the_registry[Nginx],
);

/// Adds a small crate file made in memory.
fn add(s: &Sandbox, name: &str, vers: &str) {
    let p = s.path().join(format!("{name}-{vers}.crate"));
    fs::write(&p, simple_crate(name, vers, &[])).unwrap();
    s.palletizer_ok(&["add", p.to_str().unwrap()]);
}

fn get(addr: &str, path: &str, extra: &str) -> support::RawResponse {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n");
    split_responses(&send_until_close(addr, raw.as_bytes()), &[]).remove(0)
}

fn crate_files_are_immutable_and_index_files_revalidate() {
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    add(&s, "leaf", "0.1.0");
    let krate = get(srv.addr(), "/crates/leaf/leaf-0.1.0.crate", "");
    assert_eq!(krate.status, 200);
    assert_eq!(
        krate.header("Cache-Control"),
        Some("public, max-age=31536000, immutable")
    );
    for path in ["/index/config.json", "/index/le/af/leaf"] {
        let r = get(srv.addr(), path, "");
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(
            r.header("Cache-Control"),
            Some("public, no-cache"),
            "{path}"
        );
        let tag = r
            .header("ETag")
            .expect("an ETag to revalidate with")
            .to_owned();
        let again = get(srv.addr(), path, &format!("If-None-Match: {tag}\r\n"));
        assert_eq!(again.status, 304, "{path}");
        assert_eq!(again.header("Cache-Control"), Some("public, no-cache"));
        assert_eq!(again.header("ETag"), Some(tag.as_str()));
    }
}

fn private_registries_keep_shared_caches_out() {
    let s = Sandbox::new();
    s.palletizer_ok(&["init", "--url", "http://127.0.0.1:1", "--access", "private"]);
    add(&s, "leaf", "0.1.0");
    s.palletizer_ok(&["user", "add", "reader"]);
    let token = s
        .palletizer_ok(&["token", "create", "--user", "reader", "--scope", "read"])
        .trim()
        .to_owned();
    let srv = s.serve(&[]);
    let auth = format!("Authorization: {token}\r\n");
    let krate = get(srv.addr(), "/crates/leaf/leaf-0.1.0.crate", &auth);
    assert_eq!(krate.status, 200);
    assert_eq!(
        krate.header("Cache-Control"),
        Some("private, max-age=31536000, immutable")
    );
    let index = get(srv.addr(), "/index/le/af/leaf", &auth);
    assert_eq!(index.status, 200);
    assert_eq!(index.header("Cache-Control"), Some("private, no-cache"));
}

/// nginx in the foreground, stopped on drop.
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The caching proxy of the README's deployment section: crate files kept as palletizer's
/// headers say (a year), index files kept a second and then revalidated, and anything
/// kept served when palletizer cannot be reached.
fn nginx(dir: &Path, listen: u16, upstream: &str) -> Nginx {
    let d = dir.display();
    let conf = format!(
        r#"daemon off; master_process off; pid {d}/nginx.pid; error_log {d}/error.log warn;
events {{}}
http {{
  log_format cache '$request $status $upstream_cache_status';
  access_log {d}/access.log cache;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  proxy_cache_path {d}/cache keys_zone=registry:1m max_size=100m;
  server {{
    listen 127.0.0.1:{listen};
    proxy_cache registry;
    proxy_cache_revalidate on;
    proxy_cache_use_stale error timeout http_502 http_503 http_504;
    proxy_no_cache $http_authorization;
    proxy_cache_bypass $http_authorization;
    location /index/ {{
      proxy_pass http://{upstream};
      proxy_ignore_headers Cache-Control;
      proxy_cache_valid 200 1s;
    }}
    location / {{
      proxy_pass http://{upstream};
    }}
  }}
}}
"#
    );
    fs::create_dir_all(dir).unwrap();
    let path = dir.join("nginx.conf");
    fs::write(&path, conf).unwrap();
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&path)
        .arg("-e")
        .arg(dir.join("error.log"))
        .spawn()
        .unwrap_or_else(|e| panic!("running nginx: {e}"));
    let nginx = Nginx(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", listen)).is_err() {
        assert!(std::time::Instant::now() < deadline, "nginx did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    nginx
}

fn cargo_resolves_through_a_caching_proxy_that_outlives_the_registry() {
    let s = Sandbox::new();
    let port = free_port();
    s.palletizer_ok(&[
        "init",
        "--url",
        &format!("http://127.0.0.1:{port}"),
        "--access",
        "open",
    ]);
    let config = format!(
        "[registries.local]\nindex = \"sparse+http://127.0.0.1:{port}/index/\"\n[net]\nretry = 0\n"
    );
    s.cargo_config(&config);
    for file in [s.package("leaf", Some("0.1.0")), s.package("ab", None)] {
        s.palletizer_ok(&["add", file.to_str().unwrap()]);
    }
    let mut srv = s.serve(&[]);
    let proxy_dir = s.path().join("nginx");
    let _nginx = nginx(&proxy_dir, port, srv.addr());
    let app = s.consumer();
    assert!(s.cargo_ok(&app, &["run", "-q"]).contains("leaf 0.1.0 ab"));
    let served = srv.log().len();
    assert!(served > 0, "the requests went through to palletizer");

    // A new publish shows through the proxy on the next resolve (once the second the proxy
    // keeps index files has passed).
    // (`cargo package` may itself have read leaf's index file through the proxy a moment
    // before, and nginx counts the second in whole seconds: resolve until it shows, and fail
    // only if it never does.)
    s.palletizer_ok(&["add", s.package("leaf", Some("0.1.1")).to_str().unwrap()]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        std::thread::sleep(Duration::from_millis(1100));
        s.cargo_ok(&app, &["update"]);
        let lock = fs::read_to_string(app.join("Cargo.lock")).unwrap();
        if lock.contains("name = \"leaf\"\nversion = \"0.1.1\"") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new publish never showed through the proxy:\n{lock}"
        );
    }
    s.cargo_ok(&app, &["fetch"]);

    // With palletizer gone, a machine that never fetched anything still gets the locked
    // crates: index files and crate files come from the proxy's cache.
    srv.signal(libc::SIGKILL);
    srv.wait_exit(20).expect("palletizer stopped");
    // Past the second the proxy keeps index files: it has to ask, finds no one, and serves
    // what it kept.
    std::thread::sleep(Duration::from_millis(1500));
    let before = fs::read_to_string(proxy_dir.join("access.log"))
        .unwrap()
        .lines()
        .count();
    let fresh_home = s.path().join("fresh-home");
    fs::create_dir_all(&fresh_home).unwrap();
    fs::write(fresh_home.join("config.toml"), &config).unwrap();
    let out = s
        .cargo_cmd(&app, &["fetch", "--locked"])
        .env("CARGO_HOME", &fresh_home)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert!(fresh_home
        .join("registry/cache")
        .read_dir()
        .unwrap()
        .flatten()
        .any(|d| d.path().join("leaf-0.1.1.crate").exists()));
    // Everything the fresh machine got came from the proxy's cache: crate files as kept,
    // index files kept past their second (STALE: the proxy asked and found no one).
    let log = fs::read_to_string(proxy_dir.join("access.log")).unwrap();
    let after: Vec<&str> = log.lines().skip(before).collect();
    assert!(
        after
            .iter()
            .any(|l| l.contains("/crates/leaf/leaf-0.1.1.crate") && l.ends_with(" 200 HIT")),
        "{log}"
    );
    assert!(
        after.iter().any(|l| l.contains("/index/le/af/leaf HTTP")),
        "{log}"
    );
    assert!(
        after
            .iter()
            .all(|l| l.ends_with(" 200 HIT") || l.ends_with(" 200 STALE")),
        "{log}"
    );
}
