//! Docs in a real browser: a small crate with a dependency from the registry is documented
//! with the real `cargo doc --no-deps`, uploaded over HTTP with a token, and opened in
//! headless Chromium (through chromedriver): the page renders, rustdoc's search finds an
//! item, `latest` redirects, the crate page links the docs; every docs response carries the
//! sandbox policy, and a script planted in the uploaded docs that tries to read the
//! registry's crate page with the reader's login cookie gets nothing; in a private registry
//! the docs open with the login cookie and their search still works.
//!
//! Without `chromium` or `chromedriver` on `PATH` the test is reported as ignored with the
//! reason, except under `CI=true`, where it fails (tests/support/harness.rs).

mod support;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use support::browser::{browser, Driver};
use support::{put_docs, send_until_close, show, split_responses, Sandbox};

support::harness::tests!(cargo_doc_output_is_served_searchable_and_sandboxed[Chromium]);

/// A script a publisher could plant: it reads the registry's crate page with the reader's
/// credentials and the cookie, and says in the title what it got.
const EVIL: &str = r#"<!DOCTYPE html><html><head><title>evil</title></head><body><script>
let cookie;
try { cookie = "cookie " + document.cookie.length; } catch (e) { cookie = "no cookie"; }
fetch("/crates/pallet-docs", { credentials: "include" })
  .then(r => r.text())
  .then(t => { document.title = "read " + t.length + "; " + cookie; },
        e => { document.title = "blocked " + e.name + "; " + cookie; });
</script></body></html>"#;

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// The crate `pallet-docs` (documented) and its dependency `pallet-dep`, both published.
fn publish_crates(s: &Sandbox, token: &str) -> std::path::PathBuf {
    let dep = s.path().join("src/pallet-dep");
    write(
        &dep.join("Cargo.toml"),
        "[package]\nname = \"pallet-dep\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\
description = \"a dependency\"\nlicense = \"MIT\"\n",
    );
    write(
        &dep.join("src/lib.rs"),
        "/// How many pallets fit on a shelf.\npub fn shelf() -> u32 { 4 }\n",
    );
    let app = s.path().join("src/pallet-docs");
    write(
        &app.join("Cargo.toml"),
        "[package]\nname = \"pallet-docs\"\nversion = \"1.0.0\"\nedition = \"2021\"\n\
description = \"documented pallets\"\nlicense = \"MIT\"\n\n[dependencies]\n\
pallet-dep = { version = \"0.1\", registry = \"local\" }\n",
    );
    write(
        &app.join("src/lib.rs"),
        "//! Pallets, documented.\n\n/// A widget that stacks pallets.\npub struct PalletWidget;\n\n\
/// Stacks pallets on shelves.\npub fn stack_pallets() -> u32 { pallet_dep::shelf() * 2 }\n",
    );
    let publish = [
        "publish",
        "--registry",
        "local",
        "--allow-dirty",
        "--no-verify",
    ];
    s.cargo_as(&dep, &publish, token);
    s.cargo_as(&app, &publish, token);
    app
}

fn cargo_doc_output_is_served_searchable_and_sandboxed() {
    let (chromium_bin, driver_bin) = browser();
    let s = Sandbox::new();
    let server = s.serve(&[]);
    let addr = server.addr().to_owned();
    let token = s.token();
    let base = format!("http://{addr}");
    s.cargo_config(&format!(
        "[registries.local]\nindex = \"sparse+{base}/index/\"\n"
    ));
    let app = publish_crates(&s, &token);

    let out = s.cargo(&app, &["doc", "--no-deps"]);
    assert!(out.status.success(), "cargo doc failed:\n{}", show(&out));
    let doc = s.path().join("target/doc");
    assert!(doc.join("pallet_docs/index.html").is_file());
    write(&doc.join("pallet_docs/evil.html"), EVIL);
    // What the README's CI step does: the contents of target/doc, gzipped.
    let archive = s.path().join("docs.tar.gz");
    let tar = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(&doc)
        .arg(".")
        .output()
        .unwrap();
    assert!(tar.status.success(), "{}", show(&tar));
    let archive = fs::read(&archive).unwrap();
    let (st, body) = put_docs(&addr, &token, "pallet-docs", "1.0.0", &archive);
    assert_eq!(st, 200, "{body}");

    let index = "/docs/pallet-docs/1.0.0/pallet_docs/index.html";
    let raw = format!("GET {index} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let r = split_responses(&send_until_close(&addr, raw.as_bytes()), &[]).remove(0);
    assert_eq!(r.status, 200);
    let csp = r.header("Content-Security-Policy").unwrap();
    assert!(csp.starts_with("sandbox allow-scripts"), "{csp}");
    assert!(!csp.contains("allow-same-origin"), "{csp}");

    let tmp = tempfile::tempdir().unwrap();
    let driver = Driver::start(&driver_bin, &chromium_bin, &tmp.path().join("profile"));
    // The page renders: rustdoc's title, the item list, the styles loaded.
    driver.go(&format!("{base}{index}"));
    driver.wait_until("the docs page renders", |d| {
        d.get("title").starts_with("pallet_docs")
    });
    let source = driver.get("source");
    assert!(source.contains("PalletWidget"), "{source}");
    assert!(source.contains("stack_pallets"), "{source}");
    // rustdoc's search, in the sandbox: its index loads and finds the function.
    driver.go(&format!("{base}{index}?search=stack_pallets"));
    driver.element("#search a[href*='fn.stack_pallets.html']");
    // `latest` is a redirect to the newest version with docs.
    driver.go(&format!("{base}/docs/pallet-docs/latest/"));
    driver.wait_until("latest redirects", |d| {
        d.get("url") == format!("{base}{index}")
    });
    // The crate page links the docs.
    driver.go(&format!("{base}/crates/pallet-docs"));
    driver.click("a.docs");
    driver.wait_until("the crate page's link opens the docs", |d| {
        d.get("url") == format!("{base}{index}")
    });

    // Private, logged in with a read token: the planted script reads nothing.
    s.palletizer_ok(&["access", "private"]);
    let start = Instant::now();
    while support::get_bytes(&addr, "/").unwrap().0 != 401 {
        assert!(start.elapsed() < Duration::from_secs(30), "never private");
        std::thread::sleep(Duration::from_millis(100));
    }
    let read = s.palletizer_ok(&["token", "create", "--user", "admin", "--scope", "read"]);
    driver.go(&format!("{base}/crates/pallet-docs"));
    driver.type_into("#token", read.trim());
    driver.click("form[method=post] button[type=submit]");
    driver.wait_until("logged in", |d| {
        d.get("title") == "pallet-docs 1.0.0: Palletizer"
    });
    // Logged in, the reader's own pages read the crate page: the script in the docs may not.
    driver.go(&format!(
        "{base}/docs/pallet-docs/1.0.0/pallet_docs/evil.html"
    ));
    driver.wait_until("the planted script ran", |d| d.get("title") != "evil");
    let title = driver.get("title");
    assert!(title.starts_with("blocked TypeError"), "{title}");
    assert!(title.ends_with("no cookie"), "{title}");
    // The docs open with the login cookie, and load what they need (their requests carry
    // no cookie: a read ticket in the path): the search works as before.
    driver.go(&format!("{base}{index}?search=stack_pallets"));
    driver.wait_until("the docs page renders when private", |d| {
        d.get("title").contains("pallet_docs") || d.get("title").contains("stack_pallets")
    });
    assert!(
        driver.get("url").starts_with(&format!("{base}/docs/~")),
        "{}",
        driver.get("url")
    );
    driver.element("#search a[href*='fn.stack_pallets.html']");
}
