//! Per-peer rate limits, decided on the event loop before a request costs anything else:
//! requests per second per peer address, failed authentications per peer address, and
//! concurrent uploads per token.
//!
//! A peer over a limit gets a 429 with `Retry-After` (cargo waits that long, up to 10 s,
//! and tries again), a cargo-readable detail, a log line (at most one per peer and
//! [`LOG_EVERY`]) and a count in `palletizer_rate_limited_total{limit}`.
//!
//! Invariants:
//! - Memory is fixed: peers live in a table of [`SLOTS`] entries allocated zeroed at start
//!   (pages the kernel maps only once a peer lands on them), whatever the number of
//!   addresses; uploads in flight are bounded by the open connections.
//! - A request under the limits makes no system call: the time is the loop's, the state
//!   a few words in the table.
//! - IPv6 peers are counted by their /64, the block one host or one site is given, so an
//!   attacker cannot mint a fresh address per request.
//!
//! The rates are GCRA (the generic cell rate algorithm, a token bucket kept as one time
//! per limit): `burst` events at once, then one per interval.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::config::Limits;
use crate::http::Response;

/// Peers tracked at once. A peer that finds both of its slots taken by others replaces the
/// less busy one: an address seen once long ago is forgotten first.
pub const SLOTS: usize = 4096;
/// At most one log line per peer for this long while it stays over a limit.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Which limit a refused request met: the `limit` label of the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Requests,
    AuthFailures,
    Uploads,
}

impl Limit {
    pub const ALL: [Limit; 3] = [Limit::Requests, Limit::AuthFailures, Limit::Uploads];

    pub fn label(self) -> &'static str {
        match self {
            Limit::Requests => "requests",
            Limit::AuthFailures => "auth_failures",
            Limit::Uploads => "uploads",
        }
    }
}

/// A request over a limit: what it met and how long the client is asked to wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Over {
    pub limit: Limit,
    /// Whole seconds, at least 1.
    pub retry_after: u64,
    detail: String,
}

impl Over {
    /// The 429 cargo retries after `Retry-After`.
    pub fn response(&self) -> Response {
        Response::error(429, &self.detail).header("Retry-After", self.retry_after.to_string())
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }
}

/// One rate: `burst` events at once, then one every `interval_us`.
#[derive(Debug, Clone, Copy)]
struct Rate {
    interval_us: u64,
    /// How far ahead of now the theoretical arrival time may run: `(burst - 1) × interval`.
    tolerance_us: u64,
}

impl Rate {
    /// `events` per `per`, `burst` at once; `None` (no limit) when `events` is 0.
    fn new(events: u64, per: Duration, burst: u64) -> Option<Rate> {
        if events == 0 {
            return None;
        }
        let interval_us = (per.as_micros() as u64 / events).max(1);
        Some(Rate {
            interval_us,
            tolerance_us: interval_us.saturating_mul(burst.max(1) - 1),
        })
    }

    /// Whether an event at `now` conforms, given the stored theoretical arrival time `tat`:
    /// `Ok(new tat)` or `Err(microseconds until one would)`.
    fn admit(self, tat: u64, now: u64) -> Result<u64, u64> {
        let tat = tat.max(now);
        match (tat - now).checked_sub(self.tolerance_us) {
            Some(ahead) if ahead > 0 => Err(ahead),
            _ => Ok(tat + self.interval_us),
        }
    }
}

/// A peer's slot: `[key, request tat, auth-failure tat, last log]`, times in microseconds
/// since the throttle started; key 0 is an empty slot.
type Slot = [u64; 4];
const KEY: usize = 0;
const REQUESTS: usize = 1;
const FAILURES: usize = 2;
const LOGGED: usize = 3;

/// The limits in force and the state they keep.
pub struct Throttle {
    requests: Option<Rate>,
    failures: Option<Rate>,
    uploads_per_token: u32,
    /// Words for the details: "1000 requests a second, 10000 at once".
    requests_said: String,
    failures_said: String,
    epoch: Instant,
    hasher: RandomState,
    slots: RefCell<Box<[Slot]>>,
    uploads: Rc<RefCell<HashMap<u64, u32>>>,
}

