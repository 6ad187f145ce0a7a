//! What `GET /metrics` reports, in the Prometheus text exposition format 0.0.4.
//!
//! Counters are plain integers: the event loop owns most of them (`Cell`s in [`Metrics`],
//! which lives in [`super::Shared`]), the worker thread owns the few it counts (atomics in
//! [`WorkerMetrics`]). Counting a request touches a handful of integers and allocates
//! nothing; the text is rendered only when scraped, into one buffer whose size is bounded by
//! the fixed set of series (no label comes from a request).
//!
//! A request is counted once its answer is out (with the bytes that went out: head and
//! body), so a client that goes away mid-answer is not counted. Publishes are counted by the
//! status of the answer to `PUT /api/v1/crates/new`, wherever it was decided (the loop
//! refuses missing tokens and oversized bodies; the worker everything else).

use std::cell::Cell;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::ended::CloseReason;
use super::throttle::Limit;
use crate::http::files::Trees;
use crate::http::Metric;

pub use crate::http::METRICS_PATH as PATH;

/// The rendered text's capacity: every series at its widest value fits (a test checks).
const RENDER_CAP: usize = 16 * 1024;

const STATUS_CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

fn status_class(status: u16) -> usize {
    match status {
        0..=299 => 0,
        300..=399 => 1,
        400..=499 => 2,
        _ => 3,
    }
}

/// Why a publish was refused, from its answer's status.
const PUBLISH_REFUSALS: [&str; 7] = [
    "invalid",
    "conflict",
    "too_large",
    "unauthorized",
    "forbidden",
    "storage",
    "other",
];

fn publish_refusal(status: u16) -> usize {
    match status {
        400 | 422 => 0,
        409 => 1,
        413 => 2,
        401 => 3,
        403 => 4,
        507 => 5,
        _ => 6,
    }
}

/// A counter cell: the loop's own (`Cell`) or shared with the worker (atomic).
pub trait Count: Default {
    fn add(&self, n: u64);
    fn get(&self) -> u64;
}

impl Count for Cell<u64> {
    fn add(&self, n: u64) {
        self.set(self.get().wrapping_add(n));
    }
    fn get(&self) -> u64 {
        Cell::get(self)
    }
}

impl Count for AtomicU64 {
    fn add(&self, n: u64) {
        self.fetch_add(n, Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.load(Ordering::Relaxed)
    }
}

/// A histogram with fixed upper bounds in microseconds; the last slot counts what is
/// above every bound.
#[derive(Default)]
pub struct Histogram<C: Count> {
    slots: [C; BUCKETS + 1],
    sum_us: C,
}

/// Upper bounds per histogram (the same count for both keeps one type).
const BUCKETS: usize = 6;

impl<C: Count> Histogram<C> {
    fn observe(&self, bounds_us: &[u64; BUCKETS], took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let slot = bounds_us.iter().position(|&b| us <= b).unwrap_or(BUCKETS);
        self.slots[slot].add(1);
        self.sum_us.add(us);
    }

