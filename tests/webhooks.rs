//! Webhooks end to end, with a receiver in the test (a small HTTP server on loopback): every
//! event arrives signed, from the server's writes and the CLI's alike; a receiver that is
//! down while the server is killed and restarted gets every delivery once it is back; one
//! that accepts and never answers holds up no publish; bad settings are refused in one line.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palletizer::registry::testing::{publish_body, simple_crate};
use sha2::{Digest, Sha256};
use support::{meta, raw_publish, show, Sandbox, ServerProc};

const SECRET: &str = "it's a secret";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    event: String,
    delivery: String,
    signature: String,
    body: String,
}

impl Hit {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The signature is HMAC-SHA256 of the body with the secret, as a receiver checks it.
    fn assert_signed(&self) {
        assert_eq!(
            self.signature,
            format!(
                "sha256={}",
                hmac_sha256(SECRET.as_bytes(), self.body.as_bytes())
            ),
            "{self:?}"
        );
    }
}

/// HMAC-SHA256 (RFC 2104) on sha2 alone: the receiver's side, apart from the server's.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> String {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let inner = Sha256::new()
        .chain_update(k.map(|b| b ^ 0x36))
        .chain_update(msg)
        .finalize();
    let outer = Sha256::new()
        .chain_update(k.map(|b| b ^ 0x5c))
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_test_hmac_is_rfc_4231s() {
    assert_eq!(
        hmac_sha256(b"Jefe", b"what do ya want for nothing?"),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

/// How the receiver treats a request once it has read it.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Answer200,
    /// Holds the connection, never answering, until the client closes it.
    Hang,
}

/// A webhook receiver on loopback: one thread per connection.
struct Receiver {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
    /// Connections open now, and the most ever open at once.
    open: Arc<AtomicUsize>,
    most_open: Arc<AtomicUsize>,
}

impl Receiver {
    fn start(listener: TcpListener, mode: Mode) -> Receiver {
        Receiver::start_tls(listener, mode, None)
    }

    /// A receiver that speaks TLS with `tls`, when given.
    fn start_tls(
        listener: TcpListener,
        mode: Mode,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Receiver {
        let r = Receiver {
            addr: listener.local_addr().unwrap(),
            hits: Default::default(),
            open: Default::default(),
            most_open: Default::default(),
        };
        let (hits, open, most) = (r.hits.clone(), r.open.clone(), r.most_open.clone());
        std::thread::spawn(move || {
            for c in listener.incoming() {
                let Ok(c) = c else { continue };
                let (hits, open, most) = (hits.clone(), open.clone(), most.clone());
                let tls = tls.clone();
                std::thread::spawn(move || {
                    let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    match tls {
                        Some(config) => {
                            let conn = rustls::ServerConnection::new(config).unwrap();
                            serve_one(rustls::StreamOwned::new(conn, c), mode, &hits);
                        }
                        None => serve_one(c, mode, &hits),
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        r
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// The hits once `done` holds for them; fails after `secs`.
    fn wait_for(&self, secs: u64, done: impl Fn(&[Hit]) -> bool) -> Vec<Hit> {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            let hits = self.hits();
            if done(&hits) {
                return hits;
            }
            assert!(Instant::now() < until, "after {secs} s: {hits:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Reads one request, records it, and answers or hangs.
fn serve_one(mut c: impl Read + Write, mode: Mode, hits: &Mutex<Vec<Hit>>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let (head_len, headers) = loop {
        let n = c.read(&mut buf).unwrap_or(0);
        if n == 0 {
            return;
        }
        got.extend_from_slice(&buf[..n]);
        let mut h = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut h);
        if let Ok(httparse::Status::Complete(len)) = req.parse(&got) {
            assert_eq!(req.method, Some("POST"));
            assert_eq!(req.path, Some("/hook"));
            let headers: Vec<(String, String)> = req
                .headers
                .iter()
                .map(|h| {
                    let value = String::from_utf8_lossy(h.value).into_owned();
                    (h.name.to_ascii_lowercase(), value)
                })
                .collect();
            break (len, headers);
        }
    };
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let len: usize = header("content-length").parse().unwrap();
    while got.len() < head_len + len {
        let n = c.read(&mut buf).unwrap_or(0);
        if n == 0 {
            return;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(header("content-type"), "application/json");
    hits.lock().unwrap().push(Hit {
        event: header("x-palletizer-event"),
        delivery: header("x-palletizer-delivery"),
        signature: header("x-palletizer-signature"),
        body: String::from_utf8(got[head_len..head_len + len].to_vec()).unwrap(),
    });
    match mode {
        Mode::Answer200 => {
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            let _ = c.flush();
        }
        // Until the server gives up on it (its read timeout) and closes.
        Mode::Hang => while c.read(&mut buf).is_ok_and(|n| n > 0) {},
    }
}

/// Adds a `[[webhook]]` to `palletizer.toml` by hand (a new file renamed over the old).
fn add_webhook(s: &Sandbox, url: &str, extra: &str) {
    let path = s.reg().join("palletizer.toml");
    let mut text = fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[[webhook]]\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n{extra}"
    ));
    let tmp = s.reg().join("palletizer.toml.new");
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, &path).unwrap();
}

/// A raw publish of `name` `vers` through the API; returns how long its answer took.
fn publish(srv: &ServerProc, token: &str, name: &str, vers: &str) -> Duration {
    let body = publish_body(
        &meta(name, vers, serde_json::json!([])),
        &simple_crate(name, vers, &[]),
    );
    let started = Instant::now();
    let (status, text) = raw_publish(srv.addr(), token, &body);
    let took = started.elapsed();
    assert_eq!(status, 200, "{name} {vers}: {text}");
    took
}

/// The deliveries waiting in the queue's folder.
fn queued(s: &Sandbox) -> usize {
    match fs::read_dir(s.reg().join("webhook-queue")) {
        Ok(rd) => rd
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .count(),
        Err(_) => 0,
    }
}

/// `/metrics` as the admin sees it.
fn metrics(srv: &ServerProc, token: &str) -> String {
    let mut c = TcpStream::connect(srv.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        c,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let (status, body) = support::try_read_bytes(&mut c).unwrap();
    assert_eq!(status, 200);
    String::from_utf8(body).unwrap()
}

/// The value of the sample `series` (name and labels) in a `/metrics` text.
fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

/// Every delivery once: a repeated id carries the same body.
fn distinct(hits: &[Hit]) -> Vec<Hit> {
    let mut seen: Vec<Hit> = Vec::new();
    for h in hits {
        match seen.iter().find(|s| s.delivery == h.delivery) {
            Some(s) => assert_eq!(s.body, h.body, "one id, two bodies"),
            None => seen.push(h.clone()),
        }
    }
    seen
}

#[test]
fn every_event_arrives_signed_from_the_server_and_the_cli() {
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    s.cargo_config(&format!(
        "[registries.local]\nindex = \"sparse+{}/index/\"\n[net]\nretry = 0\n",
        srv.url()
    ));
    let all = Receiver::start(TcpListener::bind("127.0.0.1:0").unwrap(), Mode::Answer200);
    let chat = Receiver::start(TcpListener::bind("127.0.0.1:0").unwrap(), Mode::Answer200);
    // Added while the server runs: the next change reads them.
    add_webhook(&s, &all.url(), "");
    add_webhook(
        &s,
        &chat.url(),
        "format = \"slack\"\nevents = [\"publish\", \"yank\"]\n",
    );
    let token = s.token();
    let leaf = s.test_crate("leaf", Some("0.1.0"));
    let cargo = |args: &[&str]| {
        let mut argv = args.to_vec();
        argv.extend(["--registry", "local"]);
        s.cargo_as(&leaf, &argv, &token)
    };
    cargo(&["publish", "--allow-dirty", "--no-verify"]);
    cargo(&["yank", "leaf@0.1.0"]);
    cargo(&["yank", "--undo", "leaf@0.1.0"]);
    s.palletizer_ok(&["user", "add", "bob"]);
    cargo(&["owner", "--add", "bob", "leaf"]);
    cargo(&["owner", "--remove", "bob", "leaf"]);
    s.palletizer_ok(&["token", "create", "--user", "bob"]);
    s.palletizer_ok(&["token", "revoke", "2"]);
    s.palletizer_ok(&["user", "remove", "bob"]);
    s.palletizer_ok(&["delete", "leaf", "0.1.0"]);
    s.palletizer_ok(&["access", "private"]);

    let want = [
        "publish",
        "owner_add",
        "yank",
        "unyank",
        "user_add",
        "owner_add",
        "owner_remove",
        "token_create",
        "token_revoke",
        "user_remove",
        "delete",
        "access",
    ];
    let hits = all.wait_for(60, |h| distinct(h).len() >= want.len());
    let hits = distinct(&hits);
    let events: Vec<&str> = hits.iter().map(|h| h.event.as_str()).collect();
    assert_eq!(
        events, want,
        "each in order, once (one receiver: one at a time)"
    );
    for h in &hits {
        h.assert_signed();
        let body = h.json();
        assert_eq!(body["event"], h.event.as_str());
        assert_eq!(body["id"], h.delivery.as_str());
        assert_eq!(body["registry"], srv.url().as_str());
        let time = body["time"].as_str().unwrap();
        assert!(time.len() == 20 && time.ends_with('Z'), "{time}");
    }
    let published = hits[0].json();
    assert_eq!(
        (&published["crate"], &published["version"]),
        (&"leaf".into(), &"0.1.0".into())
    );
    assert_eq!(published["actor"]["kind"], "token");
    assert_eq!(published["actor"]["user"], "admin");
    assert_eq!(published["detail"]["new_crate"], true);
    let added = hits[4].json();
    assert_eq!(added["actor"]["kind"], "cli", "queued by the CLI");
    assert_eq!(added["detail"]["user"], "bob");
    assert_eq!(hits[10].json()["version"], "0.1.0");
    assert_eq!(hits[11].json()["detail"]["access"], "private");

    let texts: Vec<String> = distinct(&chat.wait_for(30, |h| distinct(h).len() >= 2))
        .iter()
        .map(|h| {
            h.assert_signed();
            h.json()["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        texts,
        [
            format!(
                "user admin (token 1) published leaf 0.1.0 (a new crate) on {}",
                srv.url()
            ),
            format!("user admin (token 1) yanked leaf 0.1.0 on {}", srv.url()),
        ]
    );
    let until = Instant::now() + Duration::from_secs(30);
    while queued(&s) > 0 {
        assert!(Instant::now() < until, "the queue did not empty");
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = metrics(&srv, &token);
    let ok = sample(
        &text,
        "palletizer_webhook_deliveries_total{result=\"succeeded\"}",
    );
    assert!(ok >= 14, "{text}");
    assert_eq!(sample(&text, "palletizer_webhook_queue_length"), 0);
    assert_eq!(
        sample(
            &text,
            "palletizer_webhook_deliveries_total{result=\"dropped\"}"
        ),
        0
    );
}

/// What broke would be a delivery lost to a crash or a restart: the receiver is down for
/// 20 publishes, the server is killed with SIGKILL after 10 of them and started again, and
/// every one of the 20 arrives once the receiver is back.
#[test]
fn deliveries_outlive_a_dead_receiver_and_a_kill_9() {
    let s = Sandbox::new();
    let mut srv = s.serve(&[]);
    let token = s.token();
    // A port nothing listens on, until the receiver comes up on it.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    add_webhook(
        &s,
        &format!("http://{addr}/hook"),
        "events = [\"publish\"]\n",
    );
    for v in 0..10 {
        publish(&srv, &token, "survivor", &format!("1.0.{v}"));
    }
    assert_eq!(queued(&s), 10, "each acknowledged publish is on disk");
    srv.signal(libc::SIGKILL);
    assert!(srv.wait_exit(10).is_some());
    drop(srv);
    let srv = s.serve(&[]);
    for v in 10..20 {
        publish(&srv, &token, "survivor", &format!("1.0.{v}"));
    }
    let log = srv.log_from_with(0, "webhook delivery");
    assert!(
        log.iter()
            .any(|l| l.contains("webhook delivery") && l.contains("next attempt in")),
        "a failure is logged: {log:#?}"
    );
    let receiver = Receiver::start(TcpListener::bind(addr).unwrap(), Mode::Answer200);
    let hits = receiver.wait_for(120, |h| distinct(h).len() >= 20);
    let once = distinct(&hits);
    let mut versions: Vec<String> = once
        .iter()
        .map(|h| {
            h.assert_signed();
            assert_eq!(h.event, "publish");
            h.json()["version"].as_str().unwrap().to_owned()
        })
        .collect();
    versions.sort_by_key(|v| v[4..].parse::<u32>().unwrap());
    let want: Vec<String> = (0..20).map(|v| format!("1.0.{v}")).collect();
    assert_eq!(versions, want);
    eprintln!(
        "20 publishes: {} requests to the receiver, {} deliveries",
        hits.len(),
        once.len()
    );
    let until = Instant::now() + Duration::from_secs(30);
    while queued(&s) > 0 {
        assert!(Instant::now() < until, "the queue did not empty");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A receiver that accepts and never answers: publishes (by cargo too) complete while it
/// holds its connection, the deliveries wait in the queue, and it is sent one at a time.
#[test]
fn a_receiver_that_hangs_holds_up_no_publish() {
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    let token = s.token();
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let before = (0..10)
        .map(|v| publish(&srv, &token, "plain", &format!("1.0.{v}")))
        .collect::<Vec<_>>();
    let peak_before = support::vm_hwm_kib(srv.child.id());
    let hang = Receiver::start(TcpListener::bind("127.0.0.1:0").unwrap(), Mode::Hang);
    add_webhook(&s, &hang.url(), "");
    let during = (0..10)
        .map(|v| publish(&srv, &token, "hung", &format!("1.0.{v}")))
        .collect::<Vec<_>>();
    s.cargo_config(&format!(
        "[registries.local]\nindex = \"sparse+{}/index/\"\n[net]\nretry = 0\n",
        srv.url()
    ));
    let leaf = s.test_crate("leaf", Some("0.1.0"));
    s.cargo_as(
        &leaf,
        &[
            "publish",
            "--registry",
            "local",
            "--allow-dirty",
            "--no-verify",
        ],
        &token,
    );
    hang.wait_for(30, |h| !h.is_empty());
    eprintln!(
        "publish answered in (median of 10): {:?} without a webhook, {:?} with a receiver \
         that hangs; server peak RSS {} KiB before the webhook, {} KiB after",
        median(before),
        median(during),
        peak_before,
        support::vm_hwm_kib(srv.child.id())
    );
    // 10 publishes and cargo's wait (with the owners their first publishes recorded).
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let text = metrics(&srv, &token);
        if sample(&text, "palletizer_webhook_queue_length") >= 11 {
            break;
        }
        assert!(Instant::now() < until, "{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(queued(&s) >= 11);
    assert_eq!(
        hang.most_open.load(Ordering::SeqCst),
        1,
        "one delivery at a time"
    );
}

#[test]
fn the_cli_queues_and_the_server_delivers_when_it_starts() {
    let s = Sandbox::new();
    s.palletizer_ok(&["init", "--url", "http://127.0.0.1:1"]);
    let receiver = Receiver::start(TcpListener::bind("127.0.0.1:0").unwrap(), Mode::Answer200);
    add_webhook(&s, &receiver.url(), "events = [\"user_add\"]\n");
    s.palletizer_ok(&["user", "add", "carol", "--admin"]);
    s.palletizer_ok(&["token", "create", "--user", "carol"]);
    assert_eq!(queued(&s), 1, "waits for a server");
    let _srv = s.serve(&[]);
    let hits = receiver.wait_for(30, |h| !h.is_empty());
    hits[0].assert_signed();
    let body = hits[0].json();
    assert_eq!(body["detail"]["user"], "carol");
    assert_eq!(body["detail"]["admin"], true);
}

#[test]
fn bad_webhook_settings_are_refused_in_one_line() {
    let s = Sandbox::new();
    s.palletizer_ok(&["init", "--url", "http://127.0.0.1:1"]);
    let settings = s.reg().join("palletizer.toml");
    let good = fs::read_to_string(&settings).unwrap();
    for (hook, want) in [
        (
            "url = \"http://127.0.0.1:9/\"\nsecret = \"k\"\nevents = [\"pubish\"]",
            "webhook http://127.0.0.1:9/: unknown event `pubish`; known: publish, yank",
        ),
        (
            "url = \"http://127.0.0.1:9/\"",
            "webhook http://127.0.0.1:9/: `secret` is missing",
        ),
        (
            "url = \"htp://127.0.0.1:9/\"\nsecret = \"k\"",
            "must start with http:// or https://",
        ),
    ] {
        fs::write(&settings, format!("{good}\n[[webhook]]\n{hook}\n")).unwrap();
        let out = s.palletizer(&["user", "add", "x"]);
        assert!(!out.status.success(), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(want), "{err}");
        // The server does not start on them either.
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_palletizer"))
            .arg("-r")
            .arg(s.reg())
            .args(["serve", "--bind", "127.0.0.1:0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > until {
                let _ = child.kill();
                panic!("the server started on `{hook}`");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(!status.success());
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(err.contains(want), "{err}");
    }
}

/// An `https://` receiver is checked against the system's roots: here `SSL_CERT_FILE`,
/// holding the receiver's own certificate.
#[test]
fn an_https_receiver_is_checked_against_the_system_roots() {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = support::self_signed();
    let s = Sandbox::new();
    let roots = s.path().join("roots.pem");
    fs::write(&roots, &cert).unwrap();
    let srv = s.serve_with(&[], |cmd| {
        cmd.env("SSL_CERT_FILE", &roots);
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
        .unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let receiver = Receiver::start_tls(l, Mode::Answer200, Some(Arc::new(config)));
    add_webhook(&s, &format!("https://localhost:{port}/hook"), "");
    publish(&srv, &s.token(), "secure", "1.0.0");
    let hits = receiver.wait_for(30, |h| distinct(h).len() >= 2);
    for h in &hits {
        h.assert_signed();
    }
    assert_eq!(hits[0].json()["crate"], "secure");
}

/// Webhook secrets sit in `palletizer.toml`: the server says so at start when other users
/// may read the file, and is quiet once it is private.
#[test]
fn a_readable_settings_file_with_secrets_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let s = Sandbox::new();
    s.palletizer_ok(&["init", "--url", "http://127.0.0.1:1"]);
    add_webhook(&s, "http://127.0.0.1:1/hook", "");
    let settings = s.reg().join("palletizer.toml");
    fs::set_permissions(&settings, fs::Permissions::from_mode(0o644)).unwrap();
    let warned = |srv: &ServerProc| {
        srv.log()
            .iter()
            .any(|l| l.contains("holds webhook secrets"))
    };
    {
        let srv = s.serve(&[]);
        assert!(warned(&srv), "{:?}", srv.log());
    }
    fs::set_permissions(&settings, fs::Permissions::from_mode(0o600)).unwrap();
    let srv = s.serve(&[]);
    assert!(!warned(&srv), "{:?}", srv.log());
}
