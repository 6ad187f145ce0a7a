//! Crashes and full disks: what a registry must survive without losing an acknowledged write
//! or keeping a refused one.
//!
//! - a commit that fails leaves nothing staged for the next one to sweep in;
//! - a journaled write cut short is finished at the next open;
//! - the crash loop: publishes through the server and `palletizer add` killed with SIGKILL at
//!   random moments (`PALLETIZER_CRASH_KILLS`, default 10; `PALLETIZER_CRASH_SEED` replays):
//!   no acknowledged publish is lost, nor its `ok` line in the audit log;
//! - a full disk (a small tmpfs; needs root): every failure is a 507 that leaves no trace.
//!   Without root it is reported as ignored with the reason, except under `CI=true`, where
//!   it fails (tests/support/harness.rs).

mod support;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palletizer::registry::testing::{
    crate_bytes, file, find_tombstone, history_is_linear, index_path, noise, publish_body,
    sha256_hex, simple_crate, staged,
};
use palletizer::registry::{CrateName, InitOptions, Problem, Registry, Version};
use support::harness::Tmpfs;
use support::{get_bytes, git_in, meta, put_docs, show, try_raw_publish, Sandbox};

support::harness::tests!(
    a_failed_commit_leaves_no_ghost_for_the_next_one,
    stale_git_locks_are_removed_at_open,
    a_journaled_write_cut_short_is_finished_at_open,
    crash_loop_loses_no_acknowledged_publish,
    crash_loop_with_eight_clients_loses_no_acknowledged_publish,
    a_full_disk_answers_507_and_keeps_nothing[Tmpfs],
    a_docs_upload_on_a_full_disk_is_a_507_and_leaves_nothing[Tmpfs],
    garbled_state_is_repaired_at_open,
    a_delete_cut_short_before_its_commit_leaves_the_version_whole,
    a_delete_cut_short_after_its_index_edit_is_finished,
    a_delete_whose_commit_fails_leaves_no_tombstone,
    killed_deletes_leave_each_version_whole_or_deleted,
    git_in_the_index_prints_no_warning_about_its_config[Git],
);

fn init(root: &Path) -> Registry {
    Registry::init(root, InitOptions::for_url("http://127.0.0.1:1")).unwrap()
}

fn head(reg: &Path) -> String {
    let repo = git2::Repository::open(reg.join("index")).unwrap();
    let id = repo.head().unwrap().peel_to_commit().unwrap().id();
    id.to_string()
}

fn head_has(reg: &Path, rel: &str) -> bool {
    let repo = git2::Repository::open(reg.join("index")).unwrap();
    let tree = repo.head().unwrap().peel_to_tree().unwrap();
    tree.get_path(Path::new(rel)).is_ok()
}

fn name(n: &str) -> CrateName {
    CrateName::parse(n).unwrap()
}

fn a_failed_commit_leaves_no_ghost_for_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let reg = init(dir.path());
    reg.publish(None, &simple_crate("first", "1.0.0", &[])[..])
        .unwrap();
    let before = head(dir.path());
    // A ref lock the commit cannot take: the publish fails inside the commit.
    let lock = dir.path().join("index/.git/refs/heads/master.lock");
    fs::write(&lock, b"").unwrap();
    let err = reg
        .publish(None, &simple_crate("ghost", "1.0.0", &[])[..])
        .unwrap_err();
    assert!(err.to_string().contains("lock"), "{err}");
    assert_eq!(head(dir.path()), before);
    assert!(!dir.path().join("crates/ghost").exists(), "no crate file");
    let rel = index_path(&name("ghost"));
    assert!(
        !dir.path().join("index").join(&rel).exists(),
        "no index file"
    );
    assert!(staged(&dir.path().join("index")).unwrap().is_empty());
    fs::remove_file(&lock).unwrap();
    reg.publish(None, &simple_crate("second", "1.0.0", &[])[..])
        .unwrap();
    assert!(
        !head_has(dir.path(), &rel),
        "the next commit must not carry the failed publish"
    );
    assert!(reg.entries(&name("ghost")).unwrap().is_empty());
    assert!(reg.check().unwrap().is_empty());
}

