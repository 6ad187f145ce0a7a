//! A minimal HTTP/1.1 client for one request at a time: a POST on a new connection (plain
//! TCP, or TLS through rustls with the system's root certificates), `Connection: close`,
//! bounded in time at every step. Only the status line of the answer is read.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::registry::HookUrl;

/// How long connecting to one address may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one read or write may wait.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the whole exchange may take, connection and TLS handshake included (a receiver
/// sending its status line a byte at a time is cut off).
pub const DEADLINE: Duration = Duration::from_secs(30);
/// The longest status line read.
const MAX_STATUS_LINE: usize = 1024;

/// Where the system keeps its root certificates, in the order looked at after
/// `SSL_CERT_FILE`: Debian and its family, Fedora and RHEL, openSUSE, Alpine and the BSDs.
const ROOT_BUNDLES: [&str; 5] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Why a POST got no status.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Url(String),
    #[error("resolving {0}: {1}")]
    Resolve(String, io::Error),
    #[error("connecting to {0}: {1}")]
    Connect(String, io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("no answer within {}s", DEADLINE.as_secs())]
    Deadline,
    #[error("not an HTTP answer: {0:?}")]
    NotHttp(String),
}

/// The TLS client configuration, made on the first `https://` delivery: reading the roots
/// costs a few hundred KiB, which a registry without such a webhook never spends.
#[derive(Default)]
pub struct Tls {
    config: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

impl Tls {
    /// A configuration that trusts `roots` only (tests).
    pub fn with_roots(roots: rustls::RootCertStore) -> Tls {
        let tls = Tls::default();
        let _ = tls.config.set(Ok(client_config(roots)));
        tls
    }

    fn config(&self) -> Result<Arc<rustls::ClientConfig>, Failure> {
        self.config
            .get_or_init(|| system_roots().map(client_config))
            .clone()
            .map_err(Failure::Tls)
    }
}

fn client_config(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// The system's root certificates: `SSL_CERT_FILE` if set, else the first bundle of
/// [`ROOT_BUNDLES`] that holds any.
fn system_roots() -> Result<rustls::RootCertStore, String> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    let mut looked = Vec::new();
    for path in from_env
        .into_iter()
        .chain(ROOT_BUNDLES.iter().map(|p| std::path::PathBuf::from(*p)))
    {
        let mut roots = rustls::RootCertStore::empty();
        if let Ok(certs) = CertificateDer::pem_file_iter(&path) {
            roots.add_parsable_certificates(certs.flatten());
        }
        if !roots.is_empty() {
            return Ok(roots);
        }
        looked.push(path.display().to_string());
    }
    Err(format!(
        "no root certificates in {} (install ca-certificates, or set SSL_CERT_FILE)",
        looked.join(", ")
    ))
}

/// POSTs `body` with `headers` (besides `Host`, `Content-Length` and `Connection`) to
/// `url`; returns the answer's status.
pub fn post(url: &str, headers: &[(&str, &str)], body: &[u8], tls: &Tls) -> Result<u16, Failure> {
    let started = Instant::now();
    let url = HookUrl::parse(url).map_err(Failure::Url)?;
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        url.target,
        url.authority,
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut tcp = connect(&url)?;
    if url.tls {
        let name = ServerName::try_from(url.host.clone())
            .map_err(|e| Failure::Tls(format!("{}: {e}", url.host)))?;
        let conn = rustls::ClientConnection::new(tls.config()?, name)
            .map_err(|e| Failure::Tls(e.to_string()))?;
        exchange(
            &mut rustls::StreamOwned::new(conn, tcp),
            &head,
            body,
            started,
        )
    } else {
        exchange(&mut tcp, &head, body, started)
    }
}

/// A connection to the first of the host's addresses that answers.
fn connect(url: &HookUrl) -> Result<TcpStream, Failure> {
    let addrs = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| Failure::Resolve(url.host.clone(), e))?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(Failure::Connect(url.authority.clone(), last))
}

/// Sends the request and reads the status line.
fn exchange(
    s: &mut (impl Read + Write),
    head: &str,
    body: &[u8],
    started: Instant,
) -> Result<u16, Failure> {
    s.write_all(head.as_bytes()).map_err(tls_or_io)?;
    s.write_all(body).map_err(tls_or_io)?;
    s.flush().map_err(tls_or_io)?;
    let mut got = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    loop {
        if let Some(end) = got.windows(2).position(|w| w == b"\r\n") {
            return status(&got[..end]);
        }
        if got.len() >= MAX_STATUS_LINE {
            return status(&got);
        }
        if started.elapsed() > DEADLINE {
            return Err(Failure::Deadline);
        }
        match s.read(&mut buf) {
            Ok(0) if got.is_empty() => {
                return Err(Failure::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed without an answer",
                )))
            }
            Ok(0) => return status(&got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(tls_or_io(e)),
        }
    }
}