    fn render(&self, out: &mut Vec<u8>, name: &str, help: &str, bounds: &[&str; BUCKETS]) {
        header(out, name, "histogram", help);
        let mut seen = 0;
        for (slot, le) in self.slots.iter().zip(bounds.iter().chain(["+Inf"].iter())) {
            seen += slot.get();
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {seen}");
        }
        let us = self.sum_us.get();
        let _ = writeln!(out, "{name}_sum {}.{:06}", us / 1_000_000, us % 1_000_000);
        let _ = writeln!(out, "{name}_count {seen}");
    }
}

/// Request duration bounds: from a cached index file to a slow git pack.
const REQUEST_BOUNDS_US: [u64; BUCKETS] = [1_000, 5_000, 25_000, 100_000, 500_000, 2_500_000];
const REQUEST_BOUNDS: [&str; BUCKETS] = ["0.001", "0.005", "0.025", "0.1", "0.5", "2.5"];
/// Publish duration bounds: a small crate on a fast disk to a large one on an SD card.
const PUBLISH_BOUNDS_US: [u64; BUCKETS] = [
    50_000,
    250_000,
    1_000_000,
    5_000_000,
    25_000_000,
    100_000_000,
];
const PUBLISH_BOUNDS: [&str; BUCKETS] = ["0.05", "0.25", "1", "5", "25", "100"];

/// What the worker thread counts.
#[derive(Default)]
pub struct WorkerMetrics {
    answered: AtomicU64,
    publish_duration: Histogram<AtomicU64>,
}

impl WorkerMetrics {
    /// A job ran; `publish`: it was a publish and took `took`.
    pub fn job_done(&self, publish: Option<Duration>) {
        if let Some(took) = publish {
            self.publish_duration.observe(&PUBLISH_BOUNDS_US, took);
        }
        self.answered.add(1);
    }
}

/// What the event loop counts.
#[derive(Default)]
pub struct Metrics {
    requests: [[Cell<u64>; 4]; Metric::ALL.len()],
    response_bytes: [Cell<u64>; Metric::ALL.len()],
    duration: Histogram<Cell<u64>>,
    conns_open: Cell<u64>,
    accepted: Cell<u64>,
    refused: Cell<u64>,
    reclaimed: Cell<u64>,
    timed_out: Cell<u64>,
    tls_failures: Cell<u64>,
    closed: [Cell<u64>; CloseReason::ALL.len()],
    rate_limited: [Cell<u64>; Limit::ALL.len()],
    auth_broken: Cell<u64>,
    publish_accepted: Cell<u64>,
    publish_refused: [Cell<u64>; 7],
    jobs_sent: Cell<u64>,
    pub worker: Arc<WorkerMetrics>,
    /// Counted by the webhook delivery threads.
    pub webhooks: Arc<crate::webhooks::Stats>,
    /// The mirror's counters, when the registry has one.
    pub mirror: Option<crate::mirror::Mirror>,
}

impl Metrics {
    /// An answer went out whole: `bytes` with its head.
    pub fn request_done(&self, route: Metric, status: u16, bytes: u64, took: Duration) {
        let r = route as usize;
        self.requests[r][status_class(status)].add(1);
        self.response_bytes[r].add(bytes);
        self.duration.observe(&REQUEST_BOUNDS_US, took);
        if route == Metric::ApiPublish {
            match status {
                200..=299 => self.publish_accepted.add(1),
                s => self.publish_refused[publish_refusal(s)].add(1),
            }
        }
    }

    pub fn conn_opened(&self) {
        self.accepted.add(1);
        self.conns_open.add(1);
    }

    pub fn conn_closed(&self, tls_handshake_failed: bool, why: CloseReason) {
        self.conns_open.set(self.conns_open.get().saturating_sub(1));
        self.closed[why.index()].add(1);
        if tls_handshake_failed {
            self.tls_failures.add(1);
        }
    }

    /// Whether the access control files fail to load now.
    pub fn set_auth_broken(&self, broken: bool) {
        self.auth_broken.set(broken.into());
    }

    /// A request was answered 429 for `limit`.
    pub fn rate_limited(&self, limit: Limit) {
        self.rate_limited[limit as usize].add(1);
    }

    pub fn accept_failed(&self) {
        self.refused.add(1);
    }

    pub fn reclaimed(&self) {
        self.reclaimed.add(1);
    }

    pub fn timed_out(&self) {
        self.timed_out.add(1);
    }

    pub fn job_sent(&self) {
        self.jobs_sent.add(1);
    }