fn stale_git_locks_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let reg = init(dir.path());
    for f in ["index/.git/index.lock", "index/.git/refs/heads/master.lock"] {
        fs::write(dir.path().join(f), b"").unwrap();
    }
    let problems = reg.check().unwrap();
    assert_eq!(problems.len(), 2, "{problems:?}");
    let reg = Registry::open(dir.path()).unwrap();
    reg.publish(None, &simple_crate("after", "1.0.0", &[])[..])
        .unwrap();
    assert!(reg.check().unwrap().is_empty());
}

/// git 2.47 warns on every command about `core.fsyncObjectFiles`, which registries used to
/// set so that libgit2 would fsync; libgit2 is told by a process-wide option instead, and
/// the old key goes at the next open.
fn git_in_the_index_prints_no_warning_about_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let reg = init(dir.path());
    reg.publish(None, &simple_crate("quiet", "1.0.0", &[])[..])
        .unwrap();
    let index = dir.path().join("index");
    for args in [&["status"][..], &["log", "-1"], &["fsck", "--no-progress"]] {
        let (ok, stderr) = git_in(&index, args);
        assert!(ok && stderr.is_empty(), "git {args:?}: {stderr}");
    }
    // A registry made by an older palletizer.
    let (ok, _) = git_in(&index, &["config", "core.fsyncObjectFiles", "true"]);
    assert!(ok);
    let (_, stderr) = git_in(&index, &["status"]);
    assert!(
        stderr.contains("fsyncObjectFiles"),
        "git no longer warns: {stderr}"
    );
    let reg = Registry::open(dir.path()).unwrap();
    reg.publish(None, &simple_crate("quieter", "1.0.0", &[])[..])
        .unwrap();
    let (ok, stderr) = git_in(&index, &["status"]);
    assert!(ok && stderr.is_empty(), "after open: {stderr}");
    assert!(reg.check().unwrap().is_empty());
}

fn a_journaled_write_cut_short_is_finished_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let reg = init(root);
    reg.publish(None, &simple_crate("jour", "1.0.0", &[])[..])
        .unwrap();
    // As a kill after the crate file was renamed into place, before its index line, and
    // before the search line of the last write was updated.
    fs::write(
        root.join("crates/jour/jour-2.0.0.crate"),
        simple_crate("jour", "2.0.0", &[]),
    )
    .unwrap();
    fs::write(root.join("search.jsonl"), b"").unwrap();
    fs::write(root.join(".pending"), b"jour\n").unwrap();
    let problems = reg.check().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, Problem::OrphanCrateFile { .. })),
        "{problems:?}"
    );
    let reg = Registry::open(root).unwrap();
    assert!(!root.join("crates/jour/jour-2.0.0.crate").exists());
    assert!(
        root.join("orphans/jour-2.0.0.crate").exists(),
        "moved, not deleted"
    );
    assert!(!root.join(".pending").exists());
    let found = reg.search("jour", 10).unwrap();
    assert_eq!(found.hits.len(), 1);
    assert_eq!(found.hits[0].max_version, "1.0.0");
    assert_eq!(
        found.hits[0].description.as_deref(),
        Some("test crate jour")
    );
    assert!(reg.check().unwrap().is_empty());
}

/// A small xorshift: the crash loop's moments, replayable from the printed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A write the registry acknowledged: it must be there after every later crash.
#[derive(Clone)]
struct Acked {
    name: String,
    cksum: String,
}

fn crate_for(name: &str, salt: u64) -> Vec<u8> {
    let data = noise(2000 + (salt as usize % 5000));
    simple_crate(name, "1.0.0", &[("data", &data)])
}

fn verify(s: &Sandbox, addr: &str, acked: &[Acked]) {
    for a in acked {
        let rel = index_path(&name(&a.name));
        let (st, body) = get_bytes(addr, &format!("/index/{rel}")).unwrap();
        let body = String::from_utf8_lossy(&body);
        assert_eq!(st, 200, "{} lost from the index", a.name);
        assert!(body.contains(&a.cksum), "{}: {body}", a.name);
        let (st, bytes) = get_bytes(addr, &format!("/crates/{0}/{0}-1.0.0.crate", a.name)).unwrap();
        assert_eq!(st, 200, "{} crate file lost", a.name);
        assert_eq!(sha256_hex(&bytes[..]).unwrap(), a.cksum, "{}", a.name);
    }
    let out = s.palletizer(&["check"]);
    assert!(out.status.success(), "check after restart:\n{}", show(&out));
    verify_audit(s, acked);
    let index = s.reg().join("index");
    assert!(history_is_linear(&index).unwrap());
    let fsck = Command::new("git")
        .arg("-C")
        .arg(&index)
        .args(["fsck", "--no-dangling", "--no-progress"])
        .output()
        .unwrap();
    assert!(fsck.status.success(), "git fsck:\n{}", show(&fsck));
}

