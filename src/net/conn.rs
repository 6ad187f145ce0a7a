//! One client connection: an enum of phases moved by value, and the readiness the kernel
//! reported, kept apart from what the phase wants.
//!
//! Sockets are registered once for read and write, edge-triggered. A readiness bit is set
//! by an event and cleared only on `WouldBlock`, so nothing is lost while a phase does not
//! want that direction (a response being written stops reading; pipelined requests wait).
//!
//! Framing is decided here, once, for every route. A request's facts (keep-alive, HEAD,
//! body bytes nobody has read yet, bytes read past it, its log line) travel in one
//! [`Exchange`] through the phases (`Body`, `Waiting`, `Write`), whoever answers: a body
//! the handler does not want is read and dropped (up to [`DRAIN_CAP`]) or the connection
//! closes after the answer, and the answer to a HEAD never carries a body. Bytes after a
//! request are only ever parsed as the next request once its body is wholly consumed.
//!
//! The connection is generic over its [`Stream`], so the tests below drive it through a
//! scripted in-memory stream.

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::http::api::Spooled;
use crate::http::{
    self, request, Body, BodyCursor, Endpoint, Head, Job, Lane, Method, Metric, Response, Routed,
};
use crate::registry::Principal;

pub use super::ended::{CloseReason, Waited};
use super::throttle::{Over, UploadPermit};
use super::transport::{Stream, Transport};
use super::worker::{Reservation, Ticket};
use super::Shared;

/// Read size while a head arrives.
const READ_CHUNK: usize = 4096;
/// Read size while a body arrives (on the stack, then to the spool file).
const BODY_CHUNK: usize = 16 * 1024;
/// The most body bytes read and dropped for a request whose handler does not want them, to
/// keep the connection; a larger unwanted body closes the connection after the answer.
pub const DRAIN_CAP: u64 = 64 * 1024;
/// How long a connection closing with request bytes still coming keeps reading (and
/// dropping) them: closing a socket with unread input resets it, and the reset can destroy
/// the answer before the client read it (nginx's lingering close).
const LINGER: Duration = Duration::from_secs(2);
/// How long a connection may wait for the registry worker.
const JOB_TIMEOUT: Duration = Duration::from_secs(600);
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// Steps one connection may take per turn of the loop before others get theirs.
const BUDGET: usize = 32;
/// How long a new connection may stay silent before it counts as idle for reclaiming: its
/// first bytes may be in flight, or not yet reported, and a client just let in must not be
/// the first one closed again.
pub const FRESH_GRACE: Duration = Duration::from_secs(1);
/// Seconds a client refused by the spool cap is asked to wait.
const SPOOL_RETRY_AFTER: &str = "5";

pub enum Phase {
    /// Nothing buffered: a new connection, a TLS handshake, or a kept-alive one between
    /// requests. Holds no buffer.
    Idle,
    /// A request head is arriving.
    Head(Vec<u8>),
    /// A request body is arriving.
    Body(Box<Upload>),
    /// The registry worker runs the request's job.
    Waiting(Box<Exchange>),
    /// A response is going out.
    Write(Box<Outgoing>),
    /// The last answer is out and our side is shut; what the client still sends is dropped
    /// until it closes or [`LINGER`] passes.
    Linger,
    /// Done; the loop removes the connection.
    Closed,
}

/// One request's facts that decide its framing, from its head to the end of its answer.
pub struct Exchange {
    log: LogLine,
    /// The client lets the connection stay open after this exchange.
    keep_alive: bool,
    /// HEAD: the answer goes out without its body, whoever made it.
    head_only: bool,
    /// Body bytes the client has yet to send that nobody read. Any left when the answer
    /// goes out close the connection: the next request would start inside them.
    /// `u64::MAX` when the framing is unknown (a head that did not parse).
    unread: u64,
    /// Bytes read past this request's head: its body first, then pipelined requests.
    leftover: Vec<u8>,
    /// The token holder the access check let through (None: the route needs no token).
    principal: Option<Principal>,
    /// The publish's place among its token's uploads, held until the answer is out.
    _upload: Option<UploadPermit>,
    /// The thread the request's job runs on, if it makes one.
    lane: Lane,
    /// The head did not parse: the answer ends the connection.
    malformed: bool,
}

impl Exchange {
    /// Takes the part of `leftover` that belongs to the body.
    fn take_buffered_body(&mut self) -> Vec<u8> {
        let n = self.unread.min(self.leftover.len() as u64) as usize;
        let rest = self.leftover.split_off(n);
        self.unread -= n as u64;
        std::mem::replace(&mut self.leftover, rest)
    }
}

/// Why a request does not go on: over a rate limit, or refused by the access checks.
enum Refusal {
    Over(Box<Over>),
    Refused(Box<http::Refused>),
}

impl From<Box<Over>> for Refusal {
    fn from(o: Box<Over>) -> Refusal {
        Refusal::Over(o)
    }
}

impl From<Box<http::Refused>> for Refusal {
    fn from(r: Box<http::Refused>) -> Refusal {
        Refusal::Refused(r)
    }
}

/// A response in flight, with the exchange it answers.
pub struct Outgoing {
    head: Vec<u8>,
    head_pos: usize,
    body: BodyCursor,
    ex: Exchange,
}

/// A request body being read, and what comes once it is complete.
pub struct Upload {
    ex: Exchange,
    /// Bytes of `100 Continue` already sent (None: not asked for).
    continue_sent: Option<usize>,
    then: Then,
}

/// What a request body is read for.
enum Then {
    /// Spooled to a file that becomes the job.
    Spool(Spool),
    /// Dropped; then the job runs.
    Job(Job),
    /// Kept in memory, a small form that never touches the disk: then the login job.
    Form(Vec<u8>, crate::http::pages::Ctx),
    /// Dropped; then this answer goes out.
    Answer(Response),
}

/// A spool file and its share of the spool budget. Dropped before its job was handed to
/// the worker (client gone, timeout, error), it removes the file and gives the share back.
struct Spool {
    file: File,
    path: PathBuf,
    kind: Spooled,
    reserved: Option<Reservation>,
}

