//! The registry worker thread: every registry write and every slow read runs here, one job
//! at a time, so the event loop never waits on git, fsync or tarball checks. The loop sends
//! jobs over a channel; the worker answers over another and wakes the loop's poller.
//!
//! A spooled upload's share of the spool budget travels with its job and is given back
//! only once the job has run (the job removes the spool file), or when the upload is
//! abandoned: whichever path a body takes, its reservation is released exactly once.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};
use std::sync::Arc;

use std::time::Instant;

use mio::Waker;

use super::metrics::WorkerMetrics;

use crate::http::{api, Job, Response};
use crate::registry::auth::Principal;
use crate::registry::Registry;

/// Answers the worker may have made before the loop took them: each holds a whole response
/// (a rendered page, a ref advertisement), so under a burst of page views the memory they
/// take is this many answers, not one per waiting client. The worker waits for the loop,
/// which takes them whenever it is woken; the loop never waits for the worker.
const DONE_BACKLOG: usize = 4;

/// A job tagged with the connection waiting for it (slab key and serial number).
pub struct Ticket {
    pub key: usize,
    pub serial: u64,
    pub job: Job,
    /// The spool budget its body holds, released after the job ran.
    pub reserved: Option<Reservation>,
    /// The token holder the loop let through, for the ownership checks on the worker.
    pub principal: Option<Principal>,
}

/// Bytes of request bodies on disk at once, over every connection, bounded so that many
/// clients uploading at once cannot fill the disk.
#[derive(Debug)]
pub struct SpoolBudget {
    cap: u64,
    used: AtomicU64,
}

impl SpoolBudget {
    pub fn new(cap: u64) -> Arc<SpoolBudget> {
        Arc::new(SpoolBudget {
            cap,
            used: AtomicU64::new(0),
        })
    }

    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Reserves `bytes`, or `None` if that would pass the cap.
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.cap)
            })
            .ok()?;
        Some(Reservation {
            budget: self.clone(),
            bytes,
        })
    }
}

/// A share of the spool budget, given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<SpoolBudget>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A finished job.
pub struct Done {
    pub key: usize,
    pub serial: u64,
    pub response: Response,
}

/// Starts the worker. Dropping the returned sender ends it.
pub fn spawn(
    reg: Registry,
    waker: Arc<Waker>,
    metrics: Arc<WorkerMetrics>,
) -> std::io::Result<(Sender<Ticket>, Receiver<Done>)> {
    let (job_tx, job_rx) = channel::<Ticket>();
    let (done_tx, done_rx) = sync_channel::<Done>(DONE_BACKLOG);
    std::thread::Builder::new()
        .name("registry-worker".into())
        .stack_size(1024 * 1024)
        .spawn(move || {
            for t in job_rx {
                let started = matches!(t.job, Job::Publish(_)).then(Instant::now);
                let response = catch_unwind(AssertUnwindSafe(|| {
                    api::run(&reg, t.job, t.principal.as_ref())
                }))
                .unwrap_or_else(|_| {
                    Response::error(500, "internal error; the server log has details")
                });
                // The job removed its spool file: the space is free again.
                drop(t.reserved);
                metrics.job_done(started.map(|s| s.elapsed()));
                if done_tx
                    .send(Done {
                        key: t.key,
                        serial: t.serial,
                        response,
                    })
                    .is_err()
                {
                    break;
                }
                let _ = waker.wake();
            }
        })?;
    Ok((job_tx, done_rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stay_under_the_cap_and_come_back_on_drop() {
        let budget = SpoolBudget::new(100);
        let a = budget.reserve(60).unwrap();
        assert!(budget.reserve(41).is_none());
        let b = budget.reserve(40).unwrap();
        assert_eq!(budget.used(), 100);
        assert!(budget.reserve(u64::MAX).is_none());
        drop(a);
        assert_eq!(budget.used(), 40);
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
