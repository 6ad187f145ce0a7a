//! What the server asks of the operating system beyond sockets: giving memory and code
//! pages back (the idle footprint), the descriptor limit, the listen backlog, and work run
//! in a short-lived child process. Linux-specific parts fall back to doing nothing.
//!
//! Nothing here decides when: the loop and the startup call these at the moments they
//! document.

use std::io::{self, Write};

/// Gives the heap pages freed after a load (the parsed `auth.json` is much larger than the
/// view kept of it, a pack libgit2 built) back to the system, so they do not stay resident.
pub fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory at the heap's edges to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// One malloc arena for the whole process. glibc gives each thread that allocates an arena
/// of its own; the mirror's fetcher threads (a read index file, a connection's buffers) each
/// kept theirs' pages resident after a cold fetch of 177 crates: VmHWM 9.8 MiB, 6.4 MiB of
/// it anonymous; with one arena 6.1 MiB, 0.9 MiB anonymous (benches/mirror.py). The threads
/// allocate little and rarely at once, so sharing the arena's lock costs nothing measurable.
pub fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes an allocator parameter; called before the threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Unmaps the pages of the program's code and read-only data (and those of any shared
/// library) so that only what runs next is mapped again. The kernel maps code in 64 KiB
/// batches around each page run (fault-around), so starting up (parsing the config and
/// `auth.json`, opening the registry, building TLS configs) leaves most of the binary's
/// 4 MiB of text resident, and each kind of request adds its share: the static build idled
/// at 3.0 MiB, 2.3 MiB of it text, where the idle loop needs about 1 MiB. These segments
/// are never written, so the page cache holds the same bytes: the next access maps them
/// back with a minor fault, and the rest stays clean, reclaimable page cache instead of
/// this process's memory.
///
/// Skipped under a debugger, whose breakpoints are writes into these pages.
pub fn release_code_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let traced = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            s.lines()
                .any(|l| l.starts_with("TracerPid:") && l.split_whitespace().nth(1) != Some("0"))
        });
        if !traced {
            // SAFETY: the callback only reads the program headers it is handed.
            unsafe { libc::dl_iterate_phdr(Some(drop_read_only_segments), std::ptr::null_mut()) };
        }
    }
}

/// For one loaded object: `MADV_DONTNEED` on each loadable segment that is not writable
/// (writable ones, and the relocated read-only data inside them, hold private copies
/// that would be lost). Only whole pages inside the segment are dropped.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
unsafe extern "C" fn drop_read_only_segments(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    _data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: glibc hands a valid entry whose header table has `dlpi_phnum` entries.
    let info = unsafe { &*info };
    // The kernel's vDSO is no file mapping.
    // SAFETY: as above; a null name or header table is skipped.
    let vdso = !info.dlpi_name.is_null()
        && unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) }.to_bytes() == b"linux-vdso.so.1";
    if vdso || info.dlpi_phdr.is_null() {
        return 0;
    }
    // SAFETY: see above.
    let headers = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) };
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    for h in headers {
        if h.p_type != libc::PT_LOAD || h.p_flags & libc::PF_W != 0 {
            continue;
        }
        let start = (info.dlpi_addr as usize + h.p_vaddr as usize).next_multiple_of(page);
        let end = (info.dlpi_addr as usize + (h.p_vaddr + h.p_memsz) as usize) / page * page;
        if end > start {
            // SAFETY: whole pages of a read-only, never written, file-backed mapping: the
            // next access maps the same bytes back from the file.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        }
    }
    0
}

/// Lifts the soft limit on open files so `max_connections` sockets (plus the listeners,
/// the open-file caches, files being served and the worker's) fit, as far as the hard
/// limit allows.
pub fn raise_fd_limit(max_connections: usize) {
    // rlim_t is 32 bits on 32-bit ARM (a Raspberry Pi OS armhf build).
    let want = libc::rlim_t::try_from(max_connections)
        .unwrap_or(libc::rlim_t::MAX)
        .saturating_mul(2)
        .saturating_add(64);
    // SAFETY: getrlimit/setrlimit on this process with an initialized struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < want {
            r.rlim_cur = want.min(r.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Sets the listen backlog of a listening socket: clients the kernel holds while the table
/// is full or the loop busy (the standard library's 128 drops the connection attempts of a
/// burst beyond it).
pub fn set_listen_backlog(socket: &impl std::os::fd::AsRawFd, backlog: i32) {
    // listen(2) again on a listening socket only changes its backlog.
    // SAFETY: a valid listening socket.
    unsafe { libc::listen(socket.as_raw_fd(), backlog) };
}

/// Runs `work` in a short-lived child process and reports whether it succeeded, so that
/// the long-running server does not keep the code it ran mapped (the registry's crash
/// recovery keeps about 1 MiB of libgit2 resident otherwise). The child writes its own
/// error. Must be called before any thread exists, which is what makes `fork` safe; where
/// `fork` fails, `work` runs here.
pub fn in_child(work: impl Fn() -> Result<(), String>) -> bool {
    // SAFETY: the process is single-threaded at this point; the child only runs `work`
    // and leaves with _exit, never returning into the parent's stack.
    match unsafe { libc::fork() } {
        -1 => match work() {
            Ok(()) => true,
            Err(e) => {
                error!("error: {e}");
                false
            }
        },
        0 => {
            let code = match work() {
                Ok(()) => 0,
                Err(e) => {
                    let _ = writeln!(io::stderr(), "error: {e}");
                    1
                }
            };
            let _ = io::stderr().flush();
            // SAFETY: ends the child without running the parent's destructors or atexit hooks.
            unsafe { libc::_exit(code) }
        }
        child => {
            let mut status = 0;
            // SAFETY: waits for the child forked above.
            let rc = unsafe { libc::waitpid(child, &mut status, 0) };
            rc == child && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
        }
    }
}
