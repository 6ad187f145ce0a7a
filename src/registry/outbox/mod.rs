//! The outbox: webhook deliveries waiting on disk, one file per delivery in
//! `webhook-queue/`, for the server to send (`crate::webhooks`).
//!
//! A change's deliveries are queued by the `apply` that made it, under the registry lock and
//! before the caller hears of the change, so the CLI's changes are queued as the server's
//! are. Each file is written with [`write_atomic_mode`] (temp file, fsync, rename, fsync of
//! the folder), mode 0600: once a publish is acknowledged, its deliveries are on disk.
//!
//! Invariant: a delivery's file is removed only after its receiver answered 2xx, or when it
//! is given up (a 4xx answer, its retry time over, or dropped by the bound below). A crash at
//! any point (kill -9 included) leaves every other delivery in place, so each is delivered at
//! least once, with the same id on every attempt. A crash between the change's commit and
//! its queueing (no answer went out yet) loses that change's deliveries.
//!
//! A delivery is the whole request but its connection: URL, action name, body, its signature
//! (made when queued; the secret stays in `palletizer.toml`), and when to give up. The queue
//! is bounded: past `webhook-queue-limit` files the oldest are dropped, with a log line,
//! counted in [`dropped_total`].
//!
//! A file is named `{unix ms, 13 digits}-{4 digits}-{12 hex}.json`: names sort by age, and
//! the name without `.json` is the delivery id.

mod payload;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::registry::store::{is_stale_temp, is_temp_name, write_atomic_mode, SETTINGS_FILE};
use crate::registry::{shown_url, Event, Registry, Settings};

/// The queue's folder, at the registry root.
pub const QUEUE_DIR: &str = "webhook-queue";
const SUFFIX: &str = ".json";

/// Deliveries this process dropped: the oldest, when the queue was full, and those that
/// could not be written.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// See [`DROPPED`].
pub fn dropped_total() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// One queued delivery, as its file holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// `X-Palletizer-Delivery`: the same on every attempt.
    pub id: String,
    pub url: String,
    /// `X-Palletizer-Event`: the action name.
    pub event: String,
    /// `X-Palletizer-Signature`: `sha256=` and the hex HMAC-SHA256 of `body`.
    pub signature: String,
    /// Unix seconds: not retried after this.
    pub expires: u64,
    pub body: String,
}

/// The queue's folder.
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    /// The queue of the registry at `root`.
    pub fn at(root: &Path) -> Outbox {
        Outbox {
            dir: root.join(QUEUE_DIR),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Queued deliveries' file names, oldest first. No folder is an empty queue.
    pub fn list(&self) -> io::Result<Vec<String>> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for entry in rd {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(SUFFIX) && !is_temp_name(name) {
                names.push(name.to_owned());
            }
        }
        names.sort_unstable();
        Ok(names)
    }

    /// The delivery in file `name`; a file that is not one is `InvalidData`.
    pub fn read(&self, name: &str) -> io::Result<Delivery> {
        let bytes = fs::read(self.dir.join(name))?;
        serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Removes file `name`; false when it was gone already.
    pub fn remove(&self, name: &str) -> io::Result<bool> {
        match fs::remove_file(self.dir.join(name)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes the temp files of writers that are gone (a crash while queueing).
    pub fn remove_stale_temps(&self) {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in rd.flatten() {
            if entry.file_name().to_str().is_some_and(is_stale_temp) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Writes one delivery, durably, under its id.
    fn put(&self, d: &Delivery) -> crate::registry::Result<()> {
        let bytes = serde_json::to_vec(d).expect("a delivery serializes");
        let path = self.dir.join(format!("{}{SUFFIX}", d.id));
        write_atomic_mode(&path, &bytes, 0o600)
    }

    /// Drops the oldest deliveries so that `adding` more stay within `limit` files.
    fn make_room(&self, limit: u64, adding: usize) {
        let names = match self.list() {
            Ok(names) => names,
            Err(e) => {
                error!("webhook queue {}: {e}", self.dir.display());
                return;
            }
        };
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let over = (names.len() + adding)
            .saturating_sub(limit)
            .min(names.len());
        if over == 0 {
            return;
        }
        let mut dropped = 0;
        for name in &names[..over] {
            if self.remove(name).unwrap_or(false) {
                dropped += 1;
            }
        }
        DROPPED.fetch_add(dropped, Ordering::Relaxed);
        error!(
            "webhook queue full ({limit} deliveries waiting): dropped the {dropped} oldest, \
             from {}",
            names[0].trim_end_matches(SUFFIX)
        );
    }
}

impl Registry {
    /// The webhook deliveries waiting to be sent.
    pub fn outbox(&self) -> Outbox {
        Outbox::at(self.root())
    }

    /// Queues the deliveries `events` cause, to every `[[webhook]]` that wants them, as
    /// `palletizer.toml` says now (a hand edit needs no restart). Lock held, called by
    /// `apply`. A failure is logged and counted: the change stands either way.
    pub(crate) fn queue_deliveries(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let settings = self.settings_now();
        if settings.webhooks.is_empty() {
            return;
        }
        let expires = crate::registry::now().saturating_add(settings.webhook_retry_secs());
        let mut made = Vec::new();
        for event in events {
            let action = event.change.action();
            for hook in settings.webhooks.iter().filter(|h| h.wants(action)) {
                made.push(payload::delivery(&settings, hook, event, expires));
            }
        }
        let limit = usize::try_from(settings.webhook_queue_limit).unwrap_or(usize::MAX);
        if made.len() > limit {
            let over = made.len() - limit;
            made = made.split_off(over);
            DROPPED.fetch_add(over as u64, Ordering::Relaxed);
            error!("webhook queue full: {over} deliveries of one change dropped");
        }
        if made.is_empty() {
            return;
        }
        let outbox = self.outbox();
        outbox.make_room(settings.webhook_queue_limit, made.len());
        for d in &made {
            if let Err(e) = outbox.put(d) {
                DROPPED.fetch_add(1, Ordering::Relaxed);
                error!(
                    "webhook delivery {} ({}) to {} not queued: {e}",
                    d.id,
                    d.event,
                    shown_url(&d.url)
                );
            }
        }
    }

    /// `palletizer.toml` as it is on disk now; the settings of the registry's opening when
    /// it does not read or parse (that is reported).
    fn settings_now(&self) -> Settings {
        let path = self.root().join(SETTINGS_FILE);
        let read = fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| Settings::parse(&text));
        read.unwrap_or_else(|e| {
            error!(
                "webhooks: {}: {e}; using the settings read at start",
                path.display()
            );
            self.settings().clone()
        })
    }
}

#[cfg(test)]
mod tests;
