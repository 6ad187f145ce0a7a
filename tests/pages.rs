//! The pages in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`) opens the home page, a search and a crate page with a README,
//! dependencies and a yanked version, and checks the DOM after scripts would have run; in
//! a private registry the login form is filled in through chromedriver's WebDriver API.
//!
//! Without `chromium` or `chromedriver` on `PATH` the browser test is reported as ignored
//! with the reason, except under `CI=true`, where it fails (tests/support/harness.rs).
//! `PALLETIZER_SCREENSHOTS=DIR` keeps the screenshots (the README's come from there).

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use palletizer::registry::testing::{crate_bytes, file, publish_body};
use support::browser::{browser, dom, screenshot, Driver, DEADLINE};
use support::{get_bytes, raw_publish, read_one, Sandbox};

support::harness::tests!(
    browser_reads_home_search_and_crate_pages_and_logs_in_when_private[Chromium],
    home_page_follows_publishes_and_yanks_between_views,
);

/// Publishes `name` `vers` with cargo's metadata (description, README, deps) over HTTP.
fn publish(addr: &str, token: &str, name: &str, vers: &str, extra: serde_json::Value) {
    let manifest =
        format!("[package]\nname = \"{name}\"\nversion = \"{vers}\"\nedition = \"2021\"\n");
    let top = format!("{name}-{vers}");
    let (m, l) = (format!("{top}/Cargo.toml"), format!("{top}/src/lib.rs"));
    let krate = crate_bytes(&[file(&m, manifest.as_bytes()), file(&l, b"")]);
    let mut meta = serde_json::json!({
        "name": name, "vers": vers, "deps": [], "features": {}, "authors": [],
        "description": "a test crate", "documentation": null, "homepage": null, "readme": null,
        "readme_file": null, "keywords": [], "categories": [], "license": "MIT",
        "license_file": null, "repository": null, "badges": {}, "links": null,
        "rust_version": null
    });
    for (k, v) in extra.as_object().unwrap() {
        meta[k] = v.clone();
    }
    let json = serde_json::to_vec(&meta).unwrap();
    let (status, body) = raw_publish(addr, token, &publish_body(&json, &krate));
    assert_eq!(status, 200, "publish {name} {vers}: {body}");
}

fn yank(addr: &str, token: &str, name: &str, vers: &str) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        c,
        "DELETE /api/v1/crates/{name}/{vers}/yank HTTP/1.1\r\nHost: localhost\r\nAuthorization: {token}\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    assert_eq!(read_one(&mut c).0, 200);
}

