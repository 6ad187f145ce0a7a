//! The event loop: one thread, mio, every socket. Listeners accept into a slab capped at
//! `max_connections`; connections advance through their phases as readiness allows; a
//! periodic sweep closes connections past their deadline; signals stop or reload.
//!
//! Every edge-triggered source is drained or re-queued: a listener is accepted from until
//! `WouldBlock`, a budget at a time, and stays marked ready (the next turn polls without
//! waiting) until it is drained; connections out of budget run again next turn; the
//! worker's answers and the signal pipe are read until empty.
//!
//! Under pressure the table makes room as nginx does: when full, the oldest reclaimable
//! connections (idle between requests, accepted with nothing sent, or lingering) are closed
//! a batch at a time for new clients; when more than three quarters full, heads must arrive
//! within a tenth of the head timeout (at least a second), so slow-head clients give their
//! slots back.
//!
//! Invariants: a slab slot is freed only after the whole event batch was handled, so a
//! reused slot never receives an event meant for its previous connection (accepting, which
//! may reclaim slots, runs after the batch); the loop never blocks on anything but `poll`.

pub mod changes;
pub mod config;
pub mod conn;
pub mod ended;
pub mod metrics;
pub mod mirror;
pub mod os;
pub mod throttle;
pub mod transport;
pub mod worker;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::SIGHUP;
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::http::Site;
use crate::registry::{
    AuthView, Registry, Stamp, WriteRefusal, MAX_REFUSALS_PER_BATCH, TOKEN_PREFIX,
};

pub use config::{Limits, ServerConfig};
use conn::{Conn, Turn};
use transport::{Stream, Transport};

pub const SIGNAL_TOKEN: Token = Token(usize::MAX);
pub const WAKER_TOKEN: Token = Token(usize::MAX - 1);
pub const CHANGES_TOKEN: Token = Token(usize::MAX - 2);
const FIRST_LISTENER: usize = usize::MAX - 64;

/// The poll token of listener `i`.
pub fn listener_token(i: usize) -> Token {
    Token(FIRST_LISTENER + i)
}
/// Accepts per listener and turn of the loop before other work gets a turn.
const ACCEPT_BUDGET: usize = 64;
/// Idle connections closed at once when the table is full (nginx's drain batch).
const RECLAIM_BATCH: usize = 32;
/// How long a full table with nothing to reclaim is left alone before the next scan.
const RECLAIM_RETRY: Duration = Duration::from_millis(20);

/// What every connection reads: the site, the limits.
pub struct Shared {
    pub site: Site,
    /// The per-peer rate limits and their state.
    pub throttle: throttle::Throttle,
    pub limits: Limits,
    /// Where request bodies are spooled (inside the registry, for atomic renames).
    pub spool_dir: PathBuf,
    pub jobs: worker::Jobs,
    /// Bytes of request bodies on disk at once, over every connection.
    pub spool: Arc<worker::SpoolBudget>,
    /// Tokens used since the last flush to `auth.json`: token id -> newest use (seconds).
    /// One entry per token, whatever the number of requests.
    pub tokens_used: std::cell::RefCell<std::collections::HashMap<u64, u64>>,
    /// Writes refused by the access checks since the last hand-over to the writer, for the
    /// audit log: at most [`MAX_REFUSALS_PER_BATCH`] a second are kept, the rest counted.
    pub refused_writes: std::cell::RefCell<RefusedWrites>,
    /// Counters for `/metrics`.
    pub metrics: metrics::Metrics,
}

impl Shared {
    /// Hands a job to the worker, counted for the queue depth. On failure the ticket
    /// comes back.
    pub fn send_job(&self, ticket: worker::Ticket) -> Result<(), Box<worker::Ticket>> {
        // The queue depth is the registry workers': the mirror lane answers no worker count.
        let counted = ticket.lane != crate::http::Lane::Mirror;
        self.jobs.send(ticket)?;
        if counted {
            self.metrics.job_sent();
        }
        Ok(())
    }

