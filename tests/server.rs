//! The server over loopback: raw HTTP/1.1 and TLS on port 0, and the real cargo resolving
//! and building through the sparse index over http and https.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use palletizer::registry::testing::simple_crate;
use support::{self_signed, Sandbox, ServerProc};

/// One parsed response.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads one response from `r`, keeping extra bytes in `buf`. `head_only` for HEAD.
fn read_response(r: &mut impl Read, buf: &mut Vec<u8>, head_only: bool) -> Resp {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(len) = resp.parse(buf).unwrap() {
            let status = resp.code.unwrap();
            let headers: Vec<(String, String)> = resp
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let clen: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.parse().unwrap())
                .unwrap_or(0);
            let body_len = if head_only || status == 304 { 0 } else { clen };
            while buf.len() < len + body_len {
                read_more(r, buf);
            }
            let body = buf[len..len + body_len].to_vec();
            buf.drain(..len + body_len);
            return Resp {
                status,
                headers,
                body,
            };
        }
        read_more(r, buf);
    }
}

fn read_more(r: &mut impl Read, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 65536];
    let n = r.read(&mut chunk).unwrap();
    assert!(
        n > 0,
        "connection closed early; have {:?}",
        String::from_utf8_lossy(buf)
    );
    buf.extend_from_slice(&chunk[..n]);
}

/// Sends one request on a new connection and reads the answer.
fn request(addr: &str, raw: &str) -> Resp {
    let mut s = connect(addr);
    s.write_all(raw.as_bytes()).unwrap();
    read_response(&mut s, &mut Vec::new(), raw.starts_with("HEAD"))
}

fn get(addr: &str, path: &str) -> Resp {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    )
}

/// Whether the server closed the connection (EOF or reset) within the read timeout.
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1024];
    loop {
        match s.read(&mut b) {
            Ok(0) | Err(_) => return true,
            Ok(_) => continue,
        }
    }
}

fn add_crate(s: &Sandbox, name: &str, vers: &str) {
    let p = s.path().join(format!("{name}-{vers}.crate"));
    fs::write(&p, simple_crate(name, vers, &[])).unwrap();
    s.palletizer_ok(&["add", p.to_str().unwrap()]);
}

fn started() -> (Sandbox, ServerProc) {
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    add_crate(&s, "foo", "1.0.0");
    (s, srv)
}

/// `GET /index/3/f/foo` on the kept-alive connection `c`: the file's text (200 asserted).
fn foo_index_on(c: &mut TcpStream, buf: &mut Vec<u8>) -> String {
    c.write_all(b"GET /index/3/f/foo HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let r = read_response(c, buf, false);
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).unwrap()
}

/// Index files stay open and are used without an `fstat` until a writer releases the
/// registry's lock: what the CLI writes shows at once, on a kept connection and on new ones,
/// also after the lock file was removed (the server sets its watch again).
#[test]
fn cli_writes_show_at_once_while_files_are_kept_open() {
    let (s, srv) = started();
    let mut c = connect(srv.addr());
    let mut buf = Vec::new();
    let mut kept = |c: &mut TcpStream| foo_index_on(c, &mut buf);
    let lock = s.reg().join(".palletizer.lock");
    for minor in 1..4 {
        // Served, so kept open, before the write.
        let before = kept(&mut c);
        assert!(!before.contains(&format!("\"1.{minor}.0\"")), "{before}");
        if minor == 2 {
            fs::remove_file(&lock).unwrap();
        }
        add_crate(&s, "foo", &format!("1.{minor}.0"));
        let vers = format!("\"vers\":\"1.{minor}.0\"");
        let after = kept(&mut c);
        assert!(after.contains(&vers), "round {minor}: {after}");
        let fresh = String::from_utf8(get(srv.addr(), "/index/3/f/foo").body).unwrap();
        assert!(fresh.contains(&vers), "round {minor}: {fresh}");
    }
    s.palletizer_ok(&["yank", "foo", "1.3.0"]);
    let after = kept(&mut c);
    let line = after.lines().find(|l| l.contains("\"1.3.0\"")).unwrap();
    assert!(line.contains("\"yanked\":true"), "{line}");
}