impl Spool {
    fn into_job(mut self) -> (Job, Option<Reservation>) {
        let path = std::mem::take(&mut self.path);
        let kind = std::mem::replace(&mut self.kind, Spooled::Publish);
        (kind.job(path), self.reserved.take())
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// What one request's log line says.
struct LogLine {
    metric: Metric,
    method: &'static str,
    target: String,
    status: u16,
    bytes: u64,
    start: Instant,
}

pub struct Conn<S = Transport> {
    /// Slab key and a serial number unique over the server's life: a worker's answer
    /// carries both, so it never reaches a later connection in the same slot.
    pub key: usize,
    pub serial: u64,
    pub transport: S,
    pub phase: Phase,
    pub readable: bool,
    pub writable: bool,
    /// The peer's FIN was reported: reads must go on until they return 0.
    pub read_closed: bool,
    pub deadline: Instant,
    /// When the connection last became idle, or its current head started: orders idle
    /// connections for reclaiming and times heads under pressure.
    pub since: Instant,
    /// Requests answered so far.
    pub served: u64,
    pub peer: SocketAddr,
    /// No new request is started (shutdown).
    pub draining: bool,
    /// Accepted on a listener marked `metrics = true`: `/metrics` without a token, and
    /// nothing else.
    pub metrics_listener: bool,
    /// Why it ended, once it did (the first reason given counts).
    pub ended: Option<CloseReason>,
    /// Its last request was refused for a rate limit: its turn ends.
    over_limit: std::cell::Cell<bool>,
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

impl<S: Stream> Conn<S> {
    pub fn new(
        key: usize,
        serial: u64,
        transport: S,
        peer: SocketAddr,
        deadline: Instant,
    ) -> Conn<S> {
        Conn {
            key,
            serial,
            transport,
            phase: Phase::Idle,
            readable: false,
            writable: false,
            read_closed: false,
            deadline,
            since: Instant::now(),
            served: 0,
            peer,
            draining: false,
            metrics_listener: false,
            ended: None,
            over_limit: std::cell::Cell::new(false),
        }
    }

    /// Records why the connection ends; a reason given before stands.
    pub fn end(&mut self, why: CloseReason) {
        self.ended.get_or_insert(why);
    }

    /// What the connection waits for now: the phase a timeout cuts short.
    pub fn waiting_for(&self) -> Waited {
        match self.phase {
            Phase::Idle if self.served == 0 => Waited::Head,
            Phase::Idle => Waited::Idle,
            Phase::Head(_) => Waited::Head,
            Phase::Body(_) => Waited::Body,
            Phase::Waiting(_) => Waited::Worker,
            Phase::Write(_) => Waited::Write,
            Phase::Linger | Phase::Closed => Waited::Linger,
        }
    }

    /// Whether the connection sits between requests (safe to close at shutdown).
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Idle) && !self.transport.has_pending_output()
    }

    /// Whether closing it loses nobody's request: idle with no unread byte reported (kept
    /// alive between requests, or accepted and silent for [`FRESH_GRACE`]), or lingering.
    pub fn is_reclaimable(&self, now: Instant) -> bool {
        match self.phase {
            Phase::Idle => {
                !self.readable
                    && !self.transport.has_pending_output()
                    && (self.served > 0 || now >= self.since + FRESH_GRACE)
            }
            Phase::Linger => true,
            _ => false,
        }
    }

    /// Whether the client owes a request head: a head arriving, or a new connection (or
    /// TLS handshake) with no request yet.
    pub fn awaits_head(&self) -> bool {
        match self.phase {
            Phase::Head(_) => true,
            Phase::Idle => self.served == 0,
            _ => false,
        }
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
                Phase::Linger => self.step_linger(),
                Phase::Closed => return Turn::Closed,
            };
            match step {
                // A request refused for a rate limit ends the connection's turn: a flooding
                // peer gets one request per turn of the loop, and everyone else theirs.
                Ok(true) if self.over_limit.take() => return Turn::Again,
                Ok(true) => continue,
                Ok(false) => return Turn::Parked,
                Err(why) => {
                    self.end(why);
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
        if n < asked && !self.read_closed && self.transport.plain_socket().is_some() {
            self.readable = false;
        }
    }

    /// One read: `Some(n)` bytes arrived, `None` nothing for now (readiness cleared, pending
    /// TLS records flushed), `Err` the peer is gone or the read failed.
    fn read_some(&mut self, buf: &mut [u8]) -> Result<Option<usize>, CloseReason> {
        loop {
            match self.transport.read(buf) {
                Ok(0) => return Err(CloseReason::ClientClosed),
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
                Err(e) => return Err(CloseReason::of(&e)),
            }
        }
    }

    /// Flushes TLS records left over (handshake, alerts) when the socket allows.
    fn flush_pending(&mut self) -> Result<(), CloseReason> {
        if self.writable && self.transport.has_pending_output() {
            match self.transport.flush() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(e) => return Err(CloseReason::of(&e)),
            }
        }
        Ok(())
    }

    // Each step returns Ok(true) to keep going, Ok(false) to park, Err to close. The phase
    // must be put back before returning Ok.

    fn step_idle(&mut self, shared: &Shared) -> Result<bool, CloseReason> {
        self.phase = Phase::Idle;
        self.flush_pending()?;
        if self.draining {
            return Err(CloseReason::Shutdown);
        }
        if !self.readable {
            return Ok(false);
        }
        let mut stack = [0u8; READ_CHUNK];
        let Some(n) = self.read_some(&mut stack)? else {
            return Ok(false);
        };
        self.start_head(stack[..n].to_vec(), shared);
        Ok(true)
    }

    fn start_head(&mut self, buf: Vec<u8>, shared: &Shared) {
        let now = Instant::now();
        self.deadline = now + shared.limits.head_timeout();
        self.since = now;
        self.phase = Phase::Head(buf);
    }

    fn step_head(&mut self, mut buf: Vec<u8>, shared: &Shared) -> Result<bool, CloseReason> {
        match request::parse(&buf, shared.limits.max_head) {
            Ok(Some(head)) => {
                let leftover = buf.split_off(head.len);
                self.respond(head, leftover, shared);
                return Ok(true);
            }
            Ok(None) => {}
            Err(e) => {
                let ex = Exchange {
                    log: LogLine {
                        metric: Metric::Other,
                        method: "-",
                        target: "(malformed request)".into(),
                        status: 0,
                        bytes: 0,
                        start: Instant::now(),
                    },
                    keep_alive: false,
                    head_only: false,
                    unread: u64::MAX,
                    leftover: Vec::new(),
                    principal: None,
                    _upload: None,
                    lane: Lane::Loop,
                    malformed: true,
                };
                self.queue_response(Response::error(e.status, e.detail), ex, shared);
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

    /// Routes a complete head and decides what happens to its body: read for the handler,
    /// read and dropped, or left unread (then the connection closes after the answer).
    fn respond(&mut self, head: Head, leftover: Vec<u8>, shared: &Shared) {
        let start = Instant::now();
        let endpoint = Endpoint::of(&shared.site, &head);
        let (metric, lane) = (endpoint.metric(), endpoint.lane());
        // Credentials first: a refused request gets no `100 Continue` and no body is read.
        // A bug in a handler costs its request a 500, never the process.
        let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let is_metrics = matches!(endpoint, Endpoint::Metrics);
            match self.check(&endpoint, &head, start, shared) {
                Ok(_) if self.metrics_listener => {
                    let r = match is_metrics {
                        true => metrics_response(head.method, shared),
                        false => Response::error(404, "this listener serves only /metrics"),
                    };
                    (Routed::Done(r), None, None)
                }
                Ok((principal, permit)) => {
                    if let Some(p) = &principal {
                        shared.note_token_use(p.token, crate::registry::now());
                    }
                    let routed = match is_metrics {
                        true => Routed::Done(metrics_response(head.method, shared)),
                        false => endpoint.handle(&shared.site, &head),
                    };
                    (routed, principal, permit)
                }
                Err(Refusal::Over(over)) => {
                    shared.metrics.rate_limited(over.limit);
                    self.over_limit.set(true);
                    (Routed::Done(over.response()), None, None)
                }
                Err(Refusal::Refused(refused)) => {
                    let why = format!(
                        "{} {}: {}",
                        head.method.as_str(),
                        head.path(),
                        refused.reason
                    );
                    shared.log_refused(self.peer, &why);
                    shared.note_refused_write(&endpoint, &refused, self.peer);
                    (Routed::Done(refused.response), None, None)
                }
            }
        }));
        let (routed, principal, upload) = decided.unwrap_or_else(|_| {
            error!(
                "error: {} {} failed inside the server",
                head.method.as_str(),
                head.path()
            );
            let mut r = Response::error(500, "internal error; the server log has details");
            r.close = true;
            (Routed::Done(r), None, None)
        });
        let expect = head.expect_continue;
        let ex = Exchange {
            log: LogLine {
                metric,
                method: head.method.as_str(),
                target: head.target,
                status: 0,
                bytes: 0,
                start,
            },
            keep_alive: head.keep_alive,
            head_only: head.method == Method::Head,
            unread: head.content_length,
            leftover,
            principal,
            _upload: upload,
            lane,
            malformed: false,
        };
        match routed {
            Routed::Upload(kind) => self.start_upload(kind, ex, expect, shared),
            Routed::AfterBody(job) => self.read_body(ex, Then::Job(job), expect, shared),
            Routed::Form(ctx) => {
                // The handler refused larger forms; the cap keeps the allocation bounded here too.
                let cap = ex.unread.min(crate::http::pages::MAX_LOGIN_BODY) as usize;
                let form = Vec::with_capacity(cap);
                self.read_body(ex, Then::Form(form, ctx), expect, shared)
            }
            Routed::Job(job) => self.skip_body(ex, Then::Job(job), expect, shared),
            Routed::Done(r) => self.skip_body(ex, Then::Answer(r), expect, shared),
        }
    }

    /// Whether the request may go on, in order: the peer's request rate (nothing else is
    /// looked at for a flood), the authority and origin, then the credentials, which a peer
    /// whose refused tokens passed the limit may not present, and whose refusal counts
    /// against it. A publish also takes one of its token's upload places.
    fn check(
        &self,
        endpoint: &Endpoint,
        head: &Head,
        now: Instant,
        shared: &Shared,
    ) -> Result<(Option<Principal>, Option<UploadPermit>), Refusal> {
        let ip = self.peer.ip();
        if self.metrics_listener {
            // The scraper's own listener: no token, no limit, nothing but `/metrics`.
            return Ok((None, None));
        }
        shared.throttle.request(ip, now)?;
        let tls = self.transport.plain_socket().is_none();
        http::admit(&shared.site, endpoint, head, tls)?;
        let presents_token = head.authorization.is_some()
            || matches!(endpoint, Endpoint::LoginForm)
            || (endpoint.takes_session_cookie() && head.cookie.is_some());
        if presents_token {
            shared.throttle.may_authenticate(ip, now)?;
        }
        let principal = match http::authorize(&shared.site, endpoint, head, crate::registry::now())
        {
            Ok(p) => p,
            Err(refused) if refused.bad_token => {
                shared.throttle.auth_failed(ip, now)?;
                return Err(refused.into());
            }
            Err(refused) => return Err(refused.into()),
        };
        let permit = match (&principal, endpoint) {
            (Some(p), Endpoint::Publish | Endpoint::UploadDocs { .. }) => {
                shared.throttle.upload(p.token)?
            }
            _ => None,
        };
        Ok((principal, permit))
    }

    /// A handler that does not want the body: a small one is read and dropped first, so
    /// the connection can go on; a large one, or one the client waits to be invited for
    /// (`Expect: 100-continue`), is not read, and the connection closes after the answer.
    fn skip_body(&mut self, mut ex: Exchange, then: Then, expect: bool, shared: &Shared) {
        let buffered = ex.take_buffered_body();
        let waits_for_invitation = expect && buffered.is_empty();
        if ex.unread == 0 || ex.unread > DRAIN_CAP || waits_for_invitation {
            self.proceed(ex, then, shared);
        } else {
            self.read_body(ex, then, false, shared);
        }
    }

    /// A body to spool: refused before any of it is read (and before `100 Continue`) when
    /// it would pass the spool cap.
    fn start_upload(&mut self, kind: Spooled, ex: Exchange, expect: bool, shared: &Shared) {
        let len = ex.unread;
        if len > shared.spool.cap() {
            let detail = format!(
                "the upload is larger than the {} bytes this server spools at once",
                shared.spool.cap()
            );
            return self.queue_response(Response::error(413, &detail), ex, shared);
        }
        let Some(reserved) = shared.spool.reserve(len) else {
            let r = Response::error(503, "the registry is busy with other uploads; try again")
                .header("Retry-After", SPOOL_RETRY_AFTER);
            return self.queue_response(r, ex, shared);
        };
        let path = crate::registry::temp_path(&shared.spool_dir, "upload");
        let file = match crate::registry::create_private(&path) {
            Ok(f) => f,
            Err(e) => return self.queue_response(upload_failed(&e), ex, shared),
        };
        let spool = Spool {
            file,
            path,
            kind,
            reserved: Some(reserved),
        };
        self.read_body(ex, Then::Spool(spool), expect, shared);
    }

    /// Enters the body phase, taking what arrived with the head first.
    fn read_body(&mut self, mut ex: Exchange, mut then: Then, expect: bool, shared: &Shared) {
        let buffered = ex.take_buffered_body();
        if let Err(e) = take_body(&mut then, &buffered) {
            return self.queue_response(upload_failed(&e), ex, shared);
        }
        // A client that sent some of the body already did not wait for the invitation.
        let invite = expect && buffered.is_empty() && ex.unread > 0;
        self.deadline = Instant::now() + shared.limits.io_timeout();
        self.phase = Phase::Body(Box::new(Upload {
            ex,
            continue_sent: invite.then_some(0),
            then,
        }));
    }

    /// The body is read (or will never be): the answer or the job goes next.
    fn proceed(&mut self, ex: Exchange, then: Then, shared: &Shared) {
        match then {
            Then::Answer(r) => self.queue_response(r, ex, shared),
            Then::Job(job) => self.start_job(job, None, ex, shared),
            Then::Form(form, ctx) => {
                let mut r = crate::http::pages::login(&form, &ctx);
                if r.status == 401 {
                    // A refused token costs its peer time (see `throttle`).
                    if let Err(over) = shared.throttle.auth_failed(self.peer.ip(), Instant::now()) {
                        shared.metrics.rate_limited(over.limit);
                        r = over.response();
                    }
                }
                if let Some(why) = &r.refusal {
                    shared.log_refused(self.peer, why);
                }
                self.queue_response(r, ex, shared)
            }
            Then::Spool(spool) => {
                let (job, reserved) = spool.into_job();
                self.start_job(job, reserved, ex, shared)
            }
        }
    }

    fn start_job(
        &mut self,
        job: Job,
        reserved: Option<Reservation>,
        ex: Exchange,
        shared: &Shared,
    ) {
        let ticket = Ticket {
            key: self.key,
            serial: self.serial,
            job,
            reserved,
            principal: ex.principal.clone(),
            peer: Some(self.peer.ip()),
            lane: ex.lane,
        };
        // On failure the ticket comes back: its reservation drops, its spool file goes.
        if let Err(t) = shared.send_job(ticket) {
            if let Some(path) = t.job.body_file() {
                let _ = std::fs::remove_file(path);
            }
            let r = Response::error(503, "the registry worker is not running");
            return self.queue_response(r, ex, shared);
        }
        self.deadline = Instant::now() + JOB_TIMEOUT;
        self.phase = Phase::Waiting(Box::new(ex));
    }

    /// The worker's answer for this connection's request.
    pub fn finish_job(&mut self, response: Response, shared: &Shared) {
        if let Some(why) = &response.refusal {
            shared.log_refused(self.peer, why);
        }
        if let Phase::Waiting(ex) = std::mem::replace(&mut self.phase, Phase::Closed) {
            self.queue_response(response, *ex, shared);
        }
    }

    fn step_body(&mut self, mut up: Box<Upload>, shared: &Shared) -> Result<bool, CloseReason> {
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
                    Ok(0) => return Err(CloseReason::ClientClosed),
                    Ok(n) => up.continue_sent = Some(sent + n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(CloseReason::of(&e)),
                }
                self.phase = Phase::Body(up);
                return Ok(true);
            }
        }
        if up.ex.unread == 0 {
            let up = *up;
            self.proceed(up.ex, up.then, shared);
            return Ok(true);
        }
        if !self.readable {
            self.phase = Phase::Body(up);
            return Ok(false);
        }
        let mut buf = [0u8; BODY_CHUNK];
        let want = (up.ex.unread.min(BODY_CHUNK as u64)) as usize;
        // On Err the client is gone mid-body: the spool's drop removes its file.
        let Some(n) = self.read_some(&mut buf[..want])? else {
            self.phase = Phase::Body(up);
            return Ok(false);
        };
        up.ex.unread -= n as u64;
        if let Err(e) = take_body(&mut up.then, &buf[..n]) {
            let up = *up;
            self.queue_response(upload_failed(&e), up.ex, shared);
            return Ok(true);
        }
        self.deadline = Instant::now() + shared.limits.io_timeout();
        self.phase = Phase::Body(up);
        Ok(true)
    }

    /// Queues the answer to `ex`. The one place that decides whether the connection goes
    /// on after it, and whether a body goes out.
    fn queue_response(&mut self, mut r: Response, mut ex: Exchange, shared: &Shared) {
        // Unread body bytes would be taken for the next request; a stopping server
        // announces the close on every answer still going out.
        ex.keep_alive = ex.keep_alive && ex.unread == 0 && !r.close && !self.draining;
        let head = r.render_head(ex.keep_alive);
        if ex.head_only {
            r.body = Body::Empty;
        }
        ex.log.bytes = r.body.len();
        ex.log.status = r.status;
        self.deadline = Instant::now() + shared.limits.io_timeout();
        self.phase = Phase::Write(Box::new(Outgoing {
            head,
            head_pos: 0,
            body: BodyCursor::new(r.body),
            ex,
        }));
    }

    fn step_write(&mut self, mut out: Box<Outgoing>, shared: &Shared) -> Result<bool, CloseReason> {
        if !self.writable {
            self.phase = Phase::Write(out);
            return Ok(false);
        }
        let remaining = (out.head.len() - out.head_pos) as u64 + out.body.remaining();
        if remaining > 0 {
            let result = if let (Some(sock), Some((file, offset, left))) =
                (self.transport.plain_socket(), out.body.sendfile_source())
            {
                send_head_then_file(sock, &out.head[out.head_pos..], file, offset, left)
            } else {
                let chunk = match out.body.chunk() {
                    Ok(c) => c,
                    Err(_) => return Err(CloseReason::IoError),
                };
                let bufs = [IoSlice::new(&out.head[out.head_pos..]), IoSlice::new(chunk)];
                self.transport.write_vectored(&bufs)
            };
            match result {
                Ok(0) => return Err(CloseReason::ClientClosed),
                Ok(wrote) => {
                    let from_head = wrote.min(out.head.len() - out.head_pos);
                    out.head_pos += from_head;
                    out.body.advance(wrote - from_head);
                    // Progress: a whole I/O timeout for what is left, including bytes TLS
                    // took but still has to send.
                    self.deadline = Instant::now() + shared.limits.io_timeout();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(CloseReason::of(&e)),
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
            Err(e) => return Err(CloseReason::of(&e)),
        }
        let Outgoing { ex, head, .. } = *out;
        let l = &ex.log;
        shared.log_request(self.peer, l.method, &l.target, l.status, l.bytes, l.start);
        let sent = head.len() as u64 + l.bytes;
        let now = Instant::now();
        let took = now.saturating_duration_since(l.start);
        shared.metrics.request_done(l.metric, l.status, sent, took);
        self.served += 1;
        if !ex.keep_alive {
            let why = match ex.malformed {
                true => CloseReason::ParseError,
                false => CloseReason::Answered,
            };
            if ex.unread == 0 {
                return Err(why);
            }
            self.end(why);
            self.transport.close();
            self.deadline = now + LINGER;
            self.phase = Phase::Linger;
            return Ok(true);
        }
        if ex.leftover.is_empty() {
            self.deadline = now + shared.limits.idle_timeout();
            self.since = now;
            self.phase = Phase::Idle;
        } else {
            self.start_head(ex.leftover, shared);
        }
        Ok(true)
    }

    /// Reads and drops what the client still sends after the last answer.
    fn step_linger(&mut self) -> Result<bool, CloseReason> {
        self.phase = Phase::Linger;
        if !self.readable {
            return Ok(false);
        }
        let mut buf = [0u8; BODY_CHUNK];
        match self.read_some(&mut buf) {
            Ok(Some(_)) => Ok(true),
            Ok(None) => Ok(false),
            Err(_) => {
                // Our side was shut when lingering began (its reason is kept).
                self.phase = Phase::Closed;
                Ok(true)
            }
        }
    }
}

/// `GET /metrics`, rendered now.
fn metrics_response(method: Method, shared: &Shared) -> Response {
    if !matches!(method, Method::Get | Method::Head) {
        return Response::not_allowed("GET, HEAD");
    }
    Response::new(200)
        .header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        .header("Cache-Control", "no-store")
        .body(Body::Bytes(shared.metrics.render(&shared.site.trees)))
}

/// Takes body bytes: to the spool file, or dropped.
fn take_body(then: &mut Then, bytes: &[u8]) -> io::Result<()> {
    match then {
        Then::Spool(s) => s.file.write_all(bytes),
        // The handler bounded the body (a form is a few KiB).
        Then::Form(form, _) => {
            form.extend_from_slice(bytes);
            Ok(())
        }
        Then::Job(_) | Then::Answer(_) => Ok(()),
    }
}

/// A spool file that could not be created or written: a full disk is a 507 that says so.
fn upload_failed(e: &io::Error) -> Response {
    error!("error: storing an upload: {e}");
    match crate::registry::storage_trouble(e) {
        Some(detail) => crate::http::errors::storage_error(detail),
        None => Response::error(500, "cannot store the upload; the server log has details"),
    }
}

/// Plain TCP and a crate file of any size: the head with `MSG_MORE` (so head and body
/// leave in one segment), then the file with `sendfile`, from the page cache to the socket
/// without passing through user space or being mapped (no page tables to build and tear
/// down, no resident pages). Each call sends what the socket buffer takes; the caller
/// advances by it and waits for writability on `WouldBlock`, as for `write_vectored`.
/// Returns the bytes sent, head first.
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

#[cfg(test)]
mod tests {
    //! The connection state machine in memory: a scripted stream stands in for the socket
    //! (reads, short writes, `WouldBlock`s) and the test answers the worker's jobs itself.

    use std::collections::VecDeque;
    use std::sync::mpsc::{channel, Receiver};

    use super::*;
    use crate::http::files::Trees;
    use crate::http::Site;
    use crate::net::config::Limits;
    use crate::net::worker::SpoolBudget;

    /// One scripted read.
    #[derive(Clone)]
    enum R {
        Data(&'static [u8]),
        Owned(Vec<u8>),
        Block,
        Eof,
    }

    /// An in-memory stream: reads follow the script (then `WouldBlock`); each write takes
    /// at most the next scripted amount (`0`: `WouldBlock`), then everything. Like TLS, it
    /// may keep what it took: the first `unflushed` flushes after a write find the socket full.
    struct Script {
        reads: VecDeque<R>,
        writes: VecDeque<usize>,
        out: Vec<u8>,
        closed: bool,
        unflushed: usize,
    }

    impl Script {
        fn new(
            reads: impl IntoIterator<Item = R>,
            writes: impl IntoIterator<Item = usize>,
        ) -> Script {
            Script {
                reads: reads.into_iter().collect(),
                writes: writes.into_iter().collect(),
                out: Vec::new(),
                closed: false,
                unflushed: 0,
            }
        }
    }

    impl Stream for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let data = match self.reads.pop_front() {
                None | Some(R::Block) => return Err(io::ErrorKind::WouldBlock.into()),
                Some(R::Eof) => return Ok(0),
                Some(R::Data(d)) => d.to_vec(),
                Some(R::Owned(d)) => d,
            };
            let n = data.len().min(buf.len());
            buf[..n].copy_from_slice(&data[..n]);
            if n < data.len() {
                self.reads.push_front(R::Owned(data[n..].to_vec()));
            }
            Ok(n)
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let mut allow = self.writes.pop_front().unwrap_or(usize::MAX);
            if allow == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(allow);
                self.out.extend_from_slice(&b[..take]);
                n += take;
                allow -= take;
            }
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<bool> {
            if self.has_pending_output() {
                self.unflushed -= 1;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(true)
        }

        fn has_pending_output(&self) -> bool {
            self.unflushed > 0 && !self.out.is_empty()
        }

        fn close(&mut self) {
            self.closed = true;
        }
    }

    struct World {
        _dir: tempfile::TempDir,
        shared: Shared,
        tickets: Receiver<Ticket>,
    }

    const CONFIG_JSON: &[u8] = b"{\"dl\":\"http://h/crates\"}\n";

    fn world(spool_cap: u64) -> World {
        crate::log::set_verbosity(0);
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join("index");
        std::fs::create_dir_all(&index).unwrap();
        std::fs::create_dir_all(dir.path().join("crates")).unwrap();
        std::fs::write(index.join("config.json"), CONFIG_JSON).unwrap();
        let (jobs, tickets) = channel();
        let shared = Shared {
            site: Site::new(
                "http://x",
                Trees::new(index, dir.path().join("crates"), 0),
                1000,
            ),
            throttle: crate::net::throttle::Throttle::new(&Limits::default()),
            limits: Limits::default(),
            spool_dir: dir.path().to_owned(),
            jobs: crate::net::worker::Jobs::one_queue(jobs),
            spool: SpoolBudget::new(spool_cap),
            tokens_used: Default::default(),
            refused_writes: Default::default(),
            metrics: Default::default(),
        };
        World {
            _dir: dir,
            shared,
            tickets,
        }
    }

    /// What a scripted connection did.
    struct Run {
        out: Vec<u8>,
        /// Each job the worker got, with its body when it had one.
        jobs: Vec<(String, Vec<u8>)>,
        closed: bool,
        /// The phase the connection was left in.
        phase: &'static str,
        /// Why it ended, if it did.
        ended: Option<CloseReason>,
    }

    /// Drives a connection through `reads` and `writes` as the event loop would (each pass
    /// a new readiness edge), answering every job the way the worker would.
    fn run(w: &World, reads: &[R], writes: &[usize]) -> Run {
        let script = Script::new(reads.iter().cloned(), writes.iter().copied());
        let peer = "127.0.0.1:1".parse().unwrap();
        let mut conn = Conn::new(0, 1, script, peer, Instant::now() + Duration::from_secs(60));
        let mut jobs = Vec::new();
        let mut closed = false;
        for _ in 0..200 {
            conn.readable = true;
            conn.writable = true;
            if conn.drive(&w.shared) == Turn::Closed {
                closed = true;
                break;
            }
            while let Ok(t) = w.tickets.try_recv() {
                let (name, body, r) = fake_worker(t.job);
                jobs.push((name, body));
                drop(t.reserved);
                conn.finish_job(r, &w.shared);
            }
            let nothing_left = conn.transport.reads.is_empty() && conn.transport.writes.is_empty();
            if nothing_left && matches!(conn.phase, Phase::Idle | Phase::Linger) {
                break;
            }
        }
        let phase = match conn.phase {
            Phase::Idle => "idle",
            Phase::Head(_) => "head",
            Phase::Body(_) => "body",
            Phase::Waiting(_) => "waiting",
            Phase::Write(_) => "write",
            Phase::Linger => "linger",
            Phase::Closed => "closed",
        };
        Run {
            out: std::mem::take(&mut conn.transport.out),
            jobs,
            closed: closed || conn.transport.closed,
            phase,
            ended: conn.ended,
        }
    }

    fn fake_worker(job: Job) -> (String, Vec<u8>, Response) {
        let ok = |body: &[u8]| Response::new(200).body(Body::Bytes(body.to_vec()));
        match job {
            Job::Search { query, .. } => (format!("search {query}"), Vec::new(), ok(b"{}")),
            Job::GitRefs => (
                "refs".into(),
                Vec::new(),
                ok(b"001e# service=git-upload-pack\n"),
            ),
            Job::Publish(path) => {
                let body = std::fs::read(&path).unwrap();
                std::fs::remove_file(&path).unwrap();
                ("publish".into(), body, ok(b"{\"warnings\":{}}"))
            }
            Job::GitUploadPack { body, .. } => {
                let bytes = std::fs::read(&body).unwrap();
                std::fs::remove_file(&body).unwrap();
                ("upload-pack".into(), bytes, ok(b"0008NAK\n"))
            }
            Job::Yank { name, .. } => (format!("yank {name}"), Vec::new(), ok(b"{\"ok\":true}")),
            Job::RecordTokenUse(_)
            | Job::RecordDownloads(_)
            | Job::AuditRefusals { .. }
            | Job::SyncAccess
            | Job::KeepClone => {
                unreachable!("no route makes this job")
            }
            Job::Page(..) | Job::Crate { .. } | Job::DocsLatest { .. } | Job::Mirror(_) => {
                unreachable!("no scripted request is a page, a crate read or the mirror's")
            }
            Job::UploadDocs { .. } => unreachable!("no scripted request uploads docs"),
            Job::Owners { name, change } => {
                let body = change.map(|(_, path)| {
                    let bytes = std::fs::read(&path).unwrap();
                    std::fs::remove_file(&path).unwrap();
                    bytes
                });
                (
                    format!("owners {name}"),
                    body.unwrap_or_default(),
                    ok(b"{\"ok\":true,\"msg\":\"\"}"),
                )
            }
        }
    }

    /// One expected response: its status, whether a body follows its head, whether it
    /// announces `Connection: close`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Resp {
        status: u16,
        body: bool,
        close: bool,
    }

    const fn resp(status: u16) -> Resp {
        Resp {
            status,
            body: true,
            close: false,
        }
    }
    const fn head_only(status: u16) -> Resp {
        Resp {
            status,
            body: false,
            close: false,
        }
    }
    const fn closing(status: u16) -> Resp {
        Resp {
            status,
            body: true,
            close: true,
        }
    }

    /// Splits the output into responses; `expected` says which carry a body (a HEAD
    /// answer has `Content-Length` but no body). Every byte must be accounted for.
    fn responses(out: &[u8], expected: &[Resp]) -> Vec<Resp> {
        let mut rest = out;
        let mut got = Vec::new();
        while !rest.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut r = httparse::Response::new(&mut headers);
            let len = match r.parse(rest) {
                Ok(httparse::Status::Complete(len)) => len,
                other => panic!(
                    "not a response: {other:?} in {:?}",
                    String::from_utf8_lossy(out)
                ),
            };
            let status = r.code.unwrap();
            let find = |name: &str| {
                r.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned())
            };
            let clen: usize = find("content-length").map_or(0, |v| v.parse().unwrap());
            let close = find("connection").as_deref() == Some("close");
            let with_body = status != 100 && expected.get(got.len()).is_none_or(|e: &Resp| e.body);
            let body = if with_body { clen } else { 0 };
            assert!(
                rest.len() >= len + body,
                "short body in {:?}",
                String::from_utf8_lossy(out)
            );
            got.push(Resp {
                status,
                body: with_body && clen > 0,
                close,
            });
            rest = &rest[len + body..];
        }
        got
    }

    const SEARCH: &[u8] = b"GET /api/v1/crates?q=x HTTP/1.1\r\nHost: x\r\n\r\n";
    const CONFIG: &[u8] = b"GET /index/config.json HTTP/1.1\r\nHost: x\r\n\r\n";

    struct Case {
        name: &'static str,
        reads: Vec<R>,
        writes: Vec<usize>,
        responses: Vec<Resp>,
        jobs: Vec<(&'static str, &'static [u8])>,
        /// Whether the connection ends closed (or lingering) rather than idle.
        closes: bool,
    }

    fn cat(parts: &[&[u8]]) -> R {
        R::Owned(parts.concat())
    }

    fn cases() -> Vec<Case> {
        let smuggled = [
            &b"GET /api/v1/crates?q=x HTTP/1.1\r\nHost: x\r\nContent-Length: 44\r\n\r\n"[..],
            CONFIG,
        ];
        assert_eq!(CONFIG.len(), 44);
        vec![
            Case {
                name: "pipelined requests in one read",
                reads: vec![cat(&[CONFIG, CONFIG, SEARCH])],
                writes: vec![],
                responses: vec![resp(200), resp(200), resp(200)],
                jobs: vec![("search x", b"")],
                closes: false,
            },
            Case {
                name: "a read returns WouldBlock mid-head",
                reads: vec![
                    R::Data(b"GET /index/con"),
                    R::Block,
                    R::Data(b"fig.json HTTP/1.1\r\nHo"),
                    R::Block,
                    R::Data(b"st: x\r\n\r\n"),
                ],
                writes: vec![],
                responses: vec![resp(200)],
                jobs: vec![],
                closes: false,
            },
            Case {
                name: "partial writes and WouldBlock while answering",
                reads: vec![R::Data(CONFIG)],
                writes: vec![7, 0, 30, 0, 1, 5],
                responses: vec![resp(200)],
                jobs: vec![],
                closes: false,
            },
            Case {
                name: "a publish body split across reads",
                reads: vec![
                    R::Data(b"PUT /api/v1/crates/new HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"),
                    R::Block,
                    R::Data(b"defg"),
                    R::Block,
                    R::Data(b"hij"),
                    R::Data(CONFIG),
                ],
                writes: vec![],
                responses: vec![resp(200), resp(200)],
                jobs: vec![("publish", b"abcdefghij")],
                closes: false,
            },
            Case {
                name: "Expect: 100-continue invites the publish body",
                reads: vec![
                    R::Data(b"PUT /api/v1/crates/new HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"),
                    R::Block,
                    R::Data(b"xyz"),
                ],
                writes: vec![],
                responses: vec![
                    Resp { status: 100, body: false, close: false },
                    resp(200),
                ],
                jobs: vec![("publish", b"xyz")],
                closes: false,
            },
            Case {
                name: "HEAD on a job route sends no body",
                reads: vec![R::Data(
                    b"HEAD /index/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: x\r\n\r\n",
                ), R::Data(CONFIG)],
                writes: vec![],
                responses: vec![head_only(200), resp(200)],
                jobs: vec![("refs", b"")],
                closes: false,
            },
            Case {
                name: "HEAD on a file route sends no body",
                reads: vec![R::Data(b"HEAD /index/config.json HTTP/1.1\r\nHost: x\r\n\r\n")],
                writes: vec![],
                responses: vec![head_only(200)],
                jobs: vec![],
                closes: false,
            },
            Case {
                name: "GET with a body on a job route: the body is no request",
                reads: vec![cat(&smuggled)],
                writes: vec![],
                responses: vec![resp(200)],
                jobs: vec![("search x", b"")],
                closes: false,
            },
            Case {
                name: "GET with a body on a job route, the body arriving later",
                reads: vec![R::Owned(smuggled[0].to_vec()), R::Block, R::Data(CONFIG), R::Data(CONFIG)],
                writes: vec![],
                responses: vec![resp(200), resp(200)],
                jobs: vec![("search x", b"")],
                closes: false,
            },
            Case {
                name: "GET with a body on a file route: drained, then the next request",
                reads: vec![cat(&[
                    b"GET /index/config.json HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
                    CONFIG,
                ])],
                writes: vec![],
                responses: vec![resp(200), resp(200)],
                jobs: vec![],
                closes: false,
            },
            Case {
                name: "a body larger than the drain cap closes after the answer",
                reads: vec![
                    cat(&[b"GET /api/v1/crates?q=x HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n", CONFIG]),
                    R::Block,
                    R::Owned(vec![b'G'; 5000]),
                    R::Eof,
                ],
                writes: vec![],
                responses: vec![closing(200)],
                jobs: vec![("search x", b"")],
                closes: true,
            },
            Case {
                name: "an unwanted body the client waits to be invited for is not invited",
                reads: vec![R::Data(
                    b"GET /index/config.json HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
                )],
                writes: vec![],
                responses: vec![closing(200)],
                jobs: vec![],
                closes: true,
            },
            Case {
                name: "Content-Length: +5 is refused and closes",
                reads: vec![cat(&[b"GET /index/config.json HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n", CONFIG])],
                writes: vec![],
                responses: vec![closing(400)],
                jobs: vec![],
                closes: true,
            },
            Case {
                name: "HTTP/1.1 without Host is refused",
                reads: vec![R::Data(b"GET /index/config.json HTTP/1.1\r\n\r\n")],
                writes: vec![],
                responses: vec![closing(400)],
                jobs: vec![],
                closes: true,
            },
            Case {
                name: "HTTP/1.0 without Host is served and closed",
                reads: vec![R::Data(b"GET /index/config.json HTTP/1.0\r\n\r\n")],
                writes: vec![],
                responses: vec![closing(200)],
                jobs: vec![],
                closes: true,
            },
            Case {
                name: "the peer closing mid-body leaves no job",
                reads: vec![
                    R::Data(b"PUT /api/v1/crates/new HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"),
                    R::Eof,
                ],
                writes: vec![],
                responses: vec![],
                jobs: vec![],
                closes: true,
            },
        ]
    }

    #[test]
    fn scripted_connections() {
        let w = world(1 << 20);
        for case in cases() {
            let r = run(&w, &case.reads, &case.writes);
            let got = responses(&r.out, &case.responses);
            assert_eq!(
                got,
                case.responses,
                "{}: {:?}",
                case.name,
                String::from_utf8_lossy(&r.out)
            );
            let jobs: Vec<(String, Vec<u8>)> = case
                .jobs
                .iter()
                .map(|(n, b)| (n.to_string(), b.to_vec()))
                .collect();
            assert_eq!(r.jobs, jobs, "{}", case.name);
            assert_eq!(r.closed, case.closes, "{}: left {}", case.name, r.phase);
            assert_eq!(
                w.shared.spool.used(),
                0,
                "{}: spool budget released",
                case.name
            );
            assert!(
                !std::fs::read_dir(&w.shared.spool_dir).unwrap().any(|e| e
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("upload")),
                "{}: no spool file left",
                case.name
            );
        }
    }

    /// Each way a connection ends is told apart (for the closed-connections metric): the
    /// first reason stands, so a connection that lingers after a closing answer is counted
    /// once, for the answer.
    #[test]
    fn connections_say_why_they_end() {
        let w = world(1 << 20);
        let get = b"GET /index/config.json HTTP/1.1\r\nHost: x\r\n\r\n";
        let cases: [(&str, Vec<R>, Option<CloseReason>); 5] = [
            ("kept alive", vec![R::Data(get)], None),
            ("client gone", vec![R::Data(get), R::Eof], Some(CloseReason::ClientClosed)),
            ("garbage", vec![R::Data(b"\x01\x02 nonsense\r\n\r\n")], Some(CloseReason::ParseError)),
            (
                "asked to close",
                vec![R::Data(b"GET /index/config.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")],
                Some(CloseReason::Answered),
            ),
            (
                "closing answer, body left unread, then the client closes",
                vec![
                    R::Data(b"PUT /index/config.json HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n"),
                    R::Eof,
                ],
                Some(CloseReason::Answered),
            ),
        ];
        for (name, reads, want) in cases {
            let r = run(&w, &reads, &[]);
            assert_eq!(r.ended, want, "{name} (left {})", r.phase);
        }
        let names: std::collections::HashSet<_> =
            CloseReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), CloseReason::ALL.len(), "labels are distinct");
        for (i, r) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn the_spool_cap_refuses_before_the_body_and_before_100_continue() {
        let w = world(100);
        let held = w.shared.spool.reserve(60).unwrap();
        let put = |len: usize| {
            R::Owned(
                format!("PUT /api/v1/crates/new HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\nExpect: 100-continue\r\n\r\n")
                    .into_bytes(),
            )
        };
        let r = run(&w, &[put(50)], &[]);
        let text = String::from_utf8_lossy(&r.out).into_owned();
        assert_eq!(responses(&r.out, &[]), vec![closing(503)], "{text}");
        assert!(text.contains("Retry-After: 5\r\n"), "{text}");
        assert!(
            text.contains(
                r#"{"errors":[{"detail":"the registry is busy with other uploads; try again"}]}"#
            ),
            "{text}"
        );
        assert!(r.jobs.is_empty());
        assert_eq!(w.shared.spool.used(), 60);
        // Larger than the whole cap: it could never fit.
        let r = run(&w, &[put(101)], &[]);
        assert_eq!(responses(&r.out, &[]), vec![closing(413)]);
        // Once the other upload is done, the same one is invited.
        drop(held);
        let r = run(&w, &[put(3), R::Block, R::Data(b"abc")], &[]);
        assert_eq!(
            responses(&r.out, &[])
                .iter()
                .map(|r| r.status)
                .collect::<Vec<_>>(),
            [100, 200]
        );
        assert_eq!(r.jobs, [("publish".to_string(), b"abc".to_vec())]);
        assert_eq!(w.shared.spool.used(), 0);
    }

    #[test]
    fn an_abandoned_upload_gives_its_spool_share_back() {
        let w = world(100);
        let peer = "127.0.0.1:1".parse().unwrap();
        let script = Script::new(
            [R::Data(
                b"PUT /api/v1/crates/new HTTP/1.1\r\nHost: x\r\nContent-Length: 80\r\n\r\nab",
            )],
            [],
        );
        let mut conn = Conn::new(0, 1, script, peer, Instant::now());
        conn.readable = true;
        conn.writable = true;
        assert_eq!(conn.drive(&w.shared), Turn::Parked);
        assert!(matches!(conn.phase, Phase::Body(_)));
        assert_eq!(w.shared.spool.used(), 80);
        // The body on disk is readable by nobody but the server's user, whatever the umask.
        let spooled: Vec<_> = std::fs::read_dir(&w.shared.spool_dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("upload"))
            .collect();
        assert_eq!(spooled.len(), 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = spooled[0].metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "spool file mode {mode:o}");
        // The loop drops a timed-out connection with its phase.
        drop(conn);
        assert_eq!(w.shared.spool.used(), 0);
    }

    /// The login form (a token) is read into memory: no file of it ever exists, so no local
    /// user watching the registry's folder can read it.
    #[test]
    fn the_login_form_never_touches_the_disk() {
        let w = world(1 << 20);
        let r = run(
            &w,
            &[R::Data(
                b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\n\r\ntoken=pal_secret",
            )],
            &[],
        );
        assert!(r.jobs.is_empty(), "the form is checked on the loop");
        assert_eq!(responses(&r.out, &[]), [resp(401)]);
        assert_eq!(w.shared.spool.used(), 0);
        let names: Vec<_> = std::fs::read_dir(&w.shared.spool_dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn answers_from_the_worker_get_a_fresh_io_deadline() {
        let w = world(100);
        let peer = "127.0.0.1:1".parse().unwrap();
        let script = Script::new([R::Data(SEARCH)], [0]);
        let mut conn = Conn::new(0, 1, script, peer, Instant::now());
        conn.readable = true;
        conn.writable = true;
        assert_eq!(conn.drive(&w.shared), Turn::Parked);
        assert!(
            conn.deadline > Instant::now() + Duration::from_secs(300),
            "job timeout"
        );
        let t = w.tickets.try_recv().unwrap();
        conn.finish_job(fake_worker(t.job).2, &w.shared);
        assert_eq!(conn.drive(&w.shared), Turn::Parked);
        assert!(matches!(conn.phase, Phase::Write(_)));
        assert!(conn.deadline <= Instant::now() + w.shared.limits.io_timeout());
    }

    /// A response whose last bytes the stream took but could not send yet (TLS with a full
    /// socket) made progress with that write: it has a whole I/O timeout to get them out,
    /// not what was left of the one before.
    #[test]
    fn a_last_write_that_waits_for_its_flush_gets_a_fresh_io_deadline() {
        let w = world(100);
        let peer = "127.0.0.1:1".parse().unwrap();
        let script = Script {
            unflushed: 2,
            ..Script::new([R::Data(CONFIG)], [0])
        };
        let mut conn = Conn::new(0, 1, script, peer, Instant::now());
        conn.readable = true;
        conn.writable = true;
        assert_eq!(conn.drive(&w.shared), Turn::Parked);
        assert!(matches!(conn.phase, Phase::Write(_)));
        // The socket stayed full until the response's deadline had nearly passed.
        conn.deadline = Instant::now();
        conn.writable = true;
        assert_eq!(conn.drive(&w.shared), Turn::Parked);
        assert!(matches!(conn.phase, Phase::Write(_)));
        assert!(conn.transport.has_pending_output());
        assert!(
            conn.deadline > Instant::now() + w.shared.limits.io_timeout() / 2,
            "the write that took the last bytes did not move the deadline"
        );
    }
}