/// Every acknowledged publish has its `ok` line in the audit log with its actor (the admin's
/// token through the server, the Unix user for `palletizer add`), and every intent line a
/// kill left was given its outcome when the registry was opened again.
fn verify_audit(s: &Sandbox, acked: &[Acked]) {
    let out = s.palletizer(&["audit", "--json"]);
    assert!(out.status.success(), "audit:\n{}", show(&out));
    let records: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for a in acked {
        let kind = if a.name.starts_with("srv") {
            "token"
        } else {
            "cli"
        };
        let line = records.iter().find(|r| {
            r["action"] == "publish" && r["crate"] == a.name.as_str() && r["outcome"] == "ok"
        });
        let Some(line) = line else {
            panic!("{} was acknowledged without its audit line", a.name)
        };
        assert_eq!(line["actor"]["kind"], kind, "{line}");
        assert_eq!(line["changes"][0]["cksum"], a.cksum.as_str(), "{line}");
    }
    assert!(
        records.iter().all(|r| r["outcome"] != "started"),
        "an intent line without its outcome after a restart"
    );
    let raw = fs::read_to_string(s.reg().join("audit.jsonl")).unwrap_or_default();
    let outcomes: Vec<serde_json::Value> = raw
        .lines()
        .map(|l| serde_json::from_str(l).expect("a whole line"))
        .collect();
    for pair in outcomes.windows(2) {
        assert!(
            pair[0]["outcome"] != "started" || pair[1]["outcome"] != "started",
            "an intent followed by another intent: {pair:?}"
        );
    }
}

fn crash_loop_loses_no_acknowledged_publish() {
    crash_loop(1);
}

/// The same with 8 clients publishing at once: the writer's commits wait for their
/// checkpoint while the next ones come in, and a kill lands between them.
fn crash_loop_with_eight_clients_loses_no_acknowledged_publish() {
    crash_loop(8);
}

