//! `GET /metrics` over loopback: counters move as requests, publishes and refusals happen
//! (scraped before and after), `promtool check metrics` accepts the text, and who may read
//! it: an admin's token on a registry listener, anyone on a listener marked
//! `metrics = true`, which serves nothing else.
//!
//! Both tests need `promtool`: without it they are reported as ignored with the reason,
//! except under `CI=true`, where they fail (tests/support/harness.rs).

mod support;

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use palletizer::registry::testing::{publish_body, simple_crate};
use support::{meta, raw_publish, read_one, self_signed, send_until_close, Sandbox};

support::harness::tests!(
    counters_move_with_requests_publishes_and_refusals[Promtool],
    a_metrics_listener_serves_metrics_without_a_token_and_nothing_else[Promtool],
);

/// One request on a new connection, with an optional `Authorization` value.
fn request(addr: &str, method: &str, path: &str, auth: Option<&str>) -> (u16, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = auth.map_or(String::new(), |t| format!("Authorization: {t}\r\n"));
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    read_one(&mut c)
}

/// Scrapes `/metrics` and parses every sample: `name{labels}` -> value.
fn scrape(addr: &str, auth: Option<&str>) -> (String, HashMap<String, f64>) {
    let (status, text) = request(addr, "GET", "/metrics", auth);
    assert_eq!(status, 200, "{text}");
    let samples = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect();
    (text, samples)
}

/// How much each series grew between two scrapes (0 for one that did not).
fn delta<'a>(
    before: &'a HashMap<String, f64>,
    after: &'a HashMap<String, f64>,
) -> impl Fn(&str) -> f64 + 'a {
    move |series| {
        let a = after
            .get(series)
            .unwrap_or_else(|| panic!("no series {series}"));
        a - before.get(series).copied().unwrap_or(0.0)
    }
}

/// `promtool check metrics` on the text (the tests that call it declare they need it).
fn promtool_accepts(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running promtool: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool refused the metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn counters_move_with_requests_publishes_and_refusals() {
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    let addr = srv.addr();
    let admin = s.token();

    // No token, and a wrong one: refused like any admin route.
    assert_eq!(request(addr, "GET", "/metrics", None).0, 401);
    assert_eq!(request(addr, "GET", "/metrics", Some("nope")).0, 401);

    let (text, before) = scrape(addr, Some(&admin));
    promtool_accepts(&text);

    assert_eq!(request(addr, "GET", "/index/config.json", None).0, 200);
    assert_eq!(request(addr, "GET", "/index/config.json", None).0, 200);
    assert_eq!(request(addr, "GET", "/index/no/ne/nonesuch", None).0, 404);
    let body = publish_body(
        &meta("metered", "1.0.0", serde_json::json!([])),
        &simple_crate("metered", "1.0.0", &[]),
    );
    assert_eq!(raw_publish(addr, &admin, &body).0, 200);
    assert_eq!(
        raw_publish(addr, &admin, &body).0,
        409,
        "the same version again"
    );
    assert_eq!(raw_publish(addr, "wrong-token", &body).0, 401);
    let download = "/crates/metered/metered-1.0.0.crate";
    assert_eq!(request(addr, "GET", download, None).0, 200);

    let (text, after) = scrape(addr, Some(&admin));
    promtool_accepts(&text);
    let d = delta(&before, &after);
    let req = |route: &str, status: &str| {
        d(&format!(
            "palletizer_http_requests_total{{route=\"{route}\",status=\"{status}\"}}"
        ))
    };
    assert_eq!(req("index", "2xx"), 2.0);
    assert_eq!(req("index", "4xx"), 1.0);
    assert_eq!(req("download", "2xx"), 1.0);
    assert_eq!(req("api_publish", "2xx"), 1.0);
    assert_eq!(req("api_publish", "4xx"), 2.0);
    // The first scrape, counted once its answer was out.
    assert_eq!(req("metrics", "2xx"), 1.0);
    assert_eq!(req("metrics", "4xx"), 0.0);
    assert_eq!(d("palletizer_publishes_accepted_total"), 1.0);
    let refused = |reason: &str| {
        d(&format!(
            "palletizer_publishes_refused_total{{reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(refused("conflict"), 1.0);
    assert_eq!(refused("unauthorized"), 1.0);
    assert_eq!(refused("invalid"), 0.0);
    // The worker timed both publishes that reached it (the 401 was the loop's).
    assert_eq!(d("palletizer_publish_duration_seconds_count"), 2.0);
    assert_eq!(d("palletizer_http_request_duration_seconds_count"), 8.0);
    assert!(d("palletizer_http_response_bytes_total{route=\"download\"}") > 100.0);
    assert_eq!(after["palletizer_worker_queue_depth"], 0.0);
    // Seven requests and this scrape, each on its own connection.
    assert_eq!(d("palletizer_connections_accepted_total"), 8.0);
    assert_eq!(
        after["palletizer_connections_open"], 1.0,
        "the scrape's own"
    );
    let index_opens = d("palletizer_open_file_cache_hits_total{tree=\"index\"}")
        + d("palletizer_open_file_cache_misses_total{tree=\"index\"}");
    assert!(index_opens >= 2.0, "{index_opens}");
    assert!(after["process_resident_memory_bytes"] > 100_000.0);
    assert!(after["process_open_fds"] >= 3.0);
}

fn a_metrics_listener_serves_metrics_without_a_token_and_nothing_else() {
    let s = Sandbox::new();
    // Created by a zero-config start, then served from a config file with two listeners.
    drop(s.serve(&[]));
    let (cert, key) = self_signed();
    fs::write(s.path().join("cert.pem"), cert).unwrap();
    fs::write(s.path().join("key.pem"), key).unwrap();
    let cfg = s.path().join("server.toml");
    fs::write(
        &cfg,
        format!(
            "registry = \"{}\"\n[[listener]]\nbind = \"127.0.0.1:0\"\n\n\
             [[listener]]\nbind = \"127.0.0.1:0\"\nmetrics = true\n\n\
             [[listener]]\nbind = \"127.0.0.1:0\"\n\
             tls = {{ private_key = \"key.pem\", certificate_chain = \"cert.pem\" }}\n",
            s.reg().display()
        ),
    )
    .unwrap();
    let srv = s.serve(&[cfg.to_str().unwrap()]);
    let (registry, metrics, tls) = (&srv.addrs[0], &srv.addrs[1], &srv.addrs[2]);

    // Plain HTTP to the TLS listener: a failed handshake, counted once the server closed it.
    let tls_failures = "palletizer_tls_handshake_failures_total";
    assert_eq!(scrape(metrics, None).1[tls_failures], 0.0);
    send_until_close(
        tls,
        b"GET /index/config.json HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    assert_eq!(scrape(metrics, None).1[tls_failures], 1.0);

    let (text, _) = scrape(metrics, None);
    promtool_accepts(&text);
    let head = send_until_close(
        metrics,
        b"HEAD /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "no body after a HEAD: {head}");
    for path in ["/index/config.json", "/api/v1/crates?q=x", "/login"] {
        assert_eq!(request(metrics, "GET", path, None).0, 404, "{path}");
    }
    assert_eq!(request(metrics, "POST", "/metrics", None).0, 405);
    // The registry's own listener still asks for an admin's token.
    assert_eq!(request(registry, "GET", "/metrics", None).0, 401);
    assert_eq!(request(registry, "GET", "/index/config.json", None).0, 200);
}
