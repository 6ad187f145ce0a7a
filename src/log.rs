//! The one logger: every line the library writes to stderr goes through it, so `-q` and
//! `-v` hold everywhere (the loop, the workers, the registry, startup).
//!
//! Levels: 0 errors and warnings (always written), 1 one line per request and notable
//! events (the default), 2 debug. The macros [`error!`], [`info!`] and [`debug!`] format
//! only when the line will be written.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

static VERBOSITY: AtomicU8 = AtomicU8::new(1);

/// 0: errors only (`-q`), 1: one line per request (default), 2: debug (`-v`).
pub fn set_verbosity(v: u8) {
    VERBOSITY.store(v, Ordering::Relaxed);
}

/// Whether lines of `level` are written.
pub fn enabled(level: u8) -> bool {
    VERBOSITY.load(Ordering::Relaxed) >= level
}

/// Writes one line at `level` (the macros' back end).
pub fn line(level: u8, msg: std::fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    // Unit tests capture `eprintln!`; a server whose stderr is gone must not panic on it.
    if cfg!(test) {
        eprintln!("{msg}");
    } else {
        let _ = writeln!(std::io::stderr().lock(), "{msg}");
    }
}

/// An error or warning: written whatever the verbosity.
macro_rules! error { ($($a:tt)*) => { $crate::log::line(0, format_args!($($a)*)) } }
/// A request line or a notable event: hidden by `-q`.
macro_rules! info { ($($a:tt)*) => { $crate::log::line(1, format_args!($($a)*)) } }
/// Detail for `-v`.
macro_rules! debug { ($($a:tt)*) => { $crate::log::line(2, format_args!($($a)*)) } }
