//! The registry's worker threads, so the event loop never waits on git, fsync or tarball
//! checks. The loop sends jobs over a channel; a worker answers over another and wakes the
//! loop's poller. Slow reads never queue ahead of writes:
//!
//! - The writer runs every registry change, one job at a time.
//! - The index reader runs the git index's fetches (ref advertisements and upload-pack),
//!   which read only the repository. A burst of clones costs the reader time, never the
//!   writer's: publishes do not queue behind packs. After a change it keeps the full-clone
//!   answer for the new HEAD ready, once anyone has cloned.
//! - The page reader renders pages and answers searches and owner lists: a crowd of
//!   browsers (or a client asking for a thousand search pages) is served in turn there,
//!   while publishes go straight to the writer. Files are replaced by rename, so what it
//!   reads is always a whole old or new file.
//!
//! A spooled upload's share of the spool budget travels with its job and is given back
//! only once the job has run (the job removes the spool file), or when the upload is
//! abandoned: whichever path a body takes, its reservation is released exactly once.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;

use std::time::Instant;

use mio::Waker;

use super::metrics::WorkerMetrics;

use crate::http::{api, Job, Lane, Response};
use crate::registry::{Event, Principal, Registry};

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
    /// The client's address, for the audit log (None for the loop's own jobs).
    pub peer: Option<std::net::IpAddr>,
    /// The thread that runs it: its endpoint's, or the sender's choice for background jobs.
    pub lane: Lane,
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

/// Where the loop sends jobs: each goes to the thread that runs its kind.
pub struct Jobs {
    writer: Sender<Ticket>,
    reader: Sender<Ticket>,
    pages: Sender<Ticket>,
    /// The mirror lane, when the registry has a mirror.
    mirror: Option<Sender<super::mirror::Msg>>,
}

impl Jobs {
    /// Hands a job to its worker; on failure (the worker is gone) the ticket comes back.
    pub fn send(&self, ticket: Ticket) -> Result<(), Box<Ticket>> {
        // No loop endpoint makes a job; were one to, the writer would run it, serialized.
        let to = match ticket.lane {
            Lane::Writer | Lane::Loop => &self.writer,
            Lane::IndexReader => &self.reader,
            Lane::Pages => &self.pages,
            Lane::Mirror => return self.send_mirror(ticket),
        };
        to.send(ticket).map_err(|e| Box::new(e.0))
    }

    fn send_mirror(&self, ticket: Ticket) -> Result<(), Box<Ticket>> {
        let Some(mirror) = &self.mirror else {
            return Err(Box::new(ticket));
        };
        let Ticket {
            key, serial, job, ..
        } = ticket;
        let Job::Mirror(want) = job else {
            unreachable!("only mirror routes run on the mirror lane")
        };
        let msg = super::mirror::Msg::Request { key, serial, want };
        mirror.send(msg).map_err(|e| {
            let super::mirror::Msg::Request { key, serial, want } = e.0 else {
                unreachable!("the message sent comes back")
            };
            Box::new(Ticket {
                key,
                serial,
                job: Job::Mirror(want),
                reserved: None,
                principal: None,
                peer: None,
                lane: Lane::Mirror,
            })
        })
    }

    /// Every job to one channel (connection tests play every worker).
    #[cfg(test)]
    pub fn one_queue(tx: Sender<Ticket>) -> Jobs {
        Jobs {
            writer: tx.clone(),
            reader: tx.clone(),
            pages: tx,
            mirror: None,
        }
    }
}

