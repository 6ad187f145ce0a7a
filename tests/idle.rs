//! An idle server gives back the pages of code its requests ran (its idle memory is the
//! code the idle loop runs, not all it ever ran), and serves the same answers afterwards.
#![cfg(all(target_os = "linux", target_env = "gnu"))]

mod support;

use std::fs;
use std::time::{Duration, Instant};

use support::{get_bytes, Sandbox};

/// Resident KiB of the process's executable code: its own executable mappings.
fn text_rss_kib(pid: u32) -> u64 {
    let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut in_text = false;
    let mut total = 0;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first().is_some_and(|f| f.contains('-')) && fields.len() >= 5 {
            in_text = fields[1].contains('x') && fields.get(5) == Some(&exe.to_str().unwrap());
        } else if in_text && fields.first() == Some(&"Rss:") {
            total += fields[1].parse::<u64>().unwrap();
        }
    }
    total
}

#[test]
fn idle_server_kept_the_code_of_past_requests_resident() {
    let sb = Sandbox::new();
    let server = sb.serve(&[]);
    let pid = server.child.id();
    let (status, config) = get_bytes(server.addr(), "/index/config.json").unwrap();
    assert_eq!(status, 200);
    // Other kinds of request bring more code in: a miss, a page, a job on the worker.
    for path in ["/index/no/su/nosuch", "/", "/api/v1/crates?q=x"] {
        get_bytes(server.addr(), path).unwrap();
    }
    let busy = text_rss_kib(pid);
    // The server trims once it has had no connection for a second; this deadline is only
    // the failure condition of "never".
    let until = Instant::now() + Duration::from_secs(30);
    let idle = loop {
        let now = text_rss_kib(pid);
        if now + 256 < busy || Instant::now() > until {
            break now;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        idle + 256 < busy,
        "resident code stayed at {idle} KiB (busy: {busy} KiB)"
    );
    // The same bytes come back from the file: answers are unchanged.
    assert_eq!(
        get_bytes(server.addr(), "/index/config.json").unwrap(),
        (200, config)
    );
    assert_eq!(
        get_bytes(server.addr(), "/index/no/su/nosuch").unwrap().0,
        404
    );
}
