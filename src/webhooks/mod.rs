//! Webhook deliveries: the server's side of the registry's outbox
//! ([`crate::registry::Outbox`]), where every change queues its deliveries on disk before
//! it is acknowledged (by the server or the CLI alike).
//!
//! [`WORKERS`] threads of their own send them, off the event loop and the registry writer,
//! each one request at a time with the client's timeouts ([`client`]): a slow or dead
//! receiver holds a delivery thread, never a publish, and the queue it leaves behind is on
//! disk, bounded by the outbox, not in memory. In memory there is one small entry per
//! queued file (its name, its receiver's hash, when it expires) and one per receiver.
//!
//! Order and retries: deliveries go oldest first, one at a time per receiver (so each
//! receiver gets them in order, and one that hangs holds one thread). A receiver that
//! cannot be reached, times out or answers 5xx (or 408, 429) is *down*: its deliveries
//! wait, from 1 s after the first failure, doubling up to [`MAX_BACKOFF`], and then the
//! oldest is tried again; its first 2xx sends the rest. A 2xx removes the delivery's file; another answer (3xx, 4xx) gives it up, as
//! does its retry time (`webhook-retry-for`) running out. Each outcome is counted
//! ([`Stats`]) and each failure logged, one line per attempt.
//!
//! The queue is looked at again when [`Deliverer::poke`]d (the loop does on every write it
//! notices, the CLI's included) and at start, so deliveries the CLI queued while no server
//! ran go out when one starts. A restart forgets the back-off: every receiver is tried once
//! more at once.

mod client;

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::registry::{now, shown_url, Delivery, Outbox};

pub use client::Tls;

/// Deliveries in flight at once (at most one per receiver).
pub const WORKERS: usize = 2;
/// The longest wait between two attempts to reach a receiver that is down.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Queued files tracked in memory at once (the outbox's bound is normally far lower).
const MAX_TRACKED: usize = 100_000;

/// What `/metrics` reports of the deliveries.
#[derive(Debug, Default)]
pub struct Stats {
    /// Answered 2xx.
    pub succeeded: AtomicU64,
    /// Given up: a 3xx or 4xx answer, retry time over, or a file that is no delivery.
    pub failed: AtomicU64,
    /// Attempts that failed and are retried.
    pub retried: AtomicU64,
    /// Deliveries waiting now (as of the last look at the queue).
    pub queued: AtomicU64,
}

/// The running delivery threads. Dropping it lets them end after what they are sending.
pub struct Deliverer {
    shared: Arc<Shared>,
}

struct Shared {
    outbox: Outbox,
    state: Mutex<State>,
    wake: Condvar,
    stats: Arc<Stats>,
    tls: Tls,
}

#[derive(Default)]
struct State {
    /// Queued files by name: oldest first.
    queued: BTreeMap<String, Queued>,
    /// Receivers by the hash of their URL.
    receivers: HashMap<u64, Receiver>,
    /// The folder must be listed again before the next pick.
    rescan: bool,
    stop: bool,
}

struct Queued {
    receiver: u64,
    /// Unix seconds.
    expires: u64,
    busy: bool,
}

#[derive(Default)]
struct Receiver {
    /// Failed attempts in a row.
    failures: u32,
    /// While down: no attempt before this.
    retry_at: Option<Instant>,
    /// Deliveries to it in flight.
    busy: u32,
}

/// What an attempt came to.
enum Outcome {
    Delivered(u16),
    /// Down: retried later.
    Retry(String),
    /// Given up.
    Refused(String),
}

impl Deliverer {
    /// Starts the delivery threads over `outbox`, counting in `stats`.
    pub fn start(outbox: Outbox, stats: Arc<Stats>) -> std::io::Result<Deliverer> {
        Deliverer::start_with(outbox, stats, Tls::default())
    }