/// Starts the workers, and the mirror lane when `mirror` is given. Dropping the returned
/// [`Jobs`] ends the registry's workers.
pub fn spawn(
    reg: Registry,
    waker: Arc<Waker>,
    metrics: Arc<WorkerMetrics>,
    mirror: Option<crate::mirror::Mirror>,
) -> std::io::Result<(Jobs, Receiver<Done>)> {
    let (writer_tx, writer_rx) = channel::<Ticket>();
    let (reader_tx, reader_rx) = channel::<Ticket>();
    let (pages_tx, pages_rx) = channel::<Ticket>();
    let (done_tx, done_rx) = sync_channel::<Done>(DONE_BACKLOG);
    let mirror = match mirror {
        Some(m) => Some(spawn_mirror(m, &reg, waker.clone(), done_tx.clone())?),
        None => None,
    };
    // At most one rebuild of the kept clone waits at a time: a burst of publishes makes one
    // rebuild for the newest HEAD, not one per publish queued ahead of fetches.
    let rebuild_queued = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rebuild_taken = rebuild_queued.clone();
    let worker = |reg: Registry| Worker {
        reg,
        waker: waker.clone(),
        metrics: metrics.clone(),
        done: done_tx.clone(),
    };
    let reader = worker(reg.clone());
    start("index-reader", move || {
        for t in reader_rx {
            let answered = if matches!(t.job, Job::KeepClone) {
                rebuild_taken.store(false, Ordering::Release);
                // No one waits for it; a failure only means the next clone makes it.
                let _ = reader.run(t.job, api::Caller::default());
                true
            } else {
                reader.answer(t).is_some()
            };
            // libgit2's pack building allocates in proportion to the history (megabytes
            // for a large index), on this thread's own heap arena: hand it back.
            super::os::release_freed_memory();
            if !answered {
                break;
            }
        }
    })?;
    let pages = worker(reg.clone());
    start("page-reader", move || {
        for t in pages_rx {
            if pages.answer(t).is_none() {
                break;
            }
        }
    })?;
    let writer = worker(reg);
    writer.reg.defer_checkpoints();
    let keep = reader_tx.clone();
    start("registry-writer", move || {
        run_writer(&writer, &writer_rx, &keep, &rebuild_queued)
    })?;
    Ok((
        Jobs {
            writer: writer_tx,
            reader: reader_tx,
            pages: pages_tx,
            mirror,
        },
        done_rx,
    ))
}

/// The mirror lane, answering through the same channel and waker as the workers.
fn spawn_mirror(
    mirror: crate::mirror::Mirror,
    reg: &Registry,
    waker: Arc<Waker>,
    done: SyncSender<Done>,
) -> std::io::Result<Sender<super::mirror::Msg>> {
    let answer = move |key, serial, response| {
        let sent = done.send(Done {
            key,
            serial,
            response,
        });
        let _ = waker.wake();
        sent.is_ok()
    };
    let url = reg.settings().url.clone();
    super::mirror::spawn(mirror, url, Box::new(answer))
}

