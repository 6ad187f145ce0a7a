//! One client connection: an enum of phases moved by value, and the readiness the kernel
//! reported, kept apart from what the phase wants.
//!
//! Sockets are registered once for read and write, edge-triggered. A readiness bit is set
//! by an event and cleared only on `WouldBlock`, so nothing is lost while a phase does not
//! want that direction (a response being written stops reading; pipelined requests wait).

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::time::Instant;

use crate::http::{self, request, Body, BodyCursor, Head, Method, Response};

use super::transport::Transport;
use super::Shared;

/// Read size while a head arrives.
const READ_CHUNK: usize = 4096;
/// Steps one connection may take per turn of the loop before others get theirs.
const BUDGET: usize = 32;

pub enum Phase {
    /// Nothing buffered: a new connection, a TLS handshake, or a kept-alive one between
    /// requests. Holds no buffer.
    Idle,
    /// A request head is arriving.
    Head(Vec<u8>),
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

/// What one request's log line says.
struct LogLine {
    method: Method,
    target: String,
    status: u16,
    bytes: u64,
    start: Instant,
}

pub struct Conn {
    pub transport: Transport,
    pub phase: Phase,
    pub readable: bool,
    pub writable: bool,
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
    pub fn new(transport: Transport, peer: SocketAddr, deadline: Instant) -> Conn {
        Conn {
            transport,
            phase: Phase::Idle,
            readable: false,
            writable: false,
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
        match self.transport.read(&mut stack) {
            Ok(0) => Err(()),
            Ok(n) => {
                self.deadline = Instant::now() + shared.limits.head_timeout();
                self.phase = Phase::Head(stack[..n].to_vec());
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.readable = false;
                self.flush_pending()?;
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(_) => Err(()),
        }
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
                self.queue(r, None, Vec::new(), false);
                return Ok(true);
            }
        }
        if !self.readable {
            self.phase = Phase::Head(buf);
            return Ok(false);
        }
        let len = buf.len();
        buf.resize(len + READ_CHUNK, 0);
        match self.transport.read(&mut buf[len..]) {
            Ok(0) => Err(()),
            Ok(n) => {
                buf.truncate(len + n);
                self.phase = Phase::Head(buf);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                buf.truncate(len);
                self.readable = false;
                self.phase = Phase::Head(buf);
                self.flush_pending()?;
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                buf.truncate(len);
                self.phase = Phase::Head(buf);
                Ok(true)
            }
            Err(_) => Err(()),
        }
    }

    /// Routes a complete head and queues the answer.
    fn respond(&mut self, head: Head, leftover: Vec<u8>, shared: &Shared) {
        let start = Instant::now();
        let response = http::route(&shared.site, &head);
        // A body we do not read would be taken for the next request: answer, then close.
        let keep_alive = head.keep_alive && head.content_length == 0 && !self.draining;
        let log = LogLine {
            method: head.method,
            target: head.target,
            status: response.status,
            bytes: 0,
            start,
        };
        let head_only = head.method == Method::Head;
        self.queue_response(response, Some(log), leftover, keep_alive, head_only);
    }

    fn queue(&mut self, r: Response, log: Option<LogLine>, leftover: Vec<u8>, keep_alive: bool) {
        self.queue_response(r, log, leftover, keep_alive, false)
    }

    fn queue_response(
        &mut self,
        mut r: Response,
        mut log: Option<LogLine>,
        leftover: Vec<u8>,
        keep_alive: bool,
        head_only: bool,
    ) {
        let keep_alive = keep_alive && !r.close;
        let head = r.render_head(keep_alive);
        if head_only {
            r.body = Body::Empty;
        }
        if let Some(l) = &mut log {
            l.bytes = r.body.len();
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
            let result = {
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
