//! Requests are for this registry or for nobody: a Host (or an absolute-form target) that
//! is not the registry's own authority gets 421 in every mode (a DNS rebinding reaches a
//! loopback registry under the attacker's name), and a state-changing request from another
//! site's page (a foreign `Origin`) gets 403. Shown with raw requests and with the real
//! cargo, which sends absolute-form requests through an HTTP proxy: pointed at the server
//! as its proxy, cargo asks for whatever authority its index URL names.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use palletizer::registry::testing::{publish_body, simple_crate};
use support::{meta, Sandbox};

fn send(addr: &str, raw: &[u8]) -> (u16, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(raw).unwrap();
    let mut text = String::new();
    let _ = c.read_to_string(&mut text);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

fn get(addr: &str, target: &str, host: &str) -> u16 {
    let raw = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    send(addr, raw.as_bytes()).0
}

#[test]
fn only_the_registry_s_own_authority_is_served() {
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    let addr = srv.addr();
    for own in [addr, "localhost", "127.0.0.1:1"] {
        assert_eq!(get(addr, "/index/config.json", own), 200, "{own}");
    }
    let port = addr.rsplit_once(':').unwrap().1;
    for foreign in [
        "attacker.example".to_owned(),
        format!("attacker.example:{port}"),
    ] {
        let foreign = foreign.as_str();
        assert_eq!(get(addr, "/index/config.json", foreign), 421, "{foreign}");
        assert_eq!(get(addr, "/api/v1/crates?q=x", foreign), 421, "{foreign}");
    }
    // Absolute-form targets (RFC 9112 3.2.2): the target's authority counts, not Host's.
    let own = format!("http://{addr}/index/config.json");
    assert_eq!(get(addr, &own, "attacker.example"), 200);
    assert_eq!(
        get(addr, "http://attacker.example/index/config.json", addr),
        421
    );

    // A publish with a good token over a foreign Host, or from another site's page.
    let crate_bytes = simple_crate("rebound", "1.0.0", &[]);
    let body = publish_body(
        &meta("rebound", "1.0.0", serde_json::json!([])),
        &crate_bytes,
    );
    for (host, origin, want) in [
        ("attacker.example", None, 421),
        (addr, Some("https://evil.example"), 403),
        (addr, Some("null"), 403),
    ] {
        let mut raw = format!(
            "PUT /api/v1/crates/new HTTP/1.1\r\nHost: {host}\r\nAuthorization: {}\r\n\
             Content-Length: {}\r\nConnection: close\r\n",
            s.token(),
            body.len()
        );
        if let Some(o) = origin {
            raw.push_str(&format!("Origin: {o}\r\n"));
        }
        raw.push_str("\r\n");
        let mut bytes = raw.into_bytes();
        bytes.extend_from_slice(&body);
        let (status, answer) = send(addr, &bytes);
        assert_eq!(status, want, "{host} {origin:?}: {answer}");
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert!(v["errors"][0]["detail"].as_str().is_some(), "{answer}");
    }
    assert_eq!(
        get(addr, "/index/re/bo/rebound", addr),
        404,
        "nothing was published"
    );
    // The login form from another site's page.
    let form = "token=x";
    let raw = format!(
        "POST /login HTTP/1.1\r\nHost: {addr}\r\nOrigin: https://evil.example\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    );
    assert_eq!(send(addr, raw.as_bytes()).0, 403);
}

#[test]
fn cargo_through_a_rebinding_name_is_refused_and_through_the_own_name_served() {
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    // cargo sends every request to the server as its proxy, in absolute form, for the
    // authority in the index URL.
    let proxy = format!("http://{}", srv.addr());
    let dir = s.test_crate("leaf", None);
    let publish = |index: &str| {
        s.cargo_config(&format!(
            "[registries.local]\nindex = \"{index}\"\n[net]\nretry = 0\n[http]\nproxy = \"{proxy}\"\n"
        ));
        s.cargo_cmd(
            &dir,
            &[
                "publish",
                "--registry",
                "local",
                "--allow-dirty",
                "--no-verify",
            ],
        )
        .env("CARGO_REGISTRIES_LOCAL_TOKEN", s.token())
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .unwrap()
    };
    let out = publish("sparse+http://attacker.example/index/");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("421") && err.contains("does not serve"),
        "{err}"
    );
    let out = publish(&format!("sparse+{}/index/", srv.url()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(get(srv.addr(), "/index/le/af/leaf", srv.addr()), 200);
}