impl Throttle {
    pub fn new(limits: &Limits) -> Throttle {
        Throttle {
            requests: Rate::new(
                limits.requests_per_second,
                Duration::from_secs(1),
                limits.request_burst,
            ),
            failures: Rate::new(
                limits.auth_failures_per_minute,
                Duration::from_secs(60),
                limits.auth_failure_burst,
            ),
            uploads_per_token: limits.uploads_per_token,
            requests_said: format!(
                "{} requests a second, {} at once",
                limits.requests_per_second, limits.request_burst
            ),
            failures_said: format!(
                "{} refused tokens a minute, {} at once",
                limits.auth_failures_per_minute, limits.auth_failure_burst
            ),
            epoch: Instant::now(),
            hasher: RandomState::new(),
            // Zeroed: the allocator asks the kernel for fresh pages, resident only once used.
            slots: RefCell::new(vec![[0u64; 4]; SLOTS].into_boxed_slice()),
            uploads: Rc::default(),
        }
    }

    /// Counts a request from `peer` at `now`.
    pub fn request(&self, peer: IpAddr, now: Instant) -> Result<(), Box<Over>> {
        let Some(rate) = self.requests else {
            return Ok(());
        };
        self.charge(peer, now, REQUESTS, rate).map_err(|wait| {
            self.over(peer, now, Limit::Requests, wait, || {
                format!(
                    "too many requests from {peer}: this registry takes {} from one address; \
                     try again in a moment",
                    self.requests_said
                )
            })
        })
    }

    /// Whether `peer` may present a token now: refused while its refused tokens are over
    /// the limit (nothing is charged; [`Self::auth_failed`] charges).
    pub fn may_authenticate(&self, peer: IpAddr, now: Instant) -> Result<(), Box<Over>> {
        let Some(rate) = self.failures else {
            return Ok(());
        };
        let now_us = self.micros(now);
        let key = self.key(peer);
        let wait = {
            let slots = self.slots.borrow();
            let found = self.candidates(key).find(|&i| slots[i][KEY] == key);
            found.and_then(|i| rate.admit(slots[i][FAILURES], now_us).err())
        };
        match wait {
            None => Ok(()),
            Some(wait) => Err(self.over(peer, now, Limit::AuthFailures, wait, || {
                self.failures_detail(peer)
            })),
        }
    }

    /// Counts a refused token from `peer`. `Err`: that one passed the limit, and the
    /// client is told to wait rather than what was wrong with the token.
    pub fn auth_failed(&self, peer: IpAddr, now: Instant) -> Result<(), Box<Over>> {
        let Some(rate) = self.failures else {
            return Ok(());
        };
        self.charge(peer, now, FAILURES, rate).map_err(|wait| {
            self.over(peer, now, Limit::AuthFailures, wait, || {
                self.failures_detail(peer)
            })
        })
    }

    /// A permit for one more upload by `token`, given back when dropped.
    pub fn upload(&self, token: u64) -> Result<Option<UploadPermit>, Box<Over>> {
        if self.uploads_per_token == 0 {
            return Ok(None);
        }
        let mut table = self.uploads.borrow_mut();
        let n = table.entry(token).or_insert(0);
        if *n >= self.uploads_per_token {
            let limit = self.uploads_per_token;
            return Err(Box::new(Over {
                limit: Limit::Uploads,
                retry_after: 1,
                detail: format!(
                    "token {token} already has {limit} uploads in progress, as many as this \
                     registry takes at once from one token; try again when one is done"
                ),
            }));
        }
        *n += 1;
        Ok(Some(UploadPermit {
            table: Rc::clone(&self.uploads),
            token,
        }))
    }

    /// Uploads in progress, over every token.
    pub fn uploads_in_progress(&self) -> u32 {
        self.uploads.borrow().values().sum()
    }

    fn failures_detail(&self, peer: IpAddr) -> String {
        format!(
            "too many refused tokens from {peer}: this registry takes {}; try again later",
            self.failures_said
        )
    }

