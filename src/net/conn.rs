//! One client connection: an enum of phases moved by value, and the readiness the kernel
//! reported, kept apart from what the phase wants.
//!
//! Sockets are registered once for read and write, edge-triggered. A readiness bit is set
//! by an event and cleared only on `WouldBlock`, so nothing is lost while a phase does not
//! want that direction (a response being written stops reading; pipelined requests wait).

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::http::api::Spooled;
use crate::http::{self, request, Body, BodyCursor, Head, Job, Method, Response, Routed};

use super::transport::Transport;
use super::worker::Ticket;
use super::Shared;

/// Read size while a head arrives.
const READ_CHUNK: usize = 4096;
/// Read size while a body arrives (on the stack, then to the spool file).
const BODY_CHUNK: usize = 16 * 1024;
/// How long a connection may wait for the registry worker.
const JOB_TIMEOUT: Duration = Duration::from_secs(600);
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// Steps one connection may take per turn of the loop before others get theirs.
const BUDGET: usize = 32;

pub enum Phase {
    /// Nothing buffered: a new connection, a TLS handshake, or a kept-alive one between
    /// requests. Holds no buffer.
    Idle,
    /// A request head is arriving.
    Head(Vec<u8>),
    /// A request body is arriving.
    Body(Box<Upload>),
    /// The registry worker runs the request's job.
    Waiting(Box<Waiting>),
    /// A response is going out.
    Write(Box<Outgoing>),
    /// Done; the loop removes the connection.
    Closed,
}

/// A response in flight, with what comes after it.
pub struct Outgoing {
    head: Vec<u8>,
    head_pos: usize,
    body: BodyCursor,
    /// Bytes of pipelined requests read after this one's head.
    leftover: Vec<u8>,
    keep_alive: bool,
    log: Option<LogLine>,
}

/// A request body being read, and what to do once it is complete.
pub struct Upload {
    log: LogLine,
    keep_alive: bool,
    remaining: u64,
    /// Bytes of `100 Continue` already sent (None: not asked for).
    continue_sent: Option<usize>,
    /// The spool file and what it becomes; None: the body is read and dropped.
    spool: Option<(File, PathBuf, Spooled)>,
    then: Option<Job>,
    leftover: Vec<u8>,
}

impl Drop for Upload {
    fn drop(&mut self) {
        // A body never handed to the worker (client gone, timeout) leaves no file behind.
        if let Some((_, path, _)) = self.spool.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A request whose job the worker runs.
pub struct Waiting {
    log: LogLine,
    keep_alive: bool,
    leftover: Vec<u8>,
}

/// What one request's log line says.
#[derive(Clone)]
struct LogLine {
    method: &'static str,
    target: String,
    status: u16,
    bytes: u64,
    start: Instant,
}

pub struct Conn {
    /// Slab key and a serial number unique over the server's life: a worker's answer
    /// carries both, so it never reaches a later connection in the same slot.
    pub key: usize,
    pub serial: u64,
    pub transport: Transport,
    pub phase: Phase,
    pub readable: bool,
    pub writable: bool,
    /// The peer's FIN was reported: reads must go on until they return 0.
    pub read_closed: bool,
    pub deadline: Instant,
    pub peer: SocketAddr,
    /// No new request is started (shutdown).
    pub draining: bool,
}

/// What a turn of the connection ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum Turn {
    /// Waiting for readiness.
    Parked,
    /// Budget used up with work left: run again soon.
    Again,
    Closed,
}

impl Conn {
    pub fn new(
        key: usize,
        serial: u64,
        transport: Transport,
        peer: SocketAddr,
        deadline: Instant,
    ) -> Conn {
        Conn {
            key,
            serial,
            transport,
            phase: Phase::Idle,
            readable: false,
            writable: false,
            read_closed: false,
            deadline,
            peer,
            draining: false,
        }
    }

