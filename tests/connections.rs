//! Why connections end, as `/metrics` counts them: `palletizer_connections_closed_total`
//! by reason, for a client that sends nothing, garbage, asks to close, or goes away.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::Sandbox;

/// The value of `palletizer_connections_closed_total{reason="REASON"}` for each reason.
fn closed(metrics: &str) -> std::collections::HashMap<String, u64> {
    let mut c = TcpStream::connect(metrics).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("palletizer_connections_closed_total{reason=\""))
        .map(|l| {
            let (reason, rest) = l.split_once("\"} ").unwrap();
            (reason.to_owned(), rest.trim().parse().unwrap())
        })
        .collect()
}

/// Sends `bytes` (if any) and reads until the server closes the connection.
fn until_closed(addr: &str, bytes: &[u8]) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(bytes).unwrap();
    let mut sink = Vec::new();
    let _ = c.read_to_end(&mut sink);
}

#[test]
fn closed_connections_are_counted_by_why_they_ended() {
    let s = Sandbox::new();
    drop(s.serve(&[]));
    let cfg = s.path().join("server.toml");
    fs::write(
        &cfg,
        format!(
            "registry = \"{}\"\n[[listener]]\nbind = \"127.0.0.1:0\"\n\n\
             [[listener]]\nbind = \"127.0.0.1:0\"\nmetrics = true\n\n\
             [limits]\nhead-timeout-ms = 300\n",
            s.reg().display()
        ),
    )
    .unwrap();
    let srv = s.serve(&[cfg.to_str().unwrap()]);
    let (registry, metrics) = (srv.addrs[0].as_str(), srv.addrs[1].as_str());
    let before = closed(metrics);
    assert_eq!(before.len(), 12, "{before:?}");

    until_closed(registry, b"");
    until_closed(registry, b"\x01\x02 nonsense\r\n\r\n");
    until_closed(
        registry,
        b"GET /index/config.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    let mut kept = TcpStream::connect(registry).unwrap();
    kept.write_all(b"GET /index/config.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    assert!(kept.read(&mut buf).unwrap() > 0);
    drop(kept);

    // Every scrape counts as one answered connection once it closes; the close of the last
    // client is seen by the server a little later.
    let deadline = Instant::now() + Duration::from_secs(10);
    for scrapes in 1.. {
        let want = [
            ("timeout_head", 1),
            ("parse_error", 1),
            ("answered", 1 + scrapes),
            ("client_closed", 1),
        ];
        let after = closed(metrics);
        let grew = |r: &str| after[r] - before[r];
        let got: Vec<(&str, u64)> = want.iter().map(|&(r, _)| (r, grew(r))).collect();
        if got == want || Instant::now() > deadline {
            assert_eq!(got, want, "{after:?}");
            assert_eq!(grew("reclaimed") + grew("shutdown") + grew("io_error"), 0);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