    fn over(
        &self,
        peer: IpAddr,
        now: Instant,
        limit: Limit,
        wait_us: u64,
        detail: impl FnOnce() -> String,
    ) -> Box<Over> {
        let detail = detail();
        if self.should_log(peer, now) {
            info!(
                "{} rate limited ({}): {detail}; logged again in {} s at the earliest",
                peer,
                limit.label(),
                LOG_EVERY.as_secs()
            );
        }
        Box::new(Over {
            limit,
            retry_after: wait_us.div_ceil(1_000_000).max(1),
            detail,
        })
    }

    fn should_log(&self, peer: IpAddr, now: Instant) -> bool {
        let now_us = self.micros(now);
        let key = self.key(peer);
        let mut slots = self.slots.borrow_mut();
        let Some(i) = self.candidates(key).find(|&i| slots[i][KEY] == key) else {
            return true;
        };
        let last = slots[i][LOGGED];
        let due = last == 0 || now_us.saturating_sub(last) >= LOG_EVERY.as_micros() as u64;
        if due {
            slots[i][LOGGED] = now_us.max(1);
        }
        due
    }

    /// Charges one event of the limit in column `col` to `peer`'s slot (taking a slot if it
    /// has none). `Err`: microseconds until the event would conform.
    fn charge(&self, peer: IpAddr, now: Instant, col: usize, rate: Rate) -> Result<(), u64> {
        let now_us = self.micros(now);
        let key = self.key(peer);
        let mut slots = self.slots.borrow_mut();
        let i = self.slot_of(&mut slots, key);
        let tat = rate.admit(slots[i][col], now_us)?;
        slots[i][col] = tat;
        Ok(())
    }

    /// The slot of `key`: its own, or the less busy of its two candidates, emptied.
    fn slot_of(&self, slots: &mut [Slot], key: u64) -> usize {
        let [a, b] = self.candidate_pair(key);
        if slots[a][KEY] == key {
            return a;
        }
        if slots[b][KEY] == key {
            return b;
        }
        let busy = |s: &Slot| {
            if s[KEY] == 0 {
                0
            } else {
                s[REQUESTS].max(s[FAILURES])
            }
        };
        let i = if busy(&slots[a]) <= busy(&slots[b]) {
            a
        } else {
            b
        };
        slots[i] = [key, 0, 0, 0];
        i
    }

    fn candidate_pair(&self, key: u64) -> [usize; 2] {
        let a = (key as usize) % SLOTS;
        let b = ((key >> 32) as usize) % SLOTS;
        [a, if b == a { (a + 1) % SLOTS } else { b }]
    }

    fn candidates(&self, key: u64) -> impl Iterator<Item = usize> {
        self.candidate_pair(key).into_iter()
    }

    /// A peer's key: its IPv4 address, or its IPv6 /64, hashed with this process's random
    /// key (so nobody can choose addresses that share a slot); never 0.
    fn key(&self, peer: IpAddr) -> u64 {
        let bits: u128 = match peer {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => u128::from(u32::from(v4)),
                None => (u128::from(v6) >> 64) | (1 << 127),
            },
        };
        self.hasher.hash_one(bits).max(1)
    }

    fn micros(&self, now: Instant) -> u64 {
        // Offset by one second, so a time is never 0 (an unused slot's).
        now.saturating_duration_since(self.epoch).as_micros() as u64 + 1_000_000
    }
}

/// One upload in progress for a token; dropping it gives the place back.
pub struct UploadPermit {
    table: Rc<RefCell<HashMap<u64, u32>>>,
    token: u64,
}