    /// Notes that a token was used, for `token list`'s "last used".
    pub fn note_token_use(&self, token: u64, now: u64) {
        self.tokens_used.borrow_mut().insert(token, now);
    }

    /// Whether token uses wait to be written to `auth.json`, or downloads to `downloads/`.
    fn has_token_uses(&self) -> bool {
        !self.tokens_used.borrow().is_empty() || self.site.downloads.any()
    }

    /// Whether refused writes wait for the audit log.
    fn has_refusals(&self) -> bool {
        !self.refused_writes.borrow().is_empty()
    }

    /// A request refused for its credentials or ownership: peer, route and reason, never
    /// the token.
    fn log_refused(&self, peer: SocketAddr, why: &str) {
        info!("{} refused {why}", peer.ip());
    }

    /// A write route refused before it became a command: kept for the audit log (a batch a
    /// second goes to the writer), or only counted once the batch is full.
    fn note_refused_write(
        &self,
        endpoint: &crate::http::Endpoint,
        refused: &crate::http::Refused,
        peer: SocketAddr,
    ) {
        let Some((action, krate, version)) = endpoint.audited_write() else {
            return;
        };
        let mut pending = self.refused_writes.borrow_mut();
        if pending.kept.len() >= MAX_REFUSALS_PER_BATCH {
            pending.dropped += 1;
            return;
        }
        pending.kept.push(WriteRefusal {
            at: crate::registry::now(),
            action,
            krate,
            version,
            token: refused.token,
            peer: Some(peer.ip()),
            reason: refused.reason.clone(),
        });
    }

    fn log_request(
        &self,
        peer: SocketAddr,
        method: &str,
        target: &str,
        status: u16,
        bytes: u64,
        start: Instant,
    ) {
        info!(
            "{} {} {} {status} {bytes} {}us",
            peer.ip(),
            method,
            redact_tokens(target),
            start.elapsed().as_micros()
        );
    }
}

/// Refused writes waiting for the audit log.
#[derive(Debug, Default)]
pub struct RefusedWrites {
    kept: Vec<WriteRefusal>,
    /// Refused beyond what a batch keeps.
    dropped: u64,
}

impl RefusedWrites {
    fn is_empty(&self) -> bool {
        self.kept.is_empty() && self.dropped == 0
    }
}

/// A request target as the log shows it: anything shaped like a token (`pal_` and its hex
/// digits, which a client may have put in a query by mistake) is cut to `pal_…`.
fn redact_tokens(target: &str) -> std::borrow::Cow<'_, str> {
    if !target.contains(TOKEN_PREFIX) {
        return target.into();
    }
    let mut out = String::with_capacity(target.len());
    let mut rest = target;
    while let Some(i) = rest.find(TOKEN_PREFIX) {
        let after = &rest[i + TOKEN_PREFIX.len()..];
        let secret = after
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(after.len());
        out.push_str(&rest[..i]);
        out.push_str(TOKEN_PREFIX);
        if secret > 0 {
            out.push('…');
        }
        rest = &after[secret..];
    }
    out.push_str(rest);
    out.into()
}

/// A bound listener.
pub struct Listening {
    socket: TcpListener,
    pub addr: SocketAddr,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    config: config::Listener,
    /// Reported readable and not yet accepted from until `WouldBlock`.
    ready: bool,
}

impl Listening {
    /// A listener bound at `addr` (and registered with the loop's poller).
    pub fn new(
        socket: TcpListener,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        config: config::Listener,
    ) -> Listening {
        Listening {
            socket,
            addr,
            tls,
            config,
            ready: true,
        }
    }
}