    /// [`Deliverer::start`] with a TLS configuration of the caller's (tests).
    pub fn start_with(outbox: Outbox, stats: Arc<Stats>, tls: Tls) -> std::io::Result<Deliverer> {
        outbox.remove_stale_temps();
        let shared = Arc::new(Shared {
            outbox,
            state: Mutex::new(State {
                rescan: true,
                ..State::default()
            }),
            wake: Condvar::new(),
            stats,
            tls,
        });
        for i in 0..WORKERS {
            let s = shared.clone();
            std::thread::Builder::new()
                .name(format!("webhook-{i}"))
                .stack_size(1024 * 1024)
                .spawn(move || s.work())?;
        }
        Ok(Deliverer { shared })
    }

    /// Something may have been queued: the queue is listed again.
    pub fn poke(&self) {
        self.shared.lock().rescan = true;
        self.shared.wake.notify_all();
    }
}

impl Drop for Deliverer {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A delivery thread that panicked left plain data behind: carry on with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One delivery thread: the next due delivery, sent, its outcome recorded.
    fn work(&self) {
        while let Some(name) = self.next() {
            let outcome = match self.outbox.read(&name) {
                Ok(d) => Some((attempt(&d, &self.tls), d)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    error!("webhook queue: {name} is not a delivery ({e}); removed");
                    let _ = self.outbox.remove(&name);
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    None
                }
            };
            self.finish(&name, outcome);
        }
    }