fn browser_reads_home_search_and_crate_pages_and_logs_in_when_private() {
    let (chromium_bin, driver_bin) = browser();
    let s = Sandbox::new();
    let server = s.serve(&[]);
    let addr = server.addr().to_owned();
    let token = s.token();
    let evil = "<script>document.title='pwned'</script>";
    publish(
        &addr,
        &token,
        "pallet-base",
        "0.1.0",
        serde_json::json!({"description": "Shared pieces for pallets"}),
    );
    publish(
        &addr,
        &token,
        "pallet-app",
        "1.0.0",
        serde_json::json!({
            "description": format!("Moves pallets {evil}"),
            "readme": format!("# Pallet app\n\nMoves **pallets** around.\n\n{evil}\n\n\
        <img src=\"https://example.invalid/x.png\" onerror=\"document.title='pwned'\">\n"),
            "readme_file": "README.md",
            "repository": "https://git.example/pallet-app",
            "rust_version": "1.70",
            "features": {"default": ["fast"], "fast": []},
            "deps": [{"name": "pallet-base", "version_req": "^0.1", "features": [],
                      "optional": false, "default_features": true, "target": null,
                      "kind": "normal"}]
        }),
    );
    publish(
        &addr,
        &token,
        "pallet-app",
        "1.1.0",
        serde_json::json!({"description": "Moves pallets"}),
    );
    yank(&addr, &token, "pallet-app", "1.1.0");

    let tmp = tempfile::tempdir().unwrap();
    let profile = tmp.path().join("profile");
    let base = format!("http://{addr}");

    let home = dom(&chromium_bin, &profile, &format!("{base}/"));
    assert!(home.contains("<title>Palletizer</title>"), "{home}");
    assert!(home.contains("Newest crates"), "{home}");
    assert!(home.contains("href=\"/crates/pallet-app\""), "{home}");
    assert!(home.contains(&format!("sparse+{base}/index/")), "{home}");
    assert!(
        home.contains("<input id=\"q\" type=\"search\" name=\"q\">"),
        "{home}"
    );

    let found = dom(&chromium_bin, &profile, &format!("{base}/search?q=pallet"));
    assert!(found.contains("2 crates found"), "{found}");
    let app_at = found
        .find("href=\"/crates/pallet-app\"")
        .expect("app in the results");
    let base_at = found
        .find("href=\"/crates/pallet-base\"")
        .expect("base in the results");
    assert!(app_at < base_at, "ranked by name like cargo search");

    let page = dom(
        &chromium_bin,
        &profile,
        &format!("{base}/crates/pallet-app"),
    );
    // The README's script never ran (it would have set the title), nor is it in the DOM.
    assert!(
        page.contains("<title>pallet-app 1.0.0: Palletizer</title>"),
        "{page}"
    );
    assert!(!page.contains("pwned</title>"), "{page}");
    assert!(!page.contains("<script"), "{page}");
    assert!(!page.contains("onerror"), "{page}");
    assert!(page.contains("<h1>Pallet app</h1>"), "{page}");
    assert!(
        page.contains("Moves <strong>pallets</strong> around."),
        "{page}"
    );
    assert!(page.contains("Moves pallets &lt;script&gt;"), "{page}");
    assert!(
        page.contains("<a href=\"/crates/pallet-base\">pallet-base</a>"),
        "{page}"
    );
    assert!(
        page.contains(
            "<a href=\"/crates/pallet-app/1.1.0\">1.1.0</a> <span class=\"yanked\">yanked</span>"
        ),
        "{page}"
    );
    assert!(
        page.contains("cargo add pallet-app --registry palletizer"),
        "{page}"
    );
    assert!(page.contains("pallet-app = { version = \"1.0.0\", registry = \"palletizer\" }"));
    assert!(page.contains("1.70 or newer"), "{page}");
    let yanked = dom(
        &chromium_bin,
        &profile,
        &format!("{base}/crates/pallet-app/1.1.0"),
    );
    assert!(
        yanked.contains("1.1.0</span> <span class=\"yanked\">yanked</span></h1>"),
        "{yanked}"
    );

    screenshot(
        &chromium_bin,
        &profile,
        &format!("{base}/"),
        &tmp.path().join("home.png"),
    );
    screenshot(
        &chromium_bin,
        &profile,
        &format!("{base}/crates/pallet-app"),
        &tmp.path().join("crate.png"),
    );

    // Private: a page asks for a token; the form logs in and the page loads.
    s.palletizer_ok(&["access", "private"]);
    let start = Instant::now();
    while get_bytes(&addr, "/").unwrap().0 != 401 {
        assert!(
            start.elapsed() < DEADLINE,
            "the server never turned private"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let driver = Driver::start(&driver_bin, &chromium_bin, &tmp.path().join("wd-profile"));
    driver.go(&format!("{base}/crates/pallet-app"));
    assert_eq!(driver.get("title"), "Log in: Palletizer");
    assert!(driver.get("source").contains("name=\"token\""));
    driver.type_into("#token", "not-a-token");
    driver.click("form[method=post] button[type=submit]");
    driver.wait_until("a refused token is said so", |d| {
        d.get("source").contains("role=\"alert\"")
    });
    // A token that can publish never goes into a cookie: the form says how to make a
    // read token.
    driver.go(&format!("{base}/crates/pallet-app"));
    driver.type_into("#token", &token);
    driver.click("form[method=post] button[type=submit]");
    driver.wait_until("a write token is refused at the form", |d| {
        d.get("source")
            .contains("a browser keeps only a read token")
    });
    let read = s.palletizer_ok(&["token", "create", "--user", "admin", "--scope", "read"]);
    // A fresh form for the right token.
    driver.go(&format!("{base}/crates/pallet-app"));
    assert_eq!(driver.get("title"), "Log in: Palletizer");
    driver.type_into("#token", read.trim());
    driver.click("form[method=post] button[type=submit]");
    // The login form was shown at the crate page's own URL, so the URL alone cannot tell
    // that the form's answer (a redirect back here) has arrived: the page's title can.
    driver.wait_until("the login returns to the crate page", |d| {
        d.get("title") == "pallet-app 1.0.0: Palletizer"
    });
    assert_eq!(driver.get("url"), format!("{base}/crates/pallet-app"));
    assert!(driver.get("source").contains("<h1>Pallet app</h1>"));
    // The session reads other pages too; logging out ends it.
    driver.go(&format!("{base}/search?q=base"));
    assert!(driver.get("source").contains("1 crate found"));
    // Logging out is the header's button (a POST); visiting /logout only shows it.
    driver.go(&format!("{base}/logout"));
    assert_eq!(driver.get("title"), "Log out: Palletizer");
    driver.go(&format!("{base}/crates/pallet-app"));
    assert_eq!(driver.get("title"), "pallet-app 1.0.0: Palletizer");
    driver.click("form.out button[type=submit]");
    driver.wait_until("logout shows the login page", |d| {
        d.get("title") == "Log in: Palletizer"
    });
    driver.go(&format!("{base}/crates/pallet-app"));
    assert_eq!(driver.get("title"), "Log in: Palletizer");
}

/// The home page keeps its list between views; a publish and a yank of every version must
/// show on the next view.
fn home_page_follows_publishes_and_yanks_between_views() {
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    let token = s.token();
    let home = || {
        let (st, body) = support::get_bytes(srv.addr(), "/").unwrap();
        assert_eq!(st, 200);
        String::from_utf8(body).unwrap()
    };
    publish(
        srv.addr(),
        &token,
        "first-crate",
        "1.0.0",
        serde_json::json!({}),
    );
    assert!(home().contains("first-crate"));
    let page = home();
    assert!(!page.contains("second-crate"), "{page}");
    publish(
        srv.addr(),
        &token,
        "second-crate",
        "1.0.0",
        serde_json::json!({}),
    );
    let page = home();
    assert!(page.contains("second-crate"), "a new publish shows: {page}");
    yank(srv.addr(), &token, "second-crate", "1.0.0");
    let page = home();
    assert!(
        !page.contains("second-crate"),
        "a fully yanked crate drops out: {page}"
    );
    assert!(page.contains("first-crate"));
}
