//! Noticing writes to the registry without asking per request.
//!
//! Every writer (this server's worker, the CLI, `backup`, `check --fix`) holds the
//! registry's write lock while it writes and closes the lock file after: Linux's inotify
//! reports that close (`IN_CLOSE_WRITE`) on a descriptor in the event loop's poll set. Once
//! it is in, the open-file cache trusts a kept descriptor until the next such close, so
//! serving a kept file costs no `fstat`; without it (not Linux, no inotify instance left,
//! the lock file replaced or removed, or no regular file) every use of a kept descriptor
//! checks it, as before.
//!
//! The close happens after the writer's renames, and the loop reads the event before the
//! requests of the same wakeup: a request sent after a writer finished sees its files.

use std::io;
use std::path::{Path, PathBuf};

use mio::{Interest, Registry, Token};

/// A watch on the registry's lock file.
#[derive(Debug)]
pub struct Changes {
    path: PathBuf,
    #[cfg(target_os = "linux")]
    fd: Option<std::os::fd::OwnedFd>,
    /// The watch is in place: closes of the lock file are reported.
    watching: bool,
}

/// What [`Changes::drain`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Nothing,
    /// A writer released the lock.
    Written,
    /// The lock file was removed, renamed or replaced: writes go unnoticed until the watch
    /// is set again ([`Changes::retry`]).
    Lost,
}

impl Changes {
    /// Watches `lock_file` (created if missing), registered with `token`. On any failure
    /// the result is not [`watching`](Changes::watching).
    pub fn watch(lock_file: &Path, registry: &Registry, token: Token) -> Changes {
        let mut c = Changes {
            path: lock_file.to_owned(),
            #[cfg(target_os = "linux")]
            fd: None,
            watching: false,
        };
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
            // SAFETY: inotify_init1 takes flags only; a new descriptor or -1 comes back.
            let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
            if fd < 0 {
                return c;
            }
            // SAFETY: the kernel just returned this descriptor; OwnedFd takes sole ownership.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let raw = fd.as_raw_fd();
            if registry
                .register(&mut mio::unix::SourceFd(&raw), token, Interest::READABLE)
                .is_err()
            {
                return c;
            }
            c.fd = Some(fd);
            c.retry();
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (registry, token);
        c
    }

    /// Whether writes are being noticed.
    pub fn watching(&self) -> bool {
        self.watching
    }

    /// Sets the watch again after it was lost (the lock file is made if missing); true once
    /// it is in place. Only a regular file is watched: writers open a symlink's target, whose
    /// closes a watch on the link never reports, and opening a FIFO for writing would block
    /// the event loop until some reader came.
    pub fn retry(&mut self) -> bool {
        self.watching = false;
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.fd {
            use std::os::fd::AsRawFd;
            use std::os::unix::ffi::OsStrExt;
            use std::os::unix::fs::OpenOptionsExt;
            // Made only when missing: watching needs no write access (a registry served
            // from a directory the server may not write), and a FIFO is never opened.
            match std::fs::symlink_metadata(&self.path) {
                Ok(m) if m.is_file() => {}
                Ok(_) => return false,
                Err(_) => {
                    let made = std::fs::File::options()
                        .create_new(true)
                        .write(true)
                        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                        .open(&self.path);
                    if made.is_err()
                        && !std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.is_file())
                    {
                        return false;
                    }
                }
            }
            let Ok(path) = std::ffi::CString::new(self.path.as_os_str().as_bytes()) else {
                return false;
            };
            let mask = libc::IN_CLOSE_WRITE
                | libc::IN_ATTRIB
                | libc::IN_DELETE_SELF
                | libc::IN_MOVE_SELF
                | libc::IN_DONT_FOLLOW;
            // SAFETY: a valid inotify descriptor and a NUL-terminated path.
            let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) };
            // Looked at again once watched: a replacement before the watch shows here, one
            // after it is reported as an event.
            let regular = std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.is_file());
            self.watching = wd >= 0 && regular;
        }
        self.watching
    }

    /// Reads every pending event.
    pub fn drain(&mut self) -> Seen {
        let mut seen = Seen::Nothing;
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.fd {
            use std::os::fd::AsRawFd;
            // Room for many events (each 16 bytes, no name: the watch is on a file).
            let mut buf = [0u8; 4096];
            loop {
                // SAFETY: reading into a buffer of the length passed.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    break;
                }
                if n == 0 {
                    break;
                }
                let mut at = 0;
                let header = std::mem::size_of::<libc::inotify_event>();
                while at + header <= n as usize {
                    // SAFETY: the kernel wrote whole events; an unaligned read of the header.
                    let ev: libc::inotify_event =
                        unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
                    at += header + ev.len as usize;
                    if ev.mask & libc::IN_CLOSE_WRITE != 0 || ev.mask & libc::IN_Q_OVERFLOW != 0 {
                        if seen == Seen::Nothing {
                            seen = Seen::Written;
                        }
                    } else {
                        // Attributes (a link count dropped), removed, moved, or the watch
                        // itself gone: the file writers lock may no longer be this one.
                        seen = Seen::Lost;
                    }
                }
            }
        }
        if seen == Seen::Lost {
            self.watching = false;
        }
        seen
    }
}