/// Rounds of `clients` publishing through the server beside `palletizer add`, each ended
/// by a SIGKILL at a random moment; after each restart every acknowledged publish is there.
fn crash_loop(clients: usize) {
    let kills: usize = std::env::var("PALLETIZER_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("PALLETIZER_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash loop: {kills} kills, PALLETIZER_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let s = Sandbox::new();
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let started = Instant::now();
    for round in 0..kills {
        let srv = s.serve(&["-q"]);
        verify(&s, srv.addr(), &acked.lock().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let addr = srv.addr().to_owned();
        let token = s.token();
        let publishers: Vec<_> = (0..clients)
            .map(|k| {
                let (stop, acked) = (stop.clone(), acked.clone());
                let (addr, token) = (addr.clone(), token.clone());
                std::thread::spawn(move || {
                    for j in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let name = format!("srv{round}c{k}n{j}");
                        let salt = (round * 100_000 + k * 1000 + j) as u64;
                        let krate = crate_for(&name, salt);
                        let meta = meta(&name, "1.0.0", serde_json::json!([]));
                        let body = publish_body(&meta, &krate);
                        match try_raw_publish(&addr, &token, &body) {
                            Ok((200, _)) => acked.lock().unwrap().push(Acked {
                                cksum: sha256_hex(&krate[..]).unwrap(),
                                name,
                            }),
                            Ok((status, body)) => panic!("{name}: {status} {body}"),
                            Err(_) => break, // the server was killed
                        }
                    }
                })
            })
            .collect();
        let adding: Arc<Mutex<Option<u32>>> = Arc::default();
        let adder = {
            let (stop, acked, adding) = (stop.clone(), acked.clone(), adding.clone());
            let reg = s.reg();
            let dir = s.path().join(format!("add{round}"));
            fs::create_dir_all(&dir).unwrap();
            std::thread::spawn(move || {
                for j in 0.. {
                    let name = format!("cli{round}n{j}");
                    let krate = crate_for(&name, (round * 1000 + j + 500) as u64);
                    let file = dir.join(format!("{name}-1.0.0.crate"));
                    fs::write(&file, &krate).unwrap();
                    let mut child = {
                        let mut slot = adding.lock().unwrap();
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let child = Command::new(env!("CARGO_BIN_EXE_palletizer"))
                            .arg("-r")
                            .arg(&reg)
                            .arg("add")
                            .arg(&file)
                            .stdout(std::process::Stdio::null())
                            .stderr(std::process::Stdio::null())
                            .spawn()
                            .unwrap();
                        *slot = Some(child.id());
                        child
                    };
                    let status = child.wait().unwrap();
                    *adding.lock().unwrap() = None;
                    if status.success() {
                        acked.lock().unwrap().push(Acked {
                            cksum: sha256_hex(&krate[..]).unwrap(),
                            name,
                        });
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(20 + rng.below(400)));
        srv.signal(libc::SIGKILL);
        {
            let slot = adding.lock().unwrap();
            stop.store(true, Ordering::Relaxed);
            if let Some(pid) = *slot {
                if rng.below(2) == 0 {
                    // SAFETY: kill(2) on a child this test spawned and has not reaped.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
            }
        }
        for p in publishers {
            p.join().unwrap();
        }
        adder.join().unwrap();
        drop(srv);
    }
    let srv = s.serve(&["-q"]);
    let acked = acked.lock().unwrap().clone();
    verify(&s, srv.addr(), &acked);
    eprintln!(
        "crash loop: {kills} kills, {} acknowledged publishes all present, in {:.1} s",
        acked.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        acked.len() >= kills,
        "the loop published too little to test"
    );
}

/// What a refused publish must leave exactly as it was: the served trees (index working
/// tree, crate files), the search data, HEAD and git's index (nothing staged).
fn visible_state(reg: &Path) -> (Vec<(std::path::PathBuf, Vec<u8>)>, String) {
    let mut files: Vec<_> = support::snapshot(reg)
        .into_iter()
        .filter(|(p, _)| {
            let p = p.to_string_lossy();
            // The journal names crates changed since the server's last checkpoint; a
            // refused publish may add its name, which only repeats a repair after a crash.
            !p.contains(".git/")
                && !p.contains("filler")
                && !p.contains(".tmp-")
                && !p.ends_with(".pending")
        })
        // The server records its tokens' last use once a minute: not a publish's trace.
        .map(|(p, bytes)| match p.ends_with("auth.json") {
            true => {
                let text = String::from_utf8_lossy(&bytes);
                let kept: Vec<&str> = text
                    .lines()
                    .filter(|l| !l.contains("\"last_used\""))
                    .collect();
                (
                    p,
                    kept.join("\n").replace(",\n    }", "\n    }").into_bytes(),
                )
            }
            false => (p, bytes),
        })
        .collect();
    files.sort();
    (files, head(reg))
}

fn a_full_disk_answers_507_and_keeps_nothing() {
    let s = Sandbox::new();
    let mnt = Tmpfs::mount(&s.reg(), "6m");
    let srv = s.serve(&["-q"]);
    let reg = s.reg();
    // Leave about 1.5 MiB free.
    let free = || {
        let st = nix_statvfs(&reg);
        st.0 * st.1
    };
    let filler = reg.join("filler");
    fs::write(
        &filler,
        vec![0u8; (free() as usize).saturating_sub(1536 << 10)],
    )
    .unwrap();
    let mut rng = Rng(0x5eed);
    let (mut ok, mut full, mut first_refused) = (0, 0, None);
    let mut stored = Vec::new();
    for j in 0..200 {
        let name = format!("fill{j}");
        // Big crates until the disk first refuses, then small ones, so that the disk runs out
        // at every step of a publish in turn: spool, crate file, journal, index, git.
        let size = if full == 0 {
            10_000 + rng.below(250_000) as usize
        } else {
            100 + rng.below(6_000) as usize
        };
        let krate = simple_crate(&name, "1.0.0", &[("data", &noise(size))]);
        let body = publish_body(&meta(&name, "1.0.0", serde_json::json!([])), &krate);
        if publish_checked(srv.addr(), &s.token(), &reg, &name, &body, &mut stored) {
            ok += 1;
        } else {
            full += 1;
            first_refused.get_or_insert((name.clone(), body.clone()));
        }
        if full >= 40 {
            break;
        }
    }
    // Then every level of free space from 64 KiB down, 2 KiB apart, with a small crate:
    // whichever write runs out first, the answer and the registry must agree.
    for (k, leave) in (0..=64u64).rev().step_by(2).enumerate() {
        let _ = fs::remove_file(&filler);
        let room = free().saturating_sub(leave << 10) as usize;
        let _ = fs::write(&filler, vec![0u8; room]);
        let name = format!("edge{k}");
        let krate = simple_crate(&name, "1.0.0", &[("data", &noise(3000))]);
        let body = publish_body(&meta(&name, "1.0.0", serde_json::json!([])), &krate);
        if publish_checked(srv.addr(), &s.token(), &reg, &name, &body, &mut stored) {
            ok += 1;
        } else {
            full += 1;
        }
    }
    eprintln!("disk full: {ok} publishes stored, {full} refused with 507");
    for l in srv.log().iter().filter(|l| l.starts_with("error")) {
        eprintln!("  {l}");
    }
    assert!(ok > 0 && full >= 40, "ok {ok}, full {full}");
    let out = s.palletizer(&["check"]);
    assert!(out.status.success(), "{}", show(&out));
    // Room again: the same publish now succeeds.
    fs::remove_file(&filler).unwrap();
    let (name, body) = first_refused.unwrap();
    stored.push(name.clone());
    let (st, text) = try_raw_publish(srv.addr(), &s.token(), &body).unwrap();
    assert_eq!(st, 200, "{name}: {text}");
    drop(srv);
    // HEAD holds exactly the publishes that were answered 200: no refused one was swept
    // into a later commit.
    let repo = git2::Repository::open(reg.join("index")).unwrap();
    let tree = repo.head().unwrap().peel_to_tree().unwrap();
    let mut in_head = Vec::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |_, e| {
        if e.kind() == Some(git2::ObjectType::Blob) && e.name().ok() != Some("config.json") {
            in_head.push(e.name().unwrap().to_owned());
        }
        git2::TreeWalkResult::Ok
    })
    .unwrap();
    in_head.sort();
    stored.sort();
    assert_eq!(in_head, stored);
    drop(mnt);
}

/// A docs upload that unpacks to more than the disk holds (its archive is small: zeros):
/// a 507 that says so, no staging tree left, and the same upload works once there is room.
fn a_docs_upload_on_a_full_disk_is_a_507_and_leaves_nothing() {
    let s = Sandbox::new();
    let mnt = Tmpfs::mount(&s.reg(), "6m");
    let srv = s.serve(&["-q"]);
    let reg = s.reg();
    let krate = simple_crate("docfull", "1.0.0", &[]);
    let body = publish_body(&meta("docfull", "1.0.0", serde_json::json!([])), &krate);
    let (st, text) = try_raw_publish(srv.addr(), &s.token(), &body).unwrap();
    assert_eq!(st, 200, "{text}");
    let zeros = vec![0u8; 2 << 20];
    let docs = crate_bytes(&[
        file("./docfull/index.html", b"<title>docfull</title>"),
        file("./docfull/big.bin", &zeros),
    ]);
    assert!(docs.len() < 64 << 10, "{}", docs.len());
    let st = nix_statvfs(&reg);
    let filler = reg.join("filler");
    fs::write(
        &filler,
        vec![0u8; ((st.0 * st.1) as usize).saturating_sub(512 << 10)],
    )
    .unwrap();
    let (st, text) = put_docs(srv.addr(), &s.token(), "docfull", "1.0.0", &docs);
    assert_eq!(st, 507, "{text}");
    assert!(text.contains("disk is full"), "{text}");
    let left: Vec<_> = fs::read_dir(reg.join("docs")).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
    fs::remove_file(&filler).unwrap();
    let (st, text) = put_docs(srv.addr(), &s.token(), "docfull", "1.0.0", &docs);
    assert_eq!(st, 200, "{text}");
    assert!(reg.join("docs/docfull/1.0.0/docfull/big.bin").is_file());
    drop(srv);
    drop(mnt);
}

/// Publishes and checks that the answer and the registry agree: a 200 moved HEAD by exactly
/// its commit; a 507 left nothing visible. Returns whether it was stored.
fn publish_checked(
    addr: &str,
    token: &str,
    reg: &Path,
    name: &str,
    body: &[u8],
    stored: &mut Vec<String>,
) -> bool {
    let before = visible_state(reg);
    let (st, text) = try_raw_publish(addr, token, body).unwrap();
    match st {
        200 => {
            stored.push(name.to_owned());
            let repo = git2::Repository::open(reg.join("index")).unwrap();
            let head = repo.head().unwrap().peel_to_commit().unwrap();
            assert_eq!(
                head.parent_id(0).unwrap().to_string(),
                before.1,
                "{name}: one commit per 200"
            );
            assert_eq!(head.message().unwrap(), format!("Add {name} 1.0.0"));
            true
        }
        507 => {
            assert!(text.contains("disk is full"), "{text}");
            let after = visible_state(reg);
            if after != before {
                let changed: Vec<_> = after
                    .0
                    .iter()
                    .filter(|f| !before.0.contains(f))
                    .chain(before.0.iter().filter(|f| !after.0.contains(f)))
                    .map(|f| f.0.display().to_string())
                    .collect();
                panic!(
                    "{name}: a refused publish left a trace: {changed:?}, HEAD {} then {}",
                    before.1, after.1
                );
            }
            false
        }
        other => panic!("{name}: {other} {text}"),
    }
}

/// (block size, free blocks) of the file system holding `path`.
fn nix_statvfs(path: &Path) -> (u64, u64) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path and a zeroed struct the call fills.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c.as_ptr(), &mut st), 0);
        (st.f_frsize as u64, st.f_bavail as u64)
    }
}

fn garbled_state_is_repaired_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let reg = init(root);
    reg.publish(None, &simple_crate("kept", "1.0.0", &[])[..])
        .unwrap();
    // What a torn write or a bad disk sector can leave: a journal that is not text, a git
    // index cut short, a search file that is not UTF-8; and a stray file in the index.
    fs::write(root.join(".pending"), b"\xff\xfe\nkept\n\x00").unwrap();
    fs::write(root.join("index/.git/index"), b"DIRC\x00").unwrap();
    fs::write(root.join("search.jsonl"), b"{\"name\":\"ke\xff").unwrap();
    fs::write(root.join("index/junk.txt"), b"not an index file").unwrap();
    let problems = reg.check().unwrap();
    for want in [".pending", "git's index file", "search data for kept"] {
        assert!(
            problems.iter().any(|p| p.to_string().contains(want)),
            "{want}: {problems:?}"
        );
    }
    let reg = Registry::open(root).expect("opens and repairs");
    let found = reg.search("kept", 10).unwrap();
    assert_eq!(found.hits.len(), 1, "search rebuilt");
    assert_eq!(
        found.hits[0].description.as_deref(),
        Some("test crate kept")
    );
    assert!(staged(&root.join("index")).unwrap().is_empty());
    assert!(
        !head_has(root, "junk.txt"),
        "recovery commits only index files"
    );
    let problems = reg.check().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].to_string().contains("junk.txt"), "{problems:?}");
    reg.publish(None, &simple_crate("after", "1.0.0", &[])[..])
        .unwrap();
    assert!(!head_has(root, "junk.txt"));
}