/// What the startup ([`crate::server`]) hands the loop.
pub struct Parts {
    pub poll: Poll,
    pub listeners: Vec<Listening>,
    pub shared: Shared,
    pub signals: Signals,
    /// The config file, read again on SIGHUP for new certificates.
    pub config_path: Option<PathBuf>,
    /// The workers' answers.
    pub done: std::sync::mpsc::Receiver<worker::Done>,
    /// The registry's root, where `auth.json` and `palletizer.toml` are watched.
    pub root: PathBuf,
    pub changes: changes::Changes,
    /// Sends the registry's queued webhook deliveries; poked on every write noticed.
    pub webhooks: crate::webhooks::Deliverer,
}

/// A bound server, ready to run.
pub struct Server {
    poll: Poll,
    listeners: Vec<Listening>,
    conns: Slab<Conn>,
    shared: Shared,
    signals: Signals,
    config_path: Option<PathBuf>,
    /// Accepting is paused until this instant (EMFILE back-off).
    accept_paused: Option<Instant>,
    /// A listener used its accept budget with clients left: the next poll does not wait.
    accept_more: bool,
    /// Candidates for reclaiming, kept to reuse its allocation.
    reclaim: Vec<(Instant, usize)>,
    /// A scan of a full table found nothing to reclaim: the next waits until then.
    reclaim_blocked_until: Option<Instant>,
    shutdown_at: Option<Instant>,
    done: std::sync::mpsc::Receiver<worker::Done>,
    next_serial: u64,
    /// The registry's root, where `auth.json` and `palletizer.toml` are watched.
    root: PathBuf,
    /// When `auth.json` and `palletizer.toml` are next compared with the loaded view.
    next_auth_check: Instant,
    /// The stamp of access control files that failed to load (not retried until changed).
    auth_broken: Option<Stamp>,
    /// When the tokens' "last used" times and the download counts are next handed to the
    /// worker.
    next_use_flush: Instant,
    /// When the refused writes are next handed to the worker (for the audit log).
    next_refusal_flush: Instant,
    /// Writes to the registry, noticed as they finish (see [`changes`]).
    changes: changes::Changes,
    webhooks: crate::webhooks::Deliverer,
}

/// When the code pages that ran are given back: once the connection table has stayed
/// empty for [`IDLE_TRIM_AFTER`] (after startup, after the last connection), and again
/// after a wakeup while trimmed.
#[derive(Default)]
struct Trim {
    /// Since when the table has been empty.
    idle_since: Option<Instant>,
    /// Given back since (startup counts as the first busy spell).
    trimmed: bool,
}

impl Trim {
    fn before_poll(&mut self, empty: bool, now: Instant) {
        if !empty {
            self.idle_since = None;
            self.trimmed = false;
        } else if !self.trimmed && now >= *self.idle_since.get_or_insert(now) + IDLE_TRIM_AFTER {
            os::release_code_pages();
            os::release_freed_memory();
            self.trimmed = true;
        }
    }

    /// When the next trim is due, if one is.
    fn due(&self) -> Option<Instant> {
        self.idle_since
            .filter(|_| !self.trimmed)
            .map(|s| s + IDLE_TRIM_AFTER)
    }

    /// Woken while idle: if trimmed, trim again a second from now.
    fn woken(&mut self) {
        if self.trimmed {
            self.trimmed = false;
            self.idle_since = Some(Instant::now());
        }
    }
}

/// How often the access control files are checked for changes (two `stat` calls per check,
/// none per request). A token revoked with the CLI stops working at once when the server
/// notices the CLI's write lock being released (see [`changes`]), within this otherwise.
const AUTH_CHECK_EVERY: Duration = Duration::from_millis(500);
/// How long the connection table must stay empty (after startup, after the last connection)
/// before the code pages that ran are given back (see [`release_code_pages`]). Clients
/// keep connections alive through a burst of requests, so this is once per burst.
const IDLE_TRIM_AFTER: Duration = Duration::from_secs(1);
/// How often the tokens' "last used" times are written to `auth.json` (when any was used),
/// and the download counts to `downloads/` (when any crate file was served): a kill loses
/// at most this much of either.
const TOKEN_USE_FLUSH_EVERY: Duration = Duration::from_secs(60);
/// How often refused writes go to the audit log (when any was refused): one write a second
/// at most, whatever a flood of refused requests.
const REFUSAL_FLUSH_EVERY: Duration = Duration::from_secs(1);

