//! Hostile clients against a running server: a burst of connections while the loop is
//! stopped, a full table of keep-alive hogs or slowloris sockets, request smuggling through
//! bodies nobody reads, and uploads beyond the spool cap. Each test fails without the fix
//! it is named after.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::{raise_nofile, send_until_close, split_responses, Sandbox};

/// How long anything may take before the test calls it "never".
const NEVER: Duration = Duration::from_secs(30);
const CONFIG_GET: &[u8] = b"GET /index/config.json HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// Reads one response's status line and headers, then its `Content-Length` body; `None`
/// if the connection ends or `until` passes first.
fn read_one(c: &mut TcpStream, until: Instant) -> Option<u16> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        c.set_read_timeout(Some(left)).unwrap();
        match c.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(_)) = r.parse(&buf) {
            return r.code;
        }
    }
}

#[test]
fn accept_drains_the_backlog_after_a_stall() {
    raise_nofile(4096);
    let s = Sandbox::new();
    let srv = s.serve(&["-q"]);
    srv.signal(libc::SIGSTOP);
    let conns: Vec<TcpStream> = (0..300)
        .map(|_| {
            TcpStream::connect_timeout(&srv.addr().parse().unwrap(), NEVER)
                .expect("the kernel queues the connection")
        })
        .collect();
    srv.signal(libc::SIGCONT);
    let until = Instant::now() + NEVER;
    let mut unanswered = 0;
    for mut c in conns {
        c.write_all(CONFIG_GET).unwrap();
        if read_one(&mut c, until) != Some(200) {
            unanswered += 1;
        }
    }
    assert_eq!(
        unanswered, 0,
        "connections made while the server was stopped"
    );
}

/// What each attacking socket does.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Attack {
    /// A whole request every few seconds on a kept-alive connection.
    KeepAliveHog,
    /// A request head one byte a second, never finished.
    Slowloris,
}

/// `n` attacking sockets over a few threads; each reconnects when the server closes it.
struct Swarm {
    stop: Arc<AtomicBool>,
    live: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

impl Swarm {
    fn start(addr: SocketAddr, n: usize, attack: Attack) -> Swarm {
        let stop = Arc::new(AtomicBool::new(false));
        let live = Arc::new(AtomicUsize::new(0));
        let per_thread = 110;
        let threads = (0..n.div_ceil(per_thread))
            .map(|t| {
                let count = per_thread.min(n - t * per_thread);
                let (stop, live) = (stop.clone(), live.clone());
                std::thread::spawn(move || attacker(addr, count, attack, &stop, &live))
            })
            .collect();
        Swarm {
            stop,
            live,
            threads,
        }
    }

