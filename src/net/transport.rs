//! Plain TCP and TLS behind one type, so the HTTP code runs the same over both.
//!
//! TLS uses rustls's unbuffered API: rustls keeps only the session's state (keys, sequence
//! numbers), and the three byte buffers live here, each allocated only while it holds
//! bytes. A kept-alive TLS connection between requests then costs the session and no
//! buffer; with rustls's buffered `ServerConnection` it kept a 4 KiB receive buffer (and
//! the queues' capacity) for the whole of its idle time.
//!
//! The records are driven in rustls's documented order: received ciphertext goes through
//! `process_tls_records` until it asks for more; handshake records it hands out are queued
//! and written when the socket takes them; plaintext is encrypted only in the
//! `WriteTraffic` state. The handshake happens inside `read`, so a client stalled
//! mid-handshake only ever yields `WouldBlock` on its own connection.

use std::io::{self, IoSlice, Read, Write};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Plaintext encrypted per write before the socket must take some.
const TLS_PLAINTEXT_BATCH: usize = 64 * 1024;
/// Ciphertext read per system call when nothing is buffered: a request head fits, and
/// small reads keep the buffer small.
const TLS_FIRST_READ: usize = 4096;
/// Ciphertext read per system call while a record is incomplete: one whole record of the largest size a peer may send
/// (16 KiB of payload plus what TLS 1.2 allows for padding and the tag).
const TLS_READ: usize = 16 * 1024 + 2048 + 5;
/// Ciphertext a connection may hold before its handshake is done.
const MAX_HANDSHAKE_BUFFERED: usize = 20 * 1024;
/// Room reserved per record of output beyond its plaintext (header, tag, content type).
const RECORD_OVERHEAD: usize = 64;
/// Largest plaintext in one record.
const RECORD_PAYLOAD: usize = 16 * 1024;

pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

pub struct TlsStream {
    sock: TcpStream,
    conn: UnbufferedServerConnection,
    /// Ciphertext read and not yet consumed by rustls: a partial record, or a handshake
    /// message split over records. Empty (no allocation) between requests.
    incoming: Vec<u8>,
    /// Decrypted bytes the caller has not read yet; `plain_pos` is how far it has.
    plain: Vec<u8>,
    plain_pos: usize,
    /// Records (handshake, application data, alerts) the socket has not taken yet;
    /// `out_pos` is how far it has.
    outgoing: Vec<u8>,
    out_pos: usize,
    /// The peer sent close_notify: reads end after the plaintext before it.
    peer_closed: bool,
    /// rustls failed the connection; it stays failed.
    failed: bool,
    /// The handshake ended in a protocol error (counted for `/metrics`).
    handshake_failed: bool,
}