impl Server {
    /// The loop over the pieces the startup made.
    pub fn new(parts: Parts) -> Server {
        let now = Instant::now();
        Server {
            conns: Slab::with_capacity(parts.shared.limits.max_connections.min(64)),
            poll: parts.poll,
            listeners: parts.listeners,
            shared: parts.shared,
            signals: parts.signals,
            config_path: parts.config_path,
            done: parts.done,
            next_serial: 0,
            accept_paused: None,
            accept_more: false,
            reclaim: Vec::new(),
            reclaim_blocked_until: None,
            shutdown_at: None,
            root: parts.root,
            next_auth_check: now + AUTH_CHECK_EVERY,
            auth_broken: None,
            next_use_flush: now + TOKEN_USE_FLUSH_EVERY,
            next_refusal_flush: now + REFUSAL_FLUSH_EVERY,
            changes: parts.changes,
            webhooks: parts.webhooks,
        }
    }

    /// Hands the tokens' "last used" times to the worker, which writes them to `auth.json`,
    /// and the download counts, which it adds to `downloads/`. Their answers go to no
    /// connection.
    fn flush_token_uses(&mut self) {
        let uses: Vec<(u64, u64)> = self.shared.tokens_used.borrow_mut().drain().collect();
        if !uses.is_empty() {
            self.send_background(crate::http::Job::RecordTokenUse(uses));
        }
        if self.shared.site.downloads.any() {
            let counts = self.shared.site.downloads.take();
            self.send_background(crate::http::Job::RecordDownloads(counts));
        }
    }

    /// Hands the refused writes to the worker, for the audit log.
    fn flush_refusals(&mut self) {
        let pending = std::mem::take(&mut *self.shared.refused_writes.borrow_mut());
        if pending.is_empty() {
            return;
        }
        self.send_background(crate::http::Job::AuditRefusals {
            refusals: pending.kept,
            dropped: pending.dropped,
        });
    }

    /// A write for the worker whose answer goes to no connection.
    fn send_background(&self, job: crate::http::Job) {
        let _ = self.shared.send_job(worker::Ticket {
            key: usize::MAX,
            serial: 0,
            job,
            reserved: None,
            principal: None,
            peer: None,
            lane: crate::http::Lane::Writer,
        });
    }

    /// At shutdown, on this thread (the worker may not get to a last job): the tokens' last
    /// uses, the download counts and the refused writes.
    fn record_token_uses_now(&mut self) {
        let uses: Vec<(u64, u64)> = self.shared.tokens_used.borrow_mut().drain().collect();
        let counts = self.shared.site.downloads.take();
        let refused = std::mem::take(&mut *self.shared.refused_writes.borrow_mut());
        if uses.is_empty() && counts.is_empty() && refused.is_empty() {
            return;
        }
        let reg = match Registry::open_as_is(&self.root) {
            Ok(reg) => reg,
            Err(e) => {
                error!("last uses, downloads and refusals not recorded: {e}");
                return;
            }
        };
        if let Err(e) = reg.record_last_used(&uses) {
            error!("tokens' last use not recorded: {e}");
        }
        if let Err(e) = reg.record_downloads(&counts, crate::registry::now()) {
            error!("download counts not recorded: {e}");
        }
        if let Err(e) = reg.audit_refusals(&refused.kept, refused.dropped) {
            error!("refused writes not in the audit log: {e}");
        }
    }