/// A tombstone line as `delete` writes it.
fn tombstone_line(name: &str, vers: &str) -> String {
    format!(
        "{{\"name\":\"{name}\",\"vers\":\"{vers}\",\"cksum\":\"00\",\"deleted\":\"2026-01-01T00:00:00Z\"}}\n"
    )
}

fn tombstoned(root: &Path, n: &str, vers: &str) -> bool {
    let v = Version::parse(vers).unwrap();
    find_tombstone(root, n, &v).unwrap().is_some()
}

fn a_delete_cut_short_before_its_commit_leaves_the_version_whole() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let reg = init(root);
    for v in ["1.0.0", "2.0.0"] {
        reg.publish(None, &simple_crate("dcut", v, &[])[..])
            .unwrap();
    }
    // As a kill after the tombstone was written, before the index file was.
    let older = tombstone_line("gone", "1.0.0");
    fs::write(
        root.join("deleted.jsonl"),
        format!("{older}{}", tombstone_line("dcut", "1.0.0")),
    )
    .unwrap();
    fs::write(root.join(".pending"), b"dcut\n").unwrap();
    let reg = Registry::open(root).unwrap();
    assert_eq!(reg.entries(&name("dcut")).unwrap().len(), 2);
    assert!(root.join("crates/dcut/dcut-1.0.0.crate").exists());
    assert_eq!(
        fs::read_to_string(root.join("deleted.jsonl")).unwrap(),
        older,
        "the cut delete's tombstone is dropped, the others kept"
    );
    assert!(reg.check().unwrap().is_empty());
    // And the delete can be made again, whole.
    assert_eq!(reg.delete(&name("dcut"), Some("1.0.0")).unwrap(), ["1.0.0"]);
    assert!(tombstoned(root, "dcut", "1.0.0"));
}