#[test]
fn keep_alive_pipelining_and_head() {
    let (_s, srv) = started();
    let mut c = connect(srv.addr());
    let mut buf = Vec::new();
    for _ in 0..3 {
        c.write_all(b"GET /index/3/f/foo HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let r = read_response(&mut c, &mut buf, false);
        assert_eq!(r.status, 200);
        assert!(String::from_utf8_lossy(&r.body).contains("\"vers\":\"1.0.0\""));
    }
    // Three requests in one write, answered in order.
    c.write_all(
        b"GET /index/config.json HTTP/1.1\r\nHost: localhost\r\n\r\nGET /index/3/n/nop HTTP/1.1\r\nHost: localhost\r\n\r\n\
HEAD /crates/foo/foo-1.0.0.crate HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .unwrap();
    let a = read_response(&mut c, &mut buf, false);
    let b = read_response(&mut c, &mut buf, false);
    let h = read_response(&mut c, &mut buf, true);
    assert_eq!(a.status, 200);
    assert!(String::from_utf8_lossy(&a.body).contains("\"dl\""));
    assert_eq!(b.status, 404);
    assert_eq!(h.status, 200);
    let len: usize = h.header("content-length").unwrap().parse().unwrap();
    assert_eq!(
        len,
        fs::metadata(_s.reg().join("crates/foo/foo-1.0.0.crate"))
            .unwrap()
            .len() as usize
    );
    // The HEAD sent no body: the next response starts right after it.
    c.write_all(b"GET /crates/foo/foo-1.0.0.crate HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let d = read_response(&mut c, &mut buf, false);
    assert_eq!(d.status, 200);
    assert_eq!(
        d.body,
        fs::read(_s.reg().join("crates/foo/foo-1.0.0.crate")).unwrap()
    );
    assert!(buf.is_empty());
    // h2c upgrade headers, as cargo sends them, get a plain HTTP/1.1 answer on a kept connection.
    c.write_all(
        b"GET /index/3/f/foo HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
HTTP2-Settings: AAMAAABkAAQAAQAAAAIAAAAA\r\n\r\n",
    )
    .unwrap();
    assert_eq!(read_response(&mut c, &mut buf, false).status, 200);
    c.write_all(b"GET /index/3/f/foo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let last = read_response(&mut c, &mut buf, false);
    assert_eq!(last.header("connection"), Some("close"));
    assert!(closed(&mut c));
}

#[test]
fn conditional_requests_and_etags() {
    let (s, srv) = started();
    let first = get(srv.addr(), "/index/3/f/foo");
    let etag = first.header("etag").unwrap().to_owned();
    let lm = first.header("last-modified").unwrap().to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong etag: {etag}"
    );
    let inm = |tag: &str| {
        format!("GET /index/3/f/foo HTTP/1.1\r\nHost: localhost\r\nIf-None-Match: {tag}\r\n\r\n")
    };
    let r = request(srv.addr(), &inm(&etag));
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(request(srv.addr(), &inm("\"other\"")).status, 200);
    let ims = format!(
        "GET /index/3/f/foo HTTP/1.1\r\nHost: localhost\r\nIf-Modified-Since: {lm}\r\n\r\n"
    );
    assert_eq!(request(srv.addr(), &ims).status, 304);
    // An unconditional request never gets a 304.
    assert_eq!(get(srv.addr(), "/index/3/f/foo").status, 200);
    // A yank changes the bytes, so the old ETag no longer matches.
    s.palletizer_ok(&["yank", "foo", "1.0.0"]);
    let r = request(srv.addr(), &inm(&etag));
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("\"yanked\":true"));
    assert_ne!(r.header("etag").unwrap(), etag);
    // Crate files have validators too.
    let c = get(srv.addr(), "/crates/foo/foo-1.0.0.crate");
    let tag = c.header("etag").unwrap();
    let r = request(
        srv.addr(),
        &format!(
            "GET /crates/foo/foo-1.0.0.crate HTTP/1.1\r\nHost: localhost\r\nIf-None-Match: {tag}\r\n\r\n"
        ),
    );
    assert_eq!(r.status, 304);
}

#[test]
fn traversal_and_bad_requests_are_refused() {
    let (s, srv) = started();
    fs::write(s.path().join("secret.txt"), "secret").unwrap();
    std::os::unix::fs::symlink(s.path().join("secret.txt"), s.reg().join("index/3/f/sym")).unwrap();
    std::os::unix::fs::symlink(s.path(), s.reg().join("index/ln")).unwrap();
    for path in [
        "/index/../palletizer.toml",
        "/index/%2e%2e/palletizer.toml",
        "/index/%2E%2E/%2e%2e/secret.txt",
        "/index//etc/passwd",
        "/index/3\\f\\foo",
        "/index/3/f/foo%00",
        "/index/3/f/sym",
        "/index/ln/secret.txt",
        "/index/.git/config",
        "/crates/../palletizer.toml",
        "/crates/foo/..%2f..%2fpalletizer.toml",
        "/palletizer.toml",
    ] {
        let r = get(srv.addr(), path);
        assert!(matches!(r.status, 400 | 404), "{path}: {}", r.status);
        let body = String::from_utf8_lossy(&r.body);
        assert!(
            !body.contains("secret") && !body.contains("url ="),
            "{path} leaked: {body}"
        );
        assert!(body.contains("\"errors\""), "{path}: {body}");
    }
    assert_eq!(get(srv.addr(), "/index/3/f/foo").status, 200);

    // A 20 KiB header block.
    let big = format!(
        "GET /index/3/f/foo HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let mut c = connect(srv.addr());
    let _ = c.write_all(big.as_bytes());
    let r = read_response(&mut c, &mut Vec::new(), false);
    assert_eq!(r.status, 431);
    assert_eq!(r.header("connection"), Some("close"));
    let long = format!(
        "GET /{} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let mut c = connect(srv.addr());
    let _ = c.write_all(long.as_bytes());
    assert_eq!(read_response(&mut c, &mut Vec::new(), false).status, 414);

    for (raw, status) in [
        (
            "BREW /index/3/f/foo HTTP/1.1\r\nHost: localhost\r\n\r\n",
            501,
        ),
        ("GET /index/3/f/foo HTTP/2.0\r\n\r\n", 505),
        ("GARBAGE\r\n\r\n", 400),
        (
            "POST /index/3/f/foo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
            405,
        ),
        (
            "DELETE /crates/foo/foo-1.0.0.crate HTTP/1.1\r\nHost: localhost\r\n\r\n",
            405,
        ),
        (
            "GET /crates/foo/foo-9.9.9.crate HTTP/1.1\r\nHost: localhost\r\n\r\n",
            404,
        ),
        (
            "GET /index/3/n/nop HTTP/1.1\r\nHost: localhost\r\n\r\n",
            404,
        ),
    ] {
        let r = request(srv.addr(), raw);
        assert_eq!(r.status, status, "{raw:?}");
        assert_eq!(
            r.header("content-length").unwrap(),
            r.body.len().to_string()
        );
    }
    assert_eq!(
        get(srv.addr(), "/index/3/f/foo").status,
        200,
        "still serving"
    );
}

#[test]
fn silent_client_times_out_while_others_are_served() {
    let s = Sandbox::new();
    let cfg = s.path().join("server.toml");
    fs::write(
        &cfg,
        format!(
            "registry = \"{}\"\n[[listener]]\nbind = \"127.0.0.1:0\"\n[limits]\nhead-timeout-ms = 400\nidle-timeout-ms = 400\n",
            s.reg().display()
        ),
    )
    .unwrap();
    let srv = s.serve(&[cfg.to_str().unwrap()]);
    let mut silent = connect(srv.addr());
    let mut partial = connect(srv.addr());
    partial
        .write_all(b"GET /index/config.json HTTP/1.1\r\nHo")
        .unwrap();
    assert_eq!(get(srv.addr(), "/index/config.json").status, 200);
    // closed() reads until EOF: it returns only because the server closes them.
    assert!(closed(&mut silent), "a silent client is closed");
    assert!(closed(&mut partial), "a slow head is closed");
    assert_eq!(get(srv.addr(), "/index/config.json").status, 200);
}

/// A TLS client config trusting `cert_pem`.
fn tls_client(cert_pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// GET over TLS; returns the response, the peer's leaf certificate, and the ALPN protocol.
fn tls_get(addr: &str, cert_pem: &str, path: &str) -> (Resp, Vec<u8>, Option<Vec<u8>>) {
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(tls_client(cert_pem), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, connect(addr));
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .unwrap();
    let r = read_response(&mut tls, &mut Vec::new(), false);
    let leaf = tls.conn.peer_certificates().unwrap()[0].to_vec();
    let alpn = tls.conn.alpn_protocol().map(<[u8]>::to_vec);
    (r, leaf, alpn)
}

fn pem_der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

fn tls_sandbox() -> (Sandbox, String, std::path::PathBuf) {
    let s = Sandbox::new();
    let (cert, key) = self_signed();
    fs::write(s.path().join("cert.pem"), &cert).unwrap();
    fs::write(s.path().join("key.pem"), &key).unwrap();
    let cfg = s.path().join("server.toml");
    fs::write(
        &cfg,
        "registry = \"reg\"\n\n[[listener]]\nbind = \"127.0.0.1:0\"\ntls = {\n   private_key = \"key.pem\",\n   certificate_chain = \"cert.pem\",\n}\n\n[[listener]]\nbind = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    (s, cert, cfg)
}

#[test]
fn tls_serves_and_misbehaving_clients_affect_only_themselves() {
    let (s, cert, cfg) = tls_sandbox();
    let srv = s.serve(&[cfg.to_str().unwrap()]);
    let (tls_addr, plain_addr) = (srv.addrs[0].clone(), srv.addrs[1].clone());
    let (r, leaf, alpn) = tls_get(&tls_addr, &cert, "/index/config.json");
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains(&format!("https://{tls_addr}")));
    assert_eq!(leaf, pem_der(&cert));
    assert_eq!(
        alpn.as_deref(),
        Some(&b"http/1.1"[..]),
        "h2 is never chosen"
    );

    // A client that stops after part of a ClientHello.
    let mut stalled = connect(&tls_addr);
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .unwrap();
    // The plain and a TLS client are served while the stalled handshake is still pending: a
    // server blocked on it would only reach them after closing it (head timeout).
    assert_eq!(get(&plain_addr, "/index/config.json").status, 200);
    assert_eq!(
        tls_get(&tls_addr, &cert, "/index/config.json").0.status,
        200
    );
    stalled.set_nonblocking(true).unwrap();
    let mut b = [0u8; 16];
    let pending = stalled.read(&mut b);
    assert!(
        matches!(&pending, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the stalled handshake is still open: {pending:?}"
    );
    stalled.set_nonblocking(false).unwrap();
    // Plain HTTP on the TLS port: that connection fails, the server goes on.
    let mut wrong = connect(&tls_addr);
    wrong
        .write_all(b"GET /index/config.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    assert!(closed(&mut wrong));
    let mut garbage = connect(&tls_addr);
    garbage.write_all(&[0xff; 300]).unwrap();
    assert!(closed(&mut garbage));
    // Half a ClientHello, then a record of no valid type: rustls failed holding half a
    // handshake message, and asking it for its alert panicked the whole server.
    let mut half = connect(&tls_addr);
    half.write_all(&[
        0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0x01, 0x00, 0x03, 0x03, 0, 0,
    ])
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    half.write_all(&[0xff, 0x03, 0x03, 0x00, 0x01, 0x00])
        .unwrap();
    assert!(closed(&mut half));
    assert_eq!(
        tls_get(&tls_addr, &cert, "/index/config.json").0.status,
        200
    );
    assert_eq!(get(&plain_addr, "/index/config.json").status, 200);
    drop(stalled);
}

/// A kept-alive TLS connection whose client is known to be `cert_pem`'s.
fn tls_stream(
    addr: &str,
    cert_pem: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(tls_client(cert_pem), name).unwrap();
    rustls::StreamOwned::new(conn, connect(addr))
}

/// The TLS transport gives its buffers back whenever a connection has nothing in flight;
/// a connection that served a request and then sat idle must carry the next ones, one at
/// a time and pipelined.
#[test]
fn tls_connection_serves_again_after_idling_with_buffers_released() {
    let (s, cert, cfg) = tls_sandbox();
    let srv = s.serve(&[cfg.to_str().unwrap()]);
    add_crate(&s, "foo", "1.0.0");
    let mut tls = tls_stream(&srv.addrs[0], &cert);
    let mut buf = Vec::new();
    for round in 0..3 {
        tls.write_all(b"GET /index/3/f/foo HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let r = read_response(&mut tls, &mut buf, false);
        assert_eq!(r.status, 200, "request {round}");
        assert!(String::from_utf8_lossy(&r.body).contains("\"vers\":\"1.0.0\""));
        // Idle between requests, as cargo's connections are.
        std::thread::sleep(Duration::from_millis(200));
    }
    tls.write_all(
        b"GET /index/3/f/foo HTTP/1.1\r\nHost: localhost\r\n\r\nGET /index/config.json HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .unwrap();
    assert_eq!(read_response(&mut tls, &mut buf, false).status, 200);
    let r = read_response(&mut tls, &mut buf, false);
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("\"dl\""));
}

/// A response of many TLS records (several plaintext batches, several mmap windows), read
/// slowly so that the server's socket fills and its encrypted output waits: byte-exact,
/// twice on one connection, with an index request after it.
#[test]
fn tls_large_download_is_byte_exact_with_a_slow_reader() {
    let (s, cert, cfg) = tls_sandbox();
    let srv = s.serve(&[cfg.to_str().unwrap()]);
    let big = s.path().join("big-1.0.0.crate");
    let blob = palletizer::registry::testing::noise(3 << 20);
    fs::write(&big, simple_crate("big", "1.0.0", &[("blob", &blob)])).unwrap();
    s.palletizer_ok(&["add", big.to_str().unwrap()]);
    let want = fs::read(s.reg().join("crates/big/big-1.0.0.crate")).unwrap();
    assert!(want.len() > 2 << 20);
    let mut tls = tls_stream(&srv.addrs[0], &cert);
    for round in 0..2 {
        tls.write_all(b"GET /crates/big/big-1.0.0.crate HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 7001];
        let mut body_start = None;
        let mut reads = 0;
        while body_start.is_none_or(|start| got.len() < start + want.len()) {
            let n = tls.read(&mut chunk).unwrap();
            assert!(n > 0, "connection closed after {} bytes", got.len());
            got.extend_from_slice(&chunk[..n]);
            if body_start.is_none() {
                body_start = got.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
            }
            reads += 1;
            if round == 0 && reads % 64 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let start = body_start.unwrap();
        assert!(got.starts_with(b"HTTP/1.1 200"), "round {round}");
        assert_eq!(got.len(), start + want.len(), "nothing past the body");
        assert!(got[start..] == want[..], "body differs in round {round}");
    }
    tls.write_all(b"GET /index/config.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut tls, &mut Vec::new(), false).status, 200);
}

#[test]
fn sighup_reloads_the_certificate() {
    let (s, cert, cfg) = tls_sandbox();
    let srv = s.serve(&[cfg.to_str().unwrap()]);
    let tls_addr = srv.addrs[0].clone();
    assert_eq!(
        tls_get(&tls_addr, &cert, "/index/config.json").1,
        pem_der(&cert)
    );
    // An open kept-alive connection survives the reload.
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(tls_client(&cert), name).unwrap();
    let mut old = rustls::StreamOwned::new(conn, connect(&tls_addr));
    old.write_all(b"GET /index/config.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    assert_eq!(read_response(&mut old, &mut buf, false).status, 200);

    let (cert2, key2) = self_signed();
    fs::write(s.path().join("cert.pem"), &cert2).unwrap();
    fs::write(s.path().join("key.pem"), &key2).unwrap();
    srv.signal(libc::SIGHUP);
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let conn = rustls::ClientConnection::new(tls_client(&cert2), name).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, connect(&tls_addr));
        if tls
            .write_all(b"GET /index/config.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .is_ok()
        {
            let mut b = Vec::new();
            let mut chunk = [0u8; 4096];
            if let Ok(n) = tls.read(&mut chunk) {
                b.extend_from_slice(&chunk[..n]);
                if b.starts_with(b"HTTP/1.1 200") {
                    assert_eq!(
                        tls.conn.peer_certificates().unwrap()[0].to_vec(),
                        pem_der(&cert2)
                    );
                    break;
                }
            }
        }
        assert!(
            Instant::now() < until,
            "new certificate never served: {:?}",
            srv.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    old.write_all(b"GET /index/config.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    assert_eq!(
        read_response(&mut old, &mut buf, false).status,
        200,
        "old connection kept"
    );
}

#[test]
fn sigterm_finishes_in_flight_and_exits_zero() {
    use palletizer::registry::testing::publish_body;
    let (s, mut srv) = started();
    let mut idle = connect(srv.addr());
    idle.write_all(b"GET /index/3/f/foo HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut idle, &mut Vec::new(), false).status, 200);
    // A publish in flight. The interim `100 Continue` shows the server has taken the head
    // and is reading the body when the signal arrives.
    let json = br#"{"name":"late","vers":"1.0.0","deps":[],"features":{},"description":"d","license":"MIT"}"#;
    let body = publish_body(json, &simple_crate("late", "1.0.0", &[]));
    let mut busy = connect(srv.addr());
    let head = format!(
        "PUT /api/v1/crates/new HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        s.token(),
        body.len()
    );
    busy.write_all(head.as_bytes()).unwrap();
    let mut interim = [0u8; 25];
    busy.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    busy.write_all(&body[..body.len() / 2]).unwrap();
    srv.signal(libc::SIGTERM);
    // The idle connection is closed at once: the server is stopping...
    assert!(closed(&mut idle));
    // ...and no longer accepting, while the upload goes on and is answered.
    busy.write_all(&body[body.len() / 2..]).unwrap();
    let r = read_response(&mut busy, &mut Vec::new(), false);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("connection"), Some("close"));
    let status = srv.wait_exit(15).expect("server exits");
    assert!(status.success(), "{status:?}");
    assert!(
        TcpStream::connect(srv.addr()).is_err(),
        "no longer accepting"
    );
    assert!(
        s.reg().join("index/la/te/late").exists(),
        "the in-flight publish landed"
    );
    // The token's use was written down on the way out: `token list` shows when (created
    // and last used are the row's two times; it has no expiry).
    let list = s.palletizer_ok(&["token", "list"]);
    let row = list.lines().find(|l| l.contains("admin")).unwrap();
    let times = row
        .split_whitespace()
        .filter(|w| w.ends_with('Z') && w.len() == 20);
    assert_eq!(times.count(), 2, "{list}");
}

fn consumer(s: &Sandbox, index: &str) -> std::path::PathBuf {
    s.cargo_config(&format!(
        "[registries.local]\nindex = \"{index}\"\n[net]\nretry = 0\n"
    ));
    s.consumer()
}

fn publish_test_crates(s: &Sandbox) {
    for (name, vers) in [("leaf", "0.1.0"), ("leaf", "0.1.1"), ("ab", "1.0.0")] {
        let file = s.package(name, Some(vers));
        s.palletizer_ok(&["add", file.to_str().unwrap()]);
    }
}

#[test]
fn real_cargo_over_sparse_http_revalidates_with_304() {
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    let app = consumer(&s, &format!("sparse+{}/index/", srv.url()));
    publish_test_crates(&s);
    let out = s.cargo_ok(&app, &["run", "-q"]);
    assert!(out.contains("leaf 0.1.1 ab"), "{out}");
    let log = srv.log_from_with(0, "GET /crates/leaf/leaf-0.1.1.crate 200");
    assert!(
        log.iter().any(|l| l.contains("GET /index/le/af/leaf 200")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("GET /crates/leaf/leaf-0.1.1.crate 200")),
        "{log:?}"
    );

    let before = srv.log().len();
    s.cargo_ok(&app, &["generate-lockfile"]);
    srv.log_from_with(before, "GET /index/le/af/leaf 304");
    let second = srv.log_from_with(before, "GET /index/2/ab 304");
    assert!(
        second
            .iter()
            .any(|l| l.contains("GET /index/config.json 200")),
        "{second:?}"
    );
    assert!(
        second
            .iter()
            .any(|l| l.contains("GET /index/le/af/leaf 304")),
        "{second:?}"
    );
    assert!(
        second.iter().any(|l| l.contains("GET /index/2/ab 304")),
        "{second:?}"
    );
    assert!(
        !second.iter().any(|l| l.contains("/index/le/af/leaf 200")),
        "{second:?}"
    );

    // A yank changes the ETag: the next resolve downloads the file again and avoids 0.1.1.
    s.palletizer_ok(&["yank", "leaf", "0.1.1"]);
    fs::remove_file(app.join("Cargo.lock")).unwrap();
    let before = srv.log().len();
    s.cargo_ok(&app, &["generate-lockfile"]);
    let third = srv.log_from_with(before, "GET /index/le/af/leaf 200");
    assert!(
        third
            .iter()
            .any(|l| l.contains("GET /index/le/af/leaf 200")),
        "{third:?}"
    );
    let lock = fs::read_to_string(app.join("Cargo.lock")).unwrap();
    assert!(
        lock.contains("name = \"leaf\"\nversion = \"0.1.0\""),
        "{lock}"
    );
}

#[test]
fn real_cargo_over_sparse_https() {
    let (s, cert, cfg) = tls_sandbox();
    let srv = s.serve(&[cfg.to_str().unwrap()]);
    let app = consumer(&s, &format!("sparse+https://{}/index/", srv.addrs[0]));
    publish_test_crates(&s);
    let out = s
        .cargo_cmd(&app, &["run", "-q"])
        .env("CARGO_HTTP_CAINFO", s.path().join("cert.pem"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", support::show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("leaf 0.1.1 ab"));
    let log = srv.log_from_with(0, "GET /crates/ab/ab-1.0.0.crate 200");
    assert!(
        log.iter()
            .any(|l| l.contains("GET /crates/ab/ab-1.0.0.crate 200")),
        "{log:?}"
    );
    let _ = cert;
}

#[test]
fn start_repairs_what_a_crash_left() {
    let s = Sandbox::new();
    drop(s.serve(&[])); // creates the registry
    add_crate(&s, "foo", "1.0.0");
    let f = s.reg().join("index/3/f/foo");
    let edited = fs::read_to_string(&f)
        .unwrap()
        .replace("\"yanked\":false", "\"yanked\":true");
    fs::write(&f, edited).unwrap();
    let stale = s.reg().join("crates/.tmp-4000000000-0-upload.crate");
    fs::write(&stale, b"half").unwrap();
    let srv = s.serve(&[]);
    assert!(!stale.exists(), "stale temp file removed");
    let repo = git2::Repository::open(s.reg().join("index")).unwrap();
    let head = repo.head().unwrap().peel_to_commit().unwrap();
    assert_eq!(
        head.summary().unwrap(),
        Some("Commit index changes left uncommitted")
    );
    let r = get(srv.addr(), "/index/3/f/foo");
    assert!(String::from_utf8_lossy(&r.body).contains("\"yanked\":true"));
}

/// Starts the server with at most `n` descriptors (soft and hard limit).
fn limit_descriptors(cmd: &mut std::process::Command, n: libc::rlim_t) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit only, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let r = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn running_out_of_file_descriptors_is_not_fatal() {
    let s = Sandbox::new();
    let cfg = s.path().join("server.toml");
    fs::write(
        &cfg,
        format!(
            "registry = \"{}\"\n[[listener]]\nbind = \"127.0.0.1:0\"\n[limits]\nmax-connections = 100\nopen-files = 0\n",
            s.reg().display()
        ),
    )
    .unwrap();
    let srv = s.serve_with(&[cfg.to_str().unwrap()], |cmd| limit_descriptors(cmd, 24));
    // Far more clients than descriptors: accept fails with EMFILE.
    let many: Vec<TcpStream> = (0..40).map(|_| connect(srv.addr())).collect();
    let until = Instant::now() + Duration::from_secs(20);
    while !srv.log().iter().any(|l| l.contains("pausing accepts")) {
        assert!(
            Instant::now() < until,
            "no EMFILE back-off logged: {:?}",
            srv.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(many);
    // Once descriptors are free again, the server serves as before.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let mut c = connect(srv.addr());
        if c.write_all(b"GET /index/config.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .is_ok()
        {
            let mut b = [0u8; 12];
            if c.read_exact(&mut b).is_ok() && &b == b"HTTP/1.1 200" {
                break;
            }
        }
        assert!(
            Instant::now() < until,
            "server did not recover: {:?}",
            srv.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the server closed the connection: EOF or reset, not the client's read timeout.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1024];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn random_garbage_never_stops_the_server() {
    // Timeouts far longer than the client waits: every connection must end because the
    // server saw the client's end, not because a timer fired.
    let s = Sandbox::new();
    let cfg = s.path().join("server.toml");
    fs::write(
        &cfg,
        format!(
            "registry = \"{}\"\n[[listener]]\nbind = \"127.0.0.1:0\"\n[limits]\nhead-timeout-ms = 600000\nio-timeout-ms = 600000\nidle-timeout-ms = 600000\n",
            s.reg().display()
        ),
    )
    .unwrap();
    let srv = s.serve(&[cfg.to_str().unwrap()]);
    add_crate(&s, "foo", "1.0.0");
    let mut x: u64 = 0x9E3779B97F4A7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let prefixes: [&[u8]; 5] = [
        b"",
        b"GET /index/3/f/foo HTTP/1.1\r\n",
        b"PUT /api/v1/crates/new HTTP/1.1\r\nContent-Length: 40\r\n\r\n",
        b"GET /index/",
        b"POST /index/git-upload-pack HTTP/1.1\r\nContent-Length: 30\r\n\r\n",
    ];
    for i in 0..200 {
        let mut payload = prefixes[i % prefixes.len()].to_vec();
        let n = (next() % 600) as usize;
        payload.extend((0..n).map(|_| next() as u8));
        let mut c = connect(srv.addr());
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = c.write_all(&payload);
        let _ = c.shutdown(std::net::Shutdown::Write);
        assert!(
            closed_by_server(&mut c),
            "connection {i} left open after the client's end: {:?}",
            String::from_utf8_lossy(&payload[..payload.len().min(80)])
        );
    }
    assert_eq!(get(srv.addr(), "/index/3/f/foo").status, 200);
}

#[test]
fn downloads_are_byte_exact_small_and_across_mmap_windows() {
    let (s, srv) = started();
    let big = s.path().join("big-1.0.0.crate");
    fs::write(
        &big,
        simple_crate(
            "big",
            "1.0.0",
            &[("blob", &palletizer::registry::testing::noise(700 * 1024))],
        ),
    )
    .unwrap();
    s.palletizer_ok(&["add", big.to_str().unwrap()]);
    let mut c = connect(srv.addr());
    let mut buf = Vec::new();
    for (path, file) in [
        ("/crates/big/big-1.0.0.crate", "crates/big/big-1.0.0.crate"),
        ("/crates/foo/foo-1.0.0.crate", "crates/foo/foo-1.0.0.crate"),
        ("/crates/big/big-1.0.0.crate", "crates/big/big-1.0.0.crate"),
    ] {
        c.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
            .unwrap();
        let r = read_response(&mut c, &mut buf, false);
        assert_eq!(r.status, 200);
        assert_eq!(r.body, fs::read(s.reg().join(file)).unwrap(), "{path}");
    }
    assert!(
        fs::metadata(s.reg().join("crates/big/big-1.0.0.crate"))
            .unwrap()
            .len()
            > 512 * 1024
    );
}

/// Bytes the process read through `read` and `sendfile` (`rchar` in `/proc/PID/io`): a
/// file sent with `sendfile` counts, a file sent from a mapping does not.
fn bytes_read_by(pid: u32) -> u64 {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rchar in /proc/{pid}/io: {io}"))
}

/// Adds a crate file of several MiB (larger than the old 64 KiB `sendfile` threshold and
/// than several mmap windows); returns its bytes as stored.
fn add_big_crate(s: &Sandbox, name: &str) -> Vec<u8> {
    let noise = palletizer::registry::testing::noise(6 << 20);
    let p = s.path().join(format!("{name}-1.0.0.crate"));
    fs::write(&p, simple_crate(name, "1.0.0", &[("blob", &noise)])).unwrap();
    s.palletizer_ok(&["add", p.to_str().unwrap()]);
    let bytes = fs::read(s.reg().join(format!("crates/{name}/{name}-1.0.0.crate"))).unwrap();
    assert!(bytes.len() > 6 << 20);
    bytes
}

#[test]
fn large_crate_files_use_sendfile_on_plain_tcp_and_mmap_over_tls() {
    let (s, cert, cfg) = tls_sandbox();
    let srv = s.serve(&[cfg.to_str().unwrap()]);
    let (tls_addr, plain_addr) = (srv.addrs[0].clone(), srv.addrs[1].clone());
    let file = add_big_crate(&s, "big");
    let small = {
        add_crate(&s, "foo", "1.0.0");
        fs::read(s.reg().join("crates/foo/foo-1.0.0.crate")).unwrap()
    };
    let pid = srv.child.id();

    // Plain TCP, one kept-alive connection: HEAD, then the big file pipelined with a small
    // one. The client reads late, so the server meets a full socket buffer midway.
    let mut c = connect(&plain_addr);
    let mut buf = Vec::new();
    c.write_all(b"HEAD /crates/big/big-1.0.0.crate HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let r = read_response(&mut c, &mut buf, true);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Length"), Some(&*file.len().to_string()));
    let before = bytes_read_by(pid);
    c.write_all(
        b"GET /crates/big/big-1.0.0.crate HTTP/1.1\r\nHost: localhost\r\n\r\n\
          GET /crates/foo/foo-1.0.0.crate HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let r = read_response(&mut c, &mut buf, false);
    assert_eq!(r.status, 200);
    assert!(r.body == file, "the big file arrives byte for byte");
    let r = read_response(&mut c, &mut buf, false);
    assert_eq!((r.status, &r.body), (200, &small));
    let read = bytes_read_by(pid) - before;
    assert!(
        read >= (file.len() + small.len()) as u64,
        "sent with sendfile: the server read {read} bytes for {} of files",
        file.len() + small.len()
    );

    // TLS: rustls must see the bytes, so they come from a mapping, not a read.
    let before = bytes_read_by(pid);
    let (r, _, _) = tls_get(&tls_addr, &cert, "/crates/big/big-1.0.0.crate");
    assert_eq!(r.status, 200);
    assert!(
        r.body == file,
        "the big file arrives byte for byte over TLS"
    );
    let read = bytes_read_by(pid) - before;
    assert!(
        read < file.len() as u64 / 2,
        "sent from mmap windows over TLS, yet the server read {read} bytes"
    );
}

#[test]
fn missing_index_and_crate_files_are_404s_caches_must_check_again() {
    let (_s, srv) = started();
    for path in ["/index/3/n/nop", "/crates/nop/nop-1.0.0.crate"] {
        let r = get(srv.addr(), path);
        assert_eq!(r.status, 404, "{path}");
        let cc = r.header("Cache-Control").unwrap_or_default();
        assert!(cc.contains("no-cache"), "{path}: Cache-Control {cc:?}");
    }
}

#[test]
fn a_low_descriptor_limit_shrinks_the_file_cache_instead_of_starving_sockets() {
    // At the default `open-files` the cache fitting the limit is no news; a setting that
    // asked for more than fits is worth a note.
    let s = Sandbox::new();
    let cfg = s.server_config("max-connections = 64");
    let srv = s.serve_with(&[cfg.to_str().unwrap()], |cmd| limit_descriptors(cmd, 300));
    assert!(
        !srv.log().iter().any(|l| l.contains("leave room for")),
        "a note at default settings: {:?}",
        srv.log()
    );
    drop(srv);
    let cfg = s.server_config("max-connections = 64\nopen-files = 1000");
    let srv = s.serve_with(&[cfg.to_str().unwrap()], |cmd| limit_descriptors(cmd, 300));
    // Hundreds of index files, more than the descriptors left once connections have theirs.
    let dir = s.reg().join("index/ma/ny");
    fs::create_dir_all(&dir).unwrap();
    let files = 400;
    for i in 0..files {
        fs::write(dir.join(format!("many-{i}")), format!("{i}\n")).unwrap();
    }
    // 300 - 2 x 64 - 64 = 108 descriptors for three trees (index, crates, docs).
    assert!(
        srv.log()
            .iter()
            .any(|l| l.contains("leave room for 36 open files per tree")),
        "{:?}",
        srv.log()
    );
    let mut c = connect(srv.addr());
    let mut buf = Vec::new();
    for round in 0..2 {
        for i in 0..files {
            c.write_all(
                format!("GET /index/ma/ny/many-{i} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
            )
            .unwrap();
            let r = read_response(&mut c, &mut buf, false);
            assert_eq!(
                (r.status, r.body),
                (200, format!("{i}\n").into_bytes()),
                "file {i}, round {round}"
            );
        }
    }
    // Every connection the limits allow still gets its socket, and an answer.
    let mut conns: Vec<TcpStream> = (0..60).map(|_| connect(srv.addr())).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.write_all(
            format!("GET /index/ma/ny/many-{i} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
        )
        .unwrap();
        assert_eq!(read_response(c, &mut Vec::new(), false).status, 200, "{i}");
    }
}

/// A crate file cut short in place by hand (`cp` or `truncate` over it: the registry never
/// does) while the server keeps it open: a TLS download maps the file, and a mapping past
/// the file's end kills the whole server with SIGBUS. The kept length must not be trusted
/// for the mapping.
#[test]
fn a_crate_file_truncated_in_place_never_kills_the_server_over_tls() {
    let (s, cert, cfg) = tls_sandbox();
    let mut srv = s.serve(&[cfg.to_str().unwrap()]);
    let tls_addr = srv.addrs[0].clone();
    add_crate(&s, "foo", "1.0.0");
    let path = s.reg().join("crates/foo/foo-1.0.0.crate");
    let (r, _, _) = tls_get(&tls_addr, &cert, "/crates/foo/foo-1.0.0.crate");
    assert_eq!(r.status, 200, "served, so kept open");
    assert_eq!(r.body, fs::read(&path).unwrap());
    // Same inode, now empty: no writer took the registry's lock.
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(tls_client(&cert), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, connect(&tls_addr));
    tls.write_all(b"GET /crates/foo/foo-1.0.0.crate HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    // Whatever this connection gets (a cut body, a close), the server lives on.
    let _ = support::try_read_bytes(&mut tls);
    match support::get_bytes(&srv.addrs[1], "/index/config.json") {
        Ok((status, _)) => assert_eq!(status, 200),
        Err(e) => panic!(
            "the server is gone ({e}): exit {:?}, log {:?}",
            srv.wait_exit(20),
            srv.log()
        ),
    }
    let (r, _, _) = tls_get(&tls_addr, &cert, "/index/config.json");
    assert_eq!(r.status, 200);
}

/// Puts `what` in place of the registry's lock file in one rename, as an admin's tool would.
fn replace_lock_file(s: &Sandbox, make: impl FnOnce(&std::path::Path)) {
    let tmp = s.reg().join("lock-replacement");
    make(&tmp);
    fs::rename(&tmp, s.reg().join(".palletizer.lock")).unwrap();
}

/// The lock file replaced by a symlink to a file elsewhere: writers lock (and close) the
/// target, so a watch on the link itself never hears of a write, and kept index files
/// were trusted stale until their 10 s were up.
#[test]
fn cli_writes_show_at_once_when_the_lock_file_is_a_symlink() {
    let (s, srv) = started();
    let mut c = connect(srv.addr());
    let mut buf = Vec::new();
    let mut kept = |c: &mut TcpStream| foo_index_on(c, &mut buf);
    assert!(kept(&mut c).contains("\"1.0.0\""));
    let target = s.path().join("elsewhere.lock");
    fs::write(&target, "").unwrap();
    replace_lock_file(&s, |tmp| std::os::unix::fs::symlink(&target, tmp).unwrap());
    // Served after the server saw the lock file replaced (it reads that first): kept open.
    assert!(!kept(&mut c).contains("\"1.1.0\""));
    add_crate(&s, "foo", "1.1.0");
    let after = kept(&mut c);
    assert!(after.contains("\"vers\":\"1.1.0\""), "{after}");
}

/// A FIFO renamed over the lock file: opening it for writing, to watch it, waited for a
/// reader inside the event loop, and the server answered nobody any more.
#[test]
fn a_fifo_in_place_of_the_lock_file_never_blocks_the_server() {
    let (s, srv) = started();
    assert_eq!(get(srv.addr(), "/index/3/f/foo").status, 200);
    replace_lock_file(&s, |tmp| {
        let path = std::ffi::CString::new(tmp.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    });
    // `connect` gives up reading after 20 s: a blocked loop fails here.
    assert_eq!(get(srv.addr(), "/index/3/f/foo").status, 200);
    assert_eq!(get(srv.addr(), "/index/config.json").status, 200);
}
