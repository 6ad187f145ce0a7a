//! The mirror lane: one thread that takes the loop's mirror requests, answers what the
//! cache holds, and coalesces the rest into fetches run by a bounded pool of fetcher
//! threads; when a fetch lands, everyone who waited for its file is answered. The loop
//! parks each waiting connection as it does for any job and is woken, through the same
//! answer channel and waker as the registry's workers, when its answer is ready. Nothing
//! here ever runs on the loop, and the loop never waits for the upstream.

use std::sync::mpsc::{channel, Sender};

use crate::http::files::Tree;
use crate::http::mirror::{after_fetch, fetch, first_look, Step, Want};
use crate::http::Response;
use crate::mirror::flights::{Flights, Joined, Pool};
use crate::mirror::{FetchError, Mirror};

/// Files being fetched at once (each may have any number of waiters); past it, clients
/// are asked to come back.
const MAX_FLIGHTS: usize = 1024;

/// What the mirror thread is sent: the loop's requests, and fetches that landed.
pub enum Msg {
    /// The request of connection `key` (its `serial`).
    Request {
        key: usize,
        serial: u64,
        want: Box<Want>,
    },
    Landed(String, Result<(), FetchError>),
}

/// A connection waiting for a file.
struct Waiter {
    key: usize,
    serial: u64,
    want: Want,
}

/// How answers go to the loop: connection key, serial, response; false once the loop is
/// gone.
pub type Answer = Box<dyn Fn(usize, u64, Response) -> bool + Send>;

/// Starts the mirror thread and its fetchers; the sender is where the loop's mirror
/// requests go. `url`: the registry's public URL (for the mirror's `config.json`).
pub fn spawn(mirror: Mirror, url: String, answer: Answer) -> std::io::Result<Sender<Msg>> {
    let (tx, rx) = channel::<Msg>();
    let pool = Pool::spawn(mirror.settings().fetchers, "mirror-fetch")?;
    let landed = tx.clone();
    {
        let mirror = mirror.clone();
        pool.run(move || mirror.count_cache());
    }
    let lane = Lane {
        crates: Tree::new(mirror.layout().crates_dir(), 0),
        mirror,
        url,
        answer,
        flights: Flights::new(MAX_FLIGHTS),
        pool,
        landed,
    };
    std::thread::Builder::new()
        .name("mirror".into())
        .stack_size(1024 * 1024)
        .spawn(move || lane.run(rx))?;
    Ok(tx)
}

struct Lane {
    mirror: Mirror,
    /// The mirror's crate files, served as the registry's are (no descriptors kept).
    crates: Tree,
    url: String,
    answer: Answer,
    flights: Flights<Waiter>,
    pool: Pool,
    landed: Sender<Msg>,
}

impl Lane {
    fn run(mut self, rx: std::sync::mpsc::Receiver<Msg>) {
        for msg in rx {
            let alive = match msg {
                Msg::Request { key, serial, want } => self.take(key, serial, *want),
                Msg::Landed(key, result) => self.land(&key, &result),
            };
            if !alive {
                return;
            }
        }
    }

    fn take(&mut self, conn: usize, serial: u64, want: Want) -> bool {
        if let Step::Answer(r) = first_look(&self.mirror, &self.crates, &self.url, &want) {
            return (self.answer)(conn, serial, r);
        }
        let key = want.key();
        let file = want.file.clone();
        let waiter = Waiter {
            key: conn,
            serial,
            want,
        };
        match self.flights.join(&key, waiter) {
            Joined::Waits => true,
            Joined::Full(w) => {
                let r = Response::error(503, "the mirror is fetching too many files; try again")
                    .header("Retry-After", "2");
                (self.answer)(w.key, w.serial, r)
            }
            Joined::Start => {
                let (mirror, landed) = (self.mirror.clone(), self.landed.clone());
                let started = self.pool.run(move || {
                    let result = fetch(&mirror, &file);
                    // An index file read whole, a connection's buffers: freed, given back.
                    super::os::release_freed_memory();
                    let _ = landed.send(Msg::Landed(key, result));
                });
                if !started {
                    error!("error: mirror: the fetcher threads are gone");
                }
                true
            }
        }
    }

    fn land(&mut self, key: &str, result: &Result<(), FetchError>) -> bool {
        for w in self.flights.land(key) {
            let r = after_fetch(&self.mirror, &self.crates, &self.url, &w.want, result);
            if !(self.answer)(w.key, w.serial, r) {
                return false;
            }
        }
        true
    }
}
