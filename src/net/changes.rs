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
//!
//! A second watch, on the registry's folder, reports changes to the access files
//! (`auth.json`, `palletizer.toml`) made by hand, without the lock. With both in place an
//! idle server has nothing to poll for and sleeps until a client or a change comes. An
//! access file that is a symbolic link, or has another name, can be written where the folder's
//! watch sees nothing: while one is, the loop polls as it does without the watches.

use std::io;
use std::path::{Path, PathBuf};

use mio::{Interest, Registry, Token};

/// Watches on the registry's lock file and on the folder holding it and the access files.
#[derive(Debug)]
pub struct Changes {
    path: PathBuf,
    /// Names of the files in the lock file's folder whose changes [`Seen::Access`] reports.
    access_files: &'static [&'static str],
    #[cfg(target_os = "linux")]
    fd: Option<std::os::fd::OwnedFd>,
    /// The lock file's and the folder's watch descriptors, when set. Events of any other
    /// (a watch replaced since, on a file or folder no longer at its path) mean nothing.
    #[cfg(target_os = "linux")]
    lock_wd: Option<libc::c_int>,
    #[cfg(target_os = "linux")]
    folder_wd: Option<libc::c_int>,
    /// An access file is a symbolic link or a hard link: edits through its other name
    /// bring no event on the folder.
    #[cfg(target_os = "linux")]
    linked_out: bool,
    /// The watch is in place: closes of the lock file are reported.
    watching: bool,
}

/// What [`Changes::drain`] found, the strongest of its events: each one implies what the
/// ones below it ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Seen {
    Nothing,
    /// An access file changed outside the lock (by hand): look at them again.
    Access,
    /// A writer released the lock (files and access files may have changed).
    Written,
    /// The lock file was removed, renamed or replaced: writes go unnoticed until the watch
    /// is set again ([`Changes::retry`]).
    Lost,
}