    /// The whole text, with the process's resident memory and open descriptors read now.
    pub fn render(&self, trees: &Trees) -> Vec<u8> {
        let mut out = Vec::with_capacity(RENDER_CAP);
        let o = &mut out;
        header(
            o,
            "palletizer_http_requests_total",
            "counter",
            "Requests answered, by route class and status class.",
        );
        for route in Metric::ALL {
            for (i, class) in STATUS_CLASSES.iter().enumerate() {
                let n = self.requests[route as usize][i].get();
                let _ = writeln!(
                    o,
                    "palletizer_http_requests_total{{route=\"{}\",status=\"{class}\"}} {n}",
                    route.name()
                );
            }
        }
        header(
            o,
            "palletizer_http_response_bytes_total",
            "counter",
            "Bytes of answers sent (head and body), by route class.",
        );
        for route in Metric::ALL {
            let n = self.response_bytes[route as usize].get();
            let _ = writeln!(
                o,
                "palletizer_http_response_bytes_total{{route=\"{}\"}} {n}",
                route.name()
            );
        }
        self.duration.render(
            o,
            "palletizer_http_request_duration_seconds",
            "Time from a complete request head to the last byte of its answer.",
            &REQUEST_BOUNDS,
        );
        self.render_connections(o);
        self.render_work(o, trees);
        self.render_webhooks(o);
        if let Some(m) = &self.mirror {
            render_mirror(o, m.stats());
        }
        out
    }

    fn render_webhooks(&self, o: &mut Vec<u8>) {
        let w = &self.webhooks;
        header(
            o,
            "palletizer_webhook_deliveries_total",
            "counter",
            "Webhook deliveries done with: answered 2xx, given up (4xx, retry time over), \
             or dropped (the queue was full, or the delivery could not be queued).",
        );
        for (result, n) in [
            ("succeeded", w.succeeded.get()),
            ("failed", w.failed.get()),
            ("dropped", crate::registry::outbox_dropped_total()),
        ] {
            let _ = writeln!(
                o,
                "palletizer_webhook_deliveries_total{{result=\"{result}\"}} {n}"
            );
        }
        counter(
            o,
            "palletizer_webhook_attempts_retried_total",
            "Webhook delivery attempts that failed (unreachable, timeout, 5xx) and are retried.",
            w.retried.get(),
        );
        gauge(
            o,
            "palletizer_webhook_queue_length",
            "Webhook deliveries waiting in the queue on disk.",
            w.queued.get(),
        );
    }

    fn render_connections(&self, o: &mut Vec<u8>) {
        gauge(
            o,
            "palletizer_connections_open",
            "Client connections open now.",
            self.conns_open.get(),
        );
        counter(
            o,
            "palletizer_connections_accepted_total",
            "Client connections accepted.",
            self.accepted.get(),
        );
        counter(
            o,
            "palletizer_connections_refused_total",
            "Accept errors (out of descriptors or buffers); accepting pauses after each.",
            self.refused.get(),
        );
        counter(
            o,
            "palletizer_connections_reclaimed_total",
            "Idle connections closed to make room while the connection table was full.",
            self.reclaimed.get(),
        );
        counter(
            o,
            "palletizer_connections_timed_out_total",
            "Connections closed for a head, body, write or idle deadline.",
            self.timed_out.get(),
        );
        counter(
            o,
            "palletizer_tls_handshake_failures_total",
            "TLS handshakes that failed with a protocol error.",
            self.tls_failures.get(),
        );
        header(
            o,
            "palletizer_connections_closed_total",
            "counter",
            "Client connections closed, by why they ended.",
        );
        for reason in CloseReason::ALL {
            let n = self.closed[reason.index()].get();
            let _ = writeln!(
                o,
                "palletizer_connections_closed_total{{reason=\"{}\"}} {n}",
                reason.name()
            );
        }
        header(
            o,
            "palletizer_rate_limited_total",
            "counter",
            "Requests answered 429, by the limit they met (see [limits] in the server's config).",
        );
        for limit in Limit::ALL {
            let n = self.rate_limited[limit as usize].get();
            let _ = writeln!(
                o,
                "palletizer_rate_limited_total{{limit=\"{}\"}} {n}",
                limit.label()
            );
        }
    }