    /// A writer released the registry's lock (kept files are checked again on their next
    /// use), the lock's watch was lost, or an access file was edited by hand: either way
    /// the access control files are looked at now (a token revoked with the CLI stops
    /// working at once).
    fn on_changes(&mut self) {
        match self.changes.drain() {
            changes::Seen::Nothing => return,
            changes::Seen::Access => {}
            changes::Seen::Written => {
                self.shared.site.trees.written(true);
                // A write may have queued webhook deliveries (this server's or the CLI's).
                self.webhooks.poke();
            }
            changes::Seen::Lost => {
                self.changes.retry();
                self.shared.site.trees.written(self.changes.watching());
                self.webhooks.poke();
            }
        }
        self.next_auth_check = Instant::now();
    }

    /// Reloads the access control view when its files changed. A file that does not parse
    /// keeps the old view (and is reported once per change).
    fn check_auth(&mut self, now: Instant) {
        if now >= self.next_use_flush {
            self.next_use_flush = now + TOKEN_USE_FLUSH_EVERY;
            self.flush_token_uses();
        }
        if now >= self.next_refusal_flush {
            self.next_refusal_flush = now + REFUSAL_FLUSH_EVERY;
            self.flush_refusals();
        }
        if now < self.next_auth_check {
            return;
        }
        self.next_auth_check = now + AUTH_CHECK_EVERY;
        if !self.changes.covers_everything() {
            // Writes may go unnoticed: the webhook queue is looked at on this clock too.
            self.webhooks.poke();
            let was = self.changes.watching();
            // Writes from now on are noticed: kept files are checked once more.
            if self.changes.retry() && !was {
                self.shared.site.trees.written(true);
            }
        }
        let stamp = Stamp::current(&self.root);
        if stamp == self.shared.site.auth.stamp() || Some(stamp) == self.auth_broken {
            return;
        }
        match AuthView::load(&self.root) {
            Ok(view) => {
                if view.access() != self.shared.site.access() {
                    // `palletizer.toml` was edited by hand: `config.json` must follow.
                    info!("access is now {}", view.access());
                    self.send_background(crate::http::Job::SyncAccess);
                }
                debug!(
                    "access control reloaded: {}, {} users, {} tokens",
                    view.access(),
                    view.user_count(),
                    view.token_count()
                );
                self.shared.site.auth = Arc::new(view);
                os::release_freed_memory();
                if self.shared.site.auth_broken.take().is_some() {
                    info!("access control files load again; tokens are taken again");
                }
                self.shared.metrics.set_auth_broken(false);
                self.auth_broken = None;
            }
            Err(e) => {
                error!(
                    "error: access control files do not load: {e}; every request that \
                     needs a token is refused (503) until they do"
                );
                self.shared.site.auth_broken = Some(e.to_string());
                self.shared.metrics.set_auth_broken(true);
                self.auth_broken = Some(stamp);
            }
        }
    }

    /// The bound addresses, with whether each speaks TLS.
    pub fn local_addrs(&self) -> Vec<(SocketAddr, bool)> {
        self.listeners
            .iter()
            .map(|l| (l.addr, l.tls.is_some()))
            .collect()
    }

    fn sweep_interval(&self) -> Duration {
        let l = &self.shared.limits;
        let shortest = l
            .head_timeout_ms
            .min(l.idle_timeout_ms)
            .min(l.io_timeout_ms);
        Duration::from_millis((shortest / 4).clamp(10, 1000))
    }