impl Drop for UploadPermit {
    fn drop(&mut self) {
        let mut table = self.table.borrow_mut();
        if let Some(n) = table.get_mut(&self.token) {
            *n -= 1;
            if *n == 0 {
                table.remove(&self.token);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rps: u64, burst: u64, fails: u64, fail_burst: u64, uploads: u32) -> Limits {
        Limits {
            requests_per_second: rps,
            request_burst: burst,
            auth_failures_per_minute: fails,
            auth_failure_burst: fail_burst,
            uploads_per_token: uploads,
            ..Limits::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_burst_then_one_per_interval() {
        let t = Throttle::new(&limits(10, 5, 0, 0, 0));
        let start = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..5 {
            t.request(a, start).unwrap();
        }
        let over = t.request(a, start).unwrap_err();
        assert_eq!(over.limit, Limit::Requests);
        assert_eq!(over.retry_after, 1);
        let r = over.response();
        assert_eq!(r.status, 429);
        assert!(r
            .headers
            .iter()
            .any(|(k, v)| *k == "Retry-After" && v == "1"));
        assert!(over.detail().contains("10 requests a second, 5 at once"));
        // Another peer is not affected.
        t.request(ip("192.0.2.2"), start).unwrap();
        // One interval (100 ms) later, one more is taken, and only one.
        let later = start + Duration::from_millis(100);
        t.request(a, later).unwrap();
        assert!(t.request(a, later).is_err());
        // A second later the bucket is full again: the burst, and no more.
        let much_later = later + Duration::from_secs(1);
        let taken = (0..20).filter(|_| t.request(a, much_later).is_ok()).count();
        assert_eq!(taken, 5);
    }

    #[test]
    fn ipv6_peers_count_by_their_64() {
        let t = Throttle::new(&limits(1, 2, 0, 0, 0));
        let now = Instant::now();
        t.request(ip("2001:db8:1:2::1"), now).unwrap();
        t.request(ip("2001:db8:1:2::ffff"), now).unwrap();
        assert!(t.request(ip("2001:db8:1:2:abcd::9"), now).is_err());
        t.request(ip("2001:db8:1:3::1"), now).unwrap();
        // An IPv4-mapped address is its IPv4 peer.
        t.request(ip("198.51.100.7"), now).unwrap();
        t.request(ip("::ffff:198.51.100.7"), now).unwrap();
        assert!(t.request(ip("198.51.100.7"), now).is_err());
    }

    #[test]
    fn refused_tokens_cost_time_not_memory() {
        let t = Throttle::new(&limits(0, 0, 6, 3, 0));
        let now = Instant::now();
        let a = ip("192.0.2.9");
        for _ in 0..3 {
            t.may_authenticate(a, now).unwrap();
            t.auth_failed(a, now).unwrap();
        }
        let over = t.may_authenticate(a, now).unwrap_err();
        assert_eq!(over.limit, Limit::AuthFailures);
        // One failure every 10 s: the client is told to wait that long.
        assert_eq!(over.retry_after, 10);
        assert!(t.auth_failed(a, now).is_err());
        t.may_authenticate(ip("192.0.2.10"), now).unwrap();
        t.may_authenticate(a, now + Duration::from_secs(10))
            .unwrap();
        // A million addresses later the table is the same size, and still works.
        for n in 0..100_000u32 {
            let _ = t.auth_failed(IpAddr::V4(n.into()), now);
        }
        assert_eq!(t.slots.borrow().len(), SLOTS);
        let fresh = ip("203.0.113.1");
        t.may_authenticate(fresh, now).unwrap();
    }

    #[test]
    fn uploads_per_token_are_given_back() {
        let t = Throttle::new(&limits(0, 0, 0, 0, 2));
        let a = t.upload(7).unwrap();
        let b = t.upload(7).unwrap();
        let over = t.upload(7).err().unwrap();
        assert_eq!(over.limit, Limit::Uploads);
        let _other = t.upload(8).unwrap();
        drop(a);
        let c = t.upload(7).unwrap();
        assert_eq!(t.uploads_in_progress(), 3);
        drop((b, c, _other));
        assert_eq!(t.uploads_in_progress(), 0);
        assert!(t.uploads.borrow().is_empty());
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let t = Throttle::new(&limits(0, 0, 0, 0, 0));
        let now = Instant::now();
        for _ in 0..10_000 {
            t.request(ip("192.0.2.1"), now).unwrap();
            t.auth_failed(ip("192.0.2.1"), now).unwrap();
        }
        assert!(t.upload(1).unwrap().is_none());
    }
}