/// What one pass over rustls's states may do once application data can be sent.
#[derive(Clone, Copy)]
enum Send<'a> {
    Nothing,
    Data(&'a [IoSlice<'a>]),
    CloseNotify,
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
        let conn = UnbufferedServerConnection::new(config).map_err(io::Error::other)?;
        Ok(Transport::Tls(Box::new(TlsStream {
            sock,
            conn,
            incoming: Vec::new(),
            plain: Vec::new(),
            plain_pos: 0,
            outgoing: Vec::new(),
            out_pos: 0,
            peer_closed: false,
            failed: false,
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
            Transport::Tls(t) => t.out_pos < t.outgoing.len(),
        }
    }

    fn close(&mut self) {
        if let Transport::Tls(t) = self {
            if !t.failed && !t.conn.is_handshaking() {
                let _ = t.advance(Send::CloseNotify);
            }
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
            if self.plain_pos < self.plain.len() {
                let n = buf.len().min(self.plain.len() - self.plain_pos);
                buf[..n].copy_from_slice(&self.plain[self.plain_pos..self.plain_pos + n]);
                self.plain_pos += n;
                if self.plain_pos == self.plain.len() {
                    release(&mut self.plain);
                    self.plain_pos = 0;
                }
                return Ok(n);
            }
            if self.peer_closed {
                return Ok(0);
            }
            if self.failed {
                return Err(io::ErrorKind::InvalidData.into());
            }
            let len = self.incoming.len();
            if len > MAX_HANDSHAKE_BUFFERED && self.conn.is_handshaking() {
                // Real ClientHellos are a few KiB; a peer trickling in a 64 KiB one holds
                // that much of ours per connection until the head timeout.
                self.fail();
                return Err(io::ErrorKind::InvalidData.into());
            }
            let want = if len == 0 { TLS_FIRST_READ } else { TLS_READ };
            // Exactly what is needed: growing by doubling would hold twice the data.
            self.incoming.reserve_exact(want);
            self.incoming.resize(len + want, 0);
            let got = self.sock.read(&mut self.incoming[len..]);
            self.incoming.truncate(len + *got.as_ref().unwrap_or(&0));
            match got {
                Ok(0) => return Ok(0),
                Ok(_) => {}
                Err(e) => {
                    if self.incoming.is_empty() {
                        release(&mut self.incoming);
                    }
                    return Err(e);
                }
            }
            if let Err(e) = self.advance(Send::Nothing) {
                self.fail();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            // Handshake records go out now; if the socket is full they wait for the next
            // writable event.
            match self.flush_tls() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.failed {
            return Err(io::ErrorKind::InvalidData.into());
        }
        self.flush_tls()?;
        let taken = match self.advance(Send::Data(bufs)) {
            Ok(n) => n,
            Err(e) => {
                self.fail();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        };
        if taken == 0 && bufs.iter().any(|b| !b.is_empty()) {
            // Only before the handshake is done, which the connection never asks for.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.flush_tls() {
            Ok(_) => Ok(taken),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(taken),
            Err(e) => Err(e),
        }
    }

    /// Writes queued records until none are left (`Ok(true)`, the buffer released) or the
    /// socket is full (`WouldBlock`).
    fn flush_tls(&mut self) -> io::Result<bool> {
        while self.out_pos < self.outgoing.len() {
            match self.sock.write(&self.outgoing[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) => return Err(e),
            }
        }
        release(&mut self.outgoing);
        self.out_pos = 0;
        Ok(true)
    }

    /// A protocol error: refuse everything after, and never hand rustls anything again.
    ///
    /// rustls queues an alert for the peer, but getting it out means one more pass over
    /// the input, and every way of making that pass can panic inside rustls: with the
    /// failing bytes still there it parses them again and refuses to queue a second fatal
    /// alert; with them gone it slices the empty buffer at the offset of a handshake message
    /// it had half-read (a 19-byte client stopped the whole server that way). The peer
    /// learns of the failure when the connection closes; records already queued still go.
    fn fail(&mut self) {
        self.handshake_failed = self.conn.is_handshaking();
        self.failed = true;
        release(&mut self.incoming);
        release(&mut self.plain);
        self.plain_pos = 0;
        let _ = self.flush_tls();
    }

    /// Runs rustls over the received ciphertext until it needs more from the peer:
    /// decrypted data goes to `plain`, records to send to `outgoing`. Once application
    /// data may be sent, does what `send` asks and returns how many plaintext bytes it
    /// encrypted.
    fn advance(&mut self, send: Send<'_>) -> Result<usize, rustls::Error> {
        // A panic inside rustls (a state its unbuffered API does not expect) must cost this
        // connection, never the event loop and every other client with it.
        std::panic::catch_unwind(AssertUnwindSafe(|| self.advance_unguarded(send)))
            .unwrap_or_else(|_| Err(rustls::Error::General("TLS state machine failed".into())))
    }

    fn advance_unguarded(&mut self, send: Send<'_>) -> Result<usize, rustls::Error> {
        let TlsStream {
            conn,
            incoming,
            plain,
            outgoing,
            peer_closed,
            ..
        } = self;
        let mut taken = 0;
        loop {
            let status = conn.process_tls_records(incoming);
            let mut discard = status.discard;
            let mut done = false;
            match status.state {
                Err(e) => {
                    incoming.drain(..discard);
                    return Err(e);
                }
                Ok(ConnectionState::ReadTraffic(mut r)) => {
                    while let Some(record) = r.next_record() {
                        let record = record?;
                        discard += record.discard;
                        plain.extend_from_slice(record.payload);
                    }
                }
                Ok(ConnectionState::EncodeTlsData(mut e)) => {
                    let start = outgoing.len();
                    let need = match e.encode(&mut []) {
                        Err(EncodeError::InsufficientSize(InsufficientSizeError {
                            required_size,
                        })) => required_size,
                        _ => 0,
                    };
                    outgoing.resize(start + need, 0);
                    let n = e.encode(&mut outgoing[start..]).unwrap_or(0);
                    outgoing.truncate(start + n);
                }
                // The records are in `outgoing`, which is ours to send: rustls may go on.
                Ok(ConnectionState::TransmitTlsData(t)) => t.done(),
                Ok(ConnectionState::PeerClosed) => *peer_closed = true,
                Ok(ConnectionState::WriteTraffic(mut w)) => {
                    match send {
                        Send::Nothing => {}
                        Send::Data(bufs) => taken = encrypt(&mut w, bufs, outgoing)?,
                        Send::CloseNotify => {
                            let start = outgoing.len();
                            outgoing.resize(start + RECORD_OVERHEAD, 0);
                            let n = w.queue_close_notify(&mut outgoing[start..]).unwrap_or(0);
                            outgoing.truncate(start + n);
                        }
                    }
                    done = true;
                }
                Ok(ConnectionState::Closed) => {
                    *peer_closed = true;
                    done = true;
                }
                // Early data is not enabled, so anything else means: wait for the peer.
                Ok(_) => done = true,
            }
            incoming.drain(..discard);
            if done {
                break;
            }
        }
        if incoming.is_empty() {
            release(incoming);
        }
        Ok(taken)
    }
}

/// Encrypts up to [`TLS_PLAINTEXT_BATCH`] bytes of `bufs` into `out`; returns how many.
/// Slices that fit one record together (a response head and a small body) are sealed as
/// one: one encryption instead of one per slice, and one record less for the client.
fn encrypt(
    w: &mut rustls::unbuffered::WriteTraffic<'_, rustls::server::ServerConnectionData>,
    bufs: &[IoSlice<'_>],
    out: &mut Vec<u8>,
) -> Result<usize, rustls::Error> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    // A head alone (a 304, a HEAD answer) comes with an empty body slice: nothing to join.
    let pieces = bufs.iter().filter(|b| !b.is_empty()).count();
    if pieces > 1 && total <= RECORD_PAYLOAD {
        let mut one = Vec::with_capacity(total);
        for b in bufs {
            one.extend_from_slice(b);
        }
        seal(w, &one, out)?;
        return Ok(total);
    }
    let mut taken = 0;
    for b in bufs {
        if taken >= TLS_PLAINTEXT_BATCH {
            break;
        }
        let part = &b[..b.len().min(TLS_PLAINTEXT_BATCH - taken)];
        if part.is_empty() {
            continue;
        }
        seal(w, part, out)?;
        taken += part.len();
    }
    Ok(taken)
}

/// Encrypts all of `part` (as many records as it takes) onto the end of `out`.
fn seal(
    w: &mut rustls::unbuffered::WriteTraffic<'_, rustls::server::ServerConnectionData>,
    part: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), rustls::Error> {
    let start = out.len();
    let mut room = part.len() + RECORD_OVERHEAD * (part.len() / RECORD_PAYLOAD + 1);
    loop {
        out.resize(start + room, 0);
        match w.encrypt(part, &mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
                room = required_size;
            }
            // The sequence numbers ran out (2^64 records): the connection must end.
            Err(EncryptError::EncryptExhausted) => {
                out.truncate(start);
                return Err(rustls::Error::EncryptError);
            }
        }
    }
}

/// Gives an emptied buffer's memory back, so an idle connection holds none.
fn release(buf: &mut Vec<u8>) {
    if buf.capacity() > 0 {
        *buf = Vec::new();
    }
}
/// What keeps a TLS listener from starting.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading certificates from {path}: {source}")]
    Certificates {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("no certificate in {0}")]
    NoCertificate(PathBuf),
    #[error("reading private key from {path}: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("certificate and key do not fit together: {0}")]
    Mismatch(#[source] rustls::Error),
}

/// Builds a rustls server config from PEM files: TLS 1.2 and 1.3, ALPN `http/1.1` only
/// (curl offers h2 too, and this server does not speak it).
pub fn load_tls(
    certificate_chain: &Path,
    private_key: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate_chain)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certificates {
            path: certificate_chain.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(certificate_chain.to_owned()));
    }
    let key = PrivateKeyDer::from_pem_file(private_key).map_err(|source| TlsError::Key {
        path: private_key.to_owned(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Mismatch)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Mismatch)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls_pair() -> (
        Box<TlsStream>,
        rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
    ) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.path().join("k.pem"), ck.signing_key.serialize_pem()).unwrap();
        let server = load_tls(&dir.path().join("c.pem"), &dir.path().join("k.pem")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ck.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let (s, _) = listener.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        let Transport::Tls(t) = Transport::tls(TcpStream::from_std(s), server).unwrap() else {
            unreachable!()
        };
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
        (t, rustls::StreamOwned::new(conn, c))
    }

    /// Reads plaintext until `want` bytes arrived, as the event loop would: retrying on
    /// `WouldBlock`, flushing handshake records, bounded in time.
    fn server_read(t: &mut TlsStream, want: usize) -> Vec<u8> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.len() < want {
            match t.read(&mut buf) {
                Ok(0) => panic!("closed"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let _ = t.flush_tls();
                    assert!(std::time::Instant::now() < deadline, "no request");
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    /// A server side of TLS and a raw TCP client that can send any bytes.
    fn tls_and_raw_client() -> (Box<TlsStream>, std::net::TcpStream) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.path().join("k.pem"), ck.signing_key.serialize_pem()).unwrap();
        let server = load_tls(&dir.path().join("c.pem"), &dir.path().join("k.pem")).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (s, _) = listener.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        let Transport::Tls(t) = Transport::tls(TcpStream::from_std(s), server).unwrap() else {
            unreachable!()
        };
        (t, c)
    }

    /// Reads until the stream reports something other than `WouldBlock` (20 s at most).
    fn read_outcome(t: &mut TlsStream) -> io::Result<usize> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut buf = [0u8; 1024];
        loop {
            match t.read(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "no outcome");
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                other => return other,
            }
        }
    }

    /// The start of a ClientHello that announces 256 bytes, then a record of no valid type:
    /// rustls fails holding half a handshake message, and one more pass over an emptied
    /// buffer panicked inside it, which stopped the whole server.
    #[test]
    fn a_bad_record_after_half_a_handshake_message_fails_the_connection_only() {
        let (mut t, mut c) = tls_and_raw_client();
        c.write_all(&[
            0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0x01, 0x00, 0x03, 0x03, 0, 0,
        ])
        .unwrap();
        let r = read_outcome_or_block(&mut t);
        assert!(r.is_none(), "half a message is not an error yet: {r:?}");
        c.write_all(&[0xff, 0x03, 0x03, 0x00, 0x01, 0x00]).unwrap();
        let e = read_outcome(&mut t).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(t.failed && t.handshake_failed);
        // Everything after is refused without calling into rustls again.
        let mut buf = [0u8; 16];
        assert_eq!(
            t.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert!(t.write_vectored(&[IoSlice::new(b"x")]).is_err());
        Transport::Tls(t).close();
    }

    /// Reads once the bytes sent so far have arrived; `None` while it would block.
    fn read_outcome_or_block(t: &mut TlsStream) -> Option<io::Result<usize>> {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut buf = [0u8; 64];
        match t.read(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            other => Some(other),
        }
    }

    /// A peer trickling in a huge ClientHello is cut off past 20 KiB of buffered handshake.
    #[test]
    fn a_handshake_larger_than_any_client_hello_is_refused() {
        let (mut t, mut c) = tls_and_raw_client();
        // A handshake record header for a 60 KiB ClientHello, then its bytes.
        let mut hello = vec![
            0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0xf0, 0x00, 0x03, 0x03,
        ];
        hello.resize(5 + 0x4000, 0);
        let mut outcome = None;
        for _ in 0..4 {
            if c.write_all(&hello).is_err() {
                break;
            }
            outcome = read_outcome_or_block(&mut t);
            if outcome.is_some() {
                break;
            }
        }
        let e = outcome.expect("refused before 64 KiB").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(t.incoming.capacity(), 0);
    }

    fn holds_no_buffer(t: &TlsStream) -> bool {
        t.incoming.capacity() == 0 && t.plain.capacity() == 0 && t.outgoing.capacity() == 0
    }

    /// An idle TLS connection cost 4 KiB of receive buffer in rustls's buffered API, more
    /// than the rest of it together: between requests nothing must stay allocated here.
    #[test]
    fn idle_tls_connection_holds_no_buffer() {
        let (mut t, mut client) = tls_pair();
        let client_thread = std::thread::spawn(move || {
            let mut answers = Vec::new();
            for i in 0..2 {
                client
                    .write_all(format!("request {i}\n").as_bytes())
                    .unwrap();
                let mut b = vec![0u8; 100_000];
                client.read_exact(&mut b).unwrap();
                answers.push(b);
            }
            answers
        });
        for i in 0..2u8 {
            assert_eq!(server_read(&mut t, 10), format!("request {i}\n").as_bytes());
            assert!(holds_no_buffer(&t), "after reading request {i}");
            let body = vec![b'a' + i; 100_000];
            let mut sent = 0;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while sent < body.len() || t.out_pos < t.outgoing.len() {
                match t.write_vectored(&[IoSlice::new(&body[sent..])]) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        assert!(
                            std::time::Instant::now() < deadline,
                            "client stopped reading"
                        );
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            assert!(holds_no_buffer(&t), "after answering request {i}");
        }
        let answers = client_thread.join().unwrap();
        assert!(answers[0].iter().all(|&b| b == b'a'));
        assert!(answers[1].iter().all(|&b| b == b'b'));
    }

    /// A response head and a small body went out as two records (two encryptions on the
    /// server, two to open on the client); now one.
    #[test]
    fn a_head_and_a_small_body_go_out_as_one_record() {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.path().join("k.pem"), ck.signing_key.serialize_pem()).unwrap();
        let mut server =
            (*load_tls(&dir.path().join("c.pem"), &dir.path().join("k.pem")).unwrap()).clone();
        // No session tickets: every record after the handshake is then an answer's.
        server.send_tls13_tickets = 0;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ck.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut sock = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let (s, _) = listener.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        let Transport::Tls(mut t) =
            Transport::tls(TcpStream::from_std(s), Arc::new(server)).unwrap()
        else {
            unreachable!()
        };
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec();
        let body = vec![b'x'; 1000];
        let want = head.len() + body.len();
        let client_thread = std::thread::spawn(move || {
            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
            let mut conn = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
            while conn.is_handshaking() {
                conn.complete_io(&mut sock).unwrap();
            }
            conn.writer().write_all(b"request\n").unwrap();
            while conn.wants_write() {
                conn.write_tls(&mut sock).unwrap();
            }
            // Every byte of the answer as it came off the wire, and its plaintext.
            let (mut raw, mut plain) = (Vec::new(), Vec::new());
            let mut chunk = [0u8; 4096];
            while plain.len() < want {
                let n = sock.read(&mut chunk).unwrap();
                assert!(n > 0, "closed");
                raw.extend_from_slice(&chunk[..n]);
                conn.read_tls(&mut &chunk[..n]).unwrap();
                conn.process_new_packets().unwrap();
                let _ = conn.reader().read_to_end(&mut plain);
            }
            (raw, plain)
        });
        assert_eq!(server_read(&mut t, 8), b"request\n");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut sent = 0;
        while sent < want || t.out_pos < t.outgoing.len() {
            let rest: Vec<IoSlice<'_>> = if sent < head.len() {
                vec![IoSlice::new(&head[sent..]), IoSlice::new(&body)]
            } else {
                vec![IoSlice::new(&body[sent - head.len()..])]
            };
            match t.write_vectored(&rest) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "client stopped");
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        }
        let (raw, plain) = client_thread.join().unwrap();
        assert_eq!(plain, [head, body].concat());
        // TLS records: type, version (2 bytes), length (2 bytes), then that many bytes.
        let mut records = Vec::new();
        let mut at = 0;
        while at + 5 <= raw.len() {
            let len = usize::from(u16::from_be_bytes([raw[at + 3], raw[at + 4]]));
            records.push((raw[at], len));
            at += 5 + len;
        }
        assert_eq!(at, raw.len(), "whole records");
        assert_eq!(records.len(), 1, "{records:?}");
    }
}
