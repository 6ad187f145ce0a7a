//! One upstream fetch per file, however many clients ask for it at once, and a bounded
//! pool of threads that run the fetches.
//!
//! [`Flights`] keeps, per file being fetched, who waits for it: the first asker starts the
//! fetch, the others join it, and all are answered when it lands. The number of files in
//! flight is capped (a client asking past the cap is told to come back), so the waiters'
//! bookkeeping is bounded too. [`Pool`] runs at most its thread count of fetches at once;
//! the others queue in order.

use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

/// What [`Flights::join`] did with a waiter.
#[derive(Debug, PartialEq, Eq)]
pub enum Joined<W> {
    /// No fetch of this key was running: the caller starts one.
    Start,
    /// It waits for the fetch already running.
    Waits,
    /// Too many files in flight: the waiter comes back.
    Full(W),
}

/// Waiters by the key of the file they wait for.
#[derive(Debug)]
pub struct Flights<W> {
    waiting: HashMap<String, Vec<W>>,
    cap: usize,
}

impl<W> Flights<W> {
    /// At most `cap` keys in flight at once.
    pub fn new(cap: usize) -> Flights<W> {
        Flights {
            waiting: HashMap::new(),
            cap,
        }
    }

    pub fn join(&mut self, key: &str, waiter: W) -> Joined<W> {
        if let Some(w) = self.waiting.get_mut(key) {
            w.push(waiter);
            return Joined::Waits;
        }
        if self.waiting.len() >= self.cap {
            return Joined::Full(waiter);
        }
        self.waiting.insert(key.to_owned(), vec![waiter]);
        Joined::Start
    }

    /// The fetch of `key` landed: everyone who waited for it.
    pub fn land(&mut self, key: &str) -> Vec<W> {
        self.waiting.remove(key).unwrap_or_default()
    }

    /// Keys in flight.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

type Task = Box<dyn FnOnce() + Send>;

/// Threads that run tasks, at most one each at a time, in the order they were given.
pub struct Pool {
    tx: Sender<Task>,
}

impl Pool {
    /// `n` threads named `name`; they end when the pool is dropped.
    pub fn spawn(n: usize, name: &str) -> std::io::Result<Pool> {
        let (tx, rx) = channel::<Task>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..n.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .stack_size(1024 * 1024)
                .spawn(move || run(&rx))?;
        }
        Ok(Pool { tx })
    }

    /// Queues `task`; false when the threads are gone.
    pub fn run(&self, task: impl FnOnce() + Send + 'static) -> bool {
        self.tx.send(Box::new(task)).is_ok()
    }
}

fn run(rx: &Mutex<Receiver<Task>>) {
    loop {
        let task = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(task) = task else { return };
        // A panicking fetch costs its file's waiters their answer (they time out), never
        // the thread.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(task));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_flight_per_key_and_everyone_lands() {
        let mut f = Flights::new(2);
        assert_eq!(f.join("a", 1), Joined::Start);
        for w in 2..=50 {
            assert_eq!(f.join("a", w), Joined::Waits);
        }
        assert_eq!(f.join("b", 100), Joined::Start);
        assert_eq!(f.join("c", 200), Joined::Full(200));
        assert_eq!(f.land("a"), (1..=50).collect::<Vec<_>>());
        assert_eq!(f.land("a"), Vec::<i32>::new());
        assert_eq!(f.len(), 1);
        assert_eq!(f.join("c", 200), Joined::Start);
    }

    #[test]
    fn the_pool_runs_no_more_than_its_threads_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let pool = Pool::spawn(3, "test-pool").unwrap();
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (tx, rx) = channel();
        for _ in 0..12 {
            let (running, most, tx) = (running.clone(), most.clone(), tx.clone());
            assert!(pool.run(move || {
                let n = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(n, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(20));
                running.fetch_sub(1, Ordering::SeqCst);
                tx.send(()).unwrap();
            }));
        }
        for _ in 0..12 {
            rx.recv().unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= 3);
    }
}
