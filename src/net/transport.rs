//! Plain TCP and TLS behind one type, so the HTTP code runs the same over both.
//!
//! rustls is driven in its documented order: `read_tls` → `process_new_packets` → read
//! plaintext; its records go out with `write_tls` whenever it `wants_write`. The handshake
//! happens inside these calls, so a client stalled mid-handshake only ever yields
//! `WouldBlock` on its own connection.

use std::io::{self, IoSlice, Read, Write};
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Plaintext bytes queued in rustls before the socket must take some.
const TLS_PLAINTEXT_BATCH: usize = 64 * 1024;

pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

pub struct TlsStream {
    sock: TcpStream,
    conn: ServerConnection,
    /// The handshake ended in a protocol error (counted for `/metrics`).
    handshake_failed: bool,
}

/// What a connection needs from its byte stream. Plain TCP and TLS implement it; tests
/// drive a connection through a scripted in-memory stream that injects `WouldBlock`s and
/// short reads and writes.
pub trait Stream {
    /// Reads plaintext. `Ok(0)` is the end of the stream.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes or queues plaintext; returns how much was taken.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Sends what the stream has buffered. `Ok(true)` once nothing is left.
    fn flush(&mut self) -> io::Result<bool>;
    /// Whether the stream holds bytes the socket has not taken yet.
    fn has_pending_output(&self) -> bool;
    /// Starts an orderly close (TLS: close_notify, best effort); the peer may still send.
    fn close(&mut self);
    /// The socket, when bytes reach it unchanged (plain TCP): then a short read proves the
    /// kernel's buffer empty, and files may go out with `sendfile`.
    fn plain_socket(&self) -> Option<&TcpStream> {
        None
    }
    /// A TLS handshake on this stream failed with a protocol error.
    fn handshake_failed(&self) -> bool {
        false
    }
}

impl Transport {
    pub fn tls(sock: TcpStream, config: Arc<ServerConfig>) -> io::Result<Transport> {
        let conn = ServerConnection::new(config).map_err(io::Error::other)?;
        Ok(Transport::Tls(Box::new(TlsStream {
            sock,
            conn,
            handshake_failed: false,
        })))
    }

    pub fn socket(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &mut t.sock,
        }
    }
}

impl Stream for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(t) => t.read(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write_vectored(bufs),
            Transport::Tls(t) => t.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<bool> {
        match self {
            Transport::Plain(_) => Ok(true),
            Transport::Tls(t) => t.flush_tls(),
        }
    }

    fn has_pending_output(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(t) => t.conn.wants_write(),
        }
    }

    fn close(&mut self) {
        if let Transport::Tls(t) = self {
            t.conn.send_close_notify();
            let _ = t.flush_tls();
        }
        let _ = self.socket().shutdown(std::net::Shutdown::Write);
    }

    fn plain_socket(&self) -> Option<&TcpStream> {
        match self {
            Transport::Plain(s) => Some(s),
            Transport::Tls(_) => None,
        }
    }

    fn handshake_failed(&self) -> bool {
        matches!(self, Transport::Tls(t) if t.handshake_failed)
    }
}

impl TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            match self.conn.read_tls(&mut self.sock) {
                Ok(0) => return Ok(0),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
            if let Err(e) = self.conn.process_new_packets() {
                self.handshake_failed = self.conn.is_handshaking();
                // Send the alert rustls queued for the peer before giving up.
                let _ = self.flush_tls();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            // Handshake messages to send go out now; if the socket is full they wait for
            // the next writable event.
            if self.conn.wants_write() {
                match self.flush_tls() {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.conn.wants_write() && !self.flush_tls()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut taken = 0;
        for b in bufs {
            if taken >= TLS_PLAINTEXT_BATCH {
                break;
            }
            let part = &b[..b.len().min(TLS_PLAINTEXT_BATCH - taken)];
            let n = self.conn.writer().write(part)?;
            taken += n;
            if n < part.len() {
                break;
            }
        }
        match self.flush_tls() {
            Ok(_) => Ok(taken),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && taken > 0 => Ok(taken),
            Err(e) => Err(e),
        }
    }

    /// Writes TLS records until none are left (`Ok(true)`) or the socket is full (`WouldBlock`).
    fn flush_tls(&mut self) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// Builds a rustls server config from PEM files: TLS 1.2 and 1.3, ALPN `http/1.1` only
/// (curl offers h2 too, and this server does not speak it).
pub fn load_tls(certificate_chain: &Path, private_key: &Path) -> Result<Arc<ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate_chain)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "reading certificates from {}: {e}",
                certificate_chain.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", certificate_chain.display()));
    }
    let key = PrivateKeyDer::from_pem_file(private_key)
        .map_err(|e| format!("reading private key from {}: {e}", private_key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not fit together: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