    fn render_work(&self, o: &mut Vec<u8>, trees: &Trees) {
        gauge(
            o,
            "palletizer_access_control_broken",
            "1 while auth.json or palletizer.toml do not load: requests that need a token get 503.",
            self.auth_broken.get(),
        );
        counter(
            o,
            "palletizer_publishes_accepted_total",
            "Publishes accepted.",
            self.publish_accepted.get(),
        );
        header(
            o,
            "palletizer_publishes_refused_total",
            "counter",
            "Publishes refused, by reason.",
        );
        for (i, reason) in PUBLISH_REFUSALS.iter().enumerate() {
            let n = self.publish_refused[i].get();
            let _ = writeln!(
                o,
                "palletizer_publishes_refused_total{{reason=\"{reason}\"}} {n}"
            );
        }
        self.worker.publish_duration.render(
            o,
            "palletizer_publish_duration_seconds",
            "Time the registry worker spent on a publish job.",
            &PUBLISH_BOUNDS,
        );
        let depth = self
            .jobs_sent
            .get()
            .saturating_sub(self.worker.answered.get());
        gauge(
            o,
            "palletizer_worker_queue_depth",
            "Jobs handed to the registry worker and not answered yet.",
            depth,
        );
        for (name, help, pick) in [
            (
                "palletizer_open_file_cache_hits_total",
                "Files served from a descriptor kept open.",
                0,
            ),
            (
                "palletizer_open_file_cache_misses_total",
                "Files opened because no descriptor was kept open for them.",
                1,
            ),
        ] {
            header(o, name, "counter", help);
            for (tree, t) in [("index", &trees.index), ("crates", &trees.crates)] {
                let (hits, misses) = t.cache_stats();
                let n = if pick == 0 { hits } else { misses };
                let _ = writeln!(o, "{name}{{tree=\"{tree}\"}} {n}");
            }
        }
        gauge(
            o,
            "process_resident_memory_bytes",
            "Resident memory of the server process.",
            resident_bytes(),
        );
        gauge(
            o,
            "process_open_fds",
            "Open file descriptors of the server process.",
            open_fds(),
        );
    }
}

/// The mirror's rows: its counters are atomics its threads add to.
fn render_mirror(o: &mut Vec<u8>, s: &crate::mirror::Stats) {
    use std::sync::atomic::Ordering::Relaxed;
    let rows: [(&str, &str, &AtomicU64); 9] = [
        (
            "palletizer_mirror_hits_total",
            "Mirror requests answered from the cache.",
            &s.hits,
        ),
        (
            "palletizer_mirror_misses_total",
            "Files the mirror fetched for lack of a copy.",
            &s.misses,
        ),
        (
            "palletizer_mirror_revalidations_total",
            "Index files the upstream confirmed (304).",
            &s.revalidated,
        ),
        (
            "palletizer_mirror_refreshes_total",
            "Index files the upstream replaced on revalidation.",
            &s.refreshed,
        ),
        (
            "palletizer_mirror_stale_total",
            "Index files served stale because the upstream failed.",
            &s.stale,
        ),
        (
            "palletizer_mirror_upstream_errors_total",
            "Upstream requests that failed or timed out.",
            &s.upstream_errors,
        ),
        (
            "palletizer_mirror_fetched_bytes_total",
            "Bytes fetched from the upstream.",
            &s.bytes_fetched,
        ),
        (
            "palletizer_mirror_policy_hidden_total",
            "Index lines the mirror's policy left out.",
            &s.hidden,
        ),
        (
            "palletizer_mirror_checksum_refused_total",
            "Crate files refused: not their index line's checksum.",
            &s.checksum_refused,
        ),
    ];
    for (name, help, v) in rows {
        counter(o, name, help, v.load(Relaxed));
    }
    gauge(
        o,
        "palletizer_mirror_cache_bytes",
        "Bytes of crate files in the mirror's cache.",
        s.cache_bytes.load(Relaxed),
    );
}

fn header(out: &mut Vec<u8>, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn gauge(o: &mut Vec<u8>, name: &str, help: &str, v: u64) {
    header(o, name, "gauge", help);
    let _ = writeln!(o, "{name} {v}");
}

fn counter(o: &mut Vec<u8>, name: &str, help: &str, v: u64) {
    header(o, name, "counter", help);
    let _ = writeln!(o, "{name} {v}");
}

/// Resident set size from `/proc/self/statm` (its second field, in pages); 0 if unreadable.
fn resident_bytes() -> u64 {
    let mut buf = [0u8; 128];
    let n = std::fs::File::open("/proc/self/statm")
        .and_then(|mut f| std::io::Read::read(&mut f, &mut buf))
        .unwrap_or(0);
    let pages: u64 = std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|s| s.split_ascii_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages.saturating_mul(u64::try_from(page).unwrap_or(4096))
}

/// Entries of `/proc/self/fd`, less the one the listing itself holds open; 0 if unreadable.
fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count().saturating_sub(1) as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_widest_text_fits_the_buffer_it_is_rendered_into() {
        let m = Metrics::default();
        let huge = u64::MAX / 2;
        for route in Metric::ALL {
            for status in [200, 304, 404, 500] {
                m.request_done(route, status, huge, Duration::from_secs(1 << 40));
            }
        }
        for _ in 0..3 {
            m.worker.job_done(Some(Duration::from_secs(1 << 40)));
        }
        let dir = tempfile::tempdir().unwrap();
        let trees = Trees::new(dir.path().join("i"), dir.path().join("c"), 0);
        let text = m.render(&trees);
        assert!(text.len() < RENDER_CAP, "{} bytes", text.len());
        let text = String::from_utf8(text).unwrap();
        assert!(text
            .contains("palletizer_http_requests_total{route=\"api_publish\",status=\"5xx\"} 1\n"));
        assert!(text.contains("palletizer_publishes_accepted_total 1\n"));
        assert!(text.contains("palletizer_publishes_refused_total{reason=\"other\"} 3\n"));
        assert!(text.contains("palletizer_publish_duration_seconds_bucket{le=\"100\"} 0\n"));
        assert!(text.contains("palletizer_publish_duration_seconds_count 3\n"));
        // Every plain counter at its widest: still within the buffer.
        let max = |c: &Cell<u64>| c.set(u64::MAX);
        m.requests.iter().flatten().for_each(max);
        m.response_bytes.iter().for_each(max);
        m.publish_refused.iter().for_each(max);
        m.closed.iter().for_each(max);
        for c in [
            &m.conns_open,
            &m.accepted,
            &m.refused,
            &m.reclaimed,
            &m.timed_out,
            &m.tls_failures,
            &m.publish_accepted,
            &m.jobs_sent,
        ] {
            max(c);
        }
        let w = &m.webhooks;
        for c in [&w.succeeded, &w.failed, &w.retried, &w.queued] {
            c.store(u64::MAX, Ordering::Relaxed);
        }
        let text = m.render(&trees);
        assert!(text.len() < RENDER_CAP, "{} bytes", text.len());
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::<Cell<u64>>::default();
        for ms in [0, 3, 3, 70, 10_000] {
            h.observe(&REQUEST_BOUNDS_US, Duration::from_millis(ms));
        }
        let mut out = Vec::new();
        h.render(&mut out, "x", "h", &REQUEST_BOUNDS);
        let text = String::from_utf8(out).unwrap();
        for line in [
            "x_bucket{le=\"0.001\"} 1",
            "x_bucket{le=\"0.005\"} 3",
            "x_bucket{le=\"0.025\"} 3",
            "x_bucket{le=\"0.1\"} 4",
            "x_bucket{le=\"2.5\"} 4",
            "x_bucket{le=\"+Inf\"} 5",
            "x_sum 10.076000",
            "x_count 5",
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line} in {text}");
        }
    }
}