/// rustls reports a refused certificate as `InvalidData` with its own error inside.
fn tls_or_io(e: io::Error) -> Failure {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => Failure::Tls(tls.to_string()),
        None => Failure::Io(e),
    }
}

/// The status of `HTTP/1.x NNN reason`.
fn status(line: &[u8]) -> Result<u16, Failure> {
    let text = String::from_utf8_lossy(line);
    let mut parts = text.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(Failure::NotHttp(text.chars().take(80).collect()));
    }
    code.parse()
        .map_err(|_| Failure::NotHttp(text.chars().take(80).collect()))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A receiver that answers `answer` to one request and hands back what it read.
    fn receiver(answer: &'static [u8]) -> (String, std::thread::JoinHandle<Vec<u8>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook?x=1", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let got = read_request(&mut c);
            c.write_all(answer).unwrap();
            got
        });
        (url, h)
    }

    /// A whole request: head and `Content-Length` bytes of body.
    pub(crate) fn read_request(c: &mut impl Read) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = c.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .unwrap()
                    .parse()
                    .unwrap();
                if body.len() >= len {
                    return got;
                }
            }
            assert!(n > 0, "closed mid-request");
        }
    }

    #[test]
    fn a_post_sends_its_headers_and_body_and_reads_the_status() {
        let (url, h) = receiver(b"HTTP/1.1 204 No Content\r\n\r\n");
        let status = post(&url, &[("X-A", "b")], b"{\"k\":1}", &Tls::default()).unwrap();
        assert_eq!(status, 204);
        let got = String::from_utf8(h.join().unwrap()).unwrap();
        assert!(
            got.starts_with("POST /hook?x=1 HTTP/1.1\r\nHost: 127.0.0.1:"),
            "{got}"
        );
        assert!(got.contains("\r\nX-A: b\r\n"), "{got}");
        assert!(got.contains("\r\nContent-Length: 7\r\n"), "{got}");
        assert!(got.ends_with("\r\n\r\n{\"k\":1}"), "{got}");

        let (url, _h) = receiver(b"HTTP/1.0 503 Busy\r\n");
        assert_eq!(post(&url, &[], b"", &Tls::default()).unwrap(), 503);
        let (url, _h) = receiver(b"SSH-2.0-OpenSSH\r\n");
        assert!(matches!(
            post(&url, &[], b"", &Tls::default()),
            Err(Failure::NotHttp(_))
        ));
    }

    #[test]
    fn a_closed_port_fails_to_connect() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = post(
            &format!("http://127.0.0.1:{port}/"),
            &[],
            b"",
            &Tls::default(),
        )
        .unwrap_err();
        assert!(matches!(e, Failure::Connect(..)), "{e}");
    }

    /// HTTPS against a receiver whose certificate the given roots hold; refused with others.
    #[test]
    fn https_checks_the_receivers_certificate() {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![ck.cert.der().clone()], key)
                .unwrap(),
        );
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://localhost:{}/tls", l.local_addr().unwrap().port());
        let h = std::thread::spawn(move || {
            for answer_it in [true, false] {
                let (c, _) = l.accept().unwrap();
                let conn = rustls::ServerConnection::new(server.clone()).unwrap();
                let mut s = rustls::StreamOwned::new(conn, c);
                if answer_it {
                    read_request(&mut s);
                    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .unwrap();
                    let _ = s.flush();
                } else {
                    // The client refuses the certificate: the handshake fails here.
                    let mut buf = [0u8; 16];
                    let _ = s.read(&mut buf);
                }
            }
        });
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ck.cert.der().clone()).unwrap();
        assert_eq!(post(&url, &[], b"x", &Tls::with_roots(roots)).unwrap(), 200);
        let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let mut wrong = rustls::RootCertStore::empty();
        wrong.add(other.cert.der().clone()).unwrap();
        let e = post(&url, &[], b"x", &Tls::with_roots(wrong)).unwrap_err();
        assert!(matches!(e, Failure::Tls(_)), "{e}");
        h.join().unwrap();
    }
}
