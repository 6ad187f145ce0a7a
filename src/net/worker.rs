//! The registry worker thread: every registry write and every slow read runs here, one job
//! at a time, so the event loop never waits on git, fsync or tarball checks. The loop sends
//! jobs over a channel; the worker answers over another and wakes the loop's poller.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use mio::Waker;

use crate::http::{api, Job, Response};
use crate::registry::Registry;

/// A job tagged with the connection waiting for it (slab key and serial number).
pub struct Ticket {
    pub key: usize,
    pub serial: u64,
    pub job: Job,
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
) -> std::io::Result<(Sender<Ticket>, Receiver<Done>)> {
    let (job_tx, job_rx) = channel::<Ticket>();
    let (done_tx, done_rx) = channel::<Done>();
    std::thread::Builder::new()
        .name("registry-worker".into())
        .stack_size(1024 * 1024)
        .spawn(move || {
            for t in job_rx {
                let response = catch_unwind(AssertUnwindSafe(|| api::run(&reg, t.job)))
                    .unwrap_or_else(|_| {
                        Response::error(500, "internal error; the server log has details")
                    });
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