    /// Waits for a delivery that is due and marks it busy; `None` once stopped.
    fn next(&self) -> Option<String> {
        let mut st = self.lock();
        loop {
            if st.stop {
                return None;
            }
            if std::mem::take(&mut st.rescan) {
                self.rescan(&mut st);
            }
            match self.pick(&mut st) {
                Ok(name) => return Some(name),
                Err(Some(wait)) => {
                    st = self
                        .wake
                        .wait_timeout(st, wait)
                        .map_or_else(|e| e.into_inner().0, |r| r.0)
                }
                Err(None) => st = self.wake.wait(st).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }

    /// The oldest delivery that may go now; else how long until one may (`None`: until
    /// poked). Deliveries whose time is over are given up on the way.
    fn pick(&self, st: &mut State) -> Result<String, Option<Duration>> {
        let now_unix = now();
        let now = Instant::now();
        let mut wait: Option<Duration> = None;
        let mut soonest = |d: Duration| wait = Some(wait.map_or(d, |w| w.min(d)));
        let mut expired = Vec::new();
        let mut picked = None;
        let State {
            queued, receivers, ..
        } = st;
        for (name, q) in queued.iter_mut().filter(|(_, q)| !q.busy) {
            if q.expires <= now_unix {
                expired.push(name.clone());
                continue;
            }
            soonest(Duration::from_secs(q.expires - now_unix));
            let r = receivers.entry(q.receiver).or_default();
            // One delivery at a time per receiver: in order, and a receiver that hangs
            // holds one thread, not all of them.
            if r.busy > 0 {
                continue;
            }
            if let Some(at) = r.retry_at.filter(|&at| now < at) {
                soonest(at - now);
                continue;
            }
            q.busy = true;
            r.busy += 1;
            picked = Some(name.clone());
            break;
        }
        if !expired.is_empty() {
            for name in expired {
                queued.remove(&name);
                self.give_up(&name, "its retry time is over");
            }
            self.stats
                .queued
                .store(queued.len() as u64, Ordering::Relaxed);
        }
        picked.ok_or(wait)
    }

    /// Lists the folder: new files are read for their receiver and expiry, gone ones are
    /// forgotten.
    fn rescan(&self, st: &mut State) {
        let names = match self.outbox.list() {
            Ok(names) => names,
            Err(e) => {
                error!("webhook queue {}: {e}", self.outbox.dir().display());
                return;
            }
        };
        st.queued
            .retain(|name, q| q.busy || names.binary_search(name).is_ok());
        for name in names.iter().take(MAX_TRACKED) {
            if st.queued.contains_key(name) {
                continue;
            }
            match self.outbox.read(name) {
                Ok(d) => {
                    let q = Queued {
                        receiver: receiver_key(&d.url),
                        expires: d.expires,
                        busy: false,
                    };
                    st.queued.insert(name.clone(), q);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    error!("webhook queue: {name} is not a delivery ({e}); removed");
                    let _ = self.outbox.remove(name);
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let State {
            queued, receivers, ..
        } = st;
        receivers.retain(|key, r| r.busy > 0 || queued.values().any(|q| q.receiver == *key));
        self.stats
            .queued
            .store(queued.len() as u64, Ordering::Relaxed);
    }

    /// Records what an attempt came to (`None`: there was no delivery to send).
    fn finish(&self, name: &str, outcome: Option<(Outcome, Delivery)>) {
        let mut st = self.lock();
        let key = st.queued.get(name).map(|q| q.receiver);
        let receiver = key.and_then(|k| st.receivers.get_mut(&k));
        if let Some(r) = receiver {
            r.busy = r.busy.saturating_sub(1);
            match &outcome {
                Some((Outcome::Retry(_), _)) => {
                    r.failures = r.failures.saturating_add(1);
                    r.retry_at = Some(Instant::now() + backoff(r.failures));
                }
                Some(_) => {
                    r.failures = 0;
                    r.retry_at = None;
                }
                None => {}
            }
        }
        let retry_in = key
            .and_then(|k| st.receivers.get(&k))
            .and_then(|r| r.retry_at)
            .map_or(0, |at| {
                at.saturating_duration_since(Instant::now()).as_secs()
            });
        match outcome {
            Some((Outcome::Retry(why), d)) => {
                self.stats.retried.fetch_add(1, Ordering::Relaxed);
                error!(
                    "webhook delivery {} ({}) to {}: {why}; next attempt in {retry_in}s",
                    d.id,
                    d.event,
                    shown_url(&d.url)
                );
                if let Some(q) = st.queued.get_mut(name) {
                    q.busy = false;
                }
            }
            Some((Outcome::Delivered(status), d)) => {
                st.queued.remove(name);
                if let Err(e) = self.outbox.remove(name) {
                    error!("webhook queue: removing {name}: {e}");
                }
                self.stats.succeeded.fetch_add(1, Ordering::Relaxed);
                debug!(
                    "webhook delivery {} ({}) to {}: {status}",
                    d.id,
                    d.event,
                    shown_url(&d.url)
                );
            }
            Some((Outcome::Refused(why), _)) => {
                st.queued.remove(name);
                self.give_up(name, &why);
            }
            None => {
                st.queued.remove(name);
            }
        }
        self.stats
            .queued
            .store(st.queued.len() as u64, Ordering::Relaxed);
        drop(st);
        // A slot is free, a receiver may be back: the others look again.
        self.wake.notify_all();
    }

    /// Removes a delivery that will not be sent, counted and logged.
    fn give_up(&self, name: &str, why: &str) {
        let _ = self.outbox.remove(name);
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        error!(
            "webhook delivery {} given up: {why}",
            name.trim_end_matches(".json")
        );
    }
}

/// One attempt: the POST and what its answer means.
fn attempt(d: &Delivery, tls: &Tls) -> Outcome {
    let headers = [
        (
            "User-Agent",
            concat!("palletizer/", env!("CARGO_PKG_VERSION")),
        ),
        ("Content-Type", "application/json"),
        ("X-Palletizer-Event", d.event.as_str()),
        ("X-Palletizer-Delivery", d.id.as_str()),
        ("X-Palletizer-Signature", d.signature.as_str()),
    ];
    match client::post(&d.url, &headers, d.body.as_bytes(), tls) {
        Ok(status @ 200..=299) => Outcome::Delivered(status),
        // Busy or failing: the receiver may take it later.
        Ok(status @ (408 | 429 | 500..)) => Outcome::Retry(format!("answered {status}")),
        Ok(status) => Outcome::Refused(format!("answered {status}")),
        Err(client::Failure::Url(e)) => Outcome::Refused(e),
        Err(e) => Outcome::Retry(e.to_string()),
    }
}

/// 1 s after the first failure, doubling, at most [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(16);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

fn receiver_key(url: &str) -> u64 {
    let mut h = DefaultHasher::new();
    url.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests;