    /// Waits until every socket connected once (bounded).
    fn wait_connected(&self, n: usize) {
        let until = Instant::now() + NEVER;
        while self.live.load(Ordering::Relaxed) < n && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            self.live.load(Ordering::Relaxed) >= n,
            "the swarm could not connect"
        );
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn attacker(addr: SocketAddr, n: usize, attack: Attack, stop: &AtomicBool, live: &AtomicUsize) {
    let period = match attack {
        Attack::KeepAliveHog => Duration::from_secs(3),
        Attack::Slowloris => Duration::from_secs(1),
    };
    let mut socks: Vec<Option<(TcpStream, Instant)>> = (0..n).map(|_| None).collect();
    let mut ever = vec![false; n];
    let mut buf = [0u8; 4096];
    // Bounded: the test stops the swarm, and no test runs longer than a few minutes.
    let end = Instant::now() + Duration::from_secs(300);
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        for (i, slot) in socks.iter_mut().enumerate() {
            if slot.is_none() {
                let Ok(mut c) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
                    continue;
                };
                let first: &[u8] = match attack {
                    Attack::KeepAliveHog => CONFIG_GET,
                    Attack::Slowloris => b"GET /index/config.json HTTP/1.1\r\nX-a: ",
                };
                if c.write_all(first).is_err() || c.set_nonblocking(true).is_err() {
                    continue;
                }
                if !ever[i] {
                    ever[i] = true;
                    live.fetch_add(1, Ordering::Relaxed);
                }
                // Spread the sockets' sends over the period.
                let offset = period.mul_f64(i as f64 / n as f64);
                *slot = Some((c, Instant::now() + offset));
                continue;
            }
            let (c, next) = slot.as_mut().unwrap();
            let gone = loop {
                match c.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(_) => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                    Err(_) => break true,
                }
            };
            if !gone && Instant::now() >= *next {
                *next += period;
                let bytes: &[u8] = match attack {
                    Attack::KeepAliveHog => CONFIG_GET,
                    Attack::Slowloris => b"x",
                };
                if c.write_all(bytes).is_ok() {
                    continue;
                }
                *slot = None;
            } else if gone {
                *slot = None;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// With `attack` filling the table, new clients are answered: the waits are printed, and a
/// probe fails only if it is never answered. Timeouts are a minute long, so only the
/// server making room explains an answer within the deadline.
fn new_clients_are_served_under(attack: Attack) {
    raise_nofile(8192);
    let s = Sandbox::new();
    let cfg = s.server_config(
        "max-connections = 1024\nhead-timeout-ms = 60000\nidle-timeout-ms = 60000\nio-timeout-ms = 60000",
    );
    let srv = s.serve(&[cfg.to_str().unwrap(), "-q"]);
    let addr: SocketAddr = srv.addr().parse().unwrap();
    let swarm = Swarm::start(addr, 1100, attack);
    swarm.wait_connected(1100);
    // Let the swarm settle into its rhythm.
    std::thread::sleep(Duration::from_secs(2));
    let mut waits = Vec::new();
    for probe in 0..5 {
        let start = Instant::now();
        let until = start + NEVER;
        let mut c = TcpStream::connect_timeout(&addr, NEVER).expect("probe connects");
        c.write_all(CONFIG_GET).unwrap();
        let status = read_one(&mut c, until);
        let wait = start.elapsed();
        assert_eq!(
            status,
            Some(200),
            "{attack:?}: probe {probe} not answered within {NEVER:?}"
        );
        waits.push(wait);
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(swarm);
    let ms: Vec<String> = waits
        .iter()
        .map(|w| format!("{:.0}", w.as_secs_f64() * 1000.0))
        .collect();
    eprintln!(
        "{attack:?} x1100, head/idle timeouts 60 s: probe waits (ms): {}",
        ms.join(", ")
    );
}

#[test]
fn a_full_table_of_keep_alive_hogs_reclaims_idle_connections() {
    new_clients_are_served_under(Attack::KeepAliveHog);
}

#[test]
fn a_full_table_of_slowloris_sockets_shortens_the_head_timeout() {
    new_clients_are_served_under(Attack::Slowloris);
}

#[test]
fn a_body_on_a_worker_route_is_never_a_request() {
    let s = Sandbox::new();
    let srv = s.serve(&["-q"]);
    let smuggled = CONFIG_GET;
    assert_eq!(smuggled.len(), 52);
    let last = b"GET /index/3/n/nop HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    for route in [
        "/api/v1/crates?q=x",
        "/index/info/refs?service=git-upload-pack",
    ] {
        let raw = [
            format!("GET {route} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 52\r\n\r\n")
                .as_bytes(),
            smuggled,
            last,
        ]
        .concat();
        let out = send_until_close(srv.addr(), &raw);
        let statuses: Vec<u16> = split_responses(&out, &[])
            .iter()
            .map(|r| r.status)
            .collect();
        assert_eq!(statuses, [200, 404], "{route}: the body was answered");
    }
}

#[test]
fn head_on_a_worker_route_sends_no_body() {
    let s = Sandbox::new();
    let srv = s.serve(&["-q"]);
    let raw = b"HEAD /index/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: localhost\r\n\r\n\
GET /index/3/n/nop HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let out = send_until_close(srv.addr(), raw);
    let rs = split_responses(&out, &[0]);
    assert_eq!(rs.len(), 2, "{:?}", String::from_utf8_lossy(&out));
    assert_eq!(rs[0].status, 200);
    assert!(
        rs[0]
            .header("content-length")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert_eq!(rs[1].status, 404, "the HEAD answer carried a body");
}

#[test]
fn content_length_with_a_sign_and_http11_without_host_are_refused() {
    let s = Sandbox::new();
    let srv = s.serve(&["-q"]);
    for raw in [
        &b"GET /index/config.json HTTP/1.1\r\nHost: localhost\r\nContent-Length: +5\r\n\r\nhello"[..],
        b"GET /index/config.json HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0x5\r\n\r\nhello",
        b"GET /index/config.json HTTP/1.1\r\n\r\n",
        b"GET /index/config.json HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ] {
        let out = send_until_close(srv.addr(), raw);
        let rs = split_responses(&out, &[]);
        assert_eq!(rs.len(), 1, "{:?}", String::from_utf8_lossy(raw));
        assert_eq!(rs[0].status, 400, "{:?}", String::from_utf8_lossy(raw));
        assert_eq!(rs[0].header("connection"), Some("close"));
    }
    let out = send_until_close(srv.addr(), b"GET /index/config.json HTTP/1.0\r\n\r\n");
    assert_eq!(
        split_responses(&out, &[])[0].status,
        200,
        "HTTP/1.0 needs no Host"
    );
}

/// Starts a publish of `len` bytes that waits for `100 Continue`; returns the connection
/// and the status of the server's first answer.
fn start_publish(addr: &str, token: &str, len: usize) -> (TcpStream, Vec<u8>) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(NEVER)).unwrap();
    c.write_all(
        format!(
            "PUT /api/v1/crates/new HTTP/1.1\r\nHost: localhost\r\nAuthorization: {token}\r\nContent-Length: {len}\r\nExpect: 100-continue\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let mut buf = vec![0u8; 25];
    c.read_exact(&mut buf).unwrap();
    (c, buf)
}

#[test]
fn uploads_beyond_the_spool_cap_wait_their_turn() {
    let s = Sandbox::new();
    let cfg = s.server_config("max-spool-bytes = 300000");
    let srv = s.serve(&[cfg.to_str().unwrap(), "-q"]);
    let (mut holder, first) = start_publish(srv.addr(), &s.token(), 200_000);
    assert_eq!(&first, b"HTTP/1.1 100 Continue\r\n\r\n");

    // A second upload would pass the cap: refused before its body, with a cargo error.
    let raw = format!(
        "PUT /api/v1/crates/new HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\nContent-Length: 200000\r\n\r\n",
        s.token()
    );
    let out = send_until_close(srv.addr(), &[raw.as_bytes(), &vec![b'x'; 200_000]].concat());
    let rs = split_responses(&out, &[]);
    assert_eq!(rs.len(), 1, "{:?}", String::from_utf8_lossy(&out));
    assert_eq!(rs[0].status, 503);
    assert!(rs[0].header("retry-after").is_some());
    let body: serde_json::Value = serde_json::from_slice(&rs[0].body).unwrap();
    assert_eq!(
        body["errors"][0]["detail"],
        "the registry is busy with other uploads; try again"
    );

    // The holder's upload finishes (a bad crate: 400 from the worker); its share is free.
    holder.write_all(&vec![0u8; 200_000]).unwrap();
    assert_eq!(read_one(&mut holder, Instant::now() + NEVER), Some(400));
    let (second, first) = start_publish(srv.addr(), &s.token(), 200_000);
    assert_eq!(
        &first, b"HTTP/1.1 100 Continue\r\n\r\n",
        "released after the job"
    );

    // An upload abandoned halfway gives its share back too.
    drop(second);
    let until = Instant::now() + NEVER;
    loop {
        let (_c, first) = start_publish(srv.addr(), &s.token(), 200_000);
        if &first == b"HTTP/1.1 100 Continue\r\n\r\n" {
            break;
        }
        assert!(
            Instant::now() < until,
            "the abandoned upload kept its share"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