fn a_delete_cut_short_after_its_index_edit_is_finished() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let reg = init(root);
    for v in ["1.0.0", "2.0.0"] {
        reg.publish(None, &simple_crate("dfin", v, &[])[..])
            .unwrap();
    }
    // As a kill after the tombstone and the index file were written, before the commit.
    fs::write(root.join("deleted.jsonl"), tombstone_line("dfin", "1.0.0")).unwrap();
    let rel = index_path(&name("dfin"));
    let file = root.join("index").join(&rel);
    let kept: String = fs::read_to_string(&file)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("\"1.0.0\""))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&file, kept).unwrap();
    fs::write(root.join(".pending"), b"dfin\n").unwrap();
    let reg = Registry::open(root).unwrap();
    let entries = reg.entries(&name("dfin")).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].vers, "2.0.0");
    assert!(tombstoned(root, "dfin", "1.0.0"));
    assert!(!root.join("crates/dfin/dfin-1.0.0.crate").exists());
    assert!(
        root.join("orphans/dfin-1.0.0.crate").exists(),
        "moved aside"
    );
    assert!(reg.check().unwrap().is_empty());
    let err = reg
        .publish(None, &simple_crate("dfin", "1.0.0", &[])[..])
        .unwrap_err();
    assert!(err.to_string().contains("was deleted"), "{err}");
}