impl Changes {
    /// Watches `lock_file` (created if missing) and its folder for changes to
    /// `access_files`, registered with `token`. On any failure the result is not
    /// [`watching`](Changes::watching).
    pub fn watch(
        lock_file: &Path,
        access_files: &'static [&'static str],
        registry: &Registry,
        token: Token,
    ) -> Changes {
        let mut c = Changes {
            path: lock_file.to_owned(),
            access_files,
            #[cfg(target_os = "linux")]
            fd: None,
            #[cfg(target_os = "linux")]
            lock_wd: None,
            #[cfg(target_os = "linux")]
            folder_wd: None,
            #[cfg(target_os = "linux")]
            linked_out: false,
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

    /// Whether every change that matters is reported as an event: writes under the lock
    /// and hand edits of the access files. Until then the loop polls.
    pub fn covers_everything(&self) -> bool {
        #[cfg(target_os = "linux")]
        return self.watching && self.folder_wd.is_some() && !self.linked_out;
        #[cfg(not(target_os = "linux"))]
        false
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
            self.lock_wd = (wd >= 0).then_some(wd);
            self.watching = wd >= 0 && regular;
            if self.folder_wd.is_none() {
                self.folder_wd = self.watch_folder(fd.as_raw_fd());
                self.look_at_links();
            }
        }
        self.watching
    }

    /// The folder holding the lock file and the access files.
    #[cfg(target_os = "linux")]
    fn folder(&self) -> &Path {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }

    /// The watch on the lock file's folder, for the access files: any way a file can change
    /// under a name (written in place, renamed over, made, removed), and the folder itself
    /// going away.
    #[cfg(target_os = "linux")]
    fn watch_folder(&self, fd: libc::c_int) -> Option<libc::c_int> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.folder().as_os_str().as_bytes()).ok()?;
        let mask = libc::IN_CLOSE_WRITE
            | libc::IN_MOVED_TO
            | libc::IN_MOVED_FROM
            | libc::IN_CREATE
            | libc::IN_DELETE
            | libc::IN_ATTRIB
            | libc::IN_DELETE_SELF
            | libc::IN_MOVE_SELF
            | libc::IN_ONLYDIR
            | libc::IN_DONT_FOLLOW;
        // SAFETY: a valid inotify descriptor and a NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(fd, path.as_ptr(), mask) };
        (wd >= 0).then_some(wd)
    }

    /// Notes whether an access file can change without an event on the folder: a symbolic
    /// link's target, or a file with another name (edited in place through that name).
    #[cfg(target_os = "linux")]
    fn look_at_links(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let folder = self.folder();
        self.linked_out = self.access_files.iter().any(|f| {
            std::fs::symlink_metadata(folder.join(f))
                .is_ok_and(|m| m.file_type().is_symlink() || m.nlink() > 1)
        });
    }

    /// Reads every pending event.
    pub fn drain(&mut self) -> Seen {
        let mut seen = Seen::Nothing;
        #[cfg(target_os = "linux")]
        if let Some(fd) = self.fd.as_ref().map(std::os::fd::AsRawFd::as_raw_fd) {
            // Room for many events (16 bytes each, and a name padded to 16 for the folder's).
            let mut buf = [0u8; 4096];
            loop {
                // SAFETY: reading into a buffer of the length passed.
                let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
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
                    let name = &buf[(at + header).min(n as usize)
                        ..(at + header + ev.len as usize).min(n as usize)];
                    at += header + ev.len as usize;
                    seen = seen.max(self.judge(&ev, name));
                }
            }
        }
        if seen == Seen::Lost {
            self.watching = false;
        }
        #[cfg(target_os = "linux")]
        if seen >= Seen::Access && self.folder_wd.is_some() {
            // An access file made, replaced or removed may be a link now, or no longer.
            self.look_at_links();
        }
        seen
    }

    /// What one event means. `name`: the file's name in a folder event, NUL-padded.
    #[cfg(target_os = "linux")]
    fn judge(&mut self, ev: &libc::inotify_event, name: &[u8]) -> Seen {
        if ev.mask & libc::IN_Q_OVERFLOW != 0 {
            // Events were dropped, the folder's or the lock file's going among them, maybe:
            // both watches are set again (on the same files they come back unchanged).
            self.folder_wd = None;
            return Seen::Lost;
        }
        if Some(ev.wd) == self.folder_wd {
            if ev.mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED) != 0 {
                // The folder moved or went: back to looking every half second.
                self.folder_wd = None;
                return Seen::Access;
            }
            let name = name.split(|&b| b == 0).next().unwrap_or_default();
            let ours = self.access_files.iter().any(|f| f.as_bytes() == name);
            return if ours { Seen::Access } else { Seen::Nothing };
        }
        if Some(ev.wd) != self.lock_wd {
            return Seen::Nothing;
        }
        if ev.mask & libc::IN_CLOSE_WRITE != 0 {
            Seen::Written
        } else {
            // Attributes (a link count dropped), removed, moved, or the watch itself gone:
            // the file writers lock may no longer be this one.
            Seen::Lost
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    const ACCESS: &[&str] = &["auth.json", "palletizer.toml"];

    /// A registry folder with its lock and access files, watched.
    fn watched(root: &Path) -> (mio::Poll, Changes) {
        std::fs::create_dir_all(root).unwrap();
        for f in ACCESS {
            std::fs::write(root.join(f), "x").unwrap();
        }
        let poll = mio::Poll::new().unwrap();
        let c = Changes::watch(&root.join(".lock"), ACCESS, poll.registry(), Token(1));
        assert!(c.covers_everything());
        (poll, c)
    }

    /// A queue overflow may have dropped the folder's own move: the watches are set again
    /// on what is at the path now, so the next hand edit there is reported.
    #[test]
    fn a_queue_overflow_hid_the_folder_being_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("reg");
        let (_poll, mut c) = watched(&root);
        let max: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(16384);
        if max > 100_000 {
            eprintln!("skipped: max_queued_events is {max}, too many files to make");
            return;
        }
        // Each file made brings two events (made, closed after writing).
        for i in 0..max / 2 + 1 {
            std::fs::write(root.join(format!("j{i}")), "").unwrap();
        }
        std::fs::rename(&root, tmp.path().join("old")).unwrap();
        watched(&root);
        assert_eq!(c.drain(), Seen::Lost);
        c.retry();
        assert!(c.covers_everything());
        std::fs::write(root.join("palletizer.toml"), "y").unwrap();
        assert_eq!(c.drain(), Seen::Access);
    }

    /// Once the lock file was replaced, its old watch still reports what happens to the
    /// old file (kept alive under another name): that is no write to this registry.
    #[test]
    fn events_of_a_replaced_watch_mean_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("reg");
        let (_poll, mut c) = watched(&root);
        let lock = root.join(".lock");
        std::fs::hard_link(&lock, tmp.path().join("old-lock")).unwrap();
        std::fs::write(root.join(".new"), "").unwrap();
        std::fs::rename(root.join(".new"), &lock).unwrap();
        assert_eq!(c.drain(), Seen::Lost);
        assert!(c.retry());
        std::fs::write(tmp.path().join("old-lock"), "x").unwrap();
        assert_eq!(c.drain(), Seen::Nothing);
        std::fs::write(&lock, "x").unwrap();
        assert_eq!(c.drain(), Seen::Written);
    }

    /// The target of a symbolic link, or a file's other name, is edited where the folder's
    /// watch sees nothing: the loop must poll while an access file is one.
    #[test]
    fn a_linked_access_file_is_polled() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("reg");
        let (_poll, mut c) = watched(&root);
        let elsewhere = tmp.path().join("palletizer.toml");
        std::fs::write(&elsewhere, "x").unwrap();
        std::fs::remove_file(root.join("palletizer.toml")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("palletizer.toml")).unwrap();
        assert_eq!(c.drain(), Seen::Access);
        assert!(!c.covers_everything());
        std::fs::remove_file(root.join("palletizer.toml")).unwrap();
        std::fs::hard_link(&elsewhere, root.join("palletizer.toml")).unwrap();
        assert_eq!(c.drain(), Seen::Access);
        assert!(!c.covers_everything());
        std::fs::remove_file(&elsewhere).unwrap();
        std::fs::write(root.join("auth.json"), "y").unwrap();
        assert_eq!(c.drain(), Seen::Access);
        assert!(c.covers_everything());
    }
}
