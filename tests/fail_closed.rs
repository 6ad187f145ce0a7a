//! A hand edit that leaves `auth.json` broken must not keep the tokens it meant to revoke
//! working: while the file does not parse, every request that needs a token gets a 503
//! that names the file, reads that need none go on, `/metrics` says so, and once the file is
//! mended everything works again.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::Sandbox;

fn request(addr: &str, raw: &str) -> (u16, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(raw.as_bytes()).unwrap();
    let mut text = String::new();
    let _ = c.read_to_string(&mut text);
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// `DELETE .../yank` of a crate that does not exist: 404 with a good token, so a 503 can
/// only come from the access check.
fn yank(addr: &str, token: &str) -> (u16, String) {
    request(
        addr,
        &format!(
            "DELETE /api/v1/crates/nope/1.0.0/yank HTTP/1.1\r\nHost: localhost\r\n\
             Authorization: {token}\r\nConnection: close\r\n\r\n"
        ),
    )
}

fn broken_gauge(metrics: &str) -> Option<String> {
    let (_, body) = request(
        metrics,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    body.lines()
        .find_map(|l| l.strip_prefix("palletizer_access_control_broken "))
        .map(str::to_owned)
}

/// Waits (bounded) until `f` holds: the server sees hand edits through inotify at once,
/// or within its half-second poll.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_broken_auth_json_refuses_every_token_until_it_is_mended() {
    let s = Sandbox::new();
    drop(s.serve(&[]));
    let token = s.token();
    let cfg = s.path().join("server.toml");
    fs::write(
        &cfg,
        format!(
            "registry = \"{}\"\n[[listener]]\nbind = \"127.0.0.1:0\"\n\n\
             [[listener]]\nbind = \"127.0.0.1:0\"\nmetrics = true\n",
            s.reg().display()
        ),
    )
    .unwrap();
    let srv = s.serve(&[cfg.to_str().unwrap()]);
    let (addr, metrics) = (srv.addrs[0].as_str(), srv.addrs[1].as_str());
    assert_eq!(yank(addr, &token).0, 404);
    assert_eq!(broken_gauge(metrics).as_deref(), Some("0"));

    // The edit that meant to revoke the token leaves the file broken.
    let auth = s.reg().join("auth.json");
    let good = fs::read_to_string(&auth).unwrap();
    fs::write(&auth, &good[..good.len() / 2]).unwrap();
    eventually("the token is refused", || yank(addr, &token).0 == 503);
    let (_, body) = yank(addr, &token);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let detail = v["errors"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("auth.json"), "{detail}");
    assert_eq!(broken_gauge(metrics).as_deref(), Some("1"));
    assert!(
        srv.log()
            .iter()
            .any(|l| l.contains("access control files do not load") && l.contains("auth.json")),
        "{:?}",
        srv.log()
    );
    // Reads that need no token (public mode) go on.
    let (status, _) = request(
        addr,
        "GET /index/config.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);

    fs::write(&auth, &good).unwrap();
    eventually("the token works again", || yank(addr, &token).0 == 404);
    assert_eq!(broken_gauge(metrics).as_deref(), Some("0"));
}