/// The registry writer's loop: jobs one at a time; once no job comes for a moment, or
/// after [`CHECKPOINT_EVERY`] changes, a checkpoint, then a rebuild of the kept clone (at
/// most one waiting): while publishes come in, the index reader builds no clone answer
/// that the next publish makes stale.
fn run_writer(
    writer: &Worker,
    writer_rx: &Receiver<Ticket>,
    keep: &Sender<Ticket>,
    rebuild_queued: &std::sync::atomic::AtomicBool,
) {
    let mut since_checkpoint = 0usize;
    // When the first change since the last checkpoint was written: a stream of jobs that
    // keeps the writer from idling (refused publishes, token changes) never puts the
    // checkpoint off by more than CHECKPOINT_LATEST.
    let mut first_unsynced: Option<Instant> = None;
    let checkpoint = |since: &mut usize, first: &mut Option<Instant>| {
        writer.checkpoint();
        *since = 0;
        *first = None;
        if rebuild_queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = keep.send(Ticket {
            key: usize::MAX,
            serial: 0,
            job: Job::KeepClone,
            reserved: None,
            principal: None,
            peer: None,
            lane: Lane::IndexReader,
        });
    };
    // A job taken while gathering a batch of publishes, run next.
    let mut held: Option<Ticket> = None;
    loop {
        let t = match (held.take(), first_unsynced) {
            (Some(t), _) => Some(t),
            (None, None) => writer_rx.recv().ok(),
            (None, Some(first)) => {
                let latest = (first + CHECKPOINT_LATEST).saturating_duration_since(Instant::now());
                match writer_rx.recv_timeout(CHECKPOINT_IDLE.min(latest)) {
                    Ok(t) => Some(t),
                    Err(RecvTimeoutError::Timeout) => {
                        checkpoint(&mut since_checkpoint, &mut first_unsynced);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => None,
                }
            }
        };
        if first_unsynced.is_some_and(|f| f.elapsed() >= CHECKPOINT_LATEST) {
            checkpoint(&mut since_checkpoint, &mut first_unsynced);
        }
        let events = match t {
            Some(t) if matches!(t.job, Job::Publish(_)) => {
                // Every publish already waiting joins this one: their journal lines are
                // synced together (see `Registry::apply_publishes`).
                let mut batch = vec![t];
                while batch.len() < PUBLISH_BATCH {
                    match writer_rx.try_recv() {
                        Ok(t) if matches!(t.job, Job::Publish(_)) => batch.push(t),
                        Ok(t) => {
                            held = Some(t);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                writer.answer_publishes(batch)
            }
            t => t.and_then(|t| writer.answer(t)),
        };
        let Some(events) = events else {
            writer.checkpoint();
            break;
        };
        // Maintenance follows from what the write changed, not from the kind of job.
        let moved = events.iter().filter(|e| e.moves_index_head()).count();
        if moved > 0 {
            since_checkpoint += moved;
            first_unsynced.get_or_insert_with(Instant::now);
            if since_checkpoint >= CHECKPOINT_EVERY {
                checkpoint(&mut since_checkpoint, &mut first_unsynced);
            }
        }
    }
}

/// Starts a worker thread; its stack is reserved at 1 MiB (only what it touches is memory).
/// Returns once the thread runs: the code a thread's start touches is then behind the
/// startup's last release of code pages, not resident until the first idle trim.
fn start(name: &str, run: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    let (ready_tx, ready) = sync_channel::<()>(1);
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(1024 * 1024)
        .spawn(move || {
            let _ = ready_tx.send(());
            run()
        })?;
    let _ = ready.recv();
    Ok(())
}

/// The most publishes the writer takes together.
const PUBLISH_BATCH: usize = 32;

/// How long the writer waits for another job before it syncs the commits written since its
/// last checkpoint, and how many changes it writes at most before it does anyway.
const CHECKPOINT_IDLE: std::time::Duration = std::time::Duration::from_millis(50);
const CHECKPOINT_EVERY: usize = 64;
/// The longest a change waits for its checkpoint while jobs keep coming.
const CHECKPOINT_LATEST: std::time::Duration = std::time::Duration::from_secs(1);

/// What a worker thread holds.
struct Worker {
    reg: Registry,
    waker: Arc<Waker>,
    metrics: Arc<WorkerMetrics>,
    done: SyncSender<Done>,
}

impl Worker {
    /// Syncs the index commits written since the last checkpoint, then keeps the
    /// repository packed (after the answers went out: no client waits for either).
    fn checkpoint(&self) {
        if let Err(e) = self.reg.checkpoint() {
            error!("warning: syncing the index: {e}");
        }
        if let Err(e) = self.reg.maintain() {
            error!("warning: packing the index: {e}");
        }
    }

    fn run(&self, job: Job, caller: api::Caller<'_>) -> api::Answer {
        catch_unwind(AssertUnwindSafe(|| api::run(&self.reg, job, caller))).unwrap_or_else(|_| {
            api::Answer {
                response: Response::error(500, "internal error; the server log has details"),
                events: Vec::new(),
            }
        })
    }

    /// Runs publishes as one batch and hands each answer to the loop. Returns the events
    /// their writes caused; `None` once the loop is gone.
    fn answer_publishes(&self, batch: Vec<Ticket>) -> Option<Vec<Event>> {
        if batch.len() == 1 {
            return self.answer(batch.into_iter().next().expect("one ticket"));
        }
        let started = Instant::now();
        let jobs: Vec<(std::path::PathBuf, api::Caller<'_>)> = batch
            .iter()
            .map(|t| {
                let Job::Publish(path) = &t.job else {
                    unreachable!("a batch holds publishes only")
                };
                let caller = api::Caller {
                    who: t.principal.as_ref(),
                    peer: t.peer,
                };
                (path.clone(), caller)
            })
            .collect();
        let n = jobs.len();
        let answers = catch_unwind(AssertUnwindSafe(|| api::run_publishes(&self.reg, jobs)))
            .unwrap_or_else(|_| {
                (0..n)
                    .map(|_| api::Answer {
                        response: Response::error(
                            500,
                            "internal error; the server log has details",
                        ),
                        events: Vec::new(),
                    })
                    .collect()
            });
        let mut events = Vec::new();
        for (t, answer) in batch.into_iter().zip(answers) {
            // The batch removed its spool files: the space is free again.
            drop(t.reserved);
            self.metrics.job_done(Some(started.elapsed()));
            events.extend(answer.events);
            let done = Done {
                key: t.key,
                serial: t.serial,
                response: answer.response,
            };
            if self.done.send(done).is_err() {
                return None;
            }
            let _ = self.waker.wake();
        }
        Some(events)
    }

    /// Runs a ticket's job and hands the answer to the loop. Returns the events its write
    /// caused; `None` once the loop is gone.
    fn answer(&self, t: Ticket) -> Option<Vec<Event>> {
        let started = matches!(t.job, Job::Publish(_)).then(Instant::now);
        let caller = api::Caller {
            who: t.principal.as_ref(),
            peer: t.peer,
        };
        let api::Answer { response, events } = self.run(t.job, caller);
        // The job removed its spool file: the space is free again.
        drop(t.reserved);
        self.metrics.job_done(started.map(|s| s.elapsed()));
        let done = Done {
            key: t.key,
            serial: t.serial,
            response,
        };
        if self.done.send(done).is_err() {
            return None;
        }
        let _ = self.waker.wake();
        Some(events)
    }
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