fn a_delete_whose_commit_fails_leaves_no_tombstone() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let reg = init(root);
    reg.publish(None, &simple_crate("dfail", "1.0.0", &[])[..])
        .unwrap();
    reg.delete(&name("dfail"), Some("1.0.0")).unwrap();
    reg.publish(None, &simple_crate("dfail", "2.0.0", &[])[..])
        .unwrap();
    let before = fs::read(root.join("deleted.jsonl")).unwrap();
    let lock = root.join("index/.git/refs/heads/master.lock");
    fs::write(&lock, b"").unwrap();
    for vers in [Some("2.0.0"), None] {
        let err = reg.delete(&name("dfail"), vers).unwrap_err();
        assert!(err.to_string().contains("lock"), "{err}");
        assert_eq!(fs::read(root.join("deleted.jsonl")).unwrap(), before);
        assert!(!root.join(".pending").exists());
        assert!(root.join("crates/dfail/dfail-2.0.0.crate").exists());
        assert_eq!(reg.entries(&name("dfail")).unwrap().len(), 1);
    }
    fs::remove_file(&lock).unwrap();
    assert!(reg.check().unwrap().is_empty());
    reg.delete(&name("dfail"), None).unwrap();
    assert!(tombstoned(root, "dfail", "2.0.0"));
    assert!(tombstoned(root, "dfail", "1.0.0"));
}

fn killed_deletes_leave_each_version_whole_or_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let reg = init(root);
    let mut rng = Rng(0x7e57 | 1);
    let (mut whole, mut deleted) = (0, 0);
    for i in 0..16 {
        let n = format!("kd{i}");
        for v in ["1.0.0", "2.0.0"] {
            reg.publish(None, &simple_crate(&n, v, &[])[..]).unwrap();
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_palletizer"))
            .arg("-r")
            .arg(root)
            .args(["delete", &n, "1.0.0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.below(40_000)));
        // SAFETY: kill(2) on a child this test spawned and has not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().unwrap();
        let reg = Registry::open(root).unwrap();
        let indexed = reg
            .entries(&name(&n))
            .unwrap()
            .iter()
            .any(|e| e.vers == "1.0.0");
        let file = root.join(format!("crates/{n}/{n}-1.0.0.crate"));
        if indexed {
            assert!(file.exists(), "{n}: in the index without its crate file");
            assert!(
                !tombstoned(root, &n, "1.0.0"),
                "{n}: in the index and deleted"
            );
            whole += 1;
        } else {
            assert!(!file.exists(), "{n}: crate file left served");
            assert!(
                tombstoned(root, &n, "1.0.0"),
                "{n}: deleted without a tombstone"
            );
            deleted += 1;
        }
        let problems = reg.check().unwrap();
        assert!(problems.is_empty(), "{n}: {problems:?}");
    }
    eprintln!("killed deletes: {whole} left whole, {deleted} deleted");
}