    /// Runs until SIGTERM or SIGINT, then finishes responses in flight (bounded) and returns.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        let mut again: Vec<usize> = Vec::new();
        let mut closed: Vec<usize> = Vec::new();
        let sweep_every = self.sweep_interval();
        let mut next_sweep = Instant::now() + sweep_every;
        let mut trim = Trim::default();
        // The last stage of startup (see `crate::server`).
        os::release_code_pages();
        loop {
            let now = Instant::now();
            trim.before_poll(self.conns.is_empty(), now);
            let timeout = self.poll_timeout(now, next_sweep, &trim, again.is_empty());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            // Woken while idle and trimmed (a change, a signal, a job's answer): whatever
            // runs now maps code back in, so it is given back again a second later. Only
            // while nothing is polled: a poll every half second would trim every second.
            if self.conns.is_empty() && self.changes.covers_everything() {
                trim.woken();
            }
            // Before any request is looked at: a request sent after a writer finished must
            // see its files, and a request after an idle spell must meet the current
            // tokens, not those of the last check.
            if events.iter().any(|e| e.token() == CHANGES_TOKEN) {
                self.on_changes();
            }
            self.check_auth(Instant::now());
            for key in std::mem::take(&mut again) {
                self.drive(key, &mut again, &mut closed);
            }
            self.dispatch(&events, &mut again, &mut closed);
            let now = Instant::now();
            if now >= next_sweep {
                next_sweep = now + sweep_every;
                self.sweep(now, &mut closed);
            }
            again.retain(|k| !closed.contains(k));
            for key in closed.drain(..) {
                self.remove(key);
            }
            if self
                .accept_paused
                .is_some_and(|until| Instant::now() >= until)
            {
                self.accept_paused = None;
            }
            self.accept_more = false;
            for i in 0..self.listeners.len() {
                self.accept(i, &mut again);
            }
            if self.shutdown_done(&mut closed) {
                return Ok(());
            }
        }
    }

    /// How long the next poll may wait. Idle, the loop wakes once to give memory back, to
    /// write the tokens' last uses, and otherwise only when a client or a change comes:
    /// changes arrive as events while the watches are in place (see `changes`). Without
    /// them it looks at the access files every half second (and makes `config.json` follow
    /// a mode edited by hand).
    fn poll_timeout(
        &self,
        now: Instant,
        next_sweep: Instant,
        trim: &Trim,
        nothing_again: bool,
    ) -> Option<Duration> {
        if !nothing_again || self.accept_more {
            return Some(Duration::ZERO);
        }
        let mut timeout = if self.conns.is_empty() && self.accept_paused.is_none() {
            let wake = [
                (!self.changes.covers_everything()).then_some(self.next_auth_check),
                trim.due(),
                self.shared.has_token_uses().then_some(self.next_use_flush),
                self.shared
                    .has_refusals()
                    .then_some(self.next_refusal_flush),
            ];
            wake.into_iter()
                .flatten()
                .min()
                .map(|w| w.saturating_duration_since(now))
        } else {
            Some(next_sweep.saturating_duration_since(now))
        };
        if let Some(until) = self.accept_paused {
            let wait = until.saturating_duration_since(now);
            timeout = Some(timeout.map_or(wait, |t| t.min(wait)));
        }
        timeout
    }

    /// Handles one batch of events: signals, the workers' answers, listeners made ready,
    /// connections made readable or writable.
    fn dispatch(&mut self, events: &Events, again: &mut Vec<usize>, closed: &mut Vec<usize>) {
        for event in events.iter() {
            match event.token() {
                SIGNAL_TOKEN => self.on_signals(),
                CHANGES_TOKEN => {}
                WAKER_TOKEN => {
                    while let Ok(d) = self.done.try_recv() {
                        let Some(conn) = self.conns.get_mut(d.key) else {
                            continue;
                        };
                        if conn.serial != d.serial || closed.contains(&d.key) {
                            continue;
                        }
                        conn.finish_job(d.response, &self.shared);
                        self.drive(d.key, again, closed);
                    }
                }
                Token(t) if t >= FIRST_LISTENER => {
                    if let Some(l) = self.listeners.get_mut(t - FIRST_LISTENER) {
                        l.ready = true;
                    }
                }
                Token(key) => {
                    let Some(conn) = self.conns.get_mut(key) else {
                        continue;
                    };
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        conn.readable = true;
                    }
                    if event.is_read_closed() || event.is_error() {
                        conn.read_closed = true;
                    }
                    if event.is_writable() || event.is_write_closed() || event.is_error() {
                        conn.writable = true;
                    }
                    self.drive(key, again, closed);
                }
            }
        }
    }

    /// While stopping: closes what is idle; true once nothing is left or the grace passed.
    fn shutdown_done(&mut self, closed: &mut Vec<usize>) -> bool {
        let Some(deadline) = self.shutdown_at else {
            return false;
        };
        for (key, conn) in self.conns.iter_mut() {
            conn.draining = true;
            if conn.is_idle() {
                conn.end(conn::CloseReason::Shutdown);
                conn.transport.close();
                closed.push(key);
            }
        }
        for key in closed.drain(..) {
            self.remove(key);
        }
        if self.conns.is_empty() || Instant::now() >= deadline {
            self.record_token_uses_now();
            info!("stopped ({} connections cut)", self.conns.len());
            return true;
        }
        false
    }

    /// Closes connections past their deadline; under pressure, heads get a shorter one.
    fn sweep(&mut self, now: Instant, closed: &mut Vec<usize>) {
        let limits = &self.shared.limits;
        let pressure = self.conns.len() * 4 > limits.max_connections * 3;
        let short_head = limits.head_timeout_under_pressure();
        for (key, conn) in self.conns.iter_mut() {
            let slow_head = pressure && conn.awaits_head() && now >= conn.since + short_head;
            if (now >= conn.deadline || slow_head) && !closed.contains(&key) {
                if slow_head && now < conn.deadline {
                    debug!(
                        "{} closed: head too slow while the table is busy",
                        conn.peer
                    );
                } else {
                    debug!("{} timed out", conn.peer);
                }
                self.shared.metrics.timed_out();
                conn.end(conn::CloseReason::Timeout(conn.waiting_for()));
                conn.transport.close();
                closed.push(key);
            }
        }
    }

    /// The table is full: closes the oldest reclaimable connections, a batch at most.
    /// Returns how many slots it freed. Runs outside an event batch.
    fn reclaim(&mut self, again: &mut Vec<usize>) -> usize {
        let now = Instant::now();
        if self.reclaim_blocked_until.is_some_and(|t| now < t) {
            return 0;
        }
        let mut found = std::mem::take(&mut self.reclaim);
        found.clear();
        found.extend(
            self.conns
                .iter()
                .filter(|(_, c)| c.is_reclaimable(now))
                .map(|(key, c)| (c.since, key)),
        );
        if found.len() > RECLAIM_BATCH {
            found.select_nth_unstable(RECLAIM_BATCH - 1);
            found.truncate(RECLAIM_BATCH);
        }
        for &(_, key) in &found {
            let conn = &mut self.conns[key];
            debug!("{} reclaimed: idle while the table is full", conn.peer);
            self.shared.metrics.reclaimed();
            conn.end(conn::CloseReason::Reclaimed);
            conn.transport.close();
            again.retain(|&k| k != key);
            self.remove(key);
        }
        let n = found.len();
        self.reclaim = found;
        // A table full of busy connections is not rescanned on every turn of the loop.
        self.reclaim_blocked_until = (n == 0).then(|| now + RECLAIM_RETRY);
        n
    }

    /// Frees a connection's slot (its transport is already closed).
    fn remove(&mut self, key: usize) {
        let mut conn = self.conns.remove(key);
        let why = conn.ended.unwrap_or(conn::CloseReason::IoError);
        debug!("{} closed: {}", conn.peer, why.name());
        self.shared
            .metrics
            .conn_closed(conn.transport.handshake_failed(), why);
        let _ = self.poll.registry().deregister(conn.transport.socket());
    }

    fn drive(&mut self, key: usize, again: &mut Vec<usize>, closed: &mut Vec<usize>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.drive(&self.shared) {
            Turn::Parked => {}
            Turn::Again => {
                if !again.contains(&key) {
                    again.push(key);
                }
            }
            Turn::Closed => {
                if !closed.contains(&key) {
                    closed.push(key);
                }
            }
        }
    }

    /// Accepts from listener `i`, a budget at a time. It stays `ready` until `accept`
    /// reports `WouldBlock`: the listener is edge-triggered, and clients left in the
    /// backlog would bring no new event.
    fn accept(&mut self, i: usize, again: &mut Vec<usize>) {
        if self.shutdown_at.is_some() || self.accept_paused.is_some() || !self.listeners[i].ready {
            return;
        }
        for _ in 0..ACCEPT_BUDGET {
            if self.conns.len() >= self.shared.limits.max_connections && self.reclaim(again) == 0 {
                // Every connection is busy: clients wait in the kernel's backlog until a
                // slot frees (the loop retries after every turn).
                return;
            }
            let l = &mut self.listeners[i];
            let (mut sock, peer) = match l.socket.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    l.ready = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS: back off instead of spinning or dying.
                    error!("accept on {}: {e}; pausing accepts for 100 ms", l.addr);
                    self.shared.metrics.accept_failed();
                    self.accept_paused = Some(Instant::now() + Duration::from_millis(100));
                    return;
                }
            };
            // Without it, keep-alive responses wait ~40 ms on delayed ACKs.
            let _ = sock.set_nodelay(true);
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            if let Err(e) = self.poll.registry().register(
                &mut sock,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                error!("registering {peer}: {e}");
                continue;
            }
            let transport = match &l.tls {
                Some(cfg) => match Transport::tls(sock, cfg.clone()) {
                    Ok(t) => t,
                    Err(e) => {
                        error!("tls for {peer}: {e}");
                        continue;
                    }
                },
                None => Transport::Plain(sock),
            };
            let deadline = Instant::now() + self.shared.limits.head_timeout();
            self.next_serial += 1;
            let conn = entry.insert(Conn::new(key, self.next_serial, transport, peer, deadline));
            conn.metrics_listener = l.config.metrics;
            self.shared.metrics.conn_opened();
        }
        self.accept_more = true;
    }

    fn on_signals(&mut self) {
        let pending: Vec<i32> = self.signals.pending().collect();
        for sig in pending {
            match sig {
                SIGHUP => self.reload_tls(),
                _ => {
                    if self.shutdown_at.is_none() {
                        info!("stopping: no new connections, finishing responses in flight");
                        let grace = Duration::from_millis(self.shared.limits.shutdown_grace_ms);
                        self.shutdown_at = Some(Instant::now() + grace);
                        for l in &mut self.listeners {
                            let _ = self.poll.registry().deregister(&mut l.socket);
                        }
                    }
                }
            }
        }
    }

    /// SIGHUP: re-reads the config file's TLS settings and the certificates. New connections
    /// get the new ones; open connections keep theirs.
    fn reload_tls(&mut self) {
        let fresh = match &self.config_path {
            Some(path) => match ServerConfig::load(path) {
                Ok(c) => Some(c),
                Err(e) => {
                    error!("reload: {e}; keeping the current certificates");
                    return;
                }
            },
            None => None,
        };
        for (i, l) in self.listeners.iter_mut().enumerate() {
            let files = match &fresh {
                Some(c) => c.listeners.get(i).and_then(|n| n.tls.clone()),
                None => l.config.tls.clone(),
            };
            let Some(files) = files else { continue };
            match transport::load_tls(&files.certificate_chain, &files.private_key) {
                Ok(cfg) if l.tls.is_some() => {
                    l.tls = Some(cfg);
                    l.config.tls = Some(files);
                    info!("reloaded TLS certificate for {}", l.addr);
                }
                Ok(_) => error!(
                    "reload: listener {} was not started with TLS; restart to add it",
                    l.addr
                ),
                Err(e) => error!(
                    "reload: {e}; keeping the current certificate for {}",
                    l.addr
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_never_reach_the_log() {
        assert_eq!(
            super::redact_tokens("/index/config.json"),
            "/index/config.json"
        );
        assert_eq!(
            super::redact_tokens("/x?token=pal_0123abcdef&b=pal_ff"),
            "/x?token=pal_…&b=pal_…"
        );
        assert_eq!(super::redact_tokens("/pal_"), "/pal_");
    }
}