    /// Whether the connection sits between requests (safe to close at shutdown).
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Idle) && !self.transport.has_pending_output()
    }

    /// Advances the connection as far as readiness allows.
    pub fn drive(&mut self, shared: &Shared) -> Turn {
        for _ in 0..BUDGET {
            let step = match std::mem::replace(&mut self.phase, Phase::Closed) {
                Phase::Idle => self.step_idle(shared),
                Phase::Head(buf) => self.step_head(buf, shared),
                Phase::Write(out) => self.step_write(out, shared),
                Phase::Body(up) => self.step_body(up, shared),
                Phase::Waiting(w) => {
                    self.phase = Phase::Waiting(w);
                    Ok(false)
                }
                Phase::Closed => return Turn::Closed,
            };
            match step {
                Ok(true) => continue,
                Ok(false) => return Turn::Parked,
                Err(()) => {
                    self.phase = Phase::Closed;
                    self.transport.close();
                    return Turn::Closed;
                }
            }
        }
        if matches!(self.phase, Phase::Closed) {
            Turn::Closed
        } else {
            Turn::Again
        }
    }

    /// A plain TCP read that returned less than asked for emptied the socket buffer: no
    /// need for another read to see `WouldBlock` (new data brings a new edge). Saves a
    /// system call per request. TLS keeps reading, as rustls may hold decrypted bytes.
    /// Not when the peer's FIN was already reported: it brings no further edge.
    fn note_short_read(&mut self, n: usize, asked: usize) {
        if n < asked && !self.read_closed && matches!(self.transport, Transport::Plain(_)) {
            self.readable = false;
        }
    }

    /// One read: `Some(n)` bytes arrived, `None` nothing for now (readiness cleared, pending
    /// TLS records flushed), `Err` the peer is gone or the read failed.
    fn read_some(&mut self, buf: &mut [u8]) -> Result<Option<usize>, ()> {
        loop {
            match self.transport.read(buf) {
                Ok(0) => return Err(()),
                Ok(n) => {
                    self.note_short_read(n, buf.len());
                    return Ok(Some(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    self.flush_pending()?;
                    return Ok(None);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
    }

    /// Flushes TLS records left over (handshake, alerts) when the socket allows.
    fn flush_pending(&mut self) -> Result<(), ()> {
        if self.writable && self.transport.has_pending_output() {
            match self.transport.flush() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(_) => return Err(()),
            }
        }
        Ok(())
    }

    // Each step returns Ok(true) to keep going, Ok(false) to park, Err to close. The phase
    // must be put back before returning Ok.

    fn step_idle(&mut self, shared: &Shared) -> Result<bool, ()> {
        self.phase = Phase::Idle;
        self.flush_pending()?;
        if self.draining {
            return Err(());
        }
        if !self.readable {
            return Ok(false);
        }
        let mut stack = [0u8; READ_CHUNK];
        let Some(n) = self.read_some(&mut stack)? else {
            return Ok(false);
        };
        self.deadline = Instant::now() + shared.limits.head_timeout();
        self.phase = Phase::Head(stack[..n].to_vec());
        Ok(true)
    }

    fn step_head(&mut self, mut buf: Vec<u8>, shared: &Shared) -> Result<bool, ()> {
        match request::parse(&buf, shared.limits.max_head) {
            Ok(Some(head)) => {
                let leftover = buf.split_off(head.len);
                self.respond(head, leftover, shared);
                return Ok(true);
            }
            Ok(None) => {}
            Err(e) => {
                let r = Response::error(e.status, e.detail);
                let log = LogLine {
                    method: "-",
                    target: "(malformed request)".into(),
                    status: 0,
                    bytes: 0,
                    start: Instant::now(),
                };
                self.queue_response(r, Some(log), Vec::new(), false, false);
                return Ok(true);
            }
        }
        if !self.readable {
            self.phase = Phase::Head(buf);
            return Ok(false);
        }
        let len = buf.len();
        buf.resize(len + READ_CHUNK, 0);
        let got = self.read_some(&mut buf[len..])?;
        buf.truncate(len + got.unwrap_or(0));
        self.phase = Phase::Head(buf);
        Ok(got.is_some())
    }

    /// Routes a complete head: queues the answer, or starts reading a body, or hands a job
    /// to the worker.
    fn respond(&mut self, head: Head, mut leftover: Vec<u8>, shared: &Shared) {
        let start = Instant::now();
        let routed = http::route(&shared.site, &head);
        let head_only = head.method == Method::Head;
        let log = LogLine {
            method: head.method.as_str(),
            target: head.target,
            status: 0,
            bytes: 0,
            start,
        };
        let keep_alive = head.keep_alive;
        let (spool, then) = match routed {
            Routed::Done(r) => {
                // A body we do not read would be taken for the next request: answer, close.
                let keep_alive = keep_alive && head.content_length == 0;
                self.queue_response(r, Some(log), leftover, keep_alive, head_only);
                return;
            }
            Routed::Job(job) => {
                self.start_job(job, log, keep_alive, leftover, shared);
                return;
            }
            Routed::AfterBody(job) => (None, Some(job)),
            Routed::Upload(kind) => {
                let path = crate::registry::temp_path(&shared.spool_dir, "upload");
                match File::create(&path) {
                    Ok(f) => (Some((f, path, kind)), None),
                    Err(e) => {
                        eprintln!("error: creating an upload file: {e}");
                        self.queue_response(upload_failed(), Some(log), Vec::new(), false, false);
                        return;
                    }
                }
            }
        };
        let rest = leftover.split_off((head.content_length.min(leftover.len() as u64)) as usize);
        let mut up = Box::new(Upload {
            log,
            keep_alive,
            remaining: head.content_length,
            continue_sent: head.expect_continue.then_some(0),
            spool,
            then,
            leftover: rest,
        });
        if !leftover.is_empty() && up.take_body(&leftover).is_err() {
            self.queue_response(
                upload_failed(),
                Some(up.log.clone()),
                Vec::new(),
                false,
                false,
            );
            return;
        }
        if up.remaining < head.content_length {
            up.continue_sent = None; // the client sent the body without waiting
        }
        self.deadline = Instant::now() + shared.limits.io_timeout();
        self.phase = Phase::Body(up);
    }

    fn start_job(
        &mut self,
        job: Job,
        log: LogLine,
        keep_alive: bool,
        leftover: Vec<u8>,
        shared: &Shared,
    ) {
        let ticket = Ticket {
            key: self.key,
            serial: self.serial,
            job,
        };
        if shared.jobs.send(ticket).is_err() {
            let r = Response::error(503, "the registry worker is not running");
            self.queue_response(r, Some(log), Vec::new(), false, false);
            return;
        }
        self.deadline = Instant::now() + JOB_TIMEOUT;
        self.phase = Phase::Waiting(Box::new(Waiting {
            log,
            keep_alive,
            leftover,
        }));
    }

    /// The worker's answer for this connection's request.
    pub fn finish_job(&mut self, response: Response) {
        if let Phase::Waiting(w) = std::mem::replace(&mut self.phase, Phase::Closed) {
            let w = *w;
            self.queue_response(response, Some(w.log), w.leftover, w.keep_alive, false);
        }
    }

    fn step_body(&mut self, mut up: Box<Upload>, shared: &Shared) -> Result<bool, ()> {
        if let Some(sent) = up.continue_sent {
            if sent < CONTINUE.len() {
                if !self.writable {
                    self.phase = Phase::Body(up);
                    return Ok(false);
                }
                match self
                    .transport
                    .write_vectored(&[IoSlice::new(&CONTINUE[sent..])])
                {
                    Ok(n) => up.continue_sent = Some(sent + n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Err(()),
                }
                self.phase = Phase::Body(up);
                return Ok(true);
            }
        }
        if up.remaining == 0 {
            let mut up = up;
            let job = match up.spool.take() {
                Some((file, path, kind)) => {
                    drop(file);
                    kind.job(path)
                }
                None => up.then.take().expect("a body without spool has a job"),
            };
            let log = up.log.clone();
            let leftover = std::mem::take(&mut up.leftover);
            self.start_job(job, log, up.keep_alive, leftover, shared);
            return Ok(true);
        }
        if !self.readable {
            self.phase = Phase::Body(up);
            return Ok(false);
        }
        let mut buf = [0u8; BODY_CHUNK];
        let want = (up.remaining.min(BODY_CHUNK as u64)) as usize;
        // On Err the client is gone mid-body: Upload's drop removes the spool file.
        let Some(n) = self.read_some(&mut buf[..want])? else {
            self.phase = Phase::Body(up);
            return Ok(false);
        };
        if up.take_body(&buf[..n]).is_err() {
            let log = up.log.clone();
            self.queue_response(upload_failed(), Some(log), Vec::new(), false, false);
            return Ok(true);
        }
        self.deadline = Instant::now() + shared.limits.io_timeout();
        self.phase = Phase::Body(up);
        Ok(true)
    }

    fn queue_response(
        &mut self,
        mut r: Response,
        mut log: Option<LogLine>,
        leftover: Vec<u8>,
        keep_alive: bool,
        head_only: bool,
    ) {
        // A stopping server announces the close on every answer still going out.
        let keep_alive = keep_alive && !r.close && !self.draining;
        let head = r.render_head(keep_alive);
        if head_only {
            r.body = Body::Empty;
        }
        if let Some(l) = &mut log {
            l.bytes = r.body.len();
            l.status = r.status;
        }
        self.phase = Phase::Write(Box::new(Outgoing {
            head,
            head_pos: 0,
            body: BodyCursor::new(r.body),
            leftover,
            keep_alive,
            log,
        }));
    }

    fn step_write(&mut self, mut out: Box<Outgoing>, shared: &Shared) -> Result<bool, ()> {
        if !self.writable {
            self.phase = Phase::Write(out);
            return Ok(false);
        }
        let remaining = (out.head.len() - out.head_pos) as u64 + out.body.remaining();
        if remaining > 0 {
            let result = if let (Transport::Plain(sock), Some((file, offset, left))) =
                (&self.transport, out.body.sendfile_source())
            {
                send_head_then_file(sock, &out.head[out.head_pos..], file, offset, left)
            } else {
                let chunk = match out.body.chunk() {
                    Ok(c) => c,
                    Err(_) => return Err(()),
                };
                let bufs = [IoSlice::new(&out.head[out.head_pos..]), IoSlice::new(chunk)];
                self.transport.write_vectored(&bufs)
            };
            match result {
                Ok(0) => return Err(()),
                Ok(mut n) => {
                    let from_head = n.min(out.head.len() - out.head_pos);
                    out.head_pos += from_head;
                    n -= from_head;
                    out.body.advance(n);
                    self.deadline = Instant::now() + shared.limits.io_timeout();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
            self.phase = Phase::Write(out);
            return Ok(self.writable);
        }
        match self.transport.flush() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.writable = false;
                self.phase = Phase::Write(out);
                return Ok(false);
            }
            Err(_) => return Err(()),
        }
        if let Some(l) = out.log.take() {
            shared.log_request(self.peer, l.method, &l.target, l.status, l.bytes, l.start);
        }
        if !out.keep_alive {
            return Err(());
        }
        if out.leftover.is_empty() {
            self.deadline = Instant::now() + shared.limits.idle_timeout();
            self.phase = Phase::Idle;
        } else {
            self.deadline = Instant::now() + shared.limits.head_timeout();
            self.phase = Phase::Head(std::mem::take(&mut out.leftover));
        }
        Ok(true)
    }
}

impl Upload {
    /// Takes body bytes: to the spool file, or dropped.
    fn take_body(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.remaining -= bytes.len() as u64;
        match &mut self.spool {
            Some((f, _, _)) => f.write_all(bytes),
            None => Ok(()),
        }
    }
}

fn upload_failed() -> Response {
    Response::error(500, "cannot store the upload; the server log has details")
}

/// Plain TCP and a small file: the head with `MSG_MORE` (so head and body leave in one
/// segment), then the file with `sendfile`, without copying it through user space. Returns
/// the bytes sent, head first, as `write_vectored` would.
fn send_head_then_file(
    sock: &mio::net::TcpStream,
    head: &[u8],
    file: &File,
    offset: u64,
    left: u64,
) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    if !head.is_empty() {
        // SAFETY: a valid socket and a live buffer of `head.len()` bytes.
        let n = unsafe {
            libc::send(
                sock.as_raw_fd(),
                head.as_ptr().cast(),
                head.len(),
                libc::MSG_MORE | libc::MSG_NOSIGNAL,
            )
        };
        return if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        };
    }
    let mut off = offset as libc::off_t;
    // SAFETY: valid socket and file descriptors; `off` is a live off_t the call advances.
    let n = unsafe { libc::sendfile(sock.as_raw_fd(), file.as_raw_fd(), &mut off, left as usize) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n == 0 {
        // The file is shorter than when it was opened: never for a crate file.
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(n as usize)
}
